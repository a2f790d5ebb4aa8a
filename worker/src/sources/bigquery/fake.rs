//! A BigQuery REST v2 server on loopback, implementing the documented
//! contract the source uses, with PostgreSQL as its query engine (as
//! `fakesnow` puts DuckDB under Snowflake's protocol):
//!
//! - `POST /token`: the service-account JWT-bearer grant. The assertion's
//!   RS256 signature is checked against the key's public half, and its claims:
//!   `iss` the account, `aud` this token URI, a BigQuery scope, `exp` at most
//!   an hour after `iat` and not past. `400 invalid_grant` otherwise.
//! - `POST /bigquery/v2/projects/{p}/queries` (`jobs.query`): GoogleSQL only
//!   (`useLegacySql: false`, since BigQuery's default is legacy SQL),
//!   `defaultDataset` (a PostgreSQL schema), `dryRun` (the schema, no job),
//!   `maxResults`, `formatOptions.useInt64Timestamp`. A query is not done at
//!   once: the first answer is `jobComplete: false` with its job reference.
//! - `GET /bigquery/v2/projects/{p}/queries/{job}` (`jobs.getQueryResults`):
//!   pages of `maxResults` rows in `{f: [{v}]}` cells, `pageToken` in
//!   sequence (a token out of order is `400 invalid`).
//! - `POST /bigquery/v2/projects/{p}/jobs/{job}/cancel`.
//! - Errors in Google's envelope with their `reason`: `401 authError`,
//!   `400 invalidQuery` (PostgreSQL's message), `403 rateLimitExceeded` for
//!   injected throttling.
//!
//! Cells follow BigQuery's encoding: integers, decimals and floats as
//! strings, booleans `"true"`/`"false"`, bytes base64, `DATETIME`
//! `YYYY-MM-DDTHH:MM:SS[.f]`, `TIMESTAMP` int64 microseconds (or float
//! seconds without `useInt64Timestamp`), `JSON` its text, NULL `null`.

#![allow(clippy::result_large_err)]

use crate::jwt;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use sqlx::{Column as _, Connection, Executor, PgConnection, Row as _, TypeInfo, ValueRef};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub struct FakeBigquery {
    /// The API's base URL: the source's `endpoint`.
    pub url: String,
    state: Arc<Shared>,
}

struct Shared {
    postgres_url: String,
    email: String,
    public_key: rsa::RsaPublicKey,
    token_uri: String,
    tokens: Mutex<Vec<String>>,
    jobs: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Job>>>>,
    next_job: AtomicU64,
    page_requests: AtomicU64,
    cancelled: AtomicU64,
    /// The next N query and page requests answer `403 rateLimitExceeded`.
    throttle_next: AtomicU32,
    /// Answers `jobComplete: false` this many times before the first page.
    polls_before_done: u32,
}

struct Job {
    connection: Option<PgConnection>,
    fields: Vec<Value>,
    kinds: Vec<&'static str>,
    polls_left: u32,
    /// The page token the next page must present (`None` before the first).
    next_token: Option<String>,
    pages_served: u64,
    done: bool,
}

