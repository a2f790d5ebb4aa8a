//! Amazon Redshift: PostgreSQL's wire protocol, but no `COPY … TO STDOUT`.
//! The model's query runs as a cursor in a read-only transaction and its rows
//! come `FETCH FORWARD n` at a time, so neither side ever holds the whole
//! result (Redshift materialises a cursor's result on its leader node, which
//! is its documented way to stream a large result to a client).
//!
//! Rows travel in the simple query protocol's text form, the same text
//! PostgreSQL's `COPY` writes, and are typed by their column exactly as the
//! PostgreSQL source types them: a model reads the same values from either.

use super::postgres::{self, PgType};
use super::{classify_sqlx, Row, RowStream, BATCH_ROWS};
use crate::error::TaskError;
use ebb_shared::config::{ModelConfig, RedshiftSourceConfig};
use ebb_shared::value::{Column, Value};
use futures::StreamExt;
use sqlx::postgres::PgRow;
use sqlx::{Executor, PgConnection, Row as _, ValueRef};

/// Rows per `FETCH` unless the source says otherwise: large enough that round
/// trips cost little, small enough that a fetch is a few megabytes.
pub const DEFAULT_FETCH_ROWS: u32 = 10_000;

/// The cursor's name inside the extraction's own transaction.
const CURSOR: &str = "ebb_model_rows";

/// Connects and prepares the model's query: its columns, no row read.
pub(super) async fn describe(
    source_name: &str,
    config: &RedshiftSourceConfig,
    model_name: &str,
    model: &ModelConfig,
) -> Result<Vec<Column>, TaskError> {
    prepare(source_name, config, model_name, model)
        .await
        .map(|(_, _, columns)| columns)
}

async fn prepare(
    source_name: &str,
    config: &RedshiftSourceConfig,
    model_name: &str,
    model: &ModelConfig,
) -> Result<(PgConnection, String, Vec<Column>), TaskError> {
    let mut connection = postgres::connect(source_name, &config.url, model_name).await?;
    let query = super::model_query(model, super::Dialect::Ansi);
    let columns = postgres::prepare_on(&mut connection, source_name, model_name, &query).await?;
    Ok((connection, query, columns))
}

pub(super) async fn open(
    source_name: &str,
    config: &RedshiftSourceConfig,
    model_name: &str,
    model: &ModelConfig,
) -> Result<RowStream, TaskError> {
    let (mut connection, query, columns) = prepare(source_name, config, model_name, model).await?;
    let types: Vec<PgType> = columns.iter().map(|c| PgType::from_name(&c.source_type)).collect();
    let fetch_rows = config.fetch_rows.unwrap_or(DEFAULT_FETCH_ROWS).max(1);
    let (sender, stream) = RowStream::channel(columns);
    let source_name = source_name.to_string();
    let model_name = model_name.to_string();
    tokio::spawn(async move {
        let query_failed = |e: sqlx::Error| classify_sqlx(e, &source_name, &model_name);
        let result: Result<(), TaskError> = async {
            connection
                .execute(format!("BEGIN READ ONLY; DECLARE {CURSOR} CURSOR FOR {query}").as_str())
                .await
                .map_err(query_failed)?;
            let fetch = format!("FETCH FORWARD {fetch_rows} FROM {CURSOR}");
            let mut batch: Vec<Row> = Vec::with_capacity(BATCH_ROWS);
            loop {
                let mut fetched = 0u32;
                // A `&str` without arguments goes by the simple query
                // protocol: rows arrive as text, one at a time.
                let mut rows = connection.fetch(fetch.as_str());
                while let Some(row) = rows.next().await {
                    let row = row.map_err(query_failed)?;
                    fetched += 1;
                    batch.push(convert_row(&row, &types).map_err(|reason| TaskError::SourceRead {
                        source_name: source_name.clone(),
                        reason,
                    })?);
                    if batch.len() >= BATCH_ROWS {
                        let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_ROWS));
                        if sender.send(Ok(full.into())).await.is_err() {
                            // Extraction stopped listening: closing the
                            // connection ends the cursor and its query.
                            return Ok(());
                        }
                    }
                }
                drop(rows);
                if fetched < fetch_rows {
                    break;
                }
            }
            if !batch.is_empty() && sender.send(Ok(batch.into())).await.is_err() {
                return Ok(());
            }
            connection
                .execute(format!("CLOSE {CURSOR}; COMMIT").as_str())
                .await
                .map_err(query_failed)?;
            Ok(())
        }
        .await;
        if let Err(error) = result {
            let _ = sender.send(Err(error)).await;
        }
    });
    Ok(stream)
}

fn convert_row(row: &PgRow, types: &[PgType]) -> Result<Row, String> {
    if row.len() != types.len() {
        return Err(format!(
            "the cursor returned {} columns where the query has {}",
            row.len(),
            types.len()
        ));
    }
    types
        .iter()
        .enumerate()
        .map(|(i, pg_type)| {
            let raw = row.try_get_raw(i).map_err(|e| e.to_string())?;
            if raw.is_null() {
                return Ok(Value::Null);
            }
            let text = raw.as_str().map_err(|e| format!("column {i}: {e}"))?;
            postgres::convert(text.into(), *pg_type)
        })
        .collect()
}
