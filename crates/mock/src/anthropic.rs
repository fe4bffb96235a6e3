//! Anthropic Messages wire format: responses, the SSE event sequence (`message_start`,
//! `content_block_*`, `message_delta`, `message_stop`, `ping`), tool_use answers whose input
//! streams in pieces, and Anthropic's error bodies.
//!
//! Shapes follow the public API reference; the official Anthropic Python SDK parses them in
//! the end-to-end tests.
//!
//! With `thinking` enabled the reply starts with a signed thinking block, and, as Anthropic
//! does, a later request must hand thinking back intact: a thinking block whose signature the
//! mock did not issue is refused, and so is a final assistant turn with tool calls that does
//! not start with its thinking.

use std::collections::VecDeque;

use bytes::Bytes;
use serde_json::{json, Value};

use crate::faults::Knobs;
use crate::openai::{self, ApiError};
use crate::tools;

/// The Anthropic rendering of a mock error: `{"type":"error","error":{"type","message"}}`.
pub fn error_body(err: &ApiError) -> Bytes {
    let kind = match err.status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 | 503 => "overloaded_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    };
    let message = match err.status.as_u16() {
        529 => "Overloaded (injected by switchyard-mock).",
        _ => &err.message,
    };
    Bytes::from(
        serde_json::to_vec(&json!({"type": "error", "error": {"type": kind, "message": message}}))
            .unwrap_or_default(),
    )
}

/// What a Messages request asks for, validated.
pub struct Plan {
    model: String,
    input_tokens: u64,
    pieces: u32,
    stop_reason: &'static str,
    tool: Option<tools::Call>,
    thinking: bool,
    /// What the simulated prompt cache read and wrote; `input_tokens` excludes both.
    cache: crate::cache::CacheUsage,
}

/// What the mock thinks, and the prefix of the signatures it issues.
const THINKING: &str = "Mock thinking about the request.";
const SIGNATURE_PREFIX: &str = "mock-signature-";