impl FakeBigquery {
    /// Serves queries from the PostgreSQL database at `postgres_url`; the
    /// returned key (a service account's JSON key file) is the one account
    /// it knows.
    pub async fn start(postgres_url: &str) -> (FakeBigquery, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let private_key = test_private_key();
        let email = "ebb-reader@ebb-test.iam.gserviceaccount.com".to_string();
        let token_uri = format!("{url}/token");
        let key_file = service_account_key(&email, &private_key, &token_uri);
        let fake = FakeBigquery {
            url,
            state: Arc::new(Shared {
                postgres_url: postgres_url.to_string(),
                email,
                public_key: private_key.to_public_key(),
                token_uri,
                tokens: Mutex::new(Vec::new()),
                jobs: Mutex::new(HashMap::new()),
                next_job: AtomicU64::new(1),
                page_requests: AtomicU64::new(0),
                cancelled: AtomicU64::new(0),
                throttle_next: AtomicU32::new(0),
                polls_before_done: 1,
            }),
        };
        let app = Router::new()
            .route("/token", post(token))
            .route("/bigquery/v2/projects/{project}/queries", post(jobs_query))
            .route(
                "/bigquery/v2/projects/{project}/queries/{job}",
                axum::routing::get(get_query_results),
            )
            .route("/bigquery/v2/projects/{project}/jobs/{job}/cancel", post(cancel))
            .with_state(fake.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (fake, key_file)
    }

    /// The next `n` query and page requests answer `403 rateLimitExceeded`.
    pub fn throttle_next(&self, n: u32) {
        self.state.throttle_next.store(n, Ordering::SeqCst);
    }

    /// `getQueryResults` calls so far.
    pub fn page_requests(&self) -> u64 {
        self.state.page_requests.load(Ordering::SeqCst)
    }

    /// Jobs cancelled so far.
    pub fn cancelled(&self) -> u64 {
        self.state.cancelled.load(Ordering::SeqCst)
    }

    /// Jobs whose rows are still being served.
    pub fn open_jobs(&self) -> usize {
        self.state.jobs.lock().expect("jobs").len()
    }
}

/// A service account's JSON key file, as Google issues them.
pub fn service_account_key(email: &str, key: &rsa::RsaPrivateKey, token_uri: &str) -> String {
    use rsa::pkcs8::EncodePrivateKey;
    let pem = key
        .to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
        .expect("a PEM key")
        .to_string();
    json!({
        "type": "service_account",
        "project_id": "ebb-test",
        "private_key_id": "0123456789abcdef",
        "private_key": pem,
        "client_email": email,
        "client_id": "100000000000000000000",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
    })
    .to_string()
}

/// A key made for the loopback fakes (once per process); it guards nothing.
pub fn test_private_key() -> rsa::RsaPrivateKey {
    static KEY: std::sync::OnceLock<rsa::RsaPrivateKey> = std::sync::OnceLock::new();
    KEY.get_or_init(|| rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("a test key"))
        .clone()
}

fn google_error(status: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({"error": {
        "code": status.as_u16(),
        "message": message,
        "errors": [{"domain": "global", "reason": reason, "message": message}],
        "status": match status.as_u16() { 400 => "INVALID_ARGUMENT", 401 => "UNAUTHENTICATED", 403 => "PERMISSION_DENIED", 404 => "NOT_FOUND", _ => "UNKNOWN" },
    }});
    (status, axum::Json(body)).into_response()
}

async fn token(State(fake): State<FakeBigquery>, body: Bytes) -> Response {
    let form: HashMap<String, String> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let refuse = |description: &str| {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_grant", "error_description": description})),
        )
            .into_response()
    };
    if form.get("grant_type").map(String::as_str) != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "unsupported_grant_type", "error_description": "Invalid grant_type"})),
        )
            .into_response();
    }
    let Some(assertion) = form.get("assertion") else {
        return refuse("Missing required parameter: assertion");
    };
    if !jwt::verify_rs256(assertion, &fake.state.public_key) {
        return refuse("Invalid JWT Signature.");
    }
    let claims = jwt::claims_of(assertion).unwrap_or_default();
    let now = chrono::Utc::now().timestamp();
    let (iat, exp) = (claims["iat"].as_i64().unwrap_or(0), claims["exp"].as_i64().unwrap_or(0));
    if claims["iss"] != fake.state.email.as_str() {
        return refuse("Invalid issuer");
    }
    if claims["aud"] != fake.state.token_uri.as_str() {
        return refuse("Invalid JWT: aud must be the token URI");
    }
    let scopes = claims["scope"].as_str().unwrap_or_default();
    if !scopes.split(' ').any(|s| {
        s == "https://www.googleapis.com/auth/bigquery" || s == "https://www.googleapis.com/auth/cloud-platform"
    }) {
        return refuse("Invalid scope for BigQuery");
    }
    if exp <= now || exp - iat > 3600 || iat > now + 60 {
        return refuse("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe");
    }
    let token = format!("ya29.fake-{}", uuid::Uuid::now_v7().simple());
    fake.state.tokens.lock().expect("tokens").push(token.clone());
    axum::Json(json!({"access_token": token, "expires_in": 3599, "token_type": "Bearer"})).into_response()
}

fn authorized(fake: &FakeBigquery, headers: &HeaderMap) -> Result<(), Response> {
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let known = fake.state.tokens.lock().expect("tokens");
    match presented {
        Some(token) if known.iter().any(|t| t == token) => Ok(()),
        _ => Err(google_error(
            StatusCode::UNAUTHORIZED,
            "authError",
            "Request is missing required authentication credential. Expected OAuth 2 access token.",
        )),
    }
}

fn throttled(fake: &FakeBigquery) -> Result<(), Response> {
    let throttle = fake
        .state
        .throttle_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    match throttle {
        Ok(_) => Err(google_error(
            StatusCode::FORBIDDEN,
            "rateLimitExceeded",
            "Exceeded rate limits: too many api requests per user per method for this user_method.",
        )),
        Err(_) => Ok(()),
    }
}

/// GoogleSQL's backticked names as PostgreSQL's quoted ones.
fn to_postgres(query: &str) -> String {
    query.replace('`', "\"")
}

