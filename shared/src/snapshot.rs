//! The entry file format shared by extraction chunks and snapshots.
//!
//! A file is `EBB1`, a length-prefixed msgpack header (with field names, so it can
//! grow), then entries in a fixed little-endian layout:
//! `key_hash u64 | fingerprint u128 | flags u8 | key_len u32 | key | record_len u32 | record`
//! (format version 1 had no flags byte; it is still read). The record is the
//! JSON object as sent (or to be sent) to the destination; with the
//! `MAPPING_ERROR` flag it is instead why the row could not be mapped — such
//! entries appear in chunk files only, never in snapshots.
//! Snapshot files are sorted by `(key_hash, key)`; chunk files are not.
//!
//! A snapshot's header also holds a bucket index (`bucket_offsets`), so that a
//! shard needing a part of a wider snapshot — after a re-shard — reads the
//! header and then only the bytes of its buckets, never the whole object.
//! Files written before the index are still read, whole. Header fields are
//! read by name and unknown ones ignored, so adding one needs no new version.

use crate::hashing::{Fingerprint, HashRange, KeyHash, HASH_ALGORITHM};
use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 4] = b"EBB1";
pub const FORMAT_VERSION: u32 = 2;

/// The entry's record is a mapping error message, not a record.
const MAPPING_ERROR: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// Rows of the current run, written by extraction, in arrival order.
    Chunk,
    /// The last-synced state of a hash range, sorted by (key_hash, key).
    Snapshot,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub format_version: u32,
    pub kind: FileKind,
    pub hash_algorithm: String,
    pub sync: String,
    pub run_id: String,
    pub range: HashRange,
    pub entries: u64,
    /// Snapshots only: where each bucket of `range` starts, in bytes from the
    /// end of the header, followed by the end of the entries (so bucket `b`'s
    /// entries are `bucket_offsets[b - first]..bucket_offsets[b - first + 1]`,
    /// `first` being the bucket of `range.start`). Empty in chunk files and in
    /// snapshots written before the index existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bucket_offsets: Vec<u64>,
}

/// One row as CDC sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    pub key_hash: KeyHash,
    pub key: String,
    pub fingerprint: Fingerprint,
    /// The mapped record, a JSON object.
    pub record: String,
    /// Why the row could not be mapped; then `record` is empty and the row is
    /// rejected without being sent.
    pub mapping_error: Option<String>,
}

impl Entry {
    pub fn sort_key(&self) -> (KeyHash, &str) {
        (self.key_hash, &self.key)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("not an Ebb entry file (bad magic bytes)")]
    BadMagic,
    #[error("entry file format version {0} is newer than this build understands ({FORMAT_VERSION})")]
    UnknownVersion(u32),
    #[error("entry file was written with hash algorithm {found:?}, this build uses {HASH_ALGORITHM:?}")]
    HashAlgorithm { found: String },
    #[error("entry file is truncated or corrupt at byte {0}")]
    Truncated(usize),
    #[error("entry file header: {0}")]
    Header(String),
}

/// Accumulates entries into one file's bytes.
pub struct EntryWriter {
    body: Vec<u8>,
    entries: u64,
    /// Where each run of entries of one bucket starts, in push order: the
    /// bucket index of a snapshot file.
    bucket_starts: Vec<(usize, u64)>,
    /// Entries came in `(key_hash, …)` order (as a snapshot's must), so
    /// `bucket_starts` holds each bucket once, ascending.
    sorted: bool,
    last_hash: KeyHash,
}

impl Default for EntryWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl EntryWriter {
    pub fn new() -> Self {
        EntryWriter {
            body: Vec::new(),
            entries: 0,
            bucket_starts: Vec::new(),
            sorted: true,
            last_hash: 0,
        }
    }

    pub fn push(&mut self, key_hash: KeyHash, key: &str, fingerprint: Fingerprint, record: &str) {
        self.push_with_flags(key_hash, key, fingerprint, 0, record);
    }

