//! The limiter arithmetic never overflows and keeps its promises, whatever the numbers:
//! clients choose `max_tokens` (the token reservation), upstreams choose usage, rate-limit
//! headers and `Retry-After`. Seeded random cases (`fastrand`, a dependency of the crate),
//! as many as `PROPTEST_CASES` says (`make fuzz` raises it).

use std::time::Duration;

use fastrand::Rng;
use http::{HeaderMap, HeaderName, HeaderValue};
use switchyard_router::{
    consumer::BudgetPeriod,
    state::{
        budget_period, rate_limit_hint, BackendState, ConsumerState, KeyState, LedgerEntry,
        LimitExceeded, RateLimitHint, RetryBudget, Taken, LIMIT_WINDOW_MS, MAX_EJECTION,
        MAX_KEY_DISABLE, MAX_KEY_REST,
    },
};

fn cases() -> usize {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse::<usize>().ok())
        .unwrap_or(2048)
}

/// A number as an adversary picks it: small, at a power-of-two edge, or anything.
fn number(rng: &mut Rng) -> u64 {
    match rng.u8(..4) {
        0 => rng.u64(..100),
        1 => u64::MAX - rng.u64(..3),
        2 => 1u64
            .checked_shl(rng.u32(..64))
            .unwrap_or(0)
            .wrapping_add(rng.u64(..3))
            .wrapping_sub(1),
        _ => rng.u64(..),
    }
}

fn maybe_number(rng: &mut Rng) -> Option<u64> {
    if rng.bool() {
        Some(number(rng))
    } else {
        None
    }
}

/// A wall-clock time in ms, from 1970 to the year 9999, often near a window edge.
fn wall_ms(rng: &mut Rng) -> u64 {
    let t = rng.u64(..253_402_300_800_000);
    match rng.u8(..3) {
        0 => t - t % LIMIT_WINDOW_MS + rng.u64(..3),
        1 => t - t % LIMIT_WINDOW_MS + LIMIT_WINDOW_MS - 1 - rng.u64(..3).min(t % LIMIT_WINDOW_MS),
        _ => t,
    }
}

#[test]
fn consumer_windows_never_overflow_and_hold_their_limits() {
    let mut rng = Rng::with_seed(0x0011_3175);
    for _ in 0..cases() {
        let s = ConsumerState::default();
        let rpm = maybe_number(&mut rng).map(|n| n % 1000);
        let tpm = maybe_number(&mut rng);
        let mut now = wall_ms(&mut rng);
        let mut admitted_in_window = (now / LIMIT_WINDOW_MS, 0u64);
        let mut taken: Vec<Taken> = Vec::new();
        for _ in 0..rng.usize(1..64) {
            // Time moves on (sometimes a window or more at once), or back (a clock step).
            now = match rng.u8(..8) {
                0 => now.saturating_sub(rng.u64(..LIMIT_WINDOW_MS * 2)),
                1 => now.saturating_add(LIMIT_WINDOW_MS * rng.u64(1..4)),
                _ => now.saturating_add(rng.u64(..5_000)),
            };
            let window = now / LIMIT_WINDOW_MS;
            if window != admitted_in_window.0 {
                admitted_in_window = (window, 0);
            }
            let tokens = number(&mut rng);
            match s.try_take(now, rpm, tpm, tokens) {
                Ok(t) => {
                    assert_eq!((t.window, t.tokens), (window, tokens));
                    for st in [t.requests, t.token_status].into_iter().flatten() {
                        assert!(st.remaining <= st.limit);
                        assert!(st.reset > Duration::ZERO);
                        assert!(st.reset <= Duration::from_millis(LIMIT_WINDOW_MS));
                    }
                    admitted_in_window.1 += 1;
                    if let Some(limit) = rpm {
                        assert!(
                            admitted_in_window.1 <= limit.max(1),
                            "{rpm:?}: too many admitted"
                        );
                    }
                    taken.push(t);
                }
                Err(LimitExceeded::Requests(st) | LimitExceeded::Tokens(st)) => {
                    assert!(st.remaining <= st.limit);
                    assert!(st.reset > Duration::ZERO);
                }
            }
            // Usage arrives for an earlier request (any one, of this window or older).
            if !taken.is_empty() && rng.bool() {
                let t = taken[rng.usize(..taken.len())];
                s.settle_tokens(&t, number(&mut rng));
            }
        }
    }
}

#[test]
fn spend_and_ledger_saturate() {
    let mut rng = Rng::with_seed(0x0005_9E4D);
    let model: std::sync::Arc<str> = "m".into();
    for _ in 0..cases() {
        let s = ConsumerState::default();
        let period = rng.u64(..4);
        let mut last = 0u64;
        for _ in 0..rng.usize(1..16) {
            let entry = LedgerEntry {
                requests: number(&mut rng),
                input_tokens: number(&mut rng),
                output_tokens: number(&mut rng),
                cached_input_tokens: number(&mut rng),
                micro_usd: number(&mut rng),
            };
            s.record(period, rng.u64(..3), &model, entry);
            let spent = s.spend(period);
            assert!(spent >= last, "spend went down: {last} → {spent}");
            last = spent;
        }
        assert_eq!(s.spend(period + 1), 0);
        assert!(s.ledger().len() <= 3);
    }
}

