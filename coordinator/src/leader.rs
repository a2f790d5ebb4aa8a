//! Which coordinator of a fleet leads. Every replica serves the API (reads,
//! triggers and cancels are safe from any of them: the state DB's guards
//! decide); only the leader consumes results, reconciles, schedules, collects
//! garbage and grants delivery leases. A replica that loses the leadership
//! exits, and its restart rejoins as a standby: nothing it started can go on.

use crate::leases::{LocalLeases, LEASE_TTL};
use crate::store::{LeaderRecord, LockCheck, StateStore};
use std::time::Duration;
use tokio::sync::watch;

/// How often a standby tries to take the lead, and the leader checks it holds it.
pub const ELECTION_EVERY: Duration = Duration::from_secs(1);
/// How long one check of the lock's connection waits for an answer.
const HOLD_CHECK_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the lock's connection may stay silent (a paused database) before
/// the leader gives up the lead. A failed connection gives it up at once. In
/// between, fencing keeps a leader that lost the lock unknowingly from
/// committing anything.
pub const LOCK_SILENCE_LIMIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Waiting for the lead; `leader` is who has it, as last read.
    Standby {
        leader: Option<LeaderRecord>,
    },
    Leader(LeaderRecord),
    /// Lost the lead: the process must stop.
    Deposed(String),
}

impl Role {
    pub fn is_leader(&self) -> bool {
        matches!(self, Role::Leader(_))
    }
}

/// This process's name in the leader record: host name and process id.
pub fn holder_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "coordinator".into());
    format!("{host}-{}", std::process::id())
}

/// Waits until this process leads; `false` if it never will (deposed, or the
/// election stopped).
pub async fn until_leader(role: &mut watch::Receiver<Role>) -> bool {
    match role
        .wait_for(|role| matches!(role, Role::Leader(_) | Role::Deposed(_)))
        .await
    {
        Ok(role) => role.is_leader(),
        Err(_) => false,
    }
}

/// How long a new leader of `epoch` grants no lease. A previous leader's
/// leases may still be in use for one TTL: nothing is granted until they
/// have expired, so no destination sees more than its limit across the
/// takeover. A single-process store, and the first leader a state DB ever
/// had (epoch 1), have no predecessor: their first run delivers at once.
pub fn lease_hold(shared_store: bool, epoch: i64) -> Duration {
    if shared_store && epoch > 1 {
        LEASE_TTL
    } else {
        Duration::ZERO
    }
}

/// Campaigns for the lead until `shutdown`, then holds it; publishes each
/// change of role. `url` is where this replica's API answers, for workers
/// that reach a standby.
pub async fn campaign(
    store: StateStore,
    holder: String,
    url: String,
    leases: LocalLeases,
    role: watch::Sender<Role>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut lock = loop {
        match store.try_lock_leadership().await {
            Ok(Some(lock)) => break lock,
            Ok(None) => {
                let leader = store.leader().await.ok().flatten();
                leases.stand_by(leader.as_ref().map(|l| l.url.clone()));
                role.send_if_modified(|current| {
                    let next = Role::Standby { leader };
                    let changed = *current != next;
                    *current = next;
                    changed
                });
            }
            Err(error) => tracing::warn!(%error, "cannot reach the state DB to campaign for the lead"),
        }
        tokio::select! {
            _ = tokio::time::sleep(ELECTION_EVERY) => {}
            _ = shutdown.changed() => return,
        }
    };
    let record = match store.take_leadership(&holder, &url).await {
        Ok(record) => record,
        Err(error) => {
            let _ = role.send(Role::Deposed(format!("could not record the leadership: {error}")));
            return;
        }
    };
    leases.lead(lease_hold(store.is_postgres(), record.epoch));
    tracing::info!(epoch = record.epoch, holder = %record.holder, "this coordinator leads");
    let _ = role.send(Role::Leader(record));
    let mut last_answer = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(ELECTION_EVERY) => {}
            _ = shutdown.changed() => return,
        }
        let lost = match lock.check(HOLD_CHECK_TIMEOUT).await {
            LockCheck::Held => {
                last_answer = tokio::time::Instant::now();
                None
            }
            LockCheck::Silent if last_answer.elapsed() < LOCK_SILENCE_LIMIT => None,
            LockCheck::Silent => Some(format!(
                "the state DB has not answered the leadership lock's connection for {}s",
                last_answer.elapsed().as_secs()
            )),
            LockCheck::Lost => Some("the connection holding the leadership lock failed".to_string()),
        };
        if let Some(reason) = lost {
            let _ = role.send(Role::Deposed(format!("{reason}; another coordinator may lead now")));
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_leader_with_a_predecessor_holds_its_leases_back() {
        assert_eq!(
            lease_hold(true, 1),
            Duration::ZERO,
            "the first leader has no predecessor"
        );
        assert_eq!(lease_hold(true, 2), LEASE_TTL, "a takeover waits out the old leases");
        assert_eq!(lease_hold(true, 40), LEASE_TTL);
        assert_eq!(
            lease_hold(false, 3),
            Duration::ZERO,
            "a single-process store has one coordinator"
        );
    }
}
