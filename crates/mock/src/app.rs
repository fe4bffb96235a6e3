//! Request handling: conformance (what an origin server refuses gets a 400), routing, auth,
//! fault injection, the OpenAI endpoints (also under Azure OpenAI's deployment paths), the
//! Anthropic Messages endpoints and Gemini's `generateContent` and Bedrock's Converse (errors
//! on those are written in the dialect's own shape).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{ALLOW, AUTHORIZATION, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::Value;

use crate::body::MockBody;
use crate::faults::Knobs;
use crate::openai::{self, Api, ApiError, Completion, EmbeddingInput, EncodingFormat};
use crate::record::RequestLog;
use crate::strict::Violation;

/// Large enough for big embedding batches, small enough that one request cannot exhaust memory.
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;
/// Real OpenAI caps `dimensions` far lower; this only guards allocation.
const MAX_EMBEDDING_DIMS: u64 = 65_536;
const API_KEY: HeaderName = HeaderName::from_static("api-key");
const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
const X_GOOG_API_KEY: HeaderName = HeaderName::from_static("x-goog-api-key");
const TOOL_CALL: HeaderName = HeaderName::from_static("x-mock-tool-call");
const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");
const TEXT_PLAIN: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");

/// An error reply and the extra headers it goes with, rendered in the endpoint's dialect.
type Failure = Box<(ApiError, HeaderMap)>;

/// Startup settings, from the command line.
#[derive(Debug, Clone)]
pub struct Config {
    pub api_keys: Vec<String>,
    /// Keys that are valid but always answered with 429, to exercise key pools.
    pub rate_limited_keys: Vec<String>,
    /// Models no key may use: answered 403 `model_not_found`, as a provider answers a key
    /// whose project has no access to the model.
    pub forbidden_models: Vec<String>,
    pub defaults: Knobs,
    pub embedding_dims: u32,
    /// Lifetime of the simulated prompt cache's entries.
    pub cache_ttl: std::time::Duration,
    pub models: Vec<String>,
    /// Credentials Bedrock requests must be signed with; without them Bedrock requests are
    /// only checked like the others (any key when no keys are configured).
    pub aws: Option<crate::bedrock::AwsCredentials>,
}