    /// A row that could not be mapped: carried to its shard to be reported as
    /// rejected there, with `error`.
    pub fn push_mapping_error(&mut self, key_hash: KeyHash, key: &str, error: &str) {
        self.push_with_flags(key_hash, key, 0, MAPPING_ERROR, error);
    }

    fn push_with_flags(&mut self, key_hash: KeyHash, key: &str, fingerprint: Fingerprint, flags: u8, record: &str) {
        self.write_head(key_hash, key, fingerprint, flags);
        self.body.extend_from_slice(&(record.len() as u32).to_le_bytes());
        self.body.extend_from_slice(record.as_bytes());
        self.entries += 1;
    }

    /// Appends an entry whose record `build` writes straight into the file's
    /// buffer, returning its fingerprint; if `build` fails, the row is kept as
    /// a mapping error instead. Saves a copy of every record on the hot path.
    pub fn push_building(
        &mut self,
        key_hash: KeyHash,
        key: &str,
        build: impl FnOnce(&mut Vec<u8>) -> Result<Fingerprint, String>,
    ) {
        let start = self.body.len();
        // The fingerprint and the record's length are filled in once known.
        self.write_head(key_hash, key, 0, 0);
        let length_at = self.body.len();
        self.body.extend_from_slice(&0u32.to_le_bytes());
        match build(&mut self.body) {
            Ok(fingerprint) => {
                let record_len = (self.body.len() - length_at - 4) as u32;
                self.body[start + 8..start + 24].copy_from_slice(&fingerprint.to_le_bytes());
                self.body[length_at..length_at + 4].copy_from_slice(&record_len.to_le_bytes());
                self.entries += 1;
            }
            Err(error) => {
                self.body.truncate(start);
                self.push_mapping_error(key_hash, key, &error);
            }
        }
    }

    /// An entry's fields up to its key; the record's length and bytes follow.
    fn write_head(&mut self, key_hash: KeyHash, key: &str, fingerprint: Fingerprint, flags: u8) {
        self.note_bucket(key_hash);
        self.body.extend_from_slice(&key_hash.to_le_bytes());
        self.body.extend_from_slice(&fingerprint.to_le_bytes());
        self.body.push(flags);
        self.body.extend_from_slice(&(key.len() as u32).to_le_bytes());
        self.body.extend_from_slice(key.as_bytes());
    }

    /// The entries' encoded bytes so far; `byte_len()` taken before and after
    /// a push bounds that entry.
    pub fn encoded(&self) -> &[u8] {
        &self.body
    }

    /// Appends one entry as another writer encoded it (a slice of `encoded`
    /// bounding one entry), so entries can be built on several threads and
    /// gathered into per-bucket files by one.
    pub fn push_encoded(&mut self, entry: &[u8]) {
        let key_hash = entry
            .get(..8)
            .map_or(0, |hash| u64::from_le_bytes(hash.try_into().unwrap()));
        self.note_bucket(key_hash);
        self.body.extend_from_slice(entry);
        self.entries += 1;
    }

    /// Records where an entry of `key_hash` starts, for the bucket index.
    fn note_bucket(&mut self, key_hash: KeyHash) {
        if self.entries > 0 && key_hash < self.last_hash {
            self.sorted = false;
        }
        self.last_hash = key_hash;
        let bucket = HashRange::bucket_of(key_hash);
        if self.bucket_starts.last().is_none_or(|&(last, _)| last != bucket) {
            self.bucket_starts.push((bucket, self.body.len() as u64));
        }
    }

