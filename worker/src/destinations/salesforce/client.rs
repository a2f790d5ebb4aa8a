//! One authenticated Salesforce REST client: a fixed access token or an
//! OAuth 2.0 grant renewed once after a `401 INVALID_SESSION_ID`, the org's
//! instance URL, the daily usage Salesforce reports with every answer, and
//! no URL or token in any error.

use super::response;
use super::SalesforceConfig;
use crate::debugger;
use crate::destinations::oauth::{Credentials, OAuth2};
use crate::destinations::DeliveryError;
use crate::error::TaskError;
use ebb_shared::config::expand_env;
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};

pub(super) struct Client {
    http: reqwest::Client,
    auth: Credentials,
    /// Set by the config; otherwise the token answer's `instance_url`.
    instance_url: Option<String>,
    /// `/services/data/vNN.N`.
    data_path: String,
    /// The last `Sforce-Limit-Info` seen: requests used, and the allowance.
    used: AtomicU64,
    allowed: AtomicU64,
    max_usage_percent: Option<f64>,
}

/// Tries at one read before its error goes back to the engine.
const READ_TRIES: u32 = 5;
const READ_BACKOFF: std::time::Duration = std::time::Duration::from_millis(200);
/// The longest a read waits in place; a longer `Retry-After` goes back to
/// the engine, which pauses the fleet.
const MAX_READ_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A 2xx answer.
pub(super) struct Answer {
    pub body: Vec<u8>,
}

impl Client {
    pub fn new(config: &SalesforceConfig, name: &str) -> Result<Client, TaskError> {
        let setup = |reason: String| TaskError::DestinationSetup {
            destination: name.to_string(),
            reason,
        };
        let auth = match (&config.access_token, &config.oauth2) {
            (Some(token), None) => {
                Credentials::Fixed(expand_env(token, &format!("destination {name:?} access_token"))?)
            }
            (None, Some(oauth2)) => Credentials::OAuth2(Box::new(OAuth2::new(oauth2, name, config.timeout)?)),
            _ => return Err(setup("set one of `access_token` and `oauth2`".into())),
        };
        let instance_url = config
            .instance_url
            .as_deref()
            .map(|url| expand_env(url, &format!("destination {name:?} instance_url")))
            .transpose()?
            .map(|url| url.trim_end_matches('/').to_string());
        if instance_url.is_none() && auth.is_fixed() {
            return Err(setup(
                "with `access_token`, set `instance_url` (https://MyDomain.my.salesforce.com)".into(),
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| setup(e.to_string()))?;
        Ok(Client {
            http,
            auth,
            instance_url,
            data_path: format!("/services/data/v{}", config.api_version.trim_start_matches('v')),
            used: AtomicU64::new(0),
            allowed: AtomicU64::new(0),
            max_usage_percent: config.max_api_usage_percent,
        })
    }

    pub fn secrets(&self) -> Vec<String> {
        self.auth.secrets()
    }

    /// A path under the versioned REST root, e.g. `/composite/sobjects`.
    pub fn data(&self, path: &str) -> String {
        format!("{}{path}", self.data_path)
    }

    /// (requests used, allowance) from the last answer, when one said.
    pub fn api_usage(&self) -> Option<(u64, u64)> {
        let allowed = self.allowed.load(Ordering::Relaxed);
        (allowed > 0).then(|| (self.used.load(Ordering::Relaxed), allowed))
    }

    /// Sends one request (a path from the instance's root, query included)
    /// and returns a 2xx answer; a refused OAuth session is renewed once.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, DeliveryError> {
        let body = body.map(|body| {
            (
                "application/json",
                serde_json::to_vec(body).expect("JSON values serialize"),
            )
        });
        self.call_with(method, path, body).await
    }

    /// A read (a GET: a query, a job's state or results), sent again in place after a
    /// transient or rate-limited answer, a few times with backoff. A bulk
    /// job's lookups are dozens of queries before anything is written:
    /// failing the batch on one of them would run them all again, and at a
    /// few percent of faults a 10,000-row job would seldom get through. What
    /// still fails after the last try goes back to the engine, whose retry
    /// and fleet pause take over.
    pub async fn read(&self, path: &str) -> Result<Answer, DeliveryError> {
        let mut backoff = READ_BACKOFF;
        for _ in 1..READ_TRIES {
            match self.call(reqwest::Method::GET, path, None).await {
                Err(DeliveryError::Transient(_)) => {}
                Err(DeliveryError::RateLimited { retry_after }) => match retry_after {
                    Some(wait) if wait > MAX_READ_WAIT => return Err(DeliveryError::RateLimited { retry_after }),
                    Some(wait) => backoff = backoff.max(wait),
                    None => {}
                },
                answer => return answer,
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_READ_WAIT);
        }
        self.call(reqwest::Method::GET, path, None).await
    }

    /// `call` with a body of any type: (content type, bytes).
    pub async fn call_with(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<(&'static str, Vec<u8>)>,
    ) -> Result<Answer, DeliveryError> {
        if let (Some(percent), Some((used, allowed))) = (self.max_usage_percent, self.api_usage()) {
            if used as f64 >= allowed as f64 * percent / 100.0 {
                return Err(DeliveryError::Permanent(format!(
                    "the org has used {used} of its {allowed} daily API requests, at or above the \
                     destination's max_api_usage_percent of {percent}%; the rows are sent again on the next run"
                )));
            }
        }
        let mut renewed = false;
        loop {
            let token = self.auth.token().await?;
            let base = match (&self.instance_url, &token.instance_url) {
                (Some(url), _) => url.clone(),
                (None, Some(url)) => url.trim_end_matches('/').to_string(),
                (None, None) => {
                    return Err(DeliveryError::Permanent(
                        "the token answer named no instance_url; set the destination's `instance_url`".into(),
                    ))
                }
            };
            let url = format!("{base}{path}");
            let mut request = self.http.request(method.clone(), &url).bearer_auth(&token.access_token);
            if let Some((content_type, bytes)) = &body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, *content_type)
                    .body(bytes.clone());
            }
            let sent = body.as_ref().map(|(_, bytes)| bytes.as_slice());
            let secrets = self.secrets();
            let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
            let exchange = debugger::begin(&method, &url, sent);
            let answer = match request.send().await {
                Ok(answer) => answer,
                Err(error) => return Err(exchange.failed(self.transport(error), &secrets)),
            };
            let status = answer.status().as_u16();
            let header = |name: &str| {
                answer
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            if let Some((used, allowed)) = header("sforce-limit-info").as_deref().and_then(response::api_usage) {
                self.used.store(used, Ordering::Relaxed);
                self.allowed.store(allowed, Ordering::Relaxed);
            }
            let retry_after = header("retry-after");
            let bytes = match answer.bytes().await {
                Ok(bytes) => bytes,
                Err(error) => return Err(exchange.failed(self.transport(error), &secrets)),
            };
            exchange.answered(status, &bytes, &secrets);
            if (200..300).contains(&status) {
                return Ok(Answer { body: bytes.to_vec() });
            }
            // INVALID_SESSION_ID: the session expired or was revoked.
            if status == 401 && !renewed && self.auth.renew_after_refusal(&token).await {
                renewed = true;
                continue;
            }
            return Err(response::failure(status, retry_after.as_deref(), &bytes, &secrets));
        }
    }

    fn transport(&self, error: reqwest::Error) -> DeliveryError {
        let secrets = self.secrets();
        let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
        crate::destinations::transport_error(error, "Salesforce", &secrets)
    }
}
