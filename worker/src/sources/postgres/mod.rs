//! PostgreSQL: the column types come from preparing the query; the rows come from
//! `COPY (query) TO STDOUT`, Postgres's fastest way out, parsed as they stream.

mod copy_text;

use super::{classify_sqlx, Batch, Row, RowStream, BATCH_ROWS};
use crate::error::TaskError;
use ebb_shared::config::{expand_env, ModelConfig, PostgresSourceConfig};
use ebb_shared::value::{Column, Value};
use futures::StreamExt;
use sqlx::{Connection, Executor, PgConnection};
use std::sync::Arc;

/// Connects and prepares the model's query: its columns, no row read.
pub(super) async fn describe(
    source_name: &str,
    config: &PostgresSourceConfig,
    model_name: &str,
    model: &ModelConfig,
) -> Result<Vec<Column>, TaskError> {
    prepare(source_name, config, model_name, model)
        .await
        .map(|(_, _, columns)| columns)
}

async fn prepare(
    source_name: &str,
    config: &PostgresSourceConfig,
    model_name: &str,
    model: &ModelConfig,
) -> Result<(PgConnection, String, Vec<Column>), TaskError> {
    let mut connection = connect(source_name, &config.url, model_name).await?;
    let query = super::model_query(model, super::Dialect::Ansi);
    let columns = prepare_on(&mut connection, source_name, model_name, &query).await?;
    Ok((connection, query, columns))
}

/// Connects to a PostgreSQL-protocol server in a session that writes times
/// the same way whatever the server's or the role's defaults: UTC, ISO dates.
/// A `timestamptz` then reads the same on every run.
pub(super) async fn connect(source_name: &str, url: &str, model_name: &str) -> Result<PgConnection, TaskError> {
    let url = expand_env(url, &format!("source {source_name:?} url"))?;
    let mut connection = super::connect_within(source_name, model_name, PgConnection::connect(&url)).await?;
    connection
        .execute("SET timezone TO 'UTC'; SET datestyle TO 'ISO'")
        .await
        .map_err(|e| classify_sqlx(e, source_name, model_name))?;
    Ok(connection)
}

/// Prepares a query: its columns, with no row read.
pub(super) async fn prepare_on(
    connection: &mut PgConnection,
    source_name: &str,
    model_name: &str,
    query: &str,
) -> Result<Vec<Column>, TaskError> {
    let statement = connection
        .prepare(query)
        .await
        .map_err(|e| classify_sqlx(e, source_name, model_name))?;
    Ok(super::statement_columns(&statement))
}

pub(super) async fn open(
    source_name: &str,
    config: &PostgresSourceConfig,
    model_name: &str,
    model: &ModelConfig,
) -> Result<RowStream, TaskError> {
    let (mut connection, query, columns) = prepare(source_name, config, model_name, model).await?;
    let types: Vec<PgType> = columns.iter().map(|c| PgType::from_name(&c.source_type)).collect();
    let (sender, stream) = RowStream::channel(columns);
    let source_name = source_name.to_string();
    let model_name = model_name.to_string();
    tokio::spawn(async move {
        let copy = format!("COPY ({query}) TO STDOUT");
        let result: Result<(), TaskError> = async {
            let mut bytes = connection
                .copy_out_raw(copy.as_str())
                .await
                .map_err(|e| classify_sqlx(e, &source_name, &model_name))?;
            // Whole lines are cut into batches here and parsed later, on
            // extraction's mapping threads.
            let types: Arc<[PgType]> = types.into();
            let mut pending: Vec<u8> = Vec::with_capacity(UNPARSED_BATCH_BYTES + (64 << 10));
            while let Some(chunk) = bytes.next().await {
                let chunk = chunk.map_err(|e| classify_sqlx(e, &source_name, &model_name))?;
                pending.extend_from_slice(&chunk);
                if pending.len() >= UNPARSED_BATCH_BYTES {
                    let Some(last_newline) = pending.iter().rposition(|&b| b == b'\n') else {
                        continue;
                    };
                    let rest = pending.split_off(last_newline + 1);
                    let lines = std::mem::replace(&mut pending, rest);
                    let batch = unparsed(lines, types.clone(), source_name.clone());
                    if sender.send(Ok(batch)).await.is_err() {
                        return Ok(());
                    }
                }
            }
            if !pending.is_empty() {
                let _ = sender
                    .send(Ok(unparsed(pending, types.clone(), source_name.clone())))
                    .await;
            }
            Ok(())
        }
        .await;
        if let Err(error) = result {
            let _ = sender.send(Err(error)).await;
        }
    });
    Ok(stream)
}

