//! HubSpot CRM (v3): objects through the batch endpoints, audiences through
//! list memberships. See docs/destinations/hubspot.md.
//!
//! Object syncs match records on a unique property (`record_matching.to`:
//! `email` for contacts, a custom unique property, or `hs_object_id`):
//! upsert and update send it as each input's `idProperty`; archiving and list
//! memberships need HubSpot's record ids, which a `batch/read` by that
//! property looks up first.

mod client;
mod config;
#[cfg(any(test, feature = "fakes"))]
pub mod fake;
mod request;
mod response;
#[cfg(test)]
mod tests;

use super::settings::{self, Documented, Requested};
use super::{Connector, DeliveryError, Destination, Field, Record, RowResults};
use crate::behaviour::Action;
use crate::error::TaskError;
use async_trait::async_trait;
use client::Client;
pub use config::{HubSpotConfig, HubSpotOAuth2, Tier};
use ebb_shared::config::{
    BatchLimits, Capabilities, DeleteBehavior, DestinationProfile, FieldError, SyncMode, SyncSpec, SyncType,
};
use request::{Input, RECORD_ID};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// The connector.
pub struct HubSpot;

/// "Object API batch endpoints are limited to 100 inputs per request."
const BATCH_INPUTS: usize = 100;
/// HubSpot documents no byte limit; 4 MB keeps a batch well under the
/// request sizes its gateway is known to take.
const BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Record ids per list-membership request (v3 documents none; v1 took 500).
const MEMBERSHIP_IDS: usize = 500;

fn documented(config: &HubSpotConfig) -> Documented {
    // The limit is per rolling ten seconds, declared as its average and its
    // window: the fleet's leases split the window's requests among the
    // workers and keep the margin for transport jitter themselves, so
    // counting one here as well would only slow every sync down.
    let per_ten_seconds = match config.oauth2 {
        Some(_) => config::OAUTH_APP_REQUESTS_PER_TEN_SECONDS,
        None => config.tier.requests_per_ten_seconds(),
    };
    let per_second = f64::from(per_ten_seconds) / 10.0;
    Documented {
        rate_limit: Some(per_second),
        rate_window: Some(std::time::Duration::from_secs(10)),
        max_concurrency: None,
        batch: BatchLimits {
            records: BATCH_INPUTS,
            bytes: BATCH_BYTES,
        },
        default_batch_size: BATCH_INPUTS,
    }
}

/// The settings holding `${VAR}` references, each at its path.
fn expanded_settings(config: &HubSpotConfig) -> Vec<(Vec<String>, String)> {
    let mut settings = vec![(vec!["api_base_url".into()], config.api_base_url.clone())];
    if let Some(token) = &config.access_token {
        settings.push((vec!["access_token".into()], token.clone()));
    }
    if let Some(oauth2) = &config.oauth2 {
        let at = |field: &str| vec!["oauth2".to_string(), field.to_string()];
        settings.push((at("client_secret"), oauth2.client_secret.clone()));
        settings.push((at("refresh_token"), oauth2.refresh_token.clone()));
        if let Some(url) = &oauth2.token_url {
            settings.push((at("token_url"), url.clone()));
        }
    }
    settings
}

impl Connector for HubSpot {
    const TYPE: &'static str = "hubspot";
    type Config = HubSpotConfig;

    fn profile(config: &Self::Config) -> Result<DestinationProfile, FieldError> {
        let requested = Requested {
            batch_size: config.batch_size,
            rate_limit: config.rate_limit,
            max_concurrency: config.max_concurrency,
        };
        let (limits, batch) = settings::apply(&documented(config), requested)?;
        match (&config.access_token, &config.oauth2) {
            (Some(_), None) | (None, Some(_)) => {}
            (Some(_), Some(_)) => {
                return Err(FieldError::at(
                    &["oauth2"],
                    "set `access_token` (a private app) or `oauth2` (a public app), not both",
                ))
            }
            (None, None) => {
                return Err(FieldError::at(
                    &["access_token"],
                    "HubSpot needs credentials: `access_token` (a private app's token as a ${VAR} reference) \
                     or an `oauth2` block (a public app's client_id, client_secret and refresh_token)",
                ))
            }
        }
        if let Some(url) = config.oauth2.as_ref().and_then(|o| o.token_url.as_deref()) {
            settings::check_url(url, "token_url").map_err(|e| e.under("oauth2"))?;
        }
        if config.object.trim().is_empty() || config.object.contains('/') {
            return Err(FieldError::at(
                &["object"],
                "`object` names a CRM object type: contacts, companies, deals, or a custom object's id like 2-1234567",
            ));
        }
        settings::check_url(&config.api_base_url, "api_base_url")?;
        Ok(DestinationProfile {
            capabilities: Capabilities {
                sync_types: &[SyncType::Object, SyncType::Audience],
                modes: &[
                    SyncMode::Insert,
                    SyncMode::Update,
                    SyncMode::Upsert,
                    SyncMode::Mirror,
                    SyncMode::Archive,
                    SyncMode::AddRemove,
                    SyncMode::All,
                ],
                delete_behaviors: DeleteBehavior::ALL,
            },
            limits,
            batch,
            max_retry_after: config.max_retry_after,
            expanded_settings: expanded_settings(config),
        })
    }

