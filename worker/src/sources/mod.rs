//! Sources stream a model's rows in batches, never loading the result in memory.
//! Each source runs its reader on its own task and hands batches over a bounded
//! channel, so reading overlaps with hashing and uploading.

pub mod bigquery;
mod csv;
pub mod databricks;
mod files;
mod mysql;
mod postgres;
mod redshift;
mod snowflake;
mod sqlite;

use crate::error::TaskError;
use ebb_shared::config::{ModelConfig, SourceConfig};
use ebb_shared::value::{Column, Value};
use tokio::sync::mpsc;

/// Rows per batch handed from a source reader to extraction.
pub const BATCH_ROWS: usize = 2048;

pub type Row = Vec<Value>;

/// A batch as a source hands it over: rows, or bytes still to be parsed into
/// rows. A source whose parsing costs real CPU defers it, so extraction can
/// parse on its mapping threads, in parallel, instead of on the reader.
pub enum Batch {
    Rows(Vec<Row>),
    Unparsed(Box<dyn FnOnce() -> Result<Vec<Row>, TaskError> + Send>),
}

impl Batch {
    pub fn into_rows(self) -> Result<Vec<Row>, TaskError> {
        match self {
            Batch::Rows(rows) => Ok(rows),
            Batch::Unparsed(parse) => parse(),
        }
    }
}

impl From<Vec<Row>> for Batch {
    fn from(rows: Vec<Row>) -> Self {
        Batch::Rows(rows)
    }
}

pub struct RowStream {
    pub columns: Vec<Column>,
    batches: mpsc::Receiver<Result<Batch, TaskError>>,
}

impl RowStream {
    fn channel(columns: Vec<Column>) -> (mpsc::Sender<Result<Batch, TaskError>>, RowStream) {
        let (sender, batches) = mpsc::channel(4);
        (sender, RowStream { columns, batches })
    }

    /// The next batch of rows; `None` at the end of the result.
    pub async fn next_batch(&mut self) -> Option<Result<Vec<Row>, TaskError>> {
        self.next_unparsed().await.map(|batch| batch?.into_rows())
    }

    /// The next batch, possibly still to be parsed (`Batch::into_rows`).
    pub async fn next_unparsed(&mut self) -> Option<Result<Batch, TaskError>> {
        self.batches.recv().await
    }
}

/// Starts reading a model's result.
pub async fn open(
    source_name: &str,
    source: &SourceConfig,
    model_name: &str,
    model: &ModelConfig,
) -> Result<RowStream, TaskError> {
    match source {
        SourceConfig::Postgres(config) => postgres::open(source_name, config, model_name, model).await,
        SourceConfig::Redshift(config) => redshift::open(source_name, config, model_name, model).await,
        SourceConfig::Mysql(config) => mysql::open(source_name, config, model_name, model).await,
        SourceConfig::Bigquery(config) => bigquery::open(source_name, config, model_name, model).await,
        SourceConfig::Snowflake(config) => snowflake::open(source_name, config, model_name, model).await,
        SourceConfig::Databricks(config) => databricks::open(source_name, config, model_name, model).await,
        SourceConfig::Sqlite(config) => sqlite::open(source_name, config, model_name, model).await,
        SourceConfig::Csv(config) => csv::open(source_name, config, model_name, model).await,
        SourceConfig::Files(config) => files::open(source_name, config, model_name, model).await,
    }
}

/// The columns a model's query returns, found by preparing it: no row is read.
pub async fn describe(
    source_name: &str,
    source: &SourceConfig,
    model_name: &str,
    model: &ModelConfig,
) -> Result<Vec<Column>, TaskError> {
    match source {
        SourceConfig::Postgres(config) => postgres::describe(source_name, config, model_name, model).await,
        SourceConfig::Redshift(config) => redshift::describe(source_name, config, model_name, model).await,
        SourceConfig::Mysql(config) => mysql::describe(source_name, config, model_name, model).await,
        SourceConfig::Bigquery(config) => bigquery::describe(source_name, config, model_name, model).await,
        SourceConfig::Snowflake(config) => snowflake::describe(source_name, config, model_name, model).await,
        SourceConfig::Databricks(config) => databricks::describe(source_name, config, model_name, model).await,
        SourceConfig::Sqlite(config) => sqlite::describe(source_name, config, model_name, model).await,
        SourceConfig::Csv(config) => csv::describe(source_name, config, model).await,
        SourceConfig::Files(config) => files::describe(source_name, config, model_name, model).await,
    }
}

