//! `ebb check` as a user meets it: a corpus of broken configs, each answered
//! with the file, the line and what to fix, and nothing run; with `--connect`,
//! the mistakes only a real source and destination show, all in one report.

use ebb_tests::process::ebb_command;
use ebb_tests::services::fresh_postgres_database;
use sqlx::PgPool;
use std::path::Path;

/// Runs `ebb check` on `config`; answers (exit code, stdout, stderr).
fn check(config: &Path, extra: &[&str]) -> (i32, String, String) {
    let output = ebb_command()
        .arg("check")
        .args(extra)
        .arg("--config")
        .arg(config)
        .output()
        .expect("ebb runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

const GOOD: &str = "\
sources:
  files:
    type: csv
    path: data
models:
  customers:
    source: files
    file: customers.csv
    primary_key: id
destinations:
  out:
    type: jsonl
    path: out/customers.jsonl
    batch_size: 100
syncs:
  customers-out:
    model: customers
    destination: out
    mode: upsert
    mappings:
      - { from: id, to: customer_id }
      - { from: email, to: email }
";

fn write_good_data(dir: &Path) {
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(dir.join("data/customers.csv"), "id,email\n1,a@example.com\n").unwrap();
}

#[test]
fn every_broken_config_of_the_corpus_is_named_with_file_line_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    write_good_data(dir.path());
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, GOOD).unwrap();
    let (code, stdout, stderr) = check(&good, &[]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("1 source, 1 model, 1 destination, 1 sync — OK"),
        "{stdout}"
    );

    // (name, how the good config is broken, the line named, what the message says)
    let line_of = |needle: &str| GOOD.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let duplicate = format!(
        "`syncs.customers-out.mode` is written twice (lines {} and {})",
        line_of("mode: upsert"),
        line_of("mode: upsert") + 1
    );
    let corpus: Vec<(&str, String, usize, &str)> = vec![
        (
            "unknown top-level section",
            format!("{GOOD}syncz: {{}}\n"),
            GOOD.lines().count() + 1,
            "unknown section `syncz` (did you mean `syncs`?)",
        ),
        (
            "unknown field of a source",
            GOOD.replace("    path: data\n", "    path: data\n    delimiter: ';'\n"),
            line_of("path: data") + 1,
            "source \"files\": unknown field `delimiter`",
        ),
        (
            "unknown field of a model",
            GOOD.replace("    primary_key: id\n", "    primary_key: id\n    primary_keys: id\n"),
            line_of("primary_key: id") + 1,
            "unknown field `primary_keys`; did you mean `primary_key`?",
        ),
        (
            "unknown field inside a mapping",
            GOOD.replace("{ from: email, to: email }", "{ form: email, to: email }"),
            line_of("to: email"),
            "unknown field `form`; did you mean `from`?",
        ),
        (
            "a whole number written as text",
            GOOD.replace("batch_size: 100", "batch_size: lots"),
            line_of("batch_size"),
            "`batch_size` must be a whole number (0 or more), not string \"lots\"",
        ),
        (
            "a negative whole number",
            GOOD.replace("batch_size: 100", "batch_size: -5"),
            line_of("batch_size"),
            "`batch_size` must be a whole number (0 or more), not integer `-5`",
        ),
        (
            "an unknown mode",
            GOOD.replace("mode: upsert", "mode: upsret"),
            line_of("mode: upsert"),
            "`mode` cannot be `upsret`",
        ),
        (
            "an unknown destination type",
            GOOD.replace("type: jsonl", "type: jsonlines"),
            line_of("type: jsonl"),
            "unknown destination type `jsonlines`",
        ),
        (
            "a duplicate key",
            GOOD.replace("    mode: upsert\n", "    mode: upsert\n    mode: mirror\n"),
            line_of("mode: upsert") + 1,
            &duplicate,
        ),
        (
            "a model naming a missing source",
            GOOD.replace("    source: files", "    source: warehouse"),
            line_of("source: files"),
            "model \"customers\" uses source \"warehouse\", which is not defined (defined: files)",
        ),
        (
            "a sync naming a missing destination",
            GOOD.replace("    destination: out", "    destination: crm"),
            line_of("destination: out"),
            "sync \"customers-out\" uses destination \"crm\", which is not defined (defined: out)",
        ),
        (
            "a missing required field",
            GOOD.replace("    mode: upsert\n", ""),
            line_of("customers-out:"),
            "sync \"customers-out\": `mode` is required",
        ),
        (
            "not YAML",
            GOOD.replace("    mappings:\n", "    mappings: [\n"),
            0,
            "this is not valid YAML",
        ),
        (
            "extract_tasks neither auto nor a number",
            GOOD.replace(
                "    primary_key: id\n",
                "    primary_key: id\n    extract_tasks: many\n",
            ),
            line_of("primary_key: id") + 1,
            "extract_tasks is `auto` or a number of tasks such as 4",
        ),
        (
            "extract_tasks on a file model",
            GOOD.replace("    primary_key: id\n", "    primary_key: id\n    extract_tasks: 4\n"),
            line_of("primary_key: id") + 1,
            "`extract_tasks` goes with database sources",
        ),
        (
            "too many extract_tasks",
            GOOD.replace(
                "type: csv\n    path: data",
                "type: postgres\n    url: postgres://127.0.0.1/db",
            )
            .replace("    file: customers.csv\n", "    table: customers\n")
            .replace("    primary_key: id\n", "    primary_key: id\n    extract_tasks: 65\n"),
            line_of("primary_key: id") + 1,
            "extract_tasks 65 is out of range: write `auto` or 1 to 64",
        ),
        (
            "a missing CSV directory",
            GOOD.replace("path: data", "path: no-such-directory"),
            line_of("path: data"),
            "the CSV directory",
        ),
        (
            "an unset variable",
            GOOD.replace(
                "type: jsonl\n    path: out/customers.jsonl",
                "type: http\n    url: https://crm.example.com/${EBB_TEST_NEVER_SET_VARIABLE}",
            ),
            line_of("path: out/customers.jsonl"),
            "refers to ${EBB_TEST_NEVER_SET_VARIABLE}, which is not set in this environment",
        ),
    ];
    for (name, text, line, says) in corpus {
        let file = dir.path().join("broken.yaml");
        std::fs::write(&file, &text).unwrap();
        let (code, stdout, stderr) = check(&file, &[]);
        assert_eq!(code, 3, "{name}: exit status\n{stdout}{stderr}");
        let prefix = format!("{}:{line}: ", file.display());
        assert!(
            stderr
                .lines()
                .any(|l| (line == 0 || l.starts_with(&prefix)) && l.contains(says)),
            "{name}: expected `{prefix}…{says}` in:\n{stderr}"
        );
        assert!(stderr.contains("nothing was run"), "{name}: {stderr}");
    }
    assert!(!dir.path().join(".ebb").exists(), "a check records nothing");

    // An empty file, and one with several problems: all of them at once.
    let empty = dir.path().join("empty.yaml");
    std::fs::write(&empty, "# nothing yet\n").unwrap();
    let (code, _, stderr) = check(&empty, &[]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("the config defines nothing"), "{stderr}");
    let several = dir.path().join("several.yaml");
    std::fs::write(
        &several,
        GOOD.replace("batch_size: 100", "batch_size: lots")
            .replace("    primary_key: id\n", "    primary_key: id\n    primary_keys: id\n")
            .replace("{ from: email, to: email }", "{ form: email, to: email }"),
    )
    .unwrap();
    let (code, _, stderr) = check(&several, &[]);
    assert_eq!(code, 3);
    assert!(stderr.contains("3 problems found"), "{stderr}");

    // --json for scripts.
    let (code, stdout, _) = check(&several, &["--json"]);
    assert_eq!(code, 3);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["problems"].as_array().unwrap().len(), 3, "{report}");
    assert!(report["problems"][0]["line"].is_u64(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_connect_finds_what_only_the_real_services_show() {
    let database = fresh_postgres_database("check").await;
    let pool = PgPool::connect(&database.url).await.unwrap();
    for statement in [
        "CREATE TABLE people (id BIGINT PRIMARY KEY, email TEXT)",
        "CREATE TABLE dest (id BIGINT PRIMARY KEY, email TEXT)",
    ] {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
    pool.close().await;
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = &database.url;
    let text = format!(
        "\
sources:
  warehouse:
    type: postgres
    url: {url}
  offline:
    type: postgres
    url: postgres://postgres@127.0.0.1:{closed_port}/nothing
models:
  bad_sql:
    source: warehouse
    query: SELEC id FROM people
    primary_key: id
  no_key:
    source: warehouse
    query: SELECT email FROM people
    primary_key: id
  people:
    source: warehouse
    query: SELECT id, email FROM people
    primary_key: id
  far_away:
    source: offline
    query: SELECT 1 AS id
    primary_key: id
destinations:
  table:
    type: postgres
    url: {url}
    table: public.dest
    key_column: id
  missing:
    type: postgres
    url: {url}
    table: public.no_such_table
    key_column: id
syncs:
  typo:
    model: people
    destination: table
    mode: upsert
    mappings:
      - {{ from: id, to: id }}
      - {{ from: emial, to: email }}
  to_missing:
    model: people
    destination: missing
    mode: upsert
  wrong_field:
    model: people
    destination: table
    mode: upsert
    mappings:
      - {{ from: id, to: id }}
      - {{ from: email, to: e_mail }}
"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ebb.yaml");
    std::fs::write(&file, &text).unwrap();
    let line_of = |needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;

    // Without --connect the files are fine.
    let (code, stdout, stderr) = check(&file, &[]);
    assert_eq!(code, 0, "{stdout}{stderr}");

    let (code, stdout, stderr) = check(&file, &["--connect"]);
    assert_eq!(code, 3, "{stdout}{stderr}");
    let expected = [
        (line_of("SELEC id"), "model \"bad_sql\": the query failed"),
        (
            line_of("query: SELECT email") + 1,
            "model \"no_key\" has no primary-key column \"id\"",
        ),
        (
            line_of(&format!(":{closed_port}/")),
            "source \"offline\" is unreachable",
        ),
        (
            line_of("from: emial"),
            "sync \"typo\" maps column \"emial\", which model \"people\" does not return",
        ),
        (line_of("  missing:"), "table public.no_such_table does not exist"),
        (
            line_of("to: e_mail"),
            "sync \"wrong_field\" maps to field \"e_mail\", which destination \"table\" does not have",
        ),
    ];
    for (line, says) in expected {
        let prefix = format!("{}:{line}: ", file.display());
        assert!(
            stderr.lines().any(|l| l.starts_with(&prefix) && l.contains(says)),
            "expected `{prefix}…{says}` in:\n{stderr}"
        );
    }
    // The primary key is checked with its model, whether a sync uses it or not.
    assert!(stderr.contains("6 problems found"), "{stderr}");
    assert!(!dir.path().join(".ebb").exists(), "a check records nothing");

    // The same config with its mistakes fixed connects and passes.
    let fixed = text
        .replace("SELEC id", "SELECT id")
        .replace("SELECT email FROM people", "SELECT id, email FROM people")
        .replace(&format!("postgres://postgres@127.0.0.1:{closed_port}/nothing"), url)
        .replace("from: emial", "from: email")
        .replace("public.no_such_table", "public.dest")
        .replace("to: e_mail", "to: email");
    std::fs::write(&file, &fixed).unwrap();
    let (code, stdout, stderr) = check(&file, &["--deep"]);
    assert_eq!(code, 0, "{fixed}\n{stdout}{stderr}");
    assert!(
        stdout.contains("OK (connected to every source and destination"),
        "{stdout}"
    );
}

/// With `--connect`, the destination's own field list is read: a mapping to
/// a field the vendor lets no one write (HubSpot's `hs_object_id`) is named
/// at its line, and the config passes once that mapping goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_connect_names_a_mapping_to_a_field_no_one_may_write() {
    use ebb_worker::destinations::hubspot::fake::FakeHubSpot;
    const TOKEN: &str = "pat-na1-check000-0000-4000-8000-000000000000";
    let fake = FakeHubSpot::start(TOKEN, None).await;
    // Read by the `ebb check` process this test starts.
    std::env::set_var("EBB_TEST_CHECK_HUBSPOT_TOKEN", TOKEN);
    let dir = tempfile::tempdir().unwrap();
    write_good_data(dir.path());
    let text = format!(
        "sources:\n  files: {{ type: csv, path: data }}\n\
         models:\n  customers: {{ source: files, file: customers.csv, primary_key: id }}\n\
         destinations:\n  crm: {{ type: hubspot, access_token: \"${{EBB_TEST_CHECK_HUBSPOT_TOKEN}}\", api_base_url: \"{}\" }}\n\
         syncs:\n  to-crm:\n    model: customers\n    destination: crm\n    mode: upsert\n    \
         record_matching: {{ from: email, to: email }}\n    mappings:\n      - {{ from: email, to: email }}\n      \
         - {{ from: id, to: hs_object_id }}\n",
        fake.url
    );
    let file = dir.path().join("ebb.yaml");
    std::fs::write(&file, &text).unwrap();

    let (code, stdout, stderr) = check(&file, &["--connect"]);
    assert_eq!(code, 3, "{stdout}{stderr}");
    let line = text.lines().position(|l| l.contains("to: hs_object_id")).unwrap() + 1;
    let prefix = format!("{}:{line}: ", file.display());
    let says = "sync \"to-crm\" maps to field \"hs_object_id\", which destination \"crm\" does not let anyone write \
                (read-only, calculated or set by the system); map to another field";
    assert!(
        stderr.lines().any(|l| l.starts_with(&prefix) && l.contains(says)),
        "expected `{prefix}…{says}` in:\n{stderr}"
    );

    let fixed = text.replace("      - { from: id, to: hs_object_id }\n", "");
    std::fs::write(&file, &fixed).unwrap();
    let (code, stdout, stderr) = check(&file, &["--connect"]);
    assert_eq!(code, 0, "{stdout}{stderr}");

    // An upsert needs a field HubSpot holds unique (a contact's email is
    // one); `firstname` is not, and the check says which are.
    let by_name = fixed.replace(
        "record_matching: { from: email, to: email }",
        "record_matching: { from: email, to: firstname }",
    );
    std::fs::write(&file, &by_name).unwrap();
    let (code, stdout, stderr) = check(&file, &["--connect"]);
    assert_eq!(code, 3, "{stdout}{stderr}");
    let line = by_name.lines().position(|l| l.contains("to: firstname")).unwrap() + 1;
    let prefix = format!("{}:{line}: ", file.display());
    let says =
        "sync \"to-crm\" upserts records matched on \"firstname\", which destination \"crm\" does not hold unique; \
                match on a unique field (";
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with(&prefix) && l.contains(says) && l.contains("email")),
        "expected `{prefix}…{says}` naming email in:\n{stderr}"
    );
    // Updating looks records up, and may match on any field.
    std::fs::write(&file, by_name.replace("mode: upsert", "mode: update")).unwrap();
    let (code, stdout, stderr) = check(&file, &["--connect"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
}
