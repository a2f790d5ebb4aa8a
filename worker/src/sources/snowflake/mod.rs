//! Snowflake, over the REST protocol its drivers speak (`client.rs`). The
//! query's first answer carries its columns (`rowtype`), the first part of
//! its rows inline, and the URLs of the chunks holding the rest. Rows are
//! handed over as they are decoded: the inline part, then each chunk in
//! order, `chunk_downloads` chunks downloading at once ahead of the one being
//! read. A result comes as JSON or as Arrow IPC (`queryResultFormat`); both
//! are read, and a column reads the same either way (`values.rs`).

mod client;
// Its Arrow and temporal helpers also type Parquet files (`files`).
pub(super) mod values;

use super::{Batch, Row, RowStream, BATCH_ROWS};
use crate::error::TaskError;
use client::Client;
use ebb_shared::config::{ModelConfig, SnowflakeSourceConfig};
use ebb_shared::value::Column;
use futures::StreamExt;
use serde_json::Value as Json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use values::ColumnType;

const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(3600);
pub const DEFAULT_CHUNK_DOWNLOADS: u32 = 4;

fn shown(columns: &[ColumnType]) -> Vec<Column> {
    columns
        .iter()
        .map(|c| Column {
            name: c.name.clone(),
            source_type: c.display(),
        })
        .collect()
}

/// The query's columns, described by Snowflake without running it.
pub(super) async fn describe(
    source_name: &str,
    config: &SnowflakeSourceConfig,
    model_name: &str,
    model: &ModelConfig,
) -> Result<Vec<Column>, TaskError> {
    let client = Client::new(source_name, model_name, config)?;
    let query = super::model_query(model, super::Dialect::Ansi);
    let deadline = Instant::now() + config.query_timeout.unwrap_or(DEFAULT_QUERY_TIMEOUT);
    let described = client.describe(&query, deadline).await;
    client.close().await;
    Ok(shown(&described?.columns))
}

pub(super) async fn open(
    source_name: &str,
    config: &SnowflakeSourceConfig,
    model_name: &str,
    model: &ModelConfig,
) -> Result<RowStream, TaskError> {
    let client = Arc::new(Client::new(source_name, model_name, config)?);
    let query = super::model_query(model, super::Dialect::Ansi);
    let deadline = Instant::now() + config.query_timeout.unwrap_or(DEFAULT_QUERY_TIMEOUT);
    let result = match client.query(&query, deadline).await {
        Ok(result) => result,
        Err(error) => {
            client.close().await;
            return Err(error);
        }
    };
    let columns: Arc<[ColumnType]> = result.columns.clone().into();
    let (sender, stream) = RowStream::channel(shown(&columns));
    let downloads = config.chunk_downloads.unwrap_or(DEFAULT_CHUNK_DOWNLOADS).max(1) as usize;
    tokio::spawn(async move {
        let outcome = read_result(&client, result, &columns, downloads, &sender).await;
        if let Err(error) = outcome {
            let _ = sender.send(Err(error)).await;
        }
        client.close().await;
    });
    Ok(stream)
}

/// The result's rows, inline part first, then its chunks in order; stops
/// quietly when extraction stops listening.
async fn read_result(
    client: &Arc<Client>,
    result: client::QueryResult,
    columns: &Arc<[ColumnType]>,
    downloads: usize,
    sender: &mpsc::Sender<Result<Batch, TaskError>>,
) -> Result<(), TaskError> {
    let inline = if result.arrow {
        Part::Arrow(Encoded::Base64(result.inline_base64))
    } else {
        Part::Json(result.inline_json.unwrap_or(Json::Null))
    };
    if !send_part(inline, columns, sender)
        .await
        .map_err(|e| client.read_failed(e))?
    {
        return Ok(());
    }
    let headers = result.chunk_headers;
    let mut chunks = futures::stream::iter(result.chunk_urls)
        .map(|url| {
            let client = client.clone();
            let headers = headers.clone();
            async move { client.chunk(&url, &headers).await }
        })
        .buffered(downloads);
    while let Some(bytes) = chunks.next().await {
        let part = if result.arrow {
            Part::Arrow(Encoded::Raw(bytes?.into()))
        } else {
            // A JSON chunk is rows without the brackets around them.
            let mut text = Vec::with_capacity(bytes.as_ref().map(Vec::len).unwrap_or(0) + 2);
            text.push(b'[');
            text.extend_from_slice(&bytes?);
            text.push(b']');
            Part::Json(
                serde_json::from_slice(&text)
                    .map_err(|e| client.read_failed(format!("a JSON result chunk is unreadable: {e}")))?,
            )
        };
        if !send_part(part, columns, sender)
            .await
            .map_err(|e| client.read_failed(e))?
        {
            return Ok(());
        }
    }
    Ok(())
}

