//! Loading configs with this build's destination connectors: the loader's
//! messages (file, line, field), references between items, and what each
//! destination type declares.

use ebb_shared::config::{expand_env, SourceConfig, SyncMode};
use ebb_worker::config::{from_yaml_str, load};
use std::path::Path;
use std::time::Duration;

const GOOD: &str = r#"
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
syncs:
  customers-out:
    model: customers
    destination: out
    mode: mirror
    schedule:
      every: 15m
"#;

#[test]
fn loads_and_resolves_relative_paths() {
    let config = from_yaml_str(Path::new("ebb.yaml"), GOOD, Path::new("/etc/ebb")).unwrap();
    let spec = config.sync_spec("customers-out").unwrap();
    assert_eq!(spec.mode, SyncMode::Mirror);
    match spec.source {
        SourceConfig::Csv(c) => assert_eq!(c.path, Path::new("/etc/ebb/data")),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(spec.destination.kind, "jsonl");
    assert_eq!(spec.destination.settings["path"], "/etc/ebb/out/customers.jsonl");
    assert_eq!(
        config.syncs["customers-out"].schedule.as_ref().unwrap().every,
        Duration::from_secs(900)
    );
}

#[test]
fn unknown_field_names_file_line_and_field() {
    let text = GOOD.replace(
        "    path: out/customers.jsonl",
        "    path: out/customers.jsonl\n    bach_size: 10",
    );
    let err = from_yaml_str(Path::new("ebb.yaml"), &text, Path::new("."))
        .unwrap_err()
        .0
        .remove(0);
    assert_eq!(err.file.as_deref(), Some(Path::new("ebb.yaml")));
    assert_eq!(
        err.line,
        Some(text.lines().position(|l| l.contains("bach_size")).unwrap() + 1)
    );
    assert!(err.message.contains("unknown field `bach_size`"), "{err}");
    let top = format!("{GOOD}\nsyncz: {{}}\n");
    let err = from_yaml_str(Path::new("ebb.yaml"), &top, Path::new("."))
        .unwrap_err()
        .0
        .remove(0);
    assert!(err.to_string().contains("syncz"), "{err}");
    assert!(err.line.is_some(), "{err}");
}

#[test]
fn dangling_references_are_named() {
    let text = GOOD.replace("destination: out", "destination: nowhere");
    let err = from_yaml_str(Path::new("ebb.yaml"), &text, Path::new("."))
        .unwrap_err()
        .0
        .remove(0);
    assert!(
        err.message.contains("\"nowhere\"") && err.message.contains("out"),
        "{err}"
    );
}

#[test]
fn unsupported_combinations_are_refused_naming_both_sides() {
    let load = |text: &str| {
        from_yaml_str(Path::new("ebb.yaml"), text, Path::new("."))
            .unwrap_err()
            .0
            .remove(0)
    };
    let table = GOOD
        .replace(
            "    type: jsonl\n    path: out/customers.jsonl",
            "    type: postgres\n    url: postgres://h/db\n    table: t\n    key_column: id",
        )
        .replace("mode: mirror", "mode: archive");
    let err = load(&table);
    assert!(
        err.message.contains("archive") && err.message.contains("postgres destination \"out\""),
        "{err}"
    );
    let err = load(&GOOD.replace("mode: mirror", "type: event\n    mode: upsert"));
    assert!(err.message.contains("event") && err.message.contains("upsert"), "{err}");
    let err = load(&GOOD.replace("mode: mirror", "mode: add_remove"));
    assert!(
        err.message.contains("object") && err.message.contains("add_remove"),
        "{err}"
    );
    let err = load(&GOOD.replace("mode: mirror", "mode: mirror\n    delete_behavior: do_nothing"));
    assert!(
        err.message.contains("mirror") && err.message.contains("do_nothing"),
        "{err}"
    );
    let audience = GOOD.replace("mode: mirror", "type: audience\n    mode: add_remove");
    from_yaml_str(Path::new("ebb.yaml"), &audience, Path::new(".")).unwrap();
}

#[test]
fn mappings_need_one_source_and_a_valid_path() {
    let load = |mappings: &str| {
        let text = GOOD.replace(
            "    mode: mirror",
            &format!("    mode: mirror\n    mappings:\n{mappings}"),
        );
        from_yaml_str(Path::new("ebb.yaml"), &text, Path::new(".")).map_err(|mut e| e.0.remove(0))
    };
    load(
        "      - { from: id, to: id }\n      - { to: \"tags[]\", value: vip }\n      - { to: \"tags[]\", template: x }",
    )
    .unwrap();
    let err = load("      - { from: id, value: 1, to: id }").unwrap_err();
    assert!(err.message.contains("exactly one"), "{err}");
    let err = load("      - { to: id }").unwrap_err();
    assert!(err.message.contains("exactly one"), "{err}");
    let err = load("      - { from: a, to: x }\n      - { from: b, to: x }").unwrap_err();
    assert!(err.message.contains("\"x\""), "{err}");
    let err = load("      - { from: a, to: \"a..b\" }").unwrap_err();
    assert!(err.message.contains("empty"), "{err}");
    let err = load("      - { from: a, to: \"a[].b\" }").unwrap_err();
    assert!(err.message.contains("[]"), "{err}");
    let err = load("      - { from: a, to: x, cast: decimal }").unwrap_err();
    assert!(err.message.contains("decimal"), "{err}");
}

#[test]
fn env_references_resolve_late_and_name_the_variable() {
    std::env::set_var("EBB_TEST_SECRET_A", "s3cr3t");
    assert_eq!(
        expand_env("postgres://u:${EBB_TEST_SECRET_A}@h/db", "source x").unwrap(),
        "postgres://u:s3cr3t@h/db"
    );
    let err = expand_env("${EBB_TEST_MISSING_B}", "destination crm header Authorization").unwrap_err();
    assert!(err.message.contains("EBB_TEST_MISSING_B") && err.message.contains("crm"));
}

#[test]
fn directory_of_files_merges_and_rejects_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = GOOD.split_at(GOOD.find("destinations:").unwrap());
    std::fs::write(dir.path().join("a.yaml"), a).unwrap();
    std::fs::write(dir.path().join("b.yml"), b).unwrap();
    let config = load(dir.path()).unwrap();
    assert!(config.syncs.contains_key("customers-out"));
    std::fs::write(
        dir.path().join("c.yaml"),
        "models:\n  customers:\n    source: files\n    file: x.csv\n    primary_key: id\n",
    )
    .unwrap();
    let err = load(dir.path()).unwrap_err();
    assert!(
        err.to_string().contains("c.yaml") && err.to_string().contains("a.yaml"),
        "{err}"
    );
}

