//! The contract every SaaS connector passes against its loopback fake: each
//! connector's `tests.rs` implements [`ContractFake`] for its fake and calls
//! [`contract_tests!`], which writes the tests. They drive the connector as
//! the delivery engine does (`build` from a loaded config, `send` per batch)
//! and check what the engine relies on:
//!
//! - the modes: upsert creates then changes (never duplicates), update
//!   fails only rows with no record, clear keeps the record, delete removes
//!   it (a record already gone is success);
//! - a record the vendor refuses for its content fails alone, or refuses
//!   its batch as `Rejected` so that halves isolate it;
//! - the vendor's rate-limit signal is `RateLimited` (the fleet pauses), a
//!   server error `Transient` (sent again);
//! - a batch the vendor applied but answered after the timeout loses and
//!   duplicates nothing when sent again;
//! - refused credentials are `Permanent`, an expired session is renewed
//!   once (where the vendor's auth can be renewed), and no secret appears
//!   in any error.

use crate::behaviour::Action;
use crate::destinations::{build, DeliveryError, Destination, Record};
use ebb_shared::config::{SyncMode, SyncSpec};
use serde_json::Value;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// A fault a fake applies to the next request it fits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// The vendor's own rate-limit answer (a 429, or what the vendor sends
    /// instead).
    RateLimited,
    /// A 5xx answer, nothing applied.
    Unavailable,
    /// Applied, then answered this late (past the client's timeout).
    AppliedThenSlow(Duration),
}

/// Faults a fake mixes into its answers at given shares of requests.
///
/// Each share is kept to within one request of exact, at random places: a
/// test that asks for 10% rate-limited answers over 43 requests gets 4 or 5
/// of them on every run (independent draws gave none one run in a hundred,
/// and fewer than half the share one run in five). Evenly spaced faults
/// would be exact too, but a fleet sending round-robin can phase-lock with
/// them, so that one batch meets every fault and exhausts its retries.
#[derive(Debug, Clone, Copy, Default)]
pub struct Chaos {
    rate_limited: Share,
    unavailable: Share,
}

/// One fault's share: it accrues by the share each request and is answered
/// once it passes a threshold drawn anew after every answer.
#[derive(Debug, Clone, Copy, Default)]
struct Share {
    share: f64,
    owed: f64,
    threshold: f64,
}

impl Share {
    fn new(share: f64) -> Self {
        Share {
            share,
            owed: 0.0,
            threshold: Self::random_threshold(),
        }
    }

    /// In (0, 1]: a zero share never reaches it.
    fn random_threshold() -> f64 {
        1.0 - rand::random::<f64>()
    }

    fn accrue(&mut self) {
        self.owed += self.share;
    }

    fn due(&self) -> bool {
        self.share > 0.0 && self.owed >= self.threshold
    }

    fn answer(&mut self) {
        self.owed -= 1.0;
        self.threshold = Self::random_threshold();
    }
}

impl Chaos {
    pub fn new(rate_limited: f64, unavailable: f64) -> Self {
        Chaos {
            rate_limited: Share::new(rate_limited),
            unavailable: Share::new(unavailable),
        }
    }

    /// The fault the next request meets, if any. When both are due, the
    /// unavailable answer waits for the next request.
    pub fn draw(&mut self) -> Option<Fault> {
        self.rate_limited.accrue();
        self.unavailable.accrue();
        if self.rate_limited.due() {
            self.rate_limited.answer();
            Some(Fault::RateLimited)
        } else if self.unavailable.due() {
            self.unavailable.answer();
            Some(Fault::Unavailable)
        } else {
            None
        }
    }
}

