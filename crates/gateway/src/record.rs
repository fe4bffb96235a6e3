//! Per-request context and its recording: metrics, the access log line and the OTel span are
//! written once, when the request ends (for a stream, when its body is dropped), through a
//! drop guard.

use std::sync::Arc;

use http::{HeaderValue, StatusCode};
use switchyard_providers::Usage;
use switchyard_router::{InFlight, Pricing};
use switchyard_telemetry::{
    AccessLine, AccessLog, Metrics, Otel, RequestLabels, RequestOutcome, RequestSample,
    RequestTrace,
};

use crate::admit::{Admitted, Limits, SettleTarget};
use crate::owners::{Owner, ResponseOwners};
use tokio::time::{Duration, Instant};

/// Longest requested-model string kept for the access log: the client controls it.
const MAX_LOGGED_MODEL: usize = 256;

/// A cost in USD as whole micro-USD for the spend counters. The cost derives from the
/// upstream's usage numbers: a negative or NaN figure charges nothing, an infinite or huge
/// one charges the most Redis's signed counters hold (so a spent budget stays spent).
fn micro_usd(cost_usd: f64) -> u64 {
    const MAX: u64 = i64::MAX as u64;
    let micro = cost_usd * 1e6;
    if micro.is_nan() || micro <= 0.0 {
        0
    } else if micro >= MAX as f64 {
        MAX
    } else {
        micro.round() as u64
    }
}

/// What is known about a request, filled in phase by phase and recorded on drop.
pub struct Record {
    metrics: Arc<Metrics>,
    otel: Option<Arc<Otel>>,
    armed: bool,
    /// When the request arrived.
    pub start: Instant,
    /// The request id sent back to the caller and upstream.
    pub request_id: HeaderValue,
    /// GenAI operation name (`chat`, `text_completion`, `embeddings`), once known.
    pub operation: &'static str,
    /// The model as the client sent it (for the log and span only, never a metric label).
    pub requested_model: Option<String>,
    /// The model sent upstream on the last attempt.
    pub upstream_model: Option<String>,
    /// Route `namespace/name`, once matched.
    pub route: Option<Arc<str>>,
    /// The configured model pattern that matched.
    pub model: Option<Arc<str>>,
    /// Backend `namespace/name` of the last attempt.
    pub backend: Option<Arc<str>>,
    /// Provider of the last attempt.
    pub provider: &'static str,
    /// `gen_ai.provider.name` of the last attempt.
    pub genai_provider: &'static str,
    /// Consumer `namespace/name`, when authenticated.
    pub consumer: Option<Arc<str>>,
    /// Upstream attempts made.
    pub attempts: u32,
    /// Status sent to the client.
    pub status: StatusCode,
    /// The error code sent, when the request failed.
    pub error_type: Option<String>,
    /// Why the caller got a 429 (`upstream`, and later the consumer limits).
    pub ratelimit_reason: Option<&'static str>,
    /// Time to the first generated token, for streams.
    pub ttft: Option<Duration>,
    /// Usage reported by the upstream.
    pub usage: Option<Usage>,
    /// Finish reason reported by the upstream.
    pub finish_reason: Option<String>,
    /// What translation left out of the caller's request, as sent in `x-switchyard-dropped`
    /// (only for an answer from a translated target).
    pub dropped: Option<HeaderValue>,
    /// Prices of the served model.
    pub pricing: Pricing,
    /// The backend concurrency slot, held until the response (stream included) ends.
    pub permit: Option<InFlight>,
    /// The request's span, when OTel is on.
    pub trace: Option<RequestTrace>,
    /// The consumer's limits to settle with the real usage when the request ends.
    pub settle: Option<(Arc<Limits>, SettleTarget, Admitted)>,
    /// Where the line goes when the request ends; `None` with the access log off.
    pub access_log: Option<Arc<AccessLog>>,
    /// For an answer the provider stores: where it is stored, remembered under the
    /// answer's id as soon as that is read (see [`crate::owners`]).
    pub stored_by: Option<(Arc<ResponseOwners>, Owner)>,
}

impl Record {
    /// Starts recording a request that arrived at `start`.
    pub fn new(
        metrics: Arc<Metrics>,
        otel: Option<Arc<Otel>>,
        start: Instant,
        request_id: HeaderValue,
    ) -> Self {
        Record {
            metrics,
            otel,
            armed: true,
            start,
            request_id,
            operation: "",
            requested_model: None,
            upstream_model: None,
            route: None,
            model: None,
            backend: None,
            provider: "",
            genai_provider: "",
            consumer: None,
            attempts: 0,
            status: StatusCode::OK,
            error_type: None,
            ratelimit_reason: None,
            ttft: None,
            usage: None,
            finish_reason: None,
            dropped: None,
            pricing: Pricing::default(),
            permit: None,
            trace: None,
            settle: None,
            access_log: None,
            stored_by: None,
        }
    }

