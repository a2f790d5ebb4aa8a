//! One shard task: load, diff, deliver, write the next snapshot, report.

use crate::behaviour::Behaviour;
use crate::delivery::{Checkpoints, Delivery, RetryPolicy};
use crate::destinations;
use crate::diff::{PlannedOp, ShardDiff};
use crate::error::TaskError;
use crate::limits::{LeaseProvider, Limiters};
use ebb_shared::config::SyncSpec;
use ebb_shared::hashing::HashRange;
use ebb_shared::protocol::{
    BucketRows, ChunkRef, InvalidReason, InvalidRow, OpCounts, Operation, RowFailure, RowOutcome, RowResult,
    ShardReport, ShardTask, REPORTED_ROWS_LIMIT,
};
use ebb_shared::snapshot::{
    paths, read_entries, read_entry_files, read_layout, Entry, EntryWriter, FileKind, FileLayout, FormatError, Layout,
    LAYOUT_READ,
};
use ebb_shared::storage::Storage;
use futures::StreamExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub struct ShardContext<'a> {
    pub storage: &'a Storage,
    pub leases: &'a Arc<dyn LeaseProvider>,
    pub limiters: &'a Limiters,
    pub worker_id: &'a str,
    pub retry: RetryPolicy,
    pub metrics: &'a Arc<crate::metrics::WorkerMetrics>,
}

/// How often a delivering shard asks whether its run still runs.
const RUN_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Sets `ended` once the coordinator says the run is over (a cancel), so the
/// delivery stops between batches. An unanswered question changes nothing.
async fn watch_run(leases: Arc<dyn LeaseProvider>, run_id: String, ended: Arc<AtomicBool>) {
    loop {
        tokio::time::sleep(RUN_CHECK_INTERVAL).await;
        if leases.run_active(&run_id).await == Ok(false) {
            tracing::info!(run = %run_id, "the run ended; this shard stops sending");
            ended.store(true, Ordering::Relaxed);
            return;
        }
    }
}

/// Reads fetched at once: a shard reads a range of several objects, and one
/// by one it would spend its time on round trips.
const FETCH_CONCURRENCY: usize = 8;

/// Loads the entries of `objects` that lie in each one's hash range, in the
/// order given. Adjacent byte ranges of one object are read together.
async fn load_entries(storage: &Storage, objects: Vec<(ChunkRef, HashRange)>) -> Result<Vec<Entry>, TaskError> {
    let reads = coalesce(objects);
    let mut fetched = futures::stream::iter(reads.into_iter().map(|(chunk, keep)| async move {
        let bytes = match &chunk.bytes {
            None => storage.get(&chunk.key).await,
            Some(range) => storage.get_range(&chunk.key, range.clone()).await,
        };
        bytes.map(|bytes| (bytes, keep))
    }))
    .buffered(FETCH_CONCURRENCY);
    let mut entries = Vec::new();
    while let Some(object) = fetched.next().await {
        let (bytes, keep) = object?;
        for entry in read_entry_files(&bytes) {
            let entry = entry?;
            if keep.contains(entry.key_hash) {
                entries.push(entry);
            }
        }
    }
    Ok(entries)
}

/// Loads the entries of each previous snapshot object that lie in its part of
/// the shard's range, in the order given. An object wider than its part (the
/// sync was re-sharded since it was written) is read by its bucket index: the
/// header first, then only the bytes of the part's buckets, so a shard's
/// memory and transfer follow its own range, not the objects it reads from.
async fn load_previous(storage: &Storage, parts: Vec<(String, HashRange)>) -> Result<Vec<Entry>, TaskError> {
    let mut fetched = futures::stream::iter(
        parts
            .into_iter()
            .map(|(key, part)| async move { previous_part(storage, &key, &part).await }),
    )
    .buffered(FETCH_CONCURRENCY);
    let mut entries = Vec::new();
    while let Some(part) = fetched.next().await {
        entries.extend(part?);
    }
    Ok(entries)
}

