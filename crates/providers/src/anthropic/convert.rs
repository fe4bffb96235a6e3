//! Anthropic Messages requests and responses ⇄ the internal chat model.

use serde_json::{json, Map, Value};

use super::{wire, WireUsage, DEFAULT_MAX_TOKENS};
use crate::chat::{
    self, Dropped, FinishReason, Image, Json, Message, Part, ResponseFormat, Role, Str, Thinking,
    Tool, ToolCall, ToolChoice, TranslateError, Turns,
};
use crate::json::Out;

// === requests ===

/// Decodes a Messages request for translation to `target` (a provider name, for errors).
/// Texts and tool schemas borrow from `body`.
pub fn decode_request<'a>(
    body: &'a [u8],
    target: &'static str,
) -> Result<chat::Request<'a>, TranslateError> {
    let obj = match wire::parse(body) {
        Ok(wire::Body::Object(obj)) => obj,
        Ok(wire::Body::Other) => {
            return Err(TranslateError::invalid(
                "",
                "the body must be a JSON object",
            ))
        }
        // A `Value` parse says what is wrong as before (the one-pass parse accepts exactly
        // what it does, but its messages differ).
        Err(e) => {
            let e = serde_json::from_slice::<Value>(body).err().unwrap_or(e);
            return Err(TranslateError::invalid(
                "",
                format!("the body is not valid JSON: {e}"),
            ));
        }
    };
    let unsupported = |param: String, why: &'static str| TranslateError::Unsupported {
        param,
        provider: target,
        why,
    };
    let mut req = chat::Request::default();
    let mut disable_parallel = None;
    for (k, top) in obj {
        let v = match top {
            wire::Top::Blocks(many) => {
                req.system = match many {
                    wire::Many::Text(s) => vec![Part::Text(s.into())],
                    wire::Many::List(blocks) => blocks
                        .into_iter()
                        .enumerate()
                        .map(|(i, b)| {
                            decode_block(b, &|| format!("system[{i}]"), target, &mut req.dropped)
                        })
                        .collect::<Result<_, _>>()?,
                    wire::Many::Other(Value::Null) => continue,
                    wire::Many::Other(_) => {
                        return Err(TranslateError::invalid(
                            "system",
                            "must be a string or an array of text blocks",
                        ))
                    }
                };
                continue;
            }
            wire::Top::Messages(wire::Many::List(messages)) => {
                for (i, m) in messages.into_iter().enumerate() {
                    let p = || format!("messages[{i}]");
                    let role = match m.other.get("role").and_then(Value::as_str) {
                        Some("user") => Role::User,
                        Some("assistant") => Role::Assistant,
                        // A system turn inside the conversation (Claude Code's
                        // `mid-conversation-system` beta): kept in place in the chat model.
                        Some("system") => Role::System,
                        _ => {
                            return Err(TranslateError::invalid(
                                format!("{}.role", p()),
                                "must be user, assistant or system",
                            ))
                        }
                    };
                    let content = match m.content {
                        Some(wire::Many::Text(s)) => vec![Part::Text(s.into())],
                        Some(wire::Many::List(blocks)) => blocks
                            .into_iter()
                            .enumerate()
                            .map(|(j, b)| {
                                decode_block(
                                    b,
                                    &|| format!("{}.content[{j}]", p()),
                                    target,
                                    &mut req.dropped,
                                )
                            })
                            .collect::<Result<_, _>>()?,
                        _ => {
                            return Err(TranslateError::invalid(
                                format!("{}.content", p()),
                                "must be a string or an array of content blocks",
                            ))
                        }
                    };
                    if role == Role::System {
                        if let Some(j) = content.iter().position(|c| !matches!(c, Part::Text(_))) {
                            return Err(TranslateError::invalid(
                                format!("{}.content[{j}]", p()),
                                "a system turn can only hold text blocks",
                            ));
                        }
                    }
                    req.messages.push(Message { role, content });
                }
                continue;
            }
            wire::Top::Messages(wire::Many::Other(Value::Null))
            | wire::Top::Tools(wire::Many::Other(Value::Null)) => continue,
            wire::Top::Messages(_) => return Err(TranslateError::invalid(k, "must be an array")),
            wire::Top::Tools(wire::Many::List(tools)) => {
                for (i, t) in tools.into_iter().enumerate() {
                    let p = || format!("tools[{i}]");
                    match t.other.get("type").and_then(Value::as_str) {
                        None | Some("custom") => {}
                        Some(ty) if is_anthropic_client_tool(ty) => {
                            return Err(unsupported(
                                format!("{}.type", p()),
                                "Anthropic-defined client tools (bash, text editor, computer, \
                                 memory) have their schema built into Claude, so no other \
                                 backend can be told their arguments; declare them as custom tools",
                            ))
                        }
                        // Web search: run by the backend's own search where it has one and
                        // the route allows it, else left out or refused as the route says
                        // (decided per target by the gateway).
                        Some(ty) if ty.starts_with("web_search_") && req.web_search.is_none() => {
                            req.web_search = Some(web_search_tool(&t.other, &p(), ty));
                            continue;
                        }
                        // Other server tools (web fetch, code execution, tool search …) run at
                        // Anthropic. Refused rather than dropped: a fallback target on an
                        // Anthropic backend can still serve the request as it is.
                        Some(_) => {
                            return Err(unsupported(
                                format!("{}.type", p()),
                                "Anthropic server tools run on Anthropic's servers, so only \
                                 Anthropic backends can serve them",
                            ))
                        }
                    }
                    if t.other.get("cache_control").is_some_and(|c| !c.is_null()) {
                        req.dropped.push("cache_control");
                    }
                    let name = match t.name {
                        Some(Ok(n)) => n.into_owned(),
                        None | Some(Err(Value::Null)) => {
                            return Err(TranslateError::invalid(format!("{}.name", p()), "missing"))
                        }
                        Some(Err(_)) => {
                            return Err(TranslateError::invalid(
                                format!("{}.name", p()),
                                "must be a string",
                            ))
                        }
                    };
                    req.tools.push(Tool {
                        name,
                        description: t.description.and_then(Result::ok),
                        parameters: match t.input_schema {
                            Some(s) if s.starts_with('{') => Json::Raw(s),
                            _ => json!({"type": "object", "properties": {}}).into(),
                        },
                        strict: None,
                    });
                }
                continue;
            }
            wire::Top::Tools(_) => return Err(TranslateError::invalid(k, "must be an array")),
            wire::Top::Other(v) => v,
        };
        if v.is_null() {
            continue;
        }
        let v = &v;
        match k.as_str() {
            "model" => req.model = str_of(v, "model")?.to_string(),
            "max_tokens" => req.max_tokens = Some(u64_of(v, "max_tokens")?),
            "stream" => req.stream = v.as_bool().unwrap_or(false),
            "temperature" => req.temperature = Some(f64_of(v, &k)?),
            "top_p" => req.top_p = Some(f64_of(v, &k)?),
            "top_k" => req.top_k = Some(u64_of(v, &k)?),
            "stop_sequences" => {
                req.stop = arr_of(v, &k)?
                    .iter()
                    .enumerate()
                    .map(|(i, s)| str_of(s, &format!("stop_sequences[{i}]")).map(str::to_string))
                    .collect::<Result<_, _>>()?
            }
            "tool_choice" => {
                req.tool_choice = Some(match v.get("type").and_then(Value::as_str) {
                    Some("auto") => ToolChoice::Auto,
                    Some("any") => ToolChoice::Required,
                    Some("none") => ToolChoice::None,
                    Some("tool") => ToolChoice::Tool(
                        str_of(field(v, "name", "tool_choice")?, "tool_choice.name")?.to_string(),
                    ),
                    _ => {
                        return Err(TranslateError::invalid(
                            "tool_choice.type",
                            "must be auto, any, tool or none",
                        ))
                    }
                });
                disable_parallel = v.get("disable_parallel_tool_use").and_then(Value::as_bool);
            }
            "thinking" => match v.get("type").and_then(Value::as_str) {
                Some("enabled") => {
                    req.thinking = Some(Thinking::Budget(u64_of(
                        field(v, "budget_tokens", "thinking")?,
                        "thinking.budget_tokens",
                    )?))
                }
                Some("adaptive") => req.thinking = Some(Thinking::Adaptive),
                Some("disabled") => {}
                _ => {
                    return Err(TranslateError::invalid(
                        "thinking.type",
                        "must be enabled, adaptive or disabled",
                    ))
                }
            },
            "output_config" => decode_output_config(v, &mut req)?,
            // The beta name of `output_config.format`.
            "output_format" => req.response_format = decode_output_format(v, &k)?,
            "metadata" => {
                req.user = v.get("user_id").and_then(Value::as_str).map(str::to_string);
            }
            "mcp_servers" | "container" => {
                return Err(unsupported(
                    k.clone(),
                    "this Anthropic feature runs only on Anthropic backends",
                ))
            }
            // Everything else only tunes the provider (`context_management` edits the context
            // at Anthropic to save tokens, `service_tier`, `inference_geo`, a top-level
            // `cache_control` …) or is new and cannot be judged: top-level fields are
            // parameters, and the content lives in `system`, `messages` and `tools`, whose
            // unknown kinds are refused. Left out and named (docs/forward-compatibility.md).
            other => req.dropped.push(other),
        }
    }
    if let Some(d) = disable_parallel {
        req.parallel_tool_calls = Some(!d);
    }
    if req.model.is_empty() {
        return Err(TranslateError::invalid(
            "model",
            "you must provide a model parameter",
        ));
    }
    if req.messages.is_empty() {
        return Err(TranslateError::invalid(
            "messages",
            "you must provide at least one message",
        ));
    }
    Ok(req)
}