    /// The dense bucket index of `range` (see `Header::bucket_offsets`), or
    /// nothing when the entries were not in order or lie outside `range`.
    fn bucket_offsets(&self, range: &HashRange) -> Vec<u64> {
        let (first, last) = (HashRange::bucket_of(range.start), HashRange::bucket_of(range.last));
        let inside = self.bucket_starts.iter().all(|&(b, _)| (first..=last).contains(&b));
        if !self.sorted || !inside {
            return Vec::new();
        }
        let end = self.body.len() as u64;
        let mut offsets = Vec::with_capacity(last - first + 2);
        let mut starts = self.bucket_starts.iter().peekable();
        for bucket in first..=last {
            // A bucket with no entries starts where the next one with some does.
            while starts.peek().is_some_and(|&&(b, _)| b < bucket) {
                starts.next();
            }
            offsets.push(starts.peek().map_or(end, |&&(_, offset)| offset));
        }
        offsets.push(end);
        offsets
    }

    pub fn push_entry(&mut self, entry: &Entry) {
        match &entry.mapping_error {
            Some(error) => self.push_mapping_error(entry.key_hash, &entry.key, error),
            None => self.push(entry.key_hash, &entry.key, entry.fingerprint, &entry.record),
        }
    }

    pub fn len(&self) -> u64 {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    pub fn byte_len(&self) -> usize {
        self.body.len()
    }

    pub fn finish(self, kind: FileKind, sync: &str, run_id: &str, range: HashRange) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.body.len());
        self.finish_into(&mut out, kind, sync, run_id, range);
        out
    }

    /// Appends the whole file to `out`, which may already hold other files.
    pub fn finish_into(&self, out: &mut Vec<u8>, kind: FileKind, sync: &str, run_id: &str, range: HashRange) {
        let header = Header {
            format_version: FORMAT_VERSION,
            kind,
            hash_algorithm: HASH_ALGORITHM.to_string(),
            sync: sync.to_string(),
            run_id: run_id.to_string(),
            range,
            entries: self.entries,
            bucket_offsets: match kind {
                FileKind::Snapshot => self.bucket_offsets(&range),
                FileKind::Chunk => Vec::new(),
            },
        };
        let header = rmp_serde::to_vec_named(&header).expect("header serializes");
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&self.body);
    }
}

/// Reads the header and entries of one file.
pub fn read_entries(bytes: &[u8]) -> Result<(Header, EntryIter<'_>), FormatError> {
    let header_end = header_end(bytes)?;
    if bytes.len() < header_end {
        return Err(FormatError::Truncated(bytes.len()));
    }
    let header = parse_header(&bytes[8..header_end])?;
    let iter = EntryIter::run(bytes, header_end, &header, Some(header.entries));
    Ok((header, iter))
}

/// Where a file's header ends, from its first 8 bytes.
fn header_end(bytes: &[u8]) -> Result<usize, FormatError> {
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return Err(FormatError::BadMagic);
    }
    Ok(8 + u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize)
}

fn parse_header(bytes: &[u8]) -> Result<Header, FormatError> {
    let header: Header = rmp_serde::from_slice(bytes).map_err(|e| FormatError::Header(e.to_string()))?;
    if header.format_version > FORMAT_VERSION {
        return Err(FormatError::UnknownVersion(header.format_version));
    }
    if header.hash_algorithm != HASH_ALGORITHM {
        return Err(FormatError::HashAlgorithm {
            found: header.hash_algorithm,
        });
    }
    Ok(header)
}

/// Bytes a reader of part of a snapshot fetches first: the magic, the header
/// and its bucket index (about 5 KiB for the whole hash space), in one read.
pub const LAYOUT_READ: u64 = 16 * 1024;

/// What the first bytes of a file say about where its entries lie.
#[derive(Debug)]
pub enum Layout {
    /// The header is longer than the bytes given: read `0..header_end`.
    NeedBytes {
        header_end: u64,
    },
    Read(FileLayout),
}

#[derive(Debug, Clone)]
pub struct FileLayout {
    pub header: Header,
    /// Where the entries start in the file.
    pub body_start: u64,
}

