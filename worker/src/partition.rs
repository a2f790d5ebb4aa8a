//! Reading a model in parts, so that several workers extract it at once.
//!
//! A part is a range of the model's primary key. The worker that takes a run's
//! extract task plans the parts (`plan`): it asks the source for the key's
//! lowest and highest value and cuts an integer key into equal spans, or, for
//! other keys when asked for parts, reads every n-th key in the source's own
//! order. Each part's task then reads the model rewritten with its range
//! (`part_model`) through the source's ordinary reader, so every database
//! source reads parts without code of its own.
//!
//! The ranges are half-open and the first and last are unbounded, so the parts
//! hold every row exactly once whatever was inserted after planning; the rows
//! whose key is null go to the first part, so they are counted once. Each
//! part is its own query, read at its own moment: a row whose key moves from
//! one part to another while they run can be read twice (two rows share the
//! key: both are invalid this run) or not at all (it is seen next run).

use crate::error::TaskError;
use crate::sources::{self, model_query, Dialect, Row};
use ebb_shared::config::{ExtractTasks, ModelConfig, SourceConfig, SyncSpec};
use ebb_shared::protocol::{KeyBound, KeyRange, PartitionPlan};
use ebb_shared::value::Value;

/// With `extract_tasks: auto`, a table model gets one extract task per this
/// many integer keys between its lowest and highest.
pub const KEYS_PER_AUTO_TASK: u64 = 2_000_000;

/// Most tasks `extract_tasks: auto` plans.
pub const MAX_AUTO_TASKS: u32 = 16;

/// The parts `spec`'s model is read in, or `None` to read it in one task: a
/// source that cannot be split, one task asked for, an empty model, or (for
/// `auto`) a model too small or not a table with an integer key.
pub async fn plan(spec: &SyncSpec) -> Result<Option<PartitionPlan>, TaskError> {
    let model = &spec.model;
    let asked = match model.extract_tasks {
        ExtractTasks::Count(count) if count <= 1 => return Ok(None),
        ExtractTasks::Count(count) => Some(count.min(ExtractTasks::MAX)),
        ExtractTasks::Auto if model.table.is_none() || !splits_by_default(&spec.source) => return Ok(None),
        ExtractTasks::Auto => None,
    };
    if !splits(&spec.source) {
        if asked.is_some() {
            tracing::warn!(
                model = %spec.model_name,
                "this source is read by one task; extract_tasks is ignored"
            );
        }
        return Ok(None);
    }
    let dialect = Dialect::of(&spec.source);
    let key = dialect.quote(&model.primary_key);
    let bounds = format!(
        "SELECT MIN({key}) AS ebb_low, MAX({key}) AS ebb_high FROM ({}) AS ebb_keys",
        model_query(model, dialect)
    );
    let bounds = match query_rows(spec, &bounds).await {
        Ok(rows) => rows.into_iter().next().map(|row| (row[0].clone(), row[1].clone())),
        // Some key types have no MIN (PostgreSQL's uuid): ordered keys still split.
        Err(error) if asked.is_some() => {
            tracing::debug!(model = %spec.model_name, %error, "no MIN/MAX of the key; splitting by its order");
            None
        }
        Err(error) => {
            tracing::debug!(model = %spec.model_name, %error, "no MIN/MAX of the key; reading in one task");
            return Ok(None);
        }
    };
    let boundaries = match (bounds, asked) {
        (Some((Value::Null, Value::Null)), _) => return Ok(None),
        (Some((Value::Int(low), Value::Int(high))), asked) => {
            let tasks = asked.unwrap_or_else(|| auto_tasks(low, high));
            integer_boundaries(low, high, tasks)
        }
        (_, Some(tasks)) => ordered_boundaries(spec, dialect, tasks).await?,
        (_, None) => return Ok(None),
    };
    let plan = plan_from_boundaries(boundaries);
    if plan.parts.len() < 2 {
        return Ok(None);
    }
    tracing::info!(model = %spec.model_name, parts = plan.parts.len(), "reading the model in parts");
    Ok(Some(plan))
}

