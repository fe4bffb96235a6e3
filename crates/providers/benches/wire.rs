//! Hot-path translation work per request and per stream chunk: OpenAI request decode and
//! encode (model rewrite, `stream_options` injection), SSE framing, stream-chunk inspection,
//! and OpenAI↔Anthropic translation of requests, responses and streams (over the recorded
//! fixtures in `fixtures/`). `make bench` runs these and folds the figures into its table.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use switchyard_providers::{
    openai::{self, chat::Dialect},
    sse,
    transcode::{self, Format, Transcoder},
    Operation,
};

/// A short chat request, as most SDK calls look.
const SMALL: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Say something, please."}],"temperature":0.7,"max_tokens":256}"#;

/// One content chunk of an OpenAI chat stream, as the upstream sends it.
const CHUNK: &[u8] = b"data: {\"id\":\"chatcmpl-8f2a61c0b9d44e2a\",\"object\":\"chat.completion.chunk\",\"created\":1732000000,\"model\":\"mock-model\",\"system_fingerprint\":\"fp_mock\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" token\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n";

/// The usage-only chunk that ends a stream asked with `include_usage`.
const USAGE_CHUNK: &[u8] = b"data: {\"id\":\"chatcmpl-8f2a61c0b9d44e2a\",\"object\":\"chat.completion.chunk\",\"created\":1732000000,\"model\":\"mock-model\",\"choices\":[],\"usage\":{\"prompt_tokens\":24,\"completion_tokens\":20,\"total_tokens\":44,\"prompt_tokens_details\":{\"cached_tokens\":0}}}\n\n";

/// A whole non-streamed answer, as `switchyard-mock` sends it.
const RESPONSE: &[u8] = br#"{"id":"chatcmpl-BgNzuJhebGH22PpWBN5rIcLB6BIag","object":"chat.completion","created":1795580644,"model":"mock-model","choices":[{"index":0,"message":{"role":"assistant","content":"Mock reply from switchyard with deterministic content for demos, tests and benchmarks. reply from switchyard with deterministic content for","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":20,"total_tokens":30,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}},"system_fingerprint":"fp_switchyard_mock"}"#;

/// A multi-turn request of about 4 KiB with a tool definition, the larger end of chat traffic.
fn large_request(stream: bool) -> String {
    let mut messages = vec![
        serde_json::json!({"role": "system", "content": "You are a careful assistant. Answer briefly and cite the tool output when you use it."}),
    ];
    for i in 0..12 {
        messages.push(serde_json::json!({"role": "user", "content": format!("Question {i}: what is the status of order {i:05} and when will it ship? Please include the carrier.")}));
        messages.push(serde_json::json!({"role": "assistant", "content": format!("Order {i:05} is packed; it ships tomorrow with the usual carrier, tracking to follow.")}));
    }
    serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": messages,
        "tools": [{"type": "function", "function": {"name": "order_status", "description": "Look up an order", "parameters": {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]}}}],
        "temperature": 0.2,
        "stream": stream,
    })
    .to_string()
}

