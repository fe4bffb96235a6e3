//! OpenAI Chat Completions ⇄ the internal chat model, used only when the other side of the
//! gateway speaks another format (OpenAI → OpenAI stays a byte-level passthrough).
//!
//! Requests are parsed in one pass into borrowed pieces (`openai::wire`: texts and schemas stay
//! in the caller's body) and read so that an error can name the exact parameter path
//! (`messages[2].content[0].type`) the way OpenAI's own errors do. They are written from
//! serde-derived structs, copying the texts and schemas decoders borrowed from their caller's
//! body (see [`crate::json`]).

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::{json, value::RawValue, Map, Value};

use super::wire::{self, FunctionCall};
use crate::chat::{
    self, arguments_object, FinishReason, Image, Json, Message, Part, ResponseFormat, Role, Str,
    StreamEvent, Tool, ToolCall, ToolChoice, TranslateError,
};
use crate::json::{write_str, write_u64, First, Joined, Obj, Out, Present};
use crate::Usage;

/// Differences between OpenAI itself and servers that speak its dialect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// api.openai.com: `max_completion_tokens` (its reasoning models refuse `max_tokens`).
    OpenAi,
    /// vLLM, Ollama, DeepSeek, Mistral …: many only know `max_tokens`.
    Compatible,
}

impl Dialect {
    /// The chat field this dialect takes the output cap in (the translating encoder below
    /// writes the same one).
    pub fn output_cap_field(self) -> &'static str {
        match self {
            Dialect::OpenAi => "max_completion_tokens",
            Dialect::Compatible => "max_tokens",
        }
    }
}

// === requests ===

/// Decodes an OpenAI chat request for translation to `target` (a provider name, for errors).
/// Parameters the internal model cannot carry and that change the answer are refused here.
/// Texts and tool schemas borrow from `body` (parsed in one pass, see `openai::wire`).
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
    let unsupported = |param: &str, why: &'static str| TranslateError::Unsupported {
        param: param.to_string(),
        provider: target,
        why,
    };
    let mut req = chat::Request::default();
    let mut safety_identifier = None;
    for (k, top) in obj {
        let v = match top {
            wire::Top::Messages(wire::Many::List(messages)) => {
                decode_messages(messages, &mut req, target)?;
                continue;
            }
            wire::Top::Tools(wire::Many::List(tools)) => {
                decode_tools(tools, &mut req, target)?;
                continue;
            }
            wire::Top::Messages(wire::Many::Other(Value::Null))
            | wire::Top::Tools(wire::Many::Other(Value::Null)) => continue,
            wire::Top::Messages(_) | wire::Top::Tools(_) => {
                return Err(TranslateError::invalid(k, "must be an array"))
            }
            wire::Top::Other(v) => v,
        };
        if v.is_null() {
            continue;
        }
        let (k, v) = (&k, &v);
        match k.as_str() {
            "model" => req.model = str_of(v, "model")?.to_string(),
            "stream" => req.stream = v.as_bool().unwrap_or(false),
            "max_tokens" | "max_completion_tokens" => req.max_tokens = Some(u64_of(v, k)?),
            "temperature" => req.temperature = Some(f64_of(v, k)?),
            "top_p" => req.top_p = Some(f64_of(v, k)?),
            "stop" => {
                req.stop = match v {
                    Value::String(s) => vec![s.clone()],
                    Value::Array(a) => a
                        .iter()
                        .enumerate()
                        .map(|(i, s)| str_of(s, &format!("stop[{i}]")).map(str::to_string))
                        .collect::<Result<_, _>>()?,
                    _ => {
                        return Err(TranslateError::invalid(
                            "stop",
                            "must be a string or an array of strings",
                        ))
                    }
                }
            }
            "tool_choice" => {
                req.tool_choice = Some(match v {
                    Value::String(s) => match s.as_str() {
                        "auto" => ToolChoice::Auto,
                        "none" => ToolChoice::None,
                        "required" => ToolChoice::Required,
                        _ => {
                            return Err(TranslateError::invalid(
                                "tool_choice",
                                "must be auto, none, required or a function",
                            ))
                        }
                    },
                    Value::Object(o) => {
                        let name = o
                            .get("function")
                            .and_then(|f| f.get("name"))
                            .and_then(Value::as_str)
                            .ok_or_else(|| {
                                TranslateError::invalid("tool_choice.function.name", "missing")
                            })?;
                        ToolChoice::Tool(name.to_string())
                    }
                    _ => {
                        return Err(TranslateError::invalid(
                            "tool_choice",
                            "must be a string or an object",
                        ))
                    }
                })
            }
            "parallel_tool_calls" => req.parallel_tool_calls = v.as_bool(),
            // Not OpenAI's, but vLLM's and others' in its dialect; Anthropic, Gemini and
            // Bedrock take it too.
            "top_k" => req.top_k = Some(u64_of(v, k)?),
            "response_format" => {
                req.response_format = match v.get("type").and_then(Value::as_str) {
                    Some("text") => None,
                    Some("json_object") => Some(ResponseFormat::JsonObject),
                    Some("json_schema") => {
                        let s = v.get("json_schema").ok_or_else(|| {
                            TranslateError::invalid("response_format.json_schema", "missing")
                        })?;
                        Some(ResponseFormat::JsonSchema {
                            name: s
                                .get("name")
                                .and_then(Value::as_str)
                                .unwrap_or("response")
                                .to_string(),
                            schema: s.get("schema").cloned().unwrap_or_else(|| json!({})),
                            strict: s.get("strict").and_then(Value::as_bool),
                        })
                    }
                    _ => {
                        return Err(TranslateError::invalid(
                            "response_format.type",
                            "must be text, json_object or json_schema",
                        ))
                    }
                }
            }
            "user" => req.user = v.as_str().map(str::to_string),
            "safety_identifier" => safety_identifier = v.as_str().map(str::to_string),
            "reasoning_effort" => req.reasoning_effort = v.as_str().map(str::to_string),
            "n" if v.as_u64().is_some_and(|n| n > 1) => {
                return Err(unsupported(
                    "n",
                    "only one choice per request can be produced",
                ))
            }
            "logprobs" if v.as_bool() == Some(true) => {
                return Err(unsupported(
                    "logprobs",
                    "the backend does not return log probabilities",
                ))
            }
            "top_logprobs" => {
                return Err(unsupported(
                    "top_logprobs",
                    "the backend does not return log probabilities",
                ))
            }
            "logit_bias" if v.as_object().is_some_and(|m| !m.is_empty()) => {
                return Err(unsupported("logit_bias", "the backend cannot bias tokens"))
            }
            "audio" => return Err(unsupported("audio", "audio output cannot be translated")),
            "modalities" if v.as_array().is_some_and(|a| a.iter().any(|m| m != "text")) => {
                return Err(unsupported(
                    "modalities",
                    "only text output can be translated",
                ))
            }
            "prediction" => {
                return Err(unsupported(
                    "prediction",
                    "predicted outputs cannot be translated",
                ))
            }
            // Run by the backend's own search where it has one and the route allows it, else
            // left out or refused as the route says (decided per target by the gateway);
            // `search_context_size` only tunes OpenAI's search.
            "web_search_options" => {
                req.web_search = Some(chat::WebSearch {
                    param: k.to_string(),
                    kind: k.to_string(),
                    user_location: v
                        .pointer("/user_location/approximate")
                        .and_then(chat::UserLocation::from_json),
                    ..Default::default()
                })
            }
            "functions" | "function_call" => {
                return Err(unsupported(
                    k,
                    "the deprecated functions API cannot be translated; use tools",
                ))
            }
            // Asked for in the upstream request whatever the caller sent.
            "stream_options" => {}
            // Settings that ask for nothing (one choice, no log probabilities, no bias, text).
            "n" | "logprobs" | "logit_bias" | "modalities" => {}
            // Everything else only tunes the provider, never the content of the answer
            // (`seed`, penalties, `store`, `metadata`, `service_tier`, `prompt_cache_key`,
            // `verbosity` …), or is new and cannot be judged: top-level fields are parameters,
            // and the content lives in `messages` and `tools`, whose unknown kinds are
            // refused. Left out and named (docs/forward-compatibility.md).
            other => req.dropped.push(other),
        }
    }
    if req.user.is_none() {
        req.user = safety_identifier;
    }
    if req.model.is_empty() {
        return Err(TranslateError::invalid(
            "model",
            "you must provide a model parameter",
        ));
    }
    if req.messages.is_empty() && req.system.is_empty() {
        return Err(TranslateError::invalid(
            "messages",
            "you must provide at least one message",
        ));
    }
    Ok(req)
}