/// The spec an `ExtractPart` task reads: its model restricted to `range`.
pub fn part_spec(spec: &SyncSpec, range: &KeyRange) -> Result<SyncSpec, TaskError> {
    let mut part = spec.clone();
    part.model = part_model(&spec.model, range, Dialect::of(&spec.source)).map_err(|reason| TaskError::Query {
        model: spec.model_name.clone(),
        reason,
    })?;
    Ok(part)
}

/// The model restricted to the rows whose key lies in `range`: a table
/// model's filter gains the range, a SQL model is wrapped in a query that
/// selects it.
pub fn part_model(model: &ModelConfig, range: &KeyRange, dialect: Dialect) -> Result<ModelConfig, String> {
    let Some(condition) = range_condition(range, &dialect.quote(&model.primary_key))? else {
        return Ok(model.clone());
    };
    let mut part = model.clone();
    if model.table.is_some() {
        part.filter = Some(match model.filter.as_deref().map(str::trim).filter(|f| !f.is_empty()) {
            Some(filter) => format!("({filter}) AND ({condition})"),
            None => condition,
        });
    } else {
        part.query = Some(format!(
            "SELECT * FROM ({}) AS ebb_part WHERE {condition}",
            model_query(model, dialect)
        ));
    }
    Ok(part)
}

/// Whether `auto` splits a source's table models: the databases that serve a
/// key range from the key's index. Not the warehouses: each part is a query of
/// its own, which BigQuery bills by the bytes it scans and Snowflake,
/// Databricks and Redshift by the warehouse time it takes, so several parts
/// may cost several times one read. They split when the model asks.
fn splits_by_default(source: &SourceConfig) -> bool {
    matches!(source, SourceConfig::Postgres(_) | SourceConfig::Mysql(_))
}

/// Whether a source can be read in key ranges: every database source but
/// SQLite, whose one file only the worker beside it can read anyway.
fn splits(source: &SourceConfig) -> bool {
    !matches!(
        source,
        SourceConfig::Sqlite(_) | SourceConfig::Csv(_) | SourceConfig::Files(_)
    )
}

/// The SQL condition a key meets inside `range`; `None` when every row does.
fn range_condition(range: &KeyRange, key: &str) -> Result<Option<String>, String> {
    let mut bounds = Vec::new();
    if let Some(from) = &range.from {
        bounds.push(format!("{key} >= {}", literal(from)?));
    }
    if let Some(to) = &range.to {
        bounds.push(format!("{key} < {}", literal(to)?));
    }
    Ok(match (bounds.is_empty(), range.nulls) {
        (true, true) => None,
        (true, false) => Some(format!("{key} IS NOT NULL")),
        (false, false) => Some(bounds.join(" AND ")),
        (false, true) => Some(format!("({}) OR {key} IS NULL", bounds.join(" AND "))),
    })
}

/// A bound as a SQL literal. Text is written only when no dialect could read
/// it differently — no quote, no backslash (an escape in MySQL, BigQuery,
/// Snowflake and Databricks strings), no control character — so a task on the
/// queue cannot smuggle SQL in; planning never chooses another.
fn literal(bound: &KeyBound) -> Result<String, String> {
    match bound {
        KeyBound::Int(value) => Ok(value.to_string()),
        KeyBound::Text(text) if writable(text) => Ok(format!("'{text}'")),
        KeyBound::Text(text) => Err(format!(
            "a part's key bound {text:?} holds a quote, a backslash or a control character, which Ebb does not \
             write into SQL"
        )),
    }
}

fn writable(text: &str) -> bool {
    !text.chars().any(|c| c == '\'' || c == '\\' || c.is_control())
}

/// One task per `KEYS_PER_AUTO_TASK` keys of the span, at most `MAX_AUTO_TASKS`.
fn auto_tasks(low: i64, high: i64) -> u32 {
    let span = (high as i128 - low as i128 + 1).max(1) as u128;
    span.div_ceil(KEYS_PER_AUTO_TASK as u128).min(MAX_AUTO_TASKS as u128) as u32
}

