//! Snowflake's result values as Ebb's typed values. A column's `rowtype`
//! (type, scale) decides; the same column reads the same way whether the
//! result came as JSON text or as Arrow, so a switch of format between runs
//! changes no fingerprint.
//!
//! | Snowflake | Ebb value |
//! |---|---|
//! | `FIXED` scale 0 | integer (decimal text beyond 64 bits) |
//! | `FIXED` scale > 0 | decimal, exactly `scale` digits after the point |
//! | `REAL` | float |
//! | `TEXT` | text |
//! | `BOOLEAN` | boolean |
//! | `DATE` | timestamp `YYYY-MM-DD` |
//! | `TIME` | timestamp `HH:MM:SS[.f]`, `scale` digits |
//! | `TIMESTAMP_NTZ` | timestamp `YYYY-MM-DDTHH:MM:SS[.f]`, no zone |
//! | `TIMESTAMP_LTZ` | timestamp in UTC, `…Z` |
//! | `TIMESTAMP_TZ` | timestamp at its own offset, `…+05:00` |
//! | `VARIANT`, `OBJECT`, `ARRAY` | JSON |
//! | `BINARY` | bytes |

use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, Decimal128Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type};
use arrow_array::{Array, ArrayRef, RecordBatch, StructArray};
use arrow_schema::DataType;
use ebb_shared::value::Value;
use serde::Deserialize;

/// One column of a result, as the `rowtype` of Snowflake's answer has it.
#[derive(Debug, Clone, Deserialize)]
pub struct ColumnType {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub scale: Option<i64>,
    #[serde(default)]
    pub precision: Option<i64>,
}

impl ColumnType {
    fn scale(&self) -> u32 {
        self.scale.unwrap_or(0).clamp(0, 9) as u32
    }

    /// The type as `ebb model preview` shows it: `NUMBER(38,0)`, `TEXT`, …
    pub fn display(&self) -> String {
        match self.kind.to_ascii_lowercase().as_str() {
            "fixed" => format!("NUMBER({},{})", self.precision.unwrap_or(38), self.scale.unwrap_or(0)),
            other => other.to_ascii_uppercase(),
        }
    }
}

/// A value of the JSON result format (every cell a string or null).
pub fn from_json(cell: &serde_json::Value, column: &ColumnType) -> Result<Value, String> {
    let text = match cell {
        serde_json::Value::Null => return Ok(Value::Null),
        serde_json::Value::String(text) => text.as_str(),
        other => return Err(format!("a cell that is not text: {other}")),
    };
    let scale = column.scale();
    Ok(match column.kind.to_ascii_lowercase().as_str() {
        "fixed" => fixed(text, scale),
        "real" => Value::Float(parse_float(text)?),
        "boolean" => Value::Bool(matches!(text, "1" | "true" | "TRUE" | "True")),
        "date" => {
            let days: i64 = text.parse().map_err(|e| format!("date {text:?}: {e}"))?;
            Value::Timestamp(date(days)?)
        }
        "time" => {
            let (seconds, nanos) = seconds_and_nanos(text)?;
            Value::Timestamp(time_of_day(seconds * 1_000_000_000 + nanos, scale))
        }
        "timestamp_ntz" => {
            let (seconds, nanos) = seconds_and_nanos(text)?;
            Value::Timestamp(timestamp(seconds, nanos, None, scale)?)
        }
        "timestamp_ltz" => {
            let (seconds, nanos) = seconds_and_nanos(text)?;
            Value::Timestamp(timestamp(seconds, nanos, Some(0), scale)?)
        }
        "timestamp_tz" => {
            // `<epoch seconds>.<fraction> <offset minutes + 1440>`, the epoch in UTC.
            let (instant, offset) = text
                .split_once(' ')
                .ok_or_else(|| format!("TIMESTAMP_TZ {text:?} has no offset"))?;
            let (seconds, nanos) = seconds_and_nanos(instant)?;
            let offset: i64 = offset
                .parse()
                .map_err(|e| format!("TIMESTAMP_TZ offset {offset:?}: {e}"))?;
            Value::Timestamp(timestamp(seconds, nanos, Some(offset - 1440), scale)?)
        }
        "variant" | "object" | "array" | "map" => {
            Value::Json(serde_json::from_str(text).map_err(|e| format!("VARIANT {text:?}: {e}"))?)
        }
        "binary" => Value::Bytes(hex(text)?),
        _ => Value::Text(text.to_string()),
    })
}

