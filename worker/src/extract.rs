//! Extraction: run the model query, hash every key and partition the rows into
//! buckets of the hash space, written to the object store. Memory stays
//! bounded: the buffered buckets are written out together whenever their bytes
//! pass a budget.

use crate::error::TaskError;
use crate::mapping::{RecordPlan, RunContext};
use crate::sources::{self, Row};
use ebb_shared::config::SyncSpec;
use ebb_shared::hashing::{key_hash, HashRange, BUCKET_COUNT};
use ebb_shared::protocol::{
    BucketReport, ChunkRef, ExtractReport, NullKeyRow, NULL_KEY_RECORD_CHARS, REPORTED_ROWS_LIMIT,
};
use ebb_shared::snapshot::{paths, EntryWriter, FileKind};
use ebb_shared::storage::{Storage, StorageError};
use futures::{stream, StreamExt};
use std::sync::Arc;

/// Buffered bytes across all buckets before they are written out as one object.
const BUFFER_BUDGET: usize = 48 << 20;

pub async fn extract(
    storage: &Storage,
    spec: &SyncSpec,
    run: &RunContext,
    attempt: &str,
) -> Result<ExtractReport, TaskError> {
    let run_id = run.run_id.as_str();
    let rows = sources::open(&spec.model.source, &spec.source, &spec.model_name, &spec.model).await?;
    let columns: Vec<String> = rows.columns.iter().map(|c| c.name.clone()).collect();
    let plan = Arc::new(RecordPlan::new(spec, &rows.columns, run)?);
    // Parsing, mapping and hashing are most of extraction's CPU: batches are
    // parsed and mapped on every core at once and gathered in their original
    // order, so chunks (and which of two duplicate rows comes first) do not
    // depend on timing.
    let mappers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mapped = stream::unfold(rows, |mut rows| async move {
        rows.next_unparsed().await.map(|batch| (batch, rows))
    })
    .map(|batch| {
        let plan = plan.clone();
        async move {
            let batch = batch?;
            let mapped =
                tokio::task::spawn_blocking(move || batch.into_rows().map(|rows| MappedBatch::map(&plan, rows))).await;
            // A panic while mapping is a bug: let it surface as one.
            mapped.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
        }
    })
    .buffered(mappers);
    let mut mapped = std::pin::pin!(mapped);
    let mut buckets = Buckets::new(storage, spec, run_id, attempt);
    let (mut rows_queried, mut null_keys) = (0u64, 0u64);
    let mut null_key_rows = Vec::new();
    while let Some(batch) = mapped.next().await {
        let batch = batch?;
        for (index, record) in batch.null_key_rows {
            if null_key_rows.len() < REPORTED_ROWS_LIMIT {
                null_key_rows.push(NullKeyRow {
                    row_number: rows_queried + index as u64 + 1,
                    record,
                });
            }
        }
        rows_queried += batch.rows;
        null_keys += batch.null_keys;
        for (bucket, start, end) in &batch.spans {
            buckets.push(*bucket, &batch.entries.encoded()[*start..*end]).await?;
        }
    }
    let buckets = buckets.finish().await?;
    Ok(ExtractReport {
        rows_queried,
        null_keys,
        columns,
        buckets,
        null_key_rows,
        part: None,
    })
}

/// One batch of rows, mapped and encoded as entries, with the bucket and byte
/// span of each.
struct MappedBatch {
    entries: EntryWriter,
    spans: Vec<(usize, usize, usize)>,
    rows: u64,
    null_keys: u64,
    /// The first null-key rows of the batch: index in the batch, and record.
    null_key_rows: Vec<(usize, String)>,
}

impl MappedBatch {
    fn map(plan: &RecordPlan, rows: Vec<Row>) -> MappedBatch {
        let mut batch = MappedBatch {
            entries: EntryWriter::new(),
            spans: Vec::with_capacity(rows.len()),
            rows: rows.len() as u64,
            null_keys: 0,
            null_key_rows: Vec::new(),
        };
        let (mut scratch, mut key) = (Vec::new(), String::new());
        for (index, row) in rows.iter().enumerate() {
            if !plan.write_key(row, &mut key) {
                batch.null_keys += 1;
                if batch.null_key_rows.len() < REPORTED_ROWS_LIMIT {
                    let mut record = Vec::new();
                    let text = match plan.write_record(row, &mut record, &mut scratch) {
                        Ok(_) => String::from_utf8_lossy(&record)
                            .chars()
                            .take(NULL_KEY_RECORD_CHARS)
                            .collect(),
                        Err(reason) => format!("(the record cannot be built: {reason})"),
                    };
                    batch.null_key_rows.push((index, text));
                }
                continue;
            }
            let hash = key_hash(&key);
            let start = batch.entries.byte_len();
            batch
                .entries
                .push_building(hash, &key, |out| plan.write_record(row, out, &mut scratch));
            batch
                .spans
                .push((HashRange::bucket_of(hash), start, batch.entries.byte_len()));
        }
        batch
    }
}

/// Buffers entries per bucket and writes them out together: each object holds
/// one entry file per bucket, back to back, and every bucket's report names
/// its byte range. A run writes a handful of objects, not one per bucket, and
/// a shard reads its run of buckets with one ranged read per object.
struct Buckets<'a> {
    storage: &'a Storage,
    spec: &'a SyncSpec,
    run_id: &'a str,
    attempt: &'a str,
    writers: Vec<Option<EntryWriter>>,
    reports: Vec<BucketReport>,
    buffered: usize,
    objects: u32,
    /// The previous object's upload, overlapping with filling the next.
    uploading: Option<tokio::task::JoinHandle<Result<(), StorageError>>>,
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
            objects: 0,
            uploading: None,
        }
    }

    /// Buffers one encoded entry in its bucket.
    async fn push(&mut self, bucket: usize, entry: &[u8]) -> Result<(), TaskError> {
        self.writers[bucket]
            .get_or_insert_with(EntryWriter::new)
            .push_encoded(entry);
        self.buffered += entry.len();
        self.reports[bucket].rows += 1;
        if self.buffered >= BUFFER_BUDGET {
            self.write_object().await?;
        }
        Ok(())
    }

    /// Writes every buffered bucket into one new object.
    async fn write_object(&mut self) -> Result<(), TaskError> {
        if self.buffered == 0 {
            return Ok(());
        }
        let key = paths::chunks(&self.spec.name, self.run_id, self.attempt, self.objects);
        self.objects += 1;
        let mut object = Vec::with_capacity(self.buffered + (64 << 10));
        for (bucket, slot) in self.writers.iter_mut().enumerate() {
            let Some(writer) = slot.take() else { continue };
            let start = object.len() as u64;
            writer.finish_into(
                &mut object,
                FileKind::Chunk,
                &self.spec.name,
                self.run_id,
                HashRange::bucket(bucket),
            );
            self.reports[bucket]
                .chunks
                .push(ChunkRef::part(key.clone(), start..object.len() as u64));
        }
        self.buffered = 0;
        self.finish_upload().await?;
        let storage = self.storage.clone();
        self.uploading = Some(tokio::spawn(async move { storage.create(&key, object).await }));
        Ok(())
    }

    async fn finish_upload(&mut self) -> Result<(), TaskError> {
        if let Some(upload) = self.uploading.take() {
            upload
                .await
                .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
        }
        Ok(())
    }

    async fn finish(mut self) -> Result<Vec<BucketReport>, TaskError> {
        self.write_object().await?;
        self.finish_upload().await?;
        Ok(self.reports.into_iter().filter(|r| r.rows > 0).collect())
    }
}
