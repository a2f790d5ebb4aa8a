use crate::destinations::Record;
use crate::diff::Action;

/// `{"operation":"upsert","key":"42","fields":{…}}`, one line per record.
pub(super) fn lines(action: Action, records: &[Record<'_>]) -> String {
    let operation = match action {
        Action::Upsert => "upsert",
        Action::Delete => "delete",
    };
    let mut out = String::new();
    for record in records {
        out.push_str("{\"operation\":\"");
        out.push_str(operation);
        out.push_str("\",\"key\":");
        out.push_str(&serde_json::to_string(record.key).expect("strings serialize"));
        out.push_str(",\"fields\":");
        out.push_str(record.json);
        out.push_str("}\n");
    }
    out
}
