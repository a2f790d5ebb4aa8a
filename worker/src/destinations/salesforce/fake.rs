//! A Salesforce org on loopback, implementing the documented REST contract
//! the connector uses (REST API Developer Guide): sObject Collections create
//! (`POST /composite/sobjects`), update (`PATCH /composite/sobjects`),
//! upsert by External ID (`PATCH /composite/sobjects/{type}/{field}`) and
//! delete (`DELETE /composite/sobjects?ids=…`), 200 records at most, a
//! result per record in request order; SOQL `SELECT … WHERE f IN (…)`
//! queries with `nextRecordsUrl` pages; sObject describe; the OAuth 2.0 token
//! endpoint (refresh-token and client-credentials grants, an answer with
//! `instance_url` and no `expires_in`); `401 INVALID_SESSION_ID` for an
//! unknown or expired session; `Sforce-Limit-Info` on every answer and
//! `403 REQUEST_LIMIT_EXCEEDED` past the daily allowance. Bulk API 2.0
//! ingest jobs (Bulk API 2.0 Developer Guide): create (`POST
//! /jobs/ingest/`), one CSV upload (`PUT /jobs/ingest/{id}/batches/`), state
//! changes (`PATCH /jobs/ingest/{id}/`: `UploadComplete`, `Aborted`), job
//! info with `Open` → `UploadComplete` → `InProgress` → `JobComplete`, and the
//! `successfulResults/`, `failedResults/` and `unprocessedrecords/` CSVs,
//! each row repeating its uploaded cells after `sf__Id` and `sf__Created` or
//! `sf__Error`, in an order of their own; `#N/A` sets a field to null.
//!
//! Faults for the contract tests: the next N requests are refused for the
//! concurrent long-running limit or answered 503, or are applied and then
//! answered too late.

#![allow(clippy::result_large_err)]

use crate::destinations::contract::Chaos;
pub use crate::destinations::contract::Fault;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// A field of an sObject, as describe reports it.
#[derive(Debug, Clone)]
pub struct FakeField {
    pub name: &'static str,
    pub kind: &'static str,
    pub external_id: bool,
    pub createable: bool,
    /// Required on create (`nillable: false` and no default).
    pub required: bool,
}

const fn field(name: &'static str, kind: &'static str) -> FakeField {
    FakeField {
        name,
        kind,
        external_id: false,
        createable: true,
        required: false,
    }
}

/// Contact, with the fields the tests use: `LastName` is required, as in
/// every org; `Customer_Id__c` is a unique External ID field.
pub fn contact_fields() -> Vec<FakeField> {
    vec![
        FakeField {
            createable: false,
            ..field("Id", "id")
        },
        FakeField {
            required: true,
            ..field("LastName", "string")
        },
        field("FirstName", "string"),
        field("Email", "email"),
        field("Plan__c", "picklist"),
        field("Seats__c", "double"),
        FakeField {
            external_id: true,
            ..field("Customer_Id__c", "string")
        },
        FakeField {
            createable: false,
            ..field("CreatedDate", "datetime")
        },
    ]
}

#[derive(Default)]
struct Org {
    /// sObject type → its fields.
    schema: BTreeMap<String, Vec<FakeField>>,
    /// sObject type → record id → fields.
    records: BTreeMap<String, BTreeMap<String, Map<String, Value>>>,
    deleted: BTreeSet<String>,
    next_id: u64,
    /// Sessions the org accepts.
    sessions: BTreeSet<String>,
    issued: u64,
    faults: VecDeque<Fault>,
    chaos: Chaos,
    used: u64,
    daily_limit: u64,
    requests: u64,
    rate_limited: u64,
    /// Values a validation rule refuses in any field.
    refused: BTreeSet<String>,
    /// Query locators → the records still to hand out.
    cursors: HashMap<String, Vec<Value>>,
    /// Records per query page (2,000 in Salesforce).
    page_size: usize,
    /// (object, field, lowercased text) → record ids: lookups by a field
    /// in constant time, as an org's indexed External ID fields are.
    index: HashMap<(String, String, String), BTreeSet<String>>,
    jobs: BTreeMap<String, IngestJob>,
    jobs_created: u64,
    /// Polls of a job's info that answer `InProgress` before it completes.
    job_polls: u32,
}

/// A Bulk API 2.0 ingest job.
#[derive(Debug, Clone, Default)]
struct IngestJob {
    object: String,
    operation: String,
    external_id: Option<String>,
    state: String,
    data: Option<String>,
    polls_left: u32,
    error_message: String,
    /// Result rows (sf__ columns first) and the upload's header.
    header: Vec<String>,
    successful: Vec<Vec<String>>,
    failed: Vec<Vec<String>>,
}

#[derive(Clone)]
pub struct FakeSalesforce {
    pub url: String,
    /// The connected app's credentials, for the token endpoint.
    pub client_id: String,
    pub client_secret: String,
    pub refresh_token: String,
    org: Arc<Mutex<Org>>,
}

