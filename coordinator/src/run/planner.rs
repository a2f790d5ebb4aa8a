//! Splitting a run into shards: contiguous runs of hash buckets, sized by the
//! row counts extraction reported. Pure: no I/O.

use ebb_shared::hashing::{HashRange, BUCKET_COUNT};
use ebb_shared::protocol::SnapshotPointer;

/// Rows per shard when neither the sync nor the destination's rate says more.
pub const DEFAULT_ROWS_PER_SHARD: u64 = 50_000;

/// The rows a shard may hold: a shard should take about a minute at the
/// destination's rate, far inside RabbitMQ's consumer timeout.
pub fn rows_per_shard(configured: Option<u64>, rate_limit: Option<f64>, batch_size: usize) -> u64 {
    if let Some(rows) = configured {
        return rows.max(1);
    }
    match rate_limit {
        Some(rate) => ((rate * batch_size as f64 * 60.0) as u64).clamp(1_000, DEFAULT_ROWS_PER_SHARD),
        None => DEFAULT_ROWS_PER_SHARD,
    }
}

/// The rows a shard holds per bucket: its current rows and its previous
/// snapshot's are both loaded and diffed. Sized by the larger side, a shard
/// stays near its target whether the model grew (adds), shrank (removes: a
/// model whose rows all went still splits its removals) or held (changes);
/// sizing by the current side alone put a whole emptied model's removals in one shard.
pub fn bucket_work(current: &[u64], previous: &[u64]) -> Vec<u64> {
    (0..BUCKET_COUNT)
        .map(|b| {
            let previous = previous.get(b).copied().unwrap_or(0);
            current.get(b).copied().unwrap_or(0).max(previous)
        })
        .collect()
}

/// Shard ranges covering the whole hash space exactly once.
pub fn plan_shards(bucket_rows: &[u64], fixed_shards: Option<usize>, max_rows: u64) -> Vec<HashRange> {
    assert_eq!(bucket_rows.len(), BUCKET_COUNT);
    if let Some(shards) = fixed_shards {
        let shards = shards.clamp(1, BUCKET_COUNT);
        return (0..shards)
            .map(|i| HashRange::buckets(i * BUCKET_COUNT / shards, (i + 1) * BUCKET_COUNT / shards - 1))
            .collect();
    }
    let mut ranges = Vec::new();
    let mut first = 0;
    let mut rows = 0u64;
    for (bucket, &count) in bucket_rows.iter().enumerate() {
        if bucket > first && rows + count > max_rows {
            ranges.push(HashRange::buckets(first, bucket - 1));
            first = bucket;
            rows = 0;
        }
        rows += count;
    }
    ranges.push(HashRange::buckets(first, BUCKET_COUNT - 1));
    ranges
}

/// The committed pointers a shard must read: those overlapping its range.
pub fn previous_for(range: &HashRange, pointers: &[SnapshotPointer]) -> Vec<SnapshotPointer> {
    pointers
        .iter()
        .filter(|p| p.range.overlaps(range) && !p.object_key.is_empty())
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ebb_shared::hashing::covers_space_exactly_once;

    #[test]
    fn sized_shards_cover_the_space() {
        let mut rows = vec![10u64; BUCKET_COUNT];
        rows[5] = 1_000;
        let shards = plan_shards(&rows, None, 100);
        assert!(covers_space_exactly_once(&shards));
        assert!(shards.len() > 50);
        assert_eq!(plan_shards(&vec![0; BUCKET_COUNT], None, 100), vec![HashRange::FULL]);
    }

    #[test]
    fn shards_are_sized_by_the_larger_of_the_current_and_previous_side() {
        // The model lost every row: the removals are split as its rows were.
        let emptied = bucket_work(&vec![0; BUCKET_COUNT], &vec![100; BUCKET_COUNT]);
        let shards = plan_shards(&emptied, None, 10_000);
        assert!(covers_space_exactly_once(&shards));
        assert_eq!(shards.len(), (100 * BUCKET_COUNT as u64).div_ceil(10_000) as usize);
        // A model that kept its rows is not split twice as finely.
        let steady = bucket_work(&vec![100; BUCKET_COUNT], &vec![100; BUCKET_COUNT]);
        assert_eq!(plan_shards(&steady, None, 10_000).len(), shards.len());
        // Without a previous side (a first run) the current rows decide.
        let first = bucket_work(&vec![100; BUCKET_COUNT], &[]);
        assert_eq!(first, vec![100; BUCKET_COUNT]);
    }

    #[test]
    fn fixed_shards_are_equal() {
        for n in [1, 3, 7, 1024] {
            let shards = plan_shards(&vec![0; BUCKET_COUNT], Some(n), 1);
            assert_eq!(shards.len(), n);
            assert!(covers_space_exactly_once(&shards));
        }
    }

    #[test]
    fn shard_size_follows_the_rate() {
        // 20 requests/s of 100 rows is 120k rows a minute, above the default cap.
        assert_eq!(rows_per_shard(None, Some(20.0), 100), DEFAULT_ROWS_PER_SHARD);
        assert_eq!(rows_per_shard(None, Some(1.0), 10), 1_000);
        assert_eq!(rows_per_shard(Some(7), Some(1.0), 10), 7);
    }
}
