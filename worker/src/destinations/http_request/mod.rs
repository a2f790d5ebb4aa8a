//! HTTP Request: requests to any API, shaped per operation by Liquid
//! templates — a method, a URL and a body for rows added, changed and
//! removed — one request per row or one per batch. Hightouch's generic
//! destination; the `http` destination keeps Ebb's own batch contract. See
//! docs/destinations/http-request.md.

mod config;
mod request;
#[cfg(test)]
mod tests;

use super::oauth::{OAuth2, Token};
use super::settings::{self, Documented, Requested};
use super::{Connector, DeliveryError, Destination, Record, RowResults};
use crate::behaviour::Action;
use crate::error::TaskError;
use async_trait::async_trait;
pub use config::{BodyFormat, HttpRequestConfig, Operation};
use ebb_shared::config::{
    expand_env, BatchLimits, Capabilities, DeleteBehavior, DestinationProfile, FieldError, SyncMode, SyncSpec, SyncType,
};
use request::{Compiled, Kind};
use std::sync::Arc;

/// The connector.
pub struct HttpRequest;

/// The most rows a batched request carries.
const MAX_BATCH: usize = 1000;
const BATCH_BYTES: usize = 16 * 1024 * 1024;

fn operations(config: &HttpRequestConfig) -> [(&'static str, Option<&Operation>); 3] {
    [
        ("on_added", config.on_added.as_ref()),
        ("on_changed", config.on_changed.as_ref()),
        ("on_removed", config.on_removed.as_ref()),
    ]
}

/// Every configured operation sends whole batches.
fn all_batched(config: &HttpRequestConfig) -> bool {
    operations(config).iter().all(|(_, op)| op.is_none_or(|op| op.batched))
}

impl Connector for HttpRequest {
    const TYPE: &'static str = "http_request";
    type Config = HttpRequestConfig;

    fn profile(config: &Self::Config) -> Result<DestinationProfile, FieldError> {
        let batched = all_batched(config);
        if !batched && config.batch_size.is_some_and(|size| size > 1) {
            return Err(FieldError::at(
                &["batch_size"],
                "`batch_size` applies to batched operations: set `batched: true` on every operation (their \
                 templates then loop over `records`), or leave `batch_size` out for one request per row",
            ));
        }
        let documented = Documented {
            rate_limit: None,
            rate_window: None,
            max_concurrency: None,
            batch: BatchLimits {
                records: if batched { MAX_BATCH } else { 1 },
                bytes: BATCH_BYTES,
            },
            default_batch_size: if batched { 100 } else { 1 },
        };
        let requested = Requested {
            batch_size: config.batch_size,
            rate_limit: config.rate_limit,
            max_concurrency: config.max_concurrency,
        };
        let (limits, batch) = settings::apply(&documented, requested)?;
        if config.on_added.is_none() && config.on_removed.is_none() {
            return Err(FieldError::at(
                &["on_added"],
                "an http_request destination needs at least one operation: on_added, on_changed, on_removed",
            ));
        }
        if let Some(base) = &config.base_url {
            settings::check_url(base, "base_url")?;
        }
        for (name, operation) in operations(config) {
            if let Some(operation) = operation {
                Compiled::new(operation, config.base_url.is_some()).map_err(|(field, message)| {
                    FieldError::at(&[name, field], format!("`{name}.{field}`: {message}"))
                })?;
            }
        }
        if let Some(code) = config.retry_on.iter().find(|code| !(100..=599).contains(*code)) {
            return Err(FieldError::at(
                &["retry_on"],
                format!("`retry_on`: {code} is not an HTTP status"),
            ));
        }
        let mut expanded_settings = vec![(vec!["base_url".into()], config.base_url.clone().unwrap_or_default())];
        for (header, value) in &config.headers {
            expanded_settings.push((vec!["headers".into(), header.clone()], value.clone()));
        }
        if let Some(oauth2) = &config.oauth2 {
            expanded_settings.push((vec!["oauth2".into(), "token_url".into()], oauth2.token_url.clone()));
            expanded_settings.push((
                vec!["oauth2".into(), "client_secret".into()],
                oauth2.client_secret.clone(),
            ));
        }
        Ok(DestinationProfile {
            capabilities: Capabilities::ANY,
            limits,
            batch,
            max_retry_after: config.max_retry_after,
            expanded_settings,
        })
    }

    /// `HEAD base_url`: any answer but 401 and 403 shows the API reachable
    /// and the credentials not refused; there is no request known to be
    /// harmless beyond that.
    async fn test_connection(config: Self::Config, name: &str) -> Result<(), String> {
        let destination = HttpRequestDestination::with_config(config, name).map_err(|e| e.to_string())?;
        destination.check_connection().await
    }

    async fn open(config: Self::Config, spec: &SyncSpec) -> Result<Arc<dyn Destination>, TaskError> {
        let setup = |reason: String| TaskError::DestinationSetup {
            destination: spec.destination_name.clone(),
            reason,
        };
        let adds = spec.sync_type == SyncType::Event || spec.mode != SyncMode::Archive;
        if adds && config.on_added.is_none() && config.on_changed.is_none() {
            return Err(setup(format!(
                "a {} sync in mode {} sends rows entering the model: set `on_added`",
                spec.sync_type, spec.mode
            )));
        }
        let removes = matches!(spec.mode, SyncMode::Mirror | SyncMode::AddRemove | SyncMode::Archive)
            || spec.delete_behavior != DeleteBehavior::DoNothing;
        if removes && config.on_removed.is_none() {
            return Err(setup(format!(
                "a sync in mode {} (delete behaviour {}) sends rows leaving the model: set `on_removed`",
                spec.mode, spec.delete_behavior
            )));
        }
        let mut destination = HttpRequestDestination::with_config(config, &spec.destination_name)?;
        destination.matching = spec.record_matching.as_ref().map(|m| m.to.clone());
        Ok(Arc::new(destination))
    }
}

pub struct HttpRequestDestination {
    client: reqwest::Client,
    base_url: Option<String>,
    added: Option<Compiled>,
    changed: Option<Compiled>,
    removed: Option<Compiled>,
    format: BodyFormat,
    retry_on: Vec<u16>,
    /// Expanded header values, removed from every error text.
    secrets: Vec<String>,
    oauth: Option<OAuth2>,
    /// The field records are matched on: clearing keeps it.
    matching: Option<String>,
}

impl HttpRequestDestination {
    fn with_config(config: HttpRequestConfig, name: &str) -> Result<Self, TaskError> {
        let setup = |reason: String| TaskError::DestinationSetup {
            destination: name.to_string(),
            reason,
        };
        let (client, secrets) = super::http::client_with_headers(name, &config.headers, config.timeout)?;
        let base_url = config
            .base_url
            .as_deref()
            .map(|url| expand_env(url, &format!("destination {name:?} base_url")))
            .transpose()?
            .map(|url| url.trim_end_matches('/').to_string());
        let compile = |operation: &Option<Operation>| {
            operation
                .as_ref()
                .map(|op| Compiled::new(op, base_url.is_some()).map_err(|(field, e)| setup(format!("{field}: {e}"))))
                .transpose()
        };
        let oauth = config
            .oauth2
            .as_ref()
            .map(|oauth| OAuth2::new(oauth, name, config.timeout))
            .transpose()?;
        Ok(HttpRequestDestination {
            client,
            added: compile(&config.on_added)?,
            changed: compile(&config.on_changed)?,
            removed: compile(&config.on_removed)?,
            base_url,
            format: config.body_format,
            retry_on: config.retry_on,
            secrets,
            oauth,
            matching: None,
        })
    }

    fn secrets(&self) -> Vec<String> {
        let mut secrets = self.secrets.clone();
        if let Some(oauth) = &self.oauth {
            secrets.extend(oauth.secrets());
        }
        secrets
    }

    fn operation(&self, kind: Kind) -> Option<&Compiled> {
        match kind {
            Kind::Added => self.added.as_ref().or(self.changed.as_ref()),
            Kind::Changed => self.changed.as_ref().or(self.added.as_ref()),
            Kind::Removed => self.removed.as_ref(),
        }
    }

    /// A rendered URL made whole with `base_url`.
    fn resolve(&self, url: &str) -> Result<String, DeliveryError> {
        match (
            &self.base_url,
            url.starts_with("http://") || url.starts_with("https://"),
        ) {
            (_, true) => Ok(url.to_string()),
            (Some(base), false) => Ok(format!("{base}{}{url}", if url.starts_with('/') { "" } else { "/" })),
            (None, false) => Err(DeliveryError::Permanent(format!(
                "the URL template rendered {url:?}, not an http(s) URL, and there is no base_url"
            ))),
        }
    }

    async fn send_once(
        &self,
        request: &request::Rendered,
        url: &str,
        token: Option<&Token>,
    ) -> Result<reqwest::Response, DeliveryError> {
        let mut builder = self.client.request(request.method.clone(), url);
        if let Some(token) = token {
            builder = builder.bearer_auth(&token.access_token);
        }
        if let Some(body) = &request.body {
            let content_type = match self.format {
                BodyFormat::Json => "application/json",
                BodyFormat::Form => "application/x-www-form-urlencoded",
            };
            builder = builder
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(body.clone());
        }
        builder.send().await.map_err(|e| {
            let secrets = self.secrets();
            let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
            super::transport_error(e, "", &secrets)
        })
    }

    /// Sends one rendered request, renewing an OAuth token once after a 401;
    /// `Ok(Err(reason))` is a refusal that fails the request's rows alone.
    async fn deliver(&self, request: &request::Rendered, rows: usize) -> Result<Result<(), String>, DeliveryError> {
        let mut token = match &self.oauth {
            Some(oauth) => Some(oauth.token().await?),
            None => None,
        };
        let secrets = self.secrets();
        let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
        let url = self.resolve(&request.url)?;
        let note = || crate::debugger::begin(&request.method, &url, request.body.as_deref().map(str::as_bytes));
        let mut exchange = note();
        let mut answer = self
            .send_once(request, &url, token.as_ref())
            .await
            .map_err(|e| note().failed(e, &secrets))?;
        if let (401, Some(oauth), Some(refused)) = (answer.status().as_u16(), &self.oauth, &token) {
            exchange.answered(401, b"", &secrets);
            oauth.refused(refused).await;
            token = Some(oauth.token().await?);
            exchange = note();
            answer = self.send_once(request, &url, token.as_ref()).await?;
        }
        let status = answer.status().as_u16();
        let retry_after = answer
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(super::http::response::parse_retry_after);
        let body = answer
            .bytes()
            .await
            .map_err(|e| super::transport_error(e, "", &secrets))?;
        exchange.answered(status, &body, &secrets);
        let said = || {
            let excerpt = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
            ebb_shared::redact::redact_secrets(&format!("the API answered {status}: {excerpt}"), &secrets)
        };
        Ok(match status {
            200..=299 => Ok(()),
            429 => return Err(DeliveryError::RateLimited { retry_after }),
            status if self.retry_on.contains(&status) => return Err(DeliveryError::Transient(said())),
            401 | 403 => return Err(DeliveryError::Permanent(format!("{} (check the credentials)", said()))),
            // A batch refused for its content: halves find the rows at fault.
            400 | 413 | 422 if rows > 1 => return Err(DeliveryError::Rejected(said())),
            _ => Err(said()),
        })
    }
}

#[async_trait]
impl Destination for HttpRequestDestination {
    async fn check_connection(&self) -> Result<(), String> {
        let Some(base) = &self.base_url else {
            return Ok(());
        };
        let answer = self.client.head(base).send().await.map_err(|e| {
            let secrets = self.secrets();
            let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
            super::transport_error(e, "", &secrets).to_string()
        })?;
        match answer.status().as_u16() {
            401 | 403 => Err(format!("{base} answered {}: check the credentials", answer.status())),
            _ => Ok(()),
        }
    }

    async fn send(&self, action: Action, records: &[Record<'_>]) -> Result<RowResults, DeliveryError> {
        let mut results: RowResults = vec![Ok(()); records.len()];
        // Rows of one batch share an action, but an upsert's rows are added
        // or changed one by one: a request per kind.
        for kind in [Kind::Added, Kind::Changed, Kind::Removed] {
            let rows: Vec<usize> = (0..records.len())
                .filter(|&i| Kind::of(action, &records[i]) == kind)
                .collect();
            if rows.is_empty() {
                continue;
            }
            let Some(operation) = self.operation(kind) else {
                for row in rows {
                    results[row] = Err(format!("no operation is configured for {} rows", kind.as_str()));
                }
                continue;
            };
            // Clearing sends the mapped fields as nulls, but the matching one.
            let cleared: Vec<String> = if action == Action::ClearFields {
                rows.iter()
                    .map(|&i| super::cleared(records[i].json, self.matching.as_deref()))
                    .collect()
            } else {
                Vec::new()
            };
            let chosen: Vec<Record<'_>> = rows
                .iter()
                .enumerate()
                .map(|(n, &i)| match cleared.get(n) {
                    Some(json) => Record { json, ..records[i] },
                    None => records[i],
                })
                .collect();
            let requests = operation.render(action, kind, &chosen, self.format);
            for (positions, rendered) in requests {
                let outcome = match rendered {
                    Ok(request) => self.deliver(&request, positions.len()).await?,
                    Err(reason) => Err(reason),
                };
                for position in positions {
                    results[rows[position]] = outcome.clone();
                }
            }
        }
        Ok(results)
    }
}
