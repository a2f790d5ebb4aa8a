//! Golden files: what Ebb persists and sends, pinned to the bytes of today's
//! version. A change to the key hash, the fingerprint, the chunk or snapshot
//! format would make every sync resend every row (or fail to read its last
//! snapshot), and a change to the wire would break a rolling upgrade; each
//! fails here first. After a deliberate change (with a new format version and a
//! reader for the old one), write the files again with
//! `EBB_BLESS=1 cargo test -p ebb-shared --test golden` and commit them.

use ebb_shared::config::{
    BatchLimits, Capabilities, Config, DeleteBehavior, DeliveryLimits, DestinationConfig, DestinationProfile,
    DestinationTypes, FieldError, SyncMode, SyncSpec, SyncType,
};
use ebb_shared::hashing::{fingerprint, key_hash, HashRange};
use ebb_shared::protocol::{
    self, ChunkRef, OpCounts, ResultMessage, ShardReport, ShardTask, SnapshotPointer, TaskKind, TaskMessage,
    TaskOutcome,
};
use ebb_shared::snapshot::{read_entries, read_layout, Entry, EntryWriter, FileKind, Layout};
use ebb_shared::value::Value;
use std::path::{Path, PathBuf};

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name)
}

/// The checked-in bytes of `name`; with `EBB_BLESS=1`, writes `fresh` first.
fn checked_in(name: &str, fresh: &[u8]) -> Vec<u8> {
    let path = golden(name);
    if std::env::var_os("EBB_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, fresh).unwrap();
    }
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; write it with EBB_BLESS=1 cargo test -p ebb-shared --test golden",
            path.display()
        )
    })
}

fn every_kind_of_value() -> Vec<(String, Value)> {
    vec![
        ("active".into(), Value::Bool(true)),
        ("at".into(), Value::Timestamp("2026-01-02T03:04:05Z".into())),
        ("blob".into(), Value::Bytes(vec![0, 1, 254, 255])),
        ("email".into(), Value::Text("ada@example.com".into())),
        ("gone".into(), Value::Null),
        ("price".into(), Value::Decimal("1.50".into())),
        ("ratio".into(), Value::Float(0.25)),
        ("score".into(), Value::Int(-7)),
        (
            "tags".into(),
            Value::Json(serde_json::json!({"vip": true, "n": [1, 2]})),
        ),
    ]
}

#[test]
fn key_hashes_and_fingerprints_never_change() {
    assert_eq!(
        format!("{:016x}", key_hash("42")),
        "cd99638b063430b3",
        "the key hash of \"42\""
    );
    assert_eq!(
        format!("{:032x}", fingerprint(&every_kind_of_value())),
        "d8696bef96baee746b26c768497f8690",
        "the fingerprint of every kind of value"
    );
}

fn entries() -> Vec<Entry> {
    let mut entries: Vec<Entry> = ["1", "2", "3"]
        .iter()
        .map(|key| Entry {
            key_hash: key_hash(key),
            key: key.to_string(),
            fingerprint: fingerprint(&[("id".into(), Value::Text(key.to_string()))]),
            record: format!("{{\"id\":\"{key}\"}}"),
            mapping_error: None,
        })
        .collect();
    entries.push(Entry {
        key_hash: key_hash("4"),
        key: "4".into(),
        fingerprint: 0,
        record: String::new(),
        mapping_error: Some("cannot cast \"x\" to integer".into()),
    });
    entries.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    entries
}

fn entry_file(kind: FileKind) -> Vec<u8> {
    let mut writer = EntryWriter::new();
    for entry in entries() {
        writer.push_entry(&entry);
    }
    writer.finish(kind, "golden", "run-1", HashRange::FULL)
}

#[test]
fn snapshot_and_chunk_files_keep_their_bytes_and_stay_readable() {
    for (kind, name) in [(FileKind::Snapshot, "snapshot.bin"), (FileKind::Chunk, "chunk.bin")] {
        let fresh = entry_file(kind);
        let stored = checked_in(name, &fresh);
        assert!(
            fresh == stored,
            "{name}: today's writer no longer writes the checked-in bytes"
        );
        let (header, iter) = read_entries(&stored).unwrap();
        assert_eq!((header.kind, header.sync.as_str(), header.entries), (kind, "golden", 4));
        let read: Vec<Entry> = iter.collect::<Result<_, _>>().unwrap();
        assert_eq!(read, entries(), "{name}");
    }
    // Snapshots written before they carried a bucket index are read whole.
    let legacy = std::fs::read(golden("snapshot-v2-unindexed.bin")).unwrap();
    let (header, iter) = read_entries(&legacy).unwrap();
    assert!(header.bucket_offsets.is_empty());
    let Layout::Read(layout) = read_layout(&legacy).unwrap() else {
        panic!("the legacy snapshot's header is complete")
    };
    assert_eq!(layout.bytes_of(&HashRange::bucket(0)), None, "no index: read whole");
    assert_eq!(iter.collect::<Result<Vec<Entry>, _>>().unwrap(), entries());
}

