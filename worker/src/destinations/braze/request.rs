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

    /// A purchase object: `product_id`, `currency` (ISO 4217, upper-cased),
    /// `price` and the optional `quantity` (1 to 100), `time` and `app_id`
    /// from the record's fields of those names, the other fields as its
    /// properties. A row that cannot make one is refused with the reason,
    /// before anything is sent.
    pub fn purchase(&self, id: &str, mut fields: Map<String, Value>, now: &str) -> Result<Value, String> {
        let mut object = Map::new();
        self.set(&mut object, id);
        let product_id = fields.remove("product_id").map(|v| text(&v)).unwrap_or_default();
        if product_id.is_empty() {
            return Err("a Braze purchase needs a `product_id`: map a column to it".into());
        }
        let currency = fields
            .remove("currency")
            .map(|v| text(&v).trim().to_ascii_uppercase())
            .unwrap_or_default();
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(format!(
                "a Braze purchase needs `currency` as a three-letter ISO 4217 code (like USD), not {currency:?}"
            ));
        }
        let price = match fields.remove("price") {
            Some(Value::Number(n)) => n.as_f64(),
            Some(Value::String(t)) => t.trim().parse::<f64>().ok(),
            _ => None,
        }
        .filter(|p| p.is_finite())
        .ok_or("a Braze purchase needs a numeric `price` (in the currency's base unit): map a column to it")?;
        object.insert("product_id".into(), json!(product_id));
        object.insert("currency".into(), json!(currency));
        object.insert("price".into(), json!(price));
        match fields.remove("quantity") {
            None | Some(Value::Null) => {}
            Some(value) => {
                let quantity = match &value {
                    Value::Number(n) => n.as_u64(),
                    Value::String(t) => t.trim().parse::<u64>().ok(),
                    _ => None,
                }
                .filter(|q| (1..=100).contains(q))
                .ok_or_else(|| {
                    format!("a Braze purchase's `quantity` must be a whole number from 1 to 100, not {value}")
                })?;
                object.insert("quantity".into(), json!(quantity));
            }
        }
        let time = fields
            .remove("time")
            .map(|v| text(&v))
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| now.to_string());
        object.insert("time".into(), json!(time));
        if let Some(app_id) = fields.remove("app_id").map(|v| text(&v)).filter(|a| !a.is_empty()) {
            object.insert("app_id".into(), json!(app_id));
        }
        object.insert("properties".into(), Value::Object(fields));
        Ok(Value::Object(object))
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
        let purchase: Map<String, Value> = serde_json::from_value(
            json!({"product_id": "pro", "currency": "eur", "price": "9.5", "quantity": 2, "seat": 3}),
        )
        .unwrap();
        assert_eq!(
            Identifier::ExternalId.purchase("u1", purchase.clone(), "now").unwrap(),
            json!({"external_id": "u1", "product_id": "pro", "currency": "EUR", "price": 9.5, "quantity": 2, "time": "now", "properties": {"seat": 3}})
        );
        let refused = |field: &str, value: Value| {
            let mut fields = purchase.clone();
            fields.insert(field.into(), value);
            Identifier::ExternalId.purchase("u1", fields, "now").unwrap_err()
        };
        assert!(refused("currency", json!("euro")).contains("ISO 4217"));
        assert!(refused("price", json!("cheap")).contains("price"));
        assert!(refused("quantity", json!(101)).contains("1 to 100"));
        assert!(refused("product_id", json!("")).contains("product_id"));
        assert_eq!(
            Identifier::ExternalId.delete_body(&["u1", "u2"]),
            json!({"external_ids": ["u1", "u2"]})
        );
    }
}
