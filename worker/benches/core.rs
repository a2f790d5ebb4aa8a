//! Micro-benchmarks of the per-row work every sync does: key hashing,
//! fingerprinting, mapping a row to its record, snapshot encoding and
//! decoding, and the merge-diff of a shard. `cargo bench -p ebb-worker`.
//! Figures and the machine they came from: docs/benchmarks.md.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ebb_shared::config::{
    CsvSourceConfig, DeleteBehavior, DestinationConfig, ModelConfig, SourceConfig, SyncMode, SyncSpec, SyncType,
};
use ebb_shared::hashing::{fingerprint, key_hash, HashRange};
use ebb_shared::snapshot::{read_entries, Entry, EntryWriter, FileKind};
use ebb_shared::value::{Column, Value};
use ebb_worker::behaviour::Behaviour;
use ebb_worker::diff::ShardDiff;
use ebb_worker::mapping::{RecordPlan, RunContext};
use std::hint::black_box;

/// Rows of one shard, the unit a worker holds in memory.
const SHARD_ROWS: usize = 50_000;

fn spec() -> SyncSpec {
    SyncSpec {
        name: "bench".into(),
        model_name: "people".into(),
        model: ModelConfig {
            source: "files".into(),
            query: None,
            file: Some("people.csv".into()),
            ..ModelConfig::query("files", "", "id")
        },
        source: SourceConfig::Csv(CsvSourceConfig { path: ".".into() }),
        destination_name: "out".into(),
        destination: DestinationConfig {
            kind: "jsonl".into(),
            settings: serde_json::json!({"path": "out.jsonl", "batch_size": 1000})
                .as_object()
                .cloned()
                .unwrap(),
        },
        sync_type: SyncType::Object,
        mode: SyncMode::Mirror,
        delete_behavior: DeleteBehavior::Delete,
        mappings: Vec::new(),
        skip_nulls: false,
        record_matching: None,
        shards: None,
        max_rows_per_shard: None,
        live_debugger: true,
    }
}

/// A model row of ~10 columns, as a warehouse table would give it.
fn row(id: usize, version: u32) -> Vec<Value> {
    vec![
        Value::Int(id as i64),
        Value::Text(format!("person{id}@example.com")),
        Value::Text(format!("Person {id}")),
        Value::Text(["free", "starter", "pro", "enterprise"][id % 4].into()),
        Value::Decimal(format!("{}.{:02}", id % 1000, version % 100)),
        Value::Bool(id.is_multiple_of(2)),
        Value::Int((id * 7 % 365) as i64),
        Value::Timestamp("2026-11-24T17:00:00Z".into()),
        Value::Text("Oslo".into()),
        Value::Null,
    ]
}

fn columns() -> Vec<Column> {
    [
        "id",
        "email",
        "name",
        "plan",
        "score",
        "active",
        "days",
        "updated_at",
        "city",
        "note",
    ]
    .iter()
    .map(|name| Column {
        name: name.to_string(),
        source_type: "text".into(),
    })
    .collect()
}

fn entries(rows: usize, version_of: impl Fn(usize) -> u32) -> Vec<Entry> {
    let plan = RecordPlan::new(&spec(), &columns(), &run()).unwrap();
    (0..rows)
        .map(|id| {
            let key = id.to_string();
            let (fingerprint, record) = plan.record(&row(id, version_of(id))).unwrap();
            Entry {
                key_hash: key_hash(&key),
                key,
                fingerprint,
                record,
                mapping_error: None,
            }
        })
        .collect()
}

fn run() -> RunContext {
    RunContext {
        sync_id: "bench".into(),
        run_id: "r1".into(),
        run_started_at: "2026-11-24T17:00:00Z".into(),
    }
}

fn hashing(c: &mut Criterion) {
    let keys: Vec<String> = (0..SHARD_ROWS).map(|i| format!("customer-{i}")).collect();
    let mut group = c.benchmark_group("hashing");
    group.throughput(Throughput::Elements(SHARD_ROWS as u64));
    group.bench_function("key_hash", |b| {
        b.iter(|| keys.iter().map(|k| key_hash(k)).fold(0u64, |a, h| a ^ h))
    });
    let fields: Vec<(String, Value)> = columns().into_iter().map(|c| c.name).zip(row(42, 1)).collect();
    group.throughput(Throughput::Elements(1));
    group.bench_function("fingerprint_10_fields", |b| b.iter(|| fingerprint(black_box(&fields))));
    group.finish();
}

fn mapping(c: &mut Criterion) {
    let plan = RecordPlan::new(&spec(), &columns(), &run()).unwrap();
    let rows: Vec<Vec<Value>> = (0..1000).map(|id| row(id, 1)).collect();
    let mut group = c.benchmark_group("mapping");
    group.throughput(Throughput::Elements(rows.len() as u64));
    group.bench_function("record_10_columns", |b| {
        b.iter(|| rows.iter().map(|r| plan.record(r).unwrap().0).fold(0u128, |a, f| a ^ f))
    });
    group.finish();
}

fn snapshots(c: &mut Criterion) {
    let mut sorted = entries(SHARD_ROWS, |_| 1);
    sorted.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    let mut group = c.benchmark_group("snapshot");
    group.throughput(Throughput::Elements(SHARD_ROWS as u64));
    group.bench_function("encode", |b| {
        b.iter(|| {
            let mut writer = EntryWriter::new();
            for entry in &sorted {
                writer.push_entry(entry);
            }
            writer.finish(FileKind::Snapshot, "bench", "r1", HashRange::FULL)
        })
    });
    let mut writer = EntryWriter::new();
    for entry in &sorted {
        writer.push_entry(entry);
    }
    let bytes = writer.finish(FileKind::Snapshot, "bench", "r1", HashRange::FULL);
    group.bench_function("decode", |b| {
        b.iter(|| {
            read_entries(&bytes)
                .unwrap()
                .1
                .map(|e| e.unwrap().key_hash)
                .fold(0u64, |a, h| a ^ h)
        })
    });
    group.finish();
}

fn merge_diff(c: &mut Criterion) {
    let behaviour = Behaviour::of(&spec());
    let mut previous = entries(SHARD_ROWS, |_| 1);
    previous.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    let mut group = c.benchmark_group("merge_diff");
    group.throughput(Throughput::Elements(SHARD_ROWS as u64));
    for (name, changed_every) in [
        ("0pct_changed", usize::MAX),
        ("1pct_changed", 100),
        ("10pct_changed", 10),
    ] {
        let current = entries(SHARD_ROWS, |id| if id % changed_every == 0 { 2 } else { 1 });
        group.bench_function(name, |b| {
            b.iter_batched(
                || (current.clone(), previous.clone()),
                |(current, previous)| {
                    let diff = ShardDiff::compute(current, previous);
                    let plan = diff.plan(&behaviour, false);
                    let ok = vec![true; plan.len()];
                    diff.next_snapshot(&behaviour, &plan, &ok).len()
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, hashing, mapping, snapshots, merge_diff);
criterion_main!(benches);