impl FakeSalesforce {
    /// An org with the Contact object and one valid session, `session`.
    pub async fn start(session: &str) -> FakeSalesforce {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let mut org = Org {
            next_id: 1,
            daily_limit: 1_000_000,
            page_size: 2000,
            ..Org::default()
        };
        org.schema.insert("Contact".into(), contact_fields());
        org.sessions.insert(session.to_string());
        let fake = FakeSalesforce {
            url: format!("http://{}", listener.local_addr().expect("address")),
            client_id: "3MVG9-ebb-test-client".into(),
            client_secret: "ebb-test-client-secret-0123456789".into(),
            refresh_token: "5Aep861-ebb-test-refresh-token".into(),
            org: Arc::new(Mutex::new(org)),
        };
        let app = Router::new()
            .route("/services/oauth2/token", post(token))
            .route("/services/data/{version}/sobjects/{object}/describe", get(describe))
            .route("/services/data/{version}/query", get(query))
            .route("/services/data/{version}/query/{locator}", get(query_more))
            .route(
                "/services/data/{version}/composite/sobjects",
                post(create).patch(update).delete(delete),
            )
            .route(
                "/services/data/{version}/composite/sobjects/{object}/{field}",
                axum::routing::patch(upsert),
            )
            .route("/services/data/{version}/jobs/ingest", post(create_job))
            .route("/services/data/{version}/jobs/ingest/", post(create_job))
            .route(
                "/services/data/{version}/jobs/ingest/{id}",
                get(job_info).patch(change_job),
            )
            .route(
                "/services/data/{version}/jobs/ingest/{id}/",
                get(job_info).patch(change_job),
            )
            .route(
                "/services/data/{version}/jobs/ingest/{id}/batches",
                axum::routing::put(upload_job),
            )
            .route(
                "/services/data/{version}/jobs/ingest/{id}/batches/",
                axum::routing::put(upload_job),
            )
            .route("/services/data/{version}/jobs/ingest/{id}/{results}", get(job_results))
            .route("/services/data/{version}/jobs/ingest/{id}/{results}/", get(job_results))
            .with_state(fake.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        fake
    }

    pub fn fault(&self, fault: Fault, times: usize) {
        self.org
            .lock()
            .unwrap()
            .faults
            .extend(std::iter::repeat_n(fault, times));
    }

    /// Answers a share of all requests with the concurrent-request limit and
    /// another with 503, spread evenly, from now on.
    pub fn chaos(&self, rate_limited: f64, unavailable: f64) {
        self.org.lock().unwrap().chaos = Chaos::new(rate_limited, unavailable);
    }

    /// Ends every session: the next request with one gets `401
    /// INVALID_SESSION_ID`, as after a session timeout.
    pub fn expire_sessions(&self) {
        self.org.lock().unwrap().sessions.clear();
    }

    /// Adds an sObject type (a custom object) with its fields.
    pub fn define(&self, object: &str, fields: Vec<FakeField>) {
        self.org.lock().unwrap().schema.insert(object.to_string(), fields);
    }

    /// The org's daily allowance, and what is used of it already.
    pub fn daily_limit(&self, limit: u64, used: u64) {
        let mut org = self.org.lock().unwrap();
        org.daily_limit = limit;
        org.used = used;
    }

    /// Records per query page (Salesforce: 2,000).
    pub fn page_size(&self, size: usize) {
        self.org.lock().unwrap().page_size = size;
    }

    /// A validation rule refusing records with this value in any field.
    pub fn refuse_value(&self, value: &str) {
        self.org.lock().unwrap().refused.insert(value.to_lowercase());
    }

    /// Creates a record directly, as if made in Salesforce; returns its id.
    pub fn insert(&self, object: &str, fields: Value) -> String {
        let mut org = self.org.lock().unwrap();
        let id = org.new_id(object);
        let fields = fields.as_object().cloned().unwrap_or_default();
        org.write(object, &id, &fields);
        id
    }

    /// Every record of an object, by id.
    pub fn records(&self, object: &str) -> BTreeMap<String, Map<String, Value>> {
        self.org
            .lock()
            .unwrap()
            .records
            .get(object)
            .cloned()
            .unwrap_or_default()
    }

    /// Polls of a job's state that answer `InProgress` before it completes,
    /// from now on (for jobs running already too).
    pub fn job_polls(&self, polls: u32) {
        let mut org = self.org.lock().unwrap();
        org.job_polls = polls;
        for job in org.jobs.values_mut() {
            job.polls_left = job.polls_left.min(polls);
        }
    }

    /// An `Open` insert job with no data, as an attempt that died before
    /// uploading leaves it; returns its id.
    pub fn open_job(&self, object: &str) -> String {
        let mut org = self.org.lock().unwrap();
        org.jobs_created += 1;
        org.next_id += 1;
        let id = format!("750{:015}", org.next_id);
        let job = IngestJob {
            object: object.to_string(),
            operation: "insert".into(),
            state: "Open".into(),
            ..IngestJob::default()
        };
        org.jobs.insert(id.clone(), job);
        id
    }

    /// A job's state (`Open`, `UploadComplete`, `InProgress`, `JobComplete`,
    /// `Failed`, `Aborted`).
    pub fn job_state(&self, id: &str) -> Option<String> {
        self.org.lock().unwrap().jobs.get(id).map(|job| job.state.clone())
    }

    /// The ids of the jobs in `state` now.
    pub fn jobs_in_state(&self, state: &str) -> Vec<String> {
        let org = self.org.lock().unwrap();
        org.jobs
            .iter()
            .filter(|(_, job)| job.state == state)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Bulk ingest jobs created so far.
    pub fn jobs_created(&self) -> u64 {
        self.org.lock().unwrap().jobs_created
    }

    /// Tokens granted by the token endpoint so far.
    pub fn tokens_issued(&self) -> u64 {
        self.org.lock().unwrap().issued
    }

    /// (requests answered, of them refused for a limit).
    pub fn counts(&self) -> (u64, u64) {
        let org = self.org.lock().unwrap();
        (org.requests, org.rate_limited)
    }

    /// Authentication, limits and injected faults, before any route: `Err`
    /// is the answer to send instead.
    fn admit(&self, headers: &HeaderMap) -> Result<Option<Fault>, Response> {
        let session = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default()
            .to_string();
        let mut org = self.org.lock().unwrap();
        org.requests += 1;
        if !org.sessions.contains(&session) {
            return Err(errors(
                StatusCode::UNAUTHORIZED,
                "INVALID_SESSION_ID",
                "Session expired or invalid",
            ));
        }
        if org.used >= org.daily_limit {
            org.rate_limited += 1;
            let answer = errors(
                StatusCode::FORBIDDEN,
                "REQUEST_LIMIT_EXCEEDED",
                "TotalRequests Limit exceeded.",
            );
            return Err(org.with_usage(answer));
        }
        org.used += 1;
        let fault = org.faults.pop_front().or_else(|| org.chaos.draw());
        match fault {
            Some(Fault::RateLimited) => {
                org.rate_limited += 1;
                let answer = errors(
                    StatusCode::FORBIDDEN,
                    "REQUEST_LIMIT_EXCEEDED",
                    "ConcurrentPerOrgLongTxn Limit exceeded.",
                );
                Err(org.with_usage(answer))
            }
            Some(Fault::Unavailable) => Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "<html><body>Service Unavailable</body></html>",
            )
                .into_response()),
            other => Ok(other),
        }
    }