/// The keys cutting `[low, high]` into `tasks` equal spans (fewer when the
/// span is shorter than that).
fn integer_boundaries(low: i64, high: i64, tasks: u32) -> Vec<KeyBound> {
    let span = high as i128 - low as i128 + 1;
    let tasks = (tasks.max(1) as i128).min(span.max(1));
    (1..tasks)
        .map(|i| KeyBound::Int((low as i128 + span * i / tasks) as i64))
        .collect()
}

/// Every n-th key in the source's own order, so that `tasks` parts hold about
/// as many rows each whatever the key's type. It reads every key once (an
/// index-only scan where the key is indexed), which is why integer keys are
/// cut by their bounds instead.
async fn ordered_boundaries(spec: &SyncSpec, dialect: Dialect, tasks: u32) -> Result<Vec<KeyBound>, TaskError> {
    let key = dialect.quote(&spec.model.primary_key);
    let sql = format!(
        "SELECT ebb_key FROM (SELECT {key} AS ebb_key, ROW_NUMBER() OVER (ORDER BY {key}) AS ebb_row, \
         COUNT(*) OVER () AS ebb_rows FROM ({model}) AS ebb_keys WHERE {key} IS NOT NULL) AS ebb_numbered \
         WHERE ebb_row > 1 AND MOD((ebb_row - 1) * {tasks}, ebb_rows) < {tasks} ORDER BY ebb_row",
        model = model_query(&spec.model, dialect)
    );
    let rows = query_rows(spec, &sql).await?;
    let mut boundaries = Vec::new();
    for row in rows {
        let bound = match row.into_iter().next() {
            Some(Value::Int(value)) => KeyBound::Int(value),
            Some(Value::Text(text)) if writable(&text) => KeyBound::Text(text),
            // A key Ebb will not write as a literal is no boundary: the parts
            // either side of it become one.
            Some(Value::Text(_)) => continue,
            Some(other) => {
                tracing::warn!(
                    model = %spec.model_name,
                    kind = ?std::mem::discriminant(&other),
                    "the primary key is neither an integer nor text; reading the model in one task"
                );
                return Ok(Vec::new());
            }
            None => continue,
        };
        // Equal neighbours (a key repeated in the model) would make an empty part.
        if boundaries.last() != Some(&bound) {
            boundaries.push(bound);
        }
    }
    Ok(boundaries)
}

/// The parts between consecutive boundaries, the first and last unbounded.
fn plan_from_boundaries(boundaries: Vec<KeyBound>) -> PartitionPlan {
    let mut parts = Vec::with_capacity(boundaries.len() + 1);
    let mut from = None;
    for boundary in boundaries {
        parts.push(KeyRange {
            from: from.take(),
            to: Some(boundary.clone()),
            nulls: parts.is_empty(),
        });
        from = Some(boundary);
    }
    parts.push(KeyRange {
        from,
        to: None,
        nulls: parts.is_empty(),
    });
    PartitionPlan { parts }
}

