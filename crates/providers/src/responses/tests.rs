//! Fixture tests for the Responses API as a caller format. `fixtures/responses/` holds a
//! request, a response and a stream transcript written from OpenAI's public API reference;
//! requests are checked on their way to every backend format, and what the gateway writes is
//! checked against the reference shapes (every field the reference has, with the same type)
//! as well as against golden files.

use serde_json::{json, Value};

use super::{decode_request, Echo};
use crate::{
    anthropic,
    chat::{Part, TranslateError},
    openai::chat::Dialect,
    test_util::{fixture, golden, sse_events, transcode},
    transcode::{self as tc, BackendFormat, Format, Transcoder},
};

/// Times vary per run; everything else must match.
fn normalise(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if k == "created_at" || k == "completed_at" {
                    *x = json!(0);
                } else {
                    normalise(x);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(normalise),
        _ => {}
    }
}

fn request_to(to: BackendFormat, dialect: Dialect, model: &str) -> Value {
    let out = tc::request(
        Format::Responses,
        to,
        dialect,
        "x",
        &fixture("responses/request.json"),
        model,
    )
    .unwrap();
    serde_json::from_slice(&out).unwrap()
}

fn err(body: Value) -> TranslateError {
    decode_request(body.to_string().as_bytes()).unwrap_err()
}

// === requests ===

#[test]
fn responses_request_to_openai() {
    let v = request_to(BackendFormat::OpenAiChat, Dialect::OpenAi, "gpt-4.1");
    golden("responses_request_to_openai.json", &v);
    // The call and its output keep the caller's call_id; the flat tool gets its wrapper.
    assert_eq!(v["messages"][2]["tool_calls"][0]["id"], "call_12345xyz");
    assert_eq!(v["messages"][3]["tool_call_id"], "call_12345xyz");
    assert_eq!(v["tools"][0]["function"]["name"], "get_weather");
    assert_eq!(v["tools"][0]["function"]["strict"], true);
    assert_eq!(v["max_completion_tokens"], 1024);
    assert!(v.get("store").is_none() && v.get("previous_response_id").is_none());
}

#[test]
fn responses_request_to_anthropic() {
    let v = request_to(
        BackendFormat::Anthropic,
        Dialect::Compatible,
        "claude-sonnet-4-5",
    );
    golden("responses_request_to_anthropic.json", &v);
    // Instructions first, then the developer message, as one system prompt.
    let system = v["system"].to_string();
    let (i, d) = (
        system.find("You are a weather assistant."),
        system.find("Answer in one sentence."),
    );
    assert!(i.is_some() && d.is_some() && i < d, "{system}");
    // The reasoning item's signature comes back as Anthropic signed thinking, before the call.
    let turn = &v["messages"][1]["content"];
    assert_eq!(
        turn[0],
        json!({"type": "thinking", "thinking": "The user wants the weather; call get_weather.", "signature": "EqQBCgIYAhIM"})
    );
    assert_eq!(turn[1]["type"], "tool_use");
    assert_eq!(turn[1]["input"], json!({"location": "Paris, France"}));
    assert_eq!(
        v["messages"][2]["content"][0]["tool_use_id"],
        "call_12345xyz"
    );
}

#[test]
fn responses_request_to_gemini() {
    let v = request_to(
        BackendFormat::Gemini,
        Dialect::Compatible,
        "gemini-2.5-flash",
    );
    golden("responses_request_to_gemini.json", &v);
    assert_eq!(v["generationConfig"]["maxOutputTokens"], 1024);
}

