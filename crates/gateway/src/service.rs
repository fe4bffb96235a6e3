//! The data-plane service: one straight line of phases per request.
//!
//! ```text
//! endpoint → authenticate (headers only) → read body (limit) → decode → route
//!   → admit (allow-list) → for each target in the plan: encode → send (retry / fall back
//!   before first byte) → relay response (SSE event by event, or whole JSON) → record
//!   (drop guard)
//! ```
//!
//! Authentication comes first so that a caller who may not call never gets its body read:
//! its request costs the gateway a header lookup, not up to `max_body_bytes` of reading and
//! decoding.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use switchyard_providers::{transcode::Format, Operation};
use switchyard_router::budget::{max_cost_micro_usd, output_cap, reserve_prices};
use switchyard_router::state::{LimitExceeded, Taken, WindowStatus};
use switchyard_router::{Consumer, Matched, Route, RoutingTable, TableHandle};
use switchyard_telemetry::{AccessLog, Metrics, Otel};
use tokio::time::Instant;

use crate::{
    admit::{Limits, Refusal, SettleTarget},
    affinity::Sticky,
    body::Body,
    busy_poll::BusyPoll,
    error::{json_response, GatewayError},
    forward::{Forwarder, RequestCtx},
    inbound::Inbound,
    owners::{ResponseOwners, LOCAL_CAPACITY},
    record::Record,
    service_account::{Review, ReviewFailure, ServiceAccountAuth, TokenReviewer},
    upstream::UpstreamClient,
};

/// Static settings of the data plane.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Largest non-streamed upstream response accepted, in bytes.
    pub max_response_bytes: usize,
    /// Require a virtual key even when no AIConsumer exists (then every request is refused
    /// until consumers exist). On by default: a gateway runs open only when asked to. Once any
    /// AIConsumer exists, valid or not, a key is required regardless.
    pub require_auth: bool,
    /// Keep the runtime's workers polling for I/O after each request instead of sleeping:
    /// lower added latency on virtual machines, paid in CPU (see [`BusyPoll`]).
    pub busy_poll: Option<BusyPoll>,
    /// The access log, one line per request written off the request path; `None` when off.
    pub access_log: Option<Arc<AccessLog>>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            max_body_bytes: 8 * 1024 * 1024,
            max_response_bytes: 64 * 1024 * 1024,
            require_auth: true,
            busy_poll: None,
            access_log: None,
        }
    }
}

/// The gateway service. Cheap to clone: one per connection.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) table: Arc<TableHandle>,
    pub(crate) client: UpstreamClient,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) otel: Option<Arc<Otel>>,
    pub(crate) limits: Arc<Limits>,
    /// Which backend and key stored each Responses answer (see [`crate::owners`]).
    pub(crate) owners: Arc<ResponseOwners>,
    pub(crate) config: GatewayConfig,
    /// ServiceAccount tokens are accepted only with a reviewer (cluster mode).
    pub(crate) service_accounts: Option<ServiceAccountAuth>,
}

/// The endpoint a request is for.
enum Endpoint {
    Proxy(Operation),
    Models,
}

impl Gateway {
    /// A gateway reading routes from `table`. With `otel`, every request also gets a span
    /// and the GenAI metrics. With `reviewer`, callers may also authenticate with a
    /// ServiceAccount token.
    pub fn new(
        table: Arc<TableHandle>,
        client: UpstreamClient,
        metrics: Arc<Metrics>,
        otel: Option<Arc<Otel>>,
        limits: Arc<Limits>,
        config: GatewayConfig,
        reviewer: Option<Arc<dyn TokenReviewer>>,
    ) -> Self {
        let owners = Arc::new(ResponseOwners::new(Arc::clone(&limits), LOCAL_CAPACITY));
        Gateway {
            inner: Arc::new(Shared {
                table,
                client,
                metrics,
                otel,
                owners,
                limits,
                config,
                service_accounts: reviewer.map(ServiceAccountAuth::new),
            }),
        }
    }

