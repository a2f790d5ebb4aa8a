//! A PostgreSQL table: insert, update, upsert, clear and delete on the column
//! that identifies a record (the sync's record-matching field, or the
//! destination's `key_column`); audiences add and remove rows; events insert.
//!
//! A batch travels as one JSON array parameter and Postgres casts it to the
//! table's own column types (`json_populate_recordset`), so one statement writes
//! a whole batch. A statement that fails on bad data refuses the batch, and the
//! delivery engine sends it in halves until the offending rows are isolated.

mod config;
mod request;
mod response;

use super::settings::{self, Documented, Requested};
use super::{Connector, DeliveryError, Destination, Field, Record, RowResults};
use crate::behaviour::Action;
use crate::error::TaskError;
use async_trait::async_trait;
pub use config::PostgresDestinationConfig;
use ebb_shared::config::{
    expand_env, BatchLimits, Capabilities, DeleteBehavior, DestinationProfile, FieldError, SyncMode, SyncSpec,
    SyncType, DEFAULT_MAX_RETRY_AFTER,
};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// The connector.
pub struct Postgres;

/// A table has no request limit of its own; one statement carries a batch as
/// one JSON parameter, which PostgreSQL caps at 1 GB.
const DOCUMENTED: Documented = Documented {
    rate_limit: None,
    rate_window: None,
    max_concurrency: None,
    batch: BatchLimits {
        records: 100_000,
        bytes: 256 * 1024 * 1024,
    },
    default_batch_size: 1000,
};

impl Connector for Postgres {
    const TYPE: &'static str = "postgres";
    type Config = PostgresDestinationConfig;

    fn profile(config: &Self::Config) -> Result<DestinationProfile, FieldError> {
        let requested = Requested {
            batch_size: config.batch_size,
            rate_limit: config.rate_limit,
            max_concurrency: config.max_concurrency,
        };
        let (limits, batch) = settings::apply(&DOCUMENTED, requested)?;
        Ok(DestinationProfile {
            // A table has no notion of an archived row.
            capabilities: Capabilities {
                sync_types: SyncType::ALL,
                modes: &[
                    SyncMode::Insert,
                    SyncMode::Update,
                    SyncMode::Upsert,
                    SyncMode::Mirror,
                    SyncMode::AddRemove,
                    SyncMode::All,
                ],
                delete_behaviors: DeleteBehavior::ALL,
            },
            limits,
            batch,
            max_retry_after: DEFAULT_MAX_RETRY_AFTER,
            expanded_settings: vec![(vec!["url".into()], config.url.clone())],
        })
    }

    /// Connecting checks the table, its key column and its unique index.
    async fn test_connection(config: Self::Config, name: &str) -> Result<(), String> {
        PostgresDestination::connect(name, &config, None)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn fields(config: Self::Config, name: &str, _: Option<&str>) -> Result<Option<Vec<Field>>, String> {
        let table = PostgresDestination::connect(name, &config, None)
            .await
            .map_err(|e| e.to_string())?;
        let key = config.key_column.clone();
        Ok(Some(
            table
                .table
                .columns()
                .iter()
                .cloned()
                .map(|name| Field {
                    unique: name == key,
                    kind: "column".into(),
                    writable: true,
                    name,
                })
                .collect(),
        ))
    }

    async fn open(config: Self::Config, spec: &SyncSpec) -> Result<Arc<dyn Destination>, TaskError> {
        let matching = spec.record_matching.as_ref().map(|m| m.to.as_str());
        Ok(Arc::new(
            PostgresDestination::connect(&spec.destination_name, &config, matching).await?,
        ))
    }
}

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
