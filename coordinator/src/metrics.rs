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
    /// Unix time of each sync's last run that ended successful (or with a
    /// warning): alert when it falls too far behind (freshness).
    pub sync_last_success: Family<Vec<(String, String)>, Gauge>,
    pub gc_objects_deleted: Counter,
    pub gc_runs_expired: Counter,
    pub gc_sweeps_failed: Counter,
    /// 1 while this coordinator leads its fleet.
    pub leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("ebb");
        let runs_started = Counter::default();
        let runs_finished = Family::default();
        let rows = Family::default();
        let results_received = Family::default();
        let runs_active = Gauge::default();
        let sync_last_success = Family::default();
        let gc_objects_deleted = Counter::default();
        let gc_runs_expired = Counter::default();
        let gc_sweeps_failed = Counter::default();
        let leader = Gauge::default();
        registry.register(
            "coordinator_leader",
            "1 while this coordinator leads its fleet",
            leader.clone(),
        );
        registry.register("runs_started", "Runs started", runs_started.clone());
        registry.register(
            "runs_finished",
            "Runs finished, by sync and status",
            runs_finished.clone(),
        );
        registry.register(
            "sync_last_success_timestamp_seconds",
            "When each sync's last successful run ended (Unix seconds)",
            sync_last_success.clone(),
        );
        registry.register(
            "gc_objects_deleted",
            "Objects the janitor deleted",
            gc_objects_deleted.clone(),
        );
        registry.register(
            "gc_runs_expired",
            "Runs deleted past their retention",
            gc_runs_expired.clone(),
        );
        registry.register(
            "gc_sweeps_failed",
            "Janitor sweeps that stopped on an error",
            gc_sweeps_failed.clone(),
        );
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
            sync_last_success,
            gc_objects_deleted,
            gc_runs_expired,
            gc_sweeps_failed,
            leader,
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