    /// Handles one request. Never fails: every error becomes a response in OpenAI's shape.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<crate::body::BoxError>,
    {
        let start = Instant::now();
        if let Some(busy) = &self.inner.config.busy_poll {
            busy.mark(start.into_std());
        }
        let request_id = request_id(req.headers());
        let mut record = Record::new(
            Arc::clone(&self.inner.metrics),
            self.inner.otel.clone(),
            start,
            request_id.clone(),
        );
        record.access_log = self.inner.config.access_log.clone();
        // Errors are written in the format of the endpoint the caller used.
        let (format, endpoint) = endpoint(req.method(), req.uri().path());
        let result = match endpoint {
            Ok(Endpoint::Proxy(op)) => {
                record.operation = op.as_str();
                if let Some(otel) = &self.inner.otel {
                    record.trace = Some(otel.start_request(req.headers(), op.as_str()));
                }
                // Boxed on its own (some 6 KiB): inline it made this future 7.8 KiB, in
                // jemalloc's 8 KiB size class with hyper's connection buffers, so each
                // request's freed future (written through) was handed to the next buffer
                // (mostly never written) and every open stream kept those pages resident.
                Box::pin(self.inner.proxy(op, req, &request_id, &mut record)).await
            }
            Ok(Endpoint::Models) => self.inner.models(req.headers(), &mut record).await,
            Err(e) => Err(e),
        };
        let mut resp = match result {
            Ok(resp) => resp,
            Err(e) => {
                if e.source() != switchyard_providers::ErrorSource::Caller {
                    tracing::warn!(request_id = ?request_id, error = %e, "request failed");
                }
                record.error_type = Some(e.code().to_string());
                e.to_response(format)
            }
        };
        record.status = resp.status();
        resp.headers_mut().insert(X_REQUEST_ID.clone(), request_id);
        resp
    }
}

/// Output tokens reserved for a request that sets no `max_tokens`, until usage is known.
const DEFAULT_OUTPUT_ESTIMATE: u64 = 256;

/// Tokens reserved before the request: the prompt estimate plus the caller's `max_tokens`
/// (any number a client sends, up to `u64::MAX`), saturating rather than wrapping to a small
/// reservation that would slip past the limit.
fn token_estimate(input: u64, max_tokens: Option<u64>) -> u64 {
    input.saturating_add(max_tokens.unwrap_or(DEFAULT_OUTPUT_ESTIMATE))
}

/// Maps a refusal to its error, noting the reason for the rate-limited counter.
fn refusal(r: Refusal, record: &mut Record) -> GatewayError {
    let secs = |d: std::time::Duration| d.as_millis().div_ceil(1000) as u64;
    match r {
        Refusal::Limit(LimitExceeded::Requests(s)) => {
            record.ratelimit_reason = Some("requests_per_minute");
            GatewayError::RateLimited {
                what: "requests",
                limit: s.limit,
                remaining: s.remaining,
                reset_secs: secs(s.reset),
            }
        }
        Refusal::Limit(LimitExceeded::Tokens(s)) => {
            record.ratelimit_reason = Some("tokens_per_minute");
            GatewayError::RateLimited {
                what: "tokens",
                limit: s.limit,
                remaining: s.remaining,
                reset_secs: secs(s.reset),
            }
        }
        Refusal::Budget {
            shared,
            cap_usd,
            remaining_usd,
            reserve_usd,
            reset,
        } => {
            record.ratelimit_reason = Some("budget");
            GatewayError::BudgetExceeded {
                budget: match shared {
                    Some(name) => format!("the shared budget {name}"),
                    None => "your budget".to_string(),
                },
                cap_usd,
                remaining_usd,
                reserve_usd,
                reset_secs: secs(reset),
            }
        }
        Refusal::Unavailable => GatewayError::LimitsUnavailable,
    }
}

/// OpenAI's `x-ratelimit-*` headers for the consumer's windows.
pub(crate) fn rate_limit_headers(
    h: &mut HeaderMap,
    requests: Option<WindowStatus>,
    tokens: Option<WindowStatus>,
) {
    for (what, status) in [("requests", requests), ("tokens", tokens)] {
        if let Some(s) = status {
            let reset = u64::try_from(s.reset.as_millis().div_ceil(1000)).unwrap_or(u64::MAX);
            crate::headers::put_rate_limit(h, what, s.limit, s.remaining, reset);
        }
    }
}

/// The format errors to a request for `path` are written in, when nothing more is known of
/// it (an unknown path under an API's prefix, or a request refused before it is read).
pub(crate) fn caller_format(path: &str) -> Format {
    if path.starts_with("/v1/messages") {
        Format::Anthropic
    } else if path.starts_with("/v1/responses") {
        Format::Responses
    } else {
        Format::OpenAiChat
    }
}

