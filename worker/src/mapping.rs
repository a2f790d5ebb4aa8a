//! Turning a model row into the record a destination receives.
//!
//! The record holds exactly the mapped fields (every column, under its own name,
//! when the sync has no mappings), and its fingerprint covers exactly those
//! fields: change detection looks only at what is sent (invariant 7).

use crate::error::TaskError;
use crate::sources::Row;
use ebb_shared::config::SyncSpec;
use ebb_shared::hashing::{fingerprint, Fingerprint};
use ebb_shared::value::{Column, Value};

pub struct RecordPlan {
    key_index: usize,
    /// Destination field name and the index of the column it comes from.
    fields: Vec<(String, usize)>,
}

impl RecordPlan {
    pub fn new(spec: &SyncSpec, columns: &[Column]) -> Result<RecordPlan, TaskError> {
        let available = || columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ");
        let index_of = |name: &str| columns.iter().position(|c| c.name == name);
        let key_index = index_of(&spec.model.primary_key).ok_or_else(|| TaskError::MissingKeyColumn {
            model: spec.model_name.clone(),
            column: spec.model.primary_key.clone(),
            available: available(),
        })?;
        let fields = if spec.mappings.is_empty() {
            columns.iter().enumerate().map(|(i, c)| (c.name.clone(), i)).collect()
        } else {
            spec.mappings
                .iter()
                .map(|mapping| {
                    index_of(&mapping.from).map(|i| (mapping.to.clone(), i)).ok_or_else(|| {
                        TaskError::MissingMappedColumn {
                            sync: spec.name.clone(),
                            model: spec.model_name.clone(),
                            column: mapping.from.clone(),
                            available: available(),
                        }
                    })
                })
                .collect::<Result<_, _>>()?
        };
        Ok(RecordPlan { key_index, fields })
    }

    /// The row's primary key as a string; `None` when it is null.
    pub fn key(&self, row: &Row) -> Option<String> {
        row[self.key_index].as_key()
    }

    /// The record's fingerprint and its JSON text.
    pub fn record(&self, row: &Row) -> (Fingerprint, String) {
        let fields: Vec<(String, Value)> = self
            .fields
            .iter()
            .map(|(name, index)| (name.clone(), row[*index].clone()))
            .collect();
        let mut object = serde_json::Map::with_capacity(fields.len());
        for (name, value) in &fields {
            object.insert(name.clone(), value.to_json());
        }
        (fingerprint(&fields), serde_json::Value::Object(object).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ebb_shared::config::{
        CsvSourceConfig, DestinationConfig, FieldMapping, JsonlDestinationConfig, ModelConfig, SourceConfig, SyncMode,
    };

    fn spec(mappings: Vec<FieldMapping>) -> SyncSpec {
        SyncSpec {
            name: "s".into(),
            model_name: "m".into(),
            model: ModelConfig {
                source: "src".into(),
                query: None,
                file: Some("f.csv".into()),
                primary_key: "id".into(),
            },
            source: SourceConfig::Csv(CsvSourceConfig { path: ".".into() }),
            destination_name: "d".into(),
            destination: DestinationConfig::Jsonl(JsonlDestinationConfig {
                path: "out.jsonl".into(),
                batch_size: 10,
            }),
            mode: SyncMode::Upsert,
            mappings,
            shards: None,
            max_rows_per_shard: None,
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

    #[test]
    fn only_mapped_fields_are_fingerprinted() {
        let mapped = spec(vec![FieldMapping {
            from: "email".into(),
            to: "Email".into(),
        }]);
        let plan = RecordPlan::new(&mapped, &columns(&["id", "email", "noise"])).unwrap();
        let row = vec![Value::Int(1), Value::Text("a@x".into()), Value::Text("n1".into())];
        let other_noise = vec![Value::Int(1), Value::Text("a@x".into()), Value::Text("n2".into())];
        assert_eq!(plan.record(&row), plan.record(&other_noise));
        assert_eq!(plan.record(&row).1, r#"{"Email":"a@x"}"#);
        assert_eq!(plan.key(&row).as_deref(), Some("1"));
    }

    #[test]
    fn missing_columns_are_named() {
        let err = RecordPlan::new(&spec(vec![]), &columns(&["ident"])).err().unwrap();
        assert!(
            err.to_string().contains("\"id\"") && err.to_string().contains("ident"),
            "{err}"
        );
        let mapped = spec(vec![FieldMapping {
            from: "mail".into(),
            to: "Email".into(),
        }]);
        let err = RecordPlan::new(&mapped, &columns(&["id", "email"])).err().unwrap();
        assert!(err.to_string().contains("\"mail\""), "{err}");
    }
}