/// Arrow IPC bytes, as they came: base64 (inline) or raw (a chunk).
#[derive(Clone)]
enum Encoded {
    Base64(bytes::Bytes),
    Raw(bytes::Bytes),
}

impl Encoded {
    fn is_empty(&self) -> bool {
        match self {
            Encoded::Base64(bytes) | Encoded::Raw(bytes) => bytes.is_empty(),
        }
    }

    /// The IPC stream from its start, decoded as it is read.
    fn reader(&self) -> Box<dyn std::io::Read + Send> {
        match self {
            Encoded::Base64(bytes) => Box::new(base64::read::DecoderReader::new(
                std::io::Cursor::new(bytes.clone()),
                &base64::engine::general_purpose::STANDARD,
            )),
            Encoded::Raw(bytes) => Box::new(std::io::Cursor::new(bytes.clone())),
        }
    }
}

/// Rows of one part of a result, encoded.
enum Part {
    Json(Json),
    Arrow(Encoded),
}

/// Hands a part's rows over in batches; `false` when extraction stopped
/// listening.
async fn send_part(
    part: Part,
    columns: &Arc<[ColumnType]>,
    sender: &mpsc::Sender<Result<Batch, TaskError>>,
) -> Result<bool, String> {
    match part {
        Part::Json(Json::Null) => Ok(true),
        Part::Json(rows) => {
            let rows = rows.as_array().ok_or("the rowset is not an array of rows")?;
            for slice in rows.chunks(BATCH_ROWS) {
                let batch: Vec<Row> = slice
                    .iter()
                    .map(|row| json_row(row, columns))
                    .collect::<Result<_, String>>()?;
                if sender.send(Ok(batch.into())).await.is_err() {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        Part::Arrow(encoded) if encoded.is_empty() => Ok(true),
        Part::Arrow(encoded) => {
            for batch in arrow_batches(encoded)? {
                let batch = batch?;
                let mut offset = 0;
                while offset < batch.num_rows() {
                    let length = BATCH_ROWS.min(batch.num_rows() - offset);
                    let rows = values::rows_of_batch(&batch.slice(offset, length), columns)?;
                    offset += length;
                    if sender.send(Ok(rows.into())).await.is_err() {
                        return Ok(false);
                    }
                }
            }
            Ok(true)
        }
    }
}

fn json_row(row: &Json, columns: &[ColumnType]) -> Result<Row, String> {
    let cells = row.as_array().ok_or("a row of the rowset is not an array")?;
    if cells.len() != columns.len() {
        return Err(format!(
            "a row has {} cells where the result has {} columns",
            cells.len(),
            columns.len()
        ));
    }
    cells
        .iter()
        .zip(columns)
        .map(|(cell, column)| values::from_json(cell, column).map_err(|e| format!("column {:?}: {e}", column.name)))
        .collect()
}

/// The record batches of an Arrow IPC stream, read one at a time.
fn arrow_batches(encoded: Encoded) -> Result<ArrowBatches, String> {
    let reader = arrow_ipc::reader::StreamReader::try_new(encoded.reader(), None)
        .map_err(|e| format!("the Arrow rows are unreadable: {e}"))?;
    Ok(ArrowBatches {
        encoded,
        reader,
        read: 0,
        validated: true,
    })
}

/// Record batches read lazily. One known writer (fakesnow) marks a null
/// TIMESTAMP in the children of a struct it declares not-null, which arrow's
/// validation refuses: on that refusal alone the stream is read again from
/// the batch that failed, unvalidated.
struct ArrowBatches {
    encoded: Encoded,
    reader: arrow_ipc::reader::StreamReader<Box<dyn std::io::Read + Send>>,
    read: usize,
    validated: bool,
}

impl Iterator for ArrowBatches {
    type Item = Result<arrow_array::RecordBatch, String>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.reader.next()? {
            Ok(batch) => {
                self.read += 1;
                Some(Ok(batch))
            }
            Err(error) if self.validated && error.to_string().contains("unmasked nulls") => {
                let reader = match arrow_ipc::reader::StreamReader::try_new(self.encoded.reader(), None) {
                    Ok(reader) => reader,
                    Err(e) => return Some(Err(format!("the Arrow rows are unreadable: {e}"))),
                };
                // SAFETY: the same stream passed every check up to this
                // batch, and this one every check but the not-null flag of a
                // struct's children; values are read through accessors
                // bounded by each array's own length.
                self.reader = unsafe { reader.with_skip_validation(true) };
                self.validated = false;
                for _ in 0..self.read {
                    if let Some(Err(e)) = self.reader.next() {
                        return Some(Err(format!("the Arrow rows are unreadable: {e}")));
                    }
                }
                self.next()
            }
            Err(error) => Some(Err(format!("the Arrow rows are unreadable: {error}"))),
        }
    }
}
