//! Switchyard's routing table: compiles resources and Secrets into an immutable table,
//! matches requests to routes, and picks backends. No I/O.

pub mod budget;
pub mod catalog;
mod compile;
pub mod consumer;
pub mod egress;
pub mod glob;
mod handle;
mod sign;
pub mod state;
mod table;

pub use compile::{compile, Compiled, Diagnostic, Severity, MAX_CONFIGURED_DURATION};
pub use consumer::{Consumer, Consumers};
pub use egress::{Egress, Proxy};
pub use handle::{ReplacedKey, TableHandle};
pub use sign::{RequestSigner, Sigv4};
pub use state::{
    BackendState, ConsumerState, HealthChange, InFlight, KeyState, RetryBudget, StateRegistry,
};
/// The backend wire format and the route's affinity mode, re-exported so the data plane need
/// not depend on `switchyard-api`.
pub use switchyard_api::{Affinity, Provider};
pub use table::{
    Backend, FailureClass, KeyChoice, Matched, Pricing, Retry, Route, RoutingTable, Target,
    Timeouts, UpstreamKey,
};

#[cfg(test)]
mod affinity_tests;
#[cfg(test)]
mod tests;
