//! The Salesforce connector against the loopback org of `fake.rs`: the
//! destination contract, and what is Salesforce's own — External ID upserts,
//! lookups by SOQL for update and delete, required fields, the daily
//! allowance, sessions renewed through OAuth, describe.

use super::fake::{FakeSalesforce, Fault};
use crate::behaviour::Action;
use crate::destinations::contract::{self, send, ContractFake};
use crate::destinations::{build, DeliveryError, REGISTRY};
use ebb_shared::config::SyncMode;
use serde_json::{json, Value};
use std::collections::BTreeMap;

const SESSION: &str = "00D000000000001!AQ-fixed-session-token";
const WRONG_SECRET: &str = "not-the-client-secret-42";

fn variable(fake: &FakeSalesforce, which: &str) -> String {
    format!("EBB_TEST_SALESFORCE_{which}_{}", fake.url.rsplit(':').next().unwrap())
}

/// A destination block with a connected app's refresh token.
fn oauth_settings(fake: &FakeSalesforce, secret: &str, timeout: &str, extra: &str) -> String {
    let secret_var = variable(fake, if secret == WRONG_SECRET { "WRONG" } else { "SECRET" });
    let refresh_var = variable(fake, "REFRESH");
    std::env::set_var(&secret_var, secret);
    std::env::set_var(&refresh_var, &fake.refresh_token);
    format!(
        "    object: Contact\n    timeout: {timeout}\n{extra}    oauth2:\n      token_url: {}/services/oauth2/token\n      client_id: {}\n      client_secret: \"${{{secret_var}}}\"\n      refresh_token: \"${{{refresh_var}}}\"\n",
        fake.url, fake.client_id
    )
}

/// A destination block with a fixed session token.
fn token_settings(fake: &FakeSalesforce, extra: &str) -> String {
    let token_var = variable(fake, "TOKEN");
    std::env::set_var(&token_var, SESSION);
    format!(
        "    object: Contact\n    instance_url: {}\n    access_token: \"${{{token_var}}}\"\n{extra}",
        fake.url
    )
}

impl ContractFake for FakeSalesforce {
    const MATCHING: &'static str = "Customer_Id__c";

    async fn start() -> Self {
        FakeSalesforce::start(SESSION).await
    }

    fn settings(&self, timeout: &str) -> String {
        oauth_settings(self, &self.client_secret, timeout, "")
    }

    fn refused_settings(&self) -> String {
        oauth_settings(self, WRONG_SECRET, "5s", "")
    }

    fn kind(&self) -> &'static str {
        "salesforce"
    }

    fn record(&self, key: &str, plan: &str) -> Value {
        json!({ "Customer_Id__c": key, "LastName": "Lovelace", "Plan__c": plan })
    }

    fn refuse(&self, key: &str) {
        self.refuse_value(key);
    }

    fn fault(&self, fault: Fault, times: usize) {
        FakeSalesforce::fault(self, fault, times);
    }

    fn create(&self, key: &str, plan: &str) {
        self.insert("Contact", self.record(key, plan));
    }

    fn held(&self) -> BTreeMap<String, Option<String>> {
        self.records("Contact")
            .into_values()
            .filter_map(|r| {
                let key = r.get("Customer_Id__c")?.as_str()?.to_lowercase();
                Some((key, r.get("Plan__c").and_then(Value::as_str).map(str::to_string)))
            })
            .collect()
    }

    fn secrets(&self) -> Vec<String> {
        let mut secrets = vec![
            self.client_secret.clone(),
            self.refresh_token.clone(),
            WRONG_SECRET.to_string(),
            SESSION.to_string(),
        ];
        // Sessions the token endpoint granted start alike.
        secrets.push("AQ-session-".into());
        secrets
    }

    fn expire_sessions(&self) -> bool {
        FakeSalesforce::expire_sessions(self);
        true
    }
}

crate::contract_tests!(super::FakeSalesforce);

