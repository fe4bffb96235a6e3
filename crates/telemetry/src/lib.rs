//! Switchyard's Prometheus metric families, registered under `switchyard_` into a registry
//! the caller owns (no global registry, so tests get a fresh one and can assert values).
//!
//! Label values come only from configured resources (route, backend and model names from the
//! routing table) and from small fixed sets (status codes, token types), never from raw client
//! input, so cardinality stays bounded.

mod access_log;
pub mod otel;
mod series;

pub use access_log::{AccessLine, AccessLog};
pub use otel::{genai_provider_name, Otel, RequestOutcome, RequestTrace};
pub use series::{RequestLabels, RequestSample};

use prometheus::{
    CounterVec, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

/// The error type of metric registration and encoding.
pub mod prometheus_error {
    pub use prometheus::Error;
}

/// Every metric family the gateway records.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Tells instances apart in the per-thread series cache (clones share it, and their
    /// families).
    id: u64,
    /// `switchyard_requests_total{route,model,backend,provider,consumer,status}`.
    pub requests: IntCounterVec,
    /// `switchyard_request_duration_seconds{route,model,backend,status}`.
    pub request_duration: HistogramVec,
    /// `switchyard_time_to_first_token_seconds{route,model,backend}`.
    pub time_to_first_token: HistogramVec,
    /// `switchyard_time_per_output_token_seconds{route,model,backend}`: stream time after the
    /// first token divided by the further tokens.
    pub time_per_output_token: HistogramVec,
    /// `switchyard_ratelimited_total{route,consumer,reason}`: requests answered 429.
    pub ratelimited: IntCounterVec,
    /// `switchyard_tokens_total{route,model,backend,provider,consumer,type}`.
    pub tokens: IntCounterVec,
    /// `switchyard_spend_usd_total{route,model,backend,consumer}`.
    pub spend_usd: CounterVec,
    /// `switchyard_cost_saved_usd_total{route,model,backend,consumer}`: what prompt-cache
    /// reads saved against the input price.
    pub cost_saved_usd: CounterVec,
    /// `switchyard_spend_unknown_total{route,model,backend}`: requests with usage but no
    /// known price, whose spend is left out of `spend_usd_total` rather than counted as $0.
    pub spend_unknown: IntCounterVec,
    /// `switchyard_upstream_errors_total{backend,provider,kind}`.
    pub upstream_errors: IntCounterVec,
    /// `switchyard_upstream_keys_restored_total{backend,provider}`: a disabled upstream key
    /// (counted as `upstream_errors_total{kind="key_disabled"}`) that served again.
    pub upstream_keys_restored: IntCounterVec,
    /// `switchyard_retries_total{route,backend}`: extra attempts on the same backend.
    pub retries: IntCounterVec,
    /// `switchyard_fallbacks_total{route,backend}`: requests moved on to a fallback backend.
    pub fallbacks: IntCounterVec,
    /// `switchyard_backend_healthy{backend,provider}`: 1 unless ejected by outlier detection.
    pub backend_healthy: IntGaugeVec,
    /// `switchyard_backend_in_flight{backend}`: requests in flight per backend.
    pub backend_in_flight: IntGaugeVec,
    /// `switchyard_config_reloads_total{result}`.
    pub config_reloads: IntCounterVec,
    /// `switchyard_limits_store_errors_total`: failed calls to the shared limit counters.
    pub limits_store_errors: IntCounter,
    /// `switchyard_budget_remaining_usd{budget,kind}`: what is left of each budget in its
    /// period (cap minus settled spend), `kind` `consumer` or `shared`.
    pub budget_remaining_usd: GaugeVec,
    /// `switchyard_config_generation`: the generation of the routing table being served.
    pub config_generation: IntGauge,
}

