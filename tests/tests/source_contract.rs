//! Every database source runs the source contract (`ebb_tests::source_contract`)
//! against its real server on loopback: PostgreSQL, Redshift's cursor path
//! on the same PostgreSQL (no `COPY`), BigQuery's REST contract on loopback,
//! Databricks' too, Snowflake's on fakesnow, MariaDB, and SQLite.

use ebb_shared::config::{
    BigquerySourceConfig, DatabricksSourceConfig, MysqlSourceConfig, PostgresSourceConfig, RedshiftSourceConfig,
    SnowflakeSourceConfig, SourceConfig, SqliteSourceConfig,
};
use ebb_shared::value::Value;
use ebb_tests::fakesnow::FakeSnow;
use ebb_tests::services::{fresh_mysql_database, fresh_postgres_database, TestDatabase, TestMysqlDatabase};
use ebb_tests::source_contract::{closed_address, Expected, Kind, SourceUnderTest};
use ebb_tests::source_contract_suite;
use ebb_worker::sources::bigquery::fake::{service_account_key, test_private_key, FakeBigquery};
use ebb_worker::sources::databricks::fake::{self as databricks_fake, FakeDatabricks};
use sqlx::{Connection, Executor};

#[global_allocator]
static ALLOCATOR: ebb_tests::memory::Counting = ebb_tests::memory::Counting;

const PASSWORD: &str = "contract-secret-password";

// ---- PostgreSQL, and Redshift's cursor path on it ----

const POSTGRES_KINDS: &str = "CREATE TABLE contract_kinds (id BIGINT PRIMARY KEY, small INT, ratio DOUBLE PRECISION, \
     price NUMERIC(20,4), flag BOOLEAN, notes TEXT, born DATE, seen TIMESTAMP(3), stamped TIMESTAMPTZ, doc JSONB, raw BYTEA); \
     INSERT INTO contract_kinds VALUES (1, -7, 0.25, 12345678.1234, TRUE, E'Zoë\\nline\\tbreak \\\\ end', '2024-02-29', \
     '2024-03-10 02:30:00.125', '2024-06-01 17:00:00+05', '{\"a\": [1, 2]}', '\\x00ff10'), \
     (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)";

fn postgres_rows(n: u64) -> String {
    format!(
        "SELECT g AS id, 'person' || g || '@example.com' AS email, (g % 1000) * 0.5 AS score, \
         TIMESTAMP '2024-01-01' + g * INTERVAL '1 second' AS seen FROM generate_series(1, {n}) g"
    )
}

/// What `contract_kinds` reads as through a source with PostgreSQL beneath,
/// which writes a timestamp without zone as `seen` and one with zone as
/// `stamped`.
fn postgres_engine_expectations(seen: &str, stamped: &str) -> Vec<Expected> {
    use Kind::*;
    let reads = |kind, column, value| Expected::Reads { kind, column, value };
    vec![
        reads(Integer, "small", Value::Int(-7)),
        reads(Float, "ratio", Value::Float(0.25)),
        reads(Decimal, "price", Value::Decimal("12345678.1234".into())),
        reads(Boolean, "flag", Value::Bool(true)),
        reads(Text, "notes", Value::Text("Zoë\nline\tbreak \\ end".into())),
        reads(Date, "born", Value::Timestamp("2024-02-29".into())),
        reads(TimestampWithoutZone, "seen", Value::Timestamp(seen.into())),
        reads(TimestampWithZone, "stamped", Value::Timestamp(stamped.into())),
        reads(Json, "doc", Value::Json(serde_json::json!({"a": [1, 2]}))),
        reads(Binary, "raw", Value::Bytes(vec![0x00, 0xff, 0x10])),
    ]
}

/// PostgreSQL's text: written at +05:00, read in UTC whatever the server's zone.
fn postgres_expectations() -> Vec<Expected> {
    postgres_engine_expectations("2024-03-10 02:30:00.125", "2024-06-01 12:00:00+00")
}

struct Postgres {
    database: TestDatabase,
}

