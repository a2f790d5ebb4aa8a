//! Google BigQuery over its REST API v2. The model's query runs as a job
//! (`jobs.query`, GoogleSQL); once it is done its rows are read a page at a
//! time (`jobs.getQueryResults` with the page token), each page converted and
//! handed over before the next is asked for, so memory holds a page, never
//! the result. A read that stops early cancels its job.
//!
//! Values come as BigQuery's JSON cells and are typed by the column's type
//! alone: `INT64` an integer, `NUMERIC`/`BIGNUMERIC` exact decimal text,
//! `TIMESTAMP` (asked for as int64 microseconds) UTC ISO-8601 text,
//! `DATE`/`DATETIME`/`TIME` as written, `BYTES` bytes, `JSON` JSON, and
//! `RECORD` and `REPEATED` columns JSON objects and arrays.

mod client;
#[cfg(feature = "fakes")]
pub mod fake;

use super::{send_in_batches, Row, RowStream};
use crate::error::TaskError;
use client::{Client, Field, JobReference, QueryResponse};
use ebb_shared::config::{BigquerySourceConfig, ModelConfig};
use ebb_shared::value::{Column, Value};
use futures::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Rows per page unless the source says otherwise.
pub const DEFAULT_PAGE_ROWS: u32 = 10_000;
const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(3600);
/// How long one `jobs.query`/`getQueryResults` call waits for the job.
const LONG_POLL_MS: u64 = 10_000;

fn query_body(config: &BigquerySourceConfig, query: &str, page_rows: u32, dry_run: bool) -> serde_json::Value {
    let mut body = serde_json::json!({
        "query": query,
        "useLegacySql": false,
        "maxResults": page_rows,
        "timeoutMs": LONG_POLL_MS,
        "formatOptions": {"useInt64Timestamp": true},
        "requestId": uuid::Uuid::now_v7().to_string(),
    });
    if dry_run {
        body["dryRun"] = serde_json::Value::Bool(true);
    }
    if let Some(location) = &config.location {
        body["location"] = serde_json::Value::String(location.clone());
    }
    if let Some(dataset) = &config.dataset {
        body["defaultDataset"] = serde_json::json!({"projectId": config.project, "datasetId": dataset});
    }
    body
}

/// The query's columns from a dry run: BigQuery plans it, reads nothing.
pub(super) async fn describe(
    source_name: &str,
    config: &BigquerySourceConfig,
    model_name: &str,
    model: &ModelConfig,
) -> Result<Vec<Column>, TaskError> {
    let client = Client::new(source_name, model_name, config)?;
    let query = super::model_query(model, super::Dialect::Backticks);
    let answer = client.query(query_body(config, &query, 0, true)).await?;
    let fields = answer.schema.map(|s| s.fields).unwrap_or_default();
    Ok(columns_of(&fields))
}

fn columns_of(fields: &[Field]) -> Vec<Column> {
    fields
        .iter()
        .map(|f| Column {
            name: f.name.clone(),
            source_type: if f.mode.as_deref() == Some("REPEATED") {
                format!("ARRAY<{}>", f.kind)
            } else {
                f.kind.clone()
            },
        })
        .collect()
}

pub(super) async fn open(
    source_name: &str,
    config: &BigquerySourceConfig,
    model_name: &str,
    model: &ModelConfig,
) -> Result<RowStream, TaskError> {
    let client = Arc::new(Client::new(source_name, model_name, config)?);
    let query = super::model_query(model, super::Dialect::Backticks);
    let page_rows = config.page_rows.unwrap_or(DEFAULT_PAGE_ROWS).max(1);
    let query_timeout = config.query_timeout.unwrap_or(DEFAULT_QUERY_TIMEOUT);
    let deadline = Instant::now() + query_timeout;
    let mut answer = client.query(query_body(config, &query, page_rows, false)).await?;
    let job = answer.job_reference.clone();
    // Until the job is done there is no schema and no row.
    while answer.job_complete != Some(true) {
        let Some(job) = &job else {
            return Err(read_failed(
                source_name,
                "BigQuery answered an unfinished query without its job",
            ));
        };
        if Instant::now() >= deadline {
            client.cancel(job).await;
            return Err(TaskError::Query {
                model: model_name.to_string(),
                reason: format!(
                    "the query ran longer than query_timeout ({}); its job {} was cancelled",
                    humantime::format_duration(query_timeout),
                    job.job_id
                ),
            });
        }
        answer = client.results(job, &page_query(page_rows, None)).await?;
    }
    query_errors(&answer, model_name)?;
    let fields: Arc<[Field]> = answer.schema.take().map(|s| s.fields).unwrap_or_default().into();
    let columns = columns_of(&fields);
    let (sender, stream) = RowStream::channel(columns);
    let source_name = source_name.to_string();
    tokio::spawn(async move {
        let rows = pages(client.clone(), job.clone(), answer, page_rows, fields, source_name);
        send_in_batches(rows, &sender).await;
        if sender.is_closed() {
            // The reader went away before the end: no job keeps running for it.
            if let Some(job) = &job {
                client.cancel(job).await;
            }
        }
    });
    Ok(stream)
}

