//! OpenTelemetry: a span per request and per upstream attempt, and the GenAI client metrics,
//! exported over OTLP when the standard `OTEL_EXPORTER_OTLP_*` variables are set.
//!
//! Names and attributes follow the GenAI semantic conventions. Prompt and completion content
//! are never recorded.

use std::time::Duration;

use opentelemetry::{
    global::BoxedTracer,
    metrics::{Counter, Histogram, Meter, MeterProvider as _},
    propagation::TextMapPropagator,
    trace::{SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _},
    Context, KeyValue,
};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_otlp::{MetricExporter, SpanExporter};
use opentelemetry_sdk::{
    metrics::{PeriodicReader, SdkMeterProvider},
    propagation::TraceContextPropagator,
    trace::SdkTracerProvider,
    Resource,
};

/// Errors setting up the exporters.
#[derive(Debug, thiserror::Error)]
pub enum OtelError {
    /// The OTLP exporter could not be built.
    #[error("building the OTLP exporter: {0}")]
    Exporter(String),
}

/// The OTel pipeline: tracer, GenAI instruments and the providers to flush at exit.
pub struct Otel {
    tracer: BoxedTracer,
    tracer_provider: SdkTracerProvider,
    meter_provider: SdkMeterProvider,
    propagator: TraceContextPropagator,
    token_usage: Histogram<u64>,
    operation_duration: Histogram<f64>,
    time_to_first_chunk: Histogram<f64>,
    time_per_output_chunk: Histogram<f64>,
    cost: Counter<f64>,
}

/// What is known about one request when it ends.
pub struct RequestOutcome<'a> {
    /// `chat`, `text_completion`, `embeddings`.
    pub operation: &'static str,
    /// `gen_ai.provider.name` of the backend that served (or last failed).
    pub provider: &'a str,
    /// The model the client asked for, as it sent it: on the span only. Anyone can send any
    /// string here, authenticated or not, so it never becomes a metric attribute.
    pub request_model: &'a str,
    /// The model sent upstream (the client's own when the route does not rewrite it): on the
    /// span only, for the same reason.
    pub response_model: Option<&'a str>,
    /// The configured model name or pattern the route matched (`""` when none did): the
    /// `gen_ai.request.model` of the metrics, as the Prometheus `model` label, so their
    /// cardinality stays bounded by the configuration.
    pub model: &'a str,
    /// Route, backend, consumer (`namespace/name`).
    pub route: &'a str,
    /// Backend.
    pub backend: &'a str,
    /// Consumer.
    pub consumer: &'a str,
    /// HTTP status sent to the client.
    pub status: u16,
    /// A low-cardinality error class when the request failed (`upstream_timeout`, …).
    pub error_type: Option<&'a str>,
    /// Tokens.
    pub input_tokens: Option<u64>,
    /// Tokens.
    pub output_tokens: Option<u64>,
    /// Finish reason, when known.
    pub finish_reason: Option<&'a str>,
    /// Whole duration.
    pub duration: Duration,
    /// Time to first chunk (streams).
    pub ttfc: Option<Duration>,
    /// Spend in USD.
    pub cost_usd: f64,
    /// Attempts made.
    pub attempts: u32,
}

/// The span of one request; attempts are its children.
pub struct RequestTrace {
    cx: Context,
}

impl RequestTrace {
    /// The W3C trace id (32 hex digits), to link the access log line to the trace.
    pub fn trace_id(&self) -> String {
        self.cx.span().span_context().trace_id().to_string()
    }
}

/// The span of one upstream attempt.
pub struct AttemptTrace {
    cx: Context,
}

impl Otel {
    /// Bucket bounds of `gen_ai.client.token.usage`, from the semantic conventions.
    pub const TOKEN_BUCKETS: [f64; 14] = [
        1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0,
        4194304.0, 16777216.0, 67108864.0,
    ];
    /// Bucket bounds of `gen_ai.client.operation.duration` and time to first chunk.
    pub const DURATION_BUCKETS: [f64; 14] = [
        0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
    ];
    /// Bucket bounds of `gen_ai.client.operation.time_per_output_chunk`.
    pub const PER_CHUNK_BUCKETS: [f64; 13] = [
        0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
    ];

