//! Runtime state that outlives a routing table: backend health, in-flight counts, latency
//! estimates, upstream key states and retry budgets.
//!
//! Tables are rebuilt on every configuration change, but a backend that was failing a moment
//! ago is still failing, and a key resting after a 429 must keep resting. So the table holds
//! only a late-bound handle to state kept in a [`StateRegistry`], keyed by backend name (and,
//! for keys, by a digest of the key, so a rotated key starts fresh). The registry binds handles
//! when a table is published and forgets entries whose backends are gone.

pub use crate::budget::{BudgetCounter, BudgetState};

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
        Arc, Mutex, OnceLock,
    },
    time::{Duration, Instant},
};
// Provider wire format, read here for key steering.
pub use switchyard_providers::ratelimit::{rate_limit_hint, RateLimitHint};
use switchyard_types::civil::{civil_from_days, days_from_civil};

/// Milliseconds since an arbitrary process-wide origin: the clock for every timestamp kept in
/// an atomic here.
pub fn now_ms() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    // +1 so that 0 can mean "never".
    Instant::now().duration_since(origin).as_millis() as u64 + 1
}

/// Consecutive failures that eject a backend.
pub const EJECT_AFTER_FAILURES: u32 = 5;
/// First ejection period; doubled for each further ejection, up to [`MAX_EJECTION`].
pub const BASE_EJECTION: Duration = Duration::from_secs(5);
/// Longest ejection.
pub const MAX_EJECTION: Duration = Duration::from_secs(300);
/// Time constant of the peak-EWMA latency estimate.
const EWMA_DECAY: Duration = Duration::from_secs(10);
/// Longest a key rests on the upstream's word (Retry-After, a rate-limit reset): an upstream
/// cannot take a key out for years, nor overflow the clock, with a huge value.
pub const MAX_KEY_REST: Duration = Duration::from_secs(24 * 3600);
/// First time a key the upstream refused as invalid stays out of service; doubled for each
/// further refusal without a success between, up to [`MAX_KEY_DISABLE`]. After it the key is
/// tried again (a probe): a key fixed upstream, or refused by mistake, comes back by itself.
pub const BASE_KEY_DISABLE: Duration = Duration::from_secs(60);
/// Longest a refused key stays out before it is tried again.
pub const MAX_KEY_DISABLE: Duration = Duration::from_secs(30 * 60);

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

/// The state of one upstream key of a backend.
#[derive(Debug)]
pub struct KeyState {
    /// `now_ms()` until which the key rests after a 429 or a drained rate limit; 0 = never.
    resting_until: AtomicU64,
    /// `now_ms()` until which the key is out of service because the upstream refused it as
    /// invalid; 0 = never disabled. Past it the key is tried again.
    disabled_until: AtomicU64,
    /// Refusals since the key last served a request: grows the disable period.
    disables: AtomicU32,
    reason: Mutex<Option<String>>,
    /// Share of the upstream's rate limit left, in per-mille, from its headers (1000 = all).
    headroom_permille: AtomicU32,
}

/// A key's state as reported (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyReport {
    /// Position of the key in `spec.auth.keys` (0 for `secretRef`).
    pub index: usize,
    /// `healthy`, `resting` or `disabled`.
    pub state: &'static str,
    /// Seconds until a resting key is used again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resting_for_secs: Option<u64>,
    /// Seconds until a disabled key is tried again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_for_secs: Option<u64>,
    /// Why a key is disabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

// === impl KeyState ===

impl Default for KeyState {
    fn default() -> Self {
        KeyState {
            resting_until: AtomicU64::new(0),
            disabled_until: AtomicU64::new(0),
            disables: AtomicU32::new(0),
            reason: Mutex::new(None),
            headroom_permille: AtomicU32::new(1000),
        }
    }
}

impl KeyState {
    fn new() -> Self {
        Self::default()
    }

    /// Usable now.
    pub fn is_available(&self) -> bool {
        // A key that never rested nor was disabled needs no clock read (one per key and pick
        // otherwise).
        let until = self.resting_until().max(self.disabled_until());
        until == 0 || until <= now_ms()
    }

