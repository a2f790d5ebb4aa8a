//! The Redshift source on the local PostgreSQL, which speaks the same wire
//! protocol: it reads through a cursor, never `COPY … TO STDOUT` (which
//! Redshift lacks), and a 100k-row table model syncs exactly through random
//! inserts, updates and deletes, the destination equal to the model after
//! every run.

use ebb_shared::config::{ModelConfig, RedshiftSourceConfig, SourceConfig};
use ebb_tests::model::{create_people, people_mirror_config, syncs_exactly_through_mutations};
use ebb_tests::services::fresh_postgres_database;
use ebb_tests::sink::Sink;
use sqlx::{Connection, PgPool};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100k_row_table_model_syncs_exactly_through_mutations() {
    let database = fresh_postgres_database("redshift_e2e").await;
    let pool = PgPool::connect(&database.url).await.unwrap();
    create_people(&pool, ROWS).await;
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let source = format!("{{ type: redshift, url: \"{}\" }}", database.url);
    let config = people_mirror_config(&source, "public.people", &sink.url(), dir.path());
    syncs_exactly_through_mutations(config, &pool, &sink, ROWS).await;
}
