//! Fleet-wide delivery limits, as seen from one worker.
//!
//! The coordinator owns each destination's request rate and concurrency and
//! leases a share of them to every worker that is delivering to it; a worker
//! renews its lease twice a second while it works, so shares follow the fleet as
//! workers come and go, and a `429` seen by one worker pauses all of them within
//! one renewal (invariant 6). Within a worker one `FleetLimiter` per destination
//! is shared by every shard in flight. Below the lease's concurrency, an
//! adaptive window (`adaptive.rs`) keeps fewer requests in flight while the
//! destination slows down or pushes back.

use crate::adaptive::{AdaptiveConcurrency, Signal};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use ebb_shared::config::DeliveryLimits;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// How often a worker renews its leases while it delivers.
pub const RENEW_INTERVAL: Duration = Duration::from_millis(500);
/// How often a worker whose share is nothing asks again: capacity that another
/// worker releases should not sit idle for a whole renewal interval.
const BLOCKED_RENEW_INTERVAL: Duration = Duration::from_millis(50);
/// Requests in flight per worker when the destination sets no `max_concurrency`.
pub const DEFAULT_CONCURRENCY: u32 = 4;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseRequest {
    /// One limiter of one worker (`<worker>/<instance>`): a worker that drops a
    /// limiter and starts another must not have the old release cancel the new lease.
    pub holder: String,
    pub destination: String,
    pub limits: DeliveryLimits,
}

/// A worker's share of a destination's limits, valid for `ttl_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseGrant {
    /// Requests per second; `None` when the destination sets no rate. Zero means
    /// "wait": the rest of the fleet holds the whole rate for now.
    pub rate: Option<f64>,
    /// Requests in flight; `None` when the destination sets no limit.
    pub concurrency: Option<u32>,
    /// Every worker holds back this long (a destination answered `429`).
    pub paused_for_ms: u64,
    pub ttl_ms: u64,
}

