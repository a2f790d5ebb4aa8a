//! Salesforce: sObject records through the REST API's sObject Collections
//! (200 records a request, a result per record, `allOrNone: false`), with a
//! fixed access token or a connected app's OAuth 2.0 grant. See
//! docs/destinations/salesforce.md.
//!
//! Records are matched on `record_matching.to`: an External ID field, which
//! upserts by it directly, or `Id`, or any other field, which a SOQL query
//! resolves to record ids first (update, clear, delete).

mod bulk;
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
/// A job's upload may be 150 MB of CSV; 100 MB of records keeps it inside
/// with room for quoting.
const BULK_BYTES: usize = 100 * 1024 * 1024;
/// Rows per job at most (ours: a job's rows are mapped back in memory).
const MAX_RECORDS_PER_JOB: usize = 1_000_000;

const DOCUMENTED: Documented = Documented {
    // Salesforce limits requests per 24 hours (per org), not per second.
    rate_limit: None,
    rate_window: None,
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
        let bulk = &config.bulk_api;
        if bulk.threshold == 0 {
            return Err(FieldError::at(
                &["bulk_api", "threshold"],
                "`bulk_api.threshold` is a number of rows, at least 1 (use `enabled: false` to turn bulk jobs off)",
            ));
        }
        if !(1..=MAX_RECORDS_PER_JOB).contains(&bulk.records_per_job) {
            return Err(FieldError::at(
                &["bulk_api", "records_per_job"],
                format!("`bulk_api.records_per_job` is from 1 to {MAX_RECORDS_PER_JOB}"),
            ));
        }
        if bulk.poll_interval.is_zero() || bulk.job_timeout < bulk.poll_interval {
            return Err(FieldError::at(
                &["bulk_api", "poll_interval"],
                "`bulk_api.poll_interval` must be above zero and at most `job_timeout`",
            ));
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
    bulk: Option<config::BulkApiConfig>,
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
            bulk: config.bulk_api.enabled.then_some(config.bulk_api),
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
                let answer = self.client.read(&path).await?;
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
        let found = self.looked_up(rows, field).await?;
        let mut results = Vec::with_capacity(rows.len());
        let mut sent: Vec<(usize, Value)> = Vec::new();
        for ((row, fields), (value, ids)) in rows.iter().zip(&found) {
            match self.only_record(field, value, ids) {
                Ok(Some(id)) => {
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
                // Clearing a record that is not there leaves nothing to clear.
                Ok(None) if clear => results.push((*row, Ok(()))),
                Ok(None) => results.push((*row, Err(self.not_found(field, value)))),
                Err(reason) => results.push((*row, Err(reason))),
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
        let found = self.looked_up(rows, field).await?;
        let mut results = Vec::with_capacity(rows.len());
        let mut doomed: Vec<(usize, String)> = Vec::new();
        for ((row, _), (_, ids)) in rows.iter().zip(found) {
            if ids.is_empty() {
                results.push((*row, Ok(())));
            }
            doomed.extend(ids.into_iter().map(|id| (*row, id)));
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
        let (mut results, parsed) = self.parse(action, records)?;
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

    fn bulk(&self) -> Option<crate::jobs::BulkLimits> {
        self.bulk.as_ref().map(|bulk| crate::jobs::BulkLimits {
            threshold: bulk.threshold,
            records: bulk.records_per_job,
            bytes: BULK_BYTES,
        })
    }

    /// One Bulk API 2.0 job per batch. Update and delete look the records'
    /// ids up first, as Collections do; clearing fields stays on
    /// Collections (it needs each object's required fields left alone).
    async fn send_bulk(
        &self,
        action: Action,
        records: &[Record<'_>],
        jobs: &crate::jobs::JobLog,
    ) -> Result<RowResults, DeliveryError> {
        let Some(settings) = &self.bulk else {
            return self.send(action, records).await;
        };
        if action == Action::ClearFields {
            return self.send(action, records).await;
        }
        let (mut results, parsed) = self.parse(action, records)?;
        if parsed.is_empty() {
            return Ok(results);
        }
        let polling = bulk::Polling {
            interval: settings.poll_interval,
            timeout: settings.job_timeout,
        };
        let field = self.matching.clone().unwrap_or_else(|| "Id".to_string());
        let (operation, rows) = match action {
            Action::Insert | Action::Track => (bulk::Operation::Insert, parsed),
            Action::Upsert | Action::Add => (bulk::Operation::Upsert(field.clone()), parsed),
            Action::Update => {
                let (rows, missing) = self.with_ids(&parsed, &field, false).await?;
                for row in missing {
                    results[row.0] = Err(row.1);
                }
                (bulk::Operation::Update, rows)
            }
            Action::ClearFields | Action::Delete | Action::Archive | Action::Remove => {
                let (rows, _gone) = self.with_ids(&parsed, &field, true).await?;
                (bulk::Operation::Delete, rows)
            }
        };
        if rows.is_empty() {
            return Ok(results);
        }
        let benign = |error: &str| match operation {
            // A record that exists already is what insert leaves alone.
            bulk::Operation::Insert => {
                error.starts_with("DUPLICATE_VALUE") && self.matching.as_deref().is_some_and(|f| error.contains(f))
            }
            bulk::Operation::Delete => error.starts_with("ENTITY_IS_DELETED"),
            _ => false,
        };
        let answered = bulk::run(&self.client, &self.object, &operation, &rows, jobs, polling, benign).await?;
        // A row deleted by several records fails if any of them did.
        for (row, result) in answered {
            if results[row].is_ok() {
                results[row] = result;
            }
        }
        Ok(results)
    }
}

impl SalesforceDestination {
    /// The records as field maps; those without the value they are matched
    /// on fail alone.
    #[allow(clippy::type_complexity)]
    fn parse(
        &self,
        action: Action,
        records: &[Record<'_>],
    ) -> Result<(RowResults, Vec<(usize, Map<String, Value>)>), DeliveryError> {
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
        Ok((results, parsed))
    }

    /// Bulk rows that name their records by `Id`, looked up by the matching
    /// field. For update, each row needs exactly one record (the others are
    /// returned with the reason); for delete, a row becomes a row per
    /// record it names, and one naming none is done already.
    #[allow(clippy::type_complexity)]
    async fn with_ids(
        &self,
        rows: &[(usize, Map<String, Value>)],
        field: &str,
        delete: bool,
    ) -> Result<(Vec<(usize, Map<String, Value>)>, Vec<(usize, String)>), DeliveryError> {
        let found = self.looked_up(rows, field).await?;
        let mut out = Vec::new();
        let mut refused = Vec::new();
        for ((row, fields), (value, ids)) in rows.iter().zip(found) {
            if delete {
                for id in ids {
                    let mut only_id = Map::new();
                    only_id.insert("Id".into(), Value::String(id));
                    out.push((*row, only_id));
                }
                continue;
            }
            match self.only_record(field, &value, &ids) {
                Ok(Some(id)) => {
                    let mut fields = fields.clone();
                    fields.retain(|name, _| !is_record_id(name));
                    fields.insert("Id".into(), Value::String(id.to_string()));
                    out.push((*row, fields));
                }
                Ok(None) => refused.push((*row, self.not_found(field, &value))),
                Err(reason) => refused.push((*row, reason)),
            }
        }
        Ok((out, refused))
    }

    /// Each row's value for the field records are matched on, with the ids
    /// of the records that have it (one query per batch).
    async fn looked_up(
        &self,
        rows: &[(usize, Map<String, Value>)],
        field: &str,
    ) -> Result<Vec<(String, Vec<String>)>, DeliveryError> {
        let values: Vec<String> = rows.iter().map(|(_, fields)| matching_value(fields, field)).collect();
        let lookup: Vec<&str> = values.iter().map(String::as_str).collect();
        let ids = self.record_ids(&lookup).await?;
        Ok(values
            .into_iter()
            .map(|value| {
                let found = ids.get(&value.to_lowercase()).cloned().unwrap_or_default();
                (value, found)
            })
            .collect())
    }

    /// The one record a row updates: none when no record has its value, an
    /// error when several do (Salesforce would not know which is meant).
    fn only_record<'a>(&self, field: &str, value: &str, ids: &'a [String]) -> Result<Option<&'a str>, String> {
        match ids {
            [] => Ok(None),
            [id] => Ok(Some(id)),
            many => Err(format!(
                "{} {} records have {field} = {value:?}; match on a unique field",
                many.len(),
                self.object
            )),
        }
    }

    fn not_found(&self, field: &str, value: &str) -> String {
        format!("no {} record has {field} = {value:?} to update", self.object)
    }
}
