//! The state store's contract, run against every backend: SQLite (standalone)
//! and PostgreSQL (a fleet). Snapshot pointers must always cover the hash space
//! exactly once, move only with an accepted shard result, and refuse repeated
//! or stale results (invariant 3).

use ebb_coordinator::run::RunStatus;
use ebb_coordinator::store::{pointer_base, CommitOutcome, NewRun, ShardPlanRow, StateStore};
use ebb_shared::hashing::{covers_space_exactly_once, HashRange, BUCKET_COUNT};
use ebb_shared::protocol::{BucketRows, OpCounts, ShardReport};
use sqlx::{Connection, Executor, PgConnection};

async fn sqlite_store(dir: &tempfile::TempDir) -> StateStore {
    StateStore::connect(&format!("sqlite://{}", dir.path().join("state.db").display()))
        .await
        .unwrap()
}

/// A PostgreSQL store in a database of its own, dropped by `drop_database`.
async fn postgres_store() -> (StateStore, String) {
    let admin = admin_url();
    let mut connection = PgConnection::connect(&admin).await.unwrap_or_else(|e| {
        panic!("PostgreSQL is not reachable at {admin} ({e}); start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start")
    });
    let name = format!("ebb_store_{}", rand::random::<u32>());
    connection
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap();
    let base = admin.rsplit_once('/').unwrap().0;
    (StateStore::connect(&format!("{base}/{name}")).await.unwrap(), name)
}

