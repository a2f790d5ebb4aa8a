//! The Marketing API's custom-audience members on loopback, implementing the
//! documented contract the connector uses (developers.facebook.com/docs/
//! marketing-api/audiences/guides/custom-audiences): `POST` and `DELETE
//! /{version}/{audience_id}/users` with form parameters `payload`
//! (`{schema, data}`, 10,000 rows at most, hashed keys as 64 lowercase hex
//! digits, `MADID`/`EXTERN_ID` raw) and `session`; the answer's
//! `num_received`, `num_invalid_entries` and `invalid_entry_samples`;
//! upload sessions held to their documented shape (the first batch is
//! `batch_seq` 1, numbers unique, nothing after `last_batch_flag`; else
//! code 2650);
//! `GET /{version}/{audience_id}`; Graph API errors as
//! `{"error": {message, type, code, error_subcode, fbtrace_id}}` (190 for
//! a bad token, 100/33 for an unknown audience, 80003 throttling with
//! `X-Business-Use-Case-Usage`).
//!
//! Faults for the tests: the next N requests are throttled or answered 500,
//! or applied and answered too late.

#![allow(clippy::result_large_err)]

use crate::destinations::contract::Chaos;
pub use crate::destinations::contract::Fault;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// One member: its identifiers by schema key.
pub type Member = BTreeMap<String, String>;

#[derive(Default)]
struct Account {
    audiences: BTreeMap<String, BTreeSet<Member>>,
    faults: VecDeque<Fault>,
    chaos: Chaos,
    requests: u64,
    throttled: u64,
    /// Every upload session requests named, in order of their first request.
    sessions: Vec<SessionLog>,
    /// Requests refused for a session out of step (code 2650).
    out_of_step: u64,
}

/// One upload session as the fake saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionLog {
    pub id: u64,
    /// The `batch_seq` of each request it accepted, in arrival order.
    pub batches: Vec<u64>,
    /// A request with `last_batch_flag: true` was accepted: the session ended.
    pub ended: bool,
    /// Rows received in it.
    pub rows: usize,
    /// The largest `estimated_num_total` it was told.
    pub estimated_total: u64,
}

#[derive(Clone)]
pub struct FakeMeta {
    pub url: String,
    pub token: String,
    account: Arc<Mutex<Account>>,
}

const KEYS: &[&str] = &[
    "EMAIL",
    "PHONE",
    "GEN",
    "DOBY",
    "DOBM",
    "DOBD",
    "LN",
    "FN",
    "FI",
    "CT",
    "ST",
    "ZIP",
    "COUNTRY",
    "MADID",
    "EXTERN_ID",
];

fn graph_error(status: StatusCode, code: i64, subcode: Option<i64>, kind: &str, message: &str) -> Response {
    let mut error = json!({ "message": message, "type": kind, "code": code, "fbtrace_id": "AbCdEfEbbFake" });
    if let Some(subcode) = subcode {
        error["error_subcode"] = json!(subcode);
    }
    (status, axum::Json(json!({ "error": error }))).into_response()
}