/// The entries of one snapshot object in `part`.
async fn previous_part(storage: &Storage, key: &str, part: &HashRange) -> Result<Vec<Entry>, TaskError> {
    let keep = |entries: &mut dyn Iterator<Item = Result<Entry, FormatError>>| -> Result<Vec<Entry>, TaskError> {
        let mut kept = Vec::new();
        for entry in entries {
            let entry = entry?;
            if part.contains(entry.key_hash) {
                kept.push(entry);
            }
        }
        Ok(kept)
    };
    let prefix = storage.get_range(key, 0..LAYOUT_READ).await?;
    if (prefix.len() as u64) < LAYOUT_READ {
        // The first read got the whole object.
        return keep(&mut read_entries(&prefix)?.1);
    }
    let layout: FileLayout = match read_layout(&prefix)? {
        Layout::Read(layout) => layout,
        Layout::NeedBytes { header_end } => match read_layout(&storage.get_range(key, 0..header_end).await?)? {
            Layout::Read(layout) => layout,
            Layout::NeedBytes { .. } => return Err(FormatError::Truncated(header_end as usize).into()),
        },
    };
    match layout.bytes_of(part) {
        Some(bytes) if bytes.is_empty() => Ok(Vec::new()),
        Some(bytes) => {
            let body = storage.get_range(key, bytes).await?;
            keep(&mut layout.entries(&body))
        }
        // Written before snapshots had a bucket index: read whole.
        None => keep(&mut read_entries(&storage.get(key).await?)?.1),
    }
}

/// Joins each byte range to the one before it when it continues it in the
/// same object and keeps the same hash range.
fn coalesce(objects: Vec<(ChunkRef, HashRange)>) -> Vec<(ChunkRef, HashRange)> {
    let mut reads: Vec<(ChunkRef, HashRange)> = Vec::with_capacity(objects.len());
    for (chunk, keep) in objects {
        if let Some((last, last_keep)) = reads.last_mut() {
            if let (Some(joined), true) = (contiguous(last, &chunk), *last_keep == keep) {
                *last = joined;
                continue;
            }
        }
        reads.push((chunk, keep));
    }
    reads
}

/// `first` and `next` as one read, when `next` starts where `first` ends.
fn contiguous(first: &ChunkRef, next: &ChunkRef) -> Option<ChunkRef> {
    match (&first.bytes, &next.bytes) {
        (Some(a), Some(b)) if first.key == next.key && a.end == b.start => {
            Some(ChunkRef::part(first.key.clone(), a.start..b.end))
        }
        _ => None,
    }
}

