//! The coordinator's HTTP API: the public REST API under `/api/v1` (Hightouch's
//! shapes), the lease API workers use under `/internal/v1`, `/healthz` and
//! `/metrics`. Who may call which part: `auth.rs`. Every error answer is a
//! JSON `{"error": …}`, the framework's own refusals too.

pub mod auth;
pub mod views;

use crate::leases::LocalLeases;
use crate::run::rows::{RowFilter, RowsError, RowsFormat};
use crate::run::{Coordinator, TriggerError, TriggerOptions};
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ebb_shared::protocol::RowOutcome;
use ebb_worker::limits::{LeaseProvider, LeaseRelease, LeaseRequest, RateLimitedReport};
use serde::Deserialize;
use std::sync::Arc;
use views::{ErrorBody, List, RunRowView, RunView, SyncView, TriggerAnswer, TriggerBody};

#[derive(Clone)]
pub struct ApiState {
    pub coordinator: Arc<Coordinator>,
    pub leases: LocalLeases,
    pub tokens: auth::Tokens,
    /// Whether workers of other processes call this API (`/internal`): a
    /// fleet's coordinator; a standalone's workers are in its process.
    pub serves_workers: bool,
    /// Whether the API listens on loopback only: then it answers only
    /// requests that name a loopback host and come from no web page of
    /// another origin (`auth::local_callers_only`).
    pub on_loopback: bool,
    /// Whether `/metrics` is served here; off when a listener of its own
    /// serves it (`probe_router`), so API clients cannot read it.
    pub metrics_here: bool,
}

pub fn router(state: ApiState) -> Router {
    let api = Router::new()
        .route("/api/v1/syncs", get(list_syncs))
        .route("/api/v1/syncs/{id}/trigger", post(trigger))
        .route("/api/v1/syncs/{id}/runs", get(list_runs))
        .route("/api/v1/runs/{id}", get(show_run))
        .route("/api/v1/runs/{id}/rows", get(run_rows))
        .route("/api/v1/runs/{id}/requests", get(run_requests))
        .route("/api/v1/runs/{id}/cancel", post(cancel_run))
        .route("/api/v1/sources", get(list_sources))
        .route("/api/v1/sources/{id}/test", post(test_source))
        .route("/api/v1/models", get(list_models))
        .route("/api/v1/models/{id}/preview", get(preview_model))
        .route("/api/v1/destinations", get(list_destinations))
        .route("/api/v1/destinations/{id}/test", post(test_destination))
        .route("/api/v1/destinations/{id}/fields", get(destination_fields))
        .layer(axum::middleware::from_fn_with_state(
            state.tokens.clone(),
            auth::require_api_token,
        ));
    let internal = Router::new()
        .route("/internal/v1/leases", post(lease))
        .route("/internal/v1/leases/release", post(release))
        .route("/internal/v1/leases/rate-limited", post(rate_limited))
        .route("/internal/v1/runs/active", post(run_active))
        .layer(axum::middleware::from_fn_with_state(
            state.tokens.clone(),
            auth::require_internal_token,
        ));
    let mut router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .merge(api);
    if state.metrics_here {
        router = router.route("/metrics", get(metrics));
    }
    if state.serves_workers {
        router = router.merge(internal);
    }
    router
        .fallback(|request: Request| async move {
            ApiError(
                StatusCode::NOT_FOUND,
                format!("no such endpoint: {} {}", request.method(), request.uri().path()),
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            state.on_loopback,
            auth::local_callers_only,
        ))
        .layer(axum::middleware::from_fn(json_errors))
        .with_state(state)
}

/// Refuses a NUL byte anywhere in the path or query (no id holds one, and
/// the state DB would refuse it with its own text), and turns every error
/// answer that is not JSON — the framework's rejections of a malformed body,
/// a wrong method — into `{"error": …}`, keeping its status and headers.
async fn json_errors(request: Request, next: Next) -> Response {
    let uri = request.uri();
    if uri.path().contains("%00") || uri.query().is_some_and(|query| query.contains("%00")) {
        return ApiError(
            StatusCode::BAD_REQUEST,
            "the path or query holds a NUL byte (%00): no id or parameter contains one".into(),
        )
        .into_response();
    }
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 << 10).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    let error = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    parts.headers.remove(axum::http::header::CONTENT_TYPE);
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    let mut answer = ApiError(status, error).into_response();
    for (name, value) in parts.headers.iter() {
        answer.headers_mut().entry(name).or_insert_with(|| value.clone());
    }
    answer
}