impl LeaseGrant {
    /// A share of nothing: this worker must wait for others to shrink.
    pub fn is_blocked(&self) -> bool {
        self.rate.is_some_and(|r| r <= 0.0) || self.concurrency == Some(0)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaseRelease {
    pub holder: String,
    pub destination: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RateLimitedReport {
    pub destination: String,
    pub retry_after_ms: u64,
}

/// Asks whether a run is still in flight (a cancelled run's shards stop sending).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunQuery {
    pub run_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunAnswer {
    pub active: bool,
}

/// What a worker asks the coordinator while it delivers: its share of each
/// destination's limits, and whether the run it works for still runs.
#[async_trait]
pub trait LeaseProvider: Send + Sync + 'static {
    async fn lease(&self, request: &LeaseRequest) -> Result<LeaseGrant, String>;
    async fn release(&self, release: &LeaseRelease) -> Result<(), String>;
    async fn rate_limited(&self, report: &RateLimitedReport) -> Result<(), String>;
    /// Whether `run_id` is still in flight; `false` once it ended (cancelled,
    /// failed). A worker that cannot tell goes on.
    async fn run_active(&self, run_id: &str) -> Result<bool, String>;
}

/// Leases over the coordinator's HTTP API, for workers in their own processes.
pub struct HttpLeaseProvider {
    /// The coordinators' APIs, as configured (a Service, or each replica).
    base_urls: Vec<String>,
    /// The one that answered last, or the leader a standby named.
    current: std::sync::Mutex<String>,
    client: reqwest::Client,
}

/// A standby coordinator's refusal of a lease call.
#[derive(Deserialize)]
struct StandbyAnswer {
    leader: Option<String>,
}

impl HttpLeaseProvider {
    /// `coordinator_url` names one coordinator API or several, comma-separated
    /// (the replicas of a fleet): calls go to the one that answers, and a
    /// standby's answer sends them to the leader it names.
    /// `token`, the coordinator's `EBB_INTERNAL_TOKEN`, goes with every call
    /// as `Authorization: Bearer`.
    pub fn new(coordinator_url: &str, token: Option<&str>) -> Result<Self, String> {
        let base_urls: Vec<String> = coordinator_url
            .split(',')
            .map(|url| url.trim().trim_end_matches('/').to_string())
            .filter(|url| !url.is_empty())
            .collect();
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| "EBB_INTERNAL_TOKEN holds a character no HTTP header may carry".to_string())?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        Ok(HttpLeaseProvider {
            current: std::sync::Mutex::new(base_urls.first().cloned().unwrap_or_default()),
            base_urls,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .default_headers(headers)
                .build()
                .expect("http client builds"),
        })
    }

    async fn post<B: Serialize, R: for<'de> Deserialize<'de>>(&self, path: &str, body: &B) -> Result<R, String> {
        let first = self.current.lock().unwrap().clone();
        // The current one first, then the others; a standby puts its leader
        // next. Each URL is tried once per call.
        let mut candidates: std::collections::VecDeque<String> =
            std::iter::once(first).chain(self.base_urls.iter().cloned()).collect();
        let mut tried = std::collections::HashSet::new();
        let mut errors = Vec::new();
        while let Some(base) = candidates.pop_front() {
            if !tried.insert(base.clone()) {
                continue;
            }
            let response = match self.client.post(format!("{base}{path}")).json(body).send().await {
                Ok(response) => response,
                Err(e) => {
                    errors.push(format!("coordinator at {base} unreachable: {e}"));
                    continue;
                }
            };
            if response.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE {
                if let Ok(StandbyAnswer { leader: Some(leader) }) = response.json::<StandbyAnswer>().await {
                    candidates.push_front(leader.trim_end_matches('/').to_string());
                }
                errors.push(format!("coordinator at {base} is a standby"));
                continue;
            }
            if response.status() == reqwest::StatusCode::UNAUTHORIZED {
                return Err(format!(
                    "coordinator at {base} refused this worker on {path}: give the worker EBB_INTERNAL_TOKEN, \
                     the coordinator's"
                ));
            }
            if !response.status().is_success() {
                return Err(format!(
                    "coordinator at {base} answered {} on {path}",
                    response.status()
                ));
            }
            *self.current.lock().unwrap() = base.clone();
            return response
                .json()
                .await
                .map_err(|e| format!("coordinator answer on {path}: {e}"));
        }
        Err(errors.join("; "))
    }
}

#[async_trait]
impl LeaseProvider for HttpLeaseProvider {
    async fn lease(&self, request: &LeaseRequest) -> Result<LeaseGrant, String> {
        self.post("/internal/v1/leases", request).await
    }

    async fn release(&self, release: &LeaseRelease) -> Result<(), String> {
        self.post::<_, serde_json::Value>("/internal/v1/leases/release", release)
            .await
            .map(|_| ())
    }

    async fn rate_limited(&self, report: &RateLimitedReport) -> Result<(), String> {
        self.post::<_, serde_json::Value>("/internal/v1/leases/rate-limited", report)
            .await
            .map(|_| ())
    }

