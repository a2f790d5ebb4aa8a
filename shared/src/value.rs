//! A typed cell of a model row.
//!
//! Sources produce `Value`s with the type the source declared, so that change
//! detection can tell `1` (integer) from `"1"` (text): a column whose type changes
//! counts as changed (DESIGN.md, invariant 7).

use serde_json::Value as Json;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// Arbitrary-precision numbers keep their decimal text so nothing is rounded.
    Decimal(String),
    Text(String),
    /// Dates and times in the source's ISO-8601 text form.
    Timestamp(String),
    Json(Json),
    Bytes(Vec<u8>),
}

/// Type tags of the canonical encoding. They are persisted inside fingerprints:
/// never renumber them.
mod tag {
    pub const NULL: u8 = 0;
    pub const BOOL: u8 = 1;
    pub const INT: u8 = 2;
    pub const FLOAT: u8 = 3;
    pub const DECIMAL: u8 = 4;
    pub const TEXT: u8 = 5;
    pub const TIMESTAMP: u8 = 6;
    pub const JSON: u8 = 7;
    pub const BYTES: u8 = 8;
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The key form of a value: primary keys are compared as strings, like
    /// Hightouch and Census do. `None` for a null key.
    pub fn as_key(&self) -> Option<String> {
        match self {
            Value::Null => None,
            Value::Bool(b) => Some(b.to_string()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Decimal(s) | Value::Text(s) | Value::Timestamp(s) => Some(s.clone()),
            Value::Json(j) => Some(j.to_string()),
            Value::Bytes(b) => Some(b.iter().map(|byte| format!("{byte:02x}")).collect()),
        }
    }

    /// Writes the key form (`as_key`) into `out`, replacing what it held;
    /// `false` for a null key. Saves an allocation per row on the hot path.
    pub fn write_key(&self, out: &mut String) -> bool {
        use std::fmt::Write;
        out.clear();
        match self {
            Value::Null => return false,
            Value::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Value::Decimal(s) | Value::Text(s) | Value::Timestamp(s) => out.push_str(s),
            other => out.push_str(&other.as_key().unwrap_or_default()),
        }
        true
    }

    /// Appends the canonical, self-delimiting encoding of this value: a type tag,
    /// then a length-prefixed payload. Two values encode equally iff they have the
    /// same type and content.
    pub fn encode_canonical(&self, out: &mut Vec<u8>) {
        fn with_len(out: &mut Vec<u8>, tag: u8, payload: &[u8]) {
            out.push(tag);
            out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
            out.extend_from_slice(payload);
        }
        match self {
            Value::Null => out.push(tag::NULL),
            Value::Bool(b) => with_len(out, tag::BOOL, &[*b as u8]),
            Value::Int(i) => with_len(out, tag::INT, &i.to_le_bytes()),
            Value::Float(f) => with_len(out, tag::FLOAT, &f.to_bits().to_le_bytes()),
            Value::Decimal(s) => with_len(out, tag::DECIMAL, s.as_bytes()),
            Value::Text(s) => with_len(out, tag::TEXT, s.as_bytes()),
            Value::Timestamp(s) => with_len(out, tag::TIMESTAMP, s.as_bytes()),
            // serde_json's Map is ordered by key (no `preserve_order`), so the text
            // form of a JSON value is canonical.
            Value::Json(j) => with_len(out, tag::JSON, j.to_string().as_bytes()),
            Value::Bytes(b) => with_len(out, tag::BYTES, b),
        }
    }

    /// The JSON form sent to destinations.
    pub fn to_json(&self) -> Json {
        match self {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Int(i) => Json::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map(Json::Number).unwrap_or(Json::Null),
            Value::Decimal(s) | Value::Text(s) | Value::Timestamp(s) => Json::String(s.clone()),
            Value::Json(j) => j.clone(),
            Value::Bytes(b) => Json::String(b.iter().map(|byte| format!("{byte:02x}")).collect()),
        }
    }
}

/// The column names and declared types of a model's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// The source's own type name, for messages.
    pub source_type: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        v.encode_canonical(&mut out);
        out
    }

    #[test]
    fn same_text_different_type_encodes_differently() {
        assert_ne!(canonical(&Value::Int(1)), canonical(&Value::Text("1".into())));
        assert_ne!(canonical(&Value::Null), canonical(&Value::Text(String::new())));
        assert_ne!(
            canonical(&Value::Decimal("1.5".into())),
            canonical(&Value::Text("1.5".into()))
        );
    }

    #[test]
    fn keys_are_strings() {
        let mut key = String::from("stale");
        for value in [
            Value::Int(-42),
            Value::Text("a".into()),
            Value::Bool(true),
            Value::Float(1.5),
            Value::Bytes(vec![1, 255]),
        ] {
            assert!(value.write_key(&mut key));
            assert_eq!(Some(key.clone()), value.as_key());
        }
        assert!(!Value::Null.write_key(&mut key));
        assert_eq!(Value::Int(42).as_key().as_deref(), Some("42"));
        assert_eq!(Value::Text("a".into()).as_key().as_deref(), Some("a"));
        assert_eq!(Value::Null.as_key(), None);
    }
}
