//! Amazon Bedrock Converse: `POST /model/{modelId}/converse` and `/converse-stream` (AWS
//! event-stream framing), text answers and `toolUse` blocks with usage, and AWS's error shape
//! (`{"message"}` with the exception's name in `x-amzn-ErrorType`).
//!
//! Requests must carry a SigV4 signature, which the mock recomputes with `aws-sigv4` from its
//! own copy of the credentials, over the method, path, query, signed headers and body it
//! received. Like the real API, it refuses unknown fields, turns that do not alternate, a
//! `toolUse` input that is not an object, a `toolResult` answering no earlier call, and tool
//! blocks without a `toolConfig`: the mistakes a translating gateway is most likely to make.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use serde_json::{json, Value};

use crate::faults::Knobs;
use crate::openai::{self, ApiError};
use crate::tools;

/// AWS's limit on the difference between a request's signing time and the server's clock.
const MAX_SKEW: Duration = Duration::from_secs(15 * 60);

/// The AWS credentials the mock verifies signatures with.
#[derive(Clone)]
pub struct AwsCredentials {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
}

impl std::fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

/// The mock's error as Bedrock writes it: the body and the `x-amzn-ErrorType` value.
pub fn error_body(err: &ApiError) -> (StatusCode, Bytes, HeaderValue) {
    let (status, name, message): (StatusCode, &str, &str) =
        if err.kind.ends_with("Exception") {
            (err.status, err.kind, &*err.message)
        } else {
            match err.status.as_u16() {
            401 | 403 => (
                StatusCode::FORBIDDEN,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            ),
            429 => (
                err.status,
                "ThrottlingException",
                "Too many requests, please wait before trying again (injected by switchyard-mock).",
            ),
            400 | 405 | 413 => (StatusCode::BAD_REQUEST, "ValidationException", &*err.message),
            404 => (err.status, "ResourceNotFoundException", &*err.message),
            408 => (err.status, "ModelTimeoutException", &*err.message),
            424 => (err.status, "ModelErrorException", &*err.message),
            503 => (err.status, "ServiceUnavailableException", &*err.message),
            _ => (err.status, "InternalServerException", &*err.message),
        }
        };
    let header = HeaderValue::try_from(format!(
        "{name}:http://internal.amazon.com/coral/com.amazon.bedrock/"
    ))
    .unwrap_or(HeaderValue::from_static("InternalServerException"));
    let body = serde_json::to_vec(&json!({ "message": message })).unwrap_or_default();
    (status, Bytes::from(body), header)
}

fn exception(status: StatusCode, name: &'static str, message: impl Into<String>) -> ApiError {
    let message: String = message.into();
    let mut e = ApiError::status_message(status, message);
    e.kind = name;
    e
}

fn validation(message: impl Into<String>) -> ApiError {
    exception(StatusCode::BAD_REQUEST, "ValidationException", message)
}

/// `{modelId}/converse` or `{modelId}/converse-stream` from the path after `/model/`; the
/// model id is still percent-encoded.
pub fn parse_path(rest: &str) -> Option<(&str, bool)> {
    let (model, op) = rest.rsplit_once('/')?;
    if model.is_empty() || model.contains('/') {
        return None;
    }
    match op {
        "converse" => Some((model, false)),
        "converse-stream" => Some((model, true)),
        _ => None,
    }
}

/// Decodes `%XX` escapes (a model id in a path).
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The access key id a SigV4 `Authorization` header names.
pub fn access_key_id(headers: &HeaderMap) -> Option<&str> {
    let auth = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let cred = auth.split_once("Credential=")?.1;
    cred.split('/').next()
}