impl Postgres {
    async fn create() -> Postgres {
        let database = fresh_postgres_database("source_contract").await;
        let mut connection = sqlx::PgConnection::connect(&database.url).await.unwrap();
        connection.execute(POSTGRES_KINDS).await.unwrap();
        connection
            .execute(format!("CREATE TABLE contract_people AS {}", postgres_rows(100)).as_str())
            .await
            .unwrap();
        Postgres { database }
    }

    async fn other_sessions(&self) -> bool {
        let mut connection = sqlx::PgConnection::connect(&self.database.url).await.unwrap();
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_one(&mut connection)
        .await
        .unwrap();
        count > 0
    }

    fn unreachable_url() -> String {
        format!("postgres://ebb:{PASSWORD}@{}/nothing", closed_address())
    }
}

impl SourceUnderTest for Postgres {
    async fn start() -> Self {
        Postgres::create().await
    }
    fn source(&self) -> SourceConfig {
        SourceConfig::Postgres(PostgresSourceConfig {
            url: self.database.url.clone(),
        })
    }
    fn unreachable(&self) -> (SourceConfig, Option<&'static str>) {
        let url = Postgres::unreachable_url();
        (SourceConfig::Postgres(PostgresSourceConfig { url }), Some(PASSWORD))
    }
    fn expected_kinds(&self) -> Vec<Expected> {
        postgres_expectations()
    }
    fn rows_query(&self, n: u64) -> String {
        postgres_rows(n)
    }
    fn endless_query(&self) -> Result<String, &'static str> {
        // A set-returning function in the select list streams its rows (one
        // in FROM would be materialised first).
        Ok("SELECT generate_series(1, 1000000000) AS id".into())
    }
    fn people_table(&self) -> String {
        "public.contract_people".into()
    }
    async fn still_reading(&self) -> bool {
        self.other_sessions().await
    }
}

/// Redshift has no `COPY … TO STDOUT`: the source reads through a cursor,
/// here with small fetches so a million rows take a hundred of them.
struct Redshift(Postgres);

impl SourceUnderTest for Redshift {
    async fn start() -> Self {
        Redshift(Postgres::create().await)
    }
    fn source(&self) -> SourceConfig {
        SourceConfig::Redshift(RedshiftSourceConfig {
            url: self.0.database.url.clone(),
            fetch_rows: Some(10_000),
        })
    }
    fn unreachable(&self) -> (SourceConfig, Option<&'static str>) {
        let url = Postgres::unreachable_url();
        (
            SourceConfig::Redshift(RedshiftSourceConfig { url, fetch_rows: None }),
            Some(PASSWORD),
        )
    }
    fn expected_kinds(&self) -> Vec<Expected> {
        postgres_expectations()
    }
    fn rows_query(&self, n: u64) -> String {
        postgres_rows(n)
    }
    fn endless_query(&self) -> Result<String, &'static str> {
        self.0.endless_query()
    }
    fn people_table(&self) -> String {
        self.0.people_table()
    }
    async fn still_reading(&self) -> bool {
        self.0.other_sessions().await
    }
}

source_contract_suite!(postgres, Postgres);
source_contract_suite!(redshift, Redshift);

/// BigQuery's REST contract served on loopback with PostgreSQL beneath
/// (`ebb_worker::sources::bigquery::fake`): the service-account grant, jobs
/// that finish after a poll, pages of 10,000 rows, BigQuery's cell encoding.
struct Bigquery {
    postgres: Postgres,
    fake: FakeBigquery,
    key: String,
}

