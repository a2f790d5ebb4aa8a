//! Salesforce end to end: a fleet (coordinator and two worker processes on
//! the real PostgreSQL, RabbitMQ and S3) syncs a 50k-row model to the
//! loopback Salesforce org through every mode the connector declares —
//! mirror (delete), mirror (clear fields), insert, update, archive and all,
//! the insert and all syncs by Bulk API 2.0 jobs — with a connected app's
//! OAuth grant, while the org refuses 10% of requests
//! for its concurrent-request limit and answers 2% with 503. Between the two
//! rounds every session expires and the model takes random inserts, updates
//! and deletes; after each round every object holds what its mode promises.

use ebb_tests::fleet::Fleet;
use ebb_tests::model::{create_people, model_emails, mutate};
use ebb_tests::services::fresh_postgres_database;
use ebb_worker::destinations::salesforce::fake::{FakeField, FakeSalesforce};
use serde_json::{json, Value};
use sqlx::PgPool;
use std::collections::{BTreeMap, BTreeSet};

const ROWS: i64 = 50_000;
/// Objects pre-filled with a record per model row: the update and archive
/// syncs need records to exist.
const UPDATED: &str = "Updated__c";
const ARCHIVED: &str = "Archived__c";
const CUSTOM: [&str; 5] = ["Company__c", "Deal__c", UPDATED, ARCHIVED, "Every__c"];

fn fields(email: &'static str, name: &'static str, name_required: bool) -> Vec<FakeField> {
    let plain = |name: &'static str, kind: &'static str| FakeField {
        name,
        kind,
        external_id: false,
        createable: true,
        required: false,
    };
    vec![
        FakeField {
            createable: false,
            ..plain("Id", "id")
        },
        FakeField {
            external_id: true,
            ..plain("Ebb_Id__c", "string")
        },
        plain(email, "email"),
        FakeField {
            required: name_required,
            ..plain(name, "string")
        },
    ]
}

fn config(database_url: &str, fake: &FakeSalesforce) -> String {
    let destination = |name: &str, object: &str| {
        format!(
            "  {name}:\n    type: salesforce\n    object: {object}\n    oauth2:\n      token_url: {}/services/oauth2/token\n      \
             client_id: {}\n      client_secret: \"${{EBB_TEST_SF_SECRET}}\"\n      refresh_token: \"${{EBB_TEST_SF_REFRESH}}\"\n",
            fake.url, fake.client_id
        )
    };
    // Shards of at least 100 rows go by bulk jobs: every shard of both rounds.
    let bulk = |block: String| block + "    bulk_api: { threshold: 100, poll_interval: 50ms }\n";
    let sync = |name: &str, destination: &str, settings: &str, email: &str, full_name: &str| {
        format!(
            "  {name}:\n    model: people\n    destination: {destination}\n{settings}    \
             record_matching: {{ from: id, to: Ebb_Id__c }}\n    mappings:\n      - {{ from: id, to: Ebb_Id__c }}\n      \
             - {{ from: email, to: {email} }}\n      - {{ from: name, to: {full_name} }}\n    max_rows_per_shard: 10000\n"
        )
    };
    let custom =
        |name: &str, destination: &str, settings: &str| sync(name, destination, settings, "Email__c", "Name__c");
    [
        format!(
            "sources:\n  warehouse: {{ type: postgres, url: \"{database_url}\" }}\n\
             models:\n  people: {{ source: warehouse, query: \"SELECT id, email, name FROM people\", primary_key: id }}\n\
             destinations:\n"
        ),
        destination("contacts", "Contact"),
        destination("companies", "Company__c"),
        bulk(destination("deals", "Deal__c")),
        destination("updated", UPDATED),
        destination("archived", ARCHIVED),
        bulk(destination("every", "Every__c")),
        "syncs:\n".to_string(),
        sync("to-contacts", "contacts", "    mode: mirror\n", "Email", "LastName"),
        custom("to-companies", "companies", "    mode: mirror\n    delete_behavior: clear_fields\n"),
        custom("to-deals", "deals", "    mode: insert\n"),
        custom("to-updated", "updated", "    mode: update\n"),
        custom("to-archived", "archived", "    mode: archive\n"),
        custom("to-every", "every", "    mode: all\n"),
    ]
    .concat()
}

