//! The whole service in process: `Gateway` driven through its tower `Service` impl with
//! `ServiceExt::oneshot`, no listener in front, against a small upstream on loopback that
//! records what it was sent. The phases end to end (endpoint, route, encode or translate,
//! send, classify, fall back, respond) without a binary or a process; what needs the binary
//! (listener limits, the real mock, real clients) stays in the end-to-end tests.

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use switchyard_router::TableHandle;
use switchyard_telemetry::Metrics;
use tower::ServiceExt;

use crate::{
    admit::Limits,
    service::{Gateway, GatewayConfig},
    upstream::{ClientConfig, UpstreamClient},
};

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    authorization: Option<String>,
    x_api_key: Option<String>,
    body: Value,
}

/// An upstream on 127.0.0.1 answering every request with `status` and `answer`, recording it.
async fn upstream(status: u16, answer: Value) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (log, answer) = (Arc::clone(&log), answer.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let (log, answer) = (Arc::clone(&log), answer.clone());
                    async move {
                        let header = |n: &str| {
                            req.headers()
                                .get(n)
                                .map(|v| v.to_str().unwrap().to_string())
                        };
                        let (path, authorization, x_api_key) = (
                            req.uri().path().to_string(),
                            header("authorization"),
                            header("x-api-key"),
                        );
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        log.lock().unwrap().push(Seen {
                            path,
                            authorization,
                            x_api_key,
                            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                        });
                        let mut resp = Response::new(Full::new(Bytes::from(answer.to_string())));
                        *resp.status_mut() = StatusCode::from_u16(status).unwrap();
                        resp.headers_mut()
                            .insert("content-type", "application/json".parse().unwrap());
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (format!("127.0.0.1:{}", addr.port()), seen)
}

fn completion(model: &str) -> Value {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9},
    })
}

/// A gateway on `yaml`, in process.
fn gateway(yaml: &str) -> (Gateway, Arc<Metrics>) {
    let mut r = switchyard_api::Resources::default();
    let errs = r.parse_yaml("t.yaml", yaml, &HashMap::<String, String>::new());
    assert!(errs.is_empty(), "{errs:?}");
    let compiled = switchyard_compile::compile(&r, 1);
    assert!(!compiled.has_errors(), "{:?}", compiled.diagnostics);
    let table = Arc::new(TableHandle::new());
    table.store(compiled.table);
    let metrics = Arc::new(Metrics::new(prometheus::Registry::new()).unwrap());
    let client = UpstreamClient::new(&ClientConfig::default()).unwrap();
    let limits = Arc::new(Limits::local(Arc::clone(&metrics)));
    let config = GatewayConfig {
        require_auth: false,
        ..GatewayConfig::default()
    };
    let gw = Gateway::new(
        table,
        client,
        Arc::clone(&metrics),
        None,
        limits,
        config,
        None,
    );
    (gw, metrics)
}

fn backend(name: &str, provider: &str, addr: &str, model: &str) -> String {
    let endpoint = match provider {
        "anthropic" => format!("http://{addr}"),
        _ => format!("http://{addr}/v1"),
    };
    format!(
        "---\napiVersion: switchyard.dev/v1alpha1\nkind: ModelBackend\nmetadata: {{name: {name}}}\n\
         spec: {{provider: {provider}, endpoint: \"{endpoint}\", auth: {{secretRef: {{name: k, key: k}}}}, models: [{{name: {model}}}]}}\n"
    )
}

const SECRET: &str =
    "apiVersion: v1\nkind: Secret\nmetadata: {name: k}\nstringData: {k: sk-upstream-1}\n";

async fn call(
    gw: &Gateway,
    path: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut req = Request::post(path).header("content-type", "application/json");
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let req = req.body(Full::new(Bytes::from(body.to_string()))).unwrap();
    let resp = gw.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    assert!(resp.headers().contains_key("x-request-id"));
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn a_chat_request_is_passed_through_with_the_model_and_key_rewritten() {
    let (addr, seen) = upstream(200, completion("gpt-up")).await;
    let yaml = format!(
        "{SECRET}{}---\napiVersion: switchyard.dev/v1alpha1\nkind: AIRoute\nmetadata: {{name: r}}\n\
         spec: {{match: {{models: [m]}}, backends: [{{backendRef: {{name: oai}}, model: gpt-up}}]}}\n",
        backend("oai", "openai", &addr, "gpt-up")
    );
    let (gw, metrics) = gateway(&yaml);
    let body =
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "x_extra": [1]});
    let (status, v) = call(
        &gw,
        "/v1/chat/completions",
        body,
        &[("authorization", "Bearer caller")],
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], "hello");
    let seen = seen.lock().unwrap().clone();
    let [s] = &seen[..] else { panic!("{seen:?}") };
    assert_eq!(s.path, "/v1/chat/completions");
    assert_eq!(s.authorization.as_deref(), Some("Bearer sk-upstream-1"));
    assert_eq!(s.body["model"], "gpt-up");
    assert_eq!(s.body["x_extra"], json!([1]), "unknown fields pass through");
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&metrics.registry().gather())
        .unwrap();
    assert!(text.contains("switchyard_tokens_total"), "usage recorded");
}

