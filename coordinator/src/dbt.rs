//! dbt models as Ebb models: `ebb model import --dbt-manifest target/manifest.json`.
//!
//! dbt's manifest (`target/manifest.json`, written by `dbt compile`, `run` or
//! `build`) lists every model with the relation it materialises, as the
//! adapter quotes it, and every test. A model becomes an Ebb model reading
//! that relation; its primary key is, in this order:
//!
//! 1. the model's `meta` (`ebb: {primary_key: col}`, or `primary_key: col`);
//! 2. a `primary_key` constraint of its contract (on a column, or on the
//!    model with one column);
//! 3. the one column that has both a `unique` and a `not_null` test, enabled
//!    and without a `where` (a test of part of the rows says nothing of all).
//!
//! A model with none of these, or with several candidates, is refused by
//! name, with what to add; so is an ephemeral model (it has no relation).

use ebb_shared::config::ModelConfig;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Deserialize)]
struct Manifest {
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    nodes: BTreeMap<String, Node>,
}

#[derive(Debug, Default, Deserialize)]
struct Metadata {
    #[serde(default)]
    dbt_schema_version: Option<String>,
    #[serde(default)]
    project_name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Node {
    resource_type: String,
    name: String,
    #[serde(default)]
    package_name: Option<String>,
    #[serde(default)]
    relation_name: Option<String>,
    #[serde(default)]
    config: NodeConfig,
    #[serde(default)]
    meta: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    columns: BTreeMap<String, ColumnInfo>,
    #[serde(default)]
    constraints: Vec<Constraint>,
    #[serde(default)]
    description: Option<String>,
    // Tests only.
    #[serde(default)]
    test_metadata: Option<TestMetadata>,
    #[serde(default)]
    column_name: Option<String>,
    #[serde(default)]
    attached_node: Option<String>,
    #[serde(default)]
    depends_on: DependsOn,
}

#[derive(Debug, Default, Deserialize)]
struct NodeConfig {
    #[serde(default)]
    materialized: Option<String>,
    #[serde(default = "enabled")]
    enabled: bool,
    #[serde(default, rename = "where")]
    where_clause: Option<String>,
    #[serde(default)]
    meta: serde_json::Map<String, serde_json::Value>,
}

fn enabled() -> bool {
    true
}

#[derive(Debug, Deserialize)]
struct ColumnInfo {
    name: String,
    #[serde(default)]
    constraints: Vec<Constraint>,
}

#[derive(Debug, Deserialize)]
struct Constraint {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    columns: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct TestMetadata {
    name: String,
    #[serde(default)]
    namespace: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct DependsOn {
    #[serde(default)]
    nodes: Vec<String>,
}

/// One dbt model made an Ebb model.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    pub name: String,
    pub model: ModelConfig,
    /// dbt's id of the model (`model.project.name`).
    pub unique_id: String,
    /// Where the key came from: `meta`, `constraint` or `tests`.
    pub key_from: &'static str,
    pub description: Option<String>,
}

/// A dbt model that cannot be an Ebb model, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    pub name: String,
    pub reason: String,
}

#[derive(Debug, Default)]
pub struct Import {
    pub imported: Vec<Imported>,
    pub refused: Vec<Refused>,
}

/// Reads a manifest's models as Ebb models of `source`. `select` keeps only
/// the named models (all when empty); a selected name the manifest lacks is
/// refused.
pub fn import(manifest_json: &str, source: &str, select: &[String]) -> Result<Import, String> {
    let manifest: Manifest = serde_json::from_str(manifest_json).map_err(|e| {
        format!("this is not a dbt manifest (target/manifest.json, written by dbt compile, run or build): {e}")
    })?;
    if let Some(version) = &manifest.metadata.dbt_schema_version {
        tracing::debug!(%version, project = ?manifest.metadata.project_name, "reading a dbt manifest");
    }
    let keys_by_tests = keys_by_tests(&manifest.nodes);
    let models: Vec<(&String, &Node)> = manifest
        .nodes
        .iter()
        .filter(|(_, node)| node.resource_type == "model")
        .collect();
    // A name two packages use is told apart by its package.
    let mut name_count: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, node) in &models {
        *name_count.entry(node.name.as_str()).or_default() += 1;
    }
    let mut result = Import::default();
    let mut found = BTreeSet::new();
    for (unique_id, node) in models {
        let name = if name_count[node.name.as_str()] > 1 {
            format!("{}_{}", node.package_name.as_deref().unwrap_or("dbt"), node.name)
        } else {
            node.name.clone()
        };
        if !select.is_empty() && !select.contains(&name) && !select.contains(&node.name) {
            continue;
        }
        found.insert(name.clone());
        found.insert(node.name.clone());
        match import_model(unique_id, node, source, keys_by_tests.get(unique_id.as_str())) {
            Ok((model, key_from)) => result.imported.push(Imported {
                name,
                model,
                unique_id: unique_id.clone(),
                key_from,
                description: node.description.clone().filter(|d| !d.trim().is_empty()),
            }),
            Err(reason) => result.refused.push(Refused { name, reason }),
        }
    }
    for wanted in select {
        if !found.contains(wanted) {
            let mut known: Vec<&str> = name_count.keys().copied().collect();
            known.truncate(20);
            result.refused.push(Refused {
                name: wanted.clone(),
                reason: format!("the manifest has no model of that name (it has: {})", known.join(", ")),
            });
        }
    }
    Ok(result)
}

