//! HTTP Request end to end: a fleet (coordinator and two worker processes on
//! the real PostgreSQL, RabbitMQ and S3) syncs a 50k-row model through the
//! `http_request` destination in every mode it offers — insert, update,
//! upsert, mirror, archive, all, and an add/remove audience — each to a
//! loopback API of its own, whose batched Liquid templates write each batch
//! as that API's JSON (the operation taken from Ebb's action), while every
//! API answers 10% of requests 429 and 2% 503. After a first run and after
//! random inserts, updates and deletes, each API holds what its mode means.
//! The same API, templated the same way, runs the destination contract suite.

use ebb_tests::fleet::Fleet;
use ebb_tests::model::{create_people, model_emails, mutate, sink_emails};
use ebb_tests::services::fresh_postgres_database;
use ebb_tests::sink::{Behavior, Sink};
use serde_json::json;
use sqlx::PgPool;
use std::collections::{BTreeMap, BTreeSet};

const ROWS: i64 = 50_000;

/// One batch as the API takes it: `{"operation", "records": [{key, fields}]}`,
/// the operation being Ebb's action (`insert`, `upsert`, `delete`, …).
const BODY: &str = "'{\"operation\": {{ action | json }}, \"records\": [{% for r in records %}{\"key\": {{ keys[forloop.index0] | json }}, \
     \"fields\": {{ r | json }}}{% unless forloop.last %}, {% endunless %}{% endfor %}]}'";

/// The syncs, each with its mode settings, to an API of its own.
const SYNCS: [(&str, &str); 7] = [
    ("mirror", "mode: mirror"),
    ("insert", "mode: insert"),
    ("update", "mode: update"),
    ("upsert", "mode: upsert"),
    ("archive", "mode: archive"),
    ("all", "mode: all"),
    ("audience", "type: audience\n    mode: add_remove"),
];

fn config(database_url: &str, apis: &BTreeMap<&str, String>) -> String {
    let mut text = format!(
        "sources:\n  warehouse: {{ type: postgres, url: \"{database_url}\" }}\n\
         models:\n  people: {{ source: warehouse, query: \"SELECT id, email FROM people\", primary_key: id }}\n\
         destinations:\n"
    );
    for (name, _) in SYNCS {
        let operation = |on: &str| format!("    {on}: {{ url: /, batched: true, body: {BODY} }}\n");
        text += &format!(
            "  {name}:\n    type: http_request\n    base_url: {}\n    headers: {{ Authorization: \"Bearer ${{EBB_TEST_API_TOKEN}}\" }}\n    \
             batch_size: 500\n{}{}{}",
            apis[name],
            operation("on_added"),
            operation("on_changed"),
            operation("on_removed"),
        );
    }
    text += "syncs:\n";
    for (name, settings) in SYNCS {
        text += &format!(
            "  to-{name}:\n    model: people\n    destination: {name}\n    {settings}\n    max_rows_per_shard: 10000\n"
        );
    }
    text
}

