//! Internal stream events → Responses API stream events, one at a time.
//!
//! The Responses stream is item-structured: each output item (message, function call,
//! reasoning) is announced (`response.output_item.added`), filled by deltas and closed
//! (`response.output_item.done`) with its whole content, and the stream ends with the whole
//! response object (`response.completed` / `response.incomplete`). So the encoder keeps the
//! output it has sent so far. Every event carries the next `sequence_number`.
//!
//! A message or reasoning item closes as soon as other content starts. Function calls stay
//! open until the response finishes: an upstream may still send a piece of an earlier call's
//! arguments after a later call began, and a piece can never follow its item's `done`.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::{
    convert::{function_call_item, message_item, output_text, reasoning_item},
    item_id, response_id, status, Echo, ResponseObject,
};
use crate::{
    chat::{FinishReason, StreamEvent},
    json::{write_str, write_u64},
    openai::chat::unix_now,
    Usage,
};

#[derive(Debug)]
enum Item {
    Message {
        text: String,
    },
    Reasoning {
        text: String,
        signature: Option<String>,
        redacted: Option<String>,
    },
    FunctionCall {
        call_id: String,
        name: String,
        arguments: String,
        open: bool,
    },
}

/// Writes internal stream events as a Responses API stream.
#[derive(Debug)]
pub struct StreamEncoder {
    echo: Echo,
    id: String,
    model: String,
    created_at: u64,
    seq: u64,
    done: bool,
    items: Vec<Item>,
    /// The open message or reasoning item (an index into `items`).
    open: Option<usize>,
    /// Tool call index → its item.
    calls: HashMap<u32, usize>,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
    /// The response id as item ids hold it, JSON-escaped without its quotes.
    id_json: Vec<u8>,
}

impl StreamEncoder {
    /// An encoder for a response that repeats `echo`.
    pub fn new(echo: Echo) -> Self {
        StreamEncoder {
            echo,
            id: String::new(),
            model: String::new(),
            created_at: unix_now(),
            seq: 0,
            done: false,
            items: Vec::new(),
            open: None,
            calls: HashMap::new(),
            finish: None,
            usage: None,
            id_json: Vec::new(),
        }
    }

    /// Encodes one event into `out`; nothing after `Done` or `Error`. The stream must open
    /// with `Start`: the [`crate::transcode::Transcoder`] sees to that.
    pub fn encode(&mut self, ev: StreamEvent, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        match ev {
            StreamEvent::Start { id, model, usage } => {
                self.id = response_id(&id);
                self.model = model;
                self.id_json.clear();
                let base = self.id.strip_prefix("resp_").unwrap_or(&self.id);
                write_str(&mut self.id_json, base);
                self.id_json.pop();
                self.id_json.remove(0);
                self.usage = usage;
                self.emit_response(out, "response.created", "in_progress", Value::Null, false);
                self.emit_response(
                    out,
                    "response.in_progress",
                    "in_progress",
                    Value::Null,
                    false,
                );
            }
            StreamEvent::Text(t) => {
                let i = self.ensure_message(out);
                if let Item::Message { text } = &mut self.items[i] {
                    text.push_str(&t);
                }
                self.delta_event(out, "response.output_text.delta", i, &t);
            }
            StreamEvent::Reasoning(t) => {
                let i = self.ensure_reasoning(out);
                if let Item::Reasoning { text, .. } = &mut self.items[i] {
                    text.push_str(&t);
                }
                self.delta_event(out, "response.reasoning_summary_text.delta", i, &t);
            }
            StreamEvent::ReasoningSignature(sig) => {
                // It closes the reasoning block it signs: it goes out with the item's `done`.
                if let Some(i) = self.open {
                    if let Item::Reasoning { signature, .. } = &mut self.items[i] {
                        signature.get_or_insert_with(String::new).push_str(&sig);
                    }
                }
            }
            StreamEvent::RedactedReasoning(data) => {
                self.close_open(out);
                let i = self.items.len();
                self.items.push(Item::Reasoning {
                    text: String::new(),
                    signature: None,
                    redacted: Some(data),
                });
                let added = reasoning_item(&self.item_id(i), "", None, None);
                self.emit(
                    out,
                    "response.output_item.added",
                    json!({"output_index": i, "item": added}),
                );
                let item = self.item_json(i, "completed");
                self.emit(
                    out,
                    "response.output_item.done",
                    json!({"output_index": i, "item": item}),
                );
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                self.close_open(out);
                let i = self.items.len();
                self.items.push(Item::FunctionCall {
                    call_id: id,
                    name,
                    arguments: String::new(),
                    open: true,
                });
                self.calls.insert(index, i);
                let item = self.item_json(i, "in_progress");
                self.emit(
                    out,
                    "response.output_item.added",
                    json!({"output_index": i, "item": item}),
                );
            }
            StreamEvent::ToolCallArguments { index, fragment } => {
                if let Some(&i) = self.calls.get(&index) {
                    if let Item::FunctionCall {
                        arguments,
                        open: true,
                        ..
                    } = &mut self.items[i]
                    {
                        arguments.push_str(&fragment);
                        self.delta_event(
                            out,
                            "response.function_call_arguments.delta",
                            i,
                            &fragment,
                        );
                    }
                }
            }
            StreamEvent::Finish { reason, .. } => {
                // First, so that items cut short close as `incomplete`.
                self.finish = Some(reason);
                self.close_all(out);
            }
            StreamEvent::Usage(u) => self.usage = Some(u),
            StreamEvent::Done => {
                self.close_all(out);
                self.done = true;
                let (status, details) = status(self.finish);
                let name = if status == "completed" {
                    "response.completed"
                } else {
                    "response.incomplete"
                };
                self.emit_response(out, name, status, details, true);
            }
            StreamEvent::Error { kind, message } => {
                self.done = true;
                self.emit(
                    out,
                    "error",
                    json!({"code": kind, "message": message, "param": null}),
                );
            }
        }
    }