/// Shared state of the server.
#[derive(Debug)]
pub struct App {
    api_keys: Vec<String>,
    rate_limited_keys: Vec<String>,
    forbidden_models: Vec<String>,
    /// Requests seen per `x-mock-scenario`, for `x-mock-fail-first`.
    scenarios: std::sync::Mutex<std::collections::HashMap<String, u32>>,
    defaults: Knobs,
    embedding_dims: u32,
    models: Vec<String>,
    /// Fixed at startup so `/v1/models` is byte-identical across calls.
    models_created: u64,
    aws: Option<crate::bedrock::AwsCredentials>,
    log: RequestLog,
    /// The simulated prompt cache, per (key, model).
    prefix_cache: crate::cache::PrefixCache,
    stored_responses: crate::responses::Stored,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint<'a> {
    ChatCompletions,
    Completions,
    Embeddings,
    Messages,
    CountTokens,
    /// `/v1/responses`, or Azure's v1 `/openai/v1/responses` (deployment in the body).
    Responses,
    Models,
    Model(&'a str),
    /// `/v1beta/models/{model}:generateContent` or `:streamGenerateContent`.
    Gemini {
        model: &'a str,
        stream: bool,
    },
    /// `/openai/deployments/{deployment}/…`: the OpenAI endpoint `op` of one deployment.
    Azure {
        deployment: &'a str,
        op: AzureOp,
    },
    Bedrock {
        model: &'a str,
        stream: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AzureOp {
    ChatCompletions,
    Completions,
    Embeddings,
}

// === impl App ===

impl App {
    pub fn new(config: Config) -> Self {
        Self {
            api_keys: config
                .api_keys
                .into_iter()
                .filter(|k| !k.is_empty())
                .collect(),
            rate_limited_keys: config.rate_limited_keys,
            forbidden_models: config.forbidden_models,
            scenarios: Default::default(),
            defaults: config.defaults,
            embedding_dims: config.embedding_dims,
            models: config.models,
            models_created: openai::unix_now(),
            aws: config.aws,
            log: RequestLog::new(),
            prefix_cache: crate::cache::PrefixCache::new(config.cache_ttl),
            stored_responses: Default::default(),
        }
    }

    /// Entry point for every request of every connection; `tls` says whether the connection
    /// is TLS (recorded with the request).
    pub async fn handle<B>(
        self: Arc<Self>,
        req: Request<B>,
        tls: bool,
    ) -> Result<Response<MockBody>, Infallible>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        if let Err(violation) = crate::strict::check(&req) {
            return Ok(bad_request(violation, req.version()));
        }
        let path = req.uri().path();
        if path == "/v1"
            || path.starts_with("/v1/")
            || path.starts_with("/v1beta/")
            || path.starts_with("/openai/")
            || path.starts_with("/model/")
        {
            return Ok(self.handle_v1(req, tls).await);
        }
        Ok(self.handle_mock(req.method(), path))
    }

    async fn handle_v1<B>(&self, req: Request<B>, tls: bool) -> Response<MockBody>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => {
                Err(ApiError::body_too_large())
            }
            Err(_) => Err(ApiError::unreadable_body()),
        };
        let json = match &body {
            Ok(bytes) if bytes.is_empty() => Ok(Value::Null),
            Ok(bytes) => serde_json::from_slice(bytes).map_err(|_| ApiError::invalid_json()),
            Err(err) => Err(err.clone()),
        };

        let knobs = self.defaults.with_headers(&parts.headers);
        let latency = knobs.as_ref().unwrap_or(&self.defaults).latency;
        let anthropic = parts.uri.path().starts_with("/v1/messages");
        let gemini = parts.uri.path().starts_with("/v1beta/");
        let bedrock = parts.uri.path().starts_with("/model/");
        let raw = body.as_deref().unwrap_or_default();
        let fault = knobs.as_ref().map(|k| k.fault).unwrap_or_default();
        let response = match knobs {
            Ok(knobs) => self.respond_v1(&parts, raw, &json, &knobs),
            Err(err) => Err(Box::new((ApiError::bad_knob(&err), HeaderMap::new()))),
        };
        let mut response = response.unwrap_or_else(|failure| {
            let (mut err, retry_after) = *failure;
            if fault.echo_key {
                if let Some(key) = presented_key(&parts.headers) {
                    err.message = echo_key(&err.message, &key).into();
                }
            }
            let mut r = if anthropic {
                let mut r = json_response(crate::anthropic::error_body(&err));
                *r.status_mut() = err.status;
                r
            } else if gemini {
                let (status, body) = crate::gemini::error_body(&err);
                let mut r = json_response(body);
                *r.status_mut() = status;
                r
            } else if bedrock {
                let (status, body, error_type) = crate::bedrock::error_body(&err);
                let mut r = json_response(body);
                *r.status_mut() = status;
                r.headers_mut().insert("x-amzn-errortype", error_type);
                r
            } else {
                error_response(&err)
            };
            r.headers_mut().extend(retry_after);
            r
        });

        inject(&mut response, fault);

        // Recorded before the injected latency so a test can see a request that is still
        // in flight (e.g. one the gateway is about to time out).
        self.log.record(parts, tls, json.ok());
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        response
    }

