//! Row-level results of a run: the outcome of every planned and invalid row,
//! read from the shards' row files in the object store.
//!
//! Row data never sits in the coordinator: rows stream through, one shard's
//! file at a time, into a bounded channel. A key search reads only the file
//! of the shard whose range holds the key's hash. A coordinator without the
//! object store (or a run from before row files) answers from the state DB's
//! samples of rejected and invalid rows instead.

use crate::store::StateStore;
use ebb_shared::hashing::key_hash;
use ebb_shared::protocol::{RowOutcome, RowResult};
use ebb_shared::storage::Storage;
use tokio::sync::mpsc;

/// Which rows of a run to return.
#[derive(Debug, Clone, Default)]
pub struct RowFilter {
    pub outcome: Option<RowOutcome>,
    pub key: Option<String>,
    pub limit: Option<u64>,
}

impl RowFilter {
    fn accepts(&self, row: &RowResult) -> bool {
        self.outcome.is_none_or(|o| o == row.outcome) && self.key.as_ref().is_none_or(|k| *k == row.key)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RowsError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("reading row results: {0}")]
    Storage(#[from] ebb_shared::storage::StorageError),
    #[error("row file {key} is unreadable at line {line}: {reason}")]
    Corrupt { key: String, line: usize, reason: String },
}

/// Streams the rows of `run_id` that pass `filter`, in range order.
pub async fn stream_rows(
    store: &StateStore,
    storage: Option<&Storage>,
    run_id: &str,
    filter: RowFilter,
) -> Result<mpsc::Receiver<Result<RowResult, RowsError>>, RowsError> {
    let (sender, receiver) = mpsc::channel(256);
    let files = store.row_files(run_id).await?;
    let Some(storage) = storage.filter(|_| !files.is_empty()).cloned() else {
        for row in sampled_rows(store, run_id, &filter).await? {
            let _ = sender.try_send(Ok(row));
        }
        return Ok(receiver);
    };
    // Rows with a null key have no shard (no key, no hash): the state DB keeps
    // the first of them, and they come first.
    if filter.key.is_none() && filter.outcome.is_none_or(|o| o == RowOutcome::Invalid) {
        let limit = filter.limit.unwrap_or(256).min(256) as i64;
        for row in store.run_rows(run_id, Some("invalid"), Some(""), limit).await? {
            let _ = sender.try_send(Ok(RowResult {
                key: row.key,
                operation: None,
                outcome: RowOutcome::Invalid,
                error: Some(row.reason),
            }));
        }
    }
    let already_sent = receiver.len() as u64;
    let mut files = files;
    if let Some(key) = &filter.key {
        let hash = key_hash(key);
        files.retain(|(range, _)| range.contains(hash));
    }
    tokio::spawn(async move {
        let mut sent = already_sent;
        for (_, object) in files {
            let bytes = match storage.get(&object).await {
                Ok(bytes) => bytes,
                Err(error) => {
                    let _ = sender.send(Err(error.into())).await;
                    return;
                }
            };
            for (index, line) in bytes.split(|b| *b == b'\n').enumerate() {
                if line.is_empty() {
                    continue;
                }
                let row = match serde_json::from_slice::<RowResult>(line) {
                    Ok(row) => row,
                    Err(error) => {
                        let corrupt = RowsError::Corrupt {
                            key: object.clone(),
                            line: index + 1,
                            reason: error.to_string(),
                        };
                        let _ = sender.send(Err(corrupt)).await;
                        return;
                    }
                };
                if !filter.accepts(&row) {
                    continue;
                }
                if filter.limit.is_some_and(|limit| sent >= limit) || sender.send(Ok(row)).await.is_err() {
                    return;
                }
                sent += 1;
            }
        }
    });
    Ok(receiver)
}

/// Rows from the state DB's samples (at most the channel's capacity).
async fn sampled_rows(store: &StateStore, run_id: &str, filter: &RowFilter) -> Result<Vec<RowResult>, RowsError> {
    let kind = match filter.outcome {
        Some(RowOutcome::Succeeded) => return Ok(Vec::new()),
        Some(RowOutcome::Failed) => Some("rejected"),
        Some(RowOutcome::Invalid) => Some("invalid"),
        None => None,
    };
    let limit = filter.limit.unwrap_or(256).min(256) as i64;
    let rows = store.run_rows(run_id, kind, filter.key.as_deref(), limit).await?;
    Ok(rows
        .into_iter()
        .map(|row| RowResult {
            key: row.key,
            operation: row.operation.as_deref().and_then(operation_of),
            outcome: if row.kind == "invalid" {
                RowOutcome::Invalid
            } else {
                RowOutcome::Failed
            },
            error: Some(row.reason),
        })
        .collect())
}

fn operation_of(text: &str) -> Option<ebb_shared::protocol::Operation> {
    use ebb_shared::protocol::Operation;
    [Operation::Added, Operation::Changed, Operation::Removed]
        .into_iter()
        .find(|o| o.as_str() == text)
}

/// How exported rows are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowsFormat {
    /// One JSON array (the API's default, with a limit).
    Json,
    /// One JSON object per line.
    Jsonl,
    /// RFC 4180 CSV with a header line.
    Csv,
}

impl RowsFormat {
    pub fn parse(text: &str) -> Result<RowsFormat, String> {
        match text {
            "json" => Ok(RowsFormat::Json),
            "jsonl" | "ndjson" => Ok(RowsFormat::Jsonl),
            "csv" => Ok(RowsFormat::Csv),
            other => Err(format!("unknown format {other:?} (use json, jsonl or csv)")),
        }
    }

    pub fn content_type(&self) -> &'static str {
        match self {
            RowsFormat::Json => "application/json",
            RowsFormat::Jsonl => "application/x-ndjson",
            RowsFormat::Csv => "text/csv; charset=utf-8",
        }
    }

    /// What comes before the first row.
    pub fn header(&self) -> &'static str {
        match self {
            RowsFormat::Csv => "key,operation,outcome,error\n",
            _ => "",
        }
    }

    /// One row as a line of this format (CSV quoted as RFC 4180 says).
    pub fn line(&self, row: &RowResult) -> String {
        fn field(text: &str) -> String {
            if text.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", text.replace('"', "\"\""))
            } else {
                text.to_string()
            }
        }
        match self {
            RowsFormat::Csv => format!(
                "{},{},{},{}\n",
                field(&row.key),
                row.operation.map(|o| o.as_str()).unwrap_or(""),
                row.outcome.as_str(),
                field(row.error.as_deref().unwrap_or(""))
            ),
            RowsFormat::Json | RowsFormat::Jsonl => {
                let mut line = serde_json::to_string(row).expect("row results serialize");
                line.push('\n');
                line
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ebb_shared::protocol::Operation;

    #[test]
    fn csv_quotes_what_needs_it() {
        let row = RowResult {
            key: "a,b".into(),
            operation: Some(Operation::Added),
            outcome: RowOutcome::Failed,
            error: Some("bad \"email\"".into()),
        };
        assert_eq!(
            RowsFormat::Csv.line(&row),
            "\"a,b\",added,failed,\"bad \"\"email\"\"\"\n"
        );
        let invalid = RowResult {
            key: "7".into(),
            operation: None,
            outcome: RowOutcome::Invalid,
            error: None,
        };
        assert_eq!(RowsFormat::Csv.line(&invalid), "7,,invalid,\n");
        assert!(RowsFormat::Jsonl.line(&invalid).starts_with("{\"key\":\"7\""));
        assert!(RowsFormat::parse("xml").is_err());
    }
}