impl SourceUnderTest for Bigquery {
    async fn start() -> Self {
        let postgres = Postgres::create().await;
        let (fake, key) = FakeBigquery::start(&postgres.database.url).await;
        Bigquery { postgres, fake, key }
    }
    fn source(&self) -> SourceConfig {
        SourceConfig::Bigquery(BigquerySourceConfig {
            project: "ebb-test".into(),
            credentials_json: Some(self.key.clone()),
            credentials_file: None,
            location: Some("US".into()),
            dataset: None,
            // The fake serves from this process, so its own buffers of a page
            // count in the memory test too: pages of 2,000 rows keep that
            // test about the source (which holds two pages at most).
            page_rows: Some(2_000),
            query_timeout: None,
            endpoint: Some(self.fake.url.clone()),
        })
    }
    fn unreachable(&self) -> (SourceConfig, Option<&'static str>) {
        let closed = format!("http://{}", closed_address());
        let key = service_account_key(
            "nobody@ebb-test.iam.gserviceaccount.com",
            &test_private_key(),
            &format!("{closed}/token"),
        );
        let SourceConfig::Bigquery(config) = self.source() else {
            unreachable!()
        };
        (
            SourceConfig::Bigquery(BigquerySourceConfig {
                credentials_json: Some(key),
                endpoint: Some(closed),
                ..config
            }),
            Some("BEGIN PRIVATE KEY"),
        )
    }
    fn expected_kinds(&self) -> Vec<Expected> {
        postgres_engine_expectations("2024-03-10T02:30:00.125", "2024-06-01T12:00:00.000000Z")
    }
    fn rows_query(&self, n: u64) -> String {
        postgres_rows(n)
    }
    fn endless_query(&self) -> Result<String, &'static str> {
        self.postgres.endless_query()
    }
    fn people_table(&self) -> String {
        self.postgres.people_table()
    }
    /// The fake reads the job's rows over a PostgreSQL session of its own
    /// until the job ends or is cancelled.
    async fn still_reading(&self) -> bool {
        self.postgres.other_sessions().await
    }
}

source_contract_suite!(bigquery, Bigquery);

/// Databricks' Statement Execution API served on loopback with PostgreSQL
/// beneath (`ebb_worker::sources::databricks::fake`): statements polled until
/// they succeed, results in chunks of 20,000 rows behind presigned links (the
/// fake serves from this process, so its chunks count in the memory test).
struct Databricks {
    postgres: Postgres,
    fake: FakeDatabricks,
}

impl SourceUnderTest for Databricks {
    async fn start() -> Self {
        let postgres = Postgres::create().await;
        let fake = FakeDatabricks::start(&postgres.database.url, 20_000).await;
        Databricks { postgres, fake }
    }
    fn source(&self) -> SourceConfig {
        SourceConfig::Databricks(DatabricksSourceConfig {
            host: self.fake.url.clone(),
            warehouse_id: databricks_fake::WAREHOUSE.into(),
            token: Some(databricks_fake::TOKEN.into()),
            client_id: None,
            client_secret: None,
            catalog: Some("main".into()),
            schema: None,
            query_timeout: None,
            chunk_downloads: None,
        })
    }
    fn unreachable(&self) -> (SourceConfig, Option<&'static str>) {
        let SourceConfig::Databricks(config) = self.source() else {
            unreachable!()
        };
        (
            SourceConfig::Databricks(DatabricksSourceConfig {
                host: format!("http://{}", closed_address()),
                ..config
            }),
            Some(databricks_fake::TOKEN),
        )
    }
    fn expected_kinds(&self) -> Vec<Expected> {
        postgres_engine_expectations("2024-03-10T02:30:00.125", "2024-06-01T12:00:00Z")
    }
    fn rows_query(&self, n: u64) -> String {
        postgres_rows(n)
    }
    fn endless_query(&self) -> Result<String, &'static str> {
        Err(
            "a warehouse runs a statement whole before it serves a row: a read stopped while it runs cancels it, \
             which tests/tests/databricks_source.rs checks",
        )
    }
    fn people_table(&self) -> String {
        self.postgres.people_table()
    }
    async fn still_reading(&self) -> bool {
        self.postgres.other_sessions().await
    }
}

source_contract_suite!(databricks, Databricks);

// ---- MariaDB ----

struct Mariadb {
    database: TestMysqlDatabase,
}

fn mysql_rows(n: u64) -> String {
    format!(
        "SELECT seq AS id, CONCAT('person', seq, '@example.com') AS email, (seq % 1000) * 0.5 AS score, \
         TIMESTAMP '2024-01-01 00:00:00' + INTERVAL seq SECOND AS seen FROM seq_1_to_{n}"
    )
}

