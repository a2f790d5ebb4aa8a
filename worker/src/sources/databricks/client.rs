//! The Statement Execution API as the source uses it: a bearer token (a
//! personal access token, or a service principal's from the workspace's
//! `/oidc/v1/token`), statements submitted and polled, chunk links fetched,
//! and errors read from `{error_code, message}` or a statement's
//! `status.error`.

use super::ColumnInfo;
use crate::error::TaskError;
use ebb_shared::config::{expand_env, DatabricksSourceConfig};
use serde::Deserialize;
use serde_json::{json, Value as Json};
use std::time::{Duration, Instant};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Tries of one request through 429 and 503 answers.
const TRIES: u32 = 6;
/// The longest `Retry-After` waited out in place.
const LONGEST_RETRY_AFTER: Duration = Duration::from_secs(30);

enum Credential {
    Token(String),
    ServicePrincipal { client_id: String, secret: String },
}

pub(super) struct Client {
    http: reqwest::Client,
    host: String,
    config: DatabricksSourceConfig,
    credential: Credential,
    source_name: String,
    model_name: String,
    oauth: tokio::sync::Mutex<Option<(String, Instant)>>,
}

/// A statement that succeeded: its columns and where its rows are.
pub(super) struct Statement {
    pub id: String,
    pub columns: Vec<ColumnInfo>,
    pub chunk_count: usize,
    /// The first chunk's answer, when the statement's came with it.
    pub first_chunk: Option<ResultData>,
}

#[derive(Debug, Deserialize)]
struct StatementResponse {
    statement_id: Option<String>,
    #[serde(default)]
    status: Status,
    #[serde(default)]
    manifest: Option<Manifest>,
    #[serde(default)]
    result: Option<ResultData>,
}

#[derive(Debug, Default, Deserialize)]
struct Status {
    #[serde(default)]
    state: String,
    #[serde(default)]
    error: Option<Json>,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    #[serde(default)]
    schema: ManifestSchema,
    #[serde(default)]
    total_chunk_count: Option<usize>,
    #[serde(default)]
    truncated: bool,
}

#[derive(Debug, Default, Deserialize)]
struct ManifestSchema {
    #[serde(default)]
    columns: Vec<ColumnInfo>,
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct ResultData {
    #[serde(default)]
    data_array: Option<Vec<Vec<Option<String>>>>,
    #[serde(default)]
    external_links: Vec<ExternalLink>,
}

#[derive(Debug, Clone, Deserialize)]
struct ExternalLink {
    external_link: String,
    #[serde(default)]
    http_headers: std::collections::BTreeMap<String, String>,
}

impl Client {
    pub(super) fn new(
        source_name: &str,
        model_name: &str,
        config: &DatabricksSourceConfig,
    ) -> Result<Client, TaskError> {
        let unreachable = |reason: String| TaskError::SourceUnreachable {
            source_name: source_name.to_string(),
            reason,
        };
        let credential = match (&config.token, &config.client_id, &config.client_secret) {
            (Some(token), _, _) => Credential::Token(expand_env(token, &format!("source {source_name:?} token"))?),
            (None, Some(id), Some(secret)) => Credential::ServicePrincipal {
                client_id: expand_env(id, &format!("source {source_name:?} client_id"))?,
                secret: expand_env(secret, &format!("source {source_name:?} client_secret"))?,
            },
            _ => return Err(unreachable("no token, or client_id and client_secret".into())),
        };
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| unreachable(format!("cannot build an HTTP client: {e}")))?;
        Ok(Client {
            http,
            host: config.host.trim_end_matches('/').to_string(),
            config: config.clone(),
            credential,
            source_name: source_name.to_string(),
            model_name: model_name.to_string(),
            oauth: tokio::sync::Mutex::new(None),
        })
    }

    fn unreachable(&self, reason: String) -> TaskError {
        TaskError::SourceUnreachable {
            source_name: self.source_name.clone(),
            reason,
        }
    }

    pub(super) fn read_failed(&self, reason: String) -> TaskError {
        TaskError::SourceRead {
            source_name: self.source_name.clone(),
            reason,
        }
    }

