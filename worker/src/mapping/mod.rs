//! Turning a model row into the record a destination receives.
//!
//! Each mapping takes its value from a column, a static value, a variable of
//! the run or a Liquid template, optionally casts it, and writes it at a field
//! path (`address.city`, `tags[]`). Without mappings every column is sent under
//! its own name. The record-matching field, when the sync names one, is part of
//! the record.
//!
//! The fingerprint covers exactly what is sent, with types and nulls, in a
//! canonical order (invariant 7) — except variables: a run id changes every run
//! and says nothing about the row, so it is sent but not compared. A mapping
//! that fails on a row (a template error, a cast that cannot apply) makes that
//! row a rejected one, with the reason; it does not fail the run.

mod cast;
mod template;

use crate::error::TaskError;
use crate::sources::Row;
use ebb_shared::config::{field_path, Cast, FieldMapping, PathStep, SyncSpec, Variable};
use ebb_shared::hashing::{encode_field, fingerprint, fingerprint_of_encoding, Fingerprint};
use ebb_shared::value::{Column, Value};
use serde_json::{Map, Value as Json};
use std::borrow::Cow;

pub use template::Template;

/// What variables resolve to in one run.
#[derive(Debug, Clone)]
pub struct RunContext {
    pub sync_id: String,
    pub run_id: String,
    /// RFC 3339, UTC.
    pub run_started_at: String,
}

enum Source {
    Column(usize),
    Static(Value),
    Variable(Value),
    Template(Box<Template>),
}

struct Field {
    to: String,
    /// `"to":` as JSON text, for writing records directly.
    json_key: Vec<u8>,
    path: Vec<PathStep>,
    source: Source,
    cast: Option<Cast>,
    /// The record-matching field: it must have a value.
    matching: bool,
}

pub struct RecordPlan {
    key_index: usize,
    fields: Vec<Field>,
    skip_nulls: bool,
    /// Columns, kept for templates, which see the whole row.
    columns: Option<Vec<Column>>,
    /// When every field is a distinct top-level name (the usual case), the
    /// fields' indices sorted by name: records are then written straight from
    /// the row in the order serde_json's map would give, with no map built.
    flat_order: Option<Vec<usize>>,
    /// No templates and no casts: every value can be borrowed.
    plain: bool,
}

fn static_value(json: &Json) -> Value {
    match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => n
            .as_i64()
            .map(Value::Int)
            .unwrap_or_else(|| Value::Float(n.as_f64().unwrap_or(0.0))),
        Json::String(s) => Value::Text(s.clone()),
        other => Value::Json(other.clone()),
    }
}

/// Checks the templates of a config's syncs, so a broken one is named when the
/// config is loaded rather than when a run starts.
pub fn check_templates(config: &ebb_shared::config::Config) -> Result<(), String> {
    for (name, sync) in &config.syncs {
        for mapping in &sync.mappings {
            if let Some(text) = &mapping.template {
                Template::parse(text).map_err(|reason| {
                    format!(
                        "sync {name:?}, mapping to {:?}: the template does not parse: {reason}",
                        mapping.to
                    )
                })?;
            }
        }
    }
    Ok(())
}

/// Every column a sync needs that the model's result lacks (the primary key,
/// each mapped column, the record-matching column), each as the error a run
/// would fail with. Empty when the columns fit.
pub fn missing_columns(spec: &SyncSpec, columns: &[Column]) -> Vec<TaskError> {
    let available = || columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ");
    let has = |name: &str| columns.iter().any(|c| c.name == name);
    let mut missing = Vec::new();
    if !has(&spec.model.primary_key) {
        missing.push(TaskError::MissingKeyColumn {
            model: spec.model_name.clone(),
            column: spec.model.primary_key.clone(),
            available: available(),
        });
    }
    let needed = spec
        .mappings
        .iter()
        .filter_map(|m| m.from.as_deref())
        .chain(spec.record_matching.as_ref().map(|m| m.from.as_str()));
    let mut reported = std::collections::BTreeSet::new();
    for name in needed {
        if !has(name) && reported.insert(name) {
            missing.push(TaskError::MissingMappedColumn {
                sync: spec.name.clone(),
                model: spec.model_name.clone(),
                column: name.to_string(),
                available: available(),
            });
        }
    }
    missing
}