/// Checks the SigV4 signature of a request by signing it again.
pub fn verify_signature(
    creds: &AwsCredentials,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), ApiError> {
    let denied = |why: &str| {
        exception(
            StatusCode::FORBIDDEN,
            "InvalidSignatureException",
            format!(
                "The request signature we calculated does not match the signature you provided. \
                 Check your AWS Secret Access Key and signing method. ({why})"
            ),
        )
    };
    let auth = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            exception(
                StatusCode::FORBIDDEN,
                "MissingAuthenticationTokenException",
                "Missing Authentication Token",
            )
        })?;
    let rest = auth
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or_else(|| denied("not AWS4-HMAC-SHA256"))?;
    let field = |name: &str| {
        rest.split(',')
            .map(str::trim)
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
    };
    let credential = field("Credential").ok_or_else(|| denied("no Credential"))?;
    let signed_headers = field("SignedHeaders").ok_or_else(|| denied("no SignedHeaders"))?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [akid, _date, region, service, "aws4_request"] = scope[..] else {
        return Err(denied("malformed credential scope"));
    };
    if akid != creds.access_key_id {
        return Err(exception(
            StatusCode::FORBIDDEN,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ));
    }
    if service != "bedrock" {
        return Err(denied("the credential scope's service is not bedrock"));
    }
    let amz_date = headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| denied("no x-amz-date"))?;
    let time = parse_amz_date(amz_date).ok_or_else(|| denied("malformed x-amz-date"))?;
    let now = SystemTime::now();
    let skew = now
        .duration_since(time)
        .or_else(|_| time.duration_since(now))
        .unwrap_or_default();
    if skew > MAX_SKEW {
        return Err(exception(
            StatusCode::FORBIDDEN,
            "InvalidSignatureException",
            "Signature expired: the request time is too far from the server time.",
        ));
    }
    let token = headers
        .get("x-amz-security-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut signed = Vec::new();
    for name in signed_headers.split(';') {
        // The signer adds these two from the time and the credentials.
        if name == "x-amz-date" || name == "x-amz-security-token" {
            continue;
        }
        let value = headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| denied("a signed header is missing"))?;
        signed.push((name, value));
    }
    let host = headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| denied("no host header"))?;
    let full_uri = format!(
        "http://{host}{}",
        uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let identity: Identity = Credentials::new(
        &creds.access_key_id,
        &creds.secret_access_key,
        token,
        None,
        "switchyard-mock",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| denied(&e.to_string()))?
        .into();
    let request = SignableRequest::new(
        method.as_str(),
        full_uri,
        signed.into_iter(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| denied(&e.to_string()))?;
    let (instructions, _) = sign(request, &params)
        .map_err(|e| denied(&e.to_string()))?
        .into_parts();
    let (expected, _) = instructions.into_parts();
    let expected = expected
        .iter()
        .find(|h| h.name().eq_ignore_ascii_case("authorization"))
        .map(|h| h.value().to_string())
        .ok_or_else(|| denied("no signature computed"))?;
    if expected != auth {
        return Err(denied("signature mismatch"));
    }
    Ok(())
}

/// `YYYYMMDDTHHMMSSZ` → a time.
fn parse_amz_date(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hh, mm, ss) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

const KNOWN_FIELDS: &[&str] = &[
    "messages",
    "system",
    "inferenceConfig",
    "toolConfig",
    "guardrailConfig",
    "additionalModelRequestFields",
    "additionalModelResponseFieldPaths",
    "promptVariables",
    "requestMetadata",
    "performanceConfig",
];

/// What a Converse request asks for, validated.
pub struct Plan {
    prompt_tokens: u64,
    pieces: u32,
    stop: &'static str,
    call: Option<tools::Call>,
}

/// Validates a request and plans the reply: a tool call when the request has tools and its
/// last turn does not answer a call; text otherwise.
pub fn plan(body: &Value, knobs: &Knobs, tool_header: Option<&str>) -> Result<Plan, ApiError> {
    let Some(obj) = body.as_object() else {
        return Err(validation(
            "Malformed input request, please reformat your input and try again.",
        ));
    };
    if let Some(k) = obj.keys().find(|k| !KNOWN_FIELDS.contains(&k.as_str())) {
        return Err(validation(format!(
            "Malformed input request: extraneous key [{k}] is not permitted, please reformat your input and try again."
        )));
    }
    let messages = match obj.get("messages") {
        Some(Value::Array(m)) if !m.is_empty() => m,
        _ => return Err(validation("A conversation must start with a user message. Try again with a conversation that starts with a user message.")),
    };
    let tool_config = obj.get("toolConfig");
    let mut chars = 0usize;
    let mut call_ids: Vec<&str> = Vec::new();
    let mut last_role = "";
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
        if !matches!(role, "user" | "assistant") {
            return Err(validation(format!(
                "messages.{i}.role: must be user or assistant"
            )));
        }
        if i == 0 && role != "user" {
            return Err(validation("A conversation must start with a user message. Try again with a conversation that starts with a user message."));
        }
        if role == last_role {
            return Err(validation("A conversation must alternate between user and assistant roles. Make sure the conversation alternates between user and assistant roles and try again."));
        }
        last_role = role;
        let content = match m.get("content").and_then(Value::as_array) {
            Some(c) if !c.is_empty() => c,
            _ => {
                return Err(validation(format!(
                    "messages.{i}.content: must not be empty"
                )))
            }
        };
        for (j, b) in content.iter().enumerate() {
            let at = format!("messages.{i}.content.{j}");
            if let Some(t) = b.get("text") {
                let t = t.as_str().unwrap_or_default();
                if t.trim().is_empty() {
                    return Err(validation(format!("The text field in the ContentBlock object at {at} is blank. Add text to the text field, and try again.")));
                }
                chars += t.chars().count();
            } else if let Some(u) = b.get("toolUse") {
                if role != "assistant" || !u.get("input").is_some_and(Value::is_object) {
                    return Err(validation(format!(
                        "{at}.toolUse: input must be an object, in an assistant turn"
                    )));
                }
                call_ids.push(
                    u.get("toolUseId")
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                );
            } else if let Some(r) = b.get("toolResult") {
                let id = r
                    .get("toolUseId")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if role != "user" || !call_ids.contains(&id) {
                    return Err(validation(format!("{at}.toolResult: the toolUseId {id} does not match a toolUse block of the previous turn")));
                }
                for c in r
                    .get("content")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    chars += c
                        .get("text")
                        .and_then(Value::as_str)
                        .map_or(0, |t| t.chars().count());
                }
            } else if let Some(img) = b.get("image") {
                if img
                    .pointer("/source/bytes")
                    .and_then(Value::as_str)
                    .is_none()
                {
                    return Err(validation(format!("{at}.image.source: bytes are required")));
                }
            } else if b.get("reasoningContent").is_none() {
                return Err(validation(format!("{at}: unknown content block")));
            }
            if (b.get("toolUse").is_some() || b.get("toolResult").is_some())
                && tool_config.is_none()
            {
                return Err(validation("The toolConfig field must be defined when using toolUse and toolResult content blocks."));
            }
        }
    }
    for s in obj
        .get("system")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        chars += s
            .get("text")
            .and_then(Value::as_str)
            .map_or(0, |t| t.chars().count());
    }
    let answered = messages.last().is_some_and(|m| {
        m.get("content")
            .and_then(Value::as_array)
            .is_some_and(|c| c.iter().any(|b| b.get("toolResult").is_some()))
    });
    let specs: Vec<Value> = tool_config
        .and_then(|t| t.get("tools"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| {
            let s = t.get("toolSpec")?;
            Some(json!({"name": s.get("name")?, "schema": s.pointer("/inputSchema/json")?}))
        })
        .collect();
    let call = if answered {
        None
    } else {
        tools::choose(
            Some(&Value::Array(specs)),
            "schema",
            tool_header,
            knobs.tool_args.as_ref(),
        )
    };
    let max = obj
        .get("inferenceConfig")
        .and_then(|c| c.get("maxTokens"))
        .and_then(Value::as_u64);
    let (pieces, stop) = match max {
        Some(m) if call.is_none() && m < u64::from(knobs.chunks) => {
            (u32::try_from(m).unwrap_or(0), "max_tokens")
        }
        _ => (
            knobs.chunks,
            if call.is_some() {
                "tool_use"
            } else {
                "end_turn"
            },
        ),
    };
    Ok(Plan {
        prompt_tokens: openai::estimate_tokens(chars),
        pieces,
        stop,
        call: call.map(|mut c| {
            c.id = format!("tooluse_mock{}", fastrand::u32(..));
            c
        }),
    })
}