fn request(c: &mut Criterion) {
    let mut g = c.benchmark_group("openai/request");
    let large = large_request(false);
    let large_stream = large_request(true);
    let small_stream = SMALL.replacen('{', r#"{"stream":true,"#, 1);
    let cases = [
        ("small", SMALL),
        ("small_stream", small_stream.as_str()),
        ("large", large.as_str()),
        ("large_stream", large_stream.as_str()),
    ];
    for (name, body) in cases {
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(format!("decode/{name}"), |b| {
            b.iter(|| {
                openai::Request::decode(Operation::ChatCompletions, black_box(body.as_bytes()))
                    .map(|r| r.stream)
            })
        });
        let decoded = openai::Request::decode(Operation::ChatCompletions, body.as_bytes())
            .expect("fixture decodes");
        g.bench_function(format!("encode/{name}"), |b| {
            b.iter(|| decoded.encode(black_box("mock-model")))
        });
        g.bench_function(format!("decode_encode/{name}"), |b| {
            b.iter(|| {
                openai::Request::decode(Operation::ChatCompletions, black_box(body.as_bytes()))
                    .map(|r| r.encode("mock-model"))
            })
        });
    }
    g.finish();
}

fn stream(c: &mut Criterion) {
    let mut g = c.benchmark_group("sse");
    g.throughput(Throughput::Bytes(CHUNK.len() as u64));
    // One chunk arriving whole, framed, then inspected: the per-chunk work of a relay.
    g.bench_function("parse/chunk", |b| {
        let mut p = sse::Parser::new();
        b.iter(|| {
            p.push(black_box(CHUNK)).expect("small chunk");
            p.next_event().map(|e| e.data.len())
        })
    });
    g.bench_function("parse_inspect/chunk", |b| {
        let mut p = sse::Parser::new();
        b.iter(|| {
            p.push(black_box(CHUNK)).expect("small chunk");
            let e = p.next_event().expect("whole event");
            openai::inspect_chunk(&e.data)
        })
    });
    // The same chunk split across two reads, as TCP sometimes delivers it.
    g.bench_function("parse/chunk_split", |b| {
        let mut p = sse::Parser::new();
        let (a, z) = CHUNK.split_at(CHUNK.len() / 2);
        b.iter(|| {
            p.push(black_box(a)).expect("small chunk");
            assert!(p.next_event().is_none());
            p.push(black_box(z)).expect("small chunk");
            p.next_event().map(|e| e.data.len())
        })
    });
    let data = &CHUNK[6..CHUNK.len() - 2];
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("inspect/content", |b| {
        b.iter(|| openai::inspect_chunk(black_box(data)))
    });
    g.throughput(Throughput::Bytes(RESPONSE.len() as u64));
    assert!(openai::inspect_response(RESPONSE).usage.is_some());
    g.bench_function("inspect/response", |b| {
        b.iter(|| openai::inspect_response(black_box(RESPONSE)))
    });
    let usage = &USAGE_CHUNK[6..USAGE_CHUNK.len() - 2];
    assert!(openai::inspect_chunk(usage).usage.is_some());
    g.throughput(Throughput::Bytes(usage.len() as u64));
    g.bench_function("inspect/usage", |b| {
        b.iter(|| openai::inspect_chunk(black_box(usage)))
    });
    // A whole 20-chunk stream plus usage and [DONE], read in 1 KiB pieces.
    let mut whole = Vec::new();
    for _ in 0..20 {
        whole.extend_from_slice(CHUNK);
    }
    whole.extend_from_slice(USAGE_CHUNK);
    whole.extend_from_slice(b"data: [DONE]\n\n");
    g.throughput(Throughput::Bytes(whole.len() as u64));
    g.bench_function("parse_inspect/stream_20_chunks", |b| {
        b.iter(|| {
            let mut p = sse::Parser::new();
            let mut events = 0;
            for piece in black_box(&whole).chunks(1024) {
                p.push(piece).expect("small stream");
                while let Some(e) = p.next_event() {
                    if &e.data[..] != b"[DONE]" {
                        black_box(openai::inspect_chunk(&e.data));
                    }
                    events += 1;
                }
            }
            events
        })
    });
    g.finish();
}

/// Recorded provider traffic, the same the golden tests use.
const OPENAI_REQUEST: &[u8] = include_bytes!("../fixtures/openai/request.json");
const OPENAI_RESPONSE: &[u8] = include_bytes!("../fixtures/openai/response.json");
const OPENAI_STREAM: &[u8] = include_bytes!("../fixtures/openai/stream.sse");
const ANTHROPIC_REQUEST: &[u8] = include_bytes!("../fixtures/anthropic/request.json");
const ANTHROPIC_RESPONSE: &[u8] = include_bytes!("../fixtures/anthropic/response.json");
const ANTHROPIC_STREAM: &[u8] = include_bytes!("../fixtures/anthropic/stream.sse");
const RESPONSES_REQUEST: &[u8] = include_bytes!("../fixtures/responses/request.json");

fn translate(c: &mut Criterion) {
    let mut g = c.benchmark_group("translate");
    for (name, from, to, target, body) in [
        (
            "openai_to_anthropic",
            Format::OpenAiChat,
            Format::Anthropic,
            "anthropic",
            OPENAI_REQUEST,
        ),
        (
            "anthropic_to_openai",
            Format::Anthropic,
            Format::OpenAiChat,
            "openai",
            ANTHROPIC_REQUEST,
        ),
        (
            "responses_to_anthropic",
            Format::Responses,
            Format::Anthropic,
            "anthropic",
            RESPONSES_REQUEST,
        ),
    ] {
        transcode::request(from, to, Dialect::OpenAi, target, body, "upstream-model")
            .expect("fixture translates");
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(format!("request/{name}"), |b| {
            b.iter(|| {
                transcode::request(
                    from,
                    to,
                    Dialect::OpenAi,
                    target,
                    black_box(body),
                    "upstream-model",
                )
            })
        });
    }
    for (name, from, to, body) in [
        (
            "anthropic_to_openai",
            Format::Anthropic,
            Format::OpenAiChat,
            ANTHROPIC_RESPONSE,
        ),
        (
            "openai_to_anthropic",
            Format::OpenAiChat,
            Format::Anthropic,
            OPENAI_RESPONSE,
        ),
        (
            "anthropic_to_responses",
            Format::Anthropic,
            Format::Responses,
            ANTHROPIC_RESPONSE,
        ),
    ] {
        transcode::response(from, to, body).expect("fixture translates");
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(format!("response/{name}"), |b| {
            b.iter(|| transcode::response(from, to, black_box(body)))
        });
    }
    // A whole recorded stream, framed and translated event by event, as the relay does;
    // throughput is in upstream events, so the per-chunk cost reads directly.
    for (name, from, to, input) in [
        (
            "anthropic_to_openai",
            Format::Anthropic,
            Format::OpenAiChat,
            ANTHROPIC_STREAM,
        ),
        (
            "openai_to_anthropic",
            Format::OpenAiChat,
            Format::Anthropic,
            OPENAI_STREAM,
        ),
        (
            "anthropic_to_responses",
            Format::Anthropic,
            Format::Responses,
            ANTHROPIC_STREAM,
        ),
        (
            "openai_to_responses",
            Format::OpenAiChat,
            Format::Responses,
            OPENAI_STREAM,
        ),
    ] {
        let events = {
            let mut p = sse::Parser::new();
            p.push(input).expect("small fixture");
            std::iter::from_fn(|| p.next_event()).count()
        };
        g.throughput(Throughput::Elements(events as u64));
        g.bench_function(format!("stream/{name}"), |b| {
            let mut out = Vec::with_capacity(4096);
            b.iter(|| {
                out.clear();
                let mut p = sse::Parser::new();
                let mut t = Transcoder::new(from, to, false);
                p.push(black_box(input)).expect("small fixture");
                while let Some(ev) = p.next_event() {
                    t.on_event(&ev.data, &mut out);
                }
                t.finish(&mut out);
                out.len()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, request, stream, translate);
criterion_main!(benches);