    /// The OTel pipeline, if on.
    pub fn otel(&self) -> Option<&Arc<Otel>> {
        self.otel.as_ref()
    }

    /// Notes the model the client asked for, bounded in length.
    pub fn set_requested_model(&mut self, model: &str) {
        let mut end = model.len().min(MAX_LOGGED_MODEL);
        while !model.is_char_boundary(end) {
            end -= 1;
        }
        self.requested_model = Some(model[..end].to_string());
    }

    /// Moves everything into a new record (e.g. into a streaming body, to be written when the
    /// stream ends), leaving a disarmed blank behind so the request is counted once.
    pub fn take(&mut self) -> Record {
        let blank = Record::new(
            Arc::clone(&self.metrics),
            self.otel.clone(),
            self.start,
            self.request_id.clone(),
        );
        let mut taken = std::mem::replace(self, blank);
        self.armed = false;
        taken.armed = true;
        taken
    }

    /// Counts an upstream failure of one attempt.
    pub fn upstream_error(&self, kind: &str) {
        self.metrics
            .upstream_errors
            .with_label_values(&[self.backend.as_deref().unwrap_or(""), self.provider, kind])
            .inc();
    }

    /// Counts a disabled upstream key back in service.
    pub fn upstream_key_restored(&self) {
        self.metrics
            .upstream_keys_restored
            .with_label_values(&[self.backend.as_deref().unwrap_or(""), self.provider])
            .inc();
    }

    fn access_log(&self, elapsed: Duration, cost: Option<f64>) {
        let Some(log) = &self.access_log else {
            return;
        };
        let u = self.usage.unwrap_or_default();
        // The prometheus crate has no exemplars: the trace id here is what links a slow
        // request seen in the latency histogram (and found in this log) to its trace.
        let trace_id = self.trace.as_ref().map(RequestTrace::trace_id);
        log.log(&AccessLine {
            request_id: self.request_id.to_str().unwrap_or(""),
            operation: self.operation,
            consumer: self.consumer.as_deref().unwrap_or(""),
            route: self.route.as_deref().unwrap_or(""),
            requested_model: self.requested_model.as_deref().unwrap_or(""),
            upstream_model: self.upstream_model.as_deref().unwrap_or(""),
            backend: self.backend.as_deref().unwrap_or(""),
            provider: self.provider,
            attempts: self.attempts,
            status: self.status.as_u16(),
            error: self.error_type.as_deref().unwrap_or(""),
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            cached_input_tokens: u.cached_input_tokens,
            cache_write_tokens: u.cache_write_tokens,
            cost_usd: cost,
            duration_ms: elapsed.as_secs_f64() * 1000.0,
            ttft_ms: self.ttft.map(|t| t.as_secs_f64() * 1000.0),
            // Absent, like the fields around it, unless something was dropped; the header
            // value is visible ASCII, so `to_str` borrows it without a copy.
            dropped: self.dropped.as_ref().and_then(|d| d.to_str().ok()),
            trace_id: trace_id.as_deref(),
        });
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let elapsed = self.start.elapsed();
        let (cost, price_unknown) = self.cost();
        self.count(elapsed, cost, price_unknown);
        self.settle_limits(cost);
        self.access_log(elapsed, (!price_unknown).then_some(cost));
        self.end_trace(elapsed, cost);
    }
}

// The phases of recording, in the order `drop` runs them.
impl Record {
    /// The request's cost in USD (0 when unknown), and whether it is unknown: the model has
    /// usage but no price anywhere (reported as unknown, not as $0).
    fn cost(&self) -> (f64, bool) {
        let priced = self.usage.map(|u| self.pricing.cost(&u));
        let price_unknown = matches!(priced, Some(None));
        (priced.flatten().unwrap_or(0.0), price_unknown)
    }