    /// Builds the pipeline when an OTLP endpoint is configured through the standard
    /// environment variables; `None` when none is (then nothing is recorded at all).
    pub fn from_env() -> Result<Option<Self>, OtelError> {
        let configured = [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        ]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|s| !s.is_empty()));
        if !configured {
            return Ok(None);
        }
        if let Ok(p) = std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL") {
            if p != "http/protobuf" {
                tracing::warn!(protocol = %p, "only OTLP http/protobuf is built in; using it");
            }
        }
        let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "switchyard".into());
        let resource = Resource::builder().with_service_name(service).build();
        let spans = SpanExporter::builder()
            .with_http()
            .build()
            .map_err(|e| OtelError::Exporter(e.to_string()))?;
        let tracer_provider = SdkTracerProvider::builder()
            .with_batch_exporter(spans)
            .with_resource(resource.clone())
            .build();
        let metrics = MetricExporter::builder()
            .with_http()
            .build()
            .map_err(|e| OtelError::Exporter(e.to_string()))?;
        let interval = std::env::var("OTEL_METRIC_EXPORT_INTERVAL")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(Duration::from_secs(60), Duration::from_millis);
        let reader = PeriodicReader::builder(metrics)
            .with_interval(interval)
            .build();
        let meter_provider = SdkMeterProvider::builder()
            .with_reader(reader)
            .with_resource(resource)
            .build();
        let tracer = BoxedTracer::new(Box::new(tracer_provider.tracer("switchyard")));
        let meter = meter_provider.meter("switchyard");
        Ok(Some(Self::with(
            tracer,
            tracer_provider,
            meter_provider,
            &meter,
        )))
    }

    fn with(
        tracer: BoxedTracer,
        tracer_provider: SdkTracerProvider,
        meter_provider: SdkMeterProvider,
        meter: &Meter,
    ) -> Self {
        Otel {
            tracer,
            tracer_provider,
            meter_provider,
            propagator: TraceContextPropagator::new(),
            token_usage: meter
                .u64_histogram("gen_ai.client.token.usage")
                .with_unit("{token}")
                .with_description("Number of input and output tokens used")
                .with_boundaries(Self::TOKEN_BUCKETS.to_vec())
                .build(),
            operation_duration: meter
                .f64_histogram("gen_ai.client.operation.duration")
                .with_unit("s")
                .with_description("GenAI operation duration")
                .with_boundaries(Self::DURATION_BUCKETS.to_vec())
                .build(),
            time_to_first_chunk: meter
                .f64_histogram("gen_ai.client.operation.time_to_first_chunk")
                .with_unit("s")
                .with_description("Time to receive the first chunk of a streamed response")
                .with_boundaries(Self::DURATION_BUCKETS.to_vec())
                .build(),
            time_per_output_chunk: meter
                .f64_histogram("gen_ai.client.operation.time_per_output_chunk")
                .with_unit("s")
                .with_description("Time between chunks of a streamed response, after the first")
                .with_boundaries(Self::PER_CHUNK_BUCKETS.to_vec())
                .build(),
            cost: meter
                .f64_counter("switchyard.gen_ai.cost")
                .with_unit("USD")
                .with_description("Spend computed from usage and the backend's pricing")
                .build(),
        }
    }

    /// Starts the span of a request, continuing the caller's W3C `traceparent` if it sent one.
    pub fn start_request(
        &self,
        headers: &http::HeaderMap,
        operation: &'static str,
    ) -> RequestTrace {
        let parent = self.propagator.extract(&HeaderExtractor(headers));
        let span = self
            .tracer
            .span_builder(operation)
            .with_kind(SpanKind::Server)
            .with_attributes([KeyValue::new("gen_ai.operation.name", operation)])
            .start_with_context(&self.tracer, &parent);
        RequestTrace {
            cx: parent.with_span(span),
        }
    }

    /// Starts the span of one upstream attempt, as a child of the request's.
    pub fn start_attempt(
        &self,
        request: &RequestTrace,
        operation: &'static str,
        provider: &str,
        backend: &str,
        model: &str,
        attempt: u32,
    ) -> AttemptTrace {
        let span = self
            .tracer
            .span_builder(format!("{operation} {model}"))
            .with_kind(SpanKind::Client)
            .with_attributes([
                KeyValue::new("gen_ai.operation.name", operation),
                KeyValue::new("gen_ai.provider.name", provider.to_string()),
                KeyValue::new("gen_ai.request.model", model.to_string()),
                KeyValue::new("switchyard.backend", backend.to_string()),
                KeyValue::new("switchyard.attempt", i64::from(attempt)),
            ])
            .start_with_context(&self.tracer, &request.cx);
        AttemptTrace {
            cx: request.cx.with_span(span),
        }
    }

    /// Writes the attempt's `traceparent` into the upstream request.
    pub fn inject(&self, attempt: &AttemptTrace, headers: &mut http::HeaderMap) {
        self.propagator
            .inject_context(&attempt.cx, &mut HeaderInjector(headers));
    }

    /// Ends an attempt span with its outcome.
    pub fn end_attempt(
        &self,
        attempt: AttemptTrace,
        status: Option<u16>,
        error_type: Option<&str>,
    ) {
        let span = attempt.cx.span();
        if let Some(s) = status {
            span.set_attribute(KeyValue::new("http.response.status_code", i64::from(s)));
        }
        if let Some(e) = error_type {
            span.set_attribute(KeyValue::new("error.type", e.to_string()));
            span.set_status(Status::error(e.to_string()));
        }
        span.end();
    }

    /// Ends the request span and records the GenAI metrics, once per logical request.
    pub fn end_request(&self, trace: RequestTrace, o: &RequestOutcome<'_>) {
        let span = trace.cx.span();
        span.set_attributes([
            KeyValue::new("gen_ai.operation.name", o.operation),
            KeyValue::new("gen_ai.provider.name", o.provider.to_string()),
            KeyValue::new("gen_ai.request.model", o.request_model.to_string()),
        ]);
        if let Some(m) = o.response_model {
            span.set_attribute(KeyValue::new("gen_ai.response.model", m.to_string()));
        }
        let mut common = Self::metric_attributes(o);
        span.set_attributes([
            KeyValue::new("switchyard.route", o.route.to_string()),
            KeyValue::new("switchyard.backend", o.backend.to_string()),
            KeyValue::new("switchyard.consumer", o.consumer.to_string()),
            KeyValue::new("switchyard.attempts", i64::from(o.attempts)),
            KeyValue::new("http.response.status_code", i64::from(o.status)),
        ]);
        if let Some(n) = o.input_tokens {
            span.set_attribute(KeyValue::new("gen_ai.usage.input_tokens", n as i64));
        }
        if let Some(n) = o.output_tokens {
            span.set_attribute(KeyValue::new("gen_ai.usage.output_tokens", n as i64));
        }
        if let Some(f) = o.finish_reason {
            span.set_attribute(KeyValue::new(
                "gen_ai.response.finish_reasons",
                opentelemetry::Value::Array(opentelemetry::Array::String(vec![
                    opentelemetry::StringValue::from(f.to_string()),
                ])),
            ));
        }
        if let Some(e) = o.error_type {
            span.set_attribute(KeyValue::new("error.type", e.to_string()));
            span.set_status(Status::error(e.to_string()));
            common.push(KeyValue::new("error.type", e.to_string()));
        }
        span.end();

        self.operation_duration
            .record(o.duration.as_secs_f64(), &common);
        if o.error_type.is_none() {
            let mut with_type = common.clone();
            with_type.push(KeyValue::new("gen_ai.token.type", "input"));
            if let Some(n) = o.input_tokens {
                self.token_usage.record(n, &with_type);
            }
            if let (Some(n), Some(last)) = (o.output_tokens, with_type.last_mut()) {
                *last = KeyValue::new("gen_ai.token.type", "output");
                self.token_usage.record(n, &with_type);
            }
            if let Some(t) = o.ttfc {
                self.time_to_first_chunk.record(t.as_secs_f64(), &common);
                if let Some(n) = o.output_tokens.filter(|n| *n > 1) {
                    let per = (o.duration.saturating_sub(t)).as_secs_f64() / (n - 1) as f64;
                    self.time_per_output_chunk.record(per, &common);
                }
            }
            if o.cost_usd > 0.0 {
                self.cost.add(o.cost_usd, &common);
            }
        }
    }

    /// The attributes every GenAI metric point of a request carries: only values from the
    /// configuration or fixed vocabularies (operation, provider, the route's configured model),
    /// never a client-supplied string.
    fn metric_attributes(o: &RequestOutcome<'_>) -> Vec<KeyValue> {
        let mut attrs = vec![
            KeyValue::new("gen_ai.operation.name", o.operation),
            KeyValue::new("gen_ai.provider.name", o.provider.to_string()),
        ];
        if !o.model.is_empty() {
            attrs.push(KeyValue::new("gen_ai.request.model", o.model.to_string()));
        }
        attrs
    }

    /// Flushes and stops the exporters.
    pub fn shutdown(&self) {
        if let Err(e) = self.tracer_provider.shutdown() {
            tracing::warn!(error = %e, "flushing spans failed");
        }
        if let Err(e) = self.meter_provider.shutdown() {
            tracing::warn!(error = %e, "flushing metrics failed");
        }
    }
}

