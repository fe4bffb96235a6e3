//! Error bodies in the caller's own format.

use bytes::Bytes;
use serde::Serialize;

/// Who caused an error. It becomes the `type` of the error body, so a caller can tell its
/// own mistakes from the gateway's and the upstream's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorSource {
    /// The request was wrong (bad JSON, unknown model, too large …).
    Caller,
    /// The gateway could not serve a valid request (no healthy backend, misconfiguration …).
    Gateway,
    /// The upstream provider failed or refused.
    Upstream,
}

/// An error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenAiError<'a> {
    /// Human-readable message.
    pub message: &'a str,
    /// Who caused it.
    pub source: ErrorSource,
    /// A stable machine-readable code, e.g. `model_not_found`.
    pub code: &'a str,
    /// The request parameter at fault, if any.
    pub param: Option<&'a str>,
}

/// The `type` OpenAI itself uses for an exhausted quota; budgets use it so SDKs and tools
/// recognise the condition.
pub const INSUFFICIENT_QUOTA: &str = "insufficient_quota";

#[derive(Serialize)]
struct Envelope<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    type_: &'a str,
    param: Option<&'a str>,
    code: &'a str,
}

impl OpenAiError<'_> {
    /// The `type` field: OpenAI's own name for caller errors, so SDKs and tools that look at
    /// it behave as with OpenAI; explicit names for the gateway's and the upstream's.
    pub fn type_name(&self) -> &'static str {
        match self.source {
            ErrorSource::Caller => "invalid_request_error",
            ErrorSource::Gateway => "gateway_error",
            ErrorSource::Upstream => "upstream_error",
        }
    }

    /// The JSON body.
    pub fn to_json(&self) -> Bytes {
        let env = Envelope {
            error: Inner {
                message: self.message,
                type_: if self.code == INSUFFICIENT_QUOTA {
                    INSUFFICIENT_QUOTA
                } else {
                    self.type_name()
                },
                param: self.param,
                code: self.code,
            },
        };
        // Serialising plain strings into a Vec cannot fail.
        Bytes::from(serde_json::to_vec(&env).unwrap_or_default())
    }

    /// The error as one SSE event, to end a stream that has already started.
    pub fn to_sse_event(&self) -> Bytes {
        let json = self.to_json();
        let mut out = Vec::with_capacity(json.len() + 8);
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&json);
        out.extend_from_slice(b"\n\n");
        Bytes::from(out)
    }
}

/// Pulls the message and a machine-readable code out of an upstream's error body, whichever
/// provider wrote it: OpenAI's `{"error":{"message","type","code"}}`, Anthropic's
/// `{"type":"error","error":{"type","message"}}`, and Gemini's
/// `{"error":{"code":429,"message","status":"RESOURCE_EXHAUSTED","details":[…]}}`. For Gemini
/// the status name is the code (its numeric `code` only repeats the HTTP status), except for a
/// refused key, where the reason in the details (`API_KEY_INVALID`) says more than the
/// `INVALID_ARGUMENT` it comes with.
pub fn parse_openai_error(body: &[u8]) -> Option<(String, Option<String>)> {
    #[derive(serde::Deserialize)]
    struct Env {
        error: ErrBody,
    }
    #[derive(serde::Deserialize)]
    struct ErrBody {
        #[serde(default)]
        message: Option<String>,
        #[serde(default)]
        code: Option<serde_json::Value>,
        #[serde(default, rename = "type")]
        type_: Option<String>,
        #[serde(default)]
        status: Option<String>,
        #[serde(default)]
        details: Option<Vec<serde_json::Value>>,
    }
    let env: Env = serde_json::from_slice(body).ok()?;
    let e = env.error;
    let key_reason = e
        .details
        .iter()
        .flatten()
        .filter_map(|d| d.get("reason").and_then(serde_json::Value::as_str))
        .find(|r| r.starts_with("API_KEY_"))
        .map(str::to_string);
    let code = match e.code {
        Some(serde_json::Value::String(s)) => Some(s),
        Some(serde_json::Value::Number(n)) => {
            key_reason.or(e.status).or(e.type_).or(Some(n.to_string()))
        }
        _ => e.type_.or(e.status),
    };
    Some((e.message.unwrap_or_default(), code))
}

