//! Metric recording per request: what the gateway's request record writes when a request
//! ends (`crates/gateway/src/record.rs`), with label values taken from a compiled route, into
//! a fresh `switchyard_telemetry::Metrics` registry.
//!
//! It lives beside the router benchmarks because its labels come from the routing table;
//! `switchyard-telemetry` is only a dev-dependency here.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{hint::black_box, time::Duration};

use criterion::{criterion_group, criterion_main, Criterion};
use switchyard_telemetry::{AccessLine, AccessLog, Metrics, RequestLabels, RequestSample};

const ROUTE: &str = "default/chat";
const MODEL: &str = "gpt-4o-mini";
const BACKEND: &str = "default/mock";
const PROVIDER: &str = "openai-compatible";
const CONSUMER: &str = "";

/// One finished request, recorded as the gateway's request record does it: count, duration,
/// time to first token for streams, tokens and spend.
fn record(m: &Metrics, stream: bool, elapsed: Duration) {
    let seconds = elapsed.as_secs_f64();
    m.record_request(
        &RequestLabels {
            route: ROUTE,
            model: MODEL,
            backend: BACKEND,
            provider: PROVIDER,
            consumer: CONSUMER,
            status: "200",
        },
        &RequestSample {
            seconds,
            ttft: stream.then_some(seconds / 4.0),
            per_token: stream.then_some(seconds / 80.0),
            tokens: [24, 20, 0, 0],
            cost_usd: 0.000_015_6,
            ..Default::default()
        },
    );
}

fn recording(c: &mut Criterion) {
    let mut g = c.benchmark_group("telemetry/record");
    let m = Metrics::new(prometheus_registry()).expect("metrics");
    let elapsed = Duration::from_micros(850);
    g.bench_function("request", |b| {
        b.iter(|| record(&m, false, black_box(elapsed)))
    });
    g.bench_function("stream", |b| {
        b.iter(|| record(&m, true, black_box(elapsed)))
    });
    // One increment through the family's own label lookup, for scale: `record_request`
    // resolves its series once per thread instead.
    g.bench_function("requests_total_inc", |b| {
        b.iter(|| {
            m.requests
                .with_label_values(black_box(&[
                    ROUTE, MODEL, BACKEND, PROVIDER, CONSUMER, "200",
                ]))
                .inc()
        })
    });
    g.finish();
}

/// The access log line of one streamed request, as the request record fills it.
fn access_line(id: &str) -> AccessLine<'_> {
    AccessLine {
        request_id: id,
        operation: "chat",
        consumer: CONSUMER,
        route: ROUTE,
        requested_model: MODEL,
        upstream_model: "mock-model",
        backend: BACKEND,
        provider: PROVIDER,
        attempts: 1,
        status: 200,
        error: "",
        input_tokens: 24,
        output_tokens: 20,
        cached_input_tokens: 0,
        cache_write_tokens: 0,
        cost_usd: Some(0.000_015_6),
        duration_ms: 12.345_678,
        ttft_ms: Some(1.234_5),
        dropped: None,
        trace_id: None,
    }
}

/// The access log's cost on the request path: formatting the line (`format`) and handing it
/// to the writer thread (`log`, here over a sink that discards, so the writer's own work
/// runs on another thread as in the gateway).
fn access_log(c: &mut Criterion) {
    let mut g = c.benchmark_group("telemetry/access_log");
    let line = access_line("0f8e6c1d-3b1c-4f0e-9a55-2a1c9d1e7b42");
    let mut buf = Vec::with_capacity(512);
    g.bench_function("format", |b| {
        b.iter(|| {
            buf.clear();
            black_box(&line).write_json(std::time::SystemTime::now(), &mut buf);
            buf.len()
        })
    });
    let log = AccessLog::new(&prometheus_registry(), std::io::sink()).expect("access log");
    g.bench_function("log", |b| b.iter(|| log.log(black_box(&line))));
    g.finish();
    log.shutdown();
}

fn prometheus_registry() -> prometheus::Registry {
    prometheus::Registry::new()
}

criterion_group!(benches, recording, access_log);
criterion_main!(benches);
