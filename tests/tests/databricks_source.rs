//! The Databricks source against the Statement Execution API on loopback
//! (PostgreSQL beneath): a service principal's OAuth token, throttling waited
//! out, a statement cancelled past `query_timeout` or when its reader goes
//! away, and a 100k-row model synced exactly through random mutations.

use ebb_shared::config::{DatabricksSourceConfig, ModelConfig, SourceConfig};
use ebb_tests::model::{create_people, people_mirror_config, syncs_exactly_through_mutations};
use ebb_tests::services::fresh_postgres_database;
use ebb_tests::sink::Sink;
use ebb_worker::error::TaskError;
use ebb_worker::sources::databricks::fake::{self, FakeDatabricks};
use sqlx::PgPool;
use std::time::{Duration, Instant};

fn source(fake: &FakeDatabricks) -> DatabricksSourceConfig {
    DatabricksSourceConfig {
        host: fake.url.clone(),
        warehouse_id: fake::WAREHOUSE.into(),
        token: Some(fake::TOKEN.into()),
        client_id: None,
        client_secret: None,
        catalog: Some("main".into()),
        schema: Some("public".into()),
        query_timeout: None,
        chunk_downloads: Some(3),
    }
}

async fn count_rows(source: DatabricksSourceConfig, query: &str) -> Result<usize, TaskError> {
    let model = ModelConfig::query("dbx", query, "id");
    let mut stream = ebb_worker::sources::open("dbx", &SourceConfig::Databricks(source), "people", &model).await?;
    let mut rows = 0;
    while let Some(batch) = stream.next_batch().await {
        rows += batch?.len();
    }
    Ok(rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_throttling_and_cancellation_follow_the_documented_contract() {
    let database = fresh_postgres_database("databricks_contract").await;
    let pool = PgPool::connect(&database.url).await.unwrap();
    create_people(&pool, 2_500).await;
    let fake = FakeDatabricks::start(&database.url, 1_000).await;

    // A service principal (OAuth M2M), three chunks, and two 429s waited out.
    let principal = DatabricksSourceConfig {
        token: None,
        client_id: Some(fake::CLIENT_ID.into()),
        client_secret: Some(fake::CLIENT_SECRET.into()),
        ..source(&fake)
    };
    fake.throttle_next(2);
    assert_eq!(
        count_rows(principal.clone(), "SELECT id, email FROM people")
            .await
            .unwrap(),
        2_500
    );
    assert_eq!(
        fake.links_served(),
        3,
        "2,500 rows in chunks of 1,000, each link fetched once"
    );

    // A wrong secret: the principal is named, the secret is not.
    let refused = DatabricksSourceConfig {
        client_secret: Some("not-the-secret".into()),
        ..principal
    };
    let error = count_rows(refused, "SELECT id FROM people").await.expect_err("refused");
    let text = error.to_string();
    assert!(matches!(error, TaskError::SourceUnreachable { .. }), "{text}");
    assert!(
        text.contains(fake::CLIENT_ID) && !text.contains("not-the-secret"),
        "{text}"
    );

    // A warehouse that does not exist is the source's problem, named.
    let nowhere = DatabricksSourceConfig {
        warehouse_id: "no-such-warehouse".into(),
        ..source(&fake)
    };
    let error = count_rows(nowhere, "SELECT 1 AS id").await.expect_err("no warehouse");
    assert!(
        matches!(error, TaskError::SourceUnreachable { .. }) && error.to_string().contains("no-such-warehouse"),
        "{error}"
    );

    // Past query_timeout the statement is cancelled, and the run says why.
    let impatient = DatabricksSourceConfig {
        query_timeout: Some(Duration::from_secs(1)),
        ..source(&fake)
    };
    let error = count_rows(impatient, "SELECT id FROM people, pg_sleep(30)")
        .await
        .expect_err("too slow");
    assert!(error.to_string().contains("query_timeout"), "{error}");
    assert_eq!(fake.cancelled(), 1);

    // A reader that goes away while the statement runs cancels it too.
    let model = ModelConfig::query("dbx", "SELECT id FROM people, pg_sleep(30)", "id");
    let abandoned = tokio::time::timeout(
        Duration::from_secs(1),
        ebb_worker::sources::open("dbx", &SourceConfig::Databricks(source(&fake)), "slow", &model),
    )
    .await;
    assert!(abandoned.is_err(), "the statement was still running");
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake.cancelled() < 2 {
        assert!(Instant::now() < deadline, "the abandoned statement was not cancelled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const ROWS: i64 = 100_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100k_row_table_model_syncs_exactly_through_mutations() {
    std::env::set_var("EBB_TEST_DATABRICKS_TOKEN", fake::TOKEN);
    let database = fresh_postgres_database("databricks_e2e").await;
    let pool = PgPool::connect(&database.url).await.unwrap();
    create_people(&pool, ROWS).await;
    let fake = FakeDatabricks::start(&database.url, 20_000).await;
    let source = format!(
        "{{ type: databricks, host: \"{}\", warehouse_id: {}, token: \"${{EBB_TEST_DATABRICKS_TOKEN}}\", catalog: main, \
         schema: public }}",
        fake.url,
        fake::WAREHOUSE
    );
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = people_mirror_config(&source, "people", &sink.url(), dir.path());
    syncs_exactly_through_mutations(config, &pool, &sink, ROWS).await;
}
