//! Switchyard's routing table: an immutable table of routes, backends and consumers, request
//! matching, backend and key picking, and the live state (health, limits, budgets) that
//! survives reloads. No I/O, and no kube: `switchyard-compile` builds tables from resources.

pub mod budget;
pub mod catalog;
mod clock;
pub mod consumer;
mod consumer_state;
pub mod egress;
pub mod glob;
mod handle;
mod health;
mod keys;
mod ledger;
mod limiter;
mod period;
mod pricing;
mod retry_budget;
mod sign;
mod spend;
pub mod state;
mod table;

pub use consumer::{Consumer, Consumers};
pub use egress::{Egress, Proxy};
pub use handle::{ReplacedKey, TableHandle};
pub use sign::{RequestSigner, Sigv4};
pub use state::{
    BackendState, ConsumerState, HealthChange, InFlight, KeyState, RetryBudget, StateRegistry,
};
/// The backend wire format and the route's affinity mode, re-exported so the gateway need
/// not name `switchyard-types`.
pub use switchyard_types::{Affinity, Provider};
pub use table::{
    Backend, BackendUris, FailureClass, KeyChoice, Matched, Pricing, Retry, Route, RoutingTable,
    Target, Timeouts, UpstreamKey, MAX_CONFIGURED_DURATION,
};