/// `output_config`: `effort` tunes how much Claude spends (kept for backends with a
/// reasoning setting), `format` constrains the answer (structured outputs); anything else in it
/// is a new tuning knob, left out and named.
fn decode_output_config(v: &Value, req: &mut chat::Request<'_>) -> Result<(), TranslateError> {
    let Value::Object(o) = v else {
        return Err(TranslateError::invalid(
            "output_config",
            "must be an object",
        ));
    };
    for (k, x) in o {
        if x.is_null() {
            continue;
        }
        match k.as_str() {
            "effort" => {
                req.effort = Some(
                    match str_of(x, "output_config.effort")? {
                        // OpenAI's scale tops out at `high` on every reasoning model.
                        "max" => "high",
                        e => e,
                    }
                    .to_string(),
                )
            }
            "format" => req.response_format = decode_output_format(x, "output_config.format")?,
            other => req.dropped.push(&format!("output_config.{other}")),
        }
    }
    Ok(())
}

/// Structured outputs (`{"type": "json_schema", "schema": …}`) as the chat model's JSON
/// schema format.
fn decode_output_format(v: &Value, p: &str) -> Result<Option<ResponseFormat>, TranslateError> {
    match v.get("type").and_then(Value::as_str) {
        // Not `strict`: OpenAI's strict mode asks more of a schema (every property required,
        // no additional properties) than Anthropic's structured outputs do.
        Some("json_schema") => Ok(Some(ResponseFormat::JsonSchema {
            name: "response".into(),
            schema: field(v, "schema", p)?.clone(),
            strict: None,
        })),
        _ => Err(TranslateError::invalid(
            format!("{p}.type"),
            "must be json_schema",
        )),
    }
}

