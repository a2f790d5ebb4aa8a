//! Schema migrations: an ordered list of portable statements; each applied
//! version is recorded, so a restart applies only what is new.

use super::StoreError;
use sqlx::AnyPool;

const MIGRATIONS: &[&[&str]] = &[
    &[
        "CREATE TABLE ebb_syncs (
        name TEXT PRIMARY KEY,
        primary_key TEXT NOT NULL,
        created_at BIGINT NOT NULL
    )",
        "CREATE TABLE ebb_runs (
        id TEXT PRIMARY KEY,
        sync_name TEXT NOT NULL,
        status TEXT NOT NULL,
        trigger_kind TEXT NOT NULL,
        schedule_tick BIGINT,
        full_resync BIGINT NOT NULL DEFAULT 0,
        reset_cdc BIGINT NOT NULL DEFAULT 0,
        created_at BIGINT NOT NULL,
        started_at BIGINT,
        finished_at BIGINT,
        error TEXT,
        rows_queried BIGINT NOT NULL DEFAULT 0,
        invalid_null BIGINT NOT NULL DEFAULT 0,
        invalid_duplicate BIGINT NOT NULL DEFAULT 0,
        planned_added BIGINT NOT NULL DEFAULT 0,
        planned_changed BIGINT NOT NULL DEFAULT 0,
        planned_removed BIGINT NOT NULL DEFAULT 0,
        succeeded_added BIGINT NOT NULL DEFAULT 0,
        succeeded_changed BIGINT NOT NULL DEFAULT 0,
        succeeded_removed BIGINT NOT NULL DEFAULT 0,
        failed_added BIGINT NOT NULL DEFAULT 0,
        failed_changed BIGINT NOT NULL DEFAULT 0,
        failed_removed BIGINT NOT NULL DEFAULT 0,
        shards_total BIGINT NOT NULL DEFAULT 0,
        shards_done BIGINT NOT NULL DEFAULT 0
    )",
        // A sync never has two runs in flight.
        "CREATE UNIQUE INDEX ebb_runs_one_active ON ebb_runs (sync_name)
        WHERE status IN ('queued', 'querying', 'processing', 'reporting')",
        // A schedule tick starts at most one run.
        "CREATE UNIQUE INDEX ebb_runs_one_per_tick ON ebb_runs (sync_name, schedule_tick)
        WHERE schedule_tick IS NOT NULL",
        "CREATE INDEX ebb_runs_by_sync ON ebb_runs (sync_name, created_at)",
        "CREATE TABLE ebb_run_shards (
        run_id TEXT NOT NULL,
        shard_index BIGINT NOT NULL,
        range_start TEXT NOT NULL,
        range_last TEXT NOT NULL,
        base TEXT NOT NULL,
        status TEXT NOT NULL,
        snapshot_key TEXT,
        PRIMARY KEY (run_id, shard_index)
    )",
        "CREATE TABLE ebb_snapshot_pointers (
        sync_name TEXT NOT NULL,
        range_start TEXT NOT NULL,
        range_last TEXT NOT NULL,
        object_key TEXT NOT NULL,
        run_id TEXT NOT NULL,
        PRIMARY KEY (sync_name, range_start)
    )",
        "CREATE TABLE ebb_run_rows (
        run_id TEXT NOT NULL,
        row_key TEXT NOT NULL,
        kind TEXT NOT NULL,
        operation TEXT,
        reason TEXT NOT NULL
    )",
        "CREATE INDEX ebb_run_rows_by_run ON ebb_run_rows (run_id, kind, row_key)",
    ],
    // Each committed shard names its row file: the outcome of every row.
    &["ALTER TABLE ebb_run_shards ADD COLUMN rows_key TEXT"],
    // A transactional outbox: every task is written in the transaction that
    // moves its run, and published after; a coordinator that crashed in
    // between publishes it on its next start (tasks are idempotent).
    &[
        "CREATE TABLE ebb_task_outbox (
        task_id TEXT PRIMARY KEY,
        run_id TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        published_at BIGINT
    )",
        "CREATE INDEX ebb_task_outbox_by_run ON ebb_task_outbox (run_id)",
    ],
    // The janitor's memory: when each unreferenced object was first seen so,
    // so that it is collected only a grace period later.
    &["CREATE TABLE ebb_gc_candidates (
        object_key TEXT PRIMARY KEY,
        sync_name TEXT NOT NULL,
        first_seen_at BIGINT NOT NULL
    )"],
    // Leadership: one row, whose epoch every new leader raises. A leader's
    // commits check it, so a deposed leader can commit nothing (fencing).
    &[
        "CREATE TABLE ebb_leader (
        id BIGINT PRIMARY KEY,
        epoch BIGINT NOT NULL,
        holder TEXT NOT NULL,
        url TEXT NOT NULL,
        since BIGINT NOT NULL
    )",
        "INSERT INTO ebb_leader (id, epoch, holder, url, since) VALUES (1, 0, '', '', 0)",
    ],
    // How many rows each pointer's part of its snapshot holds per bucket (JSON
    // `[[bucket, rows], …]`), so the planner sizes shards by the previous side
    // too. NULL for pointers committed before it: counted as empty.
    &["ALTER TABLE ebb_snapshot_pointers ADD COLUMN bucket_rows TEXT"],
    // A model read in parts: how many, how many are in, and each part's
    // report until the shards are planned from all of them.
    &[
        "ALTER TABLE ebb_runs ADD COLUMN extract_parts BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE ebb_runs ADD COLUMN extract_parts_done BIGINT NOT NULL DEFAULT 0",
        "CREATE TABLE ebb_run_extract_parts (
        run_id TEXT NOT NULL,
        part_index BIGINT NOT NULL,
        status TEXT NOT NULL,
        report TEXT,
        PRIMARY KEY (run_id, part_index)
    )",
    ],
];

pub(super) async fn migrate(pool: &AnyPool) -> Result<(), StoreError> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS ebb_schema_versions (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .execute(pool)
    .await?;
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM ebb_schema_versions")
        .fetch_all(pool)
        .await?;
    for (index, statements) in MIGRATIONS.iter().enumerate() {
        let version = index as i64 + 1;
        if applied.contains(&version) {
            continue;
        }
        let mut tx = pool.begin().await?;
        for statement in *statements {
            sqlx::query(statement).execute(&mut *tx).await?;
        }
        let recorded = sqlx::query(
            "INSERT INTO ebb_schema_versions (version, applied_at) VALUES ($1, $2) ON CONFLICT (version) DO NOTHING",
        )
        .bind(version)
        .bind(super::now_ms())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if recorded == 1 {
            tx.commit().await?;
        } else {
            // Another coordinator applied it first.
            tx.rollback().await?;
        }
    }
    Ok(())
}
