//! OpenAI Responses API (`POST /v1/responses`) as a caller format: requests are decoded into
//! the internal chat model (`convert`), complete responses and streams are encoded from it
//! (`convert`, `stream`).
//!
//! Backends that serve the Responses API themselves (`openai`, `azure-openai`) get the request
//! passed through, `model` rewritten and nothing else touched, so stored responses, hosted
//! tools and reasoning items behave as with the provider; [`inspect`] reads usage from their
//! answers. Every other backend is called through its chat API, statelessly. That decides
//! what can be translated: `previous_response_id`, conversations, stored prompts and background responses need state
//! the gateway does not keep; they are refused with a 400 naming the parameter. Hosted tools
//! (web search, file search, code interpreter …) run on OpenAI's servers, which no backend
//! call reaches: they are left out and named, or refused, as the route's
//! [`UnsupportedTools`] policy says. Tools the caller runs itself are function tools, flat or
//! grouped in a `namespace` (see [`names`]). `store` is accepted and every response says
//! `"store": false`.
//!
//! Reasoning crosses turns as `reasoning` items. Anthropic's thinking signature (or its
//! redacted thinking) must come back unchanged on the next turn, so it travels in the item's
//! `encrypted_content` under a `switchyard:` prefix; content without that prefix (a real
//! OpenAI blob) means nothing to another provider and is not passed on.

use serde_json::{json, Map, Value};

use crate::{
    chat::{FinishReason, TranslateError},
    Usage,
};

mod convert;
pub mod inspect;
pub mod names;
mod stream;
mod wire;

pub use crate::chat::UnsupportedTools;
pub use convert::{decode_request, decode_request_with, encode_response, Decoded};
pub use names::ToolNames;
pub use stream::StreamEncoder;

/// `encrypted_content` prefix of a reasoning item carrying an Anthropic thinking signature.
pub(crate) const SIGNATURE_PREFIX: &str = "switchyard:signature:";
/// `encrypted_content` prefix of a reasoning item carrying Anthropic redacted thinking.
pub(crate) const REDACTED_PREFIX: &str = "switchyard:redacted:";

/// What a response repeats back of its request: the settings (`tools`, `tool_choice`,
/// `instructions` …, with the API's defaults filled in), and the caller's own names for the
/// tools it declared in a namespace, so the calls the model makes come back under them.
#[derive(Clone, Debug, PartialEq)]
pub struct Echo {
    settings: Map<String, Value>,
    /// Settings echoed as the caller sent them (`tools`, `instructions`: often most of a
    /// request's bytes), read into values only when a response is written.
    raw: Vec<(&'static str, RawJson)>,
    names: ToolNames,
}

/// JSON kept as its bytes; equal when the values are.
#[derive(Clone, Debug)]
struct RawJson(Box<str>);

impl RawJson {
    fn value(&self) -> Value {
        // Checked when the request was decoded.
        serde_json::from_str(&self.0).unwrap_or(Value::Null)
    }
}

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.value() == other.value()
    }
}

impl Echo {
    /// What a request that sets nothing gets echoed.
    pub fn default_settings() -> Self {
        Self::from_request(&Map::new())
    }

    /// The echo repeating these settings as they were sent (a key given here wins over
    /// the same key in the settings).
    pub(crate) fn with_raw(mut self, raw: Vec<(&'static str, &str)>) -> Self {
        self.raw = raw
            .into_iter()
            .map(|(k, v)| (k, RawJson(v.into())))
            .collect();
        self
    }

    /// The echo naming calls back with `names`.
    pub(crate) fn with_names(mut self, names: ToolNames) -> Self {
        self.names = names;
        self
    }

    /// The caller's `(namespace, name)` for a tool name the model used.
    pub(crate) fn caller_name<'a>(&'a self, name: &'a str) -> (Option<&'a str>, &'a str) {
        self.names.caller_name(name)
    }

    /// The fields echoed, with defaults for what the request left out.
    pub(crate) fn from_request(req: &Map<String, Value>) -> Self {
        let get = |k: &str, default: Value| {
            req.get(k)
                .filter(|v| !v.is_null())
                .cloned()
                .unwrap_or(default)
        };
        let mut m = Map::new();
        m.insert("instructions".into(), get("instructions", Value::Null));
        m.insert(
            "max_output_tokens".into(),
            get("max_output_tokens", Value::Null),
        );
        m.insert("metadata".into(), get("metadata", json!({})));
        m.insert(
            "parallel_tool_calls".into(),
            get("parallel_tool_calls", json!(true)),
        );
        m.insert(
            "reasoning".into(),
            get("reasoning", json!({"effort": null, "summary": null})),
        );
        m.insert("temperature".into(), get("temperature", Value::Null));
        m.insert(
            "text".into(),
            get("text", json!({"format": {"type": "text"}})),
        );
        m.insert("tool_choice".into(), get("tool_choice", json!("auto")));
        m.insert("tools".into(), get("tools", json!([])));
        m.insert("top_p".into(), get("top_p", Value::Null));
        m.insert("truncation".into(), get("truncation", json!("disabled")));
        m.insert("user".into(), get("user", Value::Null));
        Echo {
            settings: m,
            raw: Vec::new(),
            names: ToolNames::default(),
        }
    }
}

