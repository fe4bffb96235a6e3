//! Retries, fallbacks, timeouts, key pools, health, picking strategies, reloads and
//! shutdown, end to end through the real binaries and `switchyard-mock`'s fault knobs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use serde_json::{json, Value};
use switchyard_e2e::{Gateway, Mock, RawReply, RawUpstream};

const KEY: &str = "sk-upstream-res";
/// `KEY` in base64 (standard and URL-safe alike).
const KEY_BASE64: &str = "c2stdXBzdHJlYW0tcmVz";

/// A backend on `mock` with extra spec lines (indented two spaces under `spec:`).
fn backend(name: &str, mock: &Mock, spec: &str) -> String {
    backend_at(name, &mock.endpoint(), spec)
}

/// A backend at `endpoint` with extra spec lines.
fn backend_at(name: &str, endpoint: &str, spec: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: {name}-key}}
stringData: {{apiKey: "{KEY}"}}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: {name}}}
spec:
  provider: openai-compatible
  endpoint: {endpoint}
  auth: {{secretRef: {{name: {name}-key, key: apiKey}}}}
  models:
  - {{name: mock-model, pricing: {{inputPerMillion: "1.00", outputPerMillion: "2.00"}}}}
  - {{name: mock-large, pricing: {{inputPerMillion: "5.00", outputPerMillion: "15.00"}}}}
{spec}
---
"#
    )
}

fn route(body: &str) -> String {
    format!("apiVersion: switchyard.dev/v1alpha1\nkind: AIRoute\nmetadata: {{name: r}}\nspec:\n  match: {{models: [m]}}\n{body}\n")
}

fn start(config: &str, extra: &[&str]) -> Gateway {
    Gateway::start(&[("all.yaml", config)], extra)
}

fn chat(stream: bool) -> Value {
    json!({"model": "m", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

async fn call(gw: &Gateway) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .json(&chat(false))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn counter(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn retries_a_500_then_succeeds() {
    let mock = Mock::start(KEY, &[]);
    let cfg = backend("flaky", &mock, "  headers: {set: {x-mock-fail-first: \"2\", x-mock-scenario: retry-500}}")
        + &route("  backends: [{backendRef: {name: flaky}, model: mock-model}]\n  retry: {attempts: 3, on: [\"5xx\"], backoff: 10ms}");
    let gw = start(&cfg, &[]);
    let (status, v) = call(&gw).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(mock.requests().await.len(), 3);
    let m = gw.metrics().await;
    assert_eq!(
        counter(
            &m,
            "switchyard_retries_total{backend=\"default/flaky\",route=\"default/r\"}"
        ),
        2.0,
        "{m}"
    );
    assert_eq!(
        counter(
            &m,
            "switchyard_upstream_errors_total{backend=\"default/flaky\",kind=\"status_5xx\""
        ),
        2.0,
        "{m}"
    );
}

#[tokio::test]
async fn a_429_rests_the_key_and_the_pool_rotates() {
    let mock = Mock::start("sk-good", &["--rate-limited-key", "sk-limited"]);
    let cfg = format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: pool}}
stringData: {{a: sk-limited, b: sk-good}}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: pooled}}
spec:
  provider: openai-compatible
  endpoint: {}
  auth:
    keys:
    - {{secretRef: {{name: pool, key: a}}, weight: 1}}
    - {{secretRef: {{name: pool, key: b}}, weight: 1}}
  models: [{{name: mock-model}}]
---
"#,
        mock.endpoint()
    ) + &route("  backends: [{backendRef: {name: pooled}, model: mock-model}]");
    let gw = start(&cfg, &[]);
    for _ in 0..20 {
        let (status, v) = call(&gw).await;
        assert_eq!(status, 200, "{v}");
    }
    let seen = mock.requests().await;
    let limited = seen
        .iter()
        .filter(|r| r["headers"]["authorization"] == "Bearer sk-limited")
        .count();
    assert!(limited <= 1, "the resting key was used {limited} times");
    let routes: Value = reqwest::get(gw.admin_url("/debug/routes"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keys = &routes["backends"][0]["keys"];
    if limited == 1 {
        assert_eq!(keys[0]["state"], "resting", "{keys}");
    }
    assert_eq!(keys[1]["state"], "healthy", "{keys}");
    assert!(!routes.to_string().contains("sk-good"));
}

#[tokio::test]
async fn a_refused_key_is_disabled_and_reported() {
    let mock = Mock::start("sk-good", &[]);
    let cfg = format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: pool}}
stringData: {{a: sk-revoked, b: sk-good}}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: pooled}}
spec:
  provider: openai-compatible
  endpoint: {}
  auth: {{keys: [{{secretRef: {{name: pool, key: a}}, weight: 100}}, {{secretRef: {{name: pool, key: b}}, weight: 1}}]}}
  models: [{{name: mock-model}}]
