//! DESIGN.md's invariants and bad inputs, each with a test that fails without
//! it: invalid rows, broken queries and sources, secrets, shard counts, mapped
//! fields and primary keys. On embedded parts with a real PostgreSQL model.

use ebb_coordinator::run::{RunStatus, TriggerError, TriggerOptions};
use ebb_coordinator::runtime::{start_embedded, Runtime};
use ebb_coordinator::store::RunRecord;
use ebb_shared::protocol::{OpCounts, SnapshotPointer};
use ebb_tests::embedded::run_to_end;
use ebb_tests::model::create_people;
use ebb_tests::services::{fresh_postgres_database, TestDatabase};
use ebb_tests::sink::Sink;
use sqlx::PgPool;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

struct Setup {
    pool: PgPool,
    database_url: String,
    sink: Sink,
    dir: tempfile::TempDir,
    _database: TestDatabase,
}

async fn setup(rows: i64) -> Setup {
    let database = fresh_postgres_database("inv").await;
    let pool = PgPool::connect(&database.url).await.unwrap();
    create_people(&pool, rows).await;
    Setup {
        pool,
        database_url: database.url.clone(),
        sink: Sink::start().await,
        dir: tempfile::tempdir().unwrap(),
        _database: database,
    }
}

impl Setup {
    /// A runtime on this setup's data directory with one sync `s` to the HTTP
    /// destination; `model` and `sync_extra` fill in the rest.
    async fn runtime(&self, source_url: &str, model: &str, sync_extra: &str) -> Runtime {
        let text = format!(
            r#"
sources:
  warehouse:
    type: postgres
    url: {source_url}
models:
  people:
    source: warehouse
{model}
destinations:
  api:
    type: http
    url: {sink}
    batch_size: 25
syncs:
  s:
    model: people
    destination: api
    mode: mirror
{sync_extra}
"#,
            sink = self.sink.url()
        );
        let config = Arc::new(ebb_worker::config::from_yaml_str(Path::new("t.yaml"), &text, self.dir.path()).unwrap());
        start_embedded(config, &self.dir.path().join("data"), 2, 2)
            .await
            .unwrap()
    }
}

const PEOPLE: &str = "    query: SELECT id, email, name FROM people\n    primary_key: id";

async fn run(runtime: &Runtime, options: TriggerOptions) -> RunRecord {
    run_to_end(runtime, "s", options).await
}

