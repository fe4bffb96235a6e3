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

use std::sync::{Arc, Mutex, OnceLock};

use crate::{consumer::Budget, table::Route};

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

/// Spend and reservations of one budget in its current period. Every sum saturates: the
/// numbers come from clients (`max_tokens`) and upstreams (usage).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BudgetCounter {
    period: u64,
    spent: u64,
    held: u64,
}

/// Spend and reservations of one shared budget (`AIBudget`) on this replica. Its lock is held
/// for a few additions, never across an await.
#[derive(Debug, Default)]
pub struct BudgetState {
    inner: Mutex<BudgetCounter>,
}

/// One compiled AIBudget: a cap several consumers draw on.
#[derive(Debug)]
pub struct SharedBudget {
    /// `namespace/name`, the metric label.
    pub name: Arc<str>,
    /// The cap and its period.
    pub budget: Budget,
    /// The consumers (`namespace/name`) drawing on it.
    pub consumers: Vec<Arc<str>>,
    /// Spend and reservations, bound from the registry (survives reloads).
    pub(crate) state: OnceLock<Arc<BudgetState>>,
}

impl SharedBudget {
    /// The AIBudget `namespace/name`, with its cap and the consumers drawing on it.
    pub fn new(name: Arc<str>, budget: Budget, consumers: Vec<Arc<str>>) -> Self {
        SharedBudget {
            name,
            budget,
            consumers,
            state: OnceLock::new(),
        }
    }
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

// === impl BudgetCounter ===

impl BudgetCounter {
    /// Starts `period` afresh when it is a new one.
    fn roll(&mut self, period: u64) {
        if self.period != period {
            *self = BudgetCounter {
                period,
                spent: 0,
                held: 0,
            };
        }
    }

    /// Whether `amount` more fits `cap` in `period`.
    pub fn fits(&mut self, period: u64, cap: u64, amount: u64) -> bool {
        self.roll(period);
        self.spent.saturating_add(self.held).saturating_add(amount) <= cap
    }

    /// Holds `amount` in `period` (after [`BudgetCounter::fits`]).
    pub fn hold(&mut self, period: u64, amount: u64) {
        self.roll(period);
        self.held = self.held.saturating_add(amount);
    }

    /// Gives back a reservation made in `period`; one from an earlier period is gone already.
    pub fn release(&mut self, period: u64, amount: u64) {
        if self.period == period {
            self.held = self.held.saturating_sub(amount);
        }
    }

    /// Adds settled spend to `period`.
    pub fn charge(&mut self, period: u64, amount: u64) {
        self.roll(period);
        self.spent = self.spent.saturating_add(amount);
    }

    /// Settled spend in `period`.
    pub fn spent(&self, period: u64) -> u64 {
        if self.period == period {
            self.spent
        } else {
            0
        }
    }

    /// Reservations outstanding in `period`.
    pub fn held(&self, period: u64) -> u64 {
        if self.period == period {
            self.held
        } else {
            0
        }
    }
}

// === impl BudgetState ===

impl BudgetState {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, BudgetCounter> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Gives back a reservation made in `held_period` and adds `charge` to `period`.
    pub fn settle(&self, held_period: u64, held: u64, period: u64, charge: u64) {
        let mut s = self.lock();
        s.release(held_period, held);
        if charge > 0 {
            s.charge(period, charge);
        }
    }

    /// Settled spend in `period`.
    pub fn spend(&self, period: u64) -> u64 {
        self.lock().spent(period)
    }

    /// Reservations outstanding in `period`.
    pub fn held(&self, period: u64) -> u64 {
        self.lock().held(period)
    }
}

// === impl SharedBudget ===

impl SharedBudget {
    /// Its spend and reservations on this replica.
    pub fn state(&self) -> &Arc<BudgetState> {
        self.state.get_or_init(Default::default)
    }
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

    #[test]
    fn reservations_hold_room_until_settled() {
        let mut c = BudgetCounter::default();
        let cap = 1000;
        // Three requests reserving 300 each fit; the fourth does not, however it is timed.
        for _ in 0..3 {
            assert!(c.fits(7, cap, 300));
            c.hold(7, 300);
        }
        assert!(!c.fits(7, cap, 300));
        assert!(c.fits(7, cap, 100));
        // One ends having cost 120: 180 comes back.
        c.release(7, 300);
        c.charge(7, 120);
        assert_eq!((c.spent(7), c.held(7)), (120, 600));
        assert!(c.fits(7, cap, 280));
        assert!(!c.fits(7, cap, 281));
        // A cancelled one gives back everything.
        c.release(7, 300);
        assert_eq!(c.held(7), 300);
        // A new period starts empty; a late release from the old one changes nothing.
        assert!(c.fits(8, cap, 1000));
        c.release(7, 300);
        assert_eq!((c.spent(8), c.held(8)), (0, 0));
        // A reservation larger than the cap never fits, even an empty budget.
        assert!(!c.fits(8, cap, 1001));
    }

    #[test]
    fn counters_saturate() {
        let mut c = BudgetCounter::default();
        c.hold(1, u64::MAX);
        c.hold(1, u64::MAX);
        assert_eq!(c.held(1), u64::MAX);
        assert!(!c.fits(1, u64::MAX - 1, 0));
        c.release(1, u64::MAX);
        assert_eq!(c.held(1), 0);
        c.charge(1, u64::MAX);
        c.charge(1, 5);
        assert_eq!(c.spent(1), u64::MAX);
        assert!(!c.fits(1, u64::MAX - 1, 0));
        assert!(c.fits(1, u64::MAX, 0));
    }
}
