//! A Databricks workspace's SQL Statement Execution API 2.0 on loopback,
//! implementing the documented contract the source uses, with PostgreSQL as
//! its engine:
//!
//! - `POST /oidc/v1/token`: the client-credentials grant, the service
//!   principal in HTTP Basic auth, `scope=all-apis`.
//! - `POST /api/2.0/sql/statements`: a bearer token (a personal access token
//!   or an issued one), a known `warehouse_id`, `JSON_ARRAY` results
//!   (`ARROW_STREAM`/`CSV` only with `EXTERNAL_LINKS`, as documented). A
//!   statement runs in the background: answers say `RUNNING` until it is
//!   done, then `SUCCEEDED` with its manifest and first chunk; a SQL error is
//!   a `FAILED` state with HTTP 200.
//! - `GET /api/2.0/sql/statements/{id}` and `…/result/chunks/{i}`; chunks are
//!   cut from the statement's cursor as they are asked for (so a large result
//!   is never held whole here either).
//! - External links at `/external/{id}/{i}`: presigned, so a request that
//!   carries an `Authorization` header is refused, as is one without the
//!   link's `http_headers`.
//! - `POST /api/2.0/sql/statements/{id}/cancel`.
//! - Errors as `{error_code, message}`; injected throttling as `429` with
//!   `Retry-After`.

#![allow(clippy::result_large_err)]

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use sqlx::{Column as _, Connection, Executor, PgConnection, Row as _, Statement as _, TypeInfo, ValueRef};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub const TOKEN: &str = "dapi-fake-personal-access-token";
pub const WAREHOUSE: &str = "fake0warehouse01";
pub const CLIENT_ID: &str = "ebb-service-principal";
pub const CLIENT_SECRET: &str = "fake-oauth-secret";
/// The header each external link demands, and its value.
const LINK_HEADER: (&str, &str) = ("x-ms-fake-link-key", "k3y");

#[derive(Clone)]
pub struct FakeDatabricks {
    /// The workspace URL: the source's `host`.
    pub url: String,
    state: Arc<Shared>,
}

struct Shared {
    postgres_url: String,
    rows_per_chunk: u64,
    issued: Mutex<Vec<String>>,
    statements: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Statement>>>>,
    next_statement: AtomicU64,
    cancelled: AtomicU64,
    throttle_next: AtomicU32,
    links_served: AtomicU64,
}

struct Statement {
    /// Until the background work is done: the work.
    running: Option<tokio::task::JoinHandle<Result<Prepared, String>>>,
    prepared: Option<Prepared>,
    failed: Option<String>,
    polls: u32,
    /// Chunks cut but not yet downloaded.
    cut: BTreeMap<usize, Vec<u8>>,
    next_to_cut: usize,
}

struct Prepared {
    connection: PgConnection,
    columns: Vec<Value>,
    kinds: Vec<&'static str>,
    total_rows: u64,
    total_chunks: usize,
}

impl FakeDatabricks {
    /// A workspace serving queries from the PostgreSQL database at
    /// `postgres_url`, `rows_per_chunk` rows to a result chunk.
    pub async fn start(postgres_url: &str, rows_per_chunk: u64) -> FakeDatabricks {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let fake = FakeDatabricks {
            url: format!("http://{}", listener.local_addr().expect("address")),
            state: Arc::new(Shared {
                postgres_url: postgres_url.to_string(),
                rows_per_chunk: rows_per_chunk.max(1),
                issued: Mutex::new(Vec::new()),
                statements: Mutex::new(HashMap::new()),
                next_statement: AtomicU64::new(1),
                cancelled: AtomicU64::new(0),
                throttle_next: AtomicU32::new(0),
                links_served: AtomicU64::new(0),
            }),
        };
        let app = Router::new()
            .route("/oidc/v1/token", post(token))
            .route("/api/2.0/sql/statements", post(submit))
            .route("/api/2.0/sql/statements/{id}", get(status))
            .route("/api/2.0/sql/statements/{id}/result/chunks/{index}", get(chunk))
            .route("/api/2.0/sql/statements/{id}/cancel", post(cancel))
            .route("/external/{id}/{index}", get(external))
            .with_state(fake.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        fake
    }

    /// The next `n` API calls answer `429` with `Retry-After: 1`.
    pub fn throttle_next(&self, n: u32) {
        self.state.throttle_next.store(n, Ordering::SeqCst);
    }

    pub fn cancelled(&self) -> u64 {
        self.state.cancelled.load(Ordering::SeqCst)
    }

    pub fn links_served(&self) -> u64 {
        self.state.links_served.load(Ordering::SeqCst)
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, axum::Json(json!({"error_code": code, "message": message}))).into_response()
}

async fn token(State(fake): State<FakeDatabricks>, headers: HeaderMap, body: Bytes) -> Response {
    use base64::Engine;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "invalid_client", "error_description": "Client authentication failed"})),
        )
            .into_response();
    }
    let form: HashMap<String, String> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    if form.get("grant_type").map(String::as_str) != Some("client_credentials")
        || form.get("scope").map(String::as_str) != Some("all-apis")
    {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_request", "error_description": "grant_type=client_credentials and scope=all-apis"})),
        )
            .into_response();
    }
    let token = format!("eyJoauth-{}", uuid::Uuid::now_v7().simple());
    fake.state.issued.lock().expect("tokens").push(token.clone());
    axum::Json(json!({"access_token": token, "token_type": "Bearer", "expires_in": 3600})).into_response()
}

