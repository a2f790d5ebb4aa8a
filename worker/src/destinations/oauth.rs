//! OAuth 2.0 access tokens for destinations (RFC 6749): the client-credentials
//! grant and the refresh-token grant, a token kept until shortly before it
//! expires, and one re-authentication after a `401` (a token revoked early).
//! Secrets — the client secret, the refresh token, every access token — are
//! sent only to the token endpoint and in `Authorization` headers, and are
//! removed from every error text.

use crate::destinations::http::response::parse_retry_after;
use crate::destinations::DeliveryError;
use crate::error::TaskError;
use ebb_shared::config::expand_env;
use ebb_shared::redact::redact_secrets;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// How a destination obtains its tokens, as users write it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Config {
    /// The authorization server's token endpoint.
    pub token_url: String,
    pub client_id: String,
    /// A `${VAR}` reference.
    pub client_secret: String,
    /// With a refresh token (a `${VAR}` reference) Ebb uses the refresh-token
    /// grant; without, the client-credentials grant.
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// Space-separated scopes to ask for.
    #[serde(default)]
    pub scope: Option<String>,
}

/// A token the server granted.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub access_token: String,
    /// Some servers name the API host with the token (Salesforce's `instance_url`).
    pub instance_url: Option<String>,
    expires_at: Option<Instant>,
}

impl Token {
    /// A token given in the config: it never expires as far as Ebb knows.
    pub fn fixed(access_token: &str) -> Token {
        Token {
            access_token: access_token.to_string(),
            instance_url: None,
            expires_at: None,
        }
    }
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    instance_url: Option<String>,
    #[serde(default)]
    refresh_token: Option<String>,
}

#[derive(Deserialize, Default)]
struct ErrorAnswer {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
    /// Older HubSpot endpoints name the error `status` and describe it in
    /// `message` instead.
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// A token is renewed this long before the server said it expires.
const RENEW_BEFORE: Duration = Duration::from_secs(60);

pub struct OAuth2 {
    /// The endpoint asked: the configured one, or the fallback after it
    /// answered 404.
    token_url: std::sync::Mutex<String>,
    /// Asked instead once `token_url` answers 404: a vendor's older token
    /// endpoint, for servers that do not have its newest one.
    fallback_token_url: Option<String>,
    client_id: String,
    client_secret: String,
    /// The latest refresh token: servers may rotate it with every grant.
    refresh_token: Mutex<Option<String>>,
    scope: Option<String>,
    http: reqwest::Client,
    current: Mutex<Option<Token>>,
    /// Every secret seen, for redaction.
    secrets: std::sync::Mutex<Vec<String>>,
}

impl OAuth2 {
    pub fn new(config: &OAuth2Config, destination: &str, timeout: Duration) -> Result<OAuth2, TaskError> {
        let what = |field: &str| format!("destination {destination:?} oauth2.{field}");
        let client_secret = expand_env(&config.client_secret, &what("client_secret"))?;
        let refresh_token = config
            .refresh_token
            .as_deref()
            .map(|token| expand_env(token, &what("refresh_token")))
            .transpose()?;
        let token_url = expand_env(&config.token_url, &what("token_url"))?;
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| TaskError::DestinationSetup {
                destination: destination.to_string(),
                reason: e.to_string(),
            })?;
        let secrets = std::iter::once(client_secret.clone())
            .chain(refresh_token.clone())
            .collect();
        Ok(OAuth2 {
            token_url: std::sync::Mutex::new(token_url),
            fallback_token_url: None,
            client_id: config.client_id.clone(),
            client_secret,
            refresh_token: Mutex::new(refresh_token),
            scope: config.scope.clone(),
            http,
            current: Mutex::new(None),
            secrets: std::sync::Mutex::new(secrets),
        })
    }

    /// Asks `url` for tokens when the configured endpoint answers 404.
    pub fn with_fallback(mut self, url: String) -> OAuth2 {
        self.fallback_token_url = Some(url);
        self
    }

    /// Every secret of this grant so far, to redact from texts.
    pub fn secrets(&self) -> Vec<String> {
        self.secrets.lock().expect("secrets lock").clone()
    }

    fn redact(&self, text: &str) -> String {
        let secrets = self.secrets();
        let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
        redact_secrets(text, &secrets)
    }

    /// A token valid for a while yet: the one held, or a new one.
    pub async fn token(&self) -> Result<Token, DeliveryError> {
        let mut current = self.current.lock().await;
        if let Some(token) = current.as_ref() {
            let fresh = token.expires_at.is_none_or(|at| Instant::now() + RENEW_BEFORE < at);
            if fresh {
                return Ok(token.clone());
            }
        }
        let token = self.grant().await?;
        *current = Some(token.clone());
        Ok(token)
    }

