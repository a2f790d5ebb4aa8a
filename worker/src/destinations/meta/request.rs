//! How rows become a custom audience's `payload`: the identifier keys Meta
//! documents, each value normalised as its "Customer information parameters"
//! table says and hashed with SHA-256 (lowercase hex), except the keys Meta
//! takes unhashed.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Meta's identifier keys (the schema's column names).
pub(super) const KEYS: &[&str] = &[
    "EMAIL",
    "PHONE",
    "GEN",
    "DOBY",
    "DOBM",
    "DOBD",
    "LN",
    "FN",
    "FI",
    "CT",
    "ST",
    "ZIP",
    "COUNTRY",
    "MADID",
    "EXTERN_ID",
];

/// Keys sent as they are: mobile advertiser ids and the advertiser's own ids.
const UNHASHED: &[&str] = &["MADID", "EXTERN_ID"];

/// The schema key a mapped field names (`email` → `EMAIL`), if any.
pub(super) fn key_of(field: &str) -> Option<&'static str> {
    KEYS.iter().copied().find(|k| k.eq_ignore_ascii_case(field))
}

fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A value normalised for its key; empty when nothing is left of it.
pub(super) fn normalise(key: &str, raw: &str) -> String {
    let trimmed = raw.trim();
    let lower = trimmed.to_lowercase();
    let letters = |text: &str| text.chars().filter(|c| c.is_alphabetic()).collect::<String>();
    let digits = || trimmed.chars().filter(char::is_ascii_digit).collect::<String>();
    match key {
        "EMAIL" => lower,
        // Digits only, country code included, no leading zeros.
        "PHONE" => digits().trim_start_matches('0').to_string(),
        "GEN" => match lower.chars().next() {
            Some('m') => "m".into(),
            Some('f') => "f".into(),
            _ => String::new(),
        },
        "DOBY" => digits(),
        "DOBM" | "DOBD" => match digits().parse::<u32>() {
            Ok(n) => format!("{n:02}"),
            Err(_) => String::new(),
        },
        // Names: lowercase letters only (accents kept, punctuation dropped).
        "FN" | "LN" | "CT" => letters(&lower),
        "FI" => letters(&lower).chars().take(1).collect(),
        "ST" => letters(&lower),
        "ZIP" => {
            let compact: String = lower.chars().filter(|c| !c.is_whitespace()).collect();
            // US ZIP+4: the first five digits.
            match compact.split_once('-') {
                Some((five, _)) if five.len() == 5 && five.bytes().all(|b| b.is_ascii_digit()) => five.to_string(),
                _ => compact,
            }
        }
        "COUNTRY" => letters(&lower),
        "MADID" => lower,
        _ => trimmed.to_string(),
    }
}

/// What is sent for one value: normalised and hashed (a value already
/// hashed, 64 lowercase hex digits, is sent as it is), or raw for the
/// unhashed keys; empty stays empty.
pub(super) fn encode(key: &str, raw: &str) -> String {
    if UNHASHED.contains(&key) {
        return normalise(key, raw);
    }
    if is_sha256_hex(raw.trim()) {
        return raw.trim().to_string();
    }
    let normalised = normalise(key, raw);
    if normalised.is_empty() {
        return normalised;
    }
    hex(&Sha256::digest(normalised.as_bytes()))
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The `payload` parameter: `{schema, data}` in the multi-key form (a
/// list of keys, a list of values per row), which serves one key as well.
pub(super) fn payload(schema: &[&str], rows: &[Vec<String>]) -> Value {
    json!({ "schema": schema, "data": rows })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_normalised_as_documented() {
        assert_eq!(
            normalise("EMAIL", "  Ada.Lovelace@Example.COM "),
            "ada.lovelace@example.com"
        );
        assert_eq!(normalise("PHONE", "+1 (650) 555-1212"), "16505551212");
        assert_eq!(normalise("PHONE", "0044 20 7946 0958"), "442079460958");
        assert_eq!(normalise("GEN", "Female"), "f");
        assert_eq!(normalise("DOBM", "3"), "03");
        assert_eq!(normalise("FN", "  Mary-Jane "), "maryjane");
        assert_eq!(normalise("FN", "Valérie"), "valérie");
        assert_eq!(normalise("FI", "Mary"), "m");
        assert_eq!(normalise("CT", "San Francisco"), "sanfrancisco");
        assert_eq!(normalise("ZIP", "94103-1234"), "94103");
        assert_eq!(normalise("ZIP", "SW1A 1AA"), "sw1a1aa");
        assert_eq!(normalise("COUNTRY", "US"), "us");
    }

    #[test]
    fn hashes_are_lowercase_sha256_of_the_normalised_value() {
        // sha256("test@example.com")
        let expected = "973dfe463ec85785f5f95af5ba3906eedb2d931c24e69824a89ea65dba4e813b";
        assert_eq!(encode("EMAIL", " Test@Example.com"), expected);
        assert_eq!(encode("EMAIL", expected), expected, "already hashed");
        assert_eq!(encode("EXTERN_ID", " crm-42 "), "crm-42");
        assert_eq!(encode("PHONE", "n/a"), "");
        assert_eq!(
            payload(&["EMAIL"], &[vec!["h".into()]]),
            serde_json::json!({"schema": ["EMAIL"], "data": [["h"]]})
        );
    }
}
