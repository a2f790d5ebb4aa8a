//! Interval schedules. A sync with `schedule: {every: 15m}` runs at every
//! multiple of 15 minutes since the Unix epoch. Each tick starts at most one run
//! (a unique index on the tick), and a tick that finds the sync's previous run
//! still in flight waits for it, so a sync never has two runs at once.

use crate::run::{Coordinator, TriggerError, TriggerOptions};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The tick of `now_ms` for an interval: how many intervals since the epoch.
pub fn tick_of(now_ms: i64, every: Duration) -> i64 {
    now_ms.div_euclid(every.as_millis().max(1) as i64)
}

pub async fn run_scheduler(coordinator: Arc<Coordinator>, mut shutdown: watch::Receiver<bool>) {
    let schedules: Vec<(String, Duration)> = coordinator
        .config()
        .syncs
        .iter()
        .filter_map(|(name, sync)| sync.schedule.as_ref().map(|s| (name.clone(), s.every)))
        .collect();
    if schedules.is_empty() {
        return;
    }
    tracing::info!(syncs = schedules.len(), "scheduler started");
    let mut handled: HashMap<String, i64> = HashMap::new();
    loop {
        for (sync, every) in &schedules {
            let tick = tick_of(crate::store::now_ms(), *every);
            if handled.get(sync) == Some(&tick) {
                continue;
            }
            let options = TriggerOptions {
                schedule_tick: Some(tick),
                trigger: "schedule".into(),
                ..Default::default()
            };
            match coordinator.trigger(sync, options).await {
                Ok(run) => {
                    tracing::info!(sync, tick, run = %run.id, "scheduled run started");
                    handled.insert(sync.clone(), tick);
                }
                Err(TriggerError::TickTaken) => {
                    handled.insert(sync.clone(), tick);
                }
                // Try again next second: the tick's run starts once the previous ends.
                Err(TriggerError::AlreadyRunning { .. }) => {}
                Err(error) => {
                    tracing::error!(sync, tick, %error, "scheduled run could not start");
                    handled.insert(sync.clone(), tick);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_interval_multiples() {
        let every = Duration::from_secs(900);
        assert_eq!(tick_of(0, every), 0);
        assert_eq!(tick_of(899_999, every), 0);
        assert_eq!(tick_of(900_000, every), 1);
    }
}
