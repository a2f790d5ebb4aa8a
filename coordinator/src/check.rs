//! `ebb check`: the mistakes of a config found before any run, all at once.
//!
//! Loading the config finds what the files themselves get wrong. Then, without
//! connecting, the check looks at what this machine shows: the environment
//! variables the config refers to, and the directories and files of file
//! sources. With `--connect` it also connects to every source and destination,
//! prepares each model's query (no row is read), and holds the primary key and
//! the mapped columns against the query's columns and the mapped fields against
//! the destination's. Every problem names the file and line to fix.

use ebb_shared::config::yaml::Segment;
use ebb_shared::config::{
    env_references, Config, ConfigError, ConfigErrors, Locations, SourceConfig, SyncMode, SyncType,
};
use ebb_shared::value::Column;
use ebb_worker::error::TaskError;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// A config that loads, and the problems found beyond its files.
pub struct Checked {
    pub config: Config,
    pub problems: Vec<ConfigError>,
}

pub async fn check(path: &Path, connect: bool) -> Result<Checked, ConfigErrors> {
    let (config, locations) = ebb_worker::config::load_located(path)?;
    let mut problems = local_problems(&config, &locations);
    if connect {
        problems.extend(connected_problems(&config, &locations).await);
    }
    Ok(Checked { config, problems })
}

fn path_of(keys: &[&str]) -> Vec<Segment> {
    keys.iter().map(|k| Segment::key(k)).collect()
}

/// What can be seen without connecting: unset variables, missing local files.
fn local_problems(config: &Config, locations: &Locations) -> Vec<ConfigError> {
    let mut problems = Vec::new();
    let mut unset = |section: &str, name: &str, what: &str, settings: Vec<(Vec<String>, &str)>| {
        for (setting, text) in settings {
            for variable in env_references(text) {
                if std::env::var_os(&variable).is_none() {
                    let mut path = path_of(&[section, name]);
                    path.extend(setting.iter().map(|s| Segment::key(s)));
                    problems.push(locations.error(
                        &path,
                        format!(
                            "{what} {name:?}: `{}` refers to ${{{variable}}}, which is not set in this environment \
                             (set it here and in every worker's environment)",
                            setting.join(".")
                        ),
                    ));
                }
            }
        }
    };
    for (name, source) in &config.sources {
        unset("sources", name, "source", source.expanded_settings());
    }
    for (name, destination) in &config.destinations {
        let settings = destination_settings(destination);
        unset(
            "destinations",
            name,
            "destination",
            settings
                .iter()
                .map(|(path, text)| (path.clone(), text.as_str()))
                .collect(),
        );
    }
    for (name, source) in &config.sources {
        match source {
            SourceConfig::Csv(csv) if !csv.path.is_dir() => problems.push(locations.error_at(
                &["sources", name, "path"],
                format!(
                    "source {name:?}: the CSV directory {} does not exist",
                    csv.path.display()
                ),
            )),
            SourceConfig::Bigquery(bigquery)
                if bigquery.credentials_file.as_deref().is_some_and(|path| !path.is_file()) =>
            {
                problems.push(locations.error_at(
                    &["sources", name, "credentials_file"],
                    format!(
                        "source {name:?}: the key file {} does not exist",
                        bigquery.credentials_file.as_deref().unwrap_or(Path::new("")).display()
                    ),
                ))
            }
            SourceConfig::Sqlite(sqlite) if !sqlite.path.is_file() => problems.push(locations.error_at(
                &["sources", name, "path"],
                format!(
                    "source {name:?}: the SQLite database {} does not exist",
                    sqlite.path.display()
                ),
            )),
            _ => {}
        }
    }
    for (name, model) in &config.models {
        if let (Some(SourceConfig::Csv(csv)), Some(file)) = (config.sources.get(&model.source), &model.file) {
            let path = csv.path.join(file);
            if csv.path.is_dir() && !path.is_file() {
                problems.push(locations.error_at(
                    &["models", name, "file"],
                    format!("model {name:?}: the CSV file {} does not exist", path.display()),
                ));
            }
        }
    }
    problems
}

