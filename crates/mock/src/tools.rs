//! Tool-call answers shared by both dialects: which tool to call, arguments made up from its
//! JSON Schema, and those arguments cut into pieces so streams carry them incrementally (the
//! part of tool calling that translation most often gets wrong).

use std::collections::VecDeque;

use bytes::Bytes;
use serde_json::{json, Map, Value};

/// A planned tool call.
#[derive(Debug, Clone)]
pub struct Call {
    pub id: String,
    pub name: String,
    /// The arguments object.
    pub input: Value,
    /// `input` as JSON text, in pieces that concatenate to it.
    pub pieces: Vec<String>,
}

/// Picks the tool to call: the one `x-mock-tool-call` names, else the first offered.
/// `schema_key` is where the dialect keeps the schema (`parameters` / `input_schema`); OpenAI
/// nests each tool under `function`. The arguments are `args` (`x-mock-tool-args`) when
/// given, else made up from the schema.
pub fn choose(
    tools: Option<&Value>,
    schema_key: &str,
    header: Option<&str>,
    args: Option<&Value>,
) -> Option<Call> {
    let tools = tools?.as_array()?;
    let defs: Vec<&Value> = tools
        .iter()
        .map(|t| t.get("function").unwrap_or(t))
        .collect();
    let def = match header {
        Some(name) => defs
            .iter()
            .find(|d| d.get("name").and_then(Value::as_str) == Some(name))?,
        None => defs.first()?,
    };
    let name = def.get("name").and_then(Value::as_str)?.to_string();
    let input = match args {
        Some(given) => given.clone(),
        None => arguments(def.get(schema_key)),
    };
    let text = input.to_string();
    Some(Call {
        id: format!("call_mock_{}", fastrand::u32(..)),
        name,
        input,
        pieces: split(&text, 3),
    })
}

/// Values for every property of an object schema, by type.
fn arguments(schema: Option<&Value>) -> Value {
    let mut out = Map::new();
    if let Some(props) = schema
        .and_then(|s| s.get("properties"))
        .and_then(Value::as_object)
    {
        for (k, p) in props {
            let v = match p.get("type").and_then(Value::as_str) {
                Some("integer" | "number") => json!(1),
                Some("boolean") => json!(true),
                Some("array") => json!([]),
                Some("object") => json!({}),
                _ => match p.get("enum").and_then(|e| e.get(0)) {
                    Some(first) => first.clone(),
                    None => json!("mock"),
                },
            };
            out.insert(k.clone(), v);
        }
    }
    Value::Object(out)
}

/// Cuts `text` into about `n` pieces on char boundaries.
fn split(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let size = chars.len().div_ceil(n.max(1)).max(1);
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

/// The OpenAI chat answer carrying `call`: a whole body, or the stream's frames.
pub fn openai_json(call: &Call, model: &str, prompt_tokens: u64) -> Bytes {
    let body = json!({
        "id": format!("chatcmpl-mock{}", fastrand::u32(..)),
        "object": "chat.completion",
        "created": crate::openai::unix_now(),
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": null, "refusal": null, "tool_calls": [{
                "id": call.id, "type": "function",
                "function": {"name": call.name, "arguments": call.input.to_string()},
            }]},
            "logprobs": null,
            "finish_reason": "tool_calls",
        }],
        "usage": usage(prompt_tokens, call.pieces.len() as u64),
        "system_fingerprint": crate::openai::SYSTEM_FINGERPRINT,
    });
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// Stream frames: role, the call's header, its argument pieces, the finish, usage, `[DONE]`.
pub fn openai_frames(
    call: &Call,
    model: &str,
    prompt_tokens: u64,
    include_usage: bool,
) -> VecDeque<Bytes> {
    let id = format!("chatcmpl-mock{}", fastrand::u32(..));
    let created = crate::openai::unix_now();
    let mut out = VecDeque::new();
    let mut chunk = |delta: Value, finish: Value| {
        let mut v = json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": crate::openai::SYSTEM_FINGERPRINT,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        if include_usage {
            v["usage"] = Value::Null;
        }
        out.push_back(data(&v));
    };
    chunk(json!({"role": "assistant", "content": null}), Value::Null);
    chunk(
        json!({"tool_calls": [{"index": 0, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}]}),
        Value::Null,
    );
    for p in &call.pieces {
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": p}}]}),
            Value::Null,
        );
    }
    chunk(json!({}), json!("tool_calls"));
    if include_usage {
        out.push_back(data(&json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": crate::openai::SYSTEM_FINGERPRINT,
            "choices": [], "usage": usage(prompt_tokens, call.pieces.len() as u64),
        })));
    }
    out.push_back(Bytes::from_static(b"data: [DONE]\n\n"));
    out
}

fn usage(prompt: u64, completion: u64) -> Value {
    json!({
        "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0},
    })
}

fn data(v: &Value) -> Bytes {
    let mut out = b"data: ".to_vec();
    let _ = serde_json::to_writer(&mut out, v);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_concatenate_to_the_arguments() {
        let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}}}]);
        let call = choose(Some(&tools), "parameters", None, None).unwrap();
        assert_eq!(call.name, "get_weather");
        assert_eq!(call.input, json!({"city": "mock", "days": 1}));
        assert!(call.pieces.len() > 1);
        assert_eq!(call.pieces.concat(), call.input.to_string());
        assert!(choose(Some(&tools), "parameters", Some("nope"), None).is_none());
    }

    #[test]
    fn given_arguments_replace_the_made_up_ones() {
        let tools = json!([{"name": "Read", "input_schema": {
            "type": "object", "properties": {"file_path": {"type": "string"}, "limit": {"type": "number"}}}}]);
        let args = json!({"file_path": "/tmp/x/hello.txt"});
        let call = choose(Some(&tools), "input_schema", Some("Read"), Some(&args)).unwrap();
        assert_eq!(call.input, args);
        assert_eq!(call.pieces.concat(), args.to_string());
    }
}
