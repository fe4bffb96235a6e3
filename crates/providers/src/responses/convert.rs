//! Responses API requests → the internal chat model, and complete internal responses →
//! Responses API response objects.
//!
//! Requests are parsed in one pass into borrowed pieces (`wire`), read so that an error can
//! name the exact parameter path (`input[2].content[0].type`) the way OpenAI's own errors do.

use std::{borrow::Cow, collections::HashSet};

use serde_json::{json, Map, Value};

use super::wire;
use super::{
    item_id, names::ToolNames, response_id, status, Echo, ResponseObject, REDACTED_PREFIX,
    SIGNATURE_PREFIX,
};
use crate::anthropic::wire::Many;
use crate::chat::access::{f64_of, field, str_of, u64_of};
use crate::chat::{
    self, arguments_object, Json, Part, ResponseFormat, Role, Tool, ToolCall, ToolChoice,
    TranslateError, UnsupportedTools,
};
use crate::openai::chat::{image_from_url, push, push_system, unix_now};
use crate::openai::wire::Content;

/// A decoded Responses request: the chat request to send on, and what the response repeats.
#[derive(Clone, Debug, PartialEq)]
pub struct Decoded<'a> {
    /// The request in the gateway's terms (its texts and schemas borrowed from the body).
    pub request: chat::Request<'a>,
    /// The settings the response object echoes, and the caller's names for its tools.
    pub echo: Echo,
    /// The hosted tools left out (`tools[i].type`), for [`Decoded::reject_unsupported_tools`].
    hosted_tools: Vec<String>,
}

const STATELESS: &str =
    "the gateway keeps no state between requests; send the whole conversation in 'input'";
const HOSTED_TOOL: &str = "hosted tools (file search, code interpreter, image generation, \
     remote MCP) run on OpenAI's servers, which only backends serving the Responses API reach, \
     and this route refuses requests that declare them (unsupportedTools: reject)";
const CLIENT_TOOL_ITEMS: &str = "this tool runs on the client, but the model calls it with \
     its own output items (local_shell_call, computer_call, custom_tool_call …), which the \
     backends' chat APIs cannot produce; declare it as a function tool";

// === impl Decoded ===

impl Decoded<'_> {
    /// The same, owning all its text, free of the body it was decoded from.
    pub fn into_owned(self) -> Decoded<'static> {
        Decoded {
            request: self.request.into_owned(),
            echo: self.echo,
            hosted_tools: self.hosted_tools,
        }
    }

    /// Refuses the request if it declared hosted tools: what a route whose policy is
    /// [`UnsupportedTools::Reject`] does for a target that runs none of them (requests are
    /// decoded, with [`UnsupportedTools::Drop`], before the route is looked up).
    pub fn reject_unsupported_tools(&self) -> Result<(), TranslateError> {
        self.reject_tools_not_run(false)
    }

    /// [`Self::reject_unsupported_tools`] for a target that runs the caller's web search
    /// when `web_search_runs` (an Anthropic or Gemini backend on a route that allows it), and
    /// none of the other hosted tools.
    pub fn reject_tools_not_run(&self, web_search_runs: bool) -> Result<(), TranslateError> {
        if let Some(param) = self.hosted_tools.first() {
            return Err(TranslateError::Refused {
                param: param.clone(),
                why: HOSTED_TOOL,
            });
        }
        match &self.request.web_search {
            Some(w) if !web_search_runs => Err(w.refusal()),
            _ => Ok(()),
        }
    }
}

/// Decodes a `POST /v1/responses` body, leaving hosted tools out (named in
/// [`chat::Request::dropped`]). Everything refused here is refused for every backend.
/// Texts and tool schemas borrow from `body` (parsed in one pass, see `responses::wire`).
pub fn decode_request(body: &[u8]) -> Result<Decoded<'_>, TranslateError> {
    decode_request_with(body, UnsupportedTools::Drop)
}

