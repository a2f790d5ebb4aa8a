//! HubSpot end to end: a fleet (coordinator and two worker processes on the
//! real PostgreSQL, RabbitMQ and S3) syncs a 50k-row model to the loopback
//! HubSpot through every mode the connector declares — mirror (delete),
//! mirror (clear fields), insert, update, archive, all, and an audience's
//! add/remove — while HubSpot answers 10% of requests 429 and 2% 502. After a
//! first run and after random inserts, updates and deletes, each object holds
//! exactly what its mode promises.

use ebb_tests::fleet::Fleet;
use ebb_tests::model::{create_people, model_emails, mutate};
use ebb_tests::services::fresh_postgres_database;
use ebb_worker::destinations::hubspot::fake::FakeHubSpot;
use serde_json::{Map, Value};
use sqlx::PgPool;
use std::collections::{BTreeMap, BTreeSet};

const ROWS: i64 = 50_000;
const TOKEN: &str = "pat-na1-e2e00000-0000-4000-8000-000000000000";
const LIST: &str = "4242";
/// Custom objects pre-filled with a record per model row: the update and
/// archive syncs need records to exist.
const UPDATED: &str = "2-100";
const ARCHIVED: &str = "2-200";

fn config(database_url: &str, hubspot: &str) -> String {
    let destination = |name: &str, object: &str| {
        format!(
            "  {name}:\n    type: hubspot\n    access_token: \"${{EBB_TEST_HUBSPOT_TOKEN}}\"\n    api_base_url: {hubspot}\n    \
             object: \"{object}\"\n    list_id: \"{LIST}\"\n    tier: api_limit_increase\n"
        )
    };
    let sync = |name: &str, destination: &str, settings: &str| {
        format!(
            "  {name}:\n    model: people\n    destination: {destination}\n{settings}    \
             record_matching: {{ from: id, to: ebb_id }}\n    mappings:\n      - {{ from: id, to: ebb_id }}\n      \
             - {{ from: email, to: email }}\n      - {{ from: name, to: firstname }}\n    max_rows_per_shard: 10000\n"
        )
    };
    [
        format!(
            "sources:\n  warehouse: {{ type: postgres, url: \"{database_url}\" }}\n\
             models:\n  people: {{ source: warehouse, query: \"SELECT id, email, name FROM people\", primary_key: id }}\n\
             destinations:\n"
        ),
        destination("contacts", "contacts"),
        destination("companies", "companies"),
        destination("deals", "deals"),
        destination("updated", UPDATED),
        destination("archived", ARCHIVED),
        destination("every", "2-300"),
        destination("list", "contacts"),
        "syncs:\n".to_string(),
        sync("to-contacts", "contacts", "    mode: mirror\n"),
        sync("to-companies", "companies", "    mode: mirror\n    delete_behavior: clear_fields\n"),
        sync("to-deals", "deals", "    mode: insert\n"),
        sync("to-updated", "updated", "    mode: update\n"),
        sync("to-archived", "archived", "    mode: archive\n"),
        sync("to-every", "every", "    mode: all\n"),
        sync("to-list", "list", "    type: audience\n    mode: add_remove\n"),
    ]
    .concat()
}

