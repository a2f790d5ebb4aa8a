//! Reading one config file: YAML into its four sections, every problem named
//! with its line and in the user's words, all of them at once.
//!
//! Sources and destinations are told apart by their `type`. Serde's tagged enums
//! would buffer each block and lose the position of the field at fault, so the
//! `type` is taken off here and the block is read as that type's own struct,
//! through `serde_path_to_error`, which says which field was wrong.

use super::destination::{read_settings as typed, FieldError};
use super::yaml::{display_path, Segment, YamlIndex};
use super::{
    BigquerySourceConfig, ConfigError, ConfigFile, CsvSourceConfig, DatabricksSourceConfig, DestinationConfig,
    DestinationTypes, FilesSourceConfig, MysqlSourceConfig, PostgresSourceConfig, RedshiftSourceConfig,
    SnowflakeSourceConfig, SourceConfig, SqliteSourceConfig,
};
use serde_yaml::Value;
use std::collections::BTreeMap;
use std::path::Path;

const SECTIONS: [&str; 4] = ["sources", "models", "destinations", "syncs"];

/// A type name and how a block of that type is read.
type Reader<T> = (&'static str, fn(Value) -> Result<T, FieldError>);

/// Each source type and how its block is read: adding a source adds a line here.
const SOURCE_TYPES: &[Reader<SourceConfig>] = &[
    ("postgres", |v| {
        typed::<PostgresSourceConfig>(v).map(SourceConfig::Postgres)
    }),
    ("redshift", |v| {
        typed::<RedshiftSourceConfig>(v).map(SourceConfig::Redshift)
    }),
    ("mysql", |v| typed::<MysqlSourceConfig>(v).map(SourceConfig::Mysql)),
    // MariaDB speaks MySQL's protocol: the same source.
    ("mariadb", |v| typed::<MysqlSourceConfig>(v).map(SourceConfig::Mysql)),
    ("bigquery", |v| {
        typed::<BigquerySourceConfig>(v).map(SourceConfig::Bigquery)
    }),
    ("snowflake", |v| {
        typed::<SnowflakeSourceConfig>(v).map(SourceConfig::Snowflake)
    }),
    ("databricks", |v| {
        typed::<DatabricksSourceConfig>(v).map(SourceConfig::Databricks)
    }),
    ("sqlite", |v| typed::<SqliteSourceConfig>(v).map(SourceConfig::Sqlite)),
    ("csv", |v| typed::<CsvSourceConfig>(v).map(SourceConfig::Csv)),
    ("files", |v| typed::<FilesSourceConfig>(v).map(SourceConfig::Files)),
];

/// A file's sections and the line of every key in it.
pub(super) struct ParsedFile {
    pub sections: ConfigFile,
    pub index: YamlIndex,
}

pub(super) fn parse_file(
    file: &Path,
    text: &str,
    base_dir: &Path,
    destination_types: &dyn DestinationTypes,
) -> Result<ParsedFile, Vec<ConfigError>> {
    let at = |line: Option<usize>, message: String| ConfigError {
        file: Some(file.to_path_buf()),
        line,
        message,
    };
    let index = YamlIndex::build(text).map_err(|error| {
        vec![at(
            Some(error.line),
            format!("this is not valid YAML: {}", error.message),
        )]
    })?;
    let mut errors: Vec<ConfigError> = index
        .duplicates
        .iter()
        .map(|duplicate| {
            at(
                Some(duplicate.second_line),
                format!(
                    "`{}` is written twice (lines {} and {}); keep one",
                    display_path(&duplicate.path),
                    duplicate.first_line,
                    duplicate.second_line
                ),
            )
        })
        .collect();
    // serde_yaml refuses a document with a duplicate key at its first one, with
    // no line: report them all, and the rest once they are fixed.
    if !errors.is_empty() {
        return Err(errors);
    }
    let document: Value = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_yaml::from_str(text).map_err(|error| {
            let line = error.location().map(|l| l.line());
            let message = error.to_string();
            let message = message.split(" at line ").next().unwrap_or_default().to_string();
            vec![at(line, format!("this is not valid YAML: {message}"))]
        })?
    };
    let line_of = |path: &[Segment]| index.line_of(path);
    let mut sections = ConfigFile::default();
    let top = match document {
        Value::Null => serde_yaml::Mapping::new(),
        Value::Mapping(top) => top,
        _ => {
            errors.push(at(
                Some(1),
                "a config file is a mapping of sections: sources, models, destinations, syncs".into(),
            ));
            return Err(errors);
        }
    };
    for (key, body) in top {
        let Some(section) = key.as_str().map(str::to_string) else {
            errors.push(at(
                None,
                format!(
                    "unexpected top-level key {key:?}; a config file has: {}",
                    SECTIONS.join(", ")
                ),
            ));
            continue;
        };
        let section_path = [Segment::key(&section)];
        if !SECTIONS.contains(&section.as_str()) {
            let hint = closest(&section, &SECTIONS)
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            errors.push(at(
                line_of(&section_path),
                format!(
                    "unknown section `{section}`{hint}; a config file has: {}",
                    SECTIONS.join(", ")
                ),
            ));
            continue;
        }
        let items = match body {
            Value::Null => continue,
            Value::Mapping(items) => items,
            _ => {
                errors.push(at(
                    line_of(&section_path),
                    format!("`{section}` must be a mapping of names to their settings"),
                ));
                continue;
            }
        };
        for (name, body) in items {
            let Some(name) = name.as_str().map(str::to_string) else {
                errors.push(at(
                    line_of(&section_path),
                    format!("`{section}`: every name must be text, not {name:?}"),
                ));
                continue;
            };
            let item_path = vec![Segment::key(&section), Segment::key(&name)];
            let what = format!("{} {name:?}", singular(&section));
            let located = |error: FieldError| {
                let mut path = item_path.clone();
                path.extend(error.path.iter().cloned());
                let message = if error.worded {
                    error.message
                } else {
                    user_words(&error.path, &error.message)
                };
                at(line_of(&path), format!("{what}: {message}"))
            };
            let result = match section.as_str() {
                "sources" => tagged(body, SOURCE_TYPES, "source")
                    .map(|source| {
                        sections.sources.insert(name.clone(), source);
                    })
                    .map_err(located),
                "destinations" => destination(body, destination_types, base_dir)
                    .map(|destination| {
                        sections.destinations.insert(name.clone(), destination);
                    })
                    .map_err(located),
                "models" => typed(body)
                    .map(|model| {
                        sections.models.insert(name.clone(), model);
                    })
                    .map_err(located),
                _ => typed(body)
                    .map(|sync| {
                        sections.syncs.insert(name.clone(), sync);
                    })
                    .map_err(located),
            };
            if let Err(error) = result {
                errors.push(error);
            }
        }
    }
    if errors.is_empty() {
        Ok(ParsedFile { sections, index })
    } else {
        Err(errors)
    }
}

