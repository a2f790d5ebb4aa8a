//! A HubSpot CRM v3 server on loopback, implementing the documented contract
//! the connector uses (developers.hubspot.com/docs/api-reference): the batch
//! object endpoints (100 inputs at most, 207 multi-status with
//! `context.objectWriteTraceId` or `context.ids`), list memberships (manual
//! lists only), Bearer private-app tokens (401 `INVALID_AUTHENTICATION`),
//! public apps' OAuth tokens from `POST /oauth/2026-03/token` or
//! `/oauth/v1/token` (refresh-token grant, 30-minute tokens; 401
//! `EXPIRED_AUTHENTICATION` once one expires), and
//! the ten-secondly rolling limit (429 `TEN_SECONDLY_ROLLING` with the
//! `X-HubSpot-RateLimit-*` headers, no `Retry-After`, as documented).
//!
//! Faults for the contract tests: the next N requests answer 429 or 502, or
//! are applied and then answered too late (after the client's timeout).

// Handlers return an early answer as `Err(Response)`: one per request, so
// its size does not matter.
#![allow(clippy::result_large_err)]

use crate::destinations::contract::Chaos;
pub use crate::destinations::contract::Fault;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Store {
    /// objectType → record id → properties.
    objects: BTreeMap<String, BTreeMap<u64, Map<String, Value>>>,
    next_id: u64,
    /// list id → (processing type, member record ids).
    lists: BTreeMap<String, (String, BTreeSet<u64>)>,
    faults: VecDeque<Fault>,
    /// Request times in the rolling window, per token.
    window: HashMap<String, VecDeque<Instant>>,
    requests: u64,
    rate_limited: u64,
    /// Values of `email` the server refuses as invalid.
    invalid_emails: BTreeSet<String>,
    /// Shares of requests answered 429 and 502, spread evenly.
    chaos: Chaos,
    /// When the first and the last request the limit let through came.
    admitted: Option<(Instant, Instant)>,
    /// A public app installed in the account, when one is.
    app: Option<OAuthApp>,
    /// (object, property, lowercased value) → record id, for lookups by a
    /// property (`idProperty`) in constant time.
    index: HashMap<(String, String, String), u64>,
}

impl Store {
    /// Writes a record's properties over its current ones (a new record when
    /// it has none), keeping the index in step.
    fn put(&mut self, object: &str, id: u64, properties: Map<String, Value>) {
        let record = self
            .objects
            .entry(object.to_string())
            .or_default()
            .entry(id)
            .or_default();
        for (name, value) in properties {
            if let Some(old) = record.get(&name).and_then(Value::as_str) {
                self.index
                    .remove(&(object.to_string(), name.clone(), old.to_lowercase()));
            }
            if let Some(text) = value.as_str().filter(|t| !t.is_empty()) {
                self.index
                    .insert((object.to_string(), name.clone(), text.to_lowercase()), id);
            }
            record.insert(name, value);
        }
    }

    fn remove(&mut self, object: &str, id: u64) {
        let Some(record) = self.objects.get_mut(object).and_then(|records| records.remove(&id)) else {
            return;
        };
        for (name, value) in record {
            if let Some(text) = value.as_str() {
                self.index.remove(&(object.to_string(), name, text.to_lowercase()));
            }
        }
    }
}

/// A public app's credentials and the access tokens granted to it.
#[derive(Default)]
struct OAuthApp {
    client_id: String,
    client_secret: String,
    refresh_token: String,
    /// Access tokens still valid.
    valid: BTreeSet<String>,
    /// Access tokens that were valid once.
    expired: BTreeSet<String>,
    grants: u64,
    /// Only the v1 token endpoint answers (a server from before 2026-03).
    v1_only: bool,
}

#[derive(Clone)]
pub struct FakeHubSpot {
    pub url: String,
    pub token: String,
    /// Requests per rolling ten seconds before 429s; `None` for no limit.
    limit: Option<u32>,
    store: Arc<Mutex<Store>>,
}

type Shared = FakeHubSpot;

