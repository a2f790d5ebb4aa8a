//! The test model: a `people` table in PostgreSQL, its copy as a destination
//! table, and random mutations with the counts CDC must find for them.

use crate::sink::Sink;
use ebb_shared::protocol::OpCounts;
use rand::Rng;
use sqlx::{PgPool, Row};
use std::collections::{BTreeMap, BTreeSet};

const COLUMNS: &str = "id BIGINT PRIMARY KEY, email TEXT NOT NULL, name TEXT, score NUMERIC(10,2), active BOOLEAN";

/// Creates `people` with `rows` rows (ids 1..=rows) and an empty `people_copy`.
pub async fn create_people(pool: &PgPool, rows: i64) {
    sqlx::query(&format!("CREATE TABLE people ({COLUMNS})"))
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(&format!("CREATE TABLE people_copy ({COLUMNS})"))
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO people SELECT g, 'person' || g || '@example.com', 'Person ' || g, g % 101, g % 2 = 0 \
         FROM generate_series(1, $1::bigint) g",
    )
    .bind(rows)
    .execute(pool)
    .await
    .unwrap();
}

/// Random deletes, updates (of mapped columns) and inserts, at most `scale` of
/// each; returns what CDC must find. `next_id` is the first unused id.
pub async fn mutate(pool: &PgPool, next_id: &mut i64, scale: usize) -> OpCounts {
    let existing: Vec<i64> = sqlx::query_scalar("SELECT id FROM people ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap();
    let (deletes, updates, inserts) = {
        let mut rng = rand::rng();
        let mut chosen = BTreeSet::new();
        let deletes = rng.random_range(1..scale / 2);
        let updates = rng.random_range(1..scale);
        while chosen.len() < deletes + updates {
            chosen.insert(existing[rng.random_range(0..existing.len())]);
        }
        let chosen: Vec<i64> = chosen.into_iter().collect();
        (
            chosen[..deletes].to_vec(),
            chosen[deletes..].to_vec(),
            rng.random_range(1..scale),
        )
    };
    sqlx::query("DELETE FROM people WHERE id = ANY($1)")
        .bind(&deletes)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE people SET email = 'changed-' || md5(random()::text) || '@example.com', score = score + 1 WHERE id = ANY($1)",
    )
    .bind(&updates)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO people (id, email, name, score, active) \
         SELECT g, 'new' || g || '@example.com', 'New ' || g, g % 97, true FROM generate_series($1::bigint, $2::bigint) g",
    )
    .bind(*next_id)
    .bind(*next_id + inserts as i64 - 1)
    .execute(pool)
    .await
    .unwrap();
    *next_id += inserts as i64;
    OpCounts {
        added: inserts as u64,
        changed: updates.len() as u64,
        removed: deletes.len() as u64,
    }
}

pub async fn table_emails(pool: &PgPool, table: &str) -> BTreeMap<String, String> {
    sqlx::query(&format!("SELECT id, email FROM {table}"))
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<i64, _>("id").to_string(), r.get::<String, _>("email")))
        .collect()
}

pub async fn model_emails(pool: &PgPool) -> BTreeMap<String, String> {
    table_emails(pool, "people").await
}

pub fn sink_emails(sink: &Sink) -> BTreeMap<String, String> {
    sink.records()
        .into_iter()
        .map(|(key, fields)| (key, fields["email"].as_str().unwrap_or_default().to_string()))
        .collect()
}

/// A config syncing the `people` table model of a warehouse source (the
/// source's YAML flow mapping, named `warehouse`) in mirror mode to the
/// loopback HTTP API at `sink_url`, as sync `people-api`.
pub fn people_mirror_config(
    source_yaml: &str,
    table: &str,
    sink_url: &str,
    dir: &std::path::Path,
) -> std::sync::Arc<ebb_shared::config::Config> {
    let text = format!(
        "sources:\n  warehouse: {source_yaml}\n\
         models:\n  people: {{ source: warehouse, table: {table}, columns: [id, email, score, active], primary_key: id }}\n\
         destinations:\n  api: {{ type: http, url: \"{sink_url}\", batch_size: 500 }}\n\
         syncs:\n  people-api: {{ model: people, destination: api, mode: mirror, max_rows_per_shard: 25000 }}\n"
    );
    std::sync::Arc::new(
        ebb_worker::config::from_yaml_str(std::path::Path::new("people.yaml"), &text, dir)
            .unwrap_or_else(|errors| panic!("{errors}\n{text}")),
    )
}

/// Runs `people-api` of `config` on an embedded runtime three times over a
/// `people` table of `rows` rows, mutating it at random between runs: each
/// run plans and sends exactly the mutations, and leaves the destination
/// equal to the model.
pub async fn syncs_exactly_through_mutations(
    config: std::sync::Arc<ebb_shared::config::Config>,
    pool: &PgPool,
    sink: &Sink,
    rows: i64,
) {
    use ebb_coordinator::run::{RunStatus, TriggerOptions};
    let dir = tempfile::tempdir().unwrap();
    let runtime = ebb_coordinator::runtime::start_embedded(config, &dir.path().join("data"), 2, 2)
        .await
        .unwrap();
    let mut expected = OpCounts {
        added: rows as u64,
        ..Default::default()
    };
    let mut next_id = rows + 1;
    for round in 0..3 {
        let run = crate::embedded::run_to_end(&runtime, "people-api", TriggerOptions::default()).await;
        assert_eq!(run.status, RunStatus::Success, "round {round}: {run:?}");
        assert_eq!(run.planned, expected, "round {round}: planned rows");
        assert_eq!(run.succeeded, expected, "round {round}: sent rows");
        assert_eq!(
            sink_emails(sink),
            model_emails(pool).await,
            "round {round}: destination == model"
        );
        expected = mutate(pool, &mut next_id, 500).await;
    }
    runtime.shutdown(std::time::Duration::from_secs(10)).await;
}
