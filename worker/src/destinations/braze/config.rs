use ebb_shared::config::{default_max_retry_after, humantime_serde_compat};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `type: braze` — see docs/destinations/braze.md.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrazeConfig {
    /// A REST API key with `users.track` (and `users.delete` for removals),
    /// as a `${VAR}` reference.
    pub api_key: String,
    /// The workspace's REST endpoint, e.g. `https://rest.iad-01.braze.com`
    /// (it depends on the instance the workspace lives on).
    pub rest_endpoint: String,
    /// For `record_matching.to: user_alias`: the alias label; the matched
    /// value is the alias name.
    #[serde(default)]
    pub alias_label: Option<String>,
    /// Event syncs: the event name every row is sent as, unless the record
    /// has a mapped `name` field.
    #[serde(default)]
    pub event_name: Option<String>,
    /// Event syncs: `custom` events (the default) or `purchase` events,
    /// which need mapped `product_id`, `currency` and `price`.
    #[serde(default)]
    pub event_type: EventType,
    /// Objects per request, at most 75 (Braze's limit across attributes,
    /// events and purchases).
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

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

/// What an event sync's rows become in Braze.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    /// A custom event object in `events`.
    #[default]
    Custom,
    /// A purchase object in `purchases` (revenue, LTV).
    Purchase,
}
