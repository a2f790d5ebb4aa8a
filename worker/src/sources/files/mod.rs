//! Files of a local directory or an S3 prefix: CSV, JSON lines and Parquet. A model
//! names a file, or a pattern (`exports/customers-*.jsonl`, `*` and `?` within
//! one path segment) whose every match is read in name order, as one result.
//! Each file streams from the store through a blocking reader: nothing holds
//! a file whole, whatever its size.
//!
//! - **CSV**: the first file's header names the columns; every file must have
//!   the same header. Every value is text, an empty field null.
//! - **JSON lines**: one object a line; the first object's keys, in order,
//!   name the columns. A later object without a key reads it as null; one
//!   with a key the first lacked is an error naming the file and line (a
//!   column is never dropped silently). Values keep JSON's types: numbers
//!   without a fraction integers, others floats, strings text, arrays and
//!   objects JSON.
//! - **Parquet** (`parquet.rs`): the first file's schema names the columns,
//!   every file must have the same names; values are typed by their Arrow
//!   type. Read a row group at a time by ranged reads.
//!
//! A gzipped CSV or JSON-lines file (`.csv.gz`, or any name: its first bytes
//! tell) streams decompressed.

#[cfg(feature = "parquet")]
mod parquet;

use super::{Row, RowStream, BATCH_ROWS};
use crate::error::TaskError;
use ebb_shared::config::{FilesSourceConfig, ModelConfig};
use ebb_shared::storage::Storage;
use ebb_shared::value::{Column, Value};
use std::io::BufRead;
use tokio::sync::mpsc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Csv,
    JsonLines,
    Parquet,
}

impl Format {
    fn of(model: &ModelConfig, key: &str) -> Result<Format, String> {
        // `customers.csv.gz` is a CSV file, gzipped.
        let name = model.format.clone().unwrap_or_else(|| {
            let key = key.strip_suffix(".gz").unwrap_or(key);
            key.rsplit('.').next().unwrap_or_default().to_ascii_lowercase()
        });
        match name.as_str() {
            "csv" => Ok(Format::Csv),
            "jsonl" | "ndjson" | "json" => Ok(Format::JsonLines),
            "parquet" | "pq" => Ok(Format::Parquet),
            other => Err(format!(
                "cannot tell the format of {key} from {other:?}: set the model's `format` to csv, jsonl or parquet"
            )),
        }
    }
}

/// The source's store and the files a model reads, in name order.
async fn files_of(
    source_name: &str,
    config: &FilesSourceConfig,
    model_name: &str,
    model: &ModelConfig,
) -> Result<(Storage, Vec<String>, Format), TaskError> {
    let storage = Storage::open_existing(&config.url).map_err(|e| TaskError::SourceUnreachable {
        source_name: source_name.to_string(),
        reason: e.to_string(),
    })?;
    let pattern = model.file.as_deref().unwrap_or_default().trim_start_matches('/');
    let keys = if pattern.contains(['*', '?']) {
        // List below the pattern's fixed leading directories only.
        let fixed = pattern[..pattern.find(['*', '?']).expect("a wildcard")]
            .rsplit_once('/')
            .map(|(dir, _)| dir)
            .unwrap_or("");
        let listed = storage.list(fixed).await.map_err(|e| TaskError::SourceUnreachable {
            source_name: source_name.to_string(),
            reason: e.to_string(),
        })?;
        listed.into_iter().filter(|key| matches_pattern(pattern, key)).collect()
    } else {
        vec![pattern.to_string()]
    };
    let Some(first) = keys.first() else {
        return Err(TaskError::Query {
            model: model_name.to_string(),
            reason: format!("no file matches {pattern:?} in {}", config.url),
        });
    };
    let format = Format::of(model, first).map_err(|reason| TaskError::Query {
        model: model_name.to_string(),
        reason,
    })?;
    Ok((storage, keys, format))
}

