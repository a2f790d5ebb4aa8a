//! A PostgreSQL table: insert, update, upsert, clear and delete on the column
//! that identifies a record (the sync's record-matching field, or the
//! destination's `key_column`); audiences add and remove rows; events insert.
//!
//! A batch travels as one JSON array parameter and Postgres casts it to the
//! table's own column types (`json_populate_recordset`), so one statement writes
//! a whole batch. A statement that fails on bad data refuses the batch, and the
//! delivery engine sends it in halves until the offending rows are isolated.

mod request;
mod response;

use super::{DeliveryError, Destination, Record, RowResults};
use crate::behaviour::Action;
use crate::error::TaskError;
use async_trait::async_trait;
use ebb_shared::config::{expand_env, PostgresDestinationConfig};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use std::collections::BTreeSet;
use std::time::Duration;

pub struct PostgresDestination {
    pool: PgPool,
    table: request::Table,
}

impl PostgresDestination {
    pub async fn connect(
        name: &str,
        config: &PostgresDestinationConfig,
        matching: Option<&str>,
    ) -> Result<Self, TaskError> {
        let key_column = matching.unwrap_or(&config.key_column);
        let setup = |reason: String| TaskError::DestinationSetup {
            destination: name.to_string(),
            reason,
        };
        let url = expand_env(&config.url, &format!("destination {name:?} url"))?;
        let pool = PgPoolOptions::new()
            .max_connections(config.max_concurrency.unwrap_or(4).clamp(1, 32))
            .acquire_timeout(Duration::from_secs(15))
            .connect(&url)
            .await
            .map_err(|e| {
                setup(format!(
                    "cannot connect: {}",
                    ebb_shared::redact::redact_url(&e.to_string())
                ))
            })?;
        let columns: Vec<String> = sqlx::query_scalar(
            "SELECT a.attname::text FROM pg_attribute a \
             WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
        )
        .bind(&config.table)
        .fetch_all(&pool)
        .await
        .map_err(|e| setup(format!("cannot read the columns of {}: {e}", config.table)))?;
        if columns.is_empty() {
            return Err(setup(format!(
                "table {} does not exist (create it first)",
                config.table
            )));
        }
        if !columns.iter().any(|c| c == key_column) {
            return Err(setup(format!(
                "table {} has no column {key_column:?} to match records on (its columns: {})",
                config.table,
                columns.join(", ")
            )));
        }
        let unique: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_index i \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
             WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indnkeyatts = 1 AND a.attname = $2)",
        )
        .bind(&config.table)
        .bind(key_column)
        .fetch_one(&pool)
        .await
        .map_err(|e| setup(format!("cannot read the indexes of {}: {e}", config.table)))?;
        if !unique {
            return Err(setup(format!(
                "table {} needs a unique index or primary key on {key_column:?} to match records on",
                config.table
            )));
        }
        Ok(PostgresDestination {
            pool,
            table: request::Table::new(&config.table, key_column, columns.into_iter().collect::<BTreeSet<_>>()),
        })
    }
}

#[async_trait]
impl Destination for PostgresDestination {
    fn fields(&self) -> Option<Vec<String>> {
        Some(self.table.columns().iter().cloned().collect())
    }

    async fn send(&self, action: Action, records: &[Record<'_>]) -> Result<RowResults, DeliveryError> {
        let Some(first) = records.first() else {
            return Ok(Vec::new());
        };
        let fields = request::fields_of(first.json).map_err(DeliveryError::Permanent)?;
        let statement = self
            .table
            .statement(action, &fields)
            .map_err(DeliveryError::Permanent)?;
        let query = sqlx::query_scalar::<_, i64>(&statement.sql).bind(request::json_array(records));
        if !statement.reports_matches {
            return match query.fetch_all(&self.pool).await {
                Ok(_) => Ok(vec![Ok(()); records.len()]),
                Err(error) => Err(response::classify(&error)),
            };
        }
        let found: BTreeSet<i64> = match query.fetch_all(&self.pool).await {
            Ok(positions) => positions.into_iter().collect(),
            Err(error) => return Err(response::classify(&error)),
        };
        Ok(records
            .iter()
            .enumerate()
            .map(|(i, record)| {
                if found.contains(&(i as i64 + 1)) {
                    Ok(())
                } else {
                    Err(format!(
                        "no record with {} = {:?} to update",
                        self.table.key(),
                        request::field_text(record.json, self.table.key())
                    ))
                }
            })
            .collect())
    }
}