/// What the contract needs of a connector's fake.
pub trait ContractFake: Sized + Send + Sync + 'static {
    /// The field records are matched on: unique in the vendor.
    const MATCHING: &'static str;
    /// Whether the vendor says which records an update did not find (Braze's
    /// update-only mode skips them silently: the row succeeds, and no
    /// record is created).
    const UPDATE_REPORTS_MISSING: bool = true;

    fn start() -> impl Future<Output = Self> + Send;

    /// The destination block's settings (YAML lines indented four spaces,
    /// without `type`), pointing at this fake with working credentials as
    /// `${VAR}` references.
    fn settings(&self, timeout: &str) -> String;
    /// The same, with credentials the vendor refuses.
    fn refused_settings(&self) -> String;
    /// The connector's `type`.
    fn kind(&self) -> &'static str;

    /// A valid record matched by `key`, with `plan` in a field that changes.
    fn record(&self, key: &str, plan: &str) -> Value;
    /// Makes the vendor refuse records matched by `key` for their content.
    fn refuse(&self, key: &str);
    fn fault(&self, fault: Fault, times: usize);
    /// Creates a record in the vendor directly.
    fn create(&self, key: &str, plan: &str);
    /// The records held: matching value (lowercased) → plan (`None` when
    /// empty or cleared).
    fn held(&self) -> BTreeMap<String, Option<String>>;
    /// Every secret the connector was given or granted.
    fn secrets(&self) -> Vec<String>;
    /// Ends the sessions the vendor has issued, when its auth renews;
    /// `false` when the connector's auth cannot renew.
    fn expire_sessions(&self) -> bool;
}

/// A sync of `mode` matching on `F::MATCHING` to the fake.
pub fn spec<F: ContractFake>(fake: &F, mode: SyncMode, settings: &str) -> SyncSpec {
    let text = format!(
        "sources:\n  files: {{ type: csv, path: . }}\n\
         models:\n  people: {{ source: files, file: p.csv, primary_key: id }}\n\
         destinations:\n  crm:\n    type: {}\n{settings}\
         syncs:\n  s:\n    model: people\n    destination: crm\n    mode: {mode}\n    record_matching: {{ from: {m}, to: {m} }}\n",
        fake.kind(),
        m = F::MATCHING,
    );
    let config = crate::config::from_yaml_str(std::path::Path::new("t.yaml"), &text, std::path::Path::new("."))
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    config.sync_spec("s").unwrap()
}

pub async fn open<F: ContractFake>(fake: &F, mode: SyncMode, timeout: &str) -> Arc<dyn Destination> {
    build(&spec(fake, mode, &fake.settings(timeout)))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

pub async fn send(
    destination: &dyn Destination,
    action: Action,
    values: &[Value],
) -> Result<Vec<Result<(), String>>, DeliveryError> {
    let owned = keyed(values);
    let batch: Vec<Record<'_>> = owned.iter().map(|(key, json)| Record::new(key, json)).collect();
    destination.send(action, &batch).await
}

/// Sends `values` as one batch by the destination's bulk path, as [`send`]
/// does by its request path.
pub async fn send_bulk(
    destination: &dyn Destination,
    action: Action,
    values: &[Value],
    jobs: &crate::jobs::JobLog,
) -> Result<Vec<Result<(), String>>, DeliveryError> {
    let owned = keyed(values);
    let batch: Vec<Record<'_>> = owned.iter().map(|(key, json)| Record::new(key, json)).collect();
    destination.send_bulk(action, &batch, jobs).await
}

/// Each value as a record's JSON, keyed by its position.
fn keyed(values: &[Value]) -> Vec<(String, String)> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| (i.to_string(), v.to_string()))
        .collect()
}

/// Fails when any secret of the fake appears in `text`.
pub fn assert_no_secret<F: ContractFake>(fake: &F, text: &str) {
    for secret in fake.secrets() {
        assert!(!text.contains(&secret), "a secret appears in: {text}");
    }
}

fn plans(pairs: &[(&str, Option<&str>)]) -> BTreeMap<String, Option<String>> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
        .collect()
}

pub async fn modes_converge<F: ContractFake>() {
    let fake = F::start().await;
    let crm = open(&fake, SyncMode::Mirror, "5s").await;
    let rows = [fake.record("ada@x.com", "pro"), fake.record("bo@x.com", "free")];
    assert_eq!(
        send(crm.as_ref(), Action::Upsert, &rows).await.unwrap(),
        vec![Ok(()), Ok(())]
    );
    assert_eq!(
        fake.held(),
        plans(&[("ada@x.com", Some("pro")), ("bo@x.com", Some("free"))])
    );
    // Upserting again changes the record, never adds one.
    let changed = [fake.record("ada@x.com", "team")];
    assert_eq!(
        send(crm.as_ref(), Action::Upsert, &changed).await.unwrap(),
        vec![Ok(())]
    );
    assert_eq!(
        fake.held(),
        plans(&[("ada@x.com", Some("team")), ("bo@x.com", Some("free"))])
    );
    // Clearing empties the fields but keeps the record.
    assert_eq!(
        send(crm.as_ref(), Action::ClearFields, &changed).await.unwrap(),
        vec![Ok(())]
    );
    assert_eq!(fake.held(), plans(&[("ada@x.com", None), ("bo@x.com", Some("free"))]));
    // Deleting removes it; one already gone is what was asked for.
    let gone = [fake.record("bo@x.com", "free"), fake.record("never@x.com", "x")];
    assert_eq!(
        send(crm.as_ref(), Action::Delete, &gone).await.unwrap(),
        vec![Ok(()), Ok(())]
    );
    assert_eq!(fake.held(), plans(&[("ada@x.com", None)]));
}

