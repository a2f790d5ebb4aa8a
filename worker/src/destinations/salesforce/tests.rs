//! The Salesforce connector against the loopback org of `fake.rs`: the
//! destination contract, and what is Salesforce's own — External ID upserts,
//! lookups by SOQL for update and delete, required fields, the daily
//! allowance, sessions renewed through OAuth, describe.

use super::fake::{FakeSalesforce, Fault};
use crate::behaviour::Action;
use crate::destinations::contract::{self, send, send_bulk, ContractFake};
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

/// Sends `values` as one bulk job through `jobs`.
fn job_log(dir: &tempfile::TempDir, first: usize, len: usize) -> crate::jobs::JobLog {
    let storage = ebb_shared::storage::Storage::from_url(dir.path().to_str().unwrap()).unwrap();
    crate::jobs::JobLog::new(storage, "syncs/s/runs/r/checkpoints/0-ff/", &(first..first + len))
}

const BULK: &str = "    bulk_api: { threshold: 2, poll_interval: 20ms, job_timeout: 5s }\n";

#[tokio::test]
async fn bulk_jobs_upsert_update_insert_and_delete_and_answer_per_row() {
    let fake = FakeSalesforce::start(SESSION).await;
    fake.job_polls(2);
    fake.refuse_value("blocked");
    let dir = tempfile::tempdir().unwrap();
    let crm = open(&fake, SyncMode::Upsert, &token_settings(&fake, BULK)).await;
    let limits = crm.bulk().expect("Salesforce declares bulk jobs");
    assert_eq!((limits.threshold, limits.records), (2, 10_000));
    let rows = [
        json!({"Customer_Id__c": "c-1", "LastName": "Lovelace", "Plan__c": "pro", "Seats__c": 3}),
        json!({"Customer_Id__c": "c-2", "LastName": "Hopper", "Plan__c": "blocked"}),
        json!({"Customer_Id__c": "c-3", "LastName": "Liskov", "Plan__c": null}),
    ];
    let results = send_bulk(crm.as_ref(), Action::Upsert, &rows, &job_log(&dir, 0, 3))
        .await
        .unwrap();
    assert_eq!(results[0], Ok(()));
    assert!(
        results[1]
            .as_ref()
            .unwrap_err()
            .contains("FIELD_CUSTOM_VALIDATION_EXCEPTION"),
        "{results:?}"
    );
    assert_eq!(results[2], Ok(()));
    let held = by_key(&fake);
    assert_eq!(held["c-1"]["Plan__c"], "pro");
    assert_eq!(held["c-1"]["Seats__c"], 3.0);
    assert!(!held.contains_key("c-2"));
    assert!(!held["c-3"].contains_key("Plan__c"), "#N/A leaves the field null");

    // Update looks the records up by the matching field first.
    let crm = open(&fake, SyncMode::Update, &token_settings(&fake, BULK)).await;
    let rows = [
        json!({"Customer_Id__c": "c-1", "Plan__c": "team"}),
        json!({"Customer_Id__c": "c-9", "Plan__c": "team"}),
    ];
    let results = send_bulk(crm.as_ref(), Action::Update, &rows, &job_log(&dir, 3, 2))
        .await
        .unwrap();
    assert_eq!(results[0], Ok(()));
    assert!(
        results[1].as_ref().unwrap_err().contains("no Contact record"),
        "{results:?}"
    );
    assert_eq!(by_key(&fake)["c-1"]["Plan__c"], "team");

    // Insert leaves a record whose External ID is taken alone.
    let crm = open(&fake, SyncMode::Insert, &token_settings(&fake, BULK)).await;
    let rows = [
        json!({"Customer_Id__c": "c-1", "LastName": "Again"}),
        json!({"Customer_Id__c": "c-4", "LastName": "Goldberg"}),
    ];
    let results = send_bulk(crm.as_ref(), Action::Insert, &rows, &job_log(&dir, 5, 2))
        .await
        .unwrap();
    assert_eq!(results, vec![Ok(()), Ok(())]);
    assert_eq!(by_key(&fake)["c-1"]["LastName"], "Lovelace");

    // Delete: gone records and records never there are done.
    let crm = open(&fake, SyncMode::Mirror, &token_settings(&fake, BULK)).await;
    let rows = [
        json!({"Customer_Id__c": "c-1"}),
        json!({"Customer_Id__c": "c-4"}),
        json!({"Customer_Id__c": "c-404"}),
    ];
    let results = send_bulk(crm.as_ref(), Action::Delete, &rows, &job_log(&dir, 7, 3))
        .await
        .unwrap();
    assert_eq!(results, vec![Ok(()), Ok(()), Ok(())]);
    let left: Vec<String> = by_key(&fake).into_keys().collect();
    assert_eq!(left, vec!["c-3"]);
    assert_eq!(fake.jobs_created(), 4, "one job per batch");
}

