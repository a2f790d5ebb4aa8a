//! Type casts of mapped values. A value that cannot take the type is an error
//! that rejects its row, with the value and the type in the message.

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use ebb_shared::config::Cast;
use ebb_shared::value::Value;

pub fn cast(value: Value, to: Cast) -> Result<Value, String> {
    if value.is_null() {
        return Ok(Value::Null);
    }
    let fail = |value: &Value| {
        let shown = value.to_json().to_string();
        let shown = if shown.chars().count() > 60 {
            format!("{}…", shown.chars().take(60).collect::<String>())
        } else {
            shown
        };
        Err(format!("cannot cast {shown} to {to}"))
    };
    match to {
        Cast::String => Ok(match value {
            Value::Json(json) => Value::Text(json.to_string()),
            other => Value::Text(other.as_key().unwrap_or_default()),
        }),
        Cast::Integer => match &value {
            Value::Int(_) => Ok(value),
            Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e18 => Ok(Value::Int(*f as i64)),
            Value::Decimal(text) | Value::Text(text) => match text.trim().parse::<i64>() {
                Ok(i) => Ok(Value::Int(i)),
                Err(_) => match text.trim().parse::<f64>() {
                    Ok(f) if f.fract() == 0.0 && f.abs() < 9.0e18 => Ok(Value::Int(f as i64)),
                    _ => fail(&value),
                },
            },
            _ => fail(&value),
        },
        Cast::Float => match &value {
            Value::Float(_) => Ok(value),
            Value::Int(i) => Ok(Value::Float(*i as f64)),
            Value::Decimal(text) | Value::Text(text) => match text.trim().parse::<f64>() {
                Ok(f) if f.is_finite() => Ok(Value::Float(f)),
                _ => fail(&value),
            },
            _ => fail(&value),
        },
        Cast::Boolean => match &value {
            Value::Bool(_) => Ok(value),
            Value::Int(0) => Ok(Value::Bool(false)),
            Value::Int(1) => Ok(Value::Bool(true)),
            Value::Text(text) => match text.trim().to_ascii_lowercase().as_str() {
                "true" | "t" | "yes" | "y" | "1" => Ok(Value::Bool(true)),
                "false" | "f" | "no" | "n" | "0" => Ok(Value::Bool(false)),
                _ => fail(&value),
            },
            _ => fail(&value),
        },
        Cast::Json => match &value {
            Value::Json(_) => Ok(value),
            Value::Text(text) => match serde_json::from_str(text) {
                Ok(json) => Ok(Value::Json(json)),
                Err(_) => fail(&value),
            },
            other => Ok(Value::Json(other.to_json())),
        },
        Cast::Timestamp => match &value {
            Value::Timestamp(text) | Value::Text(text) => match parse_timestamp(text) {
                Some(at) => Ok(Value::Timestamp(at.to_rfc3339_opts(SecondsFormat::AutoSi, true))),
                None => fail(&value),
            },
            _ => fail(&value),
        },
    }
}

/// RFC 3339, or the `YYYY-MM-DD[ HH:MM:SS[.fff]][±HH[:MM]]` forms databases
/// print; a time without an offset is taken as UTC.
fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Some(at.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f%#z"] {
        if let Ok(at) = DateTime::parse_from_str(text, format) {
            return Some(at.with_timezone(&Utc));
        }
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(at) = NaiveDateTime::parse_from_str(text, format) {
            return Some(at.and_utc());
        }
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|date| date.and_hms_opt(0, 0, 0))
        .map(|at| at.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn casts_that_apply() {
        assert_eq!(cast(Value::Text(" 42 ".into()), Cast::Integer), Ok(Value::Int(42)));
        assert_eq!(cast(Value::Decimal("3.00".into()), Cast::Integer), Ok(Value::Int(3)));
        assert_eq!(cast(Value::Int(2), Cast::Float), Ok(Value::Float(2.0)));
        assert_eq!(cast(Value::Text("Yes".into()), Cast::Boolean), Ok(Value::Bool(true)));
        assert_eq!(cast(Value::Int(7), Cast::String), Ok(Value::Text("7".into())));
        assert_eq!(
            cast(Value::Text(r#"{"a":[1]}"#.into()), Cast::Json),
            Ok(Value::Json(serde_json::json!({"a": [1]})))
        );
        assert_eq!(
            cast(Value::Timestamp("2026-11-24 17:00:00+01".into()), Cast::Timestamp),
            Ok(Value::Timestamp("2026-11-24T16:00:00Z".into()))
        );
        assert_eq!(
            cast(Value::Text("2026-11-24".into()), Cast::Timestamp),
            Ok(Value::Timestamp("2026-11-24T00:00:00Z".into()))
        );
        assert_eq!(cast(Value::Null, Cast::Integer), Ok(Value::Null));
    }

    #[test]
    fn casts_that_cannot_apply_name_value_and_type() {
        assert_eq!(
            cast(Value::Text("abc".into()), Cast::Integer),
            Err("cannot cast \"abc\" to integer".to_string())
        );
        assert!(cast(Value::Text("2.5".into()), Cast::Integer).is_err());
        assert!(cast(Value::Text("maybe".into()), Cast::Boolean).is_err());
        assert!(cast(Value::Text("{".into()), Cast::Json).is_err());
        assert!(cast(Value::Text("yesterday".into()), Cast::Timestamp).is_err());
    }
}
