//! The decoded inbound request and, per target, how it reaches the backend: byte-level
//! passthrough when caller and backend speak the same format (model rewritten, nothing else
//! touched; Responses callers too, towards backends that serve the Responses API), or
//! translation through the internal chat model when they do not.

use std::sync::OnceLock;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use switchyard_providers::{
    anthropic,
    chat::{self, Dropped, TranslateError},
    openai, responses,
    transcode::{self, BackendFormat, Format, Transcoder, Translated},
    Operation,
};
use switchyard_router::Backend;

use crate::error::GatewayError;

/// A request decoded just enough to route it, in the caller's format.
pub(crate) enum Inbound<'a> {
    /// `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`.
    OpenAi {
        op: Operation,
        req: openai::Request<'a>,
        body: &'a [u8],
        /// `body` in the chat model, decoded by the first target that translates it and kept
        /// for the others (and for [`Inbound::dropped`]).
        translated: OnceLock<chat::Request>,
    },
    /// `/v1/messages`, `/v1/messages/count_tokens`.
    Anthropic {
        op: Operation,
        req: anthropic::Request<'a>,
        body: &'a [u8],
        /// The caller's `anthropic-version` / `anthropic-beta`, passed on to Anthropic backends
        /// only: other backends never see the caller's headers.
        version: Option<HeaderValue>,
        beta: Option<HeaderValue>,
        /// As for `OpenAi`.
        translated: OnceLock<chat::Request>,
    },
    /// `/v1/responses`: split into raw fields for backends that serve the Responses API
    /// (passed through), and decoded in full for the others, which get it translated.
    Responses {
        req: openai::Request<'a>,
        /// The translation's decode; its refusal (`previous_response_id`, stored prompts …)
        /// is the answer of every translated target, and of none passed through.
        decoded: Result<Box<responses::Decoded>, TranslateError>,
        body: &'a [u8],
    },
}

