//! The wire protocol between coordinator and workers.
//!
//! Messages are msgpack maps with field names (`rmp_serde::to_vec_named`) and carry
//! a protocol version. Fields added later get `#[serde(default)]`, so coordinators
//! and workers of neighbouring versions interoperate during a rolling upgrade.

use crate::config::SyncSpec;
use crate::hashing::HashRange;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub const PROTOCOL_VERSION: u32 = 1;

/// One unit of work on the task queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskMessage {
    pub version: u32,
    /// Unique per task of a run: `<run>/extract`, `<run>/extract-<n>` or
    /// `<run>/shard-<n>`.
    pub task_id: String,
    pub run_id: String,
    pub sync: SyncSpec,
    pub kind: TaskKind,
    /// When the run was created (ms since the epoch), for the `run_started_at`
    /// mapping variable.
    #[serde(default)]
    pub run_started_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// Run the model query, hash keys and write per-bucket chunk files; or,
    /// when the model is read in parts, plan them (`TaskOutcome::Partitioned`).
    Extract,
    /// Diff one hash range against its previous snapshot and deliver the changes.
    Shard(ShardTask),
    /// Extract the rows of one part of a model: a range of its primary key.
    ExtractPart(ExtractPart),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExtractPart {
    /// 0-based; parts are merged in this order.
    pub index: u32,
    pub count: u32,
    pub range: KeyRange,
}

/// A part of a model: the rows whose primary key lies in `[from, to)`; an
/// absent bound is open. The part with `nulls` also takes the rows whose key
/// is null (so they are still counted as invalid, once).
///
/// It names no column: the worker applies it to the model's own primary key,
/// so a task on the queue cannot make a worker filter on anything else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRange {
    pub from: Option<KeyBound>,
    pub to: Option<KeyBound>,
    #[serde(default)]
    pub nulls: bool,
}

/// A primary-key value bounding a part, compared by the source's own ordering.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyBound {
    Int(i64),
    Text(String),
}

