//! A Braze workspace's REST API on loopback, implementing the documented
//! contract the connector uses (braze.com/docs/api): `POST /users/track`
//! (attributes, events and purchases, 75 objects a request across the arrays, exactly
//! one identifier per object, `_update_existing_only` skipping unknown
//! users, non-fatal errors as `errors: [{type, input_array, index}]` beside
//! `message: "success"`, a fatal 400 when no object is valid), `POST
//! /users/delete` (50 identifiers of one kind, answering `deleted`), Bearer
//! REST API keys (401), and the rate-limit headers `X-RateLimit-Limit`,
//! `-Remaining` and `-Reset` with a 429 past the limit.
//!
//! Faults for the contract tests: the next N requests are answered 429 or
//! 503, or are applied and then answered too late.

#![allow(clippy::result_large_err)]

use crate::destinations::contract::Chaos;
pub use crate::destinations::contract::Fault;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One tracked event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub user: String,
    pub name: String,
    pub time: String,
    pub properties: Map<String, Value>,
}

/// One logged purchase.
#[derive(Debug, Clone, PartialEq)]
pub struct Purchase {
    pub user: String,
    pub product_id: String,
    pub currency: String,
    pub price: f64,
    pub quantity: u64,
    pub time: String,
    pub properties: Map<String, Value>,
}

#[derive(Default)]
struct Workspace {
    /// User key (`external_id:…`, `braze_id:…`, `alias:label:name`) →
    /// attributes.
    users: BTreeMap<String, Map<String, Value>>,
    events: Vec<Event>,
    purchases: Vec<Purchase>,
    faults: VecDeque<Fault>,
    chaos: Chaos,
    /// The current three-second window: when it started (monotonic and
    /// wall-clock, for `X-RateLimit-Reset`) and the requests it took.
    window: Option<(Instant, SystemTime, u64)>,
    requests: u64,
    rate_limited: u64,
    refused: BTreeSet<String>,
    /// Requests per three seconds (Braze's default for `/users/track`:
    /// 3,000).
    limit: u64,
}

#[derive(Clone)]
pub struct FakeBraze {
    pub url: String,
    pub api_key: String,
    workspace: Arc<Mutex<Workspace>>,
}

