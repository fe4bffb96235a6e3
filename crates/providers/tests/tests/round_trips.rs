//! Translation round trips keep the content and the tool calls: requests through every
//! caller format and back, complete responses and streams between every pair of formats.

use std::collections::BTreeMap;

use proptest::{collection::vec, prelude::*, sample::Index};
use serde_json::{json, Value};
use switchyard_providers::{
    anthropic,
    chat::{self, arguments_object, StreamEvent},
    openai::{self, chat::Dialect},
    sse,
    transcode::{self, BackendFormat, Format, Transcoder},
};

use crate::common::gen::{self, Answer, Call, Conversation, Item, View};

// === requests ===

fn call_json(c: &Call) -> Value {
    json!({
        "id": c.id,
        "type": "function",
        "function": {"name": c.name, "arguments": Value::Object(c.arguments.clone()).to_string()},
    })
}

fn openai_request(c: &Conversation) -> Vec<u8> {
    let mut messages = Vec::new();
    if let Some(s) = &c.system {
        messages.push(json!({"role": "system", "content": s}));
    }
    for r in &c.rounds {
        for (id, text) in &r.results {
            messages.push(json!({"role": "tool", "tool_call_id": id, "content": text}));
        }
        if let Some(t) = &r.user_text {
            messages.push(json!({"role": "user", "content": t}));
        }
        let mut m = json!({"role": "assistant", "content": r.assistant_text});
        if !r.calls.is_empty() {
            m["tool_calls"] = r.calls.iter().map(call_json).collect();
        }
        messages.push(m);
    }
    serde_json::to_vec(&json!({"model": "gpt-4o", "messages": messages})).unwrap()
}