fn checked(fake: &FakeDatabricks, headers: &HeaderMap) -> Result<(), Response> {
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let known =
        presented.is_some_and(|t| t == TOKEN || fake.state.issued.lock().expect("tokens").iter().any(|i| i == t));
    if !known {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Invalid access token.",
        ));
    }
    if fake
        .state
        .throttle_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        let mut answer = error(
            StatusCode::TOO_MANY_REQUESTS,
            "TOO_MANY_REQUESTS",
            "Too many requests. Please wait.",
        );
        answer
            .headers_mut()
            .insert("retry-after", "1".parse().expect("a header"));
        return Err(answer);
    }
    Ok(())
}

async fn submit(State(fake): State<FakeDatabricks>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(answer) = checked(&fake, &headers) {
        return answer;
    }
    let request: Value = serde_json::from_slice(&body).unwrap_or_default();
    if request["warehouse_id"] != WAREHOUSE {
        return error(
            StatusCode::NOT_FOUND,
            "RESOURCE_DOES_NOT_EXIST",
            &format!("SQL warehouse {} does not exist.", request["warehouse_id"]),
        );
    }
    let disposition = request["disposition"].as_str().unwrap_or("INLINE");
    let format = request["format"].as_str().unwrap_or("JSON_ARRAY");
    if format != "JSON_ARRAY" && disposition == "INLINE" {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_PARAMETER_VALUE",
            "ARROW_STREAM and CSV need disposition EXTERNAL_LINKS",
        );
    }
    if format != "JSON_ARRAY" || disposition != "EXTERNAL_LINKS" {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_PARAMETER_VALUE",
            "this fake serves JSON_ARRAY results as EXTERNAL_LINKS only",
        );
    }
    let Some(sql) = request["statement"].as_str() else {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_PARAMETER_VALUE",
            "statement is required",
        );
    };
    let sql = sql.replace('`', "\"");
    let schema = request["schema"].as_str().map(str::to_string);
    let id = format!(
        "01ef-fake-{:06}",
        fake.state.next_statement.fetch_add(1, Ordering::SeqCst)
    );
    let work = tokio::spawn(prepare(
        fake.state.postgres_url.clone(),
        sql,
        schema,
        fake.state.rows_per_chunk,
    ));
    let statement = Statement {
        running: Some(work),
        prepared: None,
        failed: None,
        polls: 0,
        cut: BTreeMap::new(),
        next_to_cut: 0,
    };
    fake.state
        .statements
        .lock()
        .expect("statements")
        .insert(id.clone(), Arc::new(tokio::sync::Mutex::new(statement)));
    axum::Json(json!({"statement_id": id, "status": {"state": "RUNNING"}})).into_response()
}