    async fn run_active(&self, run_id: &str) -> Result<bool, String> {
        let query = RunQuery {
            run_id: run_id.to_string(),
        };
        self.post::<_, RunAnswer>("/internal/v1/runs/active", &query)
            .await
            .map(|answer| answer.active)
    }
}

enum RateState {
    Unlimited,
    /// The lease grants no rate right now (or expired): hold every request.
    Blocked,
    Limited {
        per_second: f64,
        limiter: DefaultDirectRateLimiter,
    },
}

struct Shared {
    rate: ArcSwap<RateState>,
    concurrency: Mutex<Gate>,
    paused_until: Mutex<Instant>,
    changed: Notify,
}

struct Gate {
    in_flight: u32,
    /// The lease's share of the destination's concurrency.
    allowed: u32,
    /// Below that share, what the destination's answers say it keeps up with.
    adaptive: AdaptiveConcurrency,
}

impl Gate {
    fn limit(&self) -> u32 {
        self.allowed.min(self.adaptive.limit())
    }
}

/// One worker's view of one destination's fleet-wide limits.
pub struct FleetLimiter {
    shared: Arc<Shared>,
    provider: Arc<dyn LeaseProvider>,
    destination: String,
    holder: String,
    renewal: tokio::task::JoinHandle<()>,
}

/// Held while one request is in flight.
pub struct RequestPermit {
    shared: Arc<Shared>,
}

impl RequestPermit {
    /// The request ended like this: the adaptive window learns from it. A
    /// permit dropped without `observe` teaches nothing. The slot is held
    /// until the permit is dropped: delivery keeps it until the batch's answer
    /// is checkpointed, so what a crash resends is what held a slot.
    pub fn observe(&self, signal: Signal) {
        let decision = self.shared.concurrency.lock().unwrap().adaptive.observe(signal);
        if let Some(decision) = decision {
            tracing::trace!(?decision, "adaptive concurrency epoch ended");
        }
    }
}

impl Drop for RequestPermit {
    fn drop(&mut self) {
        self.shared.concurrency.lock().unwrap().in_flight -= 1;
        self.shared.changed.notify_waiters();
    }
}

impl Shared {
    fn apply(&self, grant: &LeaseGrant) {
        let rate = match grant.rate {
            None => RateState::Unlimited,
            Some(r) if r <= 0.0 => RateState::Blocked,
            Some(r) => {
                if let RateState::Limited { per_second, .. } = **self.rate.load() {
                    // Keep the limiter's schedule when the share did not change:
                    // a fresh limiter would allow an extra immediate request.
                    if (per_second - r).abs() < 1e-9 {
                        return self.apply_rest(grant);
                    }
                }
                let period = Duration::from_secs_f64(1.0 / r);
                let quota = Quota::with_period(period)
                    .expect("positive period")
                    .allow_burst(NonZeroU32::MIN);
                let limiter = RateLimiter::direct(quota);
                // A fresh limiter would admit one request at once, whenever the
                // last one went out; shares change often as workers come and go,
                // and each change would add a request. Spend that first token.
                let _ = limiter.check();
                RateState::Limited { per_second: r, limiter }
            }
        };
        self.rate.store(Arc::new(rate));
        self.apply_rest(grant);
    }

    fn apply_rest(&self, grant: &LeaseGrant) {
        {
            let mut gate = self.concurrency.lock().unwrap();
            gate.allowed = grant.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
            let ceiling = gate.allowed;
            gate.adaptive.set_ceiling(ceiling);
        }
        if grant.paused_for_ms > 0 {
            self.pause_for(Duration::from_millis(grant.paused_for_ms));
        }
        self.changed.notify_waiters();
    }

    fn pause_for(&self, duration: Duration) {
        let mut until = self.paused_until.lock().unwrap();
        *until = (*until).max(Instant::now() + duration);
    }

    fn block(&self) {
        self.rate.store(Arc::new(RateState::Blocked));
        self.changed.notify_waiters();
    }
}

impl FleetLimiter {
    /// Takes a first lease, then keeps renewing it until dropped.
    pub async fn start(
        provider: Arc<dyn LeaseProvider>,
        worker_id: &str,
        destination: &str,
        limits: DeliveryLimits,
    ) -> Result<FleetLimiter, String> {
        let holder = format!("{worker_id}/{}", uuid::Uuid::now_v7().simple());
        let request = LeaseRequest {
            holder: holder.clone(),
            destination: destination.to_string(),
            limits,
        };
        let first = provider.lease(&request).await?;
        let shared = Arc::new(Shared {
            rate: ArcSwap::from_pointee(RateState::Blocked),
            concurrency: Mutex::new(Gate {
                in_flight: 0,
                allowed: 0,
                adaptive: AdaptiveConcurrency::new(DEFAULT_CONCURRENCY),
            }),
            paused_until: Mutex::new(Instant::now()),
            changed: Notify::new(),
        });
        shared.apply(&first);
        let renewal = {
            let shared = shared.clone();
            let provider = provider.clone();
            tokio::spawn(async move {
                let mut valid_until = Instant::now() + Duration::from_millis(first.ttl_ms);
                let mut blocked = first.is_blocked();
                loop {
                    tokio::time::sleep(if blocked {
                        BLOCKED_RENEW_INTERVAL
                    } else {
                        RENEW_INTERVAL
                    })
                    .await;
                    match provider.lease(&request).await {
                        Ok(grant) => {
                            valid_until = Instant::now() + Duration::from_millis(grant.ttl_ms);
                            blocked = grant.is_blocked();
                            shared.apply(&grant);
                        }
                        Err(error) => {
                            tracing::warn!(%error, destination = %request.destination, "lease renewal failed");
                            if Instant::now() >= valid_until {
                                // Without a valid lease this worker cannot know its
                                // share: it holds back rather than overrun the fleet.
                                shared.block();
                            }
                        }
                    }
                }
            })
        };
        Ok(FleetLimiter {
            shared,
            provider,
            destination: destination.to_string(),
            holder,
            renewal,
        })
    }

