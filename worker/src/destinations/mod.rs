//! Destination connectors. Each lives in its own directory with the same files:
//! `mod.rs` (configuration and the `Destination` impl), `request.rs` (how a batch
//! becomes a request) and `response.rs` (how an answer becomes per-row results
//! and a retriable or permanent error).

mod http;
mod jsonl;
mod postgres;

use crate::diff::Action;
use crate::error::TaskError;
use async_trait::async_trait;
use ebb_shared::config::DestinationConfig;
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
    /// The whole batch was refused and sending it again will not help.
    #[error("{0}")]
    Permanent(String),
}

#[async_trait]
pub trait Destination: Send + Sync {
    async fn send(&self, action: Action, records: &[Record<'_>]) -> Result<RowResults, DeliveryError>;
}

/// Opens a destination, checking what can be checked before any row is sent.
pub async fn build(name: &str, config: &DestinationConfig) -> Result<Arc<dyn Destination>, TaskError> {
    match config {
        DestinationConfig::Http(c) => Ok(Arc::new(http::HttpDestination::new(name, c)?)),
        DestinationConfig::Postgres(c) => Ok(Arc::new(postgres::PostgresDestination::connect(name, c).await?)),
        DestinationConfig::Jsonl(c) => Ok(Arc::new(jsonl::JsonlDestination::new(c))),
    }
}