impl FakeMeta {
    pub async fn start(token: &str) -> FakeMeta {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let fake = FakeMeta {
            url: format!("http://{}", listener.local_addr().expect("address")),
            token: token.to_string(),
            account: Arc::default(),
        };
        let app = Router::new()
            .route("/{version}/{audience}", get(show))
            .route("/{version}/{audience}/users", axum::routing::post(users).delete(users))
            .with_state(fake.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        fake
    }

    pub fn create_audience(&self, id: &str) {
        self.account
            .lock()
            .unwrap()
            .audiences
            .insert(id.to_string(), BTreeSet::new());
    }

    pub fn members(&self, audience: &str) -> BTreeSet<Member> {
        self.account
            .lock()
            .unwrap()
            .audiences
            .get(audience)
            .cloned()
            .unwrap_or_default()
    }

    /// Adds a member directly, as another tool would.
    pub fn add_member(&self, audience: &str, member: Member) {
        let mut account = self.account.lock().unwrap();
        account
            .audiences
            .entry(audience.to_string())
            .or_default()
            .insert(member);
    }

    pub fn fault(&self, fault: Fault, times: usize) {
        self.account
            .lock()
            .unwrap()
            .faults
            .extend(std::iter::repeat_n(fault, times));
    }

    /// From now on answer these shares of requests rate-limited and
    /// unavailable, spread evenly.
    pub fn chaos(&self, throttled: f64, unavailable: f64) {
        self.account.lock().unwrap().chaos = Chaos::new(throttled, unavailable);
    }

    pub fn sessions(&self) -> Vec<SessionLog> {
        self.account.lock().unwrap().sessions.clone()
    }

    /// Requests refused because their session was out of step.
    pub fn out_of_step(&self) -> u64 {
        self.account.lock().unwrap().out_of_step
    }

    /// (requests answered, of them throttled).
    pub fn counts(&self) -> (u64, u64) {
        let account = self.account.lock().unwrap();
        (account.requests, account.throttled)
    }

    fn admit(&self, headers: &HeaderMap, audience: &str) -> Result<Option<Fault>, Response> {
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let mut account = self.account.lock().unwrap();
        account.requests += 1;
        if token != Some(self.token.as_str()) {
            return Err(graph_error(
                StatusCode::BAD_REQUEST,
                190,
                Some(463),
                "OAuthException",
                "Error validating access token: Session has expired.",
            ));
        }
        if !account.audiences.contains_key(audience) {
            return Err(graph_error(
                StatusCode::BAD_REQUEST,
                100,
                Some(33),
                "GraphMethodException",
                &format!("Unsupported post request. Object with ID '{audience}' does not exist, cannot be loaded due to missing permissions, or does not support this operation."),
            ));
        }
        let fault = account.faults.pop_front().or_else(|| account.chaos.draw());
        match fault {
            Some(Fault::RateLimited) => {
                account.throttled += 1;
                let mut answer = graph_error(
                    StatusCode::BAD_REQUEST,
                    80003,
                    Some(2446079),
                    "OAuthException",
                    "There have been too many calls to this ad-account. Wait a bit and try again.",
                );
                let usage = json!({ "1234567890": [{ "type": "custom_audience", "call_count": 100, "total_cputime": 10, "total_time": 10, "estimated_time_to_regain_access": 0 }] });
                answer
                    .headers_mut()
                    .insert("x-business-use-case-usage", usage.to_string().parse().unwrap());
                Err(answer)
            }
            Some(Fault::Unavailable) => Err(graph_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                2,
                None,
                "OAuthException",
                "An unexpected error has occurred. Please retry your request later.",
            )),
            other => Ok(other),
        }
    }
}

