//! Parquet files, read a row group at a time through ranged reads of the
//! store: the footer first, then each row group's bytes in one request as
//! the reader reaches it, so a file is never held whole, whatever its size,
//! and an object store is asked once per row group, not once per page.
//!
//! Columns are typed by their Arrow type, so a column reads the same way on
//! every run:
//!
//! | Parquet / Arrow | Ebb value |
//! |---|---|
//! | integers (8–64 bit, signed or not) | integer (decimal text beyond 64 bits) |
//! | float, double | float |
//! | decimal | decimal, exactly its scale's digits (integer at scale 0) |
//! | boolean | boolean |
//! | string (plain or dictionary-encoded) | text |
//! | binary, fixed-size binary | bytes |
//! | date | timestamp `YYYY-MM-DD` |
//! | time | timestamp `HH:MM:SS[.f]` |
//! | timestamp without zone (local) | timestamp `YYYY-MM-DDTHH:MM:SS[.f]` |
//! | timestamp adjusted to UTC | timestamp `…Z` |
//! | list, struct, map | JSON |

use crate::sources::snowflake::values::{date, integer, scaled_integer, string, time_of_day, timestamp};
use crate::sources::{Batch, Row};
use crate::TaskError;
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Date64Type, Decimal128Type, Decimal256Type, Float32Type, Float64Type, Time32MillisecondType,
    Time32SecondType, Time64MicrosecondType, Time64NanosecondType, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, SchemaRef, TimeUnit};
use bytes::{Buf, Bytes};
use ebb_shared::storage::Storage;
use ebb_shared::value::{Column, Value};
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::errors::ParquetError;
use parquet::file::reader::{ChunkReader, Length};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::mpsc;

/// Bytes a page-header read fetches ahead at once.
const READ_AHEAD: u64 = 256 << 10;

/// One Parquet object, read by ranges from a blocking thread. Its clones
/// (the reader keeps one per column) share what was fetched.
#[derive(Clone)]
pub(super) struct ParquetObject {
    storage: Storage,
    key: String,
    size: u64,
    runtime: tokio::runtime::Handle,
    /// Where each row group's column chunks lie, once the footer is read.
    row_groups: Arc<OnceLock<Vec<std::ops::Range<u64>>>>,
    /// The row group being read: where it starts, and its bytes.
    window: Arc<Mutex<Option<(u64, Bytes)>>>,
    /// The footer, read once: describing the first file and then reading it
    /// fetch it one time.
    footer: Arc<OnceLock<ArrowReaderMetadata>>,
}

impl ParquetObject {
    /// Called on a blocking thread: it waits for the store on `runtime`.
    pub(super) fn open(storage: &Storage, key: &str, runtime: &tokio::runtime::Handle) -> Result<Self, String> {
        let size = runtime.block_on(storage.size(key)).map_err(|e| format!("{key}: {e}"))?;
        Ok(ParquetObject {
            storage: storage.clone(),
            key: key.to_string(),
            size,
            runtime: runtime.clone(),
            row_groups: Arc::default(),
            window: Arc::default(),
            footer: Arc::default(),
        })
    }

    /// Bytes `range`: from the row group in hand, or by fetching the whole
    /// row group they lie in (dropping the previous one), or, outside every
    /// row group (the footer), as asked.
    fn fetch(&self, range: std::ops::Range<u64>) -> parquet::errors::Result<Bytes> {
        let within = |start: u64, bytes: &Bytes| range.start >= start && range.end <= start + bytes.len() as u64;
        let mut window = self.window.lock().expect("no panic while holding the window");
        if let Some((start, bytes)) = window.as_ref().filter(|(start, bytes)| within(*start, bytes)) {
            return Ok(bytes.slice((range.start - start) as usize..(range.end - start) as usize));
        }
        let row_group = self
            .row_groups
            .get()
            .and_then(|spans| {
                spans
                    .iter()
                    .find(|span| span.start <= range.start && range.end <= span.end)
            })
            .cloned();
        let Some(span) = row_group else {
            return self.get_range(range);
        };
        *window = None;
        let bytes = self.get_range(span.clone())?;
        let part = bytes.slice((range.start - span.start) as usize..(range.end - span.start) as usize);
        *window = Some((span.start, bytes));
        Ok(part)
    }

    fn get_range(&self, range: std::ops::Range<u64>) -> parquet::errors::Result<Bytes> {
        self.runtime
            .block_on(self.storage.get_range(&self.key, range))
            .map_err(|e| ParquetError::External(Box::new(e)))
    }

    /// Notes where each row group's column chunks lie, from the footer.
    fn learn_row_groups(&self, metadata: &parquet::file::metadata::ParquetMetaData) {
        let spans = metadata
            .row_groups()
            .iter()
            .filter_map(|row_group| {
                let ranges = row_group.columns().iter().map(|column| {
                    let (start, length) = column.byte_range();
                    start..start + length
                });
                ranges.reduce(|a, b| a.start.min(b.start)..a.end.max(b.end))
            })
            .collect();
        let _ = self.row_groups.set(spans);
    }