/// Ebb_Id__c → email of an object's records; every Ebb_Id__c once.
fn by_ebb_id(fake: &FakeSalesforce, object: &str) -> BTreeMap<String, String> {
    let email = if object == "Contact" { "Email" } else { "Email__c" };
    let mut out = BTreeMap::new();
    for record in fake.records(object).values() {
        let text = |name: &str| match record.get(name) {
            Some(Value::String(text)) => text.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        };
        let previous = out.insert(text("Ebb_Id__c"), text(email));
        assert!(
            previous.is_none(),
            "{object}: two records for Ebb_Id__c {}",
            text("Ebb_Id__c")
        );
    }
    out
}

fn pre_fill(fake: &FakeSalesforce, object: &str) {
    for id in 1..=ROWS {
        fake.insert(
            object,
            json!({ "Ebb_Id__c": id.to_string(), "Email__c": format!("old{id}@example.com") }),
        );
    }
}

fn check(fake: &FakeSalesforce, model: &BTreeMap<String, String>, ever: &BTreeSet<String>, round: &str) {
    assert_eq!(
        &by_ebb_id(fake, "Contact"),
        model,
        "{round}: mirror (delete) holds the model"
    );
    let every = by_ebb_id(fake, "Every__c");
    for (id, email) in model {
        assert_eq!(every.get(id), Some(email), "{round}: all holds row {id}");
    }
    let companies = by_ebb_id(fake, "Company__c");
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
    let deals: BTreeSet<String> = by_ebb_id(fake, "Deal__c").into_keys().collect();
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_converges_on_salesforce_in_every_mode_through_limits_and_outages() {
    let source = fresh_postgres_database("salesforce_source").await;
    let pool = PgPool::connect(&source.url).await.unwrap();
    create_people(&pool, ROWS).await;
    let fake = FakeSalesforce::start("00D000000000001!AQ-unused-fixed-session").await;
    fake.define("Contact", fields("Email", "LastName", true));
    for object in CUSTOM {
        fake.define(object, fields("Email__c", "Name__c", false));
    }
    pre_fill(&fake, UPDATED);
    pre_fill(&fake, ARCHIVED);
    fake.chaos(0.10, 0.02);
    let mut fleet = Fleet::start_with_env(
        &config(&source.url, &fake),
        0,
        &[
            ("EBB_TEST_SF_SECRET", fake.client_secret.clone()),
            ("EBB_TEST_SF_REFRESH", fake.refresh_token.clone()),
        ],
    )
    .await;
    for _ in 0..2 {
        fleet.add_worker_with_args(&["--concurrency", "4"]);
    }
    let syncs = [
        "to-contacts",
        "to-companies",
        "to-deals",
        "to-updated",
        "to-archived",
        "to-every",
    ];
    let mut ever: BTreeSet<String> = BTreeSet::new();
    let mut next_id = ROWS + 1;
    for round in ["first run", "after mutations"] {
        if round != "first run" {
            mutate(&pool, &mut next_id, 2_000).await;
            // Every session ends (a timeout, a revocation): the workers get
            // new ones from the grant.
            fake.expire_sessions();
        }
        // Update misses rows the org has no record for: a warning naming them.
        fleet.run_all(&syncs, &["to-updated"]).await;
        let model = model_emails(&pool).await;
        ever.extend(model.keys().cloned());
        check(&fake, &model, &ever, round);
    }
    let (requests, limited) = fake.counts();
    assert!(limited * 20 > requests, "the chaos was there: {limited} of {requests}");
    assert!(fake.jobs_created() >= 10, "bulk jobs ran: {}", fake.jobs_created());
    assert!(
        fake.tokens_issued() >= 2,
        "sessions were renewed: {}",
        fake.tokens_issued()
    );
}

/// A worker is killed while its bulk insert jobs run. The attempt that takes
/// over its shard finds the jobs it recorded and polls them instead of
/// submitting the rows again: with no External ID to catch a second insert,
/// a resubmission would create records twice, and none is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_bulk_job_leaves_the_job_to_its_successor() {
    const ORDERS: i64 = 12_000;
    let source = fresh_postgres_database("salesforce_bulk_kill").await;
    let pool = PgPool::connect(&source.url).await.unwrap();
    create_people(&pool, ORDERS).await;
    let fake = FakeSalesforce::start("00D000000000001!AQ-unused-fixed-session").await;
    let mut order_fields = fields("Email__c", "Name__c", false);
    // A plain text field: nothing in the org stops a record being inserted twice.
    order_fields[1].external_id = false;
    fake.define("Order__c", order_fields);
    // Each job answers InProgress for its first dozen polls (about 5 s).
    fake.job_polls(12);
    let config = format!(
        "sources:\n  warehouse: {{ type: postgres, url: \"{}\" }}\n\
         models:\n  people: {{ source: warehouse, query: \"SELECT id, email FROM people\", primary_key: id }}\n\
         destinations:\n  orders:\n    type: salesforce\n    object: Order__c\n    oauth2:\n      \
         token_url: {}/services/oauth2/token\n      client_id: {}\n      client_secret: \"${{EBB_TEST_SF_SECRET}}\"\n      \
         refresh_token: \"${{EBB_TEST_SF_REFRESH}}\"\n    \
         bulk_api: {{ threshold: 100, records_per_job: 2000, poll_interval: 20ms }}\n\
         syncs:\n  to-orders:\n    model: people\n    destination: orders\n    mode: insert\n    mappings:\n      \
         - {{ from: id, to: Ebb_Id__c }}\n      - {{ from: email, to: Email__c }}\n    max_rows_per_shard: 4000\n",
        source.url, fake.url, fake.client_id
    );
    let mut fleet = Fleet::start_with_env(
        &config,
        2,
        &[
            ("EBB_TEST_SF_SECRET", fake.client_secret.clone()),
            ("EBB_TEST_SF_REFRESH", fake.refresh_token.clone()),
        ],
    )
    .await;
    let run_id = fleet.trigger("to-orders").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    // The victim is the worker that created a job Salesforce is running
    // (uploaded and complete, polled at least once).
    let victim = loop {
        let running = fake.jobs_in_state("InProgress");
        let creator = fleet.workers.iter().position(|worker| {
            let log = std::fs::read_to_string(&worker.log).unwrap_or_default();
            log.lines().any(|line| {
                line.contains("Salesforce bulk job created") && running.iter().any(|id| line.contains(id.as_str()))
            })
        });
        if let Some(victim) = creator {
            break victim;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no bulk job ran within 60 s\n{}",
            fleet.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    fleet.workers[victim].kill().await;
    let created_before = fake.jobs_created();
    let run = fleet.wait_run(&run_id, std::time::Duration::from_secs(300)).await;
    assert_eq!(run["status"], "success", "{run}\n{}", fleet.logs());
    let mut held: BTreeMap<String, u32> = BTreeMap::new();
    for record in fake.records("Order__c").values() {
        // Text from a bulk job's CSV, a number from Collections (a shard
        // under the bulk threshold).
        let id = match &record["Ebb_Id__c"] {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        *held.entry(id).or_default() += 1;
    }
    let missing: Vec<i64> = (1..=ORDERS).filter(|id| !held.contains_key(&id.to_string())).collect();
    assert!(
        missing.is_empty(),
        "rows that became no record: {missing:?}\n{run}\n{}",
        fleet.events()
    );
    let twice: Vec<&String> = held.iter().filter(|(_, n)| **n > 1).map(|(id, _)| id).collect();
    assert!(twice.is_empty(), "records inserted twice: {twice:?}");
    let resumed = fleet
        .workers
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .any(|(_, w)| {
            std::fs::read_to_string(&w.log)
                .unwrap_or_default()
                .contains("resuming the Salesforce bulk job")
        });
    assert!(
        resumed,
        "the survivor resumed the killed worker's job ({created_before} jobs created before the kill, {} after)\n{}",
        fake.jobs_created(),
        fleet.events()
    );
}
