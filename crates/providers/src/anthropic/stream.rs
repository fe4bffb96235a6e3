//! Messages API streams ⇄ internal stream events, one SSE event at a time.
//!
//! The Messages stream is block-structured (`content_block_start` / `_delta` / `_stop` with a
//! block `index`) while the internal events (and OpenAI chunks) are flat, so both directions
//! keep a little state: the decoder maps block indices to tool-call indices, the encoder opens
//! and closes blocks as the kind of content changes.

use std::{borrow::Cow, collections::HashMap};

use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    convert::{finish_from_anthropic, finish_to_anthropic, message_id},
    WireUsage,
};
use crate::{
    chat::{FinishReason, StreamEvent},
    json::{write_str, write_u64, Obj},
    Usage,
};

/// A `content_block_delta` event, the one nearly every event of a stream is, read without
/// building a `Value`. Any other event, and one this cannot read exactly as a `Value` lookup
/// would (a field of another type, a duplicate key), is left to [`StreamDecoder::decode_value`].
#[derive(Deserialize)]
struct Event<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    index: Option<u64>,
    #[serde(borrow)]
    delta: Option<Obj<Delta<'a>>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow)]
    thinking: Option<Cow<'a, str>>,
    #[serde(borrow)]
    signature: Option<Cow<'a, str>>,
    #[serde(borrow)]
    partial_json: Option<Cow<'a, str>>,
}

fn owned(s: Option<Cow<'_, str>>) -> String {
    s.map(Cow::into_owned).unwrap_or_default()
}

/// Turns Messages stream events into internal stream events.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    /// Content block index → tool call index, for `input_json_delta`.
    tool_blocks: HashMap<u64, u32>,
    next_tool: u32,
    /// Usage from `message_start` (input side), completed by `message_delta`.
    usage: WireUsage,
}