    /// Runs `apply` on the org and answers with its result, late when the
    /// fault says so.
    async fn answer(&self, fault: Option<Fault>, result: Result<Value, Response>) -> Response {
        if let Some(Fault::AppliedThenSlow(delay)) = fault {
            tokio::time::sleep(delay).await;
        }
        match result {
            Ok(body) => {
                let org = self.org.lock().unwrap();
                org.with_usage(axum::Json(body).into_response())
            }
            Err(response) => response,
        }
    }
}

impl Org {
    fn new_id(&mut self, object: &str) -> String {
        self.next_id += 1;
        let prefix = match object {
            "Account" => "001",
            "Contact" => "003",
            "Lead" => "00Q",
            _ => "a00",
        };
        format!("{prefix}{:015}", self.next_id)
    }

    fn with_usage(&self, mut response: Response) -> Response {
        let value = format!("api-usage={}/{}", self.used, self.daily_limit);
        response
            .headers_mut()
            .insert("sforce-limit-info", value.parse().expect("a header value"));
        response
    }

    fn fields(&self, object: &str) -> Option<&Vec<FakeField>> {
        self.schema.get(object)
    }

    /// The schema's spelling of a field name (API names ignore case).
    fn field(&self, object: &str, name: &str) -> Option<&FakeField> {
        self.fields(object)?.iter().find(|f| f.name.eq_ignore_ascii_case(name))
    }

    /// Checks a record's fields against the schema: an unknown field fails
    /// the whole request (`INVALID_FIELD`), as Salesforce does.
    fn check_fields(&self, object: &str, record: &Map<String, Value>) -> Result<(), Response> {
        if self.fields(object).is_none() {
            return Err(errors(
                StatusCode::BAD_REQUEST,
                "INVALID_TYPE",
                &format!("sObject type '{object}' is not supported."),
            ));
        }
        for name in record.keys() {
            if name == "attributes" || name.eq_ignore_ascii_case("id") {
                continue;
            }
            if self.field(object, name).is_none() {
                return Err(errors(
                    StatusCode::BAD_REQUEST,
                    "INVALID_FIELD",
                    &format!("No such column '{name}' on sobject of type {object}"),
                ));
            }
        }
        Ok(())
    }

