//! The state store: syncs, runs, shards, snapshot pointers and per-run row
//! detail, in SQLite (standalone) or PostgreSQL (a fleet), through one
//! implementation on sqlx's `Any` driver with portable SQL.
//!
//! Snapshot pointers are the only record of which snapshot object is current for
//! each part of the hash space; they move in the same transaction that accepts a
//! shard result (invariant 3), and together always cover the space exactly once.

mod gc;
mod leader;
mod migrations;
mod parts;
mod records;

pub use gc::SyncReferences;
pub use leader::{LeaderRecord, LeadershipLock, LockCheck};
pub use parts::PartCommit;
pub use records::{pointer_base, CommitOutcome, NewRun, OutboxTask, RunRecord, RunRow, ShardPlanRow};

use crate::run::state::{RunStatus, ACTIVE};
use ebb_shared::hashing::{HashRange, BUCKET_COUNT};
use ebb_shared::protocol::{BucketRows, NullKeyRow, OpCounts, ShardReport, SnapshotPointer};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("state store: {0}")]
    Query(#[from] sqlx::Error),
    #[error("state store holds a bad value: {0}")]
    Corrupt(String),
    /// Another coordinator took the leadership (epoch `current`): this one
    /// may commit nothing more.
    #[error("this coordinator lost the leadership (epoch {ours}, now {current}): it commits nothing more")]
    Deposed { ours: i64, current: i64 },
}

#[derive(Clone)]
pub struct StateStore {
    pool: AnyPool,
    dialect: Dialect,
    /// The leadership epoch this process holds; 0 while it leads nothing.
    /// Leader-only commits check it against the database's (fencing).
    epoch: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Sqlite,
    Postgres,
}

