use crate::destinations::Record;
use crate::diff::Action;

/// The JSON body of one batch. Records are already JSON, so they are spliced in
/// as text rather than parsed and re-encoded.
pub(super) fn body(action: Action, records: &[Record<'_>]) -> Vec<u8> {
    let operation = match action {
        Action::Upsert => "upsert",
        Action::Delete => "delete",
    };
    let size: usize = records.iter().map(|r| r.json.len() + r.key.len() + 24).sum();
    let mut out = String::with_capacity(size + 48);
    out.push_str("{\"operation\":\"");
    out.push_str(operation);
    out.push_str("\",\"records\":[");
    for (i, record) in records.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"key\":");
        out.push_str(&serde_json::to_string(record.key).expect("strings serialize"));
        out.push_str(",\"fields\":");
        out.push_str(record.json);
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
        let records = [
            Record {
                key: "a\"1",
                json: r#"{"x":1}"#,
            },
            Record { key: "b", json: "{}" },
        ];
        let parsed: serde_json::Value = serde_json::from_slice(&body(Action::Delete, &records)).unwrap();
        assert_eq!(parsed["operation"], "delete");
        assert_eq!(parsed["records"][0]["key"], "a\"1");
        assert_eq!(parsed["records"][0]["fields"]["x"], 1);
    }
}
