//! The upstream phase: try targets in plan order, retrying within the route's policy and
//! retry budget, until one answers; then relay its response.
//!
//! Retries and fallbacks happen only before anything has been sent to the client. A target
//! whose backend is at `maxConcurrency` is skipped, never queued for.

use std::{sync::Arc, time::Duration};

use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;
use switchyard_providers::{
    anthropic,
    chat::TranslateError,
    error::{read_upstream_error, ErrorOrigin, UpstreamClass, UpstreamError},
    openai, responses,
    transcode::{BackendFormat, Format},
    Operation,
};
use switchyard_router::{
    state::rate_limit_hint, Backend, FailureClass, HealthChange, KeyChoice, Retry, Route, Target,
    UpstreamKey,
};
use switchyard_telemetry::{genai_provider_name, Metrics};
use tokio::time::Instant;

use crate::{
    affinity::Sticky,
    body::{Body, Spliced},
    error::{json_response, GatewayError, UpstreamFailure},
    inbound::{Encoded, Inbound, Plan},
    owners::{Owner, ResponseOwners},
    pool::UpstreamBody,
    record::Record,
    relay::{Framing, Mode, RelayTimers, SseRelay, StallWatch},
    upstream::{earliest, AttemptError, Call, TimeLimits, UpstreamClient},
};

/// The request as the forward phase sees it: built once the route is known, read by every
/// phase of every attempt (the mutable half, what is learnt, is the [`Record`]).
pub(crate) struct RequestCtx<'r, 'b> {
    pub op: Operation,
    pub decoded: &'r Inbound<'b>,
    pub route: &'r Route,
    pub request_id: &'r HeaderValue,
    /// Where the request should go to be served well, or at all.
    pub sticky: Sticky,
    /// The route's deadline, counted from the request's arrival.
    pub deadline: Option<Instant>,
}

/// The forward phase: what it needs of the gateway, borrowed for one request.
pub(crate) struct Forwarder<'a> {
    pub client: &'a UpstreamClient,
    pub metrics: &'a Arc<Metrics>,
    pub owners: &'a Arc<ResponseOwners>,
    pub max_response_bytes: usize,
}

/// How one target ended.
enum TargetOutcome {
    /// It answered; the response is ready for the client.
    Done(Response<Body>),
    /// It failed; `retryable` says whether another target may be tried.
    Failed { err: GatewayError, retryable: bool },
}

/// One target's request, made once and sent on every attempt.
struct Prepared {
    body: Spliced,
    uri: http::Uri,
    /// `Some(upstream format)` when the answer must be translated for the caller.
    translate_from: Option<BackendFormat>,
    /// Provider headers (`anthropic-version`), to which each attempt adds trace context.
    headers: HeaderMap,
    /// What translation left out for this target (`x-switchyard-dropped`).
    dropped: Option<HeaderValue>,
    limits: TimeLimits,
    /// The earliest of the route's deadline and the backend's total timeout.
    call_deadline: Option<Instant>,
    /// The answer is one the provider stores: remembered with its owner (`crate::owners`).
    stores: bool,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Again on this target, at once (another key of the pool is free).
    RetryNow,
    /// Again on this target after this back-off (before jitter).
    RetryAfter(Duration),
    /// Not on this target again; the next one may serve the request.
    Fallback,
    /// Not anywhere: the failure is the caller's answer.
    GiveUp,
}

/// What an upstream's error status means for the attempt, from the status and who wrote the
/// body alone; [`Forwarder::refused`] carries it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Failure {
    /// The retry class; `None` for the caller's own error, which no retry changes.
    class: Option<FailureClass>,
    /// `switchyard_upstream_errors_total{kind}`.
    kind: &'static str,
    /// What happens to the key that was sent.
    key: KeyEffect,
    /// It counts against the backend's health.
    backend_failed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyEffect {
    Keep,
    /// Rested for the upstream's `Retry-After` (a 429).
    Rest,
    /// Out of the pool for a while (refused as invalid).
    Disable,
}

/// Classifies an upstream error status.
fn classify(status: StatusCode, class: UpstreamClass, origin: ErrorOrigin) -> Failure {
    let failure = |class, kind, key, backend_failed| Failure {
        class,
        kind,
        key,
        backend_failed,
    };
    match class {
        UpstreamClass::RateLimited => failure(
            Some(FailureClass::RateLimited),
            "status_429",
            KeyEffect::Rest,
            false,
        ),
        // Another key, or another backend, may still serve the request. (A key that may not
        // do *this*, a 403, is the caller's error: `UpstreamClass::Caller`.)
        UpstreamClass::KeyRejected => failure(
            Some(FailureClass::ServerError),
            "status_4xx",
            KeyEffect::Disable,
            false,
        ),
        // An intermediary's 4xx counts (and is retried) as an upstream failure but is
        // labelled by its status.
        UpstreamClass::Overloaded | UpstreamClass::Upstream => failure(
            Some(FailureClass::ServerError),
            if origin == ErrorOrigin::Intermediary && status.is_client_error() {
                "status_4xx"
            } else {
                "status_5xx"
            },
            KeyEffect::Keep,
            true,
        ),
        UpstreamClass::Caller => failure(None, "status_4xx", KeyEffect::Keep, false),
    }
}

