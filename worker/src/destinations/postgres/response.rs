pub(super) enum Failure {
    /// The connection or the server failed: send again later.
    Transient(String),
    /// The data was refused: replaying it will fail the same way.
    Data(String),
}

/// SQLSTATE classes 08 (connection), 40 (rollback: deadlock, serialization),
/// 53 (resources) and 57 (operator intervention) are worth retrying.
pub(super) fn classify(error: &sqlx::Error) -> Failure {
    match error {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.to_string()).unwrap_or_default();
            let message = match db.code() {
                Some(code) => format!("{} (SQLSTATE {code})", db.message()),
                None => db.message().to_string(),
            };
            if ["08", "40", "53", "57"].iter().any(|class| code.starts_with(class)) {
                Failure::Transient(message)
            } else {
                Failure::Data(message)
            }
        }
        other => Failure::Transient(ebb_shared::redact::redact_url(&other.to_string())),
    }
}
