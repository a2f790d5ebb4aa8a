//! A worker's Prometheus metrics, served on its `/metrics` (`ebb worker --listen`).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

pub struct WorkerMetrics {
    registry: Registry,
    /// Tasks by kind (extract, shard) and outcome (done, failed, retried, rejected).
    pub tasks: Family<Labels, Counter>,
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
        WorkerMetrics { registry, tasks }
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

    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("metrics encode into a String");
        out
    }
}
