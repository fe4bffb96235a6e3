//! Metric families of the Kubernetes source, registered next to the gateway's own.

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// What the Kubernetes source records. The table generation and reload counts stay in
/// [`switchyard_telemetry::Metrics`], shared with the file source.
#[derive(Clone)]
pub struct ControllerMetrics {
    /// `switchyard_config_propagation_seconds`: from the first watch event of a change being
    /// seen to the table holding it being live.
    pub propagation: Histogram,
    /// `switchyard_watch_reconnects_total{kind}`: failed lists/watches, each followed by a
    /// reconnect after back-off.
    pub watch_reconnects: IntCounterVec,
    /// `switchyard_status_writes_total{result}`: status patches sent (success, error).
    pub status_writes: IntCounterVec,
    /// `switchyard_status_leader`: 1 while this replica holds the status Lease.
    pub leader: IntGauge,
    /// `switchyard_config_rejected_resources{kind}`: resources left out of the current table.
    pub rejected: IntGaugeVec,
    /// `switchyard_config_held_resources{kind}`: resources whose newest generation was refused
    /// while their last accepted one keeps serving.
    pub held: IntGaugeVec,
}

impl ControllerMetrics {
    /// Bucket bounds for propagation: the debounce is tens of milliseconds, a rebuild of a
    /// large table a few hundred.
    pub const PROPAGATION_BUCKETS: &'static [f64] = &[
        0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ];

    /// Registers every family into `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let propagation = Histogram::with_opts(
            HistogramOpts::new(
                "switchyard_config_propagation_seconds",
                "Time from a resource change being seen on a watch to the routing table holding it being live.",
            )
            .buckets(Self::PROPAGATION_BUCKETS.to_vec()),
        )?;
        let watch_reconnects = IntCounterVec::new(
            Opts::new(
                "switchyard_watch_reconnects_total",
                "Failed Kubernetes lists or watches, each retried with back-off, by kind.",
            ),
            &["kind"],
        )?;
        let status_writes = IntCounterVec::new(
            Opts::new(
                "switchyard_status_writes_total",
                "Status patches sent to the Kubernetes API, by result (success, error).",
            ),
            &["result"],
        )?;
        let leader = IntGauge::new(
            "switchyard_status_leader",
            "1 while this replica holds the Lease that lets it write status and Events.",
        )?;
        let rejected = IntGaugeVec::new(
            Opts::new(
                "switchyard_config_rejected_resources",
                "Resources left out of the current routing table because of errors, by kind.",
            ),
            &["kind"],
        )?;
        let held = IntGaugeVec::new(
            Opts::new(
                "switchyard_config_held_resources",
                "Resources whose newest generation was refused while their last accepted generation keeps serving, by kind.",
            ),
            &["kind"],
        )?;
        registry.register(Box::new(propagation.clone()))?;
        registry.register(Box::new(watch_reconnects.clone()))?;
        registry.register(Box::new(status_writes.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        registry.register(Box::new(rejected.clone()))?;
        registry.register(Box::new(held.clone()))?;
        Ok(ControllerMetrics {
            propagation,
            watch_reconnects,
            status_writes,
            leader,
            rejected,
            held,
        })
    }
}
