//! The change-data-capture edge cases a data team must be able to trust, each
//! test named after its case. (Shard-count changes, new mapped fields, primary
//! key changes, full resyncs, CDC resets and partial batch failures have their
//! tests in `invariants.rs` and `embedded_e2e.rs`.)

use ebb_coordinator::run::RunStatus;
use ebb_coordinator::store::RunRecord;
use ebb_tests::embedded::rejected_rows;
use ebb_tests::scenario::{Case, Target};
use ebb_tests::sink::Behavior;

fn planned(run: &RunRecord) -> [u64; 3] {
    [run.planned.added, run.planned.changed, run.planned.removed]
}

fn failed(run: &RunRecord) -> [u64; 3] {
    [run.failed.added, run.failed.changed, run.failed.removed]
}

const THREE_FIELDS: &str = "    mode: upsert
    mappings:
      - { from: id, to: id }
      - { from: email, to: email }
      - { from: name, to: name }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reordering_mappings_resends_nothing() {
    let mut case = Case::start(Target::Http, THREE_FIELDS).await;
    assert_eq!(planned(&case.run().await), [40, 0, 0]);
    case.reconfigure(
        "    mode: upsert
    mappings:
      - { from: name, to: name }
      - { from: id, to: id }
      - { from: email, to: email }",
    )
    .await;
    assert_eq!(planned(&case.run().await), [0, 0, 0]);
    case.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_mapped_field_resends_every_row_once() {
    let mut case = Case::start(Target::Http, THREE_FIELDS).await;
    assert_eq!(planned(&case.run().await), [40, 0, 0]);
    case.reconfigure(
        "    mode: upsert
    mappings:
      - { from: id, to: id }
      - { from: email, to: email }",
    )
    .await;
    assert_eq!(planned(&case.run().await), [0, 40, 0]);
    assert!(
        case.sink.records()["1"].get("name").is_none(),
        "the record is sent without the field"
    );
    assert_eq!(planned(&case.run().await), [0, 0, 0], "once");
    case.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_whose_type_changes_counts_as_changed() {
    let mut case = Case::start(Target::Http, "    mode: upsert").await;
    case.query = "SELECT id, email, score FROM people".into();
    case.reconfigure("    mode: upsert").await;
    assert_eq!(planned(&case.run().await), [40, 0, 0]);
    // The same digits, now as text: what the destination receives changes type.
    case.query = "SELECT id, email, score::text AS score FROM people".into();
    case.reconfigure("    mode: upsert").await;
    assert_eq!(planned(&case.run().await), [0, 40, 0]);
    assert!(case.sink.records()["3"]["score"].is_string());
    assert_eq!(planned(&case.run().await), [0, 0, 0]);
    case.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_refused_without_detail_is_split_until_the_bad_rows_are_isolated() {
    let case = Case::start(Target::Http, "    mode: upsert").await;
    case.sink.set_behavior(Behavior {
        refuse_batches_with: ["13".to_string(), "27".to_string()].into(),
        ..Default::default()
    });
    let first = case.run().await;
    assert_eq!(first.status, RunStatus::Warning, "{first:?}");
    assert_eq!(failed(&first), [2, 0, 0], "{first:?}");
    assert_eq!(first.succeeded.added, 38);
    let held = case.sink.records();
    assert!(!held.contains_key("13") && !held.contains_key("27"));
    assert_eq!(held.len(), 38, "every other row of the refused batches went through");
    let refusals = case.sink.requests().iter().filter(|r| r.status == 400).count();
    // Batches of 7: each bad row costs its batch, then one refused half per level.
    assert!((2..=8).contains(&refusals), "{refusals} refused requests");
    // Fixed at the destination: the two rows are retried, and only they.
    case.sink.set_behavior(Behavior::default());
    let second = case.run().await;
    assert_eq!(planned(&second), [2, 0, 0], "{second:?}");
    assert_eq!(second.status, RunStatus::Success);
    case.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_rows_that_fail_to_delete_are_retried_next_run() {
    let case = Case::start(Target::Http, "    mode: mirror").await;
    case.run().await;
    sqlx::query("DELETE FROM people WHERE id BETWEEN 5 AND 7")
        .execute(&case.pool)
        .await
        .unwrap();
    case.sink.set_behavior(Behavior {
        reject_keys: ["6".to_string()].into(),
        ..Default::default()
    });
    let second = case.run().await;
    assert_eq!(planned(&second), [0, 0, 3]);
    assert_eq!(failed(&second), [0, 0, 1]);
    assert!(case.sink.records().contains_key("6"));
    case.sink.set_behavior(Behavior::default());
    let third = case.run().await;
    assert_eq!(planned(&third), [0, 0, 1], "only the failed removal is retried");
    assert_eq!(third.succeeded.removed, 1);
    assert!(!case.sink.records().contains_key("6"));
    case.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapping_error_rejects_the_row_and_the_run_goes_on() {
    let mut case = Case::start(Target::Table, "    mode: upsert").await;
    let sync = "    mode: upsert
    mappings:
      - { from: id, to: id }
      - { from: email, to: email }
      - { from: score, to: score, cast: integer }";
    case.query = "SELECT id, email, CASE WHEN id % 10 = 0 THEN 'n/a' ELSE score::text END AS score FROM people".into();
    case.reconfigure(sync).await;
    let first = case.run().await;
    assert_eq!(first.status, RunStatus::Warning, "{first:?}");
    assert_eq!(failed(&first), [4, 0, 0]);
    assert_eq!(first.succeeded.added, 36);
    let rejected = rejected_rows(case.runtime(), &first.id, "20").await;
    assert_eq!(rejected.len(), 1);
    assert!(
        rejected[0].reason.contains("cannot cast \"n/a\" to integer"),
        "{:?}",
        rejected[0]
    );
    let held = case.held().await;
    assert!(!held.contains_key("20") && held.contains_key("21"));
    // The data is fixed: the rejected rows go through on the next run.
    case.query = "SELECT id, email, score::text AS score FROM people".into();
    case.reconfigure(sync).await;
    let second = case.run().await;
    assert_eq!(planned(&second), [4, 0, 0], "{second:?}");
    assert_eq!(second.status, RunStatus::Success);
    case.stop().await;
}