    fn ensure_message(&mut self, out: &mut Vec<u8>) -> usize {
        if let Some(i) = self.open {
            if matches!(self.items[i], Item::Message { .. }) {
                return i;
            }
        }
        self.close_open(out);
        let i = self.items.len();
        self.items.push(Item::Message {
            text: String::new(),
        });
        self.open = Some(i);
        let item_id = self.item_id(i);
        self.emit(
            out,
            "response.output_item.added",
            json!({"output_index": i, "item": {"id": item_id, "type": "message", "status": "in_progress", "role": "assistant", "content": []}}),
        );
        self.emit(
            out,
            "response.content_part.added",
            json!({"item_id": item_id, "output_index": i, "content_index": 0, "part": output_text("")}),
        );
        i
    }

    fn ensure_reasoning(&mut self, out: &mut Vec<u8>) -> usize {
        if let Some(i) = self.open {
            if matches!(self.items[i], Item::Reasoning { .. }) {
                return i;
            }
        }
        self.close_open(out);
        let i = self.items.len();
        self.items.push(Item::Reasoning {
            text: String::new(),
            signature: None,
            redacted: None,
        });
        self.open = Some(i);
        let item_id = self.item_id(i);
        self.emit(
            out,
            "response.output_item.added",
            json!({"output_index": i, "item": reasoning_item(&item_id, "", None, None)}),
        );
        self.emit(
            out,
            "response.reasoning_summary_part.added",
            json!({"item_id": item_id, "output_index": i, "summary_index": 0, "part": {"type": "summary_text", "text": ""}}),
        );
        i
    }

    /// Closes the open message or reasoning item.
    fn close_open(&mut self, out: &mut Vec<u8>) {
        let Some(i) = self.open.take() else { return };
        let item_id = self.item_id(i);
        match &self.items[i] {
            Item::Message { text } => {
                let text = text.clone();
                self.emit(
                    out,
                    "response.output_text.done",
                    json!({"item_id": item_id, "output_index": i, "content_index": 0, "text": text, "logprobs": []}),
                );
                self.emit(
                    out,
                    "response.content_part.done",
                    json!({"item_id": item_id, "output_index": i, "content_index": 0, "part": output_text(&text)}),
                );
            }
            Item::Reasoning { text, .. } => {
                let text = text.clone();
                self.emit(
                    out,
                    "response.reasoning_summary_text.done",
                    json!({"item_id": item_id, "output_index": i, "summary_index": 0, "text": text}),
                );
                self.emit(
                    out,
                    "response.reasoning_summary_part.done",
                    json!({"item_id": item_id, "output_index": i, "summary_index": 0, "part": {"type": "summary_text", "text": text}}),
                );
            }
            Item::FunctionCall { .. } => {}
        }
        let item = self.item_json(i, self.item_status());
        self.emit(
            out,
            "response.output_item.done",
            json!({"output_index": i, "item": item}),
        );
    }

