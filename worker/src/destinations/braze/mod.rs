//! Braze: user attributes, custom events and purchases through `/users/track`, user
//! removal through `/users/delete`, identified by `external_id`,
//! `braze_id` or a user alias. See docs/destinations/braze.md.

mod config;
#[cfg(any(test, feature = "fakes"))]
pub mod fake;
mod request;
mod response;
#[cfg(test)]
mod tests;

use super::settings::{self, Documented, Requested};
use super::{Connector, DeliveryError, Destination, Record, RowResults};
use crate::behaviour::Action;
use crate::error::TaskError;
use async_trait::async_trait;
pub use config::{BrazeConfig, EventType};
use ebb_shared::config::{
    expand_env, BatchLimits, Capabilities, DeleteBehavior, DestinationProfile, FieldError, SyncMode, SyncSpec, SyncType,
};
use request::Identifier;
use serde_json::{Map, Value};
use std::sync::Arc;

/// The connector.
pub struct Braze;

/// "Up to 75 objects in total across attributes, events and purchases per
/// API request."
const TRACK_OBJECTS: usize = 75;
/// Ids per `/users/delete` request.
const DELETE_IDS: usize = 50;
/// Braze documents no byte limit; 4 MB keeps 75 objects well inside what
/// its API takes.
const BATCH_BYTES: usize = 4 * 1024 * 1024;

const DOCUMENTED: Documented = Documented {
    // `/users/track`: 3,000 requests per three seconds per workspace.
    rate_limit: Some(1000.0),
    rate_window: Some(std::time::Duration::from_secs(3)),
    max_concurrency: None,
    batch: BatchLimits {
        records: TRACK_OBJECTS,
        bytes: BATCH_BYTES,
    },
    default_batch_size: TRACK_OBJECTS,
};

impl Connector for Braze {
    const TYPE: &'static str = "braze";
    type Config = BrazeConfig;

    fn profile(config: &Self::Config) -> Result<DestinationProfile, FieldError> {
        let requested = Requested {
            batch_size: config.batch_size,
            rate_limit: config.rate_limit,
            max_concurrency: config.max_concurrency,
        };
        let (limits, batch) = settings::apply(&DOCUMENTED, requested)?;
        settings::check_url(&config.rest_endpoint, "rest_endpoint")?;
        Ok(DestinationProfile {
            capabilities: Capabilities {
                sync_types: &[SyncType::Object, SyncType::Event],
                modes: &[
                    SyncMode::Insert,
                    SyncMode::Update,
                    SyncMode::Upsert,
                    SyncMode::Mirror,
                    SyncMode::All,
                ],
                delete_behaviors: DeleteBehavior::ALL,
            },
            limits,
            batch,
            max_retry_after: config.max_retry_after,
            expanded_settings: vec![
                (vec!["api_key".into()], config.api_key.clone()),
                (vec!["rest_endpoint".into()], config.rest_endpoint.clone()),
            ],
        })
    }

    /// Braze has no read endpoint a `users.track` key may call without
    /// side effects; an empty track request checks the key and the endpoint
    /// and changes nothing.
    async fn test_connection(config: Self::Config, name: &str) -> Result<(), String> {
        let client = Client::new(&config, name).map_err(|e| e.to_string())?;
        match client
            .post("/users/track", &serde_json::json!({ "attributes": [] }))
            .await
        {
            // "Valid data must be provided": the key was accepted.
            Ok(_) | Err(DeliveryError::Rejected(_)) => Ok(()),
            Err(error) => Err(error.to_string()),
        }
    }

    async fn open(config: Self::Config, spec: &SyncSpec) -> Result<Arc<dyn Destination>, TaskError> {
        Ok(Arc::new(BrazeDestination::new(config, spec)?))
    }
}

struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Client {
    fn new(config: &BrazeConfig, name: &str) -> Result<Client, TaskError> {
        let key = expand_env(&config.api_key, &format!("destination {name:?} api_key"))?;
        let base = expand_env(&config.rest_endpoint, &format!("destination {name:?} rest_endpoint"))?;
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| TaskError::DestinationSetup {
                destination: name.to_string(),
                reason: e.to_string(),
            })?;
        Ok(Client {
            http,
            base: base.trim_end_matches('/').to_string(),
            key,
        })
    }

    /// Sends one request; the body of a 2xx answer.
    async fn post(&self, path: &str, body: &Value) -> Result<Vec<u8>, DeliveryError> {
        let secrets = [self.key.as_str()];
        let url = format!("{}{path}", self.base);
        let sent = serde_json::to_vec(body).expect("JSON values serialize");
        let exchange = crate::debugger::begin(&reqwest::Method::POST, &url, Some(&sent));
        let request = self
            .http
            .post(&url)
            .bearer_auth(&self.key)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(sent.clone());
        let answer = match request.send().await {
            Ok(answer) => answer,
            Err(error) => return Err(exchange.failed(super::transport_error(error, "Braze", &secrets), &secrets)),
        };
        let status = answer.status().as_u16();
        let header = |name: &str| {
            answer
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let wait = response::rate_limit_wait(
            header("retry-after").as_deref(),
            header("x-ratelimit-remaining").as_deref(),
            header("x-ratelimit-reset").as_deref(),
        );
        let bytes = match answer.bytes().await {
            Ok(bytes) => bytes,
            Err(error) => return Err(exchange.failed(super::transport_error(error, "Braze", &secrets), &secrets)),
        };
        exchange.answered(status, &bytes, &secrets);
        if (200..300).contains(&status) {
            Ok(bytes.to_vec())
        } else if status == 400
            && ["attributes", "events", "purchases"]
                .iter()
                .any(|array| !response::indexed_errors(&bytes, array).is_empty())
        {
            // Every object refused, each named: the caller maps them.
            Ok(bytes.to_vec())
        } else {
            Err(response::failure(status, wait, &bytes, &secrets))
        }
    }
}

pub struct BrazeDestination {
    client: Client,
    identifier: Identifier,
    /// The field the identifier's value comes from.
    matching: String,
    event_name: Option<String>,
    event_type: EventType,
}

impl BrazeDestination {
    fn new(config: BrazeConfig, spec: &SyncSpec) -> Result<Self, TaskError> {
        let setup = |reason: String| TaskError::DestinationSetup {
            destination: spec.destination_name.clone(),
            reason,
        };
        let client = Client::new(&config, &spec.destination_name)?;
        let Some(matching) = spec.record_matching.as_ref().map(|m| m.to.clone()) else {
            return Err(setup(
                "a Braze sync needs `record_matching` naming the user identifier: `to: external_id`, \
                 `to: braze_id`, or `to: user_alias` with the destination's `alias_label`"
                    .into(),
            ));
        };
        let identifier = match (matching.as_str(), &config.alias_label) {
            ("external_id", _) => Identifier::ExternalId,
            ("braze_id", _) => Identifier::BrazeId,
            ("user_alias", Some(label)) => Identifier::UserAlias(label.clone()),
            ("user_alias", None) => {
                return Err(setup(
                    "`record_matching.to: user_alias` needs the destination's `alias_label`".into(),
                ))
            }
            (other, _) => {
                return Err(setup(format!(
                    "Braze identifies users by external_id, braze_id or user_alias, not {other:?}: set \
                     `record_matching.to` to one of them"
                )))
            }
        };
        let maps = |field: &str| spec.mappings.iter().any(|m| m.to == field);
        if spec.sync_type == SyncType::Event && config.event_type == EventType::Purchase {
            let missing: Vec<&str> = ["product_id", "currency", "price"]
                .into_iter()
                .filter(|field| !maps(field))
                .collect();
            if !missing.is_empty() {
                return Err(setup(format!(
                    "a purchase sync to Braze needs mappings to {}",
                    missing.join(", ")
                )));
            }
        } else if spec.sync_type == SyncType::Event && config.event_name.is_none() && !maps("name") {
            return Err(setup(
                "an event sync to Braze needs the destination's `event_name`, or a mapping to `name`".into(),
            ));
        }
        Ok(BrazeDestination {
            client,
            identifier,
            matching,
            event_name: config.event_name,
            event_type: config.event_type,
        })
    }