/// A listener of its own for probes and scrapers (`--metrics-listen`):
/// `/healthz`, `/readyz` and `/metrics`, nothing else.
pub fn probe_router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// A worker's own listener: `/healthz` (the process runs), `/readyz` (its
/// queue answers) and `/metrics`.
pub fn worker_router(worker: Arc<ebb_worker::Worker>) -> Router {
    let ready = worker.clone();
    let metrics = worker;
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let worker = ready.clone();
                async move {
                    let readiness = worker.readiness().await;
                    let ready = readiness.queue.is_ok() && readiness.leases.is_ok();
                    let body = serde_json::json!({
                        "ready": ready,
                        "queue": readiness_part(&readiness.queue),
                        "leases": readiness_part(&readiness.leases),
                    });
                    let status = if ready {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    (status, Json(body))
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let worker = metrics.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        worker.metrics().render(),
                    )
                }
            }),
        )
}

/// One part of a readiness answer: "ok", or the error that part answered.
fn readiness_part(result: &Result<(), String>) -> serde_json::Value {
    match result {
        Ok(()) => serde_json::json!("ok"),
        Err(error) => serde_json::json!({ "error": error }),
    }
}

struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody { error: self.1 })).into_response()
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(error: crate::store::StoreError) -> Self {
        tracing::error!(%error, "state store error");
        ApiError(StatusCode::SERVICE_UNAVAILABLE, error.to_string())
    }
}

/// 200 when the state database and the queue answer, else 503 naming what does not.
async fn readyz(State(state): State<ApiState>) -> Response {
    let readiness = state.coordinator.readiness().await;
    let body = serde_json::json!({
        "ready": readiness.is_ready(),
        "database": readiness_part(&readiness.database),
        "queue": readiness_part(&readiness.queue),
        // Either replica serves the API; only the leader runs the fleet.
        "role": if state.coordinator.metrics.leader.get() == 1 { "leader" } else { "standby" },
    });
    let status = if readiness.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.coordinator.metrics.render(),
    )
}

async fn list_syncs(State(state): State<ApiState>) -> Json<List<SyncView>> {
    let config = state.coordinator.config();
    let data = config
        .syncs
        .iter()
        .map(|(name, sync)| SyncView::new(name, sync))
        .collect();
    Json(List { data })
}

async fn list_destinations(State(state): State<ApiState>) -> Json<serde_json::Value> {
    let config = state.coordinator.config();
    let data: Vec<serde_json::Value> = config
        .destinations
        .iter()
        .map(|(name, destination)| serde_json::json!({"id": name, "type": destination.kind}))
        .collect();
    Json(serde_json::json!({ "data": data, "hasMore": false }))
}

async fn list_sources(State(state): State<ApiState>) -> Json<serde_json::Value> {
    let config = state.coordinator.config();
    let data: Vec<serde_json::Value> = config
        .sources
        .iter()
        .map(|(name, source)| serde_json::json!({"id": name, "type": source.kind()}))
        .collect();
    Json(serde_json::json!({ "data": data, "hasMore": false }))
}

