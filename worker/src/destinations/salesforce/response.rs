//! How Salesforce's answers become per-record results and retriable or
//! permanent errors (REST API Developer Guide: "Status Codes and Error
//! Responses", sObject Collections, "API Request Limits and Allocations").

use crate::destinations::http::response::parse_retry_after;
use crate::destinations::DeliveryError;
use ebb_shared::redact::redact_secrets;
use serde::Deserialize;
use serde_json::Value;

/// One error of an error answer (`[{"message", "errorCode", "fields"}]`) or
/// of a record's result (`{"statusCode", "message", "fields"}`).
#[derive(Debug, Default, Deserialize)]
pub(super) struct ApiError {
    #[serde(default, alias = "statusCode")]
    #[serde(rename = "errorCode")]
    pub code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub fields: Vec<String>,
}

impl ApiError {
    pub fn text(&self) -> String {
        let mut text = format!(
            "{}: {}",
            self.code.as_deref().unwrap_or("ERROR"),
            self.message.as_deref().unwrap_or("no message")
        );
        if !self.fields.is_empty() {
            text.push_str(&format!(" (fields: {})", self.fields.join(", ")));
        }
        text
    }
}

/// The first error of an error answer, when the body is Salesforce's.
fn first_error(body: &[u8]) -> Option<ApiError> {
    match serde_json::from_slice::<Value>(body).ok()? {
        Value::Array(errors) => errors.into_iter().next().and_then(|e| serde_json::from_value(e).ok()),
        object @ Value::Object(_) => serde_json::from_value(object).ok(),
        _ => None,
    }
}

/// Error codes of a request whose every record would fail the same way: the
/// sync's settings or mapping must change, so splitting the batch would only
/// repeat the refusal.
const SETUP_ERRORS: &[&str] = &[
    "INVALID_FIELD",
    "INVALID_TYPE",
    "NOT_FOUND",
    "INVALID_FIELD_FOR_INSERT_UPDATE",
    "MALFORMED_QUERY",
    "INVALID_OPERATION",
    "INSUFFICIENT_ACCESS",
    "API_DISABLED_FOR_ORG",
    "API_CURRENTLY_DISABLED",
];

/// A failed answer (anything but 2xx; a `401` after the one renewal) as a
/// delivery error.
pub(super) fn failure(status: u16, retry_after: Option<&str>, body: &[u8], secrets: &[&str]) -> DeliveryError {
    let error = first_error(body);
    let code = error.as_ref().and_then(|e| e.code.clone()).unwrap_or_default();
    let said = || {
        let text = match &error {
            Some(error) => error.text(),
            None => String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
        };
        redact_secrets(&format!("Salesforce answered {status}: {text}"), secrets)
    };
    let message = error.as_ref().and_then(|e| e.message.clone()).unwrap_or_default();
    match (status, code.as_str()) {
        // The org's 24-hour allowance is spent: waiting minutes would not
        // help; the rows go again on the next run.
        (403, "REQUEST_LIMIT_EXCEEDED") if message.contains("TotalRequests") => DeliveryError::Permanent(format!(
            "{} (the org's daily API request limit is reached; the rows are sent again on the next run)",
            said()
        )),
        // Too many long-running requests at once (ConcurrentPerOrgLongTxn
        // and the like): back off and send again.
        (403, "REQUEST_LIMIT_EXCEEDED") => DeliveryError::RateLimited {
            retry_after: retry_after.and_then(parse_retry_after),
        },
        (429, _) => DeliveryError::RateLimited {
            retry_after: retry_after.and_then(parse_retry_after),
        },
        (401, _) => DeliveryError::Permanent(format!(
            "{} (the session was refused; with `oauth2` Ebb renews it once, with `access_token` it cannot)",
            said()
        )),
        (404, _) => DeliveryError::Permanent(format!(
            "{} (check the destination's `object` and `api_version`)",
            said()
        )),
        (_, code) if SETUP_ERRORS.contains(&code) => DeliveryError::Permanent(said()),
        (408 | 500..=599, _) => DeliveryError::Transient(said()),
        // Bad content somewhere in the batch: halves find the records at fault.
        (400 | 413 | 414 | 422, _) => DeliveryError::Rejected(said()),
        _ => DeliveryError::Permanent(said()),
    }
}

