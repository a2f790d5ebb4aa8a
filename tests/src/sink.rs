//! A local HTTP destination that implements Ebb's HTTP contract the way a real
//! API would: batches of every operation (insert, update, upsert, delete,
//! clear, archive, add, remove, track), records identified by the batch's
//! `match` field or by their key, per-record rejections in a `2xx` body, `400`
//! for a batch with a bad record and no detail, `429` with `Retry-After`, `5xx`
//! outages and latency. It keeps the records it holds, so tests can compare it
//! with the model.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Default)]
pub struct Behavior {
    /// Keys this destination rejects, with this reason.
    pub reject_keys: HashSet<String>,
    /// Answer every request with this status (an outage).
    pub fail_with: Option<u16>,
    /// Time to take per request.
    pub latency: Duration,
    /// The first this-many requests that apply records take `slow_latency`
    /// more (after applying them): a client with a shorter timeout gives up
    /// on a batch that did arrive.
    pub slow_times: u32,
    pub slow_latency: Duration,
    /// Answer `429` with `Retry-After: n` to the first requests, this many times.
    pub throttle_times: u32,
    pub throttle_retry_after_secs: u32,
    /// A batch holding any of these keys is refused whole with a `400` that
    /// names no record, as some APIs do.
    pub refuse_batches_with: HashSet<String>,
    /// Shares of requests answered `429` (no `Retry-After`) and `503`, at
    /// random, nothing applied.
    pub chaos: (f64, f64),
    /// Answer the next this-many requests `503`, nothing applied.
    pub fail_times: u32,
    /// Refuse requests without `Authorization: Bearer <this>` with `401`.
    pub require_token: Option<String>,
    /// A server that can only do so much at once: this many requests are
    /// served at a time (each for `latency`), this many more wait their turn,
    /// and any beyond those are answered `503` at once, nothing applied.
    pub capacity: Option<Capacity>,
}

#[derive(Debug, Clone, Copy)]
pub struct Capacity {
    pub serving: usize,
    pub queue: usize,
}

#[derive(Debug, Clone)]
pub struct Request {
    pub at: Instant,
    pub operation: String,
    pub records: usize,
    pub status: u16,
    /// The W3C trace context the request carried.
    pub traceparent: Option<String>,
}

#[derive(Default)]
pub struct SinkState {
    pub records: Mutex<BTreeMap<String, Value>>,
    pub requests: Mutex<Vec<Request>>,
    /// How many times each key was upserted successfully.
    pub upserts: Mutex<HashMap<String, u32>>,
    /// How many times each (operation, record) was applied.
    pub applied: Mutex<HashMap<(String, String), u32>>,
    /// Records archived, by identity.
    pub archived: Mutex<BTreeSet<String>>,
    pub behavior: Mutex<Behavior>,
    /// Requests being answered now, and the most there ever were.
    pub in_flight: Mutex<(usize, usize)>,
    /// Turns at being served, when the behaviour sets a capacity.
    serving: Mutex<Option<Arc<tokio::sync::Semaphore>>>,
}

pub struct Sink {
    pub address: SocketAddr,
    pub state: Arc<SinkState>,
    _server: tokio::task::JoinHandle<()>,
}