impl FakeHubSpot {
    /// Starts the server; `limit` is the tier's requests per ten seconds.
    pub async fn start(token: &str, limit: Option<u32>) -> FakeHubSpot {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let fake = FakeHubSpot {
            url: format!("http://{}", listener.local_addr().expect("address")),
            token: token.to_string(),
            limit,
            store: Arc::new(Mutex::new(Store {
                next_id: 1000,
                ..Store::default()
            })),
        };
        let app = Router::new()
            .route("/crm/v3/objects/{object}", get(list_objects))
            .route("/crm/v3/objects/{object}/batch/{operation}", post(batch))
            .route("/crm/v3/properties/{object}", get(properties))
            .route("/crm/v3/lists/{list}", get(show_list))
            .route("/crm/v3/lists/{list}/memberships/{operation}", put(memberships))
            .route("/oauth/2026-03/token", post(dated_token))
            .route("/oauth/v1/token", post(v1_token))
            .with_state(fake.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        fake
    }

    /// Installs a public app: its tokens come from the token endpoints.
    pub fn install_app(&self, client_id: &str, client_secret: &str, refresh_token: &str) {
        self.store.lock().unwrap().app = Some(OAuthApp {
            client_id: client_id.to_string(),
            client_secret: client_secret.to_string(),
            refresh_token: refresh_token.to_string(),
            ..OAuthApp::default()
        });
    }

    /// Only `/oauth/v1/token` answers; the dated endpoint is a 404.
    pub fn token_endpoint_v1_only(&self) {
        if let Some(app) = self.store.lock().unwrap().app.as_mut() {
            app.v1_only = true;
        }
    }

    /// Every access token granted so far expires now.
    pub fn expire_tokens(&self) {
        if let Some(app) = self.store.lock().unwrap().app.as_mut() {
            let valid = std::mem::take(&mut app.valid);
            app.expired.extend(valid);
        }
    }

    /// Access tokens the app was granted.
    pub fn grants(&self) -> u64 {
        self.store.lock().unwrap().app.as_ref().map_or(0, |app| app.grants)
    }

    /// The app's secrets and every access token granted to it.
    pub fn app_secrets(&self) -> Vec<String> {
        let store = self.store.lock().unwrap();
        let Some(app) = store.app.as_ref() else {
            return Vec::new();
        };
        [app.client_secret.clone(), app.refresh_token.clone()]
            .into_iter()
            .chain(app.valid.iter().cloned())
            .chain(app.expired.iter().cloned())
            .collect()
    }

    pub fn fault(&self, fault: Fault, times: usize) {
        let mut store = self.store.lock().unwrap();
        store.faults.extend(std::iter::repeat_n(fault, times));
    }

    /// A manual list (its members can be added and removed by id).
    pub fn create_list(&self, id: &str, processing_type: &str) {
        let mut store = self.store.lock().unwrap();
        store
            .lists
            .insert(id.to_string(), (processing_type.to_string(), BTreeSet::new()));
    }

    /// Answers a share of all requests 429 (`TEN_SECONDLY_ROLLING`) and
    /// another 502, spread evenly, from now on.
    pub fn chaos(&self, rate_limited: f64, bad_gateway: f64) {
        self.store.lock().unwrap().chaos = Chaos::new(rate_limited, bad_gateway);
    }

    pub fn refuse_email(&self, email: &str) {
        self.store.lock().unwrap().invalid_emails.insert(email.to_lowercase());
    }

    /// Creates a record directly, as if made in HubSpot; returns its id.
    pub fn insert(&self, object: &str, properties: Value) -> u64 {
        let mut store = self.store.lock().unwrap();
        store.next_id += 1;
        let id = store.next_id;
        let properties = normalised(properties.as_object().cloned().unwrap_or_default());
        store.put(object, id, properties);
        id
    }

    /// Every record of an object type, keyed by its id.
    pub fn records(&self, object: &str) -> BTreeMap<u64, Map<String, Value>> {
        self.store
            .lock()
            .unwrap()
            .objects
            .get(object)
            .cloned()
            .unwrap_or_default()
    }

    pub fn members(&self, list: &str) -> BTreeSet<u64> {
        self.store
            .lock()
            .unwrap()
            .lists
            .get(list)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    /// The time from the first request let through to the last.
    pub fn admitted_span(&self) -> Option<Duration> {
        self.store.lock().unwrap().admitted.map(|(first, last)| last - first)
    }

    /// (requests answered, of them 429s for the rolling limit or a fault).
    pub fn counts(&self) -> (u64, u64) {
        let store = self.store.lock().unwrap();
        (store.requests, store.rate_limited)
    }

    /// Authentication, the rolling limit and injected faults, before any
    /// route: `Err` is the answer to send instead.
    fn admit(&self, headers: &HeaderMap) -> Result<Option<Fault>, Response> {
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let mut store = self.store.lock().unwrap();
        store.requests += 1;
        let app = store.app.as_ref();
        if token.is_some_and(|t| app.is_some_and(|app| app.expired.contains(t))) {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                "EXPIRED_AUTHENTICATION",
                "The OAuth token used to make this call expired 1 second(s) ago.",
            ));
        }
        let granted = token.is_some_and(|t| app.is_some_and(|app| app.valid.contains(t)));
        if token != Some(self.token.as_str()) && !granted {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                "INVALID_AUTHENTICATION",
                "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
            ));
        }
        let fault = store.faults.pop_front().or_else(|| store.chaos.draw());
        if fault == Some(Fault::RateLimited) {
            store.rate_limited += 1;
            return Err(rate_limited(self.limit.unwrap_or(100), 0));
        }
        if fault == Some(Fault::Unavailable) {
            return Err((StatusCode::BAD_GATEWAY, "<html>502 Bad Gateway</html>").into_response());
        }
        if let Some(limit) = self.limit {
            let now = Instant::now();
            // The limit is the account's, whichever app's token is used.
            let window = store.window.entry("account".to_string()).or_default();
            while window
                .front()
                .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(10))
            {
                window.pop_front();
            }
            if window.len() >= limit as usize {
                store.rate_limited += 1;
                return Err(rate_limited(limit, 0));
            }
            window.push_back(now);
        }
        let now = Instant::now();
        store.admitted = Some(store.admitted.map_or((now, now), |(first, _)| (first, now)));
        Ok(fault)
    }
}