impl StreamDecoder {
    /// Decodes one SSE event (its `data:` payload; the `event:` name repeats the payload's
    /// `type`, which is what is read).
    pub fn decode(&mut self, data: &[u8], out: &mut Vec<StreamEvent>) {
        if data.is_empty() {
            return;
        }
        // Checked as UTF-8 once here, not string by string as `from_slice` does.
        let typed = std::str::from_utf8(data)
            .ok()
            .and_then(|d| serde_json::from_str::<Obj<Event<'_>>>(d).ok());
        if let Some(Obj(e)) = typed {
            if e.kind.as_deref() == Some("content_block_delta") {
                self.delta(e.index.unwrap_or(0), e.delta.map(|d| d.0), out);
                return;
            }
        }
        self.decode_value(data, out);
    }

    /// A `content_block_delta`'s events (as [`Self::decode_value`] reads them).
    fn delta(&self, index: u64, d: Option<Delta<'_>>, out: &mut Vec<StreamEvent>) {
        let Some(d) = d else { return };
        match d.kind.as_deref() {
            Some("text_delta") => out.push(StreamEvent::Text(owned(d.text))),
            Some("thinking_delta") => out.push(StreamEvent::Reasoning(owned(d.thinking))),
            Some("signature_delta") => {
                out.push(StreamEvent::ReasoningSignature(owned(d.signature)))
            }
            Some("input_json_delta") => {
                let fragment = d.partial_json.unwrap_or_default();
                if let (Some(&tool), false) = (self.tool_blocks.get(&index), fragment.is_empty()) {
                    out.push(StreamEvent::ToolCallArguments {
                        index: tool,
                        fragment: fragment.into_owned(),
                    });
                }
            }
            _ => {}
        }
    }

    /// Decodes any event through a `Value`: the rare ones, and those [`Event`] cannot read.
    fn decode_value(&mut self, data: &[u8], out: &mut Vec<StreamEvent>) {
        let Ok(v) = serde_json::from_slice::<Value>(data) else {
            out.push(StreamEvent::Error {
                kind: "upstream_protocol_error".into(),
                message: "the upstream sent a stream event that is not JSON".into(),
            });
            return;
        };
        let s = |v: &Value, k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        match v.get("type").and_then(Value::as_str) {
            Some("message_start") => {
                let m = v.get("message").unwrap_or(&Value::Null);
                if let Some(u) = m
                    .get("usage")
                    .and_then(|u| serde_json::from_value::<WireUsage>(u.clone()).ok())
                {
                    self.usage = u;
                }
                out.push(StreamEvent::Start {
                    id: s(m, "id"),
                    model: s(m, "model"),
                    usage: Some(self.usage.to_usage()),
                });
            }
            Some("content_block_start") => {
                let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                let b = v.get("content_block").unwrap_or(&Value::Null);
                match b.get("type").and_then(Value::as_str) {
                    Some("tool_use") => {
                        let tool = self.next_tool;
                        self.next_tool += 1;
                        self.tool_blocks.insert(index, tool);
                        out.push(StreamEvent::ToolCallStart {
                            index: tool,
                            id: s(b, "id"),
                            name: s(b, "name"),
                        });
                        // `input` is `{}` at the start and filled by deltas; a non-empty one
                        // (some proxies send it whole) is passed on as one piece.
                        if let Some(i) = b
                            .get("input")
                            .and_then(Value::as_object)
                            .filter(|i| !i.is_empty())
                        {
                            out.push(StreamEvent::ToolCallArguments {
                                index: tool,
                                fragment: Value::Object(i.clone()).to_string(),
                            });
                        }
                    }
                    Some("text") => {
                        let t = s(b, "text");
                        if !t.is_empty() {
                            out.push(StreamEvent::Text(t));
                        }
                    }
                    Some("thinking") => {
                        let t = s(b, "thinking");
                        if !t.is_empty() {
                            out.push(StreamEvent::Reasoning(t));
                        }
                    }
                    Some("redacted_thinking") => {
                        out.push(StreamEvent::RedactedReasoning(s(b, "data")))
                    }
                    _ => {}
                }
            }
            Some("content_block_delta") => {
                let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                let d = v.get("delta").unwrap_or(&Value::Null);
                match d.get("type").and_then(Value::as_str) {
                    Some("text_delta") => out.push(StreamEvent::Text(s(d, "text"))),
                    Some("thinking_delta") => out.push(StreamEvent::Reasoning(s(d, "thinking"))),
                    Some("signature_delta") => {
                        out.push(StreamEvent::ReasoningSignature(s(d, "signature")))
                    }
                    Some("input_json_delta") => {
                        let fragment = s(d, "partial_json");
                        if let (Some(&tool), false) =
                            (self.tool_blocks.get(&index), fragment.is_empty())
                        {
                            out.push(StreamEvent::ToolCallArguments {
                                index: tool,
                                fragment,
                            });
                        }
                    }
                    _ => {}
                }
            }
            Some("message_delta") => {
                if let Some(u) = v
                    .get("usage")
                    .and_then(|u| serde_json::from_value::<WireUsage>(u.clone()).ok())
                {
                    // message_delta carries cumulative counts; fields it leaves out keep the
                    // values message_start reported.
                    self.usage.output_tokens = u.output_tokens.or(self.usage.output_tokens);
                    self.usage.input_tokens = u.input_tokens.or(self.usage.input_tokens);
                    self.usage.cache_read_input_tokens = u
                        .cache_read_input_tokens
                        .or(self.usage.cache_read_input_tokens);
                    self.usage.cache_creation_input_tokens = u
                        .cache_creation_input_tokens
                        .or(self.usage.cache_creation_input_tokens);
                }
                let d = v.get("delta").unwrap_or(&Value::Null);
                if let Some(r) = d.get("stop_reason").and_then(Value::as_str) {
                    out.push(StreamEvent::Finish {
                        reason: finish_from_anthropic(r),
                        stop_sequence: d
                            .get("stop_sequence")
                            .and_then(Value::as_str)
                            .map(str::to_string),
                    });
                }
                out.push(StreamEvent::Usage(self.usage.to_usage()));
            }
            Some("message_stop") => out.push(StreamEvent::Done),
            Some("error") => {
                let e = v.get("error").unwrap_or(&Value::Null);
                out.push(StreamEvent::Error {
                    kind: s(e, "type"),
                    message: s(e, "message"),
                });
            }
            // `ping`, `content_block_stop` and future event types carry nothing to translate.
            _ => {}
        }
    }
}

/// What kind of content block is open in the encoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Block {
    Text,
    Thinking,
    Tool(u32),
}

/// Writes internal stream events as a Messages stream for an Anthropic caller.
#[derive(Debug, Default)]
pub struct StreamEncoder {
    done: bool,
    open: Option<(u32, Block)>,
    next_block: u32,
    /// Tool call index → its block index.
    tool_blocks: HashMap<u32, u32>,
    finish: Option<(FinishReason, Option<String>)>,
    usage: Option<Usage>,
}

