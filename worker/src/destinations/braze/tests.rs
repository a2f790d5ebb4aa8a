//! The Braze connector against the loopback workspace of `fake.rs`: the
//! destination contract, and what is Braze's own — user aliases, events,
//! update-only mode, deletes in fifties, the rate-limit reset header.

use super::fake::{FakeBraze, Fault};
use crate::behaviour::Action;
use crate::destinations::contract::{send, ContractFake};
use crate::destinations::{build, DeliveryError};
use serde_json::{json, Value};
use std::collections::BTreeMap;

const KEY: &str = "b7a1c0de-0000-4000-8000-0123456789ab";

fn variable(fake: &FakeBraze, which: &str) -> String {
    format!("EBB_TEST_BRAZE_{which}_{}", fake.url.rsplit(':').next().unwrap())
}

impl ContractFake for FakeBraze {
    const MATCHING: &'static str = "external_id";
    const UPDATE_REPORTS_MISSING: bool = false;

    async fn start() -> Self {
        FakeBraze::start(KEY).await
    }

    fn settings(&self, timeout: &str) -> String {
        let key = variable(self, "KEY");
        std::env::set_var(&key, &self.api_key);
        format!(
            "    api_key: \"${{{key}}}\"\n    rest_endpoint: {}\n    timeout: {timeout}\n",
            self.url
        )
    }

    fn refused_settings(&self) -> String {
        let key = variable(self, "WRONG");
        std::env::set_var(&key, "revoked-0000-key");
        format!("    api_key: \"${{{key}}}\"\n    rest_endpoint: {}\n", self.url)
    }

    fn kind(&self) -> &'static str {
        "braze"
    }

    fn record(&self, key: &str, plan: &str) -> Value {
        json!({ "external_id": key, "plan": plan })
    }

    fn refuse(&self, key: &str) {
        self.refuse_value(key);
    }

    fn fault(&self, fault: Fault, times: usize) {
        FakeBraze::fault(self, fault, times);
    }

    fn create(&self, key: &str, plan: &str) {
        self.create_user(key, json!({ "plan": plan }));
    }

    fn held(&self) -> BTreeMap<String, Option<String>> {
        self.users()
            .into_iter()
            .filter_map(|(key, attributes)| {
                let id = key.strip_prefix("external_id:")?.to_lowercase();
                Some((id, attributes.get("plan").and_then(Value::as_str).map(str::to_string)))
            })
            .collect()
    }

    fn secrets(&self) -> Vec<String> {
        vec![self.api_key.clone(), "revoked-0000-key".into()]
    }

    /// A REST API key does not expire.
    fn expire_sessions(&self) -> bool {
        false
    }
}

crate::contract_tests!(super::FakeBraze);

fn spec(fake: &FakeBraze, body: &str) -> ebb_shared::config::SyncSpec {
    let text = format!(
        "sources:\n  files: {{ type: csv, path: . }}\n\
         models:\n  people: {{ source: files, file: p.csv, primary_key: id }}\n\
         destinations:\n  braze:\n    type: braze\n{}{body}",
        fake.settings("5s")
    );
    let config = crate::config::from_yaml_str(std::path::Path::new("t.yaml"), &text, std::path::Path::new("."))
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    config.sync_spec("s").unwrap()
}

#[tokio::test]
async fn aliases_identify_users_and_update_only_mode_creates_nobody() {
    let fake = FakeBraze::start(KEY).await;
    let sync = "    alias_label: crm_email\nsyncs:\n  s:\n    model: people\n    destination: braze\n    mode: upsert\n    record_matching: { from: email, to: user_alias }\n";
    let braze = build(&spec(&fake, sync)).await.unwrap();
    let rows = [json!({"user_alias": "ada@x.com", "plan": "pro"})];
    assert_eq!(send(braze.as_ref(), Action::Upsert, &rows).await.unwrap(), vec![Ok(())]);
    assert_eq!(fake.users()["alias:crm_email:ada@x.com"]["plan"], "pro");
    let update = sync.replace("mode: upsert", "mode: update");
    let braze = build(&spec(&fake, &update)).await.unwrap();
    let rows = [json!({"user_alias": "nobody@x.com", "plan": "pro"})];
    assert_eq!(send(braze.as_ref(), Action::Update, &rows).await.unwrap(), vec![Ok(())]);
    assert_eq!(fake.users().len(), 1, "update-only mode creates no user");
    let missing_label = sync.replace("    alias_label: crm_email\n", "");
    let error = build(&spec(&fake, &missing_label))
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(error.contains("alias_label"), "{error}");
}

