//! Switchyard's routing table: compiles resources and Secrets into an immutable table,
//! matches requests to routes, and picks backends. No I/O.

mod compile;
pub mod consumer;
pub mod glob;
mod handle;
pub mod state;
mod table;

pub use compile::{compile, Compiled, Diagnostic, Severity};
pub use consumer::{Consumer, Consumers};
pub use handle::TableHandle;
pub use state::{
    BackendState, ConsumerState, HealthChange, InFlight, KeyState, RetryBudget, StateRegistry,
};
pub use table::{
    Backend, FailureClass, KeyChoice, Matched, Pricing, Retry, Route, RoutingTable, Target,
    Timeouts, UpstreamKey,
};

#[cfg(test)]
mod tests;