/// Validates a Messages request and plans the reply: a tool_use block when the request offers
/// tools (or `x-mock-tool-call` names one) and its last turn is not a tool result, else text.
pub fn plan(body: &Value, knobs: &Knobs, tool_header: Option<&str>) -> Result<Plan, ApiError> {
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .ok_or_else(ApiError::missing_model)?;
    let max_tokens = body
        .get("max_tokens")
        .and_then(Value::as_u64)
        .ok_or_else(|| ApiError::missing_param("max_tokens"))?;
    let messages = match body.get("messages") {
        Some(Value::Array(m)) if !m.is_empty() => m,
        Some(Value::Array(_)) => return Err(ApiError::empty_array("messages")),
        _ => return Err(ApiError::missing_param("messages")),
    };
    let chars: usize = messages
        .iter()
        .map(|m| text_chars(m.get("content")))
        .sum::<usize>()
        + text_chars(body.get("system"));
    let thinking = body.pointer("/thinking/type").and_then(Value::as_str) == Some("enabled");
    check_thinking(messages, thinking)?;
    let answered = messages.last().is_some_and(|m| {
        m.get("content").and_then(Value::as_array).is_some_and(|c| {
            c.iter()
                .any(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
        })
    });
    let tool = if answered {
        None
    } else {
        tools::choose(
            body.get("tools"),
            "input_schema",
            tool_header,
            knobs.tool_args.as_ref(),
        )
    };
    let (pieces, stop_reason) = match (&tool, max_tokens) {
        (Some(_), _) => (0, "tool_use"),
        (None, max) if max < u64::from(knobs.chunks) => {
            (u32::try_from(max).unwrap_or(0), "max_tokens")
        }
        (None, _) => (knobs.chunks, "end_turn"),
    };
    Ok(Plan {
        model: model.to_string(),
        input_tokens: openai::estimate_tokens(chars),
        pieces,
        stop_reason,
        tool,
        thinking,
        cache: Default::default(),
    })
}

/// Anthropic's rules for thinking handed back: signatures must be its own, and with thinking
/// on, the final assistant turn, when it called tools, must start with its thinking.
fn check_thinking(messages: &[Value], thinking: bool) -> Result<(), ApiError> {
    let blocks = |m: &Value| -> Vec<Value> {
        m.get("content")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let is_assistant = |m: &Value| m.get("role").and_then(Value::as_str) == Some("assistant");
    for (i, m) in messages.iter().enumerate().filter(|(_, m)| is_assistant(m)) {
        for (j, b) in blocks(m).iter().enumerate() {
            let signed = b
                .get("signature")
                .and_then(Value::as_str)
                .is_some_and(|s| s.starts_with(SIGNATURE_PREFIX));
            if b.get("type").and_then(Value::as_str) == Some("thinking") && !signed {
                return Err(ApiError::invalid_request(format!(
                    "messages.{i}.content.{j}: Invalid `signature` in `thinking` block"
                )));
            }
        }
    }
    if thinking {
        if let Some((i, m)) = messages
            .iter()
            .enumerate()
            .rev()
            .find(|(_, m)| is_assistant(m))
        {
            let content = blocks(m);
            let kind = |b: &Value| b.get("type").and_then(Value::as_str).map(str::to_string);
            let calls = content
                .iter()
                .any(|b| kind(b).as_deref() == Some("tool_use"));
            let first = content.first().and_then(kind).unwrap_or_default();
            if calls && first != "thinking" && first != "redacted_thinking" {
                return Err(ApiError::invalid_request(format!(
                    "messages.{i}.content.0.type: Expected `thinking` or `redacted_thinking`, but found `{first}`. When `thinking` is enabled, a final `assistant` message must start with a thinking block."
                )));
            }
        }
    }
    Ok(())
}

impl Plan {
    /// The model asked for.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Notes what the simulated prompt cache did for this request.
    pub fn set_cache(&mut self, cache: crate::cache::CacheUsage) {
        let write = cache.write.min(self.input_tokens);
        let read = cache.read.min(self.input_tokens - write);
        self.cache = crate::cache::CacheUsage { read, write };
    }

    /// Input tokens neither read from nor written to the cache: Anthropic's `input_tokens`.
    fn uncached_input(&self) -> u64 {
        self.input_tokens
            .saturating_sub(self.cache.read)
            .saturating_sub(self.cache.write)
    }

    fn output_tokens(&self) -> u64 {
        match &self.tool {
            Some(c) => c.pieces.len() as u64,
            None => u64::from(self.pieces),
        }
    }

    fn text(&self) -> String {
        (0..self.pieces).map(openai::piece).collect()
    }

    /// The non-streamed `message` body.
    pub fn to_json(&self) -> Bytes {
        let mut content = match &self.tool {
            Some(c) => {
                vec![json!({"type": "tool_use", "id": c.id, "name": c.name, "input": c.input})]
            }
            None => vec![json!({"type": "text", "text": self.text()})],
        };
        if self.thinking {
            content.insert(
                0,
                json!({"type": "thinking", "thinking": THINKING, "signature": new_id(SIGNATURE_PREFIX)}),
            );
        }
        let body = json!({
            "id": new_id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": self.stop_reason,
            "stop_sequence": null,
            "usage": {
                "input_tokens": self.uncached_input(),
                "cache_creation_input_tokens": self.cache.write,
                "cache_read_input_tokens": self.cache.read,
                "output_tokens": self.output_tokens(),
            },
        });
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
    }

    /// The SSE event sequence, in order.
    pub fn frames(&self) -> VecDeque<Bytes> {
        let mut out = VecDeque::new();
        let mut ev = |name: &str, v: Value| out.push_back(event(name, &v));
        ev(
            "message_start",
            json!({"type": "message_start", "message": {
                "id": new_id("msg_"), "type": "message", "role": "assistant", "model": self.model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": self.uncached_input(),
                          "cache_creation_input_tokens": self.cache.write,
                          "cache_read_input_tokens": self.cache.read, "output_tokens": 1},
            }}),
        );
        let index = u32::from(self.thinking);
        if self.thinking {
            ev(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
            );
            ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "thinking_delta", "thinking": THINKING}}),
            );
            ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "signature_delta", "signature": new_id(SIGNATURE_PREFIX)}}),
            );
            ev(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            );
        }
        match &self.tool {
            Some(c) => {
                ev(
                    "content_block_start",
                    json!({"type": "content_block_start", "index": index,
                    "content_block": {"type": "tool_use", "id": c.id, "name": c.name, "input": {}}}),
                );
                ev("ping", json!({"type": "ping"}));
                for p in &c.pieces {
                    ev(
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": p}}),
                    );
                }
            }
            None => {
                ev(
                    "content_block_start",
                    json!({"type": "content_block_start", "index": index,
                    "content_block": {"type": "text", "text": ""}}),
                );
                ev("ping", json!({"type": "ping"}));
                for i in 0..self.pieces {
                    ev(
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": index,
                        "delta": {"type": "text_delta", "text": openai::piece(i)}}),
                    );
                }
            }
        }
        ev(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        );
        ev(
            "message_delta",
            json!({"type": "message_delta",
            "delta": {"stop_reason": self.stop_reason, "stop_sequence": null},
            "usage": {"output_tokens": self.output_tokens()}}),
        );
        ev("message_stop", json!({"type": "message_stop"}));
        out
    }
}

/// `POST /v1/messages/count_tokens`.
pub fn count_tokens(body: &Value) -> Result<Bytes, ApiError> {
    body.get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .ok_or_else(ApiError::missing_model)?;
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::missing_param("messages"))?;
    let chars: usize = messages
        .iter()
        .map(|m| text_chars(m.get("content")))
        .sum::<usize>()
        + text_chars(body.get("system"));
    Ok(Bytes::from(
        serde_json::to_vec(&json!({"input_tokens": openai::estimate_tokens(chars)}))
            .unwrap_or_default(),
    ))
}

/// Characters of text in a string or an array of blocks.
fn text_chars(v: Option<&Value>) -> usize {
    match v {
        Some(Value::String(s)) => s.chars().count(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .map(|s| s.chars().count())
            .sum(),
        _ => 0,
    }
}

fn event(name: &str, v: &Value) -> Bytes {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    let _ = serde_json::to_writer(&mut out, v);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

fn new_id(prefix: &str) -> String {
    let mut id = String::from(prefix);
    id.extend(std::iter::repeat_with(fastrand::alphanumeric).take(24));
    id
}
