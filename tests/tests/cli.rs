//! The `ebb` binary as a user meets it: the README's quickstart, `ebb standalone`
//! with its API, `ebb sync run` and `ebb runs` on embedded defaults.

use ebb_tests::process::{ebb_command, EbbProcess};
use ebb_tests::sink::{Behavior, Sink};
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

    // Every command the quickstart suggests runs as printed, from where it was run.
    let hints: Vec<&str> = stdout.lines().filter_map(|l| l.strip_prefix("  $ ")).collect();
    assert_eq!(hints.len(), 2, "{stdout}");
    for hint in hints {
        let ran = std::process::Command::new("sh").args(["-c", hint]).output().unwrap();
        assert!(
            ran.status.success(),
            "`{hint}` failed:\n{}{}",
            String::from_utf8_lossy(&ran.stdout),
            String::from_utf8_lossy(&ran.stderr)
        );
    }

    // Listings for scripts: JSON on request, and a table that says what it left out.
    let json = |args: &[&str]| -> Value {
        let output = ebb_command().args(args).arg("--config").arg(&config).output().unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    };
    let runs = json(&["runs", "list", "customers-to-file", "--json"]);
    let runs = runs["data"].as_array().unwrap().clone();
    assert_eq!(runs.len(), 4, "{runs:?}");
    let first_run = runs.last().unwrap()["id"].as_str().unwrap().to_string();
    let syncs = json(&["sync", "list", "--json"]);
    assert_eq!(syncs["data"][0]["id"], "customers-to-file", "{syncs}");
    let page = json(&["runs", "rows", &first_run, "--json", "--limit", "7"]);
    assert_eq!(page["data"].as_array().unwrap().len(), 7, "{page}");
    assert_eq!(page["total"], 1000, "{page}");
    assert_eq!(page["hasMore"], true, "{page}");
    let table = ebb_command()
        .args(["runs", "rows", &first_run, "--limit", "5", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert_eq!(table.lines().count(), 1 + 5 + 1, "{table}");
    assert!(table.contains("995 more (showing 5 of 1,000)"), "{table}");

    // Piped into `head`, a long listing stops quietly.
    let mut export = ebb_command();
    export
        .args(["runs", "rows", &first_run, "--format", "csv", "--config"])
        .arg(&config);
    let ended = with_stdout_closed(export);
    let stderr = String::from_utf8_lossy(&ended.stderr);
    assert_eq!(ended.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Runs a command whose reader has gone away before it writes a byte.
fn with_stdout_closed(mut command: std::process::Command) -> std::process::Output {
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}

async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

async fn post_json(http: &reqwest::Client, url: &str, body: Value) -> Value {
    http.post(url).json(&body).send().await.unwrap().json().await.unwrap()
}

fn ebb_output(args: &[&str]) -> (i32, String, String) {
    let output = ebb_command().args(args).output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn help_version_completions_and_exit_statuses_are_what_scripts_need() {
    let (code, help, _) = ebb_output(&["--help"]);
    assert_eq!(code, 0);
    for needed in [
        "Exit status:",
        "EBB_LOG ",
        "EBB_LOG_FORMAT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "completions",
    ] {
        assert!(help.contains(needed), "--help lacks {needed}:\n{help}");
    }
    let (_, rows_help, _) = ebb_output(&["runs", "rows", "--help"]);
    for example in [
        "\n  ebb runs rows RUN --failed ",
        "\n  ebb runs rows RUN --key 42 ",
        "\n  ebb runs rows RUN --format csv > rows.csv ",
    ] {
        assert!(
            rows_help.contains(example),
            "{example:?} not on a line of its own:\n{rows_help}"
        );
    }
    let (code, version, _) = ebb_output(&["--version"]);
    assert_eq!(code, 0);
    let version = version.trim();
    assert!(version.starts_with("ebb 0.") && version.ends_with(')'), "{version}");
    let commit = version.rsplit('(').next().unwrap().trim_end_matches(')');
    assert!(
        commit == "unknown commit" || (commit.len() >= 7 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "{version}"
    );
    for shell in ["bash", "zsh", "fish"] {
        let (code, script, stderr) = ebb_output(&["completions", shell]);
        assert_eq!(code, 0, "{stderr}");
        assert!(
            script.contains("quickstart") && script.contains("standalone"),
            "{shell}: {script}"
        );
    }

    // Exit statuses: 2 usage, 3 config, 4 anything else, 1 a run that failed.
    let (code, _, _) = ebb_output(&["no-such-command"]);
    assert_eq!(code, 2);
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.yaml");
    std::fs::write(
        &broken,
        "syncs:\n  x:\n    model: m\n    destination: d\n    mode: upsert\n    shard: 3\n",
    )
    .unwrap();
    let (code, _, stderr) = ebb_output(&["sync", "run", "x", "--config", broken.to_str().unwrap()]);
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("broken.yaml:6: sync \"x\": unknown field `shard`"),
        "{stderr}"
    );
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, _, stderr) = ebb_output(&[
        "runs",
        "list",
        "x",
        "--api-url",
        &format!("http://127.0.0.1:{closed_port}"),
    ]);
    assert_eq!(code, 4, "{stderr}");
    assert!(stderr.contains("cannot reach the coordinator"), "{stderr}");
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    let config = dir.path().join("ebb.yaml");
    std::fs::write(
        &config,
        "sources:\n  files: { type: csv, path: data }\nmodels:\n  m: { source: files, file: gone.csv, primary_key: id }\n\
         destinations:\n  d: { type: jsonl, path: out.jsonl }\nsyncs:\n  s: { model: m, destination: d, mode: upsert }\n",
    )
    .unwrap();
    let (code, stdout, stderr) = ebb_output(&["sync", "run", "s", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stdout.contains("FAILED"), "{stdout}");

    // Piped into a reader that is gone, output ends quietly.
    let mut completions = ebb_command();
    completions.args(["completions", "bash"]);
    let ended = with_stdout_closed(completions);
    assert_eq!(ended.status.code(), Some(0));
    assert!(ended.stderr.is_empty(), "{}", String::from_utf8_lossy(&ended.stderr));
}

#[test]
fn rows_with_a_null_key_are_listed_like_the_other_invalid_rows() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::write(
        dir.path().join("data/people.csv"),
        "id,email\n1,a@example.com\n,nokey@example.com\n2,b@example.com\n2,b2@example.com\n,another@example.com\n",
    )
    .unwrap();
    let config = dir.path().join("ebb.yaml");
    std::fs::write(
        &config,
        "sources:\n  files: { type: csv, path: data }\nmodels:\n  people: { source: files, file: people.csv, primary_key: id }\n\
         destinations:\n  d: { type: jsonl, path: out.jsonl }\nsyncs:\n  s: { model: people, destination: d, mode: upsert }\n",
    )
    .unwrap();
    // Even with every info log asked for, logs stay text on stderr: stdout is
    // the command's JSON alone.
    let run = ebb_command()
        .args(["sync", "run", "s", "--json", "--config"])
        .arg(&config)
        .env("EBB_LOG", "info")
        .env_remove("EBB_LOG_FORMAT")
        .output()
        .unwrap();
    let logs = String::from_utf8_lossy(&run.stderr);
    assert!(logs.contains("INFO"), "info logs were asked for: {logs}");
    assert!(!logs.lines().any(|l| l.starts_with('{')), "JSON log lines: {logs}");
    let run: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(run["status"], "warning", "{run}");
    assert_eq!(run["invalidRows"]["nullKeyCount"], 2, "{run}");
    let id = run["id"].as_str().unwrap();
    let rows = ebb_command()
        .args(["runs", "rows", id, "--outcome", "invalid", "--json", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let rows: Value = serde_json::from_slice(&rows.stdout).unwrap();
    let rows = rows["data"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 3, "two null keys and one duplicate: {rows:?}");
    let errors: Vec<&str> = rows.iter().map(|r| r["error"].as_str().unwrap()).collect();
    assert!(
        errors[0].starts_with("null primary key (row 2 of the result)") && errors[0].contains("nokey@example.com"),
        "{errors:?}"
    );
    assert!(
        errors[1].starts_with("null primary key (row 5 of the result)"),
        "{errors:?}"
    );
    assert_eq!(rows[2]["key"], "2", "{rows:?}");
    assert!(errors[2].starts_with("duplicate key"), "{errors:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_serves_the_api_and_runs_scheduled_syncs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    let rows: String = (1..=200).map(|i| format!("{i},user{i}@example.com\n")).collect();
    std::fs::write(dir.path().join("data/users.csv"), format!("id,email\n{rows}")).unwrap();
    let sink = Sink::start().await;
    std::fs::write(
        dir.path().join("ebb.yaml"),
        r#"
sources:
  files: { type: csv, path: data }
models:
  users: { source: files, file: users.csv, primary_key: id }
destinations:
  out: { type: jsonl, path: out/users.jsonl }
  slow_api: { type: http, url: "SINK_URL", batch_size: 10, max_concurrency: 1 }
syncs:
  slow:
    model: users
    destination: slow_api
    mode: upsert
  manual:
    model: users
    destination: out
    mode: upsert
  every-second:
    model: users
    destination: out
    mode: mirror
    schedule: { every: 1s }
"#
        .replace("SINK_URL", &sink.url()),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let api = format!("http://127.0.0.1:{port}");
    let config = dir.path().join("ebb.yaml");
    let standalone = EbbProcess::spawn(
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

    let trigger = post_json(
        &http,
        &format!("{api}/api/v1/syncs/manual/trigger"),
        serde_json::json!({"fullResync": false}),
    )
    .await;
    let run_id = trigger["id"].as_str().expect("a run id").to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    let run = loop {
        let run = get_json(&http, &format!("{api}/api/v1/runs/{run_id}")).await;
        if run["status"] == "success" || run["status"] == "failed" {
            break run;
        }
        assert!(Instant::now() < deadline, "the run did not end within 30s: {run}");
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
    let deadline = Instant::now() + Duration::from_secs(30);
    let runs = loop {
        let runs = get_json(&http, &format!("{api}/api/v1/syncs/every-second/runs?limit=50")).await;
        let runs = runs["data"].as_array().unwrap().clone();
        if runs.iter().filter(|r| r["finishedAt"].is_string()).count() >= 3 {
            break runs;
        }
        assert!(Instant::now() < deadline, "scheduled runs after 30s: {runs:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
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

    // The CLI against the running coordinator: its syncs, and a cancel.
    let cli = |args: &[&str]| {
        let output = ebb_command().args(args).args(["--api-url", &api]).output().unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice::<Value>(&output.stdout).unwrap()
    };
    let syncs = cli(&["sync", "list", "--json"]);
    let names: Vec<&str> = syncs["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["every-second", "manual", "slow"], "{syncs}");
    sink.set_behavior(Behavior {
        latency: Duration::from_millis(300),
        ..Behavior::default()
    });
    let trigger = post_json(
        &http,
        &format!("{api}/api/v1/syncs/slow/trigger"),
        serde_json::json!({"fullResync": true}),
    )
    .await;
    let slow_run = trigger["id"].as_str().unwrap().to_string();

    // Beside the running standalone, on its data directory: reading runs works
    // and disturbs nothing; running a sync is refused, naming the way to do it.
    let config_arg = config.to_str().unwrap();
    let listed = ebb_command()
        .args(["runs", "list", "slow", "--json", "--config", config_arg])
        .output()
        .unwrap();
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed["data"][0]["id"], slow_run.as_str(), "{listed}");
    let refused = ebb_command()
        .args(["sync", "run", "manual", "--config", config_arg])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("is in use by another Ebb process") && stderr.contains("--api-url"),
        "{stderr}"
    );
    let still = get_json(&http, &format!("{api}/api/v1/runs/{slow_run}")).await;
    assert!(
        ["queued", "querying", "processing"].contains(&still["status"].as_str().unwrap()),
        "the standalone's run was disturbed: {still}"
    );

    // Cancel once the run is sending: its shard stops between batches.
    let deadline = Instant::now() + Duration::from_secs(20);
    while sink.requests().is_empty() {
        assert!(Instant::now() < deadline, "the slow run sent nothing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cancelled = cli(&["runs", "cancel", &slow_run, "--json"]);
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    let shard_task = format!("{slow_run}/shard-");
    loop {
        let log = std::fs::read_to_string(&standalone.log).unwrap_or_default();
        let shard_ended = log
            .lines()
            .any(|l| l.contains(&shard_task) && (l.contains("task done") || l.contains("task failed")));
        if shard_ended {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cancelled run's shard did not end:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sent = sink.requests().len();
    assert!(sent < 20, "a cancelled run sent {sent} of its 20 batches");
    let shown = cli(&["runs", "show", &slow_run, "--json"]);
    assert_eq!(shown["status"], "cancelled", "{shown}");
}
