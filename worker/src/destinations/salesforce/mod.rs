//! Salesforce: sObject records through the REST API's sObject Collections
//! (200 records a request, a result per record, `allOrNone: false`), with a
//! fixed access token or a connected app's OAuth 2.0 grant. See
//! docs/destinations/salesforce.md.
//!
//! Records are matched on `record_matching.to`: an External ID field, which
//! upserts by it directly, or `Id`, or any other field, which a SOQL query
//! resolves to record ids first (update, clear, delete).

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
pub use config::SalesforceConfig;
use ebb_shared::config::{
    BatchLimits, Capabilities, DeleteBehavior, DestinationProfile, FieldError, SyncMode, SyncSpec, SyncType,
};
use reqwest::Method;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// The connector.
pub struct Salesforce;

/// "The list can contain up to 200 objects."
const COLLECTION_RECORDS: usize = 200;
/// Salesforce documents no byte limit for a collection; 4 MB keeps 200
/// records with long text fields well within what its API takes.
const BATCH_BYTES: usize = 4 * 1024 * 1024;

const DOCUMENTED: Documented = Documented {
    // Salesforce limits requests per 24 hours (per org), not per second.
    rate_limit: None,
    max_concurrency: None,
    batch: BatchLimits {
        records: COLLECTION_RECORDS,
        bytes: BATCH_BYTES,
    },
    default_batch_size: COLLECTION_RECORDS,
};

fn is_record_id(field: &str) -> bool {
    field.eq_ignore_ascii_case("Id")
}

impl Connector for Salesforce {
    const TYPE: &'static str = "salesforce";
    type Config = SalesforceConfig;

    fn profile(config: &Self::Config) -> Result<DestinationProfile, FieldError> {
        let requested = Requested {
            batch_size: config.batch_size,
            rate_limit: config.rate_limit,
            max_concurrency: config.max_concurrency,
        };
        let (limits, batch) = settings::apply(&DOCUMENTED, requested)?;
        let object = config.object.trim();
        if object.is_empty() || !object.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(FieldError::at(
                &["object"],
                "`object` is an sObject's API name: Contact, Lead, Account, or a custom object like Subscription__c",
            ));
        }
        match (&config.access_token, &config.oauth2) {
            (Some(_), Some(_)) => {
                return Err(FieldError::at(
                    &["access_token"],
                    "set `access_token` or `oauth2`, not both",
                ))
            }
            (None, None) => {
                return Err(FieldError::at(
                    &["oauth2"],
                    "Salesforce needs credentials: an `oauth2` block (a connected app's refresh token or client \
                     credentials), or an `access_token` with `instance_url`",
                ))
            }
            (Some(_), None) if config.instance_url.is_none() => {
                return Err(FieldError::at(
                    &["instance_url"],
                    "with `access_token`, set `instance_url` (https://MyDomain.my.salesforce.com)",
                ))
            }
            _ => {}
        }
        if let Some(url) = &config.instance_url {
            settings::check_url(url, "instance_url")?;
        }
        let version_ok = config
            .api_version
            .trim_start_matches('v')
            .split_once('.')
            .is_some_and(|(major, minor)| {
                major.parse::<u32>().is_ok_and(|m| m >= 46) && minor.chars().all(|c| c.is_ascii_digit())
            });
        if !version_ok {
            return Err(FieldError::at(
                &["api_version"],
                "`api_version` is a REST API version like \"62.0\" (46.0 or later: collection upserts need it)",
            ));
        }
        if let Some(percent) = config.max_api_usage_percent {
            if !(percent > 0.0 && percent <= 100.0) {
                return Err(FieldError::at(
                    &["max_api_usage_percent"],
                    format!(
                        "`max_api_usage_percent` is a share of the daily limit above 0 and at most 100, not {percent}"
                    ),
                ));
            }
        }
        let mut expanded_settings = vec![(
            vec!["instance_url".to_string()],
            config.instance_url.clone().unwrap_or_default(),
        )];
        if let Some(token) = &config.access_token {
            expanded_settings.push((vec!["access_token".into()], token.clone()));
        }
        if let Some(oauth2) = &config.oauth2 {
            expanded_settings.push((vec!["oauth2".into(), "token_url".into()], oauth2.token_url.clone()));
            expanded_settings.push((
                vec!["oauth2".into(), "client_secret".into()],
                oauth2.client_secret.clone(),
            ));
            if let Some(refresh) = &oauth2.refresh_token {
                expanded_settings.push((vec!["oauth2".into(), "refresh_token".into()], refresh.clone()));
            }
        }
        Ok(DestinationProfile {
            capabilities: Capabilities {
                sync_types: &[SyncType::Object],
                modes: &[
                    SyncMode::Insert,
                    SyncMode::Update,
                    SyncMode::Upsert,
                    SyncMode::Mirror,
                    SyncMode::Archive,
                    SyncMode::All,
                ],
                delete_behaviors: DeleteBehavior::ALL,
            },
            limits,
            batch,
            max_retry_after: config.max_retry_after,
            expanded_settings,
        })
    }

    /// Describes the object: the credentials, the instance and the object
    /// name are all checked by it.
    async fn test_connection(config: Self::Config, name: &str) -> Result<(), String> {
        let client = Client::new(&config, name).map_err(|e| e.to_string())?;
        describe(&client, &config.object)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// The object's fields from its describe.
    async fn fields(config: Self::Config, name: &str, object: Option<&str>) -> Result<Option<Vec<Field>>, String> {
        let client = Client::new(&config, name).map_err(|e| e.to_string())?;
        let described = describe(&client, object.unwrap_or(&config.object))
            .await
            .map_err(|e| e.to_string())?;
        let fields = described["fields"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|field| {
                let flag = |name: &str| field[name].as_bool().unwrap_or(false);
                Some(Field {
                    name: field["name"].as_str()?.to_string(),
                    kind: field["type"].as_str().unwrap_or("string").to_string(),
                    unique: flag("externalId") || flag("unique") || field["type"] == "id",
                    writable: flag("createable") || flag("updateable"),
                })
            })
            .collect();
        Ok(Some(fields))
    }

    async fn open(config: Self::Config, spec: &SyncSpec) -> Result<Arc<dyn Destination>, TaskError> {
        Ok(Arc::new(SalesforceDestination::new(config, spec)?))
    }
}

