//! The decoded inbound request and, per target, how it reaches the backend: byte-level
//! passthrough when caller and backend speak the same format (model rewritten, nothing else
//! touched; Responses callers too, towards backends that serve the Responses API), or
//! translation through the internal chat model when they do not.

use std::sync::OnceLock;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use switchyard_providers::{
    anthropic,
    chat::{self, Dropped, TranslateError, UnsupportedTools, WebSearch},
    openai, responses,
    rewrite::Rewrite,
    transcode::{self, BackendFormat, Format, Transcoder, Translated},
    Operation,
};
use switchyard_router::{Backend, Route};

use crate::{body::Spliced, error::GatewayError};

/// A request decoded just enough to route it, in the caller's format.
pub(crate) enum Inbound<'a> {
    /// `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`.
    OpenAi {
        op: Operation,
        req: openai::Request<'a>,
        body: &'a Bytes,
        /// `body` in the chat model, decoded by the first target that translates it and kept
        /// for the others.
        translated: OnceLock<chat::Request<'a>>,
    },
    /// `/v1/messages`, `/v1/messages/count_tokens`.
    Anthropic {
        op: Operation,
        req: anthropic::Request<'a>,
        body: &'a Bytes,
        /// The caller's `anthropic-version` / `anthropic-beta`, passed on to Anthropic backends
        /// only: other backends never see the caller's headers.
        version: Option<HeaderValue>,
        beta: Option<HeaderValue>,
        /// As for `OpenAi`.
        translated: OnceLock<chat::Request<'a>>,
    },
    /// `/v1/responses`: split into raw fields for backends that serve the Responses API
    /// (passed through), and decoded in full for the others, which get it translated.
    Responses {
        req: openai::Request<'a>,
        /// The translation's decode, made by the first target that translates (a Codex
        /// request passed through to a Responses backend never pays for it); its refusal
        /// (`previous_response_id`, stored prompts …) is the answer of every translated
        /// target, and of none passed through.
        decoded: OnceLock<Result<Box<responses::Decoded<'a>>, TranslateError>>,
        body: &'a Bytes,
    },
}

/// How one target is called.
pub(crate) struct Encoded {
    /// The upstream body.
    pub body: Spliced,
    /// Which of the backend's URIs to call.
    pub upstream_op: Operation,
    /// `Some(upstream format)` when the response must be translated to the caller's format.
    pub translate_from: Option<BackendFormat>,
    /// Extra request headers for this provider.
    pub headers: Vec<(http::HeaderName, HeaderValue)>,
    /// What translation left out of the caller's request for this target (fields that only
    /// tune the provider, tools it cannot run), as the `x-switchyard-dropped` response
    /// header's value; `None` when nothing was, and always for a passthrough target, which
    /// gets the request whole (docs/forward-compatibility.md).
    pub dropped: Option<HeaderValue>,
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
        body: &'a Bytes,
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
            Operation::Responses => match openai::Request::decode(op, body) {
                Ok(req) => Inbound::Responses {
                    req,
                    decoded: OnceLock::new(),
                    body,
                },
                // Not even a JSON object with a model: the translation's error names the
                // parameter as OpenAI would.
                Err(e) => {
                    return Err(responses::decode_request(body)
                        .err()
                        .map_or(e.into(), GatewayError::Translate))
                }
            },
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

    /// The stored response a Responses request continues (`previous_response_id`).
    pub fn previous_response_id(&self) -> Option<&str> {
        let Inbound::Responses { req, .. } = self else {
            return None;
        };
        let (_, v) = req
            .raw_fields()
            .find(|(k, _)| *k == "previous_response_id")?;
        serde_json::from_str::<Option<&str>>(v).ok().flatten()
    }

