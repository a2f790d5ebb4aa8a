//! Redaction of credentials in anything that may reach a log, an API response or
//! an error message (DESIGN.md, invariant 9).

/// Replaces the password of a URL (`scheme://user:password@host`) with `***`.
/// Text that is not a URL passes through unchanged.
pub fn redact_url(text: &str) -> String {
    let Some(scheme_end) = text.find("://") else {
        return text.to_string();
    };
    let authority_start = scheme_end + 3;
    let authority_end = text[authority_start..]
        .find(['/', '?', '#'])
        .map(|i| authority_start + i)
        .unwrap_or(text.len());
    let authority = &text[authority_start..authority_end];
    let Some(at) = authority.rfind('@') else {
        return text.to_string();
    };
    let userinfo = &authority[..at];
    let user = userinfo.split(':').next().unwrap_or_default();
    if !userinfo.contains(':') {
        return text.to_string();
    }
    format!(
        "{}{}:***@{}{}",
        &text[..authority_start],
        user,
        &authority[at + 1..],
        &text[authority_end..]
    )
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
    fn secrets_are_removed_from_text() {
        assert_eq!(
            redact_secrets("auth failed for token abcd1234", &["abcd1234"]),
            "auth failed for token ***"
        );
    }
}
