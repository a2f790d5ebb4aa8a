//! BigQuery's REST API v2 as the source uses it: a service account's OAuth
//! token (the JWT-bearer grant at the key's `token_uri`), `jobs.query` and
//! `jobs.getQueryResults`, and errors read from Google's error envelope.

use crate::error::TaskError;
use crate::jwt;
use ebb_shared::config::{expand_env, BigquerySourceConfig};
use serde::Deserialize;
use std::time::{Duration, Instant};

pub const DEFAULT_ENDPOINT: &str = "https://bigquery.googleapis.com";
const SCOPE: &str = "https://www.googleapis.com/auth/bigquery";
/// How long one request may take, a long poll included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Tries of one request through throttling and BigQuery's passing faults.
const TRIES: u32 = 5;

#[derive(Deserialize)]
struct ServiceAccountKey {
    client_email: String,
    private_key: String,
    #[serde(default)]
    private_key_id: Option<String>,
    #[serde(default = "default_token_uri")]
    token_uri: String,
}

fn default_token_uri() -> String {
    "https://oauth2.googleapis.com/token".to_string()
}

pub(super) struct Client {
    http: reqwest::Client,
    base: String,
    project: String,
    source_name: String,
    model_name: String,
    email: String,
    key: rsa::RsaPrivateKey,
    key_id: Option<String>,
    token_uri: String,
    token: tokio::sync::Mutex<Option<(String, Instant)>>,
}

/// What a failed call means for the read.
enum Failure {
    /// Worth the same request again shortly: throttling, a passing fault.
    Passing(String),
    /// The query or what it reads is wrong: the model's to fix.
    Query(String),
    /// Credentials, permissions, the project: the source's to fix.
    Source(String),
}