/// `GET /sobjects/{object}/describe`.
async fn describe(client: &Client, object: &str) -> Result<Value, DeliveryError> {
    let answer = client
        .call(Method::GET, &client.data(&format!("/sobjects/{object}/describe")), None)
        .await?;
    serde_json::from_slice(&answer.body)
        .map_err(|e| DeliveryError::Transient(format!("Salesforce's describe of {object}: {e}")))
}

pub struct SalesforceDestination {
    client: Client,
    object: String,
    /// The field records are matched on; `None` for create-only syncs
    /// without record matching.
    matching: Option<String>,
    /// The object's fields that cannot be null (from its describe, read on
    /// the first clear): clearing leaves them as they are, since Salesforce
    /// refuses a record without them.
    required: tokio::sync::OnceCell<Vec<String>>,
}

impl SalesforceDestination {
    fn new(config: SalesforceConfig, spec: &SyncSpec) -> Result<Self, TaskError> {
        let setup = |reason: String| TaskError::DestinationSetup {
            destination: spec.destination_name.clone(),
            reason,
        };
        let client = Client::new(&config, &spec.destination_name)?;
        let matching = spec.record_matching.as_ref().map(|m| m.to.clone());
        match (spec.mode, matching.as_deref()) {
            (SyncMode::Insert, Some(field)) if is_record_id(field) => {
                return Err(setup(
                    "an insert sync creates records, and Salesforce assigns their Id: match on an External ID \
                     field, or leave `record_matching` out"
                        .into(),
                ))
            }
            (SyncMode::Insert, _) => {}
            (SyncMode::Upsert | SyncMode::Mirror | SyncMode::All, Some(field)) if is_record_id(field) => {
                return Err(setup(format!(
                    "Salesforce upserts by an External ID field, never by Id: set `record_matching.to` to one \
                     (for {}), or use mode update",
                    config.object
                )))
            }
            (_, None) => {
                return Err(setup(format!(
                    "a Salesforce sync in mode {} needs `record_matching`: the model column and the {} field it \
                     matches (an External ID field such as `Customer_Id__c`, or `Id`)",
                    spec.mode, config.object
                )))
            }
            _ => {}
        }
        Ok(SalesforceDestination {
            client,
            object: config.object,
            matching,
            required: tokio::sync::OnceCell::new(),
        })
    }

    async fn required_fields(&self) -> Result<&[String], DeliveryError> {
        let fields = self
            .required
            .get_or_try_init(|| async {
                let described = describe(&self.client, &self.object).await?;
                Ok::<_, DeliveryError>(
                    described["fields"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|f| f["nillable"] == false)
                        .filter_map(|f| f["name"].as_str().map(str::to_string))
                        .collect(),
                )
            })
            .await?;
        Ok(fields)
    }