async fn jobs_query(State(fake): State<FakeBigquery>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(answer) = authorized(&fake, &headers).and_then(|_| throttled(&fake)) {
        return answer;
    }
    let request: Value = serde_json::from_slice(&body).unwrap_or_default();
    if request["useLegacySql"] != json!(false) {
        return google_error(
            StatusCode::BAD_REQUEST,
            "invalidQuery",
            "This fake runs GoogleSQL only: send useLegacySql: false (BigQuery's default is legacy SQL)",
        );
    }
    let Some(query) = request["query"].as_str() else {
        return google_error(
            StatusCode::BAD_REQUEST,
            "invalid",
            "Required parameter is missing: query",
        );
    };
    let mut connection = match PgConnection::connect(&fake.state.postgres_url).await {
        Ok(connection) => connection,
        Err(e) => return google_error(StatusCode::SERVICE_UNAVAILABLE, "backendError", &e.to_string()),
    };
    let mut setup = "SET timezone TO 'UTC'; SET datestyle TO 'ISO'".to_string();
    if let Some(dataset) = request["defaultDataset"]["datasetId"].as_str() {
        setup.push_str(&format!("; SET search_path TO \"{}\"", dataset.replace('"', "")));
    }
    if let Err(e) = connection.execute(setup.as_str()).await {
        return google_error(StatusCode::BAD_REQUEST, "invalid", &e.to_string());
    }
    let query = to_postgres(query);
    let statement = match connection.prepare(query.as_str()).await {
        Ok(statement) => statement,
        Err(e) => {
            let message = match &e {
                sqlx::Error::Database(db) => db.message().to_string(),
                other => other.to_string(),
            };
            return google_error(StatusCode::BAD_REQUEST, "invalidQuery", &message);
        }
    };
    use sqlx::Statement;
    let kinds: Vec<&'static str> = statement
        .columns()
        .iter()
        .map(|c| bigquery_type(c.type_info().name()))
        .collect();
    let fields: Vec<Value> = statement
        .columns()
        .iter()
        .zip(&kinds)
        .map(|(c, kind)| json!({"name": c.name(), "type": kind, "mode": "NULLABLE"}))
        .collect();
    drop(statement);
    let project = request["jobReference"]["projectId"]
        .as_str()
        .unwrap_or("ebb-test")
        .to_string();
    if request["dryRun"] == json!(true) {
        return axum::Json(json!({
            "kind": "bigquery#queryResponse",
            "schema": {"fields": fields},
            "jobReference": {"projectId": project, "location": "US"},
            "totalBytesProcessed": "0",
            "jobComplete": true,
            "cacheHit": false,
        }))
        .into_response();
    }
    if let Err(e) = connection
        .execute(format!("BEGIN READ ONLY; DECLARE bq_rows NO SCROLL CURSOR FOR {query}").as_str())
        .await
    {
        return google_error(StatusCode::BAD_REQUEST, "invalidQuery", &e.to_string());
    }
    let job_id = format!("job_fake_{}", fake.state.next_job.fetch_add(1, Ordering::SeqCst));
    let job = Job {
        connection: Some(connection),
        fields,
        kinds,
        polls_left: fake.state.polls_before_done,
        next_token: None,
        pages_served: 0,
        done: false,
    };
    fake.state
        .jobs
        .lock()
        .expect("jobs")
        .insert(job_id.clone(), Arc::new(tokio::sync::Mutex::new(job)));
    let location = request["location"].as_str().unwrap_or("US");
    axum::Json(json!({
        "kind": "bigquery#queryResponse",
        "jobReference": {"projectId": project, "jobId": job_id, "location": location},
        "jobComplete": false,
    }))
    .into_response()
}

