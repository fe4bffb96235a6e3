//! Anthropic Messages wire format: responses, the SSE event sequence (`message_start`,
//! `content_block_*`, `message_delta`, `message_stop`, `ping`), tool_use answers whose input
//! streams in pieces, and Anthropic's error bodies.
//!
//! Shapes follow the public API reference; the official Anthropic Python SDK parses them in
//! the end-to-end tests.

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
}

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
    let answered = messages.last().is_some_and(|m| {
        m.get("content").and_then(Value::as_array).is_some_and(|c| {
            c.iter()
                .any(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
        })
    });
    let tool = if answered {
        None
    } else {
        tools::choose(body.get("tools"), "input_schema", tool_header)
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
    })
}

impl Plan {
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
        let content = match &self.tool {
            Some(c) => json!([{"type": "tool_use", "id": c.id, "name": c.name, "input": c.input}]),
            None => json!([{"type": "text", "text": self.text()}]),
        };
        let body = json!({
            "id": new_id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": self.stop_reason,
            "stop_sequence": null,
            "usage": {
                "input_tokens": self.input_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
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
                "usage": {"input_tokens": self.input_tokens, "cache_creation_input_tokens": 0,
                          "cache_read_input_tokens": 0, "output_tokens": 1},
            }}),
        );
        match &self.tool {
            Some(c) => {
                ev(
                    "content_block_start",
                    json!({"type": "content_block_start", "index": 0,
                    "content_block": {"type": "tool_use", "id": c.id, "name": c.name, "input": {}}}),
                );
                ev("ping", json!({"type": "ping"}));
                for p in &c.pieces {
                    ev(
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": 0,
                        "delta": {"type": "input_json_delta", "partial_json": p}}),
                    );
                }
            }
            None => {
                ev(
                    "content_block_start",
                    json!({"type": "content_block_start", "index": 0,
                    "content_block": {"type": "text", "text": ""}}),
                );
                ev("ping", json!({"type": "ping"}));
                for i in 0..self.pieces {
                    ev(
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": 0,
                        "delta": {"type": "text_delta", "text": openai::piece(i)}}),
                    );
                }
            }
        }
        ev(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
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