/// COPY text handed over per batch: about 2,000 rows of a 10-column model.
const UNPARSED_BATCH_BYTES: usize = 256 << 10;

/// Whole lines of COPY text, to be parsed into rows.
fn unparsed(lines: Vec<u8>, types: Arc<[PgType]>, source_name: String) -> Batch {
    Batch::Unparsed(Box::new(move || {
        let mut parser = copy_text::LineParser::default();
        let mut rows: Vec<Row> = Vec::with_capacity(BATCH_ROWS);
        let mut failed = None;
        parser.feed(&lines, |fields| {
            if failed.is_none() {
                match convert_row(fields, &types) {
                    Ok(row) => rows.push(row),
                    Err(reason) => failed = Some(reason),
                }
            }
        });
        if parser.has_partial_line() {
            failed.get_or_insert_with(|| "COPY output ended in the middle of a line".to_string());
        }
        match failed {
            None => Ok(rows),
            Some(reason) => Err(TaskError::SourceRead { source_name, reason }),
        }
    }))
}

/// How a column's text becomes a typed value, decided by its type alone.
#[derive(Debug, Clone, Copy)]
pub(super) enum PgType {
    Int,
    Float,
    Decimal,
    Bool,
    Json,
    Timestamp,
    Bytes,
    Text,
}

impl PgType {
    pub(super) fn from_name(name: &str) -> PgType {
        match name {
            "INT2" | "INT4" | "INT8" | "OID" => PgType::Int,
            "FLOAT4" | "FLOAT8" => PgType::Float,
            "NUMERIC" | "MONEY" => PgType::Decimal,
            "BOOL" => PgType::Bool,
            "JSON" | "JSONB" => PgType::Json,
            "TIMESTAMP" | "TIMESTAMPTZ" | "DATE" | "TIME" | "TIMETZ" | "INTERVAL" => PgType::Timestamp,
            "BYTEA" => PgType::Bytes,
            _ => PgType::Text,
        }
    }
}

fn convert_row(fields: &copy_text::Fields<'_>, types: &[PgType]) -> Result<Row, String> {
    if fields.len() != types.len() {
        return Err(format!(
            "COPY returned {} fields where the query has {} columns",
            fields.len(),
            types.len()
        ));
    }
    types
        .iter()
        .enumerate()
        .map(|(i, pg_type)| match fields.get(i) {
            None => Ok(Value::Null),
            Some(text) => convert(text, *pg_type),
        })
        .collect()
}

pub(super) fn convert(text: std::borrow::Cow<'_, str>, pg_type: PgType) -> Result<Value, String> {
    Ok(match pg_type {
        PgType::Int => Value::Int(text.parse().map_err(|e| format!("integer {text:?}: {e}"))?),
        PgType::Float => Value::Float(text.parse().map_err(|e| format!("float {text:?}: {e}"))?),
        PgType::Decimal => Value::Decimal(text.into_owned()),
        PgType::Bool => Value::Bool(&*text == "t"),
        PgType::Json => Value::Json(serde_json::from_str(&text).map_err(|e| format!("json {text:?}: {e}"))?),
        PgType::Timestamp => Value::Timestamp(text.into_owned()),
        PgType::Bytes => {
            let hex = text.strip_prefix("\\x").unwrap_or(&text);
            Value::Bytes(super::decode_hex(hex).ok_or_else(|| format!("bytea {text:?} is not hex"))?)
        }
        PgType::Text => Value::Text(text.into_owned()),
    })
}