/// Row `row` of an Arrow column of the given Snowflake type.
pub fn from_arrow(array: &ArrayRef, row: usize, column: &ColumnType) -> Result<Value, String> {
    if array.is_null(row) {
        return Ok(Value::Null);
    }
    let scale = column.scale();
    let kind = column.kind.to_ascii_lowercase();
    let mismatch = || format!("{} column {:?} came as Arrow {}", kind, column.name, array.data_type());
    Ok(match kind.as_str() {
        "fixed" => match array.data_type() {
            DataType::Decimal128(_, arrow_scale) => {
                let unscaled = array.as_primitive::<Decimal128Type>().value(row);
                scaled_integer(unscaled, (*arrow_scale).max(0) as u32)
            }
            _ => scaled_integer(integer(array, row).ok_or_else(mismatch)?.into(), scale),
        },
        "real" => match array.data_type() {
            DataType::Float64 => Value::Float(array.as_primitive::<Float64Type>().value(row)),
            _ => return Err(mismatch()),
        },
        "boolean" => match array.data_type() {
            DataType::Boolean => Value::Bool(array.as_boolean().value(row)),
            _ => return Err(mismatch()),
        },
        "date" => match array.data_type() {
            DataType::Date32 => Value::Timestamp(date(array.as_primitive::<Date32Type>().value(row).into())?),
            _ => return Err(mismatch()),
        },
        "time" => {
            let scaled = integer(array, row).ok_or_else(mismatch)?;
            Value::Timestamp(time_of_day(scaled * 10i64.pow(9 - scale), scale))
        }
        "timestamp_ntz" | "timestamp_ltz" | "timestamp_tz" => {
            let offset_of_kind = match kind.as_str() {
                "timestamp_ntz" => None,
                _ => Some(0),
            };
            let (seconds, nanos, offset) = match array.data_type() {
                DataType::Struct(_) => {
                    let parts = array.as_struct();
                    let epoch = child_integer(parts, "epoch", row).ok_or_else(mismatch)?;
                    let Some(epoch) = epoch else {
                        // A null whose struct has no validity of its own
                        // (a writer's quirk): the epoch says it.
                        return Ok(Value::Null);
                    };
                    let offset = child_integer(parts, "timezone", row).flatten().map(|tz| tz - 1440);
                    match child_integer(parts, "fraction", row).flatten() {
                        Some(fraction) => (epoch, fraction, offset),
                        // Without a fraction the epoch is scaled by 10^scale.
                        None => split_scaled(epoch, scale)
                            .map(|(s, n)| (s, n, offset))
                            .ok_or_else(mismatch)?,
                    }
                }
                _ => {
                    let scaled = integer(array, row).ok_or_else(mismatch)?;
                    let (seconds, nanos) = split_scaled(scaled, scale).ok_or_else(mismatch)?;
                    (seconds, nanos, None)
                }
            };
            let offset = if kind == "timestamp_tz" {
                offset.or(Some(0))
            } else {
                offset_of_kind
            };
            Value::Timestamp(timestamp(seconds, nanos, offset, scale)?)
        }
        "variant" | "object" | "array" | "map" => {
            let text = string(array, row).ok_or_else(mismatch)?;
            Value::Json(serde_json::from_str(text).map_err(|e| format!("VARIANT {text:?}: {e}"))?)
        }
        "binary" => match array.data_type() {
            DataType::Binary => Value::Bytes(array.as_binary::<i32>().value(row).to_vec()),
            DataType::LargeBinary => Value::Bytes(array.as_binary::<i64>().value(row).to_vec()),
            _ => return Err(mismatch()),
        },
        _ => Value::Text(string(array, row).ok_or_else(mismatch)?.to_string()),
    })
}