#[tracing::instrument(level = "debug", skip_all, fields(shard = task.index))]
pub async fn process_shard(
    ctx: &ShardContext<'_>,
    spec: &SyncSpec,
    run_id: &str,
    attempt: &str,
    task: &ShardTask,
    progress: watch::Sender<u64>,
) -> Result<ShardReport, TaskError> {
    // A cancelled (or failed) run's queued shards send nothing.
    if ctx.leases.run_active(run_id).await == Ok(false) {
        return Err(TaskError::RunEnded {
            run: run_id.to_string(),
        });
    }
    let range = task.range;
    let started = std::time::Instant::now();
    // Sorted by object and offset, a shard's buckets in one object are adjacent.
    let mut chunks: Vec<(ChunkRef, HashRange)> = task.chunks.iter().map(|chunk| (chunk.clone(), range)).collect();
    chunks.sort_by(|(a, _), (b, _)| {
        (&a.key, a.bytes.as_ref().map(|r| r.start)).cmp(&(&b.key, b.bytes.as_ref().map(|r| r.start)))
    });
    let current = load_entries(ctx.storage, chunks).await?;
    // Pointers are disjoint; read in range order their entries stay sorted.
    let mut pointers: Vec<(String, HashRange)> = task
        .previous
        .iter()
        .filter_map(|p| p.range.intersect(&range).map(|part| (p.object_key.clone(), part)))
        .collect();
    pointers.sort_by_key(|(_, part)| part.start);
    // When one previous object holds this whole range, and the run leaves
    // every entry as it was, that object stays current instead of being
    // rewritten: a quiet run then writes nothing but its report.
    let sole_previous = match pointers.as_slice() {
        [(object, part)] if *part == range => Some(object.clone()),
        _ => None,
    };
    let previous = load_previous(ctx.storage, pointers).await?;
    let loaded = std::time::Instant::now();
    let (current_rows, previous_rows) = (current.len(), previous.len());
    tracing::info!(
        shard = task.index,
        load_ms = started.elapsed().as_millis() as u64,
        "shard loaded"
    );
    let diff = ShardDiff::compute(current, previous);
    let behaviour = Behaviour::of(spec);
    let plan = diff.plan(&behaviour, task.full_resync);
    // Rows that could not be mapped are rejected here, unsent; the rest go out.
    let sendable: Vec<PlannedOp> = plan
        .iter()
        .filter(|op| diff.entry(op).mapping_error.is_none())
        .copied()
        .collect();
    tracing::info!(
        shard = task.index,
        current = current_rows,
        previous = previous_rows,
        planned = plan.len(),
        diff_ms = loaded.elapsed().as_millis() as u64,
        "shard diffed"
    );

    let (delivered, destination_error) = if task.reset_cdc {
        // A CDC reset marks every row as synced without sending it.
        (vec![Ok(()); sendable.len()], None)
    } else if sendable.is_empty() {
        (Vec::new(), None)
    } else {
        let profile = destinations::profile(&spec.destination).map_err(|reason| TaskError::DestinationSetup {
            destination: spec.destination_name.clone(),
            reason,
        })?;
        let destination = destinations::build(spec).await?;
        let limiter = ctx
            .limiters
            .get(ctx.leases, ctx.worker_id, &spec.destination_name, profile.limits)
            .await
            .map_err(|reason| TaskError::NoLease {
                destination: spec.destination_name.clone(),
                reason,
            })?;
        let checkpoints = Checkpoints {
            storage: ctx.storage.clone(),
            prefix: paths::checkpoint_prefix(&spec.name, run_id, &range),
            attempt: attempt.to_string(),
        };
        let resume = checkpoints.latest().await?;
        if resume.done_through > 0 {
            tracing::info!(
                shard = task.index,
                done = resume.done_through,
                "resuming from checkpoint"
            );
        }
        let requests = spec
            .live_debugger
            .then(|| Arc::new(crate::debugger::RequestLog::default()));
        let run_ended = Arc::new(AtomicBool::new(false));
        let watcher = tokio::spawn(watch_run(ctx.leases.clone(), run_id.to_string(), run_ended.clone()));
        let delivery = Delivery {
            run_ended,
            destination: destination.as_ref(),
            destination_name: &spec.destination_name,
            limiter,
            batch: profile.batch,
            retry: RetryPolicy {
                max_retry_after: profile.max_retry_after,
                ..ctx.retry.clone()
            },
            checkpoints,
            progress,
            metrics: ctx.metrics.clone(),
            requests: requests.clone(),
        };
        let delivered = delivery.run(&diff, &sendable, resume).await;
        watcher.abort();
        if let Some(log) = requests.filter(|log| !log.is_empty()) {
            // The debugger's log is for people: losing it never fails a shard.
            let key = paths::requests(&spec.name, run_id, &range, attempt);
            if let Err(error) = ctx.storage.create(&key, log.to_bytes()).await {
                tracing::warn!(%error, key, "the live debugger's request log was not stored");
            }
        }
        (delivered.outcomes, delivered.destination_error)
    };
    let mut delivered = delivered.into_iter();
    let outcomes: Vec<Result<(), String>> = plan
        .iter()
        .map(|op| match &diff.entry(op).mapping_error {
            Some(error) => Err(format!("not sent: the row could not be mapped: {error}")),
            None => delivered.next().expect("one outcome per sendable op"),
        })
        .collect();

    // A CDC reset plans nothing, but a row it cannot mark (unmappable) fails.
    let mut planned = OpCounts::default();
    for (op, outcome) in plan.iter().zip(&outcomes) {
        if !(task.reset_cdc && outcome.is_ok()) {
            planned.count(op.operation);
        }
    }
    // Every row's outcome goes to the shard's row file: searchable by key and
    // exportable per run. The report carries counts and capped samples only.
    let mut row_file = RowFile::default();
    let mut succeeded = OpCounts::default();
    let mut failed = OpCounts::default();
    let mut rejected_sample = Vec::new();
    for (op, outcome) in plan.iter().zip(&outcomes) {
        let key = &diff.entry(op).key;
        match outcome {
            // A CDC reset marks rows as synced; they were not planned.
            Ok(()) if task.reset_cdc => {}
            Ok(()) => {
                succeeded.count(op.operation);
                row_file.push(key, Some(op.operation), RowOutcome::Succeeded, None);
            }
            Err(error) => {
                failed.count(op.operation);
                row_file.push(key, Some(op.operation), RowOutcome::Failed, Some(error));
                if rejected_sample.len() < REPORTED_ROWS_LIMIT {
                    rejected_sample.push(RowFailure {
                        key: key.clone(),
                        operation: op.operation,
                        error: error.clone(),
                    });
                }
            }
        }
    }

    let mut duplicate_keys = 0;
    let mut invalid_sample = Vec::new();
    for state in &diff.rows {
        if let crate::diff::RowState::Duplicate { key, rows, .. } = state {
            duplicate_keys += rows;
            let reason = format!("duplicate key: {rows} rows of the model share it");
            row_file.push(key, None, RowOutcome::Invalid, Some(&reason));
            if invalid_sample.len() < REPORTED_ROWS_LIMIT {
                invalid_sample.push(InvalidRow {
                    key: key.clone(),
                    reason: InvalidReason::DuplicateKey,
                });
            }
        }
    }
    let rows_key = if row_file.is_empty() {
        None
    } else {
        let key = paths::rows(&spec.name, run_id, &range, attempt);
        ctx.storage.create(&key, row_file.into_bytes()).await?;
        Some(key)
    };

    let ok: Vec<bool> = outcomes.iter().map(Result::is_ok).collect();
    let next_snapshot = diff.next_snapshot(&behaviour, &plan, &ok);
    let snapshot_buckets = bucket_rows(&next_snapshot);
    let snapshot_key = match sole_previous {
        Some(previous) if diff.keeps_previous_snapshot(&behaviour, &plan, &ok) => previous,
        _ => {
            let mut writer = EntryWriter::new();
            for entry in next_snapshot {
                writer.push_entry(entry);
            }
            let key = paths::snapshot(&spec.name, run_id, &range, attempt);
            ctx.storage
                .create(&key, writer.finish(FileKind::Snapshot, &spec.name, run_id, range))
                .await?;
            key
        }
    };
    tracing::info!(
        shard = task.index,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "shard delivered"
    );

    Ok(ShardReport {
        index: task.index,
        range,
        snapshot_key,
        planned,
        succeeded,
        failed,
        duplicate_keys,
        invalid_sample,
        rejected_sample,
        rows_key,
        destination_error,
        snapshot_buckets,
    })
}

