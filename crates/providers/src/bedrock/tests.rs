//! Fixture tests for Bedrock Converse as a backend: requests from both caller formats,
//! complete responses and event-stream transcripts back to every caller format, usage, stop
//! reasons and error bodies.

use serde_json::{json, Value};

use super::{finish_from_bedrock, path, WireUsage};
use crate::{
    bedrock,
    chat::{FinishReason, StreamEvent, TranslateError},
    error::{classify, parse_upstream_error, UpstreamClass},
    eventstream,
    openai::chat::Dialect,
    test_util::{fixture, golden, normalise, sse_events},
    transcode::{self, BackendFormat, Format, Transcoder},
    Usage,
};

fn from_caller(format: Format, body: &Value) -> Result<Value, TranslateError> {
    transcode::request(
        format,
        BackendFormat::Bedrock,
        Dialect::Compatible,
        "bedrock",
        body.to_string().as_bytes(),
        "anthropic.claude-3-5-sonnet-20240620-v1:0",
    )
    .map(|b| serde_json::from_slice(&b).unwrap())
}

fn without_url_images(mut v: Value) -> Value {
    for m in v["messages"].as_array_mut().unwrap() {
        if let Some(parts) = m["content"].as_array_mut() {
            parts.retain(|p| {
                !(p["image_url"]["url"]
                    .as_str()
                    .is_some_and(|u| u.starts_with("http"))
                    || p["source"]["type"] == "url")
            });
        }
    }
    v
}

/// The stream fixture (messages as `{headers, payload}` JSON, from the ConverseStream
/// reference) framed as the event-stream bytes Bedrock sends.
fn transcript() -> Vec<u8> {
    let msgs: Vec<Value> = serde_json::from_slice(&fixture("bedrock/stream.json")).unwrap();
    let mut out = Vec::new();
    for m in msgs {
        let headers: Vec<(String, String)> = m["headers"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        let h: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        out.extend(eventstream::encode(&h, m["payload"].to_string().as_bytes()));
    }
    out
}

/// Feeds event-stream bytes cut at `cut` through the decoder and a transcoder.
fn transcode_at(to: Format, input: &[u8], cut: usize) -> Vec<u8> {
    let mut d = eventstream::Decoder::new();
    let mut t = Transcoder::new(BackendFormat::Bedrock, to, true);
    let mut out = Vec::new();
    for piece in [&input[..cut], &input[cut..]] {
        d.push(piece).unwrap();
        while let Some(m) = d.next_message() {
            t.on_event(&bedrock::envelope(&m), &mut out);
        }
    }
    t.finish(&mut out);
    out
}

fn events(input: &[u8]) -> Vec<StreamEvent> {
    let mut d = eventstream::Decoder::new();
    d.push(input).unwrap();
    let mut s = bedrock::StreamDecoder::default();
    let mut out = Vec::new();
    while let Some(m) = d.next_message() {
        s.decode(&bedrock::envelope(&m), &mut out);
    }
    out
}

// === requests ===

#[test]
fn openai_request_to_bedrock() {
    let body: Value = serde_json::from_slice(&fixture("openai/request.json")).unwrap();
    // Converse takes image bytes only: a URL is refused, naming the part.
    let err = from_caller(Format::OpenAiChat, &body).unwrap_err();
    assert!(matches!(err, TranslateError::Unsupported { .. }));
    assert_eq!(err.param(), "messages[0].content[2]");
    let v = from_caller(Format::OpenAiChat, &without_url_images(body)).unwrap();
    assert!(v.get("model").is_none() && v.get("stream").is_none());
    golden("openai_request_to_bedrock.json", &v);
}

#[test]
fn anthropic_request_to_bedrock() {
    let body: Value = serde_json::from_slice(&fixture("anthropic/request.json")).unwrap();
    let err = from_caller(Format::Anthropic, &body).unwrap_err();
    assert_eq!(err.param(), "messages[0].content[2]");
    let v = from_caller(Format::Anthropic, &without_url_images(body)).unwrap();
    // The thinking signature goes back unchanged, and tool input stays an object.
    assert_eq!(
        v["messages"][1]["content"][0]["reasoningContent"]["reasoningText"]["signature"],
        "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"
    );
    assert!(v["messages"][1]["content"][2]["toolUse"]["input"].is_object());
    golden("anthropic_request_to_bedrock.json", &v);
}

#[test]
fn tool_choice_and_settings() {
    let base = |choice: Value| {
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "string"}}}}}],
            "tool_choice": choice, "temperature": 1.5, "top_p": 0.5, "max_tokens": 9, "stop": ["S"],
            "reasoning_effort": "low"})
    };
    for (choice, expected) in [
        (json!("auto"), None),
        (json!("required"), Some(json!({"any": {}}))),
        (
            json!({"type": "function", "function": {"name": "f"}}),
            Some(json!({"tool": {"name": "f"}})),
        ),
    ] {
        let v = from_caller(Format::OpenAiChat, &base(choice)).unwrap();
        assert_eq!(v["toolConfig"].get("toolChoice").cloned(), expected);
        assert_eq!(
            v["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"]["properties"]["a"],
            json!({"type": "string"})
        );
        assert_eq!(
            v["inferenceConfig"],
            json!({"maxTokens": 9, "temperature": 1.0, "topP": 0.5, "stopSequences": ["S"]})
        );
        // A budget under max_tokens 9 beside a changed temperature is one Claude would
        // refuse: the effort is not turned into one.
        assert!(v.get("additionalModelRequestFields").is_none(), "{v}");
    }
    let mut roomy = base(json!("auto"));
    roomy["max_tokens"] = json!(4000);
    for k in ["temperature", "top_p"] {
        roomy.as_object_mut().unwrap().remove(k);
    }
    let v = from_caller(Format::OpenAiChat, &roomy).unwrap();
    assert_eq!(
        v["additionalModelRequestFields"],
        json!({"thinking": {"type": "enabled", "budget_tokens": 1024}})
    );
    // "none" without tool blocks: the tools are left out, so no call can happen.
    let v = from_caller(Format::OpenAiChat, &base(json!("none"))).unwrap();
    assert!(v.get("toolConfig").is_none());
    let mut json_mode = base(json!("auto"));
    json_mode["response_format"] = json!({"type": "json_object"});
    assert_eq!(
        from_caller(Format::OpenAiChat, &json_mode)
            .unwrap_err()
            .param(),
        "response_format"
    );
}