/// Every row of a record batch, its columns typed by the result's rowtype.
pub fn rows_of_batch(batch: &RecordBatch, columns: &[ColumnType]) -> Result<Vec<Vec<Value>>, String> {
    if batch.num_columns() != columns.len() {
        return Err(format!(
            "an Arrow batch has {} columns where the result has {}",
            batch.num_columns(),
            columns.len()
        ));
    }
    (0..batch.num_rows())
        .map(|row| {
            columns
                .iter()
                .zip(batch.columns())
                .map(|(column, array)| {
                    from_arrow(array, row, column).map_err(|reason| format!("column {:?}: {reason}", column.name))
                })
                .collect()
        })
        .collect()
}

pub(crate) fn integer(array: &ArrayRef, row: usize) -> Option<i64> {
    Some(match array.data_type() {
        DataType::Int8 => array.as_primitive::<Int8Type>().value(row).into(),
        DataType::Int16 => array.as_primitive::<Int16Type>().value(row).into(),
        DataType::Int32 => array.as_primitive::<Int32Type>().value(row).into(),
        DataType::Int64 => array.as_primitive::<Int64Type>().value(row),
        _ => return None,
    })
}

/// A struct's integer child at `row`: `None` when there is no such child,
/// `Some(None)` when it is null there.
fn child_integer(parts: &StructArray, name: &str, row: usize) -> Option<Option<i64>> {
    let child = parts.column_by_name(name)?;
    if child.is_null(row) {
        return Some(None);
    }
    integer(child, row).map(Some)
}

pub(crate) fn string(array: &ArrayRef, row: usize) -> Option<&str> {
    match array.data_type() {
        DataType::Utf8 => Some(array.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => Some(array.as_string::<i64>().value(row)),
        DataType::Utf8View => Some(array.as_string_view().value(row)),
        _ => None,
    }
}

/// `FIXED` from its decimal text: an integer when its scale is 0 and it fits.
fn fixed(text: &str, scale: u32) -> Value {
    if scale == 0 {
        if let Ok(int) = text.parse::<i64>() {
            return Value::Int(int);
        }
        return Value::Decimal(text.to_string());
    }
    // Exactly `scale` digits, whichever way the text came.
    match text.split_once('.') {
        Some((whole, fraction)) if fraction.len() == scale as usize => Value::Decimal(format!("{whole}.{fraction}")),
        Some((whole, fraction)) => {
            let mut fraction = fraction.to_string();
            fraction.truncate(scale as usize);
            Value::Decimal(format!("{whole}.{fraction:0<width$}", width = scale as usize))
        }
        None => Value::Decimal(format!("{text}.{}", "0".repeat(scale as usize))),
    }
}

/// An integer holding `value × 10^scale` as `FIXED` text.
pub(crate) fn scaled_integer(unscaled: i128, scale: u32) -> Value {
    if scale == 0 {
        return match i64::try_from(unscaled) {
            Ok(int) => Value::Int(int),
            Err(_) => Value::Decimal(unscaled.to_string()),
        };
    }
    let digits = unscaled.unsigned_abs().to_string();
    let digits = format!("{digits:0>width$}", width = scale as usize + 1);
    let (whole, fraction) = digits.split_at(digits.len() - scale as usize);
    let sign = if unscaled < 0 { "-" } else { "" };
    Value::Decimal(format!("{sign}{whole}.{fraction}"))
}

fn parse_float(text: &str) -> Result<f64, String> {
    match text {
        "NaN" | "nan" => Ok(f64::NAN),
        "inf" | "Infinity" => Ok(f64::INFINITY),
        "-inf" | "-Infinity" => Ok(f64::NEG_INFINITY),
        _ => text.parse().map_err(|e| format!("float {text:?}: {e}")),
    }
}

/// `"-1.5"` → (-2, 500000000): the whole value is signed, the fraction counts
/// up from the floor, as Snowflake writes epochs before 1970.
fn seconds_and_nanos(text: &str) -> Result<(i64, i64), String> {
    let negative = text.starts_with('-');
    let unsigned = text.trim_start_matches('-');
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let whole: i64 = whole.parse().map_err(|e| format!("time {text:?}: {e}"))?;
    let mut digits = fraction.to_string();
    digits.truncate(9);
    let nanos: i64 = format!("{digits:0<9}")
        .parse()
        .map_err(|e| format!("time {text:?}: {e}"))?;
    Ok(match (negative, nanos) {
        (false, _) => (whole, nanos),
        (true, 0) => (-whole, 0),
        (true, _) => (-whole - 1, 1_000_000_000 - nanos),
    })
}

/// A value scaled by 10^scale as (seconds, nanoseconds).
fn split_scaled(scaled: i64, scale: u32) -> Option<(i64, i64)> {
    let unit = 10i64.pow(scale);
    Some((scaled.div_euclid(unit), scaled.rem_euclid(unit) * 10i64.pow(9 - scale)))
}

pub(crate) fn date(days: i64) -> Result<String, String> {
    let day = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)
        .and_then(|epoch| epoch.checked_add_signed(chrono::TimeDelta::days(days)))
        .ok_or_else(|| format!("date {days} days from 1970 is out of range"))?;
    Ok(day.format("%Y-%m-%d").to_string())
}