---
"#,
        mock.endpoint()
    ) + &route("  backends: [{backendRef: {name: pooled}, model: mock-model}]");
    let gw = start(&cfg, &[]);
    for _ in 0..10 {
        assert_eq!(call(&gw).await.0, 200);
    }
    let routes: Value = reqwest::get(gw.admin_url("/debug/routes"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = &routes["backends"][0]["keys"][0];
    assert_eq!(key["state"], "disabled", "{routes}");
    assert!(key["reason"].as_str().unwrap().contains("401"));
    // Not for good: it is tried again after a minute (doubling on each refusal in a row).
    let secs = key["disabledForSecs"].as_u64().unwrap();
    assert!((1..=60).contains(&secs), "{key}");
    assert!(gw
        .proc
        .output()
        .contains("upstream refused a key as invalid"));
    let revoked = mock
        .requests()
        .await
        .iter()
        .filter(|r| r["headers"]["authorization"] == "Bearer sk-revoked")
        .count();
    assert_eq!(revoked, 1);
}

#[tokio::test]
async fn slow_first_byte_times_out_and_falls_back() {
    let mock = Mock::start(KEY, &[]);
    let cfg = backend("slow", &mock, "  headers: {set: {x-mock-latency-ms: \"3000\"}}\n  timeouts: {firstByte: 200ms}")
        + &backend("fast", &mock, "")
        + &route("  backends: [{backendRef: {name: slow}, model: mock-model}]\n  fallbacks: [{backendRef: {name: fast}, model: mock-large}]");
    let gw = start(&cfg, &[]);
    let t = Instant::now();
    let (status, v) = call(&gw).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["model"], "mock-large");
    assert!(
        t.elapsed() < Duration::from_millis(2500),
        "did not time out: {:?}",
        t.elapsed()
    );
    let m = gw.metrics().await;
    assert_eq!(
        counter(
            &m,
            "switchyard_upstream_errors_total{backend=\"default/slow\",kind=\"timeout\""
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        counter(
            &m,
            "switchyard_fallbacks_total{backend=\"default/fast\",route=\"default/r\"}"
        ),
        1.0,
        "{m}"
    );
}

#[tokio::test]
async fn a_hanging_upstream_hits_the_route_timeout() {
    let mock = Mock::start(KEY, &[]);
    let cfg =
        backend(
            "hang",
            &mock,
            "  headers: {set: {x-mock-latency-ms: \"10000\"}}",
        ) + &route("  backends: [{backendRef: {name: hang}, model: mock-model}]\n  timeout: 300ms");
    let gw = start(&cfg, &[]);
    let t = Instant::now();
    let (status, v) = call(&gw).await;
    assert_eq!(status, 504, "{v}");
    assert_eq!(v["error"]["code"], "route_timeout");
    assert!(t.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn all_backends_failing_gives_a_clear_error() {
    let mock = Mock::start(KEY, &[]);
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let cfg = backend("broken", &mock, "  headers: {set: {x-mock-status: \"500\"}}")
        + &format!(
            "apiVersion: switchyard.dev/v1alpha1\nkind: ModelBackend\nmetadata: {{name: down}}\nspec:\n  provider: openai-compatible\n  endpoint: http://{dead}/v1\n  models: [{{name: mock-model}}]\n---\n"
        )
        + &route("  backends: [{backendRef: {name: broken}, model: mock-model}]\n  fallbacks: [{backendRef: {name: down}, model: mock-model}]");
    let gw = start(&cfg, &[]);
    let (status, v) = call(&gw).await;
    assert_eq!(status, 502, "{v}");
    assert_eq!(v["error"]["type"], "upstream_error");
    assert_eq!(
        v["error"]["code"], "upstream_unreachable",
        "the last failure names its class: {v}"
    );
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("default/down"));
}

#[tokio::test]
async fn outlier_detection_ejects_a_failing_backend() {
    let mock = Mock::start(KEY, &[]);
    let cfg = backend("bad", &mock, "  headers: {set: {x-mock-status: \"503\"}}")
        + &backend("good", &mock, "")
        // Random by weight: with affinity, the identical requests here would all follow
        // their one conversation key to whichever backend it ranks first.
        + &route("  affinity: none\n  backends: [{backendRef: {name: bad}, model: mock-large}, {backendRef: {name: good}, model: mock-model}]");
    let gw = start(&cfg, &[]);
    for _ in 0..40 {
        let (status, v) = call(&gw).await;
        assert_eq!(
            status, 200,
            "the healthy backend should serve every request: {v}"
        );
    }
    let to_bad = mock
        .requests()
        .await
        .iter()
        .filter(|r| r["body"]["model"] == "mock-large")
        .count();
    assert_eq!(
        to_bad, 5,
        "the failing backend should be ejected after 5 failures"
    );
    let m = gw.metrics().await;
    assert!(
        m.contains(
            "switchyard_backend_healthy{backend=\"default/bad\",provider=\"openai-compatible\"} 0"
        ),
        "{m}"
    );
    assert!(
        m.contains(
            "switchyard_backend_healthy{backend=\"default/good\",provider=\"openai-compatible\"} 1"
        ),
        "{m}"
    );
}

#[tokio::test]
async fn max_concurrency_answers_503_instead_of_queueing() {
    let mock = Mock::start(KEY, &["--latency-ms", "600"]);
    let cfg = backend("narrow", &mock, "  maxConcurrency: 1")
        + &route("  backends: [{backendRef: {name: narrow}, model: mock-model}]");
    let gw = start(&cfg, &[]);
    let first = tokio::spawn({
        let url = gw.url("/v1/chat/completions");
        async move {
            reqwest::Client::new()
                .post(url)
                .json(&chat(false))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    });
    // The first request holds the backend's only slot.
    gw.wait_metric(
        "switchyard_backend_in_flight",
        &[r#"backend="default/narrow""#],
        |v| v >= 1.0,
    )
    .await;
    let resp = reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .json(&chat(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "backend_saturated");
    assert_eq!(first.await.unwrap(), 200);
}

#[tokio::test]
async fn least_latency_prefers_the_faster_backend() {
    let mock = Mock::start(KEY, &[]);
    let cfg = backend("slow", &mock, "  headers: {set: {x-mock-latency-ms: \"60\"}}")
        + &backend("fast", &mock, "")
        + &route("  strategy: least-latency\n  backends: [{backendRef: {name: slow}, model: mock-large}, {backendRef: {name: fast}, model: mock-model}]");
    let gw = start(&cfg, &[]);
    let mut by_model: HashMap<String, u32> = HashMap::new();
    for _ in 0..40 {
        let (status, v) = call(&gw).await;
        assert_eq!(status, 200);
        *by_model
            .entry(v["model"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    let fast = by_model.get("mock-model").copied().unwrap_or(0);
    assert!(fast >= 32, "fast backend got {fast}/40: {by_model:?}");
}

#[tokio::test]
async fn cheapest_picks_the_cheaper_model() {
    let mock = Mock::start(KEY, &[]);
    let cfg = backend("b", &mock, "")
        + &route("  strategy: cheapest\n  backends: [{backendRef: {name: b}, model: mock-large}, {backendRef: {name: b}, model: mock-model}]");
    let gw = start(&cfg, &[]);
    for _ in 0..10 {
        let (_, v) = call(&gw).await;
        assert_eq!(v["model"], "mock-model");
    }
}

#[tokio::test]
async fn a_hundred_reloads_under_load_fail_nothing() {
    let mock = Mock::start(KEY, &[]);
    let base = backend("b", &mock, "");
    let gw = start(
        &(base.clone() + &route("  backends: [{backendRef: {name: b}, model: mock-model}]")),
        &["--reload-debounce", "5ms"],
    );
    let url = gw.url("/v1/chat/completions");
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let load = tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut statuses = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !*stop_rx.borrow_and_update() && Instant::now() < deadline && statuses.len() < 100_000
        {
            let resp = client.post(&url).json(&chat(false)).send().await.unwrap();
            statuses.push(resp.status().as_u16());
        }
        statuses
    });
    for i in 0..100 {
        let model = if i % 2 == 0 {
            "mock-large"
        } else {
            "mock-model"
        };
        gw.write_config(
            "all.yaml",
            &(base.clone()
                + &route(&format!(
                    "  backends: [{{backendRef: {{name: b}}, model: {model}}}]"
                ))),
        );
        gw.wait_generation(i + 2).await;
    }
    let _ = stop_tx.send(true);
    let statuses = load.await.unwrap();
    assert!(
        statuses.len() >= 100,
        "only {} requests during the reloads",
        statuses.len()
    );
    let failed: Vec<_> = statuses.iter().filter(|s| **s != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {failed:?}",
        failed.len(),
        statuses.len()
    );
    assert_eq!(gw.generation().await, 101);
}

#[tokio::test]
async fn sigterm_lets_fifty_open_streams_finish() {
    let mock = Mock::start(KEY, &["--chunks", "10", "--chunk-delay-ms", "100"]);
    let cfg = backend("b", &mock, "")
        + &route("  backends: [{backendRef: {name: b}, model: mock-model}]");
    let mut gw = start(&cfg, &["--drain-timeout", "20s"]);
    let client = reqwest::Client::new();
    let (started_tx, mut started_rx) = tokio::sync::mpsc::channel::<()>(64);
    let mut streams = Vec::new();
    for _ in 0..50 {
        let req = client
            .post(gw.url("/v1/chat/completions"))
            .json(&chat(true));
        let started = started_tx.clone();
        streams.push(tokio::spawn(async move {
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 200);
            let mut body = resp.bytes_stream();
            let mut all = Vec::new();
            let mut signalled = false;
            while let Some(chunk) = body.next().await {
                all.extend_from_slice(&chunk.unwrap());
                if !signalled {
                    let _ = started.send(()).await;
                    signalled = true;
                }
            }
            String::from_utf8(all).unwrap()
        }));
    }
    for _ in 0..50 {
        tokio::time::timeout(Duration::from_secs(10), started_rx.recv())
            .await
            .unwrap()
            .unwrap();
    }
    gw.proc.terminate();
    // Readiness turns false while the streams drain, and the admin port answers until they
    // have (it closes after the API listener).
    gw.wait_log("shutting down: readiness false").await;
    let ready = reqwest::get(gw.admin_url("/readyz"))
        .await
        .expect("the admin port serves while streams drain");
    assert_eq!(ready.status(), 503);
    for s in streams {
        let body = s.await.unwrap();
        assert!(
            body.trim_end().ends_with("data: [DONE]"),
            "a stream was cut: {body}"
        );
    }
    assert_eq!(gw.proc.wait_exit(Duration::from_secs(10)), Some(0));
}

#[tokio::test]
async fn primary_down_falls_back_to_another_provider_translated() {
    let mock = Mock::start(KEY, &[]);
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let cfg = format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: k}}
stringData: {{apiKey: "{KEY}"}}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: openai-down}}
spec:
  provider: openai-compatible
  endpoint: http://{dead}/v1
  auth: {{secretRef: {{name: k, key: apiKey}}}}
  models: [{{name: mock-model}}]
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: claude}}
spec:
  provider: anthropic
  endpoint: http://{addr}
  auth: {{secretRef: {{name: k, key: apiKey}}}}
  models: [{{name: claude-mock}}]