/// Whether `key` matches `pattern`: `*` any run and `?` any one character,
/// neither crossing a `/`.
fn matches_pattern(pattern: &str, key: &str) -> bool {
    fn matches(pattern: &[u8], key: &[u8]) -> bool {
        match (pattern.first(), key.first()) {
            (None, None) => true,
            (Some(b'*'), _) => {
                matches(&pattern[1..], key) || (key.first().is_some_and(|c| *c != b'/') && matches(pattern, &key[1..]))
            }
            (Some(b'?'), Some(c)) if *c != b'/' => matches(&pattern[1..], &key[1..]),
            (Some(p), Some(c)) if p == c => matches(&pattern[1..], &key[1..]),
            _ => false,
        }
    }
    matches(pattern.as_bytes(), key.as_bytes())
}

/// A file's bytes as they stream from the store, and whether they are gzipped
/// (told by the first bytes, whatever the file's name).
struct FileBytes {
    raw: std::io::BufReader<Box<dyn std::io::Read + Send>>,
    gzipped: bool,
}

impl FileBytes {
    /// The file's text as a blocking reader, decompressed if need be. Called
    /// on the blocking thread that reads it: a gzip decoder reads the
    /// member's header as it is made.
    fn into_text(self) -> Box<dyn BufRead + Send> {
        if self.gzipped {
            // Multi-member: exports are often gzip members written one after another.
            Box::new(std::io::BufReader::with_capacity(
                256 << 10,
                flate2::bufread::MultiGzDecoder::new(self.raw),
            ))
        } else {
            Box::new(self.raw)
        }
    }
}

async fn reader(storage: &Storage, key: &str) -> Result<FileBytes, String> {
    use futures::{StreamExt, TryStreamExt};
    let mut stream = storage
        .get_stream(key)
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| std::io::Error::other(e.to_string()));
    let mut head = Vec::new();
    while head.len() < GZIP_MAGIC.len() {
        match stream.try_next().await.map_err(|e| e.to_string())? {
            Some(piece) => head.extend_from_slice(&piece),
            None => break,
        }
    }
    let gzipped = head.starts_with(&GZIP_MAGIC);
    let stream = futures::stream::iter([Ok(bytes::Bytes::from(head))]).chain(stream);
    let bridge: Box<dyn std::io::Read + Send> = Box::new(tokio_util::io::SyncIoBridge::new(
        tokio_util::io::StreamReader::new(stream),
    ));
    Ok(FileBytes {
        raw: std::io::BufReader::with_capacity(256 << 10, bridge),
        gzipped,
    })
}

/// The first bytes of every gzip member (RFC 1952): never the start of a
/// CSV or JSON text, as 0x8b begins no UTF-8 character.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

pub(super) async fn describe(
    source_name: &str,
    config: &FilesSourceConfig,
    model_name: &str,
    model: &ModelConfig,
) -> Result<Vec<Column>, TaskError> {
    let (storage, keys, format) = files_of(source_name, config, model_name, model).await?;
    if format == Format::Parquet {
        return describe_parquet(source_name, &storage, &keys[0]).await;
    }
    // The first file's header or first object only: no reading task.
    let (names, _) = first_file(source_name, &storage, &keys[0], format).await?;
    Ok(columns(&names, format))
}

/// A Parquet model's columns, from its first file's footer only.
#[cfg(feature = "parquet")]
async fn describe_parquet(source_name: &str, storage: &Storage, first_key: &str) -> Result<Vec<Column>, TaskError> {
    let (_, schema) = first_parquet(source_name, storage, first_key).await?;
    Ok(parquet::columns(&schema))
}

#[cfg(not(feature = "parquet"))]
async fn describe_parquet(source_name: &str, _: &Storage, _: &str) -> Result<Vec<Column>, TaskError> {
    Err(no_parquet(source_name))
}

#[cfg(not(feature = "parquet"))]
async fn open_parquet(source_name: &str, _: Storage, _: Vec<String>) -> Result<RowStream, TaskError> {
    Err(no_parquet(source_name))
}

