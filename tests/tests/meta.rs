//! Meta Custom Audiences end to end: a fleet (coordinator and two worker
//! processes on the real PostgreSQL, RabbitMQ and S3) syncs a 50k-row model
//! to a loopback custom audience as an add/remove audience sync, with two
//! identifier keys, while the Marketing API throttles 10% of requests
//! (code 80003) and fails 2% with a server error. After a first run and
//! after random inserts, updates and deletes, the audience holds exactly the
//! model's members plus one added by someone else, which Ebb never removes.
//! Each shard's batches of an action form one upload session, never out of
//! step with what Meta holds.

use ebb_tests::fleet::Fleet;
use ebb_tests::model::{create_people, mutate};
use ebb_tests::services::fresh_postgres_database;
use ebb_worker::destinations::meta::fake::{FakeMeta, Member};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use std::collections::BTreeSet;

const ROWS: i64 = 50_000;
const TOKEN: &str = "EAAB-e2e-system-user-token";
const AUDIENCE: &str = "23850000000000042";

fn sha(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn config(database_url: &str, fake: &FakeMeta) -> String {
    format!(
        "sources:\n  warehouse: {{ type: postgres, url: \"{database_url}\" }}\n\
         models:\n  people: {{ source: warehouse, query: \"SELECT id, email, name FROM people\", primary_key: id }}\n\
         destinations:\n  ads:\n    type: meta_custom_audience\n    access_token: \"${{EBB_TEST_META_TOKEN}}\"\n    \
         audience_id: \"{AUDIENCE}\"\n    api_base_url: {}\n    batch_size: 2000\n\
         syncs:\n  to-ads:\n    model: people\n    destination: ads\n    type: audience\n    mode: add_remove\n    \
         mappings:\n      - {{ from: email, to: EMAIL }}\n      - {{ from: id, to: EXTERN_ID }}\n    max_rows_per_shard: 10000\n",
        fake.url
    )
}

/// The members the model's rows make: hashed email, raw id.
async fn expected(pool: &PgPool) -> BTreeSet<Member> {
    let rows: Vec<(i64, String)> = sqlx::query_as("SELECT id, email FROM people")
        .fetch_all(pool)
        .await
        .unwrap();
    rows.into_iter()
        .map(|(id, email)| {
            [
                ("EMAIL".to_string(), sha(&email.to_lowercase())),
                ("EXTERN_ID".to_string(), id.to_string()),
            ]
            .into_iter()
            .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_keeps_a_custom_audience_equal_to_the_model_through_throttling() {
    let source = fresh_postgres_database("meta_source").await;
    let pool = PgPool::connect(&source.url).await.unwrap();
    create_people(&pool, ROWS).await;
    let fake = FakeMeta::start(TOKEN).await;
    fake.create_audience(AUDIENCE);
    let outsider: Member = [("EMAIL".to_string(), sha("kept@elsewhere.com"))].into_iter().collect();
    fake.add_member(AUDIENCE, outsider.clone());
    fake.chaos(0.10, 0.02);
    let mut fleet = Fleet::start_with_env(
        &config(&source.url, &fake),
        0,
        &[("EBB_TEST_META_TOKEN", TOKEN.to_string())],
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
        fleet.run_all(&["to-ads"], &[]).await;
        let mut members = expected(&pool).await;
        members.insert(outsider.clone());
        assert_eq!(
            fake.members(AUDIENCE),
            members,
            "{round}: the audience holds the model and the outsider"
        );
    }
    // Each shard's batches of one action went up as one upload session
    // (10,000 rows a shard, 2,000 a batch), in the order Meta asks: no
    // request ever found its session out of step.
    let sessions = fake.sessions();
    assert_eq!(fake.out_of_step(), 0, "{sessions:?}");
    assert!(
        sessions.iter().any(|s| s.batches.len() >= 3),
        "sessions span batches: {sessions:?}"
    );
    assert!(
        sessions.iter().filter(|s| s.ended).count() >= (ROWS / 10_000) as usize,
        "every shard's session was ended by its last batch: {sessions:?}"
    );
    let (requests, throttled) = fake.counts();
    assert!(
        throttled * 20 > requests,
        "the chaos was there: {throttled} of {requests}"
    );
}
