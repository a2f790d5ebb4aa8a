//! The Redshift source on the local PostgreSQL, which speaks the same wire
//! protocol: it reads through a cursor, never `COPY … TO STDOUT` (which
//! Redshift lacks), and a 100k-row table model syncs exactly through random
//! inserts, updates and deletes, the destination equal to the model after
//! every run.

use ebb_coordinator::run::{RunStatus, TriggerOptions};
use ebb_coordinator::runtime::start_embedded;
use ebb_shared::config::{Config, ModelConfig, RedshiftSourceConfig, SourceConfig};
use ebb_shared::protocol::OpCounts;
use ebb_tests::embedded::run_to_end;
use ebb_tests::model::{create_people, model_emails, mutate, sink_emails};
use ebb_tests::services::fresh_postgres_database;
use ebb_tests::sink::Sink;
use sqlx::{Connection, PgPool};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// While a Redshift model is read, its session runs `FETCH`es from a cursor:
/// the statement PostgreSQL shows for it is never a `COPY`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_reads_by_cursor_fetches_never_copy() {
    let database = fresh_postgres_database("redshift_cursor").await;
    // One observing session, so every other session is the source's.
    let mut observer = sqlx::PgConnection::connect(&database.url).await.unwrap();
    let source = SourceConfig::Redshift(RedshiftSourceConfig {
        url: database.url.clone(),
        fetch_rows: Some(1_000),
    });
    let model = ModelConfig::query("rs", "SELECT generate_series(1, 1000000000) AS id", "id");
    let mut stream = ebb_worker::sources::open("rs", &source, "endless", &model)
        .await
        .unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < 5 {
        assert!(Instant::now() < deadline, "statements seen: {seen:?}");
        stream.next_batch().await.expect("a batch").expect("rows");
        let statements: Vec<String> = sqlx::query_scalar(
            "SELECT query FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() \
             AND backend_type = 'client backend'",
        )
        .fetch_all(&mut observer)
        .await
        .unwrap();
        seen.extend(statements);
    }
    assert!(
        seen.iter().all(|s| s.starts_with("FETCH FORWARD 1000 FROM")),
        "the source's session ran: {seen:?}"
    );
}

const ROWS: i64 = 100_000;

fn config(database_url: &str, sink_url: &str, dir: &Path) -> Arc<Config> {
    let text = format!(
        "sources:\n  warehouse: {{ type: redshift, url: \"{database_url}\" }}\n\
         models:\n  people: {{ source: warehouse, table: public.people, columns: [id, email, score, active], primary_key: id }}\n\
         destinations:\n  api: {{ type: http, url: \"{sink_url}\", batch_size: 500 }}\n\
         syncs:\n  people-api: {{ model: people, destination: api, mode: mirror, max_rows_per_shard: 25000 }}\n"
    );
    Arc::new(ebb_worker::config::from_yaml_str(Path::new("redshift.yaml"), &text, dir).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100k_row_table_model_syncs_exactly_through_mutations() {
    let database = fresh_postgres_database("redshift_e2e").await;
    let pool = PgPool::connect(&database.url).await.unwrap();
    create_people(&pool, ROWS).await;
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let runtime = start_embedded(
        config(&database.url, &sink.url(), dir.path()),
        &dir.path().join("data"),
        2,
        2,
    )
    .await
    .unwrap();
    let mut expected = OpCounts {
        added: ROWS as u64,
        ..Default::default()
    };
    let mut next_id = ROWS + 1;
    for round in 0..3 {
        let run = run_to_end(&runtime, "people-api", TriggerOptions::default()).await;
        assert_eq!(run.status, RunStatus::Success, "round {round}: {run:?}");
        assert_eq!(run.planned, expected, "round {round}: planned rows");
        assert_eq!(run.succeeded, expected, "round {round}: sent rows");
        assert_eq!(
            sink_emails(&sink),
            model_emails(&pool).await,
            "round {round}: destination == model"
        );
        expected = mutate(&pool, &mut next_id, 500).await;
    }
    runtime.shutdown(Duration::from_secs(10)).await;
}