fn page_query(page_rows: u32, page_token: Option<&str>) -> Vec<(&'static str, String)> {
    let mut query = vec![
        ("maxResults", page_rows.to_string()),
        ("timeoutMs", LONG_POLL_MS.to_string()),
        ("formatOptions.useInt64Timestamp", "true".to_string()),
    ];
    if let Some(token) = page_token {
        query.push(("pageToken", token.to_string()));
    }
    query
}

/// Every row of the result, page after page: the next page is asked for
/// while this one's rows are taken, so at most two pages are held.
fn pages(
    client: Arc<Client>,
    job: Option<JobReference>,
    first: QueryResponse,
    page_rows: u32,
    fields: Arc<[Field]>,
    source_name: String,
) -> impl futures::Stream<Item = Result<Row, TaskError>> {
    futures::stream::unfold(Some(first), move |page| {
        let client = client.clone();
        let job = job.clone();
        let fields = fields.clone();
        let source_name = source_name.clone();
        async move {
            let page = page?;
            let rows: Vec<Result<Row, TaskError>> = page
                .rows
                .iter()
                .map(|row| convert_row(row, &fields).map_err(|reason| read_failed(&source_name, &reason)))
                .collect();
            let next = match (&page.page_token, &job) {
                (Some(token), Some(job)) => match client.results(job, &page_query(page_rows, Some(token))).await {
                    Ok(next) => Some(next),
                    Err(error) => {
                        let mut rows = rows;
                        rows.push(Err(error));
                        return Some((futures::stream::iter(rows), None));
                    }
                },
                _ => None,
            };
            Some((futures::stream::iter(rows), next))
        }
    })
    .flatten()
}

fn query_errors(answer: &QueryResponse, model_name: &str) -> Result<(), TaskError> {
    match answer.errors.first() {
        Some(error) if answer.schema.is_none() => Err(TaskError::Query {
            model: model_name.to_string(),
            reason: error["message"].as_str().unwrap_or("the job failed").to_string(),
        }),
        _ => Ok(()),
    }
}

fn read_failed(source_name: &str, reason: &str) -> TaskError {
    TaskError::SourceRead {
        source_name: source_name.to_string(),
        reason: reason.to_string(),
    }
}

fn convert_row(row: &client::TableRow, fields: &[Field]) -> Result<Row, String> {
    if row.f.len() != fields.len() {
        return Err(format!(
            "a row has {} cells where the schema has {} columns",
            row.f.len(),
            fields.len()
        ));
    }
    fields
        .iter()
        .zip(&row.f)
        .map(|(field, cell)| convert(&cell.v, field).map_err(|reason| format!("column {:?}: {reason}", field.name)))
        .collect()
}

/// A cell as a typed value, by its column's type alone.
fn convert(cell: &serde_json::Value, field: &Field) -> Result<Value, String> {
    if cell.is_null() {
        return Ok(Value::Null);
    }
    if field.mode.as_deref() == Some("REPEATED") || matches!(field.kind.as_str(), "RECORD" | "STRUCT") {
        return Ok(Value::Json(to_json(cell, field)?));
    }
    let text = cell
        .as_str()
        .ok_or_else(|| format!("a {} cell that is not a string: {cell}", field.kind))?;
    Ok(match field.kind.as_str() {
        "INTEGER" | "INT64" => Value::Int(text.parse().map_err(|e| format!("integer {text:?}: {e}"))?),
        "FLOAT" | "FLOAT64" => Value::Float(parse_float(text)?),
        "NUMERIC" | "BIGNUMERIC" | "DECIMAL" | "BIGDECIMAL" => Value::Decimal(text.to_string()),
        "BOOLEAN" | "BOOL" => Value::Bool(text == "true"),
        "BYTES" => Value::Bytes(decode_base64(text)?),
        "DATE" | "DATETIME" | "TIME" => Value::Timestamp(text.to_string()),
        "TIMESTAMP" => Value::Timestamp(timestamp(text)?),
        "JSON" => Value::Json(serde_json::from_str(text).map_err(|e| format!("JSON {text:?}: {e}"))?),
        // STRING, GEOGRAPHY (WKT), INTERVAL, RANGE: their text.
        _ => Value::Text(text.to_string()),
    })
}