    /// Record ids of the given matching values, by lowercased value (SOQL
    /// compares text without case); a value can match several records.
    async fn record_ids(&self, values: &[&str]) -> Result<HashMap<String, Vec<String>>, DeliveryError> {
        let field = self.matching.as_deref().unwrap_or("Id");
        if is_record_id(field) {
            return Ok(values.iter().map(|v| (v.to_lowercase(), vec![v.to_string()])).collect());
        }
        let mut found: HashMap<String, Vec<String>> = HashMap::new();
        for query in request::lookups(&self.object, field, values) {
            let mut path = self.client.data(&format!("/query?{query}"));
            loop {
                let answer = self.client.call(Method::GET, &path, None).await?;
                let page: Value = serde_json::from_slice(&answer.body)
                    .map_err(|e| DeliveryError::Transient(format!("Salesforce's query answer: {e}")))?;
                for record in page["records"].as_array().into_iter().flatten() {
                    let value = record
                        .as_object()
                        .and_then(|r| r.iter().find(|(name, _)| name.eq_ignore_ascii_case(field)))
                        .map(|(_, v)| request::value_text(v));
                    if let (Some(id), Some(value)) = (record["Id"].as_str(), value) {
                        found.entry(value.to_lowercase()).or_default().push(id.to_string());
                    }
                }
                match page["nextRecordsUrl"].as_str() {
                    Some(next) if page["done"] == false => path = next.to_string(),
                    _ => break,
                }
            }
        }
        Ok(found)
    }

    /// One collection request; its per-record results, in order.
    async fn collection(
        &self,
        method: Method,
        path: &str,
        records: Vec<Value>,
    ) -> Result<Vec<response::RecordResult>, DeliveryError> {
        let expected = records.len();
        let answer = self
            .client
            .call(method, &self.client.data(path), Some(&request::collection(records)))
            .await?;
        response::results(&answer.body, expected)
    }

    /// Create: a record that exists already (its External ID taken) is what
    /// insert leaves alone.
    async fn create(
        &self,
        rows: &[(usize, Map<String, Value>)],
    ) -> Result<Vec<(usize, Result<(), String>)>, DeliveryError> {
        let records = rows
            .iter()
            .map(|(_, fields)| request::record(&self.object, fields, None, None))
            .collect();
        let results = self.collection(Method::POST, "/composite/sobjects", records).await?;
        let matching = self.matching.as_deref();
        Ok(rows
            .iter()
            .zip(results)
            .map(|((row, _), result)| {
                let exists = matching.is_some_and(|field| {
                    result.errors.iter().any(|e| {
                        e.code.as_deref() == Some("DUPLICATE_VALUE")
                            && (e.fields.iter().any(|f| f.eq_ignore_ascii_case(field))
                                || e.message.as_deref().unwrap_or_default().contains(field))
                    })
                });
                (
                    *row,
                    if result.success || exists {
                        Ok(())
                    } else {
                        Err(result.reason())
                    },
                )
            })
            .collect())
    }

    /// Upsert by the External ID field in the path.
    async fn upsert(
        &self,
        rows: &[(usize, Map<String, Value>)],
    ) -> Result<Vec<(usize, Result<(), String>)>, DeliveryError> {
        let field = self.matching.as_deref().unwrap_or_default();
        let records = rows
            .iter()
            .map(|(_, fields)| request::record(&self.object, fields, None, None))
            .collect();
        let path = format!("/composite/sobjects/{}/{field}", self.object);
        let results = self.collection(Method::PATCH, &path, records).await?;
        Ok(rows
            .iter()
            .zip(results)
            .map(|((row, _), result)| (*row, if result.success { Ok(()) } else { Err(result.reason()) }))
            .collect())
    }

    /// Update (or clear) the records the matching values name; `missing`
    /// is what a row without a record gets.
    async fn update(
        &self,
        rows: &[(usize, Map<String, Value>)],
        clear: bool,
    ) -> Result<Vec<(usize, Result<(), String>)>, DeliveryError> {
        let field = self.matching.as_deref().unwrap_or("Id");
        let values: Vec<String> = rows.iter().map(|(_, fields)| matching_value(fields, field)).collect();
        let lookup: Vec<&str> = values.iter().map(String::as_str).collect();
        let ids = self.record_ids(&lookup).await?;
        let mut results = Vec::with_capacity(rows.len());
        let mut sent: Vec<(usize, Value)> = Vec::new();
        for ((row, fields), value) in rows.iter().zip(&values) {
            match ids.get(&value.to_lowercase()).map(Vec::as_slice) {
                Some([id]) => {
                    let mut fields = fields.clone();
                    if clear {
                        let required = self.required_fields().await?;
                        fields.retain(|name, _| !required.iter().any(|r| r.eq_ignore_ascii_case(name)));
                        for (name, value) in fields.iter_mut() {
                            if !name.eq_ignore_ascii_case(field) {
                                *value = Value::Null;
                            }
                        }
                    }
                    let leave_out = is_record_id(field).then_some(field);
                    sent.push((*row, request::record(&self.object, &fields, Some(id), leave_out)));
                }
                Some(many) if many.len() > 1 => results.push((
                    *row,
                    Err(format!(
                        "{} {} records have {field} = {value:?}; match on a unique field",
                        many.len(),
                        self.object
                    )),
                )),
                // Clearing a record that is not there leaves nothing to clear.
                _ if clear => results.push((*row, Ok(()))),
                _ => results.push((
                    *row,
                    Err(format!("no {} record has {field} = {value:?} to update", self.object)),
                )),
            }
        }
        if !sent.is_empty() {
            let (positions, records): (Vec<usize>, Vec<Value>) = sent.into_iter().unzip();
            let answered = self.collection(Method::PATCH, "/composite/sobjects", records).await?;
            for (row, result) in positions.into_iter().zip(answered) {
                results.push((row, if result.success { Ok(()) } else { Err(result.reason()) }));
            }
        }
        Ok(results)
    }

