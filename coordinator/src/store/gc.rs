//! What the janitor reads and writes: which objects the state DB references,
//! which runs are past retention, and when an unreferenced object was first
//! seen so.

use super::{now_ms, status_list, StateStore, StoreError};
use crate::run::state::ACTIVE;
use sqlx::Row;
use std::collections::{HashMap, HashSet};

/// Everything the state DB says about one sync's objects, read in one go.
#[derive(Debug, Default, Clone)]
pub struct SyncReferences {
    /// Every run the DB still holds: its id and, once it ended, when.
    pub runs: HashMap<String, Option<i64>>,
    /// Objects a snapshot pointer or a kept run's committed shard names.
    pub referenced: HashSet<String>,
    /// Runs past retention, to delete with their objects.
    pub expired: HashSet<String>,
    /// Unreferenced objects seen before, and when they were first seen.
    pub candidates: HashMap<String, i64>,
}

impl StateStore {
    /// Reads the references of `sync`. Runs that ended before `expire_before`
    /// are expired, except the sync's latest ended run, which is always kept
    /// so that the sync's last outcome stays visible.
    pub async fn sync_references(&self, sync: &str, expire_before: i64) -> Result<SyncReferences, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut references = SyncReferences::default();
        let runs = sqlx::query("SELECT id, status, finished_at FROM ebb_runs WHERE sync_name = $1")
            .bind(sync)
            .fetch_all(&mut *tx)
            .await?;
        let mut latest_ended: Option<(i64, String)> = None;
        for row in &runs {
            let id: String = row.try_get("id")?;
            let status: String = row.try_get("status")?;
            let active = ACTIVE.iter().any(|s| s.as_str() == status);
            // A run ended without a time (never the case today) counts as ending now.
            let finished_at: Option<i64> = if active {
                None
            } else {
                Some(row.try_get::<Option<i64>, _>("finished_at")?.unwrap_or_else(now_ms))
            };
            if let Some(at) = finished_at {
                if latest_ended.as_ref().is_none_or(|(latest, _)| at > *latest) {
                    latest_ended = Some((at, id.clone()));
                }
                if at < expire_before {
                    references.expired.insert(id.clone());
                }
            }
            references.runs.insert(id, finished_at);
        }
        if let Some((_, latest)) = latest_ended {
            references.expired.remove(&latest);
        }
        let pointers: Vec<String> =
            sqlx::query_scalar("SELECT object_key FROM ebb_snapshot_pointers WHERE sync_name = $1")
                .bind(sync)
                .fetch_all(&mut *tx)
                .await?;
        references.referenced.extend(pointers);
        let row_files = sqlx::query(
            "SELECT s.run_id, s.rows_key FROM ebb_run_shards s JOIN ebb_runs r ON r.id = s.run_id \
             WHERE r.sync_name = $1 AND s.status IN ('committed', 'stale') AND s.rows_key IS NOT NULL",
        )
        .bind(sync)
        .fetch_all(&mut *tx)
        .await?;
        for row in &row_files {
            let run_id: String = row.try_get("run_id")?;
            if !references.expired.contains(&run_id) {
                references.referenced.insert(row.try_get("rows_key")?);
            }
        }
        let candidates = sqlx::query("SELECT object_key, first_seen_at FROM ebb_gc_candidates WHERE sync_name = $1")
            .bind(sync)
            .fetch_all(&mut *tx)
            .await?;
        for row in &candidates {
            references
                .candidates
                .insert(row.try_get("object_key")?, row.try_get("first_seen_at")?);
        }
        tx.commit().await?;
        Ok(references)
    }

    /// Records objects first seen unreferenced at `seen_at`.
    pub async fn mark_gc_candidates(&self, sync: &str, keys: &[String], seen_at: i64) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for key in keys {
            sqlx::query(
                "INSERT INTO ebb_gc_candidates (object_key, sync_name, first_seen_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (object_key) DO NOTHING",
            )
            .bind(key)
            .bind(sync)
            .bind(seen_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Forgets candidates: collected, gone, or referenced again.
    pub async fn unmark_gc_candidates(&self, keys: &[String]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for key in keys {
            sqlx::query("DELETE FROM ebb_gc_candidates WHERE object_key = $1")
                .bind(key)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Deletes an ended run's records: its shards, row detail and outbox
    /// entries, then the run. Never an active run.
    pub async fn delete_run(&self, run_id: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let deleted = sqlx::query(&format!(
            "DELETE FROM ebb_runs WHERE id = $1 AND status NOT IN ({})",
            status_list(&ACTIVE)
        ))
        .bind(run_id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if deleted {
            for table in [
                "ebb_run_shards",
                "ebb_run_extract_parts",
                "ebb_run_rows",
                "ebb_task_outbox",
            ] {
                sqlx::query(&format!("DELETE FROM {table} WHERE run_id = $1"))
                    .bind(run_id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(deleted)
    }
}
