//! The internal chat model → a Converse request; a Converse response → the internal model.

use serde_json::{json, Map, Value};

use super::WireUsage;
use crate::chat::{
    self, FinishReason, Image, Part, ResponseFormat, Str, ToolCall, ToolChoice, TranslateError,
    Turns,
};
use crate::json::Out;
use crate::Usage;

const PROVIDER: &str = "bedrock";

// === requests ===

/// Encodes a Converse body. The model and streaming go in the URL (see [`super::path`]).
pub fn encode_request(req: &chat::Request<'_>, _model: &str) -> Result<Vec<u8>, TranslateError> {
    let mut out = Vec::with_capacity(6);
    // Converse has one system prompt: system turns inside the conversation join it.
    let system: Vec<Out> = req
        .folded_system()
        .filter_map(|p| match p {
            Part::Text(t) if !t.is_blank() => Some(text_block(t)),
            _ => None,
        })
        .collect();
    if !system.is_empty() {
        out.push(("system", Out::Array(system)));
    }
    let mut messages = Turns::with_capacity(req.messages.len());
    let mut has_tool_blocks = false;
    for (i, m) in req.messages.iter().enumerate() {
        let mut blocks = Vec::with_capacity(m.content.len());
        for (j, part) in m.content.iter().enumerate() {
            let p = || format!("messages[{i}].content[{j}]");
            match part {
                // Bedrock refuses blank text blocks.
                Part::Text(t) if t.is_blank() => {}
                Part::Text(t) => blocks.push(text_block(t)),
                Part::Image(img) => blocks.push(Out::Owned(image_block(img, &p())?)),
                Part::Reasoning {
                    redacted: Some(data),
                    ..
                } => blocks.push(Out::obj([(
                    "reasoningContent",
                    Out::obj([("redactedContent", Out::Str(data))]),
                )])),
                Part::Reasoning {
                    text,
                    signature: Some(sig),
                    ..
                } => blocks.push(Out::obj([(
                    "reasoningContent",
                    Out::obj([(
                        "reasoningText",
                        Out::obj([("signature", Out::Str(sig)), ("text", Out::Str(text))]),
                    )]),
                )])),
                // Unsigned reasoning (another provider's summary) cannot be replayed: the
                // model would refuse it, and leaving it out does not change what is asked.
                Part::Reasoning { .. } => {}
                Part::ToolCall(c) => {
                    has_tool_blocks = true;
                    blocks.push(Out::obj([(
                        "toolUse",
                        Out::obj([
                            ("input", Out::Args(&c.arguments)),
                            ("name", Out::Text(&c.name)),
                            ("toolUseId", Out::Text(&c.id)),
                        ]),
                    )]));
                }
                Part::ToolResult {
                    id,
                    content,
                    is_error,
                } => {
                    has_tool_blocks = true;
                    let mut inner = Vec::with_capacity(content.len());
                    for (k, c) in content.iter().enumerate() {
                        match c {
                            Part::Text(t) if t.is_empty() => {}
                            Part::Text(t) => inner.push(text_block(t)),
                            Part::Image(img) => inner.push(Out::Owned(image_block(
                                img,
                                &format!("{}.content[{k}]", p()),
                            )?)),
                            _ => {
                                return Err(TranslateError::Unsupported {
                                    param: format!("{}.content[{k}]", p()),
                                    provider: PROVIDER,
                                    why: "tool results can only carry text and images",
                                })
                            }
                        }
                    }
                    if inner.is_empty() {
                        inner.push(Out::obj([("text", Out::Text(""))]));
                    }
                    let mut r = Vec::with_capacity(3);
                    r.push(("content", Out::Array(inner)));
                    // Only failures are marked: `status` is not accepted by every model.
                    if *is_error {
                        r.push(("status", Out::Text("error")));
                    }
                    r.push(("toolUseId", Out::Text(id)));
                    blocks.push(Out::obj([("toolResult", Out::Object(r))]));
                }
            }
        }
        // Converse requires turns to alternate, and a turn's tool results to come together.
        messages.push(m.role, blocks);
    }
    if messages.is_empty() {
        return Err(TranslateError::invalid(
            "messages",
            "Bedrock needs at least one message with content",
        ));
    }
    out.push(("messages", messages.into_out("assistant", "content")));

    let mut inference = Vec::new();
    if let Some(n) = req.max_tokens {
        inference.push(("maxTokens", Out::U64(n)));
    }
    if !req.stop.is_empty() {
        inference.push((
            "stopSequences",
            Out::Array(req.stop.iter().map(|s| Out::Text(s)).collect()),
        ));
    }
    if let Some(t) = req.temperature {
        // Bedrock's models take 0–1; OpenAI callers may send up to 2.
        inference.push(("temperature", Out::f64(t.clamp(0.0, 1.0))));
    }
    if let Some(t) = req.top_p {
        inference.push(("topP", Out::f64(t)));
    }
    if !inference.is_empty() {
        out.push(("inferenceConfig", Out::Object(inference)));
    }

    let no_tools = matches!(req.tool_choice, Some(ToolChoice::None));
    if !req.tools.is_empty() && (!no_tools || has_tool_blocks) {
        if no_tools {
            // Converse has no "none" choice, and a conversation with tool blocks must send
            // the tools; the model could then call one the caller forbade.
            return Err(TranslateError::Unsupported {
                param: "tool_choice".into(),
                provider: PROVIDER,
                why: "Converse cannot forbid tool calls in a conversation that already has some",
            });
        }
        let tools: Vec<Out> = req
            .tools
            .iter()
            .map(|t| {
                let mut spec = Vec::with_capacity(3);
                if let Some(d) = t.description.as_ref().filter(|d| !d.is_empty()) {
                    spec.push(("description", Out::Str(d)));
                }
                let schema = if t.parameters.is_object() {
                    Out::Json(&t.parameters)
                } else {
                    Out::Owned(json!({"type": "object", "properties": {}}))
                };
                spec.push(("inputSchema", Out::obj([("json", schema)])));
                spec.push(("name", Out::Text(&t.name)));
                Out::obj([("toolSpec", Out::Object(spec))])
            })
            .collect();
        let mut config = Vec::with_capacity(2);
        // `parallel_tool_calls: false` has no Converse setting; the caller still handles each
        // call it gets, so it is dropped.
        match &req.tool_choice {
            None | Some(ToolChoice::Auto) | Some(ToolChoice::None) => {}
            Some(ToolChoice::Required) => {
                config.push(("toolChoice", Out::Owned(json!({"any": {}}))));
            }
            Some(ToolChoice::Tool(n)) => {
                config.push(("toolChoice", Out::Owned(json!({"tool": {"name": n}}))));
            }
        }
        config.push(("tools", Out::Array(tools)));
        out.push(("toolConfig", Out::Object(config)));
    } else if has_tool_blocks {
        return Err(TranslateError::invalid(
            "tools",
            "Bedrock needs the tool definitions in a conversation that has tool calls",
        ));
    }

    if let Some(rf) = &req.response_format {
        return Err(TranslateError::Unsupported {
            param: "response_format".into(),
            provider: PROVIDER,
            why: match rf {
                ResponseFormat::JsonObject | ResponseFormat::JsonSchema { .. } => {
                    "Converse has no JSON output mode; describe the format in the prompt or \
                     use a tool"
                }
            },
        });
    }

    // Model-specific settings go in `additionalModelRequestFields`, under the names the
    // model's own API uses; these are Anthropic Claude's, the models with these settings.
    let mut extra = Vec::new();
    // A budget made up from adaptive thinking or an effort only where Claude would not refuse
    // it (see `claude_thinking_budget`): `enabled` with a budget is what every Claude model
    // with thinking takes, where `adaptive` is refused by all but the newest.
    if let Some(b) = req.claude_thinking_budget() {
        extra.push((
            "thinking",
            Out::obj([
                ("budget_tokens", Out::U64(b)),
                ("type", Out::Text("enabled")),
            ]),
        ));
    }
    if let Some(k) = req.top_k {
        extra.push(("top_k", Out::U64(k)));
    }
    if !extra.is_empty() {
        out.push(("additionalModelRequestFields", Out::Object(extra)));
    }
    // `user` has no Converse field; it only tags the request for abuse tracking.
    out.sort_by_key(|(k, _)| *k);
    Ok(Out::Object(out).to_vec(req.size_hint()))
}