fn decode_tools<'a>(
    tools: Vec<wire::ToolDef<'a>>,
    req: &mut chat::Request<'a>,
    target: &'static str,
) -> Result<(), TranslateError> {
    for (i, t) in tools.into_iter().enumerate() {
        let p = || format!("tools[{i}]");
        match t.other.get("type").and_then(Value::as_str) {
            Some("function") | None => {}
            Some(_) => {
                return Err(TranslateError::Unsupported {
                    param: format!("{}.type", p()),
                    provider: target,
                    why: "only function tools can be translated",
                })
            }
        }
        let f = match t.function {
            Some(Ok(f)) => f,
            // Not an object: it has no name.
            Some(Err(_)) => {
                return Err(TranslateError::invalid(
                    format!("{}.function.name", p()),
                    "missing",
                ))
            }
            None => {
                return Err(TranslateError::invalid(
                    format!("{}.function", p()),
                    "missing",
                ))
            }
        };
        let name = str_at(
            field_of(&f.other, "name", || format!("{}.function", p()))?,
            || format!("{}.function.name", p()),
        )?
        .to_string();
        req.tools.push(Tool {
            name,
            description: f.description.and_then(Result::ok),
            parameters: match f.parameters {
                Some(s) if s.starts_with('{') => Json::Raw(s),
                _ => json!({"type": "object", "properties": {}}).into(),
            },
            strict: f.other.get("strict").and_then(Value::as_bool),
        });
    }
    Ok(())
}

/// `access::field` on a parsed object's other fields; the path `p` is only made for an error.
fn field_of<'v>(
    o: &'v Map<String, Value>,
    name: &str,
    p: impl FnOnce() -> String,
) -> Result<&'v Value, TranslateError> {
    o.get(name)
        .filter(|x| !x.is_null())
        .ok_or_else(|| TranslateError::invalid(format!("{}.{name}", p()), "missing"))
}

/// A string field parsed by `wire::SmallStr`, read as `str_of(field(..))` reads a `Value`.
fn small_str<'v>(
    f: &'v Option<Result<std::borrow::Cow<'_, str>, Value>>,
    name: &str,
    p: impl FnOnce() -> String,
) -> Result<&'v str, TranslateError> {
    match f {
        Some(Ok(s)) => Ok(s),
        None | Some(Err(Value::Null)) => Err(TranslateError::invalid(
            format!("{}.{name}", p()),
            "missing",
        )),
        Some(Err(_)) => Err(TranslateError::invalid(
            format!("{}.{name}", p()),
            "must be a string",
        )),
    }
}