fn anthropic_request(c: &Conversation) -> Vec<u8> {
    let mut messages = Vec::new();
    for r in &c.rounds {
        let mut user: Vec<Value> = r
            .results
            .iter()
            .map(|(id, text)| {
                json!({"type": "tool_result", "tool_use_id": id, "content": [{"type": "text", "text": text}]})
            })
            .collect();
        if let Some(t) = &r.user_text {
            user.push(json!({"type": "text", "text": t}));
        }
        messages.push(json!({"role": "user", "content": user}));
        let mut assistant = Vec::new();
        if let Some(t) = &r.assistant_text {
            assistant.push(json!({"type": "text", "text": t}));
        }
        for call in &r.calls {
            assistant.push(json!({"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}));
        }
        messages.push(json!({"role": "assistant", "content": assistant}));
    }
    let mut body = json!({"model": "claude-sonnet-4-5", "max_tokens": 1024, "messages": messages});
    if let Some(s) = &c.system {
        body["system"] = json!(s);
    }
    serde_json::to_vec(&body).unwrap()
}

fn responses_request(c: &Conversation) -> Vec<u8> {
    let mut input = Vec::new();
    if let Some(s) = &c.system {
        input.push(json!({"role": "developer", "content": s}));
    }
    for r in &c.rounds {
        for (id, text) in &r.results {
            input.push(json!({"type": "function_call_output", "call_id": id, "output": text}));
        }
        if let Some(t) = &r.user_text {
            input.push(json!({"type": "message", "role": "user", "content": [{"type": "input_text", "text": t}]}));
        }
        if let Some(t) = &r.assistant_text {
            input.push(json!({"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": t}]}));
        }
        for call in &r.calls {
            input.push(json!({
                "type": "function_call", "call_id": call.id, "name": call.name,
                "arguments": Value::Object(call.arguments.clone()).to_string(),
            }));
        }
    }
    serde_json::to_vec(&json!({"model": "gpt-5", "input": input})).unwrap()
}

/// Encodes `req` for `to` and decodes it again as a caller of that format would send it.
fn through(req: &chat::Request<'_>, to: Format) -> chat::Request<'static> {
    let body = transcode::encode_request(req, to, Dialect::OpenAi, "model-1").unwrap();
    transcode::decode_request(to, "fuzz", &body)
        .unwrap_or_else(|e| panic!("{to:?} does not decode its own encoding: {e}"))
        .into_owned()
}

proptest! {
    #![proptest_config(crate::common::proptest_config())]

    /// OpenAI → chat → Anthropic → chat → OpenAI → chat, and the same from an Anthropic and
    /// a Responses caller: the system prompt, every text, tool call (id, name, arguments) and
    /// tool result survive.
    #[test]
    fn requests_keep_content_and_tool_calls(c in gen::conversation()) {
        let expected = View::expected(&c);
        for (from, body) in [
            (Format::OpenAiChat, openai_request(&c)),
            (Format::Anthropic, anthropic_request(&c)),
            (Format::Responses, responses_request(&c)),
        ] {
            let decoded = transcode::decode_request(from, "fuzz", &body).unwrap();
            prop_assert_eq!(&View::of(&decoded), &expected, "{:?} decoded", from);
            let mut req = decoded;
            for to in [Format::Anthropic, Format::OpenAiChat, Format::Anthropic] {
                req = through(&req, to);
                prop_assert_eq!(&View::of(&req), &expected, "{:?} → {:?}", from, to);
            }
        }
    }
}

// === complete responses ===

/// The text and calls of a caller's response body in `format`.
fn response_items(format: Format, body: &[u8]) -> Vec<Item> {
    match format {
        Format::OpenAiChat => gen::response_items(&openai::chat::decode_response(body).unwrap()),
        Format::Anthropic => gen::response_items(&anthropic::decode_response(body).unwrap()),
        Format::Responses => {
            let v: Value = serde_json::from_slice(body).unwrap();
            responses_output_items(&v["output"])
        }
    }
}

/// The text and calls of a Responses `output` array.
fn responses_output_items(output: &Value) -> Vec<Item> {
    let mut items: Vec<Item> = Vec::new();
    for item in output.as_array().into_iter().flatten() {
        match item["type"].as_str() {
            Some("message") => {
                for c in item["content"].as_array().into_iter().flatten() {
                    let t = c["text"].as_str().unwrap_or_default().to_string();
                    match items.last_mut() {
                        Some(Item::Text(prev)) => prev.push_str(&t),
                        _ if t.is_empty() => {}
                        _ => items.push(Item::Text(t)),
                    }
                }
            }
            Some("function_call") => items.push(Item::Call(Call {
                id: item["call_id"].as_str().unwrap_or_default().to_string(),
                name: item["name"].as_str().unwrap_or_default().to_string(),
                arguments: arguments_object(item["arguments"].as_str().unwrap_or_default()),
            })),
            _ => {}
        }
    }
    items
}

proptest! {
    #![proptest_config(crate::common::proptest_config())]

    /// A complete answer from an OpenAI or Anthropic backend reaches every caller format
    /// with its text, tool calls, finish reason and usage.
    #[test]
    fn responses_keep_content_and_tool_calls(a in gen::answer()) {
        let resp = a.response();
        for (from, body) in [
            (BackendFormat::OpenAiChat, openai::chat::encode_response(&resp)),
            (BackendFormat::Anthropic, anthropic::encode_response(&resp)),
        ] {
            for to in [Format::OpenAiChat, Format::Anthropic, Format::Responses] {
                let (out, usage, finish) = transcode::response(from, to, &body).unwrap();
                prop_assert_eq!(response_items(to, &out), a.items(), "{:?} → {:?}", from, to);
                prop_assert_eq!(usage, Some(a.usage), "{:?} → {:?}", from, to);
                prop_assert_eq!(finish, Some(a.finish), "{:?} → {:?}", from, to);
            }
        }
    }
}

// === streams ===

/// `s` cut at the char boundaries nearest `cuts`.
fn pieces(s: &str, cuts: &[Index]) -> Vec<String> {
    let mut at: Vec<usize> = cuts
        .iter()
        .map(|i| {
            let mut p = i.index(s.len() + 1);
            while !s.is_char_boundary(p) {
                p -= 1;
            }
            p
        })
        .collect();
    at.push(s.len());
    at.sort_unstable();
    let mut out = Vec::new();
    let mut last = 0;
    for p in at {
        if p > last {
            out.push(s[last..p].to_string());
            last = p;
        }
    }
    out
}

/// The answer as internal stream events, its text and arguments cut into pieces.
fn stream_events(a: &Answer, cuts: &[Index]) -> Vec<StreamEvent> {
    let mut ev = vec![StreamEvent::Start {
        id: "resp_1".into(),
        model: "model-1".into(),
        usage: None,
    }];
    if let Some(t) = &a.text {
        ev.extend(pieces(t, cuts).into_iter().map(StreamEvent::Text));
    }
    for (i, c) in a.calls.iter().enumerate() {
        let index = u32::try_from(i).unwrap();
        ev.push(StreamEvent::ToolCallStart {
            index,
            id: c.id.clone(),
            name: c.name.clone(),
        });
        let args = Value::Object(c.arguments.clone()).to_string();
        ev.extend(
            pieces(&args, cuts)
                .into_iter()
                .map(|fragment| StreamEvent::ToolCallArguments { index, fragment }),
        );
    }
    ev.push(StreamEvent::Finish {
        reason: a.finish,
        stop_sequence: None,
    });
    ev.push(StreamEvent::Usage(a.usage));
    ev.push(StreamEvent::Done);
    ev
}

fn sse_payloads(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut p = sse::Parser::new();
    p.push(bytes).unwrap();
    let mut out = Vec::new();
    while let Some(e) = p.next_event() {
        out.push(e.data.to_vec());
    }
    assert_eq!(p.pending(), 0);
    out
}

/// What a caller reassembles from a stream's events.
#[derive(Debug, Default)]
struct Assembled {
    text: String,
    calls: BTreeMap<u32, (String, String, String)>,
    finish: Option<chat::FinishReason>,
    usage: Option<switchyard_providers::Usage>,
}

impl Assembled {
    fn of(events: Vec<StreamEvent>) -> Self {
        let mut a = Assembled::default();
        for e in events {
            match e {
                StreamEvent::Text(t) => a.text.push_str(&t),
                StreamEvent::ToolCallStart { index, id, name } => {
                    a.calls.insert(index, (id, name, String::new()));
                }
                StreamEvent::ToolCallArguments { index, fragment } => {
                    a.calls.entry(index).or_default().2.push_str(&fragment);
                }
                StreamEvent::Finish { reason, .. } => a.finish = Some(reason),
                StreamEvent::Usage(u) => a.usage = Some(u),
                StreamEvent::Start { usage: Some(u), .. } => a.usage = Some(u),
                _ => {}
            }
        }
        a
    }

    fn items(&self) -> Vec<Item> {
        let mut items = Vec::new();
        if !self.text.is_empty() {
            items.push(Item::Text(self.text.clone()));
        }
        for (id, name, args) in self.calls.values() {
            items.push(Item::Call(Call {
                id: id.clone(),
                name: name.clone(),
                arguments: arguments_object(args),
            }));
        }
        items
    }
}

/// The caller's view of a translated stream in `format`.
fn caller_items(format: Format, bytes: &[u8]) -> (Vec<Item>, Assembled) {
    let mut events = Vec::new();
    match format {
        Format::OpenAiChat => {
            let mut d = openai::chat::StreamDecoder::default();
            for p in sse_payloads(bytes) {
                d.decode(&p, &mut events);
            }
        }
        Format::Anthropic => {
            let mut d = anthropic::StreamDecoder::default();
            for p in sse_payloads(bytes) {
                d.decode(&p, &mut events);
            }
        }
        Format::Responses => {
            // The last event (`response.completed` or `response.incomplete`) holds the whole
            // response.
            let completed = sse_payloads(bytes)
                .into_iter()
                .filter_map(|p| serde_json::from_slice::<Value>(&p).ok())
                .next_back()
                .unwrap();
            assert!(
                matches!(
                    completed["type"].as_str(),
                    Some("response.completed" | "response.incomplete")
                ),
                "{completed}"
            );
            let items = responses_output_items(&completed["response"]["output"]);
            return (items, Assembled::default());
        }
    }
    let a = Assembled::of(events);
    (a.items(), a)
}

proptest! {
    #![proptest_config(crate::common::proptest_config())]

    /// A streamed answer, its text and arguments cut anywhere, from an OpenAI or Anthropic
    /// backend reaches every caller format with its text, tool calls and finish reason.
    #[test]
    fn streams_keep_content_and_tool_calls(a in gen::answer(), cuts in vec(any::<Index>(), 0..4)) {
        let events = stream_events(&a, &cuts);
        let upstreams: [(BackendFormat, Vec<u8>); 2] = [
            (BackendFormat::OpenAiChat, {
                let mut e = openai::chat::StreamEncoder::new(true);
                let mut out = Vec::new();
                events.iter().cloned().for_each(|ev| e.encode(ev, &mut out));
                out
            }),
            (BackendFormat::Anthropic, {
                let mut e = anthropic::StreamEncoder::new();
                let mut out = Vec::new();
                events.iter().cloned().for_each(|ev| e.encode(ev, &mut out));
                out
            }),
        ];
        for (from, upstream) in upstreams {
            for to in [Format::OpenAiChat, Format::Anthropic, Format::Responses] {
                let mut t = Transcoder::new(from, to, true);
                let mut out = Vec::new();
                for p in sse_payloads(&upstream) {
                    t.on_event(&p, &mut out);
                }
                prop_assert!(t.upstream_complete(), "{:?} → {:?}", from, to);
                t.finish(&mut out);
                let (items, assembled) = caller_items(to, &out);
                prop_assert_eq!(items, a.items(), "{:?} → {:?}", from, to);
                if to != Format::Responses {
                    prop_assert_eq!(assembled.finish, Some(a.finish), "{:?} → {:?}", from, to);
                }
            }
        }
    }
}