impl SourceUnderTest for Mariadb {
    async fn start() -> Self {
        let database = fresh_mysql_database("source_contract").await;
        let mut connection = sqlx::MySqlConnection::connect(&database.url).await.unwrap();
        connection
            .execute(
                "CREATE TABLE contract_kinds (id BIGINT PRIMARY KEY, small SMALLINT, ratio DOUBLE, price DECIMAL(20,4), \
                 flag BOOLEAN, notes TEXT, born DATE, seen DATETIME(3), stamped TIMESTAMP NULL, doc JSON, raw VARBINARY(8))",
            )
            .await
            .unwrap();
        connection.execute("SET time_zone = '+05:00'").await.unwrap();
        connection
            .execute(
                "INSERT INTO contract_kinds VALUES (1, -7, 0.25, 12345678.1234, TRUE, 'Zoë\\nline\\tbreak \\\\ end', \
                 '2024-02-29', '2024-03-10 02:30:00.125', '2024-06-01 17:00:00', '{\"a\": [1, 2]}', X'00ff10'), \
                 (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
            )
            .await
            .unwrap();
        connection
            .execute(format!("CREATE TABLE contract_people AS {}", mysql_rows(100)).as_str())
            .await
            .unwrap();
        Mariadb { database }
    }
    fn source(&self) -> SourceConfig {
        SourceConfig::Mysql(MysqlSourceConfig {
            url: self.database.url.clone(),
        })
    }
    fn unreachable(&self) -> (SourceConfig, Option<&'static str>) {
        let url = format!("mysql://ebb:{PASSWORD}@{}/nothing", closed_address());
        (SourceConfig::Mysql(MysqlSourceConfig { url }), Some(PASSWORD))
    }
    fn expected_kinds(&self) -> Vec<Expected> {
        use Kind::*;
        let reads = |kind, column, value| Expected::Reads { kind, column, value };
        vec![
            reads(Integer, "small", Value::Int(-7)),
            reads(Float, "ratio", Value::Float(0.25)),
            reads(Decimal, "price", Value::Decimal("12345678.1234".into())),
            reads(Boolean, "flag", Value::Bool(true)),
            reads(Text, "notes", Value::Text("Zoë\nline\tbreak \\ end".into())),
            reads(Date, "born", Value::Timestamp("2024-02-29".into())),
            reads(
                TimestampWithoutZone,
                "seen",
                Value::Timestamp("2024-03-10 02:30:00.125".into()),
            ),
            reads(
                TimestampWithZone,
                "stamped",
                Value::Timestamp("2024-06-01 12:00:00+00:00".into()),
            ),
            // MariaDB's JSON is text in a binary collation, which the protocol
            // marks as it marks a BLOB: its text, since its bytes are UTF-8.
            reads(Json, "doc", Value::Text("{\"a\": [1, 2]}".into())),
            reads(Binary, "raw", Value::Bytes(vec![0x00, 0xff, 0x10])),
        ]
    }
    fn rows_query(&self, n: u64) -> String {
        mysql_rows(n)
    }
    fn endless_query(&self) -> Result<String, &'static str> {
        Ok("SELECT seq AS id, SLEEP(0.0001) AS pause FROM seq_1_to_100000000".into())
    }
    fn people_table(&self) -> String {
        format!("{}.contract_people", self.database.name)
    }
    async fn still_reading(&self) -> bool {
        let mut connection = sqlx::MySqlConnection::connect(&self.database.url).await.unwrap();
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM information_schema.processlist WHERE db = DATABASE() AND id <> CONNECTION_ID()",
        )
        .fetch_one(&mut connection)
        .await
        .unwrap();
        count > 0
    }
}

source_contract_suite!(mariadb, Mariadb);

// ---- SQLite ----

struct Sqlite {
    dir: tempfile::TempDir,
}

impl Sqlite {
    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("contract.db")
    }
}

fn sqlite_rows(n: u64) -> String {
    format!(
        "WITH RECURSIVE g(id) AS (SELECT 1 UNION ALL SELECT id + 1 FROM g WHERE id < {n}) \
         SELECT id, 'person' || id || '@example.com' AS email, (id % 1000) * 0.5 AS score, \
         datetime('2024-01-01', '+' || id || ' seconds') AS seen FROM g"
    )
}

