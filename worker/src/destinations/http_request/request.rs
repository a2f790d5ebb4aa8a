//! How rows become requests: each operation's method, URL template and
//! body template, rendered with Liquid over the row (or the batch).

use super::{BodyFormat, Operation};
use crate::behaviour::Action;
use crate::destinations::Record;
use crate::mapping::Template;

/// Which operation a row goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Added,
    Changed,
    Removed,
}

impl Kind {
    pub fn of(action: Action, record: &Record<'_>) -> Kind {
        match action {
            Action::Delete | Action::Archive | Action::Remove | Action::ClearFields => Kind::Removed,
            Action::Update => Kind::Changed,
            _ if record.previous.is_some() => Kind::Changed,
            _ => Kind::Added,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Added => "added",
            Kind::Changed => "changed",
            Kind::Removed => "removed",
        }
    }
}

/// An operation with its templates compiled.
pub(super) struct Compiled {
    method: reqwest::Method,
    url: Template,
    /// `None`: the record (or `{"records": [...]}`) as JSON; an empty
    /// template: no body.
    body: Option<Template>,
    batched: bool,
}

/// A request ready to send.
#[derive(Debug)]
pub(super) struct Rendered {
    pub method: reqwest::Method,
    pub url: String,
    pub body: Option<String>,
}

fn object(json: &str) -> liquid::Object {
    serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|value| liquid::model::to_object(&value).ok())
        .unwrap_or_default()
}

fn value(json: Option<&str>) -> liquid::model::Value {
    match json {
        Some(json) => liquid::model::Value::Object(object(json)),
        None => liquid::model::Value::Nil,
    }
}

impl Compiled {
    /// The error names the field at fault (`method`, `url`, `body`).
    pub fn new(operation: &Operation, has_base_url: bool) -> Result<Compiled, (&'static str, String)> {
        let method = reqwest::Method::from_bytes(operation.method.to_uppercase().as_bytes())
            .ok()
            .filter(|m| ["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&m.as_str()))
            .ok_or((
                "method",
                format!("{:?} is not GET, POST, PUT, PATCH or DELETE", operation.method),
            ))?;
        let absolute = operation.url.starts_with("http://") || operation.url.starts_with("https://");
        if !absolute && !has_base_url {
            return Err((
                "url",
                "is a path: set the destination's `base_url`, or write a whole URL".into(),
            ));
        }
        let url = Template::parse(&operation.url).map_err(|e| ("url", e))?;
        let body = operation
            .body
            .as_deref()
            .map(Template::parse)
            .transpose()
            .map_err(|e| ("body", e))?;
        Ok(Compiled {
            method,
            url,
            body,
            batched: operation.batched,
        })
    }

    /// The requests for `records` (one, or one per record) with the
    /// positions each answers for; a render failure fails its rows alone.
    pub fn render(
        &self,
        action: Action,
        kind: Kind,
        records: &[Record<'_>],
        format: BodyFormat,
    ) -> Vec<(Vec<usize>, Result<Rendered, String>)> {
        let common = |globals: &mut liquid::Object| {
            globals.insert("operation".into(), liquid::model::Value::scalar(kind.as_str()));
            globals.insert("action".into(), liquid::model::Value::scalar(action.as_str()));
        };
        if self.batched {
            let mut globals = liquid::Object::new();
            let list = |f: &dyn Fn(&Record<'_>) -> liquid::model::Value| {
                liquid::model::Value::Array(records.iter().map(f).collect())
            };
            globals.insert("records".into(), list(&|r| value(Some(r.json))));
            globals.insert(
                "keys".into(),
                list(&|r| liquid::model::Value::scalar(r.key.to_string())),
            );
            globals.insert("previous".into(), list(&|r| value(r.previous)));
            common(&mut globals);
            let default = || {
                let records: Vec<serde_json::Value> = records
                    .iter()
                    .map(|r| serde_json::from_str(r.json).unwrap_or(serde_json::Value::Null))
                    .collect();
                serde_json::json!({ "records": records }).to_string()
            };
            return vec![((0..records.len()).collect(), self.rendered(&globals, format, default))];
        }
        records
            .iter()
            .enumerate()
            .map(|(position, record)| {
                let mut globals = liquid::Object::new();
                globals.insert("record".into(), value(Some(record.json)));
                globals.insert("key".into(), liquid::model::Value::scalar(record.key.to_string()));
                globals.insert("previous".into(), value(record.previous));
                common(&mut globals);
                (
                    vec![position],
                    self.rendered(&globals, format, || record.json.to_string()),
                )
            })
            .collect()
    }

    fn rendered(
        &self,
        globals: &liquid::Object,
        format: BodyFormat,
        default_body: impl FnOnce() -> String,
    ) -> Result<Rendered, String> {
        let url = self
            .url
            .render_globals(globals)
            .map_err(|e| format!("the URL template: {e}"))?
            .trim()
            .to_string();
        let body = match &self.body {
            None => Some(default_body()),
            Some(template) => {
                let text = template
                    .render_globals(globals)
                    .map_err(|e| format!("the body template: {e}"))?;
                (!text.trim().is_empty()).then_some(text)
            }
        };
        if let (Some(body), BodyFormat::Json) = (&body, format) {
            if let Err(error) = serde_json::from_str::<serde_json::Value>(body) {
                let excerpt: String = body.chars().take(120).collect();
                return Err(format!("the body template rendered invalid JSON ({error}): {excerpt}"));
            }
        }
        Ok(Rendered {
            method: self.method.clone(),
            url,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_renders_its_records_nulls_included() {
        let operation = Operation {
            method: "POST".into(),
            url: "/x".into(),
            body: Some("{\"records\": [{% for r in records %}{{ r | json }}{% endfor %}]}".into()),
            batched: true,
        };
        let compiled = Compiled::new(&operation, true).unwrap();
        let records = [Record::new("1", r#"{"email":"a@x.com","plan":null}"#)];
        let rendered = compiled.render(Action::ClearFields, Kind::Removed, &records, BodyFormat::Json);
        let body = rendered[0].1.as_ref().unwrap().body.clone().unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            parsed["records"][0],
            serde_json::json!({"email": "a@x.com", "plan": null}),
            "{body}"
        );
    }
}