/// Decodes a `POST /v1/responses` body, treating hosted tools as `policy` says.
pub fn decode_request_with(
    body: &[u8],
    policy: UnsupportedTools,
) -> Result<Decoded<'_>, TranslateError> {
    let mut obj = match wire::parse(body) {
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
    let refused = |param: &str, why: &'static str| TranslateError::Refused {
        param: param.to_string(),
        why,
    };
    let mut req = chat::Request::default();
    let mut user = None;
    let mut safety_identifier = None;
    // What the response echoes: the fields as values, `tools` and `instructions` as sent.
    let mut echoed = Map::new();
    let mut echoed_raw = Vec::new();
    // Tools first: calls in the input are named after them.
    let mut names = ToolNames::default();
    let mut hosted_tools = Vec::new();
    if let Some(wire::Top::Tools(tools, raw)) = obj.remove("tools") {
        match tools {
            Many::Other(Value::Null) => {}
            Many::List(tools) => {
                decode_tools(tools, &mut req, &mut names, &mut hosted_tools)?;
                echoed_raw.push(("tools", raw));
                if policy == UnsupportedTools::Reject {
                    if let Some(param) = hosted_tools.first() {
                        return Err(refused(param, HOSTED_TOOL));
                    }
                    if let Some(w) = &req.web_search {
                        return Err(w.refusal());
                    }
                }
            }
            _ => return Err(TranslateError::invalid("tools", "must be an array")),
        }
    }
    for (k, top) in obj {
        let v = match top {
            wire::Top::Input(Many::Other(Value::Null)) => continue,
            wire::Top::Input(input) => {
                decode_input(input, &mut req, &names)?;
                continue;
            }
            wire::Top::Instructions(Err(Value::Null), _) => continue,
            wire::Top::Instructions(Ok(text), raw) => {
                // Instructions come before any system message of the input.
                req.system.insert(0, Part::Text(text));
                echoed_raw.push(("instructions", raw));
                continue;
            }
            wire::Top::Instructions(Err(_), _) => {
                return Err(TranslateError::invalid("instructions", "must be a string"))
            }
            wire::Top::Tools(..) => continue,
            wire::Top::Other(v) => v,
        };
        if v.is_null() {
            continue;
        }
        let (k, v) = (k.as_str(), &v);
        match k {
            "model" => req.model = str_of(v, "model")?.to_string(),
            "stream" => {
                req.stream = v
                    .as_bool()
                    .ok_or_else(|| TranslateError::invalid("stream", "must be a boolean"))?
            }
            "max_output_tokens" => req.max_tokens = Some(u64_of(v, k)?),
            "temperature" => req.temperature = Some(f64_of(v, k)?),
            "top_p" => req.top_p = Some(f64_of(v, k)?),
            "tool_choice" => req.tool_choice = Some(decode_tool_choice(v, &names)?),
            "parallel_tool_calls" => {
                req.parallel_tool_calls = Some(v.as_bool().ok_or_else(|| {
                    TranslateError::invalid("parallel_tool_calls", "must be a boolean")
                })?)
            }
            "text" => {
                for (tk, tv) in v.as_object().into_iter().flatten() {
                    match tk.as_str() {
                        _ if tv.is_null() => {}
                        "format" => req.response_format = decode_format(tv)?,
                        // `verbosity` (GPT-5's answer length) and anything newer.
                        other => req.dropped.push(&format!("text.{other}")),
                    }
                }
            }
            "reasoning" => {
                for (rk, rv) in v.as_object().into_iter().flatten() {
                    match rk.as_str() {
                        _ if rv.is_null() => {}
                        "effort" => req.reasoning_effort = rv.as_str().map(str::to_string),
                        // Summaries are what the gateway shows of any reasoning it gets.
                        "summary" | "generate_summary" => {}
                        other => req.dropped.push(&format!("reasoning.{other}")),
                    }
                }
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
            // What the gateway itself does as asked: it stores nothing, echoes `metadata`,
            // frames the stream, and returns Anthropic's signed reasoning encrypted.
            "store" if v.as_bool() == Some(false) => {}
            "background" | "top_logprobs" | "metadata" | "stream_options" => {}
            "truncation" if v.as_str() == Some("disabled") => {}
            "include"
                if v.as_array().is_some_and(|a| {
                    a.iter()
                        .all(|i| i.as_str() == Some("reasoning.encrypted_content"))
                }) => {}
            // Everything else only tunes the provider, never the content of the answer
            // (`store: true`, `service_tier`, `prompt_cache_key`, `truncation: auto`,
            // `max_tool_calls`, other `include`s …), or is new and cannot be judged: top-level
            // fields are parameters, and the content lives in `instructions`, `input` and
            // `tools`, whose unknown kinds are refused. Left out and named
            // (docs/forward-compatibility.md).
            other => req.dropped.push(other),
        }
        echoed.insert(k.to_string(), v.clone());
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
        echo: Echo::from_request(&echoed)
            .with_raw(echoed_raw)
            .with_names(names),
        hosted_tools,
    })
}