async fn dated_token(State(fake): State<FakeHubSpot>, body: Bytes) -> Response {
    if fake.store.lock().unwrap().app.as_ref().is_some_and(|app| app.v1_only) {
        return (StatusCode::NOT_FOUND, "Not Found").into_response();
    }
    grant(&fake, &body)
}

async fn v1_token(State(fake): State<FakeHubSpot>, body: Bytes) -> Response {
    grant(&fake, &body)
}

/// The refresh-token grant, form-encoded as HubSpot documents it; errors
/// carry RFC 6749's `error` and HubSpot's `status` and `message`.
fn grant(fake: &FakeHubSpot, body: &[u8]) -> Response {
    let form: HashMap<String, String> = reqwest::Url::parse(&format!("http://x/?{}", String::from_utf8_lossy(body)))
        .map(|url| url.query_pairs().into_owned().collect())
        .unwrap_or_default();
    let refuse = |error: &str, status: &str, message: &str| {
        let body = json!({"error": error, "error_description": message, "status": status, "message": message});
        (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
    };
    let mut store = fake.store.lock().unwrap();
    let Some(app) = store.app.as_mut() else {
        return refuse("invalid_client", "BAD_CLIENT_ID", "missing or unknown client id");
    };
    if form.get("client_id") != Some(&app.client_id) {
        return refuse("invalid_client", "BAD_CLIENT_ID", "missing or unknown client id");
    }
    if form.get("client_secret") != Some(&app.client_secret) {
        return refuse(
            "invalid_client",
            "BAD_CLIENT_SECRET",
            "missing or invalid client secret",
        );
    }
    if form.get("grant_type").map(String::as_str) != Some("refresh_token") {
        return refuse("unsupported_grant_type", "BAD_GRANT_TYPE", "unsupported grant type");
    }
    if form.get("refresh_token") != Some(&app.refresh_token) {
        return refuse(
            "invalid_grant",
            "BAD_REFRESH_TOKEN",
            "refresh token is invalid, expired or revoked",
        );
    }
    app.grants += 1;
    let access_token = format!("CKDZ-access-{}-{:08x}", app.grants, rand::random::<u32>());
    app.valid.insert(access_token.clone());
    axum::Json(json!({
        "token_type": "bearer",
        "refresh_token": app.refresh_token,
        "access_token": access_token,
        "expires_in": 1800,
    }))
    .into_response()
}

fn error(status: StatusCode, category: &str, message: &str) -> Response {
    let body = json!({
        "status": "error",
        "message": message,
        "correlationId": "00000000-0000-4000-8000-000000000000",
        "category": category,
        "errors": [],
        "links": {},
    });
    (status, axum::Json(body)).into_response()
}

fn rate_limited(limit: u32, remaining: u32) -> Response {
    let body = json!({
        "status": "error",
        "message": "You have reached your ten_secondly_rolling limit.",
        "errorType": "RATE_LIMIT",
        "category": "RATE_LIMITS",
        "correlationId": "00000000-0000-4000-8000-000000000001",
        "policyName": "TEN_SECONDLY_ROLLING",
        "requestId": "00000000-0000-4000-8000-000000000002",
    });
    let mut response = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert("x-hubspot-ratelimit-interval-milliseconds", "10000".parse().unwrap());
    headers.insert("x-hubspot-ratelimit-max", limit.to_string().parse().unwrap());
    headers.insert("x-hubspot-ratelimit-remaining", remaining.to_string().parse().unwrap());
    response
}

/// An input's `properties`, as HubSpot keeps them.
fn input_properties(input: &Value) -> Map<String, Value> {
    normalised(
        input
            .get("properties")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
    )
}

/// Values as HubSpot keeps them: text, emails lowercased.
fn normalised(properties: Map<String, Value>) -> Map<String, Value> {
    properties
        .into_iter()
        .map(|(name, value)| {
            let text = match value {
                Value::String(text) => text,
                Value::Null => String::new(),
                other => other.to_string(),
            };
            let text = if name == "email" { text.to_lowercase() } else { text };
            (name, Value::String(text))
        })
        .collect()
}

fn record_json(id: u64, properties: &Map<String, Value>, trace: Option<&Value>) -> Value {
    let mut properties = properties.clone();
    properties.insert("hs_object_id".into(), Value::String(id.to_string()));
    let mut record = json!({
        "id": id.to_string(),
        "properties": properties,
        "createdAt": "2026-01-01T00:00:00.000Z",
        "updatedAt": "2026-01-01T00:00:00.000Z",
        "archived": false,
    });
    if let Some(trace) = trace {
        record["objectWriteTraceId"] = trace.clone();
    }
    record
}

fn item_error(category: &str, message: &str, context: Value) -> Value {
    json!({"status": "error", "category": category, "message": message, "context": context, "errors": [], "links": {}})
}

async fn finish(fault: Option<Fault>, response: Response) -> Response {
    if let Some(Fault::AppliedThenSlow(delay)) = fault {
        tokio::time::sleep(delay).await;
    }
    response
}

async fn list_objects(State(fake): State<Shared>, Path(object): Path<String>, headers: HeaderMap) -> Response {
    let fault = match fake.admit(&headers) {
        Ok(fault) => fault,
        Err(answer) => return answer,
    };
    let results: Vec<Value> = fake
        .records(&object)
        .iter()
        .take(1)
        .map(|(id, p)| record_json(*id, p, None))
        .collect();
    finish(fault, axum::Json(json!({"results": results})).into_response()).await
}

async fn properties(State(fake): State<Shared>, Path(object): Path<String>, headers: HeaderMap) -> Response {
    if let Err(answer) = fake.admit(&headers) {
        return answer;
    }
    let names: BTreeSet<String> = ["email", "firstname", "lastname", "phone", "hs_object_id"]
        .into_iter()
        .map(str::to_string)
        .chain(
            fake.records(&object)
                .values()
                .flat_map(|p| p.keys().cloned().collect::<Vec<_>>()),
        )
        .collect();
    let results: Vec<Value> = names
        .iter()
        .map(|name| {
            json!({"name": name, "label": name, "type": "string", "fieldType": "text", "groupName": "info",
                   "description": "", "options": [], "hasUniqueValue": name == "hs_object_id",
                   "calculated": false,
                   "modificationMetadata": {"archivable": true, "readOnlyDefinition": true, "readOnlyValue": name == "hs_object_id"}})
        })
        .collect();
    axum::Json(json!({"results": results})).into_response()
}

async fn batch(
    State(fake): State<Shared>,
    Path((object, operation)): Path<(String, String)>,
    Query(_query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fault = match fake.admit(&headers) {
        Ok(fault) => fault,
        Err(answer) => return answer,
    };
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "Invalid input JSON on line 1",
        );
    };
    let inputs = body
        .get("inputs")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if inputs.len() > 100 {
        return error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            &format!(
                "The maximum number of inputs supported in a batch request is 100, got {}",
                inputs.len()
            ),
        );
    }
    let response = fake.apply_batch(&object, &operation, &body, &inputs);
    finish(fault, response).await
}

