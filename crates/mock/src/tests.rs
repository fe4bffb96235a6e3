//! In-process server tests over loopback, with a raw hyper client.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use super::serve;
use crate::app::{App, Config};
use crate::faults::Knobs;

mod conformance;
mod tls;

struct Server {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Vec<u8>,
    /// Set when the body ended with an error instead of its end.
    error: Option<hyper::Error>,
}

async fn start(api_key: Option<&str>) -> Server {
    start_on(api_key, None).await
}

/// A server speaking TLS when `tls` is set, plain HTTP otherwise.
async fn start_on(api_key: Option<&str>, tls: Option<tokio_rustls::TlsAcceptor>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Arc::new(App::new(Config {
        api_keys: api_key.map(str::to_owned).into_iter().collect(),
        rate_limited_keys: vec![],
        forbidden_models: vec!["forbidden".into()],
        defaults: Knobs::defaults(0, 8, 0),
        embedding_dims: 16,
        cache_ttl: crate::cache::DEFAULT_TTL,
        models: vec!["mock-model".into(), "other".into()],
        aws: Some(crate::bedrock::AwsCredentials {
            access_key_id: AWS_KEY_ID.into(),
            secret_access_key: AWS_SECRET.into(),
        }),
    }));
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve(listener, app, tls, async {
        let _ = stopped.await;
    }));
    Server { addr, _stop: stop }
}

impl Server {
    async fn send(&self, req: Request<Full<Bytes>>) -> Reply {
        let stream = TcpStream::connect(self.addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        Reply::read(sender.send_request(req).await.unwrap()).await
    }

    fn request(&self, method: &str, path: &str) -> http::request::Builder {
        Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string())
    }

    async fn post(&self, path: &str, body: Value, headers: &[(&str, &str)]) -> Reply {
        let mut req = self
            .request("POST", path)
            .header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req.body(Full::from(body.to_string())).unwrap())
            .await
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(self.request("GET", path).body(Full::default()).unwrap())
            .await
    }
}

impl Reply {
    async fn read(response: http::Response<hyper::body::Incoming>) -> Reply {
        let (parts, mut body) = response.into_parts();
        let mut reply = Reply {
            status: parts.status,
            headers: parts.headers,
            body: Vec::new(),
            error: None,
        };
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        reply.body.extend_from_slice(&data);
                    }
                }
                Err(err) => {
                    reply.error = Some(err);
                    break;
                }
            }
        }
        reply
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    fn events(&self) -> Vec<&str> {
        std::str::from_utf8(&self.body)
            .unwrap()
            .split_terminator("\n\n")
            .collect()
    }
}

fn chat(stream: bool) -> Value {
    json!({
        "model": "gpt-client",
        "messages": [{"role": "user", "content": "hello there, mock"}],
        "stream": stream,
        "stream_options": {"include_usage": true},
    })
}

#[tokio::test]
async fn streaming_chat_ends_with_done() {
    let server = start(None).await;
    let reply = server
        .post(
            "/v1/chat/completions",
            chat(true),
            &[("x-mock-chunks", "3")],
        )
        .await;

    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["content-type"], "text/event-stream");
    assert!(reply.error.is_none());
    let events = reply.events();
    assert_eq!(events.len(), 1 + 3 + 1 + 1 + 1);
    assert_eq!(events.last(), Some(&"data: [DONE]"));
    let usage: Value = serde_json::from_str(&events[5]["data: ".len()..]).unwrap();
    assert_eq!(usage["usage"]["prompt_tokens"], 4);
    assert_eq!(usage["usage"]["completion_tokens"], 3);

    // The buffered reply carries the same text.
    let buffered = server
        .post(
            "/v1/chat/completions",
            chat(false),
            &[("x-mock-chunks", "3")],
        )
        .await
        .json();
    let streamed: String = events[1..4]
        .iter()
        .map(|e| {
            let chunk: Value = serde_json::from_str(&e["data: ".len()..]).unwrap();
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        buffered["choices"][0]["message"]["content"],
        streamed.as_str()
    );
    assert_eq!(buffered["model"], "gpt-client");
}

