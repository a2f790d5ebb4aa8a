//! The source contract: what every database source must do, whatever it
//! reads. Each source implements `SourceUnderTest` against its real server
//! (or a server implementing its vendor's documented protocol) and runs the
//! whole suite with `source_contract_suite!`:
//!
//! - every kind of value (integers, floats, decimals, booleans, text, dates,
//!   timestamps with and without zone, JSON, binary) reads as its typed value
//!   and NULL as null, the same on every read (fingerprints depend on it);
//! - a million rows stream through in bounded memory;
//! - a broken query is named, and permanent; an unreachable source is named,
//!   retriable, and shows no password;
//! - an abandoned read stops on the server;
//! - a table model reads its columns and filter; a preview asks for no more
//!   than its limit; `ebb source test` tells a reachable source from one that
//!   is not.
//!
//! A test binary running the suite installs `memory::Counting` as its
//! allocator; its tests take turns with the memory test, which must be alone
//! to measure.

use crate::memory;
use ebb_shared::config::{ModelConfig, SourceConfig};
use ebb_shared::value::Value;
use ebb_worker::error::TaskError;
use ebb_worker::sources::{self, RowStream};
use std::time::{Duration, Instant};

/// The kinds of value every source is checked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Integer,
    Float,
    Decimal,
    Boolean,
    Text,
    Date,
    TimestampWithoutZone,
    TimestampWithZone,
    Json,
    Binary,
}

pub const EVERY_KIND: [Kind; 10] = [
    Kind::Integer,
    Kind::Float,
    Kind::Decimal,
    Kind::Boolean,
    Kind::Text,
    Kind::Date,
    Kind::TimestampWithoutZone,
    Kind::TimestampWithZone,
    Kind::Json,
    Kind::Binary,
];

/// What a source reads for one kind: a column of `contract_kinds` and the
/// value its row 1 must read as, or why the source has no such type.
#[derive(Debug, Clone)]
pub enum Expected {
    Reads {
        kind: Kind,
        column: &'static str,
        value: Value,
    },
    NotHeld {
        kind: Kind,
        why: &'static str,
    },
}

impl Expected {
    fn kind(&self) -> Kind {
        match self {
            Expected::Reads { kind, .. } | Expected::NotHeld { kind, .. } => *kind,
        }
    }
}

