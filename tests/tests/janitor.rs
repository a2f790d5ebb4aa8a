//! The janitor on a live `ebb standalone`, and after each one-shot `ebb sync
//! run`: unreferenced snapshot objects, run files and runs past retention are
//! collected, everything a pointer or a kept run names stays, and the next run
//! still sends only what changed.

use ebb_tests::process::{ebb_async_command, EbbProcess};
use serde_json::Value;
use sqlx::sqlite::SqlitePool;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

fn write_users(dir: &Path, changed_up_to: u32, version: u32) {
    let rows: String = (1..=60)
        .map(|i| {
            let email = if i <= changed_up_to {
                format!("user{i}-v{version}@example.com")
            } else {
                format!("user{i}@example.com")
            };
            format!("{i},{email}\n")
        })
        .collect();
    std::fs::write(dir.join("data/users.csv"), format!("id,email\n{rows}")).unwrap();
}

/// Every object file under the data directory's object store, as keys.
fn objects(root: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.insert(path.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}

/// What the state DB names: snapshot pointers and kept runs' row files.
/// The data directory's state DB, read-only beside the process that owns it.
async fn state_db(dir: &Path) -> SqlitePool {
    SqlitePool::connect(&format!("sqlite://{}?mode=ro", dir.join(".ebb/state.db").display()))
        .await
        .unwrap()
}

async fn referenced(state: &SqlitePool) -> BTreeSet<String> {
    let mut keys: BTreeSet<String> = sqlx::query_scalar("SELECT object_key FROM ebb_snapshot_pointers")
        .fetch_all(state)
        .await
        .unwrap()
        .into_iter()
        .collect();
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT rows_key FROM ebb_run_shards WHERE status IN ('committed', 'stale') AND rows_key IS NOT NULL",
    )
    .fetch_all(state)
    .await
    .unwrap();
    keys.extend(rows);
    keys
}