#[tokio::test]
async fn reset_after_cuts_the_connection_before_done() {
    let server = start(None).await;
    let reply = server
        .post(
            "/v1/chat/completions",
            chat(true),
            &[("x-mock-reset-after", "2")],
        )
        .await;

    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.error.is_some(), "body must fail, not end cleanly");
    let body = String::from_utf8(reply.body.clone()).unwrap();
    assert!(!body.contains("[DONE]"));
    assert_eq!(
        reply.events().len(),
        1 + 2,
        "role chunk and two content chunks"
    );
}

#[tokio::test]
async fn truncate_stream_ends_cleanly_without_a_finish() {
    let server = start(None).await;
    let reply = server
        .post(
            "/v1/chat/completions",
            chat(true),
            &[
                ("x-mock-reset-after", "2"),
                ("x-mock-fault", "truncate-stream"),
            ],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.error.is_none(), "the body ends cleanly");
    let body = String::from_utf8(reply.body.clone()).unwrap();
    assert!(!body.contains("[DONE]") && !body.contains("\"finish_reason\":\"stop\""));
    assert_eq!(reply.events().len(), 1 + 2);

    let reply = server
        .post(
            "/v1/messages",
            messages(true, false),
            &[
                ("x-mock-reset-after", "3"),
                ("x-mock-fault", "truncate-stream"),
            ],
        )
        .await;
    assert!(reply.error.is_none());
    let body = String::from_utf8(reply.body.clone()).unwrap();
    assert!(
        !body.contains("message_stop") && !body.contains("stop_reason\":\""),
        "{body}"
    );
}

#[tokio::test]
async fn malformed_json_stalled_bodies_and_echoed_keys() {
    let server = start(Some("sk-up")).await;
    let auth = ("authorization", "Bearer sk-up");
    let reply = server
        .post(
            "/v1/chat/completions",
            chat(false),
            &[auth, ("x-mock-fault", "malformed-json")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["content-type"], "application/json");
    assert!(serde_json::from_slice::<Value>(&reply.body).is_err());
    assert!(reply.body.starts_with(b"{"));

    let reply = server
        .post(
            "/v1/chat/completions",
            chat(false),
            &[auth, ("x-mock-status", "400"), ("x-mock-fault", "echo-key")],
        )
        .await;
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("'sk-up'"), "{message}");
    assert!(message.contains("Bearer sk-up"), "{message}");
    assert!(message.contains("c2stdXA="), "{message}");

    // The head arrives, half the body, then nothing.
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = server
        .request("POST", "/v1/chat/completions")
        .header("content-type", "application/json")
        .header(auth.0, auth.1)
        .header("x-mock-status", "500")
        .header("x-mock-fault", "stall-body")
        .body(Full::<Bytes>::from(chat(false).to_string()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(first.starts_with(b"{\"error\""));
    let rest = tokio::time::timeout(std::time::Duration::from_millis(200), body.frame()).await;
    assert!(rest.is_err(), "the body must stall");

    let reply = server
        .post(
            "/v1/chat/completions",
            json!({"model": "forbidden", "messages": [{"role": "user", "content": "hi"}]}),
            &[auth],
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.json()["error"]["code"], "model_not_found");
}

#[tokio::test]
async fn auth_faults_and_recording() {
    let server = start(Some("sk-up")).await;
    let body = json!({"model": "m", "input": "x"});

    let denied = server.post("/v1/embeddings", body.clone(), &[]).await;
    assert_eq!(denied.status, StatusCode::UNAUTHORIZED);
    assert_eq!(denied.json()["error"]["code"], "invalid_api_key");

    let limited = server
        .post(
            "/v1/embeddings",
            body.clone(),
            &[
                ("api-key", "sk-up"),
                ("x-mock-status", "429"),
                ("x-mock-retry-after", "3"),
            ],
        )
        .await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers["retry-after"], "3");
    assert_eq!(limited.json()["error"]["type"], "rate_limit_error");

    let ok = server
        .post(
            "/v1/embeddings",
            json!({"model": "m", "input": ["a", "b"], "encoding_format": "base64"}),
            &[("authorization", "Bearer sk-up")],
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert!(ok.json()["data"][1]["embedding"].is_string());

    let recorded = server.get("/mock/requests").await.json();
    let recorded = recorded.as_array().unwrap();
    assert_eq!(recorded.len(), 3);
    assert_eq!(recorded[2]["headers"]["authorization"], "Bearer sk-up");
    assert_eq!(recorded[2]["body"]["input"], json!(["a", "b"]));
    assert_eq!(recorded[2]["version"], "HTTP/1.1");
    assert_eq!(recorded[2]["authority"], server.addr.to_string());
    assert_eq!(recorded[2]["tls"], false);
    assert_eq!(
        server.get("/mock/stats").await.json(),
        json!({"requests": 3})
    );

    let cleared = server
        .send(
            server
                .request("DELETE", "/mock/requests")
                .body(Full::default())
                .unwrap(),
        )
        .await;
    assert_eq!(cleared.status, StatusCode::NO_CONTENT);
    assert_eq!(server.get("/mock/requests").await.json(), json!([]));
}

#[tokio::test]
async fn rejects_bad_requests() {
    let server = start(None).await;

    let cases = [
        (json!({"messages": [{"role": "user", "content": "x"}]}), 400),
        (json!({"model": "m"}), 400),
        (json!({"model": "m", "messages": []}), 400),
    ];
    for (body, status) in cases {
        let reply = server.post("/v1/chat/completions", body.clone(), &[]).await;
        assert_eq!(reply.status.as_u16(), status, "{body}");
        assert_eq!(reply.json()["error"]["type"], "invalid_request_error");
    }

    let malformed = server
        .send(
            server
                .request("POST", "/v1/chat/completions")
                .body(Full::from("{not json"))
                .unwrap(),
        )
        .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);

    assert_eq!(server.get("/v1/nope").await.status, StatusCode::NOT_FOUND);
    let wrong_method = server.get("/v1/chat/completions").await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong_method.headers["allow"], "POST");

    let bad_knob = server
        .post(
            "/v1/chat/completions",
            chat(false),
            &[("x-mock-chunks", "x")],
        )
        .await;
    assert_eq!(bad_knob.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn models_over_h2c() {
    let server = start(None).await;
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get(format!("http://{}/v1/models", server.addr))
        .body(Full::<Bytes>::default())
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let models: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][1]["id"], "other");
    assert_eq!(models["data"][0]["owned_by"], "switchyard-mock");

    let one = server.get("/v1/models/other").await.json();
    assert_eq!(one["object"], "model");
    let missing = server.get("/v1/models/nope").await;
    assert_eq!(missing.json()["error"]["code"], "model_not_found");
}

