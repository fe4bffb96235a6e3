//! Responses API requests → the internal chat model, and complete internal responses →
//! Responses API response objects.
//!
//! Requests are walked as `serde_json::Value` so an error can name the exact parameter path
//! (`input[2].content[0].type`) the way OpenAI's own errors do.

use serde_json::{json, Map, Value};

use super::{
    item_id, response_id, status, Echo, ResponseObject, REDACTED_PREFIX, SIGNATURE_PREFIX,
};
use crate::chat::access::{arr_of, f64_of, field, str_of, u64_of};
use crate::chat::{
    self, arguments_object, Part, ResponseFormat, Role, Tool, ToolCall, ToolChoice, TranslateError,
};
use crate::openai::chat::{image_from_url, push, unix_now};

/// A decoded Responses request: the chat request to send on, and what the response repeats.
#[derive(Clone, Debug, PartialEq)]
pub struct Decoded {
    /// The request in the gateway's terms.
    pub request: chat::Request,
    /// The settings the response object echoes.
    pub echo: Echo,
}

const STATELESS: &str =
    "the gateway keeps no state between requests; send the whole conversation in 'input'";
const BUILT_IN_TOOL: &str =
    "built-in tools run on OpenAI's servers and cannot be served through the gateway; declare a function tool instead";

/// Decodes a `POST /v1/responses` body. Everything refused here is refused for every backend.
pub fn decode_request(body: &[u8]) -> Result<Decoded, TranslateError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| TranslateError::invalid("", format!("the body is not valid JSON: {e}")))?;
    let Value::Object(obj) = v else {
        return Err(TranslateError::invalid(
            "",
            "the body must be a JSON object",
        ));
    };
    let refused = |param: &str, why: &'static str| TranslateError::Refused {
        param: param.to_string(),
        why,
    };
    let mut req = chat::Request::default();
    let mut user = None;
    let mut safety_identifier = None;
    for (k, v) in &obj {
        if v.is_null() {
            continue;
        }
        match k.as_str() {
            "model" => req.model = str_of(v, "model")?.to_string(),
            "input" => decode_input(v, &mut req)?,
            "instructions" => {
                // Instructions come before any system message of the input.
                req.system
                    .insert(0, Part::Text(str_of(v, "instructions")?.to_string()))
            }
            "stream" => {
                req.stream = v
                    .as_bool()
                    .ok_or_else(|| TranslateError::invalid("stream", "must be a boolean"))?
            }
            "max_output_tokens" => req.max_tokens = Some(u64_of(v, k)?),
            "temperature" => req.temperature = Some(f64_of(v, k)?),
            "top_p" => req.top_p = Some(f64_of(v, k)?),
            "tools" => {
                for (i, t) in arr_of(v, "tools")?.iter().enumerate() {
                    req.tools.push(decode_tool(t, i)?);
                }
            }
            "tool_choice" => req.tool_choice = Some(decode_tool_choice(v)?),
            "parallel_tool_calls" => {
                req.parallel_tool_calls = Some(v.as_bool().ok_or_else(|| {
                    TranslateError::invalid("parallel_tool_calls", "must be a boolean")
                })?)
            }
            "text" => {
                if let Some(f) = v.get("format").filter(|f| !f.is_null()) {
                    req.response_format = decode_format(f)?;
                }
            }
            "reasoning" => {
                req.reasoning_effort = v
                    .get("effort")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            }
            "user" => user = v.as_str().map(str::to_string),
            "safety_identifier" => safety_identifier = v.as_str().map(str::to_string),
            "previous_response_id" => return Err(refused(k, STATELESS)),
            "conversation" => return Err(refused(k, STATELESS)),
            "prompt" => {
                return Err(refused(
                    k,
                    "stored prompt templates live at OpenAI; send the prompt in 'instructions' and 'input'",
                ))
            }
            "background" if v.as_bool() == Some(true) => {
                return Err(refused(
                    k,
                    "background responses must be stored to be fetched later, and the gateway stores none",
                ))
            }
            "top_logprobs" if v.as_u64().is_some_and(|n| n > 0) => {
                return Err(refused(k, "log probabilities cannot be translated"))
            }
            // Safe to drop: they tune storage (`store` is always false here), caching,
            // or billing, never the shape of the answer (`store`, `metadata`, `include`,
            // `service_tier`, `prompt_cache_key`, `truncation`, `reasoning.summary`,
            // `max_tool_calls` — which counts built-in tool calls only, and those are refused).
            _ => {}
        }
    }
    req.user = user.or(safety_identifier);
    if req.model.is_empty() {
        return Err(TranslateError::invalid(
            "model",
            "you must provide a model parameter",
        ));
    }
    if req.messages.is_empty() {
        return Err(TranslateError::invalid(
            "input",
            "you must provide input: a string or a list of input items",
        ));
    }
    Ok(Decoded {
        request: req,
        echo: Echo::from_request(&obj),
    })
}

