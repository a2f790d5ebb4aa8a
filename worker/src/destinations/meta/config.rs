use ebb_shared::config::{default_max_retry_after, humantime_serde_compat};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `type: meta_custom_audience` — see docs/destinations/meta.md.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetaConfig {
    /// A system user's access token with `ads_management`, as a `${VAR}`
    /// reference.
    pub access_token: String,
    /// The custom audience members are added to and removed from (a
    /// customer-list audience of the ad account).
    pub audience_id: String,
    /// With the app's secret (a `${VAR}` reference), every request carries
    /// `appsecret_proof`, which apps that require it insist on.
    #[serde(default)]
    pub app_secret: Option<String>,
    /// The Graph API version, as in `https://graph.facebook.com/v21.0/`.
    #[serde(default = "default_api_version")]
    pub api_version: String,
    /// Where the Graph API is; changed only to point Ebb at a test server.
    #[serde(default = "default_api_base_url")]
    pub api_base_url: String,
    /// Rows per request, at most 10,000 (the documented limit).
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

fn default_api_version() -> String {
    "v21.0".to_string()
}

fn default_api_base_url() -> String {
    "https://graph.facebook.com".to_string()
}

fn default_timeout() -> Duration {
    Duration::from_secs(60)
}
