//! Braze end to end: a fleet (coordinator and two worker processes on the
//! real PostgreSQL, RabbitMQ and S3) syncs a 50k-row model to loopback Braze
//! workspaces through every mode the connector declares — mirror (delete
//! users), mirror (clear attributes), insert, update (update-only mode), all,
//! an event sync and a purchase sync — while each workspace answers 10% of
//! requests 429 and 2% 503. After a first run and after random inserts,
//! updates and deletes, each workspace holds what its mode promises, and
//! every row entering the model was tracked as an event, and as a purchase,
//! exactly once.

use ebb_tests::fleet::Fleet;
use ebb_tests::model::{create_people, model_emails, mutate};
use ebb_tests::services::fresh_postgres_database;
use ebb_worker::destinations::braze::fake::FakeBraze;
use serde_json::{json, Value};
use sqlx::PgPool;
use std::collections::{BTreeMap, BTreeSet};

const ROWS: i64 = 50_000;
const KEY: &str = "e2e00000-braze-4000-8000-000000000000";
/// (sync, mode settings): one workspace each, so users do not mix.
const SYNCS: [(&str, &str); 6] = [
    ("mirror", "    mode: mirror\n"),
    ("cleared", "    mode: mirror\n    delete_behavior: clear_fields\n"),
    ("inserted", "    mode: insert\n"),
    ("updated", "    mode: update\n"),
    ("every", "    mode: all\n"),
    ("events", "    type: event\n    mode: insert\n"),
];

/// The workspace of the purchase sync, beside those of `SYNCS`.
const PURCHASES: &str = "purchases";

fn config(database_url: &str, workspaces: &BTreeMap<&str, FakeBraze>) -> String {
    let mut text = format!(
        "sources:\n  warehouse: {{ type: postgres, url: \"{database_url}\" }}\n\
         models:\n  people: {{ source: warehouse, query: \"SELECT id, email, name FROM people\", primary_key: id }}\n  \
         orders: {{ source: warehouse, query: \"SELECT id, 'plan-' || (id % 3) AS sku, 'usd' AS currency, \
         (id % 100) + 0.5 AS amount FROM people\", primary_key: id }}\n\
         destinations:\n"
    );
    for (name, fake) in workspaces {
        let event = if *name == PURCHASES {
            "event_type: purchase"
        } else {
            "event_name: Joined"
        };
        text.push_str(&format!(
            "  {name}:\n    type: braze\n    api_key: \"${{EBB_TEST_BRAZE_KEY}}\"\n    rest_endpoint: {}\n    {event}\n",
            fake.url
        ));
    }
    text.push_str(&format!(
        "syncs:\n  to-{PURCHASES}:\n    model: orders\n    destination: {PURCHASES}\n    type: event\n    mode: insert\n    \
         record_matching: {{ from: id, to: external_id }}\n    mappings:\n      - {{ from: id, to: external_id }}\n      \
         - {{ from: sku, to: product_id }}\n      - {{ from: currency, to: currency }}\n      - {{ from: amount, to: price }}\n    \
         max_rows_per_shard: 10000\n"
    ));
    for (name, settings) in SYNCS {
        text.push_str(&format!(
            "  to-{name}:\n    model: people\n    destination: {name}\n{settings}    \
             record_matching: {{ from: id, to: external_id }}\n    mappings:\n      - {{ from: id, to: external_id }}\n      \
             - {{ from: email, to: email }}\n      - {{ from: name, to: first_name }}\n    max_rows_per_shard: 10000\n"
        ));
    }
    text
}

/// external_id → email of a workspace's users.
fn emails(fake: &FakeBraze) -> BTreeMap<String, String> {
    fake.users()
        .into_iter()
        .filter_map(|(key, attributes)| {
            let id = key.strip_prefix("external_id:")?.to_string();
            let email = attributes
                .get("email")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            Some((id, email))
        })
        .collect()
}

