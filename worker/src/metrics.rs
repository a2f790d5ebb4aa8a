//! A worker's Prometheus metrics, served on its `/metrics` (`ebb worker --listen`).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::time::Duration;

type Labels = Vec<(String, String)>;

pub struct WorkerMetrics {
    registry: Registry,
    /// Tasks by kind (extract, shard) and outcome (done, failed, retried, rejected).
    pub tasks: Family<Labels, Counter>,
    /// Requests to destinations, by destination and how they were answered.
    destination_requests: Family<Labels, Counter>,
    /// How long destinations took to answer, by destination.
    destination_latency: Family<Labels, Histogram, fn() -> Histogram>,
    /// Requests sent again, by destination and why (rate_limited, transient).
    destination_retries: Family<Labels, Counter>,
    /// Until when the fleet holds back from a destination (Unix seconds).
    destination_paused_until: Family<Labels, Gauge>,
    /// Requests this worker may have in flight to a destination (the adaptive
    /// window under the fleet lease).
    destination_concurrency_limit: Family<Labels, Gauge>,
}

/// How a destination answered one request, for `destination_requests`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Every record got its answer (some may be rejected one by one).
    Answered,
    /// The whole batch was refused for its content.
    Refused,
    /// `429` or the destination's own rate-limit signal.
    RateLimited,
    /// A fault worth retrying (5xx, timeout, connection).
    Transient,
    /// A fault not worth retrying (4xx on the request itself, auth).
    Permanent,
}

impl Answer {
    fn as_str(self) -> &'static str {
        match self {
            Answer::Answered => "answered",
            Answer::Refused => "refused",
            Answer::RateLimited => "rate_limited",
            Answer::Transient => "transient_error",
            Answer::Permanent => "permanent_error",
        }
    }
}

fn latency_histogram() -> Histogram {
    // 5 ms to about 80 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("ebb_worker");
        let tasks = Family::default();
        registry.register(
            "tasks",
            "Tasks this worker ended, by kind and outcome (done, failed, retried: back to the queue after a transient fault, rejected: unreadable, dead-lettered)",
            tasks.clone(),
        );
        let destination_requests = Family::default();
        registry.register(
            "destination_requests",
            "Requests to destinations, by destination and answer (answered, refused, rate_limited, transient_error, permanent_error)",
            destination_requests.clone(),
        );
        let destination_latency = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "destination_request_seconds",
            "How long destinations took to answer a request, by destination",
            destination_latency.clone(),
        );
        let destination_retries = Family::default();
        registry.register(
            "destination_retries",
            "Requests sent again, by destination and reason (rate_limited, transient)",
            destination_retries.clone(),
        );
        let destination_paused_until = Family::default();
        registry.register(
            "destination_paused_until_timestamp_seconds",
            "Until when the fleet holds back from a destination after a 429 (Unix seconds; paused while above time())",
            destination_paused_until.clone(),
        );
        let destination_concurrency_limit = Family::default();
        registry.register(
            "destination_concurrency_limit",
            "Requests this worker may have in flight to a destination: the adaptive window (AIMD on latency and back-pressure) under the fleet lease",
            destination_concurrency_limit.clone(),
        );
        WorkerMetrics {
            registry,
            tasks,
            destination_requests,
            destination_latency,
            destination_retries,
            destination_paused_until,
            destination_concurrency_limit,
        }
    }
}

impl WorkerMetrics {
    pub fn task(&self, kind: &str, outcome: &str) {
        self.tasks
            .get_or_create(&vec![
                ("kind".to_string(), kind.to_string()),
                ("outcome".to_string(), outcome.to_string()),
            ])
            .inc();
    }

    /// One request to `destination`, answered after `took`.
    pub fn request(&self, destination: &str, answer: Answer, took: Duration) {
        let labels = vec![("destination".to_string(), destination.to_string())];
        self.destination_latency
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        let mut labels = labels;
        labels.push(("answer".to_string(), answer.as_str().to_string()));
        self.destination_requests.get_or_create(&labels).inc();
    }

    /// A request to `destination` goes out again, for `reason`.
    pub fn retry(&self, destination: &str, reason: &str) {
        self.destination_retries
            .get_or_create(&vec![
                ("destination".to_string(), destination.to_string()),
                ("reason".to_string(), reason.to_string()),
            ])
            .inc();
    }

    /// The fleet holds back from `destination` for `wait` from now.
    pub fn paused(&self, destination: &str, wait: Duration) {
        let until = chrono::Utc::now().timestamp() + wait.as_secs_f64().ceil() as i64;
        self.destination_paused_until
            .get_or_create(&vec![("destination".to_string(), destination.to_string())])
            .set(until);
    }

    /// The adaptive window for `destination` is now `limit` requests.
    pub fn concurrency_limit(&self, destination: &str, limit: u32) {
        self.destination_concurrency_limit
            .get_or_create(&vec![("destination".to_string(), destination.to_string())])
            .set(i64::from(limit));
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("metrics encode into a String");
        out
    }
}