/// Anthropic's web search server tool (`web_search_20250305` and later): `max_uses`, the
/// domain lists and the user's location.
fn web_search_tool(t: &Map<String, Value>, p: &str, ty: &str) -> chat::WebSearch {
    let strings = |k: &str| -> Vec<String> {
        t.get(k)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect()
    };
    chat::WebSearch {
        param: p.to_string(),
        kind: ty.to_string(),
        max_uses: t.get("max_uses").and_then(Value::as_u64),
        allowed_domains: strings("allowed_domains"),
        blocked_domains: strings("blocked_domains"),
        user_location: t
            .get("user_location")
            .and_then(chat::UserLocation::from_json),
    }
}

/// The Anthropic-defined tools Claude calls and the client runs (`bash_20250124`,
/// `text_editor_…`, `computer_…`, `memory_…`): their schemas are built into Claude.
fn is_anthropic_client_tool(ty: &str) -> bool {
    ["bash_", "text_editor_", "computer_", "memory_"]
        .iter()
        .any(|p| ty.starts_with(p))
}

/// One content block. `cache_control` on it has no equivalent elsewhere (OpenAI and Gemini
/// cache prefixes by themselves) and is noted in `dropped`.
fn decode_block<'a>(
    mut b: wire::Block<'a>,
    p: &dyn Fn() -> String,
    target: &'static str,
    dropped: &mut Dropped,
) -> Result<Part<'a>, TranslateError> {
    let t = b
        .ty()
        .ok_or_else(|| TranslateError::invalid(format!("{}.type", p()), "missing"))?;
    if b.get("cache_control").is_some_and(|c| !c.is_null()) {
        dropped.push("cache_control");
    }
    Ok(match t {
        "text" => match b.raw("text") {
            None => return Err(TranslateError::invalid(format!("{}.text", p()), "missing")),
            Some(Err(_)) => {
                return Err(TranslateError::invalid(
                    format!("{}.text", p()),
                    "must be a string",
                ))
            }
            Some(Ok(s)) => Part::Text(s.clone()),
        },
        "image" => {
            let s = b
                .get("source")
                .filter(|x| !x.is_null())
                .ok_or_else(|| TranslateError::invalid(format!("{}.source", p()), "missing"))?;
            Part::Image(match s.get("type").and_then(Value::as_str) {
                Some("base64") => Image::Base64 {
                    media_type: str_of(
                        field(s, "media_type", &format!("{}.source", p()))?,
                        &format!("{}.source.media_type", p()),
                    )?
                    .to_string(),
                    data: str_of(
                        field(s, "data", &format!("{}.source", p()))?,
                        &format!("{}.source.data", p()),
                    )?
                    .to_string(),
                },
                Some("url") => Image::Url(
                    str_of(
                        field(s, "url", &format!("{}.source", p()))?,
                        &format!("{}.source.url", p()),
                    )?
                    .to_string(),
                ),
                _ => {
                    return Err(TranslateError::Unsupported {
                        param: format!("{}.source.type", p()),
                        provider: target,
                        why: "only base64 and url image sources can be translated",
                    })
                }
            })
        }
        "thinking" => Part::Reasoning {
            text: b.str("thinking").cloned().unwrap_or_default(),
            signature: b.str("signature").cloned(),
            redacted: None,
        },
        "redacted_thinking" => Part::Reasoning {
            text: Str::default(),
            signature: None,
            redacted: Some(b.str("data").cloned().unwrap_or_default()),
        },
        "tool_use" => Part::ToolCall(ToolCall {
            id: str_at(block_field(&b, "id", p)?, || format!("{}.id", p()))?.to_string(),
            name: str_at(block_field(&b, "name", p)?, || format!("{}.name", p()))?.to_string(),
            // Taken, not copied: the block is not read again.
            arguments: match b.other.remove("input") {
                Some(Value::Object(m)) => m,
                None | Some(Value::Null) => Map::new(),
                Some(_) => {
                    return Err(TranslateError::invalid(
                        format!("{}.input", p()),
                        "must be an object",
                    ))
                }
            },
        }),
        "tool_result" => Part::ToolResult {
            id: str_at(block_field(&b, "tool_use_id", p)?, || {
                format!("{}.tool_use_id", p())
            })?
            .to_string(),
            is_error: b.get("is_error").and_then(Value::as_bool).unwrap_or(false),
            content: match b.content {
                None | Some(wire::Many::Other(Value::Null)) => Vec::new(),
                Some(wire::Many::Text(s)) => vec![Part::Text(s.into())],
                Some(wire::Many::List(items)) => items
                    .into_iter()
                    .enumerate()
                    .map(|(k, c)| {
                        decode_block(c, &|| format!("{}.content[{k}]", p()), target, dropped)
                    })
                    .collect::<Result<_, _>>()?,
                Some(wire::Many::Other(_)) => {
                    return Err(TranslateError::invalid(
                        format!("{}.content", p()),
                        "must be a string or an array",
                    ))
                }
            },
        },
        other => {
            return Err(TranslateError::Unsupported {
                param: format!("{}.type", p()),
                provider: target,
                why: match other {
                    "document" => "document blocks cannot be translated",
                    "search_result" => "search result blocks cannot be translated",
                    _ => "this content block type runs only on Anthropic backends",
                },
            })
        }
    })
}