    /// A Responses request the provider will store (`store` is not `false`), so that a
    /// later request may continue it.
    pub fn stored(&self) -> bool {
        let Inbound::Responses { req, .. } = self else {
            return false;
        };
        !req.raw_fields()
            .any(|(k, v)| k == "store" && v.trim() == "false")
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

    /// The stream translator from a backend in `from` to this caller; `upstream_model`
    /// names the answering model where the upstream names none.
    pub fn transcoder(&self, from: BackendFormat, upstream_model: &str) -> Transcoder {
        match self {
            Inbound::Responses { decoded, body, .. } => Transcoder::for_responses(
                from,
                responses_decoded(decoded, body)
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
                decoded,
                body: request,
                ..
            } => responses_decoded(decoded, request)
                .as_ref()
                .ok()
                .map(|d| &d.echo),
            _ => None,
        };
        transcode::response_naming_model(from, self.format(), echo, body, upstream_model)
    }

    /// How to call `backend` with `upstream_model` on `route`: passthrough when the backend
    /// speaks the caller's format, translation through the internal chat model when it does
    /// not. Only the backend's format matters here, so a new provider of a known format needs
    /// nothing. Tools that run on a provider's servers are judged here, per target: a
    /// passthrough target gets them as sent, a translating one runs the caller's web search
    /// on its own search when it has one and the route allows it (`webSearch: backend`), and
    /// otherwise leaves them out or, on a route whose `unsupportedTools` is `reject`, refuses
    /// the request (so a fallback that can take it is tried).
    /// How the request reaches `backend`. With `output_cap` (the output the budget reserved
    /// for a request that set no cap of its own), the upstream is sent that cap, so the
    /// answer cannot cost more than was reserved.
    pub fn plan(
        &self,
        backend: &Backend,
        upstream_model: &str,
        route: &Route,
        output_cap: Option<u64>,
    ) -> Result<Plan, GatewayError> {
        let target = PlanTarget {
            backend,
            upstream_model,
            route,
            output_cap,
        };
        let encoded = match (self, backend.format) {
            // The hot path: OpenAI in, OpenAI dialect out, no model in between.
            (Inbound::OpenAi { req, op, body, .. }, BackendFormat::OpenAiChat) => {
                target.pass_openai(req, *op, body)
            }
            (
                Inbound::OpenAi {
                    op: Operation::ChatCompletions,
                    body,
                    translated,
                    ..
                },
                _,
            ) => target.translate(Format::OpenAiChat, body, translated)?,
            (
                Inbound::Anthropic {
                    op,
                    req,
                    body,
                    version,
                    beta,
                    ..
                },
                BackendFormat::Anthropic,
            ) => Encoded {
                body: spliced(&req.rewrite(upstream_model), body),
                upstream_op: *op,
                translate_from: None,
                headers: anthropic_headers(version.as_ref(), beta.as_ref()),
                dropped: None,
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
            ) => target.translate(Format::Anthropic, body, translated)?,
            (Inbound::Responses { req, body, .. }, _) if backend.serves_responses() => {
                target.pass_responses(req, body)
            }
            (Inbound::Responses { decoded, body, .. }, _) => {
                target.translate_responses(responses_decoded(decoded, body))?
            }
            _ => {
                return Err(GatewayError::UnsupportedByBackend {
                    backend: backend.name.to_string(),
                    provider: backend.provider.as_str(),
                    operation: self.op().as_str(),
                })
            }
        };
        Ok(Plan::Call(encoded))
    }
}

/// The Responses request decoded for translation, once.
fn responses_decoded<'a, 'c>(
    cache: &'c OnceLock<Result<Box<responses::Decoded<'a>>, TranslateError>>,
    body: &'a Bytes,
) -> &'c Result<Box<responses::Decoded<'a>>, TranslateError> {
    cache.get_or_init(|| responses::decode_request(body).map(Box::new))
}

/// One target a request is planned for: the backend, the model it is asked for, the route,
/// and the output cap the budget reserved (see [`Inbound::plan`]).
struct PlanTarget<'t> {
    backend: &'t Backend,
    upstream_model: &'t str,
    route: &'t Route,
    output_cap: Option<u64>,
}

// === impl PlanTarget ===