async fn pointers(runtime: &Runtime) -> Vec<SnapshotPointer> {
    runtime
        .coordinator
        .as_ref()
        .unwrap()
        .store()
        .pointers("s")
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_and_duplicate_keys_are_counted_invalid_and_never_sent() {
    let setup = setup(100).await;
    let model = "    query: SELECT CASE WHEN id <= 3 THEN NULL WHEN id IN (10, 11) THEN 10 ELSE id END AS key, email FROM people\n    primary_key: key";
    let runtime = setup.runtime(&setup.database_url, model, "").await;
    let first = run(&runtime, TriggerOptions::default()).await;
    assert_eq!(
        first.status,
        RunStatus::Warning,
        "invalid rows make a warning, not a failure: {first:?}"
    );
    assert_eq!(first.rows_queried, 100);
    assert_eq!(first.invalid_null, 3);
    assert_eq!(first.invalid_duplicate, 2);
    assert_eq!(
        first.succeeded,
        OpCounts {
            added: 95,
            changed: 0,
            removed: 0
        }
    );
    let records = setup.sink.records();
    assert_eq!(records.len(), 95);
    assert!(!records.contains_key("10"), "a duplicated key is sent for neither row");
    let invalid = runtime
        .coordinator
        .as_ref()
        .unwrap()
        .store()
        .run_rows(&first.id, Some("invalid"), None, 10)
        .await
        .unwrap();
    assert!(
        invalid.iter().any(|r| r.key == "10" && r.reason == "duplicate_key"),
        "{invalid:?}"
    );
    runtime.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_inputs_fail_with_a_named_error_and_leave_state_untouched() {
    let setup = setup(200).await;
    let runtime = setup.runtime(&setup.database_url, PEOPLE, "").await;
    assert_eq!(
        run(&runtime, TriggerOptions::default()).await.status,
        RunStatus::Success
    );
    let committed = pointers(&runtime).await;
    let received = setup.sink.records();
    runtime.shutdown(Duration::from_secs(5)).await;
    sqlx::query("UPDATE people SET email = 'z' || email WHERE id < 50")
        .execute(&setup.pool)
        .await
        .unwrap();

    let cases: Vec<(String, &str, Vec<&str>)> = vec![
        (
            setup.database_url.clone(),
            "    query: SELEC id, email FROM people\n    primary_key: id",
            vec!["\"people\"", "query failed", "syntax error"],
        ),
        (
            setup.database_url.clone(),
            "    query: SELECT id, email FROM no_such_table\n    primary_key: id",
            vec!["\"people\"", "no_such_table"],
        ),
        (
            setup.database_url.clone(),
            "    query: SELECT email, name FROM people\n    primary_key: id",
            vec!["\"id\"", "email, name"],
        ),
        (
            "postgres://postgres@127.0.0.1:1/nothing".to_string(),
            PEOPLE,
            vec!["\"warehouse\"", "unreachable"],
        ),
    ];
    for (source_url, model, expected) in cases {
        let runtime = setup.runtime(&source_url, model, "").await;
        let failed = run(&runtime, TriggerOptions::default()).await;
        assert_eq!(failed.status, RunStatus::Failed, "{model}: {failed:?}");
        let error = failed.error.clone().unwrap_or_default();
        for fragment in expected {
            assert!(
                error.contains(fragment),
                "{model}: error {error:?} should mention {fragment}"
            );
        }
        assert_eq!(
            pointers(&runtime).await,
            committed,
            "{model}: the committed snapshot is untouched"
        );
        assert_eq!(setup.sink.records(), received, "{model}: nothing was sent");
        runtime.shutdown(Duration::from_secs(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_errors_or_the_object_store() {
    let setup = setup(10).await;
    let secret = format!("pw-{}-secret", rand::random::<u32>());
    std::env::set_var("EBB_TEST_SOURCE_PASSWORD", &secret);
    let runtime = setup
        .runtime(
            "postgres://postgres:${EBB_TEST_SOURCE_PASSWORD}@127.0.0.1:1/x",
            PEOPLE,
            "",
        )
        .await;
    let failed = run(&runtime, TriggerOptions::default()).await;
    assert_eq!(failed.status, RunStatus::Failed);
    assert!(
        !failed.error.as_deref().unwrap_or_default().contains(&secret),
        "{failed:?}"
    );
    runtime.shutdown(Duration::from_secs(5)).await;
    for entry in walk(&setup.dir.path().join("data")) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{} holds the secret",
            entry.display()
        );
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_the_shard_count_resends_nothing() {
    let setup = setup(3_000).await;
    let runtime = setup.runtime(&setup.database_url, PEOPLE, "    shards: 3").await;
    assert_eq!(run(&runtime, TriggerOptions::default()).await.succeeded.added, 3_000);
    runtime.shutdown(Duration::from_secs(5)).await;
    for shards in ["    shards: 7", "    shards: 2", "    max_rows_per_shard: 100"] {
        let runtime = setup.runtime(&setup.database_url, PEOPLE, shards).await;
        let again = run(&runtime, TriggerOptions::default()).await;
        assert_eq!(again.status, RunStatus::Success);
        assert_eq!(again.planned, OpCounts::default(), "{shards}: {again:?}");
        runtime.shutdown(Duration::from_secs(5)).await;
    }
}

/// Shards are sized by what they diff on both sides: a model that lost every
/// row has its removals split as its rows were, not sent by one shard holding
/// the whole previous snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emptied_model_splits_its_removals_like_its_rows() {
    let setup = setup(3_000).await;
    let runtime = setup
        .runtime(&setup.database_url, PEOPLE, "    max_rows_per_shard: 500")
        .await;
    let first = run(&runtime, TriggerOptions::default()).await;
    assert_eq!(first.succeeded.added, 3_000);
    assert!(first.shards_total >= 6, "{first:?}");
    let stored: u64 = runtime
        .coordinator
        .as_ref()
        .unwrap()
        .store()
        .snapshot_bucket_rows("s")
        .await
        .unwrap()
        .iter()
        .sum();
    assert_eq!(stored, 3_000, "the committed snapshots' rows are counted per bucket");
    sqlx::query("DELETE FROM people").execute(&setup.pool).await.unwrap();
    let emptied = run(&runtime, TriggerOptions::default()).await;
    assert_eq!(emptied.status, RunStatus::Success, "{emptied:?}");
    assert_eq!(emptied.succeeded.removed, 3_000);
    assert!(
        emptied.shards_total >= first.shards_total - 1,
        "the removals went out in {} shards, the rows in {}",
        emptied.shards_total,
        first.shards_total
    );
    assert!(setup.sink.records().is_empty());
    runtime.shutdown(Duration::from_secs(5)).await;
}

/// Snapshots are immutable, so a shard whose entries all stay as they were
/// keeps pointing at the object it already has; only a shard that changed
/// gets a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_run_keeps_its_snapshots_and_a_change_moves_only_its_shard() {
    let setup = setup(3_000).await;
    let runtime = setup.runtime(&setup.database_url, PEOPLE, "    shards: 4").await;
    assert_eq!(run(&runtime, TriggerOptions::default()).await.succeeded.added, 3_000);
    let first = pointers(&runtime).await;
    assert_eq!(first.len(), 4);

    let quiet = run(&runtime, TriggerOptions::default()).await;
    assert_eq!((quiet.status, quiet.planned), (RunStatus::Success, OpCounts::default()));
    assert_eq!(pointers(&runtime).await, first, "an unchanged run rewrites no snapshot");

    sqlx::query("UPDATE people SET email = 'moved@example.com' WHERE id = 7")
        .execute(&setup.pool)
        .await
        .unwrap();
    let changed = run(&runtime, TriggerOptions::default()).await;
    assert_eq!(changed.succeeded.changed, 1);
    let after = pointers(&runtime).await;
    let moved = first.iter().zip(&after).filter(|(a, b)| a != b).count();
    assert_eq!(moved, 1, "only the shard holding the changed row gets a new snapshot");
    // And the kept snapshots still answer correctly: nothing is resent.
    let again = run(&runtime, TriggerOptions::default()).await;
    assert_eq!(again.planned, OpCounts::default());
    runtime.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_mapped_fields_count_and_a_new_mapping_resends_every_row_once() {
    let setup = setup(300).await;
    let mapped = "    mappings:\n      - { from: id, to: id }\n      - { from: email, to: email }";
    let runtime = setup.runtime(&setup.database_url, PEOPLE, mapped).await;
    assert_eq!(run(&runtime, TriggerOptions::default()).await.succeeded.added, 300);
    sqlx::query("UPDATE people SET name = 'renamed'")
        .execute(&setup.pool)
        .await
        .unwrap();
    let quiet = run(&runtime, TriggerOptions::default()).await;
    assert_eq!(
        quiet.planned,
        OpCounts::default(),
        "an unmapped column changed: nothing to send"
    );
    runtime.shutdown(Duration::from_secs(5)).await;

    let more = "    mappings:\n      - { from: email, to: email }\n      - { from: name, to: name }\n      - { from: id, to: id }";
    let runtime = setup.runtime(&setup.database_url, PEOPLE, more).await;
    let resent = run(&runtime, TriggerOptions::default()).await;
    assert_eq!(
        resent.planned,
        OpCounts {
            added: 0,
            changed: 300,
            removed: 0
        },
        "a new mapped field resends every row"
    );
    assert_eq!(setup.sink.records()["1"]["name"], "renamed");
    let after = run(&runtime, TriggerOptions::default()).await;
    assert_eq!(after.planned, OpCounts::default(), "once");
    runtime.shutdown(Duration::from_secs(5)).await;

    let reordered = "    mappings:\n      - { from: id, to: id }\n      - { from: name, to: name }\n      - { from: email, to: email }";
    let runtime = setup.runtime(&setup.database_url, PEOPLE, reordered).await;
    assert_eq!(
        run(&runtime, TriggerOptions::default()).await.planned,
        OpCounts::default(),
        "reordering mappings resends nothing"
    );
    runtime.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_primary_key_refuses_to_run_until_a_full_resync() {
    let setup = setup(50).await;
    let runtime = setup.runtime(&setup.database_url, PEOPLE, "").await;
    run(&runtime, TriggerOptions::default()).await;
    runtime.shutdown(Duration::from_secs(5)).await;

    let by_email = "    query: SELECT id, email, name FROM people\n    primary_key: email";
    let runtime = setup.runtime(&setup.database_url, by_email, "").await;
    let coordinator = runtime.coordinator.as_ref().unwrap();
    let refused = coordinator.trigger("s", TriggerOptions::default()).await.unwrap_err();
    assert!(matches!(refused, TriggerError::PrimaryKeyChanged { .. }), "{refused}");
    assert!(refused.to_string().contains("--full-resync"), "{refused}");
    let resync = run(
        &runtime,
        TriggerOptions {
            full_resync: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(resync.status, RunStatus::Success, "{resync:?}");
    assert_eq!(
        run(&runtime, TriggerOptions::default()).await.planned,
        OpCounts::default()
    );
    runtime.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_cdc_marks_rows_synced_without_sending() {
    let setup = setup(80).await;
    let runtime = setup.runtime(&setup.database_url, PEOPLE, "").await;
    let reset = run(
        &runtime,
        TriggerOptions {
            reset_cdc: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(reset.status, RunStatus::Success, "{reset:?}");
    assert!(setup.sink.records().is_empty(), "a CDC reset sends nothing");
    sqlx::query("UPDATE people SET email = 'new-' || email WHERE id <= 5")
        .execute(&setup.pool)
        .await
        .unwrap();
    let next = run(&runtime, TriggerOptions::default()).await;
    assert_eq!(
        next.planned,
        OpCounts {
            added: 0,
            changed: 5,
            removed: 0
        }
    );
    runtime.shutdown(Duration::from_secs(5)).await;
}

#[test]
fn an_unknown_config_field_is_named_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ebb.yaml");
    std::fs::write(
        &path,
        "sources:\n  files:\n    type: csv\n    path: data\n    delimiter: ';'\n",
    )
    .unwrap();
    let output = ebb_tests::process::ebb_command()
        .args(["check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("ebb.yaml:5"), "{stderr}");
    assert!(stderr.contains("unknown field `delimiter`"), "{stderr}");
}