/// Whether a tool of type `ty` runs on OpenAI's servers (the dated variants included).
fn is_hosted_tool(ty: &str) -> bool {
    ty.starts_with("web_search")
        || matches!(
            ty,
            "file_search" | "code_interpreter" | "image_generation" | "mcp"
        )
}

/// `tools`: function tools as they are, the function tools of a namespace flattened (their
/// names made up in `names`), hosted tools left out and listed in `hosted` (as
/// `tools[i].type`). Other tools the client runs but whose calls are special items are
/// refused, and so are unknown kinds.
fn decode_tools<'a>(
    tools: Vec<wire::ToolDef<'a>>,
    req: &mut chat::Request<'a>,
    names: &mut ToolNames,
    hosted: &mut Vec<String>,
) -> Result<(), TranslateError> {
    // Made-up names must not repeat a name the caller gave a tool of its own.
    let mut taken: HashSet<String> = tools
        .iter()
        .filter(|t| t.other.get("type").and_then(Value::as_str) == Some("function"))
        .filter_map(|t| {
            t.other
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .collect();
    for (i, t) in tools.into_iter().enumerate() {
        let p = format!("tools[{i}]");
        let ty = str_at(field_of(&t.other, "type", &p)?, || format!("{p}.type"))?.to_string();
        match ty.as_str() {
            "function" => req.tools.push(function_tool(t, &p, None)?),
            "namespace" => {
                let ns = str_at(field_of(&t.other, "name", &p)?, || format!("{p}.name"))?;
                let inner_tools = match t.tools {
                    None | Some(Many::Other(Value::Null)) => {
                        return Err(TranslateError::invalid(format!("{p}.tools"), "missing"))
                    }
                    Some(Many::List(list)) => list,
                    Some(_) => {
                        return Err(TranslateError::invalid(
                            format!("{p}.tools"),
                            "must be an array",
                        ))
                    }
                };
                for (j, inner) in inner_tools.into_iter().enumerate() {
                    let ip = format!("{p}.tools[{j}]");
                    let ity = str_at(field_of(&inner.other, "type", &ip)?, || {
                        format!("{ip}.type")
                    })?;
                    if ity != "function" {
                        return Err(TranslateError::Refused {
                            param: format!("{ip}.type"),
                            why: "only function tools can be translated inside a namespace",
                        });
                    }
                    let name = str_at(field_of(&inner.other, "name", &ip)?, || {
                        format!("{ip}.name")
                    })?;
                    let flat = names.flatten(ns, name, &mut taken);
                    req.tools.push(function_tool(inner, &ip, Some(flat))?);
                }
            }
            // A web search: run by the backend's own search where it has one and the route
            // allows it, else left out or refused like the other hosted tools (decided per
            // target by the gateway).
            ty if ty.starts_with("web_search") && req.web_search.is_none() => {
                req.web_search = Some(web_search_tool(&t.other, &p, ty));
            }
            ty if is_hosted_tool(ty) => {
                req.dropped.push(&format!("{p}({ty})"));
                hosted.push(format!("{p}.type"));
            }
            ty => {
                return Err(TranslateError::Refused {
                    param: format!("{p}.type"),
                    why: match ty {
                        "custom" => {
                            "custom tools take free-form text rather than JSON arguments, which \
                             the backends' chat APIs cannot express; declare a function tool"
                        }
                        "local_shell"
                        | "shell"
                        | "apply_patch"
                        | "computer_use_preview"
                        | "computer" => CLIENT_TOOL_ITEMS,
                        _ => {
                            "unknown tool type: only function and namespace tools can be \
                              translated"
                        }
                    },
                })
            }
        }
    }
    Ok(())
}

/// `access::str_of` with a path made only for an error.
fn str_at(v: &Value, p: impl FnOnce() -> String) -> Result<&str, TranslateError> {
    v.as_str()
        .ok_or_else(|| TranslateError::invalid(p(), "must be a string"))
}

/// `access::field` on a parsed object's other fields.
fn field_of<'v>(
    o: &'v Map<String, Value>,
    name: &str,
    p: &str,
) -> Result<&'v Value, TranslateError> {
    o.get(name)
        .filter(|x| !x.is_null())
        .ok_or_else(|| TranslateError::invalid(format!("{p}.{name}"), "missing"))
}

