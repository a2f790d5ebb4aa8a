//! SQLite: values keep the storage class SQLite gives them (integer, real, text,
//! blob, null), which is what a column's type means there.

use super::{classify_sqlx, send_in_batches, Row, RowStream};
use crate::error::TaskError;
use ebb_shared::config::{ModelConfig, SqliteSourceConfig};
use ebb_shared::value::{Column, Value};
use futures::StreamExt;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteRow};
use sqlx::{ConnectOptions, Executor, Row as _, TypeInfo, ValueRef};

/// Opens the database and prepares the model's query: its columns, no row read.
pub(super) async fn describe(
    source_name: &str,
    config: &SqliteSourceConfig,
    model_name: &str,
    model: &ModelConfig,
) -> Result<Vec<Column>, TaskError> {
    prepare(source_name, config, model_name, model)
        .await
        .map(|(_, _, columns)| columns)
}

async fn prepare(
    source_name: &str,
    config: &SqliteSourceConfig,
    model_name: &str,
    model: &ModelConfig,
) -> Result<(SqliteConnection, String, Vec<Column>), TaskError> {
    if !config.path.exists() {
        return Err(TaskError::SourceUnreachable {
            source_name: source_name.to_string(),
            reason: format!("database file {} does not exist", config.path.display()),
        });
    }
    let mut connection = SqliteConnectOptions::new()
        .filename(&config.path)
        .read_only(true)
        .connect()
        .await
        .map_err(|e| classify_sqlx(e, source_name, model_name))?;
    let query = super::model_query(model, super::Dialect::Ansi);
    let statement = connection
        .prepare(query.as_str())
        .await
        .map_err(|e| classify_sqlx(e, source_name, model_name))?;
    let columns = super::statement_columns(&statement);
    drop(statement);
    Ok((connection, query, columns))
}

pub(super) async fn open(
    source_name: &str,
    config: &SqliteSourceConfig,
    model_name: &str,
    model: &ModelConfig,
) -> Result<RowStream, TaskError> {
    let (mut connection, query, columns) = prepare(source_name, config, model_name, model).await?;
    let (sender, stream) = RowStream::channel(columns);
    let source_name = source_name.to_string();
    let model_name = model_name.to_string();
    tokio::spawn(async move {
        let rows = sqlx::query(&query).fetch(&mut connection).map(|row| {
            row.map_err(|e| classify_sqlx(e, &source_name, &model_name))
                .and_then(|row| {
                    convert_row(&row).map_err(|reason| TaskError::SourceRead {
                        source_name: source_name.clone(),
                        reason,
                    })
                })
        });
        send_in_batches(rows, &sender).await;
    });
    Ok(stream)
}

fn convert_row(row: &SqliteRow) -> Result<Row, String> {
    (0..row.len())
        .map(|i| {
            let raw = row.try_get_raw(i).map_err(|e| e.to_string())?;
            if raw.is_null() {
                return Ok(Value::Null);
            }
            let storage_class = raw.type_info().name().to_string();
            let value = match storage_class.as_str() {
                "INTEGER" => Value::Int(row.try_get::<i64, _>(i).map_err(|e| e.to_string())?),
                "REAL" => Value::Float(row.try_get::<f64, _>(i).map_err(|e| e.to_string())?),
                "BLOB" => Value::Bytes(row.try_get::<Vec<u8>, _>(i).map_err(|e| e.to_string())?),
                _ => Value::Text(row.try_get::<String, _>(i).map_err(|e| e.to_string())?),
            };
            Ok(value)
        })
        .collect()
}