/// ebb_id → email of an object's records; every ebb_id once.
fn by_ebb_id(fake: &FakeHubSpot, object: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for properties in fake.records(object).values() {
        let text = |name: &str| {
            properties
                .get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let previous = out.insert(text("ebb_id"), text("email"));
        assert!(
            previous.is_none(),
            "{object}: two records for ebb_id {}",
            text("ebb_id")
        );
    }
    out
}

fn pre_fill(fake: &FakeHubSpot, object: &str) {
    for id in 1..=ROWS {
        let mut properties = Map::new();
        properties.insert("ebb_id".into(), Value::String(id.to_string()));
        properties.insert("email".into(), Value::String(format!("old{id}@example.com")));
        fake.insert(object, Value::Object(properties));
    }
}

fn check(fake: &FakeHubSpot, model: &BTreeMap<String, String>, ever: &BTreeSet<String>, round: &str) {
    assert_eq!(
        &by_ebb_id(fake, "contacts"),
        model,
        "{round}: mirror (delete) holds the model"
    );
    // All sends every row every run and removes nothing.
    let every = by_ebb_id(fake, "2-300");
    for (id, email) in model {
        assert_eq!(every.get(id), Some(email), "{round}: all holds row {id}");
    }
    let companies = by_ebb_id(fake, "companies");
    for (id, email) in &companies {
        match model.get(id) {
            Some(expected) => assert_eq!(email, expected, "{round}: companies {id}"),
            None => assert_eq!(email, "", "{round}: a company whose row left the model is cleared"),
        }
    }
    assert!(
        model.keys().all(|id| companies.contains_key(id)),
        "{round}: every row is a company"
    );
    let deals: BTreeSet<String> = by_ebb_id(fake, "deals").into_keys().collect();
    assert_eq!(&deals, ever, "{round}: insert created every key once, and only once");
    let updated = by_ebb_id(fake, UPDATED);
    assert_eq!(updated.len() as i64, ROWS, "{round}: update creates nothing");
    for (id, email) in &updated {
        if let Some(expected) = model.get(id) {
            assert_eq!(email, expected, "{round}: updated {id}");
        }
    }
    let archived: BTreeSet<String> = by_ebb_id(fake, ARCHIVED).into_keys().collect();
    assert!(
        archived.iter().all(|id| !model.contains_key(id)),
        "{round}: every row of the model is archived"
    );
    let contact_ids: BTreeMap<u64, String> = fake
        .records("contacts")
        .into_iter()
        .map(|(record, p)| (record, p["ebb_id"].as_str().unwrap().to_string()))
        .collect();
    let members: BTreeSet<String> = fake
        .members(LIST)
        .iter()
        .map(|record| contact_ids[record].clone())
        .collect();
    assert_eq!(
        members,
        model.keys().cloned().collect(),
        "{round}: the list holds the model's contacts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_converges_on_hubspot_in_every_mode_through_429s_and_502s() {
    let source = fresh_postgres_database("hubspot_source").await;
    let pool = PgPool::connect(&source.url).await.unwrap();
    create_people(&pool, ROWS).await;
    let fake = FakeHubSpot::start(TOKEN, None).await;
    fake.create_list(LIST, "MANUAL");
    pre_fill(&fake, UPDATED);
    pre_fill(&fake, ARCHIVED);
    fake.chaos(0.10, 0.02);
    let mut fleet = Fleet::start_with_env(
        &config(&source.url, &fake.url),
        0,
        &[("EBB_TEST_HUBSPOT_TOKEN", TOKEN.to_string())],
    )
    .await;
    // Four tasks each: the syncs of a round run side by side, each at its
    // own destination's limit.
    for _ in 0..2 {
        fleet.add_worker_with_args(&["--concurrency", "4"]);
    }
    let others = ["to-companies", "to-deals", "to-updated", "to-archived", "to-every"];
    let mut ever: BTreeSet<String> = BTreeSet::new();
    let mut next_id = ROWS + 1;
    for round in ["first run", "after mutations"] {
        if round != "first run" {
            mutate(&pool, &mut next_id, 2_000).await;
        }
        // Contacts first: the audience looks its members up among them.
        fleet.run_all(&["to-contacts"], &[]).await;
        let mut after = vec!["to-list"];
        after.extend(others);
        // Update misses rows HubSpot has no record for: a warning naming them.
        fleet.run_all(&after, &["to-updated"]).await;
        let model = model_emails(&pool).await;
        ever.extend(model.keys().cloned());
        check(&fake, &model, &ever, round);
    }
    let (requests, rate_limited) = fake.counts();
    assert!(
        rate_limited * 20 > requests,
        "the chaos was there: {rate_limited} of {requests}"
    );
}
