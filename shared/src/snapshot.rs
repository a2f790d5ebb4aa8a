//! The entry file format shared by extraction chunks and snapshots.
//!
//! A file is `EBB1`, a length-prefixed msgpack header (with field names, so it can
//! grow), then entries in a fixed little-endian layout:
//! `key_hash u64 | fingerprint u128 | key_len u32 | key | record_len u32 | record`.
//! The record is the JSON object as sent (or to be sent) to the destination.
//! Snapshot files are sorted by `(key_hash, key)`; chunk files are not.

use crate::hashing::{Fingerprint, HashRange, KeyHash, HASH_ALGORITHM};
use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 4] = b"EBB1";
pub const FORMAT_VERSION: u32 = 1;

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
}

/// One row as CDC sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key_hash: KeyHash,
    pub key: String,
    pub fingerprint: Fingerprint,
    /// The mapped record, a JSON object.
    pub record: String,
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
        }
    }

    pub fn push(&mut self, key_hash: KeyHash, key: &str, fingerprint: Fingerprint, record: &str) {
        self.body.extend_from_slice(&key_hash.to_le_bytes());
        self.body.extend_from_slice(&fingerprint.to_le_bytes());
        self.body.extend_from_slice(&(key.len() as u32).to_le_bytes());
        self.body.extend_from_slice(key.as_bytes());
        self.body.extend_from_slice(&(record.len() as u32).to_le_bytes());
        self.body.extend_from_slice(record.as_bytes());
        self.entries += 1;
    }

    pub fn push_entry(&mut self, entry: &Entry) {
        self.push(entry.key_hash, &entry.key, entry.fingerprint, &entry.record);
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
        let header = Header {
            format_version: FORMAT_VERSION,
            kind,
            hash_algorithm: HASH_ALGORITHM.to_string(),
            sync: sync.to_string(),
            run_id: run_id.to_string(),
            range,
            entries: self.entries,
        };
        let header = rmp_serde::to_vec_named(&header).expect("header serializes");
        let mut out = Vec::with_capacity(8 + header.len() + self.body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&self.body);
        out
    }
}

/// Reads the header and entries of one file.
pub fn read_entries(bytes: &[u8]) -> Result<(Header, EntryIter<'_>), FormatError> {
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return Err(FormatError::BadMagic);
    }
    let header_len = u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
    let header_end = 8 + header_len;
    if bytes.len() < header_end {
        return Err(FormatError::Truncated(bytes.len()));
    }
    let header: Header =
        rmp_serde::from_slice(&bytes[8..header_end]).map_err(|e| FormatError::Header(e.to_string()))?;
    if header.format_version > FORMAT_VERSION {
        return Err(FormatError::UnknownVersion(header.format_version));
    }
    if header.hash_algorithm != HASH_ALGORITHM {
        return Err(FormatError::HashAlgorithm {
            found: header.hash_algorithm,
        });
    }
    Ok((
        header,
        EntryIter {
            bytes,
            position: header_end,
        },
    ))
}

pub struct EntryIter<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl EntryIter<'_> {
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
        let key_len = u32::from_le_bytes(self.take(4)?.try_into().unwrap()) as usize;
        let key = std::str::from_utf8(self.take(key_len)?)
            .map_err(|_| FormatError::Truncated(start))?
            .to_string();
        let record_len = u32::from_le_bytes(self.take(4)?.try_into().unwrap()) as usize;
        let record = std::str::from_utf8(self.take(record_len)?)
            .map_err(|_| FormatError::Truncated(start))?
            .to_string();
        Ok(Entry {
            key_hash,
            key,
            fingerprint,
            record,
        })
    }
}

impl Iterator for EntryIter<'_> {
    type Item = Result<Entry, FormatError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.position >= self.bytes.len() {
            return None;
        }
        let entry = self.read_entry();
        if entry.is_err() {
            self.position = self.bytes.len();
        }
        Some(entry)
    }
}

/// Object-store layout. Every object is written once under a key unique to its run,
/// shard and attempt; the state DB decides which ones are current.
pub mod paths {
    use crate::hashing::HashRange;

    pub fn chunk(sync: &str, run_id: &str, attempt: &str, bucket: usize, part: u32) -> String {
        format!("syncs/{sync}/runs/{run_id}/chunks/{attempt}/b{bucket:04}-{part:05}.ebb")
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

    pub fn rejections(sync: &str, run_id: &str, range: &HashRange, attempt: &str) -> String {
        format!(
            "syncs/{sync}/runs/{run_id}/rejections/{}-{}-{attempt}.jsonl",
            range.start_hex(),
            range.last_hex()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
