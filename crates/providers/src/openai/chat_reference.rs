//! The OpenAI chat request encoder as it was written before it built a [`crate::json::Out`]
//! tree: serde-derived structs written by `serde_json`. Kept for tests only, as the reference
//! the direct writer must match byte for byte.

#![allow(clippy::unwrap_used)]

use serde::Serialize;
use serde_json::{json, Value};

use super::{image_url, system_texts, Dialect, PARAGRAPH};
use crate::chat::{self, Json, Part, ResponseFormat, Role, Str, ToolChoice, TranslateError};
use crate::json::Joined;

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
        messages.push(Out::System {
            content: Joined::new(system, PARAGRAPH, ""),
            role: "system",
        });
    }
    for (i, m) in req.messages.iter().enumerate() {
        match m.role {
            Role::System => {
                let texts = system_texts(m.content.iter());
                if in_place && !texts.is_empty() {
                    messages.push(Out::System {
                        content: Joined::new(texts, PARAGRAPH, ""),
                        role: "system",
                    });
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
                            messages.push(Out::Tool {
                                content: Joined::new(texts, "", prefix),
                                role: "tool",
                                tool_call_id: id,
                            });
                        }
                        other => rest.push(other),
                    }
                }
                if !rest.is_empty() {
                    let content = if let [Part::Text(t)] = rest[..] {
                        UserContent::Text(t)
                    } else {
                        let mut arr = Vec::with_capacity(rest.len());
                        for (j, p) in rest.into_iter().enumerate() {
                            arr.push(match p {
                                Part::Text(t) => UserPart::Text {
                                    text: t,
                                    r#type: "text",
                                },
                                Part::Image(img) => UserPart::Image {
                                    image_url: ImageUrl {
                                        url: image_url(img),
                                    },
                                    r#type: "image_url",
                                },
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
                        UserContent::Parts(arr)
                    };
                    messages.push(Out::User {
                        content,
                        role: "user",
                    });
                }
            }
            Role::Assistant => {
                let mut text = Vec::new();
                let mut calls = Vec::new();
                for part in &m.content {
                    match part {
                        Part::Text(t) => text.push(t),
                        Part::ToolCall(c) => calls.push(OutCall {
                            function: OutFunction {
                                arguments: serde_json::to_string(&c.arguments).unwrap_or_default(),
                                name: &c.name,
                            },
                            id: &c.id,
                            r#type: "function",
                        }),
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
                messages.push(Out::Assistant {
                    content: (!empty || calls.is_empty()).then(|| Joined::new(text, "", "")),
                    role: "assistant",
                    tool_calls: (!calls.is_empty()).then_some(calls),
                });
            }
        }
    }
    let tools = (!req.tools.is_empty()).then(|| {
        req.tools
            .iter()
            .map(|t| OutTool {
                function: OutToolFunction {
                    description: t.description.as_ref(),
                    name: &t.name,
                    parameters: &t.parameters,
                    strict: t.strict,
                },
                r#type: "function",
            })
            .collect::<Vec<_>>()
    });
    let max_tokens = |d: Dialect| req.max_tokens.filter(|_| dialect == d);
    let body = Body {
        max_completion_tokens: max_tokens(Dialect::OpenAi),
        max_tokens: max_tokens(Dialect::Compatible),
        messages,
        model,
        parallel_tool_calls: req.parallel_tool_calls.filter(|_| tools.is_some()),
        reasoning_effort: req.effort_for_openai(model),
        response_format: req.response_format.as_ref().map(|rf| match rf {
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
        stop: (!req.stop.is_empty()).then_some(&req.stop[..]),
        stream: req.stream.then_some(true),
        stream_options: req.stream.then(|| json!({"include_usage": true})),
        temperature: req.temperature,
        tool_choice: req.tool_choice.as_ref().map(|tc| match tc {
            ToolChoice::Auto => "auto".into(),
            ToolChoice::None => "none".into(),
            ToolChoice::Required => "required".into(),
            ToolChoice::Tool(n) => json!({"type": "function", "function": {"name": n}}),
        }),
        tools,
        top_p: req.top_p,
        // `top_k` has no OpenAI chat parameter, and `thinking` none beyond the effort above;
        // both only tune how the model samples or deliberates, so leaving them out is safe.
        user: req.user.as_deref(),
    };
    let mut out = Vec::with_capacity(req.size_hint());
    serde_json::to_writer(&mut out, &body).map_err(|e| {
        TranslateError::invalid("", format!("the request could not be written: {e}"))
    })?;
    Ok(out)
}

/// The upstream body. Fields in sorted order: the order the `Value` map this replaced wrote.
#[derive(Serialize)]
struct Body<'r, 'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u64>,
    messages: Vec<Out<'r, 'a>>,
    model: &'r str,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_effort: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop: Option<&'r [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<Vec<OutTool<'r, 'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'r str>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Out<'r, 'a> {
    System {
        content: Joined<'r, 'a>,
        role: &'static str,
    },
    User {
        content: UserContent<'r, 'a>,
        role: &'static str,
    },
    Tool {
        content: Joined<'r, 'a>,
        role: &'static str,
        tool_call_id: &'r str,
    },
    Assistant {
        content: Option<Joined<'r, 'a>>,
        role: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        tool_calls: Option<Vec<OutCall<'r>>>,
    },
}

#[derive(Serialize)]
#[serde(untagged)]
enum UserContent<'r, 'a> {
    Text(&'r Str<'a>),
    Parts(Vec<UserPart<'r, 'a>>),
}

#[derive(Serialize)]
#[serde(untagged)]
enum UserPart<'r, 'a> {
    Text {
        text: &'r Str<'a>,
        r#type: &'static str,
    },
    Image {
        image_url: ImageUrl,
        r#type: &'static str,
    },
}

#[derive(Serialize)]
struct ImageUrl {
    url: String,
}

#[derive(Serialize)]
struct OutCall<'r> {
    function: OutFunction<'r>,
    id: &'r str,
    r#type: &'static str,
}

#[derive(Serialize)]
struct OutFunction<'r> {
    arguments: String,
    name: &'r str,
}

#[derive(Serialize)]
struct OutTool<'r, 'a> {
    function: OutToolFunction<'r, 'a>,
    r#type: &'static str,
}

#[derive(Serialize)]
struct OutToolFunction<'r, 'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'r Str<'a>>,
    name: &'r str,
    parameters: &'r Json<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    strict: Option<bool>,
}
