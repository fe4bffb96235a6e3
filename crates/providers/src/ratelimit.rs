//! The providers' rate-limit headers (OpenAI `x-ratelimit-*`, Anthropic
//! `anthropic-ratelimit-*`): wire-format knowledge, read by the gateway to steer a key pool
//! away from a key running dry before it answers 429.

use std::time::{Duration, SystemTime};

use switchyard_types::civil::days_from_civil;

/// What the upstream's rate-limit headers said about a key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimitHint {
    /// Requests (or tokens) left in the window, the scarcer of the two.
    pub remaining: Option<u64>,
    /// The window's limit, when given.
    pub limit: Option<u64>,
    /// When the window resets.
    pub reset_after: Option<Duration>,
}

/// Parses the providers' rate-limit headers (OpenAI `x-ratelimit-*`, Anthropic
/// `anthropic-ratelimit-*`) into the scarcer of the request and token windows.
pub fn rate_limit_hint(headers: &http::HeaderMap) -> RateLimitHint {
    let num = |name: &str| -> Option<u64> { headers.get(name)?.to_str().ok()?.trim().parse().ok() };
    let reset = |name: &str| -> Option<Duration> {
        let v = headers.get(name)?.to_str().ok()?.trim();
        // OpenAI: a Go-style duration ("1s", "6m0s", "20ms"); Anthropic: an RFC 3339 time.
        if let Ok(d) = switchyard_types::parse_duration(v) {
            return Some(d);
        }
        rfc3339_until(v)
    };
    let windows = [
        (
            num("x-ratelimit-remaining-requests"),
            num("x-ratelimit-limit-requests"),
            reset("x-ratelimit-reset-requests"),
        ),
        (
            num("x-ratelimit-remaining-tokens"),
            num("x-ratelimit-limit-tokens"),
            reset("x-ratelimit-reset-tokens"),
        ),
        (
            num("anthropic-ratelimit-requests-remaining"),
            num("anthropic-ratelimit-requests-limit"),
            reset("anthropic-ratelimit-requests-reset"),
        ),
        (
            num("anthropic-ratelimit-tokens-remaining"),
            num("anthropic-ratelimit-tokens-limit"),
            reset("anthropic-ratelimit-tokens-reset"),
        ),
    ];
    let mut best: Option<(f64, RateLimitHint)> = None;
    for (remaining, limit, reset_after) in windows {
        let Some(remaining) = remaining else { continue };
        let frac = match limit {
            Some(l) if l > 0 => remaining as f64 / l as f64,
            _ if remaining == 0 => 0.0,
            _ => 1.0,
        };
        if best.as_ref().is_none_or(|(f, _)| frac < *f) {
            best = Some((
                frac,
                RateLimitHint {
                    remaining: Some(remaining),
                    limit,
                    reset_after,
                },
            ));
        }
    }
    best.map(|(_, h)| h).unwrap_or_default()
}

/// Time from now until an RFC 3339 UTC timestamp such as `2026-11-24T21:30:05Z`.
fn rfc3339_until(v: &str) -> Option<Duration> {
    let v = v.strip_suffix('Z')?;
    let (date, time) = v.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let time = time.split('.').next()?;
    let mut t = time.split(':').map(|p| p.parse::<i64>());
    let (hh, mm, ss) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    // The upstream's timestamp: any field may be absurd, and the arithmetic below must not
    // overflow on it. Out-of-range fields are not a time at all.
    if !(0..=9999).contains(&y)
        || !(1..=12).contains(&m)
        || !(1..=31).contains(&day)
        || !(0..=23).contains(&hh)
        || !(0..=59).contains(&mm)
        || !(0..=60).contains(&ss)
    {
        return None;
    }
    let days = days_from_civil(y, m as u32, day as u32);
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()?
        .as_secs() as i64;
    Some(Duration::from_secs(secs.saturating_sub(now).max(0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rate_limit_headers() {
        let mut h = http::HeaderMap::new();
        h.insert("x-ratelimit-limit-requests", "500".parse().unwrap());
        h.insert("x-ratelimit-remaining-requests", "499".parse().unwrap());
        h.insert("x-ratelimit-reset-requests", "120ms".parse().unwrap());
        h.insert("x-ratelimit-limit-tokens", "10000".parse().unwrap());
        h.insert("x-ratelimit-remaining-tokens", "100".parse().unwrap());
        h.insert("x-ratelimit-reset-tokens", "6m0s".parse().unwrap());
        let hint = rate_limit_hint(&h);
        assert_eq!(hint.remaining, Some(100));
        assert_eq!(hint.reset_after, Some(Duration::from_secs(360)));
        let mut h = http::HeaderMap::new();
        h.insert(
            "anthropic-ratelimit-requests-remaining",
            "0".parse().unwrap(),
        );
        h.insert(
            "anthropic-ratelimit-requests-reset",
            "2099-01-01T00:00:00Z".parse().unwrap(),
        );
        let hint = rate_limit_hint(&h);
        assert_eq!(hint.remaining, Some(0));
        assert!(hint.reset_after.unwrap() > Duration::from_secs(86_400));
        assert_eq!(
            rate_limit_hint(&http::HeaderMap::new()),
            RateLimitHint::default()
        );
    }

    #[test]
    fn timestamps_outside_any_calendar_are_not_a_time() {
        for v in [
            "99999999999999-01-01T00:00:00Z",
            "-9223372036854775808-01-01T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-01-01T9223372036854775807:00:00Z",
            "2026-01-01T00:00:99Z",
        ] {
            assert_eq!(rfc3339_until(v), None, "{v}");
        }
        assert!(rfc3339_until("2099-12-31T23:59:60Z").is_some());
    }
}