    /// Out of service now because the upstream refused it (until its disable period ends,
    /// or the key changes).
    pub fn is_disabled(&self) -> bool {
        let until = self.disabled_until();
        until != 0 && now_ms() < until
    }

    /// `now_ms()` until which the key is disabled (0 or past = not disabled).
    pub fn disabled_until(&self) -> u64 {
        self.disabled_until.load(Ordering::Acquire)
    }

    /// `now_ms()` until which the key rests (0 or past = not resting).
    pub fn resting_until(&self) -> u64 {
        self.resting_until.load(Ordering::Acquire)
    }

    /// Rests the key for `d` (after a 429, for its Retry-After), at most [`MAX_KEY_REST`].
    pub fn rest(&self, d: Duration) {
        let ms = d.min(MAX_KEY_REST).as_millis() as u64;
        let until = now_ms().saturating_add(ms);
        self.resting_until.fetch_max(until, Ordering::AcqRel);
    }

    /// Takes the key out of service: the upstream refused it as invalid. It is tried again
    /// after [`BASE_KEY_DISABLE`], doubled for each refusal in a row up to
    /// [`MAX_KEY_DISABLE`]. Returns the period when the key was in service until now, and
    /// `None` when it already was out (requests that took it before it was disabled, or
    /// probes that raced, do not stretch the period nor report it twice).
    pub fn disable(&self, reason: String) -> Option<Duration> {
        let now = now_ms();
        let until = self.disabled_until();
        if until != 0 && now < until {
            return None;
        }
        let n = self.disables.fetch_add(1, Ordering::AcqRel).min(16);
        let period = BASE_KEY_DISABLE.saturating_mul(1 << n).min(MAX_KEY_DISABLE);
        let next = now.saturating_add(period.as_millis() as u64);
        if self
            .disabled_until
            .compare_exchange(until, next, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // Another refusal disabled it meanwhile: that one counts, not this.
            self.disables.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        if let Ok(mut r) = self.reason.lock() {
            *r = Some(reason);
        }
        Some(period)
    }

    /// Records that the key served a request. True when it had been disabled: it is back in
    /// service (and its next refusal starts again from [`BASE_KEY_DISABLE`]).
    pub fn on_success(&self) -> bool {
        // One load on the common path: a key never refused.
        if self.disables.load(Ordering::Acquire) == 0 {
            return false;
        }
        self.disabled_until.store(0, Ordering::Release);
        self.disables.swap(0, Ordering::AcqRel) != 0
    }

    /// Relative weight multiplier in per-mille from the last rate-limit headers: keys running
    /// dry are picked less, before they hit a 429.
    pub fn headroom_permille(&self) -> u32 {
        self.headroom_permille.load(Ordering::Acquire)
    }

    /// Applies the upstream's rate-limit headers.
    pub fn observe_rate_limit(&self, hint: RateLimitHint) {
        if let Some(remaining) = hint.remaining {
            if remaining == 0 {
                self.rest(hint.reset_after.unwrap_or(Duration::from_secs(1)));
            }
            // In u128: the upstream's numbers may be anything up to u64::MAX.
            let permille = match hint.limit {
                Some(limit) if limit > 0 => {
                    (u128::from(remaining.min(limit)) * 1000 / u128::from(limit)) as u32
                }
                _ => 1000,
            };
            // Never below 5%: a key with a little left is still better than none.
            self.headroom_permille
                .store(permille.clamp(50, 1000), Ordering::Release);
        }
    }

    /// The key's state for status and `/debug/routes`.
    pub fn report(&self, index: usize) -> KeyReport {
        let now = now_ms();
        let until = self.resting_until();
        let reason = self.reason.lock().ok().and_then(|r| r.clone());
        let disabled_until = self.disabled_until();
        let (state, resting_for_secs, disabled_for_secs) = if disabled_until > now {
            (
                "disabled",
                None,
                Some((disabled_until - now).div_ceil(1000)),
            )
        } else if until > now {
            ("resting", Some((until - now).div_ceil(1000)), None)
        } else {
            ("healthy", None, None)
        };
        KeyReport {
            index,
            state,
            resting_for_secs,
            disabled_for_secs,
            reason: if state == "disabled" { reason } else { None },
        }
    }
}

/// A route's retry budget: retries (and fallbacks after a failure) may add at most
/// `ratio` extra attempts over a sliding window, plus a small floor so a quiet route can still
/// retry. Stops retry storms when a provider is down.
#[derive(Debug)]
pub struct RetryBudget {
    window: Mutex<BudgetWindow>,
    ratio: f64,
    floor: u32,
}

#[derive(Debug, Default)]
struct BudgetWindow {
    started_ms: u64,
    requests: [u32; 2],
    retries: [u32; 2],
}

/// Width of one of the budget's two buckets.
const BUDGET_BUCKET: Duration = Duration::from_secs(5);

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            window: Mutex::new(BudgetWindow::default()),
            ratio: 0.2,
            floor: 10,
        }
    }
}

