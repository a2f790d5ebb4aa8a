//! How HubSpot's answers become per-record results and retriable or permanent
//! errors (developers.hubspot.com/docs/api-reference/error-handling and the
//! usage guidelines).

use crate::destinations::http::response::parse_retry_after;
use crate::destinations::DeliveryError;
use ebb_shared::redact::redact_secrets;
use serde_json::Value;
use std::time::Duration;

/// What HubSpot's error body says, every field optional as the docs ask.
#[derive(Debug, Default)]
pub(super) struct ErrorBody {
    pub category: Option<String>,
    pub message: Option<String>,
    pub policy: Option<String>,
}

impl ErrorBody {
    pub fn parse(body: &[u8]) -> ErrorBody {
        let Ok(value) = serde_json::from_slice::<Value>(body) else {
            return ErrorBody::default();
        };
        let text = |field: &str| value.get(field).and_then(Value::as_str).map(str::to_string);
        ErrorBody {
            category: text("category").or_else(|| text("errorType")),
            message: text("message"),
            policy: text("policyName"),
        }
    }
}

/// A failed answer (anything but 2xx) as a delivery error.
pub(super) fn failure(status: u16, retry_after: Option<&str>, body: &[u8], secrets: &[&str]) -> DeliveryError {
    let parsed = ErrorBody::parse(body);
    let said = || {
        let text = match (&parsed.category, &parsed.message) {
            (Some(category), Some(message)) => format!("{category}: {message}"),
            (None, Some(message)) => message.clone(),
            _ => String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
        };
        redact_secrets(&format!("HubSpot answered {status}: {text}"), secrets)
    };
    let retry_after = retry_after.and_then(parse_retry_after);
    match status {
        429 => match parsed.policy.as_deref() {
            // The day's requests are spent: waiting minutes would not help,
            // and the rows go again on the next run.
            Some("DAILY") => DeliveryError::Permanent(format!(
                "{} (HubSpot's daily request limit is reached; the rows are sent again on the next run after it resets)",
                said()
            )),
            // HubSpot documents no Retry-After on these 429s (one that comes
            // is obeyed). The window rolls, so waiting out all ten seconds
            // is rarely needed: the delivery engine's backoff (doubling from
            // a quarter second) pauses the fleet just long enough.
            _ => DeliveryError::RateLimited { retry_after },
        },
        // A migration in progress says how long it takes.
        477 => DeliveryError::RateLimited {
            retry_after: retry_after.or(Some(Duration::from_secs(10))),
        },
        // A record locked for two seconds, timeouts and the 5xx family.
        408 | 423 | 500..=599 => DeliveryError::Transient(said()),
        // Bad input somewhere in the batch (invalid property value, a
        // duplicate, an input over the limit): halves find the records at fault.
        400 | 409 | 413 | 422 => DeliveryError::Rejected(said()),
        401 => DeliveryError::Permanent(format!("{} (check the private app's access token)", said())),
        403 => DeliveryError::Permanent(format!("{} (the private app lacks a scope this sync needs)", said())),
        _ => DeliveryError::Permanent(said()),
    }
}

/// The inputs a multi-status answer refused, by position, with HubSpot's
/// reason. `ids` are the inputs' identifying values, for errors that name
/// records by id rather than by trace id; an error that names neither fails
/// every input `confirmed` does not list.
pub(super) fn refused(body: &[u8], ids: &[Option<String>], confirmed: &[bool]) -> Vec<Option<String>> {
    let mut out: Vec<Option<String>> = vec![None; ids.len()];
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return out;
    };
    let Some(errors) = value.get("errors").and_then(Value::as_array) else {
        return out;
    };
    for error in errors {
        let category = error.get("category").and_then(Value::as_str).unwrap_or("ERROR");
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("refused by HubSpot");
        let reason = format!("{category}: {message}");
        let context = error.get("context");
        let named = |field: &str| -> Vec<String> {
            context
                .and_then(|c| c.get(field))
                .and_then(Value::as_array)
                .map(|items| items.iter().filter_map(|i| i.as_str().map(str::to_string)).collect())
                .unwrap_or_default()
        };
        let mut linked = false;
        for trace in named("objectWriteTraceId") {
            if let Some(slot) = trace.parse::<usize>().ok().and_then(|i| out.get_mut(i)) {
                *slot = Some(reason.clone());
                linked = true;
            }
        }
        for id in named("ids").into_iter().chain(named("id")) {
            for (slot, input) in out.iter_mut().zip(ids) {
                if input.as_deref().is_some_and(|value| value.eq_ignore_ascii_case(&id)) {
                    *slot = Some(reason.clone());
                    linked = true;
                }
            }
        }
        if !linked {
            for (slot, confirmed) in out.iter_mut().zip(confirmed) {
                if !confirmed && slot.is_none() {
                    *slot = Some(reason.clone());
                }
            }
        }
    }
    out
}

