//! A sync end to end on embedded parts (SQLite state, in-process queue, local
//! object directory) with a real PostgreSQL model and real destinations: the
//! local HTTP destination and a PostgreSQL table. Random inserts, updates and
//! deletes between runs; after every run each destination equals the model and
//! the run's counts equal the mutations.

use ebb_coordinator::run::{RunStatus, TriggerOptions};
use ebb_coordinator::runtime::start_embedded;
use ebb_shared::config::Config;
use ebb_shared::protocol::OpCounts;
use ebb_tests::embedded::{rejected_rows, run_to_end};
use ebb_tests::model::{create_people, model_emails, mutate, sink_emails, table_emails};
use ebb_tests::services::fresh_postgres_database;
use ebb_tests::sink::{Behavior, Sink};
use sqlx::PgPool;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const ROWS: i64 = 5_000;

fn config(database_url: &str, sink_url: &str, dir: &Path) -> Arc<Config> {
    let text = format!(
        r#"
sources:
  warehouse:
    type: postgres
    url: {database_url}
models:
  people:
    source: warehouse
    query: SELECT id, email, name, score, active FROM people
    primary_key: id
destinations:
  api:
    type: http
    url: {sink_url}
    batch_size: 50
  table:
    type: postgres
    url: {database_url}
    table: public.people_copy
    key_column: id
    batch_size: 500
syncs:
  people-api:
    model: people
    destination: api
    mode: mirror
    max_rows_per_shard: 1000
  people-table:
    model: people
    destination: table
    mode: mirror
    shards: 3
"#
    );
    Arc::new(ebb_worker::config::from_yaml_str(Path::new("e2e.yaml"), &text, dir).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_syncs_follow_random_mutations_exactly() {
    let database = fresh_postgres_database("embedded").await;
    let pool = PgPool::connect(&database.url).await.unwrap();
    create_people(&pool, ROWS).await;
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let runtime = start_embedded(
        config(&database.url, &sink.url(), dir.path()),
        &dir.path().join("data"),
        3,
        2,
    )
    .await
    .unwrap();

    let mut expected = OpCounts {
        added: ROWS as u64,
        ..Default::default()
    };
    let mut next_id = ROWS + 1;
    for round in 0..4 {
        for sync in ["people-api", "people-table"] {
            let run = run_to_end(&runtime, sync, TriggerOptions::default()).await;
            assert_eq!(run.status, RunStatus::Success, "round {round} {sync}: {run:?}");
            assert_eq!(run.planned, expected, "round {round} {sync}: planned counts");
            assert_eq!(run.succeeded, expected, "round {round} {sync}: succeeded counts");
            assert_eq!(run.failed, OpCounts::default());
        }
        let model = model_emails(&pool).await;
        assert_eq!(
            sink_emails(&sink),
            model,
            "round {round}: the HTTP destination equals the model"
        );
        assert_eq!(
            table_emails(&pool, "people_copy").await,
            model,
            "round {round}: the table equals the model"
        );
        expected = mutate(&pool, &mut next_id, 150).await;
    }

    // A run with nothing changed sends nothing.
    for sync in ["people-api", "people-table"] {
        run_to_end(&runtime, sync, TriggerOptions::default()).await;
        let quiet = run_to_end(&runtime, sync, TriggerOptions::default()).await;
        assert_eq!(
            quiet.planned,
            OpCounts::default(),
            "{sync}: an unchanged model plans nothing"
        );
    }
    runtime.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_rows_do_not_advance_and_are_retried_next_run() {
    let database = fresh_postgres_database("rejects").await;
    let pool = PgPool::connect(&database.url).await.unwrap();
    create_people(&pool, 500).await;
    let sink = Sink::start().await;
    sink.set_behavior(Behavior {
        reject_keys: ["7", "42", "499"].iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let runtime = start_embedded(
        config(&database.url, &sink.url(), dir.path()),
        &dir.path().join("data"),
        2,
        2,
    )
    .await
    .unwrap();

    let first = run_to_end(&runtime, "people-api", TriggerOptions::default()).await;
    assert_eq!(first.status, RunStatus::Warning, "{first:?}");
    assert_eq!(first.succeeded.added, 497);
    assert_eq!(first.failed.added, 3);
    let rows = rejected_rows(&runtime, &first.id, "42").await;
    assert_eq!(rows.len(), 1, "the rejected row is recorded with its key");
    assert!(rows[0].reason.contains("invalid here"), "{rows:?}");
    assert_eq!(rows[0].operation.as_deref(), Some("added"));

    // The destination accepts them now: only the three are sent again.
    sink.set_behavior(Behavior::default());
    let second = run_to_end(&runtime, "people-api", TriggerOptions::default()).await;
    assert_eq!(second.status, RunStatus::Success, "{second:?}");
    assert_eq!(
        second.planned,
        OpCounts {
            added: 3,
            changed: 0,
            removed: 0
        }
    );
    assert_eq!(sink_emails(&sink), model_emails(&pool).await);

    // Destination down for a whole run: the run fails, names the destination,
    // and the snapshot stays where it was.
    sqlx::query("UPDATE people SET email = 'x' || email WHERE id <= 10")
        .execute(&pool)
        .await
        .unwrap();
    sink.set_behavior(Behavior {
        fail_with: Some(503),
        ..Default::default()
    });
    let down = run_to_end(&runtime, "people-api", TriggerOptions::default()).await;
    assert_eq!(down.status, RunStatus::Failed, "{down:?}");
    assert!(
        down.error.as_deref().unwrap_or_default().contains("\"api\""),
        "{down:?}"
    );
    assert_eq!(down.failed.changed, 10);
    sink.set_behavior(Behavior::default());
    let recovered = run_to_end(&runtime, "people-api", TriggerOptions::default()).await;
    assert_eq!(
        recovered.planned,
        OpCounts {
            added: 0,
            changed: 10,
            removed: 0
        },
        "{recovered:?}"
    );
    assert_eq!(sink_emails(&sink), model_emails(&pool).await);
    runtime.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_source_in_upsert_mode_keeps_rows_that_left_the_model() {
    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::{ConnectOptions, Executor};
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("app.db");
    let mut sqlite = SqliteConnectOptions::new()
        .filename(&db_path)
        .create_if_missing(true)
        .connect()
        .await
        .unwrap();
    sqlite
        .execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT, score REAL, blob BLOB)")
        .await
        .unwrap();
    for id in 1..=300 {
        sqlx::query("INSERT INTO users VALUES (?, ?, ?, ?)")
            .bind(id)
            .bind(format!("u{id}@example.com"))
            .bind(id as f64 / 3.0)
            .bind(vec![id as u8, 0xff])
            .execute(&mut sqlite)
            .await
            .unwrap();
    }
    let sink = Sink::start().await;
    let text = format!(
        r#"
sources:
  app: {{ type: sqlite, path: app.db }}
models:
  users: {{ source: app, query: "SELECT id, email, score, blob FROM users", primary_key: id }}
destinations:
  api: {{ type: http, url: "{}" }}
syncs:
  users-api: {{ model: users, destination: api, mode: upsert }}
"#,
        sink.url()
    );
    let config = Arc::new(ebb_worker::config::from_yaml_str(Path::new("e.yaml"), &text, dir.path()).unwrap());
    let runtime = start_embedded(config, &dir.path().join("data"), 2, 2).await.unwrap();
    let first = run_to_end(&runtime, "users-api", TriggerOptions::default()).await;
    assert_eq!(
        first.succeeded,
        OpCounts {
            added: 300,
            changed: 0,
            removed: 0
        },
        "{first:?}"
    );
    let held = sink.records();
    assert_eq!(held["7"]["score"], 7.0 / 3.0);
    assert_eq!(held["7"]["blob"], "07ff");
    assert_eq!(held["7"]["id"], 7);

    sqlite.execute("DELETE FROM users WHERE id > 290").await.unwrap();
    sqlite
        .execute("UPDATE users SET email = 'x' WHERE id = 1")
        .await
        .unwrap();
    let second = run_to_end(&runtime, "users-api", TriggerOptions::default()).await;
    assert_eq!(
        second.planned,
        OpCounts {
            added: 0,
            changed: 1,
            removed: 0
        },
        "upsert sends no deletes"
    );
    assert_eq!(
        sink.records().len(),
        300,
        "rows that left the model stay in an upsert destination"
    );
    runtime.shutdown(Duration::from_secs(5)).await;
}

/// A destination that serves two requests at a time, queues six and answers
/// `503` beyond that, behind a lease that would allow 32 in flight. With a
/// fixed concurrency every wave of batches overruns it and batches exhaust
/// their retries; the adaptive window backs off to what the destination keeps
/// up with, so the run succeeds and hardly any request is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adaptive_concurrency_finds_what_an_overloaded_destination_keeps_up_with() {
    use ebb_tests::sink::Capacity;
    let database = fresh_postgres_database("adaptive").await;
    let pool = PgPool::connect(&database.url).await.unwrap();
    create_people(&pool, 4_000).await;
    let sink = Sink::start().await;
    sink.set_behavior(Behavior {
        capacity: Some(Capacity { serving: 2, queue: 22 }),
        latency: Duration::from_millis(20),
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
sources:
  warehouse:
    type: postgres
    url: {}
models:
  people:
    source: warehouse
    query: SELECT id, email FROM people
    primary_key: id
destinations:
  narrow:
    type: http
    url: {}
    batch_size: 20
    max_concurrency: 64
syncs:
  people-narrow:
    model: people
    destination: narrow
    mode: upsert
    max_rows_per_shard: 1000
"#,
        database.url,
        sink.url()
    );
    let config = Arc::new(ebb_worker::config::from_yaml_str(Path::new("adaptive.yaml"), &text, dir.path()).unwrap());
    let runtime = start_embedded(config, &dir.path().join("data"), 2, 2).await.unwrap();

    let run = run_to_end(&runtime, "people-narrow", TriggerOptions::default()).await;
    let requests = sink.requests();
    let refused = requests.iter().filter(|r| r.status == 503).count();
    assert_eq!(run.status, RunStatus::Success, "{run:?}");
    assert_eq!(sink_emails(&sink), model_emails(&pool).await);
    assert!(
        refused * 20 <= requests.len(),
        "{refused} of {} requests were refused as overload: the window did not back off ({})",
        requests.len(),
        requests
            .iter()
            .map(|r| if r.status == 503 { 'x' } else { '.' })
            .collect::<String>()
    );
    runtime.shutdown(Duration::from_secs(10)).await;
}