async fn show(
    State(fake): State<FakeMeta>,
    Path((_, audience)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(answer) = fake.admit(&headers, &audience) {
        return answer;
    }
    axum::Json(json!({ "id": audience, "name": "Ebb test audience" })).into_response()
}

fn is_hash(value: &str) -> bool {
    value.len() == 64 && value.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

async fn users(
    State(fake): State<FakeMeta>,
    method: Method,
    Path((_, audience)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fault = match fake.admit(&headers, &audience) {
        Ok(fault) => fault,
        Err(answer) => return answer,
    };
    let form: HashMap<String, String> = reqwest::Url::parse(&format!("http://x/?{}", String::from_utf8_lossy(&body)))
        .map(|url| url.query_pairs().into_owned().collect())
        .unwrap_or_default();
    let invalid = |message: &str| graph_error(StatusCode::BAD_REQUEST, 100, None, "OAuthException", message);
    let Some(payload) = form.get("payload").and_then(|p| serde_json::from_str::<Value>(p).ok()) else {
        return invalid("(#100) The parameter payload is required");
    };
    let schema: Vec<String> = match &payload["schema"] {
        Value::String(key) => vec![key.clone()],
        Value::Array(keys) => keys.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        _ => return invalid("(#100) Invalid schema"),
    };
    if let Some(unknown) = schema.iter().find(|k| !KEYS.contains(&k.as_str())) {
        return invalid(&format!("(#100) Invalid key \"{unknown}\" in schema"));
    }
    let Some(data) = payload["data"].as_array() else {
        return invalid("(#100) Invalid data");
    };
    if data.len() > 10_000 {
        return invalid("(#100) Too many users in one request: the limit is 10000");
    }
    let session = form
        .get("session")
        .and_then(|s| serde_json::from_str::<Value>(s).ok())
        .unwrap_or(Value::Null);
    let session_id = session["session_id"].as_u64();
    // A session's batches: the first is `batch_seq` 1, numbers are not
    // reused, and nothing follows the one flagged last.
    if !session.is_null() {
        let (Some(id), Some(seq)) = (session_id, session["batch_seq"].as_u64().filter(|s| *s >= 1)) else {
            return invalid("(#100) session needs an integer session_id and a batch_seq from 1");
        };
        let mut account = fake.account.lock().unwrap();
        let known = account.sessions.iter().find(|s| s.id == id);
        let out_of_step = match known {
            None if seq != 1 => Some("The first batch_seq of the session was not detected"),
            Some(log) if log.ended => Some("The session has already ended"),
            Some(log) if log.batches.contains(&seq) => Some("This batch_seq was already received"),
            _ => None,
        };
        if let Some(message) = out_of_step {
            account.out_of_step += 1;
            return graph_error(
                StatusCode::BAD_REQUEST,
                2650,
                Some(1870147),
                "OAuthException",
                &format!("(#2650) {message}"),
            );
        }
    }
    let mut members = Vec::new();
    let mut invalid_samples = Vec::new();
    for row in data {
        let values: Vec<String> = match row {
            Value::Array(values) => values
                .iter()
                .map(|v| v.as_str().unwrap_or_default().to_string())
                .collect(),
            Value::String(value) => vec![value.clone()],
            _ => Vec::new(),
        };
        if values.len() != schema.len() {
            return invalid("(#100) Each row of data must have as many values as the schema has keys");
        }
        let member: Member = schema
            .iter()
            .zip(values)
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.clone(), v))
            .collect();
        let hashed_ok = member
            .iter()
            .all(|(key, value)| matches!(key.as_str(), "MADID" | "EXTERN_ID") || is_hash(value));
        if member.is_empty() || !hashed_ok {
            invalid_samples.push(json!(row));
            continue;
        }
        members.push(member);
    }
    let received = members.len() + invalid_samples.len();
    {
        let mut account = fake.account.lock().unwrap();
        if let Some(id) = session_id {
            let log = match account.sessions.iter().position(|s| s.id == id) {
                Some(at) => &mut account.sessions[at],
                None => {
                    account.sessions.push(SessionLog {
                        id,
                        batches: Vec::new(),
                        ended: false,
                        rows: 0,
                        estimated_total: 0,
                    });
                    account.sessions.last_mut().expect("just pushed")
                }
            };
            log.batches.push(session["batch_seq"].as_u64().unwrap_or_default());
            log.ended |= session["last_batch_flag"] == true;
            log.rows += received;
            log.estimated_total = log
                .estimated_total
                .max(session["estimated_num_total"].as_u64().unwrap_or(0));
        }
        let audience = account.audiences.entry(audience.clone()).or_default();
        for member in members {
            if method == Method::DELETE {
                audience.remove(&member);
            } else {
                audience.insert(member);
            }
        }
    }
    if let Some(Fault::AppliedThenSlow(delay)) = fault {
        tokio::time::sleep(delay).await;
    }
    axum::Json(json!({
        "audience_id": audience,
        "session_id": session_id.map(|s| s.to_string()),
        "num_received": received,
        "num_invalid_entries": invalid_samples.len(),
        "invalid_entry_samples": invalid_samples.into_iter().take(5).collect::<Vec<_>>(),
    }))
    .into_response()
}