---
"#,
        addr = mock.addr
    ) + &route("  backends: [{backendRef: {name: openai-down}, model: mock-model}]\n  fallbacks: [{backendRef: {name: claude}, model: claude-mock}]");
    let gw = start(&cfg, &[]);
    let (status, v) = call(&gw).await;
    assert_eq!(status, 200, "{v}");
    // The caller speaks OpenAI and gets OpenAI's shape back from an Anthropic upstream.
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "claude-mock");
    assert!(v["choices"][0]["message"]["content"]
        .as_str()
        .is_some_and(|c| !c.is_empty()));
    let seen = mock.requests().await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["path"], "/v1/messages");
    assert_eq!(seen[0]["headers"]["x-api-key"], KEY);
    let m = gw.metrics().await;
    assert_eq!(
        counter(
            &m,
            "switchyard_fallbacks_total{backend=\"default/claude\",route=\"default/r\"}"
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        counter(
            &m,
            "switchyard_upstream_errors_total{backend=\"default/openai-down\",kind=\"connect\""
        ),
        1.0,
        "{m}"
    );
}

/// Gemini's rate limit (429 RESOURCE_EXHAUSTED, in Google's error shape) rests the key and the
/// pool moves on at once; when the only key is refused (Gemini's 400 API_KEY_INVALID), the
/// route falls back to another provider, and the caller never sees Gemini's shapes.
#[tokio::test]
async fn gemini_rate_limits_and_refused_keys_act_like_any_provider() {
    let mock = Mock::start("sk-good", &["--rate-limited-key", "sk-limited"]);
    let cfg = format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: pool}}