impl FileLayout {
    /// The bytes of the file that hold every entry of `part` (and perhaps
    /// others of the same buckets), or `None` when the file has no bucket
    /// index and must be read whole.
    pub fn bytes_of(&self, part: &HashRange) -> Option<std::ops::Range<u64>> {
        let offsets = &self.header.bucket_offsets;
        let first = HashRange::bucket_of(self.header.range.start);
        if offsets.len() != HashRange::bucket_of(self.header.range.last) - first + 2 {
            return None;
        }
        let Some(part) = part.intersect(&self.header.range) else {
            return Some(self.body_start..self.body_start);
        };
        let (from, to) = (
            HashRange::bucket_of(part.start) - first,
            HashRange::bucket_of(part.last) - first,
        );
        Some(self.body_start + offsets[from]..self.body_start + offsets[to + 1])
    }

    /// The entries in `bytes`, which are the file's bytes `bytes_of` named.
    pub fn entries<'a>(&self, bytes: &'a [u8]) -> EntryIter<'a> {
        EntryIter::run(bytes, 0, &self.header, None)
    }
}

/// Reads a file's layout from its first bytes (`LAYOUT_READ` of them, or the
/// whole file if shorter).
pub fn read_layout(prefix: &[u8]) -> Result<Layout, FormatError> {
    let header_end = header_end(prefix)?;
    if prefix.len() < header_end {
        return Ok(Layout::NeedBytes {
            header_end: header_end as u64,
        });
    }
    Ok(Layout::Read(FileLayout {
        header: parse_header(&prefix[8..header_end])?,
        body_start: header_end as u64,
    }))
}

/// Reads files written back to back into one object (extraction packs one
/// file per bucket into each object it writes, and a shard reads a run of
/// them with one ranged read).
pub fn read_entry_files(bytes: &[u8]) -> EntryFiles<'_> {
    EntryFiles {
        bytes,
        offset: 0,
        current: None,
    }
}

pub struct EntryFiles<'a> {
    bytes: &'a [u8],
    /// Where the file being read starts.
    offset: usize,
    current: Option<EntryIter<'a>>,
}

impl Iterator for EntryFiles<'_> {
    type Item = Result<Entry, FormatError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(file) = &mut self.current {
                if let Some(entry) = file.next() {
                    return Some(entry);
                }
                self.offset += file.position;
                self.current = None;
            }
            if self.offset >= self.bytes.len() {
                return None;
            }
            match read_entries(&self.bytes[self.offset..]) {
                Ok((_, file)) => self.current = Some(file),
                Err(error) => {
                    self.offset = self.bytes.len();
                    return Some(Err(error));
                }
            }
        }
    }
}

pub struct EntryIter<'a> {
    bytes: &'a [u8],
    position: usize,
    /// Entries carry a flags byte (format version 2 and later).
    flagged: bool,
    /// Entries the header announced and not yet read; `None` reading a run of
    /// entries cut out of a file, which ends with its bytes.
    remaining: Option<u64>,
}

impl<'a> EntryIter<'a> {
    /// Entries from `position` on: `count` of them, or as many as `bytes` holds.
    fn run(bytes: &'a [u8], position: usize, header: &Header, count: Option<u64>) -> Self {
        EntryIter {
            bytes,
            position,
            flagged: header.format_version >= 2,
            remaining: count,
        }
    }

    fn take(&mut self, n: usize) -> Result<&[u8], FormatError> {
        let end = self.position.checked_add(n).filter(|&end| end <= self.bytes.len());
        let end = end.ok_or(FormatError::Truncated(self.position))?;
        let slice = &self.bytes[self.position..end];
        self.position = end;
        Ok(slice)
    }

