//! The HubSpot connector against the loopback HubSpot of `fake.rs`: every
//! mode it declares, per-record results from multi-status answers, the
//! vendor's rate-limit and error signals, and secrets kept out of errors.

use super::fake::{FakeHubSpot, Fault};
use crate::behaviour::Action;
use crate::destinations::contract::ContractFake;
use crate::destinations::{build, DeliveryError, Destination, Record};
use ebb_shared::config::{DeleteBehavior, SyncMode, SyncType};
use serde_json::{json, Value};
use std::sync::Arc;

const TOKEN: &str = "pat-na1-11111111-2222-3333-4444-555555555555";

fn spec(
    fake: &FakeHubSpot,
    sync_type: SyncType,
    mode: SyncMode,
    matching: Option<&str>,
    timeout: &str,
) -> ebb_shared::config::SyncSpec {
    // One variable per fake: tests run side by side in one process.
    let variable = format!("EBB_TEST_HUBSPOT_TOKEN_{}", fake.url.rsplit(':').next().unwrap());
    std::env::set_var(&variable, &fake.token);
    let text = format!(
        "sources:\n  files: {{ type: csv, path: . }}\n\
         models:\n  people: {{ source: files, file: p.csv, primary_key: id }}\n\
         destinations:\n  crm:\n    type: hubspot\n    access_token: \"${{{variable}}}\"\n    api_base_url: {}\n    list_id: \"77\"\n    timeout: {timeout}\n\
         syncs:\n  s:\n    model: people\n    destination: crm\n    type: {sync_type}\n    mode: {mode}\n{}",
        fake.url,
        matching
            .map(|m| format!("    record_matching: {{ from: {m}, to: {m} }}\n"))
            .unwrap_or_default()
    );
    let config = crate::config::from_yaml_str(std::path::Path::new("t.yaml"), &text, std::path::Path::new("."))
        .unwrap_or_else(|e| panic!("{e}"));
    config.sync_spec("s").unwrap()
}

async fn open(fake: &FakeHubSpot, sync_type: SyncType, mode: SyncMode, matching: Option<&str>) -> Arc<dyn Destination> {
    build(&spec(fake, sync_type, mode, matching, "5s"))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

fn records(values: &[Value]) -> Vec<(String, String)> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| (i.to_string(), v.to_string()))
        .collect()
}

async fn send(
    destination: &dyn Destination,
    action: Action,
    values: &[Value],
) -> Result<Vec<Result<(), String>>, DeliveryError> {
    let owned = records(values);
    let batch: Vec<Record<'_>> = owned.iter().map(|(key, json)| Record::new(key, json)).collect();
    destination.send(action, &batch).await
}

fn by_email(fake: &FakeHubSpot) -> std::collections::BTreeMap<String, serde_json::Map<String, Value>> {
    fake.records("contacts")
        .into_values()
        .map(|p| (p["email"].as_str().unwrap().to_string(), p))
        .collect()
}

/// Variables are per fake: tests run side by side in one process.
fn token_variable(fake: &FakeHubSpot, which: &str) -> String {
    format!("EBB_TEST_HUBSPOT_{which}_{}", fake.url.rsplit(':').next().unwrap())
}

impl ContractFake for FakeHubSpot {
    const MATCHING: &'static str = "email";

    async fn start() -> Self {
        FakeHubSpot::start(TOKEN, None).await
    }

    fn settings(&self, timeout: &str) -> String {
        let variable = token_variable(self, "TOKEN");
        std::env::set_var(&variable, &self.token);
        format!(
            "    access_token: \"${{{variable}}}\"\n    api_base_url: {}\n    timeout: {timeout}\n",
            self.url
        )
    }

    fn refused_settings(&self) -> String {
        let variable = token_variable(self, "WRONG");
        std::env::set_var(&variable, "pat-na1-revoked-00000000");
        format!(
            "    access_token: \"${{{variable}}}\"\n    api_base_url: {}\n",
            self.url
        )
    }

