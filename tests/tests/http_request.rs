//! HTTP Request end to end: a fleet (coordinator and two worker processes on
//! the real PostgreSQL, RabbitMQ and S3) mirrors a 50k-row model to a loopback
//! API through the `http_request` destination, whose batched Liquid templates
//! write each batch as that API's JSON (added and changed rows upserted,
//! removed rows deleted), while the API answers 10% of requests 429 and 2%
//! 503. After a first run and after random inserts, updates and deletes, the
//! API holds exactly the model.

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