impl RecordPlan {
    pub fn new(spec: &SyncSpec, columns: &[Column], run: &RunContext) -> Result<RecordPlan, TaskError> {
        if let Some(first) = missing_columns(spec, columns).into_iter().next() {
            return Err(first);
        }
        let available = || columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ");
        let index_of = |name: &str| columns.iter().position(|c| c.name == name);
        let key_index = index_of(&spec.model.primary_key).ok_or_else(|| TaskError::MissingKeyColumn {
            model: spec.model_name.clone(),
            column: spec.model.primary_key.clone(),
            available: available(),
        })?;
        let column = |name: &str| {
            index_of(name).ok_or_else(|| TaskError::MissingMappedColumn {
                sync: spec.name.clone(),
                model: spec.model_name.clone(),
                column: name.to_string(),
                available: available(),
            })
        };
        let mapping_error = |mapping: &FieldMapping, reason: String| TaskError::Mapping {
            sync: spec.name.clone(),
            field: mapping.to.clone(),
            reason,
        };
        let mappings: Vec<FieldMapping> = if spec.mappings.is_empty() {
            columns.iter().map(|c| FieldMapping::column(&c.name, &c.name)).collect()
        } else {
            spec.mappings.clone()
        };
        let mut fields = Vec::with_capacity(mappings.len() + 1);
        for mapping in &mappings {
            let source = match (&mapping.from, &mapping.value, &mapping.variable, &mapping.template) {
                (Some(name), ..) => Source::Column(column(name)?),
                (_, Some(value), ..) => Source::Static(static_value(value)),
                (_, _, Some(variable), _) => Source::Variable(Value::Text(match variable {
                    Variable::SyncId => run.sync_id.clone(),
                    Variable::RunId => run.run_id.clone(),
                    Variable::RunStartedAt => run.run_started_at.clone(),
                })),
                (_, _, _, Some(text)) => {
                    Source::Template(Box::new(Template::parse(text).map_err(|e| mapping_error(mapping, e))?))
                }
                _ => return Err(mapping_error(mapping, "the mapping names no value".into())),
            };
            let path = field_path(&mapping.to).map_err(|e| mapping_error(mapping, e))?;
            fields.push(Field {
                to: mapping.to.clone(),
                json_key: json_key(&mapping.to),
                path,
                source,
                cast: mapping.cast,
                matching: false,
            });
        }
        if let Some(matching) = &spec.record_matching {
            let index = column(&matching.from)?;
            match fields.iter_mut().find(|f| f.to == matching.to) {
                Some(field) => field.matching = true,
                None => fields.push(Field {
                    to: matching.to.clone(),
                    json_key: json_key(&matching.to),
                    path: vec![PathStep::Field(matching.to.clone())],
                    source: Source::Column(index),
                    cast: None,
                    matching: true,
                }),
            }
        }
        let uses_templates = fields.iter().any(|f| matches!(f.source, Source::Template(_)));
        let mut flat_order: Vec<usize> = (0..fields.len()).collect();
        flat_order.sort_by(|&a, &b| fields[a].to.cmp(&fields[b].to));
        let flat = fields.iter().all(|f| matches!(f.path.as_slice(), [PathStep::Field(_)]))
            && flat_order.windows(2).all(|w| fields[w[0]].to != fields[w[1]].to);
        let plain = fields
            .iter()
            .all(|f| f.cast.is_none() && !matches!(f.source, Source::Template(_)));
        Ok(RecordPlan {
            key_index,
            fields,
            skip_nulls: spec.skip_nulls,
            columns: uses_templates.then(|| columns.to_vec()),
            flat_order: flat.then_some(flat_order),
            plain,
        })
    }

    /// The row's primary key as a string; `None` when it is null.
    pub fn key(&self, row: &Row) -> Option<String> {
        row[self.key_index].as_key()
    }

    /// Writes the row's primary key into `key`; `false` when it is null.
    pub fn write_key(&self, row: &Row, key: &mut String) -> bool {
        row[self.key_index].write_key(key)
    }

    /// The record's fingerprint and its JSON text, or why this row cannot be
    /// mapped.
    pub fn record(&self, row: &Row) -> Result<(Fingerprint, String), String> {
        let mut json = Vec::new();
        let fingerprint = self.write_record(row, &mut json, &mut Vec::new())?;
        Ok((fingerprint, String::from_utf8(json).expect("records are JSON text")))
    }