/// One record's result in a collection's answer.
#[derive(Debug, Deserialize)]
pub(super) struct RecordResult {
    #[serde(default)]
    pub success: bool,
    #[serde(default)]
    pub errors: Vec<ApiError>,
}

impl RecordResult {
    pub fn codes(&self) -> impl Iterator<Item = &str> {
        self.errors.iter().filter_map(|e| e.code.as_deref())
    }

    pub fn reason(&self) -> String {
        if self.errors.is_empty() {
            return "Salesforce did not apply the record and gave no reason".into();
        }
        self.errors.iter().map(ApiError::text).collect::<Vec<_>>().join("; ")
    }
}

/// The per-record results of a collection's `200 OK`, in request order as
/// documented; an answer of another length is a transport fault, not
/// something to guess positions from.
pub(super) fn results(body: &[u8], expected: usize) -> Result<Vec<RecordResult>, DeliveryError> {
    let results: Vec<RecordResult> = serde_json::from_slice(body)
        .map_err(|e| DeliveryError::Transient(format!("Salesforce's answer is not a list of record results: {e}")))?;
    if results.len() != expected {
        return Err(DeliveryError::Transient(format!(
            "Salesforce answered {} record results for {expected} records",
            results.len()
        )));
    }
    Ok(results)
}

/// `Sforce-Limit-Info: api-usage=18/5000`: requests used in the last 24 hours
/// and the org's allowance.
pub(super) fn api_usage(header: &str) -> Option<(u64, u64)> {
    let usage = header
        .split(';')
        .map(str::trim)
        .find_map(|part| part.strip_prefix("api-usage="))?;
    let (used, limit) = usage.split_once('/')?;
    Some((used.trim().parse().ok()?, limit.trim().parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_sessions_are_told_apart() {
        let daily = br#"[{"message":"TotalRequests Limit exceeded.","errorCode":"REQUEST_LIMIT_EXCEEDED"}]"#;
        assert!(matches!(failure(403, None, daily, &[]), DeliveryError::Permanent(m) if m.contains("daily")));
        let concurrent =
            br#"[{"message":"ConcurrentPerOrgLongTxn Limit exceeded.","errorCode":"REQUEST_LIMIT_EXCEEDED"}]"#;
        assert_eq!(
            failure(403, None, concurrent, &[]),
            DeliveryError::RateLimited { retry_after: None }
        );
        let session = br#"[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]"#;
        assert!(
            matches!(failure(401, None, session, &[]), DeliveryError::Permanent(m) if m.contains("INVALID_SESSION_ID"))
        );
        let field = br#"[{"message":"No such column 'Plan' on sobject of type Contact","errorCode":"INVALID_FIELD"}]"#;
        assert!(matches!(failure(400, None, field, &[]), DeliveryError::Permanent(m) if m.contains("Plan")));
        let json = br#"[{"message":"Unexpected character","errorCode":"JSON_PARSER_ERROR"}]"#;
        assert!(matches!(failure(400, None, json, &[]), DeliveryError::Rejected(_)));
        assert!(matches!(
            failure(503, None, b"<html>down</html>", &[]),
            DeliveryError::Transient(_)
        ));
    }

    #[test]
    fn api_usage_is_read_from_the_limit_header() {
        assert_eq!(api_usage("api-usage=18/5000"), Some((18, 5000)));
        assert_eq!(
            api_usage("per-app-api-usage=1/10(appName=x); api-usage=7/100"),
            Some((7, 100))
        );
        assert_eq!(api_usage("nonsense"), None);
    }
}