// === impl RetryBudget ===

impl RetryBudget {
    fn with_window<T>(&self, f: impl FnOnce(&mut BudgetWindow) -> T) -> T {
        // The lock is held for a few arithmetic operations, never across an await.
        let mut w = match self.window.lock() {
            Ok(w) => w,
            Err(poisoned) => poisoned.into_inner(),
        };
        let now = now_ms();
        let bucket = BUDGET_BUCKET.as_millis() as u64;
        let age = now.saturating_sub(w.started_ms);
        if age >= 2 * bucket {
            *w = BudgetWindow {
                started_ms: now,
                ..Default::default()
            };
        } else if age >= bucket {
            w.requests = [w.requests[1], 0];
            w.retries = [w.retries[1], 0];
            w.started_ms += bucket;
        }
        f(&mut w)
    }

    /// Counts a new request.
    pub fn deposit(&self) {
        self.with_window(|w| w.requests[1] = w.requests[1].saturating_add(1));
    }

    /// Takes one retry from the budget, if any is left.
    pub fn try_withdraw(&self) -> bool {
        let (ratio, floor) = (self.ratio, self.floor);
        self.with_window(|w| {
            let requests = w.requests[0].saturating_add(w.requests[1]);
            let retries = w.retries[0].saturating_add(w.retries[1]);
            let allowed = ((f64::from(requests) * ratio) as u32).saturating_add(floor);
            if retries < allowed {
                w.retries[1] += 1;
                true
            } else {
                false
            }
        })
    }
}

/// Where state lives between tables.
#[derive(Debug, Default)]
pub struct StateRegistry {
    inner: Mutex<Registry>,
}

#[derive(Debug, Default)]
struct Registry {
    backends: HashMap<Arc<str>, Arc<BackendState>>,
    keys: HashMap<(Arc<str>, [u8; 32]), Arc<KeyState>>,
    budgets: HashMap<Arc<str>, Arc<RetryBudget>>,
    consumers: HashMap<Arc<str>, Arc<ConsumerState>>,
    shared_budgets: HashMap<Arc<str>, Arc<BudgetState>>,
}

