//! Fixture tests for the Anthropic format in both directions. Inputs under `fixtures/` are
//! written from the providers' public API references; outputs are golden files under
//! `fixtures/golden/` (reviewed by hand; `SWITCHYARD_UPDATE_GOLDEN=1` rewrites them).

use serde_json::{json, Value};

use crate::{
    anthropic::{self, Endpoint, Request, WireUsage},
    chat::{Part, TranslateError},
    error::parse_openai_error,
    openai::{self, chat::Dialect},
    sse,
    test_util::{fixture, golden, normalise, sse_events, transcode},
    transcode::{self, BackendFormat, Format, Transcoder},
    Usage,
};

// === requests ===

#[test]
fn anthropic_request_to_openai() {
    let out = transcode::request(
        Format::Anthropic,
        Format::OpenAiChat,
        Dialect::OpenAi,
        "openai",
        &fixture("anthropic/request.json"),
        "gpt-4o",
    )
    .unwrap();
    golden(
        "anthropic_request_to_openai.json",
        &serde_json::from_slice(&out).unwrap(),
    );
}

/// The real Claude Code request the agentic bench translates (issue #21): its texts and
/// schemas are copied from the body rather than decoded and escaped again, so the golden file
/// (written by the `Value`-based translation this replaced) pins that nothing changed but
/// spelling: schema keys keep the caller's order, escapes the caller's spelling.
#[test]
fn bench_claude_code_request_to_openai() {
    let body = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../bench/bodies/claude-code.json"
    ))
    .unwrap();
    let out = transcode::request(
        Format::Anthropic,
        Format::OpenAiChat,
        Dialect::OpenAi,
        "openai",
        &body,
        "upstream-model",
    )
    .unwrap();
    golden(
        "bench_claude_code_request_to_openai.json",
        &serde_json::from_slice(&out).unwrap(),
    );
}