    /// One read of the object, and of the list when one is named: the token,
    /// its scopes and the list's kind are checked.
    async fn test_connection(config: Self::Config, name: &str) -> Result<(), String> {
        let client = Client::new(&config, name).map_err(|e| e.to_string())?;
        let path = format!("/crm/v3/objects/{}?limit=1", config.object);
        client
            .call(reqwest::Method::GET, &path, None)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(list) = &config.list_id {
            let (_, body) = client
                .call(reqwest::Method::GET, &format!("/crm/v3/lists/{list}"), None)
                .await
                .map_err(|e| e.to_string())?;
            let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let processing = answer["list"]["processingType"].as_str().unwrap_or("unknown");
            if !matches!(processing, "MANUAL" | "SNAPSHOT") {
                return Err(format!(
                    "list {list} is a {processing} list: HubSpot lets syncs change the members of MANUAL and SNAPSHOT lists only"
                ));
            }
        }
        Ok(())
    }

    /// The object's properties (`GET /crm/v3/properties/{object}`).
    async fn fields(config: Self::Config, name: &str, object: Option<&str>) -> Result<Option<Vec<Field>>, String> {
        let client = Client::new(&config, name).map_err(|e| e.to_string())?;
        let object = object.unwrap_or(&config.object);
        let (_, body) = client
            .call(reqwest::Method::GET, &format!("/crm/v3/properties/{object}"), None)
            .await
            .map_err(|e| e.to_string())?;
        let answer: Value = serde_json::from_slice(&body).map_err(|e| format!("HubSpot's properties answer: {e}"))?;
        let fields = answer["results"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|property| {
                let flag = |value: &Value| value.as_bool().unwrap_or(false);
                Some(Field {
                    name: property["name"].as_str()?.to_string(),
                    kind: property["type"].as_str().unwrap_or("string").to_string(),
                    // HubSpot takes a contact's `email` as an idProperty
                    // too, though its definition says no unique value.
                    unique: flag(&property["hasUniqueValue"])
                        || property["name"] == RECORD_ID
                        || (object == "contacts" && property["name"] == "email"),
                    writable: !flag(&property["modificationMetadata"]["readOnlyValue"])
                        && !flag(&property["calculated"]),
                })
            })
            .collect();
        Ok(Some(fields))
    }

    async fn open(config: Self::Config, spec: &SyncSpec) -> Result<Arc<dyn Destination>, TaskError> {
        Ok(Arc::new(HubSpotDestination::new(config, spec)?))
    }
}

pub struct HubSpotDestination {
    client: Client,
    object: String,
    list_id: Option<String>,
    /// The property records are matched on; `None` for create-only syncs
    /// without record matching.
    id_property: Option<String>,
}

impl HubSpotDestination {
    fn new(config: HubSpotConfig, spec: &SyncSpec) -> Result<Self, TaskError> {
        let name = &spec.destination_name;
        let setup = |reason: String| TaskError::DestinationSetup {
            destination: name.clone(),
            reason,
        };
        let client = Client::new(&config, name)?;
        let id_property = spec.record_matching.as_ref().map(|m| m.to.clone());
        let needs_matching = !(spec.mode == SyncMode::Insert && spec.sync_type == SyncType::Object);
        if needs_matching && id_property.is_none() {
            return Err(setup(format!(
                "a HubSpot {} sync in mode {} needs `record_matching`: the model column and the unique HubSpot property \
                 it matches (e.g. `to: email` for contacts, or `to: hs_object_id`)",
                spec.sync_type, spec.mode
            )));
        }
        if spec.sync_type == SyncType::Audience && config.list_id.is_none() {
            return Err(setup(
                "an audience sync to HubSpot needs the destination's `list_id`".into(),
            ));
        }
        Ok(HubSpotDestination {
            client,
            object: config.object,
            list_id: config.list_id,
            id_property,
        })
    }

