//! How Graph API answers become retriable or permanent errors (Graph API
//! "Handling Errors", Marketing API rate limiting): the error's `code`
//! decides, not the HTTP status, which is 400 for most of them.

use crate::destinations::http::response::parse_retry_after;
use crate::destinations::DeliveryError;
use ebb_shared::redact::redact_secrets;
use serde_json::Value;
use std::time::Duration;

/// Said of an upload-session error (2650): the request goes again in a new
/// session.
pub(super) const SESSION_OUT_OF_STEP: &str = "Ebb sends it again in a new upload session";

/// Throttling codes: application (4), user (17), page (32), API-specific
/// (613), and the custom-audience limits (80003, 2446079).
const THROTTLED: &[i64] = &[4, 17, 32, 613, 80003, 2446079];

/// How long `X-Business-Use-Case-Usage` says to wait
/// (`estimated_time_to_regain_access`, in minutes), the longest it names.
pub(super) fn regain_access(header: &str) -> Option<Duration> {
    let usage: Value = serde_json::from_str(header).ok()?;
    let minutes = usage
        .as_object()?
        .values()
        .flat_map(|entries| entries.as_array().cloned().unwrap_or_default())
        .filter_map(|entry| entry["estimated_time_to_regain_access"].as_u64())
        .max()?;
    (minutes > 0).then(|| Duration::from_secs(minutes * 60))
}

pub(super) fn failure(
    status: u16,
    retry_after: Option<&str>,
    usage: Option<&str>,
    body: &[u8],
    secrets: &[&str],
) -> DeliveryError {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let error = &parsed["error"];
    let code = error["code"].as_i64();
    let subcode = error["error_subcode"].as_i64();
    let message = error["error_user_msg"]
        .as_str()
        .or(error["message"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned());
    let said = redact_secrets(
        &format!(
            "Meta answered {status}{}: {message}",
            code.map(|c| format!(
                " (code {c}{})",
                subcode.map(|s| format!(", subcode {s}")).unwrap_or_default()
            ))
            .unwrap_or_default()
        ),
        secrets,
    );
    match code {
        Some(code) if THROTTLED.contains(&code) => DeliveryError::RateLimited {
            retry_after: retry_after
                .and_then(parse_retry_after)
                .or_else(|| usage.and_then(regain_access)),
        },
        Some(190) => DeliveryError::Permanent(format!("{said} (the access token is invalid or expired)")),
        Some(10 | 200..=299) => DeliveryError::Permanent(format!(
            "{said} (the token lacks a permission: ads_management on the ad account, and the audience's terms)"
        )),
        // An unknown or temporary error on Meta's side.
        Some(1 | 2) => DeliveryError::Transient(said),
        // The audience does not exist or this token cannot see it.
        // The upload session is out of step with what Meta holds (its first
        // batch not seen, already ended): the connector starts a new one.
        Some(2650) => DeliveryError::Transient(format!("{said} ({SESSION_OUT_OF_STEP})")),
        Some(100) if subcode == Some(33) => DeliveryError::Permanent(format!("{said} (check `audience_id`)")),
        _ if error["is_transient"] == true => DeliveryError::Transient(said),
        _ if status == 408 || status >= 500 => DeliveryError::Transient(said),
        Some(100) => DeliveryError::Rejected(said),
        _ if status == 400 || status == 413 => DeliveryError::Rejected(said),
        _ => DeliveryError::Permanent(said),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_decide() {
        let throttled = br#"{"error":{"message":"There have been too many calls","type":"OAuthException","code":80003,"fbtrace_id":"x"}}"#;
        let usage = r#"{"1234":[{"type":"custom_audience","call_count":100,"total_cputime":20,"total_time":30,"estimated_time_to_regain_access":2}]}"#;
        assert_eq!(
            failure(400, None, Some(usage), throttled, &[]),
            DeliveryError::RateLimited {
                retry_after: Some(Duration::from_secs(120))
            }
        );
        let token = br#"{"error":{"message":"Error validating access token","type":"OAuthException","code":190,"error_subcode":463}}"#;
        assert!(matches!(failure(400, None, None, token, &[]), DeliveryError::Permanent(m) if m.contains("expired")));
        let missing = br#"{"error":{"message":"Unsupported post request. Object with ID '1' does not exist","type":"GraphMethodException","code":100,"error_subcode":33}}"#;
        assert!(
            matches!(failure(400, None, None, missing, &[]), DeliveryError::Permanent(m) if m.contains("audience_id"))
        );
        let unknown = br#"{"error":{"message":"An unknown error occurred","type":"OAuthException","code":1,"is_transient":true}}"#;
        assert!(matches!(
            failure(500, None, None, unknown, &[]),
            DeliveryError::Transient(_)
        ));
        let invalid = br#"{"error":{"message":"Invalid parameter","type":"OAuthException","code":100}}"#;
        assert!(matches!(
            failure(400, None, None, invalid, &[]),
            DeliveryError::Rejected(_)
        ));
    }
}
