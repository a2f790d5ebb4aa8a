//! Sources stream a model's rows in batches, never loading the result in memory.
//! Each source runs its reader on its own task and hands batches over a bounded
//! channel, so reading overlaps with hashing and uploading.

mod csv;
mod mysql;
mod postgres;
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
        SourceConfig::Mysql(config) => mysql::open(source_name, config, model_name, model).await,
        SourceConfig::Sqlite(config) => sqlite::open(source_name, config, model_name, model).await,
        SourceConfig::Csv(config) => csv::open(source_name, config, model_name, model).await,
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
        SourceConfig::Mysql(config) => mysql::describe(source_name, config, model_name, model).await,
        SourceConfig::Sqlite(config) => sqlite::describe(source_name, config, model_name, model).await,
        SourceConfig::Csv(config) => csv::describe(source_name, config, model).await,
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

/// A model's SQL as it is sent: without surrounding space or a final `;`.
fn model_query(model: &ModelConfig) -> String {
    model
        .query
        .as_deref()
        .unwrap_or_default()
        .trim()
        .trim_end_matches(';')
        .trim()
        .to_string()
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
