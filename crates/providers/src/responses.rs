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
    json::{Json, Out},
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
    settings: Vec<(&'static str, Value)>,
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
    /// the same key in the settings), on one line (a stream's events carry them).
    pub(crate) fn with_raw(mut self, raw: Vec<(&'static str, &str)>) -> Self {
        self.raw = raw
            .into_iter()
            .map(|(k, v)| (k, RawJson(crate::json::one_line(v).into())))
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
        let settings = vec![
            ("instructions", get("instructions", Value::Null)),
            ("max_output_tokens", get("max_output_tokens", Value::Null)),
            ("metadata", get("metadata", json!({}))),
            (
                "parallel_tool_calls",
                get("parallel_tool_calls", json!(true)),
            ),
            (
                "reasoning",
                get("reasoning", json!({"effort": null, "summary": null})),
            ),
            ("temperature", get("temperature", Value::Null)),
            ("text", get("text", json!({"format": {"type": "text"}}))),
            ("tool_choice", get("tool_choice", json!("auto"))),
            ("tools", get("tools", json!([]))),
            ("top_p", get("top_p", Value::Null)),
            ("truncation", get("truncation", json!("disabled"))),
            ("user", get("user", Value::Null)),
        ];
        Echo {
            settings,
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
    /// Appends the object, its keys sorted (the order of the `Value` map it once was). The
    /// echoed `tools` and `instructions` are most of an agent's request (40 KB from Codex),
    /// and a stream repeats them three times: they are copied as the caller sent them, not
    /// parsed into values and written again (that was 3/4 of a translated Codex stream's
    /// CPU).
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        let usage = self.usage.as_ref().map(usage_json);
        let raw = &self.echo.raw;
        // Of a key sent twice, the last, as a map insert keeps it.
        let raw: Vec<(&'static str, Json<'_>)> = raw
            .iter()
            .enumerate()
            .filter(|(i, (k, _))| !raw[i + 1..].iter().any(|(r, _)| r == k))
            .map(|(_, (k, v))| (*k, Json::Raw(&v.0)))
            .collect();
        let mut fields: Vec<(&'static str, Out<'_, '_>)> = Vec::with_capacity(32);
        fields.extend([
            ("id", Out::Text(self.id)),
            ("object", Out::Text("response")),
            ("created_at", Out::U64(self.created_at)),
            ("status", Out::Text(self.status)),
            ("background", Out::Bool(false)),
            ("error", Out::Null),
            ("incomplete_details", Out::Value(&self.incomplete_details)),
            ("model", Out::Text(self.model)),
            (
                "output",
                Out::Array(self.output.iter().map(Out::Value).collect()),
            ),
            ("previous_response_id", Out::Null),
            ("store", Out::Bool(false)),
            ("usage", usage.as_ref().map_or(Out::Null, Out::Value)),
        ]);
        if self.status == "completed" {
            fields.push(("completed_at", Out::U64(crate::openai::chat::unix_now())));
        }
        fields.extend(
            self.echo
                .settings
                .iter()
                .filter(|(k, _)| !raw.iter().any(|(r, _)| r == k))
                .map(|(k, v)| (*k, Out::Value(v))),
        );
        fields.extend(raw.iter().map(|(k, v)| (*k, Out::Json(v))));
        fields.sort_by(|a, b| a.0.cmp(b.0));
        Out::Object(fields).write(out);
    }
}

#[cfg(test)]
mod tests;
