//! The live debugger: every request a shard sends to its destination and the
//! answer it got, per batch, with the keys of the rows the batch carried and
//! what became of each — so that from a failed row one finds the exact
//! request and response that failed it (`ebb runs requests`).
//!
//! Connectors report each exchange with [`note`] as they make it; the
//! delivery engine runs every send inside [`capture`], which collects them
//! for the batch, and the shard writes its [`RequestLog`] to the object
//! store next to its row file. Texts pass the connector's redaction (no
//! credential is ever in them), bodies are cut at [`BODY_BYTES`], and a log
//! keeps every failed batch but only the first successful ones, up to
//! [`MAX_BATCHES`].

use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::sync::Mutex;

/// The most of a request or response body kept.
pub const BODY_BYTES: usize = 8 * 1024;
/// Batches a shard attempt's log keeps.
pub const MAX_BATCHES: usize = 2_000;
/// Of them, at most this many that went through without a failed row.
pub const MAX_SUCCEEDED_BATCHES: usize = 200;

/// One HTTP request and its answer (or why there was none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exchange {
    pub method: String,
    /// Query strings kept (they say what was asked); no credential is in them.
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_body: Option<String>,
    /// A transport failure (timeout, refused connection) instead of an answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub elapsed_ms: u64,
}

/// One attempt at sending a batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchLog {
    /// Milliseconds since the Unix epoch when the attempt started.
    pub at_ms: i64,
    pub action: String,
    /// The rows the batch carried, by model key, with each one's outcome:
    /// `None` when it went through, else the reason it failed.
    pub rows: Vec<(String, Option<String>)>,
    /// What the attempt as a whole came to: `answered`, or the retriable or
    /// permanent error it met.
    pub outcome: String,
    pub exchanges: Vec<Exchange>,
}

impl BatchLog {
    pub fn failed(&self) -> bool {
        self.outcome != "answered" || self.rows.iter().any(|(_, error)| error.is_some())
    }
}

tokio::task_local! {
    static CAPTURE: RefCell<Vec<Exchange>>;
}

/// Runs `send` and returns what it returned with the exchanges its
/// connector noted.
pub async fn capture<T>(send: impl std::future::Future<Output = T>) -> (T, Vec<Exchange>) {
    CAPTURE
        .scope(RefCell::new(Vec::new()), async {
            let output = send.await;
            let exchanges = CAPTURE.with(|noted| noted.take());
            (output, exchanges)
        })
        .await
}

fn cut(text: &[u8], secrets: &[&str]) -> String {
    let end = text.len().min(BODY_BYTES);
    ebb_shared::redact::redact_secrets(&String::from_utf8_lossy(&text[..end]), secrets)
}

/// What a connector says of one exchange, outside a capture a no-op.
pub struct Noted<'a> {
    pub method: &'a str,
    pub url: &'a str,
    pub request_body: Option<&'a [u8]>,
    pub status: Option<u16>,
    pub response_body: Option<&'a [u8]>,
    pub error: Option<&'a str>,
    pub elapsed: std::time::Duration,
}

/// Records one exchange for the batch being sent, redacting `secrets`.
pub fn note(noted: Noted<'_>, secrets: &[&str]) {
    let _ = CAPTURE.try_with(|exchanges| {
        let redact = |text: &str| ebb_shared::redact::redact_secrets(text, secrets);
        let body = |bytes: &[u8]| {
            let mut text = cut(bytes, secrets);
            if bytes.len() > BODY_BYTES {
                text.push_str(&format!(" … ({} bytes in all)", bytes.len()));
            }
            text
        };
        exchanges.borrow_mut().push(Exchange {
            method: noted.method.to_string(),
            url: redact(&ebb_shared::redact::redact_url(noted.url)),
            request_body: noted.request_body.map(body),
            status: noted.status,
            response_body: noted.response_body.map(body),
            error: noted.error.map(redact),
            elapsed_ms: noted.elapsed.as_millis() as u64,
        });
    });
}

/// A request on its way: noted with its answer, or with the failure that
/// took its place.
pub struct Pending<'a> {
    method: &'a str,
    url: &'a str,
    body: Option<&'a [u8]>,
    started: std::time::Instant,
}

