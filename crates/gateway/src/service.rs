//! The data-plane service: one straight line of phases per request.
//!
//! ```text
//! endpoint → read body (limit) → decode → authenticate → route → admit (allow-list)
//!   → for each target in the plan: encode → send (retry / fall back before first byte)
//!   → relay response (SSE event by event, or whole JSON) → record (drop guard)
//! ```

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use switchyard_providers::{error::parse_openai_error, openai, Operation};
use switchyard_router::{FailureClass, RoutingTable, TableHandle, Target};
use switchyard_telemetry::Metrics;
use tokio::time::Instant;

use crate::{
    body::Body,
    error::{json_response, GatewayError, UpstreamFailure},
    record::Record,
    relay::SseRelay,
    upstream::{earliest, UpstreamClient},
};

/// Static settings of the data plane.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Largest non-streamed upstream response accepted, in bytes.
    pub max_response_bytes: usize,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            max_body_bytes: 8 * 1024 * 1024,
            max_response_bytes: 64 * 1024 * 1024,
        }
    }
}

/// The gateway service. Cheap to clone: one per connection.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Shared>,
}

struct Shared {
    table: Arc<TableHandle>,
    client: UpstreamClient,
    metrics: Arc<Metrics>,
    config: GatewayConfig,
}

/// The endpoint a request is for.
enum Endpoint {
    Proxy(Operation),
    Models,
}

impl Gateway {
    /// A gateway reading routes from `table`.
    pub fn new(
        table: Arc<TableHandle>,
        client: UpstreamClient,
        metrics: Arc<Metrics>,
        config: GatewayConfig,
    ) -> Self {
        Gateway {
            inner: Arc::new(Shared {
                table,
                client,
                metrics,
                config,
            }),
        }
    }

    /// Handles one request. Never fails: every error becomes a response in OpenAI's shape.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<crate::body::BoxError>,
    {
        let mut record = Record::new(Arc::clone(&self.inner.metrics), Instant::now());
        let request_id = request_id(req.headers());
        let result = match endpoint(req.method(), req.uri().path()) {
            Ok(Endpoint::Proxy(op)) => self.inner.proxy(op, req, &request_id, &mut record).await,
            Ok(Endpoint::Models) => self.inner.models(req.headers(), &mut record),
            Err(e) => Err(e),
        };
        let mut resp = match result {
            Ok(resp) => resp,
            Err(e) => {
                if e.source() != switchyard_providers::ErrorSource::Caller {
                    tracing::warn!(request_id = ?request_id, error = %e, "request failed");
                }
                e.to_response()
            }
        };
        record.status = resp.status();
        resp.headers_mut().insert("x-request-id", request_id);
        resp
    }
}

fn endpoint(method: &Method, path: &str) -> Result<Endpoint, GatewayError> {
    let path = path.strip_suffix('/').unwrap_or(path);
    let (ep, allowed) = match path {
        "/v1/chat/completions" => (Endpoint::Proxy(Operation::ChatCompletions), Method::POST),
        "/v1/completions" => (Endpoint::Proxy(Operation::Completions), Method::POST),
        "/v1/embeddings" => (Endpoint::Proxy(Operation::Embeddings), Method::POST),
        "/v1/models" => (Endpoint::Models, Method::GET),
        other => return Err(GatewayError::NotFound(other.to_string())),
    };
    if method == allowed || (allowed == Method::GET && method == Method::HEAD) {
        Ok(ep)
    } else {
        Err(GatewayError::MethodNotAllowed(method.to_string()))
    }
}

/// The caller's request id if it sent a sane one, else a fresh one.
fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get("x-request-id") {
        if !v.is_empty() && v.len() <= 128 {
            return v.clone();
        }
    }
    let id = format!("req_{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
    HeaderValue::try_from(id).unwrap_or_else(|_| HeaderValue::from_static("req_unknown"))
}