    /// Counts the request in the metrics: the caller's 429s by reason, and the request's
    /// duration, tokens and cost.
    fn count(&self, elapsed: Duration, cost: f64, price_unknown: bool) {
        let route = self.route.as_deref().unwrap_or("");
        let consumer = self.consumer.as_deref().unwrap_or("");
        let m = &self.metrics;
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            m.ratelimited
                .with_label_values(&[route, consumer, self.ratelimit_reason.unwrap_or("upstream")])
                .inc();
        }
        let u = self.usage.unwrap_or_default();
        m.record_request(
            &RequestLabels {
                route,
                model: self.model.as_deref().unwrap_or(""),
                backend: self.backend.as_deref().unwrap_or(""),
                provider: self.provider,
                consumer,
                status: self.status.as_str(),
            },
            &RequestSample {
                seconds: elapsed.as_secs_f64(),
                ttft: self.ttft.map(|t| t.as_secs_f64()),
                per_token: self.ttft.zip(self.usage).and_then(|(ttft, u)| {
                    let n = u.output_tokens;
                    (n > 1).then(|| elapsed.saturating_sub(ttft).as_secs_f64() / (n - 1) as f64)
                }),
                tokens: [
                    u.input_tokens,
                    u.output_tokens,
                    u.cached_input_tokens,
                    u.cache_write_tokens,
                ],
                cost_usd: cost,
                price_unknown,
                saved_usd: if self.pricing.known {
                    self.pricing.saved_usd(&u)
                } else {
                    0.0
                },
            },
        );
    }

    /// Settles the consumer's limits and budgets with the real usage and cost (none for a
    /// failed request).
    fn settle_limits(&mut self, cost: f64) {
        if let Some((limits, target, admitted)) = self.settle.take() {
            let micro = micro_usd(cost);
            let usage = self.usage.filter(|_| self.status.is_success());
            limits.settle(target, admitted, usage, micro);
        }
    }

    /// Ends the request's span, when OTel is on.
    fn end_trace(&mut self, elapsed: Duration, cost: f64) {
        let (Some(otel), Some(trace)) = (self.otel.as_ref(), self.trace.take()) else {
            return;
        };
        otel.end_request(
            trace,
            &RequestOutcome {
                operation: self.operation,
                provider: self.genai_provider,
                request_model: self.requested_model.as_deref().unwrap_or(""),
                response_model: self.upstream_model.as_deref(),
                model: self.model.as_deref().unwrap_or(""),
                route: self.route.as_deref().unwrap_or(""),
                backend: self.backend.as_deref().unwrap_or(""),
                consumer: self.consumer.as_deref().unwrap_or(""),
                status: self.status.as_u16(),
                error_type: self.error_type.as_deref(),
                input_tokens: self.usage.map(|u| u.input_tokens),
                output_tokens: self.usage.map(|u| u.output_tokens),
                finish_reason: self.finish_reason.as_deref(),
                duration: elapsed,
                ttfc: self.ttft,
                cost_usd: cost,
                attempts: self.attempts,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_become_micro_usd_without_wrapping() {
        let max = i64::MAX as u64;
        for (cost, micro) in [
            (0.0, 0),
            (0.000_001, 1),
            (1.5, 1_500_000),
            (-1.0, 0),
            (-0.0, 0),
            (f64::NAN, 0),
            (-f64::NAN, 0),
            (f64::NEG_INFINITY, 0),
            (f64::INFINITY, max),
            (f64::MAX, max),
            (u64::MAX as f64, max),
            (9.3e12, max),
        ] {
            assert_eq!(micro_usd(cost), micro, "{cost}");
        }
    }

    /// Collects the access log's lines.
    #[derive(Clone, Default)]
    struct AccessLines(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for AccessLines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn access_log_names_dropped_fields_only_when_there_are_some() {
        let lines = AccessLines::default();
        let metrics = Arc::new(Metrics::new(prometheus::Registry::new()).unwrap());
        let log = Arc::new(AccessLog::new(metrics.registry(), lines.clone()).unwrap());
        let record = |dropped: Option<&'static str>| {
            let mut r = Record::new(
                Arc::clone(&metrics),
                None,
                Instant::now(),
                HeaderValue::from_static("id"),
            );
            r.access_log = Some(Arc::clone(&log));
            r.dropped = dropped.map(HeaderValue::from_static);
            drop(r);
        };
        record(Some("tools[0](web_search), prompt_cache_key"));
        record(None);
        log.shutdown();
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let dropped: Vec<Option<String>> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v.get("dropped").map(|d| d.as_str().unwrap().to_string())
            })
            .collect();
        assert_eq!(
            dropped,
            [
                Some("tools[0](web_search), prompt_cache_key".to_string()),
                None
            ]
        );
    }
}
