//! The `ebb` binary as a user meets it: the README's quickstart, `ebb standalone`
//! with its API, `ebb sync run` and `ebb runs` on embedded defaults.

use ebb_tests::process::{ebb_command, EbbProcess};
use serde_json::Value;
use std::time::{Duration, Instant};

#[test]
fn quickstart_sends_everything_then_only_the_changes() {
    let dir = tempfile::tempdir().unwrap();
    let output = ebb_command()
        .args(["quickstart", "--dir"])
        .arg(dir.path().join("qs"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // First run: 1,000 added. Second: 10 added, 5 changed, 3 removed.
    let planned: Vec<&str> = stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("planned"))
        .collect();
    assert_eq!(planned.len(), 2, "{stdout}");
    let numbers = |line: &str| -> Vec<String> { line.split_whitespace().skip(1).map(str::to_string).collect() };
    assert_eq!(numbers(planned[0]), vec!["1,000", "0", "0"], "{stdout}");
    assert_eq!(numbers(planned[1]), vec!["10", "5", "3"], "{stdout}");
    let sent = std::fs::read_to_string(dir.path().join("qs/out/customers.jsonl")).unwrap();
    assert_eq!(sent.lines().count(), 1_018);
    assert_eq!(
        sent.lines().filter(|l| l.contains("\"operation\":\"delete\"")).count(),
        3
    );

    // The same sync from the command line: nothing changed since, nothing sent.
    let config = dir.path().join("qs/ebb.yaml");
    let again = ebb_command()
        .args(["sync", "run", "customers-to-file", "--json", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    let run: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(run["status"], "success");
    assert_eq!(run["plannedRows"]["addedCount"], 0);
    let list = ebb_command()
        .args(["runs", "list", "customers-to-file", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&list.stdout);
    assert_eq!(listed.lines().filter(|l| l.contains("success")).count(), 3, "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_serves_the_api_and_runs_scheduled_syncs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    let rows: String = (1..=200).map(|i| format!("{i},user{i}@example.com\n")).collect();
    std::fs::write(dir.path().join("data/users.csv"), format!("id,email\n{rows}")).unwrap();
    std::fs::write(
        dir.path().join("ebb.yaml"),
        r#"
sources:
  files: { type: csv, path: data }
models:
  users: { source: files, file: users.csv, primary_key: id }
destinations:
  out: { type: jsonl, path: out/users.jsonl }
syncs:
  manual:
    model: users
    destination: out
    mode: upsert
  every-second:
    model: users
    destination: out
    mode: mirror
    schedule: { every: 1s }
"#,
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let api = format!("http://127.0.0.1:{port}");
    let config = dir.path().join("ebb.yaml");
    let _standalone = EbbProcess::spawn(
        "standalone",
        &[
            "standalone",
            "--config",
            config.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ],
        &[],
        dir.path(),
    );
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while http.get(format!("{api}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "standalone did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let trigger: Value = http
        .post(format!("{api}/api/v1/syncs/manual/trigger"))
        .json(&serde_json::json!({"fullResync": false}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run_id = trigger["id"].as_str().expect("a run id").to_string();
    let run = loop {
        let run: Value = http
            .get(format!("{api}/api/v1/runs/{run_id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if run["status"] == "success" || run["status"] == "failed" {
            break run;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(run["status"], "success", "{run}");
    assert_eq!(run["successfulRows"]["addedCount"], 200);
    assert_eq!(run["completionRatio"], 1.0);

    let unknown = http
        .post(format!("{api}/api/v1/syncs/nope/trigger"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);

    // The scheduled sync runs once per tick, never two runs at once.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let runs: Value = http
        .get(format!("{api}/api/v1/syncs/every-second/runs?limit=50"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let runs = runs["data"].as_array().unwrap().clone();
    assert!(runs.len() >= 2, "scheduled runs: {runs:?}");
    assert!(runs.iter().all(|r| r["trigger"] == "schedule"));
    let mut spans: Vec<(String, String)> = runs
        .iter()
        .filter(|r| r["finishedAt"].is_string())
        .map(|r| {
            (
                r["createdAt"].as_str().unwrap().to_string(),
                r["finishedAt"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    spans.sort();
    for pair in spans.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "runs overlap: {pair:?}");
    }

    let metrics = http
        .get(format!("{api}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("ebb_runs_finished_total"), "{metrics}");
}
