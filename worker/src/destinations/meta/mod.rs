//! Meta (Facebook) Custom Audiences: customer-list members added and removed
//! through the Marketing API's `/{audience_id}/users`, each identifier
//! normalised and SHA-256 hashed as Meta documents. See
//! docs/destinations/meta.md.
//!
//! The mapped fields name Meta's identifier keys (`EMAIL`, `PHONE`, `FN`,
//! …): together they are the request's multi-key schema. Removals send the
//! same identifiers, so only members Ebb added (rows that left the model)
//! are removed; members added elsewhere are left alone.

mod config;
#[cfg(any(test, feature = "fakes"))]
pub mod fake;
mod request;
mod response;
#[cfg(test)]
mod tests;

use super::settings::{self, Documented, Requested};
use super::{Connector, DeliveryError, Destination, Field, Record, RowResults, SequencePlace};
use crate::behaviour::Action;
use crate::error::TaskError;
use async_trait::async_trait;
pub use config::MetaConfig;
use ebb_shared::config::{
    expand_env, BatchLimits, Capabilities, DeleteBehavior, DestinationProfile, FieldError, SyncMode, SyncSpec, SyncType,
};
use hmac::{Hmac, Mac};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The connector.
pub struct Meta;

/// "The maximum number of users per request is 10,000."
const ROWS_PER_REQUEST: usize = 10_000;
/// Meta documents no byte limit; 10,000 rows of a few hashes stay well
/// below this.
const BATCH_BYTES: usize = 16 * 1024 * 1024;

const DOCUMENTED: Documented = Documented {
    // Meta throttles by its business-use-case scores, not a fixed rate: the
    // throttling answers pause the fleet for as long as they say.
    rate_limit: None,
    rate_window: None,
    max_concurrency: None,
    batch: BatchLimits {
        records: ROWS_PER_REQUEST,
        bytes: BATCH_BYTES,
    },
    default_batch_size: ROWS_PER_REQUEST,
};

impl Connector for Meta {
    const TYPE: &'static str = "meta_custom_audience";
    type Config = MetaConfig;

    fn profile(config: &Self::Config) -> Result<DestinationProfile, FieldError> {
        let requested = Requested {
            batch_size: config.batch_size,
            rate_limit: config.rate_limit,
            max_concurrency: config.max_concurrency,
        };
        let (limits, batch) = settings::apply(&DOCUMENTED, requested)?;
        if !config.audience_id.contains("${") && !config.audience_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(FieldError::at(
                &["audience_id"],
                "`audience_id` is the custom audience's numeric id (Ads Manager › Audiences)",
            ));
        }
        let version = config.api_version.strip_prefix('v').unwrap_or_default();
        if !version
            .split_once('.')
            .is_some_and(|(a, b)| a.parse::<u32>().is_ok() && b.parse::<u32>().is_ok())
        {
            return Err(FieldError::at(
                &["api_version"],
                "`api_version` is a Graph API version like \"v21.0\"",
            ));
        }
        settings::check_url(&config.api_base_url, "api_base_url")?;
        let mut expanded_settings = vec![
            (vec!["access_token".into()], config.access_token.clone()),
            (vec!["audience_id".into()], config.audience_id.clone()),
            (vec!["api_base_url".into()], config.api_base_url.clone()),
        ];
        if let Some(secret) = &config.app_secret {
            expanded_settings.push((vec!["app_secret".into()], secret.clone()));
        }
        Ok(DestinationProfile {
            capabilities: Capabilities {
                sync_types: &[SyncType::Audience],
                modes: &[SyncMode::AddRemove],
                delete_behaviors: DeleteBehavior::ALL,
            },
            limits,
            batch,
            max_retry_after: config.max_retry_after,
            expanded_settings,
        })
    }

    /// Reads the audience: the token, its permissions and the audience id.
    async fn test_connection(config: Self::Config, name: &str) -> Result<(), String> {
        let client = Client::new(&config, name).map_err(|e| e.to_string())?;
        client
            .call(reqwest::Method::GET, "?fields=id,name", None)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// The identifier keys a mapping may name.
    async fn fields(_config: Self::Config, _name: &str, _object: Option<&str>) -> Result<Option<Vec<Field>>, String> {
        Ok(Some(
            request::KEYS
                .iter()
                .map(|key| Field {
                    name: key.to_string(),
                    kind: "identifier".into(),
                    unique: false,
                    writable: true,
                })
                .collect(),
        ))
    }

    async fn open(config: Self::Config, spec: &SyncSpec) -> Result<Arc<dyn Destination>, TaskError> {
        Ok(Arc::new(MetaDestination::new(config, spec)?))
    }
}