    fn objects_path(&self, operation: &str) -> String {
        format!("/crm/v3/objects/{}/batch/{operation}", self.object)
    }

    /// Create, upsert, update or clear: one batch request; a multi-status
    /// answer fails the inputs it names.
    async fn write(
        &self,
        action: Action,
        rows: &[(usize, Map<String, Value>)],
    ) -> Result<Vec<(usize, Result<(), String>)>, DeliveryError> {
        let id_property = self.id_property.as_deref();
        let (operation, clear) = match action {
            Action::Insert | Action::Track => ("create", false),
            Action::Update => ("update", false),
            Action::ClearFields => ("update", true),
            _ => ("upsert", false),
        };
        let inputs: Vec<Input> = rows
            .iter()
            .enumerate()
            .map(|(position, (_, record))| Input {
                position,
                id: id_property.and_then(|p| record.get(p)).map(request::property_text),
                properties: request::properties(record, clear, id_property),
            })
            .collect();
        let body = match (operation, id_property) {
            ("create", _) | (_, None) => request::create(&inputs),
            (_, Some(property)) => {
                let mut body = request::identified(&inputs, property);
                // The record id is the input's id, never a property to write.
                if property == RECORD_ID {
                    for input in body["inputs"].as_array_mut().into_iter().flatten() {
                        if let Some(properties) = input["properties"].as_object_mut() {
                            properties.remove(RECORD_ID);
                        }
                    }
                }
                body
            }
        };
        let (status, answer) = self
            .client
            .call(reqwest::Method::POST, &self.objects_path(operation), Some(&body))
            .await?;
        let ids: Vec<Option<String>> = inputs.iter().map(|i| i.id.clone()).collect();
        let refused = if status == 207 {
            let confirmed = response::confirmed(&answer, &ids, if operation == "create" { None } else { id_property });
            response::refused(&answer, &ids, &confirmed)
        } else {
            vec![None; inputs.len()]
        };
        Ok(rows
            .iter()
            .zip(refused)
            .map(|((row, _), refusal)| (*row, refusal.map_or(Ok(()), Err)))
            .collect())
    }

    /// HubSpot's record ids of the given matching values (lowercased keys);
    /// values with no record are absent.
    async fn record_ids(&self, object: &str, values: &[&str]) -> Result<HashMap<String, String>, DeliveryError> {
        let property = self.id_property.as_deref().unwrap_or(RECORD_ID);
        if property == RECORD_ID {
            return Ok(values.iter().map(|v| (v.to_lowercase(), v.to_string())).collect());
        }
        let mut found = HashMap::new();
        for chunk in values.chunks(BATCH_INPUTS) {
            let path = format!("/crm/v3/objects/{object}/batch/read");
            let (_, answer) = self
                .client
                .call(reqwest::Method::POST, &path, Some(&request::read_ids(chunk, property)))
                .await?;
            let parsed: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
            for result in parsed.get("results").and_then(Value::as_array).into_iter().flatten() {
                let id = result.get("id").and_then(Value::as_str);
                let value = result
                    .get("properties")
                    .and_then(|p| p.get(property))
                    .and_then(Value::as_str);
                if let (Some(id), Some(value)) = (id, value) {
                    found.insert(value.to_lowercase(), id.to_string());
                }
            }
        }
        Ok(found)
    }

    /// Archive (delete and archive): look the records up, archive those found;
    /// a record already gone is what was asked for.
    async fn archive(&self, rows: &[(usize, String)]) -> Result<Vec<(usize, Result<(), String>)>, DeliveryError> {
        let values: Vec<&str> = rows.iter().map(|(_, v)| v.as_str()).collect();
        let ids = self.record_ids(&self.object, &values).await?;
        let found: Vec<&str> = rows
            .iter()
            .filter_map(|(_, v)| ids.get(&v.to_lowercase()).map(String::as_str))
            .collect();
        if !found.is_empty() {
            self.client
                .call(
                    reqwest::Method::POST,
                    &self.objects_path("archive"),
                    Some(&request::archive(&found)),
                )
                .await?;
        }
        Ok(rows.iter().map(|(row, _)| (*row, Ok(()))).collect())
    }

