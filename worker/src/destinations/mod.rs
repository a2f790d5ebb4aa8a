//! Destination connectors. Each lives in its own directory with the same files:
//! `mod.rs` (configuration and the `Destination` impl), `request.rs` (how a batch
//! becomes a request) and `response.rs` (how an answer becomes per-row results
//! and a retriable or permanent error).

mod http;
mod jsonl;
mod postgres;

use crate::behaviour::Action;
use crate::error::TaskError;
use async_trait::async_trait;
use ebb_shared::config::SyncSpec;
use std::sync::Arc;
use std::time::Duration;

/// One record of a batch: the model key and the mapped record as JSON text.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub key: &'a str,
    pub json: &'a str,
}

/// One answer per record of the batch, in order: accepted, or rejected with the
/// destination's reason.
pub type RowResults = Vec<Result<(), String>>;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DeliveryError {
    /// `429`: wait `retry_after` (or back off) and send again.
    #[error("rate limited by the destination{}", retry_after.map(|d| format!(" (retry after {d:?})")).unwrap_or_default())]
    RateLimited { retry_after: Option<Duration> },
    /// Worth sending again: timeouts, refused connections, `5xx`.
    #[error("{0}")]
    Transient(String),
    /// The batch was refused for its content, without saying which records are
    /// at fault: sending it in halves isolates them.
    #[error("{0}")]
    Rejected(String),
    /// The whole batch was refused and no part of it will do better (bad
    /// credentials, a wrong endpoint, a table that cannot take the records).
    #[error("{0}")]
    Permanent(String),
}

#[async_trait]
pub trait Destination: Send + Sync {
    async fn send(&self, action: Action, records: &[Record<'_>]) -> Result<RowResults, DeliveryError>;

    /// Reaches the destination without changing anything in it (`ebb check
    /// --connect`). Opening it has already checked what opening checks.
    async fn check_connection(&self) -> Result<(), String> {
        Ok(())
    }

    /// The fields a record may have, when the destination has a fixed set (a
    /// table's columns); `None` when it takes any field.
    fn fields(&self) -> Option<Vec<String>> {
        None
    }
}

/// Opens a sync's destination, checking what can be checked before any row is sent.
pub async fn build(spec: &SyncSpec) -> Result<Arc<dyn Destination>, TaskError> {
    use ebb_shared::config::DestinationConfig;
    let name = spec.destination_name.as_str();
    let matching = spec.record_matching.as_ref().map(|m| m.to.as_str());
    match &spec.destination {
        DestinationConfig::Http(c) => Ok(Arc::new(http::HttpDestination::new(name, c, matching)?)),
        DestinationConfig::Postgres(c) => Ok(Arc::new(
            postgres::PostgresDestination::connect(name, c, matching).await?,
        )),
        DestinationConfig::Jsonl(c) => Ok(Arc::new(jsonl::JsonlDestination::new(c))),
    }
}

/// A record with every field set to null but `keep` (the field that identifies
/// the destination record): what clearing the mapped fields sends.
pub fn cleared(json: &str, keep: Option<&str>) -> String {
    let Ok(mut fields) = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(json) else {
        return json.to_string();
    };
    for (name, value) in fields.iter_mut() {
        if Some(name.as_str()) != keep {
            *value = serde_json::Value::Null;
        }
    }
    serde_json::Value::Object(fields).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn clearing_keeps_only_the_identifier() {
        assert_eq!(
            super::cleared(r#"{"email":"a@x","plan":"pro","n":1}"#, Some("email")),
            r#"{"email":"a@x","n":null,"plan":null}"#
        );
        assert_eq!(super::cleared(r#"{"plan":"pro"}"#, None), r#"{"plan":null}"#);
    }
}