async fn open(
    fake: &FakeSalesforce,
    mode: SyncMode,
    settings: &str,
) -> std::sync::Arc<dyn crate::destinations::Destination> {
    build(&contract::spec(fake, mode, settings))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

fn by_key(fake: &FakeSalesforce) -> BTreeMap<String, serde_json::Map<String, Value>> {
    fake.records("Contact")
        .into_values()
        .filter_map(|r| Some((r.get("Customer_Id__c")?.as_str()?.to_string(), r.clone())))
        .collect()
}

#[tokio::test]
async fn insert_fails_a_record_missing_a_required_field_and_leaves_existing_ones() {
    let fake = FakeSalesforce::start(SESSION).await;
    fake.insert(
        "Contact",
        json!({"Customer_Id__c": "c-1", "LastName": "Old", "Plan__c": "pro"}),
    );
    let crm = open(&fake, SyncMode::Insert, &token_settings(&fake, "")).await;
    let rows = [
        json!({"Customer_Id__c": "c-1", "LastName": "New", "Plan__c": "team"}),
        json!({"Customer_Id__c": "c-2", "Plan__c": "free"}),
        json!({"Customer_Id__c": "c-3", "LastName": "Hopper", "Seats__c": 4}),
    ];
    let results = send(crm.as_ref(), Action::Insert, &rows).await.unwrap();
    // Insert leaves an existing record alone (its External ID is taken).
    assert_eq!(results[0], Ok(()));
    let missing = results[1].as_ref().unwrap_err();
    assert!(
        missing.contains("REQUIRED_FIELD_MISSING") && missing.contains("LastName"),
        "{missing}"
    );
    assert_eq!(results[2], Ok(()));
    let held = by_key(&fake);
    assert_eq!(held.len(), 2);
    assert_eq!(held["c-1"]["LastName"], "Old");
    assert_eq!(held["c-3"]["Seats__c"], 4);
}

#[tokio::test]
async fn update_and_delete_look_records_up_by_a_field_and_follow_query_pages() {
    let fake = FakeSalesforce::start(SESSION).await;
    fake.page_size(2);
    for i in 0..5 {
        fake.insert("Contact", json!({"Email": format!("p{i}@x.com"), "LastName": "P"}));
    }
    fake.insert("Contact", json!({"Email": "twin@x.com", "LastName": "A"}));
    fake.insert("Contact", json!({"Email": "twin@x.com", "LastName": "B"}));
    let settings = token_settings(&fake, "");
    let text = format!(
        "sources:\n  files: {{ type: csv, path: . }}\n\
         models:\n  people: {{ source: files, file: p.csv, primary_key: id }}\n\
         destinations:\n  crm:\n    type: salesforce\n{settings}\
         syncs:\n  s:\n    model: people\n    destination: crm\n    mode: update\n    record_matching: {{ from: email, to: Email }}\n"
    );
    let config =
        crate::config::from_yaml_str(std::path::Path::new("t.yaml"), &text, std::path::Path::new(".")).unwrap();
    let crm = build(&config.sync_spec("s").unwrap()).await.unwrap();
    let rows: Vec<Value> = (0..5)
        .map(|i| json!({"Email": format!("P{i}@x.com"), "Plan__c": "team"}))
        .chain([json!({"Email": "twin@x.com", "Plan__c": "x"})])
        .collect();
    let results = send(crm.as_ref(), Action::Update, &rows).await.unwrap();
    assert!(results[..5].iter().all(Result::is_ok), "{results:?}");
    assert!(
        results[5].as_ref().unwrap_err().contains("2 Contact records"),
        "{results:?}"
    );
    let plans: Vec<Option<&str>> = fake
        .records("Contact")
        .values()
        .map(|r| r.get("Plan__c").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|p| p.map(|_| "set"))
        .collect();
    assert_eq!(plans.iter().filter(|p| p.is_some()).count(), 5);
    let results = send(crm.as_ref(), Action::Delete, &rows[..5]).await.unwrap();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(fake.records("Contact").len(), 2, "only the twins are left");
}

#[tokio::test]
async fn records_matched_by_id_are_updated_in_place() {
    let fake = FakeSalesforce::start(SESSION).await;
    let id = fake.insert("Contact", json!({"LastName": "Lovelace"}));
    let settings = token_settings(&fake, "");
    let text = format!(
        "sources:\n  files: {{ type: csv, path: . }}\n\
         models:\n  people: {{ source: files, file: p.csv, primary_key: id }}\n\
         destinations:\n  crm:\n    type: salesforce\n{settings}\
         syncs:\n  s:\n    model: people\n    destination: crm\n    mode: update\n    record_matching: {{ from: sfid, to: Id }}\n"
    );
    let config =
        crate::config::from_yaml_str(std::path::Path::new("t.yaml"), &text, std::path::Path::new(".")).unwrap();
    let crm = build(&config.sync_spec("s").unwrap()).await.unwrap();
    let rows = [
        json!({"Id": id, "Plan__c": "pro"}),
        json!({"Id": "003000000000000999", "Plan__c": "pro"}),
    ];
    let results = send(crm.as_ref(), Action::Update, &rows).await.unwrap();
    assert_eq!(results[0], Ok(()));
    assert!(
        results[1].as_ref().unwrap_err().contains("INVALID_CROSS_REFERENCE_KEY"),
        "{results:?}"
    );
    assert_eq!(fake.records("Contact")[&id]["Plan__c"], "pro");
    // Upserting by Id is not something Salesforce does.
    let upsert = text.replace("mode: update", "mode: upsert");
    let config =
        crate::config::from_yaml_str(std::path::Path::new("t.yaml"), &upsert, std::path::Path::new(".")).unwrap();
    let error = build(&config.sync_spec("s").unwrap())
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(error.contains("External ID"), "{error}");
}

#[tokio::test]
async fn clearing_leaves_required_fields_and_an_unknown_field_is_named() {
    let fake = FakeSalesforce::start(SESSION).await;
    let crm = open(&fake, SyncMode::Mirror, &token_settings(&fake, "")).await;
    let row = [json!({"Customer_Id__c": "c-1", "LastName": "Lovelace", "Plan__c": "pro"})];
    send(crm.as_ref(), Action::Upsert, &row).await.unwrap();
    assert_eq!(
        send(crm.as_ref(), Action::ClearFields, &row).await.unwrap(),
        vec![Ok(())]
    );
    let held = by_key(&fake);
    assert_eq!(held["c-1"]["LastName"], "Lovelace");
    assert!(!held["c-1"].contains_key("Plan__c"), "{held:?}");
    let typo = [json!({"Customer_Id__c": "c-1", "LastName": "L", "Plann__c": "pro"})];
    let error = send(crm.as_ref(), Action::Upsert, &typo).await.unwrap_err();
    assert!(
        matches!(&error, DeliveryError::Permanent(m) if m.contains("INVALID_FIELD") && m.contains("Plann__c")),
        "{error:?}"
    );
}

#[tokio::test]
async fn the_daily_allowance_is_kept_and_its_end_is_permanent() {
    let fake = FakeSalesforce::start(SESSION).await;
    fake.daily_limit(100, 88);
    let crm = open(
        &fake,
        SyncMode::Upsert,
        &token_settings(&fake, "    max_api_usage_percent: 90\n"),
    )
    .await;
    let row = [json!({"Customer_Id__c": "c-1", "LastName": "L"})];
    send(crm.as_ref(), Action::Upsert, &row).await.unwrap();
    send(crm.as_ref(), Action::Upsert, &row).await.unwrap();
    let (requests, _) = fake.counts();
    // 90 of 100 used: the connector stops before the org's other
    // integrations run out.
    let kept = send(crm.as_ref(), Action::Upsert, &row).await.unwrap_err();
    assert!(
        matches!(&kept, DeliveryError::Permanent(m) if m.contains("90 of its 100")),
        "{kept:?}"
    );
    assert_eq!(fake.counts().0, requests, "nothing was sent");
    // The org's own limit: REQUEST_LIMIT_EXCEEDED (TotalRequests).
    let fake = FakeSalesforce::start(SESSION).await;
    fake.daily_limit(10, 10);
    let crm = open(&fake, SyncMode::Upsert, &token_settings(&fake, "")).await;
    let spent = send(crm.as_ref(), Action::Upsert, &row).await.unwrap_err();
    assert!(
        matches!(&spent, DeliveryError::Permanent(m) if m.contains("daily")),
        "{spent:?}"
    );
}

#[tokio::test]
async fn a_fixed_token_that_expires_is_permanent_and_a_grant_renews_once() {
    let fake = FakeSalesforce::start(SESSION).await;
    let crm = open(&fake, SyncMode::Upsert, &token_settings(&fake, "")).await;
    fake.expire_sessions();
    let error = send(crm.as_ref(), Action::Upsert, &[fake.record("a@x.com", "pro")])
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(
        matches!(error, DeliveryError::Permanent(_)) && text.contains("INVALID_SESSION_ID"),
        "{text}"
    );
    assert!(!text.contains(SESSION), "{text}");
    // With a grant: one new token per expiry, not one per request.
    let fake = FakeSalesforce::start(SESSION).await;
    let crm = open(&fake, SyncMode::Upsert, &fake.settings("5s")).await;
    for key in ["a@x.com", "b@x.com"] {
        send(crm.as_ref(), Action::Upsert, &[fake.record(key, "pro")])
            .await
            .unwrap();
    }
    assert_eq!(fake.tokens_issued(), 1);
    FakeSalesforce::expire_sessions(&fake);
    send(crm.as_ref(), Action::Upsert, &[fake.record("c@x.com", "pro")])
        .await
        .unwrap();
    assert_eq!(fake.tokens_issued(), 2);
}

#[tokio::test]
async fn describe_gives_fields_and_the_connection_test() {
    let fake = FakeSalesforce::start(SESSION).await;
    let spec = contract::spec(&fake, SyncMode::Upsert, &fake.settings("5s"));
    REGISTRY.test_connection("crm", &spec.destination).await.unwrap();
    let fields = REGISTRY
        .fields("crm", &spec.destination, None)
        .await
        .unwrap()
        .expect("Salesforce describes its objects");
    let external = fields.iter().find(|f| f.name == "Customer_Id__c").unwrap();
    assert!(external.unique && external.writable, "{external:?}");
    let created = fields.iter().find(|f| f.name == "CreatedDate").unwrap();
    assert!(!created.writable, "{created:?}");
    let error = REGISTRY
        .fields("crm", &spec.destination, Some("Invoice__c"))
        .await
        .unwrap_err();
    assert!(error.contains("NOT_FOUND") && error.contains("object"), "{error}");
}

#[tokio::test]
async fn configs_that_cannot_work_are_refused_before_a_run() {
    let load = |settings: &str| {
        let text = format!("destinations:\n  crm:\n    type: salesforce\n{settings}");
        crate::config::from_yaml_str(std::path::Path::new("t.yaml"), &text, std::path::Path::new("."))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let error = load("    object: Contact\n    access_token: x\n");
    assert!(error.contains("instance_url"), "{error}");
    let error = load("    object: Contact\n");
    assert!(error.contains("oauth2"), "{error}");
    let error = load("    object: Contact\n    instance_url: https://x.my.salesforce.com\n    access_token: x\n    batch_size: 201\n");
    assert!(error.contains("t.yaml:7") && error.contains("200"), "{error}");
    let error = load("    object: Contact\n    instance_url: https://x.my.salesforce.com\n    access_token: x\n    api_version: \"30.0\"\n");
    assert!(error.contains("46.0"), "{error}");
    let error = load("    object: Contact/x\n    instance_url: https://x\n    access_token: x\n");
    assert!(error.contains("API name"), "{error}");
}