fn admin_url() -> String {
    std::env::var("EBB_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

async fn drop_database(name: &str) {
    let mut connection = PgConnection::connect(&admin_url()).await.unwrap();
    connection
        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
        .await
        .unwrap();
}

fn new_run(id: &str, tick: Option<i64>) -> NewRun {
    NewRun {
        id: id.to_string(),
        sync: "s".to_string(),
        trigger: "manual".to_string(),
        schedule_tick: tick,
        full_resync: false,
        reset_cdc: false,
    }
}

fn report(index: u32, range: HashRange, key: &str, added: u64) -> ShardReport {
    ShardReport {
        index,
        range,
        snapshot_key: key.to_string(),
        planned: OpCounts {
            added,
            changed: 0,
            removed: 0,
        },
        succeeded: OpCounts {
            added,
            changed: 0,
            removed: 0,
        },
        failed: OpCounts::default(),
        duplicate_keys: 0,
        invalid_sample: vec![],
        rejected_sample: vec![],
        rows_key: None,
        destination_error: None,
        snapshot_buckets: vec![],
    }
}

/// `report` with its snapshot holding `per_bucket` rows in each bucket of its range.
fn with_buckets(mut report: ShardReport, per_bucket: u64) -> ShardReport {
    let (first, last) = (
        HashRange::bucket_of(report.range.start),
        HashRange::bucket_of(report.range.last),
    );
    report.snapshot_buckets = (first..=last)
        .map(|bucket| BucketRows {
            bucket: bucket as u32,
            rows: per_bucket,
        })
        .collect();
    report
}

fn equal_ranges(n: usize) -> Vec<HashRange> {
    (0..n)
        .map(|i| HashRange::buckets(i * BUCKET_COUNT / n, (i + 1) * BUCKET_COUNT / n - 1))
        .collect()
}

/// Starts a run, moves it to processing with `n` shards planned against the
/// current pointers, and returns the ranges.
async fn processing_run(store: &StateStore, id: &str, n: usize) -> Vec<HashRange> {
    store.create_run(&new_run(id, None)).await.unwrap().unwrap();
    assert!(store
        .transition(id, RunStatus::Queued, RunStatus::Querying, None)
        .await
        .unwrap());
    let pointers = store.pointers("s").await.unwrap();
    let ranges = equal_ranges(n);
    let shards: Vec<ShardPlanRow> = ranges
        .iter()
        .enumerate()
        .map(|(i, range)| ShardPlanRow {
            index: i as u32,
            range: *range,
            base: pointer_base(range, pointers.iter()),
        })
        .collect();
    assert!(store.begin_processing(id, 100, 0, &[], &shards, &[]).await.unwrap());
    ranges
}

async fn contract(store: StateStore) {
    store.ensure_sync("s", "id").await.unwrap();
    let initial = store.pointers("s").await.unwrap();
    assert_eq!(initial.len(), 1);
    assert_eq!(initial[0].range, HashRange::FULL);

    // One run at a time, one run per tick.
    let first = store.create_run(&new_run("r1", Some(7))).await.unwrap().unwrap();
    assert_eq!(first.status, RunStatus::Queued);
    assert_eq!(
        store.create_run(&new_run("r2", None)).await.unwrap().unwrap_err(),
        Some("r1".into())
    );
    assert!(store
        .transition("r1", RunStatus::Queued, RunStatus::Failed, Some("boom"))
        .await
        .unwrap());
    assert!(
        !store
            .transition("r1", RunStatus::Queued, RunStatus::Failed, None)
            .await
            .unwrap(),
        "a transition checks the current status"
    );
    assert_eq!(
        store.create_run(&new_run("r3", Some(7))).await.unwrap().unwrap_err(),
        None,
        "tick 7 already ran"
    );

    // Three shards commit; pointers cover the space after each commit.
    let ranges = processing_run(&store, "r4", 3).await;
    for (i, range) in ranges.iter().enumerate() {
        let outcome = store
            .commit_shard(
                "r4",
                "s",
                &with_buckets(report(i as u32, *range, &format!("obj-r4-{i}"), 10), 1),
            )
            .await
            .unwrap();
        assert!(matches!(outcome, CommitOutcome::Committed(_)), "{outcome:?}");
        let pointers = store.pointers("s").await.unwrap();
        let covered: Vec<HashRange> = pointers.iter().map(|p| p.range).collect();
        assert!(covers_space_exactly_once(&covered), "after shard {i}: {covered:?}");
    }
    let run = store.run("r4").await.unwrap().unwrap();
    assert_eq!((run.shards_done, run.shards_total), (3, 3));
    assert_eq!(run.succeeded.added, 30);

    // A repeated result changes nothing.
    let again = store
        .commit_shard("r4", "s", &report(0, ranges[0], "obj-r4-0-again", 10))
        .await
        .unwrap();
    assert!(matches!(again, CommitOutcome::Duplicate), "{again:?}");
    assert_eq!(store.run("r4").await.unwrap().unwrap().succeeded.added, 30);
    assert!(store
        .pointers("s")
        .await
        .unwrap()
        .iter()
        .all(|p| !p.object_key.ends_with("again")));

    // The next run uses five shards: each reads the overlapping old snapshots,
    // and every commit keeps the space covered exactly once.
    store
        .transition("r4", RunStatus::Processing, RunStatus::Success, None)
        .await
        .unwrap();
    let ranges = processing_run(&store, "r5", 5).await;
    for (i, range) in ranges.iter().enumerate().rev() {
        let outcome = store
            .commit_shard(
                "r5",
                "s",
                &with_buckets(report(i as u32, *range, &format!("obj-r5-{i}"), 1), 2),
            )
            .await
            .unwrap();
        assert!(matches!(outcome, CommitOutcome::Committed(_)), "{outcome:?}");
        // The counts follow the pointers: the committed range's from its
        // report, the trimmed remainders' kept from the snapshots they were.
        let counts = store.snapshot_bucket_rows("s").await.unwrap();
        for (bucket, &rows) in counts.iter().enumerate() {
            let moved = ranges[i..].iter().any(|r| r.contains(HashRange::bucket(bucket).start));
            assert_eq!(rows, if moved { 2 } else { 1 }, "after r5 shard {i}, bucket {bucket}");
        }
        let covered: Vec<HashRange> = store.pointers("s").await.unwrap().iter().map(|p| p.range).collect();
        assert!(covers_space_exactly_once(&covered), "after r5 shard {i}: {covered:?}");
    }
    let pointers = store.pointers("s").await.unwrap();
    assert_eq!(pointers.len(), 5);
    assert!(pointers.iter().all(|p| p.object_key.starts_with("obj-r5-")));
}

#[tokio::test]
async fn sqlite_store_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    contract(sqlite_store(&dir).await).await;
}

#[tokio::test]
async fn postgres_store_keeps_the_contract() {
    let (store, database) = postgres_store().await;
    contract(store).await;
    drop_database(&database).await;
}

async fn late_and_stale_results_leave_terminal_runs_alone_and_never_wedge_a_run(store: StateStore) {
    store.ensure_sync("s", "id").await.unwrap();
    let ranges = processing_run(&store, "old", 2).await;
    store
        .transition("old", RunStatus::Processing, RunStatus::Cancelled, None)
        .await
        .unwrap();
    let newer = processing_run(&store, "new", 1).await;
    let committed = store
        .commit_shard("new", "s", &report(0, newer[0], "obj-new", 5))
        .await
        .unwrap();
    assert!(matches!(committed, CommitOutcome::Committed(_)));
    // The cancelled run's shard finishes late: its snapshot was computed from
    // pointers that moved since, so it must not replace the newer one.
    let late = store
        .commit_shard("old", "s", &report(1, ranges[1], "obj-old-1", 5))
        .await
        .unwrap();
    assert!(matches!(late, CommitOutcome::Superseded), "{late:?}");
    let pointers = store.pointers("s").await.unwrap();
    assert_eq!(pointers.len(), 1);
    assert_eq!(pointers[0].object_key, "obj-new");
    // A terminal run never changes: the late result counts nowhere in it.
    let old = store.run("old").await.unwrap().unwrap();
    assert_eq!(
        (old.status, old.shards_done, old.succeeded.added),
        (RunStatus::Cancelled, 0, 0)
    );
    assert!(store
        .transition("new", RunStatus::Processing, RunStatus::Failed, None)
        .await
        .unwrap());

    // A cancelled run's shard lands after the next run planned the same range:
    // its snapshot is still current (nothing moved), so it is kept; the next
    // run's shard is then stale, and must count as done, or the run (and every
    // run of the sync after it) would wait forever.
    let cancelled = processing_run(&store, "cancelled", 1).await;
    store
        .transition("cancelled", RunStatus::Processing, RunStatus::Cancelled, None)
        .await
        .unwrap();
    let next = processing_run(&store, "next", 1).await;
    let late = store
        .commit_shard("cancelled", "s", &report(0, cancelled[0], "obj-cancelled", 3))
        .await
        .unwrap();
    assert!(matches!(late, CommitOutcome::Superseded), "{late:?}");
    assert_eq!(store.pointers("s").await.unwrap()[0].object_key, "obj-cancelled");
    let stale = store
        .commit_shard("next", "s", &report(0, next[0], "obj-next", 5))
        .await
        .unwrap();
    let CommitOutcome::Stale(run) = stale else {
        panic!("expected a stale commit, got {stale:?}");
    };
    assert_eq!((run.shards_done, run.shards_total, run.succeeded.added), (1, 1, 5));
    assert_eq!(store.pointers("s").await.unwrap()[0].object_key, "obj-cancelled");
    assert_eq!(store.shard_status("next", 0).await.unwrap().as_deref(), Some("stale"));
    let cancelled = store.run("cancelled").await.unwrap().unwrap();
    assert_eq!((cancelled.shards_done, cancelled.succeeded.added), (0, 0));
}

#[tokio::test]
async fn sqlite_store_refuses_stale_results() {
    let dir = tempfile::tempdir().unwrap();
    late_and_stale_results_leave_terminal_runs_alone_and_never_wedge_a_run(sqlite_store(&dir).await).await;
}

#[tokio::test]
async fn postgres_store_refuses_stale_results() {
    let (store, database) = postgres_store().await;
    late_and_stale_results_leave_terminal_runs_alone_and_never_wedge_a_run(store).await;
    drop_database(&database).await;
}