impl StateRegistry {
    /// Binds every backend, key and route of `table` to its persistent state, creating what is
    /// new and dropping what no longer exists. Called once per table, before it is published.
    ///
    /// Returns the backends (by index in `table.backends`) that lost a key the upstream had
    /// refused, once per such key: its Secret changed, which is how an operator puts a fixed
    /// key back in service, and it is reported like a key that came back by itself.
    pub fn bind(&self, table: &crate::RoutingTable) -> Vec<usize> {
        let mut reg = match self.inner.lock() {
            Ok(r) => r,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut backends = HashMap::new();
        let mut keys = HashMap::new();
        for b in &table.backends {
            let state = reg.backends.get(&b.name).cloned().unwrap_or_default();
            let _ = b.state.set(state.clone());
            backends.insert(b.name.clone(), state);
            for k in &b.keys {
                let id = (b.name.clone(), k.digest);
                let ks = reg
                    .keys
                    .get(&id)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(KeyState::new()));
                let _ = k.state.set(ks.clone());
                keys.insert(id, ks);
            }
        }
        let mut budgets = HashMap::new();
        for r in &table.routes {
            let budget = reg.budgets.get(&r.name).cloned().unwrap_or_default();
            let _ = r.budget.set(budget.clone());
            budgets.insert(r.name.clone(), budget);
        }
        let mut consumers = HashMap::new();
        for c in &table.consumers.list {
            let state = reg.consumers.get(&c.name).cloned().unwrap_or_default();
            let _ = c.state.set(state.clone());
            consumers.insert(c.name.clone(), state);
        }
        let mut replaced = Vec::new();
        for (id, state) in &reg.keys {
            if state.disabled_until() == 0 || keys.contains_key(id) {
                continue;
            }
            if let Some(i) = table.backends.iter().position(|b| b.name == id.0) {
                replaced.push(i);
            }
        }
        let mut shared_budgets = HashMap::new();
        for b in &table.consumers.budgets {
            let state = reg.shared_budgets.get(&b.name).cloned().unwrap_or_default();
            let _ = b.state.set(state.clone());
            shared_budgets.insert(b.name.clone(), state);
        }
        *reg = Registry {
            backends,
            keys,
            budgets,
            consumers,
            shared_budgets,
        };
        replaced
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

    #[test]
    fn keys_rest_disable_and_steer() {
        let k = KeyState::new();
        assert!(k.is_available());
        k.rest(Duration::from_secs(30));
        assert!(!k.is_available());
        assert_eq!(k.report(0).state, "resting");
        let k = KeyState::new();
        k.observe_rate_limit(RateLimitHint {
            remaining: Some(10),
            limit: Some(100),
            reset_after: None,
        });
        assert_eq!(k.headroom_permille(), 100);
        k.observe_rate_limit(RateLimitHint {
            remaining: Some(0),
            limit: Some(100),
            reset_after: Some(Duration::from_secs(20)),
        });
        assert!(!k.is_available());
        k.disable("upstream answered 401".into());
        let r = k.report(3);
        assert_eq!((r.index, r.state), (3, "disabled"));
        assert_eq!(r.reason.as_deref(), Some("upstream answered 401"));
    }

    #[test]
    fn a_disabled_key_is_tried_again_after_a_growing_cool_down() {
        let k = KeyState::new();
        assert!(!k.on_success(), "a key never refused is not restored");
        assert_eq!(k.disable("401".into()), Some(BASE_KEY_DISABLE));
        assert!(k.is_disabled() && !k.is_available());
        assert_eq!(k.report(0).disabled_for_secs, Some(60));
        // Requests that took the key before it was disabled do not stretch the period.
        assert_eq!(k.disable("401".into()), None);
        // The period passes: the key is tried again; refused again, it stays out longer.
        k.disabled_until.store(1, Ordering::Release);
        assert!(k.is_available() && !k.is_disabled());
        assert_eq!(k.report(0).state, "healthy");
        assert_eq!(k.disable("401".into()), Some(BASE_KEY_DISABLE * 2));
        for _ in 0..10 {
            k.disabled_until.store(1, Ordering::Release);
            k.disable("401".into());
        }
        assert!(k.report(0).disabled_for_secs.unwrap() <= MAX_KEY_DISABLE.as_secs());
        // A success after the period brings it back, and the next refusal starts over.
        k.disabled_until.store(1, Ordering::Release);
        assert!(k.on_success());
        assert!(!k.on_success());
        assert_eq!(k.disable("401".into()), Some(BASE_KEY_DISABLE));
    }

    #[test]
    fn budget_allows_floor_plus_ratio() {
        let b = RetryBudget::default();
        for _ in 0..100 {
            b.deposit();
        }
        let granted = (0..100).filter(|_| b.try_withdraw()).count();
        assert_eq!(granted, 10 + 20);
    }

    #[test]
    fn upstream_numbers_never_overflow_key_state() {
        // Rate-limit headers with the largest numbers an upstream could send.
        for (remaining, limit, permille) in [
            (u64::MAX, u64::MAX, 1000),
            (u64::MAX / 2, u64::MAX, 499),
            (u64::from(u32::MAX), u64::MAX, 50),
            (1, u64::from(u32::MAX), 50),
            (u64::MAX, 10, 1000),
        ] {
            let k = KeyState::new();
            k.observe_rate_limit(RateLimitHint {
                remaining: Some(remaining),
                limit: Some(limit),
                reset_after: Some(Duration::MAX),
            });
            assert_eq!(k.headroom_permille(), permille, "{remaining}/{limit}");
        }
        // A Retry-After of "forever" rests the key for a day at most.
        for d in [
            Duration::MAX,
            Duration::from_secs(u64::MAX / 1000 + 1),
            MAX_KEY_REST * 2,
        ] {
            let k = KeyState::new();
            k.rest(d);
            let secs = k.report(0).resting_for_secs.unwrap();
            assert!(
                secs <= MAX_KEY_REST.as_secs() && secs > MAX_KEY_REST.as_secs() - 60,
                "{d:?}: {secs}"
            );
        }
    }
}

/// Length of a rate-limit window.
pub const LIMIT_WINDOW_MS: u64 = 60_000;

/// Per-consumer limiter, spend and ledger state for a single replica (with Redis, the shared
/// copy lives there instead). Each consumer has its own lock, held for a few arithmetic
/// operations and never across an await, so consumers never contend with each other.
#[derive(Debug, Default)]
pub struct ConsumerState {
    inner: Mutex<ConsumerInner>,
}

#[derive(Debug, Default)]
struct ConsumerInner {
    window: u64,
    requests: [u64; 2],
    tokens: [u64; 2],
    /// Spend and reservations of the consumer's own budget.
    budget: BudgetCounter,
    ledger: HashMap<(u64, Arc<str>), LedgerEntry>,
}

/// Totals for one consumer, model and day.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntry {
    /// Requests that reached an upstream and were answered.
    pub requests: u64,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Cached input tokens.
    pub cached_input_tokens: u64,
    /// Spend in micro-USD.
    pub micro_usd: u64,
}

