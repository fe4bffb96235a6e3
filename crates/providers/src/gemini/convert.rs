//! The internal chat model → a `generateContent` request; a `GenerateContentResponse` → the
//! internal chat model.

use serde_json::{json, Map, Value};

use super::WireUsage;
use crate::chat::{
    self, FinishReason, Image, Part, ResponseFormat, Role, Str, Thinking, ToolCall, ToolChoice,
    TranslateError, Turns,
};
use crate::json::{Joined, Out};
use crate::Usage;

const PROVIDER: &str = "gemini";

/// Gemini 3 refuses a replayed `functionCall` part without the `thoughtSignature` it was sent
/// with. Calls that reach the gateway from an OpenAI or Anthropic caller have lost it (neither
/// format can carry it), so they carry this value instead, which Google documents for
/// conversations the model did not produce itself.
pub(super) const FOREIGN_THOUGHT_SIGNATURE: &str = "skip_thought_signature_validator";

// === requests ===

/// Encodes a `generateContent` body. The model goes in the URL, not in the body, and so does
/// streaming (`streamGenerateContent`), so neither appears here.
pub fn encode_request(req: &chat::Request<'_>, _model: &str) -> Result<Vec<u8>, TranslateError> {
    let mut out = Vec::with_capacity(6);
    // Gemini has one system instruction: system turns inside the conversation join it.
    let system: Vec<Out> = req
        .folded_system()
        .filter_map(|p| match p {
            Part::Text(t) if !t.is_empty() => Some(Out::obj([("text", Out::Str(t))])),
            _ => None,
        })
        .collect();
    if !system.is_empty() {
        out.push((
            "systemInstruction",
            Out::obj([("parts", Out::Array(system))]),
        ));
    }
    let mut contents = Turns::with_capacity(req.messages.len());
    for (i, m) in req.messages.iter().enumerate() {
        if m.role == Role::System {
            continue;
        }
        let mut parts = Vec::with_capacity(m.content.len());
        let mut signed = false;
        for (j, part) in m.content.iter().enumerate() {
            let p = || format!("messages[{i}].content[{j}]");
            match part {
                Part::Text(t) if t.is_empty() => {}
                Part::Text(t) => parts.push(Out::obj([("text", Out::Str(t))])),
                Part::Image(img) => parts.push(Out::Owned(image_part(img, &p())?)),
                // Gemini's thoughts are summaries it does not take back; leaving them out does
                // not change what the model is asked.
                Part::Reasoning { .. } => {}
                Part::ToolCall(c) => {
                    let mut fc = Vec::with_capacity(2);
                    fc.push((
                        "functionCall",
                        Out::obj([
                            ("args", Out::Args(&c.arguments)),
                            ("name", Out::Text(&c.name)),
                        ]),
                    ));
                    // Only the first call of a turn carries a signature in Gemini's own
                    // answers, and only that one is checked.
                    if !signed {
                        signed = true;
                        fc.push(("thoughtSignature", Out::Text(FOREIGN_THOUGHT_SIGNATURE)));
                    }
                    parts.push(Out::Object(fc));
                }
                Part::ToolResult {
                    id,
                    content,
                    is_error,
                } => {
                    let name = called_function(&req.messages[..i], id).ok_or_else(|| {
                        TranslateError::invalid(
                            format!("{}.tool_call_id", p()),
                            format!("no earlier assistant tool call has the id '{id}'"),
                        )
                    })?;
                    let mut texts = Vec::with_capacity(content.len());
                    for c in content {
                        match c {
                            Part::Text(t) => texts.push(t),
                            _ => {
                                return Err(TranslateError::Unsupported {
                                    param: format!("{}.content", p()),
                                    provider: PROVIDER,
                                    why: "tool results can only carry text",
                                })
                            }
                        }
                    }
                    parts.push(Out::obj([(
                        "functionResponse",
                        Out::obj([
                            ("name", Out::Text(name)),
                            ("response", tool_response(texts, *is_error)),
                        ]),
                    )]));
                }
            }
        }
        // Turns must alternate, and a turn's function responses must arrive together.
        contents.push(m.role, parts);
    }
    if contents.is_empty() {
        return Err(TranslateError::invalid(
            "messages",
            "Gemini needs at least one message with content",
        ));
    }
    out.push(("contents", contents.into_out("model", "parts")));
    if !req.tools.is_empty() {
        let decls: Vec<Out> = req
            .tools
            .iter()
            .map(|t| {
                let mut d = Vec::with_capacity(3);
                if let Some(desc) = &t.description {
                    d.push(("description", Out::Str(desc)));
                }
                d.push(("name", Out::Text(&t.name)));
                // `parametersJsonSchema` takes JSON Schema as callers write it (the older
                // `parameters` is an OpenAPI subset that refuses `additionalProperties`,
                // `$ref` …). A function without arguments has no schema at all: Gemini
                // refuses an object schema with no properties.
                if t.parameters.has_nonempty_object("properties") {
                    d.push(("parametersJsonSchema", Out::Json(&t.parameters)));
                }
                Out::Object(d)
            })
            .collect();
        let mut tools = vec![Out::obj([("functionDeclarations", Out::Array(decls))])];
        if req.web_search.is_some() {
            tools.push(Out::Owned(json!({"google_search": {}})));
        }
        out.push(("tools", Out::Array(tools)));
        // `parallel_tool_calls: false` has no Gemini setting; the caller still handles each
        // call it gets, so it is dropped.
        if let Some(choice) = &req.tool_choice {
            let config = match choice {
                ToolChoice::Auto => json!({"mode": "AUTO"}),
                ToolChoice::None => json!({"mode": "NONE"}),
                ToolChoice::Required => json!({"mode": "ANY"}),
                ToolChoice::Tool(n) => json!({"mode": "ANY", "allowedFunctionNames": [n]}),
            };
            out.push((
                "toolConfig",
                Out::Owned(json!({"functionCallingConfig": config})),
            ));
        }
    } else if req.web_search.is_some() {
        // Grounding with Google Search: Gemini's own web search. Its results come back as the
        // candidate's `groundingMetadata`, and only the answer's text is read.
        out.push(("tools", Out::Owned(json!([{"google_search": {}}]))));
    }
    let mut gen = Vec::new();
    if let Some(t) = req.temperature {
        // Gemini's range is 0–2, like OpenAI's.
        gen.push(("temperature", Out::f64(t)));
    }
    if let Some(t) = req.top_p {
        gen.push(("topP", Out::f64(t)));
    }
    if let Some(k) = req.top_k {
        gen.push(("topK", Out::U64(k)));
    }
    if let Some(n) = req.max_tokens {
        gen.push(("maxOutputTokens", Out::U64(n)));
    }
    if !req.stop.is_empty() {
        gen.push((
            "stopSequences",
            Out::Array(req.stop.iter().map(|s| Out::Text(s)).collect()),
        ));
    }
    match &req.response_format {
        None => {}
        Some(ResponseFormat::JsonObject) => {
            gen.push(("responseMimeType", Out::Text("application/json")));
        }
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            gen.push(("responseMimeType", Out::Text("application/json")));
            // JSON Schema as sent (not the OpenAPI-subset `responseSchema`), so nothing has
            // to be stripped or rewritten.
            gen.push(("responseJsonSchema", Out::Value(schema)));
        }
    }
    let budget = match req.thinking {
        Some(Thinking::Budget(b)) => Some(i64::try_from(b).unwrap_or(i64::MAX)),
        // Gemini's dynamic thinking (-1) is adaptive thinking; an effort sizes a budget.
        Some(Thinking::Adaptive) if req.effort.is_none() && req.reasoning_effort.is_none() => {
            Some(-1)
        }
        Some(Thinking::Adaptive) => Some(i64::try_from(req.adaptive_budget()).unwrap_or(i64::MAX)),
        None => req
            .effort_budget()
            .map(|b| i64::try_from(b).unwrap_or(i64::MAX)),
    };
    if let Some(b) = budget {
        gen.push((
            "thinkingConfig",
            Out::obj([
                ("includeThoughts", Out::Bool(true)),
                ("thinkingBudget", Out::I64(b)),
            ]),
        ));
    }
    if !gen.is_empty() {
        gen.sort_by_key(|(k, _)| *k);
        out.push(("generationConfig", Out::Object(gen)));
    }
    // `user` has no Gemini field; it only tags the request for abuse tracking.
    out.sort_by_key(|(k, _)| *k);
    Ok(Out::Object(out).to_vec(req.size_hint()))
}