fn decode_tool(t: &Value, i: usize) -> Result<Tool, TranslateError> {
    let p = format!("tools[{i}]");
    let ty = str_of(field(t, "type", &p)?, &format!("{p}.type"))?;
    if ty != "function" {
        return Err(TranslateError::Refused {
            param: format!("{p}.type"),
            why: match ty {
                "custom" => "custom (free-form) tools cannot be translated; declare a function tool",
                "mcp" => "remote MCP tools are called by OpenAI's servers and cannot be served through the gateway",
                _ => BUILT_IN_TOOL,
            },
        });
    }
    // The Responses function tool is flat: no `function` wrapper.
    Ok(Tool {
        name: str_of(field(t, "name", &p)?, &format!("{p}.name"))?.to_string(),
        description: t
            .get("description")
            .and_then(Value::as_str)
            .map(str::to_string),
        parameters: match t.get("parameters") {
            Some(s) if s.is_object() => s.clone(),
            _ => json!({"type": "object", "properties": {}}),
        },
        strict: t.get("strict").and_then(Value::as_bool),
    })
}

fn decode_tool_choice(v: &Value) -> Result<ToolChoice, TranslateError> {
    match v {
        Value::String(s) => match s.as_str() {
            "auto" => Ok(ToolChoice::Auto),
            "none" => Ok(ToolChoice::None),
            "required" => Ok(ToolChoice::Required),
            _ => Err(TranslateError::invalid(
                "tool_choice",
                "must be auto, none, required or a function",
            )),
        },
        Value::Object(o) => match o.get("type").and_then(Value::as_str) {
            Some("function") => {
                let name = o
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| TranslateError::invalid("tool_choice.name", "missing"))?;
                Ok(ToolChoice::Tool(name.to_string()))
            }
            Some(_) => Err(TranslateError::Refused {
                param: "tool_choice.type".into(),
                why: "only 'auto', 'none', 'required' and a function can be translated",
            }),
            None => Err(TranslateError::invalid("tool_choice.type", "missing")),
        },
        _ => Err(TranslateError::invalid(
            "tool_choice",
            "must be a string or an object",
        )),
    }
}

/// `text.format`. Unlike Chat Completions, the json_schema format is flat:
/// `{type, name, schema, strict}`.
fn decode_format(f: &Value) -> Result<Option<ResponseFormat>, TranslateError> {
    match f.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(ResponseFormat::JsonObject)),
        Some("json_schema") => Ok(Some(ResponseFormat::JsonSchema {
            name: f
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("response")
                .to_string(),
            schema: field(f, "schema", "text.format")?.clone(),
            strict: f.get("strict").and_then(Value::as_bool),
        })),
        _ => Err(TranslateError::invalid(
            "text.format.type",
            "must be text, json_object or json_schema",
        )),
    }
}