/// The retry decision after failed attempt number `attempt` (from 1) on a target: by the
/// route's `policy`, whether the failure is of a class it retries, whether another key of
/// the pool could take the request at once (a 429 or a refused key), and whether the time
/// is up. Retrying also spends retry budget, which the caller withdraws.
fn next_step(
    attempt: u32,
    policy: &Retry,
    class: Option<FailureClass>,
    another_key: bool,
    out_of_time: bool,
) -> Step {
    if !class.is_some_and(|c| policy.retries(c)) || out_of_time {
        return Step::GiveUp;
    }
    // A switch of key is not the backend failing again: it gets two tries more.
    let attempts_left =
        attempt < policy.attempts || (another_key && attempt < policy.attempts.saturating_add(2));
    if !attempts_left {
        return Step::Fallback;
    }
    if another_key {
        return Step::RetryNow;
    }
    let doublings = attempt.saturating_sub(1).min(6);
    Step::RetryAfter(policy.backoff.saturating_mul(1 << doublings))
}

/// The key that stored the response this request continues, when it is `backend`'s: the
/// only one that can serve it, resting or not.
fn pinned_key<'t>(ctx: &RequestCtx<'_, '_>, backend: &'t Backend) -> Option<&'t UpstreamKey> {
    let owner = ctx.sticky.owner.as_ref()?;
    if *owner.backend != *backend.name {
        return None;
    }
    backend.key_by_id(owner.key?)
}

/// The key for one attempt: the key that stored the response being continued, else the
/// pool's choice (by the conversation key, or by weight and headroom). `Err` with the
/// soonest a key is usable again when every one is resting or disabled.
fn choose_key<'t>(
    backend: &'t Backend,
    pinned: Option<&'t UpstreamKey>,
    conversation: Option<u64>,
) -> Result<Option<&'t UpstreamKey>, Option<Duration>> {
    if let Some(k) = pinned {
        return Ok(Some(k));
    }
    match backend.pick_key_for(conversation) {
        KeyChoice::None => Ok(None),
        KeyChoice::Key(k) => Ok(Some(k)),
        KeyChoice::Exhausted(wait) => Err(wait),
    }
}

