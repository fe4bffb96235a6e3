//! Fixture tests for Gemini as a backend: requests from both caller formats, complete
//! responses and streams back to both, usage, finish reasons and error bodies.

use serde_json::{json, Value};

use super::{convert::finish_from_gemini, WireUsage};
use crate::{
    chat::{FinishReason, StreamEvent, TranslateError},
    error::{classify, parse_openai_error, UpstreamClass},
    gemini,
    openai::chat::Dialect,
    sse,
    test_util::{fixture, golden, normalise, sse_events, transcode},
    transcode::{self, BackendFormat, Format},
    Usage,
};

/// Translates an OpenAI chat request body to a Gemini request.
fn from_openai(body: Value) -> Result<Value, TranslateError> {
    transcode::request(
        Format::OpenAiChat,
        BackendFormat::Gemini,
        Dialect::Compatible,
        "gemini",
        body.to_string().as_bytes(),
        "gemini-2.5-flash",
    )
    .map(|b| serde_json::from_slice(&b).unwrap())
}

fn events(input: &[u8]) -> Vec<StreamEvent> {
    let mut parser = sse::Parser::new();
    parser.push(input).unwrap();
    let mut d = gemini::StreamDecoder::default();
    let mut out = Vec::new();
    while let Some(ev) = parser.next_event() {
        d.decode(&ev.data, &mut out);
    }
    out
}

// === requests ===

#[test]
fn openai_request_to_gemini() {
    let out = transcode::request(
        Format::OpenAiChat,
        BackendFormat::Gemini,
        Dialect::Compatible,
        "gemini",
        &fixture("openai/request.json"),
        "gemini-2.5-flash",
    )
    .unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    // The model and streaming go in the URL, never in the body.
    assert!(v.get("model").is_none() && v.get("stream").is_none());
    golden("openai_request_to_gemini.json", &v);
}

#[test]
fn anthropic_request_to_gemini() {
    let out = transcode::request(
        Format::Anthropic,
        BackendFormat::Gemini,
        Dialect::Compatible,
        "gemini",
        &fixture("anthropic/request.json"),
        "gemini-2.5-pro",
    )
    .unwrap();
    golden(
        "anthropic_request_to_gemini.json",
        &serde_json::from_slice(&out).unwrap(),
    );
}

#[test]
fn system_roles_and_turns() {
    let v = from_openai(json!({"model": "m", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Again"},
        {"role": "user", "content": "and again"},
    ]}))
    .unwrap();
    assert_eq!(
        v["systemInstruction"],
        json!({"parts": [{"text": "Be brief."}]})
    );
    let contents = v["contents"].as_array().unwrap();
    let roles: Vec<&str> = contents
        .iter()
        .map(|c| c["role"].as_str().unwrap())
        .collect();
    // Consecutive user messages become one turn: Gemini wants turns to alternate.
    assert_eq!(roles, ["user", "model", "user"]);
    assert_eq!(
        contents[2]["parts"],
        json!([{"text": "Again"}, {"text": "and again"}])
    );
    assert!(v.get("generationConfig").is_none());
}

#[test]
fn tool_choice_modes() {
    let base = |choice: Value| {
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "string"}}}}}],
            "tool_choice": choice})
    };
    for (choice, config) in [
        (json!("auto"), json!({"mode": "AUTO"})),
        (json!("none"), json!({"mode": "NONE"})),
        (json!("required"), json!({"mode": "ANY"})),
        (
            json!({"type": "function", "function": {"name": "f"}}),
            json!({"mode": "ANY", "allowedFunctionNames": ["f"]}),
        ),
    ] {
        let v = from_openai(base(choice)).unwrap();
        assert_eq!(v["toolConfig"]["functionCallingConfig"], config);
        assert_eq!(
            v["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"]["properties"]["a"],
            json!({"type": "string"})
        );
    }
    let v = from_openai(
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
        "tools": [{"type": "function", "function": {"name": "f"}}]}),
    )
    .unwrap();
    assert!(v.get("toolConfig").is_none());
    // A function without arguments is declared without a schema.
    assert_eq!(
        v["tools"],
        json!([{"functionDeclarations": [{"name": "f"}]}])
    );
}