struct Client {
    http: reqwest::Client,
    /// `{base}/{version}/{audience_id}`.
    audience_url: String,
    token: String,
    proof: Option<String>,
    secrets: Vec<String>,
}

impl Client {
    fn new(config: &MetaConfig, name: &str) -> Result<Client, TaskError> {
        let what = |field: &str| format!("destination {name:?} {field}");
        let token = expand_env(&config.access_token, &what("access_token"))?;
        let audience = expand_env(&config.audience_id, &what("audience_id"))?;
        let base = expand_env(&config.api_base_url, &what("api_base_url"))?;
        let mut secrets = vec![token.clone()];
        let proof = match &config.app_secret {
            Some(secret) => {
                let secret = expand_env(secret, &what("app_secret"))?;
                let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
                mac.update(token.as_bytes());
                secrets.push(secret);
                Some(request::hex(&mac.finalize().into_bytes()))
            }
            None => None,
        };
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| TaskError::DestinationSetup {
                destination: name.to_string(),
                reason: e.to_string(),
            })?;
        Ok(Client {
            http,
            audience_url: format!("{}/{}/{audience}", base.trim_end_matches('/'), config.api_version),
            token,
            proof,
            secrets,
        })
    }

    /// One request to the audience (`suffix`: `/users`, or a query); form
    /// parameters as Meta's SDKs send them.
    async fn call(
        &self,
        method: reqwest::Method,
        suffix: &str,
        form: Option<&[(&str, String)]>,
    ) -> Result<Vec<u8>, DeliveryError> {
        let secrets: Vec<&str> = self.secrets.iter().map(String::as_str).collect();
        let url = format!("{}{suffix}", self.audience_url);
        let mut request = self.http.request(method.clone(), &url).bearer_auth(&self.token);
        if let Some(proof) = &self.proof {
            request = request.query(&[("appsecret_proof", proof)]);
        }
        let sent = form.map(|form| {
            let mut encoded = reqwest::Url::parse("http://x/").expect("a URL");
            encoded
                .query_pairs_mut()
                .extend_pairs(form.iter().map(|(k, v)| (*k, v.as_str())));
            encoded.query().unwrap_or_default().as_bytes().to_vec()
        });
        if let Some(sent) = &sent {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(sent.clone());
        }
        let exchange = crate::debugger::begin(&method, &url, sent.as_deref());
        let answer = match request.send().await {
            Ok(answer) => answer,
            Err(error) => return Err(exchange.failed(super::transport_error(error, "Meta", &secrets), &secrets)),
        };
        let status = answer.status().as_u16();
        let header = |name: &str| {
            answer
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let (retry_after, usage) = (header("retry-after"), header("x-business-use-case-usage"));
        let body = match answer.bytes().await {
            Ok(body) => body,
            Err(error) => return Err(exchange.failed(super::transport_error(error, "Meta", &secrets), &secrets)),
        };
        exchange.answered(status, &body, &secrets);
        if (200..300).contains(&status) {
            Ok(body.to_vec())
        } else {
            Err(response::failure(
                status,
                retry_after.as_deref(),
                usage.as_deref(),
                &body,
                &secrets,
            ))
        }
    }
}