stringData: {{a: sk-limited, b: sk-good, bad: sk-nope}}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: gemini-pool}}
spec:
  provider: gemini
  endpoint: http://{addr}
  auth:
    keys:
    - {{secretRef: {{name: pool, key: a}}, weight: 1}}
    - {{secretRef: {{name: pool, key: b}}, weight: 1}}
  models: [{{name: gemini-mock}}]
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: gemini-refused}}
spec:
  provider: gemini
  endpoint: http://{addr}
  auth: {{secretRef: {{name: pool, key: bad}}}}
  models: [{{name: gemini-mock}}]
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: oai}}
spec:
  provider: openai-compatible
  endpoint: http://{addr}/v1
  auth: {{secretRef: {{name: pool, key: b}}}}
  models: [{{name: mock-model}}]
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {{name: refused}}
spec:
  match: {{models: [refused]}}
  backends: [{{backendRef: {{name: gemini-refused}}, model: gemini-mock}}]
  fallbacks: [{{backendRef: {{name: oai}}, model: mock-model}}]
---
"#,
        addr = mock.addr
    ) + &route("  backends: [{backendRef: {name: gemini-pool}, model: gemini-mock}]");
    let gw = start(&cfg, &[]);
    for stream in [false, true, false, true, false, true] {
        let resp = reqwest::Client::new()
            .post(gw.url("/v1/chat/completions"))
            .json(&chat(stream))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.text().await.unwrap();
        if stream {
            assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
            assert!(body.contains("chat.completion.chunk"), "{body}");
        } else {
            let v: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["model"], "gemini-mock", "{v}");
        }
    }
    let seen = mock.requests().await;
    let limited = seen
        .iter()
        .filter(|r| r["headers"]["x-goog-api-key"] == "sk-limited")
        .count();
    assert!(limited <= 1, "the resting key was used {limited} times");

    let resp = reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .json(&json!({"model": "refused", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["model"], "mock-model");
    let routes: Value = reqwest::get(gw.admin_url("/debug/routes"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let refused = routes["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "default/gemini-refused")
        .unwrap();
    assert_eq!(refused["keys"][0]["state"], "disabled", "{refused}");
}

/// Another AIRoute, `name`, for the model `model`.
fn named_route(name: &str, model: &str, body: &str) -> String {
    format!("---\napiVersion: switchyard.dev/v1alpha1\nkind: AIRoute\nmetadata: {{name: {name}}}\nspec:\n  match: {{models: [{model}]}}\n{body}\n")
}

/// A backend of `provider` on the mock's root (Anthropic's endpoint has no `/v1`).
fn provider_backend(name: &str, provider: &str, mock: &Mock, models: &str, spec: &str) -> String {
    let endpoint = match provider {
        "anthropic" => format!("http://{}", mock.addr),
        _ => mock.endpoint(),
    };
    format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: {name}-key}}
stringData: {{apiKey: "{KEY}"}}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: {name}}}
spec:
  provider: {provider}
  endpoint: {endpoint}
  auth: {{secretRef: {{name: {name}-key, key: apiKey}}}}
  models: [{models}]
{spec}
---
"#
    )
}

