//! OpenTelemetry traces: one trace follows a run from the coordinator through
//! the queue to the workers and on to the destination. The processes export
//! OTLP/HTTP (JSON) to a collector this test runs on loopback; the W3C
//! `traceparent` the HTTP destination receives names the same trace.

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use ebb_tests::fleet::Fleet;
use ebb_tests::model::create_people;
use ebb_tests::services::fresh_postgres_database;
use ebb_tests::sink::Sink;
use serde_json::Value;
use sqlx::PgPool;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A span as the collector received it.
#[derive(Debug, Clone)]
struct ExportedSpan {
    service: String,
    trace_id: String,
    name: String,
}

#[derive(Default)]
struct Collector {
    spans: Mutex<Vec<ExportedSpan>>,
}

/// Reads the spans of one OTLP/JSON `ExportTraceServiceRequest`.
fn spans_of(request: &Value) -> Vec<ExportedSpan> {
    let mut out = Vec::new();
    for resource_spans in request["resourceSpans"].as_array().into_iter().flatten() {
        let service = resource_spans["resource"]["attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["key"] == "service.name")
            .and_then(|a| a["value"]["stringValue"].as_str())
            .unwrap_or_default()
            .to_string();
        for scope in resource_spans["scopeSpans"].as_array().into_iter().flatten() {
            for span in scope["spans"].as_array().into_iter().flatten() {
                out.push(ExportedSpan {
                    service: service.clone(),
                    trace_id: span["traceId"].as_str().unwrap_or_default().to_lowercase(),
                    name: span["name"].as_str().unwrap_or_default().to_string(),
                });
            }
        }
    }
    out
}

async fn receive(State(collector): State<Arc<Collector>>, body: Bytes) -> &'static str {
    let request: Value = serde_json::from_slice(&body).expect("the exporter sends OTLP as JSON");
    collector.spans.lock().unwrap().extend(spans_of(&request));
    "{}"
}

async fn start_collector() -> (String, Arc<Collector>) {
    let collector = Arc::new(Collector::default());
    let app = Router::new()
        .route("/v1/traces", post(receive))
        .with_state(collector.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, collector)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_follows_a_run_from_coordinator_to_destination() {
    let (collector_url, collector) = start_collector().await;
    let source = fresh_postgres_database("traces").await;
    let pool = PgPool::connect(&source.url).await.unwrap();
    create_people(&pool, 2_000).await;
    let sink = Sink::start().await;
    let config = format!(
        r#"
sources:
  warehouse: {{ type: postgres, url: "{}" }}
models:
  people: {{ source: warehouse, query: "SELECT id, email FROM people", primary_key: id }}
destinations:
  api: {{ type: http, url: "{}", batch_size: 100 }}
syncs:
  people-api: {{ model: people, destination: api, mode: upsert, shards: 2 }}
"#,
        source.url,
        sink.url()
    );
    let fleet = Fleet::start_with_env(
        &config,
        1,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector_url),
            ("OTEL_BSP_SCHEDULE_DELAY", "200".to_string()),
        ],
    )
    .await;

    let run_id = fleet.trigger("people-api").await;
    let run = fleet.wait_run(&run_id, Duration::from_secs(120)).await;
    assert_eq!(run["status"], "success", "{run}");

    // Every request to the destination carried the run's trace context.
    let requests = sink.requests();
    assert!(!requests.is_empty());
    let trace_ids: BTreeSet<String> = requests
        .iter()
        .map(|r| {
            let traceparent = r.traceparent.as_deref().expect("each request carries a traceparent");
            traceparent.split('-').nth(1).expect("00-TRACE-SPAN-FLAGS").to_string()
        })
        .collect();
    assert_eq!(trace_ids.len(), 1, "one trace for the whole run: {trace_ids:?}");
    let trace_id = trace_ids.into_iter().next().unwrap();

    // Both processes exported spans of that trace: the coordinator's trigger
    // and result handling, the worker's extract task and both shard tasks.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut names: BTreeMap<(String, String), usize> = BTreeMap::new();
        for span in collector
            .spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.trace_id == trace_id)
        {
            *names.entry((span.service.clone(), span.name.clone())).or_default() += 1;
        }
        let count = |service: &str, name: &str| names.get(&(service.to_string(), name.to_string())).copied();
        let complete = count("ebb-coordinator", "trigger") == Some(1)
            && count("ebb-coordinator", "result") >= Some(3)
            && count("ebb-worker", "task") == Some(3);
        if complete {
            println!("trace {trace_id}: {names:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "spans of trace {trace_id} by (service, name): {names:?}\n{}",
            fleet.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
