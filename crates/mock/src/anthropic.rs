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
    /// The request offered the web search server tool and the answer is text: it searches
    /// first, as Claude does (`server_tool_use`, `web_search_tool_result`, a cited answer).
    web_search: bool,
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
    let (client_tools, web_search) = check_tools(body.get("tools"))?;
    let tool = if answered {
        None
    } else {
        tools::choose(
            client_tools.as_ref(),
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
        web_search: web_search && tool.is_none(),
        tool,
        thinking,
        cache: Default::default(),
    })
}

/// The web search server tool's fields, as Anthropic's API reference lists them.
const WEB_SEARCH_FIELDS: [&str; 9] = [
    "type",
    "name",
    "max_uses",
    "allowed_domains",
    "blocked_domains",
    "user_location",
    "cache_control",
    "defer_loading",
    "strict",
];

/// Validates `tools` as Anthropic does: custom tools need a name and an `input_schema`; the
/// web search server tool (`web_search_20250305`, `web_search_20260209`) must be named
/// `web_search`, take only its own fields, not both domain lists, and an `approximate`
/// location. Other server tools are not served here. Returns the client tools (what the
/// model may call for the client) and whether web search was offered.
fn check_tools(tools: Option<&Value>) -> Result<(Option<Value>, bool), ApiError> {
    let Some(tools) = tools.filter(|t| !t.is_null()) else {
        return Ok((None, false));
    };
    let list = tools
        .as_array()
        .ok_or_else(|| ApiError::invalid_request("tools: Input should be a valid list"))?;
    let mut client = Vec::new();
    let mut web_search = false;
    for (i, t) in list.iter().enumerate() {
        let bad = |what: &str| ApiError::invalid_request(format!("tools.{i}: {what}"));
        match t.get("type").and_then(Value::as_str) {
            None | Some("custom") => {
                if t.get("name").and_then(Value::as_str).is_none() {
                    return Err(bad("Field required: name"));
                }
                if !t.get("input_schema").is_some_and(Value::is_object) {
                    return Err(bad("Field required: input_schema"));
                }
                client.push(t.clone());
            }
            Some("web_search_20250305" | "web_search_20260209") => {
                check_web_search(t).map_err(|what| bad(&what))?;
                web_search = true;
            }
            Some(other) => {
                return Err(bad(&format!(
                    "the mock serves no '{other}' tool (custom tools and web search only)"
                )))
            }
        }
    }
    Ok((Some(Value::Array(client)), web_search))
}

/// One web search tool's fields; `Err` says what is wrong.
fn check_web_search(t: &Value) -> Result<(), String> {
    let o = t.as_object().ok_or("must be an object")?;
    if let Some(k) = o.keys().find(|k| !WEB_SEARCH_FIELDS.contains(&k.as_str())) {
        return Err(format!("{k}: Extra inputs are not permitted"));
    }
    if t.get("name").and_then(Value::as_str) != Some("web_search") {
        return Err("name: Input should be 'web_search'".into());
    }
    if let Some(n) = t.get("max_uses") {
        if n.as_u64().is_none_or(|n| n == 0) {
            return Err("max_uses: Input should be greater than 0".into());
        }
    }
    for k in ["allowed_domains", "blocked_domains"] {
        if let Some(d) = t.get(k) {
            if !d.as_array().is_some_and(|a| a.iter().all(Value::is_string)) {
                return Err(format!("{k}: Input should be a valid list of strings"));
            }
        }
    }
    if t.get("allowed_domains").is_some() && t.get("blocked_domains").is_some() {
        return Err("Cannot specify both allowed_domains and blocked_domains".into());
    }
    if let Some(l) = t.get("user_location") {
        let o = l
            .as_object()
            .ok_or("user_location: Input should be an object")?;
        if l.get("type").and_then(Value::as_str) != Some("approximate") {
            return Err("user_location.type: Input should be 'approximate'".into());
        }
        for (k, v) in o {
            if !["type", "city", "region", "country", "timezone"].contains(&k.as_str()) {
                return Err(format!("user_location.{k}: Extra inputs are not permitted"));
            }
            if !v.is_string() {
                return Err(format!("user_location.{k}: Input should be a valid string"));
            }
        }
    }
    Ok(())
}

