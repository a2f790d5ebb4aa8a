//! A run's life as an explicit state machine: every legal transition is listed
//! here, and nothing else may move a run.
//!
//! ```text
//! queued → querying → processing → reporting → success | warning | failed
//!    └──────────┴───────────┴────────────┴──→ failed | cancelled | interrupted
//! ```

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Queued,
    Querying,
    Processing,
    Reporting,
    Success,
    /// Finished, but some rows were rejected or invalid.
    Warning,
    Failed,
    Cancelled,
    /// The coordinator stopped while the run was in flight.
    Interrupted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEvent {
    /// The extract task is on the queue.
    ExtractDispatched,
    /// Extraction reported; shard tasks are on the queue.
    ShardsDispatched,
    /// Every shard result is committed.
    ShardsCommitted,
    Completed {
        rejected_or_invalid: bool,
        nothing_succeeded: bool,
    },
    Failed,
    Cancelled,
    Interrupted,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a {from} run cannot take event {event:?}")]
pub struct IllegalTransition {
    pub from: RunStatus,
    pub event: RunEvent,
}

pub const ACTIVE: [RunStatus; 4] = [
    RunStatus::Queued,
    RunStatus::Querying,
    RunStatus::Processing,
    RunStatus::Reporting,
];

impl RunStatus {
    pub fn is_terminal(self) -> bool {
        !ACTIVE.contains(&self)
    }

    pub fn next(self, event: RunEvent) -> Result<RunStatus, IllegalTransition> {
        use RunEvent as E;
        use RunStatus as S;
        let next = match (self, event) {
            (S::Queued, E::ExtractDispatched) => S::Querying,
            (S::Querying, E::ShardsDispatched) => S::Processing,
            (S::Processing, E::ShardsCommitted) => S::Reporting,
            (
                S::Reporting,
                E::Completed {
                    nothing_succeeded: true,
                    ..
                },
            ) => S::Failed,
            (
                S::Reporting,
                E::Completed {
                    rejected_or_invalid: true,
                    ..
                },
            ) => S::Warning,
            (S::Reporting, E::Completed { .. }) => S::Success,
            (S::Queued | S::Querying | S::Processing | S::Reporting, E::Failed) => S::Failed,
            (S::Queued | S::Querying | S::Processing | S::Reporting, E::Cancelled) => S::Cancelled,
            (S::Queued | S::Querying | S::Processing | S::Reporting, E::Interrupted) => S::Interrupted,
            (from, event) => return Err(IllegalTransition { from, event }),
        };
        Ok(next)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Querying => "querying",
            RunStatus::Processing => "processing",
            RunStatus::Reporting => "reporting",
            RunStatus::Success => "success",
            RunStatus::Warning => "warning",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Interrupted => "interrupted",
        }
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            RunStatus::Queued,
            RunStatus::Querying,
            RunStatus::Processing,
            RunStatus::Reporting,
            RunStatus::Success,
            RunStatus::Warning,
            RunStatus::Failed,
            RunStatus::Cancelled,
            RunStatus::Interrupted,
        ]
        .into_iter()
        .find(|status| status.as_str() == s)
        .ok_or_else(|| format!("unknown run status {s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn happy_path() {
        let status = RunStatus::Queued
            .next(RunEvent::ExtractDispatched)
            .and_then(|s| s.next(RunEvent::ShardsDispatched))
            .and_then(|s| s.next(RunEvent::ShardsCommitted))
            .and_then(|s| {
                s.next(RunEvent::Completed {
                    rejected_or_invalid: false,
                    nothing_succeeded: false,
                })
            })
            .unwrap();
        assert_eq!(status, RunStatus::Success);
    }

    #[test]
    fn outcomes_of_reporting() {
        let done = |rejected_or_invalid, nothing_succeeded| {
            RunStatus::Reporting
                .next(RunEvent::Completed {
                    rejected_or_invalid,
                    nothing_succeeded,
                })
                .unwrap()
        };
        assert_eq!(done(true, false), RunStatus::Warning);
        assert_eq!(done(true, true), RunStatus::Failed);
    }

    #[test]
    fn terminal_states_do_not_move() {
        for terminal in [RunStatus::Success, RunStatus::Failed, RunStatus::Cancelled] {
            assert!(terminal.next(RunEvent::Failed).is_err());
            assert!(terminal.next(RunEvent::ShardsDispatched).is_err());
        }
        assert!(RunStatus::Querying.next(RunEvent::ShardsCommitted).is_err());
        assert_eq!("warning".parse::<RunStatus>().unwrap(), RunStatus::Warning);
    }
}