/// Reads a block whose `type` picks the struct it is.
fn tagged<T>(body: Value, types: &[Reader<T>], what: &str) -> Result<T, FieldError> {
    let names: Vec<&str> = types.iter().map(|(name, _)| *name).collect();
    let (kind, fields) = take_type(body, &names, what)?;
    let (_, read) = types
        .iter()
        .find(|(name, _)| *name == kind)
        .expect("take_type knows the names");
    read(fields)
}

/// Reads a destination block with the connector its `type` names.
fn destination(body: Value, types: &dyn DestinationTypes, base_dir: &Path) -> Result<DestinationConfig, FieldError> {
    let (kind, fields) = take_type(body, &types.names(), "destination")?;
    let settings = types
        .read(&kind, fields, base_dir)
        .expect("take_type knows the names")?;
    Ok(DestinationConfig { kind, settings })
}

/// Takes a block's `type` off, checking it is one of `names`; the rest of the
/// block is that type's settings.
fn take_type(body: Value, names: &[&str], what: &str) -> Result<(String, Value), FieldError> {
    let known = || names.join(", ");
    let Value::Mapping(mut fields) = body else {
        return Err(FieldError {
            path: Vec::new(),
            message: format!("a {what} is a mapping with a `type` ({}) and its settings", known()),
            worded: true,
        });
    };
    let kind = match fields.remove("type") {
        Some(Value::String(kind)) => kind,
        Some(other) => {
            return Err(FieldError {
                path: vec![Segment::key("type")],
                message: format!("`type` must be one of {}, not {other:?}", known()),
                worded: true,
            })
        }
        None => {
            return Err(FieldError {
                path: Vec::new(),
                message: format!("needs a `type`: one of {}", known()),
                worded: true,
            })
        }
    };
    if !names.contains(&kind.as_str()) {
        let hint = closest(&kind, names)
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        return Err(FieldError {
            path: vec![Segment::key("type")],
            message: format!("unknown {what} type `{kind}`{hint}; Ebb has: {}", known()),
            worded: true,
        });
    }
    Ok((kind, Value::Mapping(fields)))
}