    /// Appends the record's JSON text to `out` and returns its fingerprint, or
    /// why this row cannot be mapped (then `out` may hold part of a record).
    /// `scratch` is a buffer the caller reuses across rows.
    pub fn write_record(&self, row: &Row, out: &mut Vec<u8>, scratch: &mut Vec<u8>) -> Result<Fingerprint, String> {
        let Some(order) = &self.flat_order else {
            let (fingerprint, json) = self.record_via_map(row)?;
            out.extend_from_slice(json.as_bytes());
            return Ok(fingerprint);
        };
        if self.plain {
            // Nothing to compute: every value is borrowed from the row or the plan.
            if let Some(field) = self
                .fields
                .iter()
                .find(|f| f.matching && self.borrowed(f, row).is_null())
            {
                return Err(format!("the record-matching field {:?} is null", field.to));
            }
            return Ok(self.write_flat(order, |index| self.borrowed(&self.fields[index], row), out, scratch));
        }
        // Values are taken in mapping order, so the first failing mapping is
        // the one named, whatever the field names.
        let template_record = self.template_record(row);
        let values = self
            .fields
            .iter()
            .map(|field| self.value(field, row, template_record.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.write_flat(order, |index| &*values[index], out, scratch))
    }

    /// Writes a flat record's fields in name order, returning the fingerprint.
    fn write_flat<'v>(
        &self,
        order: &[usize],
        value_of: impl Fn(usize) -> &'v Value,
        out: &mut Vec<u8>,
        scratch: &mut Vec<u8>,
    ) -> Fingerprint {
        scratch.clear();
        out.push(b'{');
        let mut first = true;
        for &index in order {
            let (field, value) = (&self.fields[index], value_of(index));
            if self.skip_nulls && value.is_null() {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(&field.json_key);
            write_json(value, out);
            if !matches!(field.source, Source::Variable(_)) {
                encode_field(scratch, &field.to, value);
            }
        }
        out.push(b'}');
        fingerprint_of_encoding(scratch)
    }

    /// A value that needs no computing: a column's or a constant.
    fn borrowed<'a>(&'a self, field: &'a Field, row: &'a Row) -> &'a Value {
        match &field.source {
            Source::Column(index) => &row[*index],
            Source::Static(value) | Source::Variable(value) => value,
            Source::Template(_) => unreachable!("plain plans have no templates"),
        }
    }

    fn template_record(&self, row: &Row) -> Option<liquid::Object> {
        self.columns
            .as_ref()
            .map(|columns| template::record_object(columns, row))
    }

    /// One field's value for a row: borrowed unless a template or a cast makes
    /// a new one.
    fn value<'a>(
        &'a self,
        field: &'a Field,
        row: &'a Row,
        template_record: Option<&liquid::Object>,
    ) -> Result<Cow<'a, Value>, String> {
        let value = match &field.source {
            Source::Column(index) => Cow::Borrowed(&row[*index]),
            Source::Static(value) | Source::Variable(value) => Cow::Borrowed(value),
            Source::Template(template) => {
                let record = template_record.expect("kept when templates exist");
                let text = template
                    .render(record)
                    .map_err(|e| format!("field {:?}: the template failed: {e}", field.to))?;
                Cow::Owned(Value::Text(text))
            }
        };
        let value = match field.cast {
            Some(to) => {
                Cow::Owned(cast::cast(value.into_owned(), to).map_err(|e| format!("field {:?}: {e}", field.to))?)
            }
            None => value,
        };
        if field.matching && value.is_null() {
            return Err(format!("the record-matching field {:?} is null", field.to));
        }
        Ok(value)
    }

    /// The general way: builds the record as a JSON map, for nested paths,
    /// appended arrays and repeated names.
    fn record_via_map(&self, row: &Row) -> Result<(Fingerprint, String), String> {
        let template_record = self.template_record(row);
        let mut compared: Vec<(String, Value)> = Vec::with_capacity(self.fields.len());
        let mut object = Map::with_capacity(self.fields.len());
        for field in &self.fields {
            let value = self.value(field, row, template_record.as_ref())?.into_owned();
            if self.skip_nulls && value.is_null() {
                continue;
            }
            insert_at(&mut object, &field.path, value.to_json()).map_err(|e| format!("field {:?}: {e}", field.to))?;
            if !matches!(field.source, Source::Variable(_)) {
                compared.push((field.to.clone(), value));
            }
        }
        Ok((fingerprint(&compared), Json::Object(object).to_string()))
    }
}