/// What a build without the `parquet` feature says of a Parquet model.
#[cfg(not(feature = "parquet"))]
fn no_parquet(source_name: &str) -> TaskError {
    TaskError::SourceRead {
        source_name: source_name.to_string(),
        reason: "this build of Ebb reads no Parquet files: build it with the `parquet` feature (on by default)".into(),
    }
}

/// The first Parquet file of a model, and its schema.
#[cfg(feature = "parquet")]
async fn first_parquet(
    source_name: &str,
    storage: &Storage,
    key: &str,
) -> Result<(parquet::ParquetObject, arrow_schema::SchemaRef), TaskError> {
    let (storage, key, runtime) = (storage.clone(), key.to_string(), tokio::runtime::Handle::current());
    tokio::task::spawn_blocking(move || {
        let object = parquet::ParquetObject::open(&storage, &key, &runtime)?;
        let schema = object.schema()?;
        Ok((object, schema))
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|read| read)
    .map_err(|reason: String| TaskError::SourceRead {
        source_name: source_name.to_string(),
        reason,
    })
}

/// Streams the Parquet files of a model, one after another, from a blocking
/// thread.
#[cfg(feature = "parquet")]
async fn open_parquet(source_name: &str, storage: Storage, keys: Vec<String>) -> Result<RowStream, TaskError> {
    let (first, schema) = first_parquet(source_name, &storage, &keys[0]).await?;
    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let (sender, stream) = RowStream::channel(parquet::columns(&schema));
    let runtime = tokio::runtime::Handle::current();
    let source_name = source_name.to_string();
    tokio::task::spawn_blocking(move || {
        let mut pending = Some(first);
        for key in &keys {
            let object = match pending.take() {
                Some(object) => Ok(object),
                None => parquet::ParquetObject::open(&storage, key, &runtime),
            };
            let outcome = object.and_then(|object| parquet::read(&source_name, object, &names, BATCH_ROWS, &sender));
            match outcome {
                Ok(true) => {}
                Ok(false) => return,
                Err(reason) => {
                    let _ = sender.blocking_send(Err(TaskError::SourceRead {
                        source_name: source_name.clone(),
                        reason,
                    }));
                    return;
                }
            }
        }
    });
    Ok(stream)
}

/// The column names of a CSV or JSON-lines model, from its first file, and
/// that file positioned where its rows start.
async fn first_file(
    source_name: &str,
    storage: &Storage,
    first_key: &str,
    format: Format,
) -> Result<(Vec<String>, Box<dyn BufRead + Send>), TaskError> {
    let first = reader(storage, first_key)
        .await
        .map_err(|reason| TaskError::SourceUnreachable {
            source_name: source_name.to_string(),
            reason: format!("{first_key}: {reason}"),
        })?;
    let first_key = first_key.to_string();
    tokio::task::spawn_blocking(move || columns_of(first.into_text(), format, &first_key))
        .await
        .map_err(|e| e.to_string())
        .and_then(|read| read)
        .map_err(|reason| TaskError::SourceRead {
            source_name: source_name.to_string(),
            reason,
        })
}

fn columns(names: &[String], format: Format) -> Vec<Column> {
    names
        .iter()
        .map(|name| Column {
            name: name.clone(),
            source_type: match format {
                Format::Csv => "text".to_string(),
                Format::JsonLines | Format::Parquet => "json".to_string(),
            },
        })
        .collect()
}

pub(super) async fn open(
    source_name: &str,
    config: &FilesSourceConfig,
    model_name: &str,
    model: &ModelConfig,
) -> Result<RowStream, TaskError> {
    let (storage, keys, format) = files_of(source_name, config, model_name, model).await?;
    if format == Format::Parquet {
        return open_parquet(source_name, storage, keys).await;
    }
    let (names, first) = first_file(source_name, &storage, &keys[0], format).await?;
    let read_failed = {
        let source_name = source_name.to_string();
        move |reason: String| TaskError::SourceRead {
            source_name: source_name.clone(),
            reason,
        }
    };
    let (sender, stream) = RowStream::channel(columns(&names, format));
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut pending = Some(first);
        for key in &keys {
            let file = match pending.take() {
                Some(file) => file,
                None => match runtime.block_on(reader(&storage, key)).map(FileBytes::into_text) {
                    Ok(file) => file,
                    Err(reason) => {
                        let _ = sender.blocking_send(Err(read_failed(format!("{key}: {reason}"))));
                        return;
                    }
                },
            };
            let outcome = match format {
                Format::Csv => read_csv(file, key, &names, &sender),
                Format::JsonLines => read_json_lines(file, key, &names, &sender),
                Format::Parquet => unreachable!("Parquet files are read by open_parquet"),
            };
            match outcome {
                Ok(true) => {}
                Ok(false) => return,
                Err(reason) => {
                    let _ = sender.blocking_send(Err(read_failed(reason)));
                    return;
                }
            }
        }
    });
    Ok(stream)
}