#[test]
fn destination_settings_are_named_in_user_words_at_their_line() {
    let text = GOOD.replace(
        "    path: out/customers.jsonl",
        "    path: out/customers.jsonl\n    batch_size: ten",
    );
    let err = from_yaml_str(Path::new("e.yaml"), &text, Path::new("."))
        .unwrap_err()
        .0
        .remove(0);
    assert_eq!(
        err.to_string(),
        format!(
            "e.yaml:{}: destination \"out\": `batch_size` must be a whole number (0 or more), not string \"ten\"",
            text.lines().position(|l| l.contains("batch_size")).unwrap() + 1
        )
    );
    let http = "destinations:\n  crm:\n    type: http\n    url: http://x\n    rate_limit: [1]\n";
    let err = from_yaml_str(Path::new("e.yaml"), http, Path::new(".")).unwrap_err();
    assert!(err.to_string().contains("`rate_limit` must be a number"), "{err}");
}

#[test]
fn limits_out_of_bounds_are_refused_at_their_line() {
    let load = |settings: &str| {
        let text = format!("destinations:\n  crm:\n    type: http\n    url: http://x\n{settings}\n");
        from_yaml_str(Path::new("e.yaml"), &text, Path::new(".")).map_err(|mut e| e.0.remove(0))
    };
    for (settings, field) in [
        ("    rate_limit: 1e10", "rate_limit"),
        ("    rate_limit: 0", "rate_limit"),
        ("    max_concurrency: 0", "max_concurrency"),
        ("    batch_size: 0", "batch_size"),
    ] {
        let err = load(settings).unwrap_err();
        assert_eq!(err.line, Some(5), "{settings}: {err}");
        assert!(err.message.contains(field), "{settings}: {err}");
    }
    let err = load("    method: \"NOT A METHOD\"").unwrap_err();
    assert!(err.message.contains("method"), "{err}");
    let err = from_yaml_str(
        Path::new("e.yaml"),
        "destinations:\n  crm:\n    type: http\n    url: ftp://x/\n",
        Path::new("."),
    )
    .unwrap_err();
    assert!(err.to_string().contains("http:// or https://"), "{err}");
}

