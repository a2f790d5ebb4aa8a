//! The Databricks source against the Statement Execution API on loopback
//! (PostgreSQL beneath): a service principal's OAuth token, throttling waited
//! out, a statement cancelled past `query_timeout` or when its reader goes
//! away, and a 100k-row model synced exactly through random mutations.

use ebb_coordinator::run::{RunStatus, TriggerOptions};
use ebb_coordinator::runtime::start_embedded;
use ebb_shared::config::{Config, DatabricksSourceConfig, ModelConfig, SourceConfig};
use ebb_shared::protocol::OpCounts;
use ebb_tests::embedded::run_to_end;
use ebb_tests::model::{create_people, model_emails, mutate, sink_emails};
use ebb_tests::services::fresh_postgres_database;
use ebb_tests::sink::Sink;
use ebb_worker::error::TaskError;
use ebb_worker::sources::databricks::fake::{self, FakeDatabricks};
use sqlx::PgPool;
use std::path::Path;
use std::sync::Arc;
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

fn config(host: &str, sink_url: &str, dir: &Path) -> Arc<Config> {
    let text = format!(
        "sources:\n  lakehouse: {{ type: databricks, host: \"{host}\", warehouse_id: {}, token: \"${{EBB_TEST_DATABRICKS_TOKEN}}\", \
         catalog: main, schema: public }}\n\
         models:\n  people: {{ source: lakehouse, table: people, columns: [id, email, score, active], primary_key: id }}\n\
         destinations:\n  api: {{ type: http, url: \"{sink_url}\", batch_size: 500 }}\n\
         syncs:\n  people-api: {{ model: people, destination: api, mode: mirror, max_rows_per_shard: 25000 }}\n",
        fake::WAREHOUSE
    );
    Arc::new(ebb_worker::config::from_yaml_str(Path::new("databricks.yaml"), &text, dir).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100k_row_table_model_syncs_exactly_through_mutations() {
    std::env::set_var("EBB_TEST_DATABRICKS_TOKEN", fake::TOKEN);
    let database = fresh_postgres_database("databricks_e2e").await;
    let pool = PgPool::connect(&database.url).await.unwrap();
    create_people(&pool, ROWS).await;
    let fake = FakeDatabricks::start(&database.url, 20_000).await;
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let runtime = start_embedded(
        config(&fake.url, &sink.url(), dir.path()),
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