    /// The reply, or an error (with extra headers) the caller renders in the dialect.
    fn respond_v1(
        &self,
        parts: &Parts,
        raw: &[u8],
        json: &Result<Value, ApiError>,
        knobs: &Knobs,
    ) -> Result<Response<MockBody>, Failure> {
        let plain = |e: ApiError| Box::new((e, HeaderMap::new()));
        let path = parts.uri.path();
        match &self.aws {
            // Bedrock authenticates by signature, over the body exactly as received.
            Some(creds) if path.starts_with("/model/") => crate::bedrock::verify_signature(
                creds,
                &parts.method,
                &parts.uri,
                &parts.headers,
                raw,
            )
            .map_err(plain)?,
            _ if !self.authorized(&parts.headers) => {
                return Err(plain(ApiError::invalid_api_key()))
            }
            _ => {}
        }
        let Some(endpoint) = route(path) else {
            return Err(plain(ApiError::not_found(&parts.method, path)));
        };
        let allowed = endpoint.method();
        if parts.method.as_str() != allowed {
            let mut h = HeaderMap::new();
            h.insert(ALLOW, HeaderValue::from_static(allowed));
            return Err(Box::new((
                ApiError::method_not_allowed(&parts.method, path),
                h,
            )));
        }
        if let Some(model) = json
            .as_ref()
            .ok()
            .and_then(|b| b.get("model"))
            .and_then(Value::as_str)
            .filter(|m| self.forbidden_models.iter().any(|f| f == m))
        {
            return Err(plain(ApiError::model_forbidden(model)));
        }
        if self.presented_key_in(&parts.headers, &self.rate_limited_keys) {
            let mut h = HeaderMap::new();
            h.insert(RETRY_AFTER, HeaderValue::from(30u32));
            h.insert("x-ratelimit-limit-requests", HeaderValue::from(100u32));
            h.insert("x-ratelimit-remaining-requests", HeaderValue::from(0u32));
            h.insert(
                "x-ratelimit-reset-requests",
                HeaderValue::from_static("30s"),
            );
            return Err(Box::new((
                ApiError::injected(StatusCode::TOO_MANY_REQUESTS),
                h,
            )));
        }
        let fail_now = knobs.fail_first.is_some_and(|n| {
            let scenario = parts
                .headers
                .get("x-mock-scenario")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let mut seen = match self.scenarios.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            let count = seen.entry(scenario).or_insert(0);
            *count += 1;
            *count <= n
        });
        let injected = match (knobs.status, fail_now, knobs.fail_first) {
            (status, true, _) => Some(status.unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)),
            (_, false, Some(_)) => None,
            (status, false, None) => status,
        };
        if let Some(status) = injected {
            let mut h = HeaderMap::new();
            if let Some(secs) = knobs.retry_after {
                h.insert(RETRY_AFTER, HeaderValue::from(secs));
            }
            return Err(Box::new((ApiError::injected(status), h)));
        }
        let body = match json {
            Ok(body) => body,
            Err(err) => return Err(plain(err.clone())),
        };
        let tool_header = parts.headers.get(TOOL_CALL).and_then(|v| v.to_str().ok());
        let query = parts.uri.query().unwrap_or("");
        let azure_body;
        let body = match endpoint {
            Endpoint::Azure { deployment, .. } => {
                if !query
                    .split('&')
                    .any(|kv| kv.starts_with("api-version=") && kv.len() > 12)
                {
                    return Err(plain(ApiError::status_message(
                        StatusCode::NOT_FOUND,
                        "Resource not found (no api-version query parameter).",
                    )));
                }
                // Azure takes the model from the deployment; the body may name none.
                azure_body = match body {
                    Value::Object(o) if !o.contains_key("model") => {
                        let mut o = o.clone();
                        o.insert("model".into(), Value::String(deployment.to_string()));
                        Value::Object(o)
                    }
                    other => other.clone(),
                };
                &azure_body
            }
            _ => body,
        };
        let result = match endpoint {
            Endpoint::Bedrock { model, stream } => match crate::bedrock::percent_decode(model) {
                Some(_) => converse(stream, body, knobs, tool_header),
                None => Err(ApiError::status_message(
                    StatusCode::BAD_REQUEST,
                    "The provided model identifier is invalid.",
                )),
            },
            Endpoint::Gemini { model, stream } => {
                if stream && !query.split('&').any(|kv| kv == "alt=sse") {
                    return Err(plain(ApiError::status_message(
                        StatusCode::BAD_REQUEST,
                        "switchyard-mock streams only as server-sent events: add ?alt=sse",
                    )));
                }
                generate_content(model, stream, body, knobs, tool_header)
            }
            Endpoint::Azure { op, .. } => match op {
                AzureOp::ChatCompletions => chat_completions(body, knobs, tool_header),
                AzureOp::Completions => completions(body, knobs),
                AzureOp::Embeddings => self.embeddings(body),
            },
            Endpoint::ChatCompletions => {
                let cache = (
                    &self.prefix_cache,
                    presented_key(&parts.headers).unwrap_or_default(),
                );
                chat_completions_cached(body, knobs, tool_header, Some(cache))
            }
            Endpoint::Messages => {
                let cache = (
                    &self.prefix_cache,
                    presented_key(&parts.headers).unwrap_or_default(),
                    parts
                        .headers
                        .get("x-mock-cache-mark")
                        .is_some_and(|v| v == "last"),
                );
                messages(body, knobs, tool_header, Some(cache))
            }
            Endpoint::CountTokens => crate::anthropic::count_tokens(body).map(json_response),
            Endpoint::Responses => {
                let key = presented_key(&parts.headers).unwrap_or_default();
                let stored = (&self.stored_responses, key.as_str());
                crate::responses::respond(body, knobs, tool_header, stored).map(|a| match a {
                    crate::responses::Answer::Json(b) => json_response(b),
                    crate::responses::Answer::Frames(f) => {
                        sse_response(MockBody::frames(f, knobs.reset_after, knobs.chunk_delay))
                    }
                })
            }
            Endpoint::Completions => completions(body, knobs),
            Endpoint::Embeddings => self.embeddings(body),
            Endpoint::Models => openai::models_json(&self.models, self.models_created)
                .map(json_response)
                .map_err(|_| ApiError::internal()),
            Endpoint::Model(id) => self.model(id),
        };
        result.map_err(plain)
    }

    fn handle_mock(&self, method: &Method, path: &str) -> Response<MockBody> {
        let result = match (method, path) {
            (&Method::GET, "/mock/requests") => self.log.to_json().map(json_response),
            (&Method::DELETE, "/mock/requests") => {
                self.log.clear();
                Ok(empty_response(StatusCode::NO_CONTENT))
            }
            (&Method::GET, "/mock/stats") => {
                serde_json::to_vec(&serde_json::json!({ "requests": self.log.total() }))
                    .map(|v| json_response(Bytes::from(v)))
            }
            (&Method::GET, "/healthz") => Ok(empty_response(StatusCode::OK)),
            (_, "/mock/requests" | "/mock/stats" | "/healthz") => {
                return error_response(&ApiError::method_not_allowed(method, path));
            }
            _ => return error_response(&ApiError::not_found(method, path)),
        };
        result.unwrap_or_else(|_| error_response(&ApiError::internal()))
    }

    /// `Authorization: Bearer KEY` (OpenAI), `api-key: KEY` (Azure OpenAI),
    /// `x-api-key: KEY` (Anthropic) or `x-goog-api-key: KEY` (Gemini).
    fn authorized(&self, headers: &HeaderMap) -> bool {
        if self.api_keys.is_empty() {
            return true;
        }
        self.presented_key_in(headers, &self.api_keys)
            || self.presented_key_in(headers, &self.rate_limited_keys)
    }

    fn presented_key_in(&self, headers: &HeaderMap, keys: &[String]) -> bool {
        let bearer = headers
            .get(AUTHORIZATION)
            .and_then(|v| bearer_token(v.as_bytes()));
        let api_key = headers.get(API_KEY).map(|v| v.as_bytes());
        let x_api_key = headers.get(X_API_KEY).map(|v| v.as_bytes());
        let goog = headers.get(X_GOOG_API_KEY).map(|v| v.as_bytes());
        let aws = crate::bedrock::access_key_id(headers).map(str::as_bytes);
        keys.iter().any(|k| {
            let k = Some(k.as_bytes());
            bearer == k || api_key == k || x_api_key == k || goog == k || aws == k
        })
    }

    fn embeddings(&self, body: &Value) -> Result<Response<MockBody>, ApiError> {
        let model = model(body)?;
        let inputs = embedding_inputs(body.get("input"))?;
        let dims = match body.get("dimensions") {
            None | Some(Value::Null) => u64::from(self.embedding_dims),
            Some(v) => v
                .as_u64()
                .filter(|d| (1..=MAX_EMBEDDING_DIMS).contains(d))
                .ok_or(ApiError::invalid_value(
                    "dimensions",
                    "Invalid 'dimensions': expected a positive integer.",
                ))?,
        };
        let format = match body.get("encoding_format").and_then(Value::as_str) {
            None | Some("float") => EncodingFormat::Float,
            Some("base64") => EncodingFormat::Base64,
            Some(_) => {
                return Err(ApiError::invalid_value(
                    "encoding_format",
                    "Invalid 'encoding_format': expected 'float' or 'base64'.",
                ))
            }
        };
        let dims = usize::try_from(dims).map_err(|_| ApiError::internal())?;
        openai::embeddings_json(model, &inputs, dims, format)
            .map(json_response)
            .map_err(|_| ApiError::internal())
    }

    fn model(&self, id: &str) -> Result<Response<MockBody>, ApiError> {
        if !self.models.iter().any(|m| m == id) {
            return Err(ApiError::model_not_found(id));
        }
        openai::model_json(id, self.models_created)
            .map(json_response)
            .map_err(|_| ApiError::internal())
    }
}

