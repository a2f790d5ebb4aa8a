//! Redaction of credentials in anything that may reach a log, an API response or
//! an error message (DESIGN.md, invariant 9).

/// Hides the credentials of every URL in `text`: a password in the userinfo
/// becomes `***`, and so does the value of a query parameter whose name says
/// it is a credential (`password`, `token`, `sig`, `X-Amz-Signature`, …).
/// Each URL is read by a real URL parser; one it cannot read but that holds
/// a `@` (a password with an unescaped `/` or `#`) loses everything between
/// `://` and its last `@`. Text that holds no URL passes through unchanged.
pub fn redact_url(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(scheme_end) = rest.find("://") {
        // The URL starts at its scheme (letters, digits, `+-.` before `://`)
        // and ends at whitespace or a quote.
        let start = rest[..scheme_end]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || "+-.".contains(c)))
            .map(|i| i + 1)
            .unwrap_or(0);
        let end = rest[scheme_end..]
            .find(|c: char| c.is_whitespace() || "\"'<>`".contains(c))
            .map(|i| scheme_end + i)
            .unwrap_or(rest.len());
        out.push_str(&rest[..start]);
        out.push_str(&redact_one_url(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

fn redact_one_url(candidate: &str) -> String {
    let Ok(mut url) = url::Url::parse(candidate) else {
        // Unreadable: hide the whole userinfo if there may be one.
        let authority_start = candidate.find("://").map(|i| i + 3).unwrap_or(0);
        return match candidate[authority_start..].rfind('@') {
            Some(at) => format!(
                "{}***@{}",
                &candidate[..authority_start],
                &candidate[authority_start + at + 1..]
            ),
            None => candidate.to_string(),
        };
    };
    let mut changed = false;
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
        changed = true;
    }
    if url.query_pairs().any(|(key, _)| is_secret_parameter(&key)) {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(key, value)| {
                let value = if is_secret_parameter(&key) {
                    "***".into()
                } else {
                    value.into_owned()
                };
                (key.into_owned(), value)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
        changed = true;
    }
    if changed {
        url.to_string()
    } else {
        // Unchanged text stays exactly as written (no normalisation).
        candidate.to_string()
    }
}

/// Whether a query parameter's name says its value is a credential.
fn is_secret_parameter(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "password",
        "passwd",
        "pwd",
        "secret",
        "token",
        "signature",
        "sig",
        "credential",
        "apikey",
        "api_key",
        "key",
        "auth",
        "code",
    ]
    .iter()
    .any(|word| name == *word || name.ends_with(&format!("_{word}")) || name.ends_with(&format!("-{word}")))
        || name.contains("password")
        || name.contains("secret")
        || name.contains("token")
}

/// Removes every occurrence of each secret from `text`.
pub fn redact_secrets(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_string();
    for secret in secrets.iter().filter(|s| s.len() >= 4) {
        out = out.replace(secret, "***");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_hidden() {
        assert_eq!(
            redact_url("postgres://ebb:hunter22@db:5432/x?sslmode=require"),
            "postgres://ebb:***@db:5432/x?sslmode=require"
        );
        assert_eq!(redact_url("postgres://ebb@db/x"), "postgres://ebb@db/x");
        assert_eq!(redact_url("not a url"), "not a url");
        assert_eq!(
            redact_url("amqp://guest:guest@127.0.0.1:5672"),
            "amqp://guest:***@127.0.0.1:5672"
        );
    }

    #[test]
    fn a_password_no_url_reader_accepts_is_hidden_whole() {
        for (text, hidden) in [
            ("postgres://ebb:pa/ss@db:5432/x", "postgres://***@db:5432/x"),
            ("postgres://ebb:pa#ss@db/x", "postgres://***@db/x"),
            ("amqp://u:p?w@rabbit:5672/%2f", "amqp://***@rabbit:5672/%2f"),
        ] {
            assert_eq!(redact_url(text), hidden, "{text}");
        }
    }

    #[test]
    fn every_url_of_a_message_is_redacted_and_secret_parameters_hidden() {
        let text = "cannot reach mysql://app:s3cr3t@db:3306/crm (timed out); \
                    then https://api.example.com/v1?region=eu&access_token=abc123&X-Amz-Signature=f00d: 403";
        let redacted = redact_url(text);
        assert!(
            !redacted.contains("s3cr3t") && !redacted.contains("abc123") && !redacted.contains("f00d"),
            "{redacted}"
        );
        assert!(
            redacted.contains("mysql://app:***@db:3306/crm (timed out)"),
            "{redacted}"
        );
        assert!(redacted.contains("region=eu"), "harmless parameters stay: {redacted}");
        assert_eq!(
            redact_url("s3://bucket/p?endpoint=http://127.0.0.1:9000&region=us-east-1"),
            "s3://bucket/p?endpoint=http://127.0.0.1:9000&region=us-east-1",
            "a URL without a credential stays exactly as written"
        );
        assert_eq!(redact_url("\"https://u:p@h/x\""), "\"https://u:***@h/x\"");
    }

    #[test]
    fn secrets_are_removed_from_text() {
        assert_eq!(
            redact_secrets("auth failed for token abcd1234", &["abcd1234"]),
            "auth failed for token ***"
        );
    }
}