    /// Waits for a free slot and a rate token, and for any pause to end.
    pub async fn acquire(&self) -> RequestPermit {
        let shared = &self.shared;
        loop {
            let changed = shared.changed.notified();
            if self.wait_out_pause().await {
                continue;
            }
            {
                let mut gate = shared.concurrency.lock().unwrap();
                if gate.in_flight < gate.limit() {
                    gate.in_flight += 1;
                    let in_flight = gate.in_flight;
                    gate.adaptive.admitted(in_flight);
                    break;
                }
            }
            let _ = tokio::time::timeout(RENEW_INTERVAL, changed).await;
        }
        let permit = RequestPermit { shared: shared.clone() };
        loop {
            let changed = shared.changed.notified();
            let state = shared.rate.load_full();
            match &*state {
                RateState::Unlimited => {}
                RateState::Limited { limiter, .. } => {
                    // When the share changes mid-wait, wait on the new limiter:
                    // finishing on the old schedule beside the new one would
                    // briefly send at both rates.
                    tokio::select! {
                        _ = limiter.until_ready() => {}
                        _ = changed => continue,
                    }
                }
                RateState::Blocked => {
                    let _ = tokio::time::timeout(RENEW_INTERVAL, changed).await;
                    continue;
                }
            }
            // A pause that began while this request waited for its token holds
            // it too; afterwards it needs a fresh token.
            if !self.wait_out_pause().await {
                return permit;
            }
        }
    }

    /// Sleeps through a pause; true if there was one.
    async fn wait_out_pause(&self) -> bool {
        let paused_until = *self.shared.paused_until.lock().unwrap();
        if paused_until > Instant::now() {
            tokio::time::sleep_until(paused_until).await;
            return true;
        }
        false
    }

    /// Requests this worker may have in flight to the destination now: the
    /// lease's share, or less when the destination's answers say so.
    pub fn concurrency_limit(&self) -> u32 {
        self.shared.concurrency.lock().unwrap().limit()
    }

    /// A destination answered `429`: hold back here at once, and tell the fleet.
    pub async fn rate_limited(&self, retry_after: Duration) {
        self.shared.pause_for(retry_after);
        let report = RateLimitedReport {
            destination: self.destination.clone(),
            retry_after_ms: retry_after.as_millis() as u64,
        };
        if let Err(error) = self.provider.rate_limited(&report).await {
            tracing::warn!(%error, destination = %self.destination, "could not share a 429 with the fleet");
        }
    }
}

impl Drop for FleetLimiter {
    fn drop(&mut self) {
        self.renewal.abort();
        let provider = self.provider.clone();
        let release = LeaseRelease {
            holder: self.holder.clone(),
            destination: self.destination.clone(),
        };
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = provider.release(&release).await;
            });
        }
    }
}

/// The limiters of one worker, one per destination, shared by its shards.
#[derive(Default)]
pub struct Limiters {
    active: tokio::sync::Mutex<HashMap<String, Weak<FleetLimiter>>>,
}

impl Limiters {
    pub async fn get(
        &self,
        provider: &Arc<dyn LeaseProvider>,
        worker_id: &str,
        destination: &str,
        limits: DeliveryLimits,
    ) -> Result<Arc<FleetLimiter>, String> {
        let mut active = self.active.lock().await;
        if let Some(limiter) = active.get(destination).and_then(Weak::upgrade) {
            return Ok(limiter);
        }
        let limiter = Arc::new(FleetLimiter::start(provider.clone(), worker_id, destination, limits).await?);
        active.insert(destination.to_string(), Arc::downgrade(&limiter));
        Ok(limiter)
    }
}