async fn post(gw: &Gateway, path: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap()
        .post(gw.url(path))
        .json(body)
        .send()
        .await
        .unwrap()
}

fn messages(model: &str, stream: bool) -> Value {
    json!({"model": model, "max_tokens": 64, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

/// A reset, an EOF or an answer that is not HTTP, before any response header, is a failure
/// to reach the backend: the route moves on to its fallback, and the attempt is counted.
#[tokio::test]
async fn no_answer_before_the_headers_falls_back() {
    let mock = Mock::start(KEY, &[]);
    for (what, reply) in [
        ("reset", RawReply::Reset),
        ("eof", RawReply::Close),
        (
            "garbage",
            RawReply::Bytes(b"HTTP/1.1 two hundred\r\nnonsense\r\n\r\n".to_vec()),
        ),
    ] {
        let raw = RawUpstream::start(vec![reply]).await;
        let cfg = backend_at("broken", &raw.endpoint(), "")
            + &backend("good", &mock, "")
            + &route("  backends: [{backendRef: {name: broken}, model: mock-model}]\n  fallbacks: [{backendRef: {name: good}, model: mock-large}]");
        let gw = start(&cfg, &[]);
        let (status, v) = call(&gw).await;
        assert_eq!(status, 200, "{what}: {v}");
        assert_eq!(v["model"], "mock-large", "{what}");
        assert_eq!(raw.connections(), 1, "{what}");
        let m = gw.metrics().await;
        assert_eq!(
            counter(
                &m,
                "switchyard_upstream_errors_total{backend=\"default/broken\",kind=\"protocol\""
            ),
            1.0,
            "{what}: {m}"
        );
        assert_eq!(
            counter(
                &m,
                "switchyard_fallbacks_total{backend=\"default/good\",route=\"default/r\"}"
            ),
            1.0,
            "{what}: {m}"
        );
    }
}

/// A backend that resets connections is retried like one that refuses them, and ejected
/// after five failures in a row like one answering 500.
#[tokio::test]
async fn a_resetting_backend_is_retried_and_ejected() {
    let raw = RawUpstream::start(vec![
        RawReply::Reset,
        RawReply::Close,
        RawReply::chat_ok("raw-model"),
    ])
    .await;
    let cfg = backend_at("flaky", &raw.endpoint(), "")
        + &route("  backends: [{backendRef: {name: flaky}, model: mock-model}]\n  retry: {attempts: 3, on: [connect], backoff: 10ms}");
    let gw = start(&cfg, &[]);
    let (status, v) = call(&gw).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["model"], "raw-model");
    assert_eq!(raw.connections(), 3);
    let m = gw.metrics().await;
    assert_eq!(
        counter(
            &m,
            "switchyard_retries_total{backend=\"default/flaky\",route=\"default/r\"}"
        ),
        2.0,
        "{m}"
    );

    let mock = Mock::start(KEY, &[]);
    let raw = RawUpstream::start(vec![RawReply::Reset]).await;
    let cfg = backend_at("bad", &raw.endpoint(), "")
        + &backend("good", &mock, "")
        // Random by weight, as above.
        + &route("  affinity: none\n  backends: [{backendRef: {name: bad}, model: mock-large}, {backendRef: {name: good}, model: mock-model}]");
    let gw = start(&cfg, &[]);
    for _ in 0..40 {
        let (status, v) = call(&gw).await;
        assert_eq!(status, 200, "the other backend serves every request: {v}");
    }
    assert_eq!(
        raw.connections(),
        5,
        "the resetting backend is ejected after 5 failures"
    );
    let m = gw.metrics().await;
    assert!(
        m.contains(
            "switchyard_backend_healthy{backend=\"default/bad\",provider=\"openai-compatible\"} 0"
        ),
        "{m}"
    );
}

/// A 200 whose body is not the JSON the format promises is the upstream's failure: the
/// fallback serves the request, or the caller gets a 502 naming the backend.
#[tokio::test]
async fn a_malformed_200_is_an_upstream_failure() {
    let mock = Mock::start(KEY, &[]);
    let broken = "  headers: {set: {x-mock-fault: malformed-json}}";
    let cfg = backend("broken", &mock, broken)
        + &backend("good", &mock, "")
        + &provider_backend("claude-broken", "anthropic", &mock, "{name: claude-mock}", broken)
        + &route("  backends: [{backendRef: {name: broken}, model: mock-model}]\n  fallbacks: [{backendRef: {name: good}, model: mock-large}]")
        + &named_route("alone", "alone", "  backends: [{backendRef: {name: broken}, model: mock-model}]")
        + &named_route("claude", "claude", "  backends: [{backendRef: {name: claude-broken}, model: claude-mock}]");
    let gw = start(&cfg, &[]);
    let (status, v) = call(&gw).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["model"], "mock-large");

    let resp = post(
        &gw,
        "/v1/chat/completions",
        &json!({"model": "alone", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(resp.status(), 502);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "upstream_error", "{v}");
    assert_eq!(v["error"]["code"], "upstream_invalid_response", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("default/broken"),
        "{v}"
    );

    // Anthropic to Anthropic passes bodies through unparsed, and checks them all the same.
    let resp = post(&gw, "/v1/messages", &messages("claude", false)).await;
    assert_eq!(resp.status(), 502);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "api_error", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("default/claude-broken"),
        "{v}"
    );
    let m = gw.metrics().await;
    assert_eq!(
        counter(
            &m,
            "switchyard_upstream_errors_total{backend=\"default/broken\",kind=\"invalid_response\""
        ),
        2.0,
        "{m}"
    );
}

/// A stream that ends cleanly but early (no finish reason, no `[DONE]` / `message_stop`) is
/// an error: each caller gets its format's error event, never a made-up ending.
#[tokio::test]
async fn a_stream_cut_short_ends_in_an_error_event() {
    let mock = Mock::start(KEY, &[]);
    let cut = "  headers: {set: {x-mock-reset-after: \"2\", x-mock-fault: truncate-stream}}";
    let cfg = backend("oai", &mock, cut)
        + &provider_backend("claude", "anthropic", &mock, "{name: claude-mock}", cut)
        + &route("  backends: [{backendRef: {name: oai}, model: mock-model}]")
        + &named_route(
            "c",
            "c",
            "  backends: [{backendRef: {name: claude}, model: claude-mock}]",
        );
    let gw = start(&cfg, &[]);
    for (path, model, anthropic_caller) in [
        ("/v1/chat/completions", "m", false),
        ("/v1/chat/completions", "c", false),
        ("/v1/messages", "c", true),
        ("/v1/messages", "m", true),
    ] {
        let body = if anthropic_caller {
            messages(model, true)
        } else {
            json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "hi"}]})
        };
        let resp = post(&gw, path, &body).await;
        assert_eq!(resp.status(), 200);
        let text = resp.text().await.unwrap();
        let what = format!("{path} {model}: {text}");
        assert!(text.contains("upstream_stream_truncated"), "{what}");
        if anthropic_caller {
            assert!(text.contains("event: error"), "{what}");
            assert!(!text.contains("message_stop"), "{what}");
            assert!(!text.contains("end_turn"), "{what}");
        } else {
            assert!(!text.contains("[DONE]"), "{what}");
            assert!(!text.contains("\"finish_reason\":\"stop\""), "{what}");
            let last = text.trim_end().rsplit("\n\n").next().unwrap();
            let v: Value = serde_json::from_str(last.strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(v["error"]["type"], "upstream_error", "{what}");
        }
    }
    // A Responses caller gets the API's `error` event, never `response.completed`.
    let resp = post(
        &gw,
        "/v1/responses",
        &json!({"model": "m", "input": "hi", "stream": true}),
    )
    .await;
    let text = resp.text().await.unwrap();
    assert!(text.contains("upstream_stream_truncated"), "{text}");
    assert!(!text.contains("response.completed"), "{text}");
    let m = gw.metrics().await;
    assert_eq!(
        counter(
            &m,
            "switchyard_upstream_errors_total{backend=\"default/oai\",kind=\"stream_truncated\""
        ),
        3.0,
        "{m}"
    );
    assert_eq!(
        counter(
            &m,
            "switchyard_upstream_errors_total{backend=\"default/claude\",kind=\"stream_truncated\""
        ),
        2.0,
        "{m}"
    );
}