// === impl Endpoint ===

impl Endpoint<'_> {
    fn method(self) -> &'static str {
        match self {
            Self::ChatCompletions
            | Self::Completions
            | Self::Embeddings
            | Self::Messages
            | Self::CountTokens
            | Self::Responses
            | Self::Gemini { .. }
            | Self::Azure { .. }
            | Self::Bedrock { .. } => "POST",
            Self::Models | Self::Model(_) => "GET",
        }
    }
}

fn route(path: &str) -> Option<Endpoint<'_>> {
    match path {
        "/v1/chat/completions" => Some(Endpoint::ChatCompletions),
        "/v1/completions" => Some(Endpoint::Completions),
        "/v1/embeddings" => Some(Endpoint::Embeddings),
        "/v1/messages" => Some(Endpoint::Messages),
        "/v1/messages/count_tokens" => Some(Endpoint::CountTokens),
        "/v1/models" => Some(Endpoint::Models),
        "/v1/responses" | "/openai/v1/responses" => Some(Endpoint::Responses),
        _ => {
            if let Some(rest) = path.strip_prefix("/v1beta/models/") {
                let (model, stream) = crate::gemini::parse_method(rest)?;
                return Some(Endpoint::Gemini { model, stream });
            }
            if let Some(rest) = path.strip_prefix("/model/") {
                let (model, stream) = crate::bedrock::parse_path(rest)?;
                return Some(Endpoint::Bedrock { model, stream });
            }
            if let Some(rest) = path.strip_prefix("/openai/deployments/") {
                let (deployment, op) = rest.split_once('/')?;
                let op = match op {
                    "chat/completions" => AzureOp::ChatCompletions,
                    "completions" => AzureOp::Completions,
                    "embeddings" => AzureOp::Embeddings,
                    _ => return None,
                };
                return (!deployment.is_empty()).then_some(Endpoint::Azure { deployment, op });
            }
            path.strip_prefix("/v1/models/")
                .filter(|id| !id.is_empty())
                .map(Endpoint::Model)
        }
    }
}

