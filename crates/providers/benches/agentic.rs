//! Agent-sized requests (issue #21): the ~87 KB Claude Code request captured from the real
//! CLI, the ~40 KB Codex CLI Responses request, and a ~70 KB OpenAI agent turn with `model`
//! last (openai-python's key order) — the bodies `bench/run.py` sends, from `bench/bodies/`.
//! Measured: the scan for `model` the passthrough does, every translation of each body the
//! gateway can be asked for, and the per-event cost of stream translation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use switchyard_providers::{
    anthropic,
    openai::{self, chat::Dialect},
    sse,
    transcode::{self, BackendFormat, Format, Transcoder},
    Operation,
};

const CLAUDE_CODE: &[u8] = include_bytes!("../../../bench/bodies/claude-code.json");
const CODEX: &[u8] = include_bytes!("../../../bench/bodies/codex.json");
const OPENAI_70K: &[u8] = include_bytes!("../../../bench/bodies/openai-70k-model-last.json");
const ANTHROPIC_STREAM: &[u8] = include_bytes!("../fixtures/anthropic/stream.sse");
const OPENAI_STREAM: &[u8] = include_bytes!("../fixtures/openai/stream.sse");

fn scan(c: &mut Criterion) {
    let mut g = c.benchmark_group("agentic/scan");
    g.throughput(Throughput::Bytes(OPENAI_70K.len() as u64));
    g.bench_function("openai_70k_model_last", |b| {
        b.iter(|| {
            openai::Request::decode(Operation::ChatCompletions, black_box(OPENAI_70K))
                .map(|r| r.stream)
        })
    });
    g.throughput(Throughput::Bytes(CLAUDE_CODE.len() as u64));
    g.bench_function("claude_code", |b| {
        b.iter(|| {
            anthropic::Request::decode(anthropic::Endpoint::Messages, black_box(CLAUDE_CODE))
                .map(|r| r.stream)
        })
    });
    g.finish();
}

fn translate(c: &mut Criterion) {
    let mut g = c.benchmark_group("agentic/request");
    let cases: [(&str, Format, BackendFormat, &'static str, &[u8]); 7] = [
        (
            "claude_code_to_openai",
            Format::Anthropic,
            BackendFormat::OpenAiChat,
            "openai",
            CLAUDE_CODE,
        ),
        (
            "claude_code_to_gemini",
            Format::Anthropic,
            BackendFormat::Gemini,
            "gemini",
            CLAUDE_CODE,
        ),
        (
            "claude_code_to_bedrock",
            Format::Anthropic,
            BackendFormat::Bedrock,
            "bedrock",
            CLAUDE_CODE,
        ),
        (
            "openai_70k_to_anthropic",
            Format::OpenAiChat,
            BackendFormat::Anthropic,
            "anthropic",
            OPENAI_70K,
        ),
        (
            "openai_70k_to_gemini",
            Format::OpenAiChat,
            BackendFormat::Gemini,
            "gemini",
            OPENAI_70K,
        ),
        (
            "codex_responses_to_chat",
            Format::Responses,
            BackendFormat::OpenAiChat,
            "openai",
            CODEX,
        ),
        (
            "codex_responses_to_anthropic",
            Format::Responses,
            BackendFormat::Anthropic,
            "anthropic",
            CODEX,
        ),
    ];
    for (name, from, to, target, body) in cases {
        transcode::request(from, to, Dialect::OpenAi, target, body, "upstream-model")
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(name, |b| {
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
    g.finish();
}

/// One content delta translated by a transcoder already past the stream's start: the cost
/// every further event of a translated stream pays.
fn stream_event(c: &mut Criterion) {
    let mut g = c.benchmark_group("agentic/stream_event");
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
        let mut p = sse::Parser::new();
        p.push(input).expect("small fixture");
        let events: Vec<sse::Event> = std::iter::from_fn(|| p.next_event()).collect();
        // The first content delta (Anthropic `text_delta`, an OpenAI chunk with non-empty
        // `content`): events before it start the stream. Not `message_start` (its
        // `"content":[]`) nor the role chunk (`"content":""`).
        let delta = events
            .iter()
            .position(|e| {
                let d = &e.data[..];
                let has = |s: &[u8]| d.windows(s.len()).any(|w| w == s);
                has(b"\"text_delta\"") || (has(b"\"content\":\"") && !has(b"\"content\":\"\""))
            })
            .unwrap_or_else(|| panic!("{name}: no content delta"));
        let mut t = Transcoder::new(from, to, false);
        let mut out = Vec::with_capacity(4096);
        for e in &events[..=delta] {
            t.on_event(&e.data, &mut out);
        }
        let data = events[delta].data.clone();
        g.throughput(Throughput::Elements(1));
        g.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                t.on_event(black_box(&data), &mut out);
                out.len()
            })
        });
    }
    g.finish();
}

/// The answer to the Codex request, translated back to a Responses caller: every response
/// object repeats the request's `tools` and `instructions` (most of its 40 KB), three times in
/// a stream (`response.created`, `response.in_progress`, `response.completed`).
fn codex_response(c: &mut Criterion) {
    let mut g = c.benchmark_group("agentic/codex_response");
    let echo = || {
        switchyard_providers::responses::decode_request(CODEX)
            .expect("the Codex body decodes")
            .echo
    };
    let body = include_bytes!("../fixtures/openai/response.json");
    let e = echo();
    g.bench_function("from_openai", |b| {
        b.iter(|| transcode::response_to_responses(BackendFormat::OpenAiChat, &e, black_box(body)))
    });
    let mut p = sse::Parser::new();
    p.push(OPENAI_STREAM).expect("small fixture");
    let events: Vec<sse::Event> = std::iter::from_fn(|| p.next_event()).collect();
    let mut out = Vec::with_capacity(1 << 17);
    g.bench_function("stream_from_openai", |b| {
        b.iter_batched(
            || Transcoder::for_responses(BackendFormat::OpenAiChat, e.clone()),
            |mut t| {
                out.clear();
                for ev in &events {
                    t.on_event(&ev.data, &mut out);
                }
                t.finish(&mut out);
                out.len()
            },
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, scan, translate, stream_event, codex_response);
criterion_main!(benches);
