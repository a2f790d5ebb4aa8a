use crate::destinations::oauth::OAuth2Config;
use ebb_shared::config::{default_max_retry_after, humantime_serde_compat};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// `type: http_request` — see docs/destinations/http-request.md.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpRequestConfig {
    /// Where relative operation URLs start, e.g. `https://api.example.com/v2`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Headers on every request; values may reference `${VAR}`s.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Bearer tokens from an OAuth 2.0 token endpoint.
    #[serde(default)]
    pub oauth2: Option<OAuth2Config>,
    /// The request a row entering the model makes (also events and audience
    /// additions).
    #[serde(default)]
    pub on_added: Option<Operation>,
    /// The request a changed row makes; `on_added` when not set.
    #[serde(default)]
    pub on_changed: Option<Operation>,
    /// The request a row leaving the model makes (mirror, delete behaviours,
    /// audience removals).
    #[serde(default)]
    pub on_removed: Option<Operation>,
    /// How bodies are sent: `json` (checked to be JSON after rendering) or
    /// `form` (`application/x-www-form-urlencoded`).
    #[serde(default)]
    pub body_format: BodyFormat,
    /// Statuses retried with backoff besides 429 (which pauses the fleet).
    #[serde(default = "default_retry_on")]
    pub retry_on: Vec<u16>,
    /// Rows per request for batched operations (all operations batched);
    /// otherwise each row is one request.
    #[serde(default)]
    pub batch_size: Option<usize>,
    #[serde(default)]
    pub rate_limit: Option<f64>,
    #[serde(default)]
    pub max_concurrency: Option<u32>,
    #[serde(default = "default_timeout", with = "humantime_serde_compat")]
    pub timeout: Duration,
    #[serde(default = "default_max_retry_after", with = "humantime_serde_compat")]
    pub max_retry_after: Duration,
}

/// One operation's request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operation {
    #[serde(default = "default_method")]
    pub method: String,
    /// A Liquid template: `/contacts/{{ record.id }}`, relative to
    /// `base_url`, or a whole URL.
    pub url: String,
    /// A Liquid template of the body; without one, a JSON body of the record
    /// (or `{"records": [...]}` when batched). Methods like DELETE may leave
    /// it out with `body: ""`.
    #[serde(default)]
    pub body: Option<String>,
    /// One request for the whole batch: the templates see `records` (the
    /// mapped records) and `keys` instead of `record` and `key`.
    #[serde(default)]
    pub batched: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyFormat {
    #[default]
    Json,
    Form,
}

fn default_method() -> String {
    "POST".to_string()
}

fn default_retry_on() -> Vec<u16> {
    vec![408, 500, 502, 503, 504]
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