/// Runs the statement: its columns, its row count, and a cursor over it.
async fn prepare(
    postgres_url: String,
    sql: String,
    schema: Option<String>,
    rows_per_chunk: u64,
) -> Result<Prepared, String> {
    let message = |e: sqlx::Error| match e {
        sqlx::Error::Database(db) => db.message().to_string(),
        other => other.to_string(),
    };
    let mut connection = PgConnection::connect(&postgres_url).await.map_err(message)?;
    let mut setup = "SET timezone TO 'UTC'; SET datestyle TO 'ISO'".to_string();
    if let Some(schema) = schema {
        setup.push_str(&format!("; SET search_path TO \"{}\"", schema.replace('"', "")));
    }
    connection.execute(setup.as_str()).await.map_err(message)?;
    let statement = connection.prepare(sql.as_str()).await.map_err(message)?;
    let kinds: Vec<&'static str> = statement
        .columns()
        .iter()
        .map(|c| type_name(c.type_info().name()))
        .collect();
    let columns: Vec<Value> = statement
        .columns()
        .iter()
        .enumerate()
        .map(|(i, c)| json!({"name": c.name(), "position": i, "type_name": kinds[i], "type_text": kinds[i].to_lowercase()}))
        .collect();
    drop(statement);
    let total_rows: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM ({sql}) AS counted"))
        .fetch_one(&mut connection)
        .await
        .map_err(message)?;
    connection
        .execute(format!("BEGIN READ ONLY; DECLARE result_rows NO SCROLL CURSOR FOR {sql}").as_str())
        .await
        .map_err(message)?;
    let total_rows = total_rows as u64;
    Ok(Prepared {
        connection,
        columns,
        kinds,
        total_rows,
        total_chunks: total_rows.div_ceil(rows_per_chunk).max(1) as usize,
    })
}

fn find(fake: &FakeDatabricks, id: &str) -> Result<Arc<tokio::sync::Mutex<Statement>>, Response> {
    fake.state
        .statements
        .lock()
        .expect("statements")
        .get(id)
        .cloned()
        .ok_or_else(|| {
            error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                &format!("Statement {id} not found."),
            )
        })
}

async fn status(State(fake): State<FakeDatabricks>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    if let Err(answer) = checked(&fake, &headers).and_then(|_| find(&fake, &id).map(|_| ())) {
        return answer;
    }
    let statement = find(&fake, &id).expect("found above");
    let mut statement = statement.lock().await;
    statement.polls += 1;
    if let Some(work) = &statement.running {
        if !work.is_finished() {
            return axum::Json(json!({"statement_id": id, "status": {"state": "RUNNING"}})).into_response();
        }
        let work = statement.running.take().expect("checked");
        match work.await {
            Ok(Ok(prepared)) => statement.prepared = Some(prepared),
            Ok(Err(message)) => statement.failed = Some(message),
            Err(e) => statement.failed = Some(e.to_string()),
        }
    }
    if let Some(message) = &statement.failed {
        return axum::Json(json!({
            "statement_id": id,
            "status": {"state": "FAILED", "error": {"error_code": "BAD_REQUEST", "message": message}, "sql_state": "42000"},
        }))
        .into_response();
    }
    let prepared = statement.prepared.as_ref().expect("prepared");
    let manifest = json!({
        "format": "JSON_ARRAY",
        "schema": {"column_count": prepared.columns.len(), "columns": prepared.columns},
        "total_chunk_count": prepared.total_chunks,
        "total_row_count": prepared.total_rows,
        "truncated": false,
    });
    let first = links(&fake, &id, 0, prepared.total_chunks);
    axum::Json(json!({"statement_id": id, "status": {"state": "SUCCEEDED"}, "manifest": manifest, "result": first}))
        .into_response()
}

/// A chunk's result data: its one presigned link.
fn links(fake: &FakeDatabricks, id: &str, index: usize, total: usize) -> Value {
    let mut data = json!({
        "chunk_index": index,
        "external_links": [{
            "chunk_index": index,
            "external_link": format!("{}/external/{id}/{index}?sig=fake-presigned", fake.url),
            "expiration": "2099-01-01T00:00:00Z",
            "http_headers": {LINK_HEADER.0: LINK_HEADER.1},
        }],
    });
    if index + 1 < total {
        data["next_chunk_index"] = json!(index + 1);
        data["next_chunk_internal_link"] = json!(format!("/api/2.0/sql/statements/{id}/result/chunks/{}", index + 1));
        data["external_links"][0]["next_chunk_index"] = json!(index + 1);
    }
    data
}

async fn chunk(
    State(fake): State<FakeDatabricks>,
    Path((id, index)): Path<(String, usize)>,
    headers: HeaderMap,
) -> Response {
    if let Err(answer) = checked(&fake, &headers) {
        return answer;
    }
    let statement = match find(&fake, &id) {
        Ok(statement) => statement,
        Err(answer) => return answer,
    };
    let statement = statement.lock().await;
    let Some(prepared) = &statement.prepared else {
        return error(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            "the statement has not succeeded",
        );
    };
    if index >= prepared.total_chunks {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_PARAMETER_VALUE",
            "chunk index out of range",
        );
    }
    axum::Json(links(&fake, &id, index, prepared.total_chunks)).into_response()
}

