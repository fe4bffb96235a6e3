//! `streamGenerateContent?alt=sse` chunks → internal stream events.
//!
//! Every chunk is a whole `GenerateContentResponse` holding the next parts, so no text is
//! carried over between events. A function call arrives whole in one chunk: it becomes a
//! tool-call start followed by its complete arguments as a single piece. The stream has no
//! end marker of its own; the transcoder closes the caller's stream when the upstream ends.

use serde_json::Value;

use super::convert::{decode_part, finish_reason, response_id, tool_call_id, usage, Decoded};
use crate::chat::StreamEvent;

/// Turns Gemini stream chunks into internal stream events.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    started: bool,
    /// The first chunk's `responseId`, for made-up tool-call ids.
    id: String,
    /// Tool calls seen so far.
    calls: u32,
}

impl StreamDecoder {
    /// Decodes one SSE `data:` payload, appending events to `out`.
    pub fn decode(&mut self, data: &[u8], out: &mut Vec<StreamEvent>) {
        if data.is_empty() {
            return;
        }
        let Ok(v) = serde_json::from_slice::<Value>(data) else {
            out.push(StreamEvent::Error {
                kind: "upstream_protocol_error".into(),
                message: "the upstream sent a stream chunk that is not JSON".into(),
            });
            return;
        };
        if let Some(e) = v.get("error") {
            let s = |k: &str| e.get(k).and_then(Value::as_str).map(str::to_string);
            out.push(StreamEvent::Error {
                kind: s("status").unwrap_or_else(|| "api_error".into()),
                message: s("message").unwrap_or_default(),
            });
            return;
        }
        if !self.started {
            self.started = true;
            self.id = response_id(&v);
            out.push(StreamEvent::Start {
                id: self.id.clone(),
                model: v
                    .get("modelVersion")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                usage: None,
            });
        }
        for p in v
            .pointer("/candidates/0/content/parts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            match decode_part(p) {
                Some(Decoded::Text(t)) => out.push(StreamEvent::Text(t)),
                Some(Decoded::Thought(t)) => out.push(StreamEvent::Reasoning(t)),
                Some(Decoded::Call { id, name, args }) => {
                    let index = self.calls;
                    self.calls += 1;
                    out.push(StreamEvent::ToolCallStart {
                        index,
                        id: id.unwrap_or_else(|| tool_call_id(&self.id, index)),
                        name,
                    });
                    out.push(StreamEvent::ToolCallArguments {
                        index,
                        fragment: Value::Object(args).to_string(),
                    });
                }
                None => {}
            }
        }
        if let Some(reason) = finish_reason(&v, self.calls > 0) {
            out.push(StreamEvent::Finish {
                reason,
                stop_sequence: None,
            });
        }
        // Every chunk carries the usage so far; the last one wins.
        if let Some(u) = usage(&v) {
            out.push(StreamEvent::Usage(u));
        }
    }
}
