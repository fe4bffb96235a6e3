//! A consumer's rate limits: requests and tokens per minute over a sliding window, estimated
//! from two fixed windows (the previous one weighted by how much of it still overlaps).

use std::time::Duration;

/// Length of a rate-limit window.
pub const LIMIT_WINDOW_MS: u64 = 60_000;

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

/// The two fixed windows of one consumer's request and token counts. Lives under the
/// consumer's lock ([`crate::state::ConsumerState`]).
#[derive(Debug, Default)]
pub(crate) struct Windows {
    window: u64,
    requests: [u64; 2],
    tokens: [u64; 2],
}

// === impl Windows ===

impl Windows {
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

    /// Admits one request estimated at `tokens` if both limits allow it, and charges it.
    pub(crate) fn try_take(
        &mut self,
        now_ms: u64,
        requests_per_minute: Option<u64>,
        tokens_per_minute: Option<u64>,
        tokens: u64,
    ) -> Result<Taken, LimitExceeded> {
        let window = now_ms / LIMIT_WINDOW_MS;
        let into = now_ms % LIMIT_WINDOW_MS;
        let reset = Duration::from_millis(LIMIT_WINDOW_MS - into);
        self.roll(window);
        let req_used = sliding(self.requests[0], self.requests[1], into);
        let tok_used = sliding(self.tokens[0], self.tokens[1], into);
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
        self.requests[1] = self.requests[1].saturating_add(1);
        self.tokens[1] = self.tokens[1].saturating_add(tokens);
        Ok(Taken {
            window,
            tokens,
            requests: requests_per_minute.map(|l| status(l, req_used.saturating_add(1))),
            token_status: tokens_per_minute.map(|l| status(l, tok_used.saturating_add(tokens))),
        })
    }

    /// Corrects a reservation with the real token count once usage is known.
    pub(crate) fn settle_tokens(&mut self, taken: &Taken, actual: u64) {
        let slot = if taken.window == self.window {
            1
        } else if taken.window + 1 == self.window {
            0
        } else {
            return;
        };
        // `actual` is the upstream's usage and `taken.tokens` the client's `max_tokens`: any
        // numbers. Exact in i128, then clamped to the counter's range.
        let corrected =
            i128::from(self.tokens[slot]) + i128::from(actual) - i128::from(taken.tokens);
        self.tokens[slot] = u64::try_from(corrected.max(0)).unwrap_or(u64::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_per_minute_slide() {
        let mut s = Windows::default();
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
        let mut s = Windows::default();
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
        let mut fresh = Windows::default();
        assert!(fresh.try_take(t, None, Some(100), 5000).is_ok());
    }

    #[test]
    fn client_and_upstream_numbers_never_overflow_the_limiter() {
        let t = 7 * LIMIT_WINDOW_MS + 30_000;
        for limit in [1_000, u64::from(u32::MAX), u64::MAX - 1] {
            let mut s = Windows::default();
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
        let mut s = Windows {
            window: t / LIMIT_WINDOW_MS,
            requests: [u64::MAX, u64::MAX],
            ..Default::default()
        };
        assert!(matches!(
            s.try_take(t, Some(u64::MAX - 1), None, 0),
            Err(LimitExceeded::Requests(_))
        ));
        // At the top of the range it stays there rather than wrapping to an empty window.
        let _ = s.try_take(t, None, None, u64::MAX);
        assert_eq!(s.requests[1], u64::MAX);
        assert_eq!(sliding(u64::MAX, u64::MAX, 0), u64::MAX);
        assert_eq!(sliding(u64::MAX, 0, LIMIT_WINDOW_MS / 2), u64::MAX / 2);
    }
}