    fn read_entry(&mut self) -> Result<Entry, FormatError> {
        let start = self.position;
        let key_hash = u64::from_le_bytes(self.take(8)?.try_into().unwrap());
        let fingerprint = u128::from_le_bytes(self.take(16)?.try_into().unwrap());
        let flags = if self.flagged { self.take(1)?[0] } else { 0 };
        let key_len = u32::from_le_bytes(self.take(4)?.try_into().unwrap()) as usize;
        let key = std::str::from_utf8(self.take(key_len)?)
            .map_err(|_| FormatError::Truncated(start))?
            .to_string();
        let record_len = u32::from_le_bytes(self.take(4)?.try_into().unwrap()) as usize;
        let record = std::str::from_utf8(self.take(record_len)?)
            .map_err(|_| FormatError::Truncated(start))?
            .to_string();
        Ok(if flags & MAPPING_ERROR != 0 {
            Entry {
                key_hash,
                key,
                fingerprint,
                record: String::new(),
                mapping_error: Some(record),
            }
        } else {
            Entry {
                key_hash,
                key,
                fingerprint,
                record,
                mapping_error: None,
            }
        })
    }
}

impl Iterator for EntryIter<'_> {
    type Item = Result<Entry, FormatError>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.remaining {
            Some(0) => return None,
            Some(left) => *left -= 1,
            None if self.position >= self.bytes.len() => return None,
            None => {}
        }
        let entry = self.read_entry();
        if entry.is_err() {
            self.remaining = Some(0);
        }
        Some(entry)
    }
}

/// Object-store layout. Every object is written once under a key unique to its run,
/// shard and attempt; the state DB decides which ones are current.
pub mod paths {
    use crate::hashing::HashRange;

    /// An object of extraction's output holding one file per bucket, back to back.
    pub fn chunks(sync: &str, run_id: &str, attempt: &str, part: u32) -> String {
        format!("syncs/{sync}/runs/{run_id}/chunks/{attempt}/part-{part:05}.ebb")
    }

    pub fn snapshot(sync: &str, run_id: &str, range: &HashRange, attempt: &str) -> String {
        format!(
            "syncs/{sync}/snapshots/{run_id}/{}-{}-{attempt}.ebb",
            range.start_hex(),
            range.last_hex()
        )
    }

    pub fn checkpoint_prefix(sync: &str, run_id: &str, range: &HashRange) -> String {
        format!(
            "syncs/{sync}/runs/{run_id}/checkpoints/{}-{}/",
            range.start_hex(),
            range.last_hex()
        )
    }