    /// A per-record error, if the record's values break a rule.
    fn validate(
        &self,
        object: &str,
        fields: &Map<String, Value>,
        creating: bool,
        own_id: Option<&str>,
    ) -> Option<Value> {
        let schema = self.fields(object)?;
        for field in schema {
            let value = fields
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(field.name))
                .map(|(_, v)| v);
            if value.is_some() && !field.createable && !field.name.eq_ignore_ascii_case("Id") {
                return Some(record_error(
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    &format!("Unable to create/update fields: {}. Please check the security settings of this field and verify that it is read/write for your profile or permission set.", field.name),
                    &[field.name],
                ));
            }
            let missing = value.is_none_or(|v| v.is_null() || v == "");
            if field.required && missing && (creating || value.is_some()) {
                return Some(record_error(
                    "REQUIRED_FIELD_MISSING",
                    &format!("Required fields are missing: [{}]", field.name),
                    &[field.name],
                ));
            }
            if value
                .and_then(Value::as_str)
                .is_some_and(|v| self.refused.contains(&v.to_lowercase()))
            {
                return Some(record_error(
                    "FIELD_CUSTOM_VALIDATION_EXCEPTION",
                    &format!("{} is not allowed by a validation rule", field.name),
                    &[],
                ));
            }
            if field.external_id {
                if let Some(text) = value.filter(|v| !v.is_null()).map(text_of) {
                    let taken = self
                        .find(object, field.name, &text)
                        .into_iter()
                        .find(|id| Some(id.as_str()) != own_id);
                    if let Some(id) = taken {
                        return Some(record_error(
                            "DUPLICATE_VALUE",
                            &format!(
                                "duplicate value found: {} duplicates value on record with id: {id}",
                                field.name
                            ),
                            &[field.name],
                        ));
                    }
                }
            }
        }
        None
    }

    /// Ids of `object`'s records whose `field` (the schema's spelling) is
    /// `text`, without case.
    fn find(&self, object: &str, field: &str, text: &str) -> Vec<String> {
        let key = (object.to_string(), field.to_string(), text.to_lowercase());
        self.index
            .get(&key)
            .map(|ids| ids.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn unindex(&mut self, object: &str, id: &str, name: &str, value: &Value) {
        let key = (object.to_string(), name.to_string(), text_of(value).to_lowercase());
        if let Some(ids) = self.index.get_mut(&key) {
            ids.remove(id);
        }
    }

    fn remove(&mut self, object: &str, id: &str) {
        let Some(record) = self.records.get_mut(object).and_then(|r| r.remove(id)) else {
            return;
        };
        for (name, value) in &record {
            self.unindex(object, id, name, value);
        }
        self.deleted.insert(id.to_string());
    }

    fn write(&mut self, object: &str, id: &str, fields: &Map<String, Value>) {
        let mut changes = Vec::new();
        let record = self
            .records
            .entry(object.into())
            .or_default()
            .entry(id.into())
            .or_default();
        for (name, value) in fields {
            if name == "attributes" || name.eq_ignore_ascii_case("id") {
                continue;
            }
            // Stored under the schema's spelling.
            let name = self
                .schema
                .get(object)
                .and_then(|fields| fields.iter().find(|f| f.name.eq_ignore_ascii_case(name)))
                .map_or(name.clone(), |f| f.name.to_string());
            let old = if value.is_null() {
                record.remove(&name)
            } else {
                record.insert(name.clone(), value.clone())
            };
            changes.push((name, old, value.clone()));
        }
        for (name, old, new) in changes {
            if let Some(old) = old {
                self.unindex(object, id, &name, &old);
            }
            if !new.is_null() {
                let key = (object.to_string(), name, text_of(&new).to_lowercase());
                self.index.entry(key).or_default().insert(id.to_string());
            }
        }
    }
}

fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// An error answer: `[{"message", "errorCode"}]`.
fn errors(status: StatusCode, code: &str, message: &str) -> Response {
    (status, axum::Json(json!([{ "message": message, "errorCode": code }]))).into_response()
}

fn record_error(code: &str, message: &str, fields: &[&str]) -> Value {
    json!({ "statusCode": code, "message": message, "fields": fields })
}

fn saved(id: &str) -> Value {
    json!({ "id": id, "success": true, "errors": [] })
}

fn failed(id: Option<&str>, error: Value) -> Value {
    json!({ "id": id, "success": false, "errors": [error] })
}

/// The `records` of a collection body, within the documented 200.
fn collection_records(body: &Bytes) -> Result<Vec<Map<String, Value>>, Response> {
    let parsed: Value = serde_json::from_slice(body)
        .map_err(|e| errors(StatusCode::BAD_REQUEST, "JSON_PARSER_ERROR", &format!("{e}")))?;
    if parsed.get("allOrNone").is_some_and(|v| v != false) {
        return Err(errors(
            StatusCode::BAD_REQUEST,
            "INVALID_FIELD",
            "this fake org supports allOrNone: false only",
        ));
    }
    let records: Vec<Map<String, Value>> = parsed["records"]
        .as_array()
        .ok_or_else(|| errors(StatusCode::BAD_REQUEST, "JSON_PARSER_ERROR", "records is required"))?
        .iter()
        .map(|r| r.as_object().cloned().unwrap_or_default())
        .collect();
    if records.len() > 200 {
        return Err(errors(
            StatusCode::BAD_REQUEST,
            "EXCEEDED_ID_LIMIT",
            "record limit reached. cannot submit more than 200 records into this call",
        ));
    }
    Ok(records)
}

fn record_type(record: &Map<String, Value>) -> Result<String, Response> {
    record
        .get("attributes")
        .and_then(|a| a.get("type"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| {
            errors(
                StatusCode::BAD_REQUEST,
                "INVALID_TYPE",
                "Must send a concrete entity type.",
            )
        })
}

async fn token(State(fake): State<FakeSalesforce>, body: Bytes) -> Response {
    let form: HashMap<String, String> = reqwest::Url::parse(&format!("http://x/?{}", String::from_utf8_lossy(&body)))
        .map(|url| url.query_pairs().into_owned().collect())
        .unwrap_or_default();
    let refuse = |error: &str, description: &str| {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "error": error, "error_description": description })),
        )
            .into_response()
    };
    if form.get("client_id") != Some(&fake.client_id) || form.get("client_secret") != Some(&fake.client_secret) {
        return refuse("invalid_client", "invalid client credentials");
    }
    match form.get("grant_type").map(String::as_str) {
        Some("refresh_token") if form.get("refresh_token") == Some(&fake.refresh_token) => {}
        Some("refresh_token") => return refuse("invalid_grant", "expired access/refresh token"),
        Some("client_credentials") => {}
        _ => return refuse("unsupported_grant_type", "grant type not supported"),
    }
    let session = {
        let mut org = fake.org.lock().unwrap();
        org.issued += 1;
        let session = format!("00D000000000001!AQ-session-{}-{}", org.issued, rand::random::<u32>());
        org.sessions.insert(session.clone());
        session
    };
    axum::Json(json!({
        "access_token": session,
        "instance_url": fake.url,
        "id": format!("{}/id/00D000000000001EAA/005000000000001AAA", fake.url),
        "token_type": "Bearer",
        "issued_at": "1767225600000",
        "signature": "c2lnbmF0dXJl",
    }))
    .into_response()
}

