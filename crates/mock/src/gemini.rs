//! Gemini API wire format: `POST /v1beta/models/{model}:generateContent` and
//! `:streamGenerateContent?alt=sse`, text answers and `functionCall` parts, `usageMetadata`,
//! and Google's error bodies (`{"error":{"code","message","status"}}`).
//!
//! Like the real API, the mock refuses fields it does not know and a `functionResponse` whose
//! `response` is not an object, the two mistakes a translating gateway is most likely to make.

use std::collections::VecDeque;

use bytes::Bytes;
use http::StatusCode;
use serde_json::{json, Value};

use crate::faults::Knobs;
use crate::openai::{self, ApiError};
use crate::tools;

/// The Gemini rendering of a mock error. A refused key is a 400 INVALID_ARGUMENT with the
/// reason API_KEY_INVALID in its details, as Google sends it.
pub fn error_body(err: &ApiError) -> (StatusCode, Bytes) {
    let (status, message, details) = match err.status.as_u16() {
        401 => (
            StatusCode::BAD_REQUEST,
            "API key not valid. Please pass a valid API key.",
            json!([{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}}]),
        ),
        429 => (
            err.status,
            "Resource has been exhausted (e.g. check quota) (injected by switchyard-mock).",
            json!([]),
        ),
        _ => (err.status, &*err.message, json!([])),
    };
    let name = match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        401..=499 => "FAILED_PRECONDITION",
        _ => "INTERNAL",
    };
    let mut e = json!({"code": status.as_u16(), "message": message, "status": name});
    if details.as_array().is_some_and(|d| !d.is_empty()) {
        e["details"] = details;
    }
    (
        status,
        Bytes::from(serde_json::to_vec(&json!({ "error": e })).unwrap_or_default()),
    )
}

/// `{model}:generateContent` or `{model}:streamGenerateContent` from the path after
/// `/v1beta/models/`.
pub fn parse_method(rest: &str) -> Option<(&str, bool)> {
    let (model, method) = rest.rsplit_once(':')?;
    if model.is_empty() || model.contains('/') {
        return None;
    }
    match method {
        "generateContent" => Some((model, false)),
        "streamGenerateContent" => Some((model, true)),
        _ => None,
    }
}

/// The top-level fields of a `GenerateContentRequest` (both spellings the API accepts).
const KNOWN_FIELDS: &[&str] = &[
    "contents",
    "systemInstruction",
    "system_instruction",
    "tools",
    "toolConfig",
    "tool_config",
    "generationConfig",
    "generation_config",
    "safetySettings",
    "safety_settings",
    "cachedContent",
    "cached_content",
];

/// What a `generateContent` request asks for, validated.
pub struct Plan {
    model: String,
    prompt_tokens: u64,
    pieces: u32,
    finish: &'static str,
    call: Option<tools::Call>,
    response_id: String,
    /// Grounding with Google Search was asked for and the answer is text.
    grounded: bool,
}

fn invalid(message: String) -> ApiError {
    ApiError::status_message(StatusCode::BAD_REQUEST, message)
}