/// Reaches the source from the coordinator, with its environment:
/// `{"ok": true}`, or `{"ok": false, "error": …}` with the source's message.
async fn test_source(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let source = {
        let config = state.coordinator.config();
        config.sources.get(&id).cloned().ok_or_else(|| {
            ApiError(
                StatusCode::NOT_FOUND,
                format!(
                    "no source named {id:?} (defined: {})",
                    config.sources.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
        })?
    };
    let answer = match ebb_worker::sources::test(&id, &source).await {
        Ok(()) => serde_json::json!({"ok": true}),
        Err(error) => serde_json::json!({"ok": false, "error": error.to_string()}),
    };
    Ok(Json(answer))
}

async fn list_models(State(state): State<ApiState>) -> Json<serde_json::Value> {
    let config = state.coordinator.config();
    let data: Vec<serde_json::Value> = config
        .models
        .iter()
        .map(|(name, model)| {
            serde_json::json!({
                "id": name,
                "source": model.source,
                "primaryKey": model.primary_key,
                "queryType": match model.definition_key() { "table" => "table", "file" => "file", _ => "raw_sql" },
            })
        })
        .collect();
    Json(serde_json::json!({ "data": data, "hasMore": false }))
}

#[derive(Deserialize)]
struct PreviewQuery {
    limit: Option<u64>,
}

/// The model's first rows read from its source by the coordinator:
/// `{"columns": [{name, type}], "rows": [{column: value}]}`; 502 with the
/// source's message when it cannot be read.
async fn preview_model(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(query): Query<PreviewQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let max = crate::cli::MAX_PREVIEW_ROWS;
    let limit = query.limit.unwrap_or(100);
    if !(1..=max).contains(&limit) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("limit must be between 1 and {max} (got {limit})"),
        ));
    }
    let (model, source) = {
        let config = state.coordinator.config();
        let model = config.models.get(&id).cloned().ok_or_else(|| {
            ApiError(
                StatusCode::NOT_FOUND,
                format!(
                    "no model named {id:?} (defined: {})",
                    config.models.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
        })?;
        let source = config.sources[&model.source].clone();
        (model, source)
    };
    match ebb_worker::sources::preview(&model.source, &source, &id, &model, limit as usize).await {
        Ok(preview) => Ok(Json(preview.to_json())),
        Err(error) => Err(ApiError(StatusCode::BAD_GATEWAY, error.to_string())),
    }
}

fn configured_destination(state: &ApiState, id: &str) -> Result<ebb_shared::config::DestinationConfig, ApiError> {
    let config = state.coordinator.config();
    config.destinations.get(id).cloned().ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!(
                "no destination named {id:?} (defined: {})",
                config.destinations.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        )
    })
}

/// Reaches the destination from the coordinator, with its environment:
/// `{"ok": true}`, or `{"ok": false, "error": …}` naming what failed.
async fn test_destination(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let destination = configured_destination(&state, &id)?;
    let answer = match ebb_worker::destinations::REGISTRY
        .test_connection(&id, &destination)
        .await
    {
        Ok(()) => serde_json::json!({"ok": true}),
        Err(error) => serde_json::json!({"ok": false, "error": error}),
    };
    Ok(Json(answer))
}

#[derive(Deserialize)]
struct FieldsQuery {
    object: Option<String>,
}

/// `{"data": [{name, type, unique, writable}]}`, or `{"data": null}` for a
/// destination that takes any field; 502 when the destination cannot say.
async fn destination_fields(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(query): Query<FieldsQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let destination = configured_destination(&state, &id)?;
    match ebb_worker::destinations::REGISTRY
        .fields(&id, &destination, query.object.as_deref())
        .await
    {
        Ok(fields) => Ok(Json(serde_json::json!({ "data": fields }))),
        Err(error) => Err(ApiError(StatusCode::BAD_GATEWAY, error)),
    }
}