/// Pulls the message and code out of an AWS JSON error (Bedrock): the body is
/// `{"message": "..."}` and the exception's name comes in the `x-amzn-ErrorType` header
/// (`ThrottlingException:http://internal.amazon.com/coral/...`), or failing that in the body's
/// `__type`.
pub fn parse_aws_error(body: &[u8], error_type: Option<&str>) -> Option<(String, Option<String>)> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let o = v.as_object()?;
    let message = o
        .get("message")
        .or_else(|| o.get("Message"))
        .and_then(serde_json::Value::as_str);
    let type_ = error_type
        .or_else(|| o.get("__type").and_then(serde_json::Value::as_str))
        .map(aws_error_name);
    if message.is_none() && type_.is_none() {
        return None;
    }
    Some((message.unwrap_or_default().to_string(), type_))
}

/// `ThrottlingException:http://…` and `com.amazon.coral#ThrottlingException` → the name.
fn aws_error_name(s: &str) -> String {
    let s = s.split(':').next().unwrap_or(s);
    s.rsplit('#').next().unwrap_or(s).trim().to_string()
}

/// Pulls the message out of the bare `{"error": "…"}` that OpenAI-compatible servers answer
/// with outside OpenAI's shape (vLLM's 401, text-generation-inference's errors with their
/// `error_type`, Ollama's native API).
fn parse_error_string(body: &[u8]) -> Option<(String, Option<String>)> {
    #[derive(serde::Deserialize)]
    struct Env {
        error: String,
        #[serde(default)]
        error_type: Option<String>,
    }
    let env: Env = serde_json::from_slice(body).ok()?;
    Some((env.error, env.error_type))
}

/// The error of any provider: OpenAI's, Anthropic's and Gemini's shapes (see
/// [`parse_openai_error`]), then AWS's (see [`parse_aws_error`]) with `error_type` from the
/// `x-amzn-ErrorType` header, then the bare `{"error": "…"}` of OpenAI-compatible servers.
/// `None` means no provider wrote the body (see [`read_upstream_error`]).
pub fn parse_upstream_error(
    body: &[u8],
    error_type: Option<&str>,
) -> Option<(String, Option<String>)> {
    parse_openai_error(body)
        .or_else(|| parse_aws_error(body, error_type))
        .or_else(|| parse_error_string(body))
}

/// Who wrote an upstream's error answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorOrigin {
    /// The provider: the body is in a provider's error format, and its status says whose
    /// fault the error is.
    Provider,
    /// Something between the gateway and the provider (an edge, a proxy, a WAF): the body is
    /// in no provider's error format (an HTML page, plain text, nothing). Its 4xx is no
    /// verdict on the caller's request, which the provider never saw.
    Intermediary,
}

/// An upstream's error answer, read: what to tell the caller and what kind of failure it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamError {
    /// The provider's message; for an intermediary's body, a short summary of it beginning
    /// with `with` ("with a body that is not openai's error format (text/html, 157 bytes):
    /// \"400 Bad Request\""), never the body itself.
    pub message: String,
    /// The provider's machine-readable code, if it gave one.
    pub code: Option<String>,
    /// What the retry and fallback logic acts on.
    pub class: UpstreamClass,
    /// Who wrote the body.
    pub origin: ErrorOrigin,
}