impl Client {
    pub(super) fn new(source_name: &str, model_name: &str, config: &BigquerySourceConfig) -> Result<Client, TaskError> {
        let unreachable = |reason: String| TaskError::SourceUnreachable {
            source_name: source_name.to_string(),
            reason,
        };
        let key_text = match (&config.credentials_json, &config.credentials_file) {
            (Some(json), _) => expand_env(json, &format!("source {source_name:?} credentials_json"))?,
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| unreachable(format!("cannot read the key file {}: {e}", path.display())))?,
            (None, None) => return Err(unreachable("no credentials_json or credentials_file".into())),
        };
        let key: ServiceAccountKey = serde_json::from_str(&key_text).map_err(|e| {
            unreachable(format!(
                "the credentials are not a service account's JSON key (client_email, private_key, token_uri): {}",
                // The text may hold the key: say where, never what.
                e.to_string().split(" at line").next().unwrap_or_default()
            ))
        })?;
        let private_key = jwt::private_key(&key.private_key).map_err(unreachable)?;
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| unreachable(format!("cannot build an HTTP client: {e}")))?;
        Ok(Client {
            http,
            base: config
                .endpoint
                .as_deref()
                .unwrap_or(DEFAULT_ENDPOINT)
                .trim_end_matches('/')
                .to_string(),
            project: config.project.clone(),
            source_name: source_name.to_string(),
            model_name: model_name.to_string(),
            email: key.client_email,
            key: private_key,
            key_id: key.private_key_id,
            token_uri: key.token_uri,
            token: tokio::sync::Mutex::new(None),
        })
    }

    /// A bearer token, fetched again a minute before it expires.
    async fn token(&self) -> Result<String, TaskError> {
        let mut held = self.token.lock().await;
        if let Some((token, until)) = held.as_ref() {
            if Instant::now() < *until {
                return Ok(token.clone());
            }
        }
        let now = chrono::Utc::now().timestamp();
        let claims = serde_json::json!({
            "iss": self.email,
            "scope": SCOPE,
            "aud": self.token_uri,
            "iat": now,
            "exp": now + 3600,
        });
        let assertion = jwt::sign_rs256(&claims, &self.key, self.key_id.as_deref());
        let answer = self
            .http
            .post(&self.token_uri)
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", assertion.as_str()),
            ])
            .send()
            .await
            .map_err(|e| self.unreachable(format!("the token endpoint did not answer: {}", e.without_url())))?;
        let status = answer.status();
        let body: serde_json::Value = answer.json().await.unwrap_or_default();
        if !status.is_success() {
            let reason = body["error_description"]
                .as_str()
                .or(body["error"].as_str())
                .unwrap_or("no reason given");
            return Err(self.unreachable(format!(
                "the service account {} was refused a token ({status}): {reason}",
                self.email
            )));
        }
        let token = body["access_token"]
            .as_str()
            .ok_or_else(|| self.unreachable("the token endpoint answered without an access_token".into()))?
            .to_string();
        let lifetime = body["expires_in"].as_u64().unwrap_or(3600);
        let until = Instant::now() + Duration::from_secs(lifetime.saturating_sub(60));
        *held = Some((token.clone(), until));
        Ok(token)
    }

    fn unreachable(&self, reason: String) -> TaskError {
        TaskError::SourceUnreachable {
            source_name: self.source_name.clone(),
            reason,
        }
    }

    /// `jobs.query`: starts the query and answers its first page when it is
    /// done within the call.
    pub(super) async fn query(&self, body: serde_json::Value) -> Result<QueryResponse, TaskError> {
        let url = format!("{}/bigquery/v2/projects/{}/queries", self.base, self.project);
        self.call(reqwest::Method::POST, &url, &[], Some(&body)).await
    }

    /// `jobs.getQueryResults`: the job's state, or a page of its rows.
    pub(super) async fn results(
        &self,
        job: &JobReference,
        query: &[(&str, String)],
    ) -> Result<QueryResponse, TaskError> {
        let url = format!(
            "{}/bigquery/v2/projects/{}/queries/{}",
            self.base, job.project_id, job.job_id
        );
        let mut query = query.to_vec();
        if let Some(location) = &job.location {
            query.push(("location", location.clone()));
        }
        self.call(reqwest::Method::GET, &url, &query, None).await
    }

    /// `jobs.cancel`, best effort: a read that stops early leaves no job running.
    pub(super) async fn cancel(&self, job: &JobReference) {
        let url = format!(
            "{}/bigquery/v2/projects/{}/jobs/{}/cancel",
            self.base, job.project_id, job.job_id
        );
        let mut query = Vec::new();
        if let Some(location) = &job.location {
            query.push(("location", location.clone()));
        }
        let _ = self
            .call::<serde_json::Value>(reqwest::Method::POST, &url, &query, None)
            .await;
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        url: &str,
        query: &[(&str, String)],
        body: Option<&serde_json::Value>,
    ) -> Result<T, TaskError> {
        let mut pause = Duration::from_millis(250);
        let mut tries = 0;
        loop {
            tries += 1;
            let token = self.token().await?;
            let mut request = self.http.request(method.clone(), url).query(query).bearer_auth(token);
            if let Some(body) = body {
                request = request.json(body);
            }
            let failure = match request.send().await {
                Ok(answer) if answer.status().is_success() => {
                    return answer.json::<T>().await.map_err(|e| {
                        self.read_failed(format!("an answer of BigQuery is unreadable: {}", e.without_url()))
                    })
                }
                Ok(answer) => {
                    let status = answer.status();
                    let text = answer.text().await.unwrap_or_default();
                    classify(status, &text)
                }
                Err(error) => Failure::Passing(format!("BigQuery did not answer: {}", error.without_url())),
            };
            match failure {
                Failure::Passing(reason) if tries < TRIES => {
                    tracing::debug!(%reason, tries, "BigQuery: trying again");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    if reason.contains("(401") {
                        // An expired or revoked token: fetch another.
                        *self.token.lock().await = None;
                    }
                }
                Failure::Passing(reason) => return Err(self.read_failed(reason)),
                Failure::Query(reason) => {
                    return Err(TaskError::Query {
                        model: self.model_name.clone(),
                        reason,
                    })
                }
                Failure::Source(reason) => return Err(self.unreachable(reason)),
            }
        }
    }

    fn read_failed(&self, reason: String) -> TaskError {
        TaskError::SourceRead {
            source_name: self.source_name.clone(),
            reason,
        }
    }
}