async fn trigger(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Option<Json<TriggerBody>>,
) -> Result<Json<TriggerAnswer>, ApiError> {
    let body = body.map(|Json(b)| b).unwrap_or_default();
    let options = TriggerOptions {
        full_resync: body.full_resync,
        reset_cdc: body.reset_cdc,
        schedule_tick: None,
        trigger: "api".into(),
    };
    match state.coordinator.trigger(&id, options).await {
        Ok(run) => Ok(Json(TriggerAnswer { id: run.id })),
        Err(error @ TriggerError::UnknownSync(_)) => Err(ApiError(StatusCode::NOT_FOUND, error.to_string())),
        Err(
            error @ (TriggerError::AlreadyRunning { .. }
            | TriggerError::PrimaryKeyChanged { .. }
            | TriggerError::TickTaken),
        ) => Err(ApiError(StatusCode::CONFLICT, error.to_string())),
        Err(error @ TriggerError::Conflicting) => Err(ApiError(StatusCode::BAD_REQUEST, error.to_string())),
        Err(TriggerError::Store(error)) => Err(error.into()),
    }
}

#[derive(Deserialize)]
struct Page {
    limit: Option<i64>,
    offset: Option<i64>,
}

async fn list_runs(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(page): Query<Page>,
) -> Result<Json<List<RunView>>, ApiError> {
    if !state.coordinator.config().syncs.contains_key(&id) {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no sync named {id:?}")));
    }
    let runs = state
        .coordinator
        .store()
        .runs(
            &id,
            page.limit.unwrap_or(20).clamp(1, 500),
            page.offset.unwrap_or(0).max(0),
        )
        .await?;
    let data = runs
        .iter()
        .map(|run| RunView::new(run, state.coordinator.rows_done(&run.id)))
        .collect();
    Ok(Json(List { data }))
}

async fn show_run(State(state): State<ApiState>, Path(id): Path<String>) -> Result<Json<RunView>, ApiError> {
    let run = state
        .coordinator
        .store()
        .run(&id)
        .await?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no run {id:?}")))?;
    Ok(Json(RunView::new(&run, state.coordinator.rows_done(&id))))
}

#[derive(Deserialize)]
struct RequestsQuery {
    key: Option<String>,
    #[serde(default)]
    failed: bool,
    limit: Option<usize>,
}

/// The live debugger: the requests a run sent and the answers it got, per
/// batch attempt, with the rows each carried; `key` finds the batches of one
/// row, `failed=true` those that failed or failed a row.
async fn run_requests(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(query): Query<RequestsQuery>,
) -> Result<Json<views::RequestsPage>, ApiError> {
    use crate::run::requests::{RequestFilter, RequestsError};
    let filter = RequestFilter {
        key: query.key,
        failed: query.failed,
        limit: query.limit.unwrap_or(50).clamp(1, 1000),
    };
    match state.coordinator.requests(&id, &filter).await {
        Ok((data, has_more)) => Ok(Json(views::RequestsPage { data, has_more })),
        Err(RequestsError::NoRun(_)) => Err(ApiError(StatusCode::NOT_FOUND, format!("no run {id:?}"))),
        Err(error) => {
            tracing::error!(%error, "reading request logs");
            Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, error.to_string()))
        }
    }
}

#[derive(Deserialize)]
struct RowsQuery {
    /// succeeded, failed or invalid.
    outcome: Option<String>,
    /// The older spelling: rejected (= failed) or invalid.
    kind: Option<String>,
    key: Option<String>,
    limit: Option<u64>,
    /// json (default; at most `limit`, 100 unless said), jsonl or csv (every row).
    format: Option<String>,
}