/// `access::str_of` with a path made only for an error.
fn str_at(v: &Value, p: impl FnOnce() -> String) -> Result<&str, TranslateError> {
    v.as_str()
        .ok_or_else(|| TranslateError::invalid(p(), "must be a string"))
}

/// A field of a block that must be there, as `access::field` reads a `Value`.
fn block_field<'b>(
    b: &'b wire::Block<'_>,
    name: &str,
    p: &dyn Fn() -> String,
) -> Result<&'b Value, TranslateError> {
    b.get(name)
        .filter(|x| !x.is_null())
        .ok_or_else(|| TranslateError::invalid(format!("{}.{name}", p()), "missing"))
}

/// Encodes a Messages request for an Anthropic backend serving `model`. Written straight from
/// the chat model (a `json::Out` tree): texts and schemas borrowed from the caller's body are
/// copied as they are.
pub fn encode_request(req: &chat::Request<'_>, model: &str) -> Result<Vec<u8>, TranslateError> {
    if req.response_format.is_some() {
        return Err(TranslateError::Unsupported {
            param: "response_format".into(),
            provider: "anthropic",
            why: "the Messages API has no JSON mode; ask for JSON in the prompt or use a tool",
        });
    }
    let mut out = Vec::with_capacity(16);
    out.push(("model", Out::Text(model)));
    let thinking = req.claude_thinking_budget();
    // Without a limit from the caller, the answer still gets its usual room after thinking
    // (Anthropic needs the budget under max_tokens).
    out.push((
        "max_tokens",
        Out::U64(
            req.max_tokens
                .unwrap_or(DEFAULT_MAX_TOKENS.saturating_add(thinking.unwrap_or(0))),
        ),
    ));
    // System turns inside the conversation join the system prompt: the Messages API takes
    // them in place only behind a beta, which translated requests do not ask for.
    let system: Vec<Out> = req
        .folded_system()
        .filter_map(|p| match p {
            Part::Text(t) if !t.is_empty() => Some(text_block(t)),
            _ => None,
        })
        .collect();
    if !system.is_empty() {
        out.push(("system", Out::Array(system)));
    }
    // The Messages API wants user and assistant turns to alternate: neighbours merge.
    let mut messages = Turns::with_capacity(req.messages.len());
    for m in &req.messages {
        messages.push(m.role, m.content.iter().filter_map(encode_block).collect());
    }
    out.push(("messages", messages.into_out("assistant", "content")));
    if !req.tools.is_empty() || req.web_search.is_some() {
        let mut tools: Vec<Out> = Vec::with_capacity(req.tools.len() + 1);
        for t in &req.tools {
            let mut o = Vec::with_capacity(3);
            if let Some(d) = &t.description {
                o.push(("description", Out::Str(d)));
            }
            o.push(("input_schema", Out::Json(&t.parameters)));
            o.push(("name", Out::Text(&t.name)));
            tools.push(Out::Object(o));
        }
        if let Some(w) = &req.web_search {
            tools.push(Out::Owned(web_search_json(w)));
        }
        out.push(("tools", Out::Array(tools)));
        let mut choice = match &req.tool_choice {
            None | Some(ToolChoice::Auto) => json!({"type": "auto"}),
            Some(ToolChoice::None) => json!({"type": "none"}),
            Some(ToolChoice::Required) => json!({"type": "any"}),
            Some(ToolChoice::Tool(n)) => json!({"type": "tool", "name": n}),
        };
        if req.parallel_tool_calls == Some(false) {
            if let Some(o) = choice.as_object_mut() {
                o.insert("disable_parallel_tool_use".into(), true.into());
            }
        }
        if req.tool_choice.is_some() || req.parallel_tool_calls == Some(false) {
            out.push(("tool_choice", Out::Owned(choice)));
        }
    }
    if let Some(t) = req.temperature {
        // OpenAI's range is 0–2, Anthropic's 0–1: anything above 1 means "as random as
        // possible", which 1 is on the Anthropic side.
        out.push(("temperature", Out::f64(t.clamp(0.0, 1.0))));
    }
    if let Some(t) = req.top_p {
        out.push(("top_p", Out::f64(t)));
    }
    if let Some(k) = req.top_k {
        out.push(("top_k", Out::U64(k)));
    }
    if !req.stop.is_empty() {
        out.push((
            "stop_sequences",
            Out::Array(req.stop.iter().map(|s| Out::Text(s)).collect()),
        ));
    }
    if let Some(b) = thinking {
        out.push((
            "thinking",
            Out::obj([
                ("budget_tokens", Out::U64(b)),
                ("type", Out::Text("enabled")),
            ]),
        ));
    }
    // `effort` only sizes that budget: `output_config.effort` is refused by the Claude models
    // without it, and only Anthropic callers (passed through, never translated) set it.
    if let Some(u) = &req.user {
        out.push(("metadata", Out::obj([("user_id", Out::Text(u))])));
    }
    if req.stream {
        out.push(("stream", Out::Bool(true)));
    }
    out.sort_by_key(|(k, _)| *k);
    Ok(Out::Object(out).to_vec(req.size_hint()))
}