    fn kind(&self) -> &'static str {
        "hubspot"
    }

    fn record(&self, key: &str, plan: &str) -> Value {
        json!({ "email": key, "plan": plan })
    }

    fn refuse(&self, key: &str) {
        self.refuse_email(key);
    }

    fn fault(&self, fault: Fault, times: usize) {
        FakeHubSpot::fault(self, fault, times);
    }

    fn create(&self, key: &str, plan: &str) {
        self.insert("contacts", json!({ "email": key, "plan": plan }));
    }

    fn held(&self) -> std::collections::BTreeMap<String, Option<String>> {
        self.records("contacts")
            .into_values()
            .map(|p| {
                let plan = p.get("plan").and_then(Value::as_str).filter(|v| !v.is_empty());
                (p["email"].as_str().unwrap().to_string(), plan.map(str::to_string))
            })
            .collect()
    }

    fn secrets(&self) -> Vec<String> {
        vec![self.token.clone(), "pat-na1-revoked-00000000".into()]
    }

    /// A private app's token does not expire.
    fn expire_sessions(&self) -> bool {
        false
    }
}

crate::contract_tests!(super::FakeHubSpot);

/// The same HubSpot reached by a public app: OAuth tokens that expire and
/// are renewed by the refresh-token grant.
struct PublicApp(FakeHubSpot);

const CLIENT_ID: &str = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0";
const CLIENT_SECRET: &str = "cs-11112222-3333-4444-5555-666677778888";
const REFRESH_TOKEN: &str = "na1-rt-9999aaaa-bbbb-cccc-dddd-eeeeffff0000";

impl PublicApp {
    /// The `oauth2` block, its secrets as per-fake variables.
    fn oauth2_settings(&self, refresh_token: &str) -> String {
        let secret = token_variable(&self.0, "CLIENT_SECRET");
        let refresh = token_variable(&self.0, &format!("REFRESH_{}", refresh_token.len()));
        std::env::set_var(&secret, CLIENT_SECRET);
        std::env::set_var(&refresh, refresh_token);
        format!(
            "    oauth2:\n      client_id: {CLIENT_ID}\n      client_secret: \"${{{secret}}}\"\n      \
             refresh_token: \"${{{refresh}}}\"\n    api_base_url: {}\n",
            self.0.url
        )
    }
}

impl ContractFake for PublicApp {
    const MATCHING: &'static str = "email";

    async fn start() -> Self {
        let fake = FakeHubSpot::start(TOKEN, None).await;
        fake.install_app(CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN);
        PublicApp(fake)
    }

    fn settings(&self, timeout: &str) -> String {
        format!("{}    timeout: {timeout}\n", self.oauth2_settings(REFRESH_TOKEN))
    }

    fn refused_settings(&self) -> String {
        self.oauth2_settings("na1-rt-revoked")
    }

    fn kind(&self) -> &'static str {
        "hubspot"
    }

    fn record(&self, key: &str, plan: &str) -> Value {
        self.0.record(key, plan)
    }

    fn refuse(&self, key: &str) {
        self.0.refuse(key);
    }

    fn fault(&self, fault: Fault, times: usize) {
        FakeHubSpot::fault(&self.0, fault, times);
    }

    fn create(&self, key: &str, plan: &str) {
        self.0.create(key, plan);
    }

    fn held(&self) -> std::collections::BTreeMap<String, Option<String>> {
        self.0.held()
    }

    fn secrets(&self) -> Vec<String> {
        let mut secrets = self.0.app_secrets();
        secrets.push("na1-rt-revoked".into());
        secrets
    }

    fn expire_sessions(&self) -> bool {
        self.0.expire_tokens();
        true
    }
}

mod public_app {
    crate::contract_tests!(crate::destinations::hubspot::tests::PublicApp);
}

#[tokio::test]
async fn a_public_app_renews_its_token_once_per_expiry_and_never_shows_it() {
    let app = PublicApp::start().await;
    let spec_text = |settings: String| {
        format!(
            "sources:\n  files: {{ type: csv, path: . }}\nmodels:\n  people: {{ source: files, file: p.csv, primary_key: id }}\n\
             destinations:\n  crm:\n    type: hubspot\n{settings}syncs:\n  s: {{ model: people, destination: crm, mode: upsert, \
             record_matching: {{ from: email, to: email }} }}\n"
        )
    };
    let text = spec_text(app.settings("5s"));
    let config = crate::config::from_yaml_str(std::path::Path::new("t.yaml"), &text, std::path::Path::new("."))
        .unwrap_or_else(|e| panic!("{e}"));
    let crm = build(&config.sync_spec("s").unwrap()).await.unwrap();
    // One grant serves every request until its token expires (after the
    // first here); then one more grant, however many requests follow.
    for (email, grants) in [("a@x.com", 1), ("b@x.com", 2), ("c@x.com", 2)] {
        let rows = [json!({"email": email, "plan": "pro"})];
        assert_eq!(send(crm.as_ref(), Action::Upsert, &rows).await.unwrap(), vec![Ok(())]);
        assert_eq!(app.0.grants(), grants, "after {email}");
        if email == "a@x.com" {
            app.0.expire_tokens();
        }
    }
    assert_eq!(app.0.held().len(), 3);
    // The app's limit is 110 requests per 10 s in every account, whatever
    // the tier says.
    let limits = crate::destinations::profile(&config.destinations["crm"])
        .unwrap()
        .limits;
    assert_eq!(limits.rate_limit, Some(11.0));
    assert_eq!(limits.rate_window, Some(std::time::Duration::from_secs(10)));
}