/// `generateContent` / `streamGenerateContent`: text, or a function call (see
/// [`crate::gemini::plan`]).
fn generate_content(
    model: &str,
    stream: bool,
    body: &Value,
    knobs: &Knobs,
    tool_header: Option<&str>,
) -> Result<Response<MockBody>, ApiError> {
    let plan = crate::gemini::plan(model, body, knobs, tool_header)?;
    if !stream {
        return Ok(json_response(plan.to_json()));
    }
    Ok(sse_response(MockBody::frames(
        plan.frames(),
        knobs.reset_after,
        knobs.chunk_delay,
    )))
}

/// Converse / ConverseStream: text, or a toolUse block (see [`crate::bedrock::plan`]).
fn converse(
    stream: bool,
    body: &Value,
    knobs: &Knobs,
    tool_header: Option<&str>,
) -> Result<Response<MockBody>, ApiError> {
    let plan = crate::bedrock::plan(body, knobs, tool_header)?;
    if !stream {
        return Ok(json_response(plan.to_json()));
    }
    let mut response = Response::new(MockBody::frames(
        plan.frames(),
        knobs.reset_after,
        knobs.chunk_delay,
    ));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.amazon.eventstream"),
    );
    Ok(response)
}

/// `POST /v1/messages`: text, or a tool_use block (see [`crate::anthropic::plan`]).
fn messages(
    body: &Value,
    knobs: &Knobs,
    tool_header: Option<&str>,
    cache: Option<(&crate::cache::PrefixCache, String, bool)>,
) -> Result<Response<MockBody>, ApiError> {
    let mut plan = crate::anthropic::plan(body, knobs, tool_header)?;
    if let Some((cache, key, mark_last)) = cache {
        let mut blocks = crate::cache::boundaries(
            body.get("tools"),
            body.get("system"),
            body.get("messages")
                .and_then(Value::as_array)
                .map_or(&[][..], Vec::as_slice),
        );
        // `x-mock-cache-mark: last` (set by a test's ModelBackend headers): as if the caller
        // had marked its last block, for requests translated from a format that cannot.
        if let (true, Some(last)) = (mark_last, blocks.last_mut()) {
            last.marked = true;
        }
        plan.set_cache(cache.account(&key, plan.model(), &blocks, crate::cache::Rules::Anthropic));
    }
    if body.get("stream").and_then(Value::as_bool) != Some(true) {
        return Ok(json_response(plan.to_json()));
    }
    Ok(sse_response(MockBody::frames(
        plan.frames(),
        knobs.reset_after,
        knobs.chunk_delay,
    )))
}