pub async fn update_fails_only_missing_records<F: ContractFake>() {
    let fake = F::start().await;
    fake.create("ada@x.com", "pro");
    let crm = open(&fake, SyncMode::Update, "5s").await;
    let rows = [fake.record("ada@x.com", "team"), fake.record("nobody@x.com", "x")];
    let results = send(crm.as_ref(), Action::Update, &rows).await.unwrap();
    assert_eq!(results[0], Ok(()));
    if F::UPDATE_REPORTS_MISSING {
        assert!(results[1].is_err(), "{results:?}");
    }
    assert_eq!(
        fake.held(),
        plans(&[("ada@x.com", Some("team"))]),
        "update creates nothing"
    );
}

pub async fn a_refused_record_fails_alone<F: ContractFake>() {
    let fake = F::start().await;
    fake.refuse("bad@x.com");
    let crm = open(&fake, SyncMode::Upsert, "5s").await;
    let rows = [
        fake.record("a@x.com", "pro"),
        fake.record("bad@x.com", "pro"),
        fake.record("c@x.com", "pro"),
    ];
    match send(crm.as_ref(), Action::Upsert, &rows).await {
        Ok(results) => {
            assert_eq!(results[0], Ok(()));
            assert!(results[1].is_err(), "{results:?}");
            assert_eq!(results[2], Ok(()));
        }
        // Refused whole: the engine sends halves, which pass or fail alone.
        Err(DeliveryError::Rejected(_)) => {
            for (row, expect_ok) in rows.iter().zip([true, false, true]) {
                let alone = send(crm.as_ref(), Action::Upsert, std::slice::from_ref(row)).await;
                let ok = matches!(alone.as_deref(), Ok([Ok(())]));
                assert_eq!(ok, expect_ok, "{row}: {alone:?}");
            }
        }
        Err(other) => panic!("a refused record is not a {other:?}"),
    }
    let held = fake.held();
    assert!(held.contains_key("a@x.com") && held.contains_key("c@x.com") && !held.contains_key("bad@x.com"));
}

pub async fn limits_and_outages_are_retriable<F: ContractFake>() {
    let fake = F::start().await;
    let crm = open(&fake, SyncMode::Upsert, "5s").await;
    let row = [fake.record("a@x.com", "pro")];
    fake.fault(Fault::RateLimited, 1);
    let limited = send(crm.as_ref(), Action::Upsert, &row).await;
    assert!(matches!(limited, Err(DeliveryError::RateLimited { .. })), "{limited:?}");
    fake.fault(Fault::Unavailable, 1);
    let unavailable = send(crm.as_ref(), Action::Upsert, &row).await;
    assert!(
        matches!(unavailable, Err(DeliveryError::Transient(_))),
        "{unavailable:?}"
    );
    assert_eq!(send(crm.as_ref(), Action::Upsert, &row).await.unwrap(), vec![Ok(())]);
    assert_eq!(fake.held(), plans(&[("a@x.com", Some("pro"))]));
}

pub async fn a_late_answer_loses_and_duplicates_nothing<F: ContractFake>() {
    let fake = F::start().await;
    let crm = open(&fake, SyncMode::Upsert, "300ms").await;
    fake.fault(Fault::AppliedThenSlow(Duration::from_secs(2)), 1);
    let rows = [fake.record("a@x.com", "pro")];
    let timed_out = send(crm.as_ref(), Action::Upsert, &rows).await.unwrap_err();
    assert!(
        matches!(&timed_out, DeliveryError::Transient(m) if m.contains("timed out")),
        "{timed_out:?}"
    );
    assert_no_secret(&fake, &timed_out.to_string());
    assert_eq!(send(crm.as_ref(), Action::Upsert, &rows).await.unwrap(), vec![Ok(())]);
    assert_eq!(fake.held(), plans(&[("a@x.com", Some("pro"))]));
}

