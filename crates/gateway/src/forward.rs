//! The upstream phase: try targets in plan order, retrying within the route's policy and
//! retry budget, until one answers; then relay its response.
//!
//! Retries and fallbacks happen only before anything has been sent to the client. A target
//! whose backend is at `maxConcurrency` is skipped, never queued for.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use switchyard_providers::{
    anthropic,
    chat::TranslateError,
    error::{read_upstream_error, ErrorOrigin, UpstreamClass, UpstreamError},
    openai,
    transcode::{BackendFormat, Format},
    Operation,
};
use switchyard_router::{
    state::rate_limit_hint, FailureClass, HealthChange, KeyChoice, Retry, Route, Target,
};
use switchyard_telemetry::genai_provider_name;
use tokio::time::Instant;

use crate::{
    body::Body,
    error::{json_response, GatewayError, UpstreamFailure},
    inbound::{Encoded, Inbound, Plan},
    pool::UpstreamBody,
    record::Record,
    relay::{Framing, Mode, SseRelay},
    service::Shared,
    upstream::earliest,
};

/// How one target ended.
enum TargetOutcome {
    /// It answered; the response is ready for the client.
    Done(Response<Body>),
    /// It failed; `retryable` says whether another target may be tried.
    Failed { err: GatewayError, retryable: bool },
}

impl Shared {
    pub(crate) async fn forward(
        &self,
        op: Operation,
        decoded: &Inbound<'_>,
        route: &Route,
        request_id: &HeaderValue,
        record: &mut Record,
    ) -> Result<Response<Body>, GatewayError> {
        let deadline = route.timeout.map(|t| record.start + t);
        let budget = route.budget();
        budget.deposit();
        let plan = route.plan();
        let mut last_err = None;
        let mut saturated = 0usize;
        for target in &plan {
            let backend = &target.backend;
            let Some(permit) = backend.state().try_acquire(backend.max_concurrency) else {
                saturated += 1;
                continue;
            };
            if last_err.is_some() {
                // Moving on after a failure is an extra attempt: it spends retry budget.
                if !budget.try_withdraw() {
                    tracing::debug!(route = %route.name, "retry budget exhausted");
                    break;
                }
                self.metrics
                    .fallbacks
                    .with_label_values(&[&route.name, &backend.name])
                    .inc();
            }
            record.permit = Some(permit);
            let outcome = self
                .try_target(op, decoded, route, target, request_id, deadline, record)
                .await;
            match outcome {
                TargetOutcome::Done(resp) => return Ok(resp),
                TargetOutcome::Failed { err, retryable } => {
                    record.permit = None;
                    let out_of_time = deadline.is_some_and(|d| Instant::now() >= d);
                    if out_of_time {
                        return Err(match err {
                            GatewayError::Upstream { .. } => GatewayError::RouteTimeout,
                            other => other,
                        });
                    }
                    if !retryable {
                        return Err(err);
                    }
                    last_err = Some(err);
                }
            }
        }
        match last_err {
            Some(e) => Err(e),
            None if saturated > 0 => Err(GatewayError::Saturated),
            None => Err(GatewayError::RouteTimeout),
        }
    }