impl SourceUnderTest for Sqlite {
    async fn start() -> Self {
        let under_test = Sqlite {
            dir: tempfile::tempdir().unwrap(),
        };
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(under_test.path())
            .create_if_missing(true);
        let mut connection = sqlx::SqliteConnection::connect_with(&options).await.unwrap();
        connection
            .execute(
                "CREATE TABLE contract_kinds (id INTEGER PRIMARY KEY, small INTEGER, ratio REAL, notes TEXT, raw BLOB); \
                 INSERT INTO contract_kinds VALUES (1, -7, 0.25, 'Zoë' || char(10) || 'line' || char(9) || 'break \\ end', X'00ff10'), \
                 (2, NULL, NULL, NULL, NULL)",
            )
            .await
            .unwrap();
        connection
            .execute(format!("CREATE TABLE contract_people AS {}", sqlite_rows(100)).as_str())
            .await
            .unwrap();
        under_test
    }
    fn source(&self) -> SourceConfig {
        SourceConfig::Sqlite(SqliteSourceConfig { path: self.path() })
    }
    fn unreachable(&self) -> (SourceConfig, Option<&'static str>) {
        let path = self.dir.path().join("missing.db");
        (SourceConfig::Sqlite(SqliteSourceConfig { path }), None)
    }
    fn expected_kinds(&self) -> Vec<Expected> {
        use Kind::*;
        let reads = |kind, column, value| Expected::Reads { kind, column, value };
        let not_held = |kind, why| Expected::NotHeld { kind, why };
        const STORAGE_CLASSES: &str =
            "SQLite stores values as integer, real, text or blob whatever the column's declared type";
        vec![
            reads(Integer, "small", Value::Int(-7)),
            reads(Float, "ratio", Value::Float(0.25)),
            not_held(Decimal, STORAGE_CLASSES),
            not_held(Boolean, STORAGE_CLASSES),
            reads(Text, "notes", Value::Text("Zoë\nline\tbreak \\ end".into())),
            not_held(Date, STORAGE_CLASSES),
            not_held(TimestampWithoutZone, STORAGE_CLASSES),
            not_held(TimestampWithZone, STORAGE_CLASSES),
            not_held(Json, STORAGE_CLASSES),
            reads(Binary, "raw", Value::Bytes(vec![0x00, 0xff, 0x10])),
        ]
    }
    fn rows_query(&self, n: u64) -> String {
        sqlite_rows(n)
    }
    fn endless_query(&self) -> Result<String, &'static str> {
        // Reads a table all along, so the reader holds the file's shared lock.
        Ok("WITH RECURSIVE g(id) AS (SELECT 1 UNION ALL SELECT id + 1 FROM g) \
            SELECT g.id, p.email FROM g JOIN contract_people p ON p.id = g.id % 100 + 1"
            .into())
    }
    fn people_table(&self) -> String {
        "main.contract_people".into()
    }
    /// A reader holds a shared lock on the file: a writer cannot take it
    /// whole until the read has stopped.
    async fn still_reading(&self) -> bool {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(self.path())
            .busy_timeout(std::time::Duration::ZERO);
        let mut connection = sqlx::SqliteConnection::connect_with(&options).await.unwrap();
        match connection.execute("BEGIN EXCLUSIVE").await {
            Ok(_) => {
                connection.execute("ROLLBACK").await.unwrap();
                false
            }
            Err(_) => true,
        }
    }
}

source_contract_suite!(sqlite, Sqlite);

// ---- Snowflake, on fakesnow ----

/// Snowflake's REST protocol served by fakesnow (PyPI; DuckDB beneath), each
/// test in a database of its own.
struct Snowflake {
    fake: FakeSnow,
    database: String,
}

fn snowflake_rows(n: u64) -> String {
    format!(
        "SELECT id AS \"id\", 'person' || id || '@example.com' AS \"email\", (id % 1000) * 0.5 AS \"score\", \
         DATEADD(second, id, '2024-01-01'::TIMESTAMP_NTZ) AS \"seen\" \
         FROM (SELECT seq4() + 1 AS id FROM TABLE(GENERATOR(ROWCOUNT => {n})))"
    )
}

