//! Extraction: run the model query, hash every key and partition the rows into
//! per-bucket chunk files in the object store. Memory stays bounded: buckets are
//! flushed as chunk files whenever the buffered bytes pass a budget.

use crate::error::TaskError;
use crate::mapping::{RecordPlan, RunContext};
use crate::sources;
use ebb_shared::config::SyncSpec;
use ebb_shared::hashing::{key_hash, HashRange, BUCKET_COUNT};
use ebb_shared::protocol::{BucketReport, ExtractReport};
use ebb_shared::snapshot::{paths, EntryWriter, FileKind};
use ebb_shared::storage::Storage;

/// Buffered bytes across all buckets before the largest ones are flushed.
const BUFFER_BUDGET: usize = 48 << 20;
/// A bucket is flushed on its own once it holds this much.
const CHUNK_TARGET: usize = 8 << 20;

pub async fn extract(
    storage: &Storage,
    spec: &SyncSpec,
    run: &RunContext,
    attempt: &str,
) -> Result<ExtractReport, TaskError> {
    let run_id = run.run_id.as_str();
    let mut rows = sources::open(&spec.model.source, &spec.source, &spec.model_name, &spec.model).await?;
    let plan = RecordPlan::new(spec, &rows.columns, run)?;
    let mut buckets = Buckets::new(storage, spec, run_id, attempt);
    let mut rows_queried = 0u64;
    let mut null_keys = 0u64;
    while let Some(batch) = rows.next_batch().await {
        for row in batch? {
            rows_queried += 1;
            let Some(key) = plan.key(&row) else {
                null_keys += 1;
                continue;
            };
            let hash = key_hash(&key);
            buckets.push(hash, &key, plan.record(&row)).await?;
        }
    }
    let buckets = buckets.finish().await?;
    Ok(ExtractReport {
        rows_queried,
        null_keys,
        columns: rows.columns.iter().map(|c| c.name.clone()).collect(),
        buckets,
    })
}

struct Buckets<'a> {
    storage: &'a Storage,
    spec: &'a SyncSpec,
    run_id: &'a str,
    attempt: &'a str,
    writers: Vec<Option<EntryWriter>>,
    reports: Vec<BucketReport>,
    buffered: usize,
}

impl<'a> Buckets<'a> {
    fn new(storage: &'a Storage, spec: &'a SyncSpec, run_id: &'a str, attempt: &'a str) -> Self {
        Buckets {
            storage,
            spec,
            run_id,
            attempt,
            writers: (0..BUCKET_COUNT).map(|_| None).collect(),
            reports: (0..BUCKET_COUNT)
                .map(|b| BucketReport {
                    bucket: b as u32,
                    rows: 0,
                    chunks: Vec::new(),
                })
                .collect(),
            buffered: 0,
        }
    }

    /// Buffers a row: its mapped record, or why it could not be mapped.
    async fn push(&mut self, hash: u64, key: &str, mapped: Result<(u128, String), String>) -> Result<(), TaskError> {
        let bucket = HashRange::bucket_of(hash);
        let writer = self.writers[bucket].get_or_insert_with(EntryWriter::new);
        let before = writer.byte_len();
        match mapped {
            Ok((fingerprint, record)) => writer.push(hash, key, fingerprint, &record),
            Err(error) => writer.push_mapping_error(hash, key, &error),
        }
        self.buffered += writer.byte_len() - before;
        self.reports[bucket].rows += 1;
        if writer.byte_len() >= CHUNK_TARGET {
            self.flush(bucket).await?;
        }
        while self.buffered > BUFFER_BUDGET {
            let largest = (0..BUCKET_COUNT)
                .max_by_key(|&b| self.writers[b].as_ref().map_or(0, EntryWriter::byte_len))
                .expect("buckets exist");
            self.flush(largest).await?;
        }
        Ok(())
    }

    async fn flush(&mut self, bucket: usize) -> Result<(), TaskError> {
        let Some(writer) = self.writers[bucket].take() else {
            return Ok(());
        };
        self.buffered -= writer.byte_len();
        let report = &mut self.reports[bucket];
        let key = paths::chunk(
            &self.spec.name,
            self.run_id,
            self.attempt,
            bucket,
            report.chunks.len() as u32,
        );
        let bytes = writer.finish(FileKind::Chunk, &self.spec.name, self.run_id, HashRange::bucket(bucket));
        self.storage.create(&key, bytes).await?;
        report.chunks.push(key);
        Ok(())
    }

    async fn finish(mut self) -> Result<Vec<BucketReport>, TaskError> {
        for bucket in 0..BUCKET_COUNT {
            self.flush(bucket).await?;
        }
        Ok(self.reports.into_iter().filter(|r| r.rows > 0).collect())
    }
}
