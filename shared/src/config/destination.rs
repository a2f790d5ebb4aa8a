//! A destination as the config file and the wire carry it: its `type` and its
//! settings. What the settings mean belongs to the destination's connector
//! (`worker/src/destinations/<type>/config.rs`): the config loader reaches the
//! connectors through [`DestinationTypes`], so this crate knows none of them.

use super::sync::Capabilities;
use super::yaml::Segment;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;

/// One configured destination. `settings` are the block's keys but `type`, as
/// the connector normalised them when the config was loaded (defaults filled
/// in, relative paths made absolute); `${VAR}` references stay unresolved.
///
/// On the wire this is the map `{type, ...settings}`, the shape every earlier
/// version sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DestinationConfig {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(flatten)]
    pub settings: serde_json::Map<String, serde_json::Value>,
}

impl DestinationConfig {
    /// The settings as the connector's own config struct.
    pub fn settings_as<T: DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_value(serde_json::Value::Object(self.settings.clone()))
            .map_err(|e| format!("{} destination settings: {e}", self.kind))
    }
}

/// Fleet-wide delivery limits.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct DeliveryLimits {
    /// Requests per second across every worker of the fleet.
    pub rate_limit: Option<f64>,
    /// The window the vendor counts `rate_limit` over (HubSpot: 100 requests
    /// per rolling 10 s), when it documents one: the fleet then splits the
    /// window's whole requests among its workers instead of keeping a share
    /// of the rate in reserve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_window: Option<Duration>,
    /// Requests in flight across every worker of the fleet.
    pub max_concurrency: Option<u32>,
}

/// How much one request may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Records per request.
    pub records: usize,
    /// Bytes of records per request (the records' JSON, before the envelope);
    /// a batch is cut early rather than pass it.
    pub bytes: usize,
}

impl BatchLimits {
    /// No byte limit worth speaking of: the record count decides.
    pub const fn records(records: usize) -> BatchLimits {
        BatchLimits {
            records,
            bytes: usize::MAX,
        }
    }
}

/// What a connector declares about one configured destination: what the
/// loader checks syncs against, what the coordinator grants leases and sizes
/// shards by, and what the worker batches by.
#[derive(Debug, Clone, PartialEq)]
pub struct DestinationProfile {
    pub capabilities: Capabilities,
    /// The limits that hold: the vendor's documented ones, lowered by the
    /// user's settings (never raised).
    pub limits: DeliveryLimits,
    pub batch: BatchLimits,
    /// The longest `Retry-After` waited out (and paused the fleet for).
    pub max_retry_after: Duration,
    /// Settings whose `${VAR}` references are resolved when Ebb connects, as
    /// (key path below the destination, text).
    pub expanded_settings: Vec<(Vec<String>, String)>,
}

/// Every destination type Ebb has, as the config loader sees them.
pub trait DestinationTypes: Sync {
    /// The `type` names, for messages.
    fn names(&self) -> Vec<&'static str>;

    /// Reads one block's settings (every key but `type`) as the connector of
    /// `kind` would; `None` when no connector has that type. `base_dir` is
    /// where relative paths start.
    fn read(
        &self,
        kind: &str,
        settings: serde_yaml::Value,
        base_dir: &Path,
    ) -> Option<Result<serde_json::Map<String, serde_json::Value>, FieldError>>;

    /// The connector's declarations for a destination `read` accepted.
    fn profile(&self, destination: &DestinationConfig) -> Result<DestinationProfile, String>;
}

/// A problem inside one block: the path of the field below the block, and
/// what is wrong with it.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub(super) path: Vec<Segment>,
    pub(super) message: String,
    /// The message is in the user's words already (not serde's).
    pub(super) worded: bool,
}

impl FieldError {
    /// The same problem, for a field inside the block `parent` (a setting
    /// checked on its own, like a URL, that lives in a nested block).
    pub fn under(mut self, parent: &str) -> FieldError {
        self.path.insert(0, Segment::key(parent));
        self
    }

    /// A problem with the field at `path` (`&["batch_size"]`), worded for the user.
    pub fn at(path: &[&str], message: impl Into<String>) -> FieldError {
        FieldError {
            path: path.iter().map(|p| Segment::key(p)).collect(),
            message: message.into(),
            worded: true,
        }
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Reads a block as `T`, naming the field at fault (and its line, once the
/// loader places it) when it does not fit.
pub fn read_settings<T: DeserializeOwned>(value: serde_yaml::Value) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(value).map_err(|error| FieldError {
        path: error
            .path()
            .iter()
            .filter_map(|segment| match segment {
                serde_path_to_error::Segment::Map { key } => Some(Segment::Key(key.clone())),
                serde_path_to_error::Segment::Seq { index } => Some(Segment::Index(*index)),
                _ => None,
            })
            .collect(),
        message: error.into_inner().to_string(),
        worded: false,
    })
}

/// A connector's settings back into the form `DestinationConfig` keeps.
pub fn settings_map<T: Serialize>(settings: &T) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::to_value(settings) {
        Ok(serde_json::Value::Object(map)) => map,
        // Every connector's settings are a struct: anything else is a bug
        // found by the first test that loads one.
        other => panic!("destination settings must serialize to a map, not {other:?}"),
    }
}