/// Which inputs the answer's `results` confirm: by trace id, or else by the
/// identifying property's value (HubSpot lowercases emails, so case is not
/// compared).
pub(super) fn confirmed(body: &[u8], ids: &[Option<String>], id_property: Option<&str>) -> Vec<bool> {
    let mut out = vec![false; ids.len()];
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return out;
    };
    for result in value.get("results").and_then(Value::as_array).into_iter().flatten() {
        if let Some(slot) = result
            .get("objectWriteTraceId")
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<usize>().ok())
            .and_then(|i| out.get_mut(i))
        {
            *slot = true;
            continue;
        }
        let value = match id_property {
            Some(super::request::RECORD_ID) | None => result.get("id"),
            Some(property) => result.get("properties").and_then(|p| p.get(property)),
        };
        if let Some(value) = value.and_then(Value::as_str) {
            for (slot, input) in out.iter_mut().zip(ids) {
                if input.as_deref().is_some_and(|id| id.eq_ignore_ascii_case(value)) {
                    *slot = true;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_policies() {
        let ten = br#"{"status":"error","message":"You have reached your ten_secondly_rolling limit.","errorType":"RATE_LIMIT","policyName":"TEN_SECONDLY_ROLLING"}"#;
        assert_eq!(
            failure(429, None, ten, &[]),
            DeliveryError::RateLimited { retry_after: None }
        );
        assert_eq!(
            failure(429, Some("2"), ten, &[]),
            DeliveryError::RateLimited {
                retry_after: Some(Duration::from_secs(2))
            }
        );
        let daily = br#"{"status":"error","message":"You have reached your daily limit.","errorType":"RATE_LIMIT","policyName":"DAILY"}"#;
        assert!(matches!(failure(429, None, daily, &[]), DeliveryError::Permanent(m) if m.contains("daily")));
        assert!(matches!(failure(502, None, b"", &[]), DeliveryError::Transient(_)));
        assert!(
            matches!(failure(409, None, br#"{"category":"CONFLICT","message":"Contact already exists"}"#, &[]),
            DeliveryError::Rejected(m) if m.contains("CONFLICT"))
        );
        let unauthorized = br#"{"category":"INVALID_AUTHENTICATION","message":"bad pat-na1-SECRET"}"#;
        assert!(matches!(failure(401, None, unauthorized, &["pat-na1-SECRET"]),
            DeliveryError::Permanent(m) if !m.contains("SECRET") && m.contains("access token")));
    }

    #[test]
    fn multi_status_errors_name_their_inputs() {
        let ids = vec![
            Some("a@x".to_string()),
            Some("b@x".to_string()),
            Some("c@x".to_string()),
        ];
        let body = br#"{"status":"COMPLETE","results":[{"id":"1","properties":{"email":"a@x"}}],
            "numErrors":2,"errors":[
              {"status":"error","category":"VALIDATION_ERROR","message":"bad phone","context":{"objectWriteTraceId":["1"]}},
              {"status":"error","category":"OBJECT_NOT_FOUND","message":"not found","context":{"ids":["C@X"]}}]}"#;
        let confirmed = confirmed(body, &ids, Some("email"));
        assert_eq!(confirmed, vec![true, false, false]);
        let refused = refused(body, &ids, &confirmed);
        assert_eq!(refused[0], None);
        assert_eq!(refused[1].as_deref(), Some("VALIDATION_ERROR: bad phone"));
        assert_eq!(refused[2].as_deref(), Some("OBJECT_NOT_FOUND: not found"));
        let unlinked =
            br#"{"results":[{"id":"1","properties":{"email":"a@x"}}],"errors":[{"category":"X","message":"m"}]}"#;
        let confirmed = super::confirmed(unlinked, &ids, Some("email"));
        assert_eq!(super::refused(unlinked, &ids, &confirmed)[0], None);
        assert!(super::refused(unlinked, &ids, &confirmed)[2].is_some());
    }
}
