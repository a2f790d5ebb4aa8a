//! A small sync scenario on embedded parts: a 40-row PostgreSQL model, an
//! empty destination (the PostgreSQL table `dest` or the local HTTP
//! destination) and one sync `s`, with the usual mutation between runs.

use crate::embedded::run_to_end;
use crate::model::create_people;
use crate::services::{fresh_postgres_database, TestDatabase};
use crate::sink::Sink;
use ebb_coordinator::run::TriggerOptions;
use ebb_coordinator::runtime::{start_embedded, Runtime};
use ebb_coordinator::store::RunRecord;
use sqlx::{PgPool, Row};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub const ROWS: i64 = 40;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    Http,
    Table,
}

/// What a destination holds: record id → email (`None` once cleared).
pub type Held = BTreeMap<String, Option<String>>;

pub struct Case {
    pub pool: PgPool,
    pub sink: Sink,
    runtime: Option<Runtime>,
    pub target: Target,
    pub database_url: String,
    /// The model's query; takes effect at the next `reconfigure`.
    pub query: String,
    dir: tempfile::TempDir,
    /// Dropped with the case (after the runtime, which holds connections to it).
    _database: TestDatabase,
}

impl Case {
    /// A model of 40 people, an empty destination and one sync `s` with
    /// `sync` (type, mode, delete behaviour, mappings) to `target`.
    pub async fn start(target: Target, sync: &str) -> Case {
        let database = fresh_postgres_database("scenario").await;
        let pool = PgPool::connect(&database.url).await.unwrap();
        create_people(&pool, ROWS).await;
        sqlx::query("CREATE TABLE dest (id BIGINT PRIMARY KEY, email TEXT, name TEXT, score NUMERIC, active BOOLEAN)")
            .execute(&pool)
            .await
            .unwrap();
        let sink = Sink::start().await;
        let dir = tempfile::tempdir().unwrap();
        let mut case = Case {
            pool,
            sink,
            runtime: None,
            target,
            database_url: database.url.clone(),
            query: "SELECT id, email, name, score, active FROM people".to_string(),
            dir,
            _database: database,
        };
        case.reconfigure(sync).await;
        case
    }

    /// Restarts the runtime on the same state with a new sync definition (and
    /// the current `query`), as a user editing the config would.
    pub async fn reconfigure(&mut self, sync: &str) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown(Duration::from_secs(5)).await;
        }
        let destination = match self.target {
            Target::Http => "dest",
            Target::Table => "table",
        };
        let text = format!(
            r#"
sources:
  warehouse: {{ type: postgres, url: "{url}" }}
models:
  people: {{ source: warehouse, query: "{query}", primary_key: id }}
destinations:
  dest: {{ type: http, url: "{sink}", batch_size: 7 }}
  table: {{ type: postgres, url: "{url}", table: dest, key_column: id, batch_size: 7 }}
syncs:
  s:
    model: people
    destination: {destination}
    shards: 2
{sync}
"#,
            url = self.database_url,
            query = self.query,
            sink = self.sink.url(),
        );
        let config = ebb_worker::config::from_yaml_str(Path::new("scenario.yaml"), &text, self.dir.path())
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        self.runtime = Some(start_embedded(Arc::new(config), self.dir.path(), 2, 2).await.unwrap());
    }

    pub fn runtime(&self) -> &Runtime {
        self.runtime.as_ref().expect("started")
    }

    /// Runs `s` with these options until it ends.
    pub async fn run_with(&self, options: TriggerOptions) -> RunRecord {
        run_to_end(self.runtime(), "s", options).await
    }

    pub async fn run(&self) -> RunRecord {
        self.run_with(TriggerOptions::default()).await
    }

    /// 4 rows changed (ids 1–4), 3 removed (5–7), 3 added (101–103).
    pub async fn mutate(&self) {
        for statement in [
            "UPDATE people SET email = 'changed-' || id || '@example.com' WHERE id <= 4",
            "DELETE FROM people WHERE id BETWEEN 5 AND 7",
            "INSERT INTO people SELECT g, 'person' || g || '@example.com', 'Person ' || g, 1, true \
             FROM generate_series(101, 103) g",
        ] {
            sqlx::query(statement).execute(&self.pool).await.unwrap();
        }
    }

    pub async fn model(&self) -> Held {
        sqlx::query("SELECT id, email FROM people")
            .fetch_all(&self.pool)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get::<i64, _>("id").to_string(), r.get::<Option<String>, _>("email")))
            .collect()
    }

    pub async fn held(&self) -> Held {
        match self.target {
            Target::Http => self
                .sink
                .records()
                .into_iter()
                .map(|(id, fields)| (id, fields["email"].as_str().map(str::to_string)))
                .collect(),
            Target::Table => sqlx::query("SELECT id, email FROM dest")
                .fetch_all(&self.pool)
                .await
                .unwrap()
                .iter()
                .map(|r| (r.get::<i64, _>("id").to_string(), r.get::<Option<String>, _>("email")))
                .collect(),
        }
    }

    /// Records that exist in the destination before any sync.
    pub async fn seed(&self, ids: std::ops::RangeInclusive<i64>) {
        for id in ids {
            match self.target {
                Target::Http => self.sink.seed(
                    &id.to_string(),
                    serde_json::json!({"id": id, "email": format!("seed-{id}@example.com")}),
                ),
                Target::Table => {
                    sqlx::query("INSERT INTO dest (id, email) VALUES ($1, 'seed-' || $1 || '@example.com')")
                        .bind(id)
                        .execute(&self.pool)
                        .await
                        .unwrap();
                }
            }
        }
    }

    pub async fn stop(mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown(Duration::from_secs(5)).await;
        }
    }
}
