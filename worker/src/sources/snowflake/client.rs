//! The REST protocol Snowflake's drivers speak, as far as reading a query's
//! result needs it: a session from `POST /session/v1/login-request`
//! (password, or a key pair's RS256 JWT), `POST /queries/v1/query-request`
//! with the session token (`Authorization: Snowflake Token="…"`), a query
//! still running polled at its `getResultUrl`, result chunks downloaded from
//! their URLs without the session's header (with `chunkHeaders` or the
//! `qrmk` key), and the session closed with `POST /session?delete=true`.
//!
//! Errors come in the body (`success: false`, a `code` and a `message`),
//! mostly with status 200: a SQL error is the model's; a login refused is the
//! source's; `390112` (session expired) and a 401 log in again once.

use super::values::ColumnType;
use crate::error::TaskError;
use crate::jwt;
use ebb_shared::config::{expand_env, SnowflakeSourceConfig};
use serde::Deserialize;
use serde_json::{json, Value as Json};
use std::time::{Duration, Instant};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// Codes of a query that is still running: poll `getResultUrl`.
const STILL_RUNNING: [&str; 2] = ["333333", "333334"];
/// The session token expired: log in again.
const SESSION_EXPIRED: &str = "390112";
/// Tries of one request through Snowflake's passing faults (429, 5xx).
const TRIES: u32 = 5;

enum Credential {
    Password(String),
    KeyPair(Box<rsa::RsaPrivateKey>),
}

pub(super) struct Client {
    http: reqwest::Client,
    base: String,
    config: SnowflakeSourceConfig,
    credential: Credential,
    source_name: String,
    model_name: String,
    token: tokio::sync::Mutex<Option<String>>,
}

/// A query's first answer: its columns, the rows sent inline, and the chunks
/// holding the rest.
pub(super) struct QueryResult {
    pub columns: Vec<ColumnType>,
    pub arrow: bool,
    /// Arrow rows sent inline, still base64: a slice of the answer's bytes,
    /// decoded as they are read.
    pub inline_base64: bytes::Bytes,
    /// JSON rows sent inline.
    pub inline_json: Option<Json>,
    pub chunk_urls: Vec<String>,
    pub chunk_headers: Vec<(String, String)>,
}

/// An answer of `query-request` (or of its `getResultUrl`), typed so that a
/// large inline result is never copied: `rowsetBase64` is borrowed from the
/// answer's bytes.
#[derive(Deserialize)]
struct Answer<'a> {
    #[serde(default)]
    success: bool,
    #[serde(default)]
    code: Option<Json>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default, borrow)]
    data: Option<AnswerData<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AnswerData<'a> {
    #[serde(default)]
    rowtype: Vec<ColumnType>,
    #[serde(default)]
    query_result_format: Option<String>,
    /// Borrowed as raw JSON text: serde copies a string it deserializes
    /// inside an `Option`.
    #[serde(default, borrow)]
    rowset_base64: Option<&'a serde_json::value::RawValue>,
    #[serde(default)]
    rowset: Option<Json>,
    #[serde(default)]
    chunks: Vec<Chunk>,
    #[serde(default)]
    chunk_headers: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    qrmk: Option<String>,
    #[serde(default)]
    get_result_url: Option<String>,
    #[serde(default)]
    query_id: Option<String>,
}

#[derive(Deserialize)]
struct Chunk {
    url: String,
}

impl Answer<'_> {
    fn code(&self) -> String {
        match &self.code {
            Some(Json::String(code)) => code.clone(),
            Some(Json::Number(code)) => code.to_string(),
            _ => String::new(),
        }
    }

    fn error_text(&self) -> String {
        error_text(&json!({"code": self.code(), "message": self.message}))
    }
}