impl StreamEncoder {
    /// A fresh encoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Encodes one event into `out`; nothing after `Done` or `Error`. The stream must open
    /// with `Start`: the [`crate::transcode::Transcoder`] sees to that.
    pub fn encode(&mut self, ev: StreamEvent, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        match ev {
            StreamEvent::Start { id, model, usage } => {
                let u = WireUsage::from_usage(&usage.unwrap_or_default());
                let msg = json!({
                    "type": "message_start",
                    "message": {
                        "id": message_id(&id), "type": "message", "role": "assistant", "model": model,
                        "content": [], "stop_reason": null, "stop_sequence": null, "usage": u,
                    },
                });
                event(out, "message_start", &msg);
            }
            StreamEvent::Text(t) => {
                let i = self.ensure(Block::Text, out);
                delta(out, i, "text", &t, "text_delta");
            }
            StreamEvent::Reasoning(t) => {
                let i = self.ensure(Block::Thinking, out);
                delta(out, i, "thinking", &t, "thinking_delta");
            }
            StreamEvent::ReasoningSignature(sig) => {
                if let Some((i, Block::Thinking)) = self.open {
                    delta(out, i, "signature", &sig, "signature_delta");
                }
            }
            StreamEvent::RedactedReasoning(data) => {
                self.close(out);
                let i = self.next_block;
                self.next_block += 1;
                event(
                    out,
                    "content_block_start",
                    &json!({"type": "content_block_start", "index": i, "content_block": {"type": "redacted_thinking", "data": data}}),
                );
                event(
                    out,
                    "content_block_stop",
                    &json!({"type": "content_block_stop", "index": i}),
                );
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                self.close(out);
                let i = self.next_block;
                self.next_block += 1;
                self.open = Some((i, Block::Tool(index)));
                self.tool_blocks.insert(index, i);
                event(
                    out,
                    "content_block_start",
                    &json!({"type": "content_block_start", "index": i, "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
                );
            }
            StreamEvent::ToolCallArguments { index, fragment } => {
                // OpenAI streams one call's arguments after another, so the call is normally
                // the open block; a late piece of an earlier call still names that call's block.
                if let Some(&i) = self.tool_blocks.get(&index) {
                    delta(out, i, "partial_json", &fragment, "input_json_delta");
                }
            }
            StreamEvent::Finish {
                reason,
                stop_sequence,
            } => {
                self.close(out);
                self.finish = Some((reason, stop_sequence));
            }
            StreamEvent::Usage(u) => self.usage = Some(u),
            StreamEvent::Done => {
                self.close(out);
                self.done = true;
                let (reason, seq) = self.finish.take().unwrap_or((FinishReason::Stop, None));
                let u = WireUsage::from_usage(&self.usage.unwrap_or_default());
                event(
                    out,
                    "message_delta",
                    &json!({
                        "type": "message_delta",
                        "delta": {"stop_reason": finish_to_anthropic(reason), "stop_sequence": seq},
                        "usage": u,
                    }),
                );
                event(out, "message_stop", &json!({"type": "message_stop"}));
            }
            StreamEvent::Error { kind, message } => {
                self.done = true;
                let kind = if kind.ends_with("_error") {
                    kind
                } else {
                    "api_error".to_string()
                };
                event(
                    out,
                    "error",
                    &json!({"type": "error", "error": {"type": kind, "message": message}}),
                );
            }
        }
    }

    /// Makes sure a block of `kind` is open, closing another kind first; returns its index.
    fn ensure(&mut self, kind: Block, out: &mut Vec<u8>) -> u32 {
        if let Some((i, k)) = self.open {
            if k == kind {
                return i;
            }
        }
        self.close(out);
        let i = self.next_block;
        self.next_block += 1;
        self.open = Some((i, kind));
        let block = match kind {
            Block::Thinking => json!({"type": "thinking", "thinking": "", "signature": ""}),
            Block::Text | Block::Tool(_) => json!({"type": "text", "text": ""}),
        };
        event(
            out,
            "content_block_start",
            &json!({"type": "content_block_start", "index": i, "content_block": block}),
        );
        i
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if let Some((i, _)) = self.open.take() {
            out.extend_from_slice(b"event: content_block_stop\ndata: {\"index\":");
            write_u64(out, i.into());
            out.extend_from_slice(b",\"type\":\"content_block_stop\"}\n\n");
        }
    }
}

fn event(out: &mut Vec<u8>, name: &str, v: &Value) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    let _ = serde_json::to_writer(&mut *out, v);
    out.extend_from_slice(b"\n\n");
}

/// A `content_block_delta` event written directly, keys in the order serializing its
/// `json!` object gave (sorted): `{"delta":{"<key>":<text>,"type":"<kind>"},"index":i,…}`.
fn delta(out: &mut Vec<u8>, index: u32, key: &str, text: &str, kind: &str) {
    out.extend_from_slice(b"event: content_block_delta\ndata: {\"delta\":{\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
    write_str(out, text);
    out.extend_from_slice(b",\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\"},\"index\":");
    write_u64(out, index.into());
    out.extend_from_slice(b",\"type\":\"content_block_delta\"}\n\n");
}
