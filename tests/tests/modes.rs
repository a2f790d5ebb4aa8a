//! Every sync mode and delete behaviour against both real destinations: the
//! PostgreSQL table and the local HTTP destination (which implements the HTTP
//! contract). Each case runs a first sync, mutates the model (4 rows changed,
//! 3 removed, 3 added), runs again and checks what the mode promises: the
//! counts, and the destination's records afterwards.

use ebb_coordinator::run::RunStatus;
use ebb_coordinator::store::RunRecord;
use ebb_tests::embedded::rejected_rows;
use ebb_tests::scenario::{Case, Held, Target};

fn counts(run: &RunRecord) -> [[u64; 3]; 3] {
    [&run.planned, &run.succeeded, &run.failed].map(|c| [c.added, c.changed, c.removed])
}

fn ids(held: &Held) -> Vec<i64> {
    let mut ids: Vec<i64> = held.keys().map(|k| k.parse().unwrap()).collect();
    ids.sort();
    ids
}

fn original(id: i64) -> Option<String> {
    Some(format!("person{id}@example.com"))
}

const BOTH: [Target; 2] = [Target::Http, Target::Table];

/// Runs the first sync (all 40 rows added), mutates, runs the second.
async fn two_runs(case: &Case) -> RunRecord {
    let first = case.run().await;
    assert_eq!(first.status, RunStatus::Success, "{:?}: {first:?}", case.target);
    case.mutate().await;
    case.run().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_mode_creates_new_keys_only_and_never_sends_a_key_twice() {
    for target in BOTH {
        let case = Case::start(target, "    mode: insert").await;
        let second = two_runs(&case).await;
        assert_eq!(
            counts(&second),
            [[3, 0, 0], [3, 0, 0], [0, 0, 0]],
            "{target:?}: {second:?}"
        );
        let held = case.held().await;
        assert_eq!(held.len(), 43, "{target:?}: removed rows stay, added rows arrive");
        assert_eq!(held["1"], original(1), "{target:?}: a changed row is not updated");
        assert_eq!(held["102"], original(102));
        // A key that left the model and comes back was sent once already.
        sqlx::query("INSERT INTO people VALUES (5, 'again5@example.com', 'x', 1, true)")
            .execute(&case.pool)
            .await
            .unwrap();
        let third = case.run().await;
        assert_eq!(counts(&third)[0], [0, 0, 0], "{target:?}: {third:?}");
        case.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_mode_updates_existing_records_and_rejects_misses_with_a_reason() {
    for target in BOTH {
        let case = Case::start(target, "    mode: update").await;
        case.seed(1..=20).await;
        let first = case.run().await;
        assert_eq!(first.status, RunStatus::Warning, "{target:?}: {first:?}");
        assert_eq!(counts(&first), [[40, 0, 0], [20, 0, 0], [20, 0, 0]], "{target:?}");
        let rows = rejected_rows(case.runtime(), &first.id, "33").await;
        assert_eq!(rows.len(), 1, "{target:?}: the miss is recorded by key");
        assert!(rows[0].reason.contains("33"), "{target:?}: {:?}", rows[0]);
        case.mutate().await;
        let second = case.run().await;
        // The 20 misses are retried with the 3 new rows; 4 changed rows update;
        // removed rows are left alone.
        assert_eq!(
            counts(&second),
            [[23, 4, 0], [0, 4, 0], [23, 0, 0]],
            "{target:?}: {second:?}"
        );
        let held = case.held().await;
        assert_eq!(
            ids(&held),
            (1..=20).collect::<Vec<_>>(),
            "{target:?}: update never creates"
        );
        assert_eq!(held["2"].as_deref(), Some("changed-2@example.com"));
        assert_eq!(held["9"], original(9));
        assert_eq!(held["6"], original(6), "{target:?}: do_nothing keeps removed rows");
        case.stop().await;
    }
}

async fn upsert_case(delete_behavior: &str, removed: Option<Option<String>>, expect_removed: u64) {
    for target in BOTH {
        let sync = format!("    mode: upsert\n    delete_behavior: {delete_behavior}");
        let case = Case::start(target, &sync).await;
        let second = two_runs(&case).await;
        assert_eq!(
            counts(&second),
            [[3, 4, expect_removed], [3, 4, expect_removed], [0, 0, 0]],
            "{target:?}: {second:?}"
        );
        let mut expected = case.model().await;
        if let Some(value) = &removed {
            for id in 5..=7 {
                expected.insert(id.to_string(), value.clone());
            }
        }
        let mut held = case.held().await;
        if delete_behavior == "do_nothing" {
            for id in 5..=7 {
                assert_eq!(held[&id.to_string()], original(id), "{target:?}");
            }
            held.retain(|id, _| !(5..=7).contains(&id.parse::<i64>().unwrap()));
            expected.retain(|id, _| !(5..=7).contains(&id.parse::<i64>().unwrap()));
        }
        assert_eq!(held, expected, "{target:?}");
        case.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upsert_mode_with_do_nothing_keeps_rows_that_left_the_model() {
    upsert_case("do_nothing", None, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upsert_mode_with_clear_fields_nulls_the_fields_of_rows_that_left() {
    upsert_case("clear_fields", Some(None), 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upsert_mode_with_delete_deletes_rows_that_left() {
    upsert_case("delete", None, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_mode_makes_the_destination_equal_the_model() {
    for target in BOTH {
        let case = Case::start(target, "    mode: mirror").await;
        let second = two_runs(&case).await;
        assert_eq!(counts(&second), [[3, 4, 3], [3, 4, 3], [0, 0, 0]], "{target:?}");
        assert_eq!(case.held().await, case.model().await, "{target:?}");
        case.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_mode_with_clear_fields_keeps_cleared_records() {
    for target in BOTH {
        let case = Case::start(target, "    mode: mirror\n    delete_behavior: clear_fields").await;
        let second = two_runs(&case).await;
        assert_eq!(counts(&second), [[3, 4, 3], [3, 4, 3], [0, 0, 0]], "{target:?}");
        let mut expected = case.model().await;
        for id in 5..=7 {
            expected.insert(id.to_string(), None);
        }
        assert_eq!(case.held().await, expected, "{target:?}");
        case.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_mode_sends_every_row_every_run() {
    for target in BOTH {
        let case = Case::start(target, "    mode: all").await;
        let second = two_runs(&case).await;
        assert_eq!(counts(&second), [[3, 37, 0], [3, 37, 0], [0, 0, 0]], "{target:?}");
        let third = case.run().await;
        assert_eq!(
            counts(&third)[0],
            [0, 40, 0],
            "{target:?}: nothing changed, all sent again"
        );
        let held = case.held().await;
        assert_eq!(held.len(), 43, "{target:?}: no CDC, so removed rows are not removed");
        case.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_mode_archives_rows_that_enter_the_model() {
    // The PostgreSQL destination cannot archive; the config refuses it (see the
    // config tests). The HTTP contract can.
    let case = Case::start(Target::Http, "    mode: archive").await;
    let second = two_runs(&case).await;
    assert_eq!(counts(&second), [[3, 0, 0], [3, 0, 0], [0, 0, 0]]);
    let archived = case.sink.archived();
    assert_eq!(archived.len(), 43);
    assert!(archived.contains("101") && archived.contains("5"));
    assert_eq!(
        case.sink.applied("archive", "1"),
        1,
        "a changed row is not archived again"
    );
    case.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audience_add_remove_follows_membership() {
    for target in BOTH {
        let case = Case::start(target, "    type: audience\n    mode: add_remove").await;
        let second = two_runs(&case).await;
        assert_eq!(counts(&second), [[3, 4, 3], [3, 4, 3], [0, 0, 0]], "{target:?}");
        assert_eq!(case.held().await, case.model().await, "{target:?}");
        if target == Target::Http {
            assert_eq!(case.sink.applied("remove", "6"), 1);
            assert_eq!(case.sink.applied("add", "101"), 1);
        }
        case.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_syncs_send_each_event_once() {
    for target in BOTH {
        let case = Case::start(target, "    type: event\n    mode: insert").await;
        let second = two_runs(&case).await;
        assert_eq!(counts(&second), [[3, 0, 0], [3, 0, 0], [0, 0, 0]], "{target:?}");
        let held = case.held().await;
        assert_eq!(held.len(), 43, "{target:?}");
        assert_eq!(held["3"], original(3), "{target:?}: events are facts, never updated");
        sqlx::query("INSERT INTO people VALUES (6, 'back@example.com', 'x', 1, true)")
            .execute(&case.pool)
            .await
            .unwrap();
        let third = case.run().await;
        assert_eq!(
            counts(&third)[0],
            [0, 0, 0],
            "{target:?}: an event that comes back is not resent"
        );
        if target == Target::Http {
            assert_eq!(case.sink.applied("track", "6"), 1);
        }
        case.stop().await;
    }
}
