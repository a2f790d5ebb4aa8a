//! Fleet-wide rate-limit leases: the coordinator splits each destination's
//! request rate and concurrency among the workers delivering to it.
//!
//! The split is conservative: a worker's share is its fair part of the limit,
//! but never more than what the other holders leave unclaimed. A newcomer may
//! start with little or nothing and grows as the others shrink to their fair
//! part on their next renewal (every 500 ms), so the shares granted at any
//! instant never add up to more than the limit. A lease not renewed within its
//! TTL (a crashed worker) frees its share. Pure logic, with time passed in.

use crate::store::StateStore;
use ebb_shared::config::{Config, DeliveryLimits};
use ebb_worker::limits::{LeaseGrant, LeaseProvider, LeaseRelease, LeaseRequest, RateLimitedReport};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

pub const LEASE_TTL: Duration = Duration::from_secs(2);
/// Shares of a rate limit without a documented window add up to this part of
/// it: the margin absorbs each worker's one-request burst and the jitter
/// between a worker's limiter and the moment its request reaches the server.
pub const RATE_HEADROOM: f64 = 0.97;
/// Where the vendor counts its limit over a window (HubSpot: 100 requests per
/// rolling 10 s), each worker is granted whole requests of the window and
/// paces them over the window and this margin: its next request after its
/// share comes this long after a window from its first, so transport jitter
/// below it never puts one more of its requests into any window.
pub const WINDOW_MARGIN: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
struct Holder {
    rate: f64,
    /// Requests of the vendor's window granted, where the limit has one.
    window_requests: u32,
    concurrency: u32,
    expires: Instant,
}

/// A holder's part of a rate limit: requests per second and, where the
/// vendor counts over a window, the whole requests of the window they come
/// from.
#[derive(Debug, Clone, Copy, PartialEq)]
struct RateShare {
    per_second: f64,
    window_requests: u32,
}

/// The rate share of the holder at `position` among `holders`, never more
/// than the others leave of the limit. A newcomer may get nothing until the
/// others renew down to their fair part.
fn rate_share(limit: f64, window: Option<Duration>, holders: usize, position: usize, others: &[&Holder]) -> RateShare {
    // Whole requests of the window; a limit below one per window (a user's
    // lowered rate) is kept as a rate.
    let window_budget = window
        .map(|window| {
            (
                (limit * window.as_secs_f64()).floor().min(f64::from(u32::MAX)) as u32,
                window,
            )
        })
        .filter(|(budget, _)| *budget >= 1);
    match window_budget {
        Some((budget, window)) => {
            // A worker granted n requests of the window sends one every
            // (window + margin) / n: any window then holds at most n of its
            // requests, its first one included, and the n add up to the
            // vendor's count.
            let holders = holders as u32;
            let fair = budget / holders + u32::from((position as u32) < budget % holders);
            let taken: u32 = others.iter().map(|h| h.window_requests).sum();
            let window_requests = fair.min(budget.saturating_sub(taken));
            RateShare {
                per_second: f64::from(window_requests) / (window + WINDOW_MARGIN).as_secs_f64(),
                window_requests,
            }
        }
        _ => {
            let budget = limit * RATE_HEADROOM;
            let fair = budget / holders as f64;
            let taken: f64 = others.iter().map(|h| h.rate).sum();
            RateShare {
                per_second: fair.min((budget - taken).max(0.0)),
                window_requests: 0,
            }
        }
    }
}

#[derive(Debug, Default)]
struct DestinationLeases {
    holders: BTreeMap<String, Holder>,
    paused_until: Option<Instant>,
}

/// A destination's limits as the coordinator's config sets them.
#[derive(Debug, Clone, Copy)]
struct ConfiguredLimits {
    limits: DeliveryLimits,
    /// The longest a `429` may pause the fleet for.
    max_pause: Duration,
}

#[derive(Debug, Default)]
pub struct LeaseTable {
    destinations: HashMap<String, DestinationLeases>,
    /// What each destination may take. Grants come from here, never from what
    /// a worker asks for: a worker on another config cannot raise a limit.
    configured: HashMap<String, ConfiguredLimits>,
}

impl LeaseTable {
    /// The leases of the destinations of `config`.
    pub fn for_config(config: &Config) -> LeaseTable {
        let configured = config
            .destinations
            .iter()
            // A loaded config has a profile for every destination.
            .filter_map(|(name, destination)| {
                let profile = ebb_worker::destinations::profile(destination).ok()?;
                let limits = ConfiguredLimits {
                    limits: profile.limits,
                    max_pause: profile.max_retry_after,
                };
                Some((name.clone(), limits))
            })
            .collect();
        LeaseTable {
            destinations: HashMap::new(),
            configured,
        }
    }

