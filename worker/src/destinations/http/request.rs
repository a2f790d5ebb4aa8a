use crate::behaviour::Action;
use crate::destinations::{cleared, Record};

/// The JSON body of one batch:
/// `{"operation": "upsert", "match": "email", "records": [{"key": …, "fields": {…}}]}`.
/// Records are already JSON, so they are spliced in as text rather than parsed
/// and re-encoded. `match` names the record-matching field, when the sync has one.
pub(super) fn body(action: Action, matching: Option<&str>, records: &[Record<'_>]) -> Vec<u8> {
    let size: usize = records.iter().map(|r| r.json.len() + r.key.len() + 24).sum();
    let mut out = String::with_capacity(size + 64);
    out.push_str("{\"operation\":\"");
    out.push_str(action.as_str());
    out.push('"');
    if let Some(field) = matching {
        out.push_str(",\"match\":");
        out.push_str(&serde_json::to_string(field).expect("strings serialize"));
    }
    out.push_str(",\"records\":[");
    for (i, record) in records.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"key\":");
        out.push_str(&serde_json::to_string(record.key).expect("strings serialize"));
        out.push_str(",\"fields\":");
        if action == Action::ClearFields {
            out.push_str(&cleared(record.json, matching));
        } else {
            out.push_str(record.json);
        }
        out.push('}');
    }
    out.push_str("]}");
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_valid_json() {
        let records = [Record::new("a\"1", r#"{"x":1}"#), Record::new("b", "{}")];
        let parsed: serde_json::Value = serde_json::from_slice(&body(Action::Delete, None, &records)).unwrap();
        assert_eq!(parsed["operation"], "delete");
        assert_eq!(parsed["records"][0]["key"], "a\"1");
        assert_eq!(parsed["records"][0]["fields"]["x"], 1);
        assert!(parsed.get("match").is_none());
    }

    #[test]
    fn clearing_sends_nulls_but_the_matching_field() {
        let records = [Record::new("1", r#"{"email":"a@x","plan":"pro"}"#)];
        let parsed: serde_json::Value =
            serde_json::from_slice(&body(Action::ClearFields, Some("email"), &records)).unwrap();
        assert_eq!(parsed["operation"], "clear");
        assert_eq!(parsed["match"], "email");
        assert_eq!(
            parsed["records"][0]["fields"],
            serde_json::json!({"email": "a@x", "plan": null})
        );
    }
}