/// Providers that quote the key they were given in an error message never get it to the
/// caller or into the log: every form of the backend's key is redacted.
#[tokio::test]
async fn upstream_error_text_never_carries_the_key() {
    let mock = Mock::start(KEY, &[]);
    let cfg = backend(
        "caller-error",
        &mock,
        "  headers: {set: {x-mock-status: \"400\", x-mock-fault: echo-key}}",
    ) + &backend(
        "server-error",
        &mock,
        "  headers: {set: {x-mock-status: \"500\", x-mock-fault: echo-key}}",
    ) + &provider_backend(
        "claude",
        "anthropic",
        &mock,
        "{name: claude-mock}",
        "  headers: {set: {x-mock-status: \"400\", x-mock-fault: echo-key}}",
    ) + &route("  backends: [{backendRef: {name: caller-error}, model: mock-model}]")
        + &named_route(
            "five",
            "five",
            "  backends: [{backendRef: {name: server-error}, model: mock-model}]",
        )
        + &named_route(
            "c",
            "c",
            "  backends: [{backendRef: {name: claude}, model: claude-mock}]",
        );
    let gw = start(&cfg, &[]);
    for (path, body, status) in [
        ("/v1/chat/completions", chat(false), 400),
        (
            "/v1/chat/completions",
            json!({"model": "five", "messages": [{"role": "user", "content": "hi"}]}),
            502,
        ),
        ("/v1/messages", messages("c", false), 400),
        (
            "/v1/chat/completions",
            json!({"model": "c", "messages": [{"role": "user", "content": "hi"}]}),
            400,
        ),
    ] {
        let resp = post(&gw, path, &body).await;
        assert_eq!(resp.status().as_u16(), status);
        let text = resp.text().await.unwrap();
        assert!(!text.contains(KEY) && !text.contains(KEY_BASE64), "{text}");
        assert!(text.contains("[redacted]"), "{text}");
    }
    // What the mock received shows the key was sent, and echoed.
    assert!(mock
        .requests()
        .await
        .iter()
        .any(|r| r.to_string().contains(KEY)));
    gw.wait_log("request failed").await;
    let log = gw.proc.output();
    assert!(!log.contains(KEY) && !log.contains(KEY_BASE64), "{log}");
}

