//! Runtime state that outlives a routing table: backend health, in-flight counts, latency
//! estimates, upstream key states, retry budgets, and consumers' limits, spend and ledgers.
//!
//! Tables are rebuilt on every configuration change, but a backend that was failing a moment
//! ago is still failing, and a key resting after a 429 must keep resting. So the table holds
//! only a late-bound handle to state kept in a [`StateRegistry`], keyed by backend name (and,
//! for keys, by a digest of the key, so a rotated key starts fresh). The registry binds handles
//! when a table is published and forgets entries whose backends are gone.
//!
//! Each kind of state lives in its own module; this one re-exports them all, so callers name
//! `state::X` whichever module keeps it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use crate::table::RoutingTable;
pub use crate::{
    clock::now_ms,
    consumer_state::{BudgetLevel, ConsumerState},
    health::{
        BackendState, HealthChange, InFlight, BASE_EJECTION, EJECT_AFTER_FAILURES, MAX_EJECTION,
    },
    keys::{KeyReport, KeyState, BASE_KEY_DISABLE, MAX_KEY_DISABLE, MAX_KEY_REST},
    ledger::LedgerEntry,
    limiter::{LimitExceeded, Taken, WindowStatus, LIMIT_WINDOW_MS},
    period::budget_period,
    retry_budget::RetryBudget,
    spend::{BudgetCounter, BudgetState},
};
// Provider wire format, read here for key steering.
pub use switchyard_providers::ratelimit::{rate_limit_hint, RateLimitHint};

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
    pub fn bind(&self, table: &RoutingTable) -> Vec<usize> {
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