/// `access::str_of` with a path made only for an error.
fn str_at(v: &Value, p: impl FnOnce() -> String) -> Result<&str, TranslateError> {
    v.as_str()
        .ok_or_else(|| TranslateError::invalid(p(), "must be a string"))
}

fn decode_messages<'a>(
    messages: Vec<wire::Msg<'a>>,
    req: &mut chat::Request<'a>,
    target: &'static str,
) -> Result<(), TranslateError> {
    for (i, m) in messages.into_iter().enumerate() {
        let p = || format!("messages[{i}]");
        let pc = || format!("messages[{i}].content");
        let role = small_str(&m.role, "role", p)?;
        let content = m
            .content
            .filter(|c| !matches!(c, wire::Content::Other(Value::Null)));
        match role {
            "system" | "developer" => {
                if let Some(c) = content {
                    let parts = decode_content(c, &pc, target)?;
                    push_system(req, parts);
                }
            }
            "user" => {
                let parts = match content {
                    Some(c) => decode_content(c, &pc, target)?,
                    None => return Err(TranslateError::invalid(pc(), "missing")),
                };
                push(req, Role::User, parts);
            }
            "assistant" => {
                let mut parts = Vec::new();
                if let Some(Ok(r)) = m.reasoning_content {
                    if !r.is_empty() {
                        parts.push(Part::Reasoning {
                            text: r,
                            signature: None,
                            redacted: None,
                        });
                    }
                }
                if let Some(c) = content {
                    parts.extend(decode_content(c, &pc, target)?);
                }
                match m.tool_calls {
                    None | Some(wire::Many::Other(Value::Null)) => {}
                    Some(wire::Many::List(calls)) => {
                        for (j, c) in calls.into_iter().enumerate() {
                            let cp = || format!("{}.tool_calls[{j}]", p());
                            let f = match c.function {
                                None | Some(Err(Value::Null)) => {
                                    return Err(TranslateError::invalid(
                                        format!("{}.function", cp()),
                                        "missing",
                                    ))
                                }
                                // Not an object: it has no name.
                                Some(Err(_)) => FunctionCall::default(),
                                Some(Ok(f)) => f,
                            };
                            let args = match &f.arguments {
                                Some(Ok(a)) => a,
                                _ => "",
                            };
                            parts.push(Part::ToolCall(ToolCall {
                                id: match c.id {
                                    Some(Ok(id)) => id.into_owned(),
                                    _ => String::new(),
                                },
                                name: small_str(&f.name, "name", || format!("{}.function", cp()))?
                                    .to_string(),
                                arguments: arguments_object(args),
                            }));
                        }
                    }
                    Some(_) => {
                        return Err(TranslateError::invalid(
                            format!("{}.tool_calls", p()),
                            "must be an array",
                        ))
                    }
                }
                if m.other.get("function_call").is_some_and(|f| !f.is_null()) {
                    return Err(TranslateError::Unsupported {
                        param: format!("{}.function_call", p()),
                        provider: target,
                        why: "the deprecated functions API cannot be translated; use tool_calls",
                    });
                }
                push(req, Role::Assistant, parts);
            }
            "tool" => {
                let id = small_str(&m.tool_call_id, "tool_call_id", p)?;
                let content = match content {
                    Some(c) => decode_content(c, &pc, target)?,
                    None => Vec::new(),
                };
                push(
                    req,
                    Role::User,
                    vec![Part::ToolResult {
                        id: id.to_string(),
                        content,
                        is_error: false,
                    }],
                );
            }
            "function" => {
                return Err(TranslateError::Unsupported {
                    param: format!("{}.role", p()),
                    provider: target,
                    why: "the deprecated function role cannot be translated; use tool messages",
                })
            }
            other => {
                return Err(TranslateError::invalid(
                    format!("{}.role", p()),
                    format!("unknown role '{other}'"),
                ))
            }
        }
    }
    Ok(())
}

/// System (or developer) instructions: the system prompt while the conversation has not
/// begun, a [`Role::System`] turn in place after that.
pub(crate) fn push_system<'a>(req: &mut chat::Request<'a>, parts: Vec<Part<'a>>) {
    if req.messages.is_empty() {
        req.system.extend(parts);
    } else {
        push(req, Role::System, parts);
    }
}

/// Appends to the last message when it has the same role (consecutive tool messages become
/// one user turn holding every result, as the Messages API requires).
pub(crate) fn push<'a>(req: &mut chat::Request<'a>, role: Role, parts: Vec<Part<'a>>) {
    match req.messages.last_mut() {
        Some(last) if last.role == role => last.content.extend(parts),
        _ => req.messages.push(Message {
            role,
            content: parts,
        }),
    }
}

