//! Key hashing, fingerprints and hash ranges.
//!
//! Both hashes are persisted (in snapshots and pointer rows), so they are fixed,
//! specified algorithms: XXH3-64 with a fixed seed for keys and XXH3-128 over the
//! canonical value encoding for fingerprints. Never switch to a hasher whose output
//! may change between builds (`DefaultHasher`, ahash).

use crate::value::Value;
use serde::{Deserialize, Serialize};
use std::fmt;
use xxhash_rust::xxh3::{xxh3_128_with_seed, xxh3_64_with_seed};

/// Recorded in every snapshot header; bump it with any change to the functions below.
pub const HASH_ALGORITHM: &str = "xxh3-64/seed=0x45bb/key-utf8;xxh3-128/canonical-v1";

const KEY_SEED: u64 = 0x45bb;
const FINGERPRINT_SEED: u64 = 0x45bb_f1f1;

pub type KeyHash = u64;
pub type Fingerprint = u128;

/// The place of a row in the 64-bit hash space: a stable hash of its key's bytes.
pub fn key_hash(key: &str) -> KeyHash {
    xxh3_64_with_seed(key.as_bytes(), KEY_SEED)
}

/// The fingerprint of a mapped record: covers exactly the fields sent, with their
/// names, types and nulls, independent of the order of the mappings.
pub fn fingerprint(fields: &[(String, Value)]) -> Fingerprint {
    let mut ordered: Vec<&(String, Value)> = fields.iter().collect();
    ordered.sort_by(|a, b| a.0.cmp(&b.0));
    let mut buf = Vec::with_capacity(64 * ordered.len());
    for (name, value) in ordered {
        encode_field(&mut buf, name, value);
    }
    fingerprint_of_encoding(&buf)
}

/// Appends one field's canonical encoding. A caller that encodes fields itself
/// (to avoid building the pairs `fingerprint` takes) must append them sorted by
/// name, then hash the buffer with `fingerprint_of_encoding`.
pub fn encode_field(buf: &mut Vec<u8>, name: &str, value: &Value) {
    buf.extend_from_slice(&(name.len() as u64).to_le_bytes());
    buf.extend_from_slice(name.as_bytes());
    value.encode_canonical(buf);
}

/// The fingerprint of fields already encoded by `encode_field`, in name order.
pub fn fingerprint_of_encoding(encoded: &[u8]) -> Fingerprint {
    xxh3_128_with_seed(encoded, FINGERPRINT_SEED)
}

/// A contiguous, inclusive range `[start, last]` of the key-hash space, the same as
/// the half-open `[start, last + 1)`; inclusive ends let the range reach `u64::MAX`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HashRange {
    pub start: KeyHash,
    pub last: KeyHash,
}

/// Extraction partitions rows into this many equal buckets; shards are runs of
/// contiguous buckets, so the planner can size shards by their row counts.
pub const BUCKET_BITS: u32 = 10;
pub const BUCKET_COUNT: usize = 1 << BUCKET_BITS;

impl HashRange {
    pub const FULL: HashRange = HashRange {
        start: 0,
        last: u64::MAX,
    };

    pub fn new(start: KeyHash, last: KeyHash) -> Self {
        assert!(start <= last, "empty hash range {start}..={last}");
        HashRange { start, last }
    }

    pub fn contains(&self, hash: KeyHash) -> bool {
        self.start <= hash && hash <= self.last
    }

    pub fn overlaps(&self, other: &HashRange) -> bool {
        self.start <= other.last && other.start <= self.last
    }

    pub fn intersect(&self, other: &HashRange) -> Option<HashRange> {
        self.overlaps(other)
            .then(|| HashRange::new(self.start.max(other.start), self.last.min(other.last)))
    }

    /// The parts of `self` not covered by `cut`: zero, one or two ranges.
    pub fn minus(&self, cut: &HashRange) -> Vec<HashRange> {
        if !self.overlaps(cut) {
            return vec![*self];
        }
        let mut parts = Vec::with_capacity(2);
        if self.start < cut.start {
            parts.push(HashRange::new(self.start, cut.start - 1));
        }
        if cut.last < self.last {
            parts.push(HashRange::new(cut.last + 1, self.last));
        }
        parts
    }

    /// The range of bucket `index` (of `BUCKET_COUNT`).
    pub fn bucket(index: usize) -> HashRange {
        assert!(index < BUCKET_COUNT);
        let width_bits = 64 - BUCKET_BITS;
        let start = (index as u64) << width_bits;
        let last = start + ((1u64 << width_bits) - 1);
        HashRange { start, last }
    }