/// How long after its run ended a shard result may still move snapshot
/// pointers (it says what the destination received, so the next run need not
/// send it again): an hour, or the run deadline if that is shorter. Later
/// results change nothing. The janitor's grace period is longer than the run
/// deadline, so it never collects an object a commit may still name.
pub fn late_commit_window() -> Duration {
    crate::run::coordinator::run_deadline().min(Duration::from_secs(3600))
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn status_list(statuses: &[RunStatus]) -> String {
    statuses
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

impl StateStore {
    /// `sqlite://path/to/state.db` or `postgres://…`; creates and migrates the schema.
    pub async fn connect(url: &str) -> Result<StateStore, StoreError> {
        sqlx::any::install_default_drivers();
        let connect_error = |reason: String| StoreError::Connect {
            url: ebb_shared::redact::redact_url(url),
            reason,
        };
        let dialect = if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Dialect::Postgres
        } else {
            return Err(connect_error("use sqlite://PATH or postgres://…".into()));
        };
        let mut options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(15));
        if dialect == Dialect::Sqlite {
            options = options.max_connections(4).after_connect(|connection, _| {
                Box::pin(async move {
                    sqlx::query("PRAGMA journal_mode = WAL")
                        .execute(&mut *connection)
                        .await?;
                    sqlx::query("PRAGMA busy_timeout = 10000")
                        .execute(&mut *connection)
                        .await?;
                    sqlx::query("PRAGMA foreign_keys = ON")
                        .execute(&mut *connection)
                        .await?;
                    Ok(())
                })
            });
        } else {
            options = options.max_connections(8);
        }
        let url = if dialect == Dialect::Sqlite && !url.contains('?') {
            format!("{url}?mode=rwc")
        } else {
            url.to_string()
        };
        let pool = options.connect(&url).await.map_err(|e| connect_error(e.to_string()))?;
        let store = StateStore {
            pool,
            dialect,
            epoch: Default::default(),
        };
        migrations::migrate(&store.pool).await?;
        Ok(store)
    }

    pub fn is_postgres(&self) -> bool {
        self.dialect == Dialect::Postgres
    }

    /// Registers a sync on first sight: its pointers start as one empty snapshot
    /// covering the whole hash space.
    pub async fn ensure_sync(&self, sync: &str, primary_key: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO ebb_syncs (name, primary_key, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
        )
        .bind(sync)
        .bind(primary_key)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 1 {
            sqlx::query(
                "INSERT INTO ebb_snapshot_pointers (sync_name, range_start, range_last, object_key, run_id) \
                 VALUES ($1, $2, $3, '', '')",
            )
            .bind(sync)
            .bind(HashRange::FULL.start_hex())
            .bind(HashRange::FULL.last_hex())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The primary-key column the sync's committed snapshots were keyed by.
    pub async fn synced_primary_key(&self, sync: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT primary_key FROM ebb_syncs WHERE name = $1")
            .bind(sync)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub async fn set_synced_primary_key(&self, sync: &str, primary_key: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE ebb_syncs SET primary_key = $1 WHERE name = $2")
            .bind(primary_key)
            .bind(sync)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Creates a queued run; `Ok(Err(active_run))` when the sync already has one
    /// in flight, `Ok(Err(None))` when the schedule tick already has its run.
    pub async fn create_run(&self, run: &NewRun) -> Result<Result<RunRecord, Option<String>>, StoreError> {
        let result = sqlx::query(
            "INSERT INTO ebb_runs (id, sync_name, status, trigger_kind, schedule_tick, full_resync, reset_cdc, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&run.id)
        .bind(&run.sync)
        .bind(RunStatus::Queued.as_str())
        .bind(&run.trigger)
        .bind(run.schedule_tick)
        .bind(run.full_resync as i64)
        .bind(run.reset_cdc as i64)
        .bind(now_ms())
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(Ok(self.run(&run.id).await?.expect("just inserted"))),
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => Ok(Err(self.active_run(&run.sync).await?)),
            Err(other) => Err(other.into()),
        }
    }

    pub async fn active_run(&self, sync: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(&format!(
            "SELECT id FROM ebb_runs WHERE sync_name = $1 AND status IN ({})",
            status_list(&ACTIVE)
        ))
        .bind(sync)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Moves a run from `from` to `to`; false when it was no longer in `from`.
    pub async fn transition(
        &self,
        run_id: &str,
        from: RunStatus,
        to: RunStatus,
        error: Option<&str>,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let finished = to.is_terminal().then_some(now);
        let started = (from == RunStatus::Queued).then_some(now);
        let updated = sqlx::query(
            "UPDATE ebb_runs SET status = $1, error = COALESCE($2, error), finished_at = COALESCE($3, finished_at), \
             started_at = COALESCE(started_at, $4) WHERE id = $5 AND status = $6",
        )
        .bind(to.as_str())
        .bind(error)
        .bind(finished)
        .bind(started)
        .bind(run_id)
        .bind(from.as_str())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(updated == 1)
    }

    /// Records extraction's counts and the planned shards, and moves the run from
    /// querying to processing, in one transaction.
    pub async fn begin_processing(
        &self,
        run_id: &str,
        rows_queried: u64,
        null_keys: u64,
        null_key_rows: &[NullKeyRow],
        shards: &[ShardPlanRow],
        tasks: &[OutboxTask],
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        self.check_fence(&mut tx).await?;
        let updated = sqlx::query(
            "UPDATE ebb_runs SET status = $1, rows_queried = $2, invalid_null = $3, shards_total = $4 \
             WHERE id = $5 AND status = $6",
        )
        .bind(RunStatus::Processing.as_str())
        .bind(rows_queried as i64)
        .bind(null_keys as i64)
        .bind(shards.len() as i64)
        .bind(run_id)
        .bind(RunStatus::Querying.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated != 1 {
            return Ok(false);
        }
        for shard in shards {
            sqlx::query(
                "INSERT INTO ebb_run_shards (run_id, shard_index, range_start, range_last, base, status) \
                 VALUES ($1, $2, $3, $4, $5, 'pending')",
            )
            .bind(run_id)
            .bind(shard.index as i64)
            .bind(shard.range.start_hex())
            .bind(shard.range.last_hex())
            .bind(&shard.base)
            .execute(&mut *tx)
            .await?;
        }
        // A null-key row has no key: it is listed with an empty one.
        for row in null_key_rows {
            insert_run_row(&mut tx, run_id, "", "invalid", None, &row.reason()).await?;
        }
        for task in tasks {
            insert_outbox(&mut tx, task).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Moves a queued run to querying and writes its extract task to the
    /// outbox, in one transaction.
    pub async fn begin_querying(&self, run_id: &str, task: &OutboxTask) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let now = now_ms();
        let updated = sqlx::query(
            "UPDATE ebb_runs SET status = $1, started_at = COALESCE(started_at, $2) WHERE id = $3 AND status = $4",
        )
        .bind(RunStatus::Querying.as_str())
        .bind(now)
        .bind(run_id)
        .bind(RunStatus::Queued.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated != 1 {
            return Ok(false);
        }
        insert_outbox(&mut tx, task).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn mark_published(&self, task_id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE ebb_task_outbox SET published_at = $1 WHERE task_id = $2")
            .bind(now_ms())
            .bind(task_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Tasks of runs in flight written before `before_ms` and never published.
    pub async fn unpublished_tasks(&self, before_ms: i64) -> Result<Vec<OutboxTask>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT o.task_id, o.run_id, o.payload FROM ebb_task_outbox o JOIN ebb_runs r ON r.id = o.run_id \
             WHERE o.published_at IS NULL AND o.created_at < $1 AND r.status IN ({}) ORDER BY o.created_at, o.task_id",
            status_list(&ACTIVE)
        ))
        .bind(before_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(OutboxTask {
                    task_id: row.try_get("task_id")?,
                    run_id: row.try_get("run_id")?,
                    payload: records::from_hex(&row.try_get::<String, _>("payload")?)
                        .ok_or_else(|| StoreError::Corrupt("an outbox payload is not hex".into()))?,
                })
            })
            .collect()
    }

    /// Forgets the outbox rows of runs that ended: nothing will publish them.
    pub async fn prune_outbox(&self) -> Result<u64, StoreError> {
        Ok(sqlx::query(&format!(
            "DELETE FROM ebb_task_outbox WHERE run_id IN (SELECT id FROM ebb_runs WHERE status NOT IN ({}))",
            status_list(&ACTIVE)
        ))
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// Accepts one shard result: moves the snapshot pointers of its range, adds
    /// its counts to the run and records its row detail, all or nothing. A second
    /// result for the same shard, or one computed from pointers that have moved
    /// since, is refused and changes nothing.
    pub async fn commit_shard(
        &self,
        run_id: &str,
        sync: &str,
        report: &ShardReport,
    ) -> Result<CommitOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        self.check_fence(&mut tx).await?;
        let shard: Option<AnyRow> =
            sqlx::query("SELECT status, base FROM ebb_run_shards WHERE run_id = $1 AND shard_index = $2")
                .bind(run_id)
                .bind(report.index as i64)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(shard) = shard else {
            return Ok(CommitOutcome::UnknownShard);
        };
        if shard.try_get::<String, _>("status")? != "pending" {
            return Ok(CommitOutcome::Duplicate);
        }
        // A late result of a run that ended long ago no longer moves pointers:
        // the janitor may have collected its objects by now (see `janitor`).
        let finished_at: Option<i64> = sqlx::query_scalar("SELECT finished_at FROM ebb_runs WHERE id = $1")
            .bind(run_id)
            .fetch_optional(&mut *tx)
            .await?
            .flatten();
        let too_late = finished_at.is_some_and(|at| now_ms() - at > late_commit_window().as_millis() as i64);
        let pointers = load_pointers(&mut tx, sync).await?;
        let overlapping: Vec<&SnapshotPointer> = pointers.iter().filter(|p| p.range.overlaps(&report.range)).collect();
        let stale = too_late
            || records::pointer_base(&report.range, overlapping.iter().copied())
                != shard.try_get::<String, _>("base")?;
        if !stale {
            for pointer in &overlapping {
                let counts = pointer_bucket_rows(&mut tx, sync, &pointer.range).await?;
                sqlx::query("DELETE FROM ebb_snapshot_pointers WHERE sync_name = $1 AND range_start = $2")
                    .bind(sync)
                    .bind(pointer.range.start_hex())
                    .execute(&mut *tx)
                    .await?;
                for remainder in pointer.range.minus(&report.range) {
                    let kept: Vec<BucketRows> = counts
                        .iter()
                        .filter(|c| remainder.contains(HashRange::bucket(c.bucket as usize).start))
                        .copied()
                        .collect();
                    insert_pointer(&mut tx, sync, &remainder, &pointer.object_key, "", &kept).await?;
                }
            }
            insert_pointer(
                &mut tx,
                sync,
                &report.range,
                &report.snapshot_key,
                run_id,
                &report.snapshot_buckets,
            )
            .await?;
        }
        // Counts move only while the run is in flight; the guard is in the
        // statement, so a run that ends concurrently is never changed after.
        let (p, s, f) = (&report.planned, &report.succeeded, &report.failed);
        let counted = sqlx::query(
            "UPDATE ebb_runs SET shards_done = shards_done + 1, invalid_duplicate = invalid_duplicate + $1, \
             planned_added = planned_added + $2, planned_changed = planned_changed + $3, planned_removed = planned_removed + $4, \
             succeeded_added = succeeded_added + $5, succeeded_changed = succeeded_changed + $6, succeeded_removed = succeeded_removed + $7, \
             failed_added = failed_added + $8, failed_changed = failed_changed + $9, failed_removed = failed_removed + $10, \
             error = COALESCE(error, $11) WHERE id = $12 AND status IN ($13, $14, $15, $16)",
        )
        .bind(report.duplicate_keys as i64)
        .bind(p.added as i64)
        .bind(p.changed as i64)
        .bind(p.removed as i64)
        .bind(s.added as i64)
        .bind(s.changed as i64)
        .bind(s.removed as i64)
        .bind(f.added as i64)
        .bind(f.changed as i64)
        .bind(f.removed as i64)
        .bind(report.destination_error.as_deref())
        .bind(run_id)
        .bind(RunStatus::Queued.as_str())
        .bind(RunStatus::Querying.as_str())
        .bind(RunStatus::Processing.as_str())
        .bind(RunStatus::Reporting.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        let status = match (counted, stale) {
            (false, _) => "superseded",
            (true, true) => "stale",
            (true, false) => "committed",
        };
        sqlx::query(
            "UPDATE ebb_run_shards SET status = $1, snapshot_key = $2, rows_key = $3 \
             WHERE run_id = $4 AND shard_index = $5",
        )
        .bind(status)
        .bind((!stale).then_some(report.snapshot_key.as_str()))
        .bind(report.rows_key.as_deref())
        .bind(run_id)
        .bind(report.index as i64)
        .execute(&mut *tx)
        .await?;
        if !counted {
            tx.commit().await?;
            return Ok(CommitOutcome::Superseded);
        }
        for row in &report.invalid_sample {
            insert_run_row(&mut tx, run_id, &row.key, "invalid", None, "duplicate_key").await?;
        }
        for row in &report.rejected_sample {
            insert_run_row(
                &mut tx,
                run_id,
                &row.key,
                "rejected",
                Some(row.operation.as_str()),
                &row.error,
            )
            .await?;
        }
        let run = fetch_run(&mut *tx, run_id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("run {run_id} vanished")))?;
        tx.commit().await?;
        Ok(if stale {
            CommitOutcome::Stale(Box::new(run))
        } else {
            CommitOutcome::Committed(Box::new(run))
        })
    }

    /// A planned shard's status: pending, committed, stale or superseded.
    pub async fn shard_status(&self, run_id: &str, index: u32) -> Result<Option<String>, StoreError> {
        let row: Option<AnyRow> =
            sqlx::query("SELECT status FROM ebb_run_shards WHERE run_id = $1 AND shard_index = $2")
                .bind(run_id)
                .bind(index as i64)
                .fetch_optional(&self.pool)
                .await?;
        Ok(match row {
            Some(row) => Some(row.try_get("status")?),
            None => None,
        })
    }

    /// The row files of a run's committed shards, with the range each covers,
    /// in range order.
    pub async fn row_files(&self, run_id: &str) -> Result<Vec<(HashRange, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT range_start, range_last, rows_key FROM ebb_run_shards \
             WHERE run_id = $1 AND status IN ('committed', 'stale') AND rows_key IS NOT NULL ORDER BY range_start",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let range = HashRange::from_hex(
                    &row.try_get::<String, _>("range_start")?,
                    &row.try_get::<String, _>("range_last")?,
                )
                .map_err(StoreError::Corrupt)?;
                Ok((range, row.try_get::<String, _>("rows_key")?))
            })
            .collect()
    }

    /// How many rows the current snapshots of a sync hold in each bucket, as
    /// far as their commits said (`BUCKET_COUNT` counts).
    pub async fn snapshot_bucket_rows(&self, sync: &str) -> Result<Vec<u64>, StoreError> {
        let encoded: Vec<Option<String>> =
            sqlx::query_scalar("SELECT bucket_rows FROM ebb_snapshot_pointers WHERE sync_name = $1")
                .bind(sync)
                .fetch_all(&self.pool)
                .await?;
        let mut rows = vec![0u64; BUCKET_COUNT];
        for counts in encoded.iter().flatten() {
            for count in decode_bucket_rows(counts)? {
                if let Some(slot) = rows.get_mut(count.bucket as usize) {
                    *slot += count.rows;
                }
            }
        }
        Ok(rows)
    }

    /// The current snapshot pointers of a sync, ordered by range.
    pub async fn pointers(&self, sync: &str) -> Result<Vec<SnapshotPointer>, StoreError> {
        let mut connection = self.pool.acquire().await?;
        load_pointers(&mut connection, sync).await
    }

    pub async fn run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        let mut connection = self.pool.acquire().await?;
        fetch_run(&mut *connection, run_id).await
    }

    pub async fn runs(&self, sync: &str, limit: i64, offset: i64) -> Result<Vec<RunRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {} FROM ebb_runs WHERE sync_name = $1 ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3",
            records::RUN_COLUMNS
        ))
        .bind(sync)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(RunRecord::from_row).collect()
    }

    /// Runs left in flight by a coordinator that stopped.
    pub async fn active_runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {} FROM ebb_runs WHERE status IN ({}) ORDER BY created_at",
            records::RUN_COLUMNS,
            status_list(&ACTIVE)
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(RunRecord::from_row).collect()
    }

    pub async fn run_rows(
        &self,
        run_id: &str,
        kind: Option<&str>,
        key: Option<&str>,
        limit: i64,
    ) -> Result<Vec<RunRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT row_key, kind, operation, reason FROM ebb_run_rows WHERE run_id = $1 \
             AND ($2 IS NULL OR kind = $3) AND ($4 IS NULL OR row_key = $5) ORDER BY row_key LIMIT $6",
        )
        .bind(run_id)
        .bind(kind)
        .bind(kind)
        .bind(key)
        .bind(key)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(RunRow {
                    key: row.try_get("row_key")?,
                    kind: row.try_get("kind")?,
                    operation: row.try_get("operation")?,
                    reason: row.try_get("reason")?,
                })
            })
            .collect()
    }

    pub async fn sync_names(&self) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT name FROM ebb_syncs ORDER BY name")
            .fetch_all(&self.pool)
            .await?)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Answers when the database does (for readiness).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