#[tokio::test]
async fn a_server_without_the_dated_token_endpoint_is_asked_at_v1() {
    let app = PublicApp::start().await;
    app.0.token_endpoint_v1_only();
    let crm = crate::destinations::contract::open(&app, SyncMode::Upsert, "5s").await;
    let rows = [json!({"email": "a@x.com", "plan": "pro"})];
    assert_eq!(send(crm.as_ref(), Action::Upsert, &rows).await.unwrap(), vec![Ok(())]);
    assert_eq!(app.0.grants(), 1);
}

#[test]
fn credentials_are_one_of_a_token_and_an_oauth2_block() {
    for (settings, says) in [
        ("", "HubSpot needs credentials"),
        (
            "    access_token: \"${T}\"\n    oauth2: { client_id: c, client_secret: \"${S}\", refresh_token: \"${R}\" }\n",
            "not both",
        ),
        (
            "    oauth2: { client_id: c, client_secret: \"${S}\", refresh_token: \"${R}\", token_url: \"ftp://x\" }\n",
            "token_url",
        ),
        ("    oauth2: { client_id: c, client_secret: \"${S}\" }\n", "refresh_token"),
    ] {
        let text = format!(
            "sources:\n  files: {{ type: csv, path: . }}\nmodels:\n  people: {{ source: files, file: p.csv, primary_key: id }}\n\
             destinations:\n  crm:\n    type: hubspot\n{settings}syncs:\n  s: {{ model: people, destination: crm, mode: upsert, \
             record_matching: {{ from: email, to: email }} }}\n"
        );
        let error = crate::config::from_yaml_str(std::path::Path::new("t.yaml"), &text, std::path::Path::new("."))
            .err()
            .unwrap_or_else(|| panic!("{settings} accepted"))
            .to_string();
        assert!(error.contains(says), "{settings}: {error}");
    }
}

#[tokio::test]
async fn upsert_update_clear_and_delete_by_a_unique_property() {
    let fake = FakeHubSpot::start(TOKEN, None).await;
    let crm = open(&fake, SyncType::Object, SyncMode::Mirror, Some("email")).await;
    let rows = [
        json!({"email": "Ada@X.com", "plan": "pro", "seats": 3}),
        json!({"email": "bo@x.com", "plan": "free", "seats": null}),
    ];
    assert_eq!(
        send(crm.as_ref(), Action::Upsert, &rows).await.unwrap(),
        vec![Ok(()), Ok(())]
    );
    let held = by_email(&fake);
    assert_eq!(held["ada@x.com"]["plan"], "pro");
    assert_eq!(held["ada@x.com"]["seats"], "3");
    assert_eq!(held["bo@x.com"]["seats"], "");
    // Upserting again changes the record, never adds one.
    let changed = [json!({"email": "ada@x.com", "plan": "team", "seats": 4})];
    send(crm.as_ref(), Action::Upsert, &changed).await.unwrap();
    assert_eq!(fake.records("contacts").len(), 2);
    assert_eq!(by_email(&fake)["ada@x.com"]["plan"], "team");
    // Clearing empties every field but the one records are matched on.
    send(crm.as_ref(), Action::ClearFields, &changed).await.unwrap();
    assert_eq!(by_email(&fake)["ada@x.com"]["plan"], "");
    assert_eq!(by_email(&fake)["ada@x.com"]["email"], "ada@x.com");
    // Deleting looks the record up by email and archives it; one already
    // gone is fine.
    let gone = [json!({"email": "bo@x.com"}), json!({"email": "never@x.com"})];
    assert_eq!(
        send(crm.as_ref(), Action::Delete, &gone).await.unwrap(),
        vec![Ok(()), Ok(())]
    );
    assert_eq!(by_email(&fake).keys().collect::<Vec<_>>(), vec!["ada@x.com"]);
}