impl Sink {
    pub async fn start() -> Sink {
        let state = Arc::new(SinkState::default());
        let app = Router::new()
            .route("/", post(receive).head(head))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind sink");
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("sink serves");
        });
        Sink {
            address,
            state,
            _server: server,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.address)
    }

    pub fn set_behavior(&self, behavior: Behavior) {
        *self.state.serving.lock().unwrap() = behavior
            .capacity
            .map(|capacity| Arc::new(tokio::sync::Semaphore::new(capacity.serving)));
        *self.state.behavior.lock().unwrap() = behavior;
    }

    /// The most requests that were ever being answered at once.
    pub fn peak_in_flight(&self) -> usize {
        self.state.in_flight.lock().unwrap().1
    }

    pub fn records(&self) -> BTreeMap<String, Value> {
        self.state.records.lock().unwrap().clone()
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Upserts beyond the first per key: the duplicates a crash or retry caused.
    pub fn duplicate_upserts(&self) -> u32 {
        self.state
            .upserts
            .lock()
            .unwrap()
            .values()
            .map(|n| n.saturating_sub(1))
            .sum()
    }

    /// Records as the destination holds them, seeded before a sync (for update
    /// mode, which needs records to exist).
    pub fn seed(&self, id: &str, fields: Value) {
        self.state.records.lock().unwrap().insert(id.to_string(), fields);
    }

    pub fn archived(&self) -> BTreeSet<String> {
        self.state.archived.lock().unwrap().clone()
    }

    /// How many times `operation` was applied to the record `id`.
    pub fn applied(&self, operation: &str, id: &str) -> u32 {
        self.state
            .applied
            .lock()
            .unwrap()
            .get(&(operation.to_string(), id.to_string()))
            .copied()
            .unwrap_or(0)
    }

    pub fn reset_counters(&self) {
        self.state.requests.lock().unwrap().clear();
        self.state.upserts.lock().unwrap().clear();
    }
}

fn authorized(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        == Some(token)
}

/// `HEAD /`: 200, or 401 to a request without the required token.
async fn head(State(state): State<Arc<SinkState>>, headers: HeaderMap) -> StatusCode {
    let required = state.behavior.lock().unwrap().require_token.clone();
    match required {
        Some(token) if !authorized(&headers, &token) => StatusCode::UNAUTHORIZED,
        _ => StatusCode::OK,
    }
}

async fn receive(State(state): State<Arc<SinkState>>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let capacity = state.behavior.lock().unwrap().capacity;
    let entered = {
        let mut in_flight = state.in_flight.lock().unwrap();
        let full = capacity.is_some_and(|c| in_flight.0 >= c.serving + c.queue);
        if !full {
            in_flight.0 += 1;
            in_flight.1 = in_flight.1.max(in_flight.0);
        }
        !full
    };
    if !entered {
        state.requests.lock().unwrap().push(Request {
            at: Instant::now(),
            operation: body["operation"].as_str().unwrap_or_default().to_string(),
            records: body["records"].as_array().map_or(0, Vec::len),
            status: 503,
            traceparent: None,
        });
        return (StatusCode::SERVICE_UNAVAILABLE, "overloaded: too many requests at once").into_response();
    }
    let serving = state.serving.lock().unwrap().clone();
    let turn = match &serving {
        Some(semaphore) => Some(semaphore.acquire().await.expect("the sink never closes its semaphore")),
        None => None,
    };
    let response = answer(&state, headers, body).await;
    drop(turn);
    state.in_flight.lock().unwrap().0 -= 1;
    response
}

