//! A local JSON-lines file: every operation is appended as one line. Made for the
//! quickstart and for looking at exactly what a sync sends.

mod request;
mod response;

use super::{DeliveryError, Destination, Record, RowResults};
use crate::behaviour::Action;
use async_trait::async_trait;
use ebb_shared::config::JsonlDestinationConfig;
use std::path::PathBuf;
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