/// Anthropic's server-side web search tool for the caller's search. Anthropic refuses
/// `allowed_domains` beside `blocked_domains`, as the callers' own APIs do, so both are sent
/// as given and the provider's answer stands.
fn web_search_json(w: &chat::WebSearch) -> Value {
    let mut o = Map::new();
    o.insert("type".into(), "web_search_20250305".into());
    o.insert("name".into(), "web_search".into());
    if let Some(n) = w.max_uses {
        o.insert("max_uses".into(), n.into());
    }
    if !w.allowed_domains.is_empty() {
        o.insert("allowed_domains".into(), w.allowed_domains.clone().into());
    }
    if !w.blocked_domains.is_empty() {
        o.insert("blocked_domains".into(), w.blocked_domains.clone().into());
    }
    if let Some(l) = &w.user_location {
        o.insert("user_location".into(), l.to_json());
    }
    Value::Object(o)
}

/// `{"text": t, "type": "text"}`.
fn text_block<'r, 'a>(t: &'r Str<'a>) -> Out<'r, 'a> {
    Out::obj([("text", Out::Str(t)), ("type", Out::Text("text"))])
}

/// One content block; `None` for what the Messages API would refuse and can safely go:
/// empty text, and reasoning without a signature (it came from another provider, and
/// Anthropic only accepts its own signed thinking back).
fn encode_block<'r, 'a>(p: &'r Part<'a>) -> Option<Out<'r, 'a>> {
    Some(match p {
        Part::Text(t) if t.is_empty() => return None,
        Part::Text(t) => text_block(t),
        Part::Image(Image::Url(u)) => Out::obj([
            (
                "source",
                Out::obj([("type", Out::Text("url")), ("url", Out::Text(u))]),
            ),
            ("type", Out::Text("image")),
        ]),
        Part::Image(Image::Base64 { media_type, data }) => Out::obj([
            (
                "source",
                Out::obj([
                    ("data", Out::Text(data)),
                    ("media_type", Out::Text(media_type)),
                    ("type", Out::Text("base64")),
                ]),
            ),
            ("type", Out::Text("image")),
        ]),
        Part::Reasoning {
            redacted: Some(d), ..
        } => Out::obj([
            ("data", Out::Str(d)),
            ("type", Out::Text("redacted_thinking")),
        ]),
        Part::Reasoning {
            text,
            signature: Some(s),
            ..
        } => Out::obj([
            ("signature", Out::Str(s)),
            ("thinking", Out::Str(text)),
            ("type", Out::Text("thinking")),
        ]),
        Part::Reasoning { .. } => return None,
        Part::ToolCall(c) => Out::obj([
            ("id", Out::Text(&c.id)),
            ("input", Out::Args(&c.arguments)),
            ("name", Out::Text(&c.name)),
            ("type", Out::Text("tool_use")),
        ]),
        Part::ToolResult {
            id,
            content,
            is_error,
        } => {
            let content: Vec<Out> = content.iter().filter_map(encode_block).collect();
            let mut o = Vec::with_capacity(4);
            o.push(("content", Out::Array(content)));
            if *is_error {
                o.push(("is_error", Out::Bool(true)));
            }
            o.push(("tool_use_id", Out::Text(id)));
            o.push(("type", Out::Text("tool_result")));
            Out::Object(o)
        }
    })
}

