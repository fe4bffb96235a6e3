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

/// The error of any provider: OpenAI's, Anthropic's and Gemini's shapes (see
/// [`parse_openai_error`]), then AWS's (see [`parse_aws_error`]) with `error_type` from the
/// `x-amzn-ErrorType` header.
pub fn parse_upstream_error(
    body: &[u8],
    error_type: Option<&str>,
) -> Option<(String, Option<String>)> {
    parse_openai_error(body).or_else(|| parse_aws_error(body, error_type))
}

/// What kind of failure an upstream error is, whatever the provider: what the retry and
/// fallback logic acts on, and whose fault it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamClass {
    /// The request was wrong; another attempt would fail the same way.
    Caller,
    /// The upstream refused the gateway's key (its own problem, not the caller's).
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
pub fn classify(status: u16, code: Option<&str>) -> UpstreamClass {
    match code {
        Some("API_KEY_INVALID" | "API_KEY_EXPIRED" | "API_KEY_SERVICE_BLOCKED") => {
            return UpstreamClass::KeyRejected
        }
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
        401 | 403 | 407 => UpstreamClass::KeyRejected,
        429 => UpstreamClass::RateLimited,
        503 | 529 => UpstreamClass::Overloaded,
        500..=599 => UpstreamClass::Upstream,
        _ => UpstreamClass::Caller,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_openai_shape() {
        let e = OpenAiError {
            message: "The model `x` does not exist",
            source: ErrorSource::Caller,
            code: "model_not_found",
            param: Some("model"),
        };
        let v: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], "model_not_found");
        assert_eq!(v["error"]["param"], "model");
        assert!(e.to_sse_event().starts_with(b"data: {\"error\""));
    }

    #[test]
    fn parses_upstream_errors() {
        let body = br#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
        assert_eq!(
            parse_openai_error(body),
            Some((
                "Rate limit reached".into(),
                Some("rate_limit_exceeded".into())
            ))
        );
        assert_eq!(parse_openai_error(b"<html>"), None);
    }
}
