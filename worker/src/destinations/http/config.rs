use crate::destinations::oauth::OAuth2Config;
use ebb_shared::config::{default_max_retry_after, humantime_serde_compat};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// `type: http` — see docs/destinations/http.md.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpDestinationConfig {
    pub url: String,
    #[serde(default = "default_method")]
    pub method: String,
    /// Header values may reference `${ENV_VAR}`s; they are redacted in logs.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Records per request (100 by default).
    #[serde(default)]
    pub batch_size: Option<usize>,
    #[serde(default = "default_timeout", with = "humantime_serde_compat")]
    pub timeout: Duration,
    /// Requests per second across the fleet; unlimited by default.
    #[serde(default)]
    pub rate_limit: Option<f64>,
    /// Requests in flight across the fleet; unlimited by default.
    #[serde(default)]
    pub max_concurrency: Option<u32>,
    /// Bearer tokens from an OAuth 2.0 token endpoint (client credentials, or
    /// a refresh token), renewed before they expire and after a `401`.
    #[serde(default)]
    pub oauth2: Option<OAuth2Config>,
    /// The longest `Retry-After` Ebb waits out (and pauses the fleet for); a
    /// batch asked to wait longer fails its rows, which the next run retries.
    #[serde(default = "default_max_retry_after", with = "humantime_serde_compat")]
    pub max_retry_after: Duration,
}

fn default_method() -> String {
    "POST".to_string()
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
