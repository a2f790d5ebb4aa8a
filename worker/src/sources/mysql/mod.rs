//! MySQL and MariaDB: the column types come from preparing the query; the rows
//! stream over the text protocol (a query without arguments is sent as is, not
//! prepared), each value as the server's own text, converted by its column's
//! type the way PostgreSQL's `COPY` text is. Rows are read as they arrive: the
//! result is never held whole, on either side of the channel.
//!
//! The session runs in UTC (`time_zone = '+00:00'`), so a `TIMESTAMP` reads
//! the same on every run whatever the server's zone, and says so (`+00:00`);
//! `DATETIME` has no zone and is read as written.
//!
//! The protocol marks a column of text in a binary collation (`utf8mb4_bin`,
//! MariaDB's `JSON`) exactly as it marks `BLOB` and `VARBINARY`, and the
//! driver keeps no charset to tell them apart: such a value is text when its
//! bytes are UTF-8 and bytes otherwise — the same value the same way on every
//! run. A query that wants bytes for certain says `HEX(col)` or
//! `TO_BASE64(col)`.

use super::{classify_sqlx, send_in_batches, Row, RowStream};
use crate::error::TaskError;
use ebb_shared::config::{expand_env, ModelConfig, MysqlSourceConfig};
use ebb_shared::value::{Column, Value};
use futures::StreamExt;
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlRow};
use sqlx::{Column as _, ConnectOptions, Executor, Row as _, TypeInfo, ValueRef};

/// Connects and prepares the model's query: its columns, no row read.
pub(super) async fn describe(
    source_name: &str,
    config: &MysqlSourceConfig,
    model_name: &str,
    model: &ModelConfig,
) -> Result<Vec<Column>, TaskError> {
    prepare(source_name, config, model_name, model)
        .await
        .map(|(_, _, columns)| columns)
}

async fn prepare(
    source_name: &str,
    config: &MysqlSourceConfig,
    model_name: &str,
    model: &ModelConfig,
) -> Result<(MySqlConnection, String, Vec<Column>), TaskError> {
    let url = expand_env(&config.url, &format!("source {source_name:?} url"))?;
    let unreachable = |reason: String| TaskError::SourceUnreachable {
        source_name: source_name.to_string(),
        reason,
    };
    let options: MySqlConnectOptions = url.parse().map_err(|e: sqlx::Error| {
        unreachable(format!(
            "its url is not a MySQL URL (mysql://user:password@host:3306/database): {}",
            ebb_shared::redact::redact_url(&e.to_string())
        ))
    })?;
    let options = options.timezone(Some("+00:00".to_string()));
    let mut connection = super::connect_within(source_name, model_name, options.connect()).await?;
    let query = super::model_query(model, super::Dialect::Backticks);
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
    config: &MysqlSourceConfig,
    model_name: &str,
    model: &ModelConfig,
) -> Result<RowStream, TaskError> {
    let (mut connection, query, columns) = prepare(source_name, config, model_name, model).await?;
    let (sender, stream) = RowStream::channel(columns);
    let source_name = source_name.to_string();
    let model_name = model_name.to_string();
    tokio::spawn(async move {
        // A `&str` query has no arguments: the text protocol, streamed.
        let mut types: Option<Vec<MysqlType>> = None;
        let rows = connection.fetch(query.as_str()).map(|row| {
            let row = row.map_err(|e| classify_sqlx(e, &source_name, &model_name))?;
            let types = types.get_or_insert_with(|| {
                row.columns()
                    .iter()
                    .map(|c| MysqlType::from_name(c.type_info().name()))
                    .collect()
            });
            convert_row(&row, types).map_err(|reason| TaskError::SourceRead {
                source_name: source_name.clone(),
                reason,
            })
        });
        send_in_batches(rows, &sender).await;
    });
    Ok(stream)
}

/// How a column's text becomes a typed value. Decided by the column's type
/// alone, never by a value, so a column maps the same way on every run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MysqlType {
    Int,
    /// `BIGINT UNSIGNED`: an integer when it fits in 64 signed bits, its
    /// decimal text above.
    UnsignedBig,
    Bool,
    Float,
    Decimal,
    /// `DATE`, `DATETIME`, `TIME`: as written, no zone.
    Timestamp,
    /// `TIMESTAMP`: UTC in this session.
    TimestampUtc,
    Json,
    /// `BIT(n)`: its bits as an integer.
    Bit,
    /// Binary, or text in a binary collation (see the module's doc).
    BinaryOrText,
    Bytes,
    Null,
    Text,
}