/// Starts noting a request (`url` whole, `body` as sent).
pub fn begin<'a>(method: &'a reqwest::Method, url: &'a str, body: Option<&'a [u8]>) -> Pending<'a> {
    Pending {
        method: method.as_str(),
        url,
        body,
        started: std::time::Instant::now(),
    }
}

impl Pending<'_> {
    pub fn answered(self, status: u16, body: &[u8], secrets: &[&str]) {
        note(
            Noted {
                method: self.method,
                url: self.url,
                request_body: self.body,
                status: Some(status),
                response_body: Some(body),
                error: None,
                elapsed: self.started.elapsed(),
            },
            secrets,
        );
    }

    /// Notes the failure and hands it back.
    pub fn failed(
        self,
        error: crate::destinations::DeliveryError,
        secrets: &[&str],
    ) -> crate::destinations::DeliveryError {
        note(
            Noted {
                method: self.method,
                url: self.url,
                request_body: self.body,
                status: None,
                response_body: None,
                error: Some(&error.to_string()),
                elapsed: self.started.elapsed(),
            },
            secrets,
        );
        error
    }
}

/// A shard attempt's batches, bounded as the module says.
#[derive(Default)]
pub struct RequestLog {
    batches: Mutex<(Vec<BatchLog>, usize)>,
}

impl RequestLog {
    pub fn push(&self, batch: BatchLog) {
        let mut guard = self.batches.lock().expect("request log lock");
        let (batches, succeeded) = &mut *guard;
        if batches.len() >= MAX_BATCHES {
            return;
        }
        if !batch.failed() {
            if *succeeded >= MAX_SUCCEEDED_BATCHES {
                return;
            }
            *succeeded += 1;
        }
        batches.push(batch);
    }

    pub fn is_empty(&self) -> bool {
        self.batches.lock().expect("request log lock").0.is_empty()
    }

    /// The log as JSON lines, one batch attempt a line, in the order sent.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut batches = self.batches.lock().expect("request log lock").0.clone();
        batches.sort_by_key(|b| b.at_ms);
        let mut out = Vec::new();
        for batch in batches {
            serde_json::to_writer(&mut out, &batch).expect("a batch log serializes");
            out.push(b'\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn exchanges_noted_inside_a_capture_are_collected_redacted_and_cut() {
        let ((), exchanges) = capture(async {
            note(
                Noted {
                    method: "POST",
                    url: "https://user:pw@api.example.com/v1/items?token=abc",
                    request_body: Some(br#"{"key":"s3cret"}"#),
                    status: Some(400),
                    response_body: Some(&vec![b'x'; BODY_BYTES + 10]),
                    error: None,
                    elapsed: std::time::Duration::from_millis(12),
                },
                &["s3cret"],
            );
        })
        .await;
        assert_eq!(exchanges.len(), 1);
        let exchange = &exchanges[0];
        assert!(!exchange.url.contains("pw@"), "{}", exchange.url);
        assert!(!exchange.request_body.as_deref().unwrap().contains("s3cret"));
        assert!(exchange
            .response_body
            .as_deref()
            .unwrap()
            .ends_with(&format!("({} bytes in all)", BODY_BYTES + 10)));
        // Outside a capture nothing is kept, and nothing fails.
        note(
            Noted {
                method: "GET",
                url: "http://x",
                request_body: None,
                status: Some(200),
                response_body: None,
                error: None,
                elapsed: std::time::Duration::ZERO,
            },
            &[],
        );
    }

    #[test]
    fn a_log_keeps_every_failed_batch_and_the_first_successful_ones() {
        let log = RequestLog::default();
        let batch = |at_ms: i64, error: Option<&str>| BatchLog {
            at_ms,
            action: "upsert".into(),
            rows: vec![("k".into(), error.map(str::to_string))],
            outcome: "answered".into(),
            exchanges: vec![],
        };
        for i in 0..(MAX_SUCCEEDED_BATCHES as i64 + 50) {
            log.push(batch(i, None));
        }
        log.push(batch(-1, Some("refused")));
        let text = String::from_utf8(log.to_bytes()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), MAX_SUCCEEDED_BATCHES + 1);
        assert!(lines[0].contains("refused"), "sorted by time: {}", lines[0]);
    }
}