/// A string field parsed by `SmallStr`, read as `str_of(field(..))` reads a `Value`.
fn small_str<'v>(
    f: &'v Option<Result<Cow<'_, str>, Value>>,
    name: &str,
    p: &str,
) -> Result<&'v str, TranslateError> {
    match f {
        Some(Ok(s)) => Ok(s),
        None | Some(Err(Value::Null)) => {
            Err(TranslateError::invalid(format!("{p}.{name}"), "missing"))
        }
        Some(Err(_)) => Err(TranslateError::invalid(
            format!("{p}.{name}"),
            "must be a string",
        )),
    }
}

/// A Responses `web_search` tool (`web_search_preview` and the dated kinds too): its domain
/// filter and the user's location; `search_context_size` and `external_web_access` only tune
/// OpenAI's search.
fn web_search_tool(t: &Map<String, Value>, p: &str, ty: &str) -> chat::WebSearch {
    let strings = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect()
    };
    chat::WebSearch {
        param: p.to_string(),
        kind: ty.to_string(),
        max_uses: None,
        allowed_domains: strings(t.get("filters").and_then(|f| f.get("allowed_domains"))),
        blocked_domains: Vec::new(),
        user_location: t
            .get("user_location")
            .and_then(chat::UserLocation::from_json),
    }
}

/// A function tool, named `name` instead of its own when given. The Responses function tool
/// is flat: no `function` wrapper.
fn function_tool<'a>(
    t: wire::ToolDef<'a>,
    p: &str,
    name: Option<String>,
) -> Result<Tool<'a>, TranslateError> {
    let name = match name {
        Some(n) => n,
        None => str_at(field_of(&t.other, "name", p)?, || format!("{p}.name"))?.to_string(),
    };
    Ok(Tool {
        name,
        description: t.description.and_then(Result::ok),
        parameters: match t.parameters {
            Some(s) if s.starts_with('{') => Json::Raw(s),
            _ => json!({"type": "object", "properties": {}}).into(),
        },
        strict: t.other.get("strict").and_then(Value::as_bool),
    })
}