pub struct MetaDestination {
    client: Client,
    /// The schema: mapped fields that name identifier keys, in mapping order.
    schema: Vec<(String, &'static str)>,
    /// This shard attempt's upload sessions, one per sequence of batches
    /// the engine sends (`SequencePlace::sequence`).
    sessions: Mutex<HashMap<usize, Arc<Session>>>,
}

/// One upload session: the batches of one action in one shard attempt, as
/// Meta's `session` parameter describes them (`session_id`, `batch_seq`
/// from 1, `last_batch_flag` on the last, `estimated_num_total`). The
/// engine sends the first batch alone and the last after all others
/// answered; within, batches go concurrently, each with its own number.
struct Session {
    id: u64,
    /// Whether Meta took the session's first batch (`batch_seq` 1). Held
    /// while that request is out, so that no batch overtakes it; if it
    /// fails, the next request opens the session instead.
    opened: tokio::sync::Mutex<bool>,
    /// The next `batch_seq` once the session is open.
    next_seq: AtomicU64,
}

impl Session {
    fn new() -> Session {
        Session {
            id: new_session_id(),
            opened: tokio::sync::Mutex::new(false),
            next_seq: AtomicU64::new(2),
        }
    }
}

/// A session id unique within the ad account (Meta: "advertiser generated");
/// below 2^53 so that any JSON reader keeps it exact.
fn new_session_id() -> u64 {
    rand::random::<u64>() % (1 << 53) + 1
}

impl MetaDestination {
    fn new(config: MetaConfig, spec: &SyncSpec) -> Result<Self, TaskError> {
        let setup = |reason: String| TaskError::DestinationSetup {
            destination: spec.destination_name.clone(),
            reason,
        };
        let mut schema = Vec::new();
        for mapping in &spec.mappings {
            match request::key_of(&mapping.to) {
                Some(key) if !schema.iter().any(|(_, k)| *k == key) => schema.push((mapping.to.clone(), key)),
                Some(key) => return Err(setup(format!("two mappings name the identifier {key}; keep one"))),
                None => {
                    return Err(setup(format!(
                        "mapping to {:?}: a custom audience takes Meta's identifier keys only ({})",
                        mapping.to,
                        request::KEYS.join(", ")
                    )))
                }
            }
        }
        if schema.is_empty() {
            return Err(setup(format!(
                "map at least one identifier: EMAIL, PHONE, MADID, EXTERN_ID, … (to: {})",
                request::KEYS.join(" | ")
            )));
        }
        Ok(MetaDestination {
            client: Client::new(&config, &spec.destination_name)?,
            schema,
            sessions: Mutex::new(HashMap::new()),
        })
    }
}

impl MetaDestination {
    /// A record's identifiers in schema order, normalised and hashed.
    fn encoded(&self, key: &str, json: &str) -> Result<Vec<String>, DeliveryError> {
        let fields: Map<String, Value> = serde_json::from_str(json)
            .map_err(|e| DeliveryError::Permanent(format!("record {key:?} is not a JSON object: {e}")))?;
        Ok(self
            .schema
            .iter()
            .map(|(field, key)| request::encode(key, &fields.get(field).map(request::text).unwrap_or_default()))
            .collect())
    }

    /// Adds (`POST`) or removes (`DELETE`) members in one request: in the
    /// upload session of `place`'s sequence, or in a session of its own.
    async fn upload(
        &self,
        method: reqwest::Method,
        rows: &[Vec<String>],
        place: Option<SequencePlace>,
    ) -> Result<(), DeliveryError> {
        let Some(place) = place else {
            return self
                .upload_as(method, rows, new_session_id(), 1, true, rows.len())
                .await;
        };
        loop {
            let session = self.session(place.sequence);
            let mut opened = session.opened.lock().await;
            if !self.is_current(place.sequence, &session) {
                // Retired while this request waited: open its successor.
                continue;
            }
            let seq = if *opened {
                drop(opened);
                session.next_seq.fetch_add(1, Ordering::Relaxed)
            } else {
                // Sent while `opened` is held: the first request goes alone.
                let sent = self
                    .upload_as(method, rows, session.id, 1, place.last, place.rows)
                    .await;
                *opened = sent.is_ok();
                if sent.is_err() {
                    self.retire(place.sequence, &session);
                }
                return sent;
            };
            let sent = self
                .upload_as(method.clone(), rows, session.id, seq, place.last, place.rows)
                .await;
            // A middle request that failed is sent again with a new number in
            // the same session. The last one may have ended the session
            // before its answer was lost, and an out-of-step session is done.
            let out_of_step =
                matches!(&sent, Err(DeliveryError::Transient(m)) if m.contains(response::SESSION_OUT_OF_STEP));
            if out_of_step || (place.last && matches!(sent, Err(DeliveryError::Transient(_)))) {
                self.retire(place.sequence, &session);
            }
            return sent;
        }
    }