/// Every planned and invalid row of a run with its outcome, searchable by key
/// and outcome; `format=jsonl|csv` streams them all as an export.
async fn run_rows(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(query): Query<RowsQuery>,
) -> Result<Response, ApiError> {
    let bad_request = |message: String| ApiError(StatusCode::BAD_REQUEST, message);
    let outcome = match (query.outcome.as_deref(), query.kind.as_deref()) {
        (Some(text), _) => Some(
            RowOutcome::parse(text)
                .ok_or_else(|| bad_request(format!("outcome {text:?}: use succeeded, failed or invalid")))?,
        ),
        (None, Some("rejected")) => Some(RowOutcome::Failed),
        (None, Some("invalid")) => Some(RowOutcome::Invalid),
        (None, Some(other)) => return Err(bad_request(format!("kind {other:?}: use rejected or invalid"))),
        (None, None) => None,
    };
    let format = RowsFormat::parse(query.format.as_deref().unwrap_or("json")).map_err(bad_request)?;
    if state.coordinator.store().run(&id).await?.is_none() {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no run {id:?}")));
    }
    let limit = match format {
        RowsFormat::Json => Some(query.limit.unwrap_or(100).clamp(1, 10_000)),
        RowsFormat::Jsonl | RowsFormat::Csv => query.limit,
    };
    let filter = RowFilter {
        outcome,
        key: query.key,
        limit,
    };
    let mut rows = state.coordinator.rows(&id, filter).await.map_err(rows_error)?;
    if format == RowsFormat::Json {
        let mut data = Vec::new();
        while let Some(row) = rows.recv().await {
            data.push(RunRowView::from(row.map_err(rows_error)?));
        }
        return Ok(Json(List { data }).into_response());
    }
    // Streamed: the coordinator holds one shard's rows at a time, whatever the run's size.
    let header = futures::stream::once(async move { Ok::<_, std::io::Error>(format.header().to_string()) });
    let lines = futures::stream::unfold(rows, move |mut rows| async move {
        let line = match rows.recv().await? {
            Ok(row) => Ok(format.line(&row)),
            Err(error) => Err(std::io::Error::other(error.to_string())),
        };
        Some((line, rows))
    });
    let body = axum::body::Body::from_stream(futures::StreamExt::chain(header, lines));
    Ok(([(axum::http::header::CONTENT_TYPE, format.content_type())], body).into_response())
}

fn rows_error(error: RowsError) -> ApiError {
    tracing::error!(%error, "reading row results");
    ApiError(StatusCode::SERVICE_UNAVAILABLE, error.to_string())
}

async fn cancel_run(State(state): State<ApiState>, Path(id): Path<String>) -> Result<Json<RunView>, ApiError> {
    let run = state
        .coordinator
        .cancel(&id)
        .await?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no run {id:?}")))?;
    Ok(Json(RunView::new(&run, 0)))
}

/// A standby's answer to a lease call: 503, naming the leader for the worker
/// to ask instead.
fn not_leader(not_leader: crate::leases::NotLeader) -> Response {
    let body = serde_json::json!({
        "error": "this coordinator is a standby: lease calls go to the leader",
        "leader": not_leader.leader_url,
    });
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

async fn lease(State(state): State<ApiState>, Json(request): Json<LeaseRequest>) -> Result<Response, ApiError> {
    if let Err(standby) = state.leases.check_leading() {
        return Ok(not_leader(standby));
    }
    let grant = state
        .leases
        .lease(&request)
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    Ok(Json(grant).into_response())
}

async fn release(State(state): State<ApiState>, Json(release): Json<LeaseRelease>) -> Response {
    if let Err(standby) = state.leases.check_leading() {
        return not_leader(standby);
    }
    let _ = state.leases.release(&release).await;
    Json(serde_json::json!({})).into_response()
}

async fn run_active(
    State(state): State<ApiState>,
    Json(query): Json<ebb_worker::limits::RunQuery>,
) -> Result<Json<ebb_worker::limits::RunAnswer>, ApiError> {
    let run = state.coordinator.store().run(&query.run_id).await?;
    Ok(Json(ebb_worker::limits::RunAnswer {
        active: run.is_some_and(|run| !run.status.is_terminal()),
    }))
}

async fn rate_limited(State(state): State<ApiState>, Json(report): Json<RateLimitedReport>) -> Response {
    if let Err(standby) = state.leases.check_leading() {
        return not_leader(standby);
    }
    tracing::info!(destination = %report.destination, retry_after_ms = report.retry_after_ms, "destination rate limited the fleet");
    let _ = state.leases.rate_limited(&report).await;
    Json(serde_json::json!({})).into_response()
}
