//! A model read in parts (`extract_tasks`) by several extract tasks: each
//! reads a range of the primary key, and the coordinator plans the shards once
//! every part is in. What the run finds and the snapshots it writes are the
//! same, byte for byte, as when one task reads the model whole — for integer
//! keys cut by their bounds, keys of other types cut by their order, null and
//! duplicate keys, on PostgreSQL and MariaDB, through mutations.

use ebb_coordinator::run::{RunStatus, TriggerOptions};
use ebb_coordinator::runtime::{start_embedded, Runtime};
use ebb_coordinator::store::RunRecord;
use ebb_shared::hashing::HashRange;
use ebb_shared::snapshot::read_entries;
use ebb_shared::storage::Storage;
use ebb_tests::embedded::run_to_end;
use ebb_tests::model::{create_people, mutate};
use ebb_tests::services::{fresh_mysql_database, fresh_postgres_database};
use ebb_tests::sink::Sink;
use sqlx::PgPool;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Two syncs of one model definition, `whole` read by one task and `parts`
/// by `tasks`, each to its own sink, with fixed shards so their snapshots
/// cover the same ranges.
struct Pair {
    runtime: Runtime,
    whole: Sink,
    parts: Sink,
    dir: tempfile::TempDir,
}

async fn pair(source_yaml: &str, model_yaml: &str, tasks: u32) -> Pair {
    let (whole, parts) = (Sink::start().await, Sink::start().await);
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "sources:\n  db: {source_yaml}\n\
         models:\n  \
           read_whole: {{ source: db, {model_yaml}, extract_tasks: 1 }}\n  \
           read_in_parts: {{ source: db, {model_yaml}, extract_tasks: {tasks} }}\n\
         destinations:\n  \
           whole_api: {{ type: http, url: \"{}\", batch_size: 500 }}\n  \
           parts_api: {{ type: http, url: \"{}\", batch_size: 500 }}\n\
         syncs:\n  \
           whole: {{ model: read_whole, destination: whole_api, mode: mirror, shards: 4 }}\n  \
           parts: {{ model: read_in_parts, destination: parts_api, mode: mirror, shards: 4 }}\n",
        whole.url(),
        parts.url()
    );
    let config = Arc::new(
        ebb_worker::config::from_yaml_str(Path::new("parts.yaml"), &text, dir.path())
            .unwrap_or_else(|errors| panic!("{errors}\n{text}")),
    );
    let runtime = start_embedded(config, &dir.path().join("data"), 2, 2).await.unwrap();
    Pair {
        runtime,
        whole,
        parts,
        dir,
    }
}

impl Pair {
    /// Runs both syncs; each run's record, whole first.
    async fn run_both(&self) -> (RunRecord, RunRecord) {
        let whole = run_to_end(&self.runtime, "whole", TriggerOptions::default()).await;
        let parts = run_to_end(&self.runtime, "parts", TriggerOptions::default()).await;
        (whole, parts)
    }

    /// The committed snapshot of `sync`: per pointer, its range, its bucket
    /// index and its entries' bytes — everything but the header's sync name
    /// and run id.
    async fn snapshot(&self, sync: &str) -> Vec<(HashRange, Vec<u64>, u64, Vec<u8>)> {
        let storage = Storage::from_url(&self.dir.path().join("data/objects").display().to_string()).unwrap();
        let mut pointers = self
            .runtime
            .coordinator
            .as_ref()
            .unwrap()
            .store()
            .pointers(sync)
            .await
            .unwrap();
        pointers.sort_by_key(|p| p.range.start);
        let mut parts = Vec::new();
        for pointer in pointers {
            if pointer.object_key.is_empty() {
                // The empty snapshot a new sync starts from.
                parts.push((pointer.range, Vec::new(), 0, Vec::new()));
                continue;
            }
            let bytes = storage.get(&pointer.object_key).await.unwrap();
            let (header, _) = read_entries(&bytes).unwrap();
            let header_end = 8 + u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
            parts.push((
                header.range,
                header.bucket_offsets,
                header.entries,
                bytes[header_end..].to_vec(),
            ));
        }
        parts
    }