impl Forwarder<'_> {
    /// Tries the route's targets in plan order until one answers.
    pub(crate) async fn forward(
        &self,
        ctx: &RequestCtx<'_, '_>,
        record: &mut Record,
    ) -> Result<Response<Body>, GatewayError> {
        let route = ctx.route;
        let budget = route.budget();
        budget.deposit();
        // A continuation of a stored response goes where it is stored (`crate::owners`);
        // else, with a conversation key, targets and keys in rendezvous order (see
        // `crate::affinity`): the same conversation reaches the same backend and key.
        let plan = ctx
            .sticky
            .owner
            .as_ref()
            .and_then(|o| route.plan_pinned(&o.backend))
            .unwrap_or_else(|| route.plan_for(ctx.sticky.key));
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
            match self.try_target(ctx, target, record).await {
                TargetOutcome::Done(resp) => return Ok(resp),
                TargetOutcome::Failed { err, retryable } => {
                    record.permit = None;
                    let out_of_time = ctx.deadline.is_some_and(|d| Instant::now() >= d);
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

    /// Tries one target up to the route's attempt count: prepare once, then per attempt
    /// choose a key, send, and on failure decide the next step.
    async fn try_target(
        &self,
        ctx: &RequestCtx<'_, '_>,
        target: &Target,
        record: &mut Record,
    ) -> TargetOutcome {
        let backend = &target.backend;
        let prepared = match self.prepare_attempt(ctx, target, record) {
            Ok(p) => p,
            Err(outcome) => return *outcome,
        };
        let pinned = pinned_key(ctx, backend);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let key = match choose_key(backend, pinned, ctx.sticky.key) {
                Ok(key) => key,
                Err(wait) => {
                    record.upstream_error("keys_exhausted");
                    record.ratelimit_reason = Some("upstream");
                    let err = GatewayError::KeysExhausted {
                        backend: backend.name.to_string(),
                        retry_after: wait,
                    };
                    return TargetOutcome::Failed {
                        err,
                        retryable: true,
                    };
                }
            };
            record.stored_by = prepared.stores.then(|| self.owner(backend, key));
            let sent_at = Instant::now();
            let failed = match self.send(ctx, target, &prepared, key, record).await {
                Ok(resp) if resp.status().is_success() => {
                    let sent = (key, sent_at.elapsed());
                    match self
                        .answered(ctx, target, &prepared, sent, resp, record)
                        .await
                    {
                        Ok(r) => return TargetOutcome::Done(r),
                        Err(failed) => failed,
                    }
                }
                Ok(resp) => self.refused(backend, key, &prepared, resp, record).await,
                Err(e) => self.attempt_failed(backend, e, record),
            };
            if let Some(outcome) = self
                .after_failure(ctx, backend, &prepared, (attempt, key), failed)
                .await
            {
                return outcome;
            }
        }
    }

    /// Where a stored answer sent with `key` to `backend` lives.
    fn owner(&self, backend: &Backend, key: Option<&UpstreamKey>) -> (Arc<ResponseOwners>, Owner) {
        let owner = Owner {
            backend: Arc::clone(&backend.name),
            key: key.map(|k| k.id()),
        };
        (Arc::clone(self.owners), owner)
    }

    /// After failed attempt number `attempt`, sent with `key`: `None` to try this target
    /// again (the back-off waited out and the retry budget spent), else how it ended.
    async fn after_failure(
        &self,
        ctx: &RequestCtx<'_, '_>,
        backend: &Backend,
        prepared: &Prepared,
        (attempt, key): (u32, Option<&UpstreamKey>),
        (err, class): (GatewayError, Option<FailureClass>),
    ) -> Option<TargetOutcome> {
        let key_problem = matches!(class, Some(FailureClass::RateLimited)) || err.key_rejected();
        let another_key =
            key_problem && key.is_some_and(|k| backend.has_other_available_key(k.index));
        let out_of_time = prepared.call_deadline.is_some_and(|d| Instant::now() >= d);
        let failed = |retryable| Some(TargetOutcome::Failed { err, retryable });
        let backoff = match next_step(attempt, &ctx.route.retry, class, another_key, out_of_time) {
            Step::GiveUp => return failed(false),
            Step::Fallback => return failed(true),
            Step::RetryNow => None,
            Step::RetryAfter(backoff) => Some(backoff),
        };
        if !ctx.route.budget().try_withdraw() {
            return failed(true);
        }
        self.metrics
            .retries
            .with_label_values(&[&ctx.route.name, &backend.name])
            .inc();
        if let Some(backoff) = backoff {
            let wake = Instant::now() + backoff.mul_f64(0.5 + fastrand::f64());
            if prepared.call_deadline.is_some_and(|d| wake >= d) {
                return failed(true);
            }
            tokio::time::sleep_until(wake).await;
        }
        None
    }

    /// What every attempt on `target` sends: the plan (encode or translate), the URI, the
    /// price, the time limits. `Err` when the target cannot take the request at all.
    fn prepare_attempt(
        &self,
        ctx: &RequestCtx<'_, '_>,
        target: &Target,
        record: &mut Record,
    ) -> Result<Prepared, Box<TargetOutcome>> {
        let backend = &target.backend;
        let upstream_model = target.upstream_model(ctx.decoded.model());
        name_target(record, target, upstream_model);
        let Encoded {
            body,
            upstream_op,
            translate_from,
            headers: provider_headers,
            dropped,
        } = encode_for(ctx, target, upstream_model, record)?;
        let Some(uri) = backend.uri(upstream_op, upstream_model, ctx.decoded.stream()) else {
            // Only a model the backend does not list gets here (a route forwarding the
            // caller's model to a provider that puts it in the URL path).
            return Err(Box::new(TargetOutcome::Failed {
                err: GatewayError::Translate(TranslateError::Invalid {
                    param: "model".into(),
                    message: format!(
                        "'{upstream_model}' cannot be sent to backend {} as a model name",
                        backend.name
                    ),
                }),
                retryable: true,
            }));
        };
        let limits = self.client.limits(&backend.timeouts, ctx.route.timeout);
        let call_deadline = earliest(ctx.deadline, limits.total.map(|t| Instant::now() + t));
        let mut headers = HeaderMap::with_capacity(provider_headers.len());
        for (name, value) in provider_headers {
            headers.insert(name, value);
        }
        Ok(Prepared {
            body,
            uri,
            // An answer the provider stores, passed through with its id: remembered with
            // its owner when the request ends well.
            stores: translate_from.is_none() && ctx.decoded.stored(),
            translate_from,
            headers,
            dropped,
            limits,
            call_deadline,
        })
    }

    /// Sends one attempt and waits for the response headers, in its own span when OTel is on.
    async fn send(
        &self,
        ctx: &RequestCtx<'_, '_>,
        target: &Target,
        prepared: &Prepared,
        key: Option<&UpstreamKey>,
        record: &mut Record,
    ) -> Result<Response<UpstreamBody>, AttemptError> {
        record.attempts += 1;
        let mut headers = prepared.headers.clone();
        let span = match (record.otel().cloned(), record.trace.as_ref()) {
            (Some(otel), Some(parent)) => {
                let span = otel.start_attempt(
                    parent,
                    ctx.op.as_str(),
                    record.genai_provider,
                    &target.backend.name,
                    target.upstream_model(ctx.decoded.model()),
                    record.attempts,
                );
                otel.inject(&span, &mut headers);
                Some((otel, span))
            }
            _ => None,
        };
        let call = Call {
            target,
            uri: &prepared.uri,
            body: prepared.body.clone(),
            stream: ctx.decoded.stream(),
            key,
            request_id: ctx.request_id,
            headers: &headers,
        };
        let outcome = self
            .client
            .send(&call, &prepared.limits, prepared.call_deadline)
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
        outcome
    }

    /// A 2xx answer: relayed (or read, checked and translated) for the caller. `Err` when it
    /// turns out to be no answer (a body cut short, stalled or not the format's JSON):
    /// nothing has reached the caller, so it is retried and moved on from like any failure
    /// before the first byte.
    /// `sent` is the key the attempt was sent with and the time to its response headers.
    async fn answered(
        &self,
        ctx: &RequestCtx<'_, '_>,
        target: &Target,
        prepared: &Prepared,
        (key, latency): (Option<&UpstreamKey>, Duration),
        resp: Response<UpstreamBody>,
        record: &mut Record,
    ) -> Result<Response<Body>, (GatewayError, Option<FailureClass>)> {
        let backend = &target.backend;
        // Steering by rate-limit headers only matters with another key to steer to.
        if let Some(k) = key.filter(|k| backend.has_other_available_key(k.index)) {
            k.state()
                .observe_rate_limit(rate_limit_hint(resp.headers()));
        }
        // What translation left out for this target, for the caller (x-switchyard-dropped)
        // and the access log. Set on every answer, so an earlier translated target's list
        // never outlives it; a passthrough target got the request whole.
        record.dropped = prepared.dropped.clone();
        match self.respond(ctx, target, prepared, resp, record).await {
            Ok(r) => {
                health(backend, backend.state().on_success(latency));
                if let Some(k) = key.filter(|k| k.state().on_success()) {
                    tracing::info!(backend = %backend.name, key_index = k.index, "a disabled upstream key served a request again; it is back in service");
                    record.upstream_key_restored();
                }
                Ok(r)
            }
            Err(e) => Err(self.attempt_failed(backend, e, record)),
        }
    }

    /// An error status: its body read (bounded), classified, and the classification carried
    /// out on the key, the backend's health and the metrics; the error the caller gets if
    /// nothing else serves the request, and its retry class.
    async fn refused(
        &self,
        backend: &Backend,
        key: Option<&UpstreamKey>,
        prepared: &Prepared,
        resp: Response<UpstreamBody>,
        record: &mut Record,
    ) -> (GatewayError, Option<FailureClass>) {
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = match collect_bounded(
            resp.into_body(),
            ERROR_BODY_LIMIT,
            prepared.limits.idle,
            prepared.call_deadline,
        )
        .await
        {
            Ok(b) => b,
            // Only its beginning is read (an edge's page may be long).
            Err(BodyFault::TooLarge(head)) => head,
            // A status whose body stalls or breaks halfway is no answer to act on: a failure
            // like one before the headers.
            Err(fault) => {
                let e = fault.attempt_error(&format!("answered {status}, but its body"));
                return self.attempt_failed(backend, e, record);
            }
        };
        let header_str = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        // Whose error this is follows from who wrote the body: a provider's own 4xx is the
        // caller's; an edge's or proxy's page is an upstream failure, summarized rather than
        // relayed.
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
        // Some providers quote the key they were given: never relayed nor logged.
        let message = backend.redact(&message).into_owned();
        let code = code.map(|c| backend.redact(&c).into_owned());
        if origin == ErrorOrigin::Intermediary {
            tracing::debug!(backend = %backend.name, %status, summary = %message, "upstream answered with a body in no provider's error format");
        }
        let failure = classify(status, upstream_class, origin);
        carry_out(&failure, backend, key, status, &headers, record);
        let err = GatewayError::UpstreamStatus {
            status,
            backend: backend.name.to_string(),
            message,
            code,
            class: upstream_class,
            origin,
            retry_after: relayable_retry_after(&headers),
        };
        (err, failure.class)
    }

    /// Records a failed attempt (before anything reached the caller): counted by kind,
    /// against the backend's health unless it was no failure of the upstream's, and logged;
    /// the error the caller gets if nothing else serves it, and its retry class.
    fn attempt_failed(
        &self,
        backend: &Backend,
        e: AttemptError,
        record: &mut Record,
    ) -> (GatewayError, Option<FailureClass>) {
        record.upstream_error(e.kind.as_str());
        let class = e.class();
        if class.is_some() {
            health(backend, backend.state().on_failure());
        }
        // Connection errors and parse errors may quote what the upstream sent.
        let detail = backend.redact(&e.detail).into_owned();
        tracing::debug!(backend = %backend.name, error = %detail, "upstream attempt failed");
        let err = GatewayError::Upstream {
            kind: e.kind,
            backend: backend.name.to_string(),
            detail,
        };
        (err, class)
    }

    /// The caller's response from a successful upstream answer: a stream relayed event by
    /// event, or a whole body read (within `limits`), checked and translated. An `Err` is an
    /// answer that turned out to be none, before anything was sent to the caller.
    async fn respond(
        &self,
        ctx: &RequestCtx<'_, '_>,
        target: &Target,
        prepared: &Prepared,
        resp: Response<UpstreamBody>,
        record: &mut Record,
    ) -> Result<Response<Body>, AttemptError> {
        let is_sse = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.starts_with("text/event-stream")
                    || v.starts_with("application/vnd.amazon.eventstream")
            });
        if ctx.decoded.stream() && is_sse {
            return Ok(self.relay(ctx, target, prepared, resp, record));
        }
        self.answer_whole(ctx, target, prepared, resp, record).await
    }

    /// A stream, relayed event by event: the record (and the concurrency slot in it) moves
    /// into the body and is written when the stream ends.
    fn relay(
        &self,
        ctx: &RequestCtx<'_, '_>,
        target: &Target,
        prepared: &Prepared,
        resp: Response<UpstreamBody>,
        record: &mut Record,
    ) -> Response<Body> {
        let (decoded, translate_from) = (ctx.decoded, prepared.translate_from);
        let (limits, deadline) = (&prepared.limits, prepared.call_deadline);
        let backend = &target.backend;
        let caller = decoded.format();
        let dropped = record.dropped.clone();
        let mut moved = record.take();
        moved.status = StatusCode::OK;
        let mode = match (translate_from, caller) {
            (Some(from), _) => Mode::Translate(Box::new(
                decoded.transcoder(from, target.upstream_model(decoded.model())),
            )),
            (None, Format::OpenAiChat) => Mode::OpenAi {
                client_wants_usage: decoded.client_wants_usage(),
            },
            // Passed through to a backend serving the Responses API (see `Inbound::plan`).
            (None, Format::Responses) => Mode::Responses,
            (None, Format::Anthropic) => Mode::Anthropic(Box::default()),
        };
        let framing =
            Framing::for_format(translate_from.is_some_and(BackendFormat::event_stream_framed));
        let watch = StallWatch::new(
            Arc::clone(self.metrics),
            Arc::clone(&backend.name),
            backend.provider.as_str(),
            limits.idle,
        );
        let relay = SseRelay::new(
            resp.into_body(),
            framing,
            mode,
            caller,
            moved,
            Arc::clone(backend),
            RelayTimers {
                idle: Some(limits.idle),
                deadline,
                watch: Some(watch),
            },
        );
        let mut out = Response::new(BodyExt::boxed_unsync(relay));
        let h = out.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        if let Some(d) = dropped {
            h.insert(DROPPED, d);
        }
        out
    }

    /// A whole answer, read within the attempt's limits, checked, and translated when the
    /// caller speaks another format.
    async fn answer_whole(
        &self,
        ctx: &RequestCtx<'_, '_>,
        target: &Target,
        prepared: &Prepared,
        resp: Response<UpstreamBody>,
        record: &mut Record,
    ) -> Result<Response<Body>, AttemptError> {
        let (decoded, translate_from) = (ctx.decoded, prepared.translate_from);
        let (limits, deadline) = (&prepared.limits, prepared.call_deadline);
        let caller = decoded.format();
        let bytes = collect_bounded(
            resp.into_body(),
            self.max_response_bytes,
            limits.idle,
            deadline,
        )
        .await
        .map_err(|fault| fault.attempt_error("the response body"))?;
        let invalid = |what: &str| {
            AttemptError::new(
                UpstreamFailure::InvalidResponse,
                format!(
                    "answered 200 with a body ({} bytes) that is not {what}",
                    bytes.len()
                ),
            )
        };
        match (translate_from, caller) {
            (Some(from), _) => {
                let model = target.upstream_model(decoded.model());
                translated_answer(decoded, from, &bytes, model, record)
            }
            // Passed through unparsed: the scan that reads usage checks the body is the JSON
            // object the format promises, in the same pass.
            (None, Format::OpenAiChat | Format::Responses) => {
                let info = match caller {
                    Format::Responses => responses::inspect::inspect_response(&bytes),
                    Format::OpenAiChat | Format::Anthropic => openai::inspect_response(&bytes),
                };
                if !info.well_formed {
                    return Err(invalid("a JSON object"));
                }
                record.usage = info.usage;
                record.finish_reason = info.finish_reason;
                if let (Some(id), Some((owners, owner))) =
                    (info.response_id, record.stored_by.take())
                {
                    owners.remember_before_answering(&id, owner).await;
                }
                Ok(json_response(StatusCode::OK, bytes))
            }
            (None, Format::Anthropic) => {
                let info = anthropic::inspect_response(&bytes);
                if !info.well_formed {
                    return Err(invalid("a JSON object"));
                }
                // count_tokens answers carry no usage, and nothing was generated.
                if decoded.op() == Operation::Messages {
                    record.usage = info.usage;
                    record.finish_reason = info.finish_reason;
                }
                Ok(json_response(StatusCode::OK, bytes))
            }
        }
    }
}