impl PlanTarget<'_> {
    /// An OpenAI request to an OpenAI-format backend: the model rewritten and, for a budgeted
    /// request without a cap of its own, the reserved cap added in the dialect's field.
    fn pass_openai(&self, req: &openai::Request<'_>, op: Operation, body: &Bytes) -> Encoded {
        let cap_field = openai_cap_field(op, self.backend.dialect);
        let cap = self.output_cap.and_then(|n| cap_field.zip(Some(n)));
        Encoded {
            body: spliced(&req.rewrite(self.upstream_model, cap), body),
            upstream_op: op,
            translate_from: None,
            headers: Vec::new(),
            dropped: None,
        }
    }

    /// Backends that serve the Responses API get it whole, so stored responses, hosted tools
    /// and reasoning items work as with the provider; `stream_options` is left alone
    /// (Responses streams always end with usage).
    fn pass_responses(&self, req: &openai::Request<'_>, body: &Bytes) -> Encoded {
        let cap = self.output_cap.map(|n| ("max_output_tokens", n));
        Encoded {
            body: spliced(&req.rewrite_model_only(self.upstream_model, cap), body),
            upstream_op: Operation::Responses,
            translate_from: None,
            headers: Vec::new(),
            dropped: None,
        }
    }

    /// A chat or messages request through the internal chat model. Decoded once, by the first
    /// target that translates; a refusal is not kept, so each target's error names its own
    /// provider.
    fn translate<'a>(
        &self,
        from: Format,
        body: &'a Bytes,
        cache: &OnceLock<chat::Request<'a>>,
    ) -> Result<Encoded, GatewayError> {
        let req = match cache.get() {
            Some(r) => r,
            None => {
                let mut r = transcode::decode_request(from, self.backend.provider.as_str(), body)
                    .map_err(GatewayError::Translate)?;
                r.max_tokens = r.max_tokens.or(self.output_cap);
                cache.get_or_init(|| r)
            }
        };
        encode_translated(
            req,
            self.backend.format,
            self.backend,
            self.upstream_model,
            self.route,
        )
        .map(|encoded| translated(self.backend.format, encoded))
        .map_err(GatewayError::Translate)
    }

    /// A Responses request to a backend without the Responses API: its decode (or the decode's
    /// refusal), tools it cannot run refused on a `reject` route, the reserved cap added.
    fn translate_responses(
        &self,
        decoded: &Result<Box<responses::Decoded>, TranslateError>,
    ) -> Result<Encoded, GatewayError> {
        let to = self.backend.format;
        let decoded = decoded
            .as_ref()
            .map_err(|e| GatewayError::Translate(e.clone()))?;
        if self.route.unsupported_tools == UnsupportedTools::Reject {
            decoded
                .reject_tools_not_run(runs_web_search(self.route, to))
                .map_err(GatewayError::Translate)?;
        }
        // Only a budgeted request without a cap of its own pays for this copy.
        let capped;
        let request = match self
            .output_cap
            .filter(|_| decoded.request.max_tokens.is_none())
        {
            Some(n) => {
                capped = chat::Request {
                    max_tokens: Some(n),
                    ..decoded.request.clone()
                };
                &capped
            }
            None => &decoded.request,
        };
        let encoded = encode_translated(request, to, self.backend, self.upstream_model, self.route)
            .map_err(|e| GatewayError::Translate(responses::caller_param(e)))?;
        Ok(translated(to, encoded))
    }
}

/// The headers an Anthropic backend gets: the caller's `anthropic-version` (else ours) and
/// `anthropic-beta`, when the caller spoke Anthropic.
fn anthropic_headers(
    version: Option<&HeaderValue>,
    beta: Option<&HeaderValue>,
) -> Vec<(http::HeaderName, HeaderValue)> {
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
}

/// How a translated body (with its `x-switchyard-dropped` value) is sent to a backend of
/// format `to`, whose response is translated back.
fn translated(to: BackendFormat, (body, dropped): (Vec<u8>, Option<HeaderValue>)) -> Encoded {
    Encoded {
        body: Spliced::from(Bytes::from(body)),
        dropped,
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
    }
}

/// The field an OpenAI-format upstream takes its output cap in: chat's depends on the
/// dialect ([`openai::chat::Dialect::output_cap_field`]); legacy completions know only
/// `max_tokens`; embeddings generate nothing.
fn openai_cap_field(op: Operation, dialect: openai::chat::Dialect) -> Option<&'static str> {
    match op {
        Operation::ChatCompletions => Some(dialect.output_cap_field()),
        Operation::Completions => Some("max_tokens"),
        _ => None,
    }
}

