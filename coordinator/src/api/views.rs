//! The JSON shapes of the REST API, in Hightouch's words (camelCase, counts as
//! `{addedCount, changedCount, removedCount}`), shared by server and CLI client.

use crate::store::RunRecord;
use ebb_shared::protocol::OpCounts;
use ebb_shared::protocol::RowResult;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CountsView {
    pub added_count: u64,
    pub changed_count: u64,
    pub removed_count: u64,
}

impl From<OpCounts> for CountsView {
    fn from(c: OpCounts) -> Self {
        CountsView {
            added_count: c.added,
            changed_count: c.changed,
            removed_count: c.removed,
        }
    }
}

impl CountsView {
    pub fn total(&self) -> u64 {
        self.added_count + self.changed_count + self.removed_count
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvalidView {
    pub null_key_count: u64,
    pub duplicate_key_count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TasksView {
    pub total: u64,
    pub done: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunView {
    pub id: String,
    pub sync_id: String,
    pub status: String,
    pub trigger: String,
    pub full_resync: bool,
    #[serde(rename = "resetCDC")]
    pub reset_cdc: bool,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Rows the model query returned, invalid ones included.
    pub query_size: u64,
    pub invalid_rows: InvalidView,
    pub planned_rows: CountsView,
    pub successful_rows: CountsView,
    pub failed_rows: CountsView,
    /// Answered rows over planned rows; 1 when nothing was planned.
    pub completion_ratio: f64,
    pub error: Option<String>,
    pub shards: TasksView,
    /// The tasks reading the model: one, or one per part of its primary key.
    #[serde(default = "TasksView::one")]
    pub extract_tasks: TasksView,
    /// Rows answered so far by shards still running (live, not persisted).
    pub rows_in_progress: u64,
}

fn timestamp(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

impl TasksView {
    fn one() -> TasksView {
        TasksView { total: 1, done: 1 }
    }
}

impl RunView {
    pub fn new(run: &RunRecord, rows_in_progress: u64) -> RunView {
        let planned = run.planned.total();
        let answered = run.succeeded.total() + run.failed.total();
        RunView {
            id: run.id.clone(),
            sync_id: run.sync.clone(),
            status: run.status.as_str().to_string(),
            trigger: run.trigger.clone(),
            full_resync: run.full_resync,
            reset_cdc: run.reset_cdc,
            created_at: timestamp(run.created_at),
            started_at: run.started_at.map(timestamp),
            finished_at: run.finished_at.map(timestamp),
            query_size: run.rows_queried,
            invalid_rows: InvalidView {
                null_key_count: run.invalid_null,
                duplicate_key_count: run.invalid_duplicate,
            },
            planned_rows: run.planned.into(),
            successful_rows: run.succeeded.into(),
            failed_rows: run.failed.into(),
            completion_ratio: if planned == 0 {
                1.0
            } else {
                answered as f64 / planned as f64
            },
            error: run.error.clone(),
            extract_tasks: match run.extract_parts {
                0 => TasksView {
                    total: 1,
                    // Shards are planned once extraction is in.
                    done: u64::from(run.shards_total > 0),
                },
                parts => TasksView {
                    total: parts,
                    done: run.extract_parts_done,
                },
            },
            shards: TasksView {
                total: run.shards_total,
                done: run.shards_done,
            },
            rows_in_progress,
        }
    }

    pub fn is_finished(&self) -> bool {
        !matches!(self.status.as_str(), "queued" | "querying" | "processing" | "reporting")
    }

    /// Seconds from creation to finish (or now).
    pub fn elapsed_seconds(&self) -> f64 {
        let parse = |s: &str| chrono::DateTime::parse_from_rfc3339(s).ok();
        let start = parse(&self.created_at);
        let end = self
            .finished_at
            .as_deref()
            .and_then(parse)
            .map(|t| t.with_timezone(&chrono::Utc))
            .unwrap_or_else(chrono::Utc::now);
        start
            .map(|s| (end - s.with_timezone(&chrono::Utc)).num_milliseconds() as f64 / 1000.0)
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRowView {
    pub key: String,
    /// added, changed or removed; absent for invalid rows.
    pub operation: Option<String>,
    /// succeeded, failed or invalid.
    pub outcome: String,
    pub error: Option<String>,
}

impl From<RowResult> for RunRowView {
    fn from(row: RowResult) -> Self {
        RunRowView {
            key: row.key,
            operation: row.operation.map(|o| o.as_str().to_string()),
            outcome: row.outcome.as_str().to_string(),
            error: row.error,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncView {
    pub id: String,
    pub model: String,
    pub destination: String,
    pub mode: String,
    pub schedule: Option<String>,
}

impl SyncView {
    pub fn new(name: &str, sync: &ebb_shared::config::SyncConfig) -> SyncView {
        SyncView {
            id: name.to_string(),
            model: sync.model.clone(),
            destination: sync.destination.clone(),
            mode: sync.mode.as_str().to_string(),
            schedule: sync
                .schedule
                .as_ref()
                .map(|s| format!("every {}", humantime::format_duration(s.every))),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct List<T> {
    pub data: Vec<T>,
}

/// The live debugger's batch attempts of a run that pass a filter, in the
/// order sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestsPage {
    pub data: Vec<ebb_worker::debugger::BatchLog>,
    pub has_more: bool,
}

/// The first rows of a run that pass a filter, and how many pass in all.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RowsPage {
    pub data: Vec<RunRowView>,
    pub total: u64,
    pub has_more: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TriggerBody {
    #[serde(default)]
    pub full_resync: bool,
    #[serde(default, rename = "resetCDC")]
    pub reset_cdc: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TriggerAnswer {
    pub id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}