/// A message's content; `p` makes its path, for errors only.
fn decode_content<'a>(
    c: wire::Content<'a>,
    p: &dyn Fn() -> String,
    target: &'static str,
) -> Result<Vec<Part<'a>>, TranslateError> {
    match c {
        wire::Content::Text(s) => Ok(vec![Part::Text(s)]),
        wire::Content::Parts(parts) => {
            let mut out = Vec::with_capacity(parts.len());
            for (j, part) in parts.into_iter().enumerate() {
                let pp = || format!("{}[{j}]", p());
                match part.other.get("type").and_then(Value::as_str) {
                    Some("text") => out.push(Part::Text(match part.text {
                        Some(Ok(t)) => t,
                        None | Some(Err(Value::Null)) => {
                            return Err(TranslateError::invalid(
                                format!("{}.text", pp()),
                                "missing",
                            ))
                        }
                        Some(Err(_)) => {
                            return Err(TranslateError::invalid(
                                format!("{}.text", pp()),
                                "must be a string",
                            ))
                        }
                    })),
                    Some("refusal") => out.push(Part::Text(
                        part.other
                            .get("refusal")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string()
                            .into(),
                    )),
                    Some("image_url") => {
                        let url = part
                            .other
                            .get("image_url")
                            .and_then(|u| u.get("url").or(Some(u)))
                            .and_then(Value::as_str)
                            .ok_or_else(|| {
                                TranslateError::invalid(
                                    format!("{}.image_url.url", pp()),
                                    "missing",
                                )
                            })?;
                        out.push(Part::Image(image_from_url(url)));
                    }
                    Some(other) => {
                        return Err(TranslateError::Unsupported {
                            param: format!("{}.type", pp()),
                            provider: target,
                            why: match other {
                                "input_audio" => "audio input cannot be translated",
                                "file" => "file inputs cannot be translated",
                                _ => "unknown content part type",
                            },
                        })
                    }
                    None => {
                        return Err(TranslateError::invalid(format!("{}.type", pp()), "missing"))
                    }
                }
            }
            Ok(out)
        }
        wire::Content::Other(_) => Err(TranslateError::invalid(
            p(),
            "must be a string or an array of content parts",
        )),
    }
}

/// `data:image/png;base64,AAAA` becomes inline bytes; anything else is a URL to fetch.
pub(crate) fn image_from_url(url: &str) -> Image {
    if let Some(rest) = url.strip_prefix("data:") {
        if let Some((meta, data)) = rest.split_once(',') {
            if let Some(media_type) = meta.strip_suffix(";base64") {
                return Image::Base64 {
                    media_type: media_type.to_string(),
                    data: data.to_string(),
                };
            }
        }
    }
    Image::Url(url.to_string())
}

