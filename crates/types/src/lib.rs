//! The plain types that both the resource definitions (`switchyard-api`) and the data plane
//! (`switchyard-router`, `switchyard-gateway`) use: a provider, a route's strategy, affinity
//! and retry classes, a budget period, prices and durations with their parsers.
//!
//! Its own crate so the data plane does not depend on kube and k8s-openapi, which the
//! resource definitions need; `switchyard-api` re-exports each type at its old path, so the
//! CRD schemas are unchanged.
#![deny(missing_docs)]

pub mod civil;
pub mod consumer;
pub mod provider;
pub mod route;
pub mod swar;
pub mod units;

pub use consumer::BudgetPeriod;
pub use provider::Provider;
pub use route::{Affinity, RetryOn, Strategy};
pub use units::{parse_duration, parse_price, MicroUsd, ParseError};