impl Plan {
    fn output_tokens(&self) -> u64 {
        match &self.call {
            Some(c) => c.pieces.len() as u64,
            None => u64::from(self.pieces),
        }
    }

    fn usage(&self) -> Value {
        let out = self.output_tokens();
        json!({"inputTokens": self.prompt_tokens, "outputTokens": out, "totalTokens": self.prompt_tokens + out})
    }

    /// The non-streamed Converse response.
    pub fn to_json(&self) -> Bytes {
        let content = match &self.call {
            Some(c) => json!([{"toolUse": {"toolUseId": c.id, "name": c.name, "input": c.input}}]),
            None => json!([{"text": (0..self.pieces).map(openai::piece).collect::<String>()}]),
        };
        let body = json!({
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": self.stop,
            "usage": self.usage(),
            "metrics": {"latencyMs": 1},
        });
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
    }

    /// The ConverseStream events, one event-stream message each.
    pub fn frames(&self) -> VecDeque<Bytes> {
        let mut out = VecDeque::new();
        out.push_back(event("messageStart", &json!({"role": "assistant"})));
        match &self.call {
            Some(c) => {
                out.push_back(event(
                    "contentBlockStart",
                    &json!({"contentBlockIndex": 0, "start": {"toolUse": {"toolUseId": c.id, "name": c.name}}}),
                ));
                for p in &c.pieces {
                    out.push_back(event(
                        "contentBlockDelta",
                        &json!({"contentBlockIndex": 0, "delta": {"toolUse": {"input": p}}}),
                    ));
                }
            }
            None => {
                for i in 0..self.pieces {
                    out.push_back(event(
                        "contentBlockDelta",
                        &json!({"contentBlockIndex": 0, "delta": {"text": openai::piece(i)}}),
                    ));
                }
            }
        }
        out.push_back(event("contentBlockStop", &json!({"contentBlockIndex": 0})));
        out.push_back(event("messageStop", &json!({"stopReason": self.stop})));
        out.push_back(event(
            "metadata",
            &json!({"usage": self.usage(), "metrics": {"latencyMs": 1}}),
        ));
        out
    }
}

