//! Property tests of change data capture through real syncs: random sequences
//! of model mutations (inserts, updates, deletes, a column's type changing,
//! null and duplicate keys) and random destination failures (per-record
//! rejections, batches refused without detail, `429`s, timeouts after the
//! destination applied a batch) drive real runs on the embedded runtime,
//! against PostgreSQL and the local HTTP destination.
//!
//! After every run without failures the destination holds what the mode
//! promises (upsert: every valid row, and the rows it kept; mirror: exactly the
//! model; insert: every key, once), and no accepted row is ever sent twice
//! outside an in-flight retry: a key is applied at most once per state it took
//! in the model, plus once per request that timed out after applying it.
//!
//! `EBB_PROPTEST_CASES` sets the number of cases (default 16).

use ebb_coordinator::run::{RunStatus, TriggerOptions};
use ebb_coordinator::runtime::{start_embedded, Runtime};
use ebb_tests::embedded::run_to_end;
use ebb_tests::services::fresh_postgres_database;
use ebb_tests::sink::{Behavior, Sink};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use serde_json::{json, Value};
use sqlx::{PgPool, Row};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const KEYS: u8 = 24;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Upsert,
    Mirror,
    Insert,
}

#[derive(Debug, Clone)]
enum Mutation {
    /// Insert or update row `key` to `score`.
    Put(u8, i32),
    Delete(u8),
    /// `score` switches between integer and text for every row.
    FlipScoreType,
    NullKey(i32),
    /// A second row with an existing key.
    Duplicate(u8, i32),
}

#[derive(Debug, Clone, Default)]
struct Failures {
    reject: BTreeSet<u8>,
    refuse: BTreeSet<u8>,
    throttle: u32,
    /// Requests that time out after the destination applied them.
    timeouts: u32,
}

impl Failures {
    fn any(&self) -> bool {
        !self.reject.is_empty() || !self.refuse.is_empty() || self.throttle > 0 || self.timeouts > 0
    }
}

#[derive(Debug, Clone)]
struct Step {
    mutations: Vec<Mutation>,
    failures: Failures,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        6 => (0..KEYS, 0..4i32).prop_map(|(k, s)| Mutation::Put(k, s)),
        3 => (0..KEYS).prop_map(Mutation::Delete),
        1 => Just(Mutation::FlipScoreType),
        1 => (0..4i32).prop_map(Mutation::NullKey),
        1 => (0..KEYS, 0..4i32).prop_map(|(k, s)| Mutation::Duplicate(k, s)),
    ]
}

fn failures() -> impl Strategy<Value = Failures> {
    prop_oneof![
        2 => Just(Failures::default()),
        3 => (
            prop::collection::btree_set(0..KEYS, 0..4),
            prop::collection::btree_set(0..KEYS, 0..3),
            0..3u32,
            0..3u32,
        )
            .prop_map(|(reject, refuse, throttle, timeouts)| Failures {
                reject,
                refuse,
                throttle,
                timeouts,
            }),
    ]
}

fn scenario() -> impl Strategy<Value = (Mode, Vec<(u8, i32)>, Vec<Step>)> {
    (
        prop_oneof![Just(Mode::Upsert), Just(Mode::Mirror), Just(Mode::Insert)],
        prop::collection::vec((0..KEYS, 0..4i32), 0..20),
        prop::collection::vec(
            (prop::collection::vec(mutation(), 0..10), failures())
                .prop_map(|(mutations, failures)| Step { mutations, failures }),
            1..5,
        ),
    )
}

struct Harness {
    pool: PgPool,
    database_url: String,
}

/// The model as Ebb must see it: valid keys (one row, non-null) and their
/// record; keys with more than one row are invalid.
struct ModelState {
    valid: BTreeMap<String, Value>,
    duplicated: BTreeSet<String>,
}

impl Harness {
    async fn reset(&self) {
        sqlx::query("DROP TABLE IF EXISTS p").execute(&self.pool).await.unwrap();
        sqlx::query("CREATE TABLE p (id TEXT, score INT)")
            .execute(&self.pool)
            .await
            .unwrap();
    }