/// `{"text": t}`.
fn text_block<'r, 'a>(t: &'r Str<'a>) -> Out<'r, 'a> {
    Out::obj([("text", Out::Str(t))])
}

fn image_block(img: &Image, param: &str) -> Result<Value, TranslateError> {
    match img {
        Image::Base64 { media_type, data } => {
            let format = match media_type.to_ascii_lowercase().as_str() {
                "image/png" => "png",
                "image/jpeg" | "image/jpg" => "jpeg",
                "image/gif" => "gif",
                "image/webp" => "webp",
                _ => {
                    return Err(TranslateError::Unsupported {
                        param: param.to_string(),
                        provider: PROVIDER,
                        why: "Converse takes png, jpeg, gif and webp images only",
                    })
                }
            };
            Ok(json!({"image": {"format": format, "source": {"bytes": data}}}))
        }
        Image::Url(_) => Err(TranslateError::Unsupported {
            param: param.to_string(),
            provider: PROVIDER,
            why: "Converse takes images as bytes only, not by URL; send the image inline \
                  (base64 data URL) instead",
        }),
    }
}

// === responses ===

/// Decodes a complete Converse response.
pub fn decode_response(body: &[u8]) -> Result<chat::Response, TranslateError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| TranslateError::invalid("", format!("upstream response is not JSON: {e}")))?;
    let mut content = Vec::new();
    for b in v
        .pointer("/output/message/content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(t) = b.get("text").and_then(Value::as_str) {
            if !t.is_empty() {
                content.push(Part::Text(t.to_string().into()));
            }
        } else if let Some(u) = b.get("toolUse") {
            let s = |k: &str| {
                u.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let arguments = match u.get("input") {
                Some(Value::Object(m)) => m.clone(),
                None | Some(Value::Null) => Map::new(),
                Some(other) => chat::arguments_object(&other.to_string()),
            };
            content.push(Part::ToolCall(ToolCall {
                id: s("toolUseId"),
                name: s("name"),
                arguments,
            }));
        } else if let Some(r) = b.get("reasoningContent") {
            if let Some(rt) = r.get("reasoningText") {
                let s = |k: &str| rt.get(k).and_then(Value::as_str).map(str::to_string);
                content.push(Part::Reasoning {
                    text: s("text").unwrap_or_default().into(),
                    signature: s("signature").map(Into::into),
                    redacted: None,
                });
            } else if let Some(d) = r.get("redactedContent").and_then(Value::as_str) {
                content.push(Part::Reasoning {
                    text: Default::default(),
                    signature: None,
                    redacted: Some(d.to_string().into()),
                });
            }
        }
    }
    Ok(chat::Response {
        // Converse answers carry neither an id nor the model's name.
        id: String::new(),
        model: String::new(),
        content,
        finish_reason: v
            .get("stopReason")
            .and_then(Value::as_str)
            .map(finish_from_bedrock),
        stop_sequence: None,
        usage: usage(&v),
    })
}

/// Converse's `stopReason` → the internal one.
pub fn finish_from_bedrock(s: &str) -> FinishReason {
    match s {
        "tool_use" => FinishReason::ToolCalls,
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "stop_sequence" => FinishReason::StopSequence,
        "guardrail_intervened" | "content_filtered" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

pub(super) fn usage(v: &Value) -> Option<Usage> {
    v.get("usage")
        .and_then(|u| serde_json::from_value::<WireUsage>(u.clone()).ok())
        .map(WireUsage::to_usage)
}