#[tokio::test]
async fn events_carry_their_name_time_and_properties() {
    let fake = FakeBraze::start(KEY).await;
    let sync = "    event_name: Plan Changed\nsyncs:\n  s:\n    model: people\n    destination: braze\n    type: event\n    mode: insert\n    record_matching: { from: id, to: external_id }\n";
    let braze = build(&spec(&fake, sync)).await.unwrap();
    let rows = [
        json!({"external_id": "u1", "plan": "pro", "time": "2026-11-30T10:00:00Z"}),
        json!({"external_id": "u2", "plan": "free", "name": "Downgraded"}),
        json!({"external_id": "u3", "time": "not a time"}),
    ];
    let results = send(braze.as_ref(), Action::Track, &rows).await.unwrap();
    assert_eq!(&results[..2], &[Ok(()), Ok(())]);
    assert!(results[2].as_ref().unwrap_err().contains("time"), "{results:?}");
    let events = fake.events();
    assert_eq!(events.len(), 2);
    assert_eq!(
        (
            events[0].user.as_str(),
            events[0].name.as_str(),
            events[0].time.as_str()
        ),
        ("external_id:u1", "Plan Changed", "2026-11-30T10:00:00Z")
    );
    assert_eq!(events[0].properties["plan"], "pro");
    assert_eq!(events[1].name, "Downgraded");
    // Without an event name, an event sync must map one.
    let unnamed = sync.replace("    event_name: Plan Changed\n", "");
    let error = build(&spec(&fake, &unnamed)).await.err().expect("refused").to_string();
    assert!(error.contains("event_name"), "{error}");
}

#[tokio::test]
async fn purchases_carry_product_currency_price_and_bad_rows_fail_alone() {
    let fake = FakeBraze::start(KEY).await;
    let sync = "    event_type: purchase\nsyncs:\n  s:\n    model: people\n    destination: braze\n    type: event\n    mode: insert\n    record_matching: { from: id, to: external_id }\n    mappings:\n      - { from: id, to: external_id }\n      - { from: sku, to: product_id }\n      - { from: cur, to: currency }\n      - { from: amount, to: price }\n";
    let braze = build(&spec(&fake, sync)).await.unwrap();
    let rows = [
        json!({"external_id": "u1", "product_id": "pro", "currency": "usd", "price": 19.99, "quantity": 2, "seats": 5}),
        json!({"external_id": "u2", "product_id": "team", "currency": "dollars", "price": 5}),
        json!({"external_id": "u3", "product_id": "pro", "currency": "EUR", "price": "9", "time": "yesterday"}),
    ];
    let results = send(braze.as_ref(), Action::Track, &rows).await.unwrap();
    assert_eq!(results[0], Ok(()));
    assert!(results[1].as_ref().unwrap_err().contains("ISO 4217"), "{results:?}");
    // Braze itself refuses the time; the row fails, the others stand.
    assert!(results[2].as_ref().unwrap_err().contains("time"), "{results:?}");
    let purchases = fake.purchases();
    assert_eq!(purchases.len(), 1, "{purchases:?}");
    let purchase = &purchases[0];
    assert_eq!(
        (
            purchase.user.as_str(),
            purchase.product_id.as_str(),
            purchase.currency.as_str(),
            purchase.price,
            purchase.quantity
        ),
        ("external_id:u1", "pro", "USD", 19.99, 2)
    );
    assert_eq!(purchase.properties["seats"], 5);
    // A purchase sync must map what Braze requires.
    let unmapped = sync.replace("      - { from: amount, to: price }\n", "");
    let error = build(&spec(&fake, &unmapped)).await.err().expect("refused").to_string();
    assert!(error.contains("price"), "{error}");
}