    /// After the API refused `used` (`401`): forget it, so the next `token`
    /// asks for another — unless another request already did.
    pub async fn refused(&self, used: &Token) {
        let mut current = self.current.lock().await;
        if current.as_ref().is_some_and(|t| t.access_token == used.access_token) {
            *current = None;
        }
    }

    async fn grant(&self) -> Result<Token, DeliveryError> {
        let url = self.token_url.lock().expect("url lock").clone();
        match (self.grant_at(&url).await, &self.fallback_token_url) {
            (Err(GrantError::NotFound(_)), Some(fallback)) if *fallback != url => {
                tracing::info!("the token endpoint answered 404; asking the vendor's older endpoint from now on");
                *self.token_url.lock().expect("url lock") = fallback.clone();
                self.grant_at(fallback).await.map_err(GrantError::into_delivery)
            }
            (answer, _) => answer.map_err(GrantError::into_delivery),
        }
    }

    async fn grant_at(&self, token_url: &str) -> Result<Token, GrantError> {
        let refresh_token = self.refresh_token.lock().await.clone();
        let mut form: Vec<(&str, &str)> = vec![("client_id", &self.client_id), ("client_secret", &self.client_secret)];
        match &refresh_token {
            Some(token) => form.extend([("grant_type", "refresh_token"), ("refresh_token", token.as_str())]),
            None => form.push(("grant_type", "client_credentials")),
        }
        if let Some(scope) = &self.scope {
            form.push(("scope", scope));
        }
        let answer = self.http.post(token_url).form(&form).send().await.map_err(|e| {
            DeliveryError::Transient(self.redact(&format!("token request failed: {}", e.without_url())))
        })?;
        let status = answer.status().as_u16();
        let retry_after = answer
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = answer
            .bytes()
            .await
            .map_err(|e| DeliveryError::Transient(self.redact(&format!("token answer: {}", e.without_url()))))?;
        if !(200..300).contains(&status) {
            let mut said: ErrorAnswer = serde_json::from_slice(&body).unwrap_or_default();
            said.error = said.error.or(said.status.take());
            said.error_description = said.error_description.or(said.message.take());
            let text = self.redact(&format!(
                "the token endpoint answered {status}: {}{}",
                said.error.as_deref().unwrap_or("no error code"),
                said.error_description.map(|d| format!(" ({d})")).unwrap_or_default()
            ));
            return Err(match status {
                404 => GrantError::NotFound(DeliveryError::Permanent(format!(
                    "{text}; check the destination's token endpoint"
                ))),
                429 => DeliveryError::RateLimited { retry_after }.into(),
                408 | 500..=599 => DeliveryError::Transient(text).into(),
                // invalid_client, invalid_grant, unauthorized_client: the
                // credentials must be fixed (or the app re-authorized).
                _ => DeliveryError::Permanent(format!("{text}; check the destination's oauth2 credentials")).into(),
            });
        }
        let granted: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|e| DeliveryError::Transient(format!("the token endpoint's answer is not a token: {e}")))?;
        {
            let mut secrets = self.secrets.lock().expect("secrets lock");
            secrets.push(granted.access_token.clone());
            secrets.extend(granted.refresh_token.clone());
        }
        if let Some(rotated) = granted.refresh_token {
            *self.refresh_token.lock().await = Some(rotated);
        }
        Ok(Token {
            access_token: granted.access_token,
            instance_url: granted.instance_url,
            expires_at: granted.expires_in.map(|s| Instant::now() + Duration::from_secs(s)),
        })
    }
}

/// Why a grant failed: a missing endpoint may have an older one to ask.
enum GrantError {
    NotFound(DeliveryError),
    Other(DeliveryError),
}

impl GrantError {
    fn into_delivery(self) -> DeliveryError {
        match self {
            GrantError::NotFound(error) | GrantError::Other(error) => error,
        }
    }
}

impl From<DeliveryError> for GrantError {
    fn from(error: DeliveryError) -> Self {
        GrantError::Other(error)
    }
}

/// How a destination authenticates: a token given in the config, or an
/// OAuth 2.0 grant that renews it.
pub enum Credentials {
    Fixed(String),
    OAuth2(Box<OAuth2>),
}

impl Credentials {
    /// The token to send now.
    pub async fn token(&self) -> Result<Token, DeliveryError> {
        match self {
            Credentials::Fixed(token) => Ok(Token::fixed(token)),
            Credentials::OAuth2(oauth2) => oauth2.token().await,
        }
    }

    /// After a `401` for `used`: whether a renewed token may be tried (once
    /// per request, by the caller); a fixed token cannot be renewed.
    pub async fn renew_after_refusal(&self, used: &Token) -> bool {
        match self {
            Credentials::Fixed(_) => false,
            Credentials::OAuth2(oauth2) => {
                oauth2.refused(used).await;
                true
            }
        }
    }

    /// Every secret to remove from texts.
    pub fn secrets(&self) -> Vec<String> {
        match self {
            Credentials::Fixed(token) => vec![token.clone()],
            Credentials::OAuth2(oauth2) => oauth2.secrets(),
        }
    }

