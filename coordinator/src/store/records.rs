use super::{op_counts, StoreError};
use crate::run::state::RunStatus;
use ebb_shared::hashing::HashRange;
use ebb_shared::protocol::{OpCounts, SnapshotPointer};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

pub(super) const RUN_COLUMNS: &str = "id, sync_name, status, trigger_kind, schedule_tick, full_resync, reset_cdc, \
    created_at, started_at, finished_at, error, rows_queried, invalid_null, invalid_duplicate, \
    planned_added, planned_changed, planned_removed, succeeded_added, succeeded_changed, succeeded_removed, \
    failed_added, failed_changed, failed_removed, shards_total, shards_done, extract_parts, extract_parts_done";

#[derive(Debug, Clone)]
pub struct NewRun {
    pub id: String,
    pub sync: String,
    pub trigger: String,
    pub schedule_tick: Option<i64>,
    pub full_resync: bool,
    pub reset_cdc: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRecord {
    pub id: String,
    pub sync: String,
    pub status: RunStatus,
    pub trigger: String,
    pub schedule_tick: Option<i64>,
    pub full_resync: bool,
    pub reset_cdc: bool,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub error: Option<String>,
    pub rows_queried: u64,
    pub invalid_null: u64,
    pub invalid_duplicate: u64,
    pub planned: OpCounts,
    pub succeeded: OpCounts,
    pub failed: OpCounts,
    pub shards_total: u64,
    pub shards_done: u64,
    /// The parts its model is read in; 0 when one task reads it whole.
    pub extract_parts: u64,
    pub extract_parts_done: u64,
}

impl RunRecord {
    pub(super) fn from_row(row: &AnyRow) -> Result<RunRecord, StoreError> {
        let int = |name: &str| -> Result<i64, StoreError> { Ok(row.try_get::<i64, _>(name)?) };
        let status: String = row.try_get("status")?;
        Ok(RunRecord {
            id: row.try_get("id")?,
            sync: row.try_get("sync_name")?,
            status: status.parse().map_err(StoreError::Corrupt)?,
            trigger: row.try_get("trigger_kind")?,
            schedule_tick: row.try_get("schedule_tick")?,
            full_resync: int("full_resync")? != 0,
            reset_cdc: int("reset_cdc")? != 0,
            created_at: int("created_at")?,
            started_at: row.try_get("started_at")?,
            finished_at: row.try_get("finished_at")?,
            error: row.try_get("error")?,
            rows_queried: int("rows_queried")? as u64,
            invalid_null: int("invalid_null")? as u64,
            invalid_duplicate: int("invalid_duplicate")? as u64,
            planned: op_counts(int("planned_added")?, int("planned_changed")?, int("planned_removed")?),
            succeeded: op_counts(
                int("succeeded_added")?,
                int("succeeded_changed")?,
                int("succeeded_removed")?,
            ),
            failed: op_counts(int("failed_added")?, int("failed_changed")?, int("failed_removed")?),
            shards_total: int("shards_total")? as u64,
            shards_done: int("shards_done")? as u64,
            extract_parts: int("extract_parts")? as u64,
            extract_parts_done: int("extract_parts_done")? as u64,
        })
    }

    pub fn invalid(&self) -> u64 {
        self.invalid_null + self.invalid_duplicate
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRow {
    pub key: String,
    /// `rejected` (the destination refused it) or `invalid` (null or duplicate key).
    pub kind: String,
    pub operation: Option<String>,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct ShardPlanRow {
    pub index: u32,
    pub range: HashRange,
    /// Which committed snapshots the shard was planned against (`pointer_base`).
    pub base: String,
}

#[derive(Debug)]
pub enum CommitOutcome {
    Committed(Box<RunRecord>),
    /// The shard was already committed: a redelivered task reported twice.
    Duplicate,
    /// The pointers moved since the shard was planned: its snapshot is dropped
    /// (the next run sees its rows again), but the shard counts as done, with
    /// the rows it sent, so the run can finish.
    Stale(Box<RunRecord>),
    /// The run had ended (failed, cancelled, interrupted) when the result came:
    /// a terminal run never changes, so its counts stay as they were. The
    /// snapshot is still committed, since it says what the destination has.
    Superseded,
    UnknownShard,
}

/// A fingerprint of what a shard reads from the committed pointers: which object
/// is current for each part of its range. Commits of other shards trim pointers
/// outside the range and leave it unchanged; a commit from another run changes it.
pub fn pointer_base<'a>(range: &HashRange, pointers: impl Iterator<Item = &'a SnapshotPointer>) -> String {
    let mut parts: Vec<String> = pointers
        .filter_map(|p| p.range.intersect(range).map(|part| (part, &p.object_key)))
        .map(|(part, key)| format!("{}-{}={}", part.start_hex(), part.last_hex(), key))
        .collect();
    parts.sort();
    parts.join(";")
}

/// A task as the outbox keeps it: encoded, ready to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxTask {
    pub task_id: String,
    pub run_id: String,
    pub payload: Vec<u8>,
}

/// Bytes as text both SQLite and PostgreSQL take through one query.
pub(super) fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}