fn check(
    workspaces: &BTreeMap<&str, FakeBraze>,
    model: &BTreeMap<String, String>,
    ever: &BTreeSet<String>,
    round: &str,
) {
    assert_eq!(&emails(&workspaces["mirror"]), model, "{round}: mirror holds the model");
    let every = emails(&workspaces["every"]);
    for (id, email) in model {
        assert_eq!(every.get(id), Some(email), "{round}: all holds row {id}");
    }
    let cleared = emails(&workspaces["cleared"]);
    for (id, email) in &cleared {
        match model.get(id) {
            Some(expected) => assert_eq!(email, expected, "{round}: cleared {id}"),
            None => assert_eq!(email, "", "{round}: a user whose row left the model has no attributes"),
        }
    }
    let inserted: BTreeSet<String> = emails(&workspaces["inserted"]).into_keys().collect();
    assert_eq!(&inserted, ever, "{round}: insert created every key");
    let updated = emails(&workspaces["updated"]);
    assert_eq!(updated.len() as i64, ROWS, "{round}: update-only mode creates no user");
    for (id, email) in &updated {
        if let Some(expected) = model.get(id) {
            assert_eq!(email, expected, "{round}: updated {id}");
        }
    }
    let events = workspaces["events"].events();
    let tracked: BTreeSet<String> = events
        .iter()
        .map(|e| e.user.trim_start_matches("external_id:").to_string())
        .collect();
    assert_eq!(&tracked, ever, "{round}: every row entering the model is an event");
    assert_eq!(events.len(), ever.len(), "{round}: and only once");
    assert!(events
        .iter()
        .all(|e| e.name == "Joined" && e.properties.contains_key("email")));
    let purchases = workspaces[PURCHASES].purchases();
    let bought: BTreeSet<String> = purchases
        .iter()
        .map(|p| p.user.trim_start_matches("external_id:").to_string())
        .collect();
    assert_eq!(&bought, ever, "{round}: every row entering the model is a purchase");
    assert_eq!(purchases.len(), ever.len(), "{round}: and only once");
    for purchase in &purchases {
        let id: i64 = purchase.user.trim_start_matches("external_id:").parse().unwrap();
        assert_eq!(
            (purchase.product_id.clone(), purchase.currency.as_str(), purchase.price),
            (format!("plan-{}", id % 3), "USD", (id % 100) as f64 + 0.5),
            "{round}: purchase of {id}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_converges_on_braze_in_every_mode_through_429s_and_503s() {
    let source = fresh_postgres_database("braze_source").await;
    let pool = PgPool::connect(&source.url).await.unwrap();
    create_people(&pool, ROWS).await;
    let mut workspaces = BTreeMap::new();
    for name in SYNCS.iter().map(|(name, _)| *name).chain([PURCHASES]) {
        let fake = FakeBraze::start(KEY).await;
        fake.chaos(0.10, 0.02);
        workspaces.insert(name, fake);
    }
    for id in 1..=ROWS {
        workspaces["updated"].create_user(&id.to_string(), json!({ "email": format!("old{id}@example.com") }));
    }
    let mut fleet = Fleet::start_with_env(
        &config(&source.url, &workspaces),
        0,
        &[("EBB_TEST_BRAZE_KEY", KEY.to_string())],
    )
    .await;
    for _ in 0..2 {
        fleet.add_worker_with_args(&["--concurrency", "4"]);
    }
    let syncs: Vec<String> = SYNCS
        .iter()
        .map(|(name, _)| *name)
        .chain([PURCHASES])
        .map(|name| format!("to-{name}"))
        .collect();
    let syncs: Vec<&str> = syncs.iter().map(String::as_str).collect();
    let mut ever: BTreeSet<String> = BTreeSet::new();
    let mut next_id = ROWS + 1;
    for round in ["first run", "after mutations"] {
        if round != "first run" {
            mutate(&pool, &mut next_id, 2_000).await;
        }
        fleet.run_all(&syncs, &[]).await;
        let model = model_emails(&pool).await;
        ever.extend(model.keys().cloned());
        check(&workspaces, &model, &ever, round);
    }
    let (requests, limited) = workspaces.values().fold((0, 0), |(r, l), fake| {
        let (requests, limited) = fake.counts();
        (r + requests, l + limited)
    });
    assert!(limited * 20 > requests, "the chaos was there: {limited} of {requests}");
}
