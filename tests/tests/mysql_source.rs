//! The MySQL source against the real MariaDB on loopback: every column type
//! read as its typed value (nulls included), a broken query and an
//! unreachable or refusing server named, an abandoned read stopped on the
//! server, and a 100k-row model synced end to end through random inserts,
//! updates and deletes, the destination equal to the model after every run.

use ebb_coordinator::run::{RunStatus, TriggerOptions};
use ebb_coordinator::runtime::start_embedded;
use ebb_shared::config::{Config, ModelConfig, MysqlSourceConfig, SourceConfig};
use ebb_shared::value::Value;
use ebb_tests::embedded::run_to_end;
use ebb_tests::model::sink_emails;
use ebb_tests::services::{fresh_mysql_database, TestMysqlDatabase};
use ebb_tests::sink::Sink;
use ebb_worker::error::TaskError;
use sqlx::{Connection, Executor, MySqlConnection, Row};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn source(url: &str) -> SourceConfig {
    SourceConfig::Mysql(MysqlSourceConfig { url: url.to_string() })
}

fn model(query: &str) -> ModelConfig {
    serde_json::from_value(serde_json::json!({"source": "db", "query": query, "primary_key": "id"})).unwrap()
}

async fn connect(database: &TestMysqlDatabase) -> MySqlConnection {
    MySqlConnection::connect(&database.url).await.unwrap()
}

