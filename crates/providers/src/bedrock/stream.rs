//! `ConverseStream` events → internal stream events.
//!
//! The relay hands over each event-stream message as [`envelope`] makes it: the
//! `ConverseStreamOutput` union's JSON shape, `{"<event type>": payload}`. Tool calls are
//! numbered from 0 in the order their blocks start; `contentBlockIndex` counts every block
//! (text too), so it is mapped to the call index. `metadata` (usage) is the last event.

use bytes::Bytes;
use serde_json::Value;

use super::convert::{finish_from_bedrock, usage};
use crate::{chat::StreamEvent, eventstream::Message};

/// A message's payload wrapped in its type, `{"<type>": payload}`. Exceptions (a
/// `:message-type` of `exception` or `error`) become `{"exception": {"type", "message"}}`.
pub fn envelope(msg: &Message) -> Bytes {
    let payload: Value = if msg.payload.is_empty() {
        Value::Object(Default::default())
    } else {
        serde_json::from_slice(&msg.payload).unwrap_or(Value::Null)
    };
    let v = match msg.header(":message-type") {
        Some("exception") => serde_json::json!({"exception": {
            "type": msg.header(":exception-type").unwrap_or("exception"),
            "message": payload.get("message").or_else(|| payload.get("Message")).and_then(Value::as_str).unwrap_or_default(),
        }}),
        Some("error") => serde_json::json!({"exception": {
            "type": msg.header(":error-code").unwrap_or("error"),
            "message": msg.header(":error-message").unwrap_or_default(),
        }}),
        _ => {
            let mut o = serde_json::Map::new();
            o.insert(
                msg.header(":event-type").unwrap_or_default().to_string(),
                payload,
            );
            Value::Object(o)
        }
    };
    Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
}

/// Turns `ConverseStream` events into internal stream events.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    started: bool,
    /// `(contentBlockIndex, tool call index)` of the tool-use blocks seen so far.
    calls: Vec<(u64, u32)>,
}

impl StreamDecoder {
    /// Decodes one event (an [`envelope`]), appending events to `out`.
    pub fn decode(&mut self, data: &[u8], out: &mut Vec<StreamEvent>) {
        let Ok(Value::Object(v)) = serde_json::from_slice::<Value>(data) else {
            out.push(StreamEvent::Error {
                kind: "upstream_protocol_error".into(),
                message: "the upstream sent a stream event that is not a JSON object".into(),
            });
            return;
        };
        for (kind, body) in &v {
            if kind == "exception" {
                let s = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or_default();
                out.push(StreamEvent::Error {
                    kind: s("type").to_string(),
                    message: s("message").to_string(),
                });
                continue;
            }
            if !self.started {
                self.started = true;
                out.push(StreamEvent::Start {
                    id: String::new(),
                    model: String::new(),
                    usage: None,
                });
            }
            let block = body.get("contentBlockIndex").and_then(Value::as_u64);
            match kind.as_str() {
                "contentBlockStart" => {
                    if let (Some(u), Some(b)) = (body.pointer("/start/toolUse"), block) {
                        let s = |k: &str| {
                            u.get(k)
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_string()
                        };
                        let index = self.calls.len() as u32;
                        self.calls.push((b, index));
                        out.push(StreamEvent::ToolCallStart {
                            index,
                            id: s("toolUseId"),
                            name: s("name"),
                        });
                    }
                }
                "contentBlockDelta" => {
                    let Some(d) = body.get("delta") else { continue };
                    if let Some(t) = d.get("text").and_then(Value::as_str) {
                        if !t.is_empty() {
                            out.push(StreamEvent::Text(t.to_string()));
                        }
                    } else if let Some(input) = d.pointer("/toolUse/input").and_then(Value::as_str)
                    {
                        let call = block
                            .and_then(|b| self.calls.iter().find(|(cb, _)| *cb == b))
                            .map(|(_, i)| *i);
                        if let (Some(index), false) = (call, input.is_empty()) {
                            out.push(StreamEvent::ToolCallArguments {
                                index,
                                fragment: input.to_string(),
                            });
                        }
                    } else if let Some(r) = d.get("reasoningContent") {
                        let s = |k: &str| r.get(k).and_then(Value::as_str).map(str::to_string);
                        if let Some(t) = s("text").filter(|t| !t.is_empty()) {
                            out.push(StreamEvent::Reasoning(t));
                        }
                        if let Some(sig) = s("signature") {
                            out.push(StreamEvent::ReasoningSignature(sig));
                        }
                        if let Some(data) = s("redactedContent") {
                            out.push(StreamEvent::RedactedReasoning(data));
                        }
                    }
                }
                "messageStop" => {
                    let reason = body
                        .get("stopReason")
                        .and_then(Value::as_str)
                        .map_or(crate::chat::FinishReason::Stop, finish_from_bedrock);
                    out.push(StreamEvent::Finish {
                        reason,
                        stop_sequence: None,
                    });
                }
                "metadata" => {
                    if let Some(u) = usage(body) {
                        out.push(StreamEvent::Usage(u));
                    }
                    out.push(StreamEvent::Done);
                }
                // messageStart (the role is always the assistant), contentBlockStop, and
                // event types added later.
                _ => {}
            }
        }
    }
}