impl FakeHubSpot {
    fn apply_batch(&self, object: &str, operation: &str, body: &Value, inputs: &[Value]) -> Response {
        let mut store = self.store.lock().unwrap();
        let object = object.to_string();
        let inputs = inputs.to_vec();
        match operation {
            "create" => create(&mut store, &object, &inputs),
            "upsert" | "update" => identified(&mut store, &object, &inputs, operation == "upsert"),
            "archive" => {
                let ids: Vec<u64> = inputs
                    .iter()
                    .filter_map(|input| {
                        input
                            .get("id")
                            .and_then(Value::as_str)
                            .and_then(|i| i.parse::<u64>().ok())
                    })
                    .collect();
                for id in &ids {
                    store.remove(&object, *id);
                }
                // An archived contact is no member of any list.
                if object == "contacts" {
                    for (_, members) in store.lists.values_mut() {
                        for id in &ids {
                            members.remove(id);
                        }
                    }
                }
                StatusCode::NO_CONTENT.into_response()
            }
            "read" => read(&store, &object, body, &inputs),
            _ => error(StatusCode::NOT_FOUND, "OBJECT_NOT_FOUND", "Unknown batch operation"),
        }
    }
}

fn invalid_email(store: &Store, properties: &Map<String, Value>) -> Option<String> {
    let email = properties.get("email")?.as_str()?.to_lowercase();
    store.invalid_emails.contains(&email).then(|| {
        format!("Property values were not valid: [{{\"isValid\":false,\"message\":\"Email address {email} is invalid\",\"error\":\"INVALID_EMAIL\",\"name\":\"email\"}}]")
    })
}

