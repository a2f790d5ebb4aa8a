//! A PostgreSQL table: upsert on the key column, delete for mirror.
//!
//! A batch travels as one JSON array parameter and Postgres casts it to the
//! table's own column types (`json_populate_recordset`), so one statement writes
//! a whole batch. A statement that fails on bad data is replayed row by row, so
//! only the offending rows are rejected.

mod request;
mod response;

use super::{DeliveryError, Destination, Record, RowResults};
use crate::diff::Action;
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
    pub async fn connect(name: &str, config: &PostgresDestinationConfig) -> Result<Self, TaskError> {
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
        if !columns.contains(&config.key_column) {
            return Err(setup(format!(
                "table {} has no key column {:?} (its columns: {})",
                config.table,
                config.key_column,
                columns.join(", ")
            )));
        }
        let unique: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_index i \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
             WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indnkeyatts = 1 AND a.attname = $2)",
        )
        .bind(&config.table)
        .bind(&config.key_column)
        .fetch_one(&pool)
        .await
        .map_err(|e| setup(format!("cannot read the indexes of {}: {e}", config.table)))?;
        if !unique {
            return Err(setup(format!(
                "table {} needs a unique index or primary key on {:?} for upserts",
                config.table, config.key_column
            )));
        }
        Ok(PostgresDestination {
            pool,
            table: request::Table::new(
                &config.table,
                &config.key_column,
                columns.into_iter().collect::<BTreeSet<_>>(),
            ),
        })
    }

    async fn execute(&self, statement: &str, records: &[Record<'_>]) -> Result<(), sqlx::Error> {
        sqlx::query(statement)
            .bind(request::json_array(records))
            .execute(&self.pool)
            .await
            .map(|_| ())
    }
}

#[async_trait]
impl Destination for PostgresDestination {
    async fn send(&self, action: Action, records: &[Record<'_>]) -> Result<RowResults, DeliveryError> {
        let Some(first) = records.first() else {
            return Ok(Vec::new());
        };
        let fields = request::fields_of(first.json).map_err(DeliveryError::Permanent)?;
        let statement = self
            .table
            .statement(action, &fields)
            .map_err(DeliveryError::Permanent)?;
        match self.execute(&statement, records).await {
            Ok(()) => Ok(vec![Ok(()); records.len()]),
            Err(error) => match response::classify(&error) {
                response::Failure::Transient(message) => Err(DeliveryError::Transient(message)),
                response::Failure::Data(message) if records.len() == 1 => Ok(vec![Err(message)]),
                response::Failure::Data(_) => {
                    // Isolate the rows the database refuses; the rest go through.
                    let mut results = Vec::with_capacity(records.len());
                    for record in records {
                        let outcome = match self.execute(&statement, std::slice::from_ref(record)).await {
                            Ok(()) => Ok(()),
                            Err(error) => match response::classify(&error) {
                                response::Failure::Transient(message) => return Err(DeliveryError::Transient(message)),
                                response::Failure::Data(message) => Err(message),
                            },
                        };
                        results.push(outcome);
                    }
                    Ok(results)
                }
            },
        }
    }
}