#[test]
fn tool_results_become_function_responses_named_after_their_call() {
    let v = from_openai(json!({"model": "m", "messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "tool_calls": [
            {"id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}},
            {"id": "call_1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "{\"time\":\"10:00\"}"},
        {"role": "tool", "tool_call_id": "call_0", "content": "rainy"},
        {"role": "assistant", "tool_calls": [
            {"id": "call_0", "type": "function", "function": {"name": "get_news", "arguments": "{}"}},
        ]},
        {"role": "tool", "tool_call_id": "call_0", "content": "[1,2]"},
    ]}))
    .unwrap();
    let c = &v["contents"];
    assert_eq!(
        c[1]["parts"][0],
        json!({"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}, "thoughtSignature": "skip_thought_signature_validator"})
    );
    assert_eq!(
        c[1]["parts"][1],
        json!({"functionCall": {"name": "get_time", "args": {}}})
    );
    assert_eq!(c[2]["role"], "user");
    assert_eq!(
        c[2]["parts"],
        json!([
            {"functionResponse": {"name": "get_time", "response": {"time": "10:00"}}},
            {"functionResponse": {"name": "get_weather", "response": {"output": "rainy"}}},
        ])
    );
    // A repeated id answers the latest call that had it.
    assert_eq!(
        c[4]["parts"],
        json!([{"functionResponse": {"name": "get_news", "response": {"output": [1, 2]}}}])
    );
}

#[test]
fn failed_tool_results_are_errors() {
    let out = transcode::request(
        Format::Anthropic,
        BackendFormat::Gemini,
        Dialect::Compatible,
        "gemini",
        json!({"model": "m", "max_tokens": 5, "messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "is_error": true, "content": "boom"}]},
        ]})
        .to_string()
        .as_bytes(),
        "g",
    )
    .unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        v["contents"][2]["parts"][0]["functionResponse"]["response"],
        json!({"error": "boom"})
    );
}

#[test]
fn json_mode_and_generation_config() {
    let v = from_openai(
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
        "response_format": {"type": "json_object"}, "temperature": 1.5, "top_p": 0.5,
        "max_tokens": 99, "stop": ["a", "b"]}),
    )
    .unwrap();
    assert_eq!(
        v["generationConfig"],
        json!({"responseMimeType": "application/json", "temperature": 1.5, "topP": 0.5,
            "maxOutputTokens": 99, "stopSequences": ["a", "b"]})
    );
    let schema = json!({"type": "object", "properties": {"n": {"type": "integer"}},
        "required": ["n"], "additionalProperties": false});
    let v = from_openai(json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "r", "strict": true, "schema": schema}}}))
    .unwrap();
    assert_eq!(
        v["generationConfig"]["responseMimeType"],
        "application/json"
    );
    assert_eq!(v["generationConfig"]["responseJsonSchema"], schema);
}

#[test]
fn refuses_what_gemini_cannot_take() {
    let cases = [
        // An image URL whose media type cannot be told.
        (
            json!({"model": "m", "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "https://example.com/render?id=7"}}]}]}),
            "messages[0].content[0]",
            true,
        ),
        // A tool result answering no call.
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"},
                {"role": "tool", "tool_call_id": "nope", "content": "r"}]}),
            "messages[0].content[1].tool_call_id",
            false,
        ),
        // Nothing to send.
        (
            json!({"model": "m", "messages": [{"role": "system", "content": "only a system prompt"}]}),
            "messages",
            false,
        ),
    ];
    for (body, param, unsupported) in cases {
        let err = from_openai(body).unwrap_err();
        assert_eq!(err.param(), param, "{err:?}");
        assert_eq!(
            matches!(err, TranslateError::Unsupported { .. }),
            unsupported,
            "{err:?}"
        );
    }
    // Known extensions go as fileData, query strings aside.
    let v = from_openai(
        json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/a.PNG?x=1"}}]}]}),
    )
    .unwrap();
    assert_eq!(
        v["contents"][0]["parts"][0],
        json!({"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/a.PNG?x=1"}})
    );
}

#[test]
fn thinking_budget() {
    let out = transcode::request(
        Format::Anthropic,
        BackendFormat::Gemini,
        Dialect::Compatible,
        "gemini",
        json!({"model": "m", "max_tokens": 5000, "thinking": {"type": "enabled", "budget_tokens": 2048},
            "messages": [{"role": "user", "content": "x"}]})
        .to_string()
        .as_bytes(),
        "g",
    )
    .unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        v["generationConfig"]["thinkingConfig"],
        json!({"thinkingBudget": 2048, "includeThoughts": true})
    );
}

// === responses ===

