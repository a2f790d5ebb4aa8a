//! Liquid templates over a row: `{{ record['email'] | downcase | strip | sha256 }}`.
//!
//! The standard Liquid filters are there (`downcase`, `upcase`, `strip`,
//! `replace`, `default`, `split`, `join`, …), plus two that reverse ETL needs:
//! `sha256` (hex digest, as ad platforms want hashed identifiers) and `json`
//! (the value as JSON text).

use ebb_shared::value::{Column, Value};
use liquid_core::{Display_filter, Filter, FilterReflection, ParseFilter, Runtime, ValueView};
use sha2::{Digest, Sha256 as Sha256Hasher};

#[derive(Clone, ParseFilter, FilterReflection)]
#[filter(
    name = "sha256",
    description = "The lowercase hex SHA-256 digest of the input's text.",
    parsed(Sha256Filter)
)]
struct Sha256;

#[derive(Debug, Default, Display_filter)]
#[name = "sha256"]
struct Sha256Filter;

impl Filter for Sha256Filter {
    fn evaluate(&self, input: &dyn ValueView, _runtime: &dyn Runtime) -> liquid_core::Result<liquid_core::Value> {
        let digest = Sha256Hasher::digest(input.to_kstr().as_bytes());
        let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
        Ok(liquid_core::Value::scalar(hex))
    }
}

#[derive(Clone, ParseFilter, FilterReflection)]
#[filter(name = "json", description = "The input as JSON text.", parsed(JsonFilter))]
struct Json;

#[derive(Debug, Default, Display_filter)]
#[name = "json"]
struct JsonFilter;

impl Filter for JsonFilter {
    fn evaluate(&self, input: &dyn ValueView, _runtime: &dyn Runtime) -> liquid_core::Result<liquid_core::Value> {
        let value = input.to_value();
        let text = serde_json::to_string(&value)
            .map_err(|e| liquid_core::Error::with_msg(format!("cannot write the value as JSON: {e}")))?;
        Ok(liquid_core::Value::scalar(text))
    }
}

/// A compiled template.
pub struct Template {
    template: liquid::Template,
}

impl Template {
    /// Compiles `text`; the error says what Liquid did not understand.
    pub fn parse(text: &str) -> Result<Template, String> {
        let parser = liquid::ParserBuilder::with_stdlib()
            .filter(Sha256)
            .filter(Json)
            .build()
            .map_err(|e| e.to_string())?;
        let template = parser.parse(text).map_err(|e| one_line(&e.to_string()))?;
        Ok(Template { template })
    }

    /// Renders the template with the row as `record`.
    pub fn render(&self, record: &liquid::Object) -> Result<String, String> {
        self.render_globals(&liquid::object!({ "record": record }))
    }

    /// Renders the template with the given variables.
    pub fn render_globals(&self, globals: &liquid::Object) -> Result<String, String> {
        self.template.render(globals).map_err(|e| one_line(&e.to_string()))
    }
}

/// The row as Liquid sees it: an object of its columns.
pub fn record_object(columns: &[Column], row: &[Value]) -> liquid::Object {
    let mut object = liquid::Object::new();
    for (column, value) in columns.iter().zip(row) {
        object.insert(column.name.clone().into(), to_liquid(value));
    }
    object
}

fn to_liquid(value: &Value) -> liquid::model::Value {
    use liquid::model::Value as L;
    match value {
        Value::Null => L::Nil,
        Value::Bool(b) => L::scalar(*b),
        Value::Int(i) => L::scalar(*i),
        Value::Float(f) => L::scalar(*f),
        Value::Json(json) => liquid::model::to_value(json).unwrap_or(L::Nil),
        other => L::scalar(other.as_key().unwrap_or_default()),
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(text: &str, columns: &[(&str, Value)]) -> Result<String, String> {
        let (names, values): (Vec<Column>, Vec<Value>) = columns
            .iter()
            .map(|(name, value)| {
                (
                    Column {
                        name: name.to_string(),
                        source_type: "text".into(),
                    },
                    value.clone(),
                )
            })
            .unzip();
        Template::parse(text)?.render(&record_object(&names, &values))
    }

    #[test]
    fn hashes_normalised_identifiers() {
        let out = render(
            "{{ record['email'] | downcase | strip | sha256 }}",
            &[("email", Value::Text("  Alice@Example.COM ".into()))],
        )
        .unwrap();
        // sha256("alice@example.com")
        assert_eq!(out, "ff8d9819fc0e12bf0d24892e45987e249a28dce836a85cad60e28eaaa8c6d976");
    }

    #[test]
    fn json_filter_and_plain_text() {
        let out = render(
            "{{ record['tags'] | json }}/{{ record['n'] }}",
            &[("tags", Value::Json(serde_json::json!(["a", 1]))), ("n", Value::Int(7))],
        )
        .unwrap();
        assert_eq!(out, r#"["a",1]/7"#);
    }

    #[test]
    fn bad_templates_are_named() {
        let err = Template::parse("{{ record['email' | sha256 }}").err().unwrap();
        assert!(!err.is_empty());
        let err = render("{{ record['email'] | no_such_filter }}", &[("email", Value::Null)]).unwrap_err();
        assert!(err.contains("no_such_filter"), "{err}");
    }
}