#[tokio::test]
async fn an_anthropic_caller_on_an_openai_backend_is_translated_both_ways() {
    let (addr, seen) = upstream(200, completion("gpt-up")).await;
    let yaml = format!(
        "{SECRET}{}---\napiVersion: switchyard.dev/v1alpha1\nkind: AIRoute\nmetadata: {{name: r}}\n\
         spec: {{match: {{models: [claude-x]}}, backends: [{{backendRef: {{name: oai}}, model: gpt-up}}]}}\n",
        backend("oai", "openai", &addr, "gpt-up")
    );
    let (gw, _) = gateway(&yaml);
    let body = json!({"model": "claude-x", "max_tokens": 50, "system": "be brief",
                      "messages": [{"role": "user", "content": "hi"}]});
    let (status, v) = call(&gw, "/v1/messages", body, &[("x-api-key", "caller")]).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["type"], "message");
    assert_eq!(v["content"][0]["text"], "hello");
    assert_eq!(v["usage"]["output_tokens"], 2);
    let s = seen.lock().unwrap()[0].clone();
    assert_eq!(s.path, "/v1/chat/completions");
    assert_eq!(s.x_api_key, None, "the caller's key never goes upstream");
    assert_eq!(
        s.body["messages"][0],
        json!({"role": "system", "content": "be brief"})
    );
    assert_eq!(s.body["max_completion_tokens"], 50);
}

#[tokio::test]
async fn a_failing_primary_falls_back_and_a_callers_error_does_not() {
    let (bad, bad_seen) = upstream(
        503,
        json!({"error": {"message": "overloaded", "type": "server_error"}}),
    )
    .await;
    let (good, good_seen) = upstream(200, completion("gpt-up")).await;
    let (refusing, _) = upstream(400, json!({"error": {"message": "bad 'temperature'", "type": "invalid_request_error", "param": "temperature"}})).await;
    let yaml = format!(
        "{SECRET}{}{}{}---\napiVersion: switchyard.dev/v1alpha1\nkind: AIRoute\nmetadata: {{name: r}}\n\
         spec: {{match: {{models: [m]}}, backends: [{{backendRef: {{name: bad}}, model: gpt-up}}], fallbacks: [{{backendRef: {{name: good}}, model: gpt-up}}]}}\n\
         ---\napiVersion: switchyard.dev/v1alpha1\nkind: AIRoute\nmetadata: {{name: r2}}\n\
         spec: {{match: {{models: [m2]}}, backends: [{{backendRef: {{name: refusing}}, model: gpt-up}}], fallbacks: [{{backendRef: {{name: good}}, model: gpt-up}}]}}\n",
        backend("bad", "openai", &bad, "gpt-up"),
        backend("good", "openai", &good, "gpt-up"),
        backend("refusing", "openai", &refusing, "gpt-up"),
    );
    let (gw, _) = gateway(&yaml);
    let chat = |m: &str| json!({"model": m, "messages": [{"role": "user", "content": "hi"}]});
    let (status, v) = call(&gw, "/v1/chat/completions", chat("m"), &[]).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (
            bad_seen.lock().unwrap().len(),
            good_seen.lock().unwrap().len()
        ),
        (1, 1)
    );
    // The provider's own 400 is the caller's answer: no fallback tries it elsewhere.
    let (status, v) = call(&gw, "/v1/chat/completions", chat("m2"), &[]).await;
    assert_eq!(status, 400, "{v}");
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("temperature"), "{v}");
    assert_eq!(good_seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn errors_are_in_the_callers_format_before_any_upstream() {
    let (addr, seen) = upstream(200, completion("gpt-up")).await;
    let yaml = format!("{SECRET}{}", backend("oai", "openai", &addr, "gpt-up"));
    let (gw, _) = gateway(&yaml);
    let (status, v) = call(
        &gw,
        "/v1/chat/completions",
        json!({"model": "nope", "messages": []}),
        &[],
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(v["error"]["code"], "model_not_found");
    let (status, v) = call(
        &gw,
        "/v1/messages",
        json!({"model": "nope", "max_tokens": 5, "messages": []}),
        &[],
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(v["type"], "error", "Anthropic's error shape: {v}");
    let (status, _) = call(&gw, "/v1/chat/completions", json!("not an object"), &[]).await;
    assert_eq!(status, 400);
    assert!(seen.lock().unwrap().is_empty());
}
