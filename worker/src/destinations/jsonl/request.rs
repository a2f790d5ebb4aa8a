use crate::behaviour::Action;
use crate::destinations::{cleared, Record};

/// `{"operation":"upsert","key":"42","fields":{…}}`, one line per record.
pub(super) fn lines(action: Action, records: &[Record<'_>]) -> String {
    let mut out = String::new();
    for record in records {
        out.push_str("{\"operation\":\"");
        out.push_str(action.as_str());
        out.push_str("\",\"key\":");
        out.push_str(&serde_json::to_string(record.key).expect("strings serialize"));
        out.push_str(",\"fields\":");
        if action == Action::ClearFields {
            out.push_str(&cleared(record.json, None));
        } else {
            out.push_str(record.json);
        }
        out.push_str("}\n");
    }
    out
}