/// Reaches a source without reading a model: a database source connects and
/// answers `SELECT 1`; a file source's directory or file exists.
pub async fn test(source_name: &str, source: &SourceConfig) -> Result<(), TaskError> {
    let probe = ModelConfig::query(source_name, "SELECT 1 AS ok", "ok");
    match source {
        SourceConfig::Csv(config) => {
            if config.path.is_dir() {
                Ok(())
            } else {
                Err(TaskError::SourceUnreachable {
                    source_name: source_name.to_string(),
                    reason: format!("the CSV directory {} does not exist", config.path.display()),
                })
            }
        }
        SourceConfig::Files(config) => ebb_shared::storage::Storage::open_existing(&config.url)
            .map(|_| ())
            .map_err(|e| TaskError::SourceUnreachable {
                source_name: source_name.to_string(),
                reason: e.to_string(),
            }),
        _ => {
            let mut stream = open(source_name, source, "(connection test)", &probe).await?;
            while let Some(batch) = stream.next_batch().await {
                batch?;
            }
            Ok(())
        }
    }
}

/// The first rows of a model as its source reads them, and its columns.
#[derive(Debug, Clone, PartialEq)]
pub struct Preview {
    pub columns: Vec<Column>,
    pub rows: Vec<Row>,
}

impl Preview {
    /// `{"columns": [{"name", "type"}], "rows": [{column: value}]}`: values
    /// as a destination would receive them.
    pub fn to_json(&self) -> serde_json::Value {
        let columns: Vec<serde_json::Value> = self
            .columns
            .iter()
            .map(|c| serde_json::json!({"name": c.name, "type": c.source_type}))
            .collect();
        let rows: Vec<serde_json::Value> = self
            .rows
            .iter()
            .map(|row| {
                let cells = self.columns.iter().zip(row).map(|(c, v)| (c.name.clone(), v.to_json()));
                serde_json::Value::Object(cells.collect())
            })
            .collect();
        serde_json::json!({"columns": columns, "rows": rows})
    }
}

/// The first `limit` rows of a model, with its columns. A SQL model is asked
/// for no more than that (`LIMIT`), so a preview of a large model is cheap
/// for the source too.
pub async fn preview(
    source_name: &str,
    source: &SourceConfig,
    model_name: &str,
    model: &ModelConfig,
    limit: usize,
) -> Result<Preview, TaskError> {
    let limited = match source {
        SourceConfig::Csv(_) | SourceConfig::Files(_) => model.clone(),
        _ => {
            let inner = model_query(model, Dialect::of(source));
            ModelConfig::query(
                &model.source,
                &format!("SELECT * FROM ({inner}) AS ebb_preview LIMIT {limit}"),
                &model.primary_key,
            )
        }
    };
    let mut stream = open(source_name, source, model_name, &limited).await?;
    let mut rows = Vec::new();
    while rows.len() < limit {
        match stream.next_batch().await {
            Some(batch) => rows.extend(batch?),
            None => break,
        }
    }
    rows.truncate(limit);
    // Dropping the stream stops the read on the source.
    Ok(Preview {
        columns: stream.columns,
        rows,
    })
}

/// How a database spells names: what a table model's query is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// PostgreSQL, Redshift, SQLite: `"name"`.
    Ansi,
    /// MySQL, MariaDB, BigQuery and Databricks: `` `name` ``.
    Backticks,
}

impl Dialect {
    pub fn of(source: &SourceConfig) -> Dialect {
        match source {
            SourceConfig::Mysql(_) | SourceConfig::Bigquery(_) | SourceConfig::Databricks(_) => Dialect::Backticks,
            _ => Dialect::Ansi,
        }
    }

    /// A name quoted exactly as written: a table model names its table and
    /// columns as the database spells them.
    pub fn quote(self, name: &str) -> String {
        match self {
            Dialect::Ansi => format!("\"{}\"", name.replace('"', "\"\"")),
            Dialect::Backticks => format!("`{}`", name.replace('`', "``")),
        }
    }
}

/// How long a database source may take to accept a connection.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// Connects to a database source within `CONNECT_TIMEOUT`. A login refused or
/// a database missing is the source's problem, not the query's.
async fn connect_within<C>(
    source_name: &str,
    model_name: &str,
    connecting: impl std::future::Future<Output = Result<C, sqlx::Error>>,
) -> Result<C, TaskError> {
    let unreachable = |reason: String| TaskError::SourceUnreachable {
        source_name: source_name.to_string(),
        reason,
    };
    tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| unreachable(format!("no answer within {CONNECT_TIMEOUT:?}")))?
        .map_err(|e| match classify_sqlx(e, source_name, model_name) {
            TaskError::Query { reason, .. } => unreachable(reason),
            other => other,
        })
}