/// Which budget refused a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetLevel {
    /// The consumer's own `spec.budget`.
    Own,
    /// The shared AIBudget of its `spec.budgetRef`.
    Shared,
}

/// A rate-limit window as seen by one request, for the `x-ratelimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowStatus {
    /// The limit.
    pub limit: u64,
    /// What is left after this request.
    pub remaining: u64,
    /// Until the current window ends.
    pub reset: Duration,
}

/// Why a request was refused by a consumer's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitExceeded {
    /// `requestsPerMinute`.
    Requests(WindowStatus),
    /// `tokensPerMinute`.
    Tokens(WindowStatus),
}

/// What a request took from its consumer's windows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Taken {
    /// The window the tokens were charged to.
    pub window: u64,
    /// Tokens reserved (the estimate).
    pub tokens: u64,
    /// Status of the request window.
    pub requests: Option<WindowStatus>,
    /// Status of the token window.
    pub token_status: Option<WindowStatus>,
}

/// A sliding-window estimate over two fixed windows: the previous window's count weighted by
/// how much of it still overlaps the last 60 s, plus the current one.
fn sliding(prev: u64, cur: u64, into_window_ms: u64) -> u64 {
    let overlap = LIMIT_WINDOW_MS.saturating_sub(into_window_ms);
    // In u128: counts reserved from clients' `max_tokens` may be near u64::MAX.
    let weighted = u128::from(prev) * u128::from(overlap) / u128::from(LIMIT_WINDOW_MS);
    u64::try_from(weighted)
        .unwrap_or(u64::MAX)
        .saturating_add(cur)
}

// === impl ConsumerState ===

impl ConsumerInner {
    fn roll(&mut self, window: u64) {
        if window == self.window {
            return;
        }
        if window == self.window + 1 {
            self.requests = [self.requests[1], 0];
            self.tokens = [self.tokens[1], 0];
        } else {
            self.requests = [0, 0];
            self.tokens = [0, 0];
        }
        self.window = window;
    }
}