/// A 403 the caller provokes (a model the key has no access to) is the caller's error for
/// that request: no key of the pool is taken out of service.
#[tokio::test]
async fn a_403_the_caller_provokes_leaves_the_keys_in_service() {
    let mock = Mock::start(
        "sk-a",
        &["--api-key", "sk-b", "--forbidden-model", "mock-secret"],
    );
    let cfg = format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: pool}}
stringData: {{a: sk-a, b: sk-b}}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {{name: pooled}}
spec:
  provider: openai-compatible
  endpoint: {}
  auth: {{keys: [{{secretRef: {{name: pool, key: a}}}}, {{secretRef: {{name: pool, key: b}}}}]}}
  models: [{{name: mock-model}}, {{name: mock-secret}}]
---
"#,
        mock.endpoint()
    ) + &route("  backends: [{backendRef: {name: pooled}, model: mock-model}]")
        + &named_route(
            "secret",
            "secret",
            "  backends: [{backendRef: {name: pooled}, model: mock-secret}]",
        );
    let gw = start(&cfg, &[]);
    for _ in 0..3 {
        let resp = post(
            &gw,
            "/v1/chat/completions",
            &json!({"model": "secret", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
        assert_eq!(resp.status(), 403);
        let v: Value = resp.json().await.unwrap();
        // The upstream's refusal of this request, relayed with its status and code.
        assert_eq!(v["error"]["code"], "model_not_found", "{v}");
        assert_eq!(v["error"]["type"], "upstream_error", "{v}");
    }
    let to_secret = mock
        .requests()
        .await
        .iter()
        .filter(|r| r["body"]["model"] == "mock-secret")
        .count();
    assert_eq!(
        to_secret, 3,
        "a refusal of the request is not retried with another key"
    );
    let routes: Value = reqwest::get(gw.admin_url("/debug/routes"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keys = &routes["backends"][0]["keys"];
    assert_eq!(keys[0]["state"], "healthy", "{keys}");
    assert_eq!(keys[1]["state"], "healthy", "{keys}");
    let (status, v) = call(&gw).await;
    assert_eq!(status, 200, "{v}");
}

/// A body that stops halfway (a 500's or a 200's) is bounded by the backend's idle timeout,
/// and the route moves on to its fallback.
#[tokio::test]
async fn a_stalled_body_is_bounded_by_the_idle_timeout() {
    let mock = Mock::start(KEY, &[]);
    let cfg = backend("stall500", &mock, "  headers: {set: {x-mock-status: \"500\", x-mock-fault: stall-body}}\n  timeouts: {idle: 300ms}")
        + &backend("stall200", &mock, "  headers: {set: {x-mock-fault: stall-body}}\n  timeouts: {idle: 300ms}")
        + &backend("good", &mock, "")
        + &route("  backends: [{backendRef: {name: stall500}, model: mock-model}]\n  fallbacks: [{backendRef: {name: good}, model: mock-large}]")
        + &named_route("s200", "s200", "  backends: [{backendRef: {name: stall200}, model: mock-model}]\n  fallbacks: [{backendRef: {name: good}, model: mock-large}]");
    let gw = start(&cfg, &[]);
    for model in ["m", "s200"] {
        let t = Instant::now();
        let resp = post(
            &gw,
            "/v1/chat/completions",
            &json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
        assert_eq!(resp.status(), 200, "{model}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["model"], "mock-large", "{model}");
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{model}: {:?}",
            t.elapsed()
        );
    }
    let m = gw.metrics().await;
    for b in ["stall500", "stall200"] {
        assert_eq!(
            counter(
                &m,
                &format!(
                    "switchyard_upstream_errors_total{{backend=\"default/{b}\",kind=\"timeout\""
                )
            ),
            1.0,
            "{b}: {m}"
        );
    }
}

/// `Retry-After: NaN` (or any value no duration holds) is ignored, never a crash.
#[tokio::test]
async fn a_nonsense_retry_after_is_ignored() {
    let limited = r#"{"error":{"message":"Rate limit reached","type":"rate_limit_error","code":"rate_limit_exceeded"}}"#;
    for header in [
        "retry-after: NaN",
        "retry-after: inf",
        "retry-after: 1e400",
        "retry-after-ms: NaN",
        "retry-after: -5",
    ] {
        let raw = RawUpstream::start(vec![RawReply::json(
            "429 Too Many Requests",
            &[header],
            limited,
        )])
        .await;
        let cfg = backend_at("limited", &raw.endpoint(), "")
            + &route("  backends: [{backendRef: {name: limited}, model: mock-model}]");
        let gw = start(&cfg, &[]);
        let resp = post(&gw, "/v1/chat/completions", &chat(false)).await;
        assert_eq!(resp.status(), 429, "{header}");
        if let Some(v) = resp.headers().get("retry-after") {
            let v = v.to_str().unwrap();
            assert!(v.parse::<u64>().is_ok(), "{header}: relayed as {v}");
        }
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], "rate_limit_exceeded", "{header}: {v}");
        assert!(!gw.proc.output().contains("panicked"), "{header}");
    }
}

/// A client that stops reading a stream gives the backend's concurrency slot back after the
/// idle timeout: the stream is ended, logged and counted.
#[tokio::test]
async fn a_client_that_stops_reading_gives_back_the_slot() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mock = Mock::start(KEY, &[]);
    let cfg = backend(
        "narrow",
        &mock,
        "  maxConcurrency: 1\n  timeouts: {idle: 1s}\n  headers: {set: {x-mock-chunks: \"65536\"}}",
    ) + &route("  backends: [{backendRef: {name: narrow}, model: mock-model}]");
    let gw = start(&cfg, &[]);
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(gw.addr).await.unwrap();
    let body = chat(true).to_string();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        gw.addr,
        body.len()
    );
    stalled.write_all(head.as_bytes()).await.unwrap();
    stalled.write_all(body.as_bytes()).await.unwrap();
    let mut first = [0u8; 512];
    let n = stalled.read(&mut first).await.unwrap();
    assert!(
        first[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&first[..n])
    );
    // The stream holds the only slot while the client reads nothing more.
    gw.wait_metric(
        "switchyard_backend_in_flight",
        &[r#"backend="default/narrow""#],
        |v| v >= 1.0,
    )
    .await;
    assert_eq!(call(&gw).await.0, 503);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, v) = call(&gw).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{v}");
        assert!(Instant::now() < deadline, "the slot was never given back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let m = gw.metrics().await;
    assert_eq!(
        counter(
            &m,
            "switchyard_upstream_errors_total{backend=\"default/narrow\",kind=\"client_stalled\""
        ),
        1.0,
        "{m}"
    );
    assert!(
        gw.proc.output().contains("stopped reading"),
        "{}",
        gw.proc.output()
    );
    drop(stalled);
}