fn json_key(name: &str) -> Vec<u8> {
    let mut key = serde_json::to_vec(name).expect("strings serialize");
    key.push(b':');
    key
}

/// Writes a value as `Value::to_json` then serde_json would, byte for byte:
/// records are persisted in snapshots, so both ways must agree.
fn write_json(value: &Value, out: &mut Vec<u8>) {
    let written = match value {
        Value::Null => {
            out.extend_from_slice(b"null");
            Ok(())
        }
        Value::Bool(b) => {
            out.extend_from_slice(if *b { b"true" } else { b"false" });
            Ok(())
        }
        Value::Int(i) => serde_json::to_writer(&mut *out, i),
        // Non-finite floats become null, as `Value::to_json` makes them.
        Value::Float(f) => serde_json::to_writer(&mut *out, f),
        Value::Decimal(s) | Value::Text(s) | Value::Timestamp(s) => serde_json::to_writer(&mut *out, s),
        Value::Json(j) => serde_json::to_writer(&mut *out, j),
        Value::Bytes(bytes) => {
            out.push(b'"');
            for byte in bytes {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push(HEX[(byte >> 4) as usize]);
                out.push(HEX[(byte & 15) as usize]);
            }
            out.push(b'"');
            Ok(())
        }
    };
    written.expect("writing JSON into memory cannot fail");
}