pub(super) fn singular(section: &str) -> &str {
    section.strip_suffix('s').unwrap_or(section)
}

/// Serde's words (`invalid type: string "x", expected usize`) in the user's
/// (`` `batch_size` must be a whole number (0 or more), not string "x" ``).
fn user_words(path: &[Segment], message: &str) -> String {
    let field_text = if path.is_empty() {
        "this".to_string()
    } else {
        format!("`{}`", display_path(path))
    };
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (name, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let expected_names: Vec<&str> = expected
            .split('`')
            .enumerate()
            .filter(|(i, _)| i % 2 == 1)
            .map(|(_, s)| s)
            .collect();
        let hint = closest(name, &expected_names)
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_default();
        let allowed = if expected_names.is_empty() {
            String::new()
        } else {
            format!(" (allowed here: {})", expected_names.join(", "))
        };
        return format!("unknown field `{name}`{hint}{allowed}");
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let name = rest.split('`').next().unwrap_or(rest);
        let at = if path.is_empty() {
            String::new()
        } else {
            format!(" in {field_text}")
        };
        return format!("`{name}` is required{at}");
    }
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        let (value, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let expected = expected.trim_start_matches(", expected ").replace('`', "");
        return format!("{field_text} cannot be `{value}`; it is {expected}");
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            if let Some((found, expected)) = rest.split_once(", expected ") {
                let found = if found == "unit value" { "empty" } else { found };
                return format!("{field_text} must be {}, not {found}", expected_in_words(expected));
            }
        }
    }
    format!("{field_text}: {message}")
}

fn expected_in_words(expected: &str) -> String {
    match expected {
        "usize" | "u64" | "u32" | "u16" | "u8" => "a whole number (0 or more)".into(),
        "isize" | "i64" | "i32" | "i16" | "i8" => "a whole number".into(),
        "f64" | "f32" => "a number".into(),
        "a boolean" => "true or false".into(),
        "a string" | "a borrowed string" => "text".into(),
        "a sequence" => "a list".into(),
        "a map" => "a mapping (`key: value`)".into(),
        other if other.starts_with("struct ") => "a mapping (`key: value`)".into(),
        other => other.to_string(),
    }
}

/// The allowed name closest to a misspelt one, if it is close enough to be the intent.
fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|candidate| (edit_distance(word, candidate), *candidate))
        .filter(|(distance, candidate)| *distance <= 2.max(candidate.len() / 4))
        .min()
        .map(|(_, candidate)| candidate)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// Every `${NAME}` a setting refers to.
pub fn env_references(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else { break };
        names.push(after[..end].to_string());
        rest = &after[end + 1..];
    }
    names
}