/// Every other translation the agentic bench measures (issue #21), pinned by golden files
/// the `Value`-building decoders and encoders wrote before they were replaced by borrowing
/// ones: outputs must stay JSON-equal.
#[test]
fn bench_bodies_translate_as_before() {
    let body = |name: &str| {
        std::fs::read(format!(
            "{}/../../bench/bodies/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    };
    for (golden_name, from, to, file) in [
        (
            "claude_code",
            Format::Anthropic,
            BackendFormat::Gemini,
            "claude-code.json",
        ),
        (
            "claude_code",
            Format::Anthropic,
            BackendFormat::Bedrock,
            "claude-code.json",
        ),
        (
            "openai_70k",
            Format::OpenAiChat,
            BackendFormat::Anthropic,
            "openai-70k-model-last.json",
        ),
        (
            "openai_70k",
            Format::OpenAiChat,
            BackendFormat::Gemini,
            "openai-70k-model-last.json",
        ),
        (
            "codex",
            Format::Responses,
            BackendFormat::OpenAiChat,
            "codex.json",
        ),
        (
            "codex",
            Format::Responses,
            BackendFormat::Anthropic,
            "codex.json",
        ),
    ] {
        let out = transcode::request(
            from,
            to,
            Dialect::OpenAi,
            "x",
            &body(file),
            "upstream-model",
        )
        .unwrap_or_else(|e| panic!("{golden_name} to {to:?}: {e}"));
        let to_name = match to {
            BackendFormat::OpenAiChat => "openai",
            BackendFormat::Anthropic => "anthropic",
            BackendFormat::Gemini => "gemini",
            BackendFormat::Bedrock => "bedrock",
        };
        golden(
            &format!("bench_{golden_name}_request_to_{to_name}.json"),
            &serde_json::from_slice(&out).unwrap(),
        );
    }
}

/// The one-pass decoder accepts exactly the bodies a `Value` parse accepts, and refuses the
/// others with its words: the pieces it keeps raw or skips are checked as a parse would.
#[test]
fn anthropic_decode_accepts_what_a_value_parse_accepts() {
    let deep = |n: usize| "[".repeat(n) + &"]".repeat(n);
    let msg = |content: &str| {
        format!(
            r#"{{"model":"m","max_tokens":5,"messages":[{{"role":"user","content":{content}}}]}}"#
        )
    };
    let tool = |schema: &str| {
        format!(
            r#"{{"model":"m","max_tokens":5,"messages":[{{"role":"user","content":"hi"}}],"tools":[{{"name":"t","input_schema":{schema},"description":"d"}}]}}"#
        )
    };
    let bodies = [
        msg(r#"[{"type":"text","text":"lone \ud800 surrogate"}]"#),
        msg(r#"[{"type":"text","text":"pair \ud83d\ude00 ok"}]"#),
        msg(r#"[{"type":"text","text":"x","extra":1e400}]"#),
        msg(r#"[{"type":"thinking","thinking":"\udc00","signature":"s"}]"#),
        msg(r#"[{"type":"text","text":"a","text":"b"}]"#),
        msg(r#"[{"type":"text","text":"a","text":null}]"#),
        msg(r#"[{"type":"text","text":5}]"#),
        msg(r#"[{"type":"text","text":[[1e400]]}]"#),
        msg(
            r#"[{"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":"\ud800"}]}]"#,
        ),
        msg(r#"[5, {"type":"text","text":"x"}]"#),
        msg(r#""plain \u00e9 string""#),
        msg(r#"[{"type":"text","text":"x","cache_control":{"type":"ephemeral","n":1e400}}]"#),
        msg(&format!(r#"[{{"type":"text","text":"x","z":{}}}]"#, deep(123))),
        msg(&format!(r#"[{{"type":"text","text":{}}}]"#, deep(122))),
        msg(&format!(r#"[{{"type":"text","text":{}}}]"#, deep(123))),
        msg(&format!(r#"[{{"type":"text","text":{}}}]"#, deep(124))),
        tool(&format!(
            r#"{{"type":"object","properties":{{"a":{}}}}}"#,
            deep(121)
        )),
        tool(&format!(
            r#"{{"type":"object","properties":{{"a":{}}}}}"#,
            deep(122)
        )),
        tool(&format!(
            r#"{{"type":"object","properties":{{"a":{}}}}}"#,
            deep(123)
        )),
        tool(r#"{"type":"object","x":1e400}"#),
        tool(r#"{"type":"object","x":"\ud800"}"#),
        tool("[1, 2]"),
        r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}],"context_management":[1e400]}"#.into(),
        r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}],"system":[{"type":"text","text":"a\u0000"}]}"#.into(),
        r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]} trailing"#.into(),
        r#"[1, 2]"#.into(),
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"\u{80}\"}]}".into(),
    ];
    let mut refused = 0;
    for body in &bodies {
        let by_value = serde_json::from_str::<Value>(body);
        let decoded = anthropic::decode_request(body.as_bytes(), "openai");
        match (&by_value, &decoded) {
            (Err(e), Err(d)) => {
                refused += 1;
                assert_eq!(
                    d.to_string(),
                    format!("invalid request: the body is not valid JSON: {e}"),
                    "{body}"
                )
            }
            (Ok(_), Err(TranslateError::Invalid { message, .. })) => {
                assert!(!message.contains("not valid JSON"), "{body}: {message}")
            }
            (Ok(_), _) => {}
            (Err(e), Ok(_)) => panic!("{body}: accepted, but a Value parse says {e}"),
        }
    }
    assert!(refused >= 10, "{refused}");
    // Invalid UTF-8 outside any string, and inside one.
    for body in [&b"{\"model\":\"m\",\xff}"[..], b"{\"model\":\"m\xff\"}"] {
        let e = serde_json::from_slice::<Value>(body).unwrap_err();
        let d = anthropic::decode_request(body, "openai").unwrap_err();
        assert_eq!(
            d.to_string(),
            format!("invalid request: the body is not valid JSON: {e}")
        );
    }
    // The last of a repeated key wins, as in a `Value` map.
    let body = msg(r#"[{"type":"text","text":"a","text":"b"}]"#);
    let req = anthropic::decode_request(body.as_bytes(), "openai").unwrap();
    assert!(matches!(&req.messages[0].content[..], [Part::Text(t)] if t == "b"));
}

#[test]
fn openai_request_to_anthropic() {
    let out = transcode::request(
        Format::OpenAiChat,
        Format::Anthropic,
        Dialect::Compatible,
        "anthropic",
        &fixture("openai/request.json"),
        "claude-sonnet-4-5",
    )
    .unwrap();
    golden(
        "openai_request_to_anthropic.json",
        &serde_json::from_slice(&out).unwrap(),
    );
}

#[test]
fn anthropic_round_trip_keeps_signatures_and_object_inputs() {
    let body = fixture("anthropic/request.json");
    let ir = anthropic::decode_request(&body, "anthropic").unwrap();
    let out: Value =
        serde_json::from_slice(&anthropic::encode_request(&ir, "claude-sonnet-4-5").unwrap())
            .unwrap();
    let orig: Value = serde_json::from_slice(&body).unwrap();
    // Every turn survives with its thinking signature and its tool_use input object.
    assert_eq!(out["messages"][1], orig["messages"][1]);
    assert_eq!(out["messages"][0], orig["messages"][0]);
    assert!(out["messages"][1]["content"][2]["input"].is_object());
    assert_eq!(out["tool_choice"], orig["tool_choice"]);
}

#[test]
fn tool_arguments_always_become_objects() {
    let body = json!({"model": "m", "messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "f", "arguments": ""}},
            {"id": "b", "type": "function", "function": {"name": "g", "arguments": "[1,2]"}},
        ]},
    ]});
    let out = transcode::request(
        Format::OpenAiChat,
        Format::Anthropic,
        Dialect::Compatible,
        "anthropic",
        body.to_string().as_bytes(),
        "c",
    )
    .unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    let blocks = &v["messages"][1]["content"];
    assert_eq!(blocks[0]["input"], json!({}));
    assert_eq!(blocks[1]["input"], json!({"_raw_arguments": "[1,2]"}));
}

#[test]
fn refuses_what_the_target_cannot_express() {
    let cases: [(Format, Value, &str); 5] = [
        (
            Format::OpenAiChat,
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}}),
            "response_format",
        ),
        (
            Format::OpenAiChat,
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2}),
            "n",
        ),
        (
            Format::OpenAiChat,
            json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}),
            "messages[0].content[0].type",
        ),
        (
            Format::Anthropic,
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]}),
            "messages[0].content[0].type",
        ),
        (
            Format::Anthropic,
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "web_fetch_20250910", "name": "web_fetch"}]}),
            "tools[0].type",
        ),
    ];
    for (from, body, param) in cases {
        let to = match from {
            Format::OpenAiChat => Format::Anthropic,
            Format::Anthropic | Format::Responses => Format::OpenAiChat,
        };
        let err = transcode::request(
            from,
            to,
            Dialect::OpenAi,
            "x",
            body.to_string().as_bytes(),
            "t",
        )
        .unwrap_err();
        assert!(matches!(err, TranslateError::Unsupported { .. }), "{err:?}");
        assert_eq!(err.param(), param);
    }
}