/// Writes `value` at `path`, creating the objects and arrays on the way.
fn insert_at(object: &mut Map<String, Json>, path: &[PathStep], value: Json) -> Result<(), String> {
    let (last, parents) = path.split_last().expect("paths have a step");
    let mut current = object;
    for step in parents {
        let PathStep::Field(name) = step else {
            unreachable!("only the last step appends")
        };
        let slot = current.entry(name.clone()).or_insert_with(|| Json::Object(Map::new()));
        current = slot
            .as_object_mut()
            .ok_or_else(|| format!("{name:?} already holds a value, not an object"))?;
    }
    match last {
        PathStep::Field(name) => {
            current.insert(name.clone(), value);
        }
        PathStep::Append(name) => {
            let slot = current.entry(name.clone()).or_insert_with(|| Json::Array(Vec::new()));
            slot.as_array_mut()
                .ok_or_else(|| format!("{name:?} already holds a value, not an array"))?
                .push(value);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ebb_shared::config::{
        CsvSourceConfig, DeleteBehavior, DestinationConfig, ModelConfig, RecordMatching, SourceConfig, SyncMode,
        SyncType,
    };

    fn spec(mappings: Vec<FieldMapping>) -> SyncSpec {
        SyncSpec {
            name: "s".into(),
            model_name: "m".into(),
            model: ModelConfig {
                source: "src".into(),
                query: None,
                file: Some("f.csv".into()),
                ..ModelConfig::query("src", "", "id")
            },
            source: SourceConfig::Csv(CsvSourceConfig { path: ".".into() }),
            destination_name: "d".into(),
            destination: DestinationConfig {
                kind: "jsonl".into(),
                settings: serde_json::json!({"path": "out.jsonl", "batch_size": 10})
                    .as_object()
                    .cloned()
                    .unwrap(),
            },
            sync_type: SyncType::Object,
            mode: SyncMode::Upsert,
            delete_behavior: DeleteBehavior::DoNothing,
            mappings,
            skip_nulls: false,
            record_matching: None,
            shards: None,
            max_rows_per_shard: None,
            live_debugger: true,
        }
    }

    fn run(id: &str) -> RunContext {
        RunContext {
            sync_id: "s".into(),
            run_id: id.into(),
            run_started_at: "2026-11-24T17:00:00Z".into(),
        }
    }

    fn columns(names: &[&str]) -> Vec<Column> {
        names
            .iter()
            .map(|n| Column {
                name: n.to_string(),
                source_type: "text".into(),
            })
            .collect()
    }

    fn mapping(to: &str, edit: impl FnOnce(&mut FieldMapping)) -> FieldMapping {
        let mut mapping = FieldMapping {
            to: to.into(),
            from: None,
            value: None,
            variable: None,
            template: None,
            cast: None,
        };
        edit(&mut mapping);
        mapping
    }

    #[test]
    fn only_mapped_fields_are_fingerprinted() {
        let plan = RecordPlan::new(
            &spec(vec![FieldMapping::column("email", "Email")]),
            &columns(&["id", "email", "noise"]),
            &run("r1"),
        )
        .unwrap();
        let row = vec![Value::Int(1), Value::Text("a@x".into()), Value::Text("n1".into())];
        let other_noise = vec![Value::Int(1), Value::Text("a@x".into()), Value::Text("n2".into())];
        assert_eq!(plan.record(&row), plan.record(&other_noise));
        assert_eq!(plan.record(&row).unwrap().1, r#"{"Email":"a@x"}"#);
        assert_eq!(plan.key(&row).as_deref(), Some("1"));
    }

    #[test]
    fn missing_columns_are_named() {
        let err = RecordPlan::new(&spec(vec![]), &columns(&["ident"]), &run("r"))
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("\"id\"") && err.to_string().contains("ident"),
            "{err}"
        );
        let mapped = spec(vec![FieldMapping::column("mail", "Email")]);
        let err = RecordPlan::new(&mapped, &columns(&["id", "email"]), &run("r"))
            .err()
            .unwrap();
        assert!(err.to_string().contains("\"mail\""), "{err}");
    }

    #[test]
    fn static_values_variables_templates_nesting_and_casts() {
        let mappings = vec![
            FieldMapping::column("id", "id"),
            mapping("source", |m| m.value = Some(serde_json::json!("warehouse"))),
            mapping("priority", |m| m.value = Some(serde_json::json!(3))),
            mapping("meta.run", |m| m.variable = Some(Variable::RunId)),
            mapping("meta.sync", |m| m.variable = Some(Variable::SyncId)),
            mapping("hashed", |m| {
                m.template = Some("{{ record['email'] | downcase | strip | sha256 }}".into())
            }),
            mapping("address.city", |m| m.from = Some("city".into())),
            mapping("tags[]", |m| m.from = Some("plan".into())),
            mapping("tags[]", |m| m.value = Some(serde_json::json!("customer"))),
            mapping("score", |m| {
                m.from = Some("score".into());
                m.cast = Some(Cast::Float);
            }),
        ];
        let cols = columns(&["id", "email", "city", "plan", "score"]);
        let row = vec![
            Value::Int(1),
            Value::Text(" A@X.io".into()),
            Value::Text("Oslo".into()),
            Value::Text("pro".into()),
            Value::Text("4.5".into()),
        ];
        let first = RecordPlan::new(&spec(mappings.clone()), &cols, &run("run-1")).unwrap();
        let (fp1, json) = first.record(&row).unwrap();
        let record: Json = serde_json::from_str(&json).unwrap();
        assert_eq!(
            record,
            serde_json::json!({
                "id": 1, "source": "warehouse", "priority": 3,
                "meta": {"run": "run-1", "sync": "s"},
                // sha256("a@x.io")
                "hashed": "aa8a6b1226018606fb52fd4fb5e6f407d7a610c996250306acf156a247c08e26",
                "address": {"city": "Oslo"},
                "tags": ["pro", "customer"],
                "score": 4.5
            })
        );
        // A new run id is sent, but does not make the row a change.
        let second = RecordPlan::new(&spec(mappings.clone()), &cols, &run("run-2")).unwrap();
        let (fp2, json2) = second.record(&row).unwrap();
        assert_eq!(fp1, fp2);
        assert_ne!(json, json2);
        // Reordering the mappings changes neither (the fingerprint sorts fields).
        let mut reordered = mappings.clone();
        reordered.swap(1, 2);
        let third = RecordPlan::new(&spec(reordered), &cols, &run("run-1")).unwrap();
        assert_eq!(third.record(&row).unwrap().0, fp1);
    }

    #[test]
    fn a_mapping_that_fails_rejects_the_row_with_the_reason() {
        let mappings = vec![mapping("score", |m| {
            m.from = Some("score".into());
            m.cast = Some(Cast::Integer);
        })];
        let plan = RecordPlan::new(&spec(mappings), &columns(&["id", "score"]), &run("r")).unwrap();
        let err = plan
            .record(&vec![Value::Int(1), Value::Text("high".into())])
            .unwrap_err();
        assert_eq!(err, "field \"score\": cannot cast \"high\" to integer");
        assert!(plan.record(&vec![Value::Int(1), Value::Text("7".into())]).is_ok());
    }

    #[test]
    fn skip_nulls_and_record_matching() {
        let mut with_matching = spec(vec![FieldMapping::column("name", "name")]);
        with_matching.skip_nulls = true;
        with_matching.record_matching = Some(RecordMatching {
            from: "email".into(),
            to: "Email".into(),
        });
        let plan = RecordPlan::new(&with_matching, &columns(&["id", "email", "name"]), &run("r")).unwrap();
        let (fp_null, json) = plan
            .record(&vec![Value::Int(1), Value::Text("a@x".into()), Value::Null])
            .unwrap();
        assert_eq!(json, r#"{"Email":"a@x"}"#);
        let (fp_named, _) = plan
            .record(&vec![Value::Int(1), Value::Text("a@x".into()), Value::Text("A".into())])
            .unwrap();
        assert_ne!(fp_null, fp_named, "a null becoming a value is a change");
        let err = plan
            .record(&vec![Value::Int(1), Value::Null, Value::Text("A".into())])
            .unwrap_err();
        assert!(err.contains("record-matching") && err.contains("Email"), "{err}");
    }

    /// Records and fingerprints are persisted in snapshots, so the direct
    /// writer must produce exactly what the general map-building path does.
    #[test]
    fn flat_records_match_the_general_path_byte_for_byte() {
        let mappings = vec![
            FieldMapping::column("id", "zeta"),
            FieldMapping::column("text", "Alpha"),
            FieldMapping::column("float", "\"quoted\"\tkey"),
            FieldMapping::column("json", "ä-umlaut"),
            FieldMapping::column("bytes", "bytes"),
            FieldMapping::column("ts", "when"),
            FieldMapping::column("decimal", "amount"),
            FieldMapping::column("flag", "flag"),
            mapping("run", |m| m.variable = Some(Variable::RunId)),
            mapping("static", |m| {
                m.value = Some(serde_json::json!({"b": [1, 2.5], "a": null}))
            }),
            mapping("casted", |m| {
                m.from = Some("text".into());
                m.cast = Some(Cast::String);
            }),
            mapping("tpl", |m| m.template = Some("{{ record['text'] | upcase }}".into())),
        ];
        let cols = columns(&["id", "text", "float", "json", "bytes", "ts", "decimal", "flag"]);
        let rows = [
            vec![
                Value::Int(-7),
                Value::Text("line\nbreak \"q\" \\ \u{1} é 😀".into()),
                Value::Float(1.0),
                Value::Json(serde_json::json!({"z": 1, "a": [true, null, "x"]})),
                Value::Bytes(vec![0, 15, 255]),
                Value::Timestamp("2026-11-24 17:00:00+00".into()),
                Value::Decimal("12.50".into()),
                Value::Bool(true),
            ],
            vec![
                Value::Int(i64::MAX),
                Value::Text(String::new()),
                Value::Float(f64::NAN),
                Value::Null,
                Value::Bytes(vec![]),
                Value::Null,
                Value::Null,
                Value::Bool(false),
            ],
            vec![
                Value::Int(0),
                Value::Null,
                Value::Float(-1.5e300),
                Value::Json(serde_json::json!("plain")),
                Value::Null,
                Value::Timestamp(String::new()),
                Value::Decimal("-0.001".into()),
                Value::Null,
            ],
        ];
        for skip_nulls in [false, true] {
            let mut spec = spec(mappings.clone());
            spec.skip_nulls = skip_nulls;
            let plan = RecordPlan::new(&spec, &cols, &run("r")).unwrap();
            assert!(
                plan.flat_order.is_some(),
                "distinct top-level names take the direct path"
            );
            for row in &rows {
                assert_eq!(plan.record(row), plan.record_via_map(row), "row {row:?}");
            }
        }
    }
}