#[test]
fn model_ids_are_percent_encoded_in_paths() {
    assert_eq!(
        path("anthropic.claude-3-5-sonnet-20240620-v1:0", false),
        "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
    );
    assert_eq!(
        path("arn:aws:bedrock:us-east-1::foundation-model/x", true),
        "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A%3Afoundation-model%2Fx/converse-stream"
    );
}

// === responses ===

#[test]
fn response_to_every_caller_format() {
    let body = fixture("bedrock/response.json");
    for (to, name) in [
        (Format::OpenAiChat, "bedrock_response_to_openai.json"),
        (Format::Anthropic, "bedrock_response_to_anthropic.json"),
        (Format::Responses, "bedrock_response_to_responses.json"),
    ] {
        let (out, usage, finish) = transcode::response(BackendFormat::Bedrock, to, &body).unwrap();
        let mut v = normalise(serde_json::from_slice(&out).unwrap());
        strip_ids(&mut v);
        golden(name, &v);
        assert_eq!(finish, Some(FinishReason::ToolCalls));
        assert_eq!(
            usage,
            Some(Usage {
                input_tokens: 50,
                output_tokens: 62,
                cached_input_tokens: 20,
                cache_write_tokens: 0,
            })
        );
    }
}

#[test]
fn stop_reasons_and_usage() {
    for (s, r) in [
        ("end_turn", FinishReason::Stop),
        ("tool_use", FinishReason::ToolCalls),
        ("max_tokens", FinishReason::Length),
        ("stop_sequence", FinishReason::StopSequence),
        ("guardrail_intervened", FinishReason::ContentFilter),
        ("content_filtered", FinishReason::ContentFilter),
    ] {
        assert_eq!(finish_from_bedrock(s), r);
    }
    let u: WireUsage = serde_json::from_value(json!({"inputTokens": 5, "outputTokens": 7,
        "totalTokens": 22, "cacheReadInputTokens": 4, "cacheWriteInputTokens": 6}))
    .unwrap();
    assert_eq!(
        u.to_usage(),
        Usage {
            input_tokens: 15,
            output_tokens: 7,
            cached_input_tokens: 4,
            cache_write_tokens: 6,
        }
    );
}

#[test]
fn absurd_upstream_usage_saturates() {
    let u: WireUsage = serde_json::from_value(json!({"inputTokens": u64::MAX,
        "outputTokens": u64::MAX, "cacheReadInputTokens": u64::MAX,
        "cacheWriteInputTokens": 1}))
    .unwrap();
    assert_eq!(u.to_usage().input_tokens, u64::MAX);
    assert_eq!(u.to_usage().cached_input_tokens, u64::MAX);
}

// === streams ===

#[test]
fn stream_events() {
    let ev = events(&transcript());
    assert_eq!(
        ev,
        vec![
            StreamEvent::Start {
                id: String::new(),
                model: String::new(),
                usage: None
            },
            StreamEvent::Text("Let me check".into()),
            StreamEvent::Text(" the weather.".into()),
            StreamEvent::ToolCallStart {
                index: 0,
                id: "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q".into(),
                name: "get_weather".into()
            },
            StreamEvent::ToolCallArguments {
                index: 0,
                fragment: "{\"location\": ".into()
            },
            StreamEvent::ToolCallArguments {
                index: 0,
                fragment: "\"Paris, France\"}".into()
            },
            StreamEvent::Finish {
                reason: FinishReason::ToolCalls,
                stop_sequence: None
            },
            StreamEvent::Usage(Usage {
                input_tokens: 30,
                output_tokens: 21,
                cached_input_tokens: 0,
                cache_write_tokens: 0,
            }),
            StreamEvent::Done,
        ]
    );
}