fn create(store: &mut Store, object: &str, inputs: &[Value]) -> Response {
    let traced = inputs.iter().all(|i| i.get("objectWriteTraceId").is_some());
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for input in inputs {
        let properties = input_properties(input);
        if let Some(message) = invalid_email(store, &properties) {
            if !traced {
                // Without trace ids HubSpot refuses the whole batch.
                return error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", &message);
            }
            errors.push(item_error(
                "VALIDATION_ERROR",
                &message,
                json!({"objectWriteTraceId": [input["objectWriteTraceId"]]}),
            ));
            continue;
        }
        store.next_id += 1;
        let id = store.next_id;
        results.push(record_json(id, &properties, None));
        store.put(object, id, properties);
    }
    batch_answer(StatusCode::CREATED, results, errors)
}

/// The record whose `property` has `value` (case-insensitive, as HubSpot
/// compares emails).
fn find(store: &Store, object: &str, property: Option<&str>, value: &str) -> Option<u64> {
    let records = store.objects.get(object)?;
    match property {
        None | Some("hs_object_id") => value.parse::<u64>().ok().filter(|id| records.contains_key(id)),
        Some(property) => store
            .index
            .get(&(object.to_string(), property.to_string(), value.to_lowercase()))
            .copied(),
    }
}

fn identified(store: &mut Store, object: &str, inputs: &[Value], upsert: bool) -> Response {
    // A bad value anywhere refuses the whole upsert or update batch.
    for input in inputs {
        let properties = input_properties(input);
        if let Some(message) = invalid_email(store, &properties) {
            return error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", &message);
        }
        if upsert && input.get("idProperty").is_none() {
            return error(
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                "idProperty is required for upsert",
            );
        }
    }
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for input in inputs {
        let property = input.get("idProperty").and_then(Value::as_str);
        let value = input.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
        let properties = input_properties(input);
        let trace = input.get("objectWriteTraceId");
        match find(store, object, property, &value) {
            Some(id) => {
                store.put(object, id, properties);
                let mut result = record_json(id, &store.objects[object][&id], trace);
                if upsert {
                    result["new"] = json!(false);
                }
                results.push(result);
            }
            None if upsert => {
                let mut properties = properties;
                if let Some(property) = property {
                    let value = if property == "email" {
                        value.to_lowercase()
                    } else {
                        value.clone()
                    };
                    properties.insert(property.to_string(), Value::String(value));
                }
                store.next_id += 1;
                let id = store.next_id;
                let mut result = record_json(id, &properties, trace);
                result["new"] = json!(true);
                results.push(result);
                store.put(object, id, properties);
            }
            None => errors.push(item_error(
                "OBJECT_NOT_FOUND",
                &format!("Could not get some {object} objects, they may be deleted or not exist."),
                json!({"ids": [value]}),
            )),
        }
    }
    batch_answer(StatusCode::OK, results, errors)
}