/// The column names of a file, and the file positioned at its first row
/// (for JSON lines, again at its start: the first object is a row too).
fn columns_of(
    mut file: Box<dyn BufRead + Send>,
    format: Format,
    key: &str,
) -> Result<(Vec<String>, Box<dyn BufRead + Send>), String> {
    match format {
        Format::Csv => {
            let mut header = String::new();
            file.read_line(&mut header).map_err(|e| format!("{key}: {e}"))?;
            let names = csv_header(&header).map_err(|e| format!("{key}: the header: {e}"))?;
            if names.is_empty() {
                return Err(format!("{key} is empty: a CSV file starts with its header"));
            }
            // The header line is consumed; the reader goes on from row 1.
            Ok((
                names,
                Box::new(HeaderAgain {
                    header: Some(header),
                    rest: file,
                }),
            ))
        }
        Format::JsonLines => {
            let mut line = String::new();
            while line.trim().is_empty() {
                line.clear();
                if file.read_line(&mut line).map_err(|e| format!("{key}: {e}"))? == 0 {
                    return Err(format!("{key} has no JSON object to name the columns"));
                }
            }
            let KeysInOrder(names) =
                serde_json::from_str(&line).map_err(|e| format!("{key}, line 1: not a JSON object: {e}"))?;
            Ok((
                names,
                Box::new(std::io::Read::chain(std::io::Cursor::new(line.into_bytes()), file)),
            ))
        }
        Format::Parquet => unreachable!("a Parquet file's columns come from its footer"),
    }
}

/// An object's keys in the order it writes them (a parsed `Map` sorts them).
struct KeysInOrder(Vec<String>);

impl<'de> serde::Deserialize<'de> for KeysInOrder {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Keys;
        impl<'de> serde::de::Visitor<'de> for Keys {
            type Value = KeysInOrder;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<KeysInOrder, A::Error> {
                let mut keys: Vec<String> = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    if !keys.contains(&key) {
                        keys.push(key);
                    }
                }
                Ok(KeysInOrder(keys))
            }
        }
        deserializer.deserialize_map(Keys)
    }
}

/// A reader that gives the header line back before the rest, so the CSV
/// reader checks every file's header the same way.
struct HeaderAgain {
    header: Option<String>,
    rest: Box<dyn BufRead + Send>,
}