    async fn apply(&self, mutation: &Mutation, score_as_text: &mut bool) {
        let (sql, key, score): (&str, Option<String>, i32) = match mutation {
            Mutation::Put(k, s) => {
                // An update of every row with the key, or an insert.
                let updated = sqlx::query("UPDATE p SET score = $2 WHERE id = $1")
                    .bind(k.to_string())
                    .bind(s)
                    .execute(&self.pool)
                    .await
                    .unwrap()
                    .rows_affected();
                if updated > 0 {
                    return;
                }
                ("INSERT INTO p VALUES ($1, $2)", Some(k.to_string()), *s)
            }
            Mutation::Delete(k) => ("DELETE FROM p WHERE id = $1 AND $2 = $2", Some(k.to_string()), 0),
            Mutation::FlipScoreType => {
                *score_as_text = !*score_as_text;
                return;
            }
            Mutation::NullKey(s) => ("INSERT INTO p VALUES ($1, $2)", None, *s),
            Mutation::Duplicate(k, s) => {
                let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM p WHERE id = $1)")
                    .bind(k.to_string())
                    .fetch_one(&self.pool)
                    .await
                    .unwrap();
                if !exists {
                    return;
                }
                ("INSERT INTO p VALUES ($1, $2)", Some(k.to_string()), *s)
            }
        };
        sqlx::query(sql)
            .bind(key)
            .bind(score)
            .execute(&self.pool)
            .await
            .unwrap();
    }

    async fn model(&self, score_as_text: bool) -> ModelState {
        let rows = sqlx::query("SELECT id, score FROM p WHERE id IS NOT NULL")
            .fetch_all(&self.pool)
            .await
            .unwrap();
        let mut by_key: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for row in rows {
            by_key.entry(row.get("id")).or_default().push(row.get("score"));
        }
        let mut state = ModelState {
            valid: BTreeMap::new(),
            duplicated: BTreeSet::new(),
        };
        for (key, scores) in by_key {
            if scores.len() > 1 {
                state.duplicated.insert(key);
                continue;
            }
            let score = if score_as_text {
                json!(scores[0].to_string())
            } else {
                json!(scores[0])
            };
            state.valid.insert(key.clone(), json!({"id": key, "score": score}));
        }
        state
    }

    async fn runtime(&self, mode: Mode, score_as_text: bool, sink: &Sink, dir: &Path) -> Runtime {
        let query = if score_as_text {
            "SELECT id, score::text AS score FROM p"
        } else {
            "SELECT id, score FROM p"
        };
        let mode = match mode {
            Mode::Upsert => "upsert",
            Mode::Mirror => "mirror",
            Mode::Insert => "insert",
        };
        let text = format!(
            r#"
sources:
  warehouse: {{ type: postgres, url: "{url}" }}
models:
  m: {{ source: warehouse, query: "{query}", primary_key: id }}
destinations:
  api: {{ type: http, url: "{sink}", batch_size: 4, timeout: 300ms }}
syncs:
  s: {{ model: m, destination: api, mode: {mode}, shards: 2 }}
"#,
            url = self.database_url,
            sink = sink.url()
        );
        let config = ebb_worker::config::from_yaml_str(Path::new("prop.yaml"), &text, dir).unwrap();
        start_embedded(Arc::new(config), dir, 2, 2).await.unwrap()
    }
}

fn behavior(failures: &Failures) -> Behavior {
    Behavior {
        reject_keys: failures.reject.iter().map(|k| k.to_string()).collect(),
        refuse_batches_with: failures.refuse.iter().map(|k| k.to_string()).collect(),
        throttle_times: failures.throttle,
        throttle_retry_after_secs: 0,
        slow_times: failures.timeouts,
        slow_latency: Duration::from_millis(600),
        ..Default::default()
    }
}

/// How many times each key may be applied at most: once per state it took
/// in the model (a new value, or a return after leaving or being invalid).
#[derive(Default)]
struct SendBudget {
    last_seen: HashMap<String, Value>,
    allowed: HashMap<String, u32>,
    timeouts: u32,
    /// Keys in the model during a run without failures: an insert sync must
    /// have sent each of them. (A key rejected and then gone from the model
    /// before a clean run never is.)
    must_have_sent: std::collections::HashSet<String>,
}

impl SendBudget {
    /// A request that timed out after it was applied is sent again: each may
    /// apply any key once more.
    fn allow_resends(&mut self, timeouts: u32) {
        self.timeouts += timeouts;
        for allowed in self.allowed.values_mut() {
            *allowed += timeouts;
        }
    }