#[test]
fn passthrough_rewrites_only_the_model() {
    let body = br#"{"model":"claude-x","max_tokens":10,"messages":[{"role":"user","content":"hi"}],"thinking":{"type":"enabled","budget_tokens":2048},"stream":true}"#;
    let req = Request::decode(Endpoint::Messages, body).unwrap();
    assert!(req.stream);
    assert_eq!(req.max_tokens, Some(10));
    let out = String::from_utf8(req.encode("claude-y")).unwrap();
    assert_eq!(
        out,
        String::from_utf8_lossy(body).replace("claude-x", "claude-y")
    );
    let missing = br#"{"model":"c","messages":[]}"#;
    assert_eq!(
        Request::decode(Endpoint::Messages, missing)
            .err()
            .and_then(|e| e.param()),
        Some("max_tokens")
    );
    assert!(Request::decode(Endpoint::CountTokens, missing).is_ok());
}

// === responses ===

#[test]
fn anthropic_response_to_openai() {
    let (out, usage, _) = transcode::response(
        Format::Anthropic,
        Format::OpenAiChat,
        &fixture("anthropic/response.json"),
    )
    .unwrap();
    // input 2095 + cache read 1800 + cache write 100.
    assert_eq!(
        usage,
        Some(Usage {
            input_tokens: 3995,
            output_tokens: 503,
            cached_input_tokens: 1800,
            cache_write_tokens: 100,
        })
    );
    golden(
        "anthropic_response_to_openai.json",
        &normalise(serde_json::from_slice(&out).unwrap()),
    );
}