    /// Delete the records the matching values name; one already gone is
    /// what was asked for.
    async fn delete(
        &self,
        rows: &[(usize, Map<String, Value>)],
    ) -> Result<Vec<(usize, Result<(), String>)>, DeliveryError> {
        let field = self.matching.as_deref().unwrap_or("Id");
        let values: Vec<String> = rows.iter().map(|(_, fields)| matching_value(fields, field)).collect();
        let lookup: Vec<&str> = values.iter().map(String::as_str).collect();
        let ids = self.record_ids(&lookup).await?;
        let mut results = Vec::with_capacity(rows.len());
        let mut doomed: Vec<(usize, String)> = Vec::new();
        for ((row, _), value) in rows.iter().zip(&values) {
            match ids.get(&value.to_lowercase()) {
                Some(found) => doomed.extend(found.iter().map(|id| (*row, id.clone()))),
                None => results.push((*row, Ok(()))),
            }
        }
        let mut failed: HashMap<usize, String> = HashMap::new();
        for chunk in doomed.chunks(COLLECTION_RECORDS) {
            let ids: Vec<&str> = chunk.iter().map(|(_, id)| id.as_str()).collect();
            let path = self
                .client
                .data(&format!("/composite/sobjects?ids={}&allOrNone=false", ids.join(",")));
            let answer = self.client.call(Method::DELETE, &path, None).await?;
            let answered = response::results(&answer.body, chunk.len())?;
            for ((row, _), result) in chunk.iter().zip(answered) {
                let gone = result.codes().any(|c| c == "ENTITY_IS_DELETED");
                if !result.success && !gone {
                    failed.insert(*row, result.reason());
                }
            }
        }
        let mut rows_deleted: Vec<usize> = doomed.iter().map(|(row, _)| *row).collect();
        rows_deleted.dedup();
        for row in rows_deleted {
            results.push((row, failed.remove(&row).map_or(Ok(()), Err)));
        }
        Ok(results)
    }
}

/// A row's value for the field it is matched on, as text.
fn matching_value(fields: &Map<String, Value>, field: &str) -> String {
    fields
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(field))
        .map(|(_, v)| request::value_text(v))
        .unwrap_or_default()
}

#[async_trait]
impl Destination for SalesforceDestination {
    /// Describes the object the sync writes.
    async fn check_connection(&self) -> Result<(), String> {
        describe(&self.client, &self.object)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn send(&self, action: Action, records: &[Record<'_>]) -> Result<RowResults, DeliveryError> {
        let mut results: RowResults = vec![Ok(()); records.len()];
        let matching = self.matching.as_deref();
        // Records without the value they are matched on fail alone.
        let mut parsed: Vec<(usize, Map<String, Value>)> = Vec::new();
        for (row, record) in records.iter().enumerate() {
            let fields: Map<String, Value> = serde_json::from_str(record.json)
                .map_err(|e| DeliveryError::Permanent(format!("record {:?} is not a JSON object: {e}", record.key)))?;
            if let Some(field) = matching.filter(|_| !matches!(action, Action::Insert | Action::Track)) {
                if matching_value(&fields, field).is_empty() {
                    results[row] = Err(format!(
                        "the record has no value for {field:?}, the {} field records are matched on",
                        self.object
                    ));
                    continue;
                }
            }
            parsed.push((row, fields));
        }
        if parsed.is_empty() {
            return Ok(results);
        }
        let answered = match action {
            Action::Insert | Action::Track => self.create(&parsed).await?,
            Action::Upsert | Action::Add => self.upsert(&parsed).await?,
            Action::Update => self.update(&parsed, false).await?,
            Action::ClearFields => self.update(&parsed, true).await?,
            Action::Delete | Action::Archive | Action::Remove => self.delete(&parsed).await?,
        };
        for (row, result) in answered {
            results[row] = result;
        }
        Ok(results)
    }
}