/// How one target is called.
pub(crate) struct Encoded {
    /// The upstream body.
    pub body: Bytes,
    /// Which of the backend's URIs to call.
    pub upstream_op: Operation,
    /// `Some(upstream format)` when the response must be translated to the caller's format.
    pub translate_from: Option<BackendFormat>,
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
                    translated: OnceLock::new(),
                }
            }
            Operation::Responses => {
                let decoded = responses::decode_request(body).map(Box::new);
                match openai::Request::decode(op, body) {
                    Ok(req) => Inbound::Responses { req, decoded, body },
                    // Not even a JSON object with a model: the translation's error names
                    // the parameter as OpenAI would.
                    Err(e) => return Err(decoded.err().map_or(e.into(), GatewayError::Translate)),
                }
            }
            Operation::ChatCompletions | Operation::Completions | Operation::Embeddings => {
                Inbound::OpenAi {
                    op,
                    req: openai::Request::decode(op, body)?,
                    body,
                    translated: OnceLock::new(),
                }
            }
        })
    }

    pub fn op(&self) -> Operation {
        match self {
            Inbound::OpenAi { op, .. } | Inbound::Anthropic { op, .. } => *op,
            Inbound::Responses { .. } => Operation::Responses,
        }
    }

    /// The caller's wire format (errors and translated responses are written in it).
    pub fn format(&self) -> Format {
        match self {
            Inbound::OpenAi { .. } => Format::OpenAiChat,
            Inbound::Anthropic { .. } => Format::Anthropic,
            Inbound::Responses { .. } => Format::Responses,
        }
    }

    pub fn model(&self) -> &str {
        match self {
            Inbound::OpenAi { req, .. } => &req.model,
            Inbound::Anthropic { req, .. } => &req.model,
            Inbound::Responses { req, .. } => &req.model,
        }
    }

    pub fn stream(&self) -> bool {
        match self {
            Inbound::OpenAi { req, .. } => req.stream,
            Inbound::Anthropic { req, .. } => req.stream,
            Inbound::Responses { req, .. } => req.stream,
        }
    }

    /// An OpenAI caller asked for the usage chunk (Anthropic streams always carry usage).
    pub fn client_wants_usage(&self) -> bool {
        match self {
            Inbound::OpenAi { req, .. } => req.client_wants_usage,
            Inbound::Anthropic { .. } | Inbound::Responses { .. } => false,
        }
    }

    pub fn max_tokens(&self) -> Option<u64> {
        match self {
            Inbound::OpenAi { req, .. } => req.max_tokens,
            Inbound::Anthropic { req, .. } => req.max_tokens,
            Inbound::Responses { req, .. } => req.max_tokens,
        }
    }

    pub fn estimated_input_tokens(&self) -> u64 {
        match self {
            Inbound::OpenAi { req, .. } => req.estimated_input_tokens(),
            Inbound::Anthropic { req, .. } => req.estimated_input_tokens(),
            // The same rough measure as the other formats: request bytes / 4.
            Inbound::Responses { body, .. } => (body.len() as u64).div_ceil(4),
        }
    }

    /// What translation left out of the caller's request because it only tunes the provider
    /// (docs/forward-compatibility.md): known once a target has been translated for, and
    /// only meaningful for a response from a translated target (`Encoded::translate_from`);
    /// a passthrough target gets the request whole.
    pub fn dropped(&self) -> Option<&Dropped> {
        match self {
            Inbound::OpenAi { translated, .. } | Inbound::Anthropic { translated, .. } => {
                translated.get().map(|r| &r.dropped)
            }
            Inbound::Responses { decoded, .. } => decoded.as_ref().ok().map(|d| &d.request.dropped),
        }
    }

    /// [`Self::dropped`] as the `x-switchyard-dropped` response header's value, when anything
    /// was left out.
    pub fn dropped_header(&self) -> Option<HeaderValue> {
        self.dropped()
            .filter(|d| !d.is_empty())
            .and_then(|d| HeaderValue::from_str(&d.header_value()).ok())
    }

    /// Refuses a Responses request that declared hosted tools (`web_search` …), for a route
    /// whose `unsupportedTools` policy is `reject`; by default they are left out and named in
    /// [`Self::dropped`]. Other callers' requests pass.
    pub fn reject_unsupported_tools(&self) -> Result<(), GatewayError> {
        match self {
            Inbound::Responses {
                decoded: Ok(decoded),
                ..
            } => decoded
                .reject_unsupported_tools()
                .map_err(GatewayError::Translate),
            // Refused by every translated target anyway (see `plan`).
            Inbound::Responses {
                decoded: Err(_), ..
            } => Ok(()),
            Inbound::OpenAi { .. } | Inbound::Anthropic { .. } => Ok(()),
        }
    }

    /// The stream translator from a backend in `from` to this caller; `upstream_model`
    /// names the answering model where the upstream names none.
    pub fn transcoder(&self, from: BackendFormat, upstream_model: &str) -> Transcoder {
        match self {
            Inbound::Responses { decoded, .. } => Transcoder::for_responses(
                from,
                decoded
                    .as_ref()
                    .map_or_else(|_| responses::Echo::default_settings(), |d| d.echo.clone()),
            ),
            _ => Transcoder::new(from, self.format(), self.client_wants_usage()),
        }
        .naming_model(upstream_model)
    }

    /// Translates a complete response from a backend in `from` to this caller's format;
    /// `upstream_model` names the answering model where the upstream names none.
    pub fn translate_response(
        &self,
        from: BackendFormat,
        body: &[u8],
        upstream_model: &str,
    ) -> Result<Translated, switchyard_providers::chat::TranslateError> {
        let echo = match self {
            Inbound::Responses {
                decoded: Ok(decoded),
                ..
            } => Some(&decoded.echo),
            _ => None,
        };
        transcode::response_naming_model(from, self.format(), echo, body, upstream_model)
    }

    /// How to call `backend` with `upstream_model`: passthrough when the backend speaks the
    /// caller's format, translation through the internal chat model when it does not. Only
    /// the backend's format matters here, so a new provider of a known format needs nothing.
    pub fn plan(&self, backend: &Backend, upstream_model: &str) -> Result<Plan, GatewayError> {
        let unsupported = || GatewayError::UnsupportedByBackend {
            backend: backend.name.to_string(),
            provider: backend.provider.as_str(),
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
        let to = backend.format;
        let translated = |body: Vec<u8>| Encoded {
            body: Bytes::from(body),
            // The backend URI of a chat call: Messages for Anthropic, the chat one otherwise.
            upstream_op: match to {
                BackendFormat::Anthropic => Operation::Messages,
                BackendFormat::OpenAiChat | BackendFormat::Gemini | BackendFormat::Bedrock => {
                    Operation::ChatCompletions
                }
            },
            translate_from: Some(to),
            headers: match to {
                BackendFormat::Anthropic => anthropic_headers(None, None),
                BackendFormat::OpenAiChat | BackendFormat::Gemini | BackendFormat::Bedrock => {
                    Vec::new()
                }
            },
        };
        // Decoded once, by the first target that translates; a refusal is not kept, so each
        // target's error names its own provider.
        let translate = |from: Format,
                         body: &[u8],
                         cache: &OnceLock<chat::Request>|
         -> Result<Encoded, GatewayError> {
            let req = match cache.get() {
                Some(r) => r,
                None => {
                    let r = transcode::decode_request(from, backend.provider.as_str(), body)
                        .map_err(GatewayError::Translate)?;
                    cache.get_or_init(|| r)
                }
            };
            transcode::encode_request(req, to, backend.dialect, upstream_model)
                .map(translated)
                .map_err(GatewayError::Translate)
        };
        let encoded = match (self, to) {
            // The hot path: OpenAI in, OpenAI dialect out, no model in between.
            (Inbound::OpenAi { req, op, .. }, BackendFormat::OpenAiChat) => Encoded {
                body: Bytes::from(req.encode(upstream_model)),
                upstream_op: *op,
                translate_from: None,
                headers: Vec::new(),
            },
            (
                Inbound::OpenAi {
                    op: Operation::ChatCompletions,
                    body,
                    translated,
                    ..
                },
                _,
            ) => translate(Format::OpenAiChat, body, translated)?,
            (
                Inbound::Anthropic {
                    op,
                    req,
                    version,
                    beta,
                    ..
                },
                BackendFormat::Anthropic,
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
                    translated,
                    ..
                },
                _,
            ) => translate(Format::Anthropic, body, translated)?,
            // Backends that serve the Responses API get it whole, so stored responses, hosted
            // tools and reasoning items work as with the provider; `stream_options` is left
            // alone (Responses streams always end with usage).
            (Inbound::Responses { req, .. }, _) if backend.serves_responses() => Encoded {
                body: Bytes::from(req.encode_model_only(upstream_model)),
                upstream_op: Operation::Responses,
                translate_from: None,
                headers: Vec::new(),
            },
            (Inbound::Responses { decoded, .. }, _) => {
                let decoded = decoded
                    .as_ref()
                    .map_err(|e| GatewayError::Translate(e.clone()))?;
                translated(
                    transcode::encode_request(
                        &decoded.request,
                        to,
                        backend.dialect,
                        upstream_model,
                    )
                    .map_err(|e| GatewayError::Translate(responses::caller_param(e)))?,
                )
            }
            _ => return Err(unsupported()),
        };
        Ok(Plan::Call(encoded))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_fields_become_one_header_value() {
        let body = br#"{"model":"m","input":"hi","prompt_cache_key":"k","tools":[{"type":"web_search"}],"store":false}"#;
        let inbound = Inbound::decode(Operation::Responses, body, &HeaderMap::new()).unwrap();
        assert_eq!(
            inbound.dropped_header().unwrap(),
            "tools[0](web_search), prompt_cache_key"
        );
        assert!(matches!(
            inbound.reject_unsupported_tools(),
            Err(GatewayError::Translate(e)) if e.param() == "tools[0].type"
        ));
        // State the gateway keeps none of is refused only by targets that translate: the
        // request decodes, for a backend serving the Responses API to take.
        let body = br#"{"model":"m","input":"hi","previous_response_id":"resp_1","max_output_tokens":7,"stream":true}"#;
        let inbound = Inbound::decode(Operation::Responses, body, &HeaderMap::new()).unwrap();
        assert_eq!(
            (inbound.model(), inbound.stream(), inbound.max_tokens()),
            ("m", true, Some(7))
        );
        assert!(inbound.dropped().is_none() && inbound.reject_unsupported_tools().is_ok());
        assert!(matches!(
            Inbound::decode(Operation::Responses, b"[1]", &HeaderMap::new()),
            Err(GatewayError::Translate(_))
        ));
        // Nothing is known to be dropped before a target translates the request.
        let body = br#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}],"context_management":{}}"#;
        let inbound = Inbound::decode(Operation::Messages, body, &HeaderMap::new()).unwrap();
        assert!(inbound.dropped().is_none() && inbound.dropped_header().is_none());
        assert!(inbound.reject_unsupported_tools().is_ok());
    }
}