#[test]
fn openai_response_to_anthropic() {
    let (out, usage, _) = transcode::response(
        Format::OpenAiChat,
        Format::Anthropic,
        &fixture("openai/response.json"),
    )
    .unwrap();
    assert_eq!(
        usage,
        Some(Usage {
            input_tokens: 1117,
            output_tokens: 46,
            cached_input_tokens: 1024,
            cache_write_tokens: 0,
        })
    );
    golden(
        "openai_response_to_anthropic.json",
        &serde_json::from_slice(&out).unwrap(),
    );
}

#[test]
fn reasoning_keeps_its_signature_through_the_model() {
    let resp = anthropic::decode_response(&fixture("anthropic/response.json")).unwrap();
    assert!(
        matches!(&resp.content[0], Part::Reasoning { signature: Some(s), .. } if s == "EqQBCgIYAhIM")
    );
    let back: Value = serde_json::from_slice(&anthropic::encode_response(&resp)).unwrap();
    let orig: Value = serde_json::from_slice(&fixture("anthropic/response.json")).unwrap();
    assert_eq!(back["content"], orig["content"]);
    assert_eq!(back["stop_reason"], "tool_use");
}

// === streams ===

#[test]
fn anthropic_stream_to_openai() {
    let input = fixture("anthropic/stream.sse");
    let out = transcode(Format::Anthropic, Format::OpenAiChat, &input, &[]);
    golden("anthropic_stream_to_openai.json", &sse_events(&out));
}

#[test]
fn openai_stream_to_anthropic() {
    let input = fixture("openai/stream.sse");
    let out = transcode(Format::OpenAiChat, Format::Anthropic, &input, &[]);
    golden("openai_stream_to_anthropic.json", &sse_events(&out));
}

#[test]
fn streams_split_at_every_byte_give_the_same_events() {
    for (from, to, name) in [
        (
            Format::Anthropic,
            Format::OpenAiChat,
            "anthropic/stream.sse",
        ),
        (Format::OpenAiChat, Format::Anthropic, "openai/stream.sse"),
    ] {
        let input = fixture(name);
        let whole = sse_events(&transcode(from, to, &input, &[]));
        for cut in 0..=input.len() {
            let split = sse_events(&transcode(from, to, &input, &[cut]));
            assert_eq!(split, whole, "{name} split at byte {cut}");
        }
    }
}

#[test]
fn stream_usage_comes_from_message_start_and_message_delta() {
    let input = fixture("anthropic/stream.sse");
    let mut parser = sse::Parser::new();
    parser.push(&input).unwrap();
    let mut t = Transcoder::new(Format::Anthropic, Format::OpenAiChat, false);
    let mut out = Vec::new();
    let mut usage = None;
    while let Some(ev) = parser.next_event() {
        if let Some(u) = t.on_event(&ev.data, &mut out).usage {
            usage = Some(u);
        }
    }
    assert_eq!(
        usage,
        Some(Usage {
            input_tokens: 872,
            output_tokens: 89,
            cached_input_tokens: 400,
            cache_write_tokens: 0,
        })
    );
    // The client did not ask for the usage chunk: none reaches it.
    assert!(!String::from_utf8(out).unwrap().contains("\"choices\":[]"));
}

// === errors and usage ===

#[test]
fn error_bodies() {
    assert_eq!(
        parse_openai_error(&fixture("anthropic/error_overloaded.json")),
        Some(("Overloaded".into(), Some("overloaded_error".into())))
    );
    assert_eq!(
        parse_openai_error(&fixture("anthropic/error_rate_limit.json")).and_then(|e| e.1),
        Some("rate_limit_error".into())
    );
    for (status, t) in [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (529, "overloaded_error"),
    ] {
        assert_eq!(anthropic::error_type(status), t);
    }
    let body: Value =
        serde_json::from_slice(&anthropic::error_json("not_found_error", "no")).unwrap();
    assert_eq!(
        body,
        json!({"type": "error", "error": {"type": "not_found_error", "message": "no"}})
    );
    assert!(anthropic::error_sse_event("api_error", "x").starts_with(b"event: error\ndata: {"));
}