/// Every row of a query as the source reads it.
async fn read_all(url: &str, query: &str) -> Result<(Vec<(String, String)>, Vec<Vec<Value>>), TaskError> {
    let mut stream = ebb_worker::sources::open("db", &source(url), "m", &model(query)).await?;
    let columns = stream
        .columns
        .iter()
        .map(|c| (c.name.clone(), c.source_type.clone()))
        .collect();
    let mut rows = Vec::new();
    while let Some(batch) = stream.next_batch().await {
        rows.extend(batch?);
    }
    Ok((columns, rows))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_column_type_reads_as_its_value_and_null_as_null() {
    let database = fresh_mysql_database("types").await;
    let mut connection = connect(&database).await;
    connection
        .execute(
            "CREATE TABLE kinds (id BIGINT PRIMARY KEY, small SMALLINT, big_unsigned BIGINT UNSIGNED, flag BOOLEAN, \
             ratio DOUBLE, price DECIMAL(12,4), born DATE, seen DATETIME(3), stamped TIMESTAMP NULL, name VARCHAR(40), \
             notes TEXT, tier ENUM('gold','silver'), doc JSON, raw VARBINARY(8), bits BIT(12), year_of YEAR)",
        )
        .await
        .unwrap();
    // The session's zone is not UTC: a TIMESTAMP is still read in UTC.
    connection.execute("SET time_zone = '+05:00'").await.unwrap();
    connection
        .execute(
            "INSERT INTO kinds VALUES (1, -7, 18446744073709551615, TRUE, 0.25, 12345678.1234, '2024-02-29', \
             '2024-03-10 02:30:00.125', '2024-06-01 17:00:00', 'Zoë', 'line\\nbreak\\ttab', 'gold', '{\"a\": [1, 2]}', \
             X'00ff10', b'101000000001', 2024), \
             (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
        )
        .await
        .unwrap();
    let (columns, rows) = read_all(&database.url, "SELECT * FROM kinds ORDER BY id")
        .await
        .unwrap();
    assert_eq!(columns.len(), 16, "{columns:?}");
    assert_eq!(columns[0], ("id".to_string(), "BIGINT".to_string()));
    let expected = vec![
        Value::Int(1),
        Value::Int(-7),
        Value::Decimal("18446744073709551615".into()),
        Value::Bool(true),
        Value::Float(0.25),
        Value::Decimal("12345678.1234".into()),
        Value::Timestamp("2024-02-29".into()),
        Value::Timestamp("2024-03-10 02:30:00.125".into()),
        // Inserted at +05:00: 12:00 UTC.
        Value::Timestamp("2024-06-01 12:00:00+00:00".into()),
        Value::Text("Zoë".into()),
        Value::Text("line\nbreak\ttab".into()),
        Value::Text("gold".into()),
        // MariaDB's JSON is text in a binary collation, marked as MySQL
        // marks a BLOB: text, since its bytes are UTF-8.
        Value::Text("{\"a\": [1, 2]}".into()),
        Value::Bytes(vec![0x00, 0xff, 0x10]),
        Value::Int(0b1010_0000_0001),
        Value::Int(2024),
    ];
    for (i, (column, want)) in columns.iter().zip(&expected).enumerate() {
        assert_eq!(&rows[0][i], want, "column {column:?}");
    }
    assert!(rows[1][1..].iter().all(Value::is_null), "{:?}", rows[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_query_and_an_unreachable_or_refusing_server_are_named() {
    let database = fresh_mysql_database("errors").await;
    let error = read_all(&database.url, "SELECT id, nope FROM missing_table")
        .await
        .expect_err("refused");
    let text = error.to_string();
    assert!(
        matches!(error, TaskError::Query { .. }) && text.contains("missing_table"),
        "{text}"
    );
    assert!(!error.is_retriable(), "a broken query is the model's to fix: {text}");

    // Nothing listens on this port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let error = read_all(&format!("mysql://root@{closed}/x"), "SELECT 1 AS id")
        .await
        .expect_err("unreachable");
    assert!(
        matches!(error, TaskError::SourceUnreachable { .. }) && error.is_retriable(),
        "{error}"
    );

    // A refused login names the source, never the password.
    let url = database.url.replace("root@", "nobody:s3cret-pass@");
    let error = read_all(&url, "SELECT 1 AS id").await.expect_err("refused login");
    let text = error.to_string();
    assert!(matches!(error, TaskError::SourceUnreachable { .. }), "{text}");
    assert!(
        text.contains("Access denied") && !text.contains("s3cret-pass"),
        "{text}"
    );
}

/// A read abandoned halfway (extraction cancelled or failed) stops on the
/// server too: its query does not run on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_read_stops_its_query() {
    let database = fresh_mysql_database("cancel").await;
    // A million rows from MariaDB's sequence engine, slowly enough to be
    // still running when the reader goes away.
    let query = "SELECT seq AS id, SLEEP(0.0001) AS pause FROM seq_1_to_1000000";
    let mut stream = ebb_worker::sources::open("db", &source(&database.url), "m", &model(query))
        .await
        .unwrap();
    let first = stream.next_batch().await.expect("a batch").unwrap();
    assert!(!first.is_empty());
    drop(stream);
    let mut observer = connect(&database).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let running: Vec<String> = sqlx::query("SELECT info FROM information_schema.processlist WHERE info LIKE '%seq_1_to_1000000%' AND id <> CONNECTION_ID()")
            .fetch_all(&mut observer)
            .await
            .unwrap()
            .iter()
            .map(|row| row.get::<String, _>(0))
            .collect();
        if running.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the abandoned query still runs after 30s: {running:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const ROWS: i64 = 100_000;

fn config(database_url: &str, sink_url: &str, dir: &Path) -> Arc<Config> {
    let text = format!(
        "sources:\n  shop: {{ type: mariadb, url: \"{database_url}\" }}\n\
         models:\n  people: {{ source: shop, query: \"SELECT id, email, score, joined FROM people\", primary_key: id }}\n\
         destinations:\n  api: {{ type: http, url: \"{sink_url}\", batch_size: 500 }}\n\
         syncs:\n  people-api: {{ model: people, destination: api, mode: mirror, max_rows_per_shard: 25000 }}\n"
    );
    Arc::new(ebb_worker::config::from_yaml_str(Path::new("mysql.yaml"), &text, dir).unwrap())
}

async fn model_emails(connection: &mut MySqlConnection) -> BTreeMap<String, String> {
    sqlx::query("SELECT id, email FROM people")
        .fetch_all(connection)
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get::<i64, _>(0).to_string(), row.get::<String, _>(1)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100k_row_model_syncs_exactly_through_inserts_updates_and_deletes() {
    let database = fresh_mysql_database("e2e").await;
    let mut connection = connect(&database).await;
    connection
        .execute(
            "CREATE TABLE people (id BIGINT PRIMARY KEY, email VARCHAR(80) NOT NULL, score DECIMAL(8,2), joined TIMESTAMP NULL)",
        )
        .await
        .unwrap();
    connection
        .execute(
            format!(
                "INSERT INTO people SELECT seq, CONCAT('person', seq, '@example.com'), seq % 101 + 0.5, \
                 FROM_UNIXTIME(1700000000 + seq) FROM seq_1_to_{ROWS}"
            )
            .as_str(),
        )
        .await
        .unwrap();
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

    let mut expected = [ROWS as u64, 0, 0];
    for round in 0..3i64 {
        let run = run_to_end(&runtime, "people-api", TriggerOptions::default()).await;
        assert_eq!(run.status, RunStatus::Success, "round {round}: {run:?}");
        let planned = [run.planned.added, run.planned.changed, run.planned.removed];
        let succeeded = [run.succeeded.added, run.succeeded.changed, run.succeeded.removed];
        assert_eq!(planned, expected, "round {round}: planned rows");
        assert_eq!(succeeded, expected, "round {round}: sent rows");
        assert_eq!(
            sink_emails(&sink),
            model_emails(&mut connection).await,
            "round {round}: destination == model"
        );
        // Deletes, updates and inserts with known counts for the next run.
        let step = 7 + round;
        let removed = connection
            .execute(format!("DELETE FROM people WHERE id % 997 = {step}").as_str())
            .await
            .unwrap()
            .rows_affected();
        let changed = connection
            .execute(
                format!("UPDATE people SET email = CONCAT('changed', {round}, '-', id, '@example.com') WHERE id % 503 = {step}")
                    .as_str(),
            )
            .await
            .unwrap()
            .rows_affected();
        let first_new = ROWS + 1 + round * 1_000;
        let added = connection
            .execute(
                format!(
                    "INSERT INTO people SELECT seq, CONCAT('new', seq, '@example.com'), 1.25, NULL \
                     FROM seq_{first_new}_to_{}",
                    first_new + 299
                )
                .as_str(),
            )
            .await
            .unwrap()
            .rows_affected();
        expected = [added, changed, removed];
    }
    runtime.shutdown(Duration::from_secs(10)).await;
}
