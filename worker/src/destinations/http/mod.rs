//! A generic HTTP endpoint: batches of records as one JSON request each.
//!
//! The contract (documented in docs/destinations/http.md): Ebb sends
//! `{"operation": OP, "match": FIELD?, "records": [{"key": …, "fields": {…}}]}`
//! with OP one of insert, update, upsert, delete, clear, archive, add, remove,
//! track. A `2xx` accepts the batch, except the records a JSON body lists under
//! `errors` (`[{"index": n, "message": …}]`); `429` is retried after
//! `Retry-After`; `408`, `5xx` and network faults are retried with backoff;
//! `400`, `413` and `422` refuse the batch's content (Ebb splits it to find the
//! records at fault); any other status refuses the whole batch.

mod config;
mod request;
pub(super) mod response;
#[cfg(test)]
mod tests;

use super::oauth::{OAuth2, Token};
use super::settings::{self, Documented, Requested};
use super::{Connector, DeliveryError, Destination, Record, RowResults};
use crate::behaviour::Action;
use crate::error::TaskError;
use async_trait::async_trait;
pub use config::HttpDestinationConfig;
use ebb_shared::config::{expand_env, BatchLimits, Capabilities, DestinationProfile, FieldError, SyncSpec};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use std::sync::Arc;

/// The connector.
pub struct Http;

/// The generic contract has no vendor limits: the user's hold.
const DOCUMENTED: Documented = Documented {
    rate_limit: None,
    rate_window: None,
    max_concurrency: None,
    batch: BatchLimits::records(usize::MAX),
    default_batch_size: 100,
};

fn requested(config: &HttpDestinationConfig) -> Requested {
    Requested {
        batch_size: config.batch_size,
        rate_limit: config.rate_limit,
        max_concurrency: config.max_concurrency,
    }
}

impl Connector for Http {
    const TYPE: &'static str = "http";
    type Config = HttpDestinationConfig;

    fn profile(config: &Self::Config) -> Result<DestinationProfile, FieldError> {
        let (limits, batch) = settings::apply(&DOCUMENTED, requested(config))?;
        // A url built from variables is checked when it is resolved.
        if !config.url.contains("${") {
            let url = reqwest::Url::parse(&config.url)
                .map_err(|e| FieldError::at(&["url"], format!("`url` is not a URL: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(FieldError::at(
                    &["url"],
                    format!("`url` must be http:// or https://, not {}://", url.scheme()),
                ));
            }
        }
        if reqwest::Method::from_bytes(config.method.to_uppercase().as_bytes()).is_err() {
            return Err(FieldError::at(
                &["method"],
                format!("`method` {:?} is not an HTTP method", config.method),
            ));
        }
        Ok(DestinationProfile {
            // The generic contract names every operation; the endpoint decides.
            capabilities: Capabilities::ANY,
            limits,
            batch,
            max_retry_after: config.max_retry_after,
            expanded_settings: std::iter::once((vec!["url".to_string()], config.url.clone()))
                .chain(config.oauth2.iter().flat_map(|oauth| {
                    let at = |field: &str| vec!["oauth2".to_string(), field.to_string()];
                    [
                        Some((at("token_url"), oauth.token_url.clone())),
                        Some((at("client_secret"), oauth.client_secret.clone())),
                        oauth.refresh_token.clone().map(|token| (at("refresh_token"), token)),
                    ]
                    .into_iter()
                    .flatten()
                }))
                .chain(
                    config
                        .headers
                        .iter()
                        .map(|(name, value)| (vec!["headers".to_string(), name.clone()], value.clone())),
                )
                .collect(),
        })
    }

    async fn test_connection(config: Self::Config, name: &str) -> Result<(), String> {
        let destination = HttpDestination::new(name, &config, None).map_err(|e| e.to_string())?;
        destination.check_connection().await
    }

    async fn open(config: Self::Config, spec: &SyncSpec) -> Result<Arc<dyn Destination>, TaskError> {
        let matching = spec.record_matching.as_ref().map(|m| m.to.as_str());
        Ok(Arc::new(HttpDestination::new(
            &spec.destination_name,
            &config,
            matching,
        )?))
    }
}

/// An HTTP client sending `headers` (values `${VAR}`-expanded, marked
/// sensitive) on every request, and the expanded values, to redact from
/// every error text.
pub(super) fn client_with_headers(
    name: &str,
    headers: &std::collections::BTreeMap<String, String>,
    timeout: std::time::Duration,
) -> Result<(reqwest::Client, Vec<String>), TaskError> {
    let setup = |reason: String| TaskError::DestinationSetup {
        destination: name.to_string(),
        reason,
    };
    let mut map = HeaderMap::new();
    let mut secrets = Vec::new();
    for (header, value) in headers {
        let value = expand_env(value, &format!("destination {name:?} header {header}"))?;
        let header_name = HeaderName::from_bytes(header.as_bytes())
            .map_err(|_| setup(format!("{header:?} is not a valid header name")))?;
        let mut header_value =
            HeaderValue::from_str(&value).map_err(|_| setup(format!("header {header}: invalid value")))?;
        header_value.set_sensitive(true);
        map.insert(header_name, header_value);
        secrets.push(value);
    }
    let client = reqwest::Client::builder()
        .default_headers(map)
        .timeout(timeout)
        .build()
        .map_err(|e| setup(e.to_string()))?;
    Ok((client, secrets))
}