    /// The status of a closed item: `incomplete` when the response was cut short.
    fn item_status(&self) -> &'static str {
        match status(self.finish).0 {
            "incomplete" => "incomplete",
            _ => "completed",
        }
    }

    /// Closes every open item: the open message or reasoning, then the function calls.
    fn close_all(&mut self, out: &mut Vec<u8>) {
        self.close_open(out);
        for i in 0..self.items.len() {
            let Item::FunctionCall {
                arguments, open, ..
            } = &mut self.items[i]
            else {
                continue;
            };
            if !std::mem::take(open) {
                continue;
            }
            let arguments = arguments.clone();
            let item_id = self.item_id(i);
            self.emit(
                out,
                "response.function_call_arguments.done",
                json!({"item_id": item_id, "output_index": i, "arguments": arguments}),
            );
            let item = self.item_json(i, self.item_status());
            self.emit(
                out,
                "response.output_item.done",
                json!({"output_index": i, "item": item}),
            );
        }
    }

    fn item_id(&self, i: usize) -> String {
        let kind = match self.items.get(i) {
            Some(Item::Reasoning { .. }) => "rs",
            Some(Item::FunctionCall { .. }) => "fc",
            _ => "msg",
        };
        item_id(kind, &self.id, i)
    }

    fn item_json(&self, i: usize, status: &str) -> Value {
        let id = self.item_id(i);
        match &self.items[i] {
            Item::Message { text } => message_item(&id, text, status),
            Item::Reasoning {
                text,
                signature,
                redacted,
            } => reasoning_item(&id, text, signature.as_deref(), redacted.as_deref()),
            Item::FunctionCall {
                call_id,
                name,
                arguments,
                ..
            } => function_call_item(&id, call_id, self.echo.caller_name(name), arguments, status),
        }
    }

    /// The response object; with `full`, the output so far and the usage.
    fn object<'s>(
        &'s self,
        status: &'s str,
        incomplete_details: Value,
        full: bool,
    ) -> ResponseObject<'s> {
        let item_status = self.item_status();
        ResponseObject {
            id: &self.id,
            created_at: self.created_at,
            model: &self.model,
            status,
            incomplete_details,
            output: if full {
                (0..self.items.len())
                    .map(|i| self.item_json(i, item_status))
                    .collect()
            } else {
                Vec::new()
            },
            usage: if full {
                Some(self.usage.unwrap_or_default())
            } else {
                None
            },
            echo: &self.echo,
        }
    }

    /// An event carrying the response object (`response.created` …), written as [`Self::emit`]
    /// writes its `Value` (keys sorted) without making one.
    fn emit_response(
        &mut self,
        out: &mut Vec<u8>,
        name: &str,
        status: &str,
        incomplete_details: Value,
        full: bool,
    ) {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\ndata: {\"response\":");
        self.object(status, incomplete_details, full).write(out);
        out.extend_from_slice(b",\"sequence_number\":");
        write_u64(out, self.seq);
        out.extend_from_slice(b",\"type\":");
        write_str(out, name);
        out.extend_from_slice(b"}\n\n");
        self.seq += 1;
    }

    /// Writes a delta event of item `i` directly, keys in the order serializing its `json!`
    /// object with [`Self::emit`] gave (sorted): `content_index` (0) for text, `logprobs`
    /// (`[]`) for text, `summary_index` (0) for reasoning.
    fn delta_event(&mut self, out: &mut Vec<u8>, name: &str, i: usize, delta: &str) {
        let (text, kind) = match self.items.get(i) {
            Some(Item::Reasoning { .. }) => (false, "rs"),
            Some(Item::FunctionCall { .. }) => (false, "fc"),
            _ => (true, "msg"),
        };
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\ndata: {");
        if text {
            out.extend_from_slice(br#""content_index":0,"#);
        }
        out.extend_from_slice(br#""delta":"#);
        write_str(out, delta);
        out.extend_from_slice(br#","item_id":""#);
        out.extend_from_slice(kind.as_bytes());
        out.push(b'_');
        out.extend_from_slice(&self.id_json);
        out.push(b'_');
        write_u64(out, i as u64);
        out.push(b'"');
        if text {
            out.extend_from_slice(br#","logprobs":[]"#);
        }
        out.extend_from_slice(br#","output_index":"#);
        write_u64(out, i as u64);
        out.extend_from_slice(br#","sequence_number":"#);
        write_u64(out, self.seq);
        self.seq += 1;
        if kind == "rs" {
            out.extend_from_slice(br#","summary_index":0"#);
        }
        out.extend_from_slice(br#","type":"#);
        write_str(out, name);
        out.extend_from_slice(b"}\n\n");
    }

    /// Writes one event: `event: name`, and the payload with its `type` and `sequence_number`.
    fn emit(&mut self, out: &mut Vec<u8>, name: &str, payload: Value) {
        let mut v = payload;
        if let Value::Object(m) = &mut v {
            m.insert("type".into(), name.into());
            m.insert("sequence_number".into(), self.seq.into());
        }
        self.seq += 1;
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\ndata: ");
        let _ = serde_json::to_writer(&mut *out, &v);
        out.extend_from_slice(b"\n\n");
    }
}
