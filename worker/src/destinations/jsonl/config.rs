use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `type: jsonl` — see docs/destinations/jsonl.md.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonlDestinationConfig {
    /// File that every operation is appended to, relative to the config file.
    pub path: PathBuf,
    /// Records per write (1,000 by default).
    #[serde(default)]
    pub batch_size: Option<usize>,
}
