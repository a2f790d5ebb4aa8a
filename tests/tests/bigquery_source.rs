//! The BigQuery source against BigQuery's REST contract on loopback
//! (PostgreSQL beneath): throttling (`403 rateLimitExceeded`) is waited out,
//! a key the token endpoint refuses is named, a read that stops early cancels
//! its job, and a 100k-row model syncs exactly through random mutations.

use ebb_shared::config::{BigquerySourceConfig, ModelConfig, SourceConfig};
use ebb_tests::model::{create_people, people_mirror_config, syncs_exactly_through_mutations};
use ebb_tests::services::fresh_postgres_database;
use ebb_tests::sink::Sink;
use ebb_worker::error::TaskError;
use ebb_worker::sources::bigquery::fake::{service_account_key, FakeBigquery};
use sqlx::PgPool;
use std::time::{Duration, Instant};

fn source(fake: &FakeBigquery, key: &str, page_rows: u32) -> SourceConfig {
    SourceConfig::Bigquery(BigquerySourceConfig {
        project: "ebb-test".into(),
        credentials_json: Some(key.to_string()),
        credentials_file: None,
        location: Some("EU".into()),
        dataset: Some("public".into()),
        page_rows: Some(page_rows),
        query_timeout: None,
        endpoint: Some(fake.url.clone()),
    })
}

async fn count_rows(source: &SourceConfig, query: &str) -> Result<usize, TaskError> {
    let model = ModelConfig::query("bq", query, "id");
    let mut stream = ebb_worker::sources::open("bq", source, "people", &model).await?;
    let mut rows = 0;
    while let Some(batch) = stream.next_batch().await {
        rows += batch?.len();
    }
    Ok(rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_waited_out_a_refused_key_is_named_and_an_early_stop_cancels_the_job() {
    let database = fresh_postgres_database("bigquery_contract").await;
    let pool = PgPool::connect(&database.url).await.unwrap();
    create_people(&pool, 2_500).await;
    let (fake, key) = FakeBigquery::start(&database.url).await;
    let bigquery = source(&fake, &key, 1_000);

    // Two answers of 403 rateLimitExceeded, then the pages (the default
    // dataset resolves the unqualified table).
    fake.throttle_next(2);
    let pages_before = fake.page_requests();
    assert_eq!(
        count_rows(&bigquery, "SELECT id, email FROM people").await.unwrap(),
        2_500
    );
    assert!(
        fake.page_requests() - pages_before >= 3,
        "2,500 rows in pages of 1,000 (after the job's poll): {}",
        fake.page_requests() - pages_before
    );

    // A key of another account: the token endpoint refuses its signature.
    let other = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
    let stranger = service_account_key(
        "ebb-reader@ebb-test.iam.gserviceaccount.com",
        &other,
        &format!("{}/token", fake.url),
    );
    let error = count_rows(&source(&fake, &stranger, 1_000), "SELECT id FROM people")
        .await
        .expect_err("refused");
    let text = error.to_string();
    assert!(matches!(error, TaskError::SourceUnreachable { .. }), "{text}");
    assert!(
        text.contains("ebb-reader@ebb-test.iam.gserviceaccount.com") && text.contains("Invalid JWT Signature"),
        "{text}"
    );
    assert!(!text.contains("PRIVATE KEY"), "{text}");

    // A reader that stops after its first batch leaves no job behind.
    let model = ModelConfig::query("bq", "SELECT generate_series(1, 1000000000) AS id", "id");
    let mut stream = ebb_worker::sources::open("bq", &bigquery, "endless", &model)
        .await
        .unwrap();
    stream.next_batch().await.unwrap().unwrap();
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(20);
    while fake.cancelled() == 0 || fake.open_jobs() > 0 {
        assert!(Instant::now() < deadline, "the job was not cancelled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const ROWS: i64 = 100_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100k_row_table_model_syncs_exactly_through_mutations() {
    let database = fresh_postgres_database("bigquery_e2e").await;
    let pool = PgPool::connect(&database.url).await.unwrap();
    create_people(&pool, ROWS).await;
    let (fake, key) = FakeBigquery::start(&database.url).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key.json"), key).unwrap();
    let source = format!(
        "{{ type: bigquery, project: ebb-test, credentials_file: key.json, location: US, endpoint: \"{}\" }}",
        fake.url
    );
    let sink = Sink::start().await;
    let config = people_mirror_config(&source, "public.people", &sink.url(), dir.path());
    syncs_exactly_through_mutations(config, &pool, &sink, ROWS).await;
}