// === responses ===

/// Decodes a complete Messages response.
pub fn decode_response(body: &[u8]) -> Result<chat::Response, TranslateError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| TranslateError::invalid("", format!("upstream response is not JSON: {e}")))?;
    let mut content = Vec::new();
    for b in v
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => content.push(Part::Text(
                b.get("text")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
                    .into(),
            )),
            Some("thinking") => content.push(Part::Reasoning {
                text: b
                    .get("thinking")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
                    .into(),
                signature: b
                    .get("signature")
                    .and_then(Value::as_str)
                    .map(|s| s.to_string().into()),
                redacted: None,
            }),
            Some("redacted_thinking") => content.push(Part::Reasoning {
                text: Str::default(),
                signature: None,
                redacted: b
                    .get("data")
                    .and_then(Value::as_str)
                    .map(|s| s.to_string().into()),
            }),
            Some("tool_use") => content.push(Part::ToolCall(ToolCall {
                id: b
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                name: b
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                arguments: b
                    .get("input")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default(),
            })),
            // Server-tool blocks only exist when the request used server tools, which a
            // translated request cannot.
            _ => {}
        }
    }
    let usage = v
        .get("usage")
        .and_then(|u| serde_json::from_value::<WireUsage>(u.clone()).ok())
        .map(WireUsage::to_usage);
    Ok(chat::Response {
        id: v
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        model: v
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        content,
        finish_reason: v
            .get("stop_reason")
            .and_then(Value::as_str)
            .map(finish_from_anthropic),
        stop_sequence: v
            .get("stop_sequence")
            .and_then(Value::as_str)
            .map(str::to_string),
        usage,
    })
}

