//! Backend health and load: consecutive failures and ejection with a growing interval,
//! in-flight counts and concurrency slots, and the peak-EWMA latency estimate.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use crate::clock::now_ms;

/// Consecutive failures that eject a backend.
pub const EJECT_AFTER_FAILURES: u32 = 5;
/// First ejection period; doubled for each further ejection, up to [`MAX_EJECTION`].
pub const BASE_EJECTION: Duration = Duration::from_secs(5);
/// Longest ejection.
pub const MAX_EJECTION: Duration = Duration::from_secs(300);
/// Time constant of the peak-EWMA latency estimate.
const EWMA_DECAY: Duration = Duration::from_secs(10);

/// Health and load of one backend, shared by every table that contains it.
#[derive(Debug, Default)]
pub struct BackendState {
    in_flight: AtomicU32,
    consecutive_failures: AtomicU32,
    /// `now_ms()` until which the backend is ejected; 0 = healthy.
    ejected_until: AtomicU64,
    /// How many times in a row it was ejected without a success since: grows the interval.
    ejections: AtomicU32,
    /// Set when an ejection ends and cleared by the next success: one failure while probing
    /// ejects again at once.
    probing: AtomicBool,
    /// Peak-EWMA latency estimate in microseconds (0 = unmeasured) and when it was updated.
    ewma_us: AtomicU64,
    ewma_at_ms: AtomicU64,
}

/// The result of a health transition, for the `backend_healthy` gauge and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthChange {
    /// No change.
    None,
    /// The backend was just ejected for this long.
    Ejected(Duration),
    /// The backend just served successfully after an ejection.
    Restored,
}

/// One in-flight request on a backend; decrements the count when dropped.
#[derive(Debug)]
pub struct InFlight {
    state: Arc<BackendState>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.state.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

// === impl BackendState ===

impl BackendState {
    /// True when not ejected (or the ejection has expired: then the next request probes).
    pub fn is_healthy(&self) -> bool {
        let until = self.ejected_until.load(Ordering::Acquire);
        until == 0 || now_ms() >= until
    }

    /// When the current ejection ends (`now_ms` clock), if ejected.
    pub fn ejected_until(&self) -> Option<u64> {
        let until = self.ejected_until.load(Ordering::Acquire);
        (until != 0 && now_ms() < until).then_some(until)
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Takes a concurrency slot, or `None` when `max` are already in flight. Never queues.
    pub fn try_acquire(self: &Arc<Self>, max: Option<u32>) -> Option<InFlight> {
        let mut cur = self.in_flight.load(Ordering::Acquire);
        loop {
            if max.is_some_and(|m| cur >= m) {
                return None;
            }
            match self.in_flight.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    return Some(InFlight {
                        state: self.clone(),
                    })
                }
                Err(actual) => cur = actual,
            }
        }
    }