fn sse_response(body: MockBody) -> Response<MockBody> {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn chat_completions(
    body: &Value,
    knobs: &Knobs,
    tool_header: Option<&str>,
) -> Result<Response<MockBody>, ApiError> {
    chat_completions_cached(body, knobs, tool_header, None)
}

/// `POST /v1/chat/completions`, its prompt looked up in the simulated cache when one is given.
fn chat_completions_cached(
    body: &Value,
    knobs: &Knobs,
    tool_header: Option<&str>,
    cache: Option<(&crate::cache::PrefixCache, String)>,
) -> Result<Response<MockBody>, ApiError> {
    let model = model(body)?;
    let messages = match body.get("messages") {
        None | Some(Value::Null) => return Err(ApiError::missing_param("messages")),
        Some(Value::Array(messages)) if messages.is_empty() => {
            return Err(ApiError::empty_array("messages"))
        }
        Some(Value::Array(messages)) => messages,
        Some(_) => return Err(ApiError::invalid_type("messages", "an array of objects")),
    };
    let chars = messages
        .iter()
        .map(|m| content_chars(m.get("content")))
        .sum();
    let max_tokens = body
        .get("max_completion_tokens")
        .or_else(|| body.get("max_tokens"))
        .and_then(Value::as_u64);
    // With tools offered and no tool result yet in the last turn, answer with a tool call
    // whose arguments stream in pieces; after the result, answer with text.
    let answered = messages
        .last()
        .is_some_and(|m| m.get("role").and_then(Value::as_str) == Some("tool"));
    if !answered {
        if let Some(call) = crate::tools::choose(
            body.get("tools"),
            "parameters",
            tool_header,
            knobs.tool_args.as_ref(),
        ) {
            let prompt_tokens = openai::estimate_tokens(chars);
            if body.get("stream").and_then(Value::as_bool) != Some(true) {
                return Ok(json_response(crate::tools::openai_json(
                    &call,
                    model,
                    prompt_tokens,
                )));
            }
            let include_usage = body
                .pointer("/stream_options/include_usage")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            return Ok(sse_response(MockBody::frames(
                crate::tools::openai_frames(&call, model, prompt_tokens, include_usage),
                knobs.reset_after,
                knobs.chunk_delay,
            )));
        }
    }
    let mut completion = Completion::new(
        Api::Chat,
        model,
        openai::estimate_tokens(chars),
        knobs.chunks,
        max_tokens,
    );
    if let Some((cache, key)) = cache {
        let blocks = crate::cache::boundaries(body.get("tools"), None, messages);
        completion.set_cached(
            cache
                .account(&key, model, &blocks, crate::cache::Rules::OpenAi)
                .read,
        );
    }
    Ok(render(completion, body, knobs))
}

fn completions(body: &Value, knobs: &Knobs) -> Result<Response<MockBody>, ApiError> {
    let model = model(body)?;
    let prompt_tokens = match body.get("prompt") {
        None | Some(Value::Null) => return Err(ApiError::missing_param("prompt")),
        Some(Value::String(s)) => openai::estimate_tokens(s.chars().count()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => openai::estimate_tokens(s.chars().count()),
                Value::Array(tokens) => tokens.len() as u64,
                _ => 1,
            })
            .sum::<u64>()
            .max(1),
        Some(_) => {
            return Err(ApiError::invalid_type(
                "prompt",
                "a string or an array of strings or tokens",
            ))
        }
    };
    let completion = Completion::new(
        Api::Text,
        model,
        prompt_tokens,
        knobs.chunks,
        body.get("max_tokens").and_then(Value::as_u64),
    );
    Ok(render(completion, body, knobs))
}