fn event(kind: &str, payload: &Value) -> Bytes {
    let payload = serde_json::to_vec(payload).unwrap_or_default();
    Bytes::from(encode_message(
        &[
            (":event-type", kind),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        &payload,
    ))
}

/// One event-stream message with string headers: prelude (total and headers lengths, CRC-32
/// of the two), headers, payload, CRC-32 of everything before it.
pub fn encode_message(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    for (name, value) in headers {
        h.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
        h.extend_from_slice(name.as_bytes());
        h.push(7);
        h.extend_from_slice(&u16::try_from(value.len()).unwrap_or(u16::MAX).to_be_bytes());
        h.extend_from_slice(value.as_bytes());
    }
    let total = 12 + h.len() + payload.len() + 4;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&u32::try_from(total).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(&u32::try_from(h.len()).unwrap_or(u32::MAX).to_be_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amz_dates() {
        assert_eq!(
            parse_amz_date("20150830T123600Z"),
            Some(UNIX_EPOCH + Duration::from_secs(1_440_938_160))
        );
        assert_eq!(parse_amz_date("2015-08-30T12:36:00Z"), None);
    }

    #[test]
    fn paths() {
        assert_eq!(
            parse_path("anthropic.claude-v2%3A1/converse-stream"),
            Some(("anthropic.claude-v2%3A1", true))
        );
        assert_eq!(parse_path("m/invoke"), None);
        assert_eq!(percent_decode("a%3A1").as_deref(), Some("a:1"));
    }
}