    /// The bearer token: the personal access token, or the service
    /// principal's, fetched again a minute before it expires.
    async fn bearer(&self) -> Result<String, TaskError> {
        let (client_id, secret) = match &self.credential {
            Credential::Token(token) => return Ok(token.clone()),
            Credential::ServicePrincipal { client_id, secret } => (client_id, secret),
        };
        let mut held = self.oauth.lock().await;
        if let Some((token, until)) = held.as_ref() {
            if Instant::now() < *until {
                return Ok(token.clone());
            }
        }
        let answer = self
            .http
            .post(format!("{}/oidc/v1/token", self.host))
            .basic_auth(client_id, Some(secret))
            .form(&[("grant_type", "client_credentials"), ("scope", "all-apis")])
            .send()
            .await
            .map_err(|e| {
                self.unreachable(format!(
                    "the workspace's token endpoint did not answer: {}",
                    e.without_url()
                ))
            })?;
        let status = answer.status();
        let body: Json = answer.json().await.unwrap_or_default();
        let Some(token) = body["access_token"].as_str().filter(|_| status.is_success()) else {
            let reason = body["error_description"]
                .as_str()
                .or(body["error"].as_str())
                .unwrap_or("no reason given");
            return Err(self.unreachable(format!(
                "the service principal {client_id} was refused a token ({}): {reason}",
                status.as_u16()
            )));
        };
        let lifetime = body["expires_in"].as_u64().unwrap_or(3600);
        *held = Some((
            token.to_string(),
            Instant::now() + Duration::from_secs(lifetime.saturating_sub(60)),
        ));
        Ok(token.to_string())
    }

