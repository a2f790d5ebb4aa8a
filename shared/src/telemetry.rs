//! Logs and traces for every process.
//!
//! Logs are structured: human-readable on a terminal, JSON lines otherwise
//! (`EBB_LOG_FORMAT=json|text` overrides), filtered by `EBB_LOG`
//! (`ebb_worker=debug,info` style directives; the default is `info` for
//! long-running processes and `warn` for one-shot commands).
//!
//! Traces go to an OpenTelemetry collector over OTLP/HTTP when the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is
//! set; `OTEL_SERVICE_NAME` and the `OTEL_BSP_*` batch settings apply as usual.
//! One trace follows a run across processes: the W3C `traceparent` travels in
//! the AMQP headers of tasks and results (`inject`, `extract`) and in the
//! requests sent to HTTP destinations.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use tracing::Level;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

/// Flushes the spans still buffered when dropped: keep it alive until the
/// process exits (after SIGTERM handling), or the last spans are lost.
#[must_use = "dropping the guard shuts tracing down"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(error) = provider.shutdown() {
                eprintln!("warning: could not flush traces: {error}");
            }
        }
    }
}

fn otlp_endpoint_configured() -> bool {
    ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
        .iter()
        .any(|name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty()))
}

/// Sets up logs, and traces when an OTLP endpoint is configured. `service` is
/// the default `service.name` of the traces (`OTEL_SERVICE_NAME` overrides).
pub fn init(service: &str, default_level: &str) -> TelemetryGuard {
    let filter = EnvFilter::try_from_env("EBB_LOG").unwrap_or_else(|_| EnvFilter::new(default_level));
    let json = match std::env::var("EBB_LOG_FORMAT").as_deref() {
        Ok("json") => true,
        Ok("text") => false,
        _ => !std::io::stderr().is_terminal(),
    };
    let logs = fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let logs = if json {
        logs.json().with_current_span(false).boxed()
    } else {
        logs.compact().boxed()
    };
    let (provider, startup_error) = if otlp_endpoint_configured() {
        match tracer_provider(service) {
            Ok(provider) => (Some(provider), None),
            Err(error) => (None, Some(error)),
        }
    } else {
        (None, None)
    };
    // Traces keep Ebb's own spans whatever the log level: a one-shot command
    // logs only warnings but is still traced.
    let traces = provider.as_ref().map(|provider| {
        let ebb_spans = Targets::new()
            .with_default(Level::WARN)
            .with_target("ebb_shared", Level::INFO)
            .with_target("ebb_worker", Level::INFO)
            .with_target("ebb_coordinator", Level::INFO);
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("ebb"))
            .with_filter(ebb_spans)
    });
    // A second init (tests, embedded use) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(traces)
        .try_init();
    if let Some(error) = startup_error {
        tracing::warn!(%error, "OpenTelemetry traces are off: the OTLP exporter could not start");
    }
    TelemetryGuard { provider }
}

/// Logs panics as structured error events (message, location, thread, and a
/// backtrace when `RUST_BACKTRACE` asks for one) instead of plain text on
/// stderr, so that a log pipeline sees them like any other error. A process
/// installs it once, after `init`.
pub fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(a panic without a message)".to_string());
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_default();
        let thread = std::thread::current().name().unwrap_or("unnamed").to_string();
        let backtrace = std::backtrace::Backtrace::capture();
        let backtrace = match backtrace.status() {
            std::backtrace::BacktraceStatus::Captured => backtrace.to_string(),
            _ => String::new(),
        };
        tracing::error!(panic = %message, %location, %thread, %backtrace, "panicked");
    }));
}

fn tracer_provider(service: &str) -> Result<SdkTracerProvider, String> {
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    let protocol = match std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").as_deref() {
        Ok("http/protobuf") => Protocol::HttpBinary,
        _ => Protocol::HttpJson,
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(protocol)
        .build()
        .map_err(|e| e.to_string())?;
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| service.to_string());
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service).build())
        .build())
}

struct HeaderMap<'a>(&'a mut BTreeMap<String, String>);

impl Injector for HeaderMap<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_string(), value);
    }
}

struct Headers<'a>(&'a BTreeMap<String, String>);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// Writes the current span's trace context (`traceparent`, `tracestate`) into
/// `headers`. Without an active trace it writes nothing.
pub fn inject(headers: &mut BTreeMap<String, String>) {
    let context = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&context, &mut HeaderMap(headers));
}

/// Makes `span` a child of the trace context carried in `headers`, if any.
pub fn extract(headers: &BTreeMap<String, String>, span: &tracing::Span) {
    if !headers.contains_key("traceparent") {
        return;
    }
    let context = TraceContextPropagator::new().extract(&Headers(headers));
    let _ = span.set_parent(context);
}