/// What only connecting shows: unreachable services, broken queries, columns
/// and fields that do not exist.
async fn connected_problems(config: &Config, locations: &Locations) -> Vec<ConfigError> {
    let mut problems = Vec::new();
    // Each model's columns, or None when its query could not be prepared.
    let mut columns: BTreeMap<&str, Option<Vec<Column>>> = BTreeMap::new();
    let mut unreachable_sources = BTreeSet::new();
    for (name, model) in &config.models {
        let source = &config.sources[&model.source];
        // An unset variable is reported already; connecting would only say it again.
        if has_unset_variables(source.expanded_settings()) || unreachable_sources.contains(model.source.as_str()) {
            columns.insert(name, None);
            continue;
        }
        match ebb_worker::sources::describe(&model.source, source, name, model).await {
            Ok(found) => {
                if !found.iter().any(|c| c.name == model.primary_key) {
                    let available: Vec<&str> = found.iter().map(|c| c.name.as_str()).collect();
                    let missing = TaskError::MissingKeyColumn {
                        model: name.clone(),
                        column: model.primary_key.clone(),
                        available: available.join(", "),
                    };
                    problems.push(locations.error_at(&["models", name, "primary_key"], missing.to_string()));
                }
                columns.insert(name, Some(found));
            }
            Err(error) => {
                let at = match &error {
                    TaskError::SourceUnreachable { .. } | TaskError::Config(_) => {
                        unreachable_sources.insert(model.source.as_str());
                        source_setting_path(&model.source, source)
                    }
                    _ => path_of(&["models", name, model.definition_key()]),
                };
                problems.push(locations.error(&at, error.to_string()));
                columns.insert(name, None);
            }
        }
    }
    let mut reported = BTreeSet::new();
    for name in config.syncs.keys() {
        let spec = config.sync_spec(name).expect("a loaded config's syncs resolve");
        if let Some(Some(found)) = columns.get(spec.model_name.as_str()) {
            for missing in ebb_worker::mapping::missing_columns(&spec, found) {
                let at = match &missing {
                    // Reported with its model above.
                    TaskError::MissingKeyColumn { .. } => continue,
                    TaskError::MissingMappedColumn { column, .. } => mapped_column_path(name, &spec, column),
                    _ => path_of(&["syncs", name]),
                };
                let error = locations.error(&at, missing.to_string());
                if reported.insert(error.to_string()) {
                    problems.push(error);
                }
            }
        }
        let destination_path = path_of(&["destinations", &spec.destination_name]);
        let settings = destination_settings(&spec.destination);
        if has_unset_variables(
            settings
                .iter()
                .map(|(path, text)| (path.clone(), text.as_str()))
                .collect(),
        ) {
            continue;
        }
        let destination = match ebb_worker::destinations::build(&spec).await {
            Ok(destination) => destination,
            Err(error) => {
                let error = locations.error(&destination_path, error.to_string());
                if reported.insert(error.to_string()) {
                    problems.push(error);
                }
                continue;
            }
        };
        if let Err(reason) = destination.check_connection().await {
            let error = locations.error(
                &destination_path,
                format!("destination {:?}: {reason}", spec.destination_name),
            );
            if reported.insert(error.to_string()) {
                problems.push(error);
            }
            continue;
        }
        let fields = match ebb_worker::destinations::REGISTRY
            .fields(&spec.destination_name, &spec.destination, None)
            .await
        {
            Ok(fields) => fields,
            Err(reason) => {
                let error = locations.error(
                    &destination_path,
                    format!(
                        "destination {:?}: cannot list its fields: {reason}",
                        spec.destination_name
                    ),
                );
                if reported.insert(error.to_string()) {
                    problems.push(error);
                }
                continue;
            }
        };
        if let Some(described) = fields {
            let fields: Vec<String> = described.iter().map(|f| f.name.clone()).collect();
            let matching = spec.record_matching.as_ref().map(|m| m.to.as_str());
            if let Some(to) = matching.filter(|to| !fields.iter().any(|f| f == to)) {
                problems.push(locations.error_at(
                    &["syncs", name, "record_matching", "to"],
                    format!(
                        "sync {name:?} matches records on {to:?}, which destination {:?} does not have (its fields: {})",
                        spec.destination_name,
                        fields.join(", ")
                    ),
                ));
            }
            // Creating-or-updating by a field needs the destination to hold
            // it unique (HubSpot's idProperty, Salesforce's External ID, a
            // unique index): upserting by any other field is refused row by
            // row. Updates and deletes look records up and may match on any.
            let upserts = matches!(spec.mode, SyncMode::Upsert | SyncMode::Mirror | SyncMode::All)
                && spec.sync_type == SyncType::Object;
            let matched = matching.and_then(|to| described.iter().find(|f| f.name == to));
            if let Some(field) = matched.filter(|field| upserts && !field.unique) {
                let unique: Vec<&str> = described.iter().filter(|f| f.unique).map(|f| f.name.as_str()).collect();
                problems.push(locations.error_at(
                    &["syncs", name, "record_matching", "to"],
                    format!(
                        "sync {name:?} upserts records matched on {:?}, which destination {:?} does not hold unique; \
                         match on a unique field ({}) or make {:?} unique there",
                        field.name,
                        spec.destination_name,
                        if unique.is_empty() {
                            "it has none".to_string()
                        } else {
                            unique.join(", ")
                        },
                        field.name
                    ),
                ));
            }
            // Without mappings every column of the model is sent as a field.
            let unmapped = columns
                .get(spec.model_name.as_str())
                .cloned()
                .flatten()
                .unwrap_or_default();
            if spec.mappings.is_empty() {
                for column in unmapped.iter().filter(|c| !fields.contains(&c.name)) {
                    problems.push(locations.error_at(
                        &["syncs", name],
                        format!(
                            "sync {name:?} has no mappings, so it sends every column as a field, and destination {:?} has no field {:?} \
                             (its fields: {}); add mappings",
                            spec.destination_name,
                            column.name,
                            fields.join(", ")
                        ),
                    ));
                }
            }
            for (index, mapping) in spec.mappings.iter().enumerate() {
                let field = mapping.to.split(['.', '[']).next().unwrap_or_default();
                let mut at = path_of(&["syncs", name, "mappings"]);
                at.extend([Segment::Index(index), Segment::key("to")]);
                match described.iter().find(|f| f.name == field) {
                    None => problems.push(locations.error(
                        &at,
                        format!(
                            "sync {name:?} maps to field {field:?}, which destination {:?} does not have (its fields: {})",
                            spec.destination_name,
                            fields.join(", ")
                        ),
                    )),
                    // The field records are matched on may be the vendor's own id.
                    Some(described) if !described.writable && Some(field) != matching => problems.push(locations.error(
                        &at,
                        format!(
                            "sync {name:?} maps to field {field:?}, which destination {:?} does not let anyone write (read-only, calculated or set by the system); map to another field",
                            spec.destination_name
                        ),
                    )),
                    Some(_) => {}
                }
            }
        }
    }
    problems
}

