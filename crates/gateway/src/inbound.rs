//! The decoded inbound request and, per target, how it reaches the backend: byte-level
//! passthrough when caller and backend speak the same format (model rewritten, nothing else
//! touched), or translation through the internal chat model when they do not.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use switchyard_providers::{
    anthropic, openai,
    openai::chat::Dialect,
    transcode::{self, Format},
    Operation,
};
use switchyard_router::Provider;

use crate::error::GatewayError;

/// A request decoded just enough to route it, in the caller's format.
pub(crate) enum Inbound<'a> {
    /// `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`.
    OpenAi {
        op: Operation,
        req: openai::Request<'a>,
        body: &'a [u8],
    },
    /// `/v1/messages`, `/v1/messages/count_tokens`.
    Anthropic {
        op: Operation,
        req: anthropic::Request<'a>,
        body: &'a [u8],
        /// The caller's `anthropic-version` / `anthropic-beta`, passed on to Anthropic backends.
        version: Option<HeaderValue>,
        beta: Option<HeaderValue>,
    },
}

/// How one target is called.
pub(crate) struct Encoded {
    /// The upstream body.
    pub body: Bytes,
    /// Which of the backend's URIs to call.
    pub upstream_op: Operation,
    /// `Some(upstream format)` when the response must be translated to the caller's format.
    pub translate_from: Option<Format>,
    /// Extra request headers for this provider.
    pub headers: Vec<(http::HeaderName, HeaderValue)>,
}

/// What to do with a target.
pub(crate) enum Plan {
    /// Call it with this.
    Call(Encoded),
    /// Answer locally without calling it (count_tokens on a backend that cannot count).
    Estimate,
}

impl<'a> Inbound<'a> {
    /// Decodes `body` for `op`.
    pub fn decode(
        op: Operation,
        body: &'a [u8],
        headers: &HeaderMap,
    ) -> Result<Self, GatewayError> {
        Ok(match op {
            Operation::Messages | Operation::CountTokens => {
                let endpoint = match op {
                    Operation::CountTokens => anthropic::Endpoint::CountTokens,
                    _ => anthropic::Endpoint::Messages,
                };
                Inbound::Anthropic {
                    op,
                    req: anthropic::Request::decode(endpoint, body)?,
                    body,
                    version: headers.get("anthropic-version").cloned(),
                    beta: headers.get("anthropic-beta").cloned(),
                }
            }
            Operation::ChatCompletions | Operation::Completions | Operation::Embeddings => {
                Inbound::OpenAi {
                    op,
                    req: openai::Request::decode(op, body)?,
                    body,
                }
            }
        })
    }

    pub fn op(&self) -> Operation {
        match self {
            Inbound::OpenAi { op, .. } | Inbound::Anthropic { op, .. } => *op,
        }
    }

    /// The caller's wire format (errors and translated responses are written in it).
    pub fn format(&self) -> Format {
        match self {
            Inbound::OpenAi { .. } => Format::OpenAiChat,
            Inbound::Anthropic { .. } => Format::Anthropic,
        }
    }

    pub fn model(&self) -> &str {
        match self {
            Inbound::OpenAi { req, .. } => &req.model,
            Inbound::Anthropic { req, .. } => &req.model,
        }
    }

    pub fn stream(&self) -> bool {
        match self {
            Inbound::OpenAi { req, .. } => req.stream,
            Inbound::Anthropic { req, .. } => req.stream,
        }
    }

    /// An OpenAI caller asked for the usage chunk (Anthropic streams always carry usage).
    pub fn client_wants_usage(&self) -> bool {
        match self {
            Inbound::OpenAi { req, .. } => req.client_wants_usage,
            Inbound::Anthropic { .. } => false,
        }
    }

    pub fn max_tokens(&self) -> Option<u64> {
        match self {
            Inbound::OpenAi { req, .. } => req.max_tokens,
            Inbound::Anthropic { req, .. } => req.max_tokens,
        }
    }

    pub fn estimated_input_tokens(&self) -> u64 {
        match self {
            Inbound::OpenAi { req, .. } => req.estimated_input_tokens(),
            Inbound::Anthropic { req, .. } => req.estimated_input_tokens(),
        }
    }

    /// How to call a backend of `provider` named `backend` with `upstream_model`.
    pub fn plan(
        &self,
        provider: Provider,
        backend: &str,
        upstream_model: &str,
    ) -> Result<Plan, GatewayError> {
        let unsupported = || GatewayError::UnsupportedByBackend {
            backend: backend.to_string(),
            provider: provider.as_str(),
            operation: self.op().as_str(),
        };
        let anthropic_headers = |version: Option<&HeaderValue>, beta: Option<&HeaderValue>| {
            let mut h = vec![(
                http::HeaderName::from_static("anthropic-version"),
                version
                    .cloned()
                    .unwrap_or(HeaderValue::from_static(anthropic::API_VERSION)),
            )];
            if let Some(b) = beta {
                h.push((http::HeaderName::from_static("anthropic-beta"), b.clone()));
            }
            h
        };
        let translate = |from: Format, to: Format, dialect: Dialect, body: &[u8]| {
            transcode::request(from, to, dialect, provider.as_str(), body, upstream_model)
                .map(Bytes::from)
                .map_err(GatewayError::Translate)
        };
        let dialect = match provider {
            Provider::OpenAi => Dialect::OpenAi,
            _ => Dialect::Compatible,
        };
        let encoded = match (self, provider) {
            // The hot path: OpenAI in, OpenAI dialect out, no model in between.
            (Inbound::OpenAi { req, op, .. }, Provider::OpenAi | Provider::OpenAiCompatible) => {
                Encoded {
                    body: Bytes::from(req.encode(upstream_model)),
                    upstream_op: *op,
                    translate_from: None,
                    headers: Vec::new(),
                }
            }
            (
                Inbound::OpenAi {
                    op: Operation::ChatCompletions,
                    body,
                    ..
                },
                Provider::Anthropic,
            ) => Encoded {
                body: translate(Format::OpenAiChat, Format::Anthropic, dialect, body)?,
                upstream_op: Operation::Messages,
                translate_from: Some(Format::Anthropic),
                headers: anthropic_headers(None, None),
            },
            (
                Inbound::Anthropic {
                    op,
                    req,
                    version,
                    beta,
                    ..
                },
                Provider::Anthropic,
            ) => Encoded {
                body: Bytes::from(req.encode(upstream_model)),
                upstream_op: *op,
                translate_from: None,
                headers: anthropic_headers(version.as_ref(), beta.as_ref()),
            },
            (
                Inbound::Anthropic {
                    op: Operation::CountTokens,
                    ..
                },
                _,
            ) => return Ok(Plan::Estimate),
            (
                Inbound::Anthropic {
                    op: Operation::Messages,
                    body,
                    ..
                },
                Provider::OpenAi | Provider::OpenAiCompatible,
            ) => Encoded {
                body: translate(Format::Anthropic, Format::OpenAiChat, dialect, body)?,
                upstream_op: Operation::ChatCompletions,
                translate_from: Some(Format::OpenAiChat),
                headers: Vec::new(),
            },
            _ => return Err(unsupported()),
        };
        Ok(Plan::Call(encoded))
    }
}
