//! Leadership of a fleet's coordinators: a PostgreSQL advisory lock held on a
//! connection of its own elects one leader; the epoch in `ebb_leader`, raised
//! by every new leader, fences a deposed one.
//!
//! Fencing works by lock order: a leader-only commit reads the epoch `FOR
//! SHARE` in its transaction, and a new leader raises it with an `UPDATE`,
//! which waits for those transactions. A commit either finishes before the
//! takeover (and the new leader sees it) or reads the new epoch and aborts.

use super::{now_ms, Dialect, StateStore, StoreError};
use sqlx::{Connection, Row};
use std::sync::atomic::Ordering;

/// The advisory lock's key: "ebb-lead" as an integer.
const LEADER_LOCK_KEY: i64 = 0x6562_622d_6c65_6164;

/// Who leads, as the leader wrote it on taking over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderRecord {
    pub epoch: i64,
    pub holder: String,
    /// Where the leader's API answers (for workers and standbys).
    pub url: String,
    pub since: i64,
}

/// The leadership lock, held for as long as this value and its connection
/// live. Dropping it (or the process dying) releases it.
pub struct LeadershipLock {
    connection: Option<sqlx::AnyConnection>,
}

/// What a check of the leadership lock's connection found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockCheck {
    /// It answered: PostgreSQL still holds the lock for this process.
    Held,
    /// No answer in time (a paused or overloaded database): the lock is most
    /// likely still ours, and no one else can take it while the database
    /// cannot answer them either.
    Silent,
    /// The connection failed: PostgreSQL has released the lock, or will.
    Lost,
}

impl LeadershipLock {
    /// Checks the lock's connection, waiting at most `within` for an answer.
    pub async fn check(&mut self, within: std::time::Duration) -> LockCheck {
        let Some(connection) = self.connection.as_mut() else {
            return LockCheck::Held; // SQLite: one process, nothing to lose
        };
        match tokio::time::timeout(within, sqlx::query("SELECT 1").execute(&mut *connection)).await {
            Ok(Ok(_)) => LockCheck::Held,
            Ok(Err(_)) => LockCheck::Lost,
            Err(_) => LockCheck::Silent,
        }
    }
}

impl StateStore {
    /// Tries to take the leadership lock, without waiting. SQLite (one
    /// process per data directory, which it locks) always has it.
    pub async fn try_lock_leadership(&self) -> Result<Option<LeadershipLock>, StoreError> {
        if self.dialect == Dialect::Sqlite {
            return Ok(Some(LeadershipLock { connection: None }));
        }
        let mut connection = self.pool.acquire().await?.detach();
        let taken: bool = sqlx::query("SELECT pg_try_advisory_lock($1) AS taken")
            .bind(LEADER_LOCK_KEY)
            .fetch_one(&mut connection)
            .await?
            .try_get("taken")?;
        if taken {
            Ok(Some(LeadershipLock {
                connection: Some(connection),
            }))
        } else {
            let _ = connection.close().await;
            Ok(None)
        }
    }

    /// Records this process as the leader under a new epoch, which its
    /// leader-only commits then carry. Call only while holding the lock.
    pub async fn take_leadership(&self, holder: &str, url: &str) -> Result<LeaderRecord, StoreError> {
        let mut tx = self.pool.begin().await?;
        let since = now_ms();
        sqlx::query("UPDATE ebb_leader SET epoch = epoch + 1, holder = $1, url = $2, since = $3 WHERE id = 1")
            .bind(holder)
            .bind(url)
            .bind(since)
            .execute(&mut *tx)
            .await?;
        let epoch: i64 = sqlx::query_scalar("SELECT epoch FROM ebb_leader WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        self.epoch.store(epoch, Ordering::SeqCst);
        Ok(LeaderRecord {
            epoch,
            holder: holder.to_string(),
            url: url.to_string(),
            since,
        })
    }

    /// The current leader, if any coordinator ever led.
    pub async fn leader(&self) -> Result<Option<LeaderRecord>, StoreError> {
        let row = sqlx::query("SELECT epoch, holder, url, since FROM ebb_leader WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let record = LeaderRecord {
            epoch: row.try_get("epoch")?,
            holder: row.try_get("holder")?,
            url: row.try_get("url")?,
            since: row.try_get("since")?,
        };
        Ok((record.epoch > 0).then_some(record))
    }

    /// Refuses a leader-only write of a deposed leader. A store that never
    /// took the leadership (a CLI reading runs) is not fenced.
    pub(super) async fn check_fence(&self, tx: &mut sqlx::AnyConnection) -> Result<(), StoreError> {
        let ours = self.epoch.load(Ordering::SeqCst);
        if ours == 0 || self.dialect == Dialect::Sqlite {
            return Ok(());
        }
        let current: i64 = sqlx::query_scalar("SELECT epoch FROM ebb_leader WHERE id = 1 FOR SHARE")
            .fetch_one(&mut *tx)
            .await?;
        if current != ours {
            return Err(StoreError::Deposed { ours, current });
        }
        Ok(())
    }
}