/// Encodes a Messages response for an Anthropic caller.
pub fn encode_response(resp: &chat::Response) -> Vec<u8> {
    let content: Vec<Out> = resp
        .content
        .iter()
        .filter_map(|p| match p {
            // Unsigned reasoning (from an OpenAI-dialect backend) is still shown to the
            // caller; an empty signature tells it that it cannot be sent back verified.
            Part::Reasoning {
                text,
                signature: None,
                redacted: None,
            } => Some(Out::obj([
                ("signature", Out::Text("")),
                ("thinking", Out::Str(text)),
                ("type", Out::Text("thinking")),
            ])),
            other => encode_block(other),
        })
        .collect();
    let usage = serde_json::to_value(WireUsage::from_usage(&resp.usage.unwrap_or_default()))
        .unwrap_or_default();
    let body = Out::obj([
        ("content", Out::Array(content)),
        ("id", Out::String(message_id(&resp.id))),
        ("model", Out::Text(&resp.model)),
        ("role", Out::Text("assistant")),
        (
            "stop_reason",
            Out::Text(
                resp.finish_reason
                    .map(finish_to_anthropic)
                    .unwrap_or("end_turn"),
            ),
        ),
        (
            "stop_sequence",
            resp.stop_sequence.as_deref().map_or(Out::Null, Out::Text),
        ),
        ("type", Out::Text("message")),
        ("usage", Out::Owned(usage)),
    ]);
    body.to_vec(256)
}

pub(super) fn message_id(id: &str) -> String {
    if id.starts_with("msg_") {
        id.to_string()
    } else if id.is_empty() {
        "msg_switchyard".to_string()
    } else {
        format!("msg_{id}")
    }
}

/// Anthropic's `stop_reason` → the internal one.
pub(super) fn finish_from_anthropic(s: &str) -> FinishReason {
    match s {
        "stop_sequence" => FinishReason::StopSequence,
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        "pause_turn" => FinishReason::Pause,
        _ => FinishReason::Stop,
    }
}

/// The internal finish reason → Anthropic's `stop_reason`.
pub(super) fn finish_to_anthropic(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Stop => "end_turn",
        FinishReason::StopSequence => "stop_sequence",
        FinishReason::Length => "max_tokens",
        FinishReason::ToolCalls => "tool_use",
        FinishReason::ContentFilter => "refusal",
        FinishReason::Pause => "pause_turn",
    }
}

// === helpers ===

use crate::chat::access::{arr_of, f64_of, field, str_of, u64_of};
