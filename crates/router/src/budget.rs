//! Budgets that cannot overshoot: a request reserves the most it can cost before it is sent,
//! and settles to what it did cost when it ends.
//!
//! A budget's room is `cap - spent - held`, where `held` is the sum of the reservations of the
//! requests still in flight. Admission adds the request's maximum cost to `held` only when it
//! fits; the end of the request takes the reservation back out of `held` and adds the actual
//! cost to `spent`. Concurrent requests therefore can never together be admitted past the cap:
//! every one that got in holds its worst case until it is done.
//!
//! The maximum cost ([`max_cost_micro_usd`]) is the input estimate at the highest input price
//! among the route's targets and fallbacks (a request may fall back) plus the output cap at the
//! highest output price. The input estimate is the request body's length in bytes, one token
//! per byte: byte-level BPE tokenizers never produce more tokens than bytes of text, and the
//! JSON around the text (keys, quotes, role names) outweighs the few tokens a chat template
//! adds per message. It over-reserves ordinary English about four times; that only matters
//! near the end of a budget. Not bounded by it: images given by URL, which providers bill by
//! size rather than by the URL's length. The output cap is the request's `max_tokens` /
//! `max_completion_tokens` / `max_output_tokens`, else the route's `defaultMaxOutputTokens`
//! (default [`DEFAULT_MAX_OUTPUT_TOKENS`]); a response that writes more than a default cap it
//! was never told about is charged in full, so only that case can go past the cap.
//!
//! This module is the in-memory form (one replica); the gateway keeps the same arithmetic in
//! Redis, in one script per admission and one per settlement, when replicas share a budget.
pub use crate::consumer::SharedBudget;
pub use crate::spend::{BudgetCounter, BudgetState};
use crate::table::Route;

/// The output cap reserved for a request that sets none, when its route does not say.
pub const DEFAULT_MAX_OUTPUT_TOKENS: u64 = 4096;

/// Prices (micro-USD per million tokens) a reservation is made at: the highest of each kind
/// among every target a request may be sent to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReservePrices {
    /// Highest price of an input token (fresh or cached).
    pub input: u64,
    /// Highest price of an output token.
    pub output: u64,
}

/// The most a request can cost, in micro-USD (rounded up), saturating.
pub fn max_cost_micro_usd(input_tokens: u64, output_tokens: u64, prices: ReservePrices) -> u64 {
    // Each product fits in u128 (u64 × u64); their sum may not.
    let micro_per_million = (u128::from(input_tokens) * u128::from(prices.input))
        .saturating_add(u128::from(output_tokens) * u128::from(prices.output));
    u64::try_from(micro_per_million.div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

/// The prices a request to `route` is reserved at: the highest among its targets and
/// fallbacks, cache reads and writes included (a cache write costs up to 1.25× input).
pub fn reserve_prices(route: &Route) -> ReservePrices {
    route
        .targets
        .iter()
        .chain(&route.fallbacks)
        .fold(ReservePrices::default(), |acc, t| {
            let p = &t.pricing;
            ReservePrices {
                input: acc
                    .input
                    .max(p.input.0)
                    .max(p.cached_input.0)
                    .max(p.cache_write.0),
                output: acc.output.max(p.output.0),
            }
        })
}

/// The output tokens a request is reserved for: its own cap, else the route's default.
pub fn output_cap(route: &Route, requested: Option<u64>) -> u64 {
    requested.unwrap_or(
        route
            .default_max_output_tokens
            .unwrap_or(DEFAULT_MAX_OUTPUT_TOKENS),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_cost_rounds_up_and_saturates() {
        let p = ReservePrices {
            input: 1_000_000,
            output: 2_000_000,
        };
        // 100 input tokens at $1/M and 50 output at $2/M: 100 + 100 micro-USD.
        assert_eq!(max_cost_micro_usd(100, 50, p), 200);
        // A fraction of a micro-USD is reserved whole.
        let cheap = ReservePrices {
            input: 150_000,
            output: 0,
        };
        assert_eq!(max_cost_micro_usd(1, 0, cheap), 1);
        assert_eq!(max_cost_micro_usd(0, 0, p), 0);
        assert_eq!(max_cost_micro_usd(u64::MAX, u64::MAX, p), u64::MAX);
        let max = ReservePrices {
            input: u64::MAX,
            output: u64::MAX,
        };
        assert_eq!(max_cost_micro_usd(u64::MAX, u64::MAX, max), u64::MAX);
    }
}