#[tokio::test]
async fn update_fails_only_the_records_hubspot_does_not_have() {
    let fake = FakeHubSpot::start(TOKEN, None).await;
    fake.insert("contacts", json!({"email": "ada@x.com", "plan": "pro"}));
    let crm = open(&fake, SyncType::Object, SyncMode::Update, Some("email")).await;
    let rows = [
        json!({"email": "ada@x.com", "plan": "team"}),
        json!({"email": "nobody@x.com", "plan": "x"}),
        json!({"plan": "no email"}),
    ];
    let results = send(crm.as_ref(), Action::Update, &rows).await.unwrap();
    assert_eq!(results[0], Ok(()));
    assert!(
        results[1].as_ref().unwrap_err().contains("OBJECT_NOT_FOUND"),
        "{results:?}"
    );
    assert!(results[2].as_ref().unwrap_err().contains("\"email\""), "{results:?}");
    assert_eq!(fake.records("contacts").len(), 1);
    assert_eq!(by_email(&fake)["ada@x.com"]["plan"], "team");
}

#[tokio::test]
async fn create_reports_refused_inputs_by_trace_id() {
    let fake = FakeHubSpot::start(TOKEN, None).await;
    fake.refuse_email("bad@x.com");
    let crm = open(&fake, SyncType::Object, SyncMode::Insert, None).await;
    let rows = [
        json!({"email": "a@x.com"}),
        json!({"email": "bad@x.com"}),
        json!({"email": "c@x.com"}),
    ];
    let results = send(crm.as_ref(), Action::Insert, &rows).await.unwrap();
    assert_eq!(results[0], Ok(()));
    assert!(
        results[1].as_ref().unwrap_err().contains("INVALID_EMAIL"),
        "{results:?}"
    );
    assert_eq!(results[2], Ok(()));
    assert_eq!(by_email(&fake).len(), 2);
}

#[tokio::test]
async fn a_batch_refused_whole_is_content_the_engine_splits() {
    let fake = FakeHubSpot::start(TOKEN, None).await;
    fake.refuse_email("bad@x.com");
    let crm = open(&fake, SyncType::Object, SyncMode::Upsert, Some("email")).await;
    let rows = [json!({"email": "a@x.com"}), json!({"email": "bad@x.com"})];
    let refused = send(crm.as_ref(), Action::Upsert, &rows).await.unwrap_err();
    assert!(
        matches!(&refused, DeliveryError::Rejected(m) if m.contains("VALIDATION_ERROR")),
        "{refused:?}"
    );
    // Halves pass or fail on their own.
    assert_eq!(
        send(crm.as_ref(), Action::Upsert, &rows[..1]).await.unwrap(),
        vec![Ok(())]
    );
}

#[tokio::test]
async fn audiences_add_and_remove_list_members_looked_up_by_email() {
    let fake = FakeHubSpot::start(TOKEN, None).await;
    fake.create_list("77", "MANUAL");
    let ada = fake.insert("contacts", json!({"email": "ada@x.com"}));
    let bo = fake.insert("contacts", json!({"email": "bo@x.com"}));
    let crm = open(&fake, SyncType::Audience, SyncMode::AddRemove, Some("email")).await;
    let rows = [
        json!({"email": "ADA@x.com"}),
        json!({"email": "bo@x.com"}),
        json!({"email": "ghost@x.com"}),
    ];
    let results = send(crm.as_ref(), Action::Add, &rows).await.unwrap();
    assert_eq!(&results[..2], &[Ok(()), Ok(())]);
    assert!(results[2].as_ref().unwrap_err().contains("ghost@x.com"), "{results:?}");
    assert_eq!(fake.members("77"), [ada, bo].into_iter().collect());
    let leaving = [json!({"email": "bo@x.com"}), json!({"email": "ghost@x.com"})];
    assert_eq!(
        send(crm.as_ref(), Action::Remove, &leaving).await.unwrap(),
        vec![Ok(()), Ok(())]
    );
    assert_eq!(fake.members("77"), [ada].into_iter().collect());
}

