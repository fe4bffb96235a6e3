//! Callers and their virtual keys.
//!
//! Keys are kept only as SHA-256 digests. A presented key is hashed, looked up by digest, and
//! the digest compared in constant time; the key itself is never stored, logged or shown.

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock},
};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use switchyard_types::BudgetPeriod;

use crate::{glob::Glob, spend::BudgetState};

/// One compiled AIConsumer.
#[derive(Debug)]
pub struct Consumer {
    /// `namespace/name`, the metric label.
    pub name: Arc<str>,
    /// `metadata.name`, matched by routes' `match.consumers`.
    pub short_name: String,
    /// Model patterns and route names it may use; empty allows all.
    pub(crate) allow: Vec<Glob>,
    /// Most requests per minute.
    pub requests_per_minute: Option<u64>,
    /// Most tokens (input + output) per minute.
    pub tokens_per_minute: Option<u64>,
    /// Spending cap per period.
    pub budget: Option<Budget>,
    /// The shared budget (`spec.budgetRef`) it also draws on.
    pub shared_budget: Option<Arc<SharedBudget>>,
    /// Limiter, spend and ledger state, bound from the registry (survives reloads).
    pub(crate) state: std::sync::OnceLock<Arc<crate::consumer_state::ConsumerState>>,
}

/// A spending cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The cap, in micro-USD.
    pub micro_usd: u64,
    /// When spend resets.
    pub period: BudgetPeriod,
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

/// Every consumer, indexed by key digest and by ServiceAccount.
#[derive(Debug, Default)]
pub struct Consumers {
    pub(crate) list: Vec<Consumer>,
    pub(crate) by_digest: HashMap<[u8; 32], usize>,
    /// Keyed by the Kubernetes username, `system:serviceaccount:<namespace>:<name>`.
    pub(crate) by_service_account: HashMap<String, usize>,
    /// Whether any AIConsumer resource exists, valid or not. Once one does, the gateway
    /// requires a key: a consumer whose Secret went missing must not open the door.
    pub(crate) configured: bool,
    /// Every valid AIBudget, in (namespace, name) order.
    pub(crate) budgets: Vec<Arc<SharedBudget>>,
}