    /// The file's footer: its schema and where its row groups lie.
    fn footer(&self) -> Result<ArrowReaderMetadata, String> {
        if let Some(footer) = self.footer.get() {
            return Ok(footer.clone());
        }
        let footer = ArrowReaderMetadata::load(self, ArrowReaderOptions::default())
            .map_err(|e| format!("{}: not a Parquet file Ebb can read: {e}", self.key))?;
        self.learn_row_groups(footer.metadata());
        Ok(self.footer.get_or_init(|| footer).clone())
    }

    /// The file's column names and Arrow types, from its footer.
    pub(super) fn schema(&self) -> Result<SchemaRef, String> {
        self.footer().map(|footer| footer.schema().clone())
    }
}

impl Length for ParquetObject {
    fn len(&self) -> u64 {
        self.size
    }
}

impl ChunkReader for ParquetObject {
    type T = RangeReader;

    fn get_read(&self, start: u64) -> parquet::errors::Result<RangeReader> {
        Ok(RangeReader {
            object: self.clone(),
            position: start,
            buffered: Bytes::new(),
        })
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        self.fetch(start..start + length as u64)
    }
}

/// Reads an object from `position` on, `READ_AHEAD` bytes at a time.
pub(super) struct RangeReader {
    object: ParquetObject,
    position: u64,
    buffered: Bytes,
}

impl std::io::Read for RangeReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.buffered.is_empty() {
            let end = (self.position + READ_AHEAD).min(self.object.size);
            if end <= self.position {
                return Ok(0);
            }
            self.buffered = self.object.fetch(self.position..end).map_err(std::io::Error::other)?;
            self.position = end;
        }
        let count = out.len().min(self.buffered.len());
        self.buffered.copy_to_slice(&mut out[..count]);
        Ok(count)
    }
}

/// A file's columns as a model shows them: name and Arrow type.
pub(super) fn columns(schema: &SchemaRef) -> Vec<Column> {
    schema
        .fields()
        .iter()
        .map(|field| Column {
            name: field.name().clone(),
            source_type: field.data_type().to_string(),
        })
        .collect()
}