#[tokio::test]
async fn a_dynamic_list_is_refused_by_name() {
    let fake = FakeHubSpot::start(TOKEN, None).await;
    fake.create_list("77", "DYNAMIC");
    fake.insert("contacts", json!({"email": "ada@x.com"}));
    let crm = open(&fake, SyncType::Audience, SyncMode::AddRemove, Some("email")).await;
    let refused = send(crm.as_ref(), Action::Add, &[json!({"email": "ada@x.com"})])
        .await
        .unwrap_err();
    assert!(format!("{refused}").contains("DYNAMIC"), "{refused}");
}

#[tokio::test]
async fn the_ten_secondly_limit_is_a_rate_limit_without_retry_after() {
    let fake = FakeHubSpot::start(TOKEN, Some(3)).await;
    let crm = open(&fake, SyncType::Object, SyncMode::Upsert, Some("email")).await;
    let row = [json!({"email": "a@x.com"})];
    for _ in 0..3 {
        send(crm.as_ref(), Action::Upsert, &row).await.unwrap();
    }
    // The fourth request in ten seconds passes the tier's limit: HubSpot sends
    // no Retry-After, so the engine's backoff decides the pause.
    assert_eq!(
        send(crm.as_ref(), Action::Upsert, &row).await.unwrap_err(),
        DeliveryError::RateLimited { retry_after: None }
    );
    assert_eq!(fake.counts(), (4, 1));
}

#[tokio::test]
async fn configs_that_cannot_work_are_refused_before_a_run() {
    let fake = FakeHubSpot::start(TOKEN, None).await;
    let error = match build(&spec(&fake, SyncType::Object, SyncMode::Upsert, None, "5s")).await {
        Err(error) => error.to_string(),
        Ok(_) => panic!("an upsert without record matching opened"),
    };
    assert!(error.contains("record_matching"), "{error}");
    let text = "destinations:\n  crm:\n    type: hubspot\n    access_token: x\n    batch_size: 101\n";
    let error =
        crate::config::from_yaml_str(std::path::Path::new("t.yaml"), text, std::path::Path::new(".")).unwrap_err();
    assert!(
        error.to_string().contains("t.yaml:5") && error.to_string().contains("100"),
        "{error}"
    );
    let text = "destinations:\n  crm:\n    type: hubspot\n    access_token: x\n    rate_limit: 50\n";
    let error =
        crate::config::from_yaml_str(std::path::Path::new("t.yaml"), text, std::path::Path::new(".")).unwrap_err();
    assert!(error.to_string().contains("documented limit"), "{error}");
    let _ = DeleteBehavior::Delete;
}

#[tokio::test]
async fn the_connection_test_checks_the_token_the_object_and_the_list() {
    use crate::destinations::REGISTRY;
    let fake = FakeHubSpot::start(TOKEN, None).await;
    fake.create_list("77", "MANUAL");
    let audience = spec(&fake, SyncType::Audience, SyncMode::AddRemove, Some("email"), "5s");
    REGISTRY.test_connection("crm", &audience.destination).await.unwrap();
    fake.create_list("77", "DYNAMIC");
    let error = REGISTRY
        .test_connection("crm", &audience.destination)
        .await
        .unwrap_err();
    assert!(error.contains("DYNAMIC"), "{error}");
    let mut wrong = fake.clone();
    wrong.token = "pat-na1-not-the-token".into();
    let refused = spec(&wrong, SyncType::Object, SyncMode::Upsert, Some("email"), "5s");
    let error = REGISTRY.test_connection("crm", &refused.destination).await.unwrap_err();
    assert!(
        error.contains("401") && !error.contains("pat-na1-not-the-token"),
        "{error}"
    );
}

#[tokio::test]
async fn fields_come_from_the_properties_api() {
    use crate::destinations::REGISTRY;
    let fake = FakeHubSpot::start(TOKEN, None).await;
    let upsert = spec(&fake, SyncType::Object, SyncMode::Upsert, Some("email"), "5s");
    let fields = REGISTRY
        .fields("crm", &upsert.destination, Some("contacts"))
        .await
        .unwrap()
        .expect("HubSpot lists its properties");
    let email = fields.iter().find(|f| f.name == "email").expect("email");
    assert!(email.writable, "{email:?}");
    let id = fields.iter().find(|f| f.name == "hs_object_id").expect("hs_object_id");
    assert!(id.unique && !id.writable, "{id:?}");
}
