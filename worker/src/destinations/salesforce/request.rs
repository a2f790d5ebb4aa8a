//! How rows become sObject Collections bodies and SOQL lookups.

use serde_json::{json, Map, Value};

/// A record as a collection takes it: its fields with the `attributes` map
/// naming its sObject type; `id` set for updates.
pub(super) fn record(object: &str, fields: &Map<String, Value>, id: Option<&str>, leave_out: Option<&str>) -> Value {
    let mut record = Map::new();
    record.insert("attributes".into(), json!({ "type": object }));
    if let Some(id) = id {
        record.insert("id".into(), Value::String(id.to_string()));
    }
    for (name, value) in fields {
        if leave_out.is_some_and(|skip| skip.eq_ignore_ascii_case(name)) {
            continue;
        }
        record.insert(name.clone(), value.clone());
    }
    Value::Object(record)
}

/// The body of a create, update or upsert: each record stands alone
/// (`allOrNone: false`), so one bad record fails only itself.
pub(super) fn collection(records: Vec<Value>) -> Value {
    json!({ "allOrNone": false, "records": records })
}

/// A value as SOQL text: a string literal, quotes and backslashes escaped
/// as the SOQL reference says.
fn literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        match c {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// How long a lookup's query string may grow: Salesforce takes at most
/// 16,384 bytes of URI and headers together.
const QUERY_BYTES: usize = 8_000;

/// `?q=SELECT Id, field FROM object WHERE field IN (…)` query strings (URL
/// encoded, each under [`QUERY_BYTES`]) that together look up every value.
pub(super) fn lookups(object: &str, field: &str, values: &[&str]) -> Vec<String> {
    let encode = |soql: &str| {
        let mut url = reqwest::Url::parse("http://x/").expect("a URL");
        url.query_pairs_mut().append_pair("q", soql);
        url.query().unwrap_or_default().to_string()
    };
    let head = format!("SELECT Id, {field} FROM {object} WHERE {field} IN (");
    let mut queries = Vec::new();
    let mut listed: Vec<String> = Vec::new();
    let mut length = encode(&head).len() + 3;
    for value in values {
        let item = literal(value);
        let cost = encode(&item).len() + 3;
        if !listed.is_empty() && length + cost > QUERY_BYTES {
            queries.push(encode(&format!("{head}{})", listed.join(", "))));
            listed.clear();
            length = encode(&head).len() + 3;
        }
        length += cost;
        listed.push(item);
    }
    if !listed.is_empty() {
        queries.push(encode(&format!("{head}{})", listed.join(", "))));
    }
    queries
}

/// A matching value as text, the way SOQL compares it.
pub(super) fn value_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_escaped_and_lookups_stay_under_the_uri_limit() {
        assert_eq!(literal(r"o'hara\x"), r"'o\'hara\\x'");
        let values: Vec<String> = (0..600).map(|i| format!("person{i}@example.com")).collect();
        let values: Vec<&str> = values.iter().map(String::as_str).collect();
        let queries = lookups("Contact", "Email", &values);
        assert!(queries.len() > 1, "{}", queries.len());
        assert!(queries.iter().all(|q| q.len() <= QUERY_BYTES));
        let decoded: Vec<String> = queries
            .iter()
            .map(|q| {
                reqwest::Url::parse(&format!("http://x/?{q}"))
                    .unwrap()
                    .query_pairs()
                    .next()
                    .unwrap()
                    .1
                    .into_owned()
            })
            .collect();
        assert!(decoded[0].starts_with("SELECT Id, Email FROM Contact WHERE Email IN ('person0@example.com', "));
        let listed: usize = decoded.iter().map(|q| q.matches('@').count()).sum();
        assert_eq!(listed, 600);
    }
}
