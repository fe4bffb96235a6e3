//! Metric recording per request: what the gateway's request record writes when a request
//! ends (`crates/gateway/src/record.rs`), with label values taken from a compiled route, into
//! a fresh `switchyard_telemetry::Metrics` registry.
//!
//! It lives beside the router benchmarks because its labels come from the routing table;
//! `switchyard-telemetry` is only a dev-dependency here.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{hint::black_box, time::Duration};

use criterion::{criterion_group, criterion_main, Criterion};
use switchyard_telemetry::Metrics;

const ROUTE: &str = "default/chat";
const MODEL: &str = "gpt-4o-mini";
const BACKEND: &str = "default/mock";
const PROVIDER: &str = "openai-compatible";
const CONSUMER: &str = "";

/// One finished request, recorded the way the gateway does it: count, duration, time to
/// first token for streams, three token counters and spend.
fn record(m: &Metrics, stream: bool, elapsed: Duration) {
    let status = "200";
    m.requests
        .with_label_values(&[ROUTE, MODEL, BACKEND, PROVIDER, CONSUMER, status])
        .inc();
    m.request_duration
        .with_label_values(&[ROUTE, MODEL, BACKEND, status])
        .observe(elapsed.as_secs_f64());
    if stream {
        m.time_to_first_token
            .with_label_values(&[ROUTE, MODEL, BACKEND])
            .observe(elapsed.as_secs_f64() / 4.0);
    }
    for (kind, n) in [("input", 24u64), ("output", 20), ("cached_input", 0)] {
        if n > 0 {
            m.tokens
                .with_label_values(&[ROUTE, MODEL, BACKEND, PROVIDER, CONSUMER, kind])
                .inc_by(n);
        }
    }
    m.spend_usd
        .with_label_values(&[ROUTE, MODEL, BACKEND, CONSUMER])
        .inc_by(0.000_015_6);
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
    // One increment alone, for scale: the label lookup dominates every line above.
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