fn decode_tool_choice(v: &Value, names: &ToolNames) -> Result<ToolChoice, TranslateError> {
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
                Ok(ToolChoice::Tool(
                    match o.get("namespace").and_then(Value::as_str) {
                        Some(ns) => names.flat(ns, name),
                        None => name.to_string(),
                    },
                ))
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

fn decode_input<'a>(
    input: Many<'a, wire::Item<'a>>,
    req: &mut chat::Request<'a>,
    names: &ToolNames,
) -> Result<(), TranslateError> {
    let items = match input {
        Many::Text(s) => {
            push(req, Role::User, vec![Part::Text(s.into())]);
            return Ok(());
        }
        Many::List(items) => items,
        Many::Other(_) => {
            return Err(TranslateError::invalid(
                "input",
                "must be a string or an array of input items",
            ))
        }
    };
    for (i, item) in items.into_iter().enumerate() {
        let p = format!("input[{i}]");
        // Easy input messages (`{role, content}`) may leave out the type.
        let ty = match &item.ty {
            Some(Ok(t)) => t.as_ref(),
            _ if item.role.is_some() => "message",
            _ => return Err(TranslateError::invalid(format!("{p}.type"), "missing")),
        };
        match ty {
            "message" => {
                let role = small_str(&item.role, "role", &p)?;
                let content = match item.content {
                    None | Some(Content::Other(Value::Null)) => {
                        return Err(TranslateError::invalid(format!("{p}.content"), "missing"))
                    }
                    Some(c) => decode_content(c, &|| format!("{p}.content"))?,
                };
                match role {
                    "system" | "developer" => push_system(req, content),
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
                let call_id = small_str(&item.call_id, "call_id", &p)?;
                let name = small_str(&item.name, "name", &p)?;
                let name = match &item.namespace {
                    Some(Ok(ns)) => names.flat(ns, name),
                    _ => name.to_string(),
                };
                let args = match &item.arguments {
                    Some(Ok(a)) => a.as_ref(),
                    _ => "",
                };
                push(
                    req,
                    Role::Assistant,
                    vec![Part::ToolCall(ToolCall {
                        id: call_id.to_string(),
                        name,
                        arguments: arguments_object(args),
                    })],
                );
            }
            "function_call_output" => {
                let call_id = small_str(&item.call_id, "call_id", &p)?.to_string();
                let content = match item.output {
                    None | Some(Content::Other(Value::Null)) => {
                        return Err(TranslateError::invalid(format!("{p}.output"), "missing"))
                    }
                    Some(c) => decode_content(c, &|| format!("{p}.output"))?,
                };
                push(
                    req,
                    Role::User,
                    vec![Part::ToolResult {
                        id: call_id,
                        content,
                        is_error: false,
                    }],
                );
            }
            "reasoning" => {
                if let Some(part) = decode_reasoning(&item, &p)? {
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
                    why: "only messages, function calls, function call outputs and reasoning \
                          items can be translated",
                })
            }
        }
    }
    Ok(())
}

/// A reasoning item: its summary (or, failing that, its full reasoning text), and the
/// Anthropic signature or redacted data it carries. `None` when there is nothing to pass on.
fn decode_reasoning(
    item: &wire::Item<'_>,
    p: &str,
) -> Result<Option<Part<'static>>, TranslateError> {
    let texts = |key: &str, parts: &Option<Content<'_>>| -> Result<String, TranslateError> {
        let mut out = Vec::new();
        match parts {
            None | Some(Content::Other(Value::Null)) => {}
            Some(Content::Parts(parts)) => {
                for (j, s) in parts.iter().enumerate() {
                    let sp = format!("{p}.{key}[{j}]");
                    out.push(match &s.text {
                        Some(Ok(t)) => t.as_str().into_owned(),
                        None | Some(Err(Value::Null)) => {
                            return Err(TranslateError::invalid(format!("{sp}.text"), "missing"))
                        }
                        Some(Err(_)) => {
                            return Err(TranslateError::invalid(
                                format!("{sp}.text"),
                                "must be a string",
                            ))
                        }
                    });
                }
            }
            Some(_) => {
                return Err(TranslateError::invalid(
                    format!("{p}.{key}"),
                    "must be an array",
                ))
            }
        }
        Ok(out.join("\n\n"))
    };
    let mut text = texts("summary", &item.summary)?;
    if text.is_empty() {
        text = texts("content", &item.content)?;
    }
    let encrypted = match &item.encrypted_content {
        Some(Ok(e)) => Some(e.as_ref()),
        _ => None,
    };
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
        text: text.into(),
        signature: signature.map(Into::into),
        redacted: redacted.map(Into::into),
    }))
}

