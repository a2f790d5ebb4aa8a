//! One authenticated HubSpot API client: the private app's token as a Bearer
//! header, answers classified by `response`, and no URL or token in any error.

use super::response;
use super::HubSpotConfig;
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
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let answer = request.send().await.map_err(|e| self.transport(e))?;
        let status = answer.status().as_u16();
        let retry_after = answer
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = answer.bytes().await.map_err(|e| self.transport(e))?;
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