/// The HTTP destination's settings as version 1 wrote them: every field, its
/// defaults filled in. (The connector itself lives in the worker crate.)
struct VersionOneHttp;

impl DestinationTypes for VersionOneHttp {
    fn names(&self) -> Vec<&'static str> {
        vec!["http"]
    }

    fn read(
        &self,
        _: &str,
        settings: serde_yaml::Value,
        _: &Path,
    ) -> Option<Result<serde_json::Map<String, serde_json::Value>, FieldError>> {
        let written: serde_json::Value = serde_json::to_value(settings).unwrap();
        let mut settings = serde_json::json!({
            "url": written["url"],
            "method": "POST",
            "headers": {},
            "batch_size": written["batch_size"],
            "timeout": "30s",
            "rate_limit": null,
            "max_concurrency": null,
            "max_retry_after": "5m",
        });
        Some(Ok(settings.as_object_mut().unwrap().clone()))
    }

    fn profile(&self, _: &DestinationConfig) -> Result<DestinationProfile, String> {
        Ok(DestinationProfile {
            capabilities: Capabilities {
                sync_types: SyncType::ALL,
                modes: SyncMode::ALL,
                delete_behaviors: DeleteBehavior::ALL,
            },
            limits: DeliveryLimits::default(),
            batch: BatchLimits::records(50),
            max_retry_after: std::time::Duration::from_secs(300),
            expanded_settings: Vec::new(),
        })
    }
}

fn task() -> TaskMessage {
    let config = Config::from_yaml_str(
        Path::new("golden.yaml"),
        "sources:\n  wh: { type: postgres, url: \"postgres://u:${PASS}@db/x\" }\n\
         models:\n  m: { source: wh, query: SELECT 1 AS id, primary_key: id }\n\
         destinations:\n  d: { type: http, url: \"https://crm.example.com/ebb\", batch_size: 50 }\n\
         syncs:\n  s:\n    model: m\n    destination: d\n    mode: mirror\n    mappings:\n      - { from: id, to: id }\n",
        Path::new("/etc/ebb"),
        &VersionOneHttp,
    )
    .unwrap();
    let sync: SyncSpec = config.sync_spec("s").unwrap();
    TaskMessage {
        version: protocol::PROTOCOL_VERSION,
        task_id: "run-1/shard-0".into(),
        run_id: "run-1".into(),
        sync,
        kind: TaskKind::Shard(ShardTask {
            index: 0,
            range: HashRange::FULL,
            chunks: vec![ChunkRef::whole("syncs/s/runs/run-1/chunks/a-0.ebb")],
            previous: vec![SnapshotPointer {
                range: HashRange::FULL,
                object_key: "syncs/s/runs/run-0/snapshots/x.ebb".into(),
            }],
            full_resync: false,
            reset_cdc: false,
        }),
        run_started_at_ms: 1_767_225_600_000,
    }
}

fn result() -> ResultMessage {
    ResultMessage {
        version: protocol::PROTOCOL_VERSION,
        task_id: "run-1/shard-0".into(),
        run_id: "run-1".into(),
        worker_id: "w-1".into(),
        attempt: "a".into(),
        outcome: TaskOutcome::ShardDone(ShardReport {
            index: 0,
            range: HashRange::FULL,
            snapshot_key: "syncs/s/runs/run-1/snapshots/a.ebb".into(),
            planned: OpCounts {
                added: 3,
                changed: 1,
                removed: 0,
            },
            succeeded: OpCounts {
                added: 3,
                changed: 1,
                removed: 0,
            },
            failed: OpCounts::default(),
            duplicate_keys: 0,
            invalid_sample: Vec::new(),
            rejected_sample: Vec::new(),
            rows_key: Some("syncs/s/runs/run-1/rows/a.jsonl".into()),
            destination_error: None,
            snapshot_buckets: Vec::new(),
        }),
    }
}

/// Messages of today's version must stay readable by every later one: a new
/// field needs `#[serde(default)]`, a renamed one breaks this test.
#[test]
fn todays_wire_messages_stay_readable() {
    let stored = checked_in("task-v1.msgpack", &protocol::encode(&task()));
    assert_eq!(protocol::decode::<TaskMessage>(&stored).unwrap(), task());
    let stored = checked_in("result-v1.msgpack", &protocol::encode(&result()));
    assert_eq!(protocol::decode::<ResultMessage>(&stored).unwrap(), result());
}