    /// List membership: contacts are looked up, then added or removed.
    async fn membership(
        &self,
        add: bool,
        rows: &[(usize, String)],
    ) -> Result<Vec<(usize, Result<(), String>)>, DeliveryError> {
        let list = self.list_id.as_deref().unwrap_or_default();
        let values: Vec<&str> = rows.iter().map(|(_, v)| v.as_str()).collect();
        let ids = self.record_ids("contacts", &values).await?;
        let property = self.id_property.as_deref().unwrap_or(RECORD_ID);
        let mut results: Vec<(usize, Result<(), String>)> = Vec::new();
        let mut members: Vec<(usize, String)> = Vec::new();
        for (row, value) in rows {
            match ids.get(&value.to_lowercase()) {
                Some(id) => members.push((*row, id.clone())),
                // Removing a contact that does not exist leaves it out of the list.
                None if !add => results.push((*row, Ok(()))),
                None => results.push((
                    *row,
                    Err(format!(
                        "no HubSpot contact with {property} = {value:?} to add to list {list}"
                    )),
                )),
            }
        }
        for chunk in members.chunks(MEMBERSHIP_IDS) {
            let body = Value::Array(chunk.iter().map(|(_, id)| Value::String(id.clone())).collect());
            let path = format!(
                "/crm/v3/lists/{list}/memberships/{}",
                if add { "add" } else { "remove" }
            );
            let (_, answer) = self.client.call(reqwest::Method::PUT, &path, Some(&body)).await?;
            let parsed: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
            let missing: Vec<&str> = parsed
                .get("recordIdsMissing")
                .and_then(Value::as_array)
                .map(|ids| ids.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            for (row, id) in chunk {
                if add && missing.contains(&id.as_str()) {
                    results.push((*row, Err(format!("HubSpot has no contact {id} to add to list {list}"))));
                } else {
                    results.push((*row, Ok(())));
                }
            }
        }
        Ok(results)
    }
}

#[async_trait]
impl Destination for HubSpotDestination {
    /// One cheap read of the object the sync writes.
    async fn check_connection(&self) -> Result<(), String> {
        let path = format!("/crm/v3/objects/{}?limit=1", self.object);
        self.client
            .call(reqwest::Method::GET, &path, None)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn send(&self, action: Action, records: &[Record<'_>]) -> Result<RowResults, DeliveryError> {
        let mut results: RowResults = vec![Ok(()); records.len()];
        let id_property = self.id_property.as_deref();
        // Records without the value HubSpot matches them on fail alone.
        let mut parsed: Vec<(usize, Map<String, Value>)> = Vec::new();
        for (row, record) in records.iter().enumerate() {
            let fields: Map<String, Value> = serde_json::from_str(record.json)
                .map_err(|e| DeliveryError::Permanent(format!("record {:?} is not a JSON object: {e}", record.key)))?;
            let matching = id_property.map(|p| fields.get(p).map(request::property_text).unwrap_or_default());
            if matching.as_deref() == Some("") && !matches!(action, Action::Insert) {
                results[row] = Err(format!(
                    "the record has no value for {:?}, the HubSpot property records are matched on",
                    id_property.unwrap_or_default()
                ));
                continue;
            }
            parsed.push((row, fields));
        }
        if parsed.is_empty() {
            return Ok(results);
        }
        let matching_values = || -> Vec<(usize, String)> {
            parsed
                .iter()
                .map(|(row, fields)| {
                    (
                        *row,
                        fields
                            .get(id_property.unwrap_or(RECORD_ID))
                            .map(request::property_text)
                            .unwrap_or_default(),
                    )
                })
                .collect()
        };
        let answered = match action {
            Action::Delete | Action::Archive => self.archive(&matching_values()).await?,
            Action::Add => self.membership(true, &matching_values()).await?,
            Action::Remove => self.membership(false, &matching_values()).await?,
            _ => self.write(action, &parsed).await?,
        };
        for (row, result) in answered {
            results[row] = result;
        }
        Ok(results)
    }
}
