//! Switchyard's data plane: the HTTP listener, authentication, routing, upstream calls with
//! retries and fallbacks, stream relaying, and the admin endpoints. It sees only the routing
//! table handle, never the control plane that fills it.

pub mod admin;
pub mod admit;
mod affinity;
pub mod body;
pub mod busy_poll;
mod connect;
pub mod error;
mod forward;
mod headers;
mod inbound;
mod owners;
pub mod pool;
mod record;
mod relay;
pub mod server;
pub mod service;
pub mod service_account;
#[cfg(test)]
mod service_tests;
pub mod tls;
pub mod upstream;

pub use admin::Admin;
pub use admit::{FailureMode, Limits};
pub use busy_poll::BusyPoll;
pub use connect::TrustStore;
pub use error::GatewayError;
pub use server::{serve_admin, serve_gateway};
pub use service::{Gateway, GatewayConfig};
pub use service_account::{Review, ReviewError, ReviewFailure, ReviewFuture, TokenReviewer};
pub use tls::TlsReloader;
pub use upstream::{ClientConfig, UpstreamClient};