/// The function an earlier tool call with `id` named: the latest one, since ids made up for
/// Gemini's calls (`call_0` …) may repeat across turns.
fn called_function<'a>(earlier: &'a [chat::Message], id: &str) -> Option<&'a str> {
    earlier.iter().rev().find_map(|m| {
        m.content.iter().find_map(|p| match p {
            Part::ToolCall(c) if c.id == id => Some(c.name.as_str()),
            _ => None,
        })
    })
}

/// A function response must be a JSON object. A tool that answered with an object is passed
/// as it is; anything else goes under `output` (or `error`), the keys Gemini documents for it.
/// Text that cannot be a JSON object or array (most tool output) is copied as it is.
fn tool_response<'r, 'a>(texts: Vec<&'r Str<'a>>, is_error: bool) -> Out<'r, 'a> {
    let key = if is_error { "error" } else { "output" };
    if texts.first().and_then(|t| t.opens_container()) == Some(false) {
        return Out::obj([(key, Out::Joined(Joined::new(texts, "", "")))]);
    }
    let text: String = texts.iter().map(|t| t.as_str()).collect();
    let value = match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(o)) if !is_error => return Out::Owned(Value::Object(o)),
        Ok(v @ (Value::Object(_) | Value::Array(_))) => v,
        _ => Value::String(text),
    };
    Out::Owned(json!({ key: value }))
}