impl std::io::Read for HeaderAgain {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.fill_buf()?.len().min(out.len());
        out[..n].copy_from_slice(&self.fill_buf()?[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for HeaderAgain {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        match &self.header {
            Some(header) if !header.is_empty() => Ok(header.as_bytes()),
            _ => self.rest.fill_buf(),
        }
    }

    fn consume(&mut self, amount: usize) {
        match &mut self.header {
            Some(header) if !header.is_empty() => {
                header.drain(..amount.min(header.len()));
            }
            _ => self.rest.consume(amount),
        }
    }
}

fn csv_header(line: &str) -> Result<Vec<String>, csv::Error> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(line.as_bytes());
    let mut record = csv::StringRecord::new();
    reader.read_record(&mut record)?;
    Ok(record.iter().map(|name| name.trim().to_string()).collect())
}

/// Hands a batch over; `false` when extraction stopped listening.
fn hand_over(batch: &mut Vec<Row>, sender: &mpsc::Sender<Result<super::Batch, TaskError>>) -> bool {
    let full = std::mem::replace(batch, Vec::with_capacity(BATCH_ROWS));
    full.is_empty() || sender.blocking_send(Ok(full.into())).is_ok()
}

fn read_csv(
    file: Box<dyn BufRead + Send>,
    key: &str,
    names: &[String],
    sender: &mpsc::Sender<Result<super::Batch, TaskError>>,
) -> Result<bool, String> {
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(file);
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| format!("{key}: the header: {e}"))?
        .iter()
        .map(|name| name.trim().to_string())
        .collect();
    if header != names {
        return Err(format!(
            "{key} has the columns {} where the first file has {}: every file of a model has the same header",
            header.join(", "),
            names.join(", ")
        ));
    }
    let mut batch = Vec::with_capacity(BATCH_ROWS);
    for record in reader.records() {
        let record = record.map_err(|e| format!("{key}: {e}"))?;
        batch.push(super::csv::row_of(&record));
        if batch.len() >= BATCH_ROWS && !hand_over(&mut batch, sender) {
            return Ok(false);
        }
    }
    Ok(hand_over(&mut batch, sender))
}

fn read_json_lines(
    file: Box<dyn BufRead + Send>,
    key: &str,
    names: &[String],
    sender: &mpsc::Sender<Result<super::Batch, TaskError>>,
) -> Result<bool, String> {
    let mut batch = Vec::with_capacity(BATCH_ROWS);
    for (number, line) in file.lines().enumerate() {
        let line = line.map_err(|e| format!("{key}, line {}: {e}", number + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let mut object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&line).map_err(|e| format!("{key}, line {}: not a JSON object: {e}", number + 1))?;
        let row: Row = names.iter().map(|name| json_value(object.remove(name))).collect();
        if let Some(extra) = object.keys().next() {
            return Err(format!(
                "{key}, line {}: field {extra:?} is not a column (the columns are the first object's keys: {})",
                number + 1,
                names.join(", ")
            ));
        }
        batch.push(row);
        if batch.len() >= BATCH_ROWS && !hand_over(&mut batch, sender) {
            return Ok(false);
        }
    }
    Ok(hand_over(&mut batch, sender))
}

fn json_value(value: Option<serde_json::Value>) -> Value {
    match value {
        None | Some(serde_json::Value::Null) => Value::Null,
        Some(serde_json::Value::Bool(flag)) => Value::Bool(flag),
        Some(serde_json::Value::Number(number)) => match number.as_i64() {
            Some(int) => Value::Int(int),
            None => match number.as_f64() {
                Some(float) if number.is_f64() => Value::Float(float),
                _ => Value::Decimal(number.to_string()),
            },
        },
        Some(serde_json::Value::String(text)) => Value::Text(text),
        Some(other) => Value::Json(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_within_a_segment() {
        assert!(matches_pattern(
            "exports/customers-*.jsonl",
            "exports/customers-2024-06-01.jsonl"
        ));
        assert!(!matches_pattern(
            "exports/customers-*.jsonl",
            "exports/customers-1/x.jsonl"
        ));
        assert!(matches_pattern("*/part-?.csv", "a/part-1.csv"));
        assert!(!matches_pattern("*.csv", "a/b.csv"));
        assert!(matches_pattern("people.csv", "people.csv"));
    }

    #[test]
    fn json_values_keep_their_types() {
        assert_eq!(json_value(Some(serde_json::json!(7))), Value::Int(7));
        assert_eq!(json_value(Some(serde_json::json!(1.5))), Value::Float(1.5));
        assert_eq!(
            json_value(Some(serde_json::json!(18446744073709551615u64))),
            Value::Decimal("18446744073709551615".into())
        );
        assert_eq!(
            json_value(Some(serde_json::json!({"a": 1}))),
            Value::Json(serde_json::json!({"a": 1}))
        );
        assert_eq!(json_value(None), Value::Null);
    }
}
