use ebb_shared::config::{default_max_retry_after, humantime_serde_compat};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `type: hubspot` — see docs/destinations/hubspot.md.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubSpotConfig {
    /// A private app's access token, as a `${VAR}` reference.
    pub access_token: String,
    /// The CRM object records are written to: `contacts`, `companies`,
    /// `deals`, another standard object, or a custom object's type id
    /// (`2-1234567`). Audience syncs add contacts to `list_id`.
    #[serde(default = "default_object")]
    pub object: String,
    /// The list (its ILS list id) audience syncs add members to and remove
    /// them from; it must be a manual or snapshot list.
    #[serde(default)]
    pub list_id: Option<String>,
    /// The account's subscription, which sets HubSpot's request limit for a
    /// private app: `starter` (100 per 10 s, also Free), `professional` and
    /// `enterprise` (190), `api_limit_increase` (250).
    #[serde(default)]
    pub tier: Tier,
    /// Where the API is; changed only to point Ebb at a test server.
    #[serde(default = "default_api_base_url")]
    pub api_base_url: String,
    /// Inputs per request, at most 100 (HubSpot's batch limit).
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// Requests per second across the fleet, below the tier's limit.
    #[serde(default)]
    pub rate_limit: Option<f64>,
    #[serde(default)]
    pub max_concurrency: Option<u32>,
    #[serde(default = "default_timeout", with = "humantime_serde_compat")]
    pub timeout: Duration,
    #[serde(default = "default_max_retry_after", with = "humantime_serde_compat")]
    pub max_retry_after: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    #[default]
    Starter,
    Professional,
    Enterprise,
    ApiLimitIncrease,
}

impl Tier {
    /// Requests a private app may make per rolling ten seconds (HubSpot's
    /// usage guidelines).
    pub fn requests_per_ten_seconds(self) -> u32 {
        match self {
            Tier::Starter => 100,
            Tier::Professional | Tier::Enterprise => 190,
            Tier::ApiLimitIncrease => 250,
        }
    }
}

fn default_object() -> String {
    "contacts".to_string()
}

pub fn default_api_base_url() -> String {
    "https://api.hubapi.com".to_string()
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