/// A model's SQL as it is sent: a query without surrounding space or a final
/// `;`, or the `SELECT` a table model stands for.
pub fn model_query(model: &ModelConfig, dialect: Dialect) -> String {
    let trimmed = |sql: &str| sql.trim().trim_end_matches(';').trim().to_string();
    let Some(table) = &model.table else {
        return trimmed(model.query.as_deref().unwrap_or_default());
    };
    let columns = if model.columns.is_empty() {
        "*".to_string()
    } else {
        let quoted: Vec<String> = model.columns.iter().map(|c| dialect.quote(c.trim())).collect();
        quoted.join(", ")
    };
    let table: Vec<String> = table.trim().split('.').map(|part| dialect.quote(part.trim())).collect();
    let mut sql = format!("SELECT {columns} FROM {}", table.join("."));
    if let Some(filter) = model.filter.as_deref().map(trimmed).filter(|f| !f.is_empty()) {
        sql.push_str(&format!(" WHERE ({filter})"));
    }
    sql
}

/// Hands rows over in batches of `BATCH_ROWS` until the rows end, one fails
/// (its error is handed over last), or extraction stops listening.
async fn send_in_batches(
    rows: impl futures::Stream<Item = Result<Row, TaskError>>,
    sender: &mpsc::Sender<Result<Batch, TaskError>>,
) {
    use futures::StreamExt;
    let mut rows = std::pin::pin!(rows);
    let mut batch: Vec<Row> = Vec::with_capacity(BATCH_ROWS);
    while let Some(row) = rows.next().await {
        match row {
            Ok(row) => batch.push(row),
            Err(error) => {
                let _ = sender.send(Err(error)).await;
                return;
            }
        }
        if batch.len() >= BATCH_ROWS {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_ROWS));
            if sender.send(Ok(full.into())).await.is_err() {
                return;
            }
        }
    }
    if !batch.is_empty() {
        let _ = sender.send(Ok(batch.into())).await;
    }
}

/// Hex text as bytes; `None` when it is not an even run of hex digits.
fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len() / 2)
        .map(|i| u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

/// A warehouse's result chunk from its presigned URL: the URL's own headers,
/// never the session's credentials; tried 5 times, 250 ms doubling. The error
/// never shows the URL, which carries credentials.
async fn download_chunk(
    http: &reqwest::Client,
    url: &str,
    headers: &[(String, String)],
) -> Result<bytes::Bytes, String> {
    const TRIES: u32 = 5;
    let mut pause = std::time::Duration::from_millis(250);
    for tries in 1.. {
        let mut request = http.get(url);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let failure = match request.send().await {
            Ok(answer) if answer.status().is_success() => match answer.bytes().await {
                Ok(bytes) => return Ok(bytes),
                Err(e) => format!("a result chunk broke off: {}", e.without_url()),
            },
            Ok(answer) => format!("a result chunk's link answered {}", answer.status().as_u16()),
            Err(e) => format!("a result chunk's link did not answer: {}", e.without_url()),
        };
        if tries >= TRIES {
            return Err(failure);
        }
        tokio::time::sleep(pause).await;
        pause *= 2;
    }
    unreachable!("the loop returns on its last try")
}

/// The result columns of a prepared statement, with the source's type names.
fn statement_columns<'q, S: sqlx::Statement<'q>>(statement: &S) -> Vec<Column> {
    use sqlx::{Column as _, TypeInfo};
    statement
        .columns()
        .iter()
        .map(|c| Column {
            name: c.name().to_string(),
            source_type: c.type_info().name().to_string(),
        })
        .collect()
}

/// Database errors are the query's fault; everything else is the connection's.
fn classify_sqlx(error: sqlx::Error, source_name: &str, model_name: &str) -> TaskError {
    match error {
        sqlx::Error::Database(db) => TaskError::Query {
            model: model_name.to_string(),
            reason: db.message().to_string(),
        },
        sqlx::Error::ColumnNotFound(_) | sqlx::Error::TypeNotFound { .. } | sqlx::Error::Decode(_) => {
            TaskError::Query {
                model: model_name.to_string(),
                reason: error.to_string(),
            }
        }
        other => TaskError::SourceUnreachable {
            source_name: source_name.to_string(),
            reason: ebb_shared::redact::redact_url(&other.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table_model(table: &str, columns: &[&str], filter: Option<&str>) -> ModelConfig {
        ModelConfig {
            table: Some(table.to_string()),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            filter: filter.map(str::to_string),
            query: None,
            ..ModelConfig::query("db", "", "id")
        }
    }

    #[test]
    fn a_table_model_reads_its_columns_quoted_as_written() {
        let model = table_model("analytics.Customers", &["id", "e\"mail"], Some("plan <> 'free';"));
        assert_eq!(
            model_query(&model, Dialect::Ansi),
            r#"SELECT "id", "e""mail" FROM "analytics"."Customers" WHERE (plan <> 'free')"#
        );
        let model = table_model("shop.orders", &[], None);
        assert_eq!(model_query(&model, Dialect::Backticks), "SELECT * FROM `shop`.`orders`");
        assert_eq!(
            model_query(&ModelConfig::query("db", "  SELECT 1 AS id ;\n", "id"), Dialect::Ansi),
            "SELECT 1 AS id"
        );
    }
}