    pub fn is_fixed(&self) -> bool {
        matches!(self, Credentials::Fixed(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::routing::post;
    use axum::{Json, Router};
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    /// The forms the token endpoint received.
    type Forms = Arc<std::sync::Mutex<Vec<HashMap<String, String>>>>;

    /// A token endpoint: each grant answers a new token, valid `lifetime` s.
    async fn token_server(lifetime: u64, rotate: bool) -> (String, Arc<AtomicU32>, Forms) {
        let grants = Arc::new(AtomicU32::new(0));
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let state = (grants.clone(), seen.clone());
        let app = Router::new()
            .route(
                "/token",
                post(
                    move |State((grants, seen)): State<(Arc<AtomicU32>, Forms)>,
                          body: Bytes| async move {
                        // The form's values here need no percent-decoding.
                        let form: HashMap<String, String> = String::from_utf8_lossy(&body)
                            .split('&')
                            .filter_map(|pair| pair.split_once('='))
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect();
                        seen.lock().unwrap().push(form.clone());
                        if form.get("client_secret").map(String::as_str) != Some("s3cret-client") {
                            return (
                                axum::http::StatusCode::UNAUTHORIZED,
                                Json(serde_json::json!({"error": "invalid_client", "error_description": "bad s3cret-client?"})),
                            );
                        }
                        let n = grants.fetch_add(1, Ordering::SeqCst) + 1;
                        let mut body = serde_json::json!({"access_token": format!("at-{n}"), "token_type": "Bearer", "expires_in": lifetime});
                        if rotate {
                            body["refresh_token"] = serde_json::json!(format!("rt-{n}"));
                        }
                        (axum::http::StatusCode::OK, Json(body))
                    },
                ),
            )
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, grants, seen)
    }

    fn config(url: &str, secret: &str, refresh: Option<&str>) -> OAuth2Config {
        OAuth2Config {
            token_url: url.to_string(),
            client_id: "ebb".into(),
            client_secret: secret.into(),
            refresh_token: refresh.map(str::to_string),
            scope: Some("crm.write".into()),
        }
    }

    #[tokio::test]
    async fn client_credentials_are_granted_once_and_kept_until_near_expiry() {
        let (url, grants, seen) = token_server(3600, false).await;
        let oauth = OAuth2::new(&config(&url, "s3cret-client", None), "d", Duration::from_secs(5)).unwrap();
        assert_eq!(oauth.token().await.unwrap().access_token, "at-1");
        assert_eq!(oauth.token().await.unwrap().access_token, "at-1");
        assert_eq!(grants.load(Ordering::SeqCst), 1);
        let form = seen.lock().unwrap()[0].clone();
        assert_eq!(form["grant_type"], "client_credentials");
        assert_eq!(form["scope"], "crm.write");
        // A token within a minute of expiry is renewed before it is used.
        let (url, grants, _) = token_server(30, false).await;
        let oauth = OAuth2::new(&config(&url, "s3cret-client", None), "d", Duration::from_secs(5)).unwrap();
        oauth.token().await.unwrap();
        assert_eq!(oauth.token().await.unwrap().access_token, "at-2");
        assert_eq!(grants.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_refused_token_is_replaced_once_and_refresh_tokens_rotate() {
        let (url, grants, seen) = token_server(3600, true).await;
        let oauth = OAuth2::new(
            &config(&url, "s3cret-client", Some("rt-0")),
            "d",
            Duration::from_secs(5),
        )
        .unwrap();
        let first = oauth.token().await.unwrap();
        oauth.refused(&first).await;
        // A second 401 on the same old token does not ask again.
        oauth.refused(&first).await;
        let second = oauth.token().await.unwrap();
        assert_eq!(
            (first.access_token.as_str(), second.access_token.as_str()),
            ("at-1", "at-2")
        );
        assert_eq!(grants.load(Ordering::SeqCst), 2);
        let forms = seen.lock().unwrap().clone();
        assert_eq!(
            (forms[0]["grant_type"].as_str(), forms[0]["refresh_token"].as_str()),
            ("refresh_token", "rt-0")
        );
        assert_eq!(forms[1]["refresh_token"], "rt-1", "the rotated refresh token is used");
        assert!(oauth.secrets().contains(&"at-2".to_string()));
    }

    #[tokio::test]
    async fn refused_credentials_are_permanent_and_never_shown() {
        let (url, _, _) = token_server(3600, false).await;
        let oauth = OAuth2::new(&config(&url, "wrong-s3cret", None), "d", Duration::from_secs(5)).unwrap();
        let error = oauth.token().await.unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, DeliveryError::Permanent(_)), "{text}");
        assert!(
            text.contains("invalid_client") && !text.contains("wrong-s3cret"),
            "{text}"
        );
    }
}