    pub fn lease(&mut self, request: &LeaseRequest, now: Instant) -> Result<LeaseGrant, String> {
        let Some(configured) = self.configured.get(&request.destination).copied() else {
            return Err(format!(
                "the coordinator's config has no destination {:?}: coordinator and workers must run the same config",
                request.destination
            ));
        };
        let leases = self.destinations.entry(request.destination.clone()).or_default();
        leases.holders.retain(|_, h| h.expires > now);
        let previous = leases.holders.remove(&request.holder);
        let holders = leases.holders.len() + 1;
        let position = leases.holders.keys().filter(|k| **k < request.holder).count();
        let others: Vec<&Holder> = leases.holders.values().collect();
        let others_concurrency: u32 = others.iter().map(|h| h.concurrency).sum();

        let rate = configured
            .limits
            .rate_limit
            .map(|limit| rate_share(limit, configured.limits.rate_window, holders, position, &others));
        let concurrency = configured.limits.max_concurrency.map(|limit| {
            let fair = limit / holders as u32 + u32::from((position as u32) < limit % holders as u32);
            fair.min(limit.saturating_sub(others_concurrency))
        });
        let _ = previous;
        leases.holders.insert(
            request.holder.clone(),
            Holder {
                rate: rate.map_or(0.0, |r| r.per_second),
                window_requests: rate.map_or(0, |r| r.window_requests),
                concurrency: concurrency.unwrap_or(0),
                expires: now + LEASE_TTL,
            },
        );
        let paused_for = leases
            .paused_until
            .filter(|until| *until > now)
            .map(|until| until - now)
            .unwrap_or_default();
        Ok(LeaseGrant {
            rate: rate.map(|r| r.per_second),
            concurrency,
            paused_for_ms: paused_for.as_millis() as u64,
            ttl_ms: LEASE_TTL.as_millis() as u64,
        })
    }

    pub fn release(&mut self, release: &LeaseRelease) {
        if let Some(leases) = self.destinations.get_mut(&release.destination) {
            leases.holders.remove(&release.holder);
        }
    }

    /// A `429` pauses every holder of the destination until `retry_after`
    /// passes, for at most the destination's `max_retry_after`.
    pub fn rate_limited(&mut self, report: &RateLimitedReport, now: Instant) {
        let Some(configured) = self.configured.get(&report.destination).copied() else {
            return;
        };
        let leases = self.destinations.entry(report.destination.clone()).or_default();
        let pause = Duration::from_millis(report.retry_after_ms).min(configured.max_pause);
        let until = now + pause;
        leases.paused_until = Some(leases.paused_until.map_or(until, |u| u.max(until)));
    }
}

/// The lease table as a `LeaseProvider`: in-process for standalone workers, and
/// behind the coordinator's `/internal/v1/leases` API for remote ones.
#[derive(Clone, Default)]
pub struct LocalLeases {
    pub table: Arc<Mutex<LeaseTable>>,
    /// Where runs are, to tell workers whether theirs still runs.
    store: Option<StateStore>,
    gate: Arc<Mutex<LeaseGate>>,
}

/// Whether this coordinator grants leases: only the leader does, and only
/// once the leases of the leader before it have expired.
#[derive(Debug, Clone, Default)]
enum LeaseGate {
    /// Grants (a coordinator that was never told otherwise: tests, embedded).
    #[default]
    Granting,
    /// The leader, granting nothing before `from`.
    LeadingFrom(Instant),
    /// A standby: the worker should ask the leader, at this URL if known.
    Standby(Option<String>),
}

/// A standby's refusal, naming the leader's API when it is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotLeader {
    pub leader_url: Option<String>,
}

impl LocalLeases {
    pub fn for_config(config: &Config) -> LocalLeases {
        LocalLeases {
            table: Arc::new(Mutex::new(LeaseTable::for_config(config))),
            store: None,
            gate: Arc::default(),
        }
    }

    /// Stops granting: another coordinator (at `leader_url`) leads.
    pub fn stand_by(&self, leader_url: Option<String>) {
        *self.gate.lock().unwrap() = LeaseGate::Standby(leader_url);
    }

    /// Starts granting, after `hold` (one lease TTL after a takeover).
    pub fn lead(&self, hold: Duration) {
        *self.gate.lock().unwrap() = LeaseGate::LeadingFrom(Instant::now() + hold);
    }

    /// `Err` on a standby: lease calls belong to the leader.
    pub fn check_leading(&self) -> Result<(), NotLeader> {
        match &*self.gate.lock().unwrap() {
            LeaseGate::Standby(url) => Err(NotLeader {
                leader_url: url.clone().filter(|u| !u.is_empty()),
            }),
            _ => Ok(()),
        }
    }