/// What a request is for, and the format its errors are written in: classified once, from
/// the method and path.
fn endpoint(method: &Method, path: &str) -> (Format, Result<Endpoint, GatewayError>) {
    let path = path.strip_suffix('/').unwrap_or(path);
    let (ep, allowed) = match path {
        "/v1/chat/completions" => (Endpoint::Proxy(Operation::ChatCompletions), Method::POST),
        "/v1/completions" => (Endpoint::Proxy(Operation::Completions), Method::POST),
        "/v1/embeddings" => (Endpoint::Proxy(Operation::Embeddings), Method::POST),
        "/v1/messages" => (Endpoint::Proxy(Operation::Messages), Method::POST),
        "/v1/messages/count_tokens" => (Endpoint::Proxy(Operation::CountTokens), Method::POST),
        "/v1/responses" => (Endpoint::Proxy(Operation::Responses), Method::POST),
        "/v1/models" => (Endpoint::Models, Method::GET),
        other => {
            return (
                caller_format(other),
                Err(GatewayError::NotFound(other.to_string())),
            )
        }
    };
    let format = match ep {
        Endpoint::Proxy(Operation::Messages | Operation::CountTokens) => Format::Anthropic,
        Endpoint::Proxy(Operation::Responses) => Format::Responses,
        Endpoint::Proxy(_) | Endpoint::Models => Format::OpenAiChat,
    };
    if method == allowed || (allowed == Method::GET && method == Method::HEAD) {
        (format, Ok(ep))
    } else {
        (
            format,
            Err(GatewayError::MethodNotAllowed(method.to_string())),
        )
    }
}