impl SourceUnderTest for Snowflake {
    async fn start() -> Self {
        let fake = FakeSnow::start().await;
        let database = format!("CONTRACT_{}", rand::random::<u32>());
        fake.execute(
            &database,
            "PUBLIC",
            &[
                "CREATE TABLE contract_kinds (id NUMBER PRIMARY KEY, small INTEGER, ratio FLOAT, price NUMBER(20,4), \
                 flag BOOLEAN, notes TEXT, born DATE, seen TIMESTAMP_NTZ(3), stamped TIMESTAMP_TZ, doc VARIANT, raw BINARY)",
                "INSERT INTO contract_kinds SELECT 1, -7, 0.25, 12345678.1234, TRUE, \
                 'Zoë' || CHR(10) || 'line' || CHR(9) || 'break \\\\ end', '2024-02-29'::DATE, \
                 '2024-03-10 02:30:00.125'::TIMESTAMP_NTZ, '2024-06-01 17:00:00 +05:00'::TIMESTAMP_TZ, \
                 PARSE_JSON('{\"a\": [1, 2]}'), TO_BINARY('00FF10', 'HEX') \
                 UNION ALL SELECT 2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL",
                &format!("CREATE TABLE contract_people AS {}", snowflake_rows(100)),
            ],
        )
        .await;
        Snowflake { fake, database }
    }
    fn source(&self) -> SourceConfig {
        SourceConfig::Snowflake(SnowflakeSourceConfig {
            account: "ebb-contract".into(),
            user: "EBB_READER".into(),
            password: Some(PASSWORD.into()),
            private_key: None,
            private_key_file: None,
            warehouse: Some("COMPUTE_WH".into()),
            role: Some("EBB_READER".into()),
            database: Some(self.database.clone()),
            schema: Some("PUBLIC".into()),
            query_timeout: None,
            chunk_downloads: None,
            endpoint: Some(self.fake.url.clone()),
        })
    }
    fn unreachable(&self) -> (SourceConfig, Option<&'static str>) {
        let SourceConfig::Snowflake(config) = self.source() else {
            unreachable!()
        };
        (
            SourceConfig::Snowflake(SnowflakeSourceConfig {
                endpoint: Some(format!("http://{}", closed_address())),
                ..config
            }),
            Some(PASSWORD),
        )
    }
    fn expected_kinds(&self) -> Vec<Expected> {
        use Kind::*;
        let reads = |kind, column, value| Expected::Reads { kind, column, value };
        vec![
            reads(Integer, "SMALL", Value::Int(-7)),
            reads(Float, "RATIO", Value::Float(0.25)),
            reads(Decimal, "PRICE", Value::Decimal("12345678.1234".into())),
            reads(Boolean, "FLAG", Value::Bool(true)),
            reads(Text, "NOTES", Value::Text("Zoë\nline\tbreak \\ end".into())),
            reads(Date, "BORN", Value::Timestamp("2024-02-29".into())),
            reads(
                TimestampWithoutZone,
                "SEEN",
                Value::Timestamp("2024-03-10T02:30:00.125000000".into()),
            ),
            // fakesnow keeps the instant and drops the offset (it says UTC).
            reads(
                TimestampWithZone,
                "STAMPED",
                Value::Timestamp("2024-06-01T12:00:00.000000000Z".into()),
            ),
            reads(Json, "DOC", Value::Json(serde_json::json!({"a": [1, 2]}))),
            reads(Binary, "RAW", Value::Bytes(vec![0x00, 0xff, 0x10])),
        ]
    }
    fn rows_query(&self, n: u64) -> String {
        snowflake_rows(n)
    }
    fn endless_query(&self) -> Result<String, &'static str> {
        Err(
            "fakesnow runs a query whole before it answers, and sends every row in that answer: \
             no query is left running to stop",
        )
    }
    fn streaming_budget(&self) -> (usize, &'static str) {
        (
            128 << 20,
            "fakesnow sends the whole result inline in its first answer, ~87 MiB for these rows (Snowflake sends \
             all but the first part in chunks): the answer's bytes are held once, its rows still stream",
        )
    }
    fn people_table(&self) -> String {
        "PUBLIC.CONTRACT_PEOPLE".into()
    }
    async fn still_reading(&self) -> bool {
        false
    }
}

source_contract_suite!(snowflake, Snowflake);