/// An error from encoding for a backend, with the parameter named as a Responses caller
/// sent it (the chat model calls `text.format` `response_format`).
pub fn caller_param(e: TranslateError) -> TranslateError {
    match e {
        TranslateError::Unsupported {
            param,
            provider,
            why,
        } if param == "response_format" => TranslateError::Unsupported {
            param: "text.format".into(),
            provider,
            why,
        },
        other => other,
    }
}

/// The `resp_…` id of a response, from the upstream's id (so the two can be matched in logs).
pub(crate) fn response_id(upstream: &str) -> String {
    let base: String = upstream
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
        .collect();
    if base.is_empty() {
        "resp_switchyard".to_string()
    } else {
        format!("resp_{base}")
    }
}

/// The id of output item `index` of response `resp_id` (`msg_…`, `fc_…`, `rs_…`): unique in
/// the response, and the same in a stream's events and its final response object.
pub(crate) fn item_id(kind: &str, resp_id: &str, index: usize) -> String {
    let base = resp_id.strip_prefix("resp_").unwrap_or(resp_id);
    format!("{kind}_{base}_{index}")
}

/// A response's `status` and `incomplete_details` for a finish reason.
pub(crate) fn status(finish: Option<FinishReason>) -> (&'static str, Value) {
    match finish {
        Some(FinishReason::Length) => ("incomplete", json!({"reason": "max_output_tokens"})),
        Some(FinishReason::ContentFilter) => ("incomplete", json!({"reason": "content_filter"})),
        _ => ("completed", Value::Null),
    }
}

/// The Responses `usage` object. The internal usage does not split out reasoning tokens:
/// reasoning is counted in `output_tokens` (0 in the detail, as OpenAI reports for models
/// that do not reason). Cache writes, which OpenAI does not report, go in
/// `input_tokens_details.cache_write_tokens` when there are any (as in chat's usage).
pub(crate) fn usage_json(u: &Usage) -> Value {
    let mut details = json!({"cached_tokens": u.cached_input_tokens});
    if u.cache_write_tokens > 0 {
        details["cache_write_tokens"] = json!(u.cache_write_tokens);
    }
    json!({
        "input_tokens": u.input_tokens,
        "input_tokens_details": details,
        "output_tokens": u.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": u.input_tokens.saturating_add(u.output_tokens),
    })
}

/// The response object, in every state a stream shows it and as the non-streamed body.
pub(crate) struct ResponseObject<'a> {
    pub id: &'a str,
    pub created_at: u64,
    pub model: &'a str,
    /// `in_progress`, `completed` or `incomplete`.
    pub status: &'a str,
    pub incomplete_details: Value,
    pub output: Vec<Value>,
    pub usage: Option<Usage>,
    pub echo: &'a Echo,
}

impl ResponseObject<'_> {
    pub(crate) fn into_json(self) -> Value {
        let mut m = Map::new();
        m.insert("id".into(), self.id.into());
        m.insert("object".into(), "response".into());
        m.insert("created_at".into(), self.created_at.into());
        m.insert("status".into(), self.status.into());
        if self.status == "completed" {
            m.insert(
                "completed_at".into(),
                crate::openai::chat::unix_now().into(),
            );
        }
        m.insert("background".into(), false.into());
        m.insert("error".into(), Value::Null);
        m.insert("incomplete_details".into(), self.incomplete_details);
        m.insert("model".into(), self.model.into());
        m.insert("output".into(), Value::Array(self.output));
        m.insert("previous_response_id".into(), Value::Null);
        m.insert("store".into(), false.into());
        for (k, v) in &self.echo.settings {
            m.insert(k.clone(), v.clone());
        }
        for (k, v) in &self.echo.raw {
            m.insert((*k).to_string(), v.value());
        }
        m.insert(
            "usage".into(),
            self.usage.as_ref().map_or(Value::Null, usage_json),
        );
        Value::Object(m)
    }
}

#[cfg(test)]
mod tests;