fn fraction(nanos: i64, scale: u32) -> String {
    if scale == 0 {
        return String::new();
    }
    let digits = format!("{nanos:09}");
    format!(".{}", &digits[..scale as usize])
}

pub(crate) fn time_of_day(nanos: i64, scale: u32) -> String {
    let seconds = nanos.div_euclid(1_000_000_000);
    format!(
        "{:02}:{:02}:{:02}{}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60,
        fraction(nanos.rem_euclid(1_000_000_000), scale)
    )
}

/// An instant as ISO-8601: wall time without zone (`None`), or at the offset
/// in minutes (`Z` for UTC).
pub(crate) fn timestamp(seconds: i64, nanos: i64, offset_minutes: Option<i64>, scale: u32) -> Result<String, String> {
    let utc = chrono::DateTime::from_timestamp(seconds, nanos as u32)
        .ok_or_else(|| format!("timestamp {seconds}.{nanos:09} is out of range"))?;
    let Some(offset_minutes) = offset_minutes else {
        return Ok(format!("{}{}", utc.format("%Y-%m-%dT%H:%M:%S"), fraction(nanos, scale)));
    };
    if offset_minutes == 0 {
        return Ok(format!(
            "{}{}Z",
            utc.format("%Y-%m-%dT%H:%M:%S"),
            fraction(nanos, scale)
        ));
    }
    let zone = chrono::FixedOffset::east_opt((offset_minutes * 60) as i32)
        .ok_or_else(|| format!("offset of {offset_minutes} minutes is out of range"))?;
    let local = utc.with_timezone(&zone);
    Ok(format!(
        "{}{}{}",
        local.format("%Y-%m-%dT%H:%M:%S"),
        fraction(nanos, scale),
        local.format("%:z")
    ))
}

