//! The fleet end to end: a coordinator and three worker processes on the real
//! PostgreSQL, RabbitMQ and an S3 server on loopback sync a 100k-row PostgreSQL
//! model to the local HTTP destination and to a PostgreSQL table. Random inserts,
//! updates and deletes between runs; after every run each destination equals the
//! model and the run's counts equal the mutations. The model is read by three
//! extract tasks, each a range of its key, on whichever workers take them. One run loses a worker to
//! SIGKILL halfway: it still succeeds, nothing is lost, and the duplicates are
//! bounded by what was in flight.

use ebb_shared::protocol::OpCounts;
use ebb_tests::fleet::{counts, Fleet};
use ebb_tests::model::{create_people, model_emails, mutate, sink_emails, table_emails};
use ebb_tests::services::fresh_postgres_database;
use ebb_tests::sink::{Behavior, Sink};
use sqlx::PgPool;
use std::time::Duration;

const ROWS: i64 = 100_000;
const HTTP_BATCH: u64 = 100;
/// A worker's requests in flight per destination when none is configured
/// (`ebb_worker::limits::DEFAULT_CONCURRENCY`).
const WORKER_CONCURRENCY: u64 = 4;

fn config(database_url: &str, sink_url: &str) -> String {
    format!(
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
    extract_tasks: 3
destinations:
  api:
    type: http
    url: {sink_url}
    batch_size: {HTTP_BATCH}
  table:
    type: postgres
    url: {database_url}
    table: people_copy
    key_column: id
    batch_size: 1000
syncs:
  people-api:
    model: people
    destination: api
    mode: mirror
    max_rows_per_shard: 8000
  people-table:
    model: people
    destination: table
    mode: mirror
    max_rows_per_shard: 20000
"#
    )
}

fn expect_counts(run: &serde_json::Value, expected: OpCounts, what: &str) {
    let want = [expected.added, expected.changed, expected.removed];
    assert_eq!(run["status"], "success", "{what}: {run}");
    assert_eq!(counts(run, "plannedRows"), want, "{what}: planned rows of {run}");
    assert_eq!(counts(run, "successfulRows"), want, "{what}: successful rows of {run}");
    assert_eq!(counts(run, "failedRows"), [0, 0, 0], "{what}: failed rows of {run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_sync_100k_rows_exactly_and_survive_a_killed_worker() {
    let source = fresh_postgres_database("fleet_source").await;
    let pool = PgPool::connect(&source.url).await.unwrap();
    create_people(&pool, ROWS).await;
    let sink = Sink::start().await;
    let mut fleet = Fleet::start(&config(&source.url, &sink.url()), 3).await;

    let mut expected = OpCounts {
        added: ROWS as u64,
        ..Default::default()
    };
    let mut next_id = ROWS + 1;
    for round in 0..3 {
        for sync in ["people-api", "people-table"] {
            let started = std::time::Instant::now();
            let run_id = fleet.trigger(sync).await;
            let run = fleet.wait_run(&run_id, Duration::from_secs(240)).await;
            println!("round {round}, {sync}: {:.1}s", started.elapsed().as_secs_f64());
            expect_counts(&run, expected, &format!("round {round}, {sync}"));
            assert_eq!(run["querySize"].as_u64(), Some(model_emails(&pool).await.len() as u64));
            assert_eq!(
                run["extractTasks"],
                serde_json::json!({"total": 3, "done": 3}),
                "round {round}, {sync}: the model was read by three extract tasks"
            );
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
        expected = mutate(&pool, &mut next_id, 3_000).await;
    }

    for sync in ["people-api", "people-table"] {
        let run_id = fleet.trigger(sync).await;
        let run = fleet.wait_run(&run_id, Duration::from_secs(240)).await;
        expect_counts(&run, expected, &format!("last round, {sync}"));
    }

    // A big change, sent slowly, and a worker killed in the middle of it.
    let rewritten = sqlx::query("UPDATE people SET email = 'rewritten-' || id || '@example.com' WHERE id % 2 = 0")
        .execute(&pool)
        .await
        .unwrap()
        .rows_affected();
    sink.reset_counters();
    sink.set_behavior(Behavior {
        latency: Duration::from_millis(100),
        ..Default::default()
    });
    let run_id = fleet.trigger("people-api").await;
    // Kill a worker that has been sending a shard of this run for a while, so
    // that it has checkpointed progress to lose and batches in flight.
    let mut first_seen: std::collections::HashMap<(usize, String), std::time::Instant> = Default::default();
    let victim = 'search: loop {
        let run = fleet.run(&run_id).await;
        assert_ne!(
            run["status"], "success",
            "the run ended before a worker could be killed: {run}"
        );
        for (index, worker) in fleet.workers.iter().enumerate() {
            for task in worker.delivering_tasks(&format!("{run_id}/shard-")) {
                let seen = *first_seen.entry((index, task)).or_insert_with(std::time::Instant::now);
                if seen.elapsed() > Duration::from_millis(300) {
                    break 'search index;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    fleet.workers[victim].kill().await;

    let run = fleet.wait_run(&run_id, Duration::from_secs(300)).await;
    sink.set_behavior(Behavior::default());
    assert_eq!(run["status"], "success", "{run}\n{}", fleet.logs());
    assert_eq!(counts(&run, "plannedRows"), [0, rewritten, 0], "{run}");
    assert_eq!(
        counts(&run, "successfulRows"),
        [0, rewritten, 0],
        "every planned row succeeded: {run}"
    );
    let model = model_emails(&pool).await;
    assert_eq!(sink_emails(&sink), model, "nothing lost after the crash");
    let resumed = fleet
        .workers
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, w)| w)
        .any(|w| {
            std::fs::read_to_string(&w.log)
                .unwrap_or_default()
                .contains("resuming from checkpoint")
        });
    assert!(
        resumed,
        "a surviving worker took over a shard of the killed one from its checkpoint\n{}",
        fleet.events()
    );
    let duplicates = sink.duplicate_upserts() as u64;
    // A batch holds one of its worker's WORKER_CONCURRENCY request slots for
    // the destination (shared by all its shards) until its answer is
    // checkpointed: what the killed worker had in flight is all that is resent.
    let bound = WORKER_CONCURRENCY * HTTP_BATCH;
    println!("rows sent twice after the crash: {duplicates} (bound {bound})");
    assert!(
        duplicates <= bound,
        "{duplicates} rows sent twice; at most {bound} were in flight"
    );

    // The coordinator never held row data.
    let coordinator_peak_kib = Fleet::peak_rss_kib(&fleet.coordinator);
    println!("coordinator peak RSS: {} MiB", coordinator_peak_kib / 1024);
    assert!(
        coordinator_peak_kib < 150 * 1024,
        "coordinator peak RSS {coordinator_peak_kib} KiB"
    );

    // The survivors finish the table sync too.
    let run_id = fleet.trigger("people-table").await;
    let run = fleet.wait_run(&run_id, Duration::from_secs(240)).await;
    assert_eq!(run["status"], "success", "{run}");
    assert_eq!(table_emails(&pool, "people_copy").await, model);
}
