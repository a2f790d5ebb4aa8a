//! HTTP Request end to end: a fleet (coordinator and two worker processes on
//! the real PostgreSQL, RabbitMQ and S3) mirrors a 50k-row model to a loopback
//! API through the `http_request` destination, whose batched Liquid templates
//! write each batch as that API's JSON (added and changed rows upserted,
//! removed rows deleted), while the API answers 10% of requests 429 and 2%
//! 503. After a first run and after random inserts, updates and deletes, the
//! API holds exactly the model. The same API, templated the same way, runs
//! the destination contract suite.

use ebb_tests::fleet::Fleet;
use ebb_tests::model::{create_people, model_emails, mutate, sink_emails};
use ebb_tests::services::fresh_postgres_database;
use ebb_tests::sink::{Behavior, Sink};
use sqlx::PgPool;

const ROWS: i64 = 50_000;

/// One batch as the API takes it: `{"operation", "records": [{key, fields}]}`.
fn body(operation: &str) -> String {
    format!(
        "'{{\"operation\": \"{operation}\", \"records\": [{{% for r in records %}}{{\"key\": {{{{ keys[forloop.index0] | json }}}}, \
         \"fields\": {{{{ r | json }}}}}}{{% unless forloop.last %}}, {{% endunless %}}{{% endfor %}}]}}'"
    )
}

fn config(database_url: &str, api: &str) -> String {
    format!(
        "sources:\n  warehouse: {{ type: postgres, url: \"{database_url}\" }}\n\
         models:\n  people: {{ source: warehouse, query: \"SELECT id, email FROM people\", primary_key: id }}\n\
         destinations:\n  api:\n    type: http_request\n    base_url: {api}\n    headers: {{ Authorization: \"Bearer ${{EBB_TEST_API_TOKEN}}\" }}\n    \
         batch_size: 500\n    on_added: {{ url: /, batched: true, body: {} }}\n    on_removed: {{ url: /, batched: true, body: {} }}\n\
         syncs:\n  people-api:\n    model: people\n    destination: api\n    mode: mirror\n    max_rows_per_shard: 10000\n",
        body("upsert"),
        body("delete"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_mirrors_a_model_through_templated_requests_despite_429s_and_503s() {
    let source = fresh_postgres_database("http_request_source").await;
    let pool = PgPool::connect(&source.url).await.unwrap();
    create_people(&pool, ROWS).await;
    let sink = Sink::start().await;
    sink.set_behavior(Behavior {
        chaos: (0.10, 0.02),
        ..Behavior::default()
    });
    let api = sink.url().trim_end_matches('/').to_string();
    let mut fleet = Fleet::start_with_env(
        &config(&source.url, &api),
        0,
        &[("EBB_TEST_API_TOKEN", "tok-e2e".to_string())],
    )
    .await;
    for _ in 0..2 {
        fleet.add_worker_with_args(&["--concurrency", "4"]);
    }
    let mut next_id = ROWS + 1;
    for round in ["first run", "after mutations"] {
        if round != "first run" {
            mutate(&pool, &mut next_id, 2_000).await;
        }
        fleet.run_all(&["people-api"], &[]).await;
        assert_eq!(
            sink_emails(&sink),
            model_emails(&pool).await,
            "{round}: the API holds the model"
        );
    }
    let requests = sink.requests();
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