fn import_model(
    unique_id: &str,
    node: &Node,
    source: &str,
    tested_keys: Option<&BTreeSet<String>>,
) -> Result<(ModelConfig, &'static str), String> {
    if !node.config.enabled {
        return Err("it is disabled in dbt".into());
    }
    if node.config.materialized.as_deref() == Some("ephemeral") {
        return Err("it is ephemeral: dbt builds no table or view to read (materialize it as a table or view)".into());
    }
    let Some(relation) = node.relation_name.as_deref().filter(|r| !r.trim().is_empty()) else {
        return Err(format!(
            "{unique_id} has no relation_name in this manifest: run `dbt compile` (or run, build) with dbt 1.5 or later"
        ));
    };
    let (primary_key, key_from) = primary_key(node, tested_keys)?;
    let model = ModelConfig::query(source, &format!("SELECT * FROM {relation}"), &primary_key);
    Ok((model, key_from))
}

const ADD_A_KEY: &str = "add `meta: {ebb: {primary_key: <column>}}` to the model, a primary_key constraint, \
                         or unique and not_null tests to one column";

fn primary_key(node: &Node, tested_keys: Option<&BTreeSet<String>>) -> Result<(String, &'static str), String> {
    for meta in [&node.config.meta, &node.meta] {
        let declared = meta
            .get("ebb")
            .and_then(|ebb| ebb.get("primary_key"))
            .or_else(|| meta.get("primary_key"));
        match declared {
            Some(serde_json::Value::String(column)) if !column.trim().is_empty() => {
                return Ok((column.trim().to_string(), "meta"))
            }
            Some(other) => {
                return Err(format!(
                    "its meta primary_key is {other}: Ebb needs one column name (a model keyed by several columns \
                     can select their concatenation as a column of its own)"
                ))
            }
            None => {}
        }
    }
    let mut constrained: Vec<String> = node
        .columns
        .values()
        .filter(|c| c.constraints.iter().any(|k| k.kind == "primary_key"))
        .map(|c| c.name.clone())
        .collect();
    for constraint in node.constraints.iter().filter(|k| k.kind == "primary_key") {
        constrained.extend(constraint.columns.iter().cloned());
    }
    // In the order declared, each once.
    let mut seen = BTreeSet::new();
    constrained.retain(|column| seen.insert(column.clone()));
    match constrained.len() {
        0 => {}
        1 => return Ok((constrained.remove(0), "constraint")),
        _ => {
            return Err(format!(
                "its primary key has several columns ({}): Ebb keys a row by one column; select their \
                 concatenation as a column and name it in meta",
                constrained.join(", ")
            ))
        }
    }
    let tested: Vec<&String> = tested_keys.map(|keys| keys.iter().collect()).unwrap_or_default();
    match tested.as_slice() {
        [] => Err(format!("it has no unique key: {ADD_A_KEY}")),
        [column] => Ok(((*column).clone(), "tests")),
        several => Err(format!(
            "several columns are tested unique and not null ({}): name the key with `meta: {{ebb: {{primary_key: \
             <column>}}}}`",
            several.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// For each model, the columns that have both an enabled `unique` and an
/// enabled `not_null` test over all of its rows.
fn keys_by_tests(nodes: &BTreeMap<String, Node>) -> BTreeMap<&str, BTreeSet<String>> {
    let mut tests: BTreeMap<(&str, &str), BTreeSet<&str>> = BTreeMap::new();
    for node in nodes.values() {
        if node.resource_type != "test" || !node.config.enabled || node.config.where_clause.is_some() {
            continue;
        }
        let Some(metadata) = &node.test_metadata else {
            continue;
        };
        // dbt's own generic tests, not a package's test of the same name.
        if metadata.namespace.as_deref().is_some_and(|n| n != "dbt") {
            continue;
        }
        let (Some(column), Some(model)) = (
            node.column_name.as_deref(),
            node.attached_node.as_deref().or_else(|| {
                node.depends_on
                    .nodes
                    .iter()
                    .find(|n| n.starts_with("model."))
                    .map(String::as_str)
            }),
        ) else {
            continue;
        };
        tests.entry((model, column)).or_default().insert(metadata.name.as_str());
    }
    let mut keys: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for ((model, column), names) in tests {
        if names.contains("unique") && names.contains("not_null") {
            keys.entry(model).or_default().insert(column.to_string());
        }
    }
    keys
}

/// The imported models as a config file's `models:` section, each with the
/// dbt model it came from and how its key was found.
pub fn to_yaml(import: &Import, manifest_path: &str) -> String {
    let quote = |text: &str| serde_json::Value::String(text.to_string()).to_string();
    let mut out = format!("# Models imported from the dbt manifest {manifest_path}.\n# Import again after dbt changes them: ebb model import --dbt-manifest …\nmodels:\n");
    for imported in &import.imported {
        out.push_str(&format!(
            "  {}:                # {} (key from {})\n",
            quote(&imported.name),
            imported.unique_id,
            imported.key_from
        ));
        out.push_str(&format!("    source: {}\n", quote(&imported.model.source)));
        out.push_str(&format!(
            "    query: {}\n",
            quote(imported.model.query.as_deref().unwrap_or_default())
        ));
        out.push_str(&format!("    primary_key: {}\n", quote(&imported.model.primary_key)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(nodes: serde_json::Value) -> String {
        serde_json::json!({
            "metadata": {"dbt_schema_version": "https://schemas.getdbt.com/dbt/manifest/v12.json", "project_name": "shop"},
            "nodes": nodes,
        })
        .to_string()
    }

    fn model(name: &str, extra: serde_json::Value) -> (String, serde_json::Value) {
        let mut node = serde_json::json!({
            "resource_type": "model",
            "name": name,
            "package_name": "shop",
            "unique_id": format!("model.shop.{name}"),
            "relation_name": format!("\"analytics\".\"prod\".\"{name}\""),
            "config": {"materialized": "table", "enabled": true, "meta": {}},
            "meta": {},
            "columns": {},
        });
        for (key, value) in extra.as_object().unwrap() {
            node[key] = value.clone();
        }
        (format!("model.shop.{name}"), node)
    }

    fn test(kind: &str, model: &str, column: &str, extra: serde_json::Value) -> (String, serde_json::Value) {
        let mut node = serde_json::json!({
            "resource_type": "test",
            "name": format!("{kind}_{model}_{column}"),
            "test_metadata": {"name": kind, "kwargs": {"column_name": column}, "namespace": null},
            "column_name": column,
            "attached_node": format!("model.shop.{model}"),
            "depends_on": {"nodes": [format!("model.shop.{model}")]},
            "config": {"enabled": true, "where": null},
        });
        for (key, value) in extra.as_object().unwrap() {
            node[key] = value.clone();
        }
        (format!("test.shop.{kind}_{model}_{column}.abc123"), node)
    }

    #[test]
    fn a_models_key_comes_from_meta_then_constraints_then_unique_and_not_null_tests() {
        let nodes: serde_json::Map<String, serde_json::Value> = [
            model("customers", serde_json::json!({})),
            test("unique", "customers", "customer_id", serde_json::json!({})),
            test("not_null", "customers", "customer_id", serde_json::json!({})),
            test("not_null", "customers", "email", serde_json::json!({})),
            model("orders", serde_json::json!({"config": {"materialized": "view", "enabled": true, "meta": {"ebb": {"primary_key": "order_id"}}}})),
            test("unique", "orders", "customer_id", serde_json::json!({})),
            test("not_null", "orders", "customer_id", serde_json::json!({})),
            model("payments", serde_json::json!({"columns": {"payment_id": {"name": "payment_id", "constraints": [{"type": "primary_key"}]}}})),
            model("events", serde_json::json!({})),
            test("unique", "events", "event_id", serde_json::json!({"config": {"enabled": true, "where": "day > '2024-01-01'"}})),
            test("not_null", "events", "event_id", serde_json::json!({})),
            model("stg_things", serde_json::json!({"config": {"materialized": "ephemeral", "enabled": true}, "relation_name": null})),
        ]
        .into_iter()
        .collect();
        let import = import(&manifest(serde_json::Value::Object(nodes)), "warehouse", &[]).unwrap();
        let keys: Vec<(&str, &str, &str)> = import
            .imported
            .iter()
            .map(|i| (i.name.as_str(), i.model.primary_key.as_str(), i.key_from))
            .collect();
        assert_eq!(
            keys,
            [
                ("customers", "customer_id", "tests"),
                ("orders", "order_id", "meta"),
                ("payments", "payment_id", "constraint"),
            ]
        );
        assert_eq!(
            import.imported[0].model.query.as_deref(),
            Some(r#"SELECT * FROM "analytics"."prod"."customers""#)
        );
        assert_eq!(import.imported[0].model.source, "warehouse");
        let refused: Vec<(&str, &str)> = import
            .refused
            .iter()
            .map(|r| (r.name.as_str(), r.reason.as_str()))
            .collect();
        assert_eq!(refused.len(), 2, "{refused:?}");
        assert_eq!(refused[0].0, "events");
        assert!(
            refused[0].1.contains("no unique key") && refused[0].1.contains("meta"),
            "{refused:?}"
        );
        assert_eq!(refused[1].0, "stg_things");
        assert!(refused[1].1.contains("ephemeral"), "{refused:?}");
    }

    #[test]
    fn several_candidates_or_a_composite_key_are_refused_naming_the_columns() {
        let nodes: serde_json::Map<String, serde_json::Value> = [
            model("accounts", serde_json::json!({})),
            test("unique", "accounts", "id", serde_json::json!({})),
            test("not_null", "accounts", "id", serde_json::json!({})),
            test("unique", "accounts", "email", serde_json::json!({})),
            test("not_null", "accounts", "email", serde_json::json!({})),
            model(
                "lines",
                serde_json::json!({"constraints": [{"type": "primary_key", "columns": ["order_id", "line"]}]}),
            ),
        ]
        .into_iter()
        .collect();
        let import = import(&manifest(serde_json::Value::Object(nodes)), "wh", &[]).unwrap();
        assert!(import.imported.is_empty());
        assert!(import.refused[0].reason.contains("email, id"), "{:?}", import.refused);
        assert!(
            import.refused[1].reason.contains("order_id, line"),
            "{:?}",
            import.refused
        );
    }

    #[test]
    fn a_selection_names_what_the_manifest_lacks_and_the_yaml_loads_as_models() {
        let nodes: serde_json::Map<String, serde_json::Value> = [
            model("customers", serde_json::json!({"meta": {"primary_key": "id"}})),
            model("orders", serde_json::json!({"meta": {"primary_key": "id"}})),
        ]
        .into_iter()
        .collect();
        let select = vec!["customers".to_string(), "custmers".to_string()];
        let import = import(&manifest(serde_json::Value::Object(nodes)), "wh", &select).unwrap();
        assert_eq!(import.imported.len(), 1);
        assert_eq!(import.refused[0].name, "custmers");
        assert!(import.refused[0].reason.contains("customers, orders"));
        let yaml = to_yaml(&import, "target/manifest.json");
        let text = format!("sources:\n  wh: {{ type: postgres, url: \"postgres://h/db\" }}\n{yaml}");
        let config =
            ebb_worker::config::from_yaml_str(std::path::Path::new("dbt.yaml"), &text, std::path::Path::new("."))
                .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(config.models["customers"].primary_key, "id");
        assert_eq!(
            config.models["customers"].query.as_deref(),
            Some(r#"SELECT * FROM "analytics"."prod"."customers""#)
        );
        assert!(import_err("{\"nodes\": 3}").contains("not a dbt manifest"));
    }

    fn import_err(text: &str) -> String {
        import(text, "wh", &[]).unwrap_err()
    }
}