/// Encodes a request for an OpenAI(-compatible) backend serving `model`. Written straight from
/// the chat model (a `json::Out` tree: texts and schemas borrowed from the caller's body are
/// copied as they are, see [`crate::json`]), with keys in the sorted order a `Value` map would
/// give them.
pub fn encode_request(
    req: &chat::Request<'_>,
    model: &str,
    dialect: Dialect,
) -> Result<Vec<u8>, TranslateError> {
    let provider = match dialect {
        Dialect::OpenAi => "openai",
        Dialect::Compatible => "openai-compatible",
    };
    let mut messages = Vec::with_capacity(req.messages.len() + 1);
    // OpenAI takes system messages anywhere, so system turns inside the conversation stay in
    // place. Servers in its dialect get one leading system message holding them all: some of
    // their chat templates refuse a system message anywhere else.
    let in_place = dialect == Dialect::OpenAi;
    let system = if in_place {
        system_texts(req.system.iter())
    } else {
        system_texts(req.folded_system())
    };
    if !system.is_empty() {
        // Its pieces kept apart by a blank line rather than run together.
        messages.push(system_message(system));
    }
    for (i, m) in req.messages.iter().enumerate() {
        match m.role {
            Role::System => {
                let texts = system_texts(m.content.iter());
                if in_place && !texts.is_empty() {
                    messages.push(system_message(texts));
                }
            }
            Role::User => {
                let mut rest = Vec::new();
                for (j, part) in m.content.iter().enumerate() {
                    match part {
                        Part::ToolResult {
                            id,
                            content,
                            is_error,
                        } => {
                            let mut texts = Vec::with_capacity(content.len());
                            for p in content {
                                match p {
                                    Part::Text(t) => texts.push(t),
                                    _ => {
                                        return Err(TranslateError::Unsupported {
                                            param: format!("messages[{i}].content[{j}].content"),
                                            provider,
                                            why: "tool results can only carry text",
                                        })
                                    }
                                }
                            }
                            // OpenAI has no error flag on tool results: say it in words so the
                            // model still knows the tool failed.
                            let prefix =
                                if *is_error && !chat::joined_text(content).starts_with("Error") {
                                    "Error: "
                                } else {
                                    ""
                                };
                            messages.push(Out::obj([
                                ("content", Out::Joined(Joined::new(texts, "", prefix))),
                                ("role", Out::Text("tool")),
                                ("tool_call_id", Out::Text(id)),
                            ]));
                        }
                        other => rest.push(other),
                    }
                }
                if !rest.is_empty() {
                    let content = if let [Part::Text(t)] = rest[..] {
                        Out::Str(t)
                    } else {
                        let mut arr = Vec::with_capacity(rest.len());
                        for (j, p) in rest.into_iter().enumerate() {
                            arr.push(match p {
                                Part::Text(t) => {
                                    Out::obj([("text", Out::Str(t)), ("type", Out::Text("text"))])
                                }
                                Part::Image(img) => Out::obj([
                                    (
                                        "image_url",
                                        Out::obj([("url", Out::String(image_url(img)))]),
                                    ),
                                    ("type", Out::Text("image_url")),
                                ]),
                                // Only assistant turns carry these; a caller sending them in a
                                // user turn has nothing the model could read.
                                Part::Reasoning { .. }
                                | Part::ToolCall(_)
                                | Part::ToolResult { .. } => {
                                    return Err(TranslateError::invalid(
                                        format!("messages[{i}].content[{j}]"),
                                        "this content block is only valid in assistant messages",
                                    ))
                                }
                            });
                        }
                        Out::Array(arr)
                    };
                    messages.push(Out::obj([
                        ("content", content),
                        ("role", Out::Text("user")),
                    ]));
                }
            }
            Role::Assistant => {
                let mut text = Vec::new();
                let mut calls = Vec::new();
                for part in &m.content {
                    match part {
                        Part::Text(t) => text.push(t),
                        Part::ToolCall(c) => calls.push(Out::obj([
                            (
                                "function",
                                Out::obj([
                                    (
                                        "arguments",
                                        Out::String(crate::json::map_text(&c.arguments)),
                                    ),
                                    ("name", Out::Text(&c.name)),
                                ]),
                            ),
                            ("id", Out::Text(&c.id)),
                            ("type", Out::Text("function")),
                        ])),
                        // The model's own earlier reasoning: OpenAI chat takes none back, and
                        // leaving it out does not change what the model is asked.
                        Part::Reasoning { .. } => {}
                        Part::Image(_) | Part::ToolResult { .. } => {
                            return Err(TranslateError::invalid(
                                format!("messages[{i}].content"),
                                "assistant messages can only hold text, thinking and tool calls",
                            ))
                        }
                    }
                }
                let empty = text.iter().all(|t| t.is_empty());
                let mut o = Vec::with_capacity(3);
                o.push((
                    "content",
                    if !empty || calls.is_empty() {
                        Out::Joined(Joined::new(text, "", ""))
                    } else {
                        Out::Null
                    },
                ));
                o.push(("role", Out::Text("assistant")));
                if !calls.is_empty() {
                    o.push(("tool_calls", Out::Array(calls)));
                }
                messages.push(Out::Object(o));
            }
        }
    }
    let mut body = Vec::with_capacity(16);
    if let Some(n) = req.max_tokens {
        body.push((dialect.output_cap_field(), Out::U64(n)));
    }
    body.push(("messages", Out::Array(messages)));
    body.push(("model", Out::Text(model)));
    if let Some(p) = req.parallel_tool_calls.filter(|_| !req.tools.is_empty()) {
        body.push(("parallel_tool_calls", Out::Bool(p)));
    }
    if let Some(e) = req.effort_for_openai(model) {
        body.push(("reasoning_effort", Out::String(e)));
    }
    if let Some(rf) = &req.response_format {
        body.push((
            "response_format",
            Out::Owned(match rf {
                ResponseFormat::JsonObject => json!({"type": "json_object"}),
                ResponseFormat::JsonSchema {
                    name,
                    schema,
                    strict,
                } => {
                    let mut s = json!({"name": name, "schema": schema});
                    if let (Some(st), Some(o)) = (strict, s.as_object_mut()) {
                        o.insert("strict".into(), (*st).into());
                    }
                    json!({"type": "json_schema", "json_schema": s})
                }
            }),
        ));
    }
    if !req.stop.is_empty() {
        body.push((
            "stop",
            Out::Array(req.stop.iter().map(|s| Out::Text(s)).collect()),
        ));
    }
    if req.stream {
        body.push(("stream", Out::Bool(true)));
        body.push((
            "stream_options",
            Out::obj([("include_usage", Out::Bool(true))]),
        ));
    }
    if let Some(t) = req.temperature {
        body.push(("temperature", Out::f64(t)));
    }
    if let Some(tc) = &req.tool_choice {
        body.push((
            "tool_choice",
            match tc {
                ToolChoice::Auto => Out::Text("auto"),
                ToolChoice::None => Out::Text("none"),
                ToolChoice::Required => Out::Text("required"),
                ToolChoice::Tool(n) => Out::obj([
                    ("function", Out::obj([("name", Out::Text(n))])),
                    ("type", Out::Text("function")),
                ]),
            },
        ));
    }
    if !req.tools.is_empty() {
        let tools = req.tools.iter().map(|t| {
            let mut f = Vec::with_capacity(4);
            if let Some(d) = &t.description {
                f.push(("description", Out::Str(d)));
            }
            f.push(("name", Out::Text(&t.name)));
            f.push(("parameters", Out::Json(&t.parameters)));
            if let Some(s) = t.strict {
                f.push(("strict", Out::Bool(s)));
            }
            Out::obj([
                ("function", Out::Object(f)),
                ("type", Out::Text("function")),
            ])
        });
        body.push(("tools", Out::Array(tools.collect())));
    }
    if let Some(p) = req.top_p {
        body.push(("top_p", Out::f64(p)));
    }
    // `top_k` has no OpenAI chat parameter, and `thinking` none beyond the effort above;
    // both only tune how the model samples or deliberates, so leaving them out is safe.
    if let Some(u) = &req.user {
        body.push(("user", Out::Text(u)));
    }
    Ok(Out::Object(body).to_vec(req.size_hint()))
}

/// A blank line between two pieces of text, as spelled inside a JSON string.
const PARAGRAPH: &str = "\\n\\n";

/// `{"content": texts joined by a blank line, "role": "system"}`.
fn system_message<'r, 'a>(texts: Vec<&'r Str<'a>>) -> Out<'r, 'a> {
    Out::obj([
        ("content", Out::Joined(Joined::new(texts, PARAGRAPH, ""))),
        ("role", Out::Text("system")),
    ])
}

/// The non-empty texts of system parts.
fn system_texts<'r, 'a: 'r>(parts: impl Iterator<Item = &'r Part<'a>>) -> Vec<&'r Str<'a>> {
    parts
        .filter_map(|p| match p {
            Part::Text(t) if !t.is_empty() => Some(t),
            _ => None,
        })
        .collect()
}