/// Validates a request and plans the reply: a function call when the request declares
/// functions, does not forbid calling them, and its last turn is not a function response;
/// text otherwise.
pub fn plan(
    model: &str,
    body: &Value,
    knobs: &Knobs,
    tool_header: Option<&str>,
) -> Result<Plan, ApiError> {
    let Some(obj) = body.as_object() else {
        return Err(invalid("Invalid JSON payload received.".into()));
    };
    if let Some(k) = obj.keys().find(|k| !KNOWN_FIELDS.contains(&k.as_str())) {
        return Err(invalid(format!(
            "Invalid JSON payload received. Unknown name \"{k}\": Cannot find field."
        )));
    }
    let contents = match obj.get("contents") {
        Some(Value::Array(c)) if !c.is_empty() => c,
        _ => {
            return Err(invalid(
                "* GenerateContentRequest.contents: contents is not specified\n".into(),
            ))
        }
    };
    let mut chars = 0usize;
    for (i, c) in contents.iter().enumerate() {
        match c.get("role").and_then(Value::as_str) {
            None | Some("user" | "model") => {}
            Some(r) => {
                return Err(invalid(format!(
                    "Please use a valid role: user, model. Got \"{r}\" in contents[{i}]."
                )))
            }
        }
        let parts = match c.get("parts").and_then(Value::as_array) {
            Some(p) if !p.is_empty() => p,
            _ => {
                return Err(invalid(format!(
                "* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty.\n"
            )))
            }
        };
        for (j, p) in parts.iter().enumerate() {
            if let Some(t) = p.get("text").and_then(Value::as_str) {
                chars += t.chars().count();
            }
            if let Some(fr) = p.get("functionResponse") {
                if !fr.get("response").is_some_and(Value::is_object) {
                    return Err(invalid(format!(
                        "Invalid JSON payload received. Invalid value at 'contents[{i}].parts[{j}].function_response.response' (type.googleapis.com/google.protobuf.Struct)"
                    )));
                }
            }
            if let Some(fc) = p.get("functionCall") {
                if !fc.get("args").is_none_or(Value::is_object) {
                    return Err(invalid(format!(
                        "Invalid JSON payload received. Invalid value at 'contents[{i}].parts[{j}].function_call.args' (type.googleapis.com/google.protobuf.Struct)"
                    )));
                }
            }
        }
    }
    if let Some(parts) = obj
        .get("systemInstruction")
        .and_then(|s| s.get("parts"))
        .and_then(Value::as_array)
    {
        chars += parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .map(|t| t.chars().count())
            .sum::<usize>();
    }
    let answered = contents.last().is_some_and(|c| {
        c.get("parts")
            .and_then(Value::as_array)
            .is_some_and(|p| p.iter().any(|p| p.get("functionResponse").is_some()))
    });
    let mode = obj
        .get("toolConfig")
        .and_then(|t| t.pointer("/functionCallingConfig/mode"))
        .and_then(Value::as_str);
    let grounded = check_tools(obj.get("tools"))?;
    let declarations: Vec<Value> = obj
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.get("functionDeclarations").and_then(Value::as_array))
        .flatten()
        .cloned()
        .collect();
    let call = if answered || mode == Some("NONE") {
        None
    } else {
        tools::choose(
            Some(&Value::Array(declarations)),
            "parametersJsonSchema",
            tool_header,
            knobs.tool_args.as_ref(),
        )
    };
    let max = obj
        .get("generationConfig")
        .and_then(|g| g.get("maxOutputTokens"))
        .and_then(Value::as_u64);
    let (pieces, finish) = match max {
        Some(m) if call.is_none() && m < u64::from(knobs.chunks) => {
            (u32::try_from(m).unwrap_or(0), "MAX_TOKENS")
        }
        _ => (knobs.chunks, "STOP"),
    };
    let mut response_id = String::new();
    response_id.extend(std::iter::repeat_with(fastrand::alphanumeric).take(22));
    Ok(Plan {
        model: model.to_string(),
        prompt_tokens: openai::estimate_tokens(chars),
        pieces,
        finish,
        grounded: grounded && call.is_none(),
        call,
        response_id,
    })
}

/// Validates `tools` as Gemini's proto JSON parser does: each entry an object of known tool
/// kinds, `google_search` (or `googleSearch`) an object holding at most a `timeRangeFilter`.
/// Returns whether Grounding with Google Search was asked for.
fn check_tools(tools: Option<&Value>) -> Result<bool, ApiError> {
    let Some(tools) = tools.filter(|t| !t.is_null()) else {
        return Ok(false);
    };
    let list = tools.as_array().ok_or_else(|| {
        invalid("Invalid JSON payload received. Invalid value at 'tools' (type.googleapis.com/google.ai.generativelanguage.v1beta.Tool)".into())
    })?;
    let mut grounded = false;
    for (i, t) in list.iter().enumerate() {
        let o = t.as_object().ok_or_else(|| {
            invalid(format!(
                "Invalid JSON payload received. Invalid value at 'tools[{i}]'"
            ))
        })?;
        for (k, v) in o {
            match k.as_str() {
                "functionDeclarations" | "function_declarations" => {}
                "googleSearch" | "google_search" => {
                    let ok = v.as_object().is_some_and(|g| {
                        g.keys()
                            .all(|k| k == "timeRangeFilter" || k == "time_range_filter")
                    });
                    if !ok {
                        return Err(invalid(format!(
                            "Invalid JSON payload received. Invalid value at 'tools[{i}].google_search' (type.googleapis.com/google.ai.generativelanguage.v1beta.Tool.GoogleSearch)"
                        )));
                    }
                    grounded = true;
                }
                "codeExecution" | "code_execution" | "urlContext" | "url_context" => {}
                _ => {
                    return Err(invalid(format!(
                        "Invalid JSON payload received. Unknown name \"{k}\" at 'tools[{i}]': Cannot find field."
                    )))
                }
            }
        }
    }
    Ok(grounded)
}

