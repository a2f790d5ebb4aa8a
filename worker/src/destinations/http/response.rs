use crate::destinations::{DeliveryError, RowResults};
use ebb_shared::redact::redact_secrets;
use std::time::{Duration, SystemTime};

/// `Retry-After` is either seconds or an HTTP date.
pub(in crate::destinations) fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds >= 0.0 && seconds.is_finite()).then(|| Duration::from_secs_f64(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(SystemTime::now()).unwrap_or_default())
}

pub(super) fn classify(
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
    records: usize,
    secrets: &[&str],
) -> Result<RowResults, DeliveryError> {
    let excerpt = || {
        let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
        redact_secrets(&text, secrets)
    };
    match status {
        200..=299 => Ok(row_results(body, records)),
        429 => Err(DeliveryError::RateLimited { retry_after }),
        408 | 500..=599 => Err(DeliveryError::Transient(format!("HTTP {status}: {}", excerpt()))),
        400 | 413 | 422 => Err(DeliveryError::Rejected(format!("HTTP {status}: {}", excerpt()))),
        _ => Err(DeliveryError::Permanent(format!("HTTP {status}: {}", excerpt()))),
    }
}

/// Per-record rejections from a `2xx` body: `{"errors": [{"index": n, "message": "…"}]}`.
fn row_results(body: &[u8], records: usize) -> RowResults {
    let mut results: RowResults = vec![Ok(()); records];
    let Ok(parsed) = serde_json::from_slice::<serde_json::Value>(body) else {
        return results;
    };
    let Some(errors) = parsed.get("errors").and_then(|e| e.as_array()) else {
        return results;
    };
    for error in errors {
        let Some(index) = error.get("index").and_then(|i| i.as_u64()).map(|i| i as usize) else {
            continue;
        };
        if index < records {
            let message = error
                .get("message")
                .map(|m| m.as_str().map(str::to_string).unwrap_or_else(|| m.to_string()))
                .unwrap_or_else(|| "rejected by the destination".to_string());
            results[index] = Err(message);
        }
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        assert_eq!(classify(200, None, b"", 2, &[]).unwrap(), vec![Ok(()), Ok(())]);
        assert!(matches!(
            classify(429, Some(Duration::from_secs(2)), b"", 1, &[]),
            Err(DeliveryError::RateLimited { retry_after: Some(d) }) if d == Duration::from_secs(2)
        ));
        assert!(matches!(classify(503, None, b"busy", 1, &[]), Err(DeliveryError::Transient(m)) if m.contains("busy")));
        assert!(
            matches!(classify(400, None, b"bad tok3n!", 1, &["tok3n!"]), Err(DeliveryError::Rejected(m)) if !m.contains("tok3n!"))
        );
        assert!(matches!(
            classify(401, None, b"who?", 1, &[]),
            Err(DeliveryError::Permanent(_))
        ));
    }

    #[test]
    fn partial_failures_name_rows() {
        let body = br#"{"errors":[{"index":1,"message":"invalid email"},{"index":9}]}"#;
        assert_eq!(
            classify(207, None, body, 3, &[]).unwrap(),
            vec![Ok(()), Err("invalid email".to_string()), Ok(())]
        );
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
        assert!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT").is_some());
        assert_eq!(parse_retry_after("soon"), None);
    }
}
