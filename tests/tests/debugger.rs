//! The live debugger end to end: a one-shot `ebb sync run` to the loopback
//! HubSpot, which refuses one record of a batch; `ebb runs requests` (and its
//! API twin on a standalone) then shows the exact request that carried the
//! failed row and HubSpot's answer naming it, the token appears in nothing
//! Ebb stored, and a sync with `live_debugger: false` keeps no request.

use ebb_tests::process::{ebb_command, EbbProcess};
use ebb_worker::destinations::hubspot::fake::FakeHubSpot;
use serde_json::Value;

const TOKEN: &str = "pat-na1-debug000-0000-4000-8000-000000000000";

fn config(hubspot: &str) -> String {
    format!(
        "sources:\n  files: {{ type: csv, path: data }}\n\
         models:\n  users: {{ source: files, file: users.csv, primary_key: id }}\n\
         destinations:\n  \
           crm: {{ type: hubspot, access_token: \"${{EBB_TEST_DEBUG_TOKEN}}\", api_base_url: \"{hubspot}\" }}\n\
         syncs:\n  \
           to-crm: {{ model: users, destination: crm, mode: insert }}\n  \
           quiet: {{ model: users, destination: crm, mode: insert, live_debugger: false }}\n"
    )
}

fn ebb(dir: &std::path::Path, args: &[String]) -> (i32, String, String) {
    let output = ebb_command()
        .args(args)
        .arg("--config")
        .arg(dir.join("ebb.yaml"))
        .env("EBB_TEST_DEBUG_TOKEN", TOKEN)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Every file under `dir`, read as bytes.
fn every_file(dir: &std::path::Path, out: &mut Vec<(std::path::PathBuf, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            every_file(&path, out);
        } else {
            out.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_row_leads_to_the_request_and_answer_that_failed_it() {
    let fake = FakeHubSpot::start(TOKEN, None).await;
    fake.refuse_email("bad@x.com");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::write(
        dir.path().join("data/users.csv"),
        "id,email\n1,a@x.com\n2,bad@x.com\n3,c@x.com\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("ebb.yaml"), config(&fake.url)).unwrap();
    let path = dir.path().to_path_buf();
    let run = |args: &[&str]| {
        let path = path.clone();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        async move { tokio::task::spawn_blocking(move || ebb(&path, &args)).await.unwrap() }
    };

    let (code, out, err) = run(&["sync", "run", "to-crm", "--json", "--no-progress"]).await;
    assert!(out.contains("\"status\""), "{code}: {out}{err}");
    let answer: Value = serde_json::from_str(&out).unwrap();
    let run_id = answer["id"].as_str().unwrap().to_string();
    let run_id = run_id.as_str();
    assert_eq!(answer["status"], "warning", "{answer}");

    let (code, out, err) = run(&["runs", "requests", run_id, "--key", "2", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let page: Value = serde_json::from_str(&out).unwrap();
    let batches = page["data"].as_array().unwrap();
    assert_eq!(batches.len(), 1, "{page}");
    let batch = &batches[0];
    let row = batch["rows"].as_array().unwrap().iter().find(|r| r[0] == "2").unwrap();
    assert!(row[1].as_str().unwrap().contains("INVALID_EMAIL"), "{batch}");
    let exchange = &batch["exchanges"][0];
    assert_eq!(exchange["method"], "POST");
    assert!(
        exchange["url"]
            .as_str()
            .unwrap()
            .ends_with("/crm/v3/objects/contacts/batch/create"),
        "{exchange}"
    );
    assert_eq!(exchange["status"], 207);
    assert!(
        exchange["request_body"].as_str().unwrap().contains("bad@x.com"),
        "{exchange}"
    );
    assert!(
        exchange["response_body"].as_str().unwrap().contains("INVALID_EMAIL"),
        "{exchange}"
    );

    // For people: the row's outcome and the exchange on a few lines.
    let (code, out, err) = run(&["runs", "requests", run_id, "--failed"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("POST ") && out.contains("→ 207"), "{out}");

    // The API answers the same from a standalone on the same data.
    let (mut standalone, api) = EbbProcess::standalone(
        &dir.path().join("ebb.yaml"),
        &[("EBB_TEST_DEBUG_TOKEN", TOKEN.to_string())],
        dir.path(),
    )
    .await;
    let client = reqwest::Client::new();
    let failed: Value = client
        .get(format!("{api}/api/v1/runs/{run_id}/requests?failed=true"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(failed["data"].as_array().unwrap().len(), 1, "{failed}");
    assert_eq!(failed["hasMore"], false);
    let missing = client
        .get(format!("{api}/api/v1/runs/no-such-run/requests"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let quiet: Value = client
        .post(format!("{api}/api/v1/syncs/quiet/trigger"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let quiet_id = quiet["id"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let run: Value = client
            .get(format!("{api}/api/v1/runs/{quiet_id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if !["queued", "querying", "processing", "reporting"].contains(&run["status"].as_str().unwrap_or_default()) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the quiet run did not end: {run}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let kept: Value = client
        .get(format!("{api}/api/v1/runs/{quiet_id}/requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        kept["data"].as_array().unwrap().len(),
        0,
        "live_debugger: false keeps nothing: {kept}"
    );
    standalone.kill().await;

    // The token is in nothing Ebb wrote.
    let mut files = Vec::new();
    every_file(dir.path(), &mut files);
    for (path, bytes) in files {
        if path.ends_with("ebb.yaml") {
            continue;
        }
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(TOKEN), "{} holds the token", path.display());
    }
}