async fn describe(
    State(fake): State<FakeSalesforce>,
    Path((_, object)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let fault = match fake.admit(&headers) {
        Ok(fault) => fault,
        Err(answer) => return answer,
    };
    let result = {
        let org = fake.org.lock().unwrap();
        match org.fields(&object) {
            None => Err(errors(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "The requested resource does not exist",
            )),
            Some(fields) => Ok(json!({
                "name": object,
                "fields": fields.iter().map(|f| json!({
                    "name": f.name,
                    "type": f.kind,
                    "externalId": f.external_id,
                    "unique": f.external_id,
                    "idLookup": f.external_id || f.name == "Id" || f.name == "Email",
                    "createable": f.createable,
                    "updateable": f.createable,
                    "nillable": !f.required,
                })).collect::<Vec<_>>(),
            })),
        }
    };
    fake.answer(fault, result).await
}

/// `SELECT Id, F FROM T WHERE F IN ('a', 'b')` — the one query shape the
/// connector sends; anything else is `MALFORMED_QUERY`.
fn parse_lookup(soql: &str) -> Option<(String, String, Vec<String>)> {
    let rest = soql.strip_prefix("SELECT Id, ")?;
    let (field, rest) = rest.split_once(" FROM ")?;
    let (object, rest) = rest.split_once(" WHERE ")?;
    let rest = rest.strip_prefix(field)?.strip_prefix(" IN (")?.strip_suffix(')')?;
    let mut values = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ' ' || *c == ',') {
            chars.next();
        }
        match chars.next() {
            None => break,
            Some('\'') => {}
            Some(_) => return None,
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    'r' => value.push('\r'),
                    't' => value.push('\t'),
                    c => value.push(c),
                },
                '\'' => break,
                c => value.push(c),
            }
        }
        values.push(value);
    }
    Some((field.to_string(), object.to_string(), values))
}

/// The first page of `records`, with a locator for the rest.
fn page(fake: &FakeSalesforce, version: &str, mut records: Vec<Value>, total: usize) -> Value {
    let mut org = fake.org.lock().unwrap();
    let size = org.page_size;
    if records.len() <= size {
        return json!({ "totalSize": total, "done": true, "records": records });
    }
    let rest = records.split_off(size);
    let locator = format!("01gD0000000ebb{}-{}", org.cursors.len(), total - rest.len());
    org.cursors.insert(locator.clone(), rest);
    json!({
        "totalSize": total,
        "done": false,
        "nextRecordsUrl": format!("/services/data/{version}/query/{locator}"),
        "records": records,
    })
}

async fn query(
    State(fake): State<FakeSalesforce>,
    Path(version): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let fault = match fake.admit(&headers) {
        Ok(fault) => fault,
        Err(answer) => return answer,
    };
    let soql = params.get("q").cloned().unwrap_or_default();
    let Some((field, object, values)) = parse_lookup(&soql) else {
        return errors(StatusCode::BAD_REQUEST, "MALFORMED_QUERY", "unexpected token");
    };
    let matched: Result<Vec<Value>, Response> = {
        let org = fake.org.lock().unwrap();
        match org.field(&object, &field) {
            None => Err(errors(
                StatusCode::BAD_REQUEST,
                "INVALID_FIELD",
                &format!("No such column '{field}' on entity '{object}'."),
            )),
            Some(schema) => {
                let name = schema.name;
                let ids: BTreeSet<String> = values
                    .iter()
                    .flat_map(|v| {
                        if name == "Id" {
                            vec![v.clone()]
                        } else {
                            org.find(&object, name, v)
                        }
                    })
                    .collect();
                let records = org.records.get(&object);
                Ok(ids
                    .iter()
                    .filter_map(|id| Some((id, records?.get(id)?)))
                    .map(|(id, record)| {
                        json!({
                            "attributes": { "type": object, "url": format!("/services/data/{version}/sobjects/{object}/{id}") },
                            "Id": id,
                            name: if name == "Id" { json!(id) } else { record.get(name).cloned().unwrap_or(Value::Null) },
                        })
                    })
                    .collect())
            }
        }
    };
    let result = matched.map(|records| {
        let total = records.len();
        page(&fake, &version, records, total)
    });
    fake.answer(fault, result).await
}

