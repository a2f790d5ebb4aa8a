//! The Snowflake source against fakesnow (Snowflake's REST protocol on
//! DuckDB): a 100k-row table model syncs exactly through deletes, updates and
//! inserts, the destination equal to the model after every run.

use ebb_coordinator::run::{RunStatus, TriggerOptions};
use ebb_coordinator::runtime::start_embedded;
use ebb_shared::config::{Config, ModelConfig, SnowflakeSourceConfig, SourceConfig};
use ebb_shared::value::Value;
use ebb_tests::embedded::run_to_end;
use ebb_tests::fakesnow::FakeSnow;
use ebb_tests::model::sink_emails;
use ebb_tests::sink::Sink;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const ROWS: u64 = 100_000;

fn config(endpoint: &str, database: &str, sink_url: &str, dir: &Path) -> Arc<Config> {
    let text = format!(
        "sources:\n  warehouse: {{ type: snowflake, account: ebb-e2e, user: EBB_READER, password: \"${{EBB_TEST_SNOWFLAKE_PASSWORD}}\", \
         warehouse: COMPUTE_WH, database: {database}, schema: PUBLIC, endpoint: \"{endpoint}\" }}\n\
         models:\n  people: {{ source: warehouse, table: PUBLIC.PEOPLE, columns: [ID, EMAIL, SCORE], primary_key: ID }}\n\
         destinations:\n  api: {{ type: http, url: \"{sink_url}\", batch_size: 500 }}\n\
         syncs:\n  people-api: {{ model: people, destination: api, mode: mirror, max_rows_per_shard: 25000, \
         mappings: [{{ from: ID, to: id }}, {{ from: EMAIL, to: email }}, {{ from: SCORE, to: score }}] }}\n"
    );
    Arc::new(ebb_worker::config::from_yaml_str(Path::new("snowflake.yaml"), &text, dir).unwrap())
}

/// The model as the source reads it: key → email.
async fn model_emails(source: &SourceConfig) -> BTreeMap<String, String> {
    let model = ModelConfig::query("warehouse", "SELECT ID, EMAIL FROM PUBLIC.PEOPLE", "ID");
    let mut stream = ebb_worker::sources::open("warehouse", source, "people", &model)
        .await
        .unwrap();
    let mut emails = BTreeMap::new();
    while let Some(batch) = stream.next_batch().await {
        for row in batch.unwrap() {
            let (Some(key), Value::Text(email)) = (row[0].as_key(), &row[1]) else {
                panic!("{row:?}")
            };
            emails.insert(key, email.clone());
        }
    }
    emails
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100k_row_table_model_syncs_exactly_through_mutations() {
    std::env::set_var("EBB_TEST_SNOWFLAKE_PASSWORD", "e2e-password");
    let fake = FakeSnow::start().await;
    let database = format!("E2E_{}", rand::random::<u32>());
    fake.execute(
        &database,
        "PUBLIC",
        &[&format!(
            "CREATE TABLE people AS SELECT id, 'person' || id || '@example.com' AS email, (id % 101) + 0.5 AS score \
             FROM (SELECT seq4() + 1 AS id FROM TABLE(GENERATOR(ROWCOUNT => {ROWS})))"
        )],
    )
    .await;
    let source = SourceConfig::Snowflake(SnowflakeSourceConfig {
        account: "ebb-e2e".into(),
        user: "EBB_READER".into(),
        password: Some("e2e-password".into()),
        private_key: None,
        private_key_file: None,
        warehouse: None,
        role: None,
        database: Some(database.clone()),
        schema: Some("PUBLIC".into()),
        query_timeout: None,
        chunk_downloads: None,
        endpoint: Some(fake.url.clone()),
    });
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let runtime = start_embedded(
        config(&fake.url, &database, &sink.url(), dir.path()),
        &dir.path().join("data"),
        2,
        2,
    )
    .await
    .unwrap();
    let mut expected = [ROWS, 0, 0];
    for round in 0..3u64 {
        let run = run_to_end(&runtime, "people-api", TriggerOptions::default()).await;
        assert_eq!(run.status, RunStatus::Success, "round {round}: {run:?}");
        let planned = [run.planned.added, run.planned.changed, run.planned.removed];
        let succeeded = [run.succeeded.added, run.succeeded.changed, run.succeeded.removed];
        assert_eq!(planned, expected, "round {round}: planned rows");
        assert_eq!(succeeded, expected, "round {round}: sent rows");
        assert_eq!(
            sink_emails(&sink),
            model_emails(&source).await,
            "round {round}: destination == model"
        );
        let step = 7 + round;
        let first_new = ROWS + 1 + round * 1_000;
        let changed = fake
            .execute(
                &database,
                "PUBLIC",
                &[
                    &format!("DELETE FROM people WHERE id % 997 = {step}"),
                    &format!(
                        "UPDATE people SET email = 'changed{round}-' || id || '@example.com' WHERE id % 503 = {step}"
                    ),
                    &format!(
                        "INSERT INTO people SELECT id, 'new' || id || '@example.com', 1.5 \
                         FROM (SELECT seq4() + {first_new} AS id FROM TABLE(GENERATOR(ROWCOUNT => 300)))"
                    ),
                ],
            )
            .await;
        expected = [changed[2], changed[1], changed[0]];
        assert!(
            expected.iter().all(|n| *n > 0),
            "every mutation changed rows: {expected:?}"
        );
    }
    runtime.shutdown(Duration::from_secs(10)).await;
}

/// A key pair's login (`AUTHENTICATOR: SNOWFLAKE_JWT`) reads the same rows
/// as a password's. fakesnow does not check the token; its claims and
/// signature are unit-tested in the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_pair_login_reads_the_model() {
    use rsa::pkcs8::EncodePrivateKey;
    let fake = FakeSnow::start().await;
    let database = format!("KEYPAIR_{}", rand::random::<u32>());
    fake.execute(
        &database,
        "PUBLIC",
        &["CREATE TABLE t AS SELECT seq4() AS id FROM TABLE(GENERATOR(ROWCOUNT => 1000))"],
    )
    .await;
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("ebb.p8");
    std::fs::write(&pem, key.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).unwrap().as_bytes()).unwrap();
    let source = SourceConfig::Snowflake(SnowflakeSourceConfig {
        account: "xy12345.eu-west-1".into(),
        user: "ebb_reader".into(),
        password: None,
        private_key: None,
        private_key_file: Some(pem),
        warehouse: None,
        role: None,
        database: Some(database),
        schema: Some("PUBLIC".into()),
        query_timeout: None,
        chunk_downloads: None,
        endpoint: Some(fake.url.clone()),
    });
    let model = ModelConfig::query("warehouse", "SELECT id FROM t", "ID");
    let mut stream = ebb_worker::sources::open("warehouse", &source, "t", &model)
        .await
        .unwrap();
    let mut rows = 0;
    while let Some(batch) = stream.next_batch().await {
        rows += batch.unwrap().len();
    }
    assert_eq!(rows, 1000);
}