/// An upstream's whole answer translated into the caller's format, its usage and finish
/// reason recorded.
fn translated_answer(
    decoded: &Inbound<'_>,
    from: BackendFormat,
    bytes: &[u8],
    model: &str,
    record: &mut Record,
) -> Result<Response<Body>, AttemptError> {
    let (out, usage, finish) = decoded
        .translate_response(from, bytes, model)
        .map_err(|e| {
            AttemptError::new(
                UpstreamFailure::InvalidResponse,
                format!("answered 200 with a body that could not be translated: {e}"),
            )
        })?;
    record.usage = usage;
    record.finish_reason = finish.map(|r| openai::chat::finish_to_openai(r).to_string());
    let mut resp = json_response(StatusCode::OK, Bytes::from(out));
    if let Some(d) = record.dropped.clone() {
        resp.headers_mut().insert(DROPPED, d);
    }
    Ok(resp)
}

/// Carries out what an error status means for the key that got it (rested after a rate
/// limit, disabled when refused as invalid), for the backend's health, and for the record.
fn carry_out(
    failure: &Failure,
    backend: &Backend,
    key: Option<&UpstreamKey>,
    status: StatusCode,
    headers: &HeaderMap,
    record: &mut Record,
) {
    match (failure.key, key) {
        (KeyEffect::Rest, Some(k)) => {
            let wait = retry_after(headers).unwrap_or(Duration::from_secs(1));
            k.state().rest(wait);
            k.state().observe_rate_limit(rate_limit_hint(headers));
        }
        // Tried again after its disable period (see `KeyState::disable`).
        (KeyEffect::Disable, Some(k)) => {
            if let Some(period) = k.state().disable(format!("upstream answered {status}")) {
                tracing::error!(backend = %backend.name, key_index = k.index, %status, retry_in = ?period, "upstream refused a key as invalid; disabled until then");
                record.upstream_error("key_disabled");
            }
        }
        _ => {}
    }
    if failure.key == KeyEffect::Rest {
        record.ratelimit_reason = Some("upstream");
    }
    if failure.backend_failed {
        health(backend, backend.state().on_failure());
    }
    record.upstream_error(failure.kind);
}

