use serde::{Deserialize, Serialize};

/// `type: postgres` — see docs/destinations/postgres.md.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresDestinationConfig {
    pub url: String,
    /// `schema.table` or `table`; it must exist, with a unique constraint on `key_column`.
    pub table: String,
    /// The destination column that identifies a record (the record-matching field).
    pub key_column: String,
    /// Rows per statement (1,000 by default).
    #[serde(default)]
    pub batch_size: Option<usize>,
    #[serde(default)]
    pub rate_limit: Option<f64>,
    /// Statements in flight across the fleet (and connections per worker).
    #[serde(default)]
    pub max_concurrency: Option<u32>,
}
