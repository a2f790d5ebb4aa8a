//! One authenticated HubSpot API client: a private app's token or a public
//! app's OAuth grant as a Bearer header (renewed once after a `401`, and
//! before it expires), answers classified by `response`, and no URL or token
//! in any error.

use super::config::{TOKEN_PATH, V1_TOKEN_PATH};
use super::response;
use super::HubSpotConfig;
use crate::debugger;
use crate::destinations::oauth::{Credentials, OAuth2, OAuth2Config};
use crate::destinations::DeliveryError;
use crate::error::TaskError;
use ebb_shared::config::expand_env;
use serde_json::Value;

pub(super) struct Client {
    http: reqwest::Client,
    base: String,
    auth: Credentials,
}

impl Client {
    pub fn new(config: &HubSpotConfig, name: &str) -> Result<Client, TaskError> {
        let base = expand_env(&config.api_base_url, &format!("destination {name:?} api_base_url"))?;
        let base = base.trim_end_matches('/').to_string();
        let auth = match (&config.access_token, &config.oauth2) {
            (Some(token), None) => {
                Credentials::Fixed(expand_env(token, &format!("destination {name:?} access_token"))?)
            }
            (None, Some(oauth2)) => {
                let grant = OAuth2Config {
                    token_url: oauth2
                        .token_url
                        .clone()
                        .unwrap_or_else(|| format!("{base}{TOKEN_PATH}")),
                    client_id: oauth2.client_id.clone(),
                    client_secret: oauth2.client_secret.clone(),
                    refresh_token: Some(oauth2.refresh_token.clone()),
                    scope: None,
                };
                let mut oauth = OAuth2::new(&grant, name, config.timeout)?;
                if oauth2.token_url.is_none() {
                    oauth = oauth.with_fallback(format!("{base}{V1_TOKEN_PATH}"));
                }
                Credentials::OAuth2(Box::new(oauth))
            }
            _ => {
                return Err(TaskError::DestinationSetup {
                    destination: name.to_string(),
                    reason: "set one of `access_token` and `oauth2`".into(),
                })
            }
        };
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| TaskError::DestinationSetup {
                destination: name.to_string(),
                reason: e.to_string(),
            })?;
        Ok(Client { http, base, auth })
    }

    pub fn secrets(&self) -> Vec<String> {
        self.auth.secrets()
    }

    /// Sends one request and returns the body of a 2xx answer.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Vec<u8>), DeliveryError> {
        let url = format!("{}{path}", self.base);
        let sent = body.map(|body| serde_json::to_vec(body).expect("JSON values serialize"));
        let mut renewed = false;
        loop {
            let token = self.auth.token().await?;
            let mut request = self.http.request(method.clone(), &url).bearer_auth(&token.access_token);
            if let Some(sent) = &sent {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(sent.clone());
            }
            let secrets = self.secrets();
            let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
            let exchange = debugger::begin(&method, &url, sent.as_deref());
            let answer = match request.send().await {
                Ok(answer) => answer,
                Err(error) => return Err(exchange.failed(self.transport(error), &secrets)),
            };
            let status = answer.status().as_u16();
            let retry_after = answer
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let bytes = match answer.bytes().await {
                Ok(bytes) => bytes,
                Err(error) => return Err(exchange.failed(self.transport(error), &secrets)),
            };
            exchange.answered(status, &bytes, &secrets);
            if (200..300).contains(&status) {
                return Ok((status, bytes.to_vec()));
            }
            // EXPIRED_AUTHENTICATION: the OAuth token ran out early or was
            // revoked; a private app's token cannot be renewed.
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
        crate::destinations::transport_error(error, "HubSpot", &secrets)
    }
}