/// What the mock searched for, and the one result it found.
const SEARCH_QUERY: &str = "mock web search";
const SEARCH_URL: &str = "https://example.com/switchyard-mock";
const SEARCH_TITLE: &str = "Switchyard mock search result";

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
        if self.web_search {
            let id = new_id("srvtoolu_");
            if let Some(text) = content.last_mut() {
                text["citations"] = json!([citation()]);
            }
            content.insert(0, search_result(&id));
            content.insert(
                0,
                json!({"type": "server_tool_use", "id": id, "name": "web_search", "input": {"query": SEARCH_QUERY}}),
            );
        }
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
                "server_tool_use": {"web_search_requests": u32::from(self.web_search)},
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
        let mut index = u32::from(self.thinking);
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
        if self.web_search {
            let id = new_id("srvtoolu_");
            ev(
                "content_block_start",
                json!({"type": "content_block_start", "index": index,
                "content_block": {"type": "server_tool_use", "id": id, "name": "web_search", "input": {}}}),
            );
            ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "input_json_delta", "partial_json": json!({"query": SEARCH_QUERY}).to_string()}}),
            );
            ev(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": index}),
            );
            ev(
                "content_block_start",
                json!({"type": "content_block_start", "index": index + 1, "content_block": search_result(&id)}),
            );
            ev(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": index + 1}),
            );
            index += 2;
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
                if self.web_search {
                    ev(
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": index,
                        "delta": {"type": "citations_delta", "citation": citation()}}),
                    );
                }
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
            "usage": {"output_tokens": self.output_tokens(),
                      "server_tool_use": {"web_search_requests": u32::from(self.web_search)}}}),
        );
        ev("message_stop", json!({"type": "message_stop"}));
        out
    }
}

/// The `web_search_tool_result` block answering the search `id`.
fn search_result(id: &str) -> Value {
    json!({"type": "web_search_tool_result", "tool_use_id": id, "content": [{
        "type": "web_search_result", "url": SEARCH_URL, "title": SEARCH_TITLE,
        "encrypted_content": "mock-encrypted-content", "page_age": "1 day ago",
    }]})
}

/// A citation of the search result, as text blocks carry them.
fn citation() -> Value {
    json!({"type": "web_search_result_location", "url": SEARCH_URL, "title": SEARCH_TITLE,
           "encrypted_index": "mock-encrypted-index", "cited_text": "Mock search result text."})
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

#[cfg(test)]
mod tests {
    use super::*;

    fn body(tools: Value) -> Value {
        json!({"model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": "news?"}], "tools": tools})
    }

    #[test]
    fn web_search_is_checked_strictly_and_answered_with_a_search() {
        let knobs = Knobs::defaults(0, 3, 0);
        let ok = json!([{"type": "web_search_20250305", "name": "web_search", "max_uses": 2,
            "allowed_domains": ["example.com"],
            "user_location": {"type": "approximate", "city": "Paris", "country": "FR"}}]);
        let plan = super::plan(&body(ok), &knobs, None).unwrap();
        let v: Value = serde_json::from_slice(&plan.to_json()).unwrap();
        let kinds: Vec<&str> = v["content"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["type"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["server_tool_use", "web_search_tool_result", "text"]);
        assert_eq!(v["content"][1]["tool_use_id"], v["content"][0]["id"]);
        assert_eq!(v["usage"]["server_tool_use"]["web_search_requests"], 1);
        assert_eq!(v["stop_reason"], "end_turn");
        let stream: String = plan
            .frames()
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect();
        assert!(stream.contains("server_tool_use") && stream.contains("citations_delta"));
        // Beside a custom tool, the custom tool is what the model calls for the client.
        let both = json!([{"type": "web_search_20250305", "name": "web_search"},
            {"name": "f", "input_schema": {"type": "object"}}]);
        let plan = super::plan(&body(both), &knobs, None).unwrap();
        let v: Value = serde_json::from_slice(&plan.to_json()).unwrap();
        assert_eq!(v["content"][0]["type"], "tool_use");
        assert_eq!(v["content"][0]["name"], "f");
        // What Anthropic refuses.
        for bad in [
            json!({"type": "web_search_20250305", "name": "search"}),
            json!({"type": "web_search_20250305", "name": "web_search", "max_uses": 0}),
            json!({"type": "web_search_20250305", "name": "web_search", "allowed_domains": ["a"], "blocked_domains": ["b"]}),
            json!({"type": "web_search_20250305", "name": "web_search", "user_location": {"type": "exact"}}),
            json!({"type": "web_search_20250305", "name": "web_search", "search_context_size": "low"}),
            json!({"type": "web_search", "name": "web_search"}),
            json!({"name": "f"}),
        ] {
            let e = super::plan(&body(json!([bad])), &knobs, None)
                .err()
                .unwrap_or_else(|| panic!("accepted {bad}"));
            assert_eq!(e.status, http::StatusCode::BAD_REQUEST, "{bad}");
        }
    }
}
