//! Reaching sources and looking at models before syncing: `ebb source test`,
//! `ebb model preview`, and the API's `POST /api/v1/sources/{id}/test` and
//! `GET /api/v1/models/{id}/preview`, on the local PostgreSQL.

use ebb_tests::model::create_people;
use ebb_tests::process::{ebb_command, EbbProcess};
use ebb_tests::services::fresh_postgres_database;
use serde_json::Value;
use sqlx::PgPool;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const PASSWORD: &str = "preview-secret-password";

/// A config with a reachable source, one where nothing listens, a table
/// model, a SQL model and a model whose query is broken.
fn write_config(dir: &Path, database_url: &str) -> PathBuf {
    let closed = ebb_tests::source_contract::closed_address();
    let text = format!(
        r#"
sources:
  warehouse: {{ type: postgres, url: "{database_url}" }}
  down: {{ type: redshift, url: "postgres://ebb:{PASSWORD}@{closed}/dev" }}
models:
  people: {{ source: warehouse, table: public.people, columns: [id, email, score], filter: "active", primary_key: id }}
  scores: {{ source: warehouse, query: "SELECT id, score FROM people ORDER BY id", primary_key: id }}
  broken: {{ source: warehouse, query: "SELECT id FROM no_such_table", primary_key: id }}
destinations:
  out: {{ type: jsonl, path: out/people.jsonl }}
syncs:
  people-out: {{ model: people, destination: out, mode: upsert }}
"#
    );
    let path = dir.join("ebb.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn ebb(args: &[&str], config: &Path) -> (i32, String, String) {
    let output = ebb_command().args(args).arg("--config").arg(config).output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_tests_sources_and_previews_models() {
    let database = fresh_postgres_database("source_cli").await;
    let pool = PgPool::connect(&database.url).await.unwrap();
    create_people(&pool, 50).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &database.url);

    let (status, stdout, stderr) = ebb(&["source", "test", "warehouse"], &config);
    assert_eq!(status, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("source \"warehouse\" (postgres): reachable"),
        "{stdout}"
    );
    let (status, stdout, stderr) = ebb(&["source", "test", "down"], &config);
    assert_eq!(status, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains("source \"down\" is unreachable") && !stderr.contains(PASSWORD),
        "{stderr}"
    );
    let (status, _, stderr) = ebb(&["source", "test", "nowhere"], &config);
    assert_ne!(status, 0);
    assert!(
        stderr.contains("warehouse") && stderr.contains("down"),
        "names the sources there are: {stderr}"
    );

    // A table model: its columns, its filter (only active people: even ids).
    let (status, stdout, stderr) = ebb(&["model", "preview", "people", "--limit", "3"], &config);
    assert_eq!(status, 0, "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 6, "header, types, 3 rows, count: {stdout}");
    assert!(
        lines[0].starts_with("id (key)") && lines[0].contains("email"),
        "{stdout}"
    );
    assert!(lines[1].contains("int8") && lines[1].contains("numeric"), "{stdout}");
    assert!(
        lines[2].starts_with("2 ") && lines[2].contains("person2@example.com"),
        "{stdout}"
    );
    assert_eq!(lines[5], "(3 rows)");

    let (status, stdout, stderr) = ebb(&["model", "preview", "scores", "--limit", "2", "--json"], &config);
    assert_eq!(status, 0, "{stdout}{stderr}");
    let preview: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        preview["columns"],
        serde_json::json!([{"name": "id", "type": "INT8"}, {"name": "score", "type": "NUMERIC"}])
    );
    assert_eq!(
        preview["rows"],
        serde_json::json!([{"id": 1, "score": "1.00"}, {"id": 2, "score": "2.00"}])
    );

    let (status, _, stderr) = ebb(&["model", "preview", "broken"], &config);
    assert_eq!(status, 1);
    assert!(
        stderr.contains("model \"broken\"") && stderr.contains("no_such_table"),
        "{stderr}"
    );
    let (status, _, stderr) = ebb(&["model", "preview", "people", "--limit", "0"], &config);
    assert_eq!(status, 2, "clap refuses a limit out of range: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_tests_sources_and_previews_models() {
    let database = fresh_postgres_database("source_api").await;
    let pool = PgPool::connect(&database.url).await.unwrap();
    create_people(&pool, 50).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &database.url);
    let port = ebb_tests::source_contract::closed_address().port();
    let api = format!("http://127.0.0.1:{port}");
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
    let call = |method: reqwest::Method, path: &str| {
        let request = http.request(method, format!("{api}{path}"));
        async move {
            let answer = request.send().await.unwrap();
            let status = answer.status().as_u16();
            (status, answer.json::<Value>().await.unwrap())
        }
    };
    use reqwest::Method;

    let (status, sources) = call(Method::GET, "/api/v1/sources").await;
    assert_eq!(status, 200);
    assert_eq!(
        sources["data"],
        serde_json::json!([{"id": "down", "type": "redshift"}, {"id": "warehouse", "type": "postgres"}])
    );
    let (_, models) = call(Method::GET, "/api/v1/models").await;
    assert_eq!(models["data"][1]["id"], "people");
    assert_eq!(models["data"][1]["queryType"], "table");
    assert_eq!(models["data"][2]["queryType"], "raw_sql");

    let (status, tested) = call(Method::POST, "/api/v1/sources/warehouse/test").await;
    assert_eq!((status, tested), (200, serde_json::json!({"ok": true})));
    let (status, tested) = call(Method::POST, "/api/v1/sources/down/test").await;
    assert_eq!(status, 200);
    assert_eq!(tested["ok"], false);
    let error = tested["error"].as_str().unwrap();
    assert!(error.contains("unreachable") && !error.contains(PASSWORD), "{error}");
    let (status, missing) = call(Method::POST, "/api/v1/sources/nowhere/test").await;
    assert_eq!(status, 404, "{missing}");

    let (status, preview) = call(Method::GET, "/api/v1/models/people/preview?limit=2").await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(
        preview["rows"],
        serde_json::json!([
            {"id": 2, "email": "person2@example.com", "score": "2.00"},
            {"id": 4, "email": "person4@example.com", "score": "4.00"}
        ])
    );
    let (status, default) = call(Method::GET, "/api/v1/models/scores/preview").await;
    assert_eq!(status, 200);
    assert_eq!(
        default["rows"].as_array().map(Vec::len),
        Some(50),
        "all 50 rows under the default 100"
    );
    let (status, refused) = call(Method::GET, "/api/v1/models/people/preview?limit=0").await;
    assert_eq!(status, 400, "{refused}");
    assert!(refused["error"].as_str().unwrap().contains("limit"), "{refused}");
    let (status, broken) = call(Method::GET, "/api/v1/models/broken/preview").await;
    assert_eq!(status, 502, "{broken}");
    assert!(broken["error"].as_str().unwrap().contains("no_such_table"), "{broken}");
    let (status, _) = call(Method::GET, "/api/v1/models/nowhere/preview").await;
    assert_eq!(status, 404);
}

/// A dbt project's manifest (dbt 1.9, schema v12) made Ebb models: keys from
/// tests, meta and a constraint; an ephemeral and a keyless model refused by
/// name; the models written load beside the rest of the config, preview and
/// pass `ebb check --connect` against the relations dbt built.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dbt_models_import_as_ebb_models_keyed_by_what_dbt_knows() {
    let database = fresh_postgres_database("dbt_import").await;
    let pool = PgPool::connect(&database.url).await.unwrap();
    for statement in [
        "CREATE SCHEMA prod",
        "CREATE TABLE prod.customers AS SELECT g AS customer_id, 'Ada ' || g AS first_name FROM generate_series(1, 30) g",
        "CREATE VIEW prod.orders AS SELECT g AS order_id, g % 30 + 1 AS customer_id FROM generate_series(1, 90) g",
        "CREATE TABLE prod.payments AS SELECT g AS payment_id, g * 2.5 AS amount FROM generate_series(1, 10) g",
    ] {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let fixture =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/dbt/manifest.json")).unwrap();
    let manifest = dir.path().join("manifest.json");
    std::fs::write(&manifest, fixture.replace("ebb_dbt_db", &database.name)).unwrap();
    let config_dir = dir.path().join("config");
    std::fs::create_dir_all(&config_dir).unwrap();
    let models = config_dir.join("dbt-models.yaml");

    let output = ebb_command()
        .args(["models", "import", "--source", "warehouse", "--dbt-manifest"])
        .arg(&manifest)
        .arg("--out")
        .arg(&models)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "some models are refused: {stderr}");
    assert!(stderr.contains("wrote 3 models"), "{stderr}");
    assert!(
        stderr.contains("dbt model \"stg_events\" not imported: it is ephemeral")
            && stderr.contains("dbt model \"daily_revenue\" not imported: it has no unique key"),
        "{stderr}"
    );
    let written = std::fs::read_to_string(&models).unwrap();
    for (model, key) in [
        ("customers", "customer_id"),
        ("orders", "order_id"),
        ("payments", "payment_id"),
    ] {
        assert!(
            written.contains(&format!("\"{model}\":")) && written.contains(&format!("primary_key: \"{key}\"")),
            "{written}"
        );
    }
    std::fs::write(
        config_dir.join("ebb.yaml"),
        format!(
            "sources:\n  warehouse: {{ type: postgres, url: \"{}\" }}\n\
             destinations:\n  out: {{ type: jsonl, path: out/customers.jsonl }}\n\
             syncs:\n  customers-out: {{ model: customers, destination: out, mode: upsert }}\n",
            database.url
        ),
    )
    .unwrap();
    let (status, stdout, stderr) = ebb(&["check", "--connect"], &config_dir);
    assert_eq!(status, 0, "{stdout}{stderr}");
    let (status, stdout, stderr) = ebb(&["model", "preview", "orders", "--limit", "5", "--json"], &config_dir);
    assert_eq!(status, 0, "{stdout}{stderr}");
    let preview: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(preview["rows"].as_array().map(Vec::len), Some(5), "{preview}");
    assert_eq!(preview["columns"][0]["name"], "order_id");
}
