//! Route lookup and table compile at 10, 1 000 and 10 000 routes, over resources built in
//! code (no YAML parsing in the measured loop). `make bench` runs these and folds the
//! figures into its table; `cargo bench -p switchyard-compile --bench routing` runs them
//! alone. The bench lives here, not in switchyard-router, because it builds its tables from
//! resources, which only this crate (a dependent of the router) can do; its groups keep the
//! `router/` names.
//!
//! Targets: an exact-name lookup costs the same at every size (a hash lookup), and compiling
//! 10 000 routes takes under 50 ms.

// Fixtures are built once and a broken one should stop the run loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::BTreeMap, hint::black_box};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use http::HeaderMap;
use k8s_openapi::{
    api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::ObjectMeta, ByteString,
};
use serde_json::json;
use switchyard_api::{AIRoute, ModelBackend, Resources};
use switchyard_compile::compile;

const SIZES: [usize; 3] = [10, 1_000, 10_000];
/// Glob routes in every table, so lookups that fall through to globs are measured too.
const GLOBS: usize = 10;

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some("default".into()),
        ..ObjectMeta::default()
    }
}

fn secret(name: &str) -> Secret {
    Secret {
        metadata: meta(name),
        data: Some(BTreeMap::from([(
            "apiKey".to_string(),
            ByteString(format!("sk-{name}").into_bytes()),
        )])),
        ..Secret::default()
    }
}

fn backend(name: &str, secret: &str) -> ModelBackend {
    // Specs go through serde so optional fields added later keep their defaults.
    let spec = serde_json::from_value(json!({
        "provider": "openai-compatible",
        "endpoint": "http://127.0.0.1:9/v1",
        "auth": {"secretRef": {"name": secret, "key": "apiKey"}},
        "models": [{"name": "mock-model", "pricing": {"inputPerMillion": "0.15", "outputPerMillion": "0.60"}}],
        "timeouts": {"connect": "2s", "firstByte": "30s"},
    }))
    .expect("backend spec");
    let mut b = ModelBackend::new(name, spec);
    b.metadata.namespace = Some("default".into());
    b
}

fn route(name: &str, model: &str, backend: &str) -> AIRoute {
    let spec = serde_json::from_value(json!({
        "match": {"models": [model]},
        "backends": [{"backendRef": {"name": backend}, "model": "mock-model"}],
        "retry": {"attempts": 2, "on": ["5xx", "connect"], "backoff": "100ms"},
    }))
    .expect("route spec");
    let mut r = AIRoute::new(name, spec);
    r.metadata.namespace = Some("default".into());
    r
}

/// `routes` exact-name routes (`model-<i>`) plus [`GLOBS`] glob routes (`family-<j>-*`),
/// spread over `backends` backends, each with its own Secret.
fn resources(routes: usize, backends: usize) -> Resources {
    let backends = backends.max(1);
    let mut r = Resources::default();
    for b in 0..backends {
        r.secrets.push(secret(&format!("key-{b}")));
        r.backends
            .push(backend(&format!("backend-{b}"), &format!("key-{b}")));
    }
    for i in 0..routes {
        r.routes.push(route(
            &format!("route-{i}"),
            &format!("model-{i}"),
            &format!("backend-{}", i % backends),
        ));
    }
    for j in 0..GLOBS {
        r.routes.push(route(
            &format!("glob-{j}"),
            &format!("family-{j}-*"),
            "backend-0",
        ));
    }
    r
}

fn lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("router/lookup");
    let headers = HeaderMap::new();
    for n in SIZES {
        let compiled = compile(&resources(n, 1), 1);
        assert!(!compiled.has_errors(), "{:?}", compiled.diagnostics);
        let table = compiled.table;
        let hit = format!("model-{}", n / 2);
        assert!(table.route(&hit, &headers, None).is_some());
        g.bench_with_input(BenchmarkId::new("exact", n), &hit, |b, model| {
            b.iter(|| {
                table
                    .route(black_box(model), &headers, None)
                    .map(|m| m.route)
            });
        });
        // Misses every exact name and most globs: the cost of the glob scan.
        let glob_hit = "family-0-large";
        assert!(table.route(glob_hit, &headers, None).is_some());
        g.bench_with_input(BenchmarkId::new("glob", n), glob_hit, |b, model| {
            b.iter(|| {
                table
                    .route(black_box(model), &headers, None)
                    .map(|m| m.route)
            });
        });
    }
    g.finish();
}