#[test]
fn unknown_destination_types_are_named_with_the_closest() {
    let text = GOOD.replace("type: jsonl", "type: jsnl");
    let err = from_yaml_str(Path::new("e.yaml"), &text, Path::new(".")).unwrap_err();
    assert!(
        err.to_string()
            .contains("unknown destination type `jsnl` (did you mean `jsonl`?)"),
        "{err}"
    );
}

const WAREHOUSE: &str = r#"
sources:
  warehouse:
    type: redshift
    url: postgres://ebb:${REDSHIFT_PASSWORD}@cluster:5439/dev
models:
  customers:
    source: warehouse
    table: analytics.customers
    columns: [id, email]
    filter: plan <> 'free'
    primary_key: id
destinations:
  out:
    type: jsonl
    path: out/customers.jsonl
syncs:
  customers-out:
    model: customers
    destination: out
    mode: upsert
"#;

#[test]
fn table_models_read_a_table_of_a_database_source_with_their_key() {
    let config = from_yaml_str(Path::new("ebb.yaml"), WAREHOUSE, Path::new(".")).unwrap();
    let model = &config.models["customers"];
    assert_eq!(model.table.as_deref(), Some("analytics.customers"));
    assert_eq!(model.columns, ["id", "email"]);
    assert_eq!(config.sources["warehouse"].kind(), "redshift");
    let messages = |text: &str| -> Vec<String> {
        from_yaml_str(Path::new("ebb.yaml"), text, Path::new("."))
            .unwrap_err()
            .0
            .into_iter()
            .map(|e| e.to_string())
            .collect()
    };
    let both = messages(&WAREHOUSE.replace(
        "    table: analytics.customers\n",
        "    table: analytics.customers\n    query: SELECT 1\n",
    ));
    assert!(
        both.iter()
            .any(|m| m.contains("both `query` and `table`") && m.starts_with("ebb.yaml:")),
        "{both:?}"
    );
    let keyless = messages(&WAREHOUSE.replace("columns: [id, email]", "columns: [email]"));
    assert!(
        keyless
            .iter()
            .any(|m| m.contains("primary key \"id\"") && m.contains("`columns`")),
        "{keyless:?}"
    );
    let loose = messages(&WAREHOUSE.replace("    table: analytics.customers\n", "    query: SELECT id FROM t\n"));
    assert!(
        loose.iter().any(|m| m.contains("`columns` goes with `table`"))
            && loose.iter().any(|m| m.contains("`filter` goes with `table`")),
        "{loose:?}"
    );
    let neither = messages(&WAREHOUSE.replace("    table: analytics.customers\n", ""));
    assert!(
        neither
            .iter()
            .any(|m| m.contains("set `query` (SQL) or `table` (schema.name)")),
        "{neither:?}"
    );
    let dotted = messages(&WAREHOUSE.replace("analytics.customers", "a..b"));
    assert!(dotted.iter().any(|m| m.contains("is not a table name")), "{dotted:?}");
    let unknown = messages(&WAREHOUSE.replace("    url: postgres", "    fetch_row: 5\n    url: postgres"));
    assert!(unknown.iter().any(|m| m.contains("fetch_row")), "{unknown:?}");
    let csv_table = messages(&GOOD.replace("    file: customers.csv\n", "    file: customers.csv\n    table: t\n"));
    assert!(
        csv_table.iter().any(|m| m.contains("`table` is for database sources")),
        "{csv_table:?}"
    );
}