/// Names the attempt's target in the record: backend, provider, upstream model and the price
/// the answer will be charged at.
fn name_target(record: &mut Record, target: &Target, upstream_model: &str) {
    let backend = &target.backend;
    record.backend = Some(Arc::clone(&backend.name));
    record.provider = backend.provider.as_str();
    if record.otel().is_some() {
        // Only spans carry it, and finding it scans the endpoint's host.
        record.genai_provider = genai_provider_name(backend.provider.as_str(), &backend.endpoint);
    }
    record.upstream_model = Some(upstream_model.to_string());
    record.pricing = match &target.model {
        Some(_) => target.pricing,
        None => backend.pricing(upstream_model),
    };
}

/// The request in `target`'s format (passed through or translated). `Err` ends the attempt:
/// an answer the gateway gives itself (a token-count estimate), or a request this target
/// cannot take.
fn encode_for(
    ctx: &RequestCtx<'_, '_>,
    target: &Target,
    upstream_model: &str,
    record: &Record,
) -> Result<Encoded, Box<TargetOutcome>> {
    let decoded = ctx.decoded;
    // A budgeted request that set no output cap was reserved for the route's default: the
    // upstream is held to it, so the answer cannot cost more than was reserved.
    let reserved = record
        .settle
        .as_ref()
        .is_some_and(|(_, _, admitted)| admitted.reservation.is_some());
    let output_cap = (reserved && decoded.max_tokens().is_none())
        .then(|| switchyard_router::budget::output_cap(ctx.route, None));
    match decoded.plan(&target.backend, upstream_model, ctx.route, output_cap) {
        Ok(Plan::Call(e)) => Ok(e),
        Ok(Plan::Estimate) => Err(Box::new(TargetOutcome::Done(count_tokens_estimate(
            decoded,
        )))),
        // A parameter this backend's format cannot carry may suit the next target (a
        // fallback of another provider), and so may one the gateway refuses to translate
        // (`previous_response_id`: a backend serving the Responses API takes it); a malformed
        // request suits none.
        Err(err) => {
            let retryable = matches!(
                err,
                GatewayError::UnsupportedByBackend { .. }
                    | GatewayError::Translate(
                        TranslateError::Unsupported { .. } | TranslateError::Refused { .. }
                    )
            );
            Err(Box::new(TargetOutcome::Failed { err, retryable }))
        }
    }
}