/// Message content, or a function call's output: a string, or a list of content parts.
fn decode_content<'a>(
    c: Content<'a>,
    p: &dyn Fn() -> String,
) -> Result<Vec<Part<'a>>, TranslateError> {
    let parts = match c {
        Content::Text(s) => return Ok(vec![Part::Text(s)]),
        Content::Parts(parts) => parts,
        Content::Other(_) => {
            return Err(TranslateError::invalid(
                p(),
                "must be a string or an array of content parts",
            ))
        }
    };
    let mut out = Vec::with_capacity(parts.len());
    for (j, part) in parts.into_iter().enumerate() {
        let pp = || format!("{}[{j}]", p());
        let ty = match part.other.get("type").filter(|x| !x.is_null()) {
            Some(t) => str_at(t, || format!("{}.type", pp()))?,
            None => return Err(TranslateError::invalid(format!("{}.type", pp()), "missing")),
        };
        match ty {
            "input_text" | "output_text" | "text" => out.push(Part::Text(match part.text {
                Some(Ok(t)) => t,
                None | Some(Err(Value::Null)) => {
                    return Err(TranslateError::invalid(format!("{}.text", pp()), "missing"))
                }
                Some(Err(_)) => {
                    return Err(TranslateError::invalid(
                        format!("{}.text", pp()),
                        "must be a string",
                    ))
                }
            })),
            "refusal" => out.push(Part::Text(
                part.other
                    .get("refusal")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
                    .into(),
            )),
            "input_image" => {
                if let Some(url) = part.other.get("image_url").and_then(Value::as_str) {
                    out.push(Part::Image(image_from_url(url)));
                } else if part.other.get("file_id").is_some_and(|f| !f.is_null()) {
                    return Err(TranslateError::Refused {
                        param: format!("{}.file_id", pp()),
                        why: "file ids name files stored at OpenAI; send the image as a URL or a data: URL",
                    });
                } else {
                    return Err(TranslateError::invalid(
                        format!("{}.image_url", pp()),
                        "missing",
                    ));
                }
            }
            _ => {
                return Err(TranslateError::Refused {
                    param: format!("{}.type", pp()),
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

/// The output items of a complete response, in order: consecutive text becomes one message,
/// and calls are named as the caller declared the tools (`echo`).
pub(crate) fn output_items(
    resp_id: &str,
    content: &[Part<'_>],
    item_status: &str,
    echo: &Echo,
) -> Vec<Value> {
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
            Part::Text(t) => text.get_or_insert_with(String::new).push_str(&t.as_str()),
            Part::Reasoning {
                text: r,
                signature,
                redacted,
            } => {
                flush(&mut items, &mut text);
                let i = items.len();
                items.push(reasoning_item(
                    &item_id("rs", resp_id, i),
                    &r.as_str(),
                    signature.as_ref().map(|s| s.as_str()).as_deref(),
                    redacted.as_ref().map(|s| s.as_str()).as_deref(),
                ));
            }
            Part::ToolCall(c) => {
                flush(&mut items, &mut text);
                let i = items.len();
                items.push(function_call_item(
                    &item_id("fc", resp_id, i),
                    &c.id,
                    echo.caller_name(&c.name),
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

/// A `function_call` item; `(namespace, name)` as the caller declared the tool.
pub(crate) fn function_call_item(
    id: &str,
    call_id: &str,
    (namespace, name): (Option<&str>, &str),
    arguments: &str,
    status: &str,
) -> Value {
    let mut item = json!({
        "id": id, "type": "function_call", "status": status,
        "arguments": arguments, "call_id": call_id, "name": name,
    });
    if let (Some(ns), Some(o)) = (namespace, item.as_object_mut()) {
        o.insert("namespace".into(), ns.into());
    }
    item
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
        output: output_items(&id, &resp.content, item_status, echo),
        usage: Some(resp.usage.unwrap_or_default()),
        echo,
    };
    let mut out = Vec::with_capacity(1024);
    body.write(&mut out);
    out
}