async fn fetch_run<'e, E>(executor: E, run_id: &str) -> Result<Option<RunRecord>, StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let row = sqlx::query(&format!("SELECT {} FROM ebb_runs WHERE id = $1", records::RUN_COLUMNS))
        .bind(run_id)
        .fetch_optional(executor)
        .await?;
    row.as_ref().map(RunRecord::from_row).transpose()
}

async fn load_pointers(connection: &mut sqlx::AnyConnection, sync: &str) -> Result<Vec<SnapshotPointer>, StoreError> {
    let rows = sqlx::query(
        "SELECT range_start, range_last, object_key FROM ebb_snapshot_pointers WHERE sync_name = $1 ORDER BY range_start",
    )
    .bind(sync)
    .fetch_all(&mut *connection)
    .await?;
    rows.iter()
        .map(|row| {
            let start: String = row.try_get("range_start")?;
            let last: String = row.try_get("range_last")?;
            Ok(SnapshotPointer {
                range: HashRange::from_hex(&start, &last).map_err(StoreError::Corrupt)?,
                object_key: row.try_get("object_key")?,
            })
        })
        .collect()
}

async fn insert_pointer(
    connection: &mut sqlx::AnyConnection,
    sync: &str,
    range: &HashRange,
    object_key: &str,
    run_id: &str,
    bucket_rows: &[BucketRows],
) -> Result<(), StoreError> {
    let counts: Vec<(u32, u64)> = bucket_rows.iter().map(|c| (c.bucket, c.rows)).collect();
    sqlx::query(
        "INSERT INTO ebb_snapshot_pointers (sync_name, range_start, range_last, object_key, run_id, bucket_rows) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(sync)
    .bind(range.start_hex())
    .bind(range.last_hex())
    .bind(object_key)
    .bind(run_id)
    .bind(serde_json::to_string(&counts).expect("counts serialize"))
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// The per-bucket counts recorded with the pointer starting `range`.
async fn pointer_bucket_rows(
    connection: &mut sqlx::AnyConnection,
    sync: &str,
    range: &HashRange,
) -> Result<Vec<BucketRows>, StoreError> {
    let encoded: Option<Option<String>> =
        sqlx::query_scalar("SELECT bucket_rows FROM ebb_snapshot_pointers WHERE sync_name = $1 AND range_start = $2")
            .bind(sync)
            .bind(range.start_hex())
            .fetch_optional(&mut *connection)
            .await?;
    encoded
        .flatten()
        .map_or(Ok(Vec::new()), |counts| decode_bucket_rows(&counts))
}

fn decode_bucket_rows(encoded: &str) -> Result<Vec<BucketRows>, StoreError> {
    let counts: Vec<(u32, u64)> = serde_json::from_str(encoded)
        .map_err(|e| StoreError::Corrupt(format!("a snapshot pointer's bucket counts: {e}")))?;
    Ok(counts
        .into_iter()
        .map(|(bucket, rows)| BucketRows { bucket, rows })
        .collect())
}

async fn insert_outbox(connection: &mut sqlx::AnyConnection, task: &OutboxTask) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO ebb_task_outbox (task_id, run_id, payload, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (task_id) DO NOTHING",
    )
    .bind(&task.task_id)
    .bind(&task.run_id)
    .bind(records::to_hex(&task.payload))
    .bind(now_ms())
    .execute(&mut *connection)
    .await?;
    Ok(())
}

async fn insert_run_row(
    connection: &mut sqlx::AnyConnection,
    run_id: &str,
    key: &str,
    kind: &str,
    operation: Option<&str>,
    reason: &str,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO ebb_run_rows (run_id, row_key, kind, operation, reason) VALUES ($1, $2, $3, $4, $5)")
        .bind(run_id)
        .bind(key)
        .bind(kind)
        .bind(operation)
        .bind(reason)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// Sums of the three operations, as the API reports them.
pub fn op_counts(added: i64, changed: i64, removed: i64) -> OpCounts {
    OpCounts {
        added: added as u64,
        changed: changed as u64,
        removed: removed as u64,
    }
}