/// Snowflake sends a large result as its first part inline and the rest in
/// chunks at URLs of their own: JSON rows without their brackets, gzipped or
/// not, to be fetched with `chunkHeaders` and without the session's
/// `Authorization` (fakesnow sends everything inline, so this server serves
/// that part of the protocol as documented).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_in_chunks_is_read_in_order_without_the_session_header() {
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::{get, post};
    use std::io::Write;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let rows = |from: u64, to: u64| -> String {
        (from..to)
            .map(|i| format!("[\"{i}\",\"p{i}@example.com\",\"{}\"]", 19_000 + i % 30))
            .collect::<Vec<_>>()
            .join(",")
    };
    let chunk_bodies: Vec<Vec<u8>> = vec![
        rows(100, 3_000).into_bytes(),
        {
            let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gzip.write_all(rows(3_000, 7_000).as_bytes()).unwrap();
            gzip.finish().unwrap()
        },
        rows(7_000, 7_500).into_bytes(),
    ];
    let inline: serde_json::Value = serde_json::from_str(&format!("[{}]", rows(0, 100))).unwrap();
    let answer = serde_json::json!({
        "success": true,
        "data": {
            "rowtype": [
                {"name": "ID", "type": "fixed", "scale": 0, "precision": 38},
                {"name": "EMAIL", "type": "text"},
                {"name": "BORN", "type": "date"},
            ],
            "queryResultFormat": "json",
            "rowset": inline,
            "total": 7_500,
            "returned": 100,
            "chunks": (0..3).map(|i| serde_json::json!({"url": format!("{url}/chunk/{i}"), "rowCount": 0})).collect::<Vec<_>>(),
            "chunkHeaders": {"x-chunk-key": "k3y"},
        },
    });
    let app = axum::Router::new()
        .route(
            "/session/v1/login-request",
            post(|| async { axum::Json(serde_json::json!({"success": true, "data": {"token": "session-token"}})) }),
        )
        .route(
            "/queries/v1/query-request",
            post(move |headers: HeaderMap| {
                let answer = answer.clone();
                async move {
                    if headers.get("authorization").and_then(|v| v.to_str().ok())
                        != Some("Snowflake Token=\"session-token\"")
                    {
                        return (StatusCode::UNAUTHORIZED, "no session").into_response();
                    }
                    axum::Json(answer).into_response()
                }
            }),
        )
        .route(
            "/session",
            post(|| async { axum::Json(serde_json::json!({"success": true})) }),
        )
        .route(
            "/chunk/{index}",
            get(
                move |axum::extract::Path(index): axum::extract::Path<usize>, headers: HeaderMap| {
                    let body = chunk_bodies[index].clone();
                    async move {
                        if headers.contains_key("authorization") {
                            return (StatusCode::FORBIDDEN, "presigned: no Authorization").into_response();
                        }
                        if headers.get("x-chunk-key").and_then(|v| v.to_str().ok()) != Some("k3y") {
                            return (StatusCode::FORBIDDEN, "the chunk's headers are missing").into_response();
                        }
                        body.into_response()
                    }
                },
            ),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let source = SourceConfig::Snowflake(SnowflakeSourceConfig {
        account: "acme-chunks".into(),
        user: "EBB".into(),
        password: Some("pw".into()),
        private_key: None,
        private_key_file: None,
        warehouse: None,
        role: None,
        database: None,
        schema: None,
        query_timeout: None,
        chunk_downloads: Some(2),
        endpoint: Some(url),
    });
    let model = ModelConfig::query("warehouse", "SELECT * FROM big", "ID");
    let mut stream = ebb_worker::sources::open("warehouse", &source, "big", &model)
        .await
        .unwrap();
    let mut ids = Vec::new();
    while let Some(batch) = stream.next_batch().await {
        for row in batch.unwrap() {
            ids.push(row[0].clone());
            assert!(
                matches!(&row[2], Value::Timestamp(day) if day.starts_with("2022-")),
                "{row:?}"
            );
        }
    }
    assert_eq!(
        ids,
        (0..7_500).map(Value::Int).collect::<Vec<_>>(),
        "every row once, in order"
    );
}