    pub fn with_store(mut self, store: StateStore) -> LocalLeases {
        self.store = Some(store);
        self
    }
}

#[async_trait::async_trait]
impl LeaseProvider for LocalLeases {
    async fn lease(&self, request: &LeaseRequest) -> Result<LeaseGrant, String> {
        let now = Instant::now();
        match &*self.gate.lock().unwrap() {
            LeaseGate::Standby(_) => return Err("this coordinator is a standby; ask the leader".into()),
            LeaseGate::LeadingFrom(from) if now < *from => {
                // Nothing yet: come back once the old leader's leases are gone.
                return Ok(LeaseGrant {
                    rate: Some(0.0),
                    concurrency: Some(0),
                    paused_for_ms: 0,
                    ttl_ms: (*from - now).as_millis().max(1) as u64,
                });
            }
            _ => {}
        }
        self.table.lock().unwrap().lease(request, now)
    }

    async fn release(&self, release: &LeaseRelease) -> Result<(), String> {
        self.table.lock().unwrap().release(release);
        Ok(())
    }

    async fn rate_limited(&self, report: &RateLimitedReport) -> Result<(), String> {
        self.table.lock().unwrap().rate_limited(report, Instant::now());
        Ok(())
    }

    async fn run_active(&self, run_id: &str) -> Result<bool, String> {
        let Some(store) = &self.store else {
            return Ok(true);
        };
        match store.run(run_id).await {
            Ok(run) => Ok(run.is_some_and(|run| !run.status.is_terminal())),
            Err(error) => Err(error.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table whose config has destination `crm`: 20 requests/s, 4 at once,
    /// pauses of at most a minute.
    fn table() -> LeaseTable {
        let config = ebb_worker::config::from_yaml_str(
            std::path::Path::new("t.yaml"),
            "destinations:\n  crm: { type: http, url: \"http://127.0.0.1:1/\", rate_limit: 20, max_concurrency: 4, max_retry_after: 1m }\n",
            std::path::Path::new("."),
        )
        .unwrap();
        LeaseTable::for_config(&config)
    }

    fn granted(table: &mut LeaseTable, request: &LeaseRequest, now: Instant) -> LeaseGrant {
        table.lease(request, now).unwrap()
    }

    fn request(worker: &str) -> LeaseRequest {
        LeaseRequest {
            holder: worker.to_string(),
            destination: "crm".to_string(),
            limits: DeliveryLimits {
                rate_limit: Some(20.0),
                rate_window: None,
                max_concurrency: Some(4),
            },
        }
    }

    #[test]
    fn granted_shares_never_exceed_the_limit_and_converge_to_fair() {
        let mut table = table();
        let now = Instant::now();
        let mut grants: BTreeMap<String, LeaseGrant> = BTreeMap::new();
        let workers = ["w1", "w2", "w3"];
        for round in 0..6 {
            for worker in workers.iter().take(1 + round.min(2)) {
                grants.insert(worker.to_string(), granted(&mut table, &request(worker), now));
                let total_rate: f64 = grants.values().map(|g| g.rate.unwrap()).sum();
                let total_concurrency: u32 = grants.values().map(|g| g.concurrency.unwrap()).sum();
                assert!(total_rate <= 20.0 * RATE_HEADROOM + 1e-9, "round {round}: {total_rate}");
                assert!(total_concurrency <= 4, "round {round}: {total_concurrency}");
            }
        }
        for grant in grants.values() {
            assert!(
                (grant.rate.unwrap() - 20.0 * RATE_HEADROOM / 3.0).abs() < 1e-9,
                "{grant:?}"
            );
        }
        let concurrency: Vec<u32> = grants.values().map(|g| g.concurrency.unwrap()).collect();
        assert_eq!(concurrency, vec![2, 1, 1]);
    }

    /// A table whose destination `crm` takes 100 requests per rolling 10 s
    /// (HubSpot's Starter limit).
    fn windowed_table() -> LeaseTable {
        let limits = ConfiguredLimits {
            limits: DeliveryLimits {
                rate_limit: Some(10.0),
                rate_window: Some(Duration::from_secs(10)),
                max_concurrency: None,
            },
            max_pause: Duration::from_secs(60),
        };
        LeaseTable {
            destinations: HashMap::new(),
            configured: HashMap::from([("crm".to_string(), limits)]),
        }
    }

    /// The most requests a worker pacing at `rate`, its first sent at once,
    /// puts into any stretch of `span`.
    fn most_in(span: Duration, rate: f64) -> u32 {
        if rate <= 0.0 {
            return 0;
        }
        (span.as_secs_f64() * rate).floor() as u32 + 1
    }

    #[test]
    fn a_windowed_limit_is_split_in_whole_requests_no_window_can_exceed() {
        let window = Duration::from_secs(10);
        // Jitter below the margin may stretch the window a request is
        // counted in; it must not let one more in.
        let stretched = window + WINDOW_MARGIN - Duration::from_millis(1);
        for workers in 1..=12 {
            let mut table = windowed_table();
            let now = Instant::now();
            let names: Vec<String> = (0..workers).map(|i| format!("w{i:02}")).collect();
            let mut grants: BTreeMap<String, LeaseGrant> = BTreeMap::new();
            // Newcomers take what the others leave, then all renew to fair.
            for round in 0..3 {
                for name in &names {
                    grants.insert(name.clone(), granted(&mut table, &request(name), now));
                    let in_window: u32 = grants.values().map(|g| most_in(stretched, g.rate.unwrap())).sum();
                    assert!(
                        in_window <= 100,
                        "{workers} workers, round {round}: {in_window} in a window"
                    );
                }
            }
            let rates: Vec<f64> = grants.values().map(|g| g.rate.unwrap()).collect();
            let total: f64 = rates.iter().sum();
            assert!(
                (total - 100.0 / (window + WINDOW_MARGIN).as_secs_f64()).abs() < 1e-9,
                "{workers} workers use the whole window: {total}/s"
            );
            let spread = rates.iter().cloned().fold(0.0, f64::max) - rates.iter().cloned().fold(f64::MAX, f64::min);
            assert!(
                spread * 10.1 < 1.0 + 1e-9,
                "{workers} workers: shares differ by one request at most"
            );
        }
    }

    #[test]
    fn a_rate_below_one_request_per_window_stays_a_rate() {
        let share = rate_share(0.05, Some(Duration::from_secs(10)), 1, 0, &[]);
        assert_eq!(share.window_requests, 0);
        assert!((share.per_second - 0.05 * RATE_HEADROOM).abs() < 1e-12, "{share:?}");
    }

    #[test]
    fn expired_and_released_leases_free_their_share() {
        let mut table = table();
        let now = Instant::now();
        granted(&mut table, &request("w1"), now);
        granted(&mut table, &request("w2"), now);
        table.release(&LeaseRelease {
            holder: "w2".into(),
            destination: "crm".into(),
        });
        assert_eq!(
            granted(&mut table, &request("w1"), now).rate,
            Some(20.0 * RATE_HEADROOM)
        );
        granted(&mut table, &request("w3"), now);
        let later = now + LEASE_TTL + Duration::from_millis(1);
        assert_eq!(
            granted(&mut table, &request("w3"), later).rate,
            Some(20.0 * RATE_HEADROOM),
            "w1 stopped renewing"
        );
    }

    #[test]
    fn a_429_pauses_every_holder() {
        let mut table = table();
        let now = Instant::now();
        granted(&mut table, &request("w1"), now);
        table.rate_limited(
            &RateLimitedReport {
                destination: "crm".into(),
                retry_after_ms: 3000,
            },
            now,
        );
        let grant = granted(&mut table, &request("w2"), now + Duration::from_secs(1));
        assert_eq!(grant.paused_for_ms, 2000);
        assert_eq!(
            granted(&mut table, &request("w2"), now + Duration::from_secs(4)).paused_for_ms,
            0
        );
    }

    #[test]
    fn grants_come_from_the_coordinators_config_not_from_the_worker() {
        let mut table = table();
        let mut greedy = request("w1");
        greedy.limits = DeliveryLimits {
            rate_limit: Some(10_000.0),
            rate_window: None,
            max_concurrency: Some(1_000),
        };
        let grant = granted(&mut table, &greedy, Instant::now());
        assert_eq!((grant.rate, grant.concurrency), (Some(20.0 * RATE_HEADROOM), Some(4)));
        let mut unknown = request("w1");
        unknown.destination = "elsewhere".into();
        let refused = table.lease(&unknown, Instant::now()).unwrap_err();
        assert!(refused.contains("\"elsewhere\""), "{refused}");
    }

    #[test]
    fn a_pause_never_outlasts_the_destinations_cap() {
        let mut table = table();
        let now = Instant::now();
        table.rate_limited(
            &RateLimitedReport {
                destination: "crm".into(),
                retry_after_ms: 365 * 24 * 3600 * 1000,
            },
            now,
        );
        assert_eq!(granted(&mut table, &request("w1"), now).paused_for_ms, 60_000);
    }
}