async fn get_query_results(
    State(fake): State<FakeBigquery>,
    Path((project, job_id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(answer) = authorized(&fake, &headers).and_then(|_| throttled(&fake)) {
        return answer;
    }
    fake.state.page_requests.fetch_add(1, Ordering::SeqCst);
    let Some(job) = fake.state.jobs.lock().expect("jobs").get(&job_id).cloned() else {
        return google_error(
            StatusCode::NOT_FOUND,
            "notFound",
            &format!("Not found: Job {project}:{job_id}"),
        );
    };
    let mut job = job.lock().await;
    let reference = json!({"projectId": project, "jobId": job_id, "location": query.get("location").cloned().unwrap_or("US".into())});
    if job.polls_left > 0 {
        job.polls_left -= 1;
        return axum::Json(
            json!({"kind": "bigquery#getQueryResultsResponse", "jobReference": reference, "jobComplete": false}),
        )
        .into_response();
    }
    if query.get("pageToken") != job.next_token.as_ref() {
        return google_error(
            StatusCode::BAD_REQUEST,
            "invalid",
            &format!("Invalid page token {:?}", query.get("pageToken")),
        );
    }
    let max_results: u64 = query
        .get("maxResults")
        .and_then(|m| m.parse().ok())
        .unwrap_or(10_000)
        .clamp(1, 100_000);
    let int64_timestamps = query.get("formatOptions.useInt64Timestamp").map(String::as_str) == Some("true");
    let mut rows = Vec::new();
    if !job.done {
        let kinds = job.kinds.clone();
        let connection = job.connection.as_mut().expect("an open job has its connection");
        let fetch = format!("FETCH FORWARD {max_results} FROM bq_rows");
        let fetched = match connection.fetch_all(fetch.as_str()).await {
            Ok(fetched) => fetched,
            Err(e) => return google_error(StatusCode::BAD_REQUEST, "invalidQuery", &e.to_string()),
        };
        for row in &fetched {
            let cells: Vec<Value> = (0..kinds.len())
                .map(|i| {
                    let raw = row.try_get_raw(i).expect("a column");
                    if raw.is_null() {
                        return json!({"v": null});
                    }
                    let text = raw.as_str().unwrap_or_default();
                    json!({"v": cell(text, kinds[i], int64_timestamps)})
                })
                .collect();
            rows.push(json!({"f": cells}));
        }
        job.done = (fetched.len() as u64) < max_results;
    }
    job.pages_served += 1;
    let mut answer = json!({
        "kind": "bigquery#getQueryResultsResponse",
        "schema": {"fields": job.fields},
        "jobReference": reference,
        "rows": rows,
        "jobComplete": true,
        "cacheHit": false,
    });
    if job.done {
        job.connection = None;
        drop(job);
        fake.state.jobs.lock().expect("jobs").remove(&job_id);
    } else {
        let token = format!("page-{}", job.pages_served);
        answer["pageToken"] = Value::String(token.clone());
        job.next_token = Some(token);
    }
    axum::Json(answer).into_response()
}

async fn cancel(
    State(fake): State<FakeBigquery>,
    Path((project, job_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(answer) = authorized(&fake, &headers) {
        return answer;
    }
    let removed = fake.state.jobs.lock().expect("jobs").remove(&job_id);
    match removed {
        Some(_) => {
            fake.state.cancelled.fetch_add(1, Ordering::SeqCst);
            axum::Json(json!({"kind": "bigquery#jobCancelResponse", "job": {"jobReference": {"projectId": project, "jobId": job_id}, "status": {"state": "DONE"}}}))
                .into_response()
        }
        None => google_error(
            StatusCode::NOT_FOUND,
            "notFound",
            &format!("Not found: Job {project}:{job_id}"),
        ),
    }
}

/// The BigQuery type a PostgreSQL column reads as.
fn bigquery_type(postgres: &str) -> &'static str {
    match postgres {
        "INT2" | "INT4" | "INT8" | "OID" => "INTEGER",
        "FLOAT4" | "FLOAT8" => "FLOAT",
        "NUMERIC" => "NUMERIC",
        "BOOL" => "BOOLEAN",
        "BYTEA" => "BYTES",
        "DATE" => "DATE",
        "TIME" => "TIME",
        "TIMESTAMP" => "DATETIME",
        "TIMESTAMPTZ" => "TIMESTAMP",
        "JSON" | "JSONB" => "JSON",
        _ => "STRING",
    }
}

/// PostgreSQL's text of a value as BigQuery's JSON cell of its type.
fn cell(text: &str, kind: &str, int64_timestamps: bool) -> Value {
    use base64::Engine;
    match kind {
        "BOOLEAN" => Value::String(if text == "t" { "true" } else { "false" }.into()),
        "BYTES" => {
            let hex = text.strip_prefix("\\x").unwrap_or(text);
            let bytes: Vec<u8> = (0..hex.len() / 2)
                .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
                .collect();
            Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
        "DATETIME" => Value::String(text.replacen(' ', "T", 1)),
        "TIMESTAMP" => {
            let parsed = chrono::DateTime::parse_from_str(&format!("{text}00"), "%Y-%m-%d %H:%M:%S%.f%z")
                .or_else(|_| chrono::DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%#z"))
                .expect("a timestamptz in ISO style");
            let micros = parsed.timestamp_micros();
            if int64_timestamps {
                Value::String(micros.to_string())
            } else {
                Value::String(format!("{:E}", micros as f64 / 1e6))
            }
        }
        _ => Value::String(text.to_string()),
    }
}
