//! Task errors, each classified as retriable (a transient fault: running the task
//! again may succeed) or permanent (bad input that a person must fix).

use ebb_shared::config::ConfigError;
use ebb_shared::snapshot::FormatError;
use ebb_shared::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("source {source_name:?} is unreachable: {reason}")]
    SourceUnreachable { source_name: String, reason: String },
    #[error("model {model:?}: the query failed: {reason}")]
    Query { model: String, reason: String },
    #[error("model {model:?} has no primary-key column {column:?} (its columns: {available})")]
    MissingKeyColumn {
        model: String,
        column: String,
        available: String,
    },
    #[error("sync {sync:?} maps column {column:?}, which model {model:?} does not return (its columns: {available})")]
    MissingMappedColumn {
        sync: String,
        model: String,
        column: String,
        available: String,
    },
    #[error("sync {sync:?}, mapping to {field:?}: {reason}")]
    Mapping {
        sync: String,
        field: String,
        reason: String,
    },
    #[error("source {source_name:?}: reading rows failed: {reason}")]
    SourceRead { source_name: String, reason: String },
    #[error("destination {destination:?}: {reason}")]
    DestinationSetup { destination: String, reason: String },
    /// The coordinator gave no share of the destination's limits: it is
    /// restarting or out of reach (worth another attempt), or it does not know
    /// the destination (which the attempts run into, and then report).
    #[error("destination {destination:?}: no delivery lease: {reason}")]
    NoLease { destination: String, reason: String },
    /// The run ended (cancelled, failed) before this task ran: it did nothing.
    #[error("run {run} had ended before this task ran; nothing was sent")]
    RunEnded { run: String },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("stored object is unreadable: {0}")]
    Format(#[from] FormatError),
}

impl TaskError {
    pub fn is_retriable(&self) -> bool {
        match self {
            TaskError::SourceUnreachable { .. } | TaskError::SourceRead { .. } | TaskError::NoLease { .. } => true,
            TaskError::Storage(error) => error.is_retriable(),
            TaskError::Query { .. }
            | TaskError::MissingKeyColumn { .. }
            | TaskError::MissingMappedColumn { .. }
            | TaskError::Mapping { .. }
            | TaskError::DestinationSetup { .. }
            | TaskError::RunEnded { .. }
            | TaskError::Config(_)
            | TaskError::Format(_) => false,
        }
    }
}