impl ConsumerState {
    fn lock(&self) -> std::sync::MutexGuard<'_, ConsumerInner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Admits one request estimated at `tokens` if both limits allow it, and charges it.
    pub fn try_take(
        &self,
        now_ms: u64,
        requests_per_minute: Option<u64>,
        tokens_per_minute: Option<u64>,
        tokens: u64,
    ) -> Result<Taken, LimitExceeded> {
        let window = now_ms / LIMIT_WINDOW_MS;
        let into = now_ms % LIMIT_WINDOW_MS;
        let reset = Duration::from_millis(LIMIT_WINDOW_MS - into);
        let mut s = self.lock();
        s.roll(window);
        let req_used = sliding(s.requests[0], s.requests[1], into);
        let tok_used = sliding(s.tokens[0], s.tokens[1], into);
        let status = |limit: u64, used: u64| WindowStatus {
            limit,
            remaining: limit.saturating_sub(used),
            reset,
        };
        // Every sum saturates: `tokens` comes from the client's `max_tokens`, and a sum
        // that wrapped would look small and slip past the limit.
        if let Some(limit) = requests_per_minute {
            if req_used.saturating_add(1) > limit {
                return Err(LimitExceeded::Requests(status(limit, req_used)));
            }
        }
        if let Some(limit) = tokens_per_minute {
            // A request larger than the whole limit could never pass; let it through an
            // empty window rather than refuse it forever.
            if tok_used > 0 && tok_used.saturating_add(tokens) > limit {
                return Err(LimitExceeded::Tokens(status(limit, tok_used)));
            }
        }
        s.requests[1] = s.requests[1].saturating_add(1);
        s.tokens[1] = s.tokens[1].saturating_add(tokens);
        Ok(Taken {
            window,
            tokens,
            requests: requests_per_minute.map(|l| status(l, req_used.saturating_add(1))),
            token_status: tokens_per_minute.map(|l| status(l, tok_used.saturating_add(tokens))),
        })
    }

    /// Corrects a reservation with the real token count once usage is known.
    pub fn settle_tokens(&self, taken: &Taken, actual: u64) {
        let mut s = self.lock();
        let slot = if taken.window == s.window {
            1
        } else if taken.window + 1 == s.window {
            0
        } else {
            return;
        };
        // `actual` is the upstream's usage and `taken.tokens` the client's `max_tokens`: any
        // numbers. Exact in i128, then clamped to the counter's range.
        let corrected = i128::from(s.tokens[slot]) + i128::from(actual) - i128::from(taken.tokens);
        s.tokens[slot] = u64::try_from(corrected.max(0)).unwrap_or(u64::MAX);
    }

    /// Spend so far in `period` (an opaque period id), in micro-USD.
    pub fn spend(&self, period: u64) -> u64 {
        self.lock().budget.spent(period)
    }

    /// Reservations outstanding in `period`, in micro-USD.
    pub fn held(&self, period: u64) -> u64 {
        self.lock().budget.held(period)
    }

    /// Reserves `amount` micro-USD on the consumer's own budget (`own`: cap and period id)
    /// and on its shared budget (`shared`: state, cap and period id) at once: both must have
    /// room, or neither is charged. The consumer's lock is taken before the shared budget's,
    /// always in that order, and neither is held across an await.
    pub fn reserve(
        &self,
        own: Option<(u64, u64)>,
        shared: Option<(&BudgetState, u64, u64)>,
        amount: u64,
    ) -> Result<(), BudgetLevel> {
        let mut s = self.lock();
        if let Some((cap, period)) = own {
            if !s.budget.fits(period, cap, amount) {
                return Err(BudgetLevel::Own);
            }
        }
        if let Some((state, cap, period)) = shared {
            let mut b = state.lock();
            if !b.fits(period, cap, amount) {
                return Err(BudgetLevel::Shared);
            }
            b.hold(period, amount);
        }
        if let Some((_, period)) = own {
            s.budget.hold(period, amount);
        }
        Ok(())
    }

    /// Gives back a reservation on the consumer's own budget made in `period`.
    pub fn release(&self, period: u64, amount: u64) {
        self.lock().budget.release(period, amount);
    }