fn read(store: &Store, object: &str, body: &Value, inputs: &[Value]) -> Response {
    let property = body.get("idProperty").and_then(Value::as_str);
    let mut results = Vec::new();
    let mut missing = Vec::new();
    for input in inputs {
        let value = input.get("id").and_then(Value::as_str).unwrap_or_default();
        match find(store, object, property, value) {
            Some(id) => results.push(record_json(id, &store.objects[object][&id], None)),
            None => missing.push(Value::String(value.to_string())),
        }
    }
    let errors = if missing.is_empty() {
        Vec::new()
    } else {
        vec![item_error(
            "OBJECT_NOT_FOUND",
            &format!("Could not get some {object} objects, they may be deleted or not exist."),
            json!({"ids": missing}),
        )]
    };
    batch_answer(StatusCode::OK, results, errors)
}

fn batch_answer(success: StatusCode, results: Vec<Value>, errors: Vec<Value>) -> Response {
    let mut body = json!({
        "status": "COMPLETE",
        "results": results,
        "startedAt": "2026-01-01T00:00:00.000Z",
        "completedAt": "2026-01-01T00:00:00.100Z",
    });
    if errors.is_empty() {
        return (success, axum::Json(body)).into_response();
    }
    body["numErrors"] = json!(errors.len());
    body["errors"] = Value::Array(errors);
    (StatusCode::MULTI_STATUS, axum::Json(body)).into_response()
}

async fn memberships(
    State(fake): State<Shared>,
    Path((list, operation)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fault = match fake.admit(&headers) {
        Ok(fault) => fault,
        Err(answer) => return answer,
    };
    let Ok(ids) = serde_json::from_slice::<Vec<String>>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "Expected a JSON array of record ids",
        );
    };
    if ids.len() > 500 {
        return error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "Too many record ids in one request",
        );
    }
    let body = match fake.change_members(&list, &operation, ids) {
        Ok(body) => body,
        Err(answer) => return answer,
    };
    finish(fault, axum::Json(body).into_response()).await
}

impl FakeHubSpot {
    fn change_members(&self, list: &str, operation: &str, ids: Vec<String>) -> Result<Value, Response> {
        let list = list.to_string();
        let mut store = self.store.lock().unwrap();
        let contacts: BTreeSet<u64> = store
            .objects
            .get("contacts")
            .map(|c| c.keys().copied().collect())
            .unwrap_or_default();
        let Some((processing, members)) = store.lists.get_mut(&list) else {
            return Err(error(
                StatusCode::NOT_FOUND,
                "OBJECT_NOT_FOUND",
                &format!("List {list} does not exist"),
            ));
        };
        if processing != "MANUAL" && processing != "SNAPSHOT" {
            return Err(error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            &format!("List {list} has processingType {processing}; memberships can only be changed on MANUAL or SNAPSHOT lists"),
        ));
        }
        let (mut added, mut removed, mut missing) = (Vec::new(), Vec::new(), Vec::new());
        for id in ids {
            let Some(record) = id.parse::<u64>().ok().filter(|r| contacts.contains(r)) else {
                missing.push(id);
                continue;
            };
            match operation {
                "add" if members.insert(record) => added.push(id),
                "remove" if members.remove(&record) => removed.push(id),
                _ => {}
            }
        }
        Ok(json!({"recordsIdsAdded": added, "recordIdsRemoved": removed, "recordIdsMissing": missing}))
    }
}

async fn show_list(State(fake): State<Shared>, Path(list): Path<String>, headers: HeaderMap) -> Response {
    if let Err(answer) = fake.admit(&headers) {
        return answer;
    }
    let store = fake.store.lock().unwrap();
    let Some((processing, members)) = store.lists.get(&list) else {
        return error(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            &format!("List {list} does not exist"),
        );
    };
    let body = json!({"list": {"listId": list, "name": format!("List {list}"), "objectTypeId": "0-1",
        "processingType": processing, "processingStatus": "COMPLETE", "listVersion": 1, "size": members.len()}});
    axum::Json(body).into_response()
}
