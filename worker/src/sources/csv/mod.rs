//! CSV files: the header row names the columns; every value is text, and an empty
//! field is NULL (CSV cannot tell the two apart).

use super::{Row, RowStream, BATCH_ROWS};
use crate::error::TaskError;
use ebb_shared::config::{CsvSourceConfig, ModelConfig};
use ebb_shared::value::{Column, Value};

/// Reads the file's header: its columns, no row read.
pub(super) async fn describe(
    source_name: &str,
    config: &CsvSourceConfig,
    model: &ModelConfig,
) -> Result<Vec<Column>, TaskError> {
    reader(source_name, config, model).map(|(_, _, columns)| columns)
}

fn reader(
    source_name: &str,
    config: &CsvSourceConfig,
    model: &ModelConfig,
) -> Result<(csv::Reader<std::fs::File>, std::path::PathBuf, Vec<Column>), TaskError> {
    let path = config.path.join(model.file.as_deref().unwrap_or_default());
    let unreachable = |reason: String| TaskError::SourceUnreachable {
        source_name: source_name.to_string(),
        reason: format!("{}: {reason}", path.display()),
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(&path)
        .map_err(|e| unreachable(e.to_string()))?;
    let columns: Vec<Column> = reader
        .headers()
        .map_err(|e| unreachable(e.to_string()))?
        .iter()
        .map(|name| Column {
            name: name.to_string(),
            source_type: "text".to_string(),
        })
        .collect();
    Ok((reader, path, columns))
}

pub(super) async fn open(
    source_name: &str,
    config: &CsvSourceConfig,
    _model_name: &str,
    model: &ModelConfig,
) -> Result<RowStream, TaskError> {
    let (mut reader, path, columns) = reader(source_name, config, model)?;
    let (sender, stream) = RowStream::channel(columns);
    let source_name = source_name.to_string();
    tokio::task::spawn_blocking(move || {
        let mut batch: Vec<Row> = Vec::with_capacity(BATCH_ROWS);
        for record in reader.records() {
            let record = match record {
                Ok(record) => record,
                Err(e) => {
                    let _ = sender.blocking_send(Err(TaskError::SourceRead {
                        source_name: source_name.clone(),
                        reason: format!("{}: {e}", path.display()),
                    }));
                    return;
                }
            };
            batch.push(row_of(&record));
            if batch.len() >= BATCH_ROWS {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_ROWS));
                if sender.blocking_send(Ok(full.into())).is_err() {
                    return;
                }
            }
        }
        if !batch.is_empty() {
            let _ = sender.blocking_send(Ok(batch.into()));
        }
    });
    Ok(stream)
}

/// A CSV record as a row: every field text, an empty one null (CSV cannot
/// tell the two apart).
pub(super) fn row_of(record: &csv::StringRecord) -> Row {
    record
        .iter()
        .map(|field| {
            if field.is_empty() {
                Value::Null
            } else {
                Value::Text(field.to_string())
            }
        })
        .collect()
}