/// `gen_ai.provider.name` for a backend: the conventions' well-known value, recognising the
/// vendor behind an OpenAI-compatible endpoint by its host where possible.
pub fn genai_provider_name(provider: &str, endpoint: &str) -> &'static str {
    match provider {
        "openai" => "openai",
        "anthropic" => "anthropic",
        "gemini" => "gcp.gemini",
        "azure-openai" => "azure.ai.openai",
        "bedrock" => "aws.bedrock",
        _ => {
            let host = endpoint
                .split("://")
                .nth(1)
                .and_then(|r| r.split(['/', ':']).next())
                .unwrap_or("");
            let known = [
                ("deepseek", "deepseek"),
                ("mistral", "mistral_ai"),
                ("groq", "groq"),
                ("x.ai", "x_ai"),
                ("perplexity", "perplexity"),
                ("bigmodel", "zhipu"),
                ("z.ai", "zhipu"),
                ("openai.com", "openai"),
            ];
            known
                .iter()
                .find(|(needle, _)| host.contains(needle))
                .map_or("openai", |(_, name)| name)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome<'a>(request_model: &'a str, model: &'a str) -> RequestOutcome<'a> {
        RequestOutcome {
            operation: "chat",
            provider: "openai",
            request_model,
            response_model: Some(request_model),
            model,
            route: "default/r",
            backend: "default/b",
            consumer: "",
            status: 200,
            error_type: None,
            input_tokens: Some(1),
            output_tokens: Some(1),
            finish_reason: None,
            duration: Duration::from_millis(1),
            ttfc: None,
            cost_usd: 0.0,
            attempts: 1,
        }
    }

    #[test]
    fn metric_attributes_never_carry_the_clients_model_string() {
        let raw = "gpt-4o-made-up-by-the-client-7f3a";
        let attrs = Otel::metric_attributes(&outcome(raw, "gpt-*"));
        let shown = format!("{attrs:?}");
        assert!(!shown.contains(raw), "{shown}");
        assert!(attrs
            .iter()
            .any(|kv| kv.key.as_str() == "gen_ai.request.model" && kv.value.as_str() == "gpt-*"));
        assert!(!attrs
            .iter()
            .any(|kv| kv.key.as_str() == "gen_ai.response.model"));
        // No route matched: no model attribute at all.
        let attrs = Otel::metric_attributes(&outcome(raw, ""));
        assert!(!format!("{attrs:?}").contains("gen_ai.request.model"));
    }
}
