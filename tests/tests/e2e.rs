//! End-to-end tests through the real binaries.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use switchyard_e2e::{backend_yaml, route_yaml, Gateway, Mock};

const KEY: &str = "sk-upstream-e2e";

fn standard(mock: &Mock) -> Vec<(&'static str, String)> {
    vec![
        (
            "backend.yaml",
            backend_yaml("mock", &mock.endpoint(), KEY, ""),
        ),
        (
            "routes.yaml",
            [
                route_yaml("chat", &["gpt-4o-mini"], "mock", "mock-model"),
                route_yaml("family", &["gpt-*"], "mock", "mock-large"),
                route_yaml("embed", &["text-embedding-3-small"], "mock", "mock-embed"),
            ]
            .join("---\n"),
        ),
    ]
}

fn start(mock: &Mock, extra: &[&str]) -> Gateway {
    let files = standard(mock);
    let refs: Vec<(&str, &str)> = files.iter().map(|(n, t)| (*n, t.as_str())).collect();
    Gateway::start(&refs, extra)
}

fn chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "Say hello to the gateway"}]})
}

async fn post(gw: &Gateway, path: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(gw.url(path))
        .bearer_auth("caller-own-key")
        .json(body)
        .send()
        .await
        .unwrap()
}

/// Reads an SSE body, returning each `data:` payload with its arrival time.
async fn sse_events(resp: reqwest::Response) -> Vec<(Instant, String)> {
    let mut out = Vec::new();
    let mut buf = String::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(pos) = buf.find("\n\n") {
            let event: String = buf.drain(..pos + 2).collect();
            for line in event.lines() {
                if let Some(d) = line.strip_prefix("data: ") {
                    out.push((Instant::now(), d.to_string()));
                }
            }
        }
    }
    assert!(buf.trim().is_empty(), "incomplete event at end: {buf:?}");
    out
}

