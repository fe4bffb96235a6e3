//! Stream translation parity (issue #21): every stream fixture, and hand-made streams of
//! unusual and malformed events, translated by every transcoder that reads its format, must
//! give the very bytes the `Value`-building decoders and encoders gave before they were
//! replaced by borrowing ones. The outputs those wrote are the golden files under
//! `fixtures/golden/stream_bytes/` (`SWITCHYARD_UPDATE_GOLDEN=1` rewrites them); only the
//! clock (`created`, `created_at`, `completed_at`) is normalised.

use serde_json::Value;

use crate::{
    bedrock, eventstream, sse,
    test_util::fixture,
    transcode::{BackendFormat, Format, Transcoder},
};

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/golden/stream_bytes");

/// The `data:` payloads of an SSE stream.
fn sse_payloads(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut p = sse::Parser::new();
    p.push(bytes).unwrap();
    let mut out: Vec<Vec<u8>> = std::iter::from_fn(|| p.next_event())
        .map(|e| e.data.to_vec())
        .collect();
    if let Some(e) = p.finish() {
        out.push(e.data.to_vec());
    }
    out
}

/// The Bedrock stream fixture as the envelopes the transcoder is given.
fn bedrock_payloads() -> Vec<Vec<u8>> {
    let msgs: Vec<Value> = serde_json::from_slice(&fixture("bedrock/stream.json")).unwrap();
    let mut bytes = Vec::new();
    for m in msgs {
        let h: Vec<(String, String)> = m["headers"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        bytes.extend(eventstream::encode(&h, m["payload"].to_string().as_bytes()));
    }
    let mut d = eventstream::Decoder::new();
    d.push(&bytes).unwrap();
    std::iter::from_fn(|| d.next_message())
        .map(|m| bedrock::envelope(&m).to_vec())
        .collect()
}

fn lines(s: &str) -> Vec<Vec<u8>> {
    s.lines().map(|l| l.as_bytes().to_vec()).collect()
}

const ANTHROPIC_START: &str = r#"{"type":"message_start","message":{"id":"msg_1","model":"claude-x","usage":{"input_tokens":3,"output_tokens":1}}}"#;

/// Events a typed decoder could read differently from a `Value` one: escapes, wrong types,
/// missing and duplicate fields, unknown kinds, an index out of range.
const ANTHROPIC_ODD: &str = r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a\"b\\c\u00e9\ud83d\ude00\n</script>\u0000 é"}}
{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":5}}
{"type":"content_block_delta","index":0,"delta":{"type":"text_delta"}}
{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":""}}
{"type":"content_block_delta","delta":{"type":"text_delta","text":"x","text":"dup"}}
{"type":"content_block_delta","type":"ping","index":0,"delta":{"type":"text_delta","text":"dup type"}}
{"delta":{"text":"type last","type":"text_delta"},"index":0,"type":"content_block_delta"}
{"type":"content_block_delta","index":-1,"delta":{"type":"thinking_delta","thinking":"t"}}
{"type":"content_block_delta","index":1.5,"delta":{"type":"thinking_delta","thinking":"t2"}}
{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":null}}
{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"sig"}}
{"type":"content_block_delta","index":0,"delta":null}
{"type":"content_block_delta","index":0}
{"type":"content_block_delta","index":0,"delta":{"type":"unknown_delta","x":1}}
{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{}"}}
{"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"t","name":"n","input":{"b":1,"a":[1,2]}}}
{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"x\":"}}
{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":""}}
{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"\"\u00e9\"}"}}
{"type":"content_block_start","index":3,"content_block":{"type":"redacted_thinking","data":"opaque"}}
{"type":"content_block_start","index":4,"content_block":{"type":"text","text":"start text"}}
{"type":"content_block_delta","index":4,"delta":{"type":"text_delta","text":"after"},"extra":{"deep":[{"x":null}]}}
{"type":"ping"}
{"type":"content_block_stop","index":4}
{"type":"unknown_event"}
{}
[]
["content_block_delta",0,{"type":"text_delta","text":"as an array"}]
{"type":"content_block_delta","index":0,"delta":["text_delta","delta as an array"]}
{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"\u00e9 bytes checked"}}
"content_block_delta"
{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":9}}
{"type":"message_stop"}"#;

const OPENAI_START: &str = r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-x","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#;

const OPENAI_ODD: &str = r#"{"choices":[{"index":0,"delta":{"content":"a\"b\\c\u00e9\ud83d\ude00\n</script>\u0000 é"}}]}
{"choices":[{"delta":{"content":null}}]}
{"choices":[{"delta":{"content":5}}]}
{"choices":[{"delta":{"content":""}}]}
{"choices":[{"delta":{"content":"dup","content":"dup2"}}]}
{"choices":[{"delta":{"reasoning_content":"r1"}}]}
{"choices":[{"delta":{"reasoning":"r2"}}]}
{"choices":[{"delta":{"reasoning_content":"r3","reasoning":"r4","content":"c"}}]}
{"choices":[{"delta":{"reasoning_content":""}}]}
{"choices":[]}
{"choices":null}
{"choices":[{"delta":{"content":"first"}},{"delta":{"content":"second"}}]}
{"choices":[{"delta":null}]}
{"choices":[{}]}
{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a"}}]}}]}
{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\":1}"}}]}}]}
{"choices":[{"delta":{"tool_calls":[{"index":7,"function":{"arguments":"unknown call"}}]}}]}
{"choices":[{"delta":{"tool_calls":[{"function":{"name":"g"}},{"index":-1,"id":"call_3","function":{"arguments":"{}"}}]}}]}
{"choices":[{"delta":{"tool_calls":[{"index":4294967296,"id":"call_4","function":{"name":"h","arguments":""}}]}}]}
{"choices":[{"delta":{"tool_calls":null}}]}
{"choices":[{"delta":{"tool_calls":[{"index":0,"function":null}]}}]}
{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":5}}]}}]}
{"choices":[{"delta":{"content":"with usage"}}],"usage":{"prompt_tokens":3,"completion_tokens":4,"prompt_tokens_details":{"cached_tokens":1}}}
{"choices":[{"delta":{"content":"usage null"}}],"usage":null}
{"choices":[{"delta":{"content":"bad usage"}}],"usage":5}
{"choices":[{"delta":{"content":"x"},"finish_reason":null}],"extra":{"deep":[{"x":null}]}}
{}
[]
[[{"delta":{"content":"as an array"}}]]
{"choices":[["as an array"]]}
{"choices":[{"delta":[null,null,"delta as an array"]}]}
{"choices":[{"delta":{"tool_calls":[[0,"call_9",{"name":"as an array"}]]}}]}
{"choices":[{"delta":{"tool_calls":{"index":0}}}]}
{"choices":{"0":{"delta":{"content":"choices as an object"}}}}
"x"
{"choices":[{"delta":{},"finish_reason":"tool_calls"}]}
{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5,"prompt_cache_hit_tokens":2}}
[DONE]"#;