    /// The range covering buckets `first..=last_bucket`.
    pub fn buckets(first: usize, last_bucket: usize) -> HashRange {
        HashRange::new(Self::bucket(first).start, Self::bucket(last_bucket).last)
    }

    pub fn bucket_of(hash: KeyHash) -> usize {
        (hash >> (64 - BUCKET_BITS)) as usize
    }

    /// Fixed-width hex, so that ranges sort as text in the state DB.
    pub fn start_hex(&self) -> String {
        format!("{:016x}", self.start)
    }

    pub fn last_hex(&self) -> String {
        format!("{:016x}", self.last)
    }

    pub fn from_hex(start: &str, last: &str) -> Result<HashRange, String> {
        let parse = |s: &str| u64::from_str_radix(s, 16).map_err(|e| format!("bad hash {s:?}: {e}"));
        let (start, last) = (parse(start)?, parse(last)?);
        if start > last {
            return Err(format!("empty hash range {start:016x}..={last:016x}"));
        }
        Ok(HashRange { start, last })
    }
}

impl fmt::Debug for HashRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:016x}..={:016x}]", self.start, self.last)
    }
}

impl fmt::Display for HashRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// True when `ranges` cover the whole hash space exactly once.
pub fn covers_space_exactly_once(ranges: &[HashRange]) -> bool {
    let mut sorted = ranges.to_vec();
    sorted.sort();
    let mut next: Option<u64> = Some(0);
    for range in sorted {
        match next {
            Some(expected) if range.start == expected => next = range.last.checked_add(1),
            _ => return false,
        }
    }
    next.is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hash_is_stable_across_builds() {
        // Persisted in snapshots: if this changes, every existing snapshot breaks.
        assert_eq!(format!("{:016x}", key_hash("customer-1")), "e2f99e8f541cde64");
    }

    #[test]
    fn fingerprint_ignores_mapping_order_but_not_types_or_names() {
        let a = vec![("a".to_string(), Value::Int(1)), ("b".to_string(), Value::Null)];
        let b = vec![("b".to_string(), Value::Null), ("a".to_string(), Value::Int(1))];
        assert_eq!(fingerprint(&a), fingerprint(&b));
        let typed = vec![
            ("a".to_string(), Value::Text("1".into())),
            ("b".to_string(), Value::Null),
        ];
        assert_ne!(fingerprint(&a), fingerprint(&typed));
        let renamed = vec![("a".to_string(), Value::Int(1)), ("c".to_string(), Value::Null)];
        assert_ne!(fingerprint(&a), fingerprint(&renamed));
        let fewer = vec![("a".to_string(), Value::Int(1))];
        assert_ne!(fingerprint(&a), fingerprint(&fewer));
    }

    #[test]
    fn buckets_tile_the_space() {
        let all: Vec<HashRange> = (0..BUCKET_COUNT).map(HashRange::bucket).collect();
        assert!(covers_space_exactly_once(&all));
        assert_eq!(HashRange::buckets(0, BUCKET_COUNT - 1), HashRange::FULL);
        for h in [0u64, 1, u64::MAX, 1 << 63, 12345678901234] {
            assert!(HashRange::bucket(HashRange::bucket_of(h)).contains(h));
        }
    }

    #[test]
    fn minus_splits_ranges() {
        let full = HashRange::FULL;
        let mid = HashRange::new(10, 20);
        assert_eq!(
            full.minus(&mid),
            vec![HashRange::new(0, 9), HashRange::new(21, u64::MAX)]
        );
        assert_eq!(mid.minus(&full), vec![]);
        assert_eq!(mid.minus(&HashRange::new(30, 40)), vec![mid]);
        assert_eq!(mid.minus(&HashRange::new(0, 15)), vec![HashRange::new(16, 20)]);
    }

    #[test]
    fn hex_round_trip() {
        let r = HashRange::new(5, u64::MAX);
        assert_eq!(HashRange::from_hex(&r.start_hex(), &r.last_hex()).unwrap(), r);
        assert!(covers_space_exactly_once(&[HashRange::new(0, 4), r]));
        assert!(!covers_space_exactly_once(&[HashRange::new(0, 5), r]));
        assert!(!covers_space_exactly_once(&[r]));
    }
}
