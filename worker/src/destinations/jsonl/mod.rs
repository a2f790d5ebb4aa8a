//! A local JSON-lines file: every operation is appended as one line. Made for the
//! quickstart and for looking at exactly what a sync sends.

mod config;
mod request;
mod response;

use super::settings::{self, Documented, Requested};
use super::{Connector, DeliveryError, Destination, Record, RowResults};
use crate::behaviour::Action;
use crate::error::TaskError;
use async_trait::async_trait;
pub use config::JsonlDestinationConfig;
use ebb_shared::config::{
    BatchLimits, Capabilities, DestinationProfile, FieldError, SyncSpec, DEFAULT_MAX_RETRY_AFTER,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The connector.
pub struct Jsonl;

const DOCUMENTED: Documented = Documented {
    rate_limit: None,
    rate_window: None,
    // One file, appended to by one writer at a time.
    max_concurrency: Some(1),
    batch: BatchLimits::records(usize::MAX),
    default_batch_size: 1000,
};

impl Connector for Jsonl {
    const TYPE: &'static str = "jsonl";
    type Config = JsonlDestinationConfig;

    fn resolve_paths(config: Self::Config, base_dir: &Path) -> Self::Config {
        JsonlDestinationConfig {
            path: base_dir.join(&config.path),
            ..config
        }
    }

    fn profile(config: &Self::Config) -> Result<DestinationProfile, FieldError> {
        let requested = Requested {
            batch_size: config.batch_size,
            ..Requested::default()
        };
        let (limits, batch) = settings::apply(&DOCUMENTED, requested)?;
        Ok(DestinationProfile {
            // A log of operations takes every one of them.
            capabilities: Capabilities::ANY,
            limits,
            batch,
            max_retry_after: DEFAULT_MAX_RETRY_AFTER,
            expanded_settings: Vec::new(),
        })
    }

    /// The file's directory exists or can be made.
    async fn test_connection(config: Self::Config, _: &str) -> Result<(), String> {
        let Some(directory) = config.path.parent().filter(|d| !d.as_os_str().is_empty()) else {
            return Ok(());
        };
        tokio::fs::create_dir_all(directory)
            .await
            .map_err(|e| format!("cannot create {}: {e}", directory.display()))
    }

    async fn open(config: Self::Config, _: &SyncSpec) -> Result<Arc<dyn Destination>, TaskError> {
        Ok(Arc::new(JsonlDestination::new(&config)))
    }
}
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

pub struct JsonlDestination {
    path: PathBuf,
    /// Concurrent batches append whole, never interleaved.
    writing: Mutex<()>,
}

impl JsonlDestination {
    pub fn new(config: &JsonlDestinationConfig) -> Self {
        JsonlDestination {
            path: config.path.clone(),
            writing: Mutex::new(()),
        }
    }
}

#[async_trait]
impl Destination for JsonlDestination {
    async fn send(&self, action: Action, records: &[Record<'_>]) -> Result<RowResults, DeliveryError> {
        let lines = request::lines(action, records);
        let _writing = self.writing.lock().await;
        let result = async {
            if let Some(parent) = self.path.parent() {
                tokio::fs::create_dir_all(parent).await?;
            }
            let mut file = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .await?;
            file.write_all(lines.as_bytes()).await?;
            file.flush().await
        }
        .await;
        result.map_err(|e| response::io_error(&self.path, e))?;
        Ok(vec![Ok(()); records.len()])
    }
}