    /// The session of `sequence`, opened on first use.
    fn session(&self, sequence: usize) -> Arc<Session> {
        self.sessions
            .lock()
            .expect("sessions lock")
            .entry(sequence)
            .or_insert_with(|| Arc::new(Session::new()))
            .clone()
    }

    fn is_current(&self, sequence: usize, session: &Arc<Session>) -> bool {
        self.sessions
            .lock()
            .expect("sessions lock")
            .get(&sequence)
            .is_some_and(|current| Arc::ptr_eq(current, session))
    }

    /// Replaces a session whose state Meta may no longer share with us: its
    /// opening request failed, its last one got no sure answer (it may have
    /// ended the session), or Meta said it is out of step. The sequence goes on in
    /// a new session, which the next request opens with `batch_seq` 1; Meta
    /// ends the old one on its own.
    fn retire(&self, sequence: usize, session: &Arc<Session>) {
        let mut sessions = self.sessions.lock().expect("sessions lock");
        if sessions
            .get(&sequence)
            .is_some_and(|current| Arc::ptr_eq(current, session))
        {
            sessions.insert(sequence, Arc::new(Session::new()));
        }
    }

    async fn upload_as(
        &self,
        method: reqwest::Method,
        rows: &[Vec<String>],
        session_id: u64,
        batch_seq: u64,
        last: bool,
        estimated_total: usize,
    ) -> Result<(), DeliveryError> {
        let schema: Vec<&str> = self.schema.iter().map(|(_, key)| *key).collect();
        let session = json!({
            "session_id": session_id,
            "batch_seq": batch_seq,
            "last_batch_flag": last,
            "estimated_num_total": estimated_total.max(rows.len()),
        });
        let form = [
            ("payload", request::payload(&schema, rows).to_string()),
            ("session", session.to_string()),
        ];
        self.client.call(method, "/users", Some(&form)).await.map(|_| ())
    }

    async fn send_with(
        &self,
        action: Action,
        records: &[Record<'_>],
        place: Option<SequencePlace>,
    ) -> Result<RowResults, DeliveryError> {
        let method = match action {
            Action::Add | Action::Insert | Action::Upsert | Action::Update => reqwest::Method::POST,
            Action::Remove | Action::Delete | Action::Archive => reqwest::Method::DELETE,
            // Clearing a member's identifiers has no meaning in an audience.
            Action::ClearFields | Action::Track => return Ok(vec![Ok(()); records.len()]),
        };
        let mut results: RowResults = vec![Ok(()); records.len()];
        let mut rows: Vec<Vec<String>> = Vec::new();
        // Members whose identifiers changed since Ebb added them: the old
        // ones leave before the new ones join.
        let mut replaced: Vec<Vec<String>> = Vec::new();
        for (row, record) in records.iter().enumerate() {
            let values = self.encoded(record.key, record.json)?;
            if values.iter().all(String::is_empty) {
                results[row] = Err("the row has no identifier Meta can match (every mapped key is empty)".into());
                continue;
            }
            if method == reqwest::Method::POST {
                if let Some(previous) = record.previous {
                    let old = self.encoded(record.key, previous)?;
                    if old != values && !old.iter().all(String::is_empty) {
                        replaced.push(old);
                    }
                }
            }
            rows.push(values);
        }
        // The old identifiers of changed members leave in a session of their
        // own: the sequence's session is the one of its action.
        if !replaced.is_empty() {
            self.upload(reqwest::Method::DELETE, &replaced, None).await?;
        }
        if !rows.is_empty() {
            self.upload(method, &rows, place).await?;
        }
        Ok(results)
    }
}

#[async_trait]
impl Destination for MetaDestination {
    async fn check_connection(&self) -> Result<(), String> {
        self.client
            .call(reqwest::Method::GET, "?fields=id,name", None)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn send(&self, action: Action, records: &[Record<'_>]) -> Result<RowResults, DeliveryError> {
        self.send_with(action, records, None).await
    }

    /// An action's batches form one upload session per shard attempt.
    fn sequenced(&self) -> bool {
        true
    }

    async fn send_in_sequence(
        &self,
        action: Action,
        records: &[Record<'_>],
        place: SequencePlace,
    ) -> Result<RowResults, DeliveryError> {
        self.send_with(action, records, Some(place)).await
    }
}