/// Header names used on every request, built once: a name given as a string is parsed and
/// validated each time, and one that is not a standard header is also allocated.
pub(crate) use crate::headers::X_REQUEST_ID;
static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// The caller's request id if it sent a sane one, else a fresh one.
pub(crate) fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&X_REQUEST_ID) {
        if !v.is_empty() && v.len() <= 128 {
            return v.clone();
        }
    }
    // Hex by hand: `format!` cost some 2 000 instructions per request (callgrind).
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = *b"req_00000000000000000000000000000000";
    let bits = (u128::from(fastrand::u64(..)) << 64) | u128::from(fastrand::u64(..));
    for (i, b) in id[4..].iter_mut().enumerate() {
        *b = HEX[((bits >> (124 - 4 * i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&id).unwrap_or_else(|_| HeaderValue::from_static("req_unknown"))
}

/// The virtual key the caller presented, if any: `Authorization: Bearer` (OpenAI SDKs), else
/// `x-api-key` (Anthropic SDKs and the tools built on them).
fn presented_key(headers: &HeaderMap) -> Option<&[u8]> {
    let bearer = headers.get(header::AUTHORIZATION).and_then(|v| {
        let v = v.as_bytes();
        v.strip_prefix(b"Bearer ")
            .or_else(|| v.strip_prefix(b"bearer "))
    });
    let key = bearer
        .or_else(|| headers.get(&X_API_KEY).map(HeaderValue::as_bytes))?
        .trim_ascii();
    (!key.is_empty()).then_some(key)
}

/// The route for the decoded request (its model, headers and caller), noted in `record`.
fn route<'t>(
    table: &'t RoutingTable,
    decoded: &Inbound<'_>,
    headers: &HeaderMap,
    consumer: Option<&Consumer>,
    record: &mut Record,
) -> Result<Matched<'t>, GatewayError> {
    let matched = table
        .route(
            decoded.model(),
            headers,
            consumer.map(|c| c.short_name.as_str()),
        )
        .ok_or_else(|| GatewayError::ModelNotFound {
            model: decoded.model().to_string(),
        })?;
    record.route = Some(Arc::clone(&matched.route.name));
    record.model = Some(Arc::clone(matched.model_label));
    Ok(matched)
}

impl Shared {
    async fn proxy<B>(
        &self,
        op: Operation,
        req: Request<B>,
        request_id: &HeaderValue,
        record: &mut Record,
    ) -> Result<Response<Body>, GatewayError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<crate::body::BoxError>,
    {
        let (parts, body) = req.into_parts();
        let table = self.table.load_full();
        if table.generation() == 0 {
            return Err(GatewayError::NotReady);
        }
        // From the headers alone, before a byte of the body is read.
        let consumer = self.authenticate(&table, &parts.headers, record).await?;
        let bytes = self.read_body(&parts.headers, body).await?;
        let decoded = Inbound::decode(op, &bytes, &parts.headers)?;
        record.set_requested_model(decoded.model());
        let matched = route(&table, &decoded, &parts.headers, consumer, record)?;
        let taken = match consumer {
            Some(c) => {
                self.admit(c, &decoded, bytes.len(), &matched, record)
                    .await?
            }
            None => None,
        };
        let mut resp = self
            .forward(
                op,
                &decoded,
                matched.route,
                request_id,
                &parts.headers,
                record,
            )
            .await?;
        if let Some(taken) = taken {
            rate_limit_headers(resp.headers_mut(), taken.requests, taken.token_status);
        }
        Ok(resp)
    }

    /// Whether `consumer` may use the matched route, and, when it is limited, its windows
    /// charged and the request's maximum cost reserved on its budgets (settled when the
    /// request is recorded). Returns what the windows took, for the rate-limit headers.
    async fn admit(
        &self,
        consumer: &Consumer,
        decoded: &Inbound<'_>,
        body_len: usize,
        matched: &Matched<'_>,
        record: &mut Record,
    ) -> Result<Option<Taken>, GatewayError> {
        let route = matched.route;
        if !consumer.allows(decoded.model(), &route.name) {
            return Err(GatewayError::ModelNotAllowed {
                model: decoded.model().to_string(),
            });
        }
        if !consumer.is_limited() {
            return Ok(None);
        }
        let estimate = token_estimate(decoded.estimated_input_tokens(), decoded.max_tokens());
        // The most it can cost: every body byte a token, the output cap, at the route's
        // highest prices (switchyard_router::budget).
        let max_cost = max_cost_micro_usd(
            body_len as u64,
            output_cap(route, decoded.max_tokens()),
            reserve_prices(route),
        );
        let admitted = self
            .limits
            .admit(consumer, estimate, max_cost)
            .await
            .map_err(|r| refusal(r, record))?;
        let taken = admitted.taken;
        record.settle = Some((
            Arc::clone(&self.limits),
            SettleTarget::new(consumer, Arc::clone(matched.model_label)),
            admitted,
        ));
        Ok(Some(taken))
    }

    /// Sends the request to the route's targets (retrying and falling back as the route
    /// says) and relays the answer, with the stored response it continues, if any, found
    /// first.
    async fn forward(
        &self,
        op: Operation,
        decoded: &Inbound<'_>,
        route: &Route,
        request_id: &HeaderValue,
        headers: &HeaderMap,
        record: &mut Record,
    ) -> Result<Response<Body>, GatewayError> {
        let owner = match decoded.previous_response_id() {
            Some(id) => self.owners.owner(id).await,
            None => None,
        };
        let ctx = RequestCtx {
            op,
            decoded,
            route,
            request_id,
            sticky: Sticky {
                key: crate::affinity::key(decoded, headers, route.affinity),
                owner,
            },
            deadline: route.timeout.map(|t| record.start + t),
        };
        let forwarder = Forwarder {
            client: &self.client,
            metrics: &self.metrics,
            owners: &self.owners,
            max_response_bytes: self.config.max_response_bytes,
        };
        forwarder.forward(&ctx, record).await
    }

    async fn read_body<B>(&self, headers: &HeaderMap, body: B) -> Result<Bytes, GatewayError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<crate::body::BoxError>,
    {
        let limit = self.config.max_body_bytes;
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(GatewayError::BodyTooLarge { limit });
        }
        match Limited::new(body, limit).collect().await {
            Ok(c) => Ok(c.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                Err(GatewayError::BodyTooLarge { limit })
            }
            Err(e) => match e.downcast::<crate::body::BodyTimedOut>() {
                Ok(timed_out) => Err(GatewayError::BodyTimeout(*timed_out)),
                Err(e) => Err(GatewayError::BodyRead(e.to_string())),
            },
        }
    }

    async fn authenticate<'t>(
        &self,
        table: &'t RoutingTable,
        headers: &HeaderMap,
        record: &mut Record,
    ) -> Result<Option<&'t switchyard_router::Consumer>, GatewayError> {
        let consumers = table.consumers();
        let required = self.config.require_auth || consumers.auth_required();
        let consumer = match presented_key(headers) {
            Some(key) => match consumers.authenticate(key) {
                Some(c) => Some(c),
                None if consumers.accepts_service_accounts()
                    && ServiceAccountAuth::looks_like_token(key) =>
                {
                    Some(self.service_account(table, key).await?)
                }
                None if required => return Err(GatewayError::InvalidKey),
                // An open gateway ignores keys it does not know: SDKs always send one.
                None => None,
            },
            None if required => return Err(GatewayError::MissingKey),
            None => None,
        };
        record.consumer = consumer.map(|c| Arc::clone(&c.name));
        Ok(consumer)
    }

    /// The consumer whose ServiceAccount `token` belongs to.
    async fn service_account<'t>(
        &self,
        table: &'t RoutingTable,
        token: &[u8],
    ) -> Result<&'t switchyard_router::Consumer, GatewayError> {
        let Some(auth) = &self.service_accounts else {
            return Err(GatewayError::TokenRejected(
                "ServiceAccount tokens are accepted only in cluster mode".into(),
            ));
        };
        match auth.review(token).await {
            Ok(Review::Authenticated(user)) => table
                .consumers()
                .by_service_account(&user)
                .ok_or(GatewayError::ServiceAccountNotAllowed(user)),
            Ok(Review::Refused(reason)) => Err(GatewayError::TokenRejected(reason)),
            Err(e) => Err(GatewayError::TokenReviewUnavailable(match e {
                ReviewFailure::Failed(e) => {
                    tracing::warn!(error = %e, "TokenReview failed");
                    "the Kubernetes API server could not be asked"
                }
                ReviewFailure::TimedOut(d) => {
                    tracing::warn!(timeout = ?d, "TokenReview timed out");
                    "the Kubernetes API server did not answer the TokenReview in time"
                }
                // A flood of unknown tokens: logged by nobody, counted by the error code.
                ReviewFailure::Busy => "too many new tokens are being checked at once",
            })),
        }
    }

    async fn models(
        &self,
        headers: &HeaderMap,
        record: &mut Record,
    ) -> Result<Response<Body>, GatewayError> {
        let table = self.table.load_full();
        let consumer = self.authenticate(&table, headers, record).await?;
        let data: Vec<serde_json::Value> = table
            .models()
            .iter()
            .filter(|m| consumer.is_none_or(|c| c.allows(m, "")))
            .map(|m| {
                serde_json::json!({
                    "id": &**m,
                    "object": "model",
                    "created": 0,
                    "owned_by": "switchyard",
                })
            })
            .collect();
        let body = serde_json::json!({"object": "list", "data": data});
        Ok(json_response(StatusCode::OK, Bytes::from(body.to_string())))
    }
}