async fn external(
    State(fake): State<FakeDatabricks>,
    Path((id, index)): Path<(String, usize)>,
    headers: HeaderMap,
) -> Response {
    if headers.contains_key("authorization") {
        return (
            StatusCode::FORBIDDEN,
            "presigned URL: the request must not carry an Authorization header",
        )
            .into_response();
    }
    if headers.get(LINK_HEADER.0).and_then(|v| v.to_str().ok()) != Some(LINK_HEADER.1) {
        return (StatusCode::FORBIDDEN, "the link's http_headers are missing").into_response();
    }
    let statement = match find(&fake, &id) {
        Ok(statement) => statement,
        Err(answer) => return answer,
    };
    let mut statement = statement.lock().await;
    // Cut the chunks up to this one from the cursor, in order.
    while statement.next_to_cut <= index {
        let rows_per_chunk = fake.state.rows_per_chunk;
        let cut_index = statement.next_to_cut;
        let Some(prepared) = statement.prepared.as_mut() else {
            return error(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                "the statement has not succeeded",
            );
        };
        let kinds = prepared.kinds.clone();
        let fetched = match prepared
            .connection
            .fetch_all(format!("FETCH FORWARD {rows_per_chunk} FROM result_rows").as_str())
            .await
        {
            Ok(rows) => rows,
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR", &e.to_string()),
        };
        let rows: Vec<Vec<Value>> = fetched
            .iter()
            .map(|row| {
                (0..kinds.len())
                    .map(|i| {
                        let raw = row.try_get_raw(i).expect("a column");
                        if raw.is_null() {
                            Value::Null
                        } else {
                            Value::String(rendered(raw.as_str().unwrap_or_default(), kinds[i]))
                        }
                    })
                    .collect()
            })
            .collect();
        statement
            .cut
            .insert(cut_index, serde_json::to_vec(&rows).expect("JSON rows"));
        statement.next_to_cut += 1;
    }
    match statement.cut.remove(&index) {
        Some(body) => {
            fake.state.links_served.fetch_add(1, Ordering::SeqCst);
            ([("content-type", "application/json")], body).into_response()
        }
        None => (StatusCode::NOT_FOUND, "this chunk was downloaded already").into_response(),
    }
}

async fn cancel(State(fake): State<FakeDatabricks>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    if let Err(answer) = checked(&fake, &headers) {
        return answer;
    }
    let removed = fake.state.statements.lock().expect("statements").remove(&id);
    if let Some(statement) = removed {
        if let Some(work) = statement.lock().await.running.take() {
            // Dropping the work's connection stops its query in PostgreSQL.
            work.abort();
        }
        fake.state.cancelled.fetch_add(1, Ordering::SeqCst);
    }
    axum::Json(json!({})).into_response()
}

/// The Databricks type a PostgreSQL column reads as.
fn type_name(postgres: &str) -> &'static str {
    match postgres {
        "INT2" => "SHORT",
        "INT4" | "OID" => "INT",
        "INT8" => "LONG",
        "FLOAT4" => "FLOAT",
        "FLOAT8" => "DOUBLE",
        "NUMERIC" => "DECIMAL",
        "BOOL" => "BOOLEAN",
        "BYTEA" => "BINARY",
        "DATE" => "DATE",
        "TIMESTAMP" => "TIMESTAMP_NTZ",
        "TIMESTAMPTZ" => "TIMESTAMP",
        // Databricks has no JSON type; a STRUCT renders as JSON text.
        "JSON" | "JSONB" => "STRUCT",
        _ => "STRING",
    }
}

/// PostgreSQL's text of a value as `JSON_ARRAY` writes a value of its type.
fn rendered(text: &str, kind: &str) -> String {
    match kind {
        "BOOLEAN" => if text == "t" { "true" } else { "false" }.to_string(),
        "BINARY" => text.strip_prefix("\\x").unwrap_or(text).to_string(),
        "TIMESTAMP_NTZ" => text.replacen(' ', "T", 1),
        "TIMESTAMP" => format!("{}Z", text.replacen(' ', "T", 1).trim_end_matches("+00")),
        _ => text.to_string(),
    }
}