/// What an error answer means, from Google's envelope
/// `{"error": {"code", "message", "errors": [{"reason", "message"}]}}`: the
/// reason decides, since a 403 is throttling or a refusal alike.
fn classify(status: reqwest::StatusCode, text: &str) -> Failure {
    let envelope: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
    let error = &envelope["error"];
    let reason = error["errors"][0]["reason"].as_str().unwrap_or_default();
    let message = error["message"].as_str().unwrap_or(text).trim();
    let described = format!(
        "{message} ({}{})",
        status.as_u16(),
        if reason.is_empty() {
            String::new()
        } else {
            format!(" {reason}")
        }
    );
    match reason {
        "rateLimitExceeded" | "backendError" | "internalError" | "badGateway" | "jobRateLimitExceeded" => {
            return Failure::Passing(described)
        }
        "invalidQuery" | "invalid" | "notFound" | "resourcesExceeded" | "responseTooLarge" | "duplicate" => {
            return Failure::Query(described)
        }
        "accessDenied" | "billingNotEnabled" | "quotaExceeded" | "projectNotFound" => {
            return Failure::Source(described)
        }
        _ => {}
    }
    match status.as_u16() {
        401 => Failure::Passing(described),
        429 | 500 | 502 | 503 | 504 => Failure::Passing(described),
        400 | 404 => Failure::Query(described),
        _ => Failure::Source(described),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct JobReference {
    pub project_id: String,
    pub job_id: String,
    #[serde(default)]
    pub location: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct QueryResponse {
    #[serde(default)]
    pub schema: Option<Schema>,
    #[serde(default)]
    pub job_reference: Option<JobReference>,
    #[serde(default)]
    pub job_complete: Option<bool>,
    #[serde(default)]
    pub page_token: Option<String>,
    #[serde(default)]
    pub rows: Vec<TableRow>,
    #[serde(default)]
    pub errors: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct Schema {
    #[serde(default)]
    pub fields: Vec<Field>,
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct Field {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub fields: Vec<Field>,
}

#[derive(Debug, Deserialize)]
pub(super) struct TableRow {
    #[serde(default)]
    pub f: Vec<Cell>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Cell {
    #[serde(default)]
    pub v: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_decides_what_an_error_means() {
        let envelope = |code: u16, reason: &str| {
            format!(
                r#"{{"error": {{"code": {code}, "message": "m", "errors": [{{"reason": "{reason}", "message": "m"}}]}}}}"#
            )
        };
        let kind = |failure: Failure| match failure {
            Failure::Passing(_) => "passing",
            Failure::Query(_) => "query",
            Failure::Source(_) => "source",
        };
        let status = |code: u16| reqwest::StatusCode::from_u16(code).unwrap();
        assert_eq!(
            kind(classify(status(403), &envelope(403, "rateLimitExceeded"))),
            "passing"
        );
        assert_eq!(kind(classify(status(403), &envelope(403, "quotaExceeded"))), "source");
        assert_eq!(kind(classify(status(403), &envelope(403, "accessDenied"))), "source");
        assert_eq!(kind(classify(status(400), &envelope(400, "invalidQuery"))), "query");
        assert_eq!(kind(classify(status(503), "<html>proxy</html>")), "passing");
        let Failure::Query(text) = classify(status(404), &envelope(404, "notFound")) else {
            panic!("not found is the query's")
        };
        assert_eq!(text, "m (404 notFound)");
    }
}
