//! Metric recording per request: what the gateway's request record writes when a request
//! ends (`crates/gateway/src/record.rs`), with label values taken from a compiled route, into
//! a fresh `switchyard_telemetry::Metrics` registry.
//!
//! It lives beside the router benchmarks because its labels come from the routing table;
//! `switchyard-telemetry` is only a dev-dependency here.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{hint::black_box, time::Duration};

use criterion::{criterion_group, criterion_main, Criterion};
use switchyard_telemetry::{Metrics, RequestLabels, RequestSample};

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
            tokens: [24, 20, 0],
            cost_usd: 0.000_015_6,
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

fn prometheus_registry() -> prometheus::Registry {
    prometheus::Registry::new()
}

criterion_group!(benches, recording);
criterion_main!(benches);
