//! Row-level results: every planned row of a run (and every invalid one) with
//! its operation, outcome and error, searchable by key and outcome, and
//! exportable as CSV or JSON lines from the API and the CLI.

use ebb_coordinator::run::rows::RowFilter;
use ebb_shared::protocol::{Operation, RowOutcome, RowResult};
use ebb_tests::fleet::Fleet;
use ebb_tests::model::create_people;
use ebb_tests::process::ebb_async_command;
use ebb_tests::scenario::{Case, Target};
use ebb_tests::services::fresh_postgres_database;
use ebb_tests::sink::{Behavior, Sink};
use serde_json::Value;
use sqlx::PgPool;
use std::time::Duration;

async fn rows(case: &Case, run_id: &str, filter: RowFilter) -> Vec<RowResult> {
    let coordinator = case.runtime().coordinator.as_ref().unwrap();
    let mut receiver = coordinator.rows(run_id, filter).await.unwrap();
    let mut rows = Vec::new();
    while let Some(row) = receiver.recv().await {
        rows.push(row.unwrap());
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_planned_row_is_recorded_with_its_outcome_and_searchable_by_key() {
    let mut case = Case::start(Target::Http, "    mode: upsert").await;
    // Row 9 appears twice: invalid.
    case.query = "SELECT id, email, name, score, active FROM people \
                  UNION ALL SELECT id, 'twin@example.com', name, score, active FROM people WHERE id = 9"
        .into();
    case.reconfigure("    mode: upsert").await;
    case.sink.set_behavior(Behavior {
        reject_keys: ["3".to_string(), "17".to_string()].into(),
        ..Default::default()
    });
    let run = case.run().await;
    assert_eq!(run.planned.added, 39);

    let all = rows(&case, &run.id, RowFilter::default()).await;
    assert_eq!(all.len(), 40, "39 planned rows and 1 invalid one");
    let count = |outcome| all.iter().filter(|r| r.outcome == outcome).count();
    assert_eq!(count(RowOutcome::Succeeded), 37);
    assert_eq!(count(RowOutcome::Failed), 2);
    assert_eq!(count(RowOutcome::Invalid), 1);

    let three = rows(
        &case,
        &run.id,
        RowFilter {
            key: Some("3".into()),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(three.len(), 1);
    assert_eq!(three[0].operation, Some(Operation::Added));
    assert_eq!(three[0].outcome, RowOutcome::Failed);
    assert!(three[0].error.as_deref().unwrap().contains("invalid here"), "{three:?}");
    let nine = rows(
        &case,
        &run.id,
        RowFilter {
            key: Some("9".into()),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(nine[0].outcome, RowOutcome::Invalid);
    assert!(nine[0].error.as_deref().unwrap().contains("duplicate"), "{nine:?}");
    let twelve = rows(
        &case,
        &run.id,
        RowFilter {
            key: Some("12".into()),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(twelve[0].outcome, RowOutcome::Succeeded);

    let failed = rows(
        &case,
        &run.id,
        RowFilter {
            outcome: Some(RowOutcome::Failed),
            ..Default::default()
        },
    )
    .await;
    let mut keys: Vec<&str> = failed.iter().map(|r| r.key.as_str()).collect();
    keys.sort();
    assert_eq!(keys, ["17", "3"]);

    // The next run lists only what it planned: the two retried rows.
    case.sink.set_behavior(Behavior::default());
    let retry = case.run().await;
    let retried = rows(&case, &retry.id, RowFilter::default()).await;
    assert_eq!(retried.iter().filter(|r| r.outcome == RowOutcome::Succeeded).count(), 2);
    case.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_and_the_cli_export_rows_as_csv_and_json_lines() {
    let source = fresh_postgres_database("rows").await;
    let pool = PgPool::connect(&source.url).await.unwrap();
    create_people(&pool, 300).await;
    let sink = Sink::start().await;
    sink.set_behavior(Behavior {
        reject_keys: ["42".to_string()].into(),
        ..Default::default()
    });
    let config = format!(
        r#"
sources:
  warehouse: {{ type: postgres, url: "{}" }}
models:
  people: {{ source: warehouse, query: "SELECT id, email FROM people", primary_key: id }}
destinations:
  api: {{ type: http, url: "{}", batch_size: 50 }}
syncs:
  people-api: {{ model: people, destination: api, mode: upsert, shards: 3 }}
"#,
        source.url,
        sink.url()
    );
    let fleet = Fleet::start(&config, 1).await;
    let run_id = fleet.trigger("people-api").await;
    let run = fleet.wait_run(&run_id, Duration::from_secs(120)).await;
    assert_eq!(run["status"], "warning", "{run}");
    let http = fleet.client().clone();
    let get = |query: &'static str| {
        let url = format!("{}/api/v1/runs/{run_id}/rows?{query}", fleet.api);
        let http = http.clone();
        async move {
            let response = http.get(url).send().await.unwrap();
            assert!(response.status().is_success(), "{query}: {}", response.status());
            response.text().await.unwrap()
        }
    };

    let csv = get("format=csv").await;
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "key,operation,outcome,error");
    assert_eq!(lines.len(), 301, "a header and every planned row");
    assert!(lines.contains(&"7,added,succeeded,"), "{}", &csv[..200]);
    assert!(lines.iter().any(|l| l.starts_with("42,added,failed,")));

    let failed = get("format=jsonl&outcome=failed").await;
    let failed: Vec<Value> = failed.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["key"], "42");

    let one: Value = serde_json::from_str(&get("key=42").await).unwrap();
    assert_eq!(one["data"][0]["outcome"], "failed", "{one}");
    assert_eq!(one["data"][0]["operation"], "added");

    // The CLI against the API: the same export.
    let output = ebb_async_command()
        .args(["runs", "rows", &run_id, "--format", "csv", "--api-url", &fleet.api])
        .env("EBB_API_TOKEN", &fleet.api_token)
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout), csv);
    let output = ebb_async_command()
        .args(["runs", "rows", &run_id, "--failed", "--api-url", &fleet.api])
        .env("EBB_API_TOKEN", &fleet.api_token)
        .output()
        .await
        .unwrap();
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        table.contains("failed") && table.contains("42") && table.contains("invalid here"),
        "{table}"
    );
}