    /// Tries one target up to the route's attempt count.
    #[allow(clippy::too_many_arguments)]
    async fn try_target(
        &self,
        op: Operation,
        decoded: &Inbound<'_>,
        route: &Route,
        target: &Target,
        request_id: &HeaderValue,
        deadline: Option<Instant>,
        record: &mut Record,
    ) -> TargetOutcome {
        let backend = &target.backend;
        record.backend = Some(Arc::clone(&backend.name));
        record.provider = backend.provider.as_str();
        if record.otel().is_some() {
            // Only spans carry it, and finding it scans the endpoint's host.
            record.genai_provider =
                genai_provider_name(backend.provider.as_str(), &backend.endpoint);
        }
        let upstream_model = target.upstream_model(decoded.model());
        record.upstream_model = Some(upstream_model.to_string());
        record.pricing = match &target.model {
            Some(_) => target.pricing,
            None => backend.pricing(upstream_model),
        };
        let encoded = match decoded.plan(backend, upstream_model) {
            Ok(Plan::Call(e)) => e,
            Ok(Plan::Estimate) => return TargetOutcome::Done(count_tokens_estimate(decoded)),
            // A parameter this backend's format cannot carry may suit the next target (a
            // fallback of another provider); a malformed request suits none.
            Err(err) => {
                let retryable = matches!(
                    err,
                    GatewayError::UnsupportedByBackend { .. }
                        | GatewayError::Translate(TranslateError::Unsupported { .. })
                );
                return TargetOutcome::Failed { err, retryable };
            }
        };
        let Encoded {
            body,
            upstream_op,
            translate_from,
            headers: provider_headers,
        } = encoded;
        let Some(uri) = backend.uri(upstream_op, upstream_model, decoded.stream()) else {
            // Only a model the backend does not list gets here (a route forwarding the
            // caller's model to a provider that puts it in the URL path).
            return TargetOutcome::Failed {
                err: GatewayError::Translate(TranslateError::Invalid {
                    param: "model".into(),
                    message: format!(
                        "'{upstream_model}' cannot be sent to backend {} as a model name",
                        backend.name
                    ),
                }),
                retryable: true,
            };
        };
        let call_deadline = earliest(deadline, backend.timeouts.total.map(|t| Instant::now() + t));
        let retry: Retry = route.retry;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let key = match backend.pick_key() {
                KeyChoice::None => None,
                KeyChoice::Key(k) => Some(k),
                KeyChoice::Exhausted(wait) => {
                    record.upstream_error("keys_exhausted");
                    record.ratelimit_reason = Some("upstream");
                    return TargetOutcome::Failed {
                        err: GatewayError::KeysExhausted {
                            backend: backend.name.to_string(),
                            retry_after: wait,
                        },
                        retryable: true,
                    };
                }
            };
            let sent_at = Instant::now();
            record.attempts += 1;
            let mut trace_headers = HeaderMap::new();
            for (name, value) in &provider_headers {
                trace_headers.insert(name.clone(), value.clone());
            }
            let span = match (record.otel().cloned(), record.trace.as_ref()) {
                (Some(otel), Some(parent)) => {
                    let span = otel.start_attempt(
                        parent,
                        op.as_str(),
                        record.genai_provider,
                        &backend.name,
                        upstream_model,
                        record.attempts,
                    );
                    otel.inject(&span, &mut trace_headers);
                    Some((otel, span))
                }
                _ => None,
            };
            let outcome = self
                .client
                .send(
                    target,
                    &uri,
                    body.clone(),
                    decoded.stream(),
                    key,
                    request_id,
                    &trace_headers,
                    call_deadline,
                )
                .await;
            if let Some((otel, span)) = span {
                let (status, error) = match &outcome {
                    Ok(r) if r.status().is_success() => (Some(r.status().as_u16()), None),
                    Ok(r) => (
                        Some(r.status().as_u16()),
                        Some(r.status().as_u16().to_string()),
                    ),
                    Err(e) => (None, Some(e.kind.as_str().to_string())),
                };
                otel.end_attempt(span, status, error.as_deref());
            }
            let (err, class) = match outcome {
                Ok(resp) if resp.status().is_success() => {
                    // Steering by rate-limit headers only matters with another key to steer to.
                    if let Some(k) = key.filter(|k| backend.has_other_available_key(k.index)) {
                        k.state()
                            .observe_rate_limit(rate_limit_hint(resp.headers()));
                    }
                    self.health(backend, backend.state().on_success(sent_at.elapsed()));
                    return match self
                        .respond(resp, decoded, translate_from, target, call_deadline, record)
                        .await
                    {
                        Ok(r) => TargetOutcome::Done(r),
                        Err(err) => TargetOutcome::Failed {
                            err,
                            retryable: false,
                        },
                    };
                }
                Ok(resp) => {
                    let status = resp.status();
                    let headers = resp.headers().clone();
                    let body = collect_limited(resp.into_body(), 64 * 1024).await;
                    let header_str = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
                    // Whose error this is follows from who wrote the body: a provider's own
                    // 4xx is the caller's; an edge's or proxy's page is an upstream failure,
                    // summarized rather than relayed.
                    let UpstreamError {
                        message,
                        code,
                        class: upstream_class,
                        origin,
                    } = read_upstream_error(
                        status.as_u16(),
                        &body,
                        header_str(header::CONTENT_TYPE.as_str()),
                        header_str("x-amzn-errortype"),
                        backend.provider.as_str(),
                    );
                    if origin == ErrorOrigin::Intermediary {
                        tracing::debug!(backend = %backend.name, %status, summary = %message, "upstream answered with a body in no provider's error format");
                    }
                    let class = match upstream_class {
                        UpstreamClass::RateLimited => {
                            if let Some(k) = key {
                                let wait = retry_after(&headers).unwrap_or(Duration::from_secs(1));
                                k.state().rest(wait);
                                k.state().observe_rate_limit(rate_limit_hint(&headers));
                            }
                            record.upstream_error("status_429");
                            record.ratelimit_reason = Some("upstream");
                            Some(FailureClass::RateLimited)
                        }
                        UpstreamClass::KeyRejected => {
                            // The upstream refused this key: take it out of the pool. Another
                            // key, or another backend, may still serve the request.
                            if let Some(k) = key {
                                tracing::error!(backend = %backend.name, key_index = k.index, %status, "upstream refused a key; disabling it");
                                k.state().disable(format!("upstream answered {status}"));
                            }
                            record.upstream_error("status_4xx");
                            Some(FailureClass::ServerError)
                        }
                        UpstreamClass::Overloaded | UpstreamClass::Upstream => {
                            // An intermediary's 4xx counts (and is retried) as an upstream
                            // failure but is labelled by its status.
                            let intermediary_4xx =
                                origin == ErrorOrigin::Intermediary && status.is_client_error();
                            record.upstream_error(if intermediary_4xx {
                                "status_4xx"
                            } else {
                                "status_5xx"
                            });
                            self.health(backend, backend.state().on_failure());
                            Some(FailureClass::ServerError)
                        }
                        UpstreamClass::Caller => {
                            record.upstream_error("status_4xx");
                            None
                        }
                    };
                    let err = GatewayError::UpstreamStatus {
                        status,
                        backend: backend.name.to_string(),
                        message,
                        code,
                        class: upstream_class,
                        origin,
                        retry_after: headers.get(header::RETRY_AFTER).cloned(),
                    };
                    (err, class)
                }
                Err(e) => {
                    record.upstream_error(e.kind.as_str());
                    if e.kind != UpstreamFailure::Protocol || e.class().is_some() {
                        self.health(backend, backend.state().on_failure());
                    }
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
            let key_problem =
                matches!(class, Some(FailureClass::RateLimited)) || err.key_rejected();
            // A 429 or refused key is retried at once on the same backend with another key
            // when the pool has one; other failures wait out the back-off.
            let another_key =
                key_problem && key.is_some_and(|k| backend.has_other_available_key(k.index));
            let attempts_left =
                attempt < retry.attempts || (another_key && attempt < retry.attempts + 2);
            if !retryable || !attempts_left || out_of_time || !route.budget().try_withdraw() {
                return TargetOutcome::Failed {
                    err,
                    retryable: retryable && !out_of_time,
                };
            }
            self.metrics
                .retries
                .with_label_values(&[&route.name, &backend.name])
                .inc();
            if another_key {
                continue;
            }
            let backoff = retry
                .backoff
                .mul_f64(f64::from(1u32 << (attempt - 1).min(6)));
            let wake = Instant::now() + backoff.mul_f64(0.5 + fastrand::f64());
            if call_deadline.is_some_and(|d| wake >= d) {
                return TargetOutcome::Failed {
                    err,
                    retryable: true,
                };
            }
            tokio::time::sleep_until(wake).await;
        }
    }

    fn health(&self, backend: &switchyard_router::Backend, change: HealthChange) {
        match change {
            HealthChange::None => {}
            HealthChange::Ejected(period) => {
                tracing::warn!(backend = %backend.name, ?period, "backend ejected after repeated failures");
            }
            HealthChange::Restored => {
                tracing::info!(backend = %backend.name, "backend back in service");
            }
        }
    }

    async fn respond(
        &self,
        resp: Response<UpstreamBody>,
        decoded: &Inbound<'_>,
        translate_from: Option<BackendFormat>,
        target: &Target,
        deadline: Option<Instant>,
        record: &mut Record,
    ) -> Result<Response<Body>, GatewayError> {
        let is_sse = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.starts_with("text/event-stream")
                    || v.starts_with("application/vnd.amazon.eventstream")
            });
        let backend = &target.backend;
        let caller = decoded.format();
        if decoded.stream() && is_sse {
            // The record (and the concurrency slot in it) moves into the body: it is written
            // when the stream ends.
            let mut moved = record.take();
            moved.status = StatusCode::OK;
            let mode = match (translate_from, caller) {
                (Some(from), _) => Mode::Translate(Box::new(
                    decoded.transcoder(from, target.upstream_model(decoded.model())),
                )),
                // Responses callers are always translated (see `Inbound::plan`).
                (None, Format::OpenAiChat | Format::Responses) => Mode::OpenAi {
                    client_wants_usage: decoded.client_wants_usage(),
                },
                (None, Format::Anthropic) => Mode::Anthropic(Box::default()),
            };
            let framing =
                Framing::for_format(translate_from.is_some_and(BackendFormat::event_stream_framed));
            let relay = SseRelay::new(
                resp.into_body(),
                framing,
                mode,
                caller,
                moved,
                backend.timeouts.idle,
                deadline,
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
        match (translate_from, caller) {
            (Some(from), _) => {
                let model = target.upstream_model(decoded.model());
                let (out, usage, finish) = decoded
                    .translate_response(from, &bytes, model)
                    .map_err(|e| GatewayError::Upstream {
                        kind: UpstreamFailure::Protocol,
                        backend: backend.name.to_string(),
                        detail: format!("the response could not be translated: {e}"),
                    })?;
                record.usage = usage;
                record.finish_reason =
                    finish.map(|r| openai::chat::finish_to_openai(r).to_string());
                Ok(json_response(StatusCode::OK, Bytes::from(out)))
            }
            (None, Format::OpenAiChat | Format::Responses) => {
                let info = openai::inspect_response(&bytes);
                record.usage = info.usage;
                record.finish_reason = info.finish_reason;
                Ok(json_response(StatusCode::OK, bytes))
            }
            (None, Format::Anthropic) => {
                // count_tokens answers carry no usage, and nothing was generated.
                if decoded.op() == Operation::Messages {
                    let info = anthropic::inspect_response(&bytes);
                    record.usage = info.usage;
                    record.finish_reason = info.finish_reason;
                }
                Ok(json_response(StatusCode::OK, bytes))
            }
        }
    }
}

/// `count_tokens` for a backend that cannot count: the gateway's own estimate (request bytes
/// / 4), marked as such in `x-switchyard-token-estimate`, so tools that size prompts with it
/// keep working on any backend.
fn count_tokens_estimate(decoded: &Inbound<'_>) -> Response<Body> {
    let body = serde_json::json!({"input_tokens": decoded.estimated_input_tokens()});
    let mut resp = json_response(StatusCode::OK, Bytes::from(body.to_string()));
    resp.headers_mut().insert(
        "x-switchyard-token-estimate",
        HeaderValue::from_static("true"),
    );
    resp
}

/// `Retry-After` (seconds) or OpenAI's `retry-after-ms`.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(ms) = get("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        return Some(Duration::from_secs_f64((ms / 1000.0).clamp(0.0, 3600.0)));
    }
    get("retry-after")
        .and_then(|v| v.parse::<f64>().ok())
        .map(|s| Duration::from_secs_f64(s.clamp(0.0, 3600.0)))
}

async fn collect_limited(body: UpstreamBody, limit: usize) -> Bytes {
    match Limited::new(body, limit).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => Bytes::new(),
    }
}