fn assert_openai_error(v: &Value, code: &str, type_: &str) {
    assert_eq!(v["error"]["code"], code, "{v}");
    assert_eq!(v["error"]["type"], type_, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
}

#[tokio::test]
async fn chat_completion_rewrites_model_and_injects_upstream_key() {
    let mock = Mock::start(KEY, &["--chunks", "4"]);
    let gw = start(&mock, &[]);
    let resp = post(&gw, "/v1/chat/completions", &chat("gpt-4o-mini", false)).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("x-request-id"));
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "mock-model");
    assert!(
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .len()
            > 3
    );
    assert_eq!(v["usage"]["completion_tokens"], 4);

    let seen = mock.requests().await;
    assert_eq!(seen.len(), 1);
    let up = &seen[0];
    assert_eq!(up["path"], "/v1/chat/completions");
    assert_eq!(up["body"]["model"], "mock-model");
    assert_eq!(up["headers"]["authorization"], format!("Bearer {KEY}"));
    let all = up.to_string();
    assert!(
        !all.contains("caller-own-key"),
        "caller credentials leaked upstream: {all}"
    );

    // Glob route, other rewrite.
    let v: Value = post(&gw, "/v1/chat/completions", &chat("gpt-5-anything", false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["model"], "mock-large");

    // Metrics carry route, model pattern, backend and status.
    let m = gw.metrics().await;
    assert!(m.contains(r#"switchyard_requests_total{backend="default/mock",consumer="",model="gpt-4o-mini",provider="openai-compatible",route="default/chat",status="200"} 1"#), "{m}");
    assert!(m.contains(r#"model="gpt-*""#), "glob label missing: {m}");
    assert!(m.contains(r#"switchyard_tokens_total{backend="default/mock",consumer="",model="gpt-4o-mini",provider="openai-compatible",route="default/chat",type="output"} 4"#), "{m}");
    assert!(
        m.contains("switchyard_request_duration_seconds_bucket"),
        "{m}"
    );
    assert!(m.contains("switchyard_spend_usd_total"), "{m}");
}

#[tokio::test]
async fn streaming_is_relayed_chunk_by_chunk_with_usage_only_when_asked() {
    let mock = Mock::start(KEY, &["--chunks", "5", "--chunk-delay-ms", "80"]);
    let gw = start(&mock, &[]);

    let started = Instant::now();
    let resp = post(&gw, "/v1/chat/completions", &chat("gpt-4o-mini", true)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let events = sse_events(resp).await;
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    assert!(
        chunks
            .iter()
            .all(|c| c["choices"].as_array().is_some_and(|a| !a.is_empty())),
        "the usage chunk the gateway asked for leaked: {chunks:?}"
    );
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(!text.is_empty());
    // Not buffered: the first content arrived long before the last (5 chunks × 80 ms apart).
    let first = events[1].0.duration_since(started);
    let spread = events.last().unwrap().0.duration_since(events[1].0);
    assert!(
        spread >= Duration::from_millis(240),
        "events arrived together (spread {spread:?}, first after {first:?})"
    );

    // Upstream was asked for usage even though the client was not.
    let seen = mock.requests().await;
    assert_eq!(seen[0]["body"]["stream_options"]["include_usage"], true);

    // A client asking for usage gets the usage chunk.
    let mut body = chat("gpt-4o-mini", true);
    body["stream_options"] = json!({"include_usage": true});
    let events = sse_events(post(&gw, "/v1/chat/completions", &body).await).await;
    let usage_chunk: Value = serde_json::from_str(&events[events.len() - 2].1).unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 5);

    // Usage from streams is counted, and time to first token observed.
    let m = gw.metrics().await;
    assert!(
        m.contains(r#"route="default/chat",type="output"} 10"#),
        "{m}"
    );
    assert!(m.contains("switchyard_time_to_first_token_seconds_count{backend=\"default/mock\",model=\"gpt-4o-mini\",route=\"default/chat\"} 2"), "{m}");
}

#[tokio::test]
async fn completions_embeddings_and_models() {
    let mock = Mock::start(KEY, &["--chunks", "3"]);
    let gw = start(&mock, &[]);

    let v: Value = post(
        &gw,
        "/v1/completions",
        &json!({"model": "gpt-4o-mini", "prompt": "Once upon"}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["model"], "mock-model");

    let events = sse_events(
        post(
            &gw,
            "/v1/completions",
            &json!({"model": "gpt-4o-mini", "prompt": "Once", "stream": true}),
        )
        .await,
    )
    .await;
    assert_eq!(events.last().unwrap().1, "[DONE]");

    let resp = post(
        &gw,
        "/v1/embeddings",
        &json!({"model": "text-embedding-3-small", "input": ["a", "b"], "dimensions": 8}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 8);
    assert_eq!(v["model"], "mock-embed");

    let v: Value = reqwest::get(gw.url("/v1/models"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["gpt-4o-mini", "text-embedding-3-small"]);

    // Streaming embeddings is refused by the gateway itself.
    let resp = post(
        &gw,
        "/v1/embeddings",
        &json!({"model": "text-embedding-3-small", "input": "a", "stream": true}),
    )
    .await;
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn client_errors_come_back_in_openai_shape() {
    let mock = Mock::start(KEY, &[]);
    let gw = start(&mock, &["--max-body-bytes", "2048"]);
    let client = reqwest::Client::new();

    let resp = post(&gw, "/v1/chat/completions", &chat("no-such-model", false)).await;
    assert_eq!(resp.status(), 404);
    assert_openai_error(
        &resp.json().await.unwrap(),
        "model_not_found",
        "invalid_request_error",
    );

    let resp = client
        .post(gw.url("/v1/chat/completions"))
        .body("{\"model\": \"gpt-4o-mini\",")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_openai_error(
        &resp.json().await.unwrap(),
        "invalid_json",
        "invalid_request_error",
    );

    let resp = post(
        &gw,
        "/v1/chat/completions",
        &json!({"model": "gpt-4o-mini"}),
    )
    .await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["param"], "messages");

    let big = "x".repeat(4096);
    let resp = post(
        &gw,
        "/v1/chat/completions",
        &json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": big}]}),
    )
    .await;
    assert_eq!(resp.status(), 413);
    assert_openai_error(
        &resp.json().await.unwrap(),
        "request_too_large",
        "invalid_request_error",
    );

    // Oversize without a Content-Length (chunked) is caught while reading.
    let chunks = futures_util::stream::iter(
        (0..8).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b' '; 1024]))),
    );
    // Its own client: the gateway closes a connection whose body it stopped reading, and a
    // pooled connection reused right after would race that close.
    let resp = reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);

    let resp = client
        .get(gw.url("/v1/chat/completions"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    let resp = client.get(gw.url("/v2/whatever")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_openai_error(
        &resp.json().await.unwrap(),
        "unknown_url",
        "invalid_request_error",
    );

    // Nothing reached the upstream.
    assert!(mock.requests().await.is_empty());
}

#[tokio::test]
async fn upstream_failures_map_to_gateway_errors() {
    let mock = Mock::start(KEY, &["--chunks", "6"]);
    // A port with nothing listening: bind, note, release.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let limited = backend_yaml(
        "limited",
        &mock.endpoint(),
        KEY,
        "  headers:\n    set: {x-mock-status: \"429\", x-mock-retry-after: \"7\"}\n",
    );
    let resetting = backend_yaml(
        "resetting",
        &mock.endpoint(),
        KEY,
        "  headers:\n    set: {x-mock-reset-after: \"2\"}\n",
    );
    let wrongkey = backend_yaml("wrongkey", &mock.endpoint(), "sk-wrong", "");
    let files = [
        (
            "a.yaml",
            backend_yaml("down", &format!("http://{dead}/v1"), KEY, ""),
        ),
        ("b.yaml", limited),
        ("c.yaml", resetting),
        ("d.yaml", wrongkey),
        (
            "routes.yaml",
            [
                route_yaml("down", &["down"], "down", "mock-model"),
                route_yaml("limited", &["limited"], "limited", "mock-model"),
                route_yaml("resetting", &["resetting"], "resetting", "mock-model"),
                route_yaml("wrongkey", &["wrongkey"], "wrongkey", "mock-model"),
            ]
            .join("---\n"),
        ),
    ];
    let refs: Vec<(&str, &str)> = files.iter().map(|(n, t)| (*n, t.as_str())).collect();
    let gw = Gateway::start(&refs, &[]);

    let resp = post(&gw, "/v1/chat/completions", &chat("down", false)).await;
    assert_eq!(resp.status(), 502);
    assert_openai_error(
        &resp.json().await.unwrap(),
        "upstream_unreachable",
        "upstream_error",
    );

    let resp = post(&gw, "/v1/chat/completions", &chat("limited", false)).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "7");
    assert_openai_error(
        &resp.json().await.unwrap(),
        "rate_limit_exceeded",
        "upstream_error",
    );

    // The upstream refusing the gateway's key is the operator's problem, not the caller's.
    let resp = post(&gw, "/v1/chat/completions", &chat("wrongkey", false)).await;
    assert_eq!(resp.status(), 502);
    assert_openai_error(
        &resp.json().await.unwrap(),
        "upstream_auth_failed",
        "upstream_error",
    );

    // A stream cut by the upstream ends with an error event, never silently.
    let events =
        sse_events(post(&gw, "/v1/chat/completions", &chat("resetting", true)).await).await;
    let last: Value = serde_json::from_str(&events.last().unwrap().1).unwrap();
    assert_openai_error(&last, "upstream_stream_interrupted", "upstream_error");
    assert!(
        events.len() >= 3,
        "chunks before the cut were relayed: {events:?}"
    );

    // The same through the Responses API: its error event carries the next sequence number.
    let body = json!({"model": "resetting", "input": "hi", "stream": true});
    let events = sse_events(post(&gw, "/v1/responses", &body).await).await;
    let all: Vec<Value> = events
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(all[0]["type"], "response.created", "{all:?}");
    let last = all.last().unwrap();
    assert_eq!(last["type"], "error", "{all:?}");
    assert_eq!(last["code"], "upstream_stream_interrupted");
    assert_eq!(last["sequence_number"], all.len() - 1);
    // Its errors before the stream are OpenAI's.
    let resp = post(
        &gw,
        "/v1/responses",
        &json!({"model": "down", "input": "hi"}),
    )
    .await;
    assert_eq!(resp.status(), 502);
    assert_openai_error(
        &resp.json().await.unwrap(),
        "upstream_unreachable",
        "upstream_error",
    );

    let m = gw.metrics().await;
    assert!(m.contains(r#"switchyard_upstream_errors_total{backend="default/down",kind="connect",provider="openai-compatible"}"#), "{m}");
    assert!(m.contains(r#"switchyard_upstream_errors_total{backend="default/limited",kind="status_429",provider="openai-compatible"}"#), "{m}");
}

#[tokio::test]
async fn fallback_serves_when_primary_is_down() {
    let mock = Mock::start(KEY, &[]);
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let route = r#"apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {name: resilient}
spec:
  match: {models: [gpt-4o-mini]}
  backends: [{backendRef: {name: down}, model: mock-model}]
  fallbacks: [{backendRef: {name: mock}, model: mock-large}]
"#;
    let files = [
        (
            "a.yaml",
            backend_yaml("down", &format!("http://{dead}/v1"), KEY, ""),
        ),
        ("b.yaml", backend_yaml("mock", &mock.endpoint(), KEY, "")),
        ("r.yaml", route.to_string()),
    ];
    let refs: Vec<(&str, &str)> = files.iter().map(|(n, t)| (*n, t.as_str())).collect();
    let gw = Gateway::start(&refs, &[]);
    let resp = post(&gw, "/v1/chat/completions", &chat("gpt-4o-mini", false)).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["model"], "mock-large");
}

#[tokio::test]
async fn hot_reload_while_requests_flow_loses_nothing() {
    let mock = Mock::start(KEY, &["--chunks", "2"]);
    let gw = start(&mock, &[]);
    assert_eq!(gw.generation().await, 1);

    let url = gw.url("/v1/chat/completions");
    let load = tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut statuses = Vec::new();
        let mut models = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(3);
        for _ in 0..2000 {
            if Instant::now() > deadline {
                break;
            }
            let resp = client
                .post(&url)
                .json(&chat("gpt-4o-mini", false))
                .send()
                .await
                .unwrap();
            statuses.push(resp.status().as_u16());
            let v: Value = resp.json().await.unwrap();
            models.push(v["model"].as_str().unwrap_or("").to_string());
        }
        (statuses, models)
    });

    let files = standard(&mock);
    for i in 0..6 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let target = if i % 2 == 0 {
            "mock-large"
        } else {
            "mock-model"
        };
        let routes = files[1]
            .1
            .replacen("model: mock-model", &format!("model: {target}"), 1);
        gw.write_config("routes.yaml", &routes);
    }
    let (statuses, models) = load.await.unwrap();
    assert!(statuses.len() > 20, "too few requests: {}", statuses.len());
    assert!(
        statuses.iter().all(|s| *s == 200),
        "failed requests during reloads: {:?}",
        statuses.iter().filter(|s| **s != 200).collect::<Vec<_>>()
    );
    assert!(
        models.iter().any(|m| m == "mock-large"),
        "new table never served"
    );
    assert!(gw.generation().await >= 2);
}

#[tokio::test]
async fn invalid_reload_is_rejected_and_old_table_keeps_serving() {
    let mock = Mock::start(KEY, &[]);
    let gw = start(&mock, &[]);
    let broken = route_yaml("chat", &["gpt-4o-mini"], "ghost", "mock-model");
    gw.write_config("routes.yaml", &broken);
    let line = gw.proc.wait_line(Duration::from_secs(10), |l| {
        l.contains("configuration change rejected")
            .then(|| l.to_string())
    });
    assert!(line.contains("routes.yaml"), "{line}");
    assert!(line.contains("AIRoute default/chat"), "{line}");
    assert!(line.contains("spec.backends[0].backendRef.name"), "{line}");
    assert!(line.contains("BackendNotFound"), "{line}");

    let resp = post(&gw, "/v1/chat/completions", &chat("gpt-4o-mini", false)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(gw.generation().await, 1);
    assert!(gw
        .metrics()
        .await
        .contains(r#"switchyard_config_reloads_total{result="error"}"#));

    // A YAML syntax error is rejected the same way.
    gw.write_config("routes.yaml", "apiVersion: [");
    gw.proc.wait_line(Duration::from_secs(10), |l| {
        l.contains("not valid YAML").then_some(())
    });
    assert_eq!(
        post(&gw, "/v1/chat/completions", &chat("gpt-4o-mini", false))
            .await
            .status(),
        200
    );

    // Fixing it swaps in generation 2.
    gw.write_config(
        "routes.yaml",
        &route_yaml("chat", &["gpt-4o-mini"], "mock", "mock-large"),
    );
    gw.wait_generation(2).await;
    let v: Value = post(&gw, "/v1/chat/completions", &chat("gpt-4o-mini", false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["model"], "mock-large");
}

#[tokio::test]
async fn h2c_clients_are_served() {
    let mock = Mock::start(KEY, &[]);
    let gw = start(&mock, &[]);
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = client
        .post(gw.url("/v1/chat/completions"))
        .json(&chat("gpt-4o-mini", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let events = sse_events(
        client
            .post(gw.url("/v1/chat/completions"))
            .json(&chat("gpt-4o-mini", true))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(events.last().unwrap().1, "[DONE]");
}

#[tokio::test]
async fn admin_endpoints_and_redaction() {
    let mock = Mock::start(KEY, &[]);
    let gw = start(&mock, &[]);
    assert_eq!(
        reqwest::get(gw.admin_url("/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        reqwest::get(gw.admin_url("/readyz"))
            .await
            .unwrap()
            .status(),
        200
    );
    let routes = reqwest::get(gw.admin_url("/debug/routes"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let v: Value = serde_json::from_str(&routes).unwrap();
    assert_eq!(v["generation"], 1);
    assert_eq!(v["routes"].as_array().unwrap().len(), 3);
    assert!(
        !routes.contains(KEY),
        "upstream key leaked into /debug/routes"
    );
    assert!(
        !gw.proc.output().contains(KEY),
        "upstream key leaked into logs"
    );
}

#[tokio::test]
async fn virtual_keys_gate_access_when_consumers_exist() {
    let mock = Mock::start(KEY, &[]);
    let mut files = standard(&mock);
    files.push((
        "consumers.yaml",
        r#"apiVersion: v1
kind: Secret
metadata: {name: team-a}
stringData: {key: sk-team-a}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIConsumer
metadata: {name: team-a}
spec:
  keySecretRef: {name: team-a, key: key}
  allow: ["gpt-4o-mini"]
"#
        .to_string(),
    ));
    let refs: Vec<(&str, &str)> = files.iter().map(|(n, t)| (*n, t.as_str())).collect();
    let gw = Gateway::start(&refs, &[]);
    let client = reqwest::Client::new();
    let call = |key: Option<&'static str>, model: &'static str| {
        let mut req = client
            .post(gw.url("/v1/chat/completions"))
            .json(&chat(model, false));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        req.send()
    };
    let resp = call(None, "gpt-4o-mini").await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_openai_error(
        &resp.json().await.unwrap(),
        "missing_api_key",
        "invalid_request_error",
    );
    let resp = call(Some("sk-wrong"), "gpt-4o-mini").await.unwrap();
    assert_eq!(resp.status(), 401);
    let body = resp.text().await.unwrap();
    assert!(!body.contains("sk-wrong"));
    let resp = call(Some("sk-team-a"), "gpt-4o").await.unwrap();
    assert_eq!(resp.status(), 403);
    let v: Value = resp.json().await.unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("gpt-4o"));
    assert_eq!(
        call(Some("sk-team-a"), "gpt-4o-mini")
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(gw.metrics().await.contains(r#"consumer="default/team-a""#));
}

#[test]
fn validate_command_reports_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        r#"apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {name: b}
spec:
  provider: openai-compatible
  endpoint: http://127.0.0.1:1/v1
  models: [{name: m, pricing: {inputPerMillion: "-3"}}]
  timeouts: {firstByte: "soon"}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {name: r}
spec:
  match: {models: [m]}
  backends: [{backendRef: {name: b}, weight: 0}]
"#,
    )
    .unwrap();
    let out = std::process::Command::new(switchyard_e2e::bin_dir().join("switchyard"))
        .args(["validate", "--config"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml (document 1): error: ModelBackend default/b: spec.models[0].pricing.inputPerMillion"), "{err}");
    assert!(err.contains("spec.timeouts.firstByte"), "{err}");
    assert!(
        err.contains("bad.yaml (document 2): error: AIRoute default/r: spec.backends"),
        "{err}"
    );

    let ok = std::process::Command::new(switchyard_e2e::bin_dir().join("switchyard"))
        .args(["validate", "--config"])
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/local"))
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

/// A CA and a server certificate for 127.0.0.1 signed by it, made with the openssl CLI.
fn make_cert(
    dir: &std::path::Path,
    name: &str,
) -> (std::path::PathBuf, std::path::PathBuf, Vec<u8>) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ca_key = format!("{name}-ca.key");
    let ca = format!("{name}-ca.pem");
    let key = format!("{name}.key");
    let csr = format!("{name}.csr");
    let cert = format!("{name}.pem");
    let ext = format!("{name}.ext");
    std::fs::write(
        dir.join(&ext),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &ca_key,
        "-out",
        &ca,
        "-days",
        "1",
        "-subj",
        &format!("/CN={name} test CA"),
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &key,
        "-out",
        &csr,
        "-subj",
        "/CN=127.0.0.1",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-out",
        &cert,
        "-days",
        "1",
        "-extfile",
        &ext,
    ]);
    (
        dir.join(cert),
        dir.join(key),
        std::fs::read(dir.join(ca)).unwrap(),
    )
}

#[tokio::test]
async fn tls_listener_serves_h2_and_reloads_a_renewed_certificate() {
    let mock = Mock::start(KEY, &[]);
    let certs = tempfile::tempdir().unwrap();
    let (cert, key, ca1) = make_cert(certs.path(), "one");
    let served_cert = certs.path().join("tls.crt");
    let served_key = certs.path().join("tls.key");
    std::fs::copy(&cert, &served_cert).unwrap();
    std::fs::copy(&key, &served_key).unwrap();
    let gw = start(
        &mock,
        &[
            "--tls-cert",
            served_cert.to_str().unwrap(),
            "--tls-key",
            served_key.to_str().unwrap(),
        ],
    );
    let url = format!("https://{}/v1/chat/completions", gw.addr);
    let client_for = |ca: &[u8]| {
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(ca).unwrap())
            .build()
            .unwrap()
    };
    let trusts_one = client_for(&ca1);
    let resp = trusts_one
        .post(&url)
        .json(&chat("gpt-4o-mini", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.version(),
        reqwest::Version::HTTP_2,
        "h2 is negotiated by ALPN"
    );
    // Plain HTTP on the TLS port is refused.
    assert!(reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .json(&chat("gpt-4o-mini", false))
        .send()
        .await
        .is_err());

    // Renew with a certificate from another CA: after the reload, clients trusting the new CA
    // connect and those trusting only the old one do not.
    let (cert2, key2, ca2) = make_cert(certs.path(), "two");
    std::fs::copy(&key2, &served_key).unwrap();
    std::fs::copy(&cert2, &served_cert).unwrap();
    let trusts_two = client_for(&ca2);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let fresh = client_for(&ca2);
        if fresh
            .post(&url)
            .json(&chat("gpt-4o-mini", false))
            .send()
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "renewed certificate never served:\n{}",
            gw.proc.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        trusts_two
            .post(&url)
            .json(&chat("gpt-4o-mini", false))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(client_for(&ca1)
        .post(&url)
        .json(&chat("gpt-4o-mini", false))
        .send()
        .await
        .is_err());
    assert!(gw.proc.output().contains("TLS certificate reloaded"));
}