#[test]
fn gemini_response_to_openai() {
    let (out, usage, finish) = transcode::response(
        BackendFormat::Gemini,
        Format::OpenAiChat,
        &fixture("gemini/response.json"),
    )
    .unwrap();
    // Thinking tokens are output; the cached tokens are part of the prompt count.
    assert_eq!(
        usage,
        Some(Usage {
            input_tokens: 1210,
            output_tokens: 212,
            cached_input_tokens: 1024,
            cache_write_tokens: 0,
        })
    );
    assert_eq!(finish, Some(FinishReason::ToolCalls));
    golden(
        "gemini_response_to_openai.json",
        &normalise(serde_json::from_slice(&out).unwrap()),
    );
}

#[test]
fn gemini_response_to_anthropic() {
    let (out, _, _) = transcode::response(
        BackendFormat::Gemini,
        Format::Anthropic,
        &fixture("gemini/response.json"),
    )
    .unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    // tool_use input is always an object, and ids are made up from the response id.
    assert_eq!(v["content"][2]["id"], "call_mNabaJ7DLq2W1dkPr_rT0AI_0");
    assert_eq!(v["content"][3]["id"], "call_mNabaJ7DLq2W1dkPr_rT0AI_1");
    assert!(v["content"][3]["input"].is_object());
    golden("gemini_response_to_anthropic.json", &v);
}

#[test]
fn finish_reasons() {
    for (g, r) in [
        ("STOP", FinishReason::Stop),
        ("MAX_TOKENS", FinishReason::Length),
        ("SAFETY", FinishReason::ContentFilter),
        ("RECITATION", FinishReason::ContentFilter),
        ("PROHIBITED_CONTENT", FinishReason::ContentFilter),
        ("SPII", FinishReason::ContentFilter),
        ("BLOCKLIST", FinishReason::ContentFilter),
        ("MALFORMED_FUNCTION_CALL", FinishReason::Stop),
        ("OTHER", FinishReason::Stop),
    ] {
        assert_eq!(finish_from_gemini(g), r, "{g}");
    }
    // A blocked prompt has no candidate at all.
    let blocked = br#"{"promptFeedback":{"blockReason":"SAFETY"},"usageMetadata":{"promptTokenCount":7,"totalTokenCount":7},"modelVersion":"gemini-2.5-flash","responseId":"b1"}"#;
    let (out, usage, finish) =
        transcode::response(BackendFormat::Gemini, Format::OpenAiChat, blocked).unwrap();
    assert_eq!(finish, Some(FinishReason::ContentFilter));
    assert_eq!(usage.map(|u| u.input_tokens), Some(7));
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(
        events(b"data: {\"promptFeedback\":{\"blockReason\":\"OTHER\"}}\n\n")[1],
        StreamEvent::Finish {
            reason: FinishReason::ContentFilter,
            stop_sequence: None
        }
    );
}

// === streams ===

#[test]
fn gemini_stream_to_openai() {
    let out = transcode(
        BackendFormat::Gemini,
        Format::OpenAiChat,
        &fixture("gemini/stream.sse"),
        &[],
    );
    golden("gemini_stream_to_openai.json", &sse_events(&out));
}

#[test]
fn gemini_stream_to_anthropic() {
    let out = transcode(
        BackendFormat::Gemini,
        Format::Anthropic,
        &fixture("gemini/stream.sse"),
        &[],
    );
    golden("gemini_stream_to_anthropic.json", &sse_events(&out));
}

#[test]
fn gemini_tool_stream_to_both() {
    let input = fixture("gemini/stream_tool.sse");
    golden(
        "gemini_tool_stream_to_openai.json",
        &sse_events(&transcode(
            BackendFormat::Gemini,
            Format::OpenAiChat,
            &input,
            &[],
        )),
    );
    golden(
        "gemini_tool_stream_to_anthropic.json",
        &sse_events(&transcode(
            BackendFormat::Gemini,
            Format::Anthropic,
            &input,
            &[],
        )),
    );
}

#[test]
fn whole_function_calls_become_a_start_and_all_arguments() {
    let ev = events(&fixture("gemini/stream_tool.sse"));
    let id = "call_x4ibaOSYJ9-h1dkPqt6bqAE";
    assert_eq!(
        ev,
        vec![
            StreamEvent::Start {
                id: "x4ibaOSYJ9-h1dkPqt6bqAE".into(),
                model: "gemini-2.5-flash".into(),
                usage: None
            },
            StreamEvent::Text("Checking both cities.".into()),
            StreamEvent::Usage(Usage {
                input_tokens: 61,
                output_tokens: 4,
                cached_input_tokens: 0,
                cache_write_tokens: 0,
            }),
            StreamEvent::ToolCallStart {
                index: 0,
                id: format!("{id}_0"),
                name: "get_weather".into()
            },
            StreamEvent::ToolCallArguments {
                index: 0,
                fragment: r#"{"location":"Paris, France","unit":"celsius"}"#.into()
            },
            StreamEvent::ToolCallStart {
                index: 1,
                id: format!("{id}_1"),
                name: "get_time".into()
            },
            StreamEvent::ToolCallArguments {
                index: 1,
                fragment: "{}".into()
            },
            StreamEvent::Finish {
                reason: FinishReason::ToolCalls,
                stop_sequence: None
            },
            StreamEvent::Usage(Usage {
                input_tokens: 61,
                output_tokens: 30,
                cached_input_tokens: 0,
                cache_write_tokens: 0,
            }),
        ]
    );
}