/// A model's parts, planned by the worker that took its extract task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionPlan {
    /// In key order; together they hold every row once.
    pub parts: Vec<KeyRange>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardTask {
    pub index: u32,
    pub range: HashRange,
    /// The current run's chunks whose buckets lie in `range`.
    pub chunks: Vec<ChunkRef>,
    /// The committed snapshot objects overlapping `range`, each with the part of
    /// the hash space it is current for.
    pub previous: Vec<SnapshotPointer>,
    /// Send every row, ignoring what the previous snapshot says was sent.
    #[serde(default)]
    pub full_resync: bool,
    /// Record every row as synced without sending anything.
    #[serde(default)]
    pub reset_cdc: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotPointer {
    pub range: HashRange,
    pub object_key: String,
}

/// What a worker reports back on the results queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultMessage {
    pub version: u32,
    pub task_id: String,
    pub run_id: String,
    pub worker_id: String,
    /// Unique per attempt at a task; names the objects the attempt wrote.
    pub attempt: String,
    pub outcome: TaskOutcome,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskOutcome {
    Extracted(ExtractReport),
    /// The model is read in these parts, one `ExtractPart` task each.
    Partitioned(PartitionPlan),
    ShardDone(ShardReport),
    /// Partial progress of a shard, for progress bars; carries no state.
    Progress(ShardProgress),
    Failed(TaskFailure),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExtractReport {
    pub rows_queried: u64,
    /// Rows whose primary key was null: counted, never sent.
    pub null_keys: u64,
    pub columns: Vec<String>,
    /// Buckets that received rows; absent buckets are empty.
    pub buckets: Vec<BucketReport>,
    /// The first rows whose key was null (at most `REPORTED_ROWS_LIMIT`), so
    /// they can be listed like the other invalid rows.
    #[serde(default)]
    pub null_key_rows: Vec<NullKeyRow>,
    /// Which part of the model this is (`ExtractPart::index`); none for a
    /// model read whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<u32>,
}

impl ExtractReport {
    /// The reports of a model's parts as one, as if it had been read whole in
    /// part order: counts added, each bucket's chunks in part order, null-key
    /// rows numbered through.
    pub fn merge(parts: impl IntoIterator<Item = ExtractReport>) -> ExtractReport {
        let mut merged = ExtractReport {
            rows_queried: 0,
            null_keys: 0,
            columns: Vec::new(),
            buckets: Vec::new(),
            null_key_rows: Vec::new(),
            part: None,
        };
        let mut buckets: std::collections::BTreeMap<u32, BucketReport> = Default::default();
        for part in parts {
            if merged.columns.is_empty() {
                merged.columns = part.columns;
            }
            for row in part.null_key_rows {
                if merged.null_key_rows.len() < REPORTED_ROWS_LIMIT {
                    merged.null_key_rows.push(NullKeyRow {
                        row_number: merged.rows_queried + row.row_number,
                        record: row.record,
                    });
                }
            }
            merged.rows_queried += part.rows_queried;
            merged.null_keys += part.null_keys;
            for bucket in part.buckets {
                let into = buckets.entry(bucket.bucket).or_insert_with(|| BucketReport {
                    bucket: bucket.bucket,
                    rows: 0,
                    chunks: Vec::new(),
                });
                into.rows += bucket.rows;
                into.chunks.extend(bucket.chunks);
            }
        }
        merged.buckets = buckets.into_values().collect();
        merged
    }
}

/// A row of the model whose primary key was null: it has no key to name it by,
/// so it is named by its place in the result and the record it would have sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NullKeyRow {
    /// 1-based position in the query's result (stable only if the query orders its rows).
    pub row_number: u64,
    /// The mapped record, cut to `NULL_KEY_RECORD_CHARS` characters.
    pub record: String,
}

/// How much of a null-key row's record is kept to recognise it by.
pub const NULL_KEY_RECORD_CHARS: usize = 300;

impl NullKeyRow {
    /// What the row results say about it.
    pub fn reason(&self) -> String {
        format!(
            "null primary key (row {} of the result): {}",
            self.row_number, self.record
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BucketReport {
    pub bucket: u32,
    pub rows: u64,
    pub chunks: Vec<ChunkRef>,
}

/// Where some of extraction's output lies: a whole object, or a byte range of
/// one (extraction packs every bucket it holds into one object).
///
/// On the wire it is a string, `key` or `key#bytes=START-END`: a worker too old
/// to know ranges then fails on a key it cannot find, rather than reading a
/// whole packed object as if it were one bucket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChunkRef {
    pub key: String,
    pub bytes: Option<std::ops::Range<u64>>,
}

const RANGE_MARK: &str = "#bytes=";

impl ChunkRef {
    pub fn whole(key: impl Into<String>) -> ChunkRef {
        ChunkRef {
            key: key.into(),
            bytes: None,
        }
    }

    pub fn part(key: impl Into<String>, bytes: std::ops::Range<u64>) -> ChunkRef {
        ChunkRef {
            key: key.into(),
            bytes: Some(bytes),
        }
    }

    fn parse(text: &str) -> ChunkRef {
        let ranged = text.rsplit_once(RANGE_MARK).and_then(|(key, range)| {
            let (start, end) = range.split_once('-')?;
            let (start, end) = (start.parse().ok()?, end.parse().ok()?);
            (start <= end).then(|| ChunkRef::part(key, start..end))
        });
        ranged.unwrap_or_else(|| ChunkRef::whole(text))
    }
}

impl std::fmt::Display for ChunkRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.bytes {
            None => f.write_str(&self.key),
            Some(range) => write!(f, "{}{RANGE_MARK}{}-{}", self.key, range.start, range.end),
        }
    }
}

impl Serialize for ChunkRef {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ChunkRef {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(ChunkRef::parse(&text))
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpCounts {
    pub added: u64,
    pub changed: u64,
    pub removed: u64,
}

impl OpCounts {
    pub fn total(&self) -> u64 {
        self.added + self.changed + self.removed
    }

    pub fn add(&mut self, other: &OpCounts) {
        self.added += other.added;
        self.changed += other.changed;
        self.removed += other.removed;
    }

    pub fn count(&mut self, operation: Operation) {
        match operation {
            Operation::Added => self.added += 1,
            Operation::Changed => self.changed += 1,
            Operation::Removed => self.removed += 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Added,
    Changed,
    Removed,
}

impl Operation {
    pub fn as_str(&self) -> &'static str {
        match self {
            Operation::Added => "added",
            Operation::Changed => "changed",
            Operation::Removed => "removed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardReport {
    pub index: u32,
    pub range: HashRange,
    /// The new snapshot of `range`, to become current when this report is accepted.
    pub snapshot_key: String,
    pub planned: OpCounts,
    pub succeeded: OpCounts,
    pub failed: OpCounts,
    /// Rows sharing a primary key with another row: counted, never sent.
    pub duplicate_keys: u64,
    /// Up to `REPORTED_ROWS_LIMIT` invalid keys, for the run's detail.
    #[serde(default)]
    pub invalid_sample: Vec<InvalidRow>,
    /// Up to `REPORTED_ROWS_LIMIT` rejected rows, for the run's detail.
    #[serde(default)]
    pub rejected_sample: Vec<RowFailure>,
    /// Every planned and invalid row of the shard with its outcome, as JSON
    /// lines of `RowResult` in the object store.
    #[serde(default)]
    pub rows_key: Option<String>,
    /// Set when the destination failed for the whole shard (all rows failed with it).
    #[serde(default)]
    pub destination_error: Option<String>,
    /// The rows `snapshot_key` holds per bucket (buckets without any left
    /// out): the previous side the next run's shards are sized by. Empty from
    /// a worker older than it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshot_buckets: Vec<BucketRows>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketRows {
    pub bucket: u32,
    pub rows: u64,
}

/// How many invalid or rejected rows a report lists by key; the full list of
/// rejections is in the object store.
pub const REPORTED_ROWS_LIMIT: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvalidRow {
    pub key: String,
    pub reason: InvalidReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvalidReason {
    NullKey,
    DuplicateKey,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowFailure {
    pub key: String,
    pub operation: Operation,
    pub error: String,
}

/// What became of one row in a run: one line of a shard's row file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowResult {
    pub key: String,
    /// How CDC saw the row; none for an invalid row, which was never planned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
    pub outcome: RowOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowOutcome {
    /// The destination accepted it.
    Succeeded,
    /// The destination (or the mapping) rejected it; it is retried next run.
    Failed,
    /// Its key is null or not unique: counted, never sent.
    Invalid,
}

impl RowOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            RowOutcome::Succeeded => "succeeded",
            RowOutcome::Failed => "failed",
            RowOutcome::Invalid => "invalid",
        }
    }

    pub fn parse(text: &str) -> Option<RowOutcome> {
        [RowOutcome::Succeeded, RowOutcome::Failed, RowOutcome::Invalid]
            .into_iter()
            .find(|o| o.as_str() == text)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardProgress {
    pub index: u32,
    pub planned: u64,
    pub done: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFailure {
    pub error: String,
    /// Whether running the task again may succeed (a transient fault) or not
    /// (a broken query, a missing column, a malformed config).
    pub retriable: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("cannot decode message: {0}")]
    Decode(String),
}

pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(message).expect("protocol messages always serialize")
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ProtocolError> {
    rmp_serde::from_slice(bytes).map_err(|e| ProtocolError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct OlderFailure {
        error: String,
        retriable: bool,
        added_in_a_later_version: u32,
    }

    #[test]
    fn unknown_fields_from_a_newer_peer_are_ignored() {
        let newer = encode(&OlderFailure {
            error: "x".into(),
            retriable: true,
            added_in_a_later_version: 3,
        });
        let decoded: TaskFailure = decode(&newer).unwrap();
        assert_eq!(decoded.error, "x");
    }

    #[test]
    fn chunk_refs_travel_as_strings_and_old_plain_keys_still_read() {
        let part = ChunkRef::part("syncs/s/runs/r/chunks/a/part-00000.ebb", 10..250);
        let whole = ChunkRef::whole("syncs/s#x/b0001-00000.ebb");
        let bytes = encode(&vec![part.clone(), whole.clone()]);
        assert_eq!(
            decode::<Vec<String>>(&bytes).unwrap()[0],
            "syncs/s/runs/r/chunks/a/part-00000.ebb#bytes=10-250"
        );
        assert_eq!(decode::<Vec<ChunkRef>>(&bytes).unwrap(), vec![part, whole]);
        let old = encode(&vec!["syncs/s/runs/r/chunks/a/b0001-00000.ebb".to_string()]);
        assert_eq!(
            decode::<Vec<ChunkRef>>(&old).unwrap(),
            vec![ChunkRef::whole("syncs/s/runs/r/chunks/a/b0001-00000.ebb")]
        );
    }

    #[test]
    fn result_round_trip_with_named_fields() {
        let message = ResultMessage {
            version: PROTOCOL_VERSION,
            task_id: "r/shard-1".into(),
            run_id: "r".into(),
            worker_id: "w".into(),
            attempt: "a".into(),
            outcome: TaskOutcome::Progress(ShardProgress {
                index: 1,
                planned: 10,
                done: 5,
            }),
        };
        let bytes = encode(&message);
        assert!(bytes.windows(7).any(|w| w == b"task_id"), "field names are on the wire");
        assert_eq!(decode::<ResultMessage>(&bytes).unwrap(), message);
    }

    fn part_report(part: u32, rows: u64, buckets: &[(u32, &str)], null_rows: &[u64]) -> ExtractReport {
        ExtractReport {
            rows_queried: rows,
            null_keys: null_rows.len() as u64,
            columns: vec!["id".into()],
            buckets: buckets
                .iter()
                .map(|(bucket, key)| BucketReport {
                    bucket: *bucket,
                    rows: 1,
                    chunks: vec![ChunkRef::whole(*key)],
                })
                .collect(),
            null_key_rows: null_rows
                .iter()
                .map(|&row_number| NullKeyRow {
                    row_number,
                    record: "{}".into(),
                })
                .collect(),
            part: Some(part),
        }
    }

    #[test]
    fn merged_parts_read_as_one_extraction_in_part_order() {
        let merged = ExtractReport::merge([
            part_report(0, 10, &[(3, "a0"), (1, "a1")], &[2]),
            part_report(1, 5, &[(3, "b0")], &[1, 4]),
        ]);
        assert_eq!((merged.rows_queried, merged.null_keys, merged.part), (15, 3, None));
        assert_eq!(merged.columns, vec!["id"]);
        let buckets: Vec<(u32, u64, Vec<String>)> = merged
            .buckets
            .iter()
            .map(|b| (b.bucket, b.rows, b.chunks.iter().map(|c| c.to_string()).collect()))
            .collect();
        assert_eq!(
            buckets,
            vec![
                (1, 1, vec!["a1".to_string()]),
                (3, 2, vec!["a0".to_string(), "b0".to_string()])
            ]
        );
        // Row numbers count through the parts before.
        let numbers: Vec<u64> = merged.null_key_rows.iter().map(|r| r.row_number).collect();
        assert_eq!(numbers, vec![2, 11, 14]);
    }

    #[test]
    fn an_extract_part_round_trips() {
        let task = TaskKind::ExtractPart(ExtractPart {
            index: 1,
            count: 3,
            range: KeyRange {
                from: Some(KeyBound::Text("m".into())),
                to: Some(KeyBound::Int(7)),
                nulls: false,
            },
        });
        assert_eq!(decode::<TaskKind>(&encode(&task)).unwrap(), task);
    }
}