    /// Both syncs' snapshots are the same, byte for byte, and hold `rows` entries.
    async fn assert_same_snapshots(&self, rows: u64, when: &str) {
        let (whole, parts) = (self.snapshot("whole").await, self.snapshot("parts").await);
        assert_eq!(whole.len(), 4, "{when}: four shards' snapshots");
        assert_eq!(
            whole.iter().map(|p| p.2).sum::<u64>(),
            rows,
            "{when}: entries in the snapshot"
        );
        assert!(
            whole == parts,
            "{when}: the snapshots of a model read in parts differ from one read whole"
        );
    }

    async fn shutdown(self) {
        self.runtime.shutdown(Duration::from_secs(5)).await;
    }
}

fn assert_read_in(run: &RunRecord, parts: u64) {
    assert_eq!(run.status, RunStatus::Success, "{run:?}");
    assert_eq!(
        (run.extract_parts, run.extract_parts_done),
        (parts, parts),
        "extract parts of {run:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_model_read_in_parts_writes_the_snapshots_of_one_read_whole_through_mutations() {
    let database = fresh_postgres_database("parts").await;
    let pool = PgPool::connect(&database.url).await.unwrap();
    create_people(&pool, 100_000).await;
    let source = format!("{{ type: postgres, url: \"{}\" }}", database.url);
    let pair = pair(&source, "table: public.people, primary_key: id", 4).await;
    let mut next_id = 100_001;
    let mut rows = 100_000u64;
    for round in 0..3 {
        let (whole, parts) = pair.run_both().await;
        assert_read_in(&whole, 0);
        assert_read_in(&parts, 4);
        assert_eq!(parts.rows_queried, rows, "round {round}");
        assert_eq!(
            (parts.planned, parts.succeeded),
            (whole.planned, whole.succeeded),
            "round {round}: both find and send the same rows"
        );
        assert_eq!(
            pair.parts.records(),
            pair.whole.records(),
            "round {round}: both destinations hold the model"
        );
        assert_eq!(pair.parts.records().len() as u64, rows, "round {round}");
        pair.assert_same_snapshots(rows, &format!("round {round}")).await;
        let change = mutate(&pool, &mut next_id, 500).await;
        rows = rows + change.added - change.removed;
    }
    pair.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_and_duplicate_keys_of_a_model_read_in_parts_are_counted_once() {
    let database = fresh_postgres_database("parts_invalid").await;
    let pool = PgPool::connect(&database.url).await.unwrap();
    create_people(&pool, 1_000).await;
    let source = format!("{{ type: postgres, url: \"{}\" }}", database.url);
    let model = "query: \"SELECT CASE WHEN id <= 3 THEN NULL WHEN id IN (500, 501) THEN 500 ELSE id END AS key, \
                 email FROM people\", primary_key: key";
    let pair = pair(&source, model, 3).await;
    let (whole, parts) = pair.run_both().await;
    assert_eq!(parts.status, RunStatus::Warning, "{parts:?}");
    assert_eq!((parts.extract_parts, parts.extract_parts_done), (3, 3));
    assert_eq!(
        (parts.rows_queried, parts.invalid_null, parts.invalid_duplicate),
        (1_000, 3, 2),
        "every null key once, in the first part; the duplicates inside one part"
    );
    assert_eq!(
        (whole.rows_queried, whole.invalid_null, whole.invalid_duplicate),
        (1_000, 3, 2)
    );
    assert_eq!(parts.succeeded, whole.succeeded);
    let store = pair.runtime.coordinator.as_ref().unwrap().store();
    let invalid = store.run_rows(&parts.id, Some("invalid"), None, 100).await.unwrap();
    assert_eq!(invalid.iter().filter(|r| r.key.is_empty()).count(), 3, "{invalid:?}");
    pair.assert_same_snapshots(995, "invalid keys").await;
    pair.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_without_a_minimum_are_split_in_the_sources_order() {
    // PostgreSQL has no MIN(uuid): the parts are cut at every n-th key in
    // the database's own order instead.
    let database = fresh_postgres_database("parts_uuid").await;
    let pool = PgPool::connect(&database.url).await.unwrap();
    create_people(&pool, 20_000).await;
    let source = format!("{{ type: postgres, url: \"{}\" }}", database.url);
    let model = "query: \"SELECT md5(id::text)::uuid AS key, email, score FROM people\", primary_key: key";
    let pair = pair(&source, model, 4).await;
    let (whole, parts) = pair.run_both().await;
    assert_read_in(&whole, 0);
    assert_read_in(&parts, 4);
    assert_eq!(parts.rows_queried, 20_000);
    assert_eq!(parts.succeeded.added, 20_000);
    pair.assert_same_snapshots(20_000, "uuid keys").await;
    pair.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_keys_on_mariadb_are_split_and_read_once() {
    let database = fresh_mysql_database("parts").await;
    let pool = sqlx::MySqlPool::connect(&database.url).await.unwrap();
    sqlx::query("CREATE TABLE people (email VARCHAR(64) PRIMARY KEY, score INT)")
        .execute(&pool)
        .await
        .unwrap();
    // Keys a literal could not hold (a quote, a backslash) are never
    // boundaries; the rows around them are still read once.
    sqlx::query(
        "INSERT INTO people WITH RECURSIVE d(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM d WHERE i < 99), \
         n(i) AS (SELECT a.i * 100 + b.i + 1 FROM d a, d b) \
         SELECT CONCAT(CASE WHEN i % 7 = 0 THEN 'o''brien' WHEN i % 11 = 0 THEN 'back\\\\slash' ELSE 'person' END, \
         i, '@example.com'), i FROM n",
    )
    .execute(&pool)
    .await
    .unwrap();
    let source = format!("{{ type: mariadb, url: \"{}\" }}", database.url);
    let pair = pair(&source, "table: people, primary_key: email", 8).await;
    let (whole, parts) = pair.run_both().await;
    assert_read_in(&whole, 0);
    // In key order the 779 `back\slash…` keys come first, then the 1,429
    // `o'brien…` ones: the cut at the 1,250th key falls among those and is
    // dropped, so 8 parts become 7.
    assert_read_in(&parts, 7);
    assert_eq!(parts.rows_queried, 10_000);
    assert_eq!(pair.parts.records(), pair.whole.records());
    pair.assert_same_snapshots(10_000, "mariadb text keys").await;
    pair.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_part_fails_its_run_by_name_and_moves_no_snapshot() {
    let database = fresh_postgres_database("parts_fail").await;
    let pool = PgPool::connect(&database.url).await.unwrap();
    create_people(&pool, 1_000).await;
    let source = format!("{{ type: postgres, url: \"{}\" }}", database.url);
    // Only the last part holds id 900: its query divides by zero.
    let model = "query: \"SELECT id, email, 1 / (id - 900) AS odd FROM people\", primary_key: id";
    let pair = pair(&source, model, 4).await;
    let run = run_to_end(&pair.runtime, "parts", TriggerOptions::default()).await;
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    let error = run.error.clone().unwrap_or_default();
    assert!(error.contains("division by zero"), "{error}");
    assert!(error.contains("/extract-3"), "the error names the part's task: {error}");
    assert_eq!(run.extract_parts, 4);
    assert!(pair.parts.records().is_empty(), "nothing was sent");
    assert!(
        pair.snapshot("parts").await.iter().all(|part| part.2 == 0),
        "the committed snapshot is still the empty one"
    );
    pair.shutdown().await;
}
