//! Who may call the API. Two bearer tokens, each optional on loopback:
//! `EBB_API_TOKEN` for `/api` (people, `ebb` commands, orchestrators) and
//! `EBB_INTERNAL_TOKEN` for `/internal` (workers: leases, run state). They are
//! separate so a worker's credential cannot trigger, cancel or read runs.
//! `/healthz`, `/readyz` and `/metrics` stay open for probes and scrapers.

use super::ApiError;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A token the API expects. Its `Debug` never shows it.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    /// From an environment variable's value; an empty one is no token.
    pub fn from_env(name: &str) -> Option<Token> {
        std::env::var(name).ok().filter(|t| !t.is_empty()).map(Token)
    }

    pub fn new(token: impl Into<String>) -> Token {
        Token(token.into())
    }

    /// Whether `presented` is this token, in time that does not depend on
    /// where they differ (or on their lengths: digests are compared).
    pub fn accepts(&self, presented: &str) -> bool {
        let expected = Sha256::digest(self.0.as_bytes());
        let presented = Sha256::digest(presented.as_bytes());
        expected.ct_eq(&presented).into()
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

/// The tokens an API requires.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    /// For `/api`.
    pub api: Option<Token>,
    /// For `/internal`.
    pub internal: Option<Token>,
}

impl Tokens {
    /// `EBB_API_TOKEN` and `EBB_INTERNAL_TOKEN`.
    pub fn from_env() -> Tokens {
        Tokens {
            api: Token::from_env("EBB_API_TOKEN"),
            internal: Token::from_env("EBB_INTERNAL_TOKEN"),
        }
    }

    /// Why serving on `address` with these tokens is refused, if it is: off
    /// loopback, anyone who reaches the address could trigger and cancel
    /// runs, read rows, or (with workers) take every delivery lease.
    pub fn refusal(&self, address: std::net::SocketAddr, serves_workers: bool) -> Option<String> {
        if address.ip().is_loopback() {
            return None;
        }
        let mut missing = Vec::new();
        if self.api.is_none() {
            missing.push("EBB_API_TOKEN");
        }
        if serves_workers && self.internal.is_none() {
            missing.push("EBB_INTERNAL_TOKEN");
        }
        if missing.is_empty() {
            return None;
        }
        Some(format!(
            "refusing to serve the API on {address} without {}: anyone who reaches it could trigger and cancel runs \
             and read their rows. Set {} (workers get EBB_INTERNAL_TOKEN too), listen on 127.0.0.1, or pass \
             --allow-unauthenticated (EBB_ALLOW_UNAUTHENTICATED=true) if a network policy guards it",
            missing.join(" and "),
            missing.join(" and "),
        ))
    }
}

/// The token in an `Authorization: Bearer <token>` header; the scheme's case
/// does not matter (RFC 9110 §11.1).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Guards `/api`.
pub async fn require_api_token(State(tokens): State<Tokens>, request: Request, next: Next) -> Response {
    guard(tokens.api.as_ref(), "EBB_API_TOKEN", request, next).await
}

/// Guards `/internal`.
pub async fn require_internal_token(State(tokens): State<Tokens>, request: Request, next: Next) -> Response {
    guard(tokens.internal.as_ref(), "EBB_INTERNAL_TOKEN", request, next).await
}

/// Passes `request` on if it bears `expected` (or none is required), else
/// answers 401 naming the variable whose value to send.
async fn guard(expected: Option<&Token>, variable: &str, request: Request, next: Next) -> Response {
    let admitted = match expected {
        None => true,
        Some(expected) => bearer(request.headers()).is_some_and(|presented| expected.accepts(presented)),
    };
    if admitted {
        return next.run(request).await;
    }
    let mut refusal = ApiError(
        StatusCode::UNAUTHORIZED,
        format!("send Authorization: Bearer <token>, the coordinator's {variable}"),
    )
    .into_response();
    refusal.headers_mut().insert(
        axum::http::header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Bearer"),
    );
    refusal
}

