//! `ebb destination test|fields` and their API twins, against the loopback
//! HubSpot: a reachable destination, a refused token (named, never shown),
//! a list the sync cannot change, and fields from HubSpot's properties API.

use ebb_tests::process::{ebb_command, EbbProcess};
use ebb_worker::destinations::hubspot::fake::FakeHubSpot;
use serde_json::Value;

const TOKEN: &str = "pat-na1-cli00000-0000-4000-8000-000000000000";

fn config(hubspot: &str) -> String {
    format!(
        "sources:\n  files: {{ type: csv, path: data }}\n\
         models:\n  users: {{ source: files, file: users.csv, primary_key: id }}\n\
         destinations:\n  \
           crm: {{ type: hubspot, access_token: \"${{EBB_TEST_CLI_TOKEN}}\", api_base_url: \"{hubspot}\", list_id: \"9\" }}\n  \
           out: {{ type: jsonl, path: out/users.jsonl }}\n\
         syncs:\n  s: {{ model: users, destination: out, mode: upsert }}\n"
    )
}

fn ebb(dir: &std::path::Path, token: &str, args: &[&str]) -> (i32, String, String) {
    let config = dir.join("ebb.yaml");
    let output = ebb_command()
        .args(args)
        .args(["--config", config.to_str().unwrap()])
        .env("EBB_TEST_CLI_TOKEN", token)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destinations_are_tested_and_described_from_the_cli_and_the_api() {
    let fake = FakeHubSpot::start(TOKEN, None).await;
    fake.create_list("9", "MANUAL");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/users.csv"), "id,email\n1,a@x.com\n").unwrap();
    std::fs::write(dir.path().join("ebb.yaml"), config(&fake.url)).unwrap();
    let path = dir.path().to_path_buf();
    let blocking = move |token: &'static str, args: &'static [&'static str]| {
        let path = path.clone();
        tokio::task::spawn_blocking(move || ebb(&path, token, args))
    };

    let (code, out, err) = blocking(TOKEN, &["destination", "test", "crm"]).await.unwrap();
    assert_eq!(
        (code, out.trim()),
        (0, "destination \"crm\" (hubspot): reachable"),
        "{err}"
    );
    let (code, _, err) = blocking("pat-na1-wrong-token", &["destination", "test", "crm"])
        .await
        .unwrap();
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("INVALID_AUTHENTICATION") && !err.contains("pat-na1-wrong-token"),
        "{err}"
    );
    fake.create_list("9", "DYNAMIC");
    let (code, _, err) = blocking(TOKEN, &["destination", "test", "crm"]).await.unwrap();
    assert!(code == 1 && err.contains("DYNAMIC"), "{code}: {err}");
    let (code, _, err) = blocking(TOKEN, &["destination", "test", "nope"]).await.unwrap();
    assert!(code != 0 && err.contains("crm, out"), "{code}: {err}");

    let (code, out, err) = blocking(TOKEN, &["destination", "fields", "crm", "companies", "--json"])
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    let fields: Value = serde_json::from_str(&out).unwrap();
    let id = fields["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "hs_object_id")
        .cloned();
    assert_eq!(id.unwrap()["unique"], true, "{out}");
    let (code, out, _) = blocking(TOKEN, &["destination", "fields", "out"]).await.unwrap();
    assert!(code == 0 && out.contains("takes any field"), "{out}");

    // The API: the coordinator tests with its own environment.
    fake.create_list("9", "MANUAL");
    let (_standalone, api) = EbbProcess::standalone(
        &dir.path().join("ebb.yaml"),
        &[("EBB_TEST_CLI_TOKEN", TOKEN.to_string())],
        dir.path(),
    )
    .await;
    let http = reqwest::Client::new();
    let get = |path: &str| {
        let request = http.get(format!("{api}{path}"));
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let listed = get("/api/v1/destinations").await;
    assert_eq!(
        listed["data"][0],
        serde_json::json!({"id": "crm", "type": "hubspot"}),
        "{listed}"
    );
    let tested: Value = http
        .post(format!("{api}/api/v1/destinations/crm/test"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tested, serde_json::json!({"ok": true}));
    let unknown = http
        .post(format!("{api}/api/v1/destinations/nope/test"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let fields = get("/api/v1/destinations/crm/fields?object=contacts").await;
    assert!(
        fields["data"].as_array().unwrap().iter().any(|f| f["name"] == "email"),
        "{fields}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_connect_refuses_read_only_fields_and_unknown_matching_fields() {
    let fake = FakeHubSpot::start(TOKEN, None).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/users.csv"), "id,email\n1,a@x.com\n").unwrap();
    let config = format!(
        "sources:\n  files: {{ type: csv, path: data }}\n\
         models:\n  users: {{ source: files, file: users.csv, primary_key: id }}\n\
         destinations:\n  crm: {{ type: hubspot, access_token: \"${{EBB_TEST_CLI_TOKEN}}\", api_base_url: \"{}\" }}\n\
         syncs:\n  \
           fine:\n    model: users\n    destination: crm\n    mode: upsert\n    record_matching: {{ from: email, to: email }}\n    \
           mappings: [{{ from: email, to: email }}]\n  \
           wrong:\n    model: users\n    destination: crm\n    mode: upsert\n    record_matching: {{ from: id, to: customer_number }}\n    \
           mappings: [{{ from: email, to: email }}, {{ from: id, to: hs_object_id }}]\n",
        fake.url
    );
    std::fs::write(dir.path().join("ebb.yaml"), config).unwrap();
    let path = dir.path().to_path_buf();
    let (code, out, err) = tokio::task::spawn_blocking(move || ebb(&path, TOKEN, &["check", "--connect"]))
        .await
        .unwrap();
    assert_eq!(code, 3, "{out}{err}");
    let text = format!("{out}{err}");
    assert!(
        text.contains("ebb.yaml:18:") && text.contains("\"customer_number\""),
        "the unknown matching field, at its line: {text}"
    );
    assert!(
        text.contains("ebb.yaml:19:") && text.contains("\"hs_object_id\"") && text.contains("read-only"),
        "the read-only field, at its line: {text}"
    );
    assert!(
        !text.contains("\"fine\""),
        "the sync that can work is not named: {text}"
    );
}
