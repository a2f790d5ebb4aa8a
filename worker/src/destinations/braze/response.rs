//! How Braze's answers become per-row results and retriable or permanent
//! errors (Braze API docs: "API errors and responses", rate limits).

use crate::destinations::http::response::parse_retry_after;
use crate::destinations::DeliveryError;
use ebb_shared::redact::redact_secrets;
use serde_json::Value;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The positions an answer's `errors` name in `array` (`attributes`,
/// `events`), with Braze's reason. Errors naming no position are ignored
/// here: the answer's status decides about them.
pub(super) fn indexed_errors(body: &[u8], array: &str) -> Vec<(usize, String)> {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    value["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["input_array"] == array)
        .filter_map(|e| {
            let index = e["index"].as_u64()? as usize;
            let reason = e["type"].as_str().unwrap_or("refused").to_string();
            Some((index, format!("Braze refused it: {reason}")))
        })
        .collect()
}

/// How long a `429` asks to wait: `Retry-After` when sent; else, when the
/// window is spent (`X-RateLimit-Remaining: 0`), until `X-RateLimit-Reset`
/// (a Unix time in seconds). A 429 with requests left in the window is a
/// momentary refusal: the delivery engine's short backoff suits it better
/// than waiting out the window.
pub(super) fn rate_limit_wait(
    retry_after: Option<&str>,
    remaining: Option<&str>,
    reset: Option<&str>,
) -> Option<Duration> {
    if let Some(wait) = retry_after.and_then(parse_retry_after) {
        return Some(wait);
    }
    if remaining
        .and_then(|r| r.trim().parse::<u64>().ok())
        .is_some_and(|left| left > 0)
    {
        return None;
    }
    let reset: u64 = reset?.trim().parse().ok()?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(reset.saturating_sub(now).max(1)))
}

/// A fatal answer (not 2xx) as a delivery error.
pub(super) fn failure(status: u16, wait: Option<Duration>, body: &[u8], secrets: &[&str]) -> DeliveryError {
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned());
    let said = redact_secrets(&format!("Braze answered {status}: {message}"), secrets);
    match status {
        429 => DeliveryError::RateLimited { retry_after: wait },
        401 => DeliveryError::Permanent(format!("{said} (check the REST API key)")),
        403 => DeliveryError::Permanent(format!(
            "{said} (the API key lacks a permission this sync needs: users.track, users.delete)"
        )),
        404 => DeliveryError::Permanent(format!("{said} (check `rest_endpoint`)")),
        408 | 500..=599 => DeliveryError::Transient(said),
        // Invalid content somewhere in the request: halves find the rows.
        400 | 413 | 422 => DeliveryError::Rejected(said),
        _ => DeliveryError::Permanent(said),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minor_errors_name_positions_and_limits_say_how_long() {
        let body = br#"{"message":"success","errors":[{"type":"'email' is not valid","input_array":"attributes","index":1},{"type":"x","input_array":"events","index":0}]}"#;
        assert_eq!(
            indexed_errors(body, "attributes"),
            vec![(1, "Braze refused it: 'email' is not valid".to_string())]
        );
        assert_eq!(rate_limit_wait(Some("7"), None, None), Some(Duration::from_secs(7)));
        let soon = (SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 3).to_string();
        assert_eq!(
            rate_limit_wait(None, Some("12"), Some(&soon)),
            None,
            "requests are left"
        );
        let wait = rate_limit_wait(None, Some("0"), Some(&soon)).unwrap();
        assert!(
            wait <= Duration::from_secs(3) && wait >= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(
            matches!(failure(401, None, br#"{"message":"Invalid API Key"}"#, &[]), DeliveryError::Permanent(m) if m.contains("Invalid API Key"))
        );
        assert!(matches!(failure(503, None, b"", &[]), DeliveryError::Transient(_)));
    }
}