#[test]
fn absurd_upstream_usage_saturates() {
    for (input, read, write) in [
        (u64::MAX, 1, 1),
        (1, u64::MAX, u64::MAX),
        (u64::from(u32::MAX), u64::MAX, 0),
    ] {
        let u = WireUsage {
            input_tokens: Some(input),
            output_tokens: Some(u64::MAX),
            cache_creation_input_tokens: Some(write),
            cache_read_input_tokens: Some(read),
        }
        .to_usage();
        assert_eq!(u.input_tokens, u64::MAX);
        assert_eq!(u.output_tokens, u64::MAX);
        assert_eq!(
            WireUsage::from_usage(&u).cache_read_input_tokens,
            Some(read)
        );
    }
}

#[test]
fn usage_both_ways() {
    let wire = WireUsage {
        input_tokens: Some(10),
        output_tokens: Some(5),
        cache_creation_input_tokens: Some(3),
        cache_read_input_tokens: Some(20),
    };
    let u = wire.to_usage();
    assert_eq!(
        u,
        Usage {
            input_tokens: 33,
            output_tokens: 5,
            cached_input_tokens: 20,
            cache_write_tokens: 3,
        }
    );
    let back = WireUsage::from_usage(&u);
    assert_eq!(back.input_tokens, Some(10));
    assert_eq!(back.cache_creation_input_tokens, Some(3));
    assert_eq!(back.cache_read_input_tokens, Some(20));
    let info = anthropic::inspect_response(&fixture("anthropic/response.json"));
    assert_eq!(info.usage.map(|u| u.cached_input_tokens), Some(1800));
    assert_eq!(info.finish_reason.as_deref(), Some("tool_use"));
    assert!(info.well_formed);
    let body = fixture("anthropic/response.json");
    assert!(!anthropic::inspect_response(&body[..body.len() / 2]).well_formed);
    let _ = openai::chat::finish_to_openai(crate::chat::FinishReason::Pause);
}

/// The walk over a body (`wire::parse`'s fast path) decodes exactly what the one-pass serde
/// parse decodes, and refuses with the same error.
#[test]
fn walk_decodes_as_serde_parse() {
    let bodies: Vec<String> = vec![
        include_str!("../../../../bench/bodies/claude-code.json").into(),
        include_str!("../../fixtures/anthropic/request.json").into(),
        r#"{"model":"m","max_tokens":5,"system":"be \"brief\" \u00e9","messages":[{"role":"user","content":"h\ni"}]}"#.into(),
        r#"{"model":"m","max_tokens":5,"syst\u0065m":[{"type":"text","text":"a\ud83d\ude00"},{"type":"text","text":""}],"messages":[{"role":"user","content":[{"type":"text","text":"x","text":"y"},5,[1,[2]],null,{"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":"r\t"}]}]},{"role":"assistant","content":[{"type":"thinking","thinking":"t\\","signature":"s"},{"type":"tool_use","id":"t","name":"n","input":{"a":[1,2.5e3,"\u0000"]}}]}],"tools":[{"name":"n","description":"d\"","input_schema":{"type":"object","properties":{"a\n":{"enum":[1e5,-0.5]}}}},{"name":"m","input_schema":null},[1]],"metadata":{"user_id":"u"},"stream":true}"#.into(),
        r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}],"system":null,"tools":null}"#.into(),
        r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"\ud800"}]}"#.into(),
        r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}],"x":[1e400]}"#.into(),
        r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi",}]}"#.into(),
        r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]} x"#.into(),
        r#"{"model":"m","max_tokens":5,"messages":"text"}"#.into(),
        r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"text","text":5}]}]}"#.into(),
        r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"typ\u0065":"t\u0065xt","text":"a"},{"type":"image","type":"text","text":"b","text":null,"text":"c"}]}],"tools":[{"name":"a\"b","name":"c","input_schema":{}}]}"#.into(),
        r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":5,"text":"a"}]}]}"#.into(),
        r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":null,"text":"a"}]}]}"#.into(),
        r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":["text"],"text":"a"}]}]}"#.into(),
        r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}],"tools":[{"name":{"a":1},"input_schema":{}}]}"#.into(),
        r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}],"tools":[{"name":null,"input_schema":{}}]}"#.into(),
        r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"text","data":"d","signature":"s","thinking":"t","text":"x"},{"type":"thinking","thinking":"t\n","signature":"s","text":"ignored"}]}]}"#.into(),
    ];
    for (i, body) in bodies.iter().enumerate() {
        // The valid ones are walked, not handed back to serde.
        let walk =
            crate::anthropic::wire::parse_walk::<crate::anthropic::wire::Top>(body.as_bytes());
        assert_eq!(walk.is_some(), !(5..9).contains(&i), "{body}");
        let walked = anthropic::decode_request(body.as_bytes(), "openai");
        crate::anthropic::wire::FORCE_SERDE.with(|f| f.set(true));
        let parsed = anthropic::decode_request(body.as_bytes(), "openai");
        crate::anthropic::wire::FORCE_SERDE.with(|f| f.set(false));
        assert_eq!(walked, parsed, "{body}");
    }
}

