//! Adaptive concurrency: how many requests one worker keeps in flight to one
//! destination, found by watching how the destination answers.
//!
//! The fleet lease caps concurrency from above (what the user or the vendor
//! allows); below that cap, a destination that slows down or pushes back
//! should get fewer requests at once, and one that keeps up should get more.
//! This is AIMD, decided once per *epoch* — the time it takes to hear back from
//! about one window of requests:
//!
//! - back-pressure during the epoch (`429`, `5xx`, a timeout) halves the window;
//! - a mean latency clearly above the baseline (the lowest seen) shrinks it
//!   by a tenth: the destination is queueing our requests;
//! - otherwise, if the window was actually used, it grows: doubling until the
//!   first decrease (slow start, so a first sync is not held at one request),
//!   then by one per epoch.
//!
//! Everything here is a pure decision over observations; the limiter feeds it
//! (see `limits.rs`) and applies its answer.

use std::time::Duration;

/// Window size when one decrease is due to back-pressure.
const BACK_PRESSURE_FACTOR: f64 = 0.5;
/// Window size when one decrease is due to latency alone.
const LATENCY_FACTOR: f64 = 0.9;
/// A window's mean latency counts as congestion above this multiple of the
/// baseline, plus `JITTER_SCALE` times the usual epoch-to-epoch jitter (noise
/// is not congestion).
const LATENCY_TOLERANCE: f64 = 1.5;
const JITTER_SCALE: f64 = 2.0;
/// How fast the baseline follows latency up (it follows it down at once).
const BASELINE_DRIFT: f64 = 0.05;
/// Weight of one calm epoch in the jitter estimate.
const JITTER_WEIGHT: f64 = 0.3;

/// How one request ended, as far as congestion goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Signal {
    /// The destination answered (accepted or refused the content) in this time.
    Answered(Duration),
    /// It pushed back: rate limited, unavailable, timed out.
    BackPressure,
}

#[derive(Debug, Clone)]
pub struct AdaptiveConcurrency {
    limit: u32,
    ceiling: u32,
    slow_start: bool,
    epoch: Epoch,
    /// What latency looks like when we are not the cause; `None` until a
    /// first epoch ended.
    baseline: Option<Baseline>,
}

#[derive(Debug, Clone, Copy)]
struct Baseline {
    /// The lowest epoch mean latency seen, in seconds, drifting slowly up so
    /// that a destination that became slower for good is learnt. A queue at
    /// the destination raises the mean; the window then shrinks until the
    /// queue is gone and the mean falls back to the baseline.
    latency: f64,
    /// Mean change of the epoch mean from one calm epoch to the next.
    jitter: f64,
    last_mean: f64,
}

#[derive(Debug, Clone, Default)]
struct Epoch {
    answers: u32,
    latency_sum: f64,
    latency_samples: u32,
    back_pressure: bool,
    /// Whether the window was full at some point, so that growing it could help.
    full: bool,
}

/// What the end of an epoch decided, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Grew,
    ShrankOnBackPressure,
    ShrankOnLatency,
    Held,
}

impl AdaptiveConcurrency {
    /// Starts at one request in flight, below `ceiling`.
    pub fn new(ceiling: u32) -> Self {
        AdaptiveConcurrency {
            limit: 1,
            ceiling: ceiling.max(1),
            slow_start: true,
            epoch: Epoch::default(),
            baseline: None,
        }
    }

    /// Requests this worker may have in flight now.
    pub fn limit(&self) -> u32 {
        self.limit.min(self.ceiling)
    }

    /// The lease changed its cap.
    pub fn set_ceiling(&mut self, ceiling: u32) {
        self.ceiling = ceiling.max(1);
        self.limit = self.limit.min(self.ceiling);
    }

    /// A request was admitted with `in_flight` requests out (itself included).
    pub fn admitted(&mut self, in_flight: u32) {
        if in_flight >= self.limit() {
            self.epoch.full = true;
        }
    }

    /// A request ended; at the end of an epoch, the window is decided anew.
    pub fn observe(&mut self, signal: Signal) -> Option<Decision> {
        self.epoch.answers += 1;
        match signal {
            Signal::Answered(latency) => {
                self.epoch.latency_sum += latency.as_secs_f64();
                self.epoch.latency_samples += 1;
            }
            Signal::BackPressure => self.epoch.back_pressure = true,
        }
        if self.epoch.answers < self.limit() {
            return None;
        }
        let epoch = std::mem::take(&mut self.epoch);
        Some(self.decide(epoch))
    }

