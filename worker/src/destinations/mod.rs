//! Destination connectors. Each lives in its own directory with the same files:
//! `config.rs` (its settings, as users write them), `mod.rs` (the connector:
//! what it declares and how it opens), `request.rs` (how a batch becomes a
//! request), `response.rs` (how an answer becomes per-row results and a
//! retriable or permanent error) and its tests. Adding a destination adds its
//! directory and one line to [`REGISTRY`]; `docs/destinations/README.md` walks
//! through it.

pub mod braze;
#[cfg(any(test, feature = "fakes"))]
pub mod contract;
mod http;
pub mod http_request;
pub mod hubspot;
mod jsonl;
pub mod meta;
pub mod oauth;
mod postgres;
mod registry;
pub mod salesforce;
pub mod settings;

pub use registry::{profile, Connector, Registry, REGISTRY};

use crate::behaviour::Action;
use crate::error::TaskError;
use async_trait::async_trait;
use ebb_shared::config::SyncSpec;
use std::sync::Arc;
use std::time::Duration;

/// A field a destination's records may have, as `ebb destination fields`
/// lists it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Field {
    pub name: String,
    /// The destination's own type name.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its values are unique: it can identify a record (`record_matching.to`).
    pub unique: bool,
    /// Ebb can write it (not read-only or calculated).
    pub writable: bool,
}

/// One record of a batch: the model key and the mapped record as JSON text.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub key: &'a str,
    pub json: &'a str,
    /// For a changed row, the mapped record last delivered for its key:
    /// what the destination holds as far as Ebb knows. Connectors use it to
    /// send only the fields that changed (Braze bills per data point) or to
    /// take back identifiers that changed (an audience member's old email).
    pub previous: Option<&'a str>,
}

impl<'a> Record<'a> {
    pub fn new(key: &'a str, json: &'a str) -> Record<'a> {
        Record {
            key,
            json,
            previous: None,
        }
    }
}

/// Where a request stands in its upload sequence (`Destination::sequenced`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequencePlace {
    /// Which sequence of the shard attempt: one per run of batches of one action.
    pub sequence: usize,
    /// Nothing of the sequence is sent after this request.
    pub last: bool,
    /// The rows of the whole sequence (what Meta calls `estimated_num_total`).
    pub rows: usize,
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

    /// Whether this destination groups an action's batches into an upload
    /// session it must see in order (Meta's `session`): then the engine sends
    /// the first batch of each run of one action alone, the others after it
    /// answered, and the last alone once every other one answered, each
    /// through `send_in_sequence`.
    fn sequenced(&self) -> bool {
        false
    }

    /// Sends one batch of a sequence (see `sequenced`): `place` says which
    /// sequence, whether this request is its last, and how many rows it holds.
    async fn send_in_sequence(
        &self,
        action: Action,
        records: &[Record<'_>],
        place: SequencePlace,
    ) -> Result<RowResults, DeliveryError> {
        let _ = place;
        self.send(action, records).await
    }

    /// How this destination cuts a large shard into asynchronous bulk jobs;
    /// `None` (the default) when it has no bulk API.
    fn bulk(&self) -> Option<crate::jobs::BulkLimits> {
        None
    }

    /// Sends one batch as a bulk job, or resumes the job `jobs` names from an
    /// earlier attempt, and waits for its per-record results.
    async fn send_bulk(
        &self,
        action: Action,
        records: &[Record<'_>],
        jobs: &crate::jobs::JobLog,
    ) -> Result<RowResults, DeliveryError> {
        let _ = jobs;
        self.send(action, records).await
    }
}

/// Opens a sync's destination, checking what can be checked before any row is sent.
pub async fn build(spec: &SyncSpec) -> Result<Arc<dyn Destination>, TaskError> {
    REGISTRY.open(spec).await
}

/// A request that got no answer (timeout, refused connection, reset), as a
/// retriable error: with the causes' texts, without the URL (reqwest's errors
/// carry it whole, query string and all) or any of `secrets`. `vendor`
/// starts the text ("HubSpot timed out: …"); empty, the kind does.
pub(crate) fn transport_error(error: reqwest::Error, vendor: &str, secrets: &[&str]) -> DeliveryError {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let error = error.without_url();
    let mut text = if vendor.is_empty() {
        format!("{kind}: {error}")
    } else {
        format!("{vendor} {kind}: {error}")
    };
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    DeliveryError::Transient(ebb_shared::redact::redact_secrets(&text, secrets))
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
