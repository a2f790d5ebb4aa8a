use ebb_shared::config::{default_max_retry_after, humantime_serde_compat};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `type: hubspot` — see docs/destinations/hubspot.md.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubSpotConfig {
    /// A private app's access token, as a `${VAR}` reference; or `oauth2`.
    #[serde(default)]
    pub access_token: Option<String>,
    /// A public (OAuth) app's grant: Ebb renews its 30-minute access tokens
    /// with the refresh token the account's install gave.
    #[serde(default)]
    pub oauth2: Option<HubSpotOAuth2>,
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
    /// `enterprise` (190), `api_limit_increase` (250). An OAuth app has 110
    /// per 10 s in every account whatever its tier.
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

/// `oauth2:` of a HubSpot destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubSpotOAuth2 {
    /// The app's client id.
    pub client_id: String,
    /// The app's client secret, as a `${VAR}` reference.
    pub client_secret: String,
    /// The refresh token of the account's install, as a `${VAR}` reference.
    pub refresh_token: String,
    /// The token endpoint; by default HubSpot's current one under
    /// `api_base_url` ([`TOKEN_PATH`]), or its older v1 endpoint
    /// ([`V1_TOKEN_PATH`]) on a server that does not have it.
    #[serde(default)]
    pub token_url: Option<String>,
}

/// HubSpot's dated OAuth token endpoint (API version 2026-03).
pub const TOKEN_PATH: &str = "/oauth/2026-03/token";
/// The v1 token endpoint HubSpot retires on 2027-02-16.
pub const V1_TOKEN_PATH: &str = "/oauth/v1/token";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    #[default]
    Starter,
    Professional,
    Enterprise,
    ApiLimitIncrease,
}

/// Requests a public (OAuth) app may make per rolling ten seconds in each
/// account that installed it.
pub const OAUTH_APP_REQUESTS_PER_TEN_SECONDS: u32 = 110;

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