#[tokio::test]
async fn deletes_go_in_fifties_and_a_rate_limit_waits_for_the_reset() {
    let fake = FakeBraze::start(KEY).await;
    for i in 0..120 {
        fake.create_user(&format!("u{i}"), json!({"plan": "pro"}));
    }
    let sync = "syncs:\n  s:\n    model: people\n    destination: braze\n    mode: mirror\n    record_matching: { from: id, to: external_id }\n";
    let braze = build(&spec(&fake, sync)).await.unwrap();
    let rows: Vec<Value> = (0..75).map(|i| json!({"external_id": format!("u{i}")})).collect();
    let before = fake.counts().0;
    let results = send(braze.as_ref(), Action::Delete, &rows).await.unwrap();
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(fake.counts().0 - before, 2, "75 ids are two /users/delete requests");
    assert_eq!(fake.users().len(), 45);
    // A 429 with requests left in the window is a momentary refusal: the
    // engine's short backoff.
    let row = [json!({"external_id": "u1", "plan": "x"})];
    fake.fault(Fault::RateLimited, 1);
    let momentary = send(braze.as_ref(), Action::Upsert, &row).await.unwrap_err();
    assert_eq!(momentary, DeliveryError::RateLimited { retry_after: None });
    // A spent window waits until it resets.
    fake.set_limit(1);
    let limited = loop {
        match send(braze.as_ref(), Action::Upsert, &row).await {
            Ok(_) => continue,
            Err(error) => break error,
        }
    };
    match limited {
        DeliveryError::RateLimited {
            retry_after: Some(wait),
        } => {
            assert!(wait.as_secs() >= 1 && wait.as_secs() <= 4, "{wait:?}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn configs_that_cannot_work_are_refused_before_a_run() {
    let fake = FakeBraze::start(KEY).await;
    let sync = "syncs:\n  s:\n    model: people\n    destination: braze\n    mode: upsert\n    record_matching: { from: email, to: email }\n";
    let error = build(&spec(&fake, sync)).await.err().expect("refused").to_string();
    assert!(error.contains("external_id, braze_id or user_alias"), "{error}");
    let text = "destinations:\n  b:\n    type: braze\n    api_key: x\n    rest_endpoint: https://rest.iad-01.braze.com\n    batch_size: 76\n";
    let error = crate::config::from_yaml_str(std::path::Path::new("t.yaml"), text, std::path::Path::new("."))
        .unwrap_err()
        .to_string();
    assert!(error.contains("t.yaml:6") && error.contains("75"), "{error}");
    let text = "destinations:\n  b:\n    type: braze\n    api_key: x\n    rest_endpoint: ftp://x\n";
    let error = crate::config::from_yaml_str(std::path::Path::new("t.yaml"), text, std::path::Path::new("."))
        .unwrap_err()
        .to_string();
    assert!(error.contains("rest_endpoint"), "{error}");
}

#[tokio::test]
async fn a_changed_row_sends_only_the_attributes_that_changed() {
    use crate::destinations::Record;
    let fake = FakeBraze::start(KEY).await;
    let sync = "syncs:\n  s:\n    model: people\n    destination: braze\n    mode: upsert\n    record_matching: { from: id, to: external_id }\n";
    let braze = build(&spec(&fake, sync)).await.unwrap();
    // Braze's copy of u1 was edited elsewhere: only what changed in the
    // model is written over it, so the edit to `plan` shows it was not sent.
    fake.create_user("u1", json!({"plan": "edited in Braze", "seats": 3}));
    let current = r#"{"external_id":"u1","plan":"pro","seats":4}"#;
    let previous = r#"{"external_id":"u1","plan":"pro","seats":3}"#;
    let unchanged = r#"{"external_id":"u2","plan":"free"}"#;
    let records = [
        Record {
            key: "1",
            json: current,
            previous: Some(previous),
        },
        Record {
            key: "2",
            json: unchanged,
            previous: Some(unchanged),
        },
    ];
    let before = fake.counts().0;
    assert_eq!(
        braze.send(Action::Upsert, &records).await.unwrap(),
        vec![Ok(()), Ok(())]
    );
    let users = fake.users();
    assert_eq!(users["external_id:u1"]["seats"], 4);
    assert_eq!(
        users["external_id:u1"]["plan"], "edited in Braze",
        "an unchanged attribute is not sent"
    );
    assert!(
        !users.contains_key("external_id:u2"),
        "a row with no changed attribute sends nothing"
    );
    assert_eq!(fake.counts().0 - before, 1);
}