pub async fn credentials_are_refused_permanently_and_never_shown<F: ContractFake>() {
    let fake = F::start().await;
    let refused = build(&spec(&fake, SyncMode::Upsert, &fake.refused_settings())).await;
    let text = match refused {
        // Refused when opening (a token grant) or on the first request.
        Err(error) => error.to_string(),
        Ok(crm) => {
            let error = send(crm.as_ref(), Action::Upsert, &[fake.record("a@x.com", "pro")])
                .await
                .unwrap_err();
            assert!(matches!(error, DeliveryError::Permanent(_)), "{error:?}");
            let check = crm.check_connection().await.unwrap_err();
            assert_no_secret(&fake, &check);
            error.to_string()
        }
    };
    assert_no_secret(&fake, &text);
    assert!(fake.held().is_empty());
}

pub async fn an_expired_session_is_renewed_once<F: ContractFake>() {
    let fake = F::start().await;
    let crm = open(&fake, SyncMode::Upsert, "5s").await;
    assert_eq!(
        send(crm.as_ref(), Action::Upsert, &[fake.record("a@x.com", "pro")])
            .await
            .unwrap(),
        vec![Ok(())]
    );
    if !fake.expire_sessions() {
        return;
    }
    assert_eq!(
        send(crm.as_ref(), Action::Upsert, &[fake.record("b@x.com", "pro")])
            .await
            .unwrap(),
        vec![Ok(())],
        "the connector renews an expired session and sends again"
    );
    assert_eq!(fake.held().len(), 2);
}

/// Writes the contract's tests for a fake type.
#[macro_export]
macro_rules! contract_tests {
    ($fake:ty) => {
        mod contract_suite {
            use $crate::destinations::contract as c;

            #[tokio::test]
            async fn modes_converge() {
                c::modes_converge::<$fake>().await;
            }

            #[tokio::test]
            async fn update_fails_only_missing_records() {
                c::update_fails_only_missing_records::<$fake>().await;
            }

            #[tokio::test]
            async fn a_refused_record_fails_alone() {
                c::a_refused_record_fails_alone::<$fake>().await;
            }

            #[tokio::test]
            async fn limits_and_outages_are_retriable() {
                c::limits_and_outages_are_retriable::<$fake>().await;
            }

            #[tokio::test]
            async fn a_late_answer_loses_and_duplicates_nothing() {
                c::a_late_answer_loses_and_duplicates_nothing::<$fake>().await;
            }

            #[tokio::test]
            async fn credentials_are_refused_permanently_and_never_shown() {
                c::credentials_are_refused_permanently_and_never_shown::<$fake>().await;
            }

            #[tokio::test]
            async fn an_expired_session_is_renewed_once() {
                c::an_expired_session_is_renewed_once::<$fake>().await;
            }
        }
    };
}

#[cfg(test)]
mod chaos_tests {
    use super::{Chaos, Fault};

    #[test]
    fn chaos_answers_its_shares_within_a_request_on_every_run() {
        for _ in 0..1000 {
            let mut chaos = Chaos::new(0.10, 0.05);
            let faults: Vec<Option<Fault>> = (0..100).map(|_| chaos.draw()).collect();
            let count = |fault| faults.iter().filter(|f| **f == Some(fault)).count();
            assert!((9..=11).contains(&count(Fault::RateLimited)), "{faults:?}");
            // One more may wait behind a rate-limited answer.
            assert!((3..=6).contains(&count(Fault::Unavailable)), "{faults:?}");
        }
        assert_eq!(Chaos::default().draw(), None, "no chaos asked, none given");
        let mut none = Chaos::new(0.0, 0.0);
        assert!((0..1000).all(|_| none.draw().is_none()));
    }

    #[test]
    fn chaos_falls_at_different_places_each_run() {
        let places = || {
            let mut chaos = Chaos::new(0.10, 0.0);
            (0..200).filter(|_| chaos.draw().is_some()).collect::<Vec<_>>()
        };
        let first = places();
        assert!(
            (0..20).any(|_| places() != first),
            "the same places every run: {first:?}"
        );
    }
}
