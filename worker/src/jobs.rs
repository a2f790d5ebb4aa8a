//! Asynchronous bulk jobs a destination runs for a batch (Salesforce's Bulk
//! API 2.0), and where their ids are kept so that a shard attempt taking over
//! after a crash polls the job already submitted instead of submitting the
//! batch again.
//!
//! A batch is named by its position in the shard's plan (`first`-`len`): an
//! attempt resumes at a batch boundary of the one before it (checkpoints record
//! whole batches), and cuts the batches after it the same way, so the same
//! name means the same rows. The record lives beside the shard's checkpoints
//! in the object store, so it lasts exactly as long as the run's attempts.

use ebb_shared::storage::Storage;
use std::ops::Range;

/// How a destination cuts large shards into bulk jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkLimits {
    /// A shard with at least this many rows to send goes by bulk jobs.
    pub threshold: usize,
    /// Records per job.
    pub records: usize,
    /// Bytes of records per job.
    pub bytes: usize,
}

/// The job records of one batch: one object per job started for it (objects
/// are immutable), named so that they list in the order they were written.
pub struct JobLog {
    storage: Storage,
    prefix: String,
}

impl JobLog {
    /// `checkpoints` is the shard's checkpoint prefix.
    pub fn new(storage: Storage, checkpoints: &str, batch: &Range<usize>) -> JobLog {
        JobLog {
            storage,
            prefix: format!("{checkpoints}jobs/{:012}-{}/", batch.start, batch.len()),
        }
    }

    /// The last job an earlier attempt started for this batch, if any. A
    /// store that cannot answer counts as none (the batch is submitted anew).
    pub async fn started(&self) -> Option<String> {
        let keys = match self.storage.list(&self.prefix).await {
            Ok(keys) => keys,
            Err(error) => {
                tracing::warn!(%error, "bulk job records unreadable");
                return None;
            }
        };
        let bytes = self.storage.get(keys.last()?).await.ok()?;
        String::from_utf8(bytes.to_vec()).ok().filter(|id| !id.is_empty())
    }

    /// Records the job just created for this batch, before its data is
    /// uploaded: from here on a crash resumes it. A record that cannot be
    /// written costs a resubmission after a crash, never correctness.
    pub async fn record(&self, job_id: &str) {
        let key = format!("{}{}.job", self.prefix, uuid::Uuid::now_v7().simple());
        match self.storage.create(&key, job_id.as_bytes().to_vec()).await {
            // The key is this call's own: a store that retried the write
            // after it landed says so.
            Ok(()) | Err(ebb_shared::storage::StorageError::AlreadyExists { .. }) => {}
            Err(error) => tracing::warn!(%error, job = job_id, "bulk job id not recorded"),
        }
    }
}