impl Plan {
    fn output_tokens(&self) -> u64 {
        match &self.call {
            Some(c) => c.pieces.len() as u64,
            None => u64::from(self.pieces),
        }
    }

    fn usage(&self, output: u64) -> Value {
        json!({
            "promptTokenCount": self.prompt_tokens,
            "candidatesTokenCount": output,
            "totalTokenCount": self.prompt_tokens + output,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": self.prompt_tokens}],
        })
    }

    fn response(&self, parts: Value, finish: Option<&str>, output: u64) -> Value {
        let mut candidate = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
        if let Some(f) = finish {
            candidate["finishReason"] = json!(f);
            if self.grounded {
                // What Grounding with Google Search adds to the answer.
                candidate["groundingMetadata"] = json!({
                    "webSearchQueries": ["mock web search"],
                    "groundingChunks": [{"web": {"uri": "https://example.com/switchyard-mock", "title": "example.com"}}],
                    "groundingSupports": [{"segment": {"startIndex": 0, "endIndex": 4, "text": "Mock"}, "groundingChunkIndices": [0]}],
                    "searchEntryPoint": {"renderedContent": "<div>mock</div>"},
                });
            }
        }
        json!({
            "candidates": [candidate],
            "usageMetadata": self.usage(output),
            "modelVersion": self.model,
            "responseId": self.response_id,
        })
    }

    fn call_part(c: &tools::Call) -> Value {
        json!({"functionCall": {"name": c.name, "args": c.input}})
    }

    /// The non-streamed `GenerateContentResponse`.
    pub fn to_json(&self) -> Bytes {
        let parts = match &self.call {
            Some(c) => json!([Self::call_part(c)]),
            None => json!([{"text": (0..self.pieces).map(openai::piece).collect::<String>()}]),
        };
        let body = self.response(parts, Some(self.finish), self.output_tokens());
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
    }

    /// The `alt=sse` stream: one chunk per piece of text (the last one with the finish reason
    /// and the final usage), or one chunk holding the whole function call.
    pub fn frames(&self) -> VecDeque<Bytes> {
        let mut out = VecDeque::new();
        match &self.call {
            Some(c) => out.push_back(data(&self.response(
                json!([Self::call_part(c)]),
                Some(self.finish),
                self.output_tokens(),
            ))),
            None if self.pieces == 0 => out.push_back(data(&self.response(
                json!([{"text": ""}]),
                Some(self.finish),
                0,
            ))),
            None => {
                for i in 0..self.pieces {
                    let last = i + 1 == self.pieces;
                    out.push_back(data(&self.response(
                        json!([{"text": openai::piece(i)}]),
                        last.then_some(self.finish),
                        u64::from(i) + 1,
                    )));
                }
            }
        }
        out
    }
}

/// One SSE event, framed with CRLF as Google's servers do.
fn data(v: &Value) -> Bytes {
    let mut out = b"data: ".to_vec();
    let _ = serde_json::to_writer(&mut out, v);
    out.extend_from_slice(b"\r\n\r\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_search_is_checked_strictly_and_grounds_the_answer() {
        let knobs = Knobs::defaults(0, 3, 0);
        let body = |tools: Value| json!({"contents": [{"role": "user", "parts": [{"text": "news?"}]}], "tools": tools});
        let plan = super::plan("gem", &body(json!([{"google_search": {}}])), &knobs, None).unwrap();
        let v: Value = serde_json::from_slice(&plan.to_json()).unwrap();
        assert!(v["candidates"][0]["groundingMetadata"]["webSearchQueries"].is_array());
        assert!(v["candidates"][0]["content"]["parts"][0]["text"].is_string());
        for bad in [
            json!([{"google_search": {"mode": "x"}}]),
            json!([{"web_search": {}}]),
            json!([{"google_search": true}]),
            json!({"google_search": {}}),
        ] {
            let e = super::plan("gem", &body(bad.clone()), &knobs, None)
                .err()
                .unwrap_or_else(|| panic!("accepted {bad}"));
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad}");
        }
    }
}
