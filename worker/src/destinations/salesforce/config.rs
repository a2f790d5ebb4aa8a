use crate::destinations::oauth::OAuth2Config;
use ebb_shared::config::{default_max_retry_after, humantime_serde_compat};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `type: salesforce` — see docs/destinations/salesforce.md.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SalesforceConfig {
    /// The sObject records are written to: `Contact`, `Lead`, `Account`, or
    /// a custom object such as `Subscription__c`.
    pub object: String,
    /// The org's API host (`https://MyDomain.my.salesforce.com`). Needed
    /// with `access_token`; with `oauth2`, the token answer's `instance_url`
    /// is used unless this is set.
    #[serde(default)]
    pub instance_url: Option<String>,
    /// The REST API version, as in `/services/data/v62.0/`.
    #[serde(default = "default_api_version")]
    pub api_version: String,
    /// A session or access token, as a `${VAR}` reference. It cannot be
    /// renewed: prefer `oauth2`.
    #[serde(default)]
    pub access_token: Option<String>,
    /// A connected app's OAuth 2.0 grant (refresh token or client
    /// credentials); the token endpoint is the org's
    /// `/services/oauth2/token`.
    #[serde(default)]
    pub oauth2: Option<OAuth2Config>,
    /// Stop sending once the org's daily API usage, as Salesforce reports it
    /// with every answer (`Sforce-Limit-Info`), reaches this percentage of
    /// its limit: other integrations share the same daily allowance. The
    /// rows not sent fail with the reason and go again on the next run.
    #[serde(default)]
    pub max_api_usage_percent: Option<f64>,
    /// Records per request, at most 200 (sObject Collections' limit).
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// Requests per second across the fleet (Salesforce has no per-second
    /// limit; this spreads a sync's share of the daily allowance).
    #[serde(default)]
    pub rate_limit: Option<f64>,
    /// Requests in flight across the fleet.
    #[serde(default)]
    pub max_concurrency: Option<u32>,
    #[serde(default = "default_timeout", with = "humantime_serde_compat")]
    pub timeout: Duration,
    #[serde(default = "default_max_retry_after", with = "humantime_serde_compat")]
    pub max_retry_after: Duration,
    /// When and how shards go by Bulk API 2.0 ingest jobs instead of
    /// sObject Collections.
    #[serde(default)]
    pub bulk_api: BulkApiConfig,
}

/// `bulk_api:` — large shards as Bulk API 2.0 ingest jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkApiConfig {
    /// Off: every shard goes by sObject Collections.
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// A shard with at least this many rows to send goes by bulk jobs (a
    /// job costs a handful of API requests whatever its size; Collections
    /// cost one per 200 rows).
    #[serde(default = "default_threshold")]
    pub threshold: usize,
    /// Rows per job (Salesforce processes a job in batches of 10,000).
    #[serde(default = "default_records_per_job")]
    pub records_per_job: usize,
    /// The first wait between polls of a job's state; later ones grow.
    #[serde(default = "default_poll_interval", with = "humantime_serde_compat")]
    pub poll_interval: Duration,
    /// How long one attempt waits for a job before leaving it to the next
    /// attempt (which polls the same job, never resubmits it).
    #[serde(default = "default_job_timeout", with = "humantime_serde_compat")]
    pub job_timeout: Duration,
}

impl Default for BulkApiConfig {
    fn default() -> Self {
        BulkApiConfig {
            enabled: true,
            threshold: default_threshold(),
            records_per_job: default_records_per_job(),
            poll_interval: default_poll_interval(),
            job_timeout: default_job_timeout(),
        }
    }
}

fn enabled() -> bool {
    true
}

fn default_threshold() -> usize {
    10_000
}

fn default_records_per_job() -> usize {
    10_000
}

fn default_poll_interval() -> Duration {
    Duration::from_secs(2)
}

fn default_job_timeout() -> Duration {
    Duration::from_secs(30 * 60)
}

pub fn default_api_version() -> String {
    "62.0".to_string()
}

fn default_timeout() -> Duration {
    // Salesforce counts requests past 20 s against the org's long-running
    // limit; a collection of 200 with triggers can take that long.
    Duration::from_secs(60)
}
