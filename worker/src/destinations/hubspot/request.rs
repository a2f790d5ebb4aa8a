//! HubSpot request bodies (CRM v3 batch endpoints and list memberships).
//! Every object input carries an `objectWriteTraceId` — its position in the
//! batch — so a multi-status answer names the inputs it refused.

use serde_json::{json, Map, Value};

/// The CRM's own record id, which matching on it needs no lookup for.
pub(super) const RECORD_ID: &str = "hs_object_id";

/// A property value as HubSpot takes it: text. Null clears the property,
/// a list is a multiple-checkbox value (`a;b`), anything else its JSON text.
pub(super) fn property_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        Value::Bool(flag) => flag.to_string(),
        Value::Number(number) => number.to_string(),
        Value::Array(items) => items.iter().map(property_text).collect::<Vec<_>>().join(";"),
        Value::Object(_) => value.to_string(),
    }
}

/// A record's properties, every value as text; `clear` empties all but `keep`.
pub(super) fn properties(record: &Map<String, Value>, clear: bool, keep: Option<&str>) -> Map<String, Value> {
    record
        .iter()
        .map(|(name, value)| {
            let text = if clear && Some(name.as_str()) != keep {
                String::new()
            } else {
                property_text(value)
            };
            (name.clone(), Value::String(text))
        })
        .collect()
}

/// One input of a batch: the record's position, its identifying value (for
/// inputs matched by a property) and its properties.
pub(super) struct Input {
    pub position: usize,
    pub id: Option<String>,
    pub properties: Map<String, Value>,
}

/// `batch/create`: new records, no identifier.
pub(super) fn create(inputs: &[Input]) -> Value {
    json!({
        "inputs": inputs.iter().map(|input| json!({
            "properties": input.properties,
            "associations": [],
            "objectWriteTraceId": input.position.to_string(),
        })).collect::<Vec<_>>()
    })
}

/// `batch/upsert` and `batch/update`: records identified by `id_property`
/// (the record id itself when it is `hs_object_id`).
pub(super) fn identified(inputs: &[Input], id_property: &str) -> Value {
    json!({
        "inputs": inputs.iter().map(|input| {
            let mut body = json!({
                "id": input.id,
                "properties": input.properties,
                "objectWriteTraceId": input.position.to_string(),
            });
            if id_property != RECORD_ID {
                body["idProperty"] = json!(id_property);
            }
            body
        }).collect::<Vec<_>>()
    })
}

/// `batch/read` by a unique property, for the record ids archive and list
/// memberships need.
pub(super) fn read_ids(values: &[&str], id_property: &str) -> Value {
    json!({
        "idProperty": id_property,
        "properties": [id_property],
        "propertiesWithHistory": [],
        "inputs": values.iter().map(|value| json!({"id": value})).collect::<Vec<_>>(),
    })
}

/// `batch/archive`: record ids only.
pub(super) fn archive(record_ids: &[&str]) -> Value {
    json!({"inputs": record_ids.iter().map(|id| json!({"id": id})).collect::<Vec<_>>()})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_become_hubspot_text() {
        assert_eq!(property_text(&json!(null)), "");
        assert_eq!(property_text(&json!(12.5)), "12.5");
        assert_eq!(property_text(&json!(true)), "true");
        assert_eq!(property_text(&json!(["a", "b"])), "a;b");
        assert_eq!(property_text(&json!({"x": 1})), r#"{"x":1}"#);
    }

    #[test]
    fn inputs_name_their_property_and_position() {
        let record = json!({"email": "A@x.com", "plan": "pro"});
        let input = Input {
            position: 3,
            id: Some("A@x.com".into()),
            properties: properties(record.as_object().unwrap(), true, Some("email")),
        };
        let body = identified(std::slice::from_ref(&input), "email");
        assert_eq!(
            body,
            json!({"inputs": [{"id": "A@x.com", "idProperty": "email", "objectWriteTraceId": "3",
                               "properties": {"email": "A@x.com", "plan": ""}}]})
        );
        let by_record_id = identified(std::slice::from_ref(&input), RECORD_ID);
        assert!(by_record_id["inputs"][0].get("idProperty").is_none());
        assert_eq!(create(&[input])["inputs"][0]["associations"], json!([]));
    }
}