/// The virtual key the caller presented, if any.
fn presented_key(headers: &HeaderMap) -> Option<&[u8]> {
    let v = headers.get(header::AUTHORIZATION)?.as_bytes();
    let rest = v
        .strip_prefix(b"Bearer ")
        .or_else(|| v.strip_prefix(b"bearer "))?;
    let key = rest.trim_ascii();
    (!key.is_empty()).then_some(key)
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
        let bytes = self.read_body(&parts.headers, body).await?;
        let decoded = openai::Request::decode(op, &bytes)?;
        let table = self.table.load_full();
        if table.generation() == 0 {
            return Err(GatewayError::NotReady);
        }
        let consumer = self.authenticate(&table, &parts.headers, record)?;
        let matched = table
            .route(
                &decoded.model,
                &parts.headers,
                consumer.map(|c| c.short_name.as_str()),
            )
            .ok_or_else(|| GatewayError::ModelNotFound {
                model: decoded.model.to_string(),
            })?;
        let route = matched.route;
        record.route = Some(Arc::clone(&route.name));
        record.model = Some(Arc::clone(matched.model_label));
        if let Some(c) = consumer {
            if !c.allows(&decoded.model, &route.name) {
                return Err(GatewayError::ModelNotAllowed {
                    model: decoded.model.to_string(),
                });
            }
        }

        let deadline = route.timeout.map(|t| record.start + t);
        let mut last_err = None;
        for target in route.plan() {
            match self
                .attempts(
                    op,
                    &decoded,
                    target,
                    route.retry,
                    request_id,
                    deadline,
                    record,
                )
                .await
            {
                Ok(resp) => return Ok(resp),
                Err((err, retryable)) => {
                    if !retryable || deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(err);
                    }
                    last_err = Some(err);
                }
            }
        }
        Err(last_err.unwrap_or(GatewayError::RouteTimeout))
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
            Err(e) => Err(GatewayError::BodyRead(e.to_string())),
        }
    }

    fn authenticate<'t>(
        &self,
        table: &'t RoutingTable,
        headers: &HeaderMap,
        record: &mut Record,
    ) -> Result<Option<&'t switchyard_router::Consumer>, GatewayError> {
        let consumers = table.consumers();
        let consumer = match presented_key(headers) {
            Some(key) => match consumers.authenticate(key) {
                Some(c) => Some(c),
                None if consumers.auth_required() => return Err(GatewayError::InvalidKey),
                // An open gateway ignores keys it does not know: SDKs always send one.
                None => None,
            },
            None if consumers.auth_required() => return Err(GatewayError::MissingKey),
            None => None,
        };
        record.consumer = consumer.map(|c| Arc::clone(&c.name));
        Ok(consumer)
    }

    /// Tries one target up to the route's attempt count. On failure, says whether the next
    /// target may be tried.
    #[allow(clippy::too_many_arguments)]
    async fn attempts(
        &self,
        op: Operation,
        decoded: &openai::Request<'_>,
        target: &Target,
        retry: switchyard_router::Retry,
        request_id: &HeaderValue,
        deadline: Option<Instant>,
        record: &mut Record,
    ) -> Result<Response<Body>, (GatewayError, bool)> {
        let backend = &target.backend;
        record.backend = Some(Arc::clone(&backend.name));
        record.provider = backend.provider.as_str();
        let upstream_model = target.upstream_model(&decoded.model);
        record.pricing = match &target.model {
            Some(_) => target.pricing,
            None => backend.pricing(upstream_model),
        };
        let body = Bytes::from(decoded.encode(upstream_model));
        let call_deadline = earliest(deadline, backend.timeouts.total.map(|t| Instant::now() + t));
        let mut attempt = 0;
        loop {
            attempt += 1;
            let sent_at = Instant::now();
            let outcome = self
                .client
                .send(
                    target,
                    op,
                    body.clone(),
                    decoded.stream,
                    request_id,
                    call_deadline,
                )
                .await;
            let (err, class) = match outcome {
                Ok(resp) if resp.status().is_success() => {
                    backend.observe_latency(sent_at.elapsed());
                    return self
                        .respond(resp, decoded, target, call_deadline, record)
                        .await
                        .map_err(|e| (e, false));
                }
                Ok(resp) => {
                    let status = resp.status();
                    let retry_after = resp.headers().get(header::RETRY_AFTER).cloned();
                    let body = collect_limited(resp.into_body(), 64 * 1024).await;
                    let (message, code) = parse_openai_error(&body).unwrap_or_else(|| {
                        (
                            String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned(),
                            None,
                        )
                    });
                    let class = match status.as_u16() {
                        429 => Some(FailureClass::RateLimited),
                        500..=599 => Some(FailureClass::ServerError),
                        _ => None,
                    };
                    record.upstream_error(match status.as_u16() {
                        429 => "status_429",
                        500..=599 => "status_5xx",
                        _ => "status_4xx",
                    });
                    let err = GatewayError::UpstreamStatus {
                        status,
                        backend: backend.name.to_string(),
                        message,
                        code,
                        retry_after,
                    };
                    // A 401/403 means this backend's key is bad: another backend may work.
                    let class = class
                        .or(matches!(status.as_u16(), 401 | 403)
                            .then_some(FailureClass::ServerError));
                    (err, class)
                }
                Err(e) => {
                    record.upstream_error(e.kind.as_str());
                    tracing::debug!(backend = %backend.name, error = %e.detail, "upstream attempt failed");
                    let class = e.class();
                    (
                        GatewayError::Upstream {
                            kind: e.kind,
                            backend: backend.name.to_string(),
                            detail: e.detail,
                        },
                        class,
                    )
                }
            };
            let retryable = class.is_some_and(|c| retry.retries(c));
            let out_of_time = call_deadline.is_some_and(|d| Instant::now() >= d);
            if !retryable || attempt >= retry.attempts || out_of_time {
                return Err((err, retryable && !out_of_time));
            }
            let backoff = retry
                .backoff
                .mul_f64(f64::from(1u32 << (attempt - 1).min(6)));
            let jittered = backoff.mul_f64(0.5 + fastrand::f64());
            let wake = Instant::now() + jittered;
            if call_deadline.is_some_and(|d| wake >= d) {
                return Err((err, true));
            }
            tokio::time::sleep_until(wake).await;
        }
    }

    async fn respond(
        &self,
        resp: Response<hyper::body::Incoming>,
        decoded: &openai::Request<'_>,
        target: &Target,
        deadline: Option<Instant>,
        record: &mut Record,
    ) -> Result<Response<Body>, GatewayError> {
        let is_sse = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let backend = &target.backend;
        if decoded.stream && is_sse {
            // The record moves into the body: it is written when the stream ends.
            let mut moved = Record::new(Arc::clone(&self.metrics), record.start);
            std::mem::swap(&mut moved, record);
            moved.status = StatusCode::OK;
            // What is left behind is a blank record: keep it from counting a second request.
            record.disarm();
            let relay = SseRelay::new(
                resp.into_body(),
                decoded.client_wants_usage,
                moved,
                backend.timeouts.idle,
            );
            let mut out = Response::new(BodyExt::boxed_unsync(relay));
            let h = out.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            return Ok(out);
        }
        let limit = self.config.max_response_bytes;
        let body = Limited::new(resp.into_body(), limit).collect();
        let collected = match deadline {
            Some(d) => {
                tokio::time::timeout_at(d, body)
                    .await
                    .map_err(|_| GatewayError::Upstream {
                        kind: UpstreamFailure::Timeout,
                        backend: backend.name.to_string(),
                        detail: "the response body did not arrive in time".into(),
                    })?
            }
            None => body.await,
        };
        let bytes = collected
            .map_err(|e| GatewayError::Upstream {
                kind: UpstreamFailure::Protocol,
                backend: backend.name.to_string(),
                detail: e.to_string(),
            })?
            .to_bytes();
        record.usage = openai::inspect_response(&bytes).usage;
        Ok(json_response(StatusCode::OK, bytes))
    }

    fn models(
        &self,
        headers: &HeaderMap,
        record: &mut Record,
    ) -> Result<Response<Body>, GatewayError> {
        let table = self.table.load();
        let consumer = self.authenticate(&table, headers, record)?;
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

async fn collect_limited(body: hyper::body::Incoming, limit: usize) -> Bytes {
    match Limited::new(body, limit).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => Bytes::new(),
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