/// How many of `entries` (sorted, as a snapshot's are) fall in each bucket.
fn bucket_rows(entries: &[&Entry]) -> Vec<BucketRows> {
    let mut counts: Vec<BucketRows> = Vec::new();
    for entry in entries {
        let bucket = HashRange::bucket_of(entry.key_hash) as u32;
        match counts.last_mut() {
            Some(last) if last.bucket == bucket => last.rows += 1,
            _ => counts.push(BucketRows { bucket, rows: 1 }),
        }
    }
    counts
}

/// A shard's row results as JSON lines.
#[derive(Default)]
struct RowFile {
    text: String,
}

impl RowFile {
    fn push(&mut self, key: &str, operation: Option<Operation>, outcome: RowOutcome, error: Option<&String>) {
        let line = RowResult {
            key: key.to_string(),
            operation,
            outcome,
            error: error.cloned(),
        };
        self.text
            .push_str(&serde_json::to_string(&line).expect("row results serialize"));
        self.text.push('\n');
    }

    fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    fn into_bytes(self) -> Vec<u8> {
        self.text.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adjacent_ranges_of_one_object_are_read_together() {
        let full = HashRange::FULL;
        let half = HashRange::new(0, u64::MAX / 2);
        let reads = coalesce(vec![
            (ChunkRef::part("a", 0..10), full),
            (ChunkRef::part("a", 10..25), full),
            (ChunkRef::part("a", 25..30), half),
            (ChunkRef::part("a", 40..50), half),
            (ChunkRef::part("b", 50..60), half),
            (ChunkRef::whole("c"), half),
            (ChunkRef::whole("c"), half),
        ]);
        assert_eq!(
            reads,
            vec![
                (ChunkRef::part("a", 0..25), full),
                (ChunkRef::part("a", 25..30), half),
                (ChunkRef::part("a", 40..50), half),
                (ChunkRef::part("b", 50..60), half),
                (ChunkRef::whole("c"), half),
                (ChunkRef::whole("c"), half),
            ]
        );
    }

    /// Sorted entries, `per_bucket` in every bucket of the hash space.
    fn every_bucket(per_bucket: u64) -> Vec<Entry> {
        (0..ebb_shared::hashing::BUCKET_COUNT)
            .flat_map(|bucket| {
                (0..per_bucket).map(move |i| Entry {
                    key_hash: HashRange::bucket(bucket).start + i,
                    key: format!("{bucket}-{i}"),
                    fingerprint: 1,
                    record: format!(r#"{{"id":"{bucket}-{i}"}}"#),
                    mapping_error: None,
                })
            })
            .collect()
    }

    fn snapshot_file(entries: &[Entry], kind: FileKind) -> Vec<u8> {
        let mut writer = EntryWriter::new();
        for entry in entries {
            writer.push_entry(entry);
        }
        writer.finish(kind, "s", "r", HashRange::FULL)
    }

    /// A re-sharded sync's shard reads its part of a wide previous snapshot
    /// from that part's bytes alone: the object's other bytes are garbage
    /// here, which reading it whole (as shards did) would trip over.
    #[tokio::test]
    async fn a_shard_reads_only_its_part_of_a_wider_previous_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::from_url(dir.path().to_str().unwrap()).unwrap();
        let entries = every_bucket(4);
        let part = HashRange::buckets(300, 309);
        let mut file = snapshot_file(&entries, FileKind::Snapshot);
        assert!(file.len() as u64 > 4 * LAYOUT_READ, "{} bytes", file.len());
        let Layout::Read(layout) = read_layout(&file).unwrap() else {
            panic!()
        };
        let needed = layout.bytes_of(&part).unwrap();
        for (i, byte) in file.iter_mut().enumerate().skip(LAYOUT_READ as usize) {
            if !needed.contains(&(i as u64)) {
                *byte = 0xff;
            }
        }
        std::fs::write(dir.path().join("wide.ebb"), &file).unwrap();
        let read = previous_part(&storage, "wide.ebb", &part).await.unwrap();
        let expected: Vec<Entry> = entries.iter().filter(|e| part.contains(e.key_hash)).cloned().collect();
        assert_eq!(read.len(), 40);
        assert_eq!(read, expected);
        // Reading it whole hits the garbage.
        let whole = previous_part(&storage, "wide.ebb", &HashRange::FULL).await;
        assert!(matches!(whole, Err(TaskError::Format(_))), "{whole:?}");
    }

    /// Objects without a bucket index (snapshots of older versions) and ones
    /// small enough to come whole with the first read give their part too.
    #[tokio::test]
    async fn unindexed_and_small_snapshots_are_read_whole_and_filtered() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::from_url(dir.path().to_str().unwrap()).unwrap();
        let part = HashRange::buckets(1000, 1023);
        // A chunk-kind file carries no index: it stands for a legacy snapshot.
        let big = every_bucket(4);
        storage
            .create("legacy.ebb", snapshot_file(&big, FileKind::Chunk))
            .await
            .unwrap();
        let small = every_bucket(1);
        let small_file = snapshot_file(&small[1000..], FileKind::Snapshot);
        assert!((small_file.len() as u64) < LAYOUT_READ);
        storage.create("small.ebb", small_file).await.unwrap();
        for (key, entries, per_bucket) in [("legacy.ebb", &big, 4), ("small.ebb", &small, 1)] {
            let read = previous_part(&storage, key, &part).await.unwrap();
            let expected: Vec<Entry> = entries.iter().filter(|e| part.contains(e.key_hash)).cloned().collect();
            assert_eq!(read.len(), 24 * per_bucket, "{key}");
            assert_eq!(read, expected, "{key}");
        }
    }
}