fn hex(text: &str) -> Result<Vec<u8>, String> {
    super::super::decode_hex(text).ok_or_else(|| format!("BINARY {text:?} is not hex"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(kind: &str, scale: i64) -> ColumnType {
        ColumnType {
            name: "c".into(),
            kind: kind.into(),
            scale: Some(scale),
            precision: Some(38),
        }
    }

    #[test]
    fn json_cells_read_as_their_columns_type_says() {
        let read =
            |text: &str, kind: &str, scale: i64| from_json(&serde_json::json!(text), &column(kind, scale)).unwrap();
        assert_eq!(read("-7", "fixed", 0), Value::Int(-7));
        assert_eq!(
            read("99999999999999999999999", "fixed", 0),
            Value::Decimal("99999999999999999999999".into())
        );
        assert_eq!(
            read("12345678.1234", "fixed", 4),
            Value::Decimal("12345678.1234".into())
        );
        assert_eq!(read("1.5", "fixed", 2), Value::Decimal("1.50".into()));
        assert_eq!(read("0.25", "real", 0), Value::Float(0.25));
        assert_eq!(read("1", "boolean", 0), Value::Bool(true));
        assert_eq!(read("19782", "date", 0), Value::Timestamp("2024-02-29".into()));
        assert_eq!(
            read("9000.125000000", "time", 9),
            Value::Timestamp("02:30:00.125000000".into())
        );
        assert_eq!(
            read("1710037800.125000000", "timestamp_ntz", 3),
            Value::Timestamp("2024-03-10T02:30:00.125".into())
        );
        assert_eq!(
            read("1717243200.000000000 1740", "timestamp_tz", 0),
            Value::Timestamp("2024-06-01T17:00:00+05:00".into())
        );
        assert_eq!(
            read("1717243200.5 1440", "timestamp_tz", 1),
            Value::Timestamp("2024-06-01T12:00:00.5Z".into())
        );
        assert_eq!(
            read("-1.5", "timestamp_ltz", 1),
            Value::Timestamp("1969-12-31T23:59:58.5Z".into())
        );
        assert_eq!(
            read("{\"a\":[1,2]}", "variant", 0),
            Value::Json(serde_json::json!({"a": [1, 2]}))
        );
        assert_eq!(read("00FF10", "binary", 0), Value::Bytes(vec![0, 0xff, 0x10]));
        assert_eq!(from_json(&serde_json::Value::Null, &column("text", 0)), Ok(Value::Null));
    }

    #[test]
    fn arrow_values_read_as_the_json_ones_do() {
        use arrow_array::{Decimal128Array, Int32Array, Int64Array};
        use std::sync::Arc;
        let scaled: ArrayRef = Arc::new(Int64Array::from(vec![1_234_567_812_345i64, -5]));
        assert_eq!(
            from_arrow(&scaled, 0, &column("fixed", 5)),
            Ok(Value::Decimal("12345678.12345".into()))
        );
        assert_eq!(
            from_arrow(&scaled, 1, &column("fixed", 5)),
            Ok(Value::Decimal("-0.00005".into()))
        );
        let decimal: ArrayRef = Arc::new(
            Decimal128Array::from(vec![123_456_781_234i128])
                .with_precision_and_scale(20, 4)
                .unwrap(),
        );
        assert_eq!(
            from_arrow(&decimal, 0, &column("fixed", 4)),
            Ok(Value::Decimal("12345678.1234".into()))
        );
        let epoch: ArrayRef = Arc::new(Int64Array::from(vec![1_710_037_800_125i64]));
        assert_eq!(
            from_arrow(&epoch, 0, &column("timestamp_ntz", 3)),
            Ok(Value::Timestamp("2024-03-10T02:30:00.125".into()))
        );
        let parts = StructArray::from(vec![
            (
                Arc::new(arrow_schema::Field::new("epoch", DataType::Int64, false)),
                Arc::new(Int64Array::from(vec![1_717_243_200i64])) as ArrayRef,
            ),
            (
                Arc::new(arrow_schema::Field::new("fraction", DataType::Int32, false)),
                Arc::new(Int32Array::from(vec![0])) as ArrayRef,
            ),
            (
                Arc::new(arrow_schema::Field::new("timezone", DataType::Int32, false)),
                Arc::new(Int32Array::from(vec![1740])) as ArrayRef,
            ),
        ]);
        let parts: ArrayRef = Arc::new(parts);
        assert_eq!(
            from_arrow(&parts, 0, &column("timestamp_tz", 9)),
            Ok(Value::Timestamp("2024-06-01T17:00:00.000000000+05:00".into()))
        );
    }
}