/// On an API that listens on loopback (a standalone on a laptop, usually
/// without a token), refuses what a web page open in a browser on the same
/// machine could send: a request from another origin (its `Origin` header, or
/// `Sec-Fetch-Site: cross-site`), and a request whose `Host` is not a
/// loopback name — a DNS-rebinding page reaches 127.0.0.1 under its own host
/// name. Programs (curl, `ebb`, orchestrators) send no `Origin` and pass.
pub async fn local_callers_only(State(on_loopback): State<bool>, request: Request, next: Next) -> Response {
    if !on_loopback {
        return next.run(request).await;
    }
    let headers = request.headers();
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let host_is_local = header("host").is_none_or(is_loopback_host);
    let origin_is_local = header("origin").is_none_or(|origin| {
        url::Url::parse(origin)
            .ok()
            .and_then(|url| url.host_str().map(is_loopback_host))
            .unwrap_or(false)
    });
    let cross_site = header("sec-fetch-site") == Some("cross-site");
    if host_is_local && origin_is_local && !cross_site {
        return next.run(request).await;
    }
    ApiError(
        StatusCode::FORBIDDEN,
        "this API listens on loopback and answers local programs only: a request from a web page, or naming \
         another host, is refused (call it from a terminal or a script, without an Origin header)"
            .into(),
    )
    .into_response()
}

/// Whether `host` (`name`, `name:port`, `[v6]:port`) names this machine's
/// loopback: `localhost`, 127.0.0.0/8 or ::1.
fn is_loopback_host(host: &str) -> bool {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return ip.is_loopback();
    }
    let name = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => host
            .rsplit_once(':')
            .filter(|(_, port)| port.parse::<u16>().is_ok())
            .map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_read_in_any_case() {
        let mut headers = HeaderMap::new();
        for value in ["Bearer abc", "bearer abc", "BEARER  abc ", " Bearer abc"] {
            headers.insert(axum::http::header::AUTHORIZATION, value.parse().unwrap());
            assert_eq!(bearer(&headers), Some("abc"), "{value:?}");
        }
        for value in ["Basic abc", "Bearerabc", "abc"] {
            headers.insert(axum::http::header::AUTHORIZATION, value.parse().unwrap());
            assert_eq!(bearer(&headers), None, "{value:?}");
        }
    }

    #[test]
    fn loopback_hosts_are_told_from_others() {
        for local in [
            "localhost",
            "LOCALHOST:8080",
            "127.0.0.1",
            "127.0.0.1:8080",
            "127.8.9.1:1",
            "[::1]:8080",
            "::1",
        ] {
            assert!(is_loopback_host(local), "{local}");
        }
        for other in [
            "evil.example",
            "evil.example:8080",
            "10.0.0.1:8080",
            "[2001:db8::1]:80",
            "localhost.evil.example",
            "",
        ] {
            assert!(!is_loopback_host(other), "{other}");
        }
    }

    #[test]
    fn a_token_accepts_itself_only() {
        let token = Token::new("s3cret-token");
        assert!(token.accepts("s3cret-token"));
        for other in ["", "s3cret-toke", "s3cret-token ", "S3cret-token", "s3cret-tokenx"] {
            assert!(!token.accepts(other), "{other:?}");
        }
        assert_eq!(format!("{token:?}"), "Token(…)");
    }

    #[test]
    fn only_loopback_serves_without_tokens() {
        let open = Tokens::default();
        let everywhere: std::net::SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert_eq!(open.refusal("127.0.0.1:8080".parse().unwrap(), true), None);
        assert_eq!(open.refusal("[::1]:8080".parse().unwrap(), true), None);
        let refusal = open.refusal(everywhere, true).expect("refused");
        assert!(refusal.contains("EBB_API_TOKEN and EBB_INTERNAL_TOKEN"), "{refusal}");
        assert!(refusal.contains("--allow-unauthenticated"), "{refusal}");
        let api_only = Tokens {
            api: Some(Token::new("a")),
            internal: None,
        };
        assert_eq!(
            api_only.refusal(everywhere, false),
            None,
            "a standalone has no workers to serve"
        );
        let refusal = api_only.refusal(everywhere, true).expect("workers need their token");
        assert!(refusal.contains("without EBB_INTERNAL_TOKEN"), "{refusal}");
    }
}