    /// Records a successful call and its latency.
    pub fn on_success(&self, latency: Duration) -> HealthChange {
        self.observe_latency(latency);
        self.consecutive_failures.store(0, Ordering::Release);
        let was_ejected = self.ejected_until.swap(0, Ordering::AcqRel) != 0;
        let was_probing = self.probing.swap(false, Ordering::AcqRel);
        // Hysteresis: a success forgives one ejection, so a backend that flaps is kept out
        // longer each time instead of bouncing in and out at the base interval.
        let _ = self
            .ejections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |e| {
                Some(e.saturating_sub(1))
            });
        if was_ejected || was_probing {
            HealthChange::Restored
        } else {
            HealthChange::None
        }
    }

    /// Records a failed call (connect error, timeout, 5xx). Ejects after
    /// [`EJECT_AFTER_FAILURES`] in a row, or at once when the failure was a probe.
    pub fn on_failure(&self) -> HealthChange {
        let now = now_ms();
        let until = self.ejected_until.load(Ordering::Acquire);
        if until != 0 && now < until {
            return HealthChange::None;
        }
        let probe_failed = until != 0 || self.probing.load(Ordering::Acquire);
        let failures = self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        if !probe_failed && failures < EJECT_AFTER_FAILURES {
            return HealthChange::None;
        }
        let n = self.ejections.fetch_add(1, Ordering::AcqRel).min(16);
        let period = BASE_EJECTION.saturating_mul(1 << n).min(MAX_EJECTION);
        self.ejected_until
            .store(now + period.as_millis() as u64, Ordering::Release);
        self.consecutive_failures.store(0, Ordering::Release);
        self.probing.store(true, Ordering::Release);
        HealthChange::Ejected(period)
    }

    /// Folds a latency sample into the peak-EWMA estimate: a slower sample takes effect at
    /// once, a faster one only gradually, so a backend that just got slow is avoided quickly.
    pub fn observe_latency(&self, d: Duration) {
        let sample = (d.as_micros().min(u128::from(u64::MAX / 2)) as u64).max(1);
        let now = now_ms();
        let prev_at = self.ewma_at_ms.swap(now, Ordering::AcqRel);
        let elapsed = now.saturating_sub(prev_at) as f64;
        let _ = self
            .ewma_us
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |old| {
                if old == 0 || sample > old {
                    return Some(sample);
                }
                let w = (-elapsed / EWMA_DECAY.as_millis() as f64).exp();
                Some((old as f64 * w + sample as f64 * (1.0 - w)).max(1.0) as u64)
            });
    }

    /// Load-weighted cost for least-latency picking: the latency estimate times the requests
    /// in flight plus one. Unmeasured backends cost 0 so each gets tried.
    pub fn cost(&self) -> u64 {
        let ewma = self.ewma_us.load(Ordering::Acquire);
        ewma.saturating_mul(u64::from(self.in_flight()) + 1)
    }

    /// The latency estimate in microseconds (0 = unmeasured).
    pub fn latency_estimate_us(&self) -> u64 {
        self.ewma_us.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ejects_after_consecutive_failures_and_probes_back() {
        let s = BackendState::default();
        for _ in 0..EJECT_AFTER_FAILURES - 1 {
            assert_eq!(s.on_failure(), HealthChange::None);
        }
        // A success in between resets the run: one slow reply does not flap it.
        assert_eq!(s.on_success(Duration::from_millis(1)), HealthChange::None);
        for _ in 0..EJECT_AFTER_FAILURES - 1 {
            s.on_failure();
        }
        assert!(s.is_healthy());
        assert_eq!(s.on_failure(), HealthChange::Ejected(BASE_EJECTION));
        assert!(!s.is_healthy());
        // Expire the ejection: the next call probes; a failed probe ejects at once, longer.
        s.ejected_until.store(1, Ordering::Release);
        assert!(s.is_healthy());
        assert_eq!(s.on_failure(), HealthChange::Ejected(BASE_EJECTION * 2));
        s.ejected_until.store(1, Ordering::Release);
        assert_eq!(
            s.on_success(Duration::from_millis(1)),
            HealthChange::Restored
        );
        assert!(s.is_healthy());
    }

    #[test]
    fn concurrency_slots_never_exceed_max() {
        let s = Arc::new(BackendState::default());
        let a = s.try_acquire(Some(2)).unwrap();
        let _b = s.try_acquire(Some(2)).unwrap();
        assert!(s.try_acquire(Some(2)).is_none());
        drop(a);
        assert!(s.try_acquire(Some(2)).is_some());
        assert!(s.try_acquire(None).is_some());
    }

    #[test]
    fn peak_ewma_jumps_up_and_decays_down() {
        let s = BackendState::default();
        s.observe_latency(Duration::from_millis(10));
        assert_eq!(s.latency_estimate_us(), 10_000);
        s.observe_latency(Duration::from_millis(100));
        assert_eq!(s.latency_estimate_us(), 100_000);
        s.observe_latency(Duration::from_millis(10));
        // Right after the peak a fast sample barely moves the estimate.
        assert!(s.latency_estimate_us() > 90_000);
    }
}
