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

/// Pulls `error.message` and `error.code` (or `error.type`) out of an upstream's
/// OpenAI-shaped error body, so the caller sees the provider's reason.
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
    }
    let env: Env = serde_json::from_slice(body).ok()?;
    let code = match env.error.code {
        Some(serde_json::Value::String(s)) => Some(s),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => env.error.type_,
    };
    Some((env.error.message.unwrap_or_default(), code))
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
