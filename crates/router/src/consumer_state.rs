//! One consumer's live state on this replica: its rate-limit windows, its own budget's spend
//! and reservations, and its ledger, under one lock.

use std::sync::{Arc, Mutex};

use crate::{
    ledger::{Ledger, LedgerEntry},
    limiter::{LimitExceeded, Taken, Windows},
    spend::{BudgetCounter, BudgetState},
};

/// Per-consumer limiter, spend and ledger state for a single replica (with Redis, the shared
/// copy lives there instead). Each consumer has its own lock, held for a few arithmetic
/// operations and never across an await, so consumers never contend with each other.
#[derive(Debug, Default)]
pub struct ConsumerState {
    inner: Mutex<ConsumerInner>,
}

#[derive(Debug, Default)]
struct ConsumerInner {
    /// Request and token counts of the rate limits.
    limits: Windows,
    /// Spend and reservations of the consumer's own budget.
    budget: BudgetCounter,
    ledger: Ledger,
}

/// Which budget refused a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetLevel {
    /// The consumer's own `spec.budget`.
    Own,
    /// The shared AIBudget of its `spec.budgetRef`.
    Shared,
}

// === impl ConsumerState ===

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
        self.lock()
            .limits
            .try_take(now_ms, requests_per_minute, tokens_per_minute, tokens)
    }

    /// Corrects a reservation with the real token count once usage is known.
    pub fn settle_tokens(&self, taken: &Taken, actual: u64) {
        self.lock().limits.settle_tokens(taken, actual);
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
        // Spend derives from the upstream's numbers: saturate, never wrap to a small spend
        // that would reopen a spent budget.
        s.budget.charge(period, entry.micro_usd);
        s.ledger.add(day, model, entry);
    }

    /// The ledger: (day, model, totals).
    pub fn ledger(&self) -> Vec<(u64, Arc<str>, LedgerEntry)> {
        self.lock().ledger.rows()
    }
}

#[cfg(test)]
mod tests {
    use switchyard_types::civil::days_from_civil;

    use super::*;
    use crate::period::budget_period;

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