/// The destination's settings that `${VAR}`s are resolved in.
fn destination_settings(destination: &ebb_shared::config::DestinationConfig) -> Vec<(Vec<String>, String)> {
    ebb_worker::destinations::profile(destination)
        .map(|profile| profile.expanded_settings)
        .unwrap_or_default()
}

fn has_unset_variables(settings: Vec<(Vec<String>, &str)>) -> bool {
    settings
        .iter()
        .flat_map(|(_, text)| env_references(text))
        .any(|variable| std::env::var_os(variable).is_none())
}

/// Where a source's connection is set: its URL, or its path.
fn source_setting_path(name: &str, source: &SourceConfig) -> Vec<Segment> {
    let setting = match source {
        SourceConfig::Postgres(_) | SourceConfig::Redshift(_) | SourceConfig::Mysql(_) => "url",
        SourceConfig::Sqlite(_) | SourceConfig::Csv(_) => "path",
        SourceConfig::Bigquery(_) => "project",
        SourceConfig::Snowflake(_) => "account",
        SourceConfig::Databricks(_) => "host",
        SourceConfig::Files(_) => "url",
    };
    path_of(&["sources", name, setting])
}

/// The `from` of the mapping (or record matching) that names `column`.
fn mapped_column_path(sync: &str, spec: &ebb_shared::config::SyncSpec, column: &str) -> Vec<Segment> {
    if let Some(index) = spec.mappings.iter().position(|m| m.from.as_deref() == Some(column)) {
        let mut path = path_of(&["syncs", sync, "mappings"]);
        path.extend([Segment::Index(index), Segment::key("from")]);
        return path;
    }
    path_of(&["syncs", sync, "record_matching", "from"])
}
