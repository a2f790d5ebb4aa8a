//! Databricks SQL over the Statement Execution API 2.0. The model's query is
//! submitted to the warehouse (`POST /api/2.0/sql/statements`, results as
//! `EXTERNAL_LINKS` in `JSON_ARRAY`), polled until it succeeds (cancelled
//! past `query_timeout`), and its result read chunk after chunk: each chunk's
//! presigned link (from `…/result/chunks/{i}`) downloaded without the
//! workspace's `Authorization` header, with the link's own headers,
//! `chunk_downloads` at once ahead of the one being read, rows handed over
//! in order as each chunk is parsed.
//!
//! `JSON_ARRAY` writes every value as a string (or null); the column's
//! `type_name` alone types it.

mod client;
#[cfg(feature = "fakes")]
pub mod fake;

use super::{Batch, Row, RowStream, BATCH_ROWS};
use crate::error::TaskError;
use client::{Client, Statement};
use ebb_shared::config::{DatabricksSourceConfig, ModelConfig};
use ebb_shared::value::{Column, Value};
use futures::StreamExt;
use serde::Deserialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(3600);
pub const DEFAULT_CHUNK_DOWNLOADS: u32 = 4;

/// A result column, as the statement's manifest describes it.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct ColumnInfo {
    pub name: String,
    #[serde(default)]
    pub type_name: String,
    #[serde(default)]
    pub type_text: Option<String>,
}

fn shown(columns: &[ColumnInfo]) -> Vec<Column> {
    columns
        .iter()
        .map(|c| Column {
            name: c.name.clone(),
            source_type: c.type_text.clone().unwrap_or_else(|| c.type_name.clone()),
        })
        .collect()
}

/// The query's columns: the warehouse plans it with `LIMIT 0` and reads no row.
pub(super) async fn describe(
    source_name: &str,
    config: &DatabricksSourceConfig,
    model_name: &str,
    model: &ModelConfig,
) -> Result<Vec<Column>, TaskError> {
    let client = Arc::new(Client::new(source_name, model_name, config)?);
    let query = super::model_query(model, super::Dialect::Backticks);
    let deadline = Instant::now() + config.query_timeout.unwrap_or(DEFAULT_QUERY_TIMEOUT);
    let guard = CancelUnlessDone::new(client.clone());
    let statement = client
        .execute(
            &format!("SELECT * FROM ({query}) AS ebb_describe LIMIT 0"),
            deadline,
            &guard.running,
        )
        .await?;
    guard.done();
    Ok(shown(&statement.columns))
}

pub(super) async fn open(
    source_name: &str,
    config: &DatabricksSourceConfig,
    model_name: &str,
    model: &ModelConfig,
) -> Result<RowStream, TaskError> {
    let client = Arc::new(Client::new(source_name, model_name, config)?);
    let query = super::model_query(model, super::Dialect::Backticks);
    let deadline = Instant::now() + config.query_timeout.unwrap_or(DEFAULT_QUERY_TIMEOUT);
    let guard = CancelUnlessDone::new(client.clone());
    let statement = client.execute(&query, deadline, &guard.running).await?;
    guard.done();
    let columns: Arc<[ColumnInfo]> = statement.columns.clone().into();
    let (sender, stream) = RowStream::channel(shown(&columns));
    let downloads = config.chunk_downloads.unwrap_or(DEFAULT_CHUNK_DOWNLOADS).max(1) as usize;
    tokio::spawn(async move {
        if let Err(error) = read_chunks(&client, statement, &columns, downloads, &sender).await {
            let _ = sender.send(Err(error)).await;
        }
    });
    Ok(stream)
}

/// Cancels the statement being waited for when the wait is abandoned (the
/// extraction was cancelled or its worker is stopping): no statement runs on
/// in the warehouse for a reader that went away.
struct CancelUnlessDone {
    client: Arc<Client>,
    running: std::sync::Mutex<Option<String>>,
}

impl CancelUnlessDone {
    fn new(client: Arc<Client>) -> CancelUnlessDone {
        CancelUnlessDone {
            client,
            running: std::sync::Mutex::new(None),
        }
    }

    /// The statement ended, one way or another: nothing to cancel.
    fn done(self) {
        self.running.lock().expect("statement id").take();
    }
}

impl Drop for CancelUnlessDone {
    fn drop(&mut self) {
        let Some(id) = self.running.lock().map(|mut id| id.take()).unwrap_or(None) else {
            return;
        };
        let client = self.client.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { client.cancel(&id).await });
        }
    }
}