impl MysqlType {
    fn from_name(name: &str) -> MysqlType {
        match name {
            "BIGINT UNSIGNED" => MysqlType::UnsignedBig,
            "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" | "YEAR" | "TINYINT UNSIGNED"
            | "SMALLINT UNSIGNED" | "MEDIUMINT UNSIGNED" | "INT UNSIGNED" => MysqlType::Int,
            "BOOLEAN" => MysqlType::Bool,
            "FLOAT" | "DOUBLE" => MysqlType::Float,
            "DECIMAL" => MysqlType::Decimal,
            "DATE" | "DATETIME" | "TIME" => MysqlType::Timestamp,
            "TIMESTAMP" => MysqlType::TimestampUtc,
            "JSON" => MysqlType::Json,
            "BIT" => MysqlType::Bit,
            "BINARY" | "VARBINARY" | "TINYBLOB" | "BLOB" | "MEDIUMBLOB" | "LONGBLOB" => MysqlType::BinaryOrText,
            "GEOMETRY" => MysqlType::Bytes,
            "NULL" => MysqlType::Null,
            _ => MysqlType::Text,
        }
    }
}

fn convert_row(row: &MySqlRow, types: &[MysqlType]) -> Result<Row, String> {
    types
        .iter()
        .enumerate()
        .map(|(i, kind)| {
            let raw = row.try_get_raw(i).map_err(|e| e.to_string())?;
            if raw.is_null() {
                return Ok(Value::Null);
            }
            let bytes: &[u8] = row.try_get_unchecked(i).map_err(|e| e.to_string())?;
            convert(bytes, *kind).map_err(|reason| format!("column {:?}: {reason}", row.columns()[i].name()))
        })
        .collect()
}

fn convert(bytes: &[u8], kind: MysqlType) -> Result<Value, String> {
    let text = || std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8 text: {e}"));
    Ok(match kind {
        MysqlType::Int => {
            let text = text()?;
            Value::Int(text.parse().map_err(|e| format!("integer {text:?}: {e}"))?)
        }
        MysqlType::UnsignedBig => {
            let text = text()?;
            match text.parse::<i64>() {
                Ok(int) => Value::Int(int),
                Err(_) => Value::Decimal(text.to_string()),
            }
        }
        MysqlType::Bool => Value::Bool(text()? != "0"),
        MysqlType::Float => {
            let text = text()?;
            Value::Float(text.parse().map_err(|e| format!("float {text:?}: {e}"))?)
        }
        MysqlType::Decimal => Value::Decimal(text()?.to_string()),
        MysqlType::Timestamp => Value::Timestamp(text()?.to_string()),
        MysqlType::TimestampUtc => Value::Timestamp(format!("{}+00:00", text()?)),
        MysqlType::Json => Value::Json(serde_json::from_slice(bytes).map_err(|e| format!("JSON: {e}"))?),
        MysqlType::Bit => {
            if bytes.len() > 8 {
                return Err(format!("BIT of {} bytes does not fit in 64 bits", bytes.len()));
            }
            Value::Int(bytes.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b)) as i64)
        }
        MysqlType::BinaryOrText => match std::str::from_utf8(bytes) {
            Ok(text) => Value::Text(text.to_string()),
            Err(_) => Value::Bytes(bytes.to_vec()),
        },
        MysqlType::Bytes => Value::Bytes(bytes.to_vec()),
        MysqlType::Null => Value::Null,
        MysqlType::Text => Value::Text(text()?.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_columns_type_alone_decides_its_values() {
        use MysqlType as T;
        assert_eq!(convert(b"-42", T::Int), Ok(Value::Int(-42)));
        assert_eq!(
            convert(b"9223372036854775807", T::UnsignedBig),
            Ok(Value::Int(i64::MAX))
        );
        assert_eq!(
            convert(b"18446744073709551615", T::UnsignedBig),
            Ok(Value::Decimal("18446744073709551615".into()))
        );
        assert_eq!(convert(b"0", T::Bool), Ok(Value::Bool(false)));
        assert_eq!(convert(b"1", T::Bool), Ok(Value::Bool(true)));
        assert_eq!(convert(b"12.50", T::Decimal), Ok(Value::Decimal("12.50".into())));
        assert_eq!(
            convert(b"2024-03-10 02:30:00", T::TimestampUtc),
            Ok(Value::Timestamp("2024-03-10 02:30:00+00:00".into()))
        );
        assert_eq!(convert(&[0x01, 0x02], T::Bit), Ok(Value::Int(258)));
        assert_eq!(
            convert(&[0xff, 0x00], T::BinaryOrText),
            Ok(Value::Bytes(vec![0xff, 0x00]))
        );
        assert_eq!(
            convert(b"{\"a\": 1}", T::BinaryOrText),
            Ok(Value::Text("{\"a\": 1}".into()))
        );
        assert!(convert(&[0xff], T::Text).unwrap_err().contains("UTF-8"));
        assert!(convert(b"x", T::Int).unwrap_err().contains("integer"));
        assert_eq!(MysqlType::from_name("VARCHAR"), T::Text);
        assert_eq!(MysqlType::from_name("ENUM"), T::Text);
        assert_eq!(MysqlType::from_name("LONGBLOB"), T::BinaryOrText);
    }
}