/// What each API holds, checked against the model and every key it ever had.
fn check(sinks: &BTreeMap<&str, Sink>, model: &BTreeMap<String, String>, ever: &BTreeSet<String>, round: &str) {
    let held = |name: &str| sink_emails(&sinks[name]);
    assert_eq!(&held("mirror"), model, "{round}: mirror holds the model");
    let inserted: BTreeSet<String> = held("insert").into_keys().collect();
    assert_eq!(&inserted, ever, "{round}: insert created every key it ever saw");
    for id in ever {
        assert_eq!(
            sinks["insert"].applied("insert", id),
            1,
            "{round}: key {id} inserted once"
        );
    }
    let updated = held("update");
    assert_eq!(updated.len() as i64, ROWS, "{round}: update creates nothing");
    for (id, email) in &updated {
        if let Some(expected) = model.get(id) {
            assert_eq!(email, expected, "{round}: updated {id}");
        }
    }
    let upserted = held("upsert");
    let all = held("all");
    for (id, email) in model {
        assert_eq!(upserted.get(id), Some(email), "{round}: upsert holds row {id}");
        assert_eq!(all.get(id), Some(email), "{round}: all holds row {id}");
    }
    let archived = sinks["archive"].archived();
    assert!(
        model.keys().all(|id| archived.contains(id)),
        "{round}: every row of the model is archived"
    );
    let members: BTreeSet<String> = held("audience").into_keys().collect();
    assert_eq!(
        members,
        model.keys().cloned().collect(),
        "{round}: the audience is the model"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_converges_through_templated_requests_in_every_mode_despite_429s_and_503s() {
    let source = fresh_postgres_database("http_request_source").await;
    let pool = PgPool::connect(&source.url).await.unwrap();
    create_people(&pool, ROWS).await;
    let mut sinks = BTreeMap::new();
    for (name, _) in SYNCS {
        let sink = Sink::start().await;
        sink.set_behavior(Behavior {
            chaos: (0.10, 0.02),
            ..Behavior::default()
        });
        sinks.insert(name, sink);
    }
    // Update mode needs records to exist.
    for id in 1..=ROWS {
        sinks["update"].seed(&id.to_string(), json!({"email": format!("old{id}@example.com")}));
    }
    let apis: BTreeMap<&str, String> = sinks
        .iter()
        .map(|(name, sink)| (*name, sink.url().trim_end_matches('/').to_string()))
        .collect();
    let mut fleet = Fleet::start_with_env(
        &config(&source.url, &apis),
        0,
        &[("EBB_TEST_API_TOKEN", "tok-e2e".to_string())],
    )
    .await;
    for _ in 0..2 {
        fleet.add_worker_with_args(&["--concurrency", "4"]);
    }
    let syncs: Vec<String> = SYNCS.iter().map(|(name, _)| format!("to-{name}")).collect();
    let syncs: Vec<&str> = syncs.iter().map(String::as_str).collect();
    let mut ever: BTreeSet<String> = BTreeSet::new();
    let mut next_id = ROWS + 1;
    for round in ["first run", "after mutations"] {
        if round != "first run" {
            mutate(&pool, &mut next_id, 2_000).await;
        }
        // An update of a row with no record succeeds at this API (it says
        // so only in its answer's body, which HTTP Request does not read).
        let started = std::time::Instant::now();
        fleet.run_all(&syncs, &[]).await;
        println!("{round}: {:.1}s", started.elapsed().as_secs_f64());
        let model = model_emails(&pool).await;
        ever.extend(model.keys().cloned());
        check(&sinks, &model, &ever, round);
    }
    let requests: Vec<_> = sinks.values().flat_map(Sink::requests).collect();
    let refused = requests.iter().filter(|r| r.status == 429 || r.status == 503).count();
    assert!(
        refused * 20 > requests.len(),
        "the chaos was there: {refused} of {}",
        requests.len()
    );
}

/// The test API behind HTTP Request templates that write Ebb's batch JSON
/// (`{operation, match, records}`), for the destination contract suite.
struct TemplatedApi {
    sink: Sink,
    token: String,
}

impl TemplatedApi {
    fn behave(&self, change: impl FnOnce(&mut Behavior)) {
        let mut behavior = self.sink.state.behavior.lock().unwrap();
        change(&mut behavior);
    }

    fn variable(&self) -> String {
        format!("EBB_TEST_HTTP_REQUEST_TOKEN_{}", self.sink.address.port())
    }
}

/// A batch as the API takes it, operation and record matching included.
const CONTRACT_BODY: &str = "'{\"operation\": {{ action | json }}, \"match\": \"email\", \"records\": [{% for r in records %}{\"key\": {{ keys[forloop.index0] | json }}, \"fields\": {{ r | json }}}{% unless forloop.last %}, {% endunless %}{% endfor %}]}'";

impl ebb_worker::destinations::contract::ContractFake for TemplatedApi {
    const MATCHING: &'static str = "email";
    // A 2xx answer's per-record errors are the API's own shape, which the
    // templated destination does not read.
    const UPDATE_REPORTS_MISSING: bool = false;

    async fn start() -> Self {
        let sink = Sink::start().await;
        let token = format!("tok-{}", sink.address.port());
        sink.set_behavior(Behavior {
            require_token: Some(token.clone()),
            ..Behavior::default()
        });
        TemplatedApi { sink, token }
    }

    fn settings(&self, timeout: &str) -> String {
        std::env::set_var(self.variable(), &self.token);
        let operation = format!("{{ url: /, batched: true, body: {CONTRACT_BODY} }}");
        format!(
            "    base_url: {}\n    headers: {{ Authorization: \"Bearer ${{{}}}\" }}\n    timeout: {timeout}\n    \
             on_added: {operation}\n    on_removed: {operation}\n",
            self.sink.url().trim_end_matches('/'),
            self.variable()
        )
    }

    fn refused_settings(&self) -> String {
        let variable = format!("{}_WRONG", self.variable());
        std::env::set_var(&variable, "tok-revoked");
        let operation = format!("{{ url: /, batched: true, body: {CONTRACT_BODY} }}");
        format!(
            "    base_url: {}\n    headers: {{ Authorization: \"Bearer ${{{variable}}}\" }}\n    \
             on_added: {operation}\n    on_removed: {operation}\n",
            self.sink.url().trim_end_matches('/')
        )
    }

    fn kind(&self) -> &'static str {
        "http_request"
    }

    fn record(&self, key: &str, plan: &str) -> serde_json::Value {
        serde_json::json!({ "email": key, "plan": plan })
    }

    fn refuse(&self, key: &str) {
        let key = key.to_string();
        self.behave(|b| {
            b.refuse_batches_with.insert(key);
        });
    }

    fn fault(&self, fault: ebb_worker::destinations::contract::Fault, times: usize) {
        use ebb_worker::destinations::contract::Fault;
        let times = times as u32;
        self.behave(|b| match fault {
            Fault::RateLimited => b.throttle_times += times,
            Fault::Unavailable => b.fail_times += times,
            Fault::AppliedThenSlow(delay) => {
                b.slow_times += times;
                b.slow_latency = delay;
            }
        });
    }

    fn create(&self, key: &str, plan: &str) {
        self.sink
            .state
            .records
            .lock()
            .unwrap()
            .insert(key.to_string(), serde_json::json!({ "email": key, "plan": plan }));
    }

    fn held(&self) -> std::collections::BTreeMap<String, Option<String>> {
        self.sink
            .records()
            .into_iter()
            .map(|(id, fields)| (id.to_lowercase(), fields["plan"].as_str().map(str::to_string)))
            .collect()
    }

    fn secrets(&self) -> Vec<String> {
        vec![self.token.clone(), "tok-revoked".into()]
    }

    /// A fixed header token does not expire.
    fn expire_sessions(&self) -> bool {
        false
    }
}

ebb_worker::contract_tests!(super::TemplatedApi);