    fn decide(&mut self, epoch: Epoch) -> Decision {
        let mean = (epoch.latency_samples > 0).then(|| epoch.latency_sum / f64::from(epoch.latency_samples));
        let congested = match (mean, self.baseline) {
            (Some(mean), Some(baseline)) => {
                mean > baseline.latency * LATENCY_TOLERANCE + baseline.jitter * JITTER_SCALE
            }
            _ => false,
        };
        let decision = if epoch.back_pressure {
            self.shrink(BACK_PRESSURE_FACTOR);
            Decision::ShrankOnBackPressure
        } else if congested {
            self.shrink(LATENCY_FACTOR);
            Decision::ShrankOnLatency
        } else if epoch.full && self.limit < self.ceiling {
            self.limit = if self.slow_start {
                self.limit.saturating_mul(2)
            } else {
                self.limit + 1
            }
            .min(self.ceiling);
            Decision::Grew
        } else {
            Decision::Held
        };
        // Latency under back-pressure says little about the destination's
        // normal pace.
        if let (Some(mean), false) = (mean, epoch.back_pressure) {
            self.baseline = Some(match self.baseline {
                None => Baseline {
                    latency: mean,
                    jitter: 0.0,
                    last_mean: mean,
                },
                Some(mut baseline) => {
                    baseline.latency = if mean < baseline.latency {
                        mean
                    } else {
                        baseline.latency + BASELINE_DRIFT * (mean - baseline.latency)
                    };
                    if !congested {
                        let change = (mean - baseline.last_mean).abs();
                        baseline.jitter += JITTER_WEIGHT * (change - baseline.jitter);
                    }
                    baseline.last_mean = mean;
                    baseline
                }
            });
        }
        decision
    }

    fn shrink(&mut self, factor: f64) {
        self.slow_start = false;
        // At least one less, at least one in flight.
        let shrunk = (f64::from(self.limit()) * factor).floor() as u32;
        self.limit = shrunk.min(self.limit().saturating_sub(1)).max(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs one epoch of `limit` requests, all admitted with a full window.
    fn epoch(ac: &mut AdaptiveConcurrency, signal: impl Fn(u32) -> Signal) -> Decision {
        let limit = ac.limit();
        for i in 0..limit {
            ac.admitted(limit);
            if let Some(decision) = ac.observe(signal(i)) {
                return decision;
            }
        }
        unreachable!("an epoch ends after `limit` answers")
    }

    fn ms(n: u64) -> Signal {
        Signal::Answered(Duration::from_millis(n))
    }

    #[test]
    fn slow_start_doubles_up_to_the_ceiling() {
        let mut ac = AdaptiveConcurrency::new(12);
        let mut limits = vec![ac.limit()];
        for _ in 0..5 {
            let expected = if ac.limit() < 12 {
                Decision::Grew
            } else {
                Decision::Held
            };
            assert_eq!(epoch(&mut ac, |_| ms(10)), expected);
            limits.push(ac.limit());
        }
        assert_eq!(limits, vec![1, 2, 4, 8, 12, 12]);
    }

    #[test]
    fn back_pressure_halves_and_growth_turns_additive() {
        let mut ac = AdaptiveConcurrency::new(64);
        for _ in 0..4 {
            epoch(&mut ac, |_| ms(10));
        }
        assert_eq!(ac.limit(), 16);
        assert_eq!(
            epoch(&mut ac, |i| if i == 3 { Signal::BackPressure } else { ms(10) }),
            Decision::ShrankOnBackPressure
        );
        assert_eq!(ac.limit(), 8);
        epoch(&mut ac, |_| ms(10));
        assert_eq!(ac.limit(), 9, "after a decrease the window grows by one per epoch");
        for _ in 0..10 {
            assert_eq!(epoch(&mut ac, |_| Signal::BackPressure), Decision::ShrankOnBackPressure);
        }
        assert_eq!(ac.limit(), 1, "never below one request in flight");
    }

    #[test]
    fn rising_latency_shrinks_noise_does_not() {
        let mut ac = AdaptiveConcurrency::new(20);
        for _ in 0..4 {
            epoch(&mut ac, |_| ms(10));
        }
        assert_eq!(ac.limit(), 16);
        // Jitter around the mean is not congestion.
        assert_eq!(epoch(&mut ac, |i| ms(if i % 2 == 0 { 8 } else { 13 })), Decision::Grew);
        assert_eq!(ac.limit(), 20);
        // Requests queueing at the destination are.
        assert_eq!(epoch(&mut ac, |_| ms(40)), Decision::ShrankOnLatency);
        assert_eq!(ac.limit(), 18);
    }

    #[test]
    fn an_unused_window_does_not_grow() {
        let mut ac = AdaptiveConcurrency::new(32);
        epoch(&mut ac, |_| ms(10));
        assert_eq!(ac.limit(), 2);
        // Requests arrive one at a time (the rate limit, not concurrency, holds them).
        ac.admitted(1);
        ac.observe(ms(10));
        ac.admitted(1);
        assert_eq!(ac.observe(ms(10)), Some(Decision::Held));
        assert_eq!(ac.limit(), 2);
    }

    #[test]
    fn the_lease_caps_the_window() {
        let mut ac = AdaptiveConcurrency::new(32);
        for _ in 0..5 {
            epoch(&mut ac, |_| ms(10));
        }
        assert_eq!(ac.limit(), 32);
        ac.set_ceiling(3);
        assert_eq!(ac.limit(), 3);
        ac.set_ceiling(32);
        assert_eq!(ac.limit(), 3, "a wider lease lets the window grow, it does not jump");
    }
}