/// Reads an upstream's non-success answer. A body in a provider's error format is the
/// provider's word: its message and code, classified by [`classify`]. Any other body was
/// written by something between the gateway and the provider, and is classified by
/// [`classify_intermediary`]; `provider` (the backend's provider, e.g. `openai`) names the
/// format it was expected in. Only runs on the error path.
pub fn read_upstream_error(
    status: u16,
    body: &[u8],
    content_type: Option<&str>,
    aws_error_type: Option<&str>,
    provider: &str,
) -> UpstreamError {
    match parse_upstream_error(body, aws_error_type) {
        Some((message, code)) => UpstreamError {
            class: match classify(status, code.as_deref()) {
                // OpenAI answers a restricted key's missing scope with a 401 whose message
                // says so: the key may not do this, which says nothing of other requests.
                UpstreamClass::KeyRejected if status == 401 && lacks_permission(&message) => {
                    UpstreamClass::Caller
                }
                class => class,
            },
            message,
            code,
            origin: ErrorOrigin::Provider,
        },
        None => UpstreamError {
            message: summarize_body(body, content_type, provider),
            code: None,
            class: classify_intermediary(status),
            origin: ErrorOrigin::Intermediary,
        },
    }
}

/// Whether a provider's refusal says the key lacks a permission or scope (rather than being
/// invalid): OpenAI's "You have insufficient permissions for this operation. Missing scopes:
/// …", and the like.
fn lacks_permission(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "insufficient permission",
        "missing scope",
        "permission denied",
        "not have access",
    ]
    .iter()
    .any(|p| m.contains(p))
}

/// What kind of failure an upstream error is, whatever the provider: what the retry and
/// fallback logic acts on, and whose fault it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamClass {
    /// The request was wrong, or asked for something the key may not do (a model, an
    /// operation or a scope it has no access to); another attempt would fail the same way,
    /// and the key stays good for other requests.
    Caller,
    /// The upstream refused the gateway's key as invalid (its own problem, not the caller's):
    /// it fails every request, whatever is asked.
    KeyRejected,
    /// A rate limit or quota of the upstream account.
    RateLimited,
    /// The upstream is overloaded or unavailable for now.
    Overloaded,
    /// The upstream failed.
    Upstream,
}

/// Classifies an upstream error from its status and the code [`parse_openai_error`] found.
/// The status decides, except where a provider's status says less than its code: Gemini
/// refuses a bad key with 400.
///
/// A key is only ever called invalid ([`UpstreamClass::KeyRejected`]) by a 401 or by a code
/// that says so (OpenAI's `invalid_api_key`, Anthropic's `authentication_error`, Gemini's
/// `API_KEY_INVALID`, AWS's signature and token errors): that is what takes a key out of
/// service. A 403, `permission_error`, `model_not_found` or `AccessDeniedException` says the
/// key may not do what this request asks (another model may be fine), which a caller can
/// provoke at will: it is the caller's error for that request, and no key is disabled for it
/// (else one caller asking for a model the keys cannot use would disable the whole pool).
pub fn classify(status: u16, code: Option<&str>) -> UpstreamClass {
    match code {
        Some(
            "API_KEY_INVALID"
            | "API_KEY_EXPIRED"
            | "API_KEY_SERVICE_BLOCKED"
            | "invalid_api_key"
            | "authentication_error",
        ) => return UpstreamClass::KeyRejected,
        Some(
            "permission_error"
            | "permission_denied"
            | "PERMISSION_DENIED"
            | "model_not_found"
            | "AccessDeniedException",
        ) => return UpstreamClass::Caller,
        Some("RESOURCE_EXHAUSTED") => return UpstreamClass::RateLimited,
        // Bedrock's: the names say more than the statuses (a quota is a 400, a model still
        // loading a 429, a bad signature or unknown access key a 403).
        Some("ThrottlingException" | "ServiceQuotaExceededException") => {
            return UpstreamClass::RateLimited
        }
        Some("ModelNotReadyException" | "ServiceUnavailableException") => {
            return UpstreamClass::Overloaded
        }
        Some(
            "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "IncompleteSignatureException"
            | "ExpiredTokenException"
            | "MissingAuthenticationTokenException",
        ) => return UpstreamClass::KeyRejected,
        Some(
            "ModelTimeoutException"
            | "ModelErrorException"
            | "ModelStreamErrorException"
            | "InternalServerException",
        ) => return UpstreamClass::Upstream,
        _ => {}
    }
    match status {
        401 | 407 => UpstreamClass::KeyRejected,
        429 => UpstreamClass::RateLimited,
        503 | 529 => UpstreamClass::Overloaded,
        500..=599 => UpstreamClass::Upstream,
        _ => UpstreamClass::Caller,
    }
}

