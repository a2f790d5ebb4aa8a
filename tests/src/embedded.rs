//! Driving an embedded runtime (coordinator and workers in the test process).

use ebb_coordinator::run::TriggerOptions;
use ebb_coordinator::runtime::Runtime;
use ebb_coordinator::store::{RunRecord, RunRow};
use std::time::Duration;

/// Triggers a run of `sync` and waits until it ends (at most a minute).
pub async fn run_to_end(runtime: &Runtime, sync: &str, options: TriggerOptions) -> RunRecord {
    let coordinator = runtime
        .coordinator
        .as_ref()
        .expect("an embedded runtime runs a coordinator");
    let run = coordinator.trigger(sync, options).await.expect("trigger");
    for _ in 0..600 {
        let run = coordinator.store().run(&run.id).await.unwrap().unwrap();
        if run.status.is_terminal() {
            return run;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stuck = coordinator.store().run(&run.id).await.unwrap();
    panic!("run {} of {sync} did not finish within 60s: {stuck:?}", run.id);
}

/// The rows of a run the destination rejected, with this key.
pub async fn rejected_rows(runtime: &Runtime, run_id: &str, key: &str) -> Vec<RunRow> {
    runtime
        .coordinator
        .as_ref()
        .expect("an embedded runtime runs a coordinator")
        .store()
        .run_rows(run_id, Some("rejected"), Some(key), 10)
        .await
        .unwrap()
}