/// Streams or buffers the completion depending on the request's `stream` flag.
fn render(completion: Completion, body: &Value, knobs: &Knobs) -> Response<MockBody> {
    if body.get("stream").and_then(Value::as_bool) != Some(true) {
        return match completion.to_json() {
            Ok(bytes) => json_response(bytes),
            Err(_) => error_response(&ApiError::internal()),
        };
    }
    let include_usage = body
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let plan = completion.into_stream(include_usage, knobs.reset_after);
    let mut response = Response::new(MockBody::stream(plan, knobs.chunk_delay));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn model(body: &Value) -> Result<&str, ApiError> {
    body.get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .ok_or_else(ApiError::missing_model)
}

/// Characters of a message's text, whether `content` is a string or an array of parts.
fn content_chars(content: Option<&Value>) -> usize {
    match content {
        Some(Value::String(s)) => s.chars().count(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .map(|s| s.chars().count())
            .sum(),
        _ => 0,
    }
}

/// `input` may be a string, an array of strings, one token array or an array of token arrays.
fn embedding_inputs(input: Option<&Value>) -> Result<Vec<EmbeddingInput<'_>>, ApiError> {
    let invalid = || {
        ApiError::invalid_type(
            "input",
            "a string, an array of strings, or an array of token arrays",
        )
    };
    match input {
        None | Some(Value::Null) => Err(ApiError::missing_param("input")),
        Some(Value::String(s)) => Ok(vec![EmbeddingInput::Text(s)]),
        Some(Value::Array(items)) if items.is_empty() => Err(ApiError::empty_array("input")),
        Some(Value::Array(items)) if items.iter().all(Value::is_u64) => {
            Ok(vec![EmbeddingInput::Tokens(items)])
        }
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(EmbeddingInput::Text(s)),
                Value::Array(tokens) if tokens.iter().all(Value::is_u64) => {
                    Ok(EmbeddingInput::Tokens(tokens))
                }
                _ => Err(invalid()),
            })
            .collect(),
        Some(_) => Err(invalid()),
    }
}

/// The faults of `x-mock-fault` that reshape an answer already made: a body cut short or
/// stalled, a stream that just stops.
fn inject(response: &mut Response<MockBody>, fault: crate::faults::Faults) {
    let success = response.status().is_success();
    let body = response.body_mut();
    if fault.truncate_stream {
        body.cut_cleanly();
    }
    let MockBody::Full(Some(bytes)) = body else {
        return;
    };
    if fault.stall_body {
        *body = MockBody::stalled(bytes);
    } else if fault.malformed_json && success {
        *body = MockBody::full(bytes.slice(..bytes.len() / 2));
    }
}