    /// `/users/track` with one array; rows the answer names fail alone.
    async fn track(
        &self,
        array: &str,
        objects: Vec<(usize, Value)>,
    ) -> Result<Vec<(usize, Result<(), String>)>, DeliveryError> {
        let (rows, objects): (Vec<usize>, Vec<Value>) = objects.into_iter().unzip();
        let body = serde_json::json!({ array: objects });
        let answer = self.client.post("/users/track", &body).await?;
        let mut results: Vec<(usize, Result<(), String>)> = rows.iter().map(|row| (*row, Ok(()))).collect();
        for (index, reason) in response::indexed_errors(&answer, array) {
            if let Some(slot) = results.get_mut(index) {
                slot.1 = Err(reason);
            }
        }
        Ok(results)
    }

    async fn delete(&self, rows: &[(usize, String)]) -> Result<Vec<(usize, Result<(), String>)>, DeliveryError> {
        for chunk in rows.chunks(DELETE_IDS) {
            let ids: Vec<&str> = chunk.iter().map(|(_, id)| id.as_str()).collect();
            // Users Braze does not have are not counted in `deleted`, and
            // are what was asked for.
            self.client
                .post("/users/delete", &self.identifier.delete_body(&ids))
                .await?;
        }
        Ok(rows.iter().map(|(row, _)| (*row, Ok(()))).collect())
    }
}

#[async_trait]
impl Destination for BrazeDestination {
    async fn check_connection(&self) -> Result<(), String> {
        match self
            .client
            .post("/users/track", &serde_json::json!({ "attributes": [] }))
            .await
        {
            Ok(_) | Err(DeliveryError::Rejected(_)) => Ok(()),
            Err(error) => Err(error.to_string()),
        }
    }

    async fn send(&self, action: Action, records: &[Record<'_>]) -> Result<RowResults, DeliveryError> {
        let mut results: RowResults = vec![Ok(()); records.len()];
        let mut parsed: Vec<(usize, String, Map<String, Value>)> = Vec::new();
        // Column-based diffing: a changed row sends only the attributes
        // whose value changed since the last delivery (Braze bills each
        // attribute written as a data point).
        let diffing = matches!(action, Action::Upsert | Action::Update);
        for (row, record) in records.iter().enumerate() {
            let mut fields: Map<String, Value> = serde_json::from_str(record.json)
                .map_err(|e| DeliveryError::Permanent(format!("record {:?} is not a JSON object: {e}", record.key)))?;
            let id = fields
                .remove(&self.matching)
                .map(|v| request::text(&v))
                .unwrap_or_default();
            if id.is_empty() {
                results[row] = Err(format!(
                    "the record has no value for {:?}, the Braze identifier users are matched on",
                    self.matching
                ));
                continue;
            }
            let previous = record
                .previous
                .filter(|_| diffing)
                .and_then(|p| serde_json::from_str::<Map<String, Value>>(p).ok());
            if let Some(previous) = previous {
                fields.retain(|name, value| previous.get(name) != Some(value));
                if fields.is_empty() {
                    continue;
                }
            }
            parsed.push((row, id, fields));
        }
        if parsed.is_empty() {
            return Ok(results);
        }
        let answered = match action {
            Action::Delete | Action::Archive | Action::Remove => {
                let ids: Vec<(usize, String)> = parsed.into_iter().map(|(row, id, _)| (row, id)).collect();
                self.delete(&ids).await?
            }
            Action::Track if self.event_type == EventType::Purchase => {
                let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                let mut purchases = Vec::new();
                for (row, id, fields) in parsed {
                    match self.identifier.purchase(&id, fields, &now) {
                        Ok(purchase) => purchases.push((row, purchase)),
                        Err(reason) => results[row] = Err(reason),
                    }
                }
                if purchases.is_empty() {
                    return Ok(results);
                }
                self.track("purchases", purchases).await?
            }
            Action::Track => {
                let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                let events = parsed
                    .into_iter()
                    .map(|(row, id, fields)| {
                        (
                            row,
                            self.identifier.event(&id, fields, self.event_name.as_deref(), &now),
                        )
                    })
                    .collect();
                self.track("events", events).await?
            }
            _ => {
                let update_only = matches!(action, Action::Update | Action::ClearFields);
                let clear = action == Action::ClearFields;
                let attributes = parsed
                    .into_iter()
                    .map(|(row, id, fields)| (row, self.identifier.attributes(&id, fields, update_only, clear)))
                    .collect();
                self.track("attributes", attributes).await?
            }
        };
        for (row, result) in answered {
            results[row] = result;
        }
        Ok(results)
    }
}