async fn answer(state: &SinkState, headers: HeaderMap, body: Value) -> Response {
    let traceparent = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let behavior = state.behavior.lock().unwrap().clone();
    let operation = body["operation"].as_str().unwrap_or_default().to_string();
    let records = body["records"].as_array().cloned().unwrap_or_default();
    let log = |status: u16| {
        state.requests.lock().unwrap().push(Request {
            at: Instant::now(),
            operation: operation.clone(),
            records: records.len(),
            status,
            traceparent: traceparent.clone(),
        })
    };
    if let Some(token) = &behavior.require_token {
        if !authorized(&headers, token) {
            log(401);
            return (StatusCode::UNAUTHORIZED, "unknown token").into_response();
        }
    }
    if let Some(status) = behavior.fail_with {
        log(status);
        return (StatusCode::from_u16(status).unwrap(), "destination is down").into_response();
    }
    let failing = {
        let mut current = state.behavior.lock().unwrap();
        let failing = current.fail_times > 0;
        if failing {
            current.fail_times -= 1;
        }
        failing
    };
    if failing {
        log(503);
        return (StatusCode::SERVICE_UNAVAILABLE, "try again").into_response();
    }
    let draw: f64 = rand::random();
    if draw < behavior.chaos.0 {
        log(429);
        return (StatusCode::TOO_MANY_REQUESTS, "slow down").into_response();
    }
    if draw < behavior.chaos.0 + behavior.chaos.1 {
        log(503);
        return (StatusCode::SERVICE_UNAVAILABLE, "try again").into_response();
    }
    // Taken under the lock: concurrent requests must not both spend the last one.
    let throttled = {
        let mut current = state.behavior.lock().unwrap();
        let throttled = current.throttle_times > 0;
        if throttled {
            current.throttle_times -= 1;
        }
        throttled
    };
    if throttled {
        log(429);
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", behavior.throttle_retry_after_secs.to_string())],
            "slow down",
        )
            .into_response();
    }
    const OPERATIONS: [&str; 9] = [
        "insert", "update", "upsert", "delete", "clear", "archive", "add", "remove", "track",
    ];
    if !OPERATIONS.contains(&operation.as_str()) {
        log(400);
        return (StatusCode::BAD_REQUEST, format!("unknown operation {operation:?}")).into_response();
    }
    let key_of = |record: &Value| record["key"].as_str().unwrap_or_default().to_string();
    // Refused by key, or by any text field's value.
    let refused = |record: &Value| {
        behavior.refuse_batches_with.contains(&key_of(record))
            || record["fields"].as_object().is_some_and(|fields| {
                fields
                    .values()
                    .filter_map(Value::as_str)
                    .any(|v| behavior.refuse_batches_with.contains(v))
            })
    };
    if records.iter().any(refused) {
        log(400);
        return (StatusCode::BAD_REQUEST, "the batch holds an invalid record").into_response();
    }
    // Records are identified by the batch's record-matching field, or their key.
    let matching = body["match"].as_str().map(str::to_string);
    let identity = |record: &Value| match &matching {
        Some(field) => match &record["fields"][field] {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        },
        None => key_of(record),
    };
    let mut errors = Vec::new();
    {
        let mut held = state.records.lock().unwrap();
        let mut upserts = state.upserts.lock().unwrap();
        let mut applied = state.applied.lock().unwrap();
        let mut archived = state.archived.lock().unwrap();
        for (index, record) in records.iter().enumerate() {
            let key = key_of(record);
            if behavior.reject_keys.contains(&key) {
                errors.push(json!({"index": index, "message": format!("record {key} is invalid here")}));
                continue;
            }
            let id = identity(record);
            let fields = record["fields"].clone();
            match operation.as_str() {
                "insert" | "track" => {
                    held.entry(id.clone()).or_insert(fields);
                }
                "update" => match held.get_mut(&id) {
                    Some(existing) => *existing = fields,
                    None => {
                        errors.push(json!({"index": index, "message": format!("no record {id} to update")}));
                        continue;
                    }
                },
                "upsert" | "add" => {
                    held.insert(id.clone(), fields);
                    *upserts.entry(key).or_default() += 1;
                }
                "clear" => {
                    if let (Some(existing), Some(nulls)) = (held.get_mut(&id), fields.as_object()) {
                        for (name, value) in nulls {
                            existing[name] = value.clone();
                        }
                    }
                }
                "archive" => {
                    archived.insert(id.clone());
                }
                _ => {
                    held.remove(&id);
                }
            }
            *applied.entry((operation.clone(), id)).or_default() += 1;
        }
    }
    log(200);
    // The latency comes after the records are applied: a client that dies while
    // waiting has delivered them without knowing it, the case that makes
    // duplicates after a crash.
    let slow = {
        let mut current = state.behavior.lock().unwrap();
        let slow = current.slow_times > 0;
        if slow {
            current.slow_times -= 1;
        }
        slow
    };
    let latency = behavior.latency + if slow { behavior.slow_latency } else { Duration::ZERO };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    Json(json!({"errors": errors})).into_response()
}