#[test]
fn streams_split_at_every_byte_give_the_same_events() {
    for name in ["gemini/stream.sse", "gemini/stream_tool.sse"] {
        let input = fixture(name);
        for to in [Format::OpenAiChat, Format::Anthropic] {
            let whole = sse_events(&transcode(BackendFormat::Gemini, to, &input, &[]));
            for cut in 0..=input.len() {
                let split = sse_events(&transcode(BackendFormat::Gemini, to, &input, &[cut]));
                assert_eq!(split, whole, "{name} to {to:?} split at byte {cut}");
            }
        }
    }
}

#[test]
fn stream_errors_and_usage() {
    let ev = events(
        b"data: {\"error\":{\"code\":503,\"message\":\"The model is overloaded.\",\"status\":\"UNAVAILABLE\"}}\r\n\r\n",
    );
    assert_eq!(
        ev,
        vec![StreamEvent::Error {
            kind: "UNAVAILABLE".into(),
            message: "The model is overloaded.".into()
        }]
    );
    let last_usage = events(&fixture("gemini/stream.sse"))
        .into_iter()
        .filter_map(|e| match e {
            StreamEvent::Usage(u) => Some(u),
            _ => None,
        })
        .next_back();
    assert_eq!(
        last_usage,
        Some(Usage {
            input_tokens: 9,
            output_tokens: 48,
            cached_input_tokens: 4,
            cache_write_tokens: 0,
        })
    );
}

// === errors and usage ===

#[test]
fn error_bodies_and_classes() {
    for (name, status, code, class) in [
        (
            "gemini/error_rate_limit.json",
            429,
            "RESOURCE_EXHAUSTED",
            UpstreamClass::RateLimited,
        ),
        (
            "gemini/error_api_key.json",
            400,
            "API_KEY_INVALID",
            UpstreamClass::KeyRejected,
        ),
        (
            "gemini/error_unavailable.json",
            503,
            "UNAVAILABLE",
            UpstreamClass::Overloaded,
        ),
        (
            "gemini/error_invalid_argument.json",
            400,
            "INVALID_ARGUMENT",
            UpstreamClass::Caller,
        ),
    ] {
        let (message, c) = parse_openai_error(&fixture(name)).unwrap();
        assert!(!message.is_empty(), "{name}");
        assert_eq!(c.as_deref(), Some(code), "{name}");
        assert_eq!(classify(status, c.as_deref()), class, "{name}");
    }
    let internal = br#"{"error":{"code":500,"message":"An internal error has occurred.","status":"INTERNAL"}}"#;
    let (_, c) = parse_openai_error(internal).unwrap();
    assert_eq!(classify(500, c.as_deref()), UpstreamClass::Upstream);
    let denied =
        br#"{"error":{"code":403,"message":"Permission denied.","status":"PERMISSION_DENIED"}}"#;
    let (_, c) = parse_openai_error(denied).unwrap();
    // A key that may not do this (without an API_KEY_* reason) stays in service.
    assert_eq!(classify(403, c.as_deref()), UpstreamClass::Caller);
}

#[test]
fn absurd_upstream_usage_saturates() {
    let u = WireUsage {
        prompt_token_count: u64::MAX,
        candidates_token_count: u64::MAX,
        cached_content_token_count: 0,
        thoughts_token_count: u64::MAX,
        tool_use_prompt_token_count: u64::MAX,
    }
    .to_usage();
    assert_eq!((u.input_tokens, u.output_tokens), (u64::MAX, u64::MAX));
}

#[test]
fn usage_counts_thoughts_as_output() {
    let u = WireUsage {
        prompt_token_count: 100,
        candidates_token_count: 10,
        cached_content_token_count: 60,
        thoughts_token_count: 5,
        tool_use_prompt_token_count: 3,
    }
    .to_usage();
    assert_eq!(
        u,
        Usage {
            input_tokens: 103,
            output_tokens: 15,
            cached_input_tokens: 60,
            cache_write_tokens: 0,
        }
    );
}
