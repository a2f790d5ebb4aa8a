//! The live debugger's side in the coordinator: the requests a run sent and
//! the answers it got, read from the shards' request logs in the object store
//! and filtered by row key or by failure.

use crate::store::StateStore;
use ebb_shared::snapshot::paths;
use ebb_shared::storage::Storage;
use ebb_worker::debugger::BatchLog;

/// Which batch attempts of a run to return.
#[derive(Debug, Clone, Default)]
pub struct RequestFilter {
    /// Only batches that carried the row with this key.
    pub key: Option<String>,
    /// Only attempts that failed, or that failed a row.
    pub failed: bool,
    pub limit: usize,
}

impl RequestFilter {
    fn accepts(&self, batch: &BatchLog) -> bool {
        (!self.failed || batch.failed())
            && self
                .key
                .as_ref()
                .is_none_or(|key| batch.rows.iter().any(|(row, _)| row == key))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RequestsError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("no run {0:?}")]
    NoRun(String),
    #[error("this coordinator has no object store, where request logs are kept")]
    NoStorage,
    #[error("reading request logs: {0}")]
    Storage(#[from] ebb_shared::storage::StorageError),
    #[error("request log {key} is unreadable at line {line}: {reason}")]
    Corrupt { key: String, line: usize, reason: String },
}

/// The batch attempts of `run_id` that pass `filter`, in the order they were
/// sent, and whether more passed than `filter.limit`.
pub async fn run_requests(
    store: &StateStore,
    storage: Option<&Storage>,
    run_id: &str,
    filter: &RequestFilter,
) -> Result<(Vec<BatchLog>, bool), RequestsError> {
    let run = store
        .run(run_id)
        .await?
        .ok_or_else(|| RequestsError::NoRun(run_id.to_string()))?;
    let storage = storage.ok_or(RequestsError::NoStorage)?;
    let mut keys = storage.list(&paths::requests_prefix(&run.sync, run_id)).await?;
    keys.sort();
    let mut found = Vec::new();
    for key in keys {
        let bytes = storage.get(&key).await?;
        for (index, line) in bytes.split(|b| *b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let batch: BatchLog = serde_json::from_slice(line).map_err(|e| RequestsError::Corrupt {
                key: key.clone(),
                line: index + 1,
                reason: e.to_string(),
            })?;
            if filter.accepts(&batch) {
                found.push(batch);
            }
        }
    }
    found.sort_by_key(|batch| batch.at_ms);
    let more = found.len() > filter.limit;
    found.truncate(filter.limit);
    Ok((found, more))
}