/// A passthrough's upstream body: slices of the caller's `body` around what was rewritten.
fn spliced(rewrite: &Rewrite, body: &Bytes) -> Spliced {
    match rewrite.slices(body) {
        Some(parts) => Spliced::new(parts),
        // Only a rewrite of another body gets here; written out, it is at worst that body's.
        None => Spliced::from(Bytes::from(rewrite.to_vec(body))),
    }
}

/// Whether a translating target of format `to` on `route` runs the caller's web search.
fn runs_web_search(route: &Route, to: BackendFormat) -> bool {
    route.backend_web_search && WebSearch::runs_on(to)
}

/// Encodes `req` for a translating target, with the `x-switchyard-dropped` value for it. The
/// caller's web search goes along when the target runs it (the options it has no setting for
/// named as dropped); otherwise it is left out and named, or refused on a route whose
/// `unsupportedTools` is `reject`.
fn encode_translated(
    req: &chat::Request<'_>,
    to: BackendFormat,
    backend: &Backend,
    upstream_model: &str,
    route: &Route,
) -> Result<(Vec<u8>, Option<HeaderValue>), TranslateError> {
    let header = |d: &Dropped| {
        (!d.is_empty())
            .then(|| HeaderValue::from_str(&d.header_value()).ok())
            .flatten()
    };
    let Some(search) = &req.web_search else {
        let body = transcode::encode_request(req, to, backend.dialect, upstream_model)?;
        return Ok((body, header(&req.dropped)));
    };
    if runs_web_search(route, to) {
        let body = transcode::encode_request(req, to, backend.dialect, upstream_model)?;
        let mut dropped = req.dropped.clone();
        for name in search.options_lost_on(to) {
            dropped.push(name);
        }
        return Ok((body, header(&dropped)));
    }
    if route.unsupported_tools == UnsupportedTools::Reject {
        return Err(search.refusal());
    }
    // Only requests asking for a search the target cannot run pay for this copy.
    let mut without = req.clone();
    without.web_search = None;
    without.dropped.push(&search.dropped_name());
    let body = transcode::encode_request(&without, to, backend.dialect, upstream_model)?;
    Ok((body, header(&without.dropped)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// Backends of each kind on the mock's address, and routes over them (model = route).
    const TABLE: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: k}
stringData: {k: sk-1}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {name: openai}
spec: {provider: openai, endpoint: "http://127.0.0.1:9/v1", auth: {secretRef: {name: k, key: k}}, models: [{name: gpt}]}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {name: anthropic}
spec: {provider: anthropic, endpoint: "http://127.0.0.1:9", auth: {secretRef: {name: k, key: k}}, models: [{name: claude}]}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {name: gemini}
spec: {provider: gemini, endpoint: "http://127.0.0.1:9", auth: {secretRef: {name: k, key: k}}, models: [{name: gem}]}
---
apiVersion: switchyard.dev/v1alpha1
kind: ModelBackend
metadata: {name: compat}
spec: {provider: openai-compatible, endpoint: "http://127.0.0.1:9/v1", auth: {secretRef: {name: k, key: k}}, models: [{name: qwen}]}
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {name: strict}
spec:
  match: {models: [strict]}
  unsupportedTools: reject
  backends: [{backendRef: {name: openai}, model: gpt}]
  fallbacks: [{backendRef: {name: anthropic}, model: claude}]
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {name: lenient}
spec:
  match: {models: [lenient]}
  backends: [{backendRef: {name: compat}, model: qwen}]
  fallbacks: [{backendRef: {name: anthropic}, model: claude}, {backendRef: {name: gemini}, model: gem}]
---
apiVersion: switchyard.dev/v1alpha1
kind: AIRoute
metadata: {name: search}
spec:
  match: {models: [search]}
  webSearch: backend
  unsupportedTools: reject
  backends: [{backendRef: {name: compat}, model: qwen}]
  fallbacks: [{backendRef: {name: anthropic}, model: claude}, {backendRef: {name: gemini}, model: gem}]
"#;

    fn table() -> switchyard_router::RoutingTable {
        let mut r = switchyard_api::Resources::default();
        let errs = r.parse_yaml(
            "t.yaml",
            TABLE,
            &std::collections::HashMap::<String, String>::new(),
        );
        assert!(errs.is_empty(), "{errs:?}");
        let c = switchyard_compile::compile(&r, 1);
        assert!(!c.has_errors(), "{:?}", c.diagnostics);
        c.table
    }

    /// Each of the route's targets in order (primary, then fallbacks), planned for `inbound`.
    fn plans(
        t: &switchyard_router::RoutingTable,
        inbound: &Inbound<'_>,
    ) -> Vec<Result<Encoded, GatewayError>> {
        let route = t
            .route(inbound.model(), &HeaderMap::new(), None)
            .unwrap()
            .route;
        route
            .targets
            .iter()
            .chain(&route.fallbacks)
            .map(|target| {
                let model = target.upstream_model(inbound.model());
                inbound
                    .plan(&target.backend, model, route, None)
                    .map(|p| match p {
                        Plan::Call(e) => e,
                        Plan::Estimate => panic!("estimate"),
                    })
            })
            .collect()
    }

    fn json(e: &Encoded) -> Value {
        serde_json::from_slice(&e.body.contiguous()).unwrap()
    }

    fn dropped(e: &Encoded) -> Option<&str> {
        e.dropped.as_ref().map(|d| d.to_str().unwrap())
    }

    fn refused_param(r: &Result<Encoded, GatewayError>) -> String {
        match r {
            Err(GatewayError::Translate(TranslateError::Refused { param, .. })) => param.clone(),
            Err(e) => panic!("not a refusal: {e}"),
            Ok(e) => panic!(
                "not refused: {}",
                String::from_utf8_lossy(&e.body.contiguous())
            ),
        }
    }

    /// `body` decoded; the buffer it borrows is leaked (a few bytes per test).
    fn decode(op: Operation, body: &str) -> Inbound<'static> {
        let body = Box::leak(Box::new(Bytes::copy_from_slice(body.as_bytes())));
        Inbound::decode(op, body, &HeaderMap::new()).unwrap()
    }

    #[test]
    fn the_reserved_output_cap_is_sent_in_each_targets_own_field() {
        let t = table();
        let route_of = |m: &str| t.route(m, &HeaderMap::new(), None).unwrap().route;
        let capped = |inbound: &Inbound<'_>, route: &str| -> Vec<Value> {
            let route = route_of(route);
            route
                .targets
                .iter()
                .chain(&route.fallbacks)
                .map(|target| {
                    let model = target.upstream_model(inbound.model());
                    match inbound
                        .plan(&target.backend, model, route, Some(321))
                        .unwrap()
                    {
                        Plan::Call(e) => json(&e),
                        Plan::Estimate => panic!("estimate"),
                    }
                })
                .collect()
        };
        let chat = decode(
            Operation::ChatCompletions,
            r#"{"model":"strict","messages":[{"role":"user","content":"hi"}]}"#,
        );
        // api.openai.com passthrough, then the translated Anthropic fallback.
        let [openai, anthropic] = &capped(&chat, "strict")[..] else {
            panic!("two targets")
        };
        assert_eq!(openai["max_completion_tokens"], 321);
        assert!(openai.get("max_tokens").is_none());
        assert_eq!(openai["messages"][0]["content"], "hi");
        assert_eq!(anthropic["max_tokens"], 321);
        let chat = decode(
            Operation::ChatCompletions,
            r#"{"model":"lenient","messages":[{"role":"user","content":"hi"}]}"#,
        );
        let lenient = capped(&chat, "lenient");
        let compat = &lenient[0];
        assert_eq!(compat["max_tokens"], 321);
        assert_eq!(lenient[2]["generationConfig"]["maxOutputTokens"], 321);
        assert!(compat.get("max_completion_tokens").is_none());
        let resp = decode(Operation::Responses, r#"{"model":"strict","input":"hi"}"#);
        let [openai, anthropic] = &capped(&resp, "strict")[..] else {
            panic!("two targets")
        };
        assert_eq!(openai["max_output_tokens"], 321);
        assert_eq!(anthropic["max_tokens"], 321);
    }

    #[test]
    fn dropped_fields_are_named_per_target() {
        let t = table();
        let body = r#"{"model":"lenient","input":"hi","prompt_cache_key":"k","tools":[{"type":"web_search"},{"type":"file_search"}],"store":false}"#;
        let inbound = decode(Operation::Responses, body);
        let p = plans(&t, &inbound);
        // The search is left out for every translating target that does not run it (the
        // route does not allow it), like the other hosted tools.
        for e in &p {
            let e = e.as_ref().unwrap();
            assert_eq!(
                dropped(e).unwrap(),
                "tools[1](file_search), prompt_cache_key, tools[0](web_search)"
            );
            assert!(!String::from_utf8_lossy(&e.body.contiguous()).contains("search"));
        }
        // A passthrough target gets the request whole, and nothing is named.
        let body = r#"{"model":"strict","input":"hi","prompt_cache_key":"k","tools":[{"type":"web_search"}]}"#;
        let inbound = decode(Operation::Responses, body);
        let target = &t
            .route("strict", &HeaderMap::new(), None)
            .unwrap()
            .route
            .targets[0];
        let Plan::Call(e) = inbound
            .plan(
                &target.backend,
                "gpt",
                t.route("strict", &HeaderMap::new(), None).unwrap().route,
                None,
            )
            .unwrap()
        else {
            panic!("a call")
        };
        assert_eq!((e.translate_from, dropped(&e)), (None, None));
        // Passed through whole, so never decoded for translation.
        let Inbound::Responses { decoded, .. } = &inbound else {
            panic!("responses")
        };
        assert!(decoded.get().is_none());
        assert_eq!(json(&e)["tools"][0]["type"], "web_search");
        // State the gateway keeps none of is refused only by targets that translate.
        let body = r#"{"model":"strict","input":"hi","previous_response_id":"resp_1","max_output_tokens":7,"stream":true}"#;
        let inbound = decode(Operation::Responses, body);
        assert_eq!(
            (inbound.model(), inbound.stream(), inbound.max_tokens()),
            ("strict", true, Some(7))
        );
        let p = plans(&t, &inbound);
        assert!(p[0].is_ok());
        assert_eq!(refused_param(&p[1]), "previous_response_id");
        assert!(matches!(
            Inbound::decode(
                Operation::Responses,
                &Bytes::from_static(b"[1]"),
                &HeaderMap::new()
            ),
            Err(GatewayError::Translate(_))
        ));
        // An Anthropic caller's provider-only fields, named for the targets that translate.
        let body = r#"{"model":"lenient","max_tokens":5,"messages":[{"role":"user","content":"hi"}],"context_management":{}}"#;
        let inbound = decode(Operation::Messages, body);
        let p = plans(&t, &inbound);
        assert_eq!(dropped(p[0].as_ref().unwrap()), Some("context_management"));
        assert_eq!(
            dropped(p[1].as_ref().unwrap()),
            None,
            "anthropic: passthrough"
        );
    }

    #[test]
    fn reject_is_decided_per_target() {
        let t = table();
        // A Responses passthrough backend first keeps the hosted tools; the translating
        // fallback refuses them, so the route still serves the request through the first.
        let body = r#"{"model":"strict","input":"hi","tools":[{"type":"function","name":"f","parameters":{}},{"type":"web_search_preview"},{"type":"code_interpreter","container":{"type":"auto"}}]}"#;
        let inbound = decode(Operation::Responses, body);
        let p = plans(&t, &inbound);
        let tools = json(p[0].as_ref().unwrap())["tools"].clone();
        assert_eq!(tools[1]["type"], "web_search_preview");
        assert_eq!(tools[2]["type"], "code_interpreter");
        assert_eq!(refused_param(&p[1]), "tools[2].type");
        // Only a web search: refused by the fallback, which the route does not let search.
        let body = r#"{"model":"strict","input":"hi","tools":[{"type":"web_search"}]}"#;
        let p = plans(&t, &decode(Operation::Responses, body));
        assert!(p[0].is_ok());
        assert_eq!(refused_param(&p[1]), "tools[0].type");
        // Without hosted tools there is nothing to refuse.
        let body = r#"{"model":"strict","input":"hi"}"#;
        assert!(plans(&t, &decode(Operation::Responses, body))
            .iter()
            .all(Result::is_ok));
        // The message names the policy and never calls the tools the client's own.
        let body = r#"{"model":"strict","messages":[{"role":"user","content":"hi"}],"web_search_options":{}}"#;
        let p = plans(&t, &decode(Operation::ChatCompletions, body));
        // OpenAI in, OpenAI out: the hot path sends it as it is.
        assert!(json(p[0].as_ref().unwrap())
            .get("web_search_options")
            .is_some());
        let msg = p[1].as_ref().err().unwrap().to_string();
        assert!(
            msg.contains("web_search_options") && msg.contains("unsupportedTools: reject"),
            "{msg}"
        );
    }

    #[test]
    fn web_search_runs_on_the_backends_own_search_where_the_route_allows() {
        let t = table();
        let body = r#"{"model":"search","input":"news?","tools":[{"type":"web_search","filters":{"allowed_domains":["example.com"]},"user_location":{"type":"approximate","country":"GB","city":"London"},"search_context_size":"low"}]}"#;
        let inbound = decode(Operation::Responses, body);
        let p = plans(&t, &inbound);
        // openai-compatible has no search: refused (the route rejects what it cannot run),
        // so the fallbacks are tried.
        assert_eq!(refused_param(&p[0]), "tools[0].type");
        // Anthropic: its server-side web search tool, with the filter and location.
        let a = p[1].as_ref().unwrap();
        assert_eq!(
            json(a)["tools"],
            serde_json::json!([{"type": "web_search_20250305", "name": "web_search",
                "allowed_domains": ["example.com"],
                "user_location": {"type": "approximate", "city": "London", "country": "GB"}}])
        );
        assert_eq!(dropped(a), None);
        // Gemini: Google Search grounding, which takes neither: both named.
        let g = p[2].as_ref().unwrap();
        assert_eq!(json(g)["tools"], serde_json::json!([{"google_search": {}}]));
        assert_eq!(
            dropped(g),
            Some("web_search.allowed_domains, web_search.user_location")
        );
        // An Anthropic caller's web search, translated for Gemini beside its function tools.
        let body = r#"{"model":"search","max_tokens":50,"messages":[{"role":"user","content":"hi"}],"tools":[{"name":"f","input_schema":{"type":"object","properties":{"a":{"type":"string"}}}},{"type":"web_search_20250305","name":"web_search","max_uses":3}]}"#;
        let p = plans(&t, &decode(Operation::Messages, body));
        assert_eq!(refused_param(&p[0]), "tools[1].type");
        // The Anthropic backend: passthrough, the caller's own tool as sent.
        assert_eq!(json(p[1].as_ref().unwrap())["tools"][1]["max_uses"], 3);
        let g = p[2].as_ref().unwrap();
        let tools = json(g)["tools"].clone();
        assert_eq!(tools[0]["functionDeclarations"][0]["name"], "f");
        assert_eq!(tools[1], serde_json::json!({"google_search": {}}));
        assert_eq!(dropped(g), Some("web_search.max_uses"));
        // Chat's web_search_options, to Anthropic.
        let body = r#"{"model":"search","messages":[{"role":"user","content":"hi"}],"web_search_options":{"search_context_size":"high","user_location":{"type":"approximate","approximate":{"country":"DE"}}}}"#;
        let p = plans(&t, &decode(Operation::ChatCompletions, body));
        // OpenAI in, OpenAI dialect out: the hot path passes it on untouched.
        assert!(json(p[0].as_ref().unwrap())
            .get("web_search_options")
            .is_some());
        assert_eq!(
            json(p[1].as_ref().unwrap())["tools"],
            serde_json::json!([{"type": "web_search_20250305", "name": "web_search",
                "user_location": {"type": "approximate", "country": "DE"}}])
        );
        // On a route that does not allow it, Gemini leaves the search out and names it.
        let body = r#"{"model":"lenient","messages":[{"role":"user","content":"hi"}],"web_search_options":{}}"#;
        let p = plans(&t, &decode(Operation::ChatCompletions, body));
        for e in &p[1..] {
            let e = e.as_ref().unwrap();
            assert_eq!(dropped(e), Some("web_search_options"));
            assert!(json(e).get("tools").is_none() && json(e).get("web_search_options").is_none());
        }
    }
}
