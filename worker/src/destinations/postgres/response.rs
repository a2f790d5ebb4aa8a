use crate::destinations::DeliveryError;

/// SQLSTATE classes 08 (connection), 40 (rollback: deadlock, serialization),
/// 53 (resources) and 57 (operator intervention) are worth retrying; any other
/// database error refuses the batch's content (a bad value, a constraint), and
/// sending it in halves finds the records at fault.
pub(super) fn classify(error: &sqlx::Error) -> DeliveryError {
    match error {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.to_string()).unwrap_or_default();
            let message = match db.code() {
                Some(code) => format!("{} (SQLSTATE {code})", db.message()),
                None => db.message().to_string(),
            };
            if ["08", "40", "53", "57"].iter().any(|class| code.starts_with(class)) {
                DeliveryError::Transient(message)
            } else {
                DeliveryError::Rejected(message)
            }
        }
        other => DeliveryError::Transient(ebb_shared::redact::redact_url(&other.to_string())),
    }
}
