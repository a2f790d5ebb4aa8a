//! A run's extract parts: when a model is read in parts, each part's report
//! is kept here until every part is in, and the shards are planned from all
//! of them at once.

use super::records::{from_hex, to_hex};
use super::{insert_outbox, OutboxTask, StateStore, StoreError};
use crate::run::state::RunStatus;
use sqlx::Row;

/// What accepting one part's report did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartCommit {
    /// Recorded; `remaining` parts are still out.
    Accepted { remaining: u64 },
    /// The part was in already, or the run is no longer querying: nothing changed.
    Ignored,
}

impl StateStore {
    /// Records that a querying run's model is read in `tasks.len()` parts and
    /// puts their tasks in the outbox, in one transaction. False when the run
    /// is no longer querying or its parts were planned already (a repeated
    /// plan from a second attempt at the extract task).
    pub async fn begin_extract_parts(&self, run_id: &str, tasks: &[OutboxTask]) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        self.check_fence(&mut tx).await?;
        let updated =
            sqlx::query("UPDATE ebb_runs SET extract_parts = $1 WHERE id = $2 AND status = $3 AND extract_parts = 0")
                .bind(tasks.len() as i64)
                .bind(run_id)
                .bind(RunStatus::Querying.as_str())
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if updated != 1 {
            return Ok(false);
        }
        for (index, task) in tasks.iter().enumerate() {
            sqlx::query("INSERT INTO ebb_run_extract_parts (run_id, part_index, status) VALUES ($1, $2, 'pending')")
                .bind(run_id)
                .bind(index as i64)
                .execute(&mut *tx)
                .await?;
            insert_outbox(&mut tx, task).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Keeps one part's report (msgpack) if the part is still pending and its
    /// run still querying; the first report of a part wins.
    pub async fn commit_extract_part(&self, run_id: &str, index: u32, report: &[u8]) -> Result<PartCommit, StoreError> {
        let mut tx = self.pool.begin().await?;
        self.check_fence(&mut tx).await?;
        let updated = sqlx::query(
            "UPDATE ebb_run_extract_parts SET status = 'done', report = $1 \
             WHERE run_id = $2 AND part_index = $3 AND status = 'pending' \
             AND EXISTS (SELECT 1 FROM ebb_runs WHERE id = $2 AND status = $4)",
        )
        .bind(to_hex(report))
        .bind(run_id)
        .bind(index as i64)
        .bind(RunStatus::Querying.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated != 1 {
            return Ok(PartCommit::Ignored);
        }
        sqlx::query("UPDATE ebb_runs SET extract_parts_done = extract_parts_done + 1 WHERE id = $1")
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
        let remaining: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM ebb_run_extract_parts WHERE run_id = $1 AND status = 'pending'")
                .bind(run_id)
                .fetch_one(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(PartCommit::Accepted {
            remaining: remaining as u64,
        })
    }

    /// Every part's report in part order, or `None` while a part is pending.
    pub async fn extract_part_reports(&self, run_id: &str) -> Result<Option<Vec<Vec<u8>>>, StoreError> {
        let rows =
            sqlx::query("SELECT status, report FROM ebb_run_extract_parts WHERE run_id = $1 ORDER BY part_index")
                .bind(run_id)
                .fetch_all(&self.pool)
                .await?;
        let mut reports = Vec::with_capacity(rows.len());
        for row in &rows {
            let report: Option<String> = row.try_get("report")?;
            match (row.try_get::<String, _>("status")?.as_str(), report) {
                ("done", Some(report)) => reports.push(
                    from_hex(&report)
                        .ok_or_else(|| StoreError::Corrupt("an extract part's report is not hex".into()))?,
                ),
                _ => return Ok(None),
            }
        }
        Ok((!reports.is_empty()).then_some(reports))
    }

    /// A part's status (`pending` or `done`), if the run planned it.
    pub async fn extract_part_status(&self, run_id: &str, index: u32) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT status FROM ebb_run_extract_parts WHERE run_id = $1 AND part_index = $2")
                .bind(run_id)
                .bind(index as i64)
                .fetch_optional(&self.pool)
                .await?,
        )
    }
}
