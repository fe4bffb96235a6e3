//! Per-request context and its recording: metrics are written once, when the request ends
//! (for a stream, when its body is dropped), through a drop guard.

use std::sync::Arc;

use http::StatusCode;
use switchyard_providers::Usage;
use switchyard_router::{InFlight, Pricing};
use switchyard_telemetry::Metrics;
use tokio::time::{Duration, Instant};

/// What is known about a request, filled in phase by phase and recorded on drop.
pub struct Record {
    metrics: Arc<Metrics>,
    armed: bool,
    /// When the request arrived.
    pub start: Instant,
    /// Route `namespace/name`, once matched.
    pub route: Option<Arc<str>>,
    /// The configured model pattern that matched.
    pub model: Option<Arc<str>>,
    /// Backend `namespace/name` of the last attempt.
    pub backend: Option<Arc<str>>,
    /// Provider of the last attempt.
    pub provider: &'static str,
    /// Consumer `namespace/name`, when authenticated.
    pub consumer: Option<Arc<str>>,
    /// Status sent to the client.
    pub status: StatusCode,
    /// Time to the first generated token, for streams.
    pub ttft: Option<Duration>,
    /// Usage reported by the upstream.
    pub usage: Option<Usage>,
    /// Prices of the served model.
    pub pricing: Pricing,
    /// The backend concurrency slot, held until the response (stream included) ends.
    pub permit: Option<InFlight>,
}

impl Record {
    /// Starts recording a request that arrived at `start`.
    pub fn new(metrics: Arc<Metrics>, start: Instant) -> Self {
        Record {
            metrics,
            armed: true,
            start,
            route: None,
            model: None,
            backend: None,
            provider: "",
            consumer: None,
            status: StatusCode::OK,
            ttft: None,
            usage: None,
            pricing: Pricing::default(),
            permit: None,
        }
    }

    /// Stops this record from being written: its request is recorded by another.
    pub fn disarm(&mut self) {
        self.armed = false;
    }

    /// Counts an upstream failure of one attempt.
    pub fn upstream_error(&self, kind: &str) {
        self.metrics
            .upstream_errors
            .with_label_values(&[self.backend.as_deref().unwrap_or(""), self.provider, kind])
            .inc();
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let route = self.route.as_deref().unwrap_or("");
        let model = self.model.as_deref().unwrap_or("");
        let backend = self.backend.as_deref().unwrap_or("");
        let consumer = self.consumer.as_deref().unwrap_or("");
        let status = self.status.as_str();
        let m = &self.metrics;
        m.requests
            .with_label_values(&[route, model, backend, self.provider, consumer, status])
            .inc();
        m.request_duration
            .with_label_values(&[route, model, backend, status])
            .observe(self.start.elapsed().as_secs_f64());
        if let Some(ttft) = self.ttft {
            m.time_to_first_token
                .with_label_values(&[route, model, backend])
                .observe(ttft.as_secs_f64());
        }
        if let Some(u) = self.usage {
            let tokens = |kind: &str, n: u64| {
                if n > 0 {
                    m.tokens
                        .with_label_values(&[route, model, backend, self.provider, consumer, kind])
                        .inc_by(n);
                }
            };
            tokens("input", u.input_tokens);
            tokens("output", u.output_tokens);
            tokens("cached_input", u.cached_input_tokens);
            let cost = self.pricing.cost_usd(&u);
            if cost > 0.0 {
                m.spend_usd
                    .with_label_values(&[route, model, backend, consumer])
                    .inc_by(cost);
            }
        }
    }
}