fn image_part(img: &Image, param: &str) -> Result<Value, TranslateError> {
    match img {
        Image::Base64 { media_type, data } => {
            Ok(json!({"inlineData": {"mimeType": media_type, "data": data}}))
        }
        Image::Url(url) => match image_media_type(url) {
            Some(mime) => Ok(json!({"fileData": {"mimeType": mime, "fileUri": url}})),
            None => Err(TranslateError::Unsupported {
                param: param.to_string(),
                provider: PROVIDER,
                why: "Gemini takes image URLs only with their media type, and this URL does not \
                      end in a known image extension; send the image inline (base64) instead",
            }),
        },
    }
}

/// The media type of an image URL, from its extension.
fn image_media_type(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let ext = path.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "heic" => "image/heic",
        "heif" => "image/heif",
        _ => return None,
    })
}

// === responses ===

/// Decodes a complete `GenerateContentResponse`.
pub fn decode_response(body: &[u8]) -> Result<chat::Response, TranslateError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| TranslateError::invalid("", format!("upstream response is not JSON: {e}")))?;
    let id = response_id(&v);
    let candidate = v.get("candidates").and_then(|c| c.get(0));
    let mut content = Vec::new();
    let mut calls = 0u32;
    for p in candidate
        .and_then(|c| c.pointer("/content/parts"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match decode_part(p) {
            Some(Decoded::Text(t)) => content.push(Part::Text(t.into())),
            Some(Decoded::Thought(t)) => content.push(Part::Reasoning {
                text: t.into(),
                signature: None,
                redacted: None,
            }),
            Some(Decoded::Call {
                id: own,
                name,
                args,
            }) => {
                content.push(Part::ToolCall(ToolCall {
                    id: own.unwrap_or_else(|| tool_call_id(&id, calls)),
                    name,
                    arguments: args,
                }));
                calls += 1;
            }
            None => {}
        }
    }
    Ok(chat::Response {
        model: v
            .get("modelVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        id,
        content,
        finish_reason: finish_reason(&v, calls > 0),
        stop_sequence: None,
        usage: usage(&v),
    })
}

/// What one response part carries, in the internal model's terms.
pub(super) enum Decoded {
    Text(String),
    Thought(String),
    Call {
        id: Option<String>,
        name: String,
        args: Map<String, Value>,
    },
}

pub(super) fn decode_part(p: &Value) -> Option<Decoded> {
    if let Some(fc) = p.get("functionCall") {
        let args = match fc.get("args") {
            Some(Value::Object(m)) => m.clone(),
            None | Some(Value::Null) => Map::new(),
            Some(other) => chat::arguments_object(&other.to_string()),
        };
        return Some(Decoded::Call {
            id: fc
                .get("id")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            name: fc
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            args,
        });
    }
    // Code execution and inline media only appear when the request asked for Gemini's own
    // tools or output modalities, which a translated request cannot.
    let text = p
        .get("text")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())?;
    Some(if p.get("thought").and_then(Value::as_bool) == Some(true) {
        Decoded::Thought(text.to_string())
    } else {
        Decoded::Text(text.to_string())
    })
}

pub(super) fn response_id(v: &Value) -> String {
    v.get("responseId")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// A made-up id for the `index`th call of a response (Gemini gives calls none): unique across
/// responses when Gemini sent a response id, and always made of the characters every format
/// accepts in ids.
pub(super) fn tool_call_id(response_id: &str, index: u32) -> String {
    let rid: String = response_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    if rid.is_empty() {
        format!("call_{index}")
    } else {
        format!("call_{rid}_{index}")
    }
}

/// The candidate's finish reason, or the prompt's block reason when there is no candidate.
pub(super) fn finish_reason(v: &Value, called: bool) -> Option<FinishReason> {
    let candidate = v.get("candidates").and_then(|c| c.get(0));
    if let Some(r) = candidate
        .and_then(|c| c.get("finishReason"))
        .and_then(Value::as_str)
    {
        return Some(match finish_from_gemini(r) {
            // Gemini says STOP after a function call; callers wait for "tool_calls".
            FinishReason::Stop if called => FinishReason::ToolCalls,
            other => other,
        });
    }
    v.pointer("/promptFeedback/blockReason")
        .filter(|_| candidate.is_none())
        .map(|_| FinishReason::ContentFilter)
}

/// Gemini's `finishReason` → the internal one.
pub fn finish_from_gemini(s: &str) -> FinishReason {
    match s {
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION" => FinishReason::ContentFilter,
        // STOP (a natural end or a stop sequence: Gemini does not tell them apart), and the
        // rest (MALFORMED_FUNCTION_CALL, OTHER …), which end the turn with what was generated.
        _ => FinishReason::Stop,
    }
}

pub(super) fn usage(v: &Value) -> Option<Usage> {
    v.get("usageMetadata")
        .and_then(|u| serde_json::from_value::<WireUsage>(u.clone()).ok())
        .map(WireUsage::to_usage)
}