pub struct HttpDestination {
    client: reqwest::Client,
    method: reqwest::Method,
    url: String,
    /// The record-matching field, named in every request.
    matching: Option<String>,
    /// Resolved header values, removed from any error text.
    secrets: Vec<String>,
    /// Bearer tokens from an OAuth 2.0 grant, when configured.
    oauth: Option<OAuth2>,
}

impl HttpDestination {
    pub fn new(name: &str, config: &HttpDestinationConfig, matching: Option<&str>) -> Result<Self, TaskError> {
        let setup = |reason: String| TaskError::DestinationSetup {
            destination: name.to_string(),
            reason,
        };
        let url = expand_env(&config.url, &format!("destination {name:?} url"))?;
        reqwest::Url::parse(&url).map_err(|e| setup(format!("url: {e}")))?;
        let method = reqwest::Method::from_bytes(config.method.to_uppercase().as_bytes())
            .map_err(|_| setup(format!("method {:?} is not an HTTP method", config.method)))?;
        let (client, secrets) = client_with_headers(name, &config.headers, config.timeout)?;
        let oauth = config
            .oauth2
            .as_ref()
            .map(|oauth| OAuth2::new(oauth, name, config.timeout))
            .transpose()?;
        Ok(HttpDestination {
            client,
            method,
            url,
            matching: matching.map(str::to_string),
            secrets,
            oauth,
        })
    }
}

#[async_trait]
impl Destination for HttpDestination {
    /// A TCP connection to the endpoint's host: the generic contract has no
    /// request that is safe to send for a test.
    async fn check_connection(&self) -> Result<(), String> {
        let url = reqwest::Url::parse(&self.url).map_err(|e| format!("url: {e}"))?;
        let host = url.host_str().ok_or("the url has no host")?.to_string();
        let port = url.port_or_known_default().ok_or("the url has no port")?;
        let connect = tokio::net::TcpStream::connect((host.as_str(), port));
        match tokio::time::timeout(std::time::Duration::from_secs(10), connect).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(format!("cannot connect to {host}:{port}: {error}")),
            Err(_) => Err(format!("no answer from {host}:{port} within 10s")),
        }
    }

    async fn send(&self, action: Action, records: &[Record<'_>]) -> Result<RowResults, DeliveryError> {
        let body = request::body(action, self.matching.as_deref(), records);
        let mut token = match &self.oauth {
            Some(oauth) => Some(oauth.token().await?),
            None => None,
        };
        let secrets = self.secrets();
        let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
        let mut exchange = crate::debugger::begin(&self.method, &self.url, Some(&body));
        let mut answer = self
            .post(&body, token.as_ref())
            .await
            .map_err(|e| crate::debugger::begin(&self.method, &self.url, Some(&body)).failed(e, &secrets))?;
        // A token revoked before it expired: one new token, one more try.
        if let (401, Some(oauth), Some(refused)) = (answer.status().as_u16(), &self.oauth, &token) {
            exchange.answered(401, b"", &secrets);
            oauth.refused(refused).await;
            token = Some(oauth.token().await?);
            exchange = crate::debugger::begin(&self.method, &self.url, Some(&body));
            answer = self.post(&body, token.as_ref()).await?;
        }
        let status = answer.status();
        let retry_after = answer
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(response::parse_retry_after);
        let answered = answer
            .bytes()
            .await
            .map_err(|e| super::transport_error(e, "", &secrets))?;
        exchange.answered(status.as_u16(), &answered, &secrets);
        response::classify(status.as_u16(), retry_after, &answered, records.len(), &secrets)
    }
}

impl HttpDestination {
    /// The resolved header values and every OAuth secret so far.
    fn secrets(&self) -> Vec<String> {
        let mut secrets = self.secrets.clone();
        if let Some(oauth) = &self.oauth {
            secrets.extend(oauth.secrets());
        }
        secrets
    }

    async fn post(&self, body: &[u8], token: Option<&Token>) -> Result<reqwest::Response, DeliveryError> {
        let mut request = self
            .client
            .request(self.method.clone(), &self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if let Some(token) = token {
            request = request.bearer_auth(&token.access_token);
        }
        // The destination's own tracing, if it has any, joins the run's trace.
        let mut trace_headers = std::collections::BTreeMap::new();
        ebb_shared::telemetry::inject(&mut trace_headers);
        for (name, value) in &trace_headers {
            request = request.header(name.as_str(), value.as_str());
        }
        request.body(body.to_vec()).send().await.map_err(|e| {
            let secrets = self.secrets();
            let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
            super::transport_error(e, "", &secrets)
        })
    }
}
