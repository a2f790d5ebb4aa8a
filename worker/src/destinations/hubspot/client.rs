//! One authenticated HubSpot API client: the private app's token as a Bearer
//! header, answers classified by `response`, and no URL or token in any error.

use super::response;
use super::HubSpotConfig;
use crate::debugger;
use crate::destinations::DeliveryError;
use crate::error::TaskError;
use ebb_shared::config::expand_env;
use serde_json::Value;

pub(super) struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    pub fn new(config: &HubSpotConfig, name: &str) -> Result<Client, TaskError> {
        let token = expand_env(&config.access_token, &format!("destination {name:?} access_token"))?;
        let base = expand_env(&config.api_base_url, &format!("destination {name:?} api_base_url"))?;
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| TaskError::DestinationSetup {
                destination: name.to_string(),
                reason: e.to_string(),
            })?;
        Ok(Client {
            http,
            base: base.trim_end_matches('/').to_string(),
            token,
        })
    }

    pub fn secrets(&self) -> [&str; 1] {
        [self.token.as_str()]
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
        let mut request = self.http.request(method.clone(), &url).bearer_auth(&self.token);
        if let Some(sent) = &sent {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(sent.clone());
        }
        let exchange = debugger::begin(&method, &url, sent.as_deref());
        let answer = match request.send().await {
            Ok(answer) => answer,
            Err(error) => return Err(exchange.failed(self.transport(error), &self.secrets())),
        };
        let status = answer.status().as_u16();
        let retry_after = answer
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = match answer.bytes().await {
            Ok(bytes) => bytes,
            Err(error) => return Err(exchange.failed(self.transport(error), &self.secrets())),
        };
        exchange.answered(status, &bytes, &self.secrets());
        if (200..300).contains(&status) {
            Ok((status, bytes.to_vec()))
        } else {
            Err(response::failure(
                status,
                retry_after.as_deref(),
                &bytes,
                &self.secrets(),
            ))
        }
    }

    fn transport(&self, error: reqwest::Error) -> DeliveryError {
        crate::destinations::transport_error(error, "HubSpot", &self.secrets())
    }
}