/// A stream of `start`, then `odd` events, then one that ends it.
fn stream(start: &str, odd: &str, end: &str) -> Vec<Vec<u8>> {
    let mut v = lines(start);
    v.extend(lines(odd));
    v.extend(lines(end));
    v
}

/// `events`, then one event of raw bytes (not UTF-8, say).
fn with_bytes(mut events: Vec<Vec<u8>>, last: &[u8]) -> Vec<Vec<u8>> {
    events.push(last.to_vec());
    events
}

fn inputs() -> Vec<(String, BackendFormat, Vec<Vec<u8>>)> {
    let a = BackendFormat::Anthropic;
    let o = BackendFormat::OpenAiChat;
    let text =
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hi"}}"#;
    let chunk = r#"{"choices":[{"delta":{"content":"hi"}}]}"#;
    vec![
        (
            "anthropic".into(),
            a,
            sse_payloads(&fixture("anthropic/stream.sse")),
        ),
        (
            "openai".into(),
            o,
            sse_payloads(&fixture("openai/stream.sse")),
        ),
        (
            "gemini".into(),
            BackendFormat::Gemini,
            sse_payloads(&fixture("gemini/stream.sse")),
        ),
        (
            "gemini_tool".into(),
            BackendFormat::Gemini,
            sse_payloads(&fixture("gemini/stream_tool.sse")),
        ),
        ("bedrock".into(), BackendFormat::Bedrock, bedrock_payloads()),
        (
            "anthropic_odd".into(),
            a,
            stream(ANTHROPIC_START, ANTHROPIC_ODD, ""),
        ),
        (
            "anthropic_no_start".into(),
            a,
            stream(text, "", r#"{"type":"message_stop"}"#),
        ),
        (
            "anthropic_not_json".into(),
            a,
            stream(
                ANTHROPIC_START,
                text,
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"cut"#,
            ),
        ),
        (
            "anthropic_trailing".into(),
            a,
            stream(ANTHROPIC_START, text, &format!("{text} x")),
        ),
        (
            "anthropic_error".into(),
            a,
            stream(
                ANTHROPIC_START,
                text,
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded \"now\""}}"#,
            ),
        ),
        (
            "anthropic_error_other_kind".into(),
            a,
            stream(
                ANTHROPIC_START,
                text,
                r#"{"type":"error","error":{"type":"weird","message":5}}"#,
            ),
        ),
        (
            "anthropic_not_utf8".into(),
            a,
            with_bytes(
                stream(ANTHROPIC_START, text, ""),
                b"{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"\xff\"}}",
            ),
        ),
        ("openai_odd".into(), o, stream(OPENAI_START, OPENAI_ODD, "")),
        (
            "openai_not_utf8".into(),
            o,
            with_bytes(
                stream(OPENAI_START, chunk, ""),
                b"{\"choices\":[{\"delta\":{\"content\":\"\xc3\"}}]}",
            ),
        ),
        ("openai_no_done".into(), o, stream(OPENAI_START, chunk, "")),
        (
            "openai_not_json".into(),
            o,
            stream(
                OPENAI_START,
                chunk,
                r#"{"choices":[{"delta":{"content":"cut"#,
            ),
        ),
        (
            "openai_error".into(),
            o,
            stream(
                OPENAI_START,
                chunk,
                r#"{"error":{"message":"boom \"x\"","type":"server_error"}}"#,
            ),
        ),
        (
            "openai_error_untyped".into(),
            o,
            stream(OPENAI_START, chunk, r#"{"error":{"message":null}}"#),
        ),
        (
            "openai_error_first".into(),
            o,
            lines(r#"{"error":{"message":"first","type":"rate_limit"}}"#),
        ),
    ]
}

/// `"created"`, `"created_at"` and `"completed_at"` numbers → 0: the clock is not translation.
fn normalise_clock(out: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(out.len());
    let mut i = 0;
    while i < out.len() {
        let rest = &out[i..];
        let key = [
            &b"\"created\":"[..],
            &b"\"created_at\":"[..],
            &b"\"completed_at\":"[..],
        ]
        .into_iter()
        .find(|k| rest.starts_with(k));
        if let Some(k) = key {
            v.extend_from_slice(k);
            v.push(b'0');
            i += k.len();
            while out.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
        } else {
            v.push(out[i]);
            i += 1;
        }
    }
    v
}

#[test]
fn stream_translations_give_the_bytes_they_gave_before() {
    let update = std::env::var_os("SWITCHYARD_UPDATE_GOLDEN").is_some();
    let mut failed = Vec::new();
    for (name, from, events) in inputs() {
        for (to_name, to, usage) in [
            ("openai", Format::OpenAiChat, true),
            ("openai_no_usage", Format::OpenAiChat, false),
            ("anthropic", Format::Anthropic, false),
            ("responses", Format::Responses, false),
        ] {
            let mut t = Transcoder::new(from, to, usage);
            let mut out = Vec::new();
            for e in &events {
                t.on_event(e, &mut out);
            }
            if t.upstream_complete() {
                t.finish(&mut out);
            } else {
                t.error("upstream_cut", "the upstream ended early", &mut out);
            }
            let out = normalise_clock(&out);
            let path = format!("{GOLDEN}/{name}_to_{to_name}.sse");
            if update {
                std::fs::create_dir_all(GOLDEN).unwrap();
                std::fs::write(&path, &out).unwrap();
                continue;
            }
            let expected = std::fs::read(&path).unwrap_or_else(|_| {
                panic!("missing {path}: run with SWITCHYARD_UPDATE_GOLDEN=1 before any change")
            });
            if out != expected {
                failed.push(format!(
                    "{name} to {to_name}:\n--- expected\n{}\n--- got\n{}",
                    String::from_utf8_lossy(&expected),
                    String::from_utf8_lossy(&out)
                ));
            }
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}