impl FakeBraze {
    pub async fn start(api_key: &str) -> FakeBraze {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let fake = FakeBraze {
            url: format!("http://{}", listener.local_addr().expect("address")),
            api_key: api_key.to_string(),
            workspace: Arc::new(Mutex::new(Workspace {
                limit: 3000,
                ..Workspace::default()
            })),
        };
        let app = Router::new()
            .route("/users/track", post(track))
            .route("/users/delete", post(delete))
            .with_state(fake.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        fake
    }

    pub fn fault(&self, fault: Fault, times: usize) {
        self.workspace
            .lock()
            .unwrap()
            .faults
            .extend(std::iter::repeat_n(fault, times));
    }

    /// Requests per three-second window before 429s.
    pub fn set_limit(&self, limit: u64) {
        self.workspace.lock().unwrap().limit = limit;
    }

    /// From now on answer these shares of requests rate-limited and
    /// unavailable, spread evenly.
    pub fn chaos(&self, rate_limited: f64, unavailable: f64) {
        self.workspace.lock().unwrap().chaos = Chaos::new(rate_limited, unavailable);
    }

    /// Any attribute with this value is "not valid" (a non-fatal error).
    pub fn refuse_value(&self, value: &str) {
        self.workspace.lock().unwrap().refused.insert(value.to_lowercase());
    }

    /// A user as if created in Braze, under an `external_id`.
    pub fn create_user(&self, external_id: &str, attributes: Value) {
        let attributes = attributes.as_object().cloned().unwrap_or_default();
        self.workspace
            .lock()
            .unwrap()
            .users
            .insert(format!("external_id:{external_id}"), attributes);
    }

    /// Users by key (`external_id:…`, `braze_id:…`, `alias:label:name`).
    pub fn users(&self) -> BTreeMap<String, Map<String, Value>> {
        self.workspace.lock().unwrap().users.clone()
    }

    pub fn events(&self) -> Vec<Event> {
        self.workspace.lock().unwrap().events.clone()
    }

    pub fn purchases(&self) -> Vec<Purchase> {
        self.workspace.lock().unwrap().purchases.clone()
    }

    /// (requests answered, of them 429s).
    pub fn counts(&self) -> (u64, u64) {
        let workspace = self.workspace.lock().unwrap();
        (workspace.requests, workspace.rate_limited)
    }

    /// The rate-limit headers; `reset` is when the window ends (Unix seconds,
    /// rounded up).
    fn limit_headers(&self, response: &mut Response, remaining: u64, window_start: SystemTime) {
        let limit = self.workspace.lock().unwrap().limit;
        let end = (window_start + Duration::from_secs(3))
            .duration_since(UNIX_EPOCH)
            .unwrap();
        let reset = end.as_secs() + u64::from(end.subsec_nanos() > 0);
        let headers = response.headers_mut();
        headers.insert("x-ratelimit-limit", limit.to_string().parse().unwrap());
        headers.insert("x-ratelimit-remaining", remaining.to_string().parse().unwrap());
        headers.insert("x-ratelimit-reset", reset.to_string().parse().unwrap());
    }

    fn admit(&self, headers: &HeaderMap) -> Result<(Option<Fault>, u64, SystemTime), Response> {
        let key = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let mut workspace = self.workspace.lock().unwrap();
        workspace.requests += 1;
        if key != Some(self.api_key.as_str()) {
            return Err((
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({ "message": "Invalid API Key" })),
            )
                .into_response());
        }
        let now = Instant::now();
        let (started, wall, used) = match workspace.window {
            Some((started, wall, used)) if now.duration_since(started) < Duration::from_secs(3) => {
                (started, wall, used)
            }
            _ => (now, SystemTime::now(), 0),
        };
        let fault = workspace.faults.pop_front().or_else(|| workspace.chaos.draw());
        let limit = workspace.limit;
        if used >= limit || fault == Some(Fault::RateLimited) {
            workspace.rate_limited += 1;
            drop(workspace);
            let mut answer = (
                StatusCode::TOO_MANY_REQUESTS,
                axum::Json(json!({ "message": "API rate limit exceeded" })),
            )
                .into_response();
            // The headers tell the truth: a 429 the window did not cause
            // (chaos, a fault) still shows what is left of it.
            self.limit_headers(&mut answer, limit.saturating_sub(used), wall);
            return Err(answer);
        }
        if fault == Some(Fault::Unavailable) {
            return Err((StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable").into_response());
        }
        workspace.window = Some((started, wall, used + 1));
        Ok((fault, limit - used - 1, wall))
    }

    async fn answer(
        &self,
        (fault, remaining, window_start): (Option<Fault>, u64, SystemTime),
        status: StatusCode,
        body: Value,
    ) -> Response {
        if let Some(Fault::AppliedThenSlow(delay)) = fault {
            tokio::time::sleep(delay).await;
        }
        let mut answer = (status, axum::Json(body)).into_response();
        self.limit_headers(&mut answer, remaining, window_start);
        answer
    }
}

/// The user key of an object's one identifier, or why it has none.
fn user_key(object: &Map<String, Value>) -> Result<String, String> {
    let mut keys = Vec::new();
    if let Some(id) = object.get("external_id").and_then(Value::as_str) {
        keys.push(format!("external_id:{id}"));
    }
    if let Some(id) = object.get("braze_id").and_then(Value::as_str) {
        keys.push(format!("braze_id:{id}"));
    }
    if let Some(alias) = object.get("user_alias") {
        match (alias["alias_label"].as_str(), alias["alias_name"].as_str()) {
            (Some(label), Some(name)) => keys.push(format!("alias:{label}:{name}")),
            _ => return Err("'user_alias' needs alias_name and alias_label".into()),
        }
    }
    match keys.len() {
        1 => Ok(keys.remove(0)),
        0 => Err("'external_id', 'braze_id', or 'user_alias' is required".into()),
        _ => Err("only one of 'external_id', 'braze_id', or 'user_alias' may be given".into()),
    }
}

const IDENTIFIERS: [&str; 4] = ["external_id", "braze_id", "user_alias", "_update_existing_only"];

async fn track(State(fake): State<FakeBraze>, headers: HeaderMap, body: Bytes) -> Response {
    let admitted = match fake.admit(&headers) {
        Ok(admitted) => admitted,
        Err(answer) => return answer,
    };
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return fake
            .answer(admitted, StatusCode::BAD_REQUEST, json!({ "message": "Invalid JSON" }))
            .await;
    };
    let array = |name: &str| -> Vec<Map<String, Value>> {
        body[name]
            .as_array()
            .into_iter()
            .flatten()
            .map(|o| o.as_object().cloned().unwrap_or_default())
            .collect()
    };
    let (attributes, events, purchases) = (array("attributes"), array("events"), array("purchases"));
    let objects = attributes.len() + events.len() + purchases.len();
    if objects > 75 {
        let message = "Too many objects: at most 75 attributes, events and purchases in total per request";
        return fake
            .answer(admitted, StatusCode::BAD_REQUEST, json!({ "message": message }))
            .await;
    }
    let mut errors = Vec::new();
    let mut processed = (0u64, 0u64, 0u64);
    {
        let mut workspace = fake.workspace.lock().unwrap();
        for (index, object) in attributes.iter().enumerate() {
            let key = match user_key(object) {
                Ok(key) => key,
                Err(reason) => {
                    errors.push(json!({ "type": reason, "input_array": "attributes", "index": index }));
                    continue;
                }
            };
            let invalid = object.iter().find(|(_, v)| {
                v.as_str()
                    .is_some_and(|t| workspace.refused.contains(&t.to_lowercase()))
            });
            if let Some((name, _)) = invalid {
                errors.push(
                    json!({ "type": format!("'{name}' is not valid"), "input_array": "attributes", "index": index }),
                );
                continue;
            }
            let update_only = object
                .get("_update_existing_only")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            if update_only && !workspace.users.contains_key(&key) {
                // Update-only mode skips users Braze does not have, silently.
                processed.0 += 1;
                continue;
            }
            let user = workspace.users.entry(key).or_default();
            for (name, value) in object {
                if IDENTIFIERS.contains(&name.as_str()) {
                    continue;
                }
                if value.is_null() {
                    user.remove(name);
                } else {
                    user.insert(name.clone(), value.clone());
                }
            }
            processed.0 += 1;
        }
        for (index, object) in events.iter().enumerate() {
            let key = match user_key(object) {
                Ok(key) => key,
                Err(reason) => {
                    errors.push(json!({ "type": reason, "input_array": "events", "index": index }));
                    continue;
                }
            };
            let name = object.get("name").and_then(Value::as_str).unwrap_or_default();
            let time = object.get("time").and_then(Value::as_str).unwrap_or_default();
            if name.is_empty() || chrono::DateTime::parse_from_rfc3339(time).is_err() {
                errors.push(json!({ "type": "'name' and an ISO 8601 'time' are required", "input_array": "events", "index": index }));
                continue;
            }
            let event = Event {
                user: key,
                name: name.to_string(),
                time: time.to_string(),
                properties: object
                    .get("properties")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default(),
            };
            workspace.events.push(event);
            processed.1 += 1;
        }
        for (index, object) in purchases.iter().enumerate() {
            match purchase(object) {
                Ok(purchase) => {
                    workspace.purchases.push(purchase);
                    processed.2 += 1;
                }
                Err(reason) => errors.push(json!({ "type": reason, "input_array": "purchases", "index": index })),
            }
        }
    }
    if processed == (0, 0, 0) {
        let message = "Valid data must be provided in the 'attributes', 'events', or 'purchases' fields.";
        return fake
            .answer(
                admitted,
                StatusCode::BAD_REQUEST,
                json!({ "message": message, "errors": errors }),
            )
            .await;
    }
    let mut answer = json!({ "message": "success" });
    if !attributes.is_empty() {
        answer["attributes_processed"] = json!(processed.0);
    }
    if !events.is_empty() {
        answer["events_processed"] = json!(processed.1);
    }
    if !purchases.is_empty() {
        answer["purchases_processed"] = json!(processed.2);
    }
    if !errors.is_empty() {
        answer["errors"] = Value::Array(errors);
    }
    fake.answer(admitted, StatusCode::CREATED, answer).await
}

/// A purchase object as Braze's purchase object reference describes it:
/// `product_id`, an ISO 4217 `currency`, a numeric `price` and an ISO 8601
/// `time` required; `quantity` 1 to 100, default 1.
fn purchase(object: &Map<String, Value>) -> Result<Purchase, String> {
    let user = user_key(object)?;
    let text = |name: &str| object.get(name).and_then(Value::as_str).unwrap_or_default();
    let product_id = text("product_id");
    if product_id.is_empty() {
        return Err("'product_id' is required".into());
    }
    let currency = text("currency");
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err("'currency' must be a valid ISO 4217 currency code".into());
    }
    let price = object
        .get("price")
        .and_then(Value::as_f64)
        .ok_or("'price' is required and must be a number")?;
    let quantity = match object.get("quantity") {
        None => 1,
        Some(q) => q
            .as_u64()
            .filter(|q| (1..=100).contains(q))
            .ok_or("'quantity' must be an integer from 1 to 100")?,
    };
    let time = text("time");
    if chrono::DateTime::parse_from_rfc3339(time).is_err() {
        return Err("'time' must be an ISO 8601 time".into());
    }
    Ok(Purchase {
        user,
        product_id: product_id.to_string(),
        currency: currency.to_string(),
        price,
        quantity,
        time: time.to_string(),
        properties: object
            .get("properties")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
    })
}