impl Client {
    pub(super) fn new(
        source_name: &str,
        model_name: &str,
        config: &SnowflakeSourceConfig,
    ) -> Result<Client, TaskError> {
        let unreachable = |reason: String| TaskError::SourceUnreachable {
            source_name: source_name.to_string(),
            reason,
        };
        let credential = match (&config.password, &config.private_key, &config.private_key_file) {
            (Some(password), _, _) => {
                Credential::Password(expand_env(password, &format!("source {source_name:?} password"))?)
            }
            (None, Some(pem), _) => Credential::KeyPair(Box::new(
                jwt::private_key(&expand_env(pem, &format!("source {source_name:?} private_key"))?)
                    .map_err(unreachable)?,
            )),
            (None, None, Some(path)) => {
                let pem = std::fs::read_to_string(path)
                    .map_err(|e| unreachable(format!("cannot read the private key file {}: {e}", path.display())))?;
                Credential::KeyPair(Box::new(jwt::private_key(&pem).map_err(unreachable)?))
            }
            (None, None, None) => return Err(unreachable("no password, private_key or private_key_file".into())),
        };
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| unreachable(format!("cannot build an HTTP client: {e}")))?;
        let base = match &config.endpoint {
            Some(endpoint) => endpoint.trim_end_matches('/').to_string(),
            None => format!("https://{}.snowflakecomputing.com", config.account.trim()),
        };
        Ok(Client {
            http,
            base,
            config: config.clone(),
            credential,
            source_name: source_name.to_string(),
            model_name: model_name.to_string(),
            token: tokio::sync::Mutex::new(None),
        })
    }

    pub(super) fn unreachable(&self, reason: String) -> TaskError {
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

    /// The account name a login and a key-pair token carry: the identifier
    /// up to its first dot, upper case (`xy12345.eu-west-1` → `XY12345`).
    fn account_name(&self) -> String {
        self.config
            .account
            .trim()
            .split('.')
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase()
    }

    async fn session_token(&self) -> Result<String, TaskError> {
        let mut held = self.token.lock().await;
        if let Some(token) = held.as_ref() {
            return Ok(token.clone());
        }
        let token = self.login().await?;
        *held = Some(token.clone());
        Ok(token)
    }

    async fn login(&self) -> Result<String, TaskError> {
        let mut data = json!({
            "CLIENT_APP_ID": "Ebb",
            "CLIENT_APP_VERSION": env!("CARGO_PKG_VERSION"),
            "ACCOUNT_NAME": self.account_name(),
            "LOGIN_NAME": self.config.user,
            "SESSION_PARAMETERS": {"TIMEZONE": "UTC", "QUERY_TAG": "ebb"},
            "CLIENT_ENVIRONMENT": {"APPLICATION": "Ebb", "OS": std::env::consts::OS},
        });
        match &self.credential {
            Credential::Password(password) => data["PASSWORD"] = Json::String(password.clone()),
            Credential::KeyPair(key) => {
                let now = chrono::Utc::now().timestamp();
                let token = key_pair_token(&self.account_name(), &self.config.user, key, now)
                    .map_err(|e| self.unreachable(e))?;
                data["AUTHENTICATOR"] = Json::String("SNOWFLAKE_JWT".into());
                data["TOKEN"] = Json::String(token);
            }
        }
        let mut query: Vec<(&str, String)> = vec![
            ("requestId", uuid::Uuid::now_v7().to_string()),
            ("request_guid", uuid::Uuid::now_v7().to_string()),
        ];
        for (name, value) in [
            ("databaseName", &self.config.database),
            ("schemaName", &self.config.schema),
            ("warehouse", &self.config.warehouse),
            ("roleName", &self.config.role),
        ] {
            if let Some(value) = value {
                query.push((name, value.clone()));
            }
        }
        let url = format!("{}/session/v1/login-request", self.base);
        let answer = self
            .http
            .post(&url)
            .query(&query)
            .header("Accept", "application/json")
            .json(&json!({ "data": data }))
            .send()
            .await
            .map_err(|e| self.unreachable(format!("Snowflake did not answer the login: {}", e.without_url())))?;
        let status = answer.status();
        let body: Json = answer.json().await.unwrap_or_default();
        if body["success"] == json!(true) {
            if let Some(token) = body["data"]["token"].as_str() {
                return Ok(token.to_string());
            }
        }
        Err(self.unreachable(format!(
            "the login of user {} was refused ({}): {}",
            self.config.user,
            status.as_u16(),
            error_text(&body)
        )))
    }

    /// The query's columns, without running it (`describeOnly`).
    pub(super) async fn describe(&self, sql: &str, deadline: Instant) -> Result<QueryResult, TaskError> {
        self.run(sql, deadline, true).await
    }

    /// Runs the model's query to its result's first part, waiting out a
    /// query still running until `deadline`.
    pub(super) async fn query(&self, sql: &str, deadline: Instant) -> Result<QueryResult, TaskError> {
        self.run(sql, deadline, false).await
    }

    async fn run(&self, sql: &str, deadline: Instant, describe_only: bool) -> Result<QueryResult, TaskError> {
        let body = json!({
            "describeOnly": describe_only,
            "sqlText": sql,
            "asyncExec": false,
            "sequenceId": 1,
            "querySubmissionTime": chrono::Utc::now().timestamp_millis(),
            "isInternal": false,
            "parameters": {},
        });
        let path = format!(
            "/queries/v1/query-request?requestId={}&request_guid={}",
            uuid::Uuid::now_v7(),
            uuid::Uuid::now_v7()
        );
        let mut bytes = self.call_bytes(reqwest::Method::POST, &path, Some(&body)).await?;
        loop {
            let answer: Answer = serde_json::from_slice(&bytes)
                .map_err(|e| self.read_failed(format!("an answer of Snowflake is unreadable: {e}")))?;
            let code = answer.code();
            let running = STILL_RUNNING.contains(&code.as_str());
            if answer.success && !running {
                let data = answer
                    .data
                    .ok_or_else(|| self.read_failed("Snowflake answered a query without its data".into()))?;
                return Ok(result_of(data, &bytes));
            }
            if !running {
                return Err(TaskError::Query {
                    model: self.model_name.clone(),
                    reason: answer.error_text(),
                });
            }
            let data = answer.data;
            let Some(result_url) = data.as_ref().and_then(|d| d.get_result_url.clone()) else {
                return Err(self.read_failed("Snowflake says the query runs but gives no getResultUrl".into()));
            };
            if Instant::now() >= deadline {
                if let Some(id) = data.as_ref().and_then(|d| d.query_id.clone()) {
                    self.abort(&id, sql).await;
                }
                return Err(TaskError::Query {
                    model: self.model_name.clone(),
                    reason: "the query ran longer than query_timeout and was aborted".into(),
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            bytes = self.call_bytes(reqwest::Method::GET, &result_url, None).await?;
        }
    }

    /// Asks Snowflake to stop a query, best effort.
    pub(super) async fn abort(&self, query_id: &str, sql: &str) {
        let body = json!({"sqlText": sql, "requestId": query_id});
        let path = format!("/queries/v1/abort-request?requestId={}", uuid::Uuid::now_v7());
        let _ = self.call(reqwest::Method::POST, &path, Some(&body)).await;
    }

    /// Ends the session, best effort: Snowflake would otherwise keep it until
    /// it times out.
    pub(super) async fn close(&self) {
        let token = self.token.lock().await.take();
        if let Some(token) = token {
            let _ = self
                .http
                .post(format!("{}/session?delete=true", self.base))
                .header("Authorization", format!("Snowflake Token=\"{token}\""))
                .header("Accept", "application/json")
                .json(&json!({}))
                .send()
                .await;
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<&Json>) -> Result<Json, TaskError> {
        let bytes = self.call_bytes(method, path, body).await?;
        Ok(serde_json::from_slice(&bytes).unwrap_or_default())
    }

    /// One authenticated call, logging in again once when the session is gone
    /// and trying again through 429 and 5xx answers: the answer's bytes.
    async fn call_bytes(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Json>,
    ) -> Result<bytes::Bytes, TaskError> {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        };
        let mut logged_in_again = false;
        let mut tries = 0;
        let mut pause = Duration::from_millis(250);
        loop {
            tries += 1;
            let token = self.session_token().await?;
            let mut request = self
                .http
                .request(method.clone(), &url)
                .header("Authorization", format!("Snowflake Token=\"{token}\""))
                .header("Accept", "application/snowflake");
            if let Some(body) = body {
                request = request.json(body);
            }
            let (status, bytes) = match request.send().await {
                Ok(answer) => {
                    let status = answer.status();
                    match body_of(answer).await {
                        Ok(bytes) => (status, bytes),
                        Err(error) if tries < TRIES => {
                            tracing::debug!(error = %error.without_url(), "Snowflake: trying again");
                            tokio::time::sleep(pause).await;
                            pause *= 2;
                            continue;
                        }
                        Err(error) => {
                            return Err(
                                self.read_failed(format!("Snowflake's answer broke off: {}", error.without_url()))
                            )
                        }
                    }
                }
                Err(error) if tries < TRIES => {
                    tracing::debug!(error = %error.without_url(), "Snowflake: trying again");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    continue;
                }
                Err(error) => {
                    return Err(self.read_failed(format!("Snowflake did not answer: {}", error.without_url())))
                }
            };
            // Only an error's small answer is read whole here.
            let answer: Json = if status.is_success() && bytes.len() > 64 << 10 {
                Json::Null
            } else {
                serde_json::from_slice(&bytes).unwrap_or_default()
            };
            let expired = status.as_u16() == 401 || answer["code"] == json!(SESSION_EXPIRED);
            if expired && !logged_in_again {
                logged_in_again = true;
                *self.token.lock().await = None;
                continue;
            }
            if expired {
                return Err(self.unreachable(format!("the session was refused: {}", error_text(&answer))));
            }
            if (status.as_u16() == 429 || status.is_server_error()) && tries < TRIES {
                tokio::time::sleep(pause).await;
                pause *= 2;
                continue;
            }
            if status.as_u16() == 429 || status.is_server_error() {
                return Err(self.read_failed(format!(
                    "Snowflake answered {}: {}",
                    status.as_u16(),
                    error_text(&answer)
                )));
            }
            return Ok(bytes);
        }
    }

    /// A result chunk's bytes, from its URL without the session's header;
    /// gzip undone when the bytes say so (Snowflake does not always say it
    /// in a header).
    pub(super) async fn chunk(&self, url: &str, headers: &[(String, String)]) -> Result<Vec<u8>, TaskError> {
        let bytes = super::super::download_chunk(&self.http, url, headers)
            .await
            .map_err(|e| self.read_failed(e))?;
        gunzip_if_gzip(bytes.to_vec()).map_err(|e| self.read_failed(e))
    }
}

/// The token of a key-pair login: RS256, `sub` the account and user in upper
/// case, `iss` that and the public key's SHA-256 fingerprint, valid 5 minutes
/// (Snowflake accepts at most an hour).
fn key_pair_token(account_name: &str, user: &str, key: &rsa::RsaPrivateKey, now: i64) -> Result<String, String> {
    let subject = format!("{account_name}.{}", user.to_ascii_uppercase());
    let fingerprint = jwt::public_key_fingerprint(key)?;
    let claims = json!({"iss": format!("{subject}.{fingerprint}"), "sub": subject, "iat": now, "exp": now + 300});
    Ok(jwt::sign_rs256(&claims, key, None))
}

/// An answer's body in one buffer sized by its `Content-Length`: collecting
/// it in pieces and joining them would hold a large inline result twice.
async fn body_of(mut answer: reqwest::Response) -> Result<bytes::Bytes, reqwest::Error> {
    let mut body = Vec::with_capacity(answer.content_length().unwrap_or(0).min(1 << 30) as usize);
    while let Some(piece) = answer.chunk().await? {
        body.extend_from_slice(&piece);
    }
    Ok(body.into())
}

/// The answer's result, its inline Arrow rows a slice of the answer's bytes
/// when they were borrowed from them (base64 has nothing to unescape).
fn result_of(data: AnswerData<'_>, bytes: &bytes::Bytes) -> QueryResult {
    let inline_base64 = match data.rowset_base64.map(|raw| raw.get()) {
        // A string with nothing escaped in it: its bytes between the quotes.
        Some(raw) if raw.len() >= 2 && raw.starts_with('"') && !raw.contains('\\') => {
            let start = raw.as_ptr() as usize - bytes.as_ptr() as usize + 1;
            bytes.slice(start..start + raw.len() - 2)
        }
        Some(raw) => bytes::Bytes::from(
            serde_json::from_str::<Option<String>>(raw)
                .ok()
                .flatten()
                .unwrap_or_default(),
        ),
        None => bytes::Bytes::new(),
    };
    let chunk_headers = match (data.chunk_headers, data.qrmk) {
        (Some(headers), _) => headers.into_iter().collect(),
        (None, Some(key)) => vec![
            (
                "x-amz-server-side-encryption-customer-algorithm".to_string(),
                "AES256".to_string(),
            ),
            ("x-amz-server-side-encryption-customer-key".to_string(), key),
        ],
        (None, None) => Vec::new(),
    };
    QueryResult {
        columns: data.rowtype,
        arrow: data
            .query_result_format
            .is_some_and(|format| format.eq_ignore_ascii_case("arrow")),
        inline_base64,
        inline_json: data.rowset,
        chunk_urls: data.chunks.into_iter().map(|c| c.url).collect(),
        chunk_headers,
    }
}

fn gunzip_if_gzip(bytes: Vec<u8>) -> Result<Vec<u8>, String> {
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok(bytes);
    }
    use std::io::Read;
    let mut out = Vec::with_capacity(bytes.len() * 4);
    flate2::read::GzDecoder::new(bytes.as_slice())
        .read_to_end(&mut out)
        .map_err(|e| format!("a gzip result chunk is unreadable: {e}"))?;
    Ok(out)
}

/// Snowflake's error text: its message, which carries the code and SQL state.
fn error_text(answer: &Json) -> String {
    let message = answer["message"].as_str().unwrap_or("no message").trim();
    match answer["code"].as_str() {
        Some(code) if !message.starts_with(code) => format!("{message} (code {code})"),
        _ => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_pair_token_names_the_account_user_and_key_fingerprint() {
        use base64::Engine;
        use rsa::pkcs8::EncodePublicKey;
        use rsa::sha2::{Digest, Sha256};
        let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let token = key_pair_token("XY12345", "ebb_reader", &key, 1_700_000_000).unwrap();
        let der = key.to_public_key().to_public_key_der().unwrap();
        let fingerprint = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(der.as_bytes()));
        assert_eq!(
            jwt::claims_of(&token),
            Some(json!({
                "iss": format!("XY12345.EBB_READER.SHA256:{fingerprint}"),
                "sub": "XY12345.EBB_READER",
                "iat": 1_700_000_000,
                "exp": 1_700_000_300,
            }))
        );
        assert!(jwt::verify_rs256(&token, &key.to_public_key()));
    }

    #[test]
    fn gzip_is_told_by_its_bytes() {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(b"[\"1\"],[\"2\"]").unwrap();
        let zipped = encoder.finish().unwrap();
        assert_eq!(gunzip_if_gzip(zipped).unwrap(), b"[\"1\"],[\"2\"]");
        assert_eq!(gunzip_if_gzip(b"plain".to_vec()).unwrap(), b"plain");
        assert_eq!(
            error_text(&json!({"code": "002003", "message": "002003 (42S02): Table 'X' does not exist"})),
            "002003 (42S02): Table 'X' does not exist"
        );
    }
}