    fn observe(&mut self, model: &ModelState, mode: Mode) {
        for (key, record) in &model.valid {
            let novel = self.last_seen.get(key) != Some(record);
            let first = !self.allowed.contains_key(key);
            if (mode != Mode::Insert && novel) || first {
                *self.allowed.entry(key.clone()).or_default() += 1;
            }
        }
        self.last_seen.retain(|key, _| model.valid.contains_key(key));
        for (key, record) in &model.valid {
            self.last_seen.insert(key.clone(), record.clone());
        }
    }
}

async fn check(
    harness: &Harness,
    (mode, initial, steps): (Mode, Vec<(u8, i32)>, Vec<Step>),
) -> Result<(), TestCaseError> {
    harness.reset().await;
    let mut score_as_text = false;
    for (key, score) in &initial {
        harness.apply(&Mutation::Put(*key, *score), &mut score_as_text).await;
    }
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut budget = SendBudget::default();
    let mut runtime = harness.runtime(mode, score_as_text, &sink, dir.path()).await;
    // The first run, clean; then each step mutates and runs against failures.
    let clean = Step {
        mutations: Vec::new(),
        failures: Failures::default(),
    };
    for (index, step) in std::iter::once(&clean)
        .chain(&steps)
        .chain(std::iter::once(&clean))
        .enumerate()
    {
        let was_text = score_as_text;
        for mutation in &step.mutations {
            harness.apply(mutation, &mut score_as_text).await;
        }
        if was_text != score_as_text {
            runtime.shutdown(Duration::from_secs(5)).await;
            runtime = harness.runtime(mode, score_as_text, &sink, dir.path()).await;
        }
        let model = harness.model(score_as_text).await;
        budget.observe(&model, mode);
        budget.allow_resends(step.failures.timeouts);
        sink.set_behavior(behavior(&step.failures));
        let run = run_to_end(&runtime, "s", TriggerOptions::default()).await;
        prop_assert!(run.status.is_terminal(), "step {index}: {run:?}");
        prop_assert!(
            run.error.as_deref().is_none_or(|e| !e.contains("task")),
            "step {index}: {run:?}"
        );
        if step.failures.any() {
            continue;
        }
        prop_assert!(
            matches!(run.status, RunStatus::Success | RunStatus::Warning) && run.failed.total() == 0,
            "step {index}: a run without failures went wrong: {run:?}"
        );
        // A run without failures: the destination holds what the mode promises.
        budget.must_have_sent.extend(model.valid.keys().cloned());
        let held = sink.records();
        for (key, record) in &model.valid {
            let got = held.get(key);
            match mode {
                Mode::Insert => prop_assert!(got.is_some(), "step {index}: key {key} missing"),
                Mode::Upsert | Mode::Mirror => {
                    prop_assert_eq!(got, Some(record), "step {}: key {}", index, key)
                }
            }
        }
        if mode == Mode::Mirror {
            for key in held.keys() {
                prop_assert!(
                    model.valid.contains_key(key) || model.duplicated.contains(key),
                    "step {index}: mirror kept {key}, which left the model"
                );
            }
        }
    }
    // No accepted row was sent twice.
    let operation = if mode == Mode::Insert { "insert" } else { "upsert" };
    for (key, allowed) in &budget.allowed {
        let applied = sink.applied(operation, key);
        prop_assert!(
            applied <= *allowed,
            "key {key} applied {applied} times for {allowed} states"
        );
        if mode == Mode::Insert && budget.must_have_sent.contains(key) {
            prop_assert!(applied >= 1, "insert never sent key {key}");
            if budget.timeouts == 0 {
                prop_assert_eq!(applied, 1, "insert sends key {} once", key);
            }
        }
    }
    runtime.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

#[test]
fn cdc_keeps_the_promise_of_each_mode_under_random_mutations_and_failures() {
    let cases = std::env::var("EBB_PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(16);
    // Warnings and errors of the runtime show with a failing case.
    let _logs = ebb_shared::telemetry::init("ebb-test", "warn");
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let database = tokio.block_on(fresh_postgres_database("props"));
    let harness = tokio.block_on(async {
        Harness {
            pool: PgPool::connect(&database.url).await.unwrap(),
            database_url: database.url.clone(),
        }
    });
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        max_shrink_iters: 64,
        ..ProptestConfig::default()
    });
    let result = runner.run(&scenario(), |scenario| tokio.block_on(check(&harness, scenario)));
    if let Err(failure) = result {
        panic!("{failure}");
    }
}