/// The username the API server gives a ServiceAccount's tokens.
pub fn service_account_username(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// SHA-256 of a key.
pub fn digest(key: &[u8]) -> [u8; 32] {
    Sha256::digest(key).into()
}

// === impl Consumers ===

impl Consumers {
    /// The consumers of `list`, each with the key digests ([`digest`]) and ServiceAccount
    /// usernames ([`service_account_username`]) it authenticates with, sorted by name; and
    /// every shared budget, in (namespace, name) order. `configured`: whether any AIConsumer
    /// resource exists, valid or not (see [`Consumers::auth_required`]).
    pub fn new(
        configured: bool,
        list: Vec<(Consumer, Vec<[u8; 32]>, Vec<String>)>,
        budgets: Vec<Arc<SharedBudget>>,
    ) -> Self {
        let mut consumers = Consumers {
            configured,
            budgets,
            ..Consumers::default()
        };
        for (idx, (consumer, digests, accounts)) in list.into_iter().enumerate() {
            consumers.list.push(consumer);
            for d in digests {
                consumers.by_digest.insert(d, idx);
            }
            for user in accounts {
                consumers.by_service_account.insert(user, idx);
            }
        }
        consumers
    }

    /// True when any AIConsumer resource exists, valid or not, or any consumer holds a key or
    /// a ServiceAccount: then every request must present a valid one. Fails closed: when the
    /// last keyed consumer becomes invalid (its Secret deleted, a typo in its key reference),
    /// nobody gets in, instead of everybody.
    pub fn auth_required(&self) -> bool {
        self.configured || !self.by_digest.is_empty() || !self.by_service_account.is_empty()
    }

    /// Whether any AIConsumer resource was given to the compiler, valid or not.
    pub fn configured(&self) -> bool {
        self.configured
    }

    /// True when some consumer accepts ServiceAccount tokens.
    pub fn accepts_service_accounts(&self) -> bool {
        !self.by_service_account.is_empty()
    }

    /// The consumer a TokenReview-authenticated `username` belongs to, if any.
    pub fn by_service_account(&self, username: &str) -> Option<&Consumer> {
        self.list.get(*self.by_service_account.get(username)?)
    }

    /// The consumer named `namespace/name`. The list is compiled in (namespace, name) order,
    /// so this is a binary search: the spend writer asks for every consumer in turn.
    pub fn get(&self, name: &str) -> Option<&Consumer> {
        fn key(n: &str) -> (&str, &str) {
            n.split_once('/').unwrap_or((n, ""))
        }
        let want = key(name);
        self.list
            .binary_search_by(|c| key(&c.name).cmp(&want))
            .ok()
            .and_then(|i| self.list.get(i))
    }

    /// The consumer owning `key`, if any.
    pub fn authenticate(&self, key: &[u8]) -> Option<&Consumer> {
        // An open gateway with no keys skips hashing whatever key the SDK sent.
        if self.by_digest.is_empty() {
            return None;
        }
        let d = digest(key);
        let (stored, &idx) = self.by_digest.get_key_value(&d)?;
        // The map lookup already found it; the constant-time check guards against a future
        // change of the index structure turning this into a variable-time comparison.
        if bool::from(stored.ct_eq(&d)) {
            self.list.get(idx)
        } else {
            None
        }
    }

    /// Every consumer.
    pub fn iter(&self) -> impl Iterator<Item = &Consumer> {
        self.list.iter()
    }

    /// The AIBudget named `namespace/name`.
    pub fn budget(&self, name: &str) -> Option<&Arc<SharedBudget>> {
        self.budgets.iter().find(|b| &*b.name == name)
    }

    /// Every AIBudget.
    pub fn budgets(&self) -> impl Iterator<Item = &Arc<SharedBudget>> {
        self.budgets.iter()
    }

    /// Names, for the debug view.
    pub fn names(&self) -> Vec<&str> {
        self.list.iter().map(|c| &*c.name).collect()
    }
}

// === impl SharedBudget ===

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

    /// Its spend and reservations on this replica.
    pub fn state(&self) -> &Arc<BudgetState> {
        self.state.get_or_init(Default::default)
    }
}

// === impl Consumer ===

impl Consumer {
    /// A consumer named `namespace/name` (`short_name`: its `metadata.name`), allowed the
    /// models and routes matching `allow` (all when empty), with its limits.
    pub fn new(
        name: Arc<str>,
        short_name: String,
        allow: Vec<Glob>,
        requests_per_minute: Option<u64>,
        tokens_per_minute: Option<u64>,
        budget: Option<Budget>,
        shared_budget: Option<Arc<SharedBudget>>,
    ) -> Self {
        Consumer {
            name,
            short_name,
            allow,
            requests_per_minute,
            tokens_per_minute,
            budget,
            shared_budget,
            state: Default::default(),
        }
    }

    /// The consumer's limiter, spend and ledger state.
    pub fn state(&self) -> &Arc<crate::consumer_state::ConsumerState> {
        self.state.get_or_init(Default::default)
    }

    /// Whether any limit or budget applies.
    pub fn is_limited(&self) -> bool {
        self.requests_per_minute.is_some()
            || self.tokens_per_minute.is_some()
            || self.budget.is_some()
            || self.shared_budget.is_some()
    }

    /// Whether this consumer may call `model` through `route` (its `namespace/name` or name).
    pub fn allows(&self, model: &str, route_name: &str) -> bool {
        if self.allow.is_empty() {
            return true;
        }
        let short_route = route_name.rsplit('/').next().unwrap_or(route_name);
        self.allow
            .iter()
            .any(|g| g.matches(model) || g.as_str() == route_name || g.as_str() == short_route)
    }
}