/// What the walk notes in a value (`\u` escapes, long numbers, nesting) stands in for the
/// second pass [`Strict`] made over it: a schema, a text or a small field is accepted, and
/// read, exactly as before, on hand-picked values around each rule and on random mutations.
#[test]
fn noted_values_are_checked_as_strict_checks_them() {
    use crate::{
        anthropic::wire::{raw_str_at, raw_str_text, strict_raw_at, value_at},
        json::{scanned_is_strict, Strict},
        scan::Cursor,
    };
    let deep = |n: usize| "[".repeat(n) + &"]".repeat(n);
    let mut docs: Vec<String> = vec![
        r#"{"type":"object","properties":{"a\n":{"enum":[1,-2.5,"x\"y"]}}}"#.into(),
        r#""plain""#.into(),
        r#""\u00e9 \ud83d\ude00""#.into(),
        r#""\ud800""#.into(),
        r#""\udc00 x""#.into(),
        r#""\ud800\u0041""#.into(),
        r#""\\u""#.into(),
        r#""\\ud800""#.into(),
        r#"{"\ud800":1}"#.into(),
        r#"{"k":"\ud83d\ude00"}"#.into(),
        r#"{"k\u00e9":[1]}"#.into(),
        r#"[1e400]"#.into(),
        r#"[1e5, 2E-3, -1e-400]"#.into(),
        r#"[123456789012345]"#.into(),
        r#"[1234567890123456]"#.into(),
        r#"[-12345678901234]"#.into(),
        r#"[-123456789012345]"#.into(),
        r#"[0.12345678901234567890]"#.into(),
        format!("[{}]", "9".repeat(400)),
        r#"{"maximum":9007199254740991,"minimum":-9007199254740991}"#.into(),
        "[0.1234567890123456789, 12345678901234567890123]".into(),
        format!("[{}]", "9".repeat(300)),
        format!("[-{}]", "9".repeat(299)),
        format!("[{}]", "9".repeat(301)),
        format!("[{}]", "9".repeat(308)),
        format!("[{}]", "9".repeat(309)),
        format!("[1{}]", "0".repeat(308)),
        format!("[0.{}1]", "0".repeat(297)),
        format!("[{}.5]", "9".repeat(298)),
        format!("[{}.5]", "9".repeat(309)),
        "1e400".into(),
        "12".into(),
        "true".into(),
        "null".into(),
        r#"{"a":{"b":{"c":[[[]]]}}}"#.into(),
    ];
    for n in [1, 2, 100, 126, 127, 128, 129] {
        docs.push(deep(n));
        docs.push(format!("{{\"a\":{}}}", deep(n)));
    }
    // Random mutations of a schema, a text and a small field, with the bytes each rule turns on.
    let base = [
        r#"{"type":"object","properties":{"p\u00e9":{"type":"string","description":"x\ud83d\ude00"},"n":{"enum":[1,-2.5e3,123456789012345]}},"required":["p"]}"#,
        r#""text \u00e9 \ud83d\ude00 \\u \n done""#,
        r#"{"type":"ephemeral","ttl":[1,[2,[3]]]}"#,
    ];
    let alphabet = b"{}[]\",:\\ 0159-.eE+uUdDcCfF8a";
    let mut rng = fastrand::Rng::with_seed(21);
    for doc in base {
        docs.push(doc.into());
        for _ in 0..4_000 {
            let d = crate::test_util::mutate(&mut rng, doc.as_bytes(), alphabet);
            if let Ok(d) = String::from_utf8(d) {
                docs.push(d);
            }
        }
    }
    let mut accepted = 0;
    for d in &docs {
        let Some(raw) = Cursor::new(d.as_bytes()).value() else {
            continue;
        };
        let raw = std::str::from_utf8(raw).unwrap();
        for depth in [0, 1, 2, 3, 120, 126, 127] {
            let strict = Strict(depth).check_text(raw).is_ok();
            let got = strict_raw_at(d, &mut Cursor::new(d.as_bytes()), depth);
            assert_eq!(got.is_some(), strict, "{d} at {depth}");
            accepted += usize::from(strict);
            let want = scanned_is_strict(raw, depth)
                .then(|| serde_json::from_str::<Value>(raw).ok())
                .flatten();
            let got = value_at(d, &mut Cursor::new(d.as_bytes()), depth);
            assert_eq!(got, want, "{d} at {depth}");
            let want = raw_str_text(raw, depth);
            let got = raw_str_at(d, &mut Cursor::new(d.as_bytes()), depth);
            assert_eq!(format!("{got:?}"), format!("{want:?}"), "{d} at {depth}");
            if let (Some(Ok(crate::json::Str::Json(a))), Some(Ok(crate::json::Str::Json(b)))) =
                (&got, &want)
            {
                assert_eq!(a, b);
            }
        }
    }
    assert!(accepted > 5_000, "{accepted}");
}