/// Every chunk's rows, in order: `downloads` chunks downloading at once.
async fn read_chunks(
    client: &Arc<Client>,
    statement: Statement,
    columns: &Arc<[ColumnInfo]>,
    downloads: usize,
    sender: &mpsc::Sender<Result<Batch, TaskError>>,
) -> Result<(), TaskError> {
    let id = statement.id.clone();
    let first = statement.first_chunk;
    let mut chunks = futures::stream::iter(0..statement.chunk_count)
        .map(|index| {
            let client = client.clone();
            let id = id.clone();
            let first = if index == 0 { first.clone() } else { None };
            async move { client.chunk(&id, index, first).await }
        })
        .buffered(downloads);
    while let Some(rows) = chunks.next().await {
        let rows = rows?;
        if !send_rows(rows, columns, sender)
            .await
            .map_err(|e| client.read_failed(e))?
        {
            return Ok(());
        }
    }
    Ok(())
}

/// Hands rows over in batches; `false` when extraction stopped listening.
async fn send_rows(
    rows: Vec<Vec<Option<String>>>,
    columns: &Arc<[ColumnInfo]>,
    sender: &mpsc::Sender<Result<Batch, TaskError>>,
) -> Result<bool, String> {
    for slice in rows.chunks(BATCH_ROWS) {
        let batch: Vec<Row> = slice
            .iter()
            .map(|cells| convert_row(cells, columns))
            .collect::<Result<_, String>>()?;
        if sender.send(Ok(batch.into())).await.is_err() {
            return Ok(false);
        }
    }
    Ok(true)
}

fn convert_row(cells: &[Option<String>], columns: &[ColumnInfo]) -> Result<Row, String> {
    if cells.len() != columns.len() {
        return Err(format!(
            "a row has {} values where the result has {} columns",
            cells.len(),
            columns.len()
        ));
    }
    cells
        .iter()
        .zip(columns)
        .map(|(cell, column)| match cell {
            None => Ok(Value::Null),
            Some(text) => convert(text, &column.type_name).map_err(|e| format!("column {:?}: {e}", column.name)),
        })
        .collect()
}

/// A `JSON_ARRAY` value by its column's type.
fn convert(text: &str, type_name: &str) -> Result<Value, String> {
    Ok(match type_name {
        "BYTE" | "SHORT" | "INT" | "LONG" => Value::Int(text.parse().map_err(|e| format!("integer {text:?}: {e}"))?),
        "FLOAT" | "DOUBLE" => Value::Float(match text {
            "NaN" => f64::NAN,
            "Infinity" => f64::INFINITY,
            "-Infinity" => f64::NEG_INFINITY,
            _ => text.parse().map_err(|e| format!("float {text:?}: {e}"))?,
        }),
        "DECIMAL" => Value::Decimal(text.to_string()),
        "BOOLEAN" => Value::Bool(text.eq_ignore_ascii_case("true")),
        "DATE" | "TIMESTAMP" | "TIMESTAMP_NTZ" => Value::Timestamp(text.to_string()),
        "BINARY" => Value::Bytes(binary(text)?),
        "ARRAY" | "MAP" | "STRUCT" => match serde_json::from_str(text) {
            Ok(json) => Value::Json(json),
            Err(_) => Value::Text(text.to_string()),
        },
        // STRING, CHAR, INTERVAL, and types this version does not know.
        _ => Value::Text(text.to_string()),
    })
}

/// `BINARY` as Databricks writes it in `JSON_ARRAY`: hex, or base64.
fn binary(text: &str) -> Result<Vec<u8>, String> {
    if let Some(bytes) = super::decode_hex(text) {
        return Ok(bytes);
    }
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|_| format!("BINARY {text:?} is neither hex nor base64"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_typed_by_its_columns_type_name() {
        assert_eq!(convert("-7", "INT"), Ok(Value::Int(-7)));
        assert_eq!(convert("0.25", "DOUBLE"), Ok(Value::Float(0.25)));
        assert_eq!(
            convert("12345678.1234", "DECIMAL"),
            Ok(Value::Decimal("12345678.1234".into()))
        );
        assert_eq!(convert("true", "BOOLEAN"), Ok(Value::Bool(true)));
        assert_eq!(
            convert("2024-06-01T12:00:00.000Z", "TIMESTAMP"),
            Ok(Value::Timestamp("2024-06-01T12:00:00.000Z".into()))
        );
        assert_eq!(convert("00ff10", "BINARY"), Ok(Value::Bytes(vec![0, 0xff, 0x10])));
        assert_eq!(
            convert("{\"a\":[1,2]}", "STRUCT"),
            Ok(Value::Json(serde_json::json!({"a": [1, 2]})))
        );
        assert_eq!(convert("x", "STRING"), Ok(Value::Text("x".into())));
        assert!(convert("x", "LONG").is_err());
    }
}
