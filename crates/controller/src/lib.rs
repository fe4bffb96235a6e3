//! Switchyard's control plane: sources of routing configuration that compile resources into
//! a new routing table and swap it in, off the request path — YAML files (local mode) or the
//! Kubernetes API (cluster mode, with status written back).

pub mod cluster;
pub mod files;

pub use cluster::{
    connect, ControllerMetrics, KubeOptions, KubeSource, LeaseConfig, Namespaces,
    SharedSpendFuture, SpendFuture, SpendSource, TokenReviews, DEFAULT_AUDIENCE,
};
pub use files::{load_path, FileSource, LoadError};
