use crate::behaviour::Action;
use crate::destinations::Record;
use std::collections::BTreeSet;

pub(super) struct Table {
    /// Quoted, possibly schema-qualified name.
    name: String,
    /// The column that identifies a record: the record-matching field, or the
    /// destination's key column.
    key: String,
    columns: BTreeSet<String>,
}

fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// One statement for a whole batch, with the records as one JSON array
/// parameter that Postgres casts to the table's own column types.
pub(super) struct Statement {
    pub sql: String,
    /// The statement returns the 1-based positions of the records it found;
    /// the others had no record to update.
    pub reports_matches: bool,
}

impl Table {
    pub fn new(name: &str, key: &str, columns: BTreeSet<String>) -> Table {
        Table {
            name: name.split('.').map(quote).collect::<Vec<_>>().join("."),
            key: key.to_string(),
            columns,
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn columns(&self) -> &BTreeSet<String> {
        &self.columns
    }

    /// The statement for a batch whose records carry `fields`.
    pub fn statement(&self, action: Action, fields: &[String]) -> Result<Statement, String> {
        let unknown: Vec<&str> = fields
            .iter()
            .filter(|f| !self.columns.contains(*f))
            .map(String::as_str)
            .collect();
        if !unknown.is_empty() {
            return Err(format!(
                "table {} has no column for the mapped field(s) {} (its columns: {})",
                self.name,
                unknown.join(", "),
                self.columns.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        if !fields.contains(&self.key) {
            return Err(format!(
                "records carry no {:?} field: map a model column to it (or set record_matching)",
                self.key
            ));
        }
        let table = &self.name;
        let key = quote(&self.key);
        let records = format!("json_populate_recordset(NULL::{table}, $1::json)");
        let columns = fields.iter().map(|f| quote(f)).collect::<Vec<_>>().join(", ");
        let others: Vec<String> = fields.iter().filter(|f| **f != self.key).map(|f| quote(f)).collect();
        // An UPDATE needs something to set; the key itself is a harmless one.
        let set = |value: &dyn Fn(&str) -> String| {
            if others.is_empty() {
                format!("{key} = t.{key}")
            } else {
                others
                    .iter()
                    .map(|c| format!("{c} = {}", value(c)))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        let insert = |on_conflict: &str| {
            format!("INSERT INTO {table} ({columns}) SELECT {columns} FROM {records} ON CONFLICT ({key}) {on_conflict}")
        };
        let sql = match action {
            // Create only: an existing record is left as it is, which also makes
            // a resent batch harmless.
            Action::Insert | Action::Track => insert("DO NOTHING"),
            Action::Upsert | Action::Add if others.is_empty() => insert("DO NOTHING"),
            Action::Upsert | Action::Add => insert(&format!("DO UPDATE SET {}", set(&|c| format!("EXCLUDED.{c}")))),
            Action::Update => {
                return Ok(Statement {
                    sql: format!(
                        "UPDATE {table} AS t SET {} FROM {records} WITH ORDINALITY AS d WHERE t.{key} = d.{key} \
                         RETURNING d.ordinality",
                        set(&|c| format!("d.{c}"))
                    ),
                    reports_matches: true,
                })
            }
            Action::ClearFields => format!(
                "UPDATE {table} AS t SET {} FROM {records} AS d WHERE t.{key} = d.{key}",
                set(&|_| "NULL".to_string())
            ),
            Action::Delete | Action::Remove => {
                format!("DELETE FROM {table} AS t USING {records} AS d WHERE t.{key} = d.{key}")
            }
            Action::Archive => return Err(format!("table {table} cannot archive records")),
        };
        Ok(Statement {
            sql,
            reports_matches: false,
        })
    }
}

/// The field names of a record, in its order.
pub(super) fn fields_of(record: &str) -> Result<Vec<String>, String> {
    let parsed: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(record).map_err(|e| format!("record is not a JSON object: {e}"))?;
    Ok(parsed.keys().cloned().collect())
}

/// The value of `field` in a record, as text, for messages.
pub(super) fn field_text(record: &str, field: &str) -> String {
    serde_json::from_str::<serde_json::Value>(record)
        .ok()
        .and_then(|parsed| parsed.get(field).cloned())
        .map(|value| value.as_str().map(str::to_string).unwrap_or_else(|| value.to_string()))
        .unwrap_or_default()
}

pub(super) fn json_array(records: &[Record<'_>]) -> String {
    let mut out = String::with_capacity(records.iter().map(|r| r.json.len() + 1).sum::<usize>() + 2);
    out.push('[');
    for (i, record) in records.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(record.json);
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table {
        Table::new(
            "public.people",
            "id",
            ["id", "name", "Email"].iter().map(|s| s.to_string()).collect(),
        )
    }

    #[test]
    fn statements_quote_and_check_fields() {
        let table = table();
        let sql = table
            .statement(Action::Upsert, &["id".into(), "Email".into()])
            .unwrap()
            .sql;
        assert!(sql.contains("\"public\".\"people\""), "{sql}");
        assert!(sql.contains("\"Email\" = EXCLUDED.\"Email\""), "{sql}");
        let err = table
            .statement(Action::Upsert, &["id".into(), "phone".into()])
            .err()
            .unwrap();
        assert!(err.contains("phone"), "{err}");
        let err = table.statement(Action::Delete, &["name".into()]).err().unwrap();
        assert!(err.contains("\"id\""), "{err}");
    }

    #[test]
    fn each_action_has_its_statement() {
        let table = table();
        let fields = ["id".to_string(), "name".to_string()];
        let sql = |action| table.statement(action, &fields).unwrap();
        assert!(sql(Action::Insert).sql.ends_with("DO NOTHING"));
        assert!(sql(Action::Update).reports_matches);
        assert!(sql(Action::Update).sql.starts_with("UPDATE"));
        assert!(sql(Action::ClearFields).sql.contains("\"name\" = NULL"));
        assert!(sql(Action::Remove).sql.starts_with("DELETE"));
        assert!(table.statement(Action::Archive, &fields).is_err());
    }
}
