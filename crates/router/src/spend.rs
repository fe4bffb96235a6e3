//! Spend counters: a budget's settled spend and outstanding reservations in its current
//! period, in memory (one replica). [`crate::budget`] says how reservations are sized.

use std::sync::Mutex;

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

#[cfg(test)]
mod tests {
    use super::*;

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