fn compile_tables(c: &mut Criterion) {
    let mut g = c.benchmark_group("router/compile");
    g.sample_size(10);
    for n in SIZES {
        g.throughput(Throughput::Elements(n as u64));
        let one_backend = resources(n, 1);
        g.bench_with_input(BenchmarkId::new("routes", n), &one_backend, |b, r| {
            b.iter(|| compile(black_box(r), 1));
        });
        // A platform-sized config: a backend (and Secret) per ten routes.
        let many_backends = resources(n, n / 10);
        g.bench_with_input(
            BenchmarkId::new("routes_backends", n),
            &many_backends,
            |b, r| {
                b.iter(|| compile(black_box(r), 1));
            },
        );
    }
    g.finish();
}

/// Prompt-cache affinity on the request path: the conversation key from a chat body's
/// top-level fields (a 6 KB system prompt, tools, 10 turns), then the plan and key choice by
/// weighted rendezvous over a 3:1 split whose heavier backend has four keys — against the
/// plain weighted plan and key pick. Target: under 2 µs for all of it.
fn affinity(c: &mut Criterion) {
    use switchyard_providers::{affinity, openai, Operation};
    let mut r = Resources::default();
    let keys: BTreeMap<String, ByteString> = (0..4)
        .map(|i| {
            (
                format!("k{i}"),
                ByteString(format!("sk-pool-{i}").into_bytes()),
            )
        })
        .collect();
    r.secrets.push(Secret {
        metadata: meta("pool"),
        data: Some(keys),
        ..Secret::default()
    });
    r.secrets.push(secret("solo"));
    let pool = serde_json::from_value(json!({
        "provider": "openai-compatible",
        "endpoint": "http://127.0.0.1:9/v1",
        "auth": {"keys": (0..4).map(|i| json!({"secretRef": {"name": "pool", "key": format!("k{i}")}})).collect::<Vec<_>>()},
        "models": [{"name": "mock-model", "pricing": {"inputPerMillion": "1"}}],
    }))
    .expect("pool spec");
    let mut pool = ModelBackend::new("pool", pool);
    pool.metadata.namespace = Some("default".into());
    r.backends.push(pool);
    r.backends.push(backend("solo", "solo"));
    let split = serde_json::from_value(json!({
        "match": {"models": ["chat"]},
        "backends": [
            {"backendRef": {"name": "pool"}, "model": "mock-model", "weight": 3},
            {"backendRef": {"name": "solo"}, "model": "mock-model", "weight": 1},
        ],
    }))
    .expect("split spec");
    let mut split = AIRoute::new("split", split);
    split.metadata.namespace = Some("default".into());
    r.routes.push(split);
    let compiled = compile(&r, 1);
    assert!(!compiled.has_errors(), "{:?}", compiled.diagnostics);
    let table = compiled.table;
    let route = table.route("chat", &HeaderMap::new(), None).unwrap().route;
    let mut messages = vec![json!({"role": "system", "content": "You are helpful. ".repeat(350)})];
    for t in 0..10 {
        messages.push(json!({"role": "user", "content": format!("question {t}")}));
        messages.push(json!({"role": "assistant", "content": format!("answer {t}")}));
    }
    let body = serde_json::to_vec(&json!({
        "model": "chat",
        "messages": messages,
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    }))
    .unwrap();
    let req = openai::Request::decode(Operation::ChatCompletions, &body).unwrap();
    let mut g = c.benchmark_group("router/affinity");
    g.bench_function("key_from_prefix", |b| {
        b.iter(|| affinity::from_fields(black_box(&req).raw_fields(), affinity::Source::Prefix))
    });
    let key = affinity::from_fields(req.raw_fields(), affinity::Source::Prefix);
    assert!(key.is_some());
    g.bench_function("plan_and_key", |b| {
        b.iter(|| {
            let plan = route.plan_for(black_box(key));
            matches!(
                plan[0].backend.pick_key_for(key),
                switchyard_router::KeyChoice::Key(_)
            )
        })
    });
    g.bench_function("plan_and_key_without_affinity", |b| {
        b.iter(|| {
            let plan = route.plan_for(black_box(None));
            matches!(
                plan[0].backend.pick_key_for(None),
                switchyard_router::KeyChoice::Key(_)
            )
        })
    });
    g.finish();
}

criterion_group!(benches, lookup, compile_tables, affinity);
criterion_main!(benches);