/// Logs a backend's change of health.
fn health(backend: &Backend, change: HealthChange) {
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

/// Names what translation left out of the caller's request (docs/forward-compatibility.md),
/// on an answer from a translated target only.
const DROPPED: header::HeaderName = header::HeaderName::from_static("x-switchyard-dropped");

/// How much of an error body is read: enough for any provider's error, and for the title
/// of an edge's page.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// The longest rest an upstream's `Retry-After` may ask of a key here (its own header is
/// relayed as it was, when it is a number).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// `Retry-After` (seconds) or OpenAI's `retry-after-ms`. The upstream's number: NaN (or
/// anything that is not a number of seconds) is ignored, and any other value saturates
/// between 0 and [`MAX_RETRY_AFTER`], infinities included, so no value can panic.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::trim);
    let secs = |s: f64| {
        (!s.is_nan()).then(|| Duration::from_secs_f64(s.clamp(0.0, MAX_RETRY_AFTER.as_secs_f64())))
    };
    if let Some(ms) = get("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        if let Some(d) = secs(ms / 1000.0) {
            return Some(d);
        }
    }
    get("retry-after")
        .and_then(|v| v.parse::<f64>().ok())
        .and_then(secs)
}

/// The upstream's `Retry-After` as it may be passed on to the caller: a whole number of
/// seconds (a fraction rounded up), or an HTTP date as it came. Anything else (`NaN`, `-5`,
/// `inf`) is dropped rather than relayed to SDKs that would choke on it.
fn relayable_retry_after(headers: &HeaderMap) -> Option<HeaderValue> {
    let v = headers.get(header::RETRY_AFTER)?;
    let s = v.to_str().ok()?.trim();
    if s.bytes().all(|b| b.is_ascii_digit()) && !s.is_empty() {
        return Some(v.clone());
    }
    if s.ends_with(" GMT") {
        return Some(v.clone());
    }
    let f = s
        .parse::<f64>()
        .ok()
        .filter(|f| f.is_finite() && *f >= 0.0)?;
    let whole = f.ceil().min(MAX_RETRY_AFTER.as_secs_f64()) as u64;
    HeaderValue::try_from(whole.to_string()).ok()
}