/// The few rows of a planning query (at most `MAX_PLANNING_ROWS`).
async fn query_rows(spec: &SyncSpec, sql: &str) -> Result<Vec<Row>, TaskError> {
    const MAX_PLANNING_ROWS: usize = ExtractTasks::MAX as usize + 1;
    let model = ModelConfig::query(&spec.model.source, sql, &spec.model.primary_key);
    let mut stream = sources::open(&spec.model.source, &spec.source, &spec.model_name, &model).await?;
    let mut rows = Vec::new();
    while let Some(batch) = stream.next_batch().await {
        rows.extend(batch?);
        if rows.len() > MAX_PLANNING_ROWS {
            break;
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(value: i64) -> Option<KeyBound> {
        Some(KeyBound::Int(value))
    }

    #[test]
    fn integer_keys_are_cut_into_equal_spans_with_open_ends() {
        let plan = plan_from_boundaries(integer_boundaries(1, 100, 4));
        assert_eq!(
            plan.parts,
            vec![
                KeyRange {
                    from: None,
                    to: int(26),
                    nulls: true
                },
                KeyRange {
                    from: int(26),
                    to: int(51),
                    nulls: false
                },
                KeyRange {
                    from: int(51),
                    to: int(76),
                    nulls: false
                },
                KeyRange {
                    from: int(76),
                    to: None,
                    nulls: false
                },
            ]
        );
        // A span shorter than the tasks asked for gets one part per key.
        assert_eq!(integer_boundaries(5, 6, 8), vec![KeyBound::Int(6)]);
        assert!(integer_boundaries(7, 7, 4).is_empty());
        // The whole i64 range does not overflow.
        assert_eq!(integer_boundaries(i64::MIN, i64::MAX, 2), vec![KeyBound::Int(0)]);
        // No boundary: one part with everything.
        assert_eq!(
            plan_from_boundaries(Vec::new()).parts,
            vec![KeyRange {
                from: None,
                to: None,
                nulls: true
            }]
        );
    }

    #[test]
    fn auto_plans_one_task_per_two_million_keys_up_to_sixteen() {
        assert_eq!(auto_tasks(1, 1_000), 1);
        assert_eq!(auto_tasks(1, 2_000_000), 1);
        assert_eq!(auto_tasks(1, 2_000_001), 2);
        assert_eq!(auto_tasks(1, 10_000_000), 5);
        assert_eq!(auto_tasks(i64::MIN, i64::MAX), MAX_AUTO_TASKS);
    }

    #[test]
    fn a_table_model_part_adds_its_range_to_the_filter() {
        let model = ModelConfig {
            query: None,
            table: Some("shop.people".into()),
            filter: Some("active".into()),
            ..ModelConfig::query("db", "", "id")
        };
        let first = KeyRange {
            from: None,
            to: int(10),
            nulls: true,
        };
        let part = part_model(&model, &first, Dialect::Ansi).unwrap();
        assert_eq!(
            model_query(&part, Dialect::Ansi),
            r#"SELECT * FROM "shop"."people" WHERE ((active) AND (("id" < 10) OR "id" IS NULL))"#
        );
        let middle = KeyRange {
            from: Some(KeyBound::Text("b@x".into())),
            to: Some(KeyBound::Text("m".into())),
            nulls: false,
        };
        let unfiltered = ModelConfig { filter: None, ..model };
        assert_eq!(
            model_query(
                &part_model(&unfiltered, &middle, Dialect::Backticks).unwrap(),
                Dialect::Backticks
            ),
            "SELECT * FROM `shop`.`people` WHERE (`id` >= 'b@x' AND `id` < 'm')"
        );
    }

    #[test]
    fn a_sql_model_part_selects_its_range_from_the_query() {
        let model = ModelConfig::query("db", "SELECT id, email FROM people;", "id");
        let last = KeyRange {
            from: int(10),
            to: None,
            nulls: false,
        };
        assert_eq!(
            model_query(&part_model(&model, &last, Dialect::Ansi).unwrap(), Dialect::Ansi),
            r#"SELECT * FROM (SELECT id, email FROM people) AS ebb_part WHERE "id" >= 10"#
        );
        let everything = KeyRange {
            from: None,
            to: None,
            nulls: true,
        };
        assert_eq!(part_model(&model, &everything, Dialect::Ansi).unwrap(), model);
    }

    #[test]
    fn a_bound_that_could_be_read_as_sql_is_refused() {
        let model = ModelConfig::query("db", "SELECT 1 AS id", "id");
        for forged in ["x' OR 1=1 --", "x\\", "a\nb"] {
            let range = KeyRange {
                from: Some(KeyBound::Text(forged.into())),
                to: None,
                nulls: false,
            };
            let error = part_model(&model, &range, Dialect::Ansi).unwrap_err();
            assert!(error.contains("does not write into SQL"), "{error}");
        }
    }
}