fn decode_input(v: &Value, req: &mut chat::Request) -> Result<(), TranslateError> {
    let items = match v {
        Value::String(s) => {
            push(req, Role::User, vec![Part::Text(s.clone())]);
            return Ok(());
        }
        Value::Array(items) => items,
        _ => {
            return Err(TranslateError::invalid(
                "input",
                "must be a string or an array of input items",
            ))
        }
    };
    for (i, item) in items.iter().enumerate() {
        let p = format!("input[{i}]");
        // Easy input messages (`{role, content}`) may leave out the type.
        let ty = match item.get("type").and_then(Value::as_str) {
            Some(t) => t,
            None if item.get("role").is_some() => "message",
            None => return Err(TranslateError::invalid(format!("{p}.type"), "missing")),
        };
        match ty {
            "message" => {
                let role = str_of(field(item, "role", &p)?, &format!("{p}.role"))?;
                let content = decode_content(field(item, "content", &p)?, &format!("{p}.content"))?;
                match role {
                    // The Messages API and Gemini have one system prompt: system messages
                    // anywhere in the input are hoisted into it, in order.
                    "system" | "developer" => req.system.extend(content),
                    "user" => push(req, Role::User, content),
                    "assistant" => push(req, Role::Assistant, content),
                    other => {
                        return Err(TranslateError::invalid(
                            format!("{p}.role"),
                            format!("unknown role '{other}'"),
                        ))
                    }
                }
            }
            "function_call" => {
                let call_id = str_of(field(item, "call_id", &p)?, &format!("{p}.call_id"))?;
                let name = str_of(field(item, "name", &p)?, &format!("{p}.name"))?;
                let args = item.get("arguments").and_then(Value::as_str).unwrap_or("");
                push(
                    req,
                    Role::Assistant,
                    vec![Part::ToolCall(ToolCall {
                        id: call_id.to_string(),
                        name: name.to_string(),
                        arguments: arguments_object(args),
                    })],
                );
            }
            "function_call_output" => {
                let call_id = str_of(field(item, "call_id", &p)?, &format!("{p}.call_id"))?;
                let content = decode_content(field(item, "output", &p)?, &format!("{p}.output"))?;
                push(
                    req,
                    Role::User,
                    vec![Part::ToolResult {
                        id: call_id.to_string(),
                        content,
                        is_error: false,
                    }],
                );
            }
            "reasoning" => {
                if let Some(part) = decode_reasoning(item, &p)? {
                    push(req, Role::Assistant, vec![part]);
                }
            }
            "item_reference" => {
                return Err(TranslateError::Refused {
                    param: format!("{p}.type"),
                    why: STATELESS,
                })
            }
            _ => {
                return Err(TranslateError::Refused {
                    param: format!("{p}.type"),
                    why: "only messages, function calls, function call outputs and reasoning can be translated; built-in tool items cannot",
                })
            }
        }
    }
    Ok(())
}

/// A reasoning item: its summary (or, failing that, its full reasoning text), and the
/// Anthropic signature or redacted data it carries. `None` when there is nothing to pass on.
fn decode_reasoning(item: &Value, p: &str) -> Result<Option<Part>, TranslateError> {
    let texts = |key: &str| -> Result<String, TranslateError> {
        let mut out = Vec::new();
        if let Some(parts) = item.get(key).filter(|v| !v.is_null()) {
            for (j, s) in arr_of(parts, &format!("{p}.{key}"))?.iter().enumerate() {
                let sp = format!("{p}.{key}[{j}]");
                out.push(str_of(field(s, "text", &sp)?, &format!("{sp}.text"))?.to_string());
            }
        }
        Ok(out.join("\n\n"))
    };
    let mut text = texts("summary")?;
    if text.is_empty() {
        text = texts("content")?;
    }
    let encrypted = item.get("encrypted_content").and_then(Value::as_str);
    let signature = encrypted
        .and_then(|e| e.strip_prefix(SIGNATURE_PREFIX))
        .map(str::to_string);
    let redacted = encrypted
        .and_then(|e| e.strip_prefix(REDACTED_PREFIX))
        .map(str::to_string);
    if text.is_empty() && signature.is_none() && redacted.is_none() {
        return Ok(None);
    }
    Ok(Some(Part::Reasoning {
        text,
        signature,
        redacted,
    }))
}