// === impl tower::Service ===

impl<B> tower::Service<Request<B>> for Gateway
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<crate::body::BoxError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.handle(req).await) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_estimates_saturate_on_any_max_tokens() {
        assert_eq!(token_estimate(10, None), 10 + DEFAULT_OUTPUT_ESTIMATE);
        assert_eq!(token_estimate(10, Some(5)), 15);
        for (input, max) in [
            (10, Some(u64::MAX)),
            (u64::MAX, Some(u64::MAX)),
            (u64::MAX, None),
            (1, Some(u64::MAX - 1)),
        ] {
            assert_eq!(token_estimate(input, max), u64::MAX, "{input} {max:?}");
        }
        assert_eq!(
            token_estimate(u64::from(u32::MAX), Some(u64::from(u32::MAX))),
            2 * u64::from(u32::MAX)
        );
    }

    #[test]
    fn generated_request_ids_are_32_random_hex_digits_and_a_sane_caller_id_is_kept() {
        let none = HeaderMap::new();
        let a = request_id(&none);
        let b = request_id(&none);
        assert_ne!(a, b);
        for id in [&a, &b] {
            let s = id.to_str().unwrap();
            let hex = s.strip_prefix("req_").unwrap();
            assert_eq!(hex.len(), 32, "{s}");
            assert!(hex
                .bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        }
        // Every digit position varies (no digit is stuck by the shifts).
        let ids: Vec<String> = (0..64)
            .map(|_| request_id(&none).to_str().unwrap().to_string())
            .collect();
        for i in 4..36 {
            assert!(
                ids.iter().any(|s| s.as_bytes()[i] != ids[0].as_bytes()[i]),
                "{i}"
            );
        }
        let mut mine = HeaderMap::new();
        mine.insert("x-request-id", HeaderValue::from_static("req-e2e-42"));
        assert_eq!(request_id(&mine), "req-e2e-42");
        mine.insert("x-request-id", HeaderValue::from_static(""));
        assert_ne!(request_id(&mine), "");
    }
}