/// A source under test, on a database of its own made by `start`.
///
/// `start` creates two tables: `contract_kinds` (an `id` column, one column
/// per kind; row 1 holds a value of each, row 2 nulls but its id) and
/// `contract_people` (the first 100 rows of `rows_query`).
// Used only by test binaries, through static dispatch: no `Send` bound needed.
#[allow(async_fn_in_trait)]
pub trait SourceUnderTest: Sized {
    async fn start() -> Self;
    fn source(&self) -> SourceConfig;
    /// The same source with nothing listening where it points (or its file
    /// missing), and the password its settings carry, if any.
    fn unreachable(&self) -> (SourceConfig, Option<&'static str>);
    fn expected_kinds(&self) -> Vec<Expected>;
    /// `n` rows with ids 1..=n: `id`, `email`, `score`, `seen`.
    fn rows_query(&self, n: u64) -> String;
    /// A query that would read for minutes; or why the server under test
    /// cannot hold one open (it answers only once it has run a query whole).
    fn endless_query(&self) -> Result<String, &'static str>;
    /// Live heap growth allowed while a million rows stream through, and
    /// why when it is not `STREAMING_BUDGET`.
    fn streaming_budget(&self) -> (usize, &'static str) {
        (STREAMING_BUDGET, "rows stream through a few batches at a time")
    }
    /// `contract_people`, qualified as a table model names it.
    fn people_table(&self) -> String;
    /// Whether any other session still reads this test's database.
    async fn still_reading(&self) -> bool;
}

/// Contract tests share the binary with the memory test, which must run alone.
static TURNS: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

fn model(query: &str) -> ModelConfig {
    ModelConfig::query("contract", query, "id")
}

async fn open(source: &SourceConfig, model: &ModelConfig) -> Result<RowStream, TaskError> {
    sources::open("contract", source, "contract_model", model).await
}

/// Every row of a model, with its columns as (name, source type).
async fn read_all(
    source: &SourceConfig,
    model: &ModelConfig,
) -> Result<(Vec<(String, String)>, Vec<Vec<Value>>), TaskError> {
    let mut stream = open(source, model).await?;
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

pub async fn every_kind_reads_as_its_typed_value<S: SourceUnderTest>() {
    let _turn = TURNS.read().await;
    let under_test = S::start().await;
    let expected = under_test.expected_kinds();
    for kind in EVERY_KIND {
        assert!(
            expected.iter().any(|e| e.kind() == kind),
            "the source's expectations say nothing of {kind:?}: read it, or say why the source cannot hold it"
        );
    }
    let query = model("SELECT * FROM contract_kinds ORDER BY id");
    let (columns, rows) = read_all(&under_test.source(), &query)
        .await
        .expect("contract_kinds reads");
    assert_eq!(rows.len(), 2, "{rows:?}");
    for expectation in &expected {
        let Expected::Reads { kind, column, value } = expectation else {
            continue;
        };
        let index = columns
            .iter()
            .position(|(name, _)| name == column)
            .unwrap_or_else(|| panic!("contract_kinds has no column {column:?}: {columns:?}"));
        assert_eq!(&rows[0][index], value, "{kind:?} column {:?}", columns[index]);
        assert_eq!(rows[1][index], Value::Null, "{kind:?}: NULL reads as null");
    }
    // A second read is the same to the type: fingerprints depend on it.
    let again = read_all(&under_test.source(), &query).await.expect("a second read");
    assert_eq!(again, (columns, rows), "a second read differs");
}

/// Live heap growth allowed while a million rows stream through: buffering
/// them would take hundreds of megabytes.
pub const STREAMING_BUDGET: usize = 48 << 20;

pub async fn a_million_rows_stream_in_bounded_memory<S: SourceUnderTest>() {
    let _alone = TURNS.write().await;
    let under_test = S::start().await;
    const ROWS: u64 = 1_000_000;
    let query = model(&under_test.rows_query(ROWS));
    let source = under_test.source();
    let ((count, id_sum), growth) = memory::peak_growth(async {
        let mut stream = open(&source, &query).await.expect("the rows query opens");
        let (mut count, mut id_sum) = (0u64, 0i128);
        while let Some(batch) = stream.next_batch().await {
            for row in batch.expect("a batch") {
                count += 1;
                id_sum += match &row[0] {
                    Value::Int(id) => i128::from(*id),
                    Value::Decimal(id) | Value::Text(id) => id.parse::<i128>().expect("a numeric id"),
                    other => panic!("id {other:?}"),
                };
            }
        }
        (count, id_sum)
    })
    .await;
    eprintln!("{ROWS} rows read; the heap grew by at most {} KiB", growth >> 10);
    assert_eq!(count, ROWS, "every row read once");
    assert_eq!(
        id_sum,
        i128::from(ROWS) * i128::from(ROWS + 1) / 2,
        "ids 1..=n, each once"
    );
    let (budget, why) = under_test.streaming_budget();
    assert!(
        growth < budget,
        "reading {ROWS} rows grew the heap by {} MiB (budget {} MiB: {why}): the source buffers its result",
        growth >> 20,
        budget >> 20
    );
}

pub async fn a_broken_query_is_named_and_permanent<S: SourceUnderTest>() {
    let _turn = TURNS.read().await;
    let under_test = S::start().await;
    let error = read_all(
        &under_test.source(),
        &model("SELECT id, nope FROM missing_contract_table"),
    )
    .await
    .expect_err("a query over a missing table fails");
    let text = error.to_string();
    assert!(matches!(error, TaskError::Query { .. }), "{text}");
    // Snowflake names an unquoted table in upper case.
    assert!(
        text.to_lowercase().contains("missing_contract_table") && text.contains("contract_model"),
        "names the model and what is wrong: {text}"
    );
    assert!(!error.is_retriable(), "the model's to fix, not worth a retry: {text}");
}

pub async fn an_unreachable_source_is_named_and_retriable<S: SourceUnderTest>() {
    let _turn = TURNS.read().await;
    let under_test = S::start().await;
    let (unreachable, password) = under_test.unreachable();
    let started = Instant::now();
    let error = read_all(&unreachable, &model("SELECT 1 AS id"))
        .await
        .expect_err("nothing there");
    let text = error.to_string();
    assert!(
        matches!(error, TaskError::SourceUnreachable { .. }) && text.contains("\"contract\""),
        "names the source: {text}"
    );
    assert!(error.is_retriable(), "may come back: {text}");
    if let Some(password) = password {
        assert!(!text.contains(password), "the password shows: {text}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    let tested = sources::test("contract", &unreachable).await;
    assert!(matches!(tested, Err(TaskError::SourceUnreachable { .. })), "{tested:?}");
    sources::test("contract", &under_test.source())
        .await
        .expect("the source itself is reachable");
}

pub async fn an_abandoned_read_stops_on_the_server<S: SourceUnderTest>() {
    let _turn = TURNS.read().await;
    let under_test = S::start().await;
    let endless = match under_test.endless_query() {
        Ok(query) => query,
        Err(why) => {
            assert!(!why.trim().is_empty(), "a server without a query to stop says why");
            eprintln!("no query to stop on this server: {why}");
            return;
        }
    };
    let mut stream = open(&under_test.source(), &model(&endless))
        .await
        .expect("the endless query opens");
    let first = stream.next_batch().await.expect("a batch").expect("rows");
    assert!(!first.is_empty());
    assert!(under_test.still_reading().await, "the read is under way");
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(30);
    while under_test.still_reading().await {
        assert!(
            Instant::now() < deadline,
            "30 s after the reader went away, the source still reads"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn a_table_model_reads_its_columns_and_filter<S: SourceUnderTest>() {
    let _turn = TURNS.read().await;
    let under_test = S::start().await;
    let table = ModelConfig {
        query: None,
        table: Some(under_test.people_table()),
        columns: vec!["id".into(), "email".into()],
        filter: Some("id <= 10".into()),
        ..model("")
    };
    let (columns, rows) = read_all(&under_test.source(), &table)
        .await
        .expect("the table model reads");
    let names: Vec<&str> = columns.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["id", "email"]);
    assert_eq!(rows.len(), 10, "the filter keeps ids 1..=10: {rows:?}");
    let whole = ModelConfig {
        columns: Vec::new(),
        filter: None,
        ..table
    };
    let (columns, rows) = read_all(&under_test.source(), &whole)
        .await
        .expect("the whole table reads");
    assert_eq!(columns.len(), 4, "every column: {columns:?}");
    assert_eq!(rows.len(), 100);
}

pub async fn a_preview_reads_no_more_than_its_limit<S: SourceUnderTest>() {
    let _turn = TURNS.read().await;
    let under_test = S::start().await;
    let query = model(&under_test.rows_query(1_000_000));
    let started = Instant::now();
    let preview = sources::preview("contract", &under_test.source(), "contract_model", &query, 5)
        .await
        .expect("a preview");
    assert_eq!(preview.rows.len(), 5);
    let names: Vec<&str> = preview.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["id", "email", "score", "seen"]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a 5-row preview of a million-row model took {:?}",
        started.elapsed()
    );
    let json = preview.to_json();
    assert_eq!(json["rows"].as_array().map(Vec::len), Some(5), "{json}");
    assert!(json["rows"][0].get("email").is_some(), "{json}");
}

/// Runs the whole source contract for one source, as a module of tests.
#[macro_export]
macro_rules! source_contract_suite {
    ($module:ident, $source:ty) => {
        mod $module {
            use super::*;
            use $crate::source_contract as contract;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn every_kind_reads_as_its_typed_value() {
                contract::every_kind_reads_as_its_typed_value::<$source>().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_million_rows_stream_in_bounded_memory() {
                contract::a_million_rows_stream_in_bounded_memory::<$source>().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_broken_query_is_named_and_permanent() {
                contract::a_broken_query_is_named_and_permanent::<$source>().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn an_unreachable_source_is_named_and_retriable() {
                contract::an_unreachable_source_is_named_and_retriable::<$source>().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn an_abandoned_read_stops_on_the_server() {
                contract::an_abandoned_read_stops_on_the_server::<$source>().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_table_model_reads_its_columns_and_filter() {
                contract::a_table_model_reads_its_columns_and_filter::<$source>().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_preview_reads_no_more_than_its_limit() {
                contract::a_preview_reads_no_more_than_its_limit::<$source>().await;
            }
        }
    };
}

/// An address where nothing listens.
pub fn closed_address() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("its address")
}