/// Errors name the parameter at fault, down to nested tool results (the paths are made only
/// when an error needs one).
#[test]
fn decode_errors_name_nested_parameters() {
    let cases = [
        (
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"},{"role":"assistant","content":[{"type":"text","text":"a"},{"type":"tool_use","id":5,"name":"n","input":{}}]}]}"#,
            "messages[1].content[1].id",
            "must be a string",
        ),
        (
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"assistant","content":[{"type":"tool_use","id":"i","input":{}}]}]}"#,
            "messages[0].content[0].name",
            "missing",
        ),
        (
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"assistant","content":[{"type":"tool_use","id":"i","name":"n","input":[1]}]}]}"#,
            "messages[0].content[0].input",
            "must be an object",
        ),
        (
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"tool_result","tool_use_id":1}]}]}]}"#,
            "messages[0].content[0].content[0].tool_use_id",
            "must be a string",
        ),
        (
            r#"{"model":"m","max_tokens":5,"system":[{"type":"text","text":"s"},{"type":"text"}],"messages":[{"role":"user","content":"x"}]}"#,
            "system[1].text",
            "missing",
        ),
        (
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"},{"role":"system","content":[{"type":"text","text":"a"},{"type":"image","source":{"type":"url","url":"u"}}]}]}"#,
            "messages[1].content[1]",
            "a system turn can only hold text blocks",
        ),
        (
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}],"tools":[{"name":"a","input_schema":{}},{"name":7}]}"#,
            "tools[1].name",
            "must be a string",
        ),
        (
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}],"tools":[{"input_schema":{}}]}"#,
            "tools[0].name",
            "missing",
        ),
        (
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"robot","content":"x"}]}"#,
            "messages[0].role",
            "must be user, assistant or system",
        ),
    ];
    for (body, param, message) in cases {
        let err = anthropic::decode_request(body.as_bytes(), "openai").unwrap_err();
        assert_eq!(err, TranslateError::invalid(param, message), "{body}");
    }
    let tool_use = r#"{"model":"m","max_tokens":5,"messages":[{"role":"assistant","content":[{"type":"tool_use","id":"i","name":"n","input":{"b":[1,{"c":null}],"a":"x"}}]}]}"#;
    let req = anthropic::decode_request(tool_use.as_bytes(), "openai").unwrap();
    let Part::ToolCall(call) = &req.messages[0].content[0] else {
        panic!("{req:?}")
    };
    assert_eq!(
        Value::Object(call.arguments.clone()),
        json!({"a": "x", "b": [1, {"c": null}]})
    );
}