/// Why a body could not be read whole.
enum BodyFault {
    /// No data for the idle timeout, or the deadline passed.
    Timeout,
    /// The connection broke or the framing was wrong.
    Broken(String),
    /// Longer than the limit; what was read up to it.
    TooLarge(Bytes),
}

impl BodyFault {
    /// The failed attempt: `what` (e.g. "the response body") stalled, broke or was too long.
    fn attempt_error(self, what: &str) -> AttemptError {
        match self {
            BodyFault::Timeout => AttemptError::new(
                UpstreamFailure::Timeout,
                format!("{what} stopped arriving (idle or total timeout)"),
            ),
            BodyFault::Broken(e) => {
                AttemptError::new(UpstreamFailure::Protocol, format!("{what} broke off: {e}"))
            }
            BodyFault::TooLarge(head) => AttemptError::new(
                UpstreamFailure::InvalidResponse,
                format!(
                    "{what} is larger than the gateway's limit ({} bytes)",
                    head.len()
                ),
            ),
        }
    }
}

/// Reads a whole body of at most `limit` bytes, each wait for data bounded by `idle` and all
/// of it by `deadline`: an upstream that stops sending halfway fails the read rather than
/// holding the request (and its concurrency slot) forever. A body that comes in one frame
/// (the common case) is not copied.
async fn collect_bounded(
    mut body: UpstreamBody,
    limit: usize,
    idle: Duration,
    deadline: Option<Instant>,
) -> Result<Bytes, BodyFault> {
    let wake = |now: Instant| {
        let at = now.checked_add(idle).unwrap_or(now);
        deadline.map_or(at, |d| d.min(at))
    };
    let timer = tokio::time::sleep_until(wake(Instant::now()));
    tokio::pin!(timer);
    let mut first: Option<Bytes> = None;
    let mut more: Option<BytesMut> = None;
    loop {
        let frame = tokio::select! {
            biased;
            frame = body.frame() => frame,
            () = &mut timer => return Err(BodyFault::Timeout),
        };
        let data = match frame {
            None => break,
            Some(Err(e)) => return Err(BodyFault::Broken(e.to_string())),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue, // trailers
            },
        };
        let len = first.as_ref().map_or(0, Bytes::len) + more.as_ref().map_or(0, BytesMut::len);
        if len + data.len() > limit {
            let mut head = BytesMut::with_capacity(limit);
            head.extend_from_slice(first.as_deref().unwrap_or_default());
            if let Some(m) = &more {
                head.extend_from_slice(m);
            }
            head.extend_from_slice(&data[..limit - len]);
            return Err(BodyFault::TooLarge(head.freeze()));
        }
        match (&mut more, first.take()) {
            (Some(m), _) => m.extend_from_slice(&data),
            (None, Some(prev)) => {
                let mut m = BytesMut::with_capacity(prev.len() + data.len() * 2);
                m.extend_from_slice(&prev);
                m.extend_from_slice(&data);
                more = Some(m);
            }
            (None, None) => first = Some(data),
        }
        timer.as_mut().reset(wake(Instant::now()));
    }
    Ok(match (more, first) {
        (Some(m), _) => m.freeze(),
        (None, first) => first.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_statuses_are_classified_by_who_wrote_them() {
        use ErrorOrigin::{Intermediary as Edge, Provider as Own};
        use FailureClass::{RateLimited, ServerError};
        use KeyEffect::{Disable, Keep, Rest};
        use UpstreamClass as U;
        let s = |n| StatusCode::from_u16(n).unwrap();
        for (status, class, origin, want) in [
            (
                429,
                U::RateLimited,
                Own,
                (Some(RateLimited), "status_429", Rest, false),
            ),
            (
                401,
                U::KeyRejected,
                Own,
                (Some(ServerError), "status_4xx", Disable, false),
            ),
            (
                503,
                U::Overloaded,
                Own,
                (Some(ServerError), "status_5xx", Keep, true),
            ),
            (
                500,
                U::Upstream,
                Own,
                (Some(ServerError), "status_5xx", Keep, true),
            ),
            // An edge's 4xx page: the upstream failed, labelled by its status.
            (
                403,
                U::Upstream,
                Edge,
                (Some(ServerError), "status_4xx", Keep, true),
            ),
            (
                502,
                U::Upstream,
                Edge,
                (Some(ServerError), "status_5xx", Keep, true),
            ),
            // The caller's own mistake: relayed, never retried, nobody's health.
            (400, U::Caller, Own, (None, "status_4xx", Keep, false)),
            (403, U::Caller, Own, (None, "status_4xx", Keep, false)),
        ] {
            let (class_want, kind, key, backend_failed) = want;
            assert_eq!(
                classify(s(status), class, origin),
                Failure {
                    class: class_want,
                    kind,
                    key,
                    backend_failed
                },
                "{status} {class:?} {origin:?}"
            );
        }
    }

    #[test]
    fn the_next_step_follows_the_policy_the_pool_and_the_clock() {
        use FailureClass::{Connect, RateLimited, ServerError, Timeout};
        let ms = Duration::from_millis;
        let mut three = Retry::DEFAULT;
        three.attempts = 3;
        three.backoff = ms(100);
        let one = Retry::DEFAULT;
        // (attempt, policy, class, another key free, out of time) → step
        for (attempt, policy, class, another_key, late, want) in [
            // The caller's error: nowhere else either.
            (1, &three, None, false, false, Step::GiveUp),
            // Out of time: the failure is the answer.
            (1, &three, Some(ServerError), false, true, Step::GiveUp),
            (1, &three, Some(RateLimited), true, true, Step::GiveUp),
            // Back-off doubles per attempt.
            (
                1,
                &three,
                Some(ServerError),
                false,
                false,
                Step::RetryAfter(ms(100)),
            ),
            (
                2,
                &three,
                Some(Timeout),
                false,
                false,
                Step::RetryAfter(ms(200)),
            ),
            (3, &three, Some(Connect), false, false, Step::Fallback),
            // One attempt per backend by default: straight to the next target.
            (1, &one, Some(ServerError), false, false, Step::Fallback),
            // A 429 or refused key with another key free: at once, two more tries.
            (1, &one, Some(RateLimited), true, false, Step::RetryNow),
            (2, &one, Some(RateLimited), true, false, Step::RetryNow),
            (3, &one, Some(RateLimited), true, false, Step::Fallback),
            (1, &one, Some(RateLimited), false, false, Step::Fallback),
            // The doubling stops at 2^6.
            (
                40,
                &{
                    let mut r = three;
                    r.attempts = 100;
                    r
                },
                Some(ServerError),
                false,
                false,
                Step::RetryAfter(ms(6_400)),
            ),
        ] {
            assert_eq!(
                next_step(attempt, policy, class, another_key, late),
                want,
                "attempt {attempt} of {}, {class:?}, another key {another_key}, late {late}",
                policy.attempts
            );
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.insert(*n, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn retry_after_never_panics_and_saturates() {
        let secs = Duration::from_secs;
        for (pairs, want) in [
            (&[("retry-after", "7")][..], Some(secs(7))),
            (&[("retry-after", "1.5")], Some(Duration::from_millis(1500))),
            (
                &[("retry-after-ms", "250")],
                Some(Duration::from_millis(250)),
            ),
            (&[("retry-after", "NaN")], None),
            (&[("retry-after", "nan")], None),
            (&[("retry-after", "-NaN")], None),
            (
                &[("retry-after-ms", "NaN"), ("retry-after", "3")],
                Some(secs(3)),
            ),
            (&[("retry-after", "inf")], Some(MAX_RETRY_AFTER)),
            (&[("retry-after", "1e400")], Some(MAX_RETRY_AFTER)),
            (
                &[("retry-after", "99999999999999999999")],
                Some(MAX_RETRY_AFTER),
            ),
            (&[("retry-after-ms", "infinity")], Some(MAX_RETRY_AFTER)),
            (&[("retry-after", "-inf")], Some(secs(0))),
            (&[("retry-after", "-5")], Some(secs(0))),
            (&[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")], None),
            (&[], None),
        ] {
            assert_eq!(retry_after(&headers(pairs)), want, "{pairs:?}");
        }
    }

    #[test]
    fn only_a_sensible_retry_after_is_relayed() {
        for (value, want) in [
            ("7", Some("7")),
            ("1.2", Some("2")),
            (
                "Wed, 21 Oct 2015 07:28:00 GMT",
                Some("Wed, 21 Oct 2015 07:28:00 GMT"),
            ),
            ("1e400", None),
            ("NaN", None),
            ("-5", None),
            ("soon", None),
        ] {
            let got = relayable_retry_after(&headers(&[("retry-after", value)]));
            assert_eq!(got.as_ref().map(|v| v.to_str().unwrap()), want, "{value}");
        }
    }
}
