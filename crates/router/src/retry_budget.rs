//! A route's retry budget: how many retries and fallbacks it may add over a sliding window.

use std::{sync::Mutex, time::Duration};

use crate::clock::now_ms;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_allows_floor_plus_ratio() {
        let b = RetryBudget::default();
        for _ in 0..100 {
            b.deposit();
        }
        let granted = (0..100).filter(|_| b.try_withdraw()).count();
        assert_eq!(granted, 10 + 20);
    }
}