#[test]
fn stream_to_every_caller_format_split_at_every_byte() {
    let input = transcript();
    for (to, name) in [
        (Format::OpenAiChat, "bedrock_stream_to_openai.json"),
        (Format::Anthropic, "bedrock_stream_to_anthropic.json"),
        (Format::Responses, "bedrock_stream_to_responses.json"),
    ] {
        let norm = |bytes: Vec<u8>| {
            let mut v = sse_events(&bytes);
            for e in v.as_array_mut().unwrap() {
                strip_ids(&mut e["data"]);
            }
            v
        };
        let v = norm(transcode_at(to, &input, input.len()));
        for cut in 0..input.len() {
            assert_eq!(
                norm(transcode_at(to, &input, cut)),
                v,
                "{name}, cut at {cut}"
            );
        }
        golden(name, &v);
    }
}

/// Generated ids and timestamps vary per run; the upstream's tool-use ids do not.
fn strip_ids(v: &mut Value) {
    match v {
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                let generated = match k.as_str() {
                    "created" | "created_at" | "completed_at" => true,
                    "id" | "item_id" => x.as_str().is_some_and(|s| !s.starts_with("tooluse_")),
                    _ => false,
                };
                if generated {
                    *x = json!(0);
                } else {
                    strip_ids(x);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(strip_ids),
        _ => {}
    }
}

#[test]
fn stream_exceptions_become_error_events() {
    let mut bytes = eventstream::encode(
        &[(":event-type", "messageStart"), (":message-type", "event")],
        br#"{"role":"assistant"}"#,
    );
    bytes.extend(eventstream::encode(
        &[
            (":exception-type", "throttlingException"),
            (":content-type", "application/json"),
            (":message-type", "exception"),
        ],
        br#"{"message":"Too many tokens, please wait before trying again."}"#,
    ));
    let ev = events(&bytes);
    assert_eq!(
        ev.last(),
        Some(&StreamEvent::Error {
            kind: "throttlingException".into(),
            message: "Too many tokens, please wait before trying again.".into()
        })
    );
}

// === errors ===

#[test]
fn error_bodies_are_parsed_and_classified() {
    let cases = [
        (
            429,
            "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/",
            "error_throttling.json",
            UpstreamClass::RateLimited,
        ),
        (
            400,
            "ValidationException",
            "error_validation.json",
            UpstreamClass::Caller,
        ),
        (
            403,
            // The credentials may not use this model (or action): the request's refusal,
            // not the key's; the signature and token errors below are the key's.
            "AccessDeniedException",
            "error_validation.json",
            UpstreamClass::Caller,
        ),
        (
            403,
            "InvalidSignatureException",
            "error_validation.json",
            UpstreamClass::KeyRejected,
        ),
        (
            400,
            "ServiceQuotaExceededException",
            "error_throttling.json",
            UpstreamClass::RateLimited,
        ),
        (
            429,
            "ModelNotReadyException",
            "error_throttling.json",
            UpstreamClass::Overloaded,
        ),
        (
            503,
            "ServiceUnavailableException",
            "error_throttling.json",
            UpstreamClass::Overloaded,
        ),
        (
            408,
            "ModelTimeoutException",
            "error_throttling.json",
            UpstreamClass::Upstream,
        ),
        (
            500,
            "InternalServerException",
            "error_throttling.json",
            UpstreamClass::Upstream,
        ),
    ];
    for (status, header, file, class) in cases {
        let body = fixture(&format!("bedrock/{file}"));
        let (message, code) = parse_upstream_error(&body, Some(header)).unwrap();
        assert!(!message.is_empty());
        let code = code.unwrap();
        assert!(!code.contains(':'), "{code}");
        assert_eq!(classify(status, Some(&code)), class, "{header}");
    }
    // Without the header, the body's `__type` names it.
    let (_, code) = parse_upstream_error(
        br#"{"__type":"com.amazon.coral.service#ThrottlingException","message":"slow down"}"#,
        None,
    )
    .unwrap();
    assert_eq!(code.as_deref(), Some("ThrottlingException"));
}

#[test]
fn the_called_model_is_named_where_converse_names_none() {
    let body = fixture("bedrock/response.json");
    let (out, _, _) = transcode::response_naming_model(
        BackendFormat::Bedrock,
        Format::OpenAiChat,
        None,
        &body,
        "amazon.nova-pro-v1:0",
    )
    .unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["model"], "amazon.nova-pro-v1:0");
    let mut t = Transcoder::new(BackendFormat::Bedrock, Format::Anthropic, false)
        .naming_model("amazon.nova-pro-v1:0");
    let mut out = Vec::new();
    let mut d = eventstream::Decoder::new();
    d.push(&transcript()).unwrap();
    while let Some(m) = d.next_message() {
        t.on_event(&bedrock::envelope(&m), &mut out);
    }
    let events = sse_events(&out);
    assert_eq!(
        events[0]["data"]["message"]["model"],
        "amazon.nova-pro-v1:0"
    );
}
