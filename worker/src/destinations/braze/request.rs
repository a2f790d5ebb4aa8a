//! How rows become `/users/track` objects and `/users/delete` bodies.

use serde_json::{json, Map, Value};

/// How a row names its Braze user.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Identifier {
    ExternalId,
    BrazeId,
    /// A user alias with this label; the row's value is the alias name.
    UserAlias(String),
}

impl Identifier {
    fn set(&self, object: &mut Map<String, Value>, id: &str) {
        match self {
            Identifier::ExternalId => object.insert("external_id".into(), json!(id)),
            Identifier::BrazeId => object.insert("braze_id".into(), json!(id)),
            Identifier::UserAlias(label) => {
                object.insert("user_alias".into(), json!({ "alias_name": id, "alias_label": label }))
            }
        };
    }

    /// An attributes object: the identifier, `_update_existing_only`, and
    /// the fields (all null when clearing: Braze removes a null attribute).
    pub fn attributes(&self, id: &str, fields: Map<String, Value>, update_only: bool, clear: bool) -> Value {
        let mut object = Map::new();
        self.set(&mut object, id);
        object.insert("_update_existing_only".into(), Value::Bool(update_only));
        for (name, value) in fields {
            object.insert(name, if clear { Value::Null } else { value });
        }
        Value::Object(object)
    }

    /// An event object: `name` and `time` from the record's fields of
    /// those names when mapped (else the destination's event name and now),
    /// the other fields as its properties.
    pub fn event(&self, id: &str, mut fields: Map<String, Value>, event_name: Option<&str>, now: &str) -> Value {
        let mut object = Map::new();
        self.set(&mut object, id);
        let name = fields
            .remove("name")
            .map(|v| text(&v))
            .filter(|n| !n.is_empty())
            .or_else(|| event_name.map(str::to_string))
            .unwrap_or_default();
        let time = fields
            .remove("time")
            .map(|v| text(&v))
            .unwrap_or_else(|| now.to_string());
        object.insert("name".into(), json!(name));
        object.insert("time".into(), json!(time));
        object.insert("properties".into(), Value::Object(fields));
        Value::Object(object)
    }

    pub fn delete_body(&self, ids: &[&str]) -> Value {
        match self {
            Identifier::ExternalId => json!({ "external_ids": ids }),
            Identifier::BrazeId => json!({ "braze_ids": ids }),
            Identifier::UserAlias(label) => json!({
                "user_aliases": ids.iter().map(|id| json!({ "alias_name": id, "alias_label": label })).collect::<Vec<_>>()
            }),
        }
    }
}

/// A value as identifier text.
pub(super) fn text(value: &Value) -> String {
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
    fn objects_carry_one_identifier_and_the_fields() {
        let fields: Map<String, Value> = serde_json::from_value(json!({"plan": "pro"})).unwrap();
        assert_eq!(
            Identifier::ExternalId.attributes("u1", fields.clone(), true, false),
            json!({"external_id": "u1", "_update_existing_only": true, "plan": "pro"})
        );
        assert_eq!(
            Identifier::UserAlias("crm".into()).attributes("a@x", fields.clone(), false, true),
            json!({"user_alias": {"alias_name": "a@x", "alias_label": "crm"}, "_update_existing_only": false, "plan": null})
        );
        let mut event: Map<String, Value> = fields;
        event.insert("time".into(), json!("2026-01-01T00:00:00Z"));
        assert_eq!(
            Identifier::BrazeId.event("b1", event, Some("Signed Up"), "now"),
            json!({"braze_id": "b1", "name": "Signed Up", "time": "2026-01-01T00:00:00Z", "properties": {"plan": "pro"}})
        );
        assert_eq!(
            Identifier::ExternalId.delete_body(&["u1", "u2"]),
            json!({"external_ids": ["u1", "u2"]})
        );
    }
}