#[test]
fn input_forms() {
    let d = decode_request(br#"{"model":"m","input":"hi","stream":true}"#).unwrap();
    assert!(d.request.stream);
    assert_eq!(d.request.messages.len(), 1);
    assert_eq!(d.request.messages[0].content, vec![Part::Text("hi".into())]);

    // Easy messages without `type`; consecutive function outputs form one user turn.
    let d = decode_request(
        json!({"model": "m", "input": [
            {"role": "user", "content": "x"},
            {"type": "function_call", "call_id": "a", "name": "f", "arguments": ""},
            {"type": "function_call", "call_id": "b", "name": "g", "arguments": "{\"k\":1}"},
            {"type": "function_call_output", "call_id": "a", "output": "1"},
            {"type": "function_call_output", "call_id": "b", "output": [{"type": "input_text", "text": "2"}]},
        ]})
        .to_string()
        .as_bytes(),
    )
    .unwrap()
    .into_owned();
    let m = &d.request.messages;
    assert_eq!(m.len(), 3);
    assert_eq!(m[1].content.len(), 2);
    assert_eq!(m[2].content.len(), 2);

    // A reasoning item with someone else's encrypted content is passed on unsigned; one with
    // nothing in it is dropped.
    let d = decode_request(
        json!({"model": "m", "input": [
            {"role": "user", "content": "x"},
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAAopaque"},
            {"type": "reasoning", "id": "rs_2", "summary": [{"type": "summary_text", "text": "t"}], "encrypted_content": "gAAAAopaque"},
        ]})
        .to_string()
        .as_bytes(),
    )
    .unwrap()
    .into_owned();
    assert_eq!(
        d.request.messages[1].content,
        vec![Part::Reasoning {
            text: "t".into(),
            signature: None,
            redacted: None
        }]
    );

    // text.format is flat in the Responses API.
    let d = decode_request(
        json!({"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "name": "n", "schema": {"type": "object"}, "strict": true}}})
            .to_string()
            .as_bytes(),
    )
    .unwrap()
    .into_owned();
    assert_eq!(
        d.request.response_format,
        Some(crate::chat::ResponseFormat::JsonSchema {
            name: "n".into(),
            schema: json!({"type": "object"}),
            strict: Some(true)
        })
    );
}

#[test]
fn refuses_what_a_stateless_gateway_cannot_do() {
    let x = json!("hi");
    let cases = [
        (
            json!({"model": "m", "input": x, "previous_response_id": "resp_1"}),
            "previous_response_id",
        ),
        (
            json!({"model": "m", "input": x, "conversation": "conv_1"}),
            "conversation",
        ),
        (
            json!({"model": "m", "input": x, "background": true}),
            "background",
        ),
        (
            json!({"model": "m", "input": x, "prompt": {"id": "pmpt_1"}}),
            "prompt",
        ),
        (
            json!({"model": "m", "input": [{"role": "user", "content": "x"}, {"type": "item_reference", "id": "msg_1"}]}),
            "input[1].type",
        ),
        (
            json!({"model": "m", "input": [{"type": "web_search_call", "id": "ws_1"}]}),
            "input[0].type",
        ),
        (
            json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]}),
            "input[0].content[0].file_id",
        ),
        (
            json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}]}),
            "input[0].content[0].type",
        ),
        (
            json!({"model": "m", "input": x, "tool_choice": {"type": "web_search_preview"}}),
            "tool_choice.type",
        ),
    ];
    for (body, param) in cases {
        let e = err(body);
        assert!(matches!(e, TranslateError::Refused { .. }), "{e:?}");
        assert_eq!(e.param(), param);
    }
    // `store` is accepted (the response says false).
    assert!(decode_request(br#"{"model":"m","input":"x","store":true}"#).is_ok());
}

#[test]
fn malformed_requests_name_the_parameter() {
    let cases = [
        (json!({"input": "x"}), "model"),
        (json!({"model": "m"}), "input"),
        (json!({"model": "m", "input": 3}), "input"),
        (
            json!({"model": "m", "input": "x", "stream": "yes"}),
            "stream",
        ),
        (
            json!({"model": "m", "input": [{"type": "function_call", "name": "f"}]}),
            "input[0].call_id",
        ),
        (
            json!({"model": "m", "input": [{"role": "robot", "content": "x"}]}),
            "input[0].role",
        ),
        (
            json!({"model": "m", "input": "x", "tools": [{"type": "function"}]}),
            "tools[0].name",
        ),
        (
            json!({"model": "m", "input": "x", "tools": [{"type": "function", "name": 5}]}),
            "tools[0].name",
        ),
        (
            json!({"model": "m", "input": "x", "tools": [{"type": "function", "name": "f"}, {"type": 1}]}),
            "tools[1].type",
        ),
        (
            json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_text", "text": "a"}, {"text": "b"}]}]}),
            "input[0].content[1].type",
        ),
        (
            json!({"model": "m", "input": [{"role": "user", "content": [{"type": null}]}]}),
            "input[0].content[0].type",
        ),
        (
            json!({"model": "m", "input": [{"role": "user", "content": [{"type": ["x"]}]}]}),
            "input[0].content[0].type",
        ),
        (
            json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_text", "text": 1}]}]}),
            "input[0].content[0].text",
        ),
        (
            json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image"}]}]}),
            "input[0].content[0].image_url",
        ),
        (
            json!({"model": "m", "input": [{"role": "user", "content": 5}]}),
            "input[0].content",
        ),
        (
            json!({"model": "m", "input": [{"type": "function_call_output", "call_id": "c", "output": [{"type": "output_text"}]}]}),
            "input[0].output[0].text",
        ),
    ];
    for (body, param) in cases {
        let e = err(body);
        assert!(matches!(e, TranslateError::Invalid { .. }), "{e:?}");
        assert_eq!(e.param(), param, "{e:?}");
    }
}

// === complete responses ===

fn response_from(from: BackendFormat, file: &str) -> Value {
    let echo = decode_request(&fixture("responses/request.json"))
        .unwrap()
        .echo;
    let (out, _, _) = tc::response_to_responses(from, &echo, &fixture(file)).unwrap();
    let mut v: Value = serde_json::from_slice(&out).unwrap();
    normalise(&mut v);
    v
}

/// Every field of `reference` is in `actual`, with the same JSON type (or null where the
/// reference has a value the response cannot know, and the other way round); objects are
/// compared recursively and arrays by their first element.
fn has_reference_shape(actual: &Value, reference: &Value, path: &str) {
    match (reference, actual) {
        (Value::Object(r), Value::Object(a)) => {
            for (k, rv) in r {
                let av = a
                    .get(k)
                    .unwrap_or_else(|| panic!("{path}.{k} is missing in {actual}"));
                has_reference_shape(av, rv, &format!("{path}.{k}"));
            }
        }
        (Value::Array(r), Value::Array(a)) => {
            if let (Some(r0), Some(a0)) = (r.first(), a.first()) {
                has_reference_shape(a0, r0, &format!("{path}[0]"));
            }
        }
        (Value::Null, _) | (_, Value::Null) => {}
        (Value::Number(_), Value::Number(_))
        | (Value::String(_), Value::String(_))
        | (Value::Bool(_), Value::Bool(_)) => {}
        _ => panic!("{path}: {actual} does not have the type of {reference}"),
    }
}

#[test]
fn anthropic_response_to_responses() {
    let v = response_from(BackendFormat::Anthropic, "anthropic/response.json");
    golden("anthropic_response_to_responses.json", &v);
    let reference: Value = serde_json::from_slice(&fixture("responses/response.json")).unwrap();
    has_reference_shape(&v, &reference, "response");
    // Item by item against the reference's items of the same type.
    for (item, r) in v["output"]
        .as_array()
        .unwrap()
        .iter()
        .zip(reference["output"].as_array().unwrap())
    {
        assert_eq!(item["type"], r["type"]);
        has_reference_shape(item, r, "item");
    }
    assert_eq!(v["status"], "completed");
    assert_eq!(v["store"], false);
    // The request's settings are echoed.
    assert_eq!(v["tools"][0]["name"], "get_weather");
    assert_eq!(v["max_output_tokens"], 1024);
    assert_eq!(v["parallel_tool_calls"], false);
    // Anthropic counts cache reads apart; the Responses usage includes them in input_tokens.
    assert_eq!(v["usage"]["input_tokens"], 2095 + 100 + 1800);
    assert_eq!(v["usage"]["input_tokens_details"]["cached_tokens"], 1800);
    assert_eq!(v["usage"]["total_tokens"], 2095 + 100 + 1800 + 503);
    // The thinking signature rides in encrypted_content, and comes back as a signature.
    assert_eq!(
        v["output"][0]["encrypted_content"],
        "switchyard:signature:EqQBCgIYAhIM"
    );
    let next = json!({"model": "m", "input": [{"role": "user", "content": "x"}, v["output"][0], v["output"][2]]});
    let ir = decode_request(next.to_string().as_bytes())
        .unwrap()
        .into_owned()
        .request;
    let back: Value =
        serde_json::from_slice(&anthropic::encode_request(&ir, "c").unwrap()).unwrap();
    assert_eq!(
        back["messages"][1]["content"][0]["signature"],
        "EqQBCgIYAhIM"
    );
    assert_eq!(
        back["messages"][1]["content"][1]["id"],
        "toolu_01A09q90qw90lq917835lq9"
    );
}

#[test]
fn openai_and_gemini_responses_to_responses() {
    let v = response_from(BackendFormat::OpenAiChat, "openai/response.json");
    golden("openai_response_to_responses.json", &v);
    let v = response_from(BackendFormat::Gemini, "gemini/response.json");
    golden("gemini_response_to_responses.json", &v);
}

/// `tools` and `instructions` are copied as sent rather than parsed and written again: the
/// same values, in a stream on one line whatever the caller's layout, and the object's own
/// keys still sorted.
#[test]
fn echoed_settings_are_the_callers_on_one_line() {
    let tools = json!([{"type": "function", "name": "f", "strict": false,
        "parameters": {"type": "object", "properties": {"é\n\"x": {"type": "string"}}}}]);
    let sent = json!({"model": "m", "input": "hi", "instructions": "be\nbrief \u{1F600}",
        "tools": tools, "temperature": 0.5});
    // Pretty-printed, with keys out of order and escapes left in: as some callers send it.
    let body = serde_json::to_string_pretty(&sent)
        .unwrap()
        .replace("é", "\\u00e9");
    let echo = decode_request(body.as_bytes()).unwrap().echo;
    let answer = json!({"id": "c1", "model": "m", "choices": [{"index": 0,
        "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]});
    let (out, _, _) = tc::response_to_responses(
        BackendFormat::OpenAiChat,
        &echo,
        answer.to_string().as_bytes(),
    )
    .unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["tools"], tools);
    assert_eq!(v["instructions"], sent["instructions"]);
    assert_eq!(v["temperature"], 0.5);
    // As sent (the escape kept), between the keys around it in sorted order.
    let text = String::from_utf8(out.clone()).unwrap();
    assert!(
        text.starts_with(r#"{"background":false,"completed_at":"#),
        "{text}"
    );
    assert!(
        text.contains(
            r#""tool_choice":"auto","tools":[{"name":"f","parameters":{"properties":{"\u00e9\n\"x""#
        ),
        "{text}"
    );
    assert!(text.ends_with(r#""truncation":"disabled","usage":{"input_tokens":0,"input_tokens_details":{"cached_tokens":0},"output_tokens":0,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":0},"user":null}"#), "{text}");

    let chunk = |delta: Value, finish: Value| {
        format!(
            "data: {}\n\n",
            json!({"id": "c1", "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        )
    };
    let stream = chunk(json!({"content": "ok"}), Value::Null)
        + &chunk(json!({}), json!("stop"))
        + "data: [DONE]\n\n";
    let mut t = Transcoder::for_responses(BackendFormat::OpenAiChat, echo);
    let mut parser = crate::sse::Parser::new();
    parser.push(stream.as_bytes()).unwrap();
    let mut out = Vec::new();
    while let Some(ev) = parser.next_event() {
        t.on_event(&ev.data, &mut out);
    }
    t.finish(&mut out);
    let text = String::from_utf8(out).unwrap();
    let mut with_response = 0;
    for event in text.split_terminator("\n\n") {
        let lines: Vec<&str> = event.lines().collect();
        assert_eq!(lines.len(), 2, "{event}");
        let data: Value = serde_json::from_str(lines[1].strip_prefix("data: ").unwrap()).unwrap();
        if let Some(r) = data.get("response") {
            assert_eq!(r["tools"], tools);
            assert_eq!(r["instructions"], sent["instructions"]);
            with_response += 1;
        }
    }
    assert_eq!(with_response, 3, "{text}");
}

#[test]
fn max_tokens_makes_an_incomplete_response() {
    let body = json!({"id": "chatcmpl-1", "model": "m", "choices": [{"index": 0, "message": {"role": "assistant", "content": "cut"}, "finish_reason": "length"}]});
    let (out, _, _) = tc::response_to_responses(
        BackendFormat::OpenAiChat,
        &Echo::default_settings(),
        body.to_string().as_bytes(),
    )
    .unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["status"], "incomplete");
    assert_eq!(
        v["incomplete_details"],
        json!({"reason": "max_output_tokens"})
    );
    assert_eq!(v["output"][0]["status"], "incomplete");
    assert_eq!(v["id"], "resp_chatcmpl-1");
    assert_eq!(v["output"][0]["id"], "msg_chatcmpl-1_0");
}

// === streams ===

fn stream_to_responses(from: BackendFormat, file: &str) -> Value {
    let mut v = sse_events(&transcode(from, Format::Responses, &fixture(file), &[]));
    normalise(&mut v);
    v
}

/// Checks the invariants every Responses stream holds, whatever the upstream said.
fn check_stream(events: &Value) {
    let events = events.as_array().unwrap();
    let mut open = std::collections::BTreeMap::new();
    let mut done = Vec::new();
    for (n, e) in events.iter().enumerate() {
        let d = &e["data"];
        let name = e["event"].as_str().unwrap();
        assert_eq!(d["type"], name, "event name and type agree");
        assert_eq!(d["sequence_number"], n, "sequence numbers count up from 0");
        let idx = d["output_index"].as_u64();
        match name {
            "response.output_item.added" => {
                assert!(open.insert(idx.unwrap(), d["item"]["id"].clone()).is_none());
            }
            "response.output_item.done" => {
                assert_eq!(open.remove(&idx.unwrap()), Some(d["item"]["id"].clone()));
                done.push((idx.unwrap(), d["item"].clone()));
            }
            "response.created" | "response.in_progress" => {
                assert_eq!(d["response"]["status"], "in_progress");
            }
            "response.completed" | "response.incomplete" => {
                assert_eq!(n, events.len() - 1, "the response ends the stream");
                assert!(open.is_empty(), "every item is done first");
                done.sort_by_key(|(i, _)| *i);
                let items: Vec<Value> = done.iter().map(|(_, it)| it.clone()).collect();
                assert_eq!(d["response"]["output"], Value::Array(items));
                assert_eq!(d["response"]["id"], events[0]["data"]["response"]["id"]);
            }
            _ => {
                // Every delta and part event belongs to an open item, by id.
                let i = idx.unwrap_or_else(|| panic!("{name} without output_index"));
                assert_eq!(open.get(&i), Some(&d["item_id"]), "{name} for an open item");
            }
        }
    }
}

#[test]
fn anthropic_stream_to_responses_matches_the_reference() {
    let ours = stream_to_responses(BackendFormat::Anthropic, "anthropic/stream.sse");
    golden("anthropic_stream_to_responses.json", &ours);
    check_stream(&ours);
    let reference = sse_events(&fixture("responses/stream.sse"));
    check_stream(&reference);
    // The same kinds of events in the same order (runs of deltas may differ in length).
    let kinds = |v: &Value| {
        let mut k: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["event"].as_str().unwrap().to_string())
            .collect();
        k.dedup();
        k
    };
    assert_eq!(kinds(&ours), kinds(&reference));
    // Every event has every field the reference's event of that kind has.
    for e in ours.as_array().unwrap() {
        let r = reference
            .as_array()
            .unwrap()
            .iter()
            .find(|r| {
                r["event"] == e["event"] && r["data"]["output_index"] == e["data"]["output_index"]
            })
            .unwrap_or_else(|| panic!("no reference event like {e}"));
        has_reference_shape(&e["data"], &r["data"], e["event"].as_str().unwrap());
    }
}

#[test]
fn openai_and_gemini_streams_to_responses() {
    let v = stream_to_responses(BackendFormat::OpenAiChat, "openai/stream.sse");
    check_stream(&v);
    golden("openai_stream_to_responses.json", &v);
    let v = stream_to_responses(BackendFormat::Gemini, "gemini/stream.sse");
    check_stream(&v);
    golden("gemini_stream_to_responses.json", &v);
    let v = stream_to_responses(BackendFormat::Gemini, "gemini/stream_tool.sse");
    check_stream(&v);
    golden("gemini_tool_stream_to_responses.json", &v);
}

#[test]
fn streams_split_at_every_byte_give_the_same_events() {
    for (from, file) in [
        (BackendFormat::Anthropic, "anthropic/stream.sse"),
        (BackendFormat::OpenAiChat, "openai/stream.sse"),
    ] {
        let input = fixture(file);
        let mut whole = sse_events(&transcode(from, Format::Responses, &input, &[]));
        normalise(&mut whole);
        for cut in 1..input.len() {
            let mut split = sse_events(&transcode(from, Format::Responses, &input, &[cut]));
            normalise(&mut split);
            assert_eq!(split, whole, "{file} cut at {cut}");
        }
    }
}

#[test]
fn stream_encoder_event_by_event() {
    use crate::chat::{FinishReason, StreamEvent as E};
    let mut enc = super::StreamEncoder::new(Echo::default_settings());
    let mut step = |ev: E| {
        let mut out = Vec::new();
        enc.encode(ev, &mut out);
        let mut v = sse_events(&out);
        normalise(&mut v);
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| e["event"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        step(E::Start {
            id: "c1".into(),
            model: "m".into(),
            usage: None
        }),
        ["response.created", "response.in_progress"]
    );
    assert_eq!(
        step(E::Text("a".into())),
        [
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta"
        ]
    );
    assert_eq!(step(E::Text("b".into())), ["response.output_text.delta"]);
    assert_eq!(
        step(E::ToolCallStart {
            index: 0,
            id: "call_1".into(),
            name: "f".into()
        }),
        [
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added"
        ]
    );
    assert_eq!(
        step(E::ToolCallStart {
            index: 1,
            id: "call_2".into(),
            name: "g".into()
        }),
        ["response.output_item.added"]
    );
    // A late piece of the first call still reaches it: calls stay open until the finish.
    assert_eq!(
        step(E::ToolCallArguments {
            index: 0,
            fragment: "{}".into()
        }),
        ["response.function_call_arguments.delta"]
    );
    assert_eq!(
        step(E::Finish {
            reason: FinishReason::ToolCalls,
            stop_sequence: None
        }),
        [
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.function_call_arguments.done",
            "response.output_item.done"
        ]
    );
    assert_eq!(
        step(E::Usage(crate::Usage::default())),
        Vec::<String>::new()
    );
    assert_eq!(step(E::Done), ["response.completed"]);
    assert_eq!(step(E::Text("late".into())), Vec::<String>::new());
}

#[test]
fn stream_errors_and_truncation() {
    let mut t = Transcoder::new(BackendFormat::OpenAiChat, Format::Responses, false);
    let mut out = Vec::new();
    t.on_event(
        br#"{"id":"c","model":"m","choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}"#,
        &mut out,
    );
    t.error("upstream_timeout", "stalled", &mut out);
    let v = sse_events(&out);
    let last = v.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["event"], "error");
    assert_eq!(
        last["data"],
        json!({"type": "error", "code": "upstream_timeout", "message": "stalled", "param": null, "sequence_number": 5})
    );
    assert!(t.is_done());

    let mut t = Transcoder::new(BackendFormat::OpenAiChat, Format::Responses, false);
    let mut out = Vec::new();
    for chunk in [
        r#"{"id":"c","model":"m","choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}"#,
        r#"{"id":"c","model":"m","choices":[{"index":0,"delta":{},"finish_reason":"length"}]}"#,
        "[DONE]",
    ] {
        t.on_event(chunk.as_bytes(), &mut out);
    }
    let v = sse_events(&out);
    let events = v.as_array().unwrap();
    check_stream(&v);
    let last = &events[events.len() - 1];
    assert_eq!(last["event"], "response.incomplete");
    assert_eq!(
        last["data"]["response"]["incomplete_details"]["reason"],
        "max_output_tokens"
    );
    assert_eq!(
        last["data"]["response"]["output"][0]["status"],
        "incomplete"
    );
}

#[test]
fn backend_refusals_name_the_callers_parameter() {
    let d =
        decode_request(br#"{"model":"m","input":"x","text":{"format":{"type":"json_object"}}}"#)
            .unwrap();
    let e = tc::encode_request(
        &d.request,
        BackendFormat::Anthropic,
        Dialect::Compatible,
        "c",
    )
    .unwrap_err();
    assert_eq!(super::caller_param(e).param(), "text.format");
}

#[test]
fn redacted_thinking_survives_the_round_trip() {
    let body = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "c",
        "content": [{"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"}, {"type": "text", "text": "ok"}],
        "stop_reason": "end_turn", "usage": {"input_tokens": 1, "output_tokens": 1}});
    let (out, _, _) = tc::response_to_responses(
        BackendFormat::Anthropic,
        &Echo::default_settings(),
        body.to_string().as_bytes(),
    )
    .unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    let item = &v["output"][0];
    assert_eq!(item["type"], "reasoning");
    assert_eq!(item["summary"], json!([]));
    let next = json!({"model": "m", "input": [{"role": "user", "content": "x"}, item, v["output"][1], {"role": "user", "content": "y"}]});
    let ir = decode_request(next.to_string().as_bytes())
        .unwrap()
        .into_owned()
        .request;
    let back: Value =
        serde_json::from_slice(&anthropic::encode_request(&ir, "c").unwrap()).unwrap();
    assert_eq!(
        back["messages"][1]["content"][0],
        json!({"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"})
    );
}

#[test]
fn reasoning_effort_becomes_a_thinking_budget_only_where_it_is_safe() {
    let anthropic = |extra: Value| -> Value {
        let mut body = json!({"model": "m", "input": "x", "reasoning": {"effort": "low"}});
        if let (Some(b), Value::Object(e)) = (body.as_object_mut(), extra) {
            b.extend(e);
        }
        let ir = decode_request(body.to_string().as_bytes())
            .unwrap()
            .into_owned()
            .request;
        serde_json::from_slice(&anthropic::encode_request(&ir, "c").unwrap()).unwrap()
    };
    let v = anthropic(json!({}));
    assert_eq!(
        v["thinking"],
        json!({"type": "enabled", "budget_tokens": 1024})
    );
    assert_eq!(v["max_tokens"], 4096 + 1024);
    let v = anthropic(json!({"max_output_tokens": 1500}));
    assert_eq!(v["thinking"]["budget_tokens"], 1024);
    assert_eq!(v["max_tokens"], 1500);
    // Where thinking would make Anthropic refuse the request, the effort is dropped.
    for extra in [
        json!({"max_output_tokens": 800}),
        json!({"temperature": 0.5}),
        json!({"top_p": 0.5}),
        json!({"tools": [{"type": "function", "name": "f"}], "tool_choice": "required"}),
        json!({"reasoning": {"effort": "minimal"}}),
    ] {
        let v = anthropic(extra.clone());
        assert!(v.get("thinking").is_none(), "{extra}: {v}");
    }
    // Gemini takes any budget; OpenAI gets the effort itself.
    let ir = decode_request(br#"{"model":"m","input":"x","reasoning":{"effort":"high"}}"#)
        .unwrap()
        .request;
    let g: Value = serde_json::from_slice(
        &tc::encode_request(&ir, BackendFormat::Gemini, Dialect::Compatible, "g").unwrap(),
    )
    .unwrap();
    assert_eq!(
        g["generationConfig"]["thinkingConfig"],
        json!({"thinkingBudget": 4096, "includeThoughts": true})
    );
    let o: Value = serde_json::from_slice(
        &tc::encode_request(&ir, BackendFormat::OpenAiChat, Dialect::OpenAi, "o").unwrap(),
    )
    .unwrap();
    assert_eq!(o["reasoning_effort"], "high");
    assert!(o.get("thinking").is_none());
}

#[test]
fn absurd_usage_totals_saturate() {
    let u = crate::Usage {
        input_tokens: u64::MAX,
        output_tokens: u64::MAX,
        cached_input_tokens: 0,
        cache_write_tokens: 0,
    };
    assert_eq!(crate::responses::usage_json(&u)["total_tokens"], u64::MAX);
}

/// The one-pass Responses decoder accepts exactly the bodies a `Value` parse accepts, and
/// refuses the others with its words: the pieces it keeps raw or parses apart are checked at
/// their depth in the body.
#[test]
fn decode_accepts_what_a_value_parse_accepts() {
    let deep = |n: usize| "[".repeat(n) + &"]".repeat(n);
    let item = |item: &str| format!(r#"{{"model":"m","input":[{item}]}}"#);
    let part = |part: &str| item(&format!(r#"{{"role":"user","content":[{part}]}}"#));
    let tool = |tool: &str| format!(r#"{{"model":"m","input":"hi","tools":[{tool}]}}"#);
    let bodies = [
        item(r#"{"role":"user","content":"lone \ud800"}"#),
        item(r#"{"role":"user","content":"pair \ud83d\ude00"}"#),
        item(r#"{"role":"user","content":"x","id":1e400}"#),
        item(r#"{"role":"user","content":{"a":1e400}}"#),
        item(r#"{"type":"function_call","call_id":"\udc00","name":"f"}"#),
        item(r#"{"type":"reasoning","summary":[{"text":"\ud800"}]}"#),
        item(&format!(
            r#"{{"role":"user","content":"x","z":{}}}"#,
            deep(125)
        )),
        item(&format!(
            r#"{{"role":"user","content":"x","z":{}}}"#,
            deep(126)
        )),
        item(&format!(r#"{{"role":"user","content":{}}}"#, deep(125))),
        item(&format!(r#"{{"role":"user","content":{}}}"#, deep(126))),
        part(r#"{"type":"input_text","text":"lone \udc00"}"#),
        part(r#"{"type":"input_text","text":"x","extra":1e400}"#),
        part(r#"{"type":"input_text","text":[[1e400]]}"#),
        part(&format!(
            r#"{{"type":"input_text","text":"x","z":{}}}"#,
            deep(122)
        )),
        part(&format!(
            r#"{{"type":"input_text","text":"x","z":{}}}"#,
            deep(123)
        )),
        part(&format!(r#"{{"type":"input_text","text":{}}}"#, deep(122))),
        part(&format!(r#"{{"type":"input_text","text":{}}}"#, deep(123))),
        part(&deep(123)),
        part(&deep(124)),
        tool(r#"{"type":"function","name":"f","description":"\ud800"}"#),
        tool(r#"{"type":"function","name":"f","parameters":{"x":1e400}}"#),
        tool(&format!(
            r#"{{"type":"function","name":"f","parameters":{{"a":{}}}}}"#,
            deep(123)
        )),
        tool(&format!(
            r#"{{"type":"function","name":"f","parameters":{{"a":{}}}}}"#,
            deep(124)
        )),
        tool(&format!(
            r#"{{"type":"namespace","name":"n","tools":[{{"type":"function","name":"f","x":{}}}]}}"#,
            deep(121)
        )),
        tool(&format!(
            r#"{{"type":"namespace","name":"n","tools":[{{"type":"function","name":"f","x":{}}}]}}"#,
            deep(122)
        )),
        tool(r#"{"type":"function","name":"f","x":1e400}"#),
        tool(r#"{"type":"function","name":"f","parameters":{"\ud800":1}}"#),
        tool(r#"{"type":"function","name":"f","parameters":{"\ud83d\ude00":{"enum":["\u00e9"]}}}"#),
        tool(r#"{"type":"function","name":"f","parameters":{"a":[1,{"b":"\udc00"}]}}"#),
        tool(
            r#"{"type":"function","name":"f","parameters":{"max":9007199254740991,"min":-1.5e3}}"#,
        ),
        tool(r#"{"type":"function","name":"f","parameters":{"max":1e400}}"#),
        tool(&format!(
            r#"{{"type":"function","name":"f","parameters":{{"max":{}}}}}"#,
            "9".repeat(400)
        )),
        tool(r#"{"type":"function","name":"f","description":"\ud800 x"}"#),
        tool(r#"{"type":"function","name":"f","description":["\ud800"]}"#),
        tool(r#"{"type":"function","name":"f","strict":"\ud800"}"#),
        tool(r#"{"type":"function","name":"f"},["\ud800"]"#),
        tool(r#"{"type":"namespace","name":"n","tools":[{"type":"function","name":"\ud800"}]}"#),
        tool(&format!(
            r#"{{"type":"function","name":"f","parameters":{}}}"#,
            deep(123)
        )),
        tool(&format!(
            r#"{{"type":"function","name":"f","parameters":{}}}"#,
            deep(124)
        )),
        tool(r#"{"type":"function","name":"\udc00"}"#),
        tool(r#"5, "\ud800""#),
        tool(&format!(
            r#"{{"type":"function","name":"f","x":{}}}"#,
            deep(124)
        )),
        tool(&format!(
            r#"{{"type":"function","name":"f","x":{}}}"#,
            deep(125)
        )),
        tool(&deep(125)),
        tool(&deep(126)),
        tool(&format!(
            r#"{{"type":"namespace","name":"n","tools":{}}}"#,
            deep(124)
        )),
        tool(&format!(
            r#"{{"type":"namespace","name":"n","tools":{}}}"#,
            deep(125)
        )),
        tool(&format!(
            r#"{{"type":"namespace","name":"n","tools":{{"a":{}}}}}"#,
            deep(123)
        )),
        tool(&format!(
            r#"{{"type":"namespace","name":"n","tools":{{"a":{}}}}}"#,
            deep(124)
        )),
        format!(
            r#"{{"model":"m","input":"hi","tools":{{"a":{}}}}}"#,
            deep(125)
        ),
        format!(
            r#"{{"model":"m","input":"hi","tools":{{"a":{}}}}}"#,
            deep(126)
        ),
        r#"{"model":"m","input":"hi","instructions":"\ud800"}"#.into(),
        r#"{"model":"m","input":"hi","instructions":[1e400]}"#.into(),
        r#"{"model":"m","input":"hi","metadata":{"a":1e400}}"#.into(),
        r#"{"model":"m","input":"hi"} trailing"#.into(),
        r#"[1, 2]"#.into(),
    ];
    let mut refused = 0;
    for body in &bodies {
        let by_value = serde_json::from_str::<Value>(body);
        let decoded = decode_request(body.as_bytes());
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
    assert!(refused >= 18, "{refused}");
    for body in [&b"{\"model\":\"m\",\xff}"[..], b"{\"input\":\"m\xff\"}"] {
        let e = serde_json::from_slice::<Value>(body).unwrap_err();
        assert_eq!(
            decode_request(body).unwrap_err().to_string(),
            format!("invalid request: the body is not valid JSON: {e}")
        );
    }
}

/// The walk over a body (`wire::parse`'s fast path) decodes exactly what the one-pass serde
/// parse decodes, and refuses with the same error.
#[test]
fn walk_decodes_as_serde_parse() {
    let bodies: Vec<String> = vec![
        include_str!("../../../../bench/bodies/codex.json").into(),
        include_str!("../../fixtures/responses/request.json").into(),
        r#"{"model":"m","instructions":"be \"brief\" \u00e9","input":[{"type":"message","role":"user","content":[{"type":"input_text","text":"h\ni"}]},{"type":"function_call","call_id":"c\u0031","name":"n","arguments":"{\"a\":1}","x":[1]},{"type":"function_call_output","call_id":"c1","output":"ok\ud83d\ude00"},{"type":"reasoning","summary":[{"type":"summary_text","text":"s"}],"encrypted_content":"e"},5,[1]],"tools":[{"type":"function","name":"n","description":"d\"","parameters":{"type":"object","properties":{"a\n":{"enum":[1e5,-0.5]}}},"strict":true},{"type":"namespace","name":"ns","tools":[{"type":"function","name":"x","parameters":{}}]},{"type":"web_search"}],"temperature":0.5,"stream":true}"#.into(),
        r#"{"model":"m","input":"hi","tools":null,"instructions":null}"#.into(),
        r#"{"model":"m","input":"\ud800"}"#.into(),
        r#"{"model":"m","input":"hi","tools":[{"type":"function","name":"n","parameters":{"x":1e400}}]}"#.into(),
        r#"{"model":"m","input":"hi",}"#.into(),
        r#"{"model":"m","input":"hi"} x"#.into(),
        r#"{"model":"m","input":"hi","instructions":5}"#.into(),
        r#"{"model":"m","input":"hi","tools":[{"type":"function","name":"f\u00e9","parameters":{"\ud83d\ude00":{"maximum":9007199254740991,"x":2.5e3}}}]}"#.into(),
        r#"{"model":"m","input":"hi","tools":[{"type":"function","name":"f","parameters":{"maximum":9007199254740991}},[1,[2]],5]}"#.into(),
    ];
    for (i, body) in bodies.iter().enumerate() {
        // The valid ones are walked, not handed back to serde.
        let walk =
            crate::anthropic::wire::parse_walk::<crate::responses::wire::Top>(body.as_bytes());
        assert_eq!(walk.is_some(), !(4..8).contains(&i), "{body}");
        let walked = decode_request(body.as_bytes());
        crate::anthropic::wire::FORCE_SERDE.with(|f| f.set(true));
        let parsed = decode_request(body.as_bytes());
        crate::anthropic::wire::FORCE_SERDE.with(|f| f.set(false));
        assert_eq!(walked, parsed, "{body}");
    }
}
