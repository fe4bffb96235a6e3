//! Anthropic Messages API wire format: inbound passthrough with model rewrite, conversion to
//! and from the internal chat model (`convert`), stream transcoding (`stream`), usage and
//! error shapes.
//!
//! When the caller and the backend both speak Anthropic the request is not modelled at all:
//! like [`crate::openai::Request`], the top-level object is split into raw fields, `model` is
//! rewritten and everything else (thinking signatures, `cache_control`, beta fields) is copied
//! byte for byte.

use std::borrow::Cow;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{openai::DecodeError, rewrite::Rewrite, Usage};

mod convert;
mod stream;
pub(crate) mod wire;

pub use convert::{decode_request, decode_response, encode_request, encode_response};
pub use stream::{StreamDecoder, StreamEncoder};

/// The API version sent to Anthropic backends when the caller did not choose one.
pub const API_VERSION: &str = "2023-06-01";

/// `max_tokens` sent to Anthropic when an OpenAI caller set none: the Messages API requires
/// the parameter, and this is large enough not to cut ordinary answers short.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// Which Anthropic endpoint a request is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/messages`.
    Messages,
    /// `POST /v1/messages/count_tokens`.
    CountTokens,
}

/// An Anthropic request decoded just enough to route and forward it.
pub struct Request<'a> {
    /// The caller's body, which `fields` borrow from.
    body: &'a [u8],
    fields: Vec<crate::openai::Field<'a>>,
    /// The model the client asked for.
    pub model: Cow<'a, str>,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// The client's `max_tokens`.
    pub max_tokens: Option<u64>,
}

impl<'a> Request<'a> {
    /// The body's top-level fields, raw, in order (for the affinity key).
    pub fn raw_fields(&self) -> impl Iterator<Item = (&str, &str)> + Clone {
        self.fields.iter().map(|(k, v)| (k.as_ref(), *v))
    }

    /// Decodes the body of a Messages (or count_tokens) request.
    pub fn decode(endpoint: Endpoint, body: &'a [u8]) -> Result<Self, DecodeError> {
        let fields = crate::openai::split_fields(body)?;
        let mut model = None;
        let mut stream = false;
        let mut max_tokens = None;
        let mut has_messages = false;
        for (k, v) in &fields {
            match k.as_ref() {
                "model" => {
                    model = Some(
                        Cow::deserialize(&mut serde_json::Deserializer::from_str(v)).map_err(
                            |_| DecodeError::Type {
                                param: "model",
                                expected: "a string",
                            },
                        )?,
                    )
                }
                "stream" => {
                    stream = match *v {
                        "true" => true,
                        "false" | "null" => false,
                        _ => {
                            return Err(DecodeError::Type {
                                param: "stream",
                                expected: "a boolean",
                            })
                        }
                    }
                }
                "max_tokens" => {
                    max_tokens =
                        serde_json::from_str::<Option<u64>>(v).map_err(|_| DecodeError::Type {
                            param: "max_tokens",
                            expected: "a non-negative integer",
                        })?
                }
                "messages" => has_messages = *v != "null",
                _ => {}
            }
        }
        let model: Cow<'a, str> = model
            .filter(|m: &Cow<'a, str>| !m.is_empty())
            .ok_or(DecodeError::Missing("model"))?;
        if !has_messages {
            return Err(DecodeError::Missing("messages"));
        }
        match endpoint {
            // The Messages API itself refuses a request without max_tokens: say so before
            // spending an upstream call, in the same words.
            Endpoint::Messages if max_tokens.is_none() => {
                return Err(DecodeError::Missing("max_tokens"))
            }
            Endpoint::CountTokens if stream => return Err(DecodeError::StreamUnsupported),
            _ => {}
        }
        Ok(Request {
            body,
            fields,
            model,
            stream,
            max_tokens,
        })
    }

    /// The upstream body for an Anthropic backend: `model` replaced, all else byte for byte.
    pub fn rewrite(&self, upstream_model: &str) -> Rewrite {
        crate::openai::model_only(self.body, &self.fields, upstream_model, None)
    }

    /// [`Request::rewrite`] written out whole.
    pub fn encode(&self, upstream_model: &str) -> Vec<u8> {
        self.rewrite(upstream_model).to_vec(self.body)
    }

    /// A rough token count of the prompt (bytes / 4).
    pub fn estimated_input_tokens(&self) -> u64 {
        let bytes: usize = self.fields.iter().map(|(_, v)| v.len()).sum();
        (bytes as u64).div_ceil(4)
    }
}

/// Anthropic's `usage` object. `input_tokens` excludes cache reads and writes; the gateway's
/// [`Usage::input_tokens`] includes both (it is what the prompt cost in tokens).
#[derive(Deserialize, Serialize, Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireUsage {
    /// Uncached input tokens.
    #[serde(default)]
    pub input_tokens: Option<u64>,
    /// Output tokens.
    #[serde(default)]
    pub output_tokens: Option<u64>,
    /// Input tokens written to the prompt cache.
    #[serde(default)]
    pub cache_creation_input_tokens: Option<u64>,
    /// Input tokens read from the prompt cache.
    #[serde(default)]
    pub cache_read_input_tokens: Option<u64>,
}