/// A `RECORD` or `REPEATED` cell as JSON: `{"f": [...]}` becomes an object
/// named by the sub-fields, `[{"v": …}]` an array, leaves typed as above.
fn to_json(cell: &serde_json::Value, field: &Field) -> Result<serde_json::Value, String> {
    if cell.is_null() {
        return Ok(serde_json::Value::Null);
    }
    if field.mode.as_deref() == Some("REPEATED") {
        let single = Field {
            mode: Some("NULLABLE".into()),
            ..field.clone()
        };
        let items = cell
            .as_array()
            .ok_or_else(|| format!("a repeated cell that is not an array: {cell}"))?;
        return items
            .iter()
            .map(|item| to_json(&item["v"], &single))
            .collect::<Result<Vec<_>, _>>()
            .map(serde_json::Value::Array);
    }
    if matches!(field.kind.as_str(), "RECORD" | "STRUCT") {
        let cells = cell["f"]
            .as_array()
            .ok_or_else(|| format!("a record cell without its fields: {cell}"))?;
        let mut object = serde_json::Map::new();
        for (sub, cell) in field.fields.iter().zip(cells) {
            object.insert(sub.name.clone(), to_json(&cell["v"], sub)?);
        }
        return Ok(serde_json::Value::Object(object));
    }
    Ok(convert(cell, field)?.to_json())
}

fn parse_float(text: &str) -> Result<f64, String> {
    match text {
        "NaN" => Ok(f64::NAN),
        "Infinity" => Ok(f64::INFINITY),
        "-Infinity" => Ok(f64::NEG_INFINITY),
        _ => text.parse().map_err(|e| format!("float {text:?}: {e}")),
    }
}

fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("BYTES that are not base64: {e}"))
}

/// A `TIMESTAMP` as UTC ISO-8601 with microseconds, from the int64
/// microseconds asked for (or the float seconds of an older answer).
fn timestamp(text: &str) -> Result<String, String> {
    let micros = match text.parse::<i64>() {
        Ok(micros) => micros,
        Err(_) => {
            let seconds: f64 = text.parse().map_err(|e| format!("timestamp {text:?}: {e}"))?;
            (seconds * 1e6).round() as i64
        }
    };
    let at = chrono::DateTime::<chrono::Utc>::from_timestamp_micros(micros)
        .ok_or_else(|| format!("timestamp {text:?} is out of range"))?;
    Ok(at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(kind: &str, mode: &str) -> Field {
        Field {
            name: "c".into(),
            kind: kind.into(),
            mode: Some(mode.into()),
            fields: Vec::new(),
        }
    }

    #[test]
    fn a_cell_is_typed_by_its_column_alone() {
        let nullable = |kind| field(kind, "NULLABLE");
        let cell = |text: &str| serde_json::Value::String(text.into());
        assert_eq!(convert(&cell("-7"), &nullable("INTEGER")), Ok(Value::Int(-7)));
        assert_eq!(convert(&cell("1.5E2"), &nullable("FLOAT")), Ok(Value::Float(150.0)));
        assert_eq!(
            convert(&cell("12345678901234567890.123456789"), &nullable("BIGNUMERIC")),
            Ok(Value::Decimal("12345678901234567890.123456789".into()))
        );
        assert_eq!(convert(&cell("true"), &nullable("BOOL")), Ok(Value::Bool(true)));
        assert_eq!(
            convert(&cell("AP8Q"), &nullable("BYTES")),
            Ok(Value::Bytes(vec![0, 0xff, 0x10]))
        );
        assert_eq!(
            convert(&cell("1717243200000000"), &nullable("TIMESTAMP")),
            Ok(Value::Timestamp("2024-06-01T12:00:00.000000Z".into()))
        );
        assert_eq!(
            convert(&cell("1.7172432E9"), &nullable("TIMESTAMP")),
            Ok(Value::Timestamp("2024-06-01T12:00:00.000000Z".into()))
        );
        assert_eq!(
            convert(&cell("2024-03-10T02:30:00.125"), &nullable("DATETIME")),
            Ok(Value::Timestamp("2024-03-10T02:30:00.125".into()))
        );
        assert_eq!(convert(&serde_json::Value::Null, &nullable("STRING")), Ok(Value::Null));
        let record = Field {
            kind: "RECORD".into(),
            fields: vec![
                Field {
                    name: "n".into(),
                    ..field("INT64", "NULLABLE")
                },
                Field {
                    name: "tags".into(),
                    ..field("STRING", "REPEATED")
                },
            ],
            ..field("RECORD", "NULLABLE")
        };
        let value = serde_json::json!({"f": [{"v": "3"}, {"v": [{"v": "a"}, {"v": "b"}]}]});
        assert_eq!(
            convert(&value, &record),
            Ok(Value::Json(serde_json::json!({"n": 3, "tags": ["a", "b"]})))
        );
        assert!(convert(&cell("x"), &nullable("INT64")).unwrap_err().contains("integer"));
    }
}