    /// What an object of this layout is, for the janitor.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum ObjectKind {
        /// Extraction output of a run: read by its shard tasks only.
        Chunks,
        /// Delivery progress of a shard attempt: read by its redeliveries only.
        Checkpoint,
        /// Row outcomes of a shard attempt: read while its run is kept.
        Rows,
        /// A shard attempt's snapshot: read while a pointer names it.
        Snapshot,
        /// The requests a shard attempt sent and their answers (the live
        /// debugger): kept as long as the run is.
        Requests,
    }

    /// An object key taken apart: the sync and run it was written for.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ObjectRef<'a> {
        pub sync: &'a str,
        pub run_id: &'a str,
        pub kind: ObjectKind,
    }

    /// Reads a key written by the functions of this module; `None` for any
    /// other key, which the janitor never touches. Run ids hold no `/`.
    pub fn parse(key: &str) -> Option<ObjectRef<'_>> {
        let rest = key.strip_prefix("syncs/")?;
        if let Some(at) = rest.rfind("/snapshots/") {
            let (sync, tail) = (&rest[..at], &rest[at + "/snapshots/".len()..]);
            let (run_id, file) = tail.split_once('/')?;
            if !sync.is_empty() && !run_id.is_empty() && !file.is_empty() && !file.contains('/') {
                return Some(ObjectRef {
                    sync,
                    run_id,
                    kind: ObjectKind::Snapshot,
                });
            }
        }
        let at = rest.rfind("/runs/")?;
        let (sync, tail) = (&rest[..at], &rest[at + "/runs/".len()..]);
        let (run_id, tail) = tail.split_once('/')?;
        let (folder, file) = tail.split_once('/')?;
        let kind = match folder {
            "chunks" => ObjectKind::Chunks,
            "checkpoints" => ObjectKind::Checkpoint,
            "rows" => ObjectKind::Rows,
            "requests" => ObjectKind::Requests,
            _ => return None,
        };
        (!sync.is_empty() && !run_id.is_empty() && !file.is_empty()).then_some(ObjectRef { sync, run_id, kind })
    }

    /// The requests one shard attempt sent and the answers it got.
    pub fn requests(sync: &str, run_id: &str, range: &HashRange, attempt: &str) -> String {
        format!(
            "{}{}-{}-{attempt}.jsonl",
            requests_prefix(sync, run_id),
            range.start_hex(),
            range.last_hex()
        )
    }

    /// Where a run's request logs are.
    pub fn requests_prefix(sync: &str, run_id: &str) -> String {
        format!("syncs/{sync}/runs/{run_id}/requests/")
    }

    /// The outcome of every planned and invalid row of one shard attempt.
    pub fn rows(sync: &str, run_id: &str, range: &HashRange, attempt: &str) -> String {
        format!(
            "syncs/{sync}/runs/{run_id}/rows/{}-{}-{attempt}.jsonl",
            range.start_hex(),
            range.last_hex()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_written_key_parses_back_to_its_sync_run_and_kind() {
        use paths::{parse, ObjectKind};
        let range = HashRange::FULL;
        let cases = [
            (paths::chunks("a/b", "r1", "t1", 3), ObjectKind::Chunks),
            (paths::snapshot("a/b", "r1", &range, "t1"), ObjectKind::Snapshot),
            (
                format!("{}000001.ebb", paths::checkpoint_prefix("a/b", "r1", &range)),
                ObjectKind::Checkpoint,
            ),
            (paths::rows("a/b", "r1", &range, "t1"), ObjectKind::Rows),
        ];
        for (key, kind) in cases {
            let parsed = parse(&key).unwrap_or_else(|| panic!("{key} does not parse"));
            assert_eq!((parsed.sync, parsed.run_id, parsed.kind), ("a/b", "r1", kind), "{key}");
        }
        for foreign in [
            "other/x",
            "syncs/s/runs/r/elsewhere/f",
            "syncs/s/snapshots/r",
            "syncs//runs/r/rows/f",
        ] {
            assert_eq!(parse(foreign), None, "{foreign}");
        }
    }

    #[test]
    fn files_back_to_back_read_as_one_and_a_cut_one_is_an_error() {
        let file = |keys: &[&str]| {
            let mut writer = EntryWriter::new();
            for key in keys {
                writer.push(1, key, 2, "{}");
            }
            let mut out = Vec::new();
            writer.finish_into(&mut out, FileKind::Chunk, "s", "r", HashRange::FULL);
            out
        };
        let mut packed = file(&["a", "b"]);
        packed.extend(file(&[]));
        packed.extend(file(&["c"]));
        let keys: Vec<String> = read_entry_files(&packed).map(|e| e.unwrap().key).collect();
        assert_eq!(keys, ["a", "b", "c"]);
        let cut = &packed[..packed.len() - 3];
        assert!(read_entry_files(cut).any(|e| matches!(e, Err(FormatError::Truncated(_)))));
    }

    #[test]
    fn entries_built_in_place_or_moved_between_writers_read_back_the_same() {
        let mut expected = EntryWriter::new();
        expected.push(1, "a", 5, r#"{"x":1}"#);
        expected.push_mapping_error(2, "b", "cannot cast");
        let mut scratch = EntryWriter::new();
        scratch.push_building(1, "a", |out| {
            out.extend_from_slice(br#"{"x":1}"#);
            Ok(5)
        });
        let middle = scratch.byte_len();
        scratch.push_building(2, "b", |out| {
            out.extend_from_slice(b"{\"half");
            Err("cannot cast".into())
        });
        assert_eq!(scratch.encoded(), expected.encoded());
        let mut gathered = EntryWriter::new();
        gathered.push_encoded(&scratch.encoded()[..middle]);
        gathered.push_encoded(&scratch.encoded()[middle..]);
        assert_eq!(gathered.len(), 2);
        let finish = |w: EntryWriter| w.finish(FileKind::Chunk, "s", "r", HashRange::FULL);
        assert_eq!(finish(gathered), finish(expected));
    }

    #[test]
    fn round_trip() {
        let mut writer = EntryWriter::new();
        writer.push(7, "k1", 99, r#"{"a":1}"#);
        writer.push(u64::MAX, "ключ", u128::MAX, "{}");
        let bytes = writer.finish(FileKind::Snapshot, "s", "r", HashRange::FULL);
        let (header, entries) = read_entries(&bytes).unwrap();
        assert_eq!(header.entries, 2);
        assert_eq!(header.kind, FileKind::Snapshot);
        let entries: Vec<Entry> = entries.collect::<Result<_, _>>().unwrap();
        assert_eq!(entries[1].key, "ключ");
        assert_eq!(entries[1].fingerprint, u128::MAX);
        assert_eq!(entries[0].record, r#"{"a":1}"#);
    }

    #[test]
    fn mapping_errors_round_trip() {
        let mut writer = EntryWriter::new();
        writer.push_mapping_error(7, "k1", "field \"x\": cannot cast");
        writer.push(8, "k2", 5, "{}");
        let bytes = writer.finish(FileKind::Chunk, "s", "r", HashRange::FULL);
        let entries: Vec<Entry> = read_entries(&bytes).unwrap().1.collect::<Result<_, _>>().unwrap();
        assert_eq!(entries[0].mapping_error.as_deref(), Some("field \"x\": cannot cast"));
        assert_eq!(entries[0].record, "");
        assert_eq!(entries[1].mapping_error, None);
    }

    #[test]
    fn version_1_files_are_still_read() {
        let header = Header {
            format_version: 1,
            kind: FileKind::Snapshot,
            hash_algorithm: HASH_ALGORITHM.to_string(),
            sync: "s".into(),
            run_id: "r".into(),
            range: HashRange::FULL,
            entries: 1,
            bucket_offsets: Vec::new(),
        };
        let header = rmp_serde::to_vec_named(&header).unwrap();
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&(header.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&header);
        bytes.extend_from_slice(&9u64.to_le_bytes());
        bytes.extend_from_slice(&3u128.to_le_bytes());
        bytes.extend_from_slice(&2u32.to_le_bytes());
        bytes.extend_from_slice(b"k9");
        bytes.extend_from_slice(&2u32.to_le_bytes());
        bytes.extend_from_slice(b"{}");
        let entries: Vec<Entry> = read_entries(&bytes).unwrap().1.collect::<Result<_, _>>().unwrap();
        assert_eq!(entries[0].key, "k9");
        assert_eq!(entries[0].fingerprint, 3);
        assert_eq!(entries[0].record, "{}");
    }

    #[test]
    fn corruption_is_detected() {
        let mut writer = EntryWriter::new();
        writer.push(7, "k1", 99, r#"{"a":1}"#);
        let bytes = writer.finish(FileKind::Chunk, "s", "r", HashRange::FULL);
        let truncated = &bytes[..bytes.len() - 3];
        let (_, mut entries) = read_entries(truncated).unwrap();
        assert!(matches!(entries.next(), Some(Err(FormatError::Truncated(_)))));
        assert!(entries.next().is_none());
        assert!(matches!(read_entries(b"nope"), Err(FormatError::BadMagic)));
    }

    /// Sorted entries with `per_bucket` rows in every `step`-th bucket.
    fn wide_snapshot(step: usize, per_bucket: u64) -> Vec<Entry> {
        let mut entries = Vec::new();
        for bucket in (0..crate::hashing::BUCKET_COUNT).step_by(step) {
            let start = HashRange::bucket(bucket).start;
            for i in 0..per_bucket {
                entries.push(Entry {
                    key_hash: start + i * 7,
                    key: format!("k{bucket}-{i}"),
                    fingerprint: i as u128,
                    record: format!(r#"{{"n":{i}}}"#),
                    mapping_error: None,
                });
            }
        }
        entries
    }

    #[test]
    fn a_snapshot_part_is_read_from_its_buckets_bytes_alone() {
        let entries = wide_snapshot(3, 4);
        let mut writer = EntryWriter::new();
        for entry in &entries {
            writer.push_entry(entry);
        }
        let file = writer.finish(FileKind::Snapshot, "s", "r", HashRange::FULL);
        let Layout::Read(layout) = read_layout(&file).unwrap() else {
            panic!("the whole file holds its header")
        };
        assert_eq!(layout.header.bucket_offsets.len(), crate::hashing::BUCKET_COUNT + 1);
        for part in [
            HashRange::buckets(0, 0),
            HashRange::buckets(1, 2),
            HashRange::buckets(10, 99),
            HashRange::buckets(1000, 1023),
            HashRange::FULL,
        ] {
            let bytes = layout.bytes_of(&part).unwrap();
            let read: Vec<Entry> = layout
                .entries(&file[bytes.start as usize..bytes.end as usize])
                .collect::<Result<_, _>>()
                .unwrap();
            let expected: Vec<Entry> = entries.iter().filter(|e| part.contains(e.key_hash)).cloned().collect();
            assert_eq!(read, expected, "{part:?}");
            if part != HashRange::FULL {
                assert!(
                    bytes.end - bytes.start < (file.len() as u64) / 4,
                    "{part:?} reads {bytes:?}"
                );
            }
        }
        // A header longer than the bytes given asks for the rest.
        assert!(matches!(
            read_layout(&file[..20]).unwrap(),
            Layout::NeedBytes { header_end } if header_end == layout.body_start
        ));
    }

    #[test]
    fn only_sorted_snapshots_carry_a_bucket_index() {
        let entries = wide_snapshot(100, 2);
        let mut chunk = EntryWriter::new();
        let mut unsorted = EntryWriter::new();
        for entry in &entries {
            chunk.push_entry(entry);
        }
        for entry in entries.iter().rev() {
            unsorted.push_entry(entry);
        }
        for (writer, kind) in [(chunk, FileKind::Chunk), (unsorted, FileKind::Snapshot)] {
            let file = writer.finish(kind, "s", "r", HashRange::FULL);
            let (header, _) = read_entries(&file).unwrap();
            assert!(header.bucket_offsets.is_empty(), "{kind:?}");
            let Layout::Read(layout) = read_layout(&file).unwrap() else {
                panic!()
            };
            assert_eq!(layout.bytes_of(&HashRange::bucket(0)), None, "read whole");
        }
        // A snapshot whose range is one part of the hash space indexes that part.
        let part = HashRange::buckets(100, 299);
        let mut writer = EntryWriter::new();
        for entry in entries.iter().filter(|e| part.contains(e.key_hash)) {
            writer.push_entry(entry);
        }
        let file = writer.finish(FileKind::Snapshot, "s", "r", part);
        let Layout::Read(layout) = read_layout(&file).unwrap() else {
            panic!()
        };
        assert_eq!(layout.header.bucket_offsets.len(), 201);
        let outside = layout.bytes_of(&HashRange::buckets(500, 600)).unwrap();
        assert!(outside.is_empty(), "a part outside the file's range reads nothing");
        let one = layout.bytes_of(&HashRange::bucket(200)).unwrap();
        let read: Vec<Entry> = layout
            .entries(&file[one.start as usize..one.end as usize])
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(read.len(), 2);
    }
}
