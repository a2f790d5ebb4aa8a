use crate::destinations::Record;
use crate::diff::Action;
use std::collections::BTreeSet;

pub(super) struct Table {
    /// Quoted, possibly schema-qualified name.
    name: String,
    key: String,
    columns: BTreeSet<String>,
}

fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

impl Table {
    pub fn new(name: &str, key: &str, columns: BTreeSet<String>) -> Table {
        Table {
            name: name.split('.').map(quote).collect::<Vec<_>>().join("."),
            key: key.to_string(),
            columns,
        }
    }

    /// The statement for a batch whose records carry `fields`.
    pub fn statement(&self, action: Action, fields: &[String]) -> Result<String, String> {
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
                "records carry no {:?} field: map a model column to the key column",
                self.key
            ));
        }
        let key = quote(&self.key);
        Ok(match action {
            Action::Upsert => {
                let columns = fields.iter().map(|f| quote(f)).collect::<Vec<_>>().join(", ");
                let updates = fields
                    .iter()
                    .filter(|f| **f != self.key)
                    .map(|f| format!("{0} = EXCLUDED.{0}", quote(f)))
                    .collect::<Vec<_>>();
                let on_conflict = if updates.is_empty() {
                    "DO NOTHING".to_string()
                } else {
                    format!("DO UPDATE SET {}", updates.join(", "))
                };
                format!(
                    "INSERT INTO {table} ({columns}) SELECT {columns} FROM json_populate_recordset(NULL::{table}, $1::json) \
                     ON CONFLICT ({key}) {on_conflict}",
                    table = self.name
                )
            }
            Action::Delete => format!(
                "DELETE FROM {table} AS t USING json_populate_recordset(NULL::{table}, $1::json) AS d WHERE t.{key} = d.{key}",
                table = self.name
            ),
        })
    }
}

/// The field names of a record, in its order.
pub(super) fn fields_of(record: &str) -> Result<Vec<String>, String> {
    let parsed: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(record).map_err(|e| format!("record is not a JSON object: {e}"))?;
    Ok(parsed.keys().cloned().collect())
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

    #[test]
    fn statements_quote_and_check_fields() {
        let table = Table::new(
            "public.people",
            "id",
            ["id", "name", "Email"].iter().map(|s| s.to_string()).collect(),
        );
        let sql = table.statement(Action::Upsert, &["id".into(), "Email".into()]).unwrap();
        assert!(sql.contains("\"public\".\"people\""), "{sql}");
        assert!(sql.contains("\"Email\" = EXCLUDED.\"Email\""), "{sql}");
        let err = table
            .statement(Action::Upsert, &["id".into(), "phone".into()])
            .unwrap_err();
        assert!(err.contains("phone"), "{err}");
        let err = table.statement(Action::Delete, &["name".into()]).unwrap_err();
        assert!(err.contains("\"id\""), "{err}");
    }
}
