//! The budget reservation on the request path, kept in this process (no Redis): the most a
//! request can cost (its bytes as input tokens and its output cap at the route's highest
//! prices), admission reserving it on the consumer's own budget and on a shared AIBudget
//! together with the request and token windows, and settling to the real cost when the
//! request ends. Issue #22's target: under 2 µs for all of it.
//!
//! `admit` is async (it may ask Redis); without Redis it never waits, and each iteration
//! drives it with a current-thread runtime's `block_on`, whose own cost is the
//! `block_on_ready` row (subtract it). With Redis the same work is one script call, a
//! round trip that dominates; that is measured end to end by tests/python/test_budgets.py,
//! not here.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::HashMap, hint::black_box, sync::Arc};

use criterion::{criterion_group, criterion_main, Criterion};
use http::HeaderMap;
use switchyard_gateway::admit::{Limits, SettleTarget};
use switchyard_providers::Usage;
use switchyard_router::budget::{max_cost_micro_usd, output_cap, reserve_prices};
use switchyard_telemetry::Metrics;

const CONFIG: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: keys}
stringData: {caller: sk-caller-1, up: sk-up-1}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {name: primary}
spec:
  provider: openai
  endpoint: http://127.0.0.1:9/v1
  auth: {secretRef: {name: keys, key: up}}
  models: [{name: m, pricing: {inputPerMillion: "1", outputPerMillion: "3"}}]
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {name: fallback}
spec:
  provider: openai
  endpoint: http://127.0.0.1:9/v1
  auth: {secretRef: {name: keys, key: up}}
  models: [{name: m, pricing: {inputPerMillion: "2", outputPerMillion: "6"}}]
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {name: r}
spec:
  match: {models: [chat]}
  backends: [{backendRef: {name: primary}, model: m}]
  fallbacks: [{backendRef: {name: fallback}, model: m}]
---
apiVersion: switchyard.dev/v1alpha1
kind: AIBudget
metadata: {name: team}
spec: {usd: "1000000", period: month}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIConsumer
metadata: {name: c}
spec:
  keySecretRef: {name: keys, key: caller}
  budget: {usd: "1000000", period: day}
  budgetRef: {name: team}
  limits: {requestsPerMinute: 1000000000, tokensPerMinute: 1000000000000}
"#;

fn reservation(c: &mut Criterion) {
    let mut r = switchyard_api::Resources::default();
    let errs = r.parse_yaml("bench.yaml", CONFIG, &HashMap::<String, String>::new());
    assert!(errs.is_empty(), "{errs:?}");
    let compiled = switchyard_compile::compile(&r, 1);
    assert!(!compiled.has_errors(), "{:?}", compiled.diagnostics);
    let table = compiled.table;
    let consumer = table.consumers().iter().next().expect("a consumer");
    let route = table
        .route("chat", &HeaderMap::new(), None)
        .expect("the route")
        .route;
    let metrics = Arc::new(Metrics::new(prometheus::Registry::new()).unwrap());
    let limits = Arc::new(Limits::local(metrics));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let model: Arc<str> = Arc::from("m");
    let usage = Usage {
        input_tokens: 1_200,
        output_tokens: 300,
        cached_input_tokens: 0,
        cache_write_tokens: 0,
    };
    // A 6 KB body asking for up to 1 024 output tokens.
    let (body_bytes, max_tokens) = (6_000u64, Some(1_024));

    let mut g = c.benchmark_group("gateway/reservation");
    g.bench_function("block_on_ready", |b| {
        b.iter(|| rt.block_on(async { black_box(1u64) }))
    });
    g.bench_function("max_cost", |b| {
        b.iter(|| {
            max_cost_micro_usd(
                black_box(body_bytes),
                output_cap(route, black_box(max_tokens)),
                reserve_prices(route),
            )
        })
    });
    g.bench_function("reserve_and_settle", |b| {
        b.iter(|| {
            let max = max_cost_micro_usd(
                body_bytes,
                output_cap(route, max_tokens),
                reserve_prices(route),
            );
            let admitted = rt
                .block_on(limits.admit(consumer, body_bytes / 4 + 1_024, max))
                .expect("admitted");
            limits.settle(
                SettleTarget::new(consumer, Arc::clone(&model)),
                admitted,
                Some(usage),
                black_box(2_100),
            );
        })
    });
    g.finish();
}

criterion_group!(benches, reservation);
criterion_main!(benches);