fn messages(stream: bool, tools: bool) -> Value {
    let mut body = json!({
        "model": "claude-x",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "hello there, mock"}],
        "stream": stream,
    });
    if tools {
        body["tools"] = json!([{"name": "lookup", "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}]);
    }
    body
}

#[tokio::test]
async fn anthropic_messages_with_x_api_key() {
    let server = start(Some("sk-test")).await;
    let reply = server
        .post(
            "/v1/messages",
            messages(false, false),
            &[("x-api-key", "sk-test")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let v = reply.json();
    assert_eq!(v["type"], "message");
    assert_eq!(v["content"][0]["type"], "text");
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["usage"]["output_tokens"], 8);

    // Errors on the Anthropic endpoints come in Anthropic's shape.
    let reply = server
        .post(
            "/v1/messages",
            messages(false, false),
            &[("x-api-key", "wrong")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.json()["error"]["type"], "authentication_error");
    let reply = server
        .post(
            "/v1/messages",
            messages(false, false),
            &[("x-api-key", "sk-test"), ("x-mock-status", "529")],
        )
        .await;
    assert_eq!(reply.status.as_u16(), 529);
    assert_eq!(
        reply.json(),
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded (injected by switchyard-mock)."}})
    );
    let mut no_max = messages(false, false);
    no_max.as_object_mut().unwrap().remove("max_tokens");
    let reply = server
        .post("/v1/messages", no_max, &[("x-api-key", "sk-test")])
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json()["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn anthropic_stream_with_tool_use_in_pieces() {
    let server = start(None).await;
    let reply = server.post("/v1/messages", messages(true, true), &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    let events = reply.events();
    let names: Vec<&str> = events
        .iter()
        .filter_map(|e| e.lines().next()?.strip_prefix("event: "))
        .collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(names.last(), Some(&"message_stop"));
    assert!(names.contains(&"ping"));
    let partial: String = events
        .iter()
        .filter_map(|e| e.lines().nth(1)?.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|v| v["delta"]["type"] == "input_json_delta")
        .map(|v| v["delta"]["partial_json"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&partial).unwrap(),
        json!({"q": "mock"})
    );
    assert!(events
        .iter()
        .any(|e| e.contains(r#""stop_reason":"tool_use""#)));
}

#[tokio::test]
async fn anthropic_thinking_is_signed_and_must_come_back_intact() {
    let server = start(None).await;
    let mut body = messages(false, true);
    body["thinking"] = json!({"type": "enabled", "budget_tokens": 1024});
    let reply = server.post("/v1/messages", body.clone(), &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    let v = reply.json();
    assert_eq!(v["content"][0]["type"], "thinking");
    let signature = v["content"][0]["signature"].as_str().unwrap().to_string();
    assert!(signature.starts_with("mock-signature-"));
    assert_eq!(v["content"][1]["type"], "tool_use");

    let next = |turn: Value| {
        let mut b = body.clone();
        let id = v["content"][1]["id"].clone();
        b["messages"] = json!([
            body["messages"][0],
            {"role": "assistant", "content": turn},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": id, "content": "ok"}]},
        ]);
        b
    };
    let tool_use = v["content"][1].clone();
    let thinking = |sig: &str| json!({"type": "thinking", "thinking": "t", "signature": sig});
    let ok = server
        .post(
            "/v1/messages",
            next(json!([thinking(&signature), tool_use])),
            &[],
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.json()["content"][1]["type"], "text");
    let forged = server
        .post(
            "/v1/messages",
            next(json!([thinking("forged"), tool_use])),
            &[],
        )
        .await;
    assert_eq!(forged.status, StatusCode::BAD_REQUEST);
    assert!(forged.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("signature"));
    let dropped = server
        .post("/v1/messages", next(json!([tool_use])), &[])
        .await;
    assert_eq!(dropped.status, StatusCode::BAD_REQUEST);
    assert!(dropped.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Expected `thinking`"));

    // Streamed: the thinking block first, with its signature, then the tool call at index 1.
    body["stream"] = json!(true);
    let reply = server.post("/v1/messages", body, &[]).await;
    let events = reply.events();
    let data: Vec<Value> = events
        .iter()
        .filter_map(|e| e.lines().nth(1)?.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect();
    assert_eq!(data[1]["content_block"]["type"], "thinking");
    assert_eq!(data[3]["delta"]["type"], "signature_delta");
    assert!(data
        .iter()
        .any(|d| d["index"] == 1 && d["content_block"]["type"] == "tool_use"));
}

#[tokio::test]
async fn openai_stream_with_tool_call_in_pieces() {
    let server = start(None).await;
    let mut body = chat(true);
    body["tools"] = json!([{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]);
    let reply = server.post("/v1/chat/completions", body, &[]).await;
    let chunks: Vec<Value> = reply
        .events()
        .iter()
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let args: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .filter(|a| !a.is_empty())
        .collect();
    assert!(args.len() > 1);
    assert_eq!(
        serde_json::from_str::<Value>(&args.concat()).unwrap(),
        json!({"q": "mock"})
    );
    assert!(chunks
        .iter()
        .any(|c| c["choices"][0]["finish_reason"] == "tool_calls"));
    assert!(chunks
        .iter()
        .any(|c| c["usage"]["completion_tokens"].is_u64()));
}

fn generate(tools: bool) -> Value {
    let mut body = json!({
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "contents": [{"role": "user", "parts": [{"text": "hello there, mock"}]}],
        "generationConfig": {"temperature": 0.5},
    });
    if tools {
        body["tools"] = json!([{"functionDeclarations": [{"name": "get_weather",
            "parametersJsonSchema": {"type": "object", "properties": {"city": {"type": "string"}}}}]}]);
    }
    body
}

#[tokio::test]
async fn gemini_generate_content_with_x_goog_api_key() {
    let server = start(Some("sk-test")).await;
    let path = "/v1beta/models/gemini-2.5-flash:generateContent";
    let reply = server
        .post(path, generate(false), &[("x-goog-api-key", "sk-test")])
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let v = reply.json();
    assert_eq!(v["candidates"][0]["content"]["role"], "model");
    assert!(v["candidates"][0]["content"]["parts"][0]["text"].is_string());
    assert_eq!(v["candidates"][0]["finishReason"], "STOP");
    assert_eq!(v["usageMetadata"]["candidatesTokenCount"], 8);
    assert_eq!(v["modelVersion"], "gemini-2.5-flash");

    // A function call when functions are declared; text once the last turn answers it.
    let reply = server
        .post(path, generate(true), &[("x-goog-api-key", "sk-test")])
        .await;
    let part = &reply.json()["candidates"][0]["content"]["parts"][0];
    assert_eq!(part["functionCall"]["name"], "get_weather");
    assert_eq!(part["functionCall"]["args"], json!({"city": "mock"}));
    let mut answered = generate(true);
    answered["contents"].as_array_mut().unwrap().extend([
        json!({"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}]}),
        json!({"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"output": "rain"}}}]}),
    ]);
    let reply = server
        .post(path, answered.clone(), &[("x-goog-api-key", "sk-test")])
        .await;
    assert!(reply.json()["candidates"][0]["content"]["parts"][0]["text"].is_string());

    // Errors come in Google's shape; a bad key is a 400 with the reason in the details.
    let reply = server
        .post(path, generate(false), &[("x-goog-api-key", "wrong")])
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json()["error"]["status"], "INVALID_ARGUMENT");
    assert_eq!(
        reply.json()["error"]["details"][0]["reason"],
        "API_KEY_INVALID"
    );
    let reply = server
        .post(
            path,
            generate(false),
            &[("x-goog-api-key", "sk-test"), ("x-mock-status", "429")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply.json()["error"]["status"], "RESOURCE_EXHAUSTED");
    assert_eq!(reply.json()["error"]["code"], 429);

    // What a careless translation would send is refused, as Gemini refuses it.
    let mut not_object = answered;
    not_object["contents"][2]["parts"][0]["functionResponse"]["response"] = json!("rain");
    let mut unknown = generate(false);
    unknown["model"] = json!("gemini-2.5-flash");
    let mut empty = generate(false);
    empty["contents"] = json!([]);
    for bad in [not_object, unknown, empty] {
        let reply = server
            .post(path, bad, &[("x-goog-api-key", "sk-test")])
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert_eq!(reply.json()["error"]["status"], "INVALID_ARGUMENT");
    }
}

#[tokio::test]
async fn gemini_streams_as_sse_with_whole_function_calls() {
    let server = start(None).await;
    let path = "/v1beta/models/gemini-2.5-flash:streamGenerateContent";
    let reply = server.post(path, generate(false), &[]).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let reply = server
        .post(&format!("{path}?alt=sse"), generate(false), &[])
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let text = std::str::from_utf8(&reply.body).unwrap();
    let chunks: Vec<Value> = text
        .split_terminator("\r\n\r\n")
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
        .collect();
    assert_eq!(chunks.len(), 8);
    assert!(chunks[..7]
        .iter()
        .all(|c| c["candidates"][0].get("finishReason").is_none()));
    assert_eq!(chunks[7]["candidates"][0]["finishReason"], "STOP");
    assert_eq!(chunks[7]["usageMetadata"]["candidatesTokenCount"], 8);

    let reply = server
        .post(&format!("{path}?alt=sse"), generate(true), &[])
        .await;
    let text = std::str::from_utf8(&reply.body).unwrap();
    let chunks: Vec<&str> = text.split_terminator("\r\n\r\n").collect();
    assert_eq!(chunks.len(), 1);
    let v: Value = serde_json::from_str(chunks[0].strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(
        v["candidates"][0]["content"]["parts"][0]["functionCall"]["args"],
        json!({"city": "mock"})
    );
}

#[tokio::test]
async fn azure_deployments_with_api_key_header() {
    let server = start(Some("sk-test")).await;
    let mut body = chat(false);
    body.as_object_mut().unwrap().remove("model");
    let path = "/openai/deployments/prod-4o/chat/completions?api-version=2024-10-21";
    let reply = server
        .post(path, body.clone(), &[("api-key", "sk-test")])
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["model"], "prod-4o");
    assert_eq!(reply.json()["object"], "chat.completion");
    let reply = server
        .post(
            "/openai/deployments/prod-4o/chat/completions",
            body.clone(),
            &[("api-key", "sk-test")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let reply = server.post(path, body, &[("api-key", "wrong")]).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(reply.json()["error"]["message"].is_string());
}

// === Bedrock ===

const AWS_KEY_ID: &str = "AKIDMOCKEXAMPLE";
const AWS_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

/// A Converse request signed with SigV4 as an AWS SDK signs it (the signer is `aws-sigv4`
/// itself, independent of the mock's check), with `tamper` applied to the body afterwards.
fn signed(
    server: &Server,
    path: &str,
    body: &Value,
    secret: &str,
    extra: &[(&str, &str)],
    tamper: bool,
) -> Request<Full<Bytes>> {
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
    let bytes = body.to_string().into_bytes();
    let identity =
        aws_credential_types::Credentials::new(AWS_KEY_ID, secret, None, None, "test").into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("bedrock")
        .time(std::time::SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let host = server.addr.to_string();
    let uri = format!("http://{host}{path}");
    let headers = [
        ("host", host.as_str()),
        ("content-type", "application/json"),
    ];
    let req = SignableRequest::new(
        "POST",
        uri.clone(),
        headers.into_iter(),
        SignableBody::Bytes(&bytes),
    )
    .unwrap();
    let (instructions, _) = sign(req, &params).unwrap().into_parts();
    let mut out = server
        .request("POST", path)
        .header("content-type", "application/json");
    for (k, v) in extra {
        out = out.header(*k, *v);
    }
    let mut req = out
        .body(Full::from(if tamper {
            body.to_string().replace("hello", "HELLO")
        } else {
            body.to_string()
        }))
        .unwrap();
    instructions.apply_to_request_http1x(&mut req);
    req
}

fn converse_body(tools: bool) -> Value {
    let mut v = json!({
        "messages": [{"role": "user", "content": [{"text": "hello there, mock"}]}],
        "system": [{"text": "Be brief."}],
        "inferenceConfig": {"maxTokens": 100},
    });
    if tools {
        v["toolConfig"] = json!({"tools": [{"toolSpec": {"name": "get_weather",
            "inputSchema": {"json": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}}]});
    }
    v
}

/// Splits an event-stream body into `(event type, payload)`, checking both CRCs of each
/// message.
fn event_stream(body: &[u8]) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let total = u32::from_be_bytes(rest[0..4].try_into().unwrap()) as usize;
        let headers_len = u32::from_be_bytes(rest[4..8].try_into().unwrap()) as usize;
        let crc = |b: &[u8]| crc32fast::hash(b).to_be_bytes();
        assert_eq!(crc(&rest[0..8]), rest[8..12]);
        assert_eq!(crc(&rest[..total - 4]), rest[total - 4..total]);
        let mut h = &rest[12..12 + headers_len];
        let mut kind = String::new();
        while !h.is_empty() {
            let n = h[0] as usize;
            let name = std::str::from_utf8(&h[1..1 + n]).unwrap();
            assert_eq!(h[1 + n], 7);
            let len = u16::from_be_bytes([h[2 + n], h[3 + n]]) as usize;
            let value = std::str::from_utf8(&h[4 + n..4 + n + len]).unwrap();
            if name == ":event-type" {
                kind = value.to_string();
            }
            h = &h[4 + n + len..];
        }
        let payload = serde_json::from_slice(&rest[12 + headers_len..total - 4]).unwrap();
        out.push((kind, payload));
        rest = &rest[total..];
    }
    out
}

#[tokio::test]
async fn bedrock_converse_verifies_sigv4() {
    let server = start(Some("sk-other")).await;
    let path = "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse";
    let reply = server
        .send(signed(
            &server,
            path,
            &converse_body(false),
            AWS_SECRET,
            &[],
            false,
        ))
        .await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let v = reply.json();
    assert_eq!(v["output"]["message"]["role"], "assistant");
    assert!(v["output"]["message"]["content"][0]["text"].is_string());
    assert_eq!(v["stopReason"], "end_turn");
    assert!(v["usage"]["inputTokens"].as_u64().unwrap() > 0);

    // A body changed after signing, a wrong secret, and no signature are all refused.
    for (req, kind) in [
        (
            signed(&server, path, &converse_body(false), AWS_SECRET, &[], true),
            "InvalidSignatureException",
        ),
        (
            signed(&server, path, &converse_body(false), "wrong", &[], false),
            "InvalidSignatureException",
        ),
    ] {
        let reply = server.send(req).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
        let t = reply.headers["x-amzn-errortype"].to_str().unwrap();
        assert!(t.starts_with(kind), "{t}");
        assert!(reply.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("The request signature we calculated does not match"));
    }
    let reply = server.post(path, converse_body(false), &[]).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn bedrock_converse_stream_is_event_stream_framed() {
    let server = start(None).await;
    let path = "/model/amazon.nova-lite-v1%3A0/converse-stream";
    let reply = server
        .send(signed(
            &server,
            path,
            &converse_body(false),
            AWS_SECRET,
            &[("x-mock-chunks", "3")],
            false,
        ))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.headers["content-type"],
        "application/vnd.amazon.eventstream"
    );
    let events = event_stream(&reply.body);
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "messageStart",
            "contentBlockDelta",
            "contentBlockDelta",
            "contentBlockDelta",
            "contentBlockStop",
            "messageStop",
            "metadata"
        ]
    );
    assert_eq!(events[5].1["stopReason"], "end_turn");
    assert_eq!(events[6].1["usage"]["outputTokens"], 3);
}

#[tokio::test]
async fn bedrock_tool_use_round_trip_and_validation() {
    let server = start(None).await;
    let path = "/model/m/converse-stream";
    let reply = server
        .send(signed(
            &server,
            path,
            &converse_body(true),
            AWS_SECRET,
            &[],
            false,
        ))
        .await;
    let events = event_stream(&reply.body);
    let start = &events[1];
    assert_eq!(start.0, "contentBlockStart");
    let id = start.1["start"]["toolUse"]["toolUseId"].as_str().unwrap();
    let input: String = events
        .iter()
        .filter_map(|(_, p)| p.pointer("/delta/toolUse/input").and_then(Value::as_str))
        .collect();
    assert!(serde_json::from_str::<Value>(&input).unwrap().is_object());
    assert_eq!(events[events.len() - 2].1["stopReason"], "tool_use");

    let mut next = converse_body(true);
    next["messages"] = json!([
        {"role": "user", "content": [{"text": "weather?"}]},
        {"role": "assistant", "content": [{"toolUse": {"toolUseId": id, "name": "get_weather", "input": {"city": "Paris"}}}]},
        {"role": "user", "content": [{"toolResult": {"toolUseId": id, "content": [{"text": "15C"}]}}]},
    ]);
    let reply = server
        .send(signed(
            &server,
            "/model/m/converse",
            &next,
            AWS_SECRET,
            &[],
            false,
        ))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["stopReason"], "end_turn");

    // What a careless translation sends is refused as Bedrock refuses it.
    let mut bad = next.clone();
    bad.as_object_mut().unwrap().remove("toolConfig");
    let mut unknown = converse_body(false);
    unknown["model"] = json!("m");
    let mut string_input = next.clone();
    string_input["messages"][1]["content"][0]["toolUse"]["input"] = json!("{}");
    for body in [bad, unknown, string_input] {
        let reply = server
            .send(signed(
                &server,
                "/model/m/converse",
                &body,
                AWS_SECRET,
                &[],
                false,
            ))
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(reply.headers["x-amzn-errortype"]
            .to_str()
            .unwrap()
            .starts_with("ValidationException"));
    }
}

#[tokio::test]
async fn bedrock_faults_use_aws_exceptions() {
    let server = start(None).await;
    for (status, kind) in [
        ("429", "ThrottlingException"),
        ("503", "ServiceUnavailableException"),
        ("500", "InternalServerException"),
    ] {
        let reply = server
            .send(signed(
                &server,
                "/model/m/converse",
                &converse_body(false),
                AWS_SECRET,
                &[("x-mock-status", status)],
                false,
            ))
            .await;
        assert_eq!(reply.status.as_str(), status);
        assert!(reply.headers["x-amzn-errortype"]
            .to_str()
            .unwrap()
            .starts_with(kind));
        assert!(reply.json()["message"].is_string());
    }
}