fn image_url(img: &Image) -> String {
    match img {
        Image::Url(u) => u.clone(),
        Image::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
    }
}

#[cfg(test)]
#[path = "chat_reference.rs"]
pub(super) mod reference;

// === responses ===

/// Decodes a complete `chat.completion` body.
pub fn decode_response(body: &[u8]) -> Result<chat::Response, TranslateError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| TranslateError::invalid("", format!("upstream response is not JSON: {e}")))?;
    let choice = v.get("choices").and_then(|c| c.get(0));
    let msg = choice.and_then(|c| c.get("message"));
    let mut content = Vec::new();
    if let Some(m) = msg {
        if let Some(r) = m
            .get("reasoning_content")
            .and_then(Value::as_str)
            .filter(|r| !r.is_empty())
        {
            content.push(Part::Reasoning {
                text: r.to_string().into(),
                signature: None,
                redacted: None,
            });
        }
        if let Some(t) = m
            .get("content")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            content.push(Part::Text(t.to_string().into()));
        }
        if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
            for c in calls {
                let f = c.get("function");
                content.push(Part::ToolCall(ToolCall {
                    id: c
                        .get("id")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    name: f
                        .and_then(|f| f.get("name"))
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    arguments: arguments_object(
                        f.and_then(|f| f.get("arguments"))
                            .and_then(Value::as_str)
                            .unwrap_or(""),
                    ),
                }));
            }
        }
    }
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
        finish_reason: choice
            .and_then(|c| c.get("finish_reason"))
            .and_then(Value::as_str)
            .map(finish_from_openai),
        stop_sequence: None,
        usage: v.get("usage").map(usage_from_json),
    })
}

/// Encodes a `chat.completion` body for an OpenAI caller.
pub fn encode_response(resp: &chat::Response) -> Vec<u8> {
    let mut text: Option<String> = None;
    let mut reasoning = String::new();
    let mut calls = Vec::new();
    for p in &resp.content {
        match p {
            Part::Text(t) => text.get_or_insert_with(String::new).push_str(&t.as_str()),
            Part::Reasoning { text, .. } => reasoning.push_str(&text.as_str()),
            Part::ToolCall(c) => calls.push(json!({
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": Value::Object(c.arguments.clone()).to_string()},
            })),
            Part::Image(_) | Part::ToolResult { .. } => {}
        }
    }
    let mut message = Map::new();
    message.insert("role".into(), "assistant".into());
    message.insert("content".into(), text.map_or(Value::Null, Value::String));
    if !reasoning.is_empty() {
        // DeepSeek's field, which most OpenAI-dialect clients that show reasoning read.
        message.insert("reasoning_content".into(), reasoning.into());
    }
    message.insert("refusal".into(), Value::Null);
    if !calls.is_empty() {
        message.insert("tool_calls".into(), Value::Array(calls));
    }
    let body = json!({
        "id": chat_id(&resp.id),
        "object": "chat.completion",
        "created": unix_now(),
        "model": resp.model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": resp.finish_reason.map(finish_to_openai).unwrap_or("stop"),
        }],
        "usage": usage_to_json(&resp.usage.unwrap_or_default()),
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

fn chat_id(id: &str) -> String {
    if id.is_empty() {
        "chatcmpl-switchyard".to_string()
    } else {
        id.to_string()
    }
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// OpenAI's finish reason → the internal one.
pub fn finish_from_openai(s: &str) -> FinishReason {
    match s {
        "length" => FinishReason::Length,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

/// The internal finish reason → OpenAI's.
pub fn finish_to_openai(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Stop | FinishReason::StopSequence | FinishReason::Pause => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
    }
}

fn usage_from_json(u: &Value) -> Usage {
    let n = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
    Usage {
        input_tokens: n(u.get("prompt_tokens")),
        output_tokens: n(u.get("completion_tokens")),
        cached_input_tokens: u
            .pointer("/prompt_tokens_details/cached_tokens")
            .or_else(|| u.get("prompt_cache_hit_tokens"))
            .and_then(Value::as_u64)
            .unwrap_or(0),
        cache_write_tokens: n(u.pointer("/prompt_tokens_details/cache_write_tokens")),
    }
}

/// OpenAI's `usage`. Cache writes (Anthropic's, Bedrock's) have no OpenAI field; they go in
/// `prompt_tokens_details.cache_write_tokens`, the name OpenRouter gives them, and only
/// when there are any, so an answer without them looks exactly like OpenAI's.
fn usage_to_json(u: &Usage) -> Value {
    let mut details = json!({"cached_tokens": u.cached_input_tokens});
    if u.cache_write_tokens > 0 {
        details["cache_write_tokens"] = json!(u.cache_write_tokens);
    }
    json!({
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.input_tokens.saturating_add(u.output_tokens),
        "prompt_tokens_details": details,
    })
}

// === streams ===

/// Turns `chat.completion.chunk` payloads into internal stream events.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    started: bool,
}

impl StreamDecoder {
    /// Decodes one SSE `data:` payload, appending events to `out`.
    pub fn decode(&mut self, data: &[u8], out: &mut Vec<StreamEvent>) {
        if data == b"[DONE]" {
            out.push(StreamEvent::Done);
            return;
        }
        if self.started {
            let len = out.len();
            if decode_chunk(data, out).is_ok() {
                return;
            }
            out.truncate(len);
        }
        self.decode_value(data, out);
    }

    /// Decodes any chunk through a `Value`: the first, those with an error or usage, and
    /// those [`decode_chunk`] cannot read.
    fn decode_value(&mut self, data: &[u8], out: &mut Vec<StreamEvent>) {
        let Ok(v) = serde_json::from_slice::<Value>(data) else {
            out.push(StreamEvent::Error {
                kind: "upstream_protocol_error".into(),
                message: "the upstream sent a stream chunk that is not JSON".into(),
            });
            return;
        };
        if let Some(e) = v.get("error") {
            out.push(StreamEvent::Error {
                kind: e
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("api_error")
                    .to_string(),
                message: e
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            });
            return;
        }
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start {
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
                usage: None,
            });
        }
        if let Some(choice) = v.get("choices").and_then(|c| c.get(0)) {
            if let Some(d) = choice.get("delta") {
                for key in ["reasoning_content", "reasoning"] {
                    if let Some(r) = d.get(key).and_then(Value::as_str).filter(|r| !r.is_empty()) {
                        out.push(StreamEvent::Reasoning(r.to_string()));
                    }
                }
                if let Some(t) = d
                    .get("content")
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                {
                    out.push(StreamEvent::Text(t.to_string()));
                }
                if let Some(calls) = d.get("tool_calls").and_then(Value::as_array) {
                    for (pos, c) in calls.iter().enumerate() {
                        let index = c
                            .get("index")
                            .and_then(Value::as_u64)
                            .and_then(|i| u32::try_from(i).ok())
                            .unwrap_or(pos as u32);
                        let f = c.get("function");
                        let name = f.and_then(|f| f.get("name")).and_then(Value::as_str);
                        let id = c.get("id").and_then(Value::as_str);
                        if id.is_some() || name.is_some() {
                            out.push(StreamEvent::ToolCallStart {
                                index,
                                id: id.unwrap_or_default().to_string(),
                                name: name.unwrap_or_default().to_string(),
                            });
                        }
                        if let Some(a) = f
                            .and_then(|f| f.get("arguments"))
                            .and_then(Value::as_str)
                            .filter(|a| !a.is_empty())
                        {
                            out.push(StreamEvent::ToolCallArguments {
                                index,
                                fragment: a.to_string(),
                            });
                        }
                    }
                }
            }
            if let Some(r) = choice.get("finish_reason").and_then(Value::as_str) {
                out.push(StreamEvent::Finish {
                    reason: finish_from_openai(r),
                    stop_sequence: None,
                });
            }
        }
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            out.push(StreamEvent::Usage(usage_from_json(u)));
        }
    }
}