    /// Submits a statement and waits for it to succeed, cancelling it past
    /// `deadline`. Its id goes into `running` as soon as it is known, for a
    /// caller that stops waiting to cancel it.
    pub(super) async fn execute(
        &self,
        sql: &str,
        deadline: Instant,
        running: &std::sync::Mutex<Option<String>>,
    ) -> Result<Statement, TaskError> {
        let mut body = json!({
            "statement": sql,
            "warehouse_id": self.config.warehouse_id,
            "disposition": "EXTERNAL_LINKS",
            "format": "JSON_ARRAY",
            "wait_timeout": "10s",
            "on_wait_timeout": "CONTINUE",
        });
        if let Some(catalog) = &self.config.catalog {
            body["catalog"] = Json::String(catalog.clone());
        }
        if let Some(schema) = &self.config.schema {
            body["schema"] = Json::String(schema.clone());
        }
        let mut answer: StatementResponse = self
            .call(reqwest::Method::POST, "/api/2.0/sql/statements", Some(&body))
            .await?;
        loop {
            let id = answer
                .statement_id
                .clone()
                .ok_or_else(|| self.read_failed("the warehouse answered without a statement_id".into()))?;
            *running.lock().expect("statement id") = Some(id.clone());
            match answer.status.state.as_str() {
                "SUCCEEDED" => return self.succeeded(id, answer),
                "PENDING" | "RUNNING" => {}
                "FAILED" => {
                    let error = answer.status.error.unwrap_or_default();
                    let message = error["message"].as_str().unwrap_or("the statement failed");
                    return Err(TaskError::Query {
                        model: self.model_name.clone(),
                        reason: match error["error_code"].as_str() {
                            Some(code) => format!("{message} ({code})"),
                            None => message.to_string(),
                        },
                    });
                }
                other => return Err(self.read_failed(format!("the statement {id} ended {other} before its result"))),
            }
            if Instant::now() >= deadline {
                self.cancel(&id).await;
                return Err(TaskError::Query {
                    model: self.model_name.clone(),
                    reason: format!("the statement ran longer than query_timeout; {id} was cancelled"),
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            answer = self
                .call(reqwest::Method::GET, &format!("/api/2.0/sql/statements/{id}"), None)
                .await?;
        }
    }

    fn succeeded(&self, id: String, answer: StatementResponse) -> Result<Statement, TaskError> {
        let manifest = answer
            .manifest
            .ok_or_else(|| self.read_failed(format!("the statement {id} succeeded without a manifest")))?;
        if manifest.truncated {
            tracing::warn!(statement = %id, "Databricks truncated the result (over 100 GiB)");
            return Err(TaskError::Query {
                model: self.model_name.clone(),
                reason: "the result is larger than Databricks serves (100 GiB) and came truncated: filter the model"
                    .into(),
            });
        }
        Ok(Statement {
            id,
            columns: manifest.schema.columns,
            chunk_count: manifest.total_chunk_count.unwrap_or(1),
            first_chunk: answer.result,
        })
    }

    /// Asks the warehouse to stop a statement, best effort.
    pub(super) async fn cancel(&self, id: &str) {
        let _ = self
            .call::<Json>(
                reqwest::Method::POST,
                &format!("/api/2.0/sql/statements/{id}/cancel"),
                None,
            )
            .await;
    }

    /// One chunk's rows: its links (from the statement's answer for the
    /// first), each downloaded without the workspace's token.
    pub(super) async fn chunk(
        &self,
        id: &str,
        index: usize,
        known: Option<ResultData>,
    ) -> Result<Vec<Vec<Option<String>>>, TaskError> {
        let data = match known {
            Some(data) => data,
            None => {
                self.call(
                    reqwest::Method::GET,
                    &format!("/api/2.0/sql/statements/{id}/result/chunks/{index}"),
                    None,
                )
                .await?
            }
        };
        if let Some(rows) = data.data_array {
            return Ok(rows);
        }
        let mut rows = Vec::new();
        for link in &data.external_links {
            rows.extend(self.download(link).await?);
        }
        Ok(rows)
    }

    /// A presigned link: its own headers, never the workspace's token.
    async fn download(&self, link: &ExternalLink) -> Result<Vec<Vec<Option<String>>>, TaskError> {
        let headers: Vec<(String, String)> = link.http_headers.clone().into_iter().collect();
        let bytes = super::super::download_chunk(&self.http, &link.external_link, &headers)
            .await
            .map_err(|e| self.read_failed(e))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| self.read_failed(format!("a result chunk is not a JSON array of rows: {e}")))
    }

    /// One call of the API, tried again through 429 and 503 (waiting their
    /// `Retry-After`) and other 5xx.
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Json>,
    ) -> Result<T, TaskError> {
        let url = format!("{}{path}", self.host);
        let mut tries = 0;
        let mut pause = Duration::from_millis(250);
        loop {
            tries += 1;
            let mut request = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(self.bearer().await?);
            if let Some(body) = body {
                request = request.json(body);
            }
            let answer = match request.send().await {
                Ok(answer) => answer,
                // Nothing listens there: the workspace's to fix (or to come
                // back); extraction is tried again later as a whole.
                Err(error) if error.is_connect() => {
                    return Err(self.unreachable(format!("the workspace did not answer: {}", error.without_url())))
                }
                Err(error) if tries < TRIES => {
                    tracing::debug!(error = %error.without_url(), "Databricks: trying again");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    continue;
                }
                Err(error) => {
                    return Err(self.read_failed(format!("Databricks did not answer: {}", error.without_url())))
                }
            };
            let status = answer.status();
            if status.is_success() {
                return answer.json::<T>().await.map_err(|e| {
                    self.read_failed(format!("an answer of Databricks is unreadable: {}", e.without_url()))
                });
            }
            let retry_after = answer
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let body: Json = answer.json().await.unwrap_or_default();
            let message = body["message"].as_str().unwrap_or("no message");
            let described = match body["error_code"].as_str() {
                Some(code) => format!("{message} ({} {code})", status.as_u16()),
                None => format!("{message} ({})", status.as_u16()),
            };
            let passing = status.as_u16() == 429 || status.is_server_error();
            if passing && tries < TRIES {
                tokio::time::sleep(retry_after.unwrap_or(pause).min(LONGEST_RETRY_AFTER)).await;
                pause *= 2;
                continue;
            }
            return Err(match status.as_u16() {
                _ if passing => self.read_failed(described),
                401 | 403 => {
                    if matches!(self.credential, Credential::ServicePrincipal { .. }) {
                        *self.oauth.lock().await = None;
                    }
                    self.unreachable(format!("the workspace refused the credentials: {described}"))
                }
                404 => self.unreachable(format!(
                    "not found (warehouse {}?): {described}",
                    self.config.warehouse_id
                )),
                _ => TaskError::Query {
                    model: self.model_name.clone(),
                    reason: described,
                },
            });
        }
    }
}