    /// Adds spend to `period`, and the request to the ledger under `day` and `model`.
    pub fn record(&self, period: u64, day: u64, model: &Arc<str>, entry: LedgerEntry) {
        let mut s = self.lock();
        // Usage and spend derive from the upstream's numbers: saturate, never wrap to a small
        // spend that would reopen a spent budget.
        s.budget.charge(period, entry.micro_usd);
        let e = s.ledger.entry((day, model.clone())).or_default();
        e.requests = e.requests.saturating_add(entry.requests);
        e.input_tokens = e.input_tokens.saturating_add(entry.input_tokens);
        e.output_tokens = e.output_tokens.saturating_add(entry.output_tokens);
        e.cached_input_tokens = e
            .cached_input_tokens
            .saturating_add(entry.cached_input_tokens);
        e.micro_usd = e.micro_usd.saturating_add(entry.micro_usd);
        // Keep about two months of days.
        if s.ledger.len() > 4096 {
            let oldest_kept = day.saturating_sub(62);
            s.ledger.retain(|(d, _), _| *d >= oldest_kept);
        }
    }

    /// The ledger: (day, model, totals).
    pub fn ledger(&self) -> Vec<(u64, Arc<str>, LedgerEntry)> {
        let s = self.lock();
        let mut out: Vec<_> = s
            .ledger
            .iter()
            .map(|((d, m), e)| (*d, m.clone(), *e))
            .collect();
        out.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        out
    }
}

/// Days since the Unix epoch, and the id and end of the budget period containing `now_ms`.
pub fn budget_period(
    now_ms: u64,
    period: switchyard_types::consumer::BudgetPeriod,
) -> (u64, u64, u64) {
    let day = now_ms / 86_400_000;
    match period {
        switchyard_types::consumer::BudgetPeriod::Day => (day, day, (day + 1) * 86_400_000),
        switchyard_types::consumer::BudgetPeriod::Month => {
            let (y, m, _) = civil_from_days(day as i64);
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            let next = days_from_civil(ny, nm, 1) as u64 * 86_400_000;
            (day, (y * 12 + i64::from(m)) as u64, next)
        }
    }
}

#[cfg(test)]
mod consumer_tests {
    use super::*;

    #[test]
    fn requests_per_minute_slide() {
        let s = ConsumerState::default();
        let t0 = 10 * LIMIT_WINDOW_MS;
        for _ in 0..3 {
            s.try_take(t0, Some(3), None, 0).unwrap();
        }
        let Err(LimitExceeded::Requests(st)) = s.try_take(t0 + 1000, Some(3), None, 0) else {
            panic!("fourth request admitted")
        };
        assert_eq!((st.limit, st.remaining), (3, 0));
        assert_eq!(st.reset, Duration::from_millis(59_000));
        // Half-way through the next window, half of the previous (1 of 3, rounded down)
        // still counts: two more fit, not three.
        let half = t0 + LIMIT_WINDOW_MS + LIMIT_WINDOW_MS / 2;
        s.try_take(half, Some(3), None, 0).unwrap();
        s.try_take(half, Some(3), None, 0).unwrap();
        assert!(s.try_take(half, Some(3), None, 0).is_err());
        // Two windows later everything is forgotten.
        for _ in 0..3 {
            s.try_take(t0 + 3 * LIMIT_WINDOW_MS, Some(3), None, 0)
                .unwrap();
        }
    }

    #[test]
    fn tokens_are_reserved_then_settled() {
        let s = ConsumerState::default();
        let t = 5 * LIMIT_WINDOW_MS;
        let a = s.try_take(t, None, Some(1000), 800).unwrap();
        assert!(matches!(
            s.try_take(t, None, Some(1000), 300),
            Err(LimitExceeded::Tokens(_))
        ));
        // The request used far less than estimated: the difference is given back.
        s.settle_tokens(&a, 100);
        let b = s.try_take(t, None, Some(1000), 300).unwrap();
        assert_eq!(b.token_status.unwrap().remaining, 600);
        // A request larger than the limit still passes an empty window.
        let fresh = ConsumerState::default();
        assert!(fresh.try_take(t, None, Some(100), 5000).is_ok());
    }