/// Message content, or a function call's output: a string, or a list of content parts.
fn decode_content(c: &Value, p: &str) -> Result<Vec<Part>, TranslateError> {
    let parts = match c {
        Value::String(s) => return Ok(vec![Part::Text(s.clone())]),
        Value::Array(parts) => parts,
        _ => {
            return Err(TranslateError::invalid(
                p,
                "must be a string or an array of content parts",
            ))
        }
    };
    let mut out = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        let pp = format!("{p}[{j}]");
        let ty = str_of(field(part, "type", &pp)?, &format!("{pp}.type"))?;
        match ty {
            "input_text" | "output_text" | "text" => out.push(Part::Text(
                str_of(field(part, "text", &pp)?, &format!("{pp}.text"))?.to_string(),
            )),
            "refusal" => out.push(Part::Text(
                part.get("refusal")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            )),
            "input_image" => {
                if let Some(url) = part.get("image_url").and_then(Value::as_str) {
                    out.push(Part::Image(image_from_url(url)));
                } else if part.get("file_id").is_some_and(|f| !f.is_null()) {
                    return Err(TranslateError::Refused {
                        param: format!("{pp}.file_id"),
                        why: "file ids name files stored at OpenAI; send the image as a URL or a data: URL",
                    });
                } else {
                    return Err(TranslateError::invalid(
                        format!("{pp}.image_url"),
                        "missing",
                    ));
                }
            }
            _ => {
                return Err(TranslateError::Refused {
                    param: format!("{pp}.type"),
                    why: match ty {
                        "input_file" => "file inputs cannot be translated",
                        "input_audio" => "audio input cannot be translated",
                        _ => "unknown content part type",
                    },
                })
            }
        }
    }
    Ok(out)
}

// === responses ===

/// The output items of a complete response, in order: consecutive text becomes one message.
pub(crate) fn output_items(resp_id: &str, content: &[Part], item_status: &str) -> Vec<Value> {
    let mut items: Vec<Value> = Vec::new();
    let mut text: Option<String> = None;
    let flush = |items: &mut Vec<Value>, text: &mut Option<String>| {
        if let Some(t) = text.take() {
            let i = items.len();
            items.push(message_item(&item_id("msg", resp_id, i), &t, item_status));
        }
    };
    for part in content {
        match part {
            Part::Text(t) => text.get_or_insert_with(String::new).push_str(t),
            Part::Reasoning {
                text: r,
                signature,
                redacted,
            } => {
                flush(&mut items, &mut text);
                let i = items.len();
                items.push(reasoning_item(
                    &item_id("rs", resp_id, i),
                    r,
                    signature.as_deref(),
                    redacted.as_deref(),
                ));
            }
            Part::ToolCall(c) => {
                flush(&mut items, &mut text);
                let i = items.len();
                items.push(function_call_item(
                    &item_id("fc", resp_id, i),
                    &c.id,
                    &c.name,
                    &Value::Object(c.arguments.clone()).to_string(),
                    item_status,
                ));
            }
            // A response never holds these; nothing to show.
            Part::Image(_) | Part::ToolResult { .. } => {}
        }
    }
    flush(&mut items, &mut text);
    items
}

pub(crate) fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({
        "id": id, "type": "message", "status": status, "role": "assistant",
        "content": [output_text(text)],
    })
}

pub(crate) fn output_text(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": []})
}

pub(crate) fn function_call_item(
    id: &str,
    call_id: &str,
    name: &str,
    arguments: &str,
    status: &str,
) -> Value {
    json!({
        "id": id, "type": "function_call", "status": status,
        "arguments": arguments, "call_id": call_id, "name": name,
    })
}

pub(crate) fn reasoning_item(
    id: &str,
    text: &str,
    signature: Option<&str>,
    redacted: Option<&str>,
) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), id.into());
    m.insert("type".into(), "reasoning".into());
    let summary = if text.is_empty() {
        json!([])
    } else {
        json!([{"type": "summary_text", "text": text}])
    };
    m.insert("summary".into(), summary);
    let encrypted = match (signature.filter(|s| !s.is_empty()), redacted) {
        (_, Some(d)) => Some(format!("{REDACTED_PREFIX}{d}")),
        (Some(s), None) => Some(format!("{SIGNATURE_PREFIX}{s}")),
        (None, None) => None,
    };
    if let Some(e) = encrypted {
        m.insert("encrypted_content".into(), e.into());
    }
    Value::Object(m)
}

/// Encodes a complete response as a Responses API response object.
pub fn encode_response(resp: &chat::Response, echo: &Echo) -> Vec<u8> {
    let id = response_id(&resp.id);
    let (status, incomplete_details) = status(resp.finish_reason);
    let item_status = if status == "completed" {
        "completed"
    } else {
        "incomplete"
    };
    let body = ResponseObject {
        id: &id,
        created_at: unix_now(),
        model: &resp.model,
        status,
        incomplete_details,
        output: output_items(&id, &resp.content, item_status),
        usage: Some(resp.usage.unwrap_or_default()),
        echo,
    }
    .into_json();
    serde_json::to_vec(&body).unwrap_or_default()
}