/// The key a request presented, in whichever header its dialect uses.
fn presented_key(headers: &HeaderMap) -> Option<String> {
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|v| bearer_token(v.as_bytes()));
    let key = bearer
        .or_else(|| headers.get(X_API_KEY).map(HeaderValue::as_bytes))
        .or_else(|| headers.get(API_KEY).map(HeaderValue::as_bytes))
        .or_else(|| headers.get(X_GOOG_API_KEY).map(HeaderValue::as_bytes))?;
    String::from_utf8(key.to_vec()).ok()
}

/// An error message that quotes the caller's credentials back, as some providers do: the
/// key, the header it came in and its base64.
fn echo_key(message: &str, key: &str) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(key);
    format!("{message} (you sent '{key}', as 'Authorization: Bearer {key}', base64 {b64})")
}

fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, token) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| token.trim_ascii())
}

fn json_response(body: Bytes) -> Response<MockBody> {
    let mut response = Response::new(MockBody::full(body));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, APPLICATION_JSON);
    response
}

/// The 400 for a request an origin server would refuse; plain text, as nginx's own 400 is not
/// in any provider's dialect. HTTP/1.x connections are closed after it, as nginx does.
fn bad_request(violation: Violation, version: Version) -> Response<MockBody> {
    let mut response = Response::new(MockBody::full(Bytes::from_static(
        violation.reason().as_bytes(),
    )));
    *response.status_mut() = StatusCode::BAD_REQUEST;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, TEXT_PLAIN);
    if !matches!(version, Version::HTTP_2 | Version::HTTP_3) {
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

fn empty_response(status: StatusCode) -> Response<MockBody> {
    let mut response = Response::new(MockBody::empty());
    *response.status_mut() = status;
    response
}

fn error_response(err: &ApiError) -> Response<MockBody> {
    let mut response = json_response(err.to_bytes());
    *response.status_mut() = err.status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            route("/v1/chat/completions"),
            Some(Endpoint::ChatCompletions)
        );
        assert_eq!(route("/v1/models/a/b"), Some(Endpoint::Model("a/b")));
        assert_eq!(route("/v1/models/"), None);
        assert_eq!(route("/v1/responses"), Some(Endpoint::Responses));
        assert_eq!(route("/openai/v1/responses"), Some(Endpoint::Responses));
        assert_eq!(
            route("/v1beta/models/gemini-2.5-flash:streamGenerateContent"),
            Some(Endpoint::Gemini {
                model: "gemini-2.5-flash",
                stream: true
            })
        );
        assert_eq!(route("/v1beta/models/a/b:generateContent"), None);
        assert_eq!(route("/v1beta/models/m:embedContent"), None);
        assert_eq!(
            route("/openai/deployments/prod/chat/completions"),
            Some(Endpoint::Azure {
                deployment: "prod",
                op: AzureOp::ChatCompletions
            })
        );
        assert_eq!(route("/openai/deployments//chat/completions"), None);
    }

    #[test]
    fn bearer() {
        assert_eq!(bearer_token(b"Bearer sk-1"), Some(&b"sk-1"[..]));
        assert_eq!(bearer_token(b"bearer  sk-1 "), Some(&b"sk-1"[..]));
        assert_eq!(bearer_token(b"Basic abc"), None);
        assert_eq!(bearer_token(b"Bear"), None);
    }

    #[test]
    fn embedding_input_shapes() {
        let shapes = [
            (serde_json::json!("a"), 1),
            (serde_json::json!(["a", "b"]), 2),
            (serde_json::json!([1, 2, 3]), 1),
            (serde_json::json!([[1, 2], [3]]), 2),
        ];
        for (input, n) in shapes {
            assert_eq!(embedding_inputs(Some(&input)).unwrap().len(), n, "{input}");
        }
        for input in [
            serde_json::json!([]),
            serde_json::json!([1, "a"]),
            serde_json::json!(3),
        ] {
            assert!(embedding_inputs(Some(&input)).is_err(), "{input}");
        }
    }
}
