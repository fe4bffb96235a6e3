//! The state of one upstream key: resting after a 429 or a drained rate limit, out of service
//! (with a growing cool-down) after the upstream refused it, and its rate-limit headroom.

use std::{
    sync::{
        atomic::{AtomicU32, AtomicU64, Ordering},
        Mutex,
    },
    time::Duration,
};

use switchyard_providers::ratelimit::RateLimitHint;

use crate::clock::now_ms;

/// Longest a key rests on the upstream's word (Retry-After, a rate-limit reset): an upstream
/// cannot take a key out for years, nor overflow the clock, with a huge value.
pub const MAX_KEY_REST: Duration = Duration::from_secs(24 * 3600);
/// First time a key the upstream refused as invalid stays out of service; doubled for each
/// further refusal without a success between, up to [`MAX_KEY_DISABLE`]. After it the key is
/// tried again (a probe): a key fixed upstream, or refused by mistake, comes back by itself.
pub const BASE_KEY_DISABLE: Duration = Duration::from_secs(60);
/// Longest a refused key stays out before it is tried again.
pub const MAX_KEY_DISABLE: Duration = Duration::from_secs(30 * 60);

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
    pub(crate) fn new() -> Self {
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

#[cfg(test)]
mod tests {
    use super::*;

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