impl WireUsage {
    /// In the gateway's terms.
    pub fn to_usage(self) -> Usage {
        let read = self.cache_read_input_tokens.unwrap_or(0);
        let write = self.cache_creation_input_tokens.unwrap_or(0);
        Usage {
            // The upstream's numbers: saturate rather than wrap (or panic) on absurd ones.
            input_tokens: self
                .input_tokens
                .unwrap_or(0)
                .saturating_add(read)
                .saturating_add(write),
            output_tokens: self.output_tokens.unwrap_or(0),
            cached_input_tokens: read,
            cache_write_tokens: write,
        }
    }

    /// From the gateway's terms: reads and writes split out of the input, as Anthropic
    /// reports them.
    pub fn from_usage(u: &Usage) -> Self {
        WireUsage {
            input_tokens: Some(u.uncached_input_tokens()),
            output_tokens: Some(u.output_tokens),
            cache_creation_input_tokens: Some(u.cache_write_tokens),
            cache_read_input_tokens: Some(u.cached_input_tokens),
        }
    }
}

/// Usage and stop reason of a complete (non-streamed) Messages response, decoding only those
/// two members (see [`crate::scan`]), and whether the body is well-formed, checked in the
/// same pass.
pub fn inspect_response(body: &[u8]) -> crate::openai::ResponseInfo {
    let mut info = crate::openai::ResponseInfo::default();
    let mut c = crate::scan::Cursor::new(body);
    if !c.enter(b'{') {
        return info;
    }
    while let Some(key) = c.key() {
        let Some(value) = c.value() else { break };
        if crate::scan::key_is(key, "usage") {
            info.usage = serde_json::from_slice::<Option<WireUsage>>(value)
                .ok()
                .flatten()
                .map(WireUsage::to_usage);
        } else if crate::scan::key_is(key, "stop_reason") {
            info.finish_reason = serde_json::from_slice(value).ok().flatten();
        }
    }
    info.well_formed = c.complete();
    info
}

/// The `type` of an Anthropic error for an HTTP status, as the Messages API uses them.
pub fn error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

/// An error body in Anthropic's shape:
/// `{"type":"error","error":{"type":"…","message":"…"}}`.
pub fn error_json(error_type: &str, message: &str) -> Bytes {
    #[derive(Serialize)]
    struct Env<'a> {
        #[serde(rename = "type")]
        t: &'static str,
        error: Inner<'a>,
    }
    #[derive(Serialize)]
    struct Inner<'a> {
        #[serde(rename = "type")]
        t: &'a str,
        message: &'a str,
    }
    let env = Env {
        t: "error",
        error: Inner {
            t: error_type,
            message,
        },
    };
    Bytes::from(serde_json::to_vec(&env).unwrap_or_default())
}

/// The error as an SSE `error` event, to end a stream that has already started.
pub fn error_sse_event(error_type: &str, message: &str) -> Bytes {
    let json = error_json(error_type, message);
    let mut out = Vec::with_capacity(json.len() + 24);
    out.extend_from_slice(b"event: error\ndata: ");
    out.extend_from_slice(&json);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests;