impl Metrics {
    /// Bucket bounds for whole requests: LLM calls take from tens of milliseconds to minutes.
    pub const DURATION_BUCKETS: &'static [f64] = &[
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0,
        320.0,
    ];
    /// Bucket bounds for time to first token: milliseconds to tens of seconds.
    pub const TTFT_BUCKETS: &'static [f64] = &[
        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0,
    ];

    /// Bucket bounds for time per output token: sub-millisecond to a second.
    pub const PER_TOKEN_BUCKETS: &'static [f64] = &[
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0,
    ];

    /// Registers every family into `registry`.
    pub fn new(registry: Registry) -> Result<Self, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "switchyard_requests_total",
                "Requests handled, by outcome status code.",
            ),
            &[
                "route", "model", "backend", "provider", "consumer", "status",
            ],
        )?;
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "switchyard_request_duration_seconds",
                "Time from request received to response fully sent (end of stream included).",
            )
            .buckets(Self::DURATION_BUCKETS.to_vec()),
            &["route", "model", "backend", "status"],
        )?;
        let time_to_first_token = HistogramVec::new(
            HistogramOpts::new(
                "switchyard_time_to_first_token_seconds",
                "Time from request received to the first generated token of a stream.",
            )
            .buckets(Self::TTFT_BUCKETS.to_vec()),
            &["route", "model", "backend"],
        )?;
        let time_per_output_token = HistogramVec::new(
            HistogramOpts::new(
                "switchyard_time_per_output_token_seconds",
                "Time per output token of a stream, after the first token.",
            )
            .buckets(Self::PER_TOKEN_BUCKETS.to_vec()),
            &["route", "model", "backend"],
        )?;
        let ratelimited = IntCounterVec::new(
            Opts::new(
                "switchyard_ratelimited_total",
                "Requests answered 429, by reason (upstream, and the consumer limits).",
            ),
            &["route", "consumer", "reason"],
        )?;
        let tokens = IntCounterVec::new(
            Opts::new(
                "switchyard_tokens_total",
                "Tokens reported by upstreams, by type (input, output, cache_read, cache_write); cache reads and writes are part of input.",
            ),
            &["route", "model", "backend", "provider", "consumer", "type"],
        )?;
        let spend_usd = CounterVec::new(
            Opts::new(
                "switchyard_spend_usd_total",
                "Spend in USD computed from usage and the backend's pricing.",
            ),
            &["route", "model", "backend", "consumer"],
        )?;
        let cost_saved_usd = CounterVec::new(
            Opts::new(
                "switchyard_cost_saved_usd_total",
                "USD saved by prompt-cache reads: cache-read tokens times (input price - cache-read price).",
            ),
            &["route", "model", "backend", "consumer"],
        )?;
        let spend_unknown = IntCounterVec::new(
            Opts::new(
                "switchyard_spend_unknown_total",
                "Requests with usage whose model has no known price (PricingUnknown): their spend is not in spend_usd_total.",
            ),
            &["route", "model", "backend"],
        )?;
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "switchyard_upstream_errors_total",
                "Failed upstream calls, by kind (connect, timeout, status_5xx, status_429, status_4xx, protocol).",
            ),
            &["backend", "provider", "kind"],
        )?;
        let upstream_keys_restored = IntCounterVec::new(
            Opts::new(
                "switchyard_upstream_keys_restored_total",
                "Disabled upstream keys that served a request again after their retry period (a key disable is counted as upstream_errors_total{kind=\"key_disabled\"}).",
            ),
            &["backend", "provider"],
        )?;
        let retries = IntCounterVec::new(
            Opts::new(
                "switchyard_retries_total",
                "Extra attempts on the same backend after a retryable failure.",
            ),
            &["route", "backend"],
        )?;
        let fallbacks = IntCounterVec::new(
            Opts::new(
                "switchyard_fallbacks_total",
                "Requests moved on to another backend (a fallback, or another primary) after a failure.",
            ),
            &["route", "backend"],
        )?;
        let backend_healthy = IntGaugeVec::new(
            Opts::new(
                "switchyard_backend_healthy",
                "1 when the backend is in service, 0 while outlier detection has ejected it.",
            ),
            &["backend", "provider"],
        )?;
        let backend_in_flight = IntGaugeVec::new(
            Opts::new(
                "switchyard_backend_in_flight",
                "Requests in flight per backend (streams until they end).",
            ),
            &["backend"],
        )?;
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "switchyard_config_reloads_total",
                "Routing table rebuilds, by result (success, error).",
            ),
            &["result"],
        )?;
        let limits_store_errors = IntCounter::new(
            "switchyard_limits_store_errors_total",
            "Calls to the shared limit counters (Redis) that failed; requests were then admitted or refused per the failure mode.",
        )?;
        let budget_remaining_usd = GaugeVec::new(
            Opts::new(
                "switchyard_budget_remaining_usd",
                "What is left of a budget in its current period: the cap minus settled spend, in USD (kind=consumer for an AIConsumer's own budget, shared for an AIBudget).",
            ),
            &["budget", "kind"],
        )?;
        let config_generation = IntGauge::new(
            "switchyard_config_generation",
            "Generation of the routing table currently served.",
        )?;
        // Both results exist from the start, so `increase()` sees the first error.
        config_reloads.with_label_values(&["success"]);
        config_reloads.with_label_values(&["error"]);
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(request_duration.clone()))?;
        registry.register(Box::new(time_to_first_token.clone()))?;
        registry.register(Box::new(time_per_output_token.clone()))?;
        registry.register(Box::new(ratelimited.clone()))?;
        registry.register(Box::new(tokens.clone()))?;
        registry.register(Box::new(spend_usd.clone()))?;
        registry.register(Box::new(cost_saved_usd.clone()))?;
        registry.register(Box::new(spend_unknown.clone()))?;
        registry.register(Box::new(upstream_errors.clone()))?;
        registry.register(Box::new(upstream_keys_restored.clone()))?;
        registry.register(Box::new(retries.clone()))?;
        registry.register(Box::new(fallbacks.clone()))?;
        registry.register(Box::new(backend_healthy.clone()))?;
        registry.register(Box::new(backend_in_flight.clone()))?;
        registry.register(Box::new(config_reloads.clone()))?;
        registry.register(Box::new(config_generation.clone()))?;
        registry.register(Box::new(limits_store_errors.clone()))?;
        registry.register(Box::new(budget_remaining_usd.clone()))?;
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Ok(Self {
            registry,
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            requests,
            request_duration,
            time_to_first_token,
            time_per_output_token,
            ratelimited,
            tokens,
            spend_usd,
            cost_saved_usd,
            spend_unknown,
            upstream_errors,
            upstream_keys_restored,
            retries,
            fallbacks,
            backend_healthy,
            backend_in_flight,
            config_reloads,
            config_generation,
            limits_store_errors,
            budget_remaining_usd,
        })
    }

    /// The registry the families live in.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The Prometheus text exposition of every registered family.
    pub fn encode_text(&self) -> Result<String, prometheus::Error> {
        let encoder = prometheus::TextEncoder::new();
        encoder.encode_to_string(&self.registry.gather())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_exposed_with_prefix() {
        let m = Metrics::new(Registry::new()).unwrap();
        m.requests
            .with_label_values(&[
                "default/chat",
                "gpt-4o",
                "default/mock",
                "openai",
                "",
                "200",
            ])
            .inc();
        m.config_reloads.with_label_values(&["success"]).inc();
        let text = m.encode_text().unwrap();
        assert!(text.contains(
            r#"switchyard_requests_total{backend="default/mock",consumer="",model="gpt-4o",provider="openai",route="default/chat",status="200"} 1"#
        ), "{text}");
        assert!(text.contains(r#"switchyard_config_reloads_total{result="success"} 1"#));
    }

    #[test]
    fn registering_twice_in_one_registry_fails() {
        let r = Registry::new();
        let _m = Metrics::new(r.clone()).unwrap();
        assert!(Metrics::new(r).is_err());
    }
}