async fn delete(State(fake): State<FakeBraze>, headers: HeaderMap, body: Bytes) -> Response {
    let admitted = match fake.admit(&headers) {
        Ok(admitted) => admitted,
        Err(answer) => return answer,
    };
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut keys: Vec<String> = Vec::new();
    let mut kinds = 0;
    for (field, prefix) in [("external_ids", "external_id"), ("braze_ids", "braze_id")] {
        if let Some(ids) = body[field].as_array() {
            kinds += 1;
            keys.extend(ids.iter().filter_map(Value::as_str).map(|id| format!("{prefix}:{id}")));
        }
    }
    if let Some(aliases) = body["user_aliases"].as_array() {
        kinds += 1;
        keys.extend(aliases.iter().filter_map(|a| {
            Some(format!(
                "alias:{}:{}",
                a["alias_label"].as_str()?,
                a["alias_name"].as_str()?
            ))
        }));
    }
    if kinds != 1 || keys.len() > 50 || keys.is_empty() {
        let message = "Provide at most 50 identifiers of one kind: external_ids, braze_ids or user_aliases";
        return fake
            .answer(admitted, StatusCode::BAD_REQUEST, json!({ "message": message }))
            .await;
    }
    let deleted = {
        let mut workspace = fake.workspace.lock().unwrap();
        keys.iter().filter(|key| workspace.users.remove(*key).is_some()).count()
    };
    fake.answer(
        admitted,
        StatusCode::CREATED,
        json!({ "deleted": deleted, "message": "success" }),
    )
    .await
}