/// A chunk after the first, read without building a `Value`.
#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(default)]
    error: Present,
    #[serde(borrow)]
    choices: Option<First<Obj<Choice<'a>>>>,
    #[serde(borrow)]
    usage: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(borrow)]
    delta: Option<Obj<ChunkDelta<'a>>>,
    #[serde(borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ChunkDelta<'a> {
    #[serde(borrow)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(borrow)]
    reasoning: Option<Cow<'a, str>>,
    #[serde(borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow)]
    tool_calls: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ChunkToolCall<'a> {
    index: Option<u64>,
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    function: Option<Obj<ChunkFunction<'a>>>,
}

#[derive(Deserialize)]
struct ChunkFunction<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    arguments: Option<Cow<'a, str>>,
}

/// Decodes a chunk after the first into the events [`StreamDecoder::decode_value`] would
/// give; `Err` (some events possibly pushed) for one it must read instead: not an object of
/// the expected types, or with an `error` or a `usage`.
fn decode_chunk(data: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), ()> {
    // Checked as UTF-8 once here, not string by string as `from_slice` does.
    let data = std::str::from_utf8(data).map_err(|_| ())?;
    let Obj(c) = serde_json::from_str::<Obj<Chunk<'_>>>(data).map_err(|_| ())?;
    if c.error.0 || c.usage.is_some() {
        return Err(());
    }
    let Some(Obj(choice)) = c.choices.and_then(|f| f.0) else {
        return Ok(());
    };
    if let Some(Obj(d)) = choice.delta {
        for r in [d.reasoning_content, d.reasoning].into_iter().flatten() {
            if !r.is_empty() {
                out.push(StreamEvent::Reasoning(r.into_owned()));
            }
        }
        if let Some(t) = d.content.filter(|t| !t.is_empty()) {
            out.push(StreamEvent::Text(t.into_owned()));
        }
        if let Some(raw) = d.tool_calls {
            let mut de = serde_json::Deserializer::from_str(raw.get());
            serde::de::DeserializeSeed::deserialize(ToolCalls(out), &mut de).map_err(|_| ())?;
        }
    }
    if let Some(r) = choice.finish_reason {
        out.push(StreamEvent::Finish {
            reason: finish_from_openai(&r),
            stop_sequence: None,
        });
    }
    Ok(())
}

/// A chunk's `tool_calls`, each call's events pushed as it is read.
struct ToolCalls<'o>(&'o mut Vec<StreamEvent>);

impl<'de> serde::de::DeserializeSeed<'de> for ToolCalls<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for ToolCalls<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of tool calls")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut pos = 0u32;
        while let Some(Obj(c)) = seq.next_element::<Obj<ChunkToolCall<'de>>>()? {
            let index = c.index.and_then(|i| u32::try_from(i).ok()).unwrap_or(pos);
            let (name, arguments) = match c.function {
                Some(Obj(f)) => (f.name, f.arguments),
                None => (None, None),
            };
            if c.id.is_some() || name.is_some() {
                self.0.push(StreamEvent::ToolCallStart {
                    index,
                    id: c.id.map(Cow::into_owned).unwrap_or_default(),
                    name: name.map(Cow::into_owned).unwrap_or_default(),
                });
            }
            if let Some(a) = arguments.filter(|a| !a.is_empty()) {
                self.0.push(StreamEvent::ToolCallArguments {
                    index,
                    fragment: a.into_owned(),
                });
            }
            pos = pos.wrapping_add(1);
        }
        Ok(())
    }
}

