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

use switchyard_router::{ReplacedKey, RoutingTable, TableHandle};
use switchyard_telemetry::Metrics;

/// Publishes `table` and reports each key the upstream had refused that it replaced (an
/// operator rotated its Secret): the same log line and metric as a key that served again.
fn publish(handle: &TableHandle, table: RoutingTable, metrics: &Metrics) {
    for ReplacedKey { backend, provider } in handle.store(table) {
        tracing::info!(%backend, "a disabled upstream key was replaced by a Secret change; the new key is in service");
        metrics
            .upstream_keys_restored
            .with_label_values(&[&backend, provider])
            .inc();
    }
}