#[test]
fn budget_periods_contain_now() {
    let mut rng = Rng::with_seed(0xB0D6);
    for _ in 0..cases() * 16 {
        let now = wall_ms(&mut rng);
        for period in [BudgetPeriod::Day, BudgetPeriod::Month] {
            let (day, id, end) = budget_period(now, period);
            assert_eq!(day, now / 86_400_000);
            assert!(end > now, "{period:?} at {now}: ends at {end}");
            assert_eq!(end % 86_400_000, 0);
            // The next period starts at `end`, under another id.
            let (_, next, _) = budget_period(end, period);
            assert_ne!(next, id, "{period:?} at {now}");
            assert_eq!(budget_period(end - 1, period).1, id, "{period:?} at {now}");
        }
    }
}

#[test]
fn key_and_backend_state_take_any_numbers() {
    let mut rng = Rng::with_seed(0x4E75);
    let durations = |rng: &mut Rng| match rng.u8(..4) {
        0 => Duration::MAX,
        1 => Duration::from_secs(rng.u64(..)),
        2 => Duration::from_nanos(rng.u64(..)),
        _ => Duration::from_millis(rng.u64(..100_000)),
    };
    for _ in 0..cases() {
        let k = KeyState::default();
        for _ in 0..rng.usize(1..8) {
            match rng.u8(..4) {
                0 => k.rest(durations(&mut rng)),
                1 => {
                    let _ = k.disable("401".into());
                }
                2 => {
                    let _ = k.on_success();
                }
                _ => k.observe_rate_limit(RateLimitHint {
                    remaining: maybe_number(&mut rng),
                    limit: maybe_number(&mut rng),
                    reset_after: rng.bool().then(|| durations(&mut rng)),
                }),
            }
            assert!((50..=1000).contains(&k.headroom_permille()));
            let r = k.report(0);
            assert!(r
                .resting_for_secs
                .is_none_or(|s| s <= MAX_KEY_REST.as_secs()));
            assert!(r
                .disabled_for_secs
                .is_none_or(|s| s <= MAX_KEY_DISABLE.as_secs()));
        }
        let b = std::sync::Arc::new(BackendState::default());
        let mut slots = Vec::new();
        for _ in 0..rng.usize(1..32) {
            match rng.u8(..4) {
                0 => {
                    if let switchyard_router::HealthChange::Ejected(d) = b.on_failure() {
                        assert!(d <= MAX_EJECTION);
                    }
                }
                1 => {
                    let _ = b.on_success(durations(&mut rng));
                }
                2 => b.observe_latency(durations(&mut rng)),
                _ => slots.extend(b.try_acquire(Some(rng.u32(..4)))),
            }
            let _ = b.cost();
            assert!(b.in_flight() <= 3 || slots.len() <= 3);
        }
        drop(slots);
        assert_eq!(b.in_flight(), 0);
        let budget = RetryBudget::default();
        for _ in 0..rng.usize(..64) {
            if rng.bool() {
                budget.deposit();
            } else {
                let _ = budget.try_withdraw();
            }
        }
    }
}

/// Values an upstream might put in a rate-limit header: numbers, Go durations, RFC 3339
/// times, and those cut, stretched and mixed up.
fn header_value(rng: &mut Rng) -> String {
    let pieces = [
        "0",
        "1",
        "9",
        "00",
        "-",
        "+",
        ".",
        ":",
        "T",
        "Z",
        "s",
        "ms",
        "m",
        "h",
        "us",
        "ns",
        " ",
        "2026-11-24T21:30:05Z",
        "2099-12-31T23:59:60.5Z",
        "6m0s",
        "1.5s",
        "20ms",
        "18446744073709551615",
        "18446744073709551616",
        "9223372036854775807",
        "-9223372036854775808",
        "99999999999999-01-01T00:00:00Z",
        "e9",
        "NaN",
        "inf",
    ];
    (0..rng.usize(1..6))
        .map(|_| pieces[rng.usize(..pieces.len())])
        .collect()
}

#[test]
fn rate_limit_headers_never_panic() {
    const NAMES: [&str; 12] = [
        "x-ratelimit-remaining-requests",
        "x-ratelimit-limit-requests",
        "x-ratelimit-reset-requests",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-limit-tokens",
        "x-ratelimit-reset-tokens",
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-requests-limit",
        "anthropic-ratelimit-requests-reset",
        "anthropic-ratelimit-tokens-remaining",
        "anthropic-ratelimit-tokens-limit",
        "anthropic-ratelimit-tokens-reset",
    ];
    let mut rng = Rng::with_seed(0x4EAD);
    for _ in 0..cases() * 16 {
        let mut h = HeaderMap::new();
        let mut remaining = Vec::new();
        for name in NAMES {
            if rng.u8(..3) == 0 {
                continue;
            }
            let value = header_value(&mut rng);
            if name.contains("remaining") {
                remaining.extend(value.trim().parse::<u64>().ok());
            }
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(HeaderName::from_static(name), v);
            }
        }
        let hint = rate_limit_hint(&h);
        // The hint is one of the windows the headers described, or none.
        match hint.remaining {
            Some(r) => assert!(remaining.contains(&r), "{hint:?} from {h:?}"),
            None => assert!(remaining.is_empty(), "{h:?}"),
        }
        KeyState::default().observe_rate_limit(hint);
    }
}