/// Writes internal stream events as `chat.completion.chunk` SSE events for an OpenAI caller.
#[derive(Debug)]
pub struct StreamEncoder {
    id: String,
    model: String,
    created: u64,
    client_wants_usage: bool,
    usage: Option<Usage>,
    done: bool,
    /// What every chunk ends with after its `choices`: `],"created":…,"object":…}`.
    tail: Vec<u8>,
}

impl StreamEncoder {
    /// `client_wants_usage`: the caller set `stream_options.include_usage`.
    pub fn new(client_wants_usage: bool) -> Self {
        let mut e = StreamEncoder {
            id: String::new(),
            model: String::new(),
            created: unix_now(),
            client_wants_usage,
            usage: None,
            done: false,
            tail: Vec::new(),
        };
        e.set_tail();
        e
    }

    /// The chunk keys after `choices`, in the order serializing a `json!` object gave
    /// (sorted), written once per stream.
    fn set_tail(&mut self) {
        let t = &mut self.tail;
        t.clear();
        t.extend_from_slice(b"],\"created\":");
        write_u64(t, self.created);
        t.extend_from_slice(b",\"id\":");
        write_str(t, &self.id);
        t.extend_from_slice(b",\"model\":");
        write_str(t, &self.model);
        t.extend_from_slice(b",\"object\":\"chat.completion.chunk\"}\n\n");
    }

    /// Encodes one event into `out`; nothing after `Done` or `Error`. The stream must open
    /// with `Start`: the [`crate::transcode::Transcoder`] sees to that.
    pub fn encode(&mut self, ev: StreamEvent, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        match ev {
            StreamEvent::Start { id, model, .. } => {
                self.id = chat_id(&id);
                self.model = model;
                self.set_tail();
                self.chunk(out, None, |o| {
                    o.extend_from_slice(br#"{"content":"","role":"assistant"}"#)
                });
            }
            StreamEvent::Text(t) => self.chunk(out, None, |o| {
                o.extend_from_slice(br#"{"content":"#);
                write_str(o, &t);
                o.push(b'}');
            }),
            StreamEvent::Reasoning(t) => self.chunk(out, None, |o| {
                o.extend_from_slice(br#"{"reasoning_content":"#);
                write_str(o, &t);
                o.push(b'}');
            }),
            // OpenAI chat has nowhere to put these; they only matter to Anthropic callers.
            StreamEvent::ReasoningSignature(_) | StreamEvent::RedactedReasoning(_) => {}
            StreamEvent::ToolCallStart { index, id, name } => self.chunk(out, None, |o| {
                o.extend_from_slice(br#"{"tool_calls":[{"function":{"arguments":"","name":"#);
                write_str(o, &name);
                o.extend_from_slice(br#"},"id":"#);
                write_str(o, &id);
                o.extend_from_slice(br#","index":"#);
                write_u64(o, index.into());
                o.extend_from_slice(br#","type":"function"}]}"#);
            }),
            StreamEvent::ToolCallArguments { index, fragment } => self.chunk(out, None, |o| {
                o.extend_from_slice(br#"{"tool_calls":[{"function":{"arguments":"#);
                write_str(o, &fragment);
                o.extend_from_slice(br#"},"index":"#);
                write_u64(o, index.into());
                o.extend_from_slice(b"}]}");
            }),
            StreamEvent::Finish { reason, .. } => {
                self.chunk(out, Some(finish_to_openai(reason)), |o| {
                    o.extend_from_slice(b"{}")
                })
            }
            StreamEvent::Usage(u) => self.usage = Some(u),
            StreamEvent::Done => {
                self.done = true;
                if let (true, Some(u)) = (self.client_wants_usage, self.usage) {
                    let v = json!({
                        "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                        "model": self.model, "choices": [], "usage": usage_to_json(&u),
                    });
                    sse_data(&v, out);
                }
                out.extend_from_slice(b"data: [DONE]\n\n");
            }
            StreamEvent::Error { kind, message } => {
                self.done = true;
                let v = json!({"error": {"message": message, "type": "upstream_error", "param": null, "code": kind}});
                sse_data(&v, out);
            }
        }
    }

    /// One chunk whose `delta` `write_delta` writes, as serializing its `json!` object gave.
    fn chunk(
        &self,
        out: &mut Vec<u8>,
        finish: Option<&str>,
        write_delta: impl FnOnce(&mut Vec<u8>),
    ) {
        out.extend_from_slice(br#"data: {"choices":[{"delta":"#);
        write_delta(out);
        out.extend_from_slice(br#","finish_reason":"#);
        match finish {
            Some(f) => write_str(out, f),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(br#","index":0,"logprobs":null}"#);
        out.extend_from_slice(&self.tail);
    }
}

fn sse_data(v: &Value, out: &mut Vec<u8>) {
    out.extend_from_slice(b"data: ");
    let _ = serde_json::to_writer(&mut *out, v);
    out.extend_from_slice(b"\n\n");
}

// === helpers ===

use crate::chat::access::{f64_of, str_of, u64_of};