    #[test]
    fn client_and_upstream_numbers_never_overflow_the_limiter() {
        let t = 7 * LIMIT_WINDOW_MS + 30_000;
        for limit in [1_000, u64::from(u32::MAX), u64::MAX - 1] {
            let s = ConsumerState::default();
            // A `max_tokens` of u64::MAX passes an empty window (like any request larger
            // than the limit) and fills it: nothing more fits, however small.
            let a = s
                .try_take(t, Some(u64::MAX), Some(limit), u64::MAX)
                .unwrap();
            assert_eq!(a.token_status.unwrap().remaining, 0);
            assert!(
                matches!(
                    s.try_take(t, Some(u64::MAX), Some(limit), 1),
                    Err(LimitExceeded::Tokens(_))
                ),
                "limit {limit}"
            );
            // The upstream reports absurd usage: settled without wrapping.
            s.settle_tokens(&a, u64::MAX);
            // Half-way through the next window, half of a u64::MAX window still counts: more
            // than any limit below u64::MAX / 2.
            let next = t + LIMIT_WINDOW_MS;
            let half_way = s.try_take(next, None, Some(limit), 1);
            if limit < u64::MAX / 2 {
                assert!(
                    matches!(half_way, Err(LimitExceeded::Tokens(_))),
                    "limit {limit}"
                );
            }
            // Two windows on, it is forgotten.
            assert!(s
                .try_take(next + 2 * LIMIT_WINDOW_MS, None, Some(limit), 1)
                .is_ok());
        }
        // Request counts saturate too.
        let s = ConsumerState::default();
        {
            let mut inner = s.lock();
            inner.window = t / LIMIT_WINDOW_MS;
            inner.requests = [u64::MAX, u64::MAX];
        }
        assert!(matches!(
            s.try_take(t, Some(u64::MAX - 1), None, 0),
            Err(LimitExceeded::Requests(_))
        ));
        // At the top of the range it stays there rather than wrapping to an empty window.
        let _ = s.try_take(t, None, None, u64::MAX);
        assert_eq!(s.lock().requests[1], u64::MAX);
        assert_eq!(sliding(u64::MAX, u64::MAX, 0), u64::MAX);
        assert_eq!(sliding(u64::MAX, 0, LIMIT_WINDOW_MS / 2), u64::MAX / 2);
    }

    #[test]
    fn spend_and_ledger_saturate() {
        let model: Arc<str> = Arc::from("m");
        let s = ConsumerState::default();
        let huge = LedgerEntry {
            requests: u64::MAX,
            input_tokens: u64::MAX,
            output_tokens: u64::MAX,
            cached_input_tokens: u64::MAX,
            micro_usd: u64::MAX,
        };
        s.record(1, 1, &model, huge);
        s.record(1, 1, &model, huge);
        // Never wraps to a small spend that would reopen a spent budget.
        assert_eq!(s.spend(1), u64::MAX);
        assert_eq!(s.ledger()[0].2, huge);
    }

    #[test]
    fn spend_resets_with_the_period() {
        use switchyard_types::consumer::BudgetPeriod;
        let model: Arc<str> = Arc::from("m");
        let s = ConsumerState::default();
        // 2026-11-30T23:00:00Z and 2026-12-01T01:00:00Z.
        let nov30 = (days_from_civil(2026, 11, 30) as u64) * 86_400_000 + 23 * 3_600_000;
        let dec1 = nov30 + 2 * 3_600_000;
        let (day, p, end) = budget_period(nov30, BudgetPeriod::Month);
        assert_eq!(end, days_from_civil(2026, 12, 1) as u64 * 86_400_000);
        s.record(
            p,
            day,
            &model,
            LedgerEntry {
                requests: 1,
                micro_usd: 500,
                ..Default::default()
            },
        );
        assert_eq!(s.spend(p), 500);
        let (day2, p2, _) = budget_period(dec1, BudgetPeriod::Month);
        assert_ne!(p, p2);
        assert_eq!(s.spend(p2), 0);
        s.record(
            p2,
            day2,
            &model,
            LedgerEntry {
                requests: 1,
                micro_usd: 7,
                ..Default::default()
            },
        );
        assert_eq!(s.spend(p2), 7);
        assert_eq!(s.ledger().len(), 2);
        let (_, dp, dend) = budget_period(dec1, BudgetPeriod::Day);
        assert_eq!(dp, day2);
        assert_eq!(dend, (day2 + 1) * 86_400_000);
    }
}