/// A worker dies while its job runs: the attempt that takes over polls the
/// same job and reads its results; nothing is submitted twice (an insert
/// sent twice would create every record twice).
#[tokio::test]
async fn a_resumed_attempt_polls_the_job_in_flight_instead_of_resubmitting() {
    let fake = FakeSalesforce::start(SESSION).await;
    fake.job_polls(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let crm = open(&fake, SyncMode::Insert, &token_settings(&fake, BULK)).await;
    let rows: Vec<Value> = (0..50)
        .map(|i| json!({"Customer_Id__c": format!("k-{i}"), "LastName": format!("Row {i}")}))
        .collect();
    let log = job_log(&dir, 0, 50);
    let first = send_bulk(crm.as_ref(), Action::Insert, &rows, &log);
    // The first attempt is dropped mid-poll, as a killed worker's would be.
    assert!(tokio::time::timeout(std::time::Duration::from_millis(500), first)
        .await
        .is_err());
    assert_eq!(fake.jobs_created(), 1);
    fake.job_polls(3);
    let again = open(&fake, SyncMode::Insert, &token_settings(&fake, BULK)).await;
    let results = send_bulk(again.as_ref(), Action::Insert, &rows, &job_log(&dir, 0, 50))
        .await
        .unwrap();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(
        fake.jobs_created(),
        1,
        "the job in flight was resumed, not submitted again"
    );
    assert_eq!(fake.records("Contact").len(), 50, "every record created once");
    // A recorded job the org does not know (deleted since) is no job.
    let other = job_log(&dir, 50, 2);
    other.record("750000000000000999").await;
    let rows = [
        json!({"Customer_Id__c": "k-x", "LastName": "X"}),
        json!({"Customer_Id__c": "k-y", "LastName": "Y"}),
    ];
    let results = send_bulk(again.as_ref(), Action::Insert, &rows, &other).await.unwrap();
    assert_eq!(
        results,
        vec![Ok(()), Ok(())],
        "an unknown job is no job: the batch is submitted"
    );
    assert_eq!(fake.jobs_created(), 2);
    // A job left Open (the upload may be partial) is aborted and the batch
    // submitted anew; an aborted job is never resumed.
    let open = fake.open_job("Contact");
    let log = job_log(&dir, 52, 1);
    log.record(&open).await;
    let row = [json!({"Customer_Id__c": "k-z", "LastName": "Z"})];
    assert_eq!(
        send_bulk(again.as_ref(), Action::Insert, &row, &log).await.unwrap(),
        vec![Ok(())]
    );
    assert_eq!(fake.job_state(&open).as_deref(), Some("Aborted"));
    assert_eq!(fake.jobs_created(), 4);
    log.record(&open).await;
    assert_eq!(
        send_bulk(again.as_ref(), Action::Insert, &row, &log).await.unwrap(),
        vec![Ok(())]
    );
    assert_eq!(fake.jobs_created(), 5, "the aborted job was not resumed");
    assert_eq!(fake.records("Contact").len(), 53);
}

#[test]
fn bulk_settings_out_of_bounds_are_refused_at_their_field() {
    for (settings, field) in [
        ("    bulk_api: { threshold: 0 }\n", "threshold"),
        ("    bulk_api: { records_per_job: 0 }\n", "records_per_job"),
        ("    bulk_api: { poll_interval: 0s }\n", "poll_interval"),
        ("    bulk_api: { thresold: 5 }\n", "thresold"),
    ] {
        let text = format!(
            "sources:\n  files: {{ type: csv, path: . }}\nmodels:\n  people: {{ source: files, file: p.csv, primary_key: id }}\n\
             destinations:\n  crm:\n    type: salesforce\n    object: Contact\n    instance_url: https://x.my.salesforce.com\n    \
             access_token: \"${{T}}\"\n{settings}syncs:\n  s: {{ model: people, destination: crm, mode: upsert, record_matching: {{ from: id, to: Customer_Id__c }} }}\n"
        );
        let error = crate::config::from_yaml_str(std::path::Path::new("t.yaml"), &text, std::path::Path::new("."))
            .err()
            .unwrap_or_else(|| panic!("{settings} accepted"))
            .to_string();
        assert!(error.contains(field), "{settings}: {error}");
    }
}