/// Sends the rows of one file, a record batch at a time, parsed later on
/// extraction's threads. False when the reader is gone.
pub(super) fn read(
    source_name: &str,
    object: ParquetObject,
    names: &[String],
    batch_rows: usize,
    sender: &mpsc::Sender<Result<Batch, TaskError>>,
) -> Result<bool, String> {
    let key = object.key.clone();
    let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(object.clone(), object.footer()?);
    let found: Vec<String> = builder.schema().fields().iter().map(|f| f.name().clone()).collect();
    if found != names {
        return Err(format!(
            "{key} has columns {} where the first file has {}: every file of a model has the same columns",
            found.join(", "),
            names.join(", ")
        ));
    }
    let batches = builder
        .with_batch_size(batch_rows)
        .build()
        .map_err(|e| format!("{key}: {e}"))?;
    for batch in batches {
        let batch = batch.map_err(|e| format!("{key}: {e}"))?;
        let (key, source_name) = (key.clone(), source_name.to_string());
        let parse = move || {
            rows_of(&batch).map_err(|reason| TaskError::SourceRead {
                source_name,
                reason: format!("{key}: {reason}"),
            })
        };
        if sender.blocking_send(Ok(Batch::Unparsed(Box::new(parse)))).is_err() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Every row of a record batch as typed values.
pub(super) fn rows_of(batch: &RecordBatch) -> Result<Vec<Row>, String> {
    let fields = batch.schema();
    (0..batch.num_rows())
        .map(|row| {
            batch
                .columns()
                .iter()
                .zip(fields.fields())
                .map(|(array, field)| {
                    value(array, row).map_err(|reason| format!("column {:?}: {reason}", field.name()))
                })
                .collect()
        })
        .collect()
}

/// Row `row` of an Arrow column, typed by the column's Arrow type alone.
pub(super) fn value(array: &ArrayRef, row: usize) -> Result<Value, String> {
    if array.is_null(row) {
        return Ok(Value::Null);
    }
    if let Some(int) = integer(array, row) {
        return Ok(Value::Int(int));
    }
    if let Some(text) = string(array, row) {
        return Ok(Value::Text(text.to_string()));
    }
    Ok(match array.data_type() {
        DataType::Null => Value::Null,
        DataType::Boolean => Value::Bool(array.as_boolean().value(row)),
        DataType::UInt8 => Value::Int(array.as_primitive::<UInt8Type>().value(row).into()),
        DataType::UInt16 => Value::Int(array.as_primitive::<UInt16Type>().value(row).into()),
        DataType::UInt32 => Value::Int(array.as_primitive::<UInt32Type>().value(row).into()),
        DataType::UInt64 => {
            let unsigned = array.as_primitive::<UInt64Type>().value(row);
            i64::try_from(unsigned).map_or_else(|_| Value::Decimal(unsigned.to_string()), Value::Int)
        }
        DataType::Float32 => Value::Float(array.as_primitive::<Float32Type>().value(row).into()),
        DataType::Float64 => Value::Float(array.as_primitive::<Float64Type>().value(row)),
        DataType::Decimal128(_, scale) => scaled_integer(
            array.as_primitive::<Decimal128Type>().value(row),
            (*scale).max(0) as u32,
        ),
        DataType::Decimal256(..) => Value::Decimal(array.as_primitive::<Decimal256Type>().value_as_string(row)),
        DataType::Binary => Value::Bytes(array.as_binary::<i32>().value(row).to_vec()),
        DataType::LargeBinary => Value::Bytes(array.as_binary::<i64>().value(row).to_vec()),
        DataType::BinaryView => Value::Bytes(array.as_binary_view().value(row).to_vec()),
        DataType::FixedSizeBinary(_) => Value::Bytes(array.as_fixed_size_binary().value(row).to_vec()),
        DataType::Date32 => Value::Timestamp(date(array.as_primitive::<Date32Type>().value(row).into())?),
        DataType::Date64 => Value::Timestamp(date(
            array.as_primitive::<Date64Type>().value(row).div_euclid(86_400_000),
        )?),
        DataType::Time32(unit) => {
            let nanos = match unit {
                TimeUnit::Second => i64::from(array.as_primitive::<Time32SecondType>().value(row)) * 1_000_000_000,
                _ => i64::from(array.as_primitive::<Time32MillisecondType>().value(row)) * 1_000_000,
            };
            Value::Timestamp(time_of_day(nanos, digits(unit)))
        }
        DataType::Time64(unit) => {
            let nanos = match unit {
                TimeUnit::Microsecond => array.as_primitive::<Time64MicrosecondType>().value(row) * 1_000,
                _ => array.as_primitive::<Time64NanosecondType>().value(row),
            };
            Value::Timestamp(time_of_day(nanos, digits(unit)))
        }
        DataType::Timestamp(unit, zone) => {
            let (scaled, per_second) = match unit {
                TimeUnit::Second => (array.as_primitive::<TimestampSecondType>().value(row), 1),
                TimeUnit::Millisecond => (array.as_primitive::<TimestampMillisecondType>().value(row), 1_000),
                TimeUnit::Microsecond => (array.as_primitive::<TimestampMicrosecondType>().value(row), 1_000_000),
                TimeUnit::Nanosecond => (
                    array.as_primitive::<TimestampNanosecondType>().value(row),
                    1_000_000_000,
                ),
            };
            let seconds = scaled.div_euclid(per_second);
            let nanos = scaled.rem_euclid(per_second) * (1_000_000_000 / per_second);
            // A zone means the instant is UTC-adjusted: written in UTC.
            Value::Timestamp(timestamp(seconds, nanos, zone.as_ref().map(|_| 0), digits(unit))?)
        }
        DataType::Dictionary(..) => {
            let dictionary = array.as_any_dictionary();
            let index = dictionary.normalized_keys()[row];
            return value(dictionary.values(), index);
        }
        DataType::List(_)
        | DataType::LargeList(_)
        | DataType::FixedSizeList(..)
        | DataType::Struct(_)
        | DataType::Map(..) => Value::Json(json(array, row)?),
        other => return Err(format!("Arrow type {other} is not one Ebb reads")),
    })
}

/// Digits after the second a time unit carries.
fn digits(unit: &TimeUnit) -> u32 {
    match unit {
        TimeUnit::Second => 0,
        TimeUnit::Millisecond => 3,
        TimeUnit::Microsecond => 6,
        TimeUnit::Nanosecond => 9,
    }
}

/// A nested value (list, struct, map) as JSON, its leaves typed as columns are.
fn json(array: &ArrayRef, row: usize) -> Result<serde_json::Value, String> {
    if array.is_null(row) {
        return Ok(serde_json::Value::Null);
    }
    let items = |items: ArrayRef| -> Result<serde_json::Value, String> {
        (0..items.len())
            .map(|i| json(&items, i))
            .collect::<Result<Vec<_>, _>>()
            .map(serde_json::Value::Array)
    };
    Ok(match array.data_type() {
        DataType::List(_) => items(array.as_list::<i32>().value(row))?,
        DataType::LargeList(_) => items(array.as_list::<i64>().value(row))?,
        DataType::FixedSizeList(..) => items(array.as_fixed_size_list().value(row))?,
        DataType::Struct(fields) => {
            let parts = array.as_struct();
            let mut object = serde_json::Map::new();
            for (field, child) in fields.iter().zip(parts.columns()) {
                object.insert(field.name().clone(), json(child, row)?);
            }
            serde_json::Value::Object(object)
        }
        DataType::Map(..) => {
            let entries = array.as_map().value(row);
            let (keys, values) = (entries.column(0), entries.column(1));
            let mut object = serde_json::Map::new();
            for i in 0..entries.len() {
                let key = match value(keys, i)? {
                    Value::Text(text) => text,
                    other => other.to_json().to_string(),
                };
                object.insert(key, json(values, i)?);
            }
            serde_json::Value::Object(object)
        }
        _ => value(array, row)?.to_json(),
    })
}