/// An empty mapping of each section, for files that define nothing.
impl Default for ConfigFile {
    fn default() -> Self {
        ConfigFile {
            sources: BTreeMap::new(),
            models: BTreeMap::new(),
            destinations: BTreeMap::new(),
            syncs: BTreeMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This crate knows no destination type: those are the worker's, and
    /// tested there.
    struct NoDestinations;

    impl DestinationTypes for NoDestinations {
        fn names(&self) -> Vec<&'static str> {
            Vec::new()
        }
        fn read(
            &self,
            _: &str,
            _: Value,
            _: &Path,
        ) -> Option<Result<serde_json::Map<String, serde_json::Value>, FieldError>> {
            None
        }
        fn profile(&self, _: &DestinationConfig) -> Result<super::super::DestinationProfile, String> {
            Err("no destination types".into())
        }
    }

    fn errors(text: &str) -> Vec<String> {
        match parse_file(Path::new("e.yaml"), text, Path::new("."), &NoDestinations) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn wrong_types_are_named_in_user_words_at_their_line() {
        let found = errors("syncs:\n  a:\n    model: m\n    destination: d\n    mode: upsert\n    shards: ten\n");
        assert_eq!(
            found,
            vec!["e.yaml:6: sync \"a\": `shards` must be a whole number (0 or more), not string \"ten\""]
        );
        let found = errors("syncs:\n  a:\n    model: m\n    destination: d\n    mode: upsert\n    skip_nulls: [1]\n");
        assert!(found[0].contains("`skip_nulls` must be true or false"), "{found:?}");
    }

    #[test]
    fn every_problem_of_a_file_is_reported() {
        let text = "sources:\n  s:\n    type: postgress\n    url: x\nmodels:\n  m:\n    source: s\n    querry: SELECT 1\n    primary_key: id\nsyncz: {}\n";
        let found = errors(text);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(
            found[0].starts_with("e.yaml:3: source \"s\": unknown source type `postgress` (did you mean `postgres`?)"),
            "{found:?}"
        );
        assert!(
            found[1].starts_with("e.yaml:8: model \"m\": unknown field `querry`; did you mean `query`?"),
            "{found:?}"
        );
        assert!(
            found[2].starts_with("e.yaml:10: unknown section `syncz` (did you mean `syncs`?)"),
            "{found:?}"
        );
    }

    #[test]
    fn missing_fields_and_unknown_values_name_the_field() {
        let found = errors("models:\n  m:\n    source: s\n    query: SELECT 1\n");
        assert_eq!(found, vec!["e.yaml:2: model \"m\": `primary_key` is required"]);
        let found = errors("syncs:\n  a:\n    model: m\n    destination: d\n    mode: upsrt\n");
        assert!(
            found[0].starts_with("e.yaml:5: sync \"a\": `mode` cannot be `upsrt`; it is one of insert"),
            "{found:?}"
        );
        let found = errors("syncs:\n  a:\n    model: m\n    destination: d\n    mode: upsert\n    mappings:\n      - { from: a, to: b }\n      - { form: c, to: d }\n");
        assert!(
            found[0].starts_with("e.yaml:8: sync \"a\": unknown field `form`; did you mean `from`?"),
            "{found:?}"
        );
    }

    #[test]
    fn duplicate_keys_name_both_lines() {
        let found =
            errors("models:\n  m:\n    source: s\n    query: SELECT 1\n    primary_key: id\n    query: SELECT 2\n");
        assert_eq!(
            found,
            vec!["e.yaml:6: `models.m.query` is written twice (lines 4 and 6); keep one"]
        );
    }

    #[test]
    fn references_to_the_environment_are_listed() {
        assert_eq!(
            env_references("postgres://u:${PASS}@h/${DB}"),
            vec!["PASS".to_string(), "DB".to_string()]
        );
    }
}