async fn run_to_end(http: &reqwest::Client, api: &str) -> Value {
    let trigger: Value = http
        .post(format!("{api}/api/v1/syncs/s/trigger"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = trigger["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no run id: {trigger}"))
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let run: Value = http
            .get(format!("{api}/api/v1/runs/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if run["finishedAt"].is_string() {
            assert_eq!(run["status"], "success", "{run}");
            return run;
        }
        assert!(Instant::now() < deadline, "run {id} did not end within 30s: {run}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const CONFIG: &str = r#"
sources:
  files: { type: csv, path: data }
models:
  users: { source: files, file: users.csv, primary_key: id }
destinations:
  out: { type: jsonl, path: out/users.jsonl }
syncs:
  s: { model: users, destination: out, mode: upsert, shards: 4 }
"#;

/// Short settings, kept consistent: the grace outlives the run deadline.
const SHORT_GC: [(&str, &str); 5] = [
    ("EBB_RUN_DEADLINE", "8s"),
    ("EBB_GC_GRACE", "9s"),
    ("EBB_GC_EVERY", "1s"),
    ("EBB_GC_RUN_FILES_AFTER", "1s"),
    ("EBB_RETENTION", "2s"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_janitor_collects_what_nothing_references_and_keeps_what_does() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    write_users(dir.path(), 0, 0);
    std::fs::write(dir.path().join("ebb.yaml"), CONFIG).unwrap();
    let config = dir.path().join("ebb.yaml");
    let env = SHORT_GC.map(|(name, value)| (name, value.to_string()));
    let (standalone, api) = EbbProcess::standalone(&config, &env, dir.path()).await;
    let http = reqwest::Client::new();
    let object_root = dir.path().join(".ebb/objects");
    let state = state_db(dir.path()).await;

    let first = run_to_end(&http, &api).await;
    write_users(dir.path(), 10, 1);
    run_to_end(&http, &api).await;
    write_users(dir.path(), 20, 2);
    run_to_end(&http, &api).await;

    // Right after three runs, replaced snapshot objects are still there
    // (within their grace): the sweep below has something to collect.
    let before = objects(&object_root);
    let needed = referenced(&state).await;
    let garbage: Vec<&String> = before
        .difference(&needed)
        .filter(|k| k.contains("/snapshots/"))
        .collect();
    assert!(!garbage.is_empty(), "no replaced snapshot to collect: {before:?}");

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = objects(&object_root);
        let mut needed = referenced(&state).await;
        let lost: Vec<&String> = needed.difference(&now).collect();
        assert!(lost.is_empty(), "referenced objects were deleted: {lost:?}");
        let kept: Vec<String> = sqlx::query_scalar("SELECT id FROM ebb_runs")
            .fetch_all(&state)
            .await
            .unwrap();
        let runs = kept.len();
        // The live debugger's request logs stay as long as their run.
        needed.extend(
            now.iter()
                .filter(|key| {
                    key.contains("/requests/") && kept.iter().any(|run| key.contains(&format!("/runs/{run}/")))
                })
                .cloned(),
        );
        if now == needed && runs == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after 60s the janitor left {:?} and {runs} runs\n{}",
            now.difference(&needed).collect::<Vec<_>>(),
            standalone.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Nothing it needed is gone: the next run sends exactly the change.
    write_users(dir.path(), 21, 2);
    let fourth = run_to_end(&http, &api).await;
    assert_eq!(fourth["plannedRows"]["changedCount"], 1, "{fourth}");
    assert_eq!(fourth["plannedRows"]["addedCount"], 0, "{fourth}");
    let expired = http
        .get(format!("{api}/api/v1/runs/{}", first["id"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(expired.status(), 404, "the first run is past retention");
    let metrics = http
        .get(format!("{api}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let deleted: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("ebb_gc_objects_deleted_total "))
        .unwrap_or_else(|| panic!("no GC counter in {metrics}"))
        .parse()
        .unwrap();
    assert!(
        deleted >= garbage.len() as f64,
        "{deleted} deleted, {} garbage",
        garbage.len()
    );
}

/// One `ebb sync run` on `dir`'s config, with the short GC settings; its run.
async fn run_once(dir: &Path) -> Value {
    let output = ebb_async_command()
        .args(["sync", "run", "s", "--json", "--no-progress", "--config"])
        .arg(dir.join("ebb.yaml"))
        .envs(SHORT_GC)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "ebb sync run failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// A data directory only ever used by one-shot `ebb sync run`s is collected
/// too: each run's process sweeps once it ended, so what one sweep marks a
/// later run's sweep deletes after its grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_runs_collect_their_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("ebb.yaml"), CONFIG).unwrap();
    let mut first = None;
    for version in 0..3 {
        write_users(dir.path(), version * 10, version);
        let run = run_once(dir.path()).await;
        assert_eq!(run["status"], "success", "{run}");
        first.get_or_insert(run["id"].as_str().unwrap().to_string());
    }
    let object_root = dir.path().join(".ebb/objects");
    let state = state_db(dir.path()).await;
    let garbage: Vec<String> = objects(&object_root)
        .difference(&referenced(&state).await)
        .filter(|k| k.contains("/snapshots/"))
        .cloned()
        .collect();
    assert!(!garbage.is_empty(), "no replaced snapshot to collect");
    // Quiet runs until the grace is over; each sweeps after it ends.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let run = run_once(dir.path()).await;
        assert_eq!(run["plannedRows"]["addedCount"], 0, "nothing is resent: {run}");
        assert_eq!(run["plannedRows"]["changedCount"], 0, "nothing is resent: {run}");
        let now = objects(&object_root);
        let lost: Vec<String> = referenced(&state).await.difference(&now).cloned().collect();
        assert!(lost.is_empty(), "referenced objects were deleted: {lost:?}");
        let left: Vec<&String> = garbage.iter().filter(|k| now.contains(*k)).collect();
        let first_kept: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ebb_runs WHERE id = $1")
            .bind(first.as_deref().unwrap())
            .fetch_one(&state)
            .await
            .unwrap();
        if left.is_empty() && first_kept == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after 90s of one-shot runs {left:?} remain, the first run past retention kept: {first_kept}"
        );
    }
}