async fn query_more(
    State(fake): State<FakeSalesforce>,
    Path((version, locator)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let fault = match fake.admit(&headers) {
        Ok(fault) => fault,
        Err(answer) => return answer,
    };
    let rest = fake.org.lock().unwrap().cursors.remove(&locator);
    let result = match rest {
        None => Err(errors(
            StatusCode::BAD_REQUEST,
            "INVALID_QUERY_LOCATOR",
            "invalid query locator",
        )),
        Some(records) => {
            let total: usize = locator.rsplit('-').next().and_then(|n| n.parse().ok()).unwrap_or(0) + records.len();
            Ok(page(&fake, &version, records, total))
        }
    };
    fake.answer(fault, result).await
}

async fn create(State(fake): State<FakeSalesforce>, headers: HeaderMap, body: Bytes) -> Response {
    let fault = match fake.admit(&headers) {
        Ok(fault) => fault,
        Err(answer) => return answer,
    };
    let result = (|| {
        let records = collection_records(&body)?;
        let mut org = fake.org.lock().unwrap();
        for record in &records {
            let object = record_type(record)?;
            org.check_fields(&object, record)?;
        }
        let mut results = Vec::new();
        for record in &records {
            let object = record_type(record)?;
            if record.keys().any(|k| k.eq_ignore_ascii_case("id")) {
                results.push(failed(
                    None,
                    record_error("INVALID_FIELD", "cannot specify Id in an insert call", &["Id"]),
                ));
                continue;
            }
            results.push(answered(org.insert_record(&object, record)));
        }
        Ok(Value::Array(results))
    })();
    fake.answer(fault, result).await
}

async fn update(State(fake): State<FakeSalesforce>, headers: HeaderMap, body: Bytes) -> Response {
    let fault = match fake.admit(&headers) {
        Ok(fault) => fault,
        Err(answer) => return answer,
    };
    let result = (|| {
        let records = collection_records(&body)?;
        let mut org = fake.org.lock().unwrap();
        for record in &records {
            let object = record_type(record)?;
            org.check_fields(&object, record)?;
        }
        let mut results = Vec::new();
        for record in &records {
            let object = record_type(record)?;
            let id = record.get("id").and_then(Value::as_str);
            results.push(answered(org.update_record(&object, id, record)));
        }
        Ok(Value::Array(results))
    })();
    fake.answer(fault, result).await
}

async fn upsert(
    State(fake): State<FakeSalesforce>,
    Path((_, object, field)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fault = match fake.admit(&headers) {
        Ok(fault) => fault,
        Err(answer) => return answer,
    };
    let result = (|| {
        let records = collection_records(&body)?;
        let mut org = fake.org.lock().unwrap();
        let external = match org.field(&object, &field) {
            Some(f) if f.external_id => f.name,
            _ => {
                return Err(errors(
                    StatusCode::BAD_REQUEST,
                    "INVALID_FIELD",
                    &format!("Field {field} is not an External ID or Id field for {object}"),
                ))
            }
        };
        for record in &records {
            if record_type(record)? != object {
                return Err(errors(
                    StatusCode::BAD_REQUEST,
                    "INVALID_TYPE",
                    "the records must be of the type the URI names",
                ));
            }
            org.check_fields(&object, record)?;
        }
        let results = records
            .iter()
            .map(|record| answered(org.upsert_record(&object, external, record)))
            .collect();
        Ok(Value::Array(results))
    })();
    fake.answer(fault, result).await
}

async fn delete(
    State(fake): State<FakeSalesforce>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let fault = match fake.admit(&headers) {
        Ok(fault) => fault,
        Err(answer) => return answer,
    };
    let ids: Vec<String> = params
        .get("ids")
        .map(|ids| ids.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    let result = if ids.len() > 200 {
        Err(errors(
            StatusCode::BAD_REQUEST,
            "EXCEEDED_ID_LIMIT",
            "record limit reached. cannot submit more than 200 records into this call",
        ))
    } else {
        let mut org = fake.org.lock().unwrap();
        let results = ids.iter().map(|id| answered(org.delete_record(None, id))).collect();
        Ok(Value::Array(results))
    };
    fake.answer(fault, result).await
}

fn job_not_found(id: &str) -> Response {
    errors(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        &format!("The requested resource does not exist: job {id}"),
    )
}

fn job_json(id: &str, job: &IngestJob) -> Value {
    json!({
        "id": id,
        "object": job.object,
        "operation": job.operation,
        "externalIdFieldName": job.external_id,
        "state": job.state,
        "contentType": "CSV",
        "lineEnding": "LF",
        "columnDelimiter": "COMMA",
        "apiVersion": 62.0,
        "numberRecordsProcessed": job.successful.len() + job.failed.len(),
        "numberRecordsFailed": job.failed.len(),
        "errorMessage": job.error_message,
    })
}

async fn create_job(State(fake): State<FakeSalesforce>, headers: HeaderMap, body: Bytes) -> Response {
    let fault = match fake.admit(&headers) {
        Ok(fault) => fault,
        Err(answer) => return answer,
    };
    let result = (|| {
        let request: Value = serde_json::from_slice(&body)
            .map_err(|e| errors(StatusCode::BAD_REQUEST, "JSON_PARSER_ERROR", &format!("{e}")))?;
        let object = request["object"].as_str().unwrap_or_default().to_string();
        let operation = request["operation"].as_str().unwrap_or_default().to_string();
        let mut org = fake.org.lock().unwrap();
        if org.fields(&object).is_none() {
            return Err(errors(
                StatusCode::BAD_REQUEST,
                "INVALIDENTITY",
                &format!("sObject type '{object}' is not supported"),
            ));
        }
        if !["insert", "update", "upsert", "delete", "hardDelete"].contains(&operation.as_str()) {
            return Err(errors(StatusCode::BAD_REQUEST, "INVALIDJOB", "Invalid operation"));
        }
        if request.get("contentType").is_some_and(|c| c != "CSV") {
            return Err(errors(StatusCode::BAD_REQUEST, "INVALIDJOB", "contentType must be CSV"));
        }
        let external_id = request["externalIdFieldName"].as_str().map(str::to_string);
        if operation == "upsert" {
            let valid = external_id
                .as_deref()
                .and_then(|f| org.field(&object, f))
                .is_some_and(|f| f.external_id || f.name == "Id");
            if !valid {
                return Err(errors(
                    StatusCode::BAD_REQUEST,
                    "INVALIDJOB",
                    "externalIdFieldName must name an External ID field of the object",
                ));
            }
        }
        org.jobs_created += 1;
        org.next_id += 1;
        let id = format!("750{:015}", org.next_id);
        let job = IngestJob {
            object,
            operation,
            external_id,
            state: "Open".into(),
            ..IngestJob::default()
        };
        let answer = job_json(&id, &job);
        org.jobs.insert(id, job);
        Ok(answer)
    })();
    fake.answer(fault, result).await
}

async fn upload_job(
    State(fake): State<FakeSalesforce>,
    Path((_, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fault = match fake.admit(&headers) {
        Ok(fault) => fault,
        Err(answer) => return answer,
    };
    if headers.get("content-type").and_then(|v| v.to_str().ok()) != Some("text/csv") {
        return errors(StatusCode::BAD_REQUEST, "INVALIDJOB", "job data must be text/csv");
    }
    let result = {
        let mut org = fake.org.lock().unwrap();
        match org.jobs.get_mut(&id) {
            None => Err(job_not_found(&id)),
            Some(job) if job.state != "Open" || job.data.is_some() => Err(errors(
                StatusCode::CONFLICT,
                "INVALIDJOBSTATE",
                "data can be uploaded once, to an Open job",
            )),
            Some(job) => {
                job.data = Some(String::from_utf8_lossy(&body).into_owned());
                Ok(Value::Null)
            }
        }
    };
    match result {
        Ok(_) => {
            if let Some(Fault::AppliedThenSlow(delay)) = fault {
                tokio::time::sleep(delay).await;
            }
            StatusCode::CREATED.into_response()
        }
        Err(answer) => answer,
    }
}

async fn change_job(
    State(fake): State<FakeSalesforce>,
    Path((_, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fault = match fake.admit(&headers) {
        Ok(fault) => fault,
        Err(answer) => return answer,
    };
    let state = serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null)["state"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let result = {
        let mut org = fake.org.lock().unwrap();
        let polls = org.job_polls;
        match org.jobs.get(&id).cloned() {
            None => Err(job_not_found(&id)),
            Some(job) if job.state != "Open" => Err(errors(
                StatusCode::CONFLICT,
                "INVALIDJOBSTATE",
                &format!("the job is {}, not Open", job.state),
            )),
            Some(mut job) => match state.as_str() {
                "Aborted" => {
                    job.state = "Aborted".into();
                    let answer = job_json(&id, &job);
                    org.jobs.insert(id.clone(), job);
                    Ok(answer)
                }
                "UploadComplete" => {
                    org.process(&mut job);
                    job.state = "UploadComplete".into();
                    job.polls_left = polls;
                    let answer = job_json(&id, &job);
                    org.jobs.insert(id.clone(), job);
                    Ok(answer)
                }
                _ => Err(errors(
                    StatusCode::BAD_REQUEST,
                    "INVALIDJOBSTATE",
                    "state may be changed to UploadComplete or Aborted",
                )),
            },
        }
    };
    fake.answer(fault, result).await
}

async fn job_info(
    State(fake): State<FakeSalesforce>,
    Path((_, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let fault = match fake.admit(&headers) {
        Ok(fault) => fault,
        Err(answer) => return answer,
    };
    let result = {
        let mut org = fake.org.lock().unwrap();
        match org.jobs.get_mut(&id) {
            None => Err(job_not_found(&id)),
            Some(job) => {
                if job.state == "UploadComplete" || job.state == "InProgress" {
                    if job.polls_left == 0 {
                        job.state = if job.error_message.is_empty() {
                            "JobComplete"
                        } else {
                            "Failed"
                        }
                        .into();
                    } else {
                        job.polls_left -= 1;
                        job.state = "InProgress".into();
                    }
                }
                Ok(job_json(&id, job))
            }
        }
    };
    fake.answer(fault, result).await
}

async fn job_results(
    State(fake): State<FakeSalesforce>,
    Path((_, id, results)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(answer) = fake.admit(&headers) {
        return answer;
    }
    let org = fake.org.lock().unwrap();
    let Some(job) = org.jobs.get(&id) else {
        return job_not_found(&id);
    };
    let (first, rows): (&[&str], Vec<Vec<String>>) = match results.as_str() {
        "successfulResults" if job.state == "JobComplete" || job.state == "Failed" => {
            (&["sf__Id", "sf__Created"], job.successful.clone())
        }
        "failedResults" if job.state == "JobComplete" || job.state == "Failed" => {
            (&["sf__Id", "sf__Error"], job.failed.clone())
        }
        "unprocessedrecords" => (&[], Vec::new()),
        "successfulResults" | "failedResults" => {
            return errors(
                StatusCode::CONFLICT,
                "INVALIDJOBSTATE",
                "results are ready once the job is complete",
            )
        }
        _ => return job_not_found(&id),
    };
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    let header: Vec<String> = first
        .iter()
        .map(|c| c.to_string())
        .chain(job.header.iter().cloned())
        .collect();
    writer.write_record(&header).expect("CSV into memory");
    // Salesforce keeps no order in results: newest first here.
    for row in rows.iter().rev() {
        writer.write_record(row).expect("CSV into memory");
    }
    let body = writer.into_inner().expect("CSV into memory");
    org.with_usage(([("content-type", "text/csv")], body).into_response())
}

/// What one record's write came to: its id and whether it was created, or
/// the id it named (if any) and the error.
type Outcome = Result<(String, bool), (Option<String>, Value)>;

/// A collection route's result entry for an outcome.
fn answered(outcome: Outcome) -> Value {
    match outcome {
        Ok((id, _)) => saved(&id),
        Err((id, error)) => failed(id.as_deref(), error),
    }
}

/// One record's write, as every route applies it: the collection routes
/// and ingest jobs differ only in how records arrive and results return.
impl Org {
    fn insert_record(&mut self, object: &str, fields: &Map<String, Value>) -> Outcome {
        if let Some(error) = self.validate(object, fields, true, None) {
            return Err((None, error));
        }
        let id = self.new_id(object);
        self.write(object, &id, fields);
        Ok((id, true))
    }

    /// Creates or updates the record whose `external` field (the schema's
    /// spelling) has the record's value.
    fn upsert_record(&mut self, object: &str, external: &str, fields: &Map<String, Value>) -> Outcome {
        let key = fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(external))
            .map(|(_, v)| text_of(v))
            .filter(|v| !v.is_empty() && v != "null");
        let Some(key) = key else {
            return Err((
                None,
                record_error("MISSING_ARGUMENT", &format!("{external} not specified"), &[]),
            ));
        };
        match self.find(object, external, &key).as_slice() {
            [] => self.insert_record(object, fields),
            [id] => {
                let id = id.clone();
                if let Some(error) = self.validate(object, fields, false, Some(&id)) {
                    return Err((Some(id), error));
                }
                self.write(object, &id, fields);
                Ok((id, false))
            }
            _ => Err((
                None,
                record_error(
                    "DUPLICATE_EXTERNAL_ID",
                    "more than one record found for external id field",
                    &[external],
                ),
            )),
        }
    }

    fn update_record(&mut self, object: &str, id: Option<&str>, fields: &Map<String, Value>) -> Outcome {
        let Some(id) = id.map(str::to_string) else {
            return Err((
                None,
                record_error("MISSING_ARGUMENT", "Id not specified in an update call", &[]),
            ));
        };
        if self.deleted.contains(&id) {
            return Err((Some(id), record_error("ENTITY_IS_DELETED", "entity is deleted", &[])));
        }
        if !self.records.get(object).is_some_and(|r| r.contains_key(&id)) {
            return Err((
                Some(id),
                record_error("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", &[]),
            ));
        }
        if let Some(error) = self.validate(object, fields, false, Some(&id)) {
            return Err((Some(id), error));
        }
        self.write(object, &id, fields);
        Ok((id, false))
    }

    /// Deletes a record of `object`, or of any object when the route does
    /// not name one (Collections delete by id alone).
    fn delete_record(&mut self, object: Option<&str>, id: &str) -> Outcome {
        let holder = self
            .records
            .iter()
            .find(|(name, records)| object.is_none_or(|o| o == name.as_str()) && records.contains_key(id))
            .map(|(name, _)| name.clone());
        match holder {
            Some(holder) => {
                self.remove(&holder, id);
                Ok((id.to_string(), false))
            }
            None if self.deleted.contains(id) => Err((
                Some(id.to_string()),
                record_error("ENTITY_IS_DELETED", "entity is deleted", &[]),
            )),
            None => Err((
                Some(id.to_string()),
                record_error("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", &[]),
            )),
        }
    }

    /// Applies a job's uploaded rows, as the collection routes would one by
    /// one, and keeps a result row for each.
    fn process(&mut self, job: &mut IngestJob) {
        let data = job.data.clone().unwrap_or_default();
        let mut reader = csv::ReaderBuilder::new().from_reader(data.as_bytes());
        let header: Vec<String> = match reader.headers() {
            Ok(h) => h.iter().map(str::to_string).collect(),
            Err(e) => {
                job.error_message = format!("InvalidBatch : {e}");
                return;
            }
        };
        if let Some(unknown) = header
            .iter()
            .find(|name| !name.eq_ignore_ascii_case("id") && self.field(&job.object, name).is_none())
        {
            job.error_message = format!("InvalidBatch : Field name not found : {unknown}");
            return;
        }
        job.header = header.clone();
        let object = job.object.clone();
        for record in reader.records() {
            let Ok(record) = record else { continue };
            let cells: Vec<String> = record.iter().map(str::to_string).collect();
            // Empty cells leave a field as it is; `#N/A` nulls it.
            let mut fields = Map::new();
            for (name, text) in header.iter().zip(&cells) {
                if text.is_empty() {
                    continue;
                }
                let value = if text == "#N/A" {
                    Value::Null
                } else {
                    match self.field(&object, name).map(|f| f.kind) {
                        Some("double" | "int" | "currency" | "percent") => {
                            text.parse::<f64>().map(|n| json!(n)).unwrap_or_else(|_| json!(text))
                        }
                        Some("boolean") => json!(text.eq_ignore_ascii_case("true")),
                        _ => json!(text),
                    }
                };
                fields.insert(name.clone(), value);
            }
            let id_cell = fields.get("Id").and_then(Value::as_str).map(str::to_string);
            let outcome = match job.operation.as_str() {
                "insert" => self.insert_record(&object, &fields),
                "upsert" => {
                    let external = job.external_id.clone().unwrap_or_default();
                    let external = self
                        .field(&object, &external)
                        .map_or(external.clone(), |f| f.name.to_string());
                    self.upsert_record(&object, &external, &fields)
                }
                "update" => self.update_record(&object, id_cell.as_deref(), &fields),
                _ => self.delete_record(Some(&object), id_cell.as_deref().unwrap_or_default()),
            };
            match outcome {
                Ok((id, created)) => {
                    let mut row = vec![id, created.to_string()];
                    row.extend(cells);
                    job.successful.push(row);
                }
                Err((_, error)) => {
                    let code = error["statusCode"].as_str().unwrap_or("UNKNOWN_EXCEPTION");
                    let message = error["message"].as_str().unwrap_or_default();
                    let fields: Vec<&str> = error["fields"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    let mut row = vec![String::new(), format!("{code}:{message}:{} --", fields.join(","))];
                    row.extend(cells);
                    job.failed.push(row);
                }
            }
        }
    }
}