/// Classifies an error whose body no provider wrote (see [`ErrorOrigin::Intermediary`]).
/// Only a 401 says something about the gateway's credentials, whoever asked for them, and a
/// 429 or 503 is a limit or an overload whoever reports it. Any other refusal (an edge's
/// 400, a WAF's 403, a forward proxy's 407, a misrouted 404 or 301) is an upstream failure:
/// it counts against the backend's health and moves on like a 5xx, so a fallback can serve
/// the request. It is never the caller's error, and never a reason to take a key out of the
/// pool (a WAF's 403 would otherwise disable every key in turn).
pub fn classify_intermediary(status: u16) -> UpstreamClass {
    match status {
        401 => UpstreamClass::KeyRejected,
        429 => UpstreamClass::RateLimited,
        503 | 529 => UpstreamClass::Overloaded,
        _ => UpstreamClass::Upstream,
    }
}

/// How much of a body [`summarize_body`] looks at: enough for an error page's `<title>`.
const SUMMARY_SCAN_BYTES: usize = 4096;
/// The most characters of a body [`summarize_body`] quotes.
const SUMMARY_CHARS: usize = 100;

/// A short account of a body no provider wrote: its media type, size and title (or first
/// words, tags stripped and whitespace collapsed). The body itself may be kilobytes of HTML
/// that no caller should have to read as an error message.
fn summarize_body(body: &[u8], content_type: Option<&str>, provider: &str) -> String {
    let media = content_type
        .and_then(|c| c.split(';').next())
        .map(str::trim)
        .filter(|m| !m.is_empty());
    if body.is_empty() {
        return match media {
            Some(m) => format!("with an empty body ({m}) instead of {provider}'s error format"),
            None => format!("with an empty body instead of {provider}'s error format"),
        };
    }
    let head = String::from_utf8_lossy(&body[..body.len().min(SUMMARY_SCAN_BYTES)]);
    let html = media.is_some_and(|m| m.contains("html")) || head.trim_start().starts_with('<');
    let text = match html_title(&head) {
        Some(title) => title.to_string(),
        None if html => strip_tags(&head),
        None => head.into_owned(),
    };
    let mut quoted = String::with_capacity(SUMMARY_CHARS + 3);
    let mut chars = 0;
    for word in text.split_whitespace() {
        if chars > SUMMARY_CHARS {
            break;
        }
        if chars > 0 {
            quoted.push(' ');
            chars += 1;
        }
        quoted.push_str(word);
        chars += word.chars().count();
    }
    if let Some((cut, _)) = quoted.char_indices().nth(SUMMARY_CHARS) {
        quoted.truncate(cut);
        quoted.push('…');
    }
    let what = format!(
        "with a body that is not {provider}'s error format ({}, {} bytes)",
        media.unwrap_or("no content type"),
        body.len()
    );
    if quoted.is_empty() {
        what
    } else {
        format!("{what}: \"{quoted}\"")
    }
}

/// The text of an HTML page's `<title>`, if it has a non-blank one.
fn html_title(page: &str) -> Option<&str> {
    // ASCII lowercasing keeps byte offsets, so they index `page` too.
    let lower = page.to_ascii_lowercase();
    let open = lower.find("<title")?;
    let start = open + lower[open..].find('>')? + 1;
    let end = start + lower[start..].find("</title")?;
    Some(page[start..end].trim()).filter(|t| !t.is_empty())
}

/// The text of an HTML fragment without its tags (a tag cut off at the end is dropped).
fn strip_tags(page: &str) -> String {
    let mut out = String::with_capacity(page.len());
    let mut in_tag = false;
    for c in page.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push(' ');
            }
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests;
