//! Prometheus metrics of the coordinator, served on `/metrics`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub struct Metrics {
    registry: Registry,
    pub runs_started: Counter,
    pub runs_finished: Family<Vec<(String, String)>, Counter>,
    pub rows: Family<Vec<(String, String)>, Counter>,
    pub results_received: Family<Vec<(String, String)>, Counter>,
    pub runs_active: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("ebb");
        let runs_started = Counter::default();
        let runs_finished = Family::default();
        let rows = Family::default();
        let results_received = Family::default();
        let runs_active = Gauge::default();
        registry.register("runs_started", "Runs started", runs_started.clone());
        registry.register("runs_finished", "Runs finished, by status", runs_finished.clone());
        registry.register(
            "rows",
            "Rows planned, succeeded and failed, by operation and outcome",
            rows.clone(),
        );
        registry.register(
            "results_received",
            "Worker results accepted by the coordinator, by kind",
            results_received.clone(),
        );
        registry.register("runs_active", "Runs in flight", runs_active.clone());
        Metrics {
            registry,
            runs_started,
            runs_finished,
            rows,
            results_received,
            runs_active,
        }
    }
}

impl Metrics {
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("metrics encode into a String");
        out
    }

    pub fn count_rows(&self, operation: &str, outcome: &str, n: u64) {
        if n > 0 {
            self.rows
                .get_or_create(&vec![
                    ("operation".to_string(), operation.to_string()),
                    ("outcome".to_string(), outcome.to_string()),
                ])
                .inc_by(n);
        }
    }
}
