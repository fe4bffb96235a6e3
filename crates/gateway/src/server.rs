//! The listener: accepts TCP connections and serves HTTP/1.1 and h2c on each (or, with TLS,
//! HTTP/1.1 and h2 by ALPN), with graceful drain on shutdown.
//!
//! Every wait on a client is bounded, and so is what clients can hold at once:
//!
//! ```text
//! accept ── open connections ≥ --max-connections? ── accept and close at once (counted)
//!   ▼ TLS handshake / h2c preface    min(10 s, --header-read-timeout)
//!   ▼ request head (HTTP/1.1)        --header-read-timeout, from accept or the first byte
//!   ▼ requests in flight ≥ --max-in-flight? ── 503 + Retry-After in the caller's format
//!   ▼ request body                   --body-read-timeout from the head, and
//!                                    --request-read-timeout from the head's first byte ── 408
//!   ▼ response (a stream counts as in flight until its last byte)
//!   ▼ no request in flight           --idle-timeout, then closed (h2: GOAWAY)
//! h2: --h2-max-concurrent-streams, --max-header-bytes, PING every --h2-keepalive-interval
//! ```

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
};

use hyper::{
    body::Incoming,
    server::conn::{http1, http2},
    service::service_fn,
    Request, Response,
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
    sync::{watch, Notify},
    time::{Duration, Instant},
};

use crate::{
    admin::Admin,
    body::Body,
    error::GatewayError,
    service::{self, Gateway},
    tls::TlsReloader,
};

mod body;
mod connection;
mod preface;
#[cfg(test)]
mod tests;

use body::Release;
pub use body::{BodyTimedOut, ReadBody, Released};
use connection::{ConnState, Tracked, Wait};

/// Limits and timeouts of a listener. The defaults are the `switchyard serve` flags'.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// Connections open at once; a connection beyond it is accepted and closed at once.
    pub max_connections: usize,
    /// Requests in flight at once (a stream until its last byte); a request beyond it is
    /// answered 503 with `Retry-After` before anything else is done.
    pub max_in_flight: usize,
    /// HTTP/1.1: how long a request head may take to arrive, from the connection's accept or
    /// from the first byte of a next request on a kept-alive connection. Also bounds a TLS
    /// handshake and the h2c preface (at most 10 s).
    pub header_read_timeout: Duration,
    /// How long a request body may take to arrive, from its head.
    pub body_read_timeout: Duration,
    /// How long a whole request, head and body, may take to arrive.
    pub request_read_timeout: Duration,
    /// How long a connection with no request in flight is kept open (HTTP/1.1 keep-alive;
    /// h2: then GOAWAY).
    pub idle_timeout: Duration,
    /// Largest request head: HTTP/1.1 request line and headers; h2 header list.
    pub max_header_bytes: usize,
    /// h2: streams a client may open at once on one connection.
    pub h2_max_concurrent_streams: u32,
    /// h2: a PING after this long without frames from the client; `None`: never.
    pub h2_keepalive_interval: Option<Duration>,
    /// h2: how long a PING may go unanswered before the connection is closed.
    pub h2_keepalive_timeout: Duration,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            max_connections: 10_000,
            max_in_flight: 4096,
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(30),
            request_read_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(120),
            max_header_bytes: 64 * 1024,
            h2_max_concurrent_streams: 100,
            h2_keepalive_interval: Some(Duration::from_secs(30)),
            h2_keepalive_timeout: Duration::from_secs(20),
        }
    }
}

impl ListenerConfig {
    /// The admin listener's: probes and scrapes are never shed, and few clients connect.
    fn admin() -> Self {
        ListenerConfig {
            max_connections: 1024,
            max_in_flight: usize::MAX,
            ..ListenerConfig::default()
        }
    }

    /// Longest a TLS handshake or the h2c preface may take: bounded like a request head, so
    /// a client that sends nothing is not kept.
    fn handshake_timeout(&self) -> Duration {
        HANDSHAKE_TIMEOUT.min(self.header_read_timeout)
    }
}

/// Longest a TLS handshake or the h2c preface may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What ran out of time (the `phase` label of `switchyard_listener_timeouts_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// The TLS handshake, or the h2c preface.
    Handshake,
    /// An HTTP/1.1 request head.
    Header,
    /// A request body, counted from its head.
    Body,
    /// A whole request, counted from its first byte.
    Request,
    /// A connection without requests.
    Idle,
}

impl Expiry {
    const ALL: [Expiry; 5] = [
        Expiry::Handshake,
        Expiry::Header,
        Expiry::Body,
        Expiry::Request,
        Expiry::Idle,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Expiry::Handshake => "handshake",
            Expiry::Header => "header",
            Expiry::Body => "body",
            Expiry::Request => "request",
            Expiry::Idle => "idle",
        }
    }
}

/// The listener's metric families.
pub struct ListenerMetrics {
    /// `switchyard_connections_open`.
    connections_open: IntGauge,
    /// `switchyard_connections_refused_total`: closed at accept, beyond `--max-connections`.
    connections_refused: IntCounter,
    /// `switchyard_requests_in_flight`.
    requests_in_flight: IntGauge,
    /// `switchyard_requests_shed_total`: answered 503, beyond `--max-in-flight`.
    requests_shed: IntCounter,
    /// `switchyard_listener_timeouts_total{phase}`, in [`Expiry::ALL`]'s order.
    timeouts: [IntCounter; 5],
}

impl ListenerMetrics {
    /// Registers the families into `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let Unregistered {
            metrics,
            timeouts_vec,
        } = ListenerMetrics::unregistered()?;
        registry.register(Box::new(metrics.connections_open.clone()))?;
        registry.register(Box::new(metrics.connections_refused.clone()))?;
        registry.register(Box::new(metrics.requests_in_flight.clone()))?;
        registry.register(Box::new(metrics.requests_shed.clone()))?;
        registry.register(Box::new(timeouts_vec))?;
        Ok(metrics)
    }

    /// Families that are counted but exported nowhere (the admin listener's).
    fn unregistered() -> Result<Unregistered, prometheus::Error> {
        let timeouts_vec = IntCounterVec::new(
            Opts::new(
                "switchyard_listener_timeouts_total",
                "Connections and requests cut because the client was too slow, by phase: handshake (TLS or h2c preface), header, body, request (head and body), idle.",
            ),
            &["phase"],
        )?;
        let timeouts = Expiry::ALL.map(|e| timeouts_vec.with_label_values(&[e.as_str()]));
        Ok(Unregistered {
            metrics: ListenerMetrics {
                connections_open: IntGauge::new(
                    "switchyard_connections_open",
                    "Client connections open on the API listener.",
                )?,
                connections_refused: IntCounter::new(
                    "switchyard_connections_refused_total",
                    "Connections accepted and closed at once because --max-connections were open.",
                )?,
                requests_in_flight: IntGauge::new(
                    "switchyard_requests_in_flight",
                    "Requests in flight on the API listener (a stream until its last byte).",
                )?,
                requests_shed: IntCounter::new(
                    "switchyard_requests_shed_total",
                    "Requests answered 503 because --max-in-flight requests were in flight.",
                )?,
                timeouts,
            },
            timeouts_vec,
        })
    }

    pub(crate) fn timeout(&self, e: Expiry) {
        let i = Expiry::ALL.iter().position(|x| *x == e).unwrap_or(0);
        self.timeouts[i].inc();
    }
}

/// [`ListenerMetrics`] before registration, with the vector its timeout counters come from.
struct Unregistered {
    metrics: ListenerMetrics,
    timeouts_vec: IntCounterVec,
}

/// Serves the gateway on `listener` until `shutdown` resolves, then lets open requests
/// (streams included) finish for up to `drain`.
pub async fn serve_gateway(
    listener: TcpListener,
    gateway: Gateway,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
    tls: Option<TlsReloader>,
    config: ListenerConfig,
    metrics: Arc<ListenerMetrics>,
) {
    serve(
        listener,
        shutdown,
        drain,
        tls,
        config,
        metrics,
        move |req: Request<ReadBody>| {
            let gw = gateway.clone();
            async move { gw.handle(req).await }
        },
    )
    .await
}

/// Serves the admin endpoints on `listener` until `shutdown` resolves.
pub async fn serve_admin(listener: TcpListener, admin: Admin, shutdown: impl Future<Output = ()>) {
    let metrics = match ListenerMetrics::unregistered() {
        Ok(u) => Arc::new(u.metrics),
        Err(e) => {
            tracing::error!(error = %e, "admin listener metrics");
            return;
        }
    };
    serve(
        listener,
        shutdown,
        Duration::from_secs(1),
        None,
        ListenerConfig::admin(),
        metrics,
        move |req: Request<ReadBody>| {
            let admin = admin.clone();
            async move { admin.handle(&req).await }
        },
    )
    .await
}

/// One listener's settings and counts, shared by its connections.
struct Listener {
    config: ListenerConfig,
    metrics: Arc<ListenerMetrics>,
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
    /// Connections open (from accept to close).
    open: AtomicUsize,
    /// Notified when the last connection closes.
    all_closed: Notify,
    in_flight: AtomicUsize,
    /// Refusals and shedding are logged at most every [`Throttle::PERIOD`].
    refused_log: Throttle,
    shed_log: Throttle,
}

// === impl Listener ===

impl Listener {
    fn new(config: ListenerConfig, metrics: Arc<ListenerMetrics>) -> Self {
        let mut h1 = http1::Builder::new();
        // Request heads are timed by the connection's watchdog (`drive`), which tells a
        // kept-alive connection waiting for its next request (`idle_timeout`) from one
        // receiving a head; hyper's own header timer counts both as one.
        h1.timer(TokioTimer::new())
            .header_read_timeout(None)
            .max_header_size(config.max_header_bytes)
            .keep_alive(true);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_concurrent_streams(config.h2_max_concurrent_streams)
            .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX))
            .keep_alive_interval(config.h2_keepalive_interval)
            .keep_alive_timeout(config.h2_keepalive_timeout);
        Listener {
            config,
            metrics,
            h1,
            h2,
            open: AtomicUsize::new(0),
            all_closed: Notify::new(),
            in_flight: AtomicUsize::new(0),
            refused_log: Throttle::default(),
            shed_log: Throttle::default(),
        }
    }

    /// Takes a place for a new connection, or `None` at `max_connections`.
    fn open(self: &Arc<Self>) -> Option<Open> {
        let n = self.open.fetch_add(1, Ordering::AcqRel);
        if n >= self.config.max_connections {
            self.close_one();
            return None;
        }
        self.metrics.connections_open.inc();
        Some(Open(Arc::clone(self)))
    }

    fn close_one(&self) {
        if self.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.all_closed.notify_waiters();
        }
    }

    /// Resolves once no connection is open.
    async fn closed(&self) {
        loop {
            let notified = self.all_closed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.open.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }

    fn request_ended(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.metrics.requests_in_flight.dec();
    }

    /// One request: counted in flight until its response ends; shed beyond
    /// `max_in_flight`; its body read against the deadlines.
    fn request<F, Fut>(
        self: &Arc<Self>,
        req: Request<Incoming>,
        conn: &Arc<ConnState>,
        handler: &F,
    ) -> impl Future<Output = Result<Response<Released<Body>>, Infallible>> + use<F, Fut>
    where
        F: Fn(Request<ReadBody>) -> Fut,
        Fut: Future<Output = Response<Body>>,
    {
        let now = Instant::now();
        let began = conn.begin(now);
        let in_flight = self.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        self.metrics.requests_in_flight.inc();
        let release = Release {
            conn: Arc::clone(conn),
            listener: Arc::clone(self),
        };
        let work = if in_flight > self.config.max_in_flight {
            self.metrics.requests_shed.inc();
            if self.shed_log.due() {
                tracing::warn!(
                    max_in_flight = self.config.max_in_flight,
                    "shedding requests: --max-in-flight requests are in flight (503, counted in switchyard_requests_shed_total)"
                );
            }
            Err(shed(&req))
        } else {
            let c = &self.config;
            let (deadline, expiry, after) =
                if began + c.request_read_timeout < now + c.body_read_timeout {
                    (
                        began + c.request_read_timeout,
                        Expiry::Request,
                        c.request_read_timeout,
                    )
                } else {
                    (now + c.body_read_timeout, Expiry::Body, c.body_read_timeout)
                };
            let metrics = Arc::clone(&self.metrics);
            // Boxed: hyper keeps the service's future inside the connection's task for the
            // connection's whole life, so an inline handler future (the gateway's is several
            // KiB) would be held by every open connection, streaming or idle; boxed, it is
            // freed as soon as the response head is out.
            Ok(Box::pin(handler(req.map(|b| {
                ReadBody::new(b, deadline, expiry, after, metrics)
            }))))
        };
        async move {
            let resp = match work {
                Ok(fut) => fut.await,
                Err(resp) => resp,
            };
            Ok(resp.map(|b| Released::new(b, release)))
        }
    }
}

/// The answer to a request beyond `max_in_flight`, in the caller's format.
fn shed<B>(req: &Request<B>) -> Response<Body> {
    let mut resp = GatewayError::Overloaded.to_response(service::caller_format(req.uri().path()));
    resp.headers_mut().insert(
        service::X_REQUEST_ID.clone(),
        service::request_id(req.headers()),
    );
    resp
}

/// A connection's place among the open ones, given back on drop.
struct Open(Arc<Listener>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.metrics.connections_open.dec();
        self.0.close_one();
    }
}

/// Lets a warning through at most once per [`Throttle::PERIOD`] seconds: refusals and
/// shedding come in floods.
struct Throttle {
    start: Instant,
    /// Seconds after `start` of the last warning, plus one (0: none yet).
    last: AtomicU64,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle {
            start: Instant::now(),
            last: AtomicU64::new(0),
        }
    }
}

impl Throttle {
    const PERIOD: u64 = 10;

    fn due(&self) -> bool {
        let now = self.start.elapsed().as_secs() + 1;
        let last = self.last.load(Ordering::Relaxed);
        (last == 0 || now >= last + Self::PERIOD)
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

async fn serve<F, Fut>(
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
    tls: Option<TlsReloader>,
    config: ListenerConfig,
    metrics: Arc<ListenerMetrics>,
    handler: F,
) where
    F: Fn(Request<ReadBody>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let shared = Arc::new(Listener::new(config, metrics));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer): (_, SocketAddr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Beyond the cap a connection is accepted and closed at once, not left in the
        // kernel's backlog: its client learns straight away (and can try another replica),
        // and the backlog never fills with connections nobody will serve.
        let Some(open) = shared.open() else {
            shared.metrics.connections_refused.inc();
            if shared.refused_log.due() {
                tracing::warn!(
                    max_connections = shared.config.max_connections,
                    "refusing connections: --max-connections are open (counted in switchyard_connections_refused_total)"
                );
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let acceptor = tls.as_ref().map(TlsReloader::acceptor);
        tokio::spawn(connection(
            stream,
            peer,
            Arc::clone(&shared),
            open,
            stop_rx.clone(),
            acceptor,
            handler.clone(),
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    tokio::select! {
        () = shared.closed() => {}
        () = tokio::time::sleep(drain) => tracing::warn!("drain timeout reached with connections still open"),
    }
}

/// One connection, from its accept to its close.
async fn connection<F, Fut>(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Listener>,
    _open: Open,
    stop: watch::Receiver<bool>,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    handler: F,
) where
    F: Fn(Request<ReadBody>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let accepted = Instant::now();
    let result = match acceptor {
        None => {
            let handshake = shared.config.handshake_timeout();
            let h2 = match tokio::time::timeout(handshake, preface::h2_preface(&stream)).await {
                Ok(Ok(h2)) => h2,
                Ok(Err(_)) => return,
                Err(_) => {
                    shared.metrics.timeout(Expiry::Handshake);
                    tracing::debug!(%peer, "no request (or h2c preface) in time");
                    return;
                }
            };
            serve_io(stream, h2, accepted, &shared, stop, handler).await
        }
        // Boxed, like the HTTP/2 branch of `serve_io`: a TLS stream (rustls' connection
        // state and buffers) is several KiB, and inline it would size every plain
        // connection's task too.
        Some(acceptor) => match Box::pin(serve_tls(
            stream, peer, acceptor, accepted, &shared, stop, handler,
        ))
        .await
        {
            Some(result) => result,
            None => return,
        },
    };
    match result {
        Ok(Some(expiry)) => {
            shared.metrics.timeout(expiry);
            tracing::debug!(%peer, phase = expiry.as_str(), "connection closed: timeout");
        }
        Ok(None) => {}
        Err(e) => tracing::debug!(%peer, error = %e, "connection ended with an error"),
    }
}

/// The TLS handshake, bounded, then the connection over it; `None` when there was no
/// handshake (failed or timed out).
async fn serve_tls<F, Fut>(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    accepted: Instant,
    shared: &Arc<Listener>,
    stop: watch::Receiver<bool>,
    handler: F,
) -> Option<Result<Option<Expiry>, hyper::Error>>
where
    F: Fn(Request<ReadBody>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    // The handshake runs in the connection's task, bounded, so a slow or silent client
    // never holds up the accept loop.
    let handshake = shared.config.handshake_timeout();
    let tls = match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return None;
        }
        Err(_) => {
            shared.metrics.timeout(Expiry::Handshake);
            tracing::debug!(%peer, "TLS handshake timed out");
            return None;
        }
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    Some(serve_io(tls, h2, accepted, shared, stop, handler).await)
}

/// Serves one connection as HTTP/2 or HTTP/1.1 until it ends; `Some` when the listener
/// closed it for a timeout.
async fn serve_io<I, F, Fut>(
    io: I,
    h2: bool,
    accepted: Instant,
    shared: &Arc<Listener>,
    stop: watch::Receiver<bool>,
    handler: F,
) -> Result<Option<Expiry>, hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(Request<ReadBody>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let state = Arc::new(ConnState::new(!h2, accepted));
    let service = {
        let (shared, state) = (Arc::clone(shared), Arc::clone(&state));
        service_fn(move |req| shared.request(req, &state, &handler))
    };
    if h2 {
        // Boxed: an HTTP/2 connection's state is several KiB, and inline it would size the
        // task of every HTTP/1.1 connection (one per open stream) as well.
        let conn = shared.h2.serve_connection(TokioIo::new(io), service);
        Box::pin(drive(
            conn,
            |c| c.graceful_shutdown(),
            &state,
            &shared.config,
            stop,
        ))
        .await
    } else {
        let io = TokioIo::new(Tracked::new(io, Arc::clone(&state)));
        let conn = shared.h1.serve_connection(io, service);
        drive(
            conn,
            |c| c.graceful_shutdown(),
            &state,
            &shared.config,
            stop,
        )
        .await
    }
}

/// Polls a connection to its end, watching what it waits for: a request head that takes
/// longer than `header_read_timeout` closes it at once; `idle_timeout` without a request, or
/// the listener's shutdown, closes it gracefully (an HTTP/1.1 response in progress finishes;
/// h2 sends GOAWAY and lets open streams finish).
async fn drive<C>(
    conn: C,
    graceful: impl Fn(Pin<&mut C>),
    state: &ConnState,
    config: &ListenerConfig,
    mut stop: watch::Receiver<bool>,
) -> Result<Option<Expiry>, hyper::Error>
where
    C: Future<Output = Result<(), hyper::Error>>,
{
    tokio::pin!(conn);
    let mut closing = false;
    let mut idled = None;
    // One timer for the connection's life, moved to each new deadline: a timer made per wait
    // cost every request two registrations in the timer wheel (and a later deadline, the
    // usual move from a head to the idle wait, is a cheap update of an armed timer).
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    let mut armed: Option<Instant> = None;
    // Made once (and the notification again only after it fires): futures made per turn of
    // the loop registered as waiters (a lock and a list insert each) and deregistered again
    // several times per request.
    let stopped = stop.changed();
    tokio::pin!(stopped);
    let notified = state.changed.notified();
    tokio::pin!(notified);
    loop {
        let waiting = state.waiting().map(|(wait, since, token)| match wait {
            Wait::Head => (since + config.header_read_timeout, Expiry::Header, token),
            Wait::Idle => (since + config.idle_timeout, Expiry::Idle, token),
        });
        // While closing, only a head still matters: idleness is what closing waits for.
        let waiting = waiting.filter(|(_, e, _)| !closing || *e == Expiry::Header);
        if let Some((at, ..)) = waiting {
            if armed != Some(at) {
                timer.as_mut().reset(at);
                armed = Some(at);
            }
        }
        tokio::select! {
            done = conn.as_mut() => return done.map(|()| idled),
            changed = stopped.as_mut(), if !closing => {
                let _ = changed;
                graceful(conn.as_mut());
                closing = true;
            }
            () = notified.as_mut() => notified.set(state.changed.notified()),
            () = timer.as_mut(), if waiting.is_some() => {
                armed = None;
                let Some((_, expiry, token)) = waiting else { continue };
                if !state.still(token) {
                    continue;
                }
                match expiry {
                    // Dropped unanswered, as hyper's own header timeout does.
                    Expiry::Header => return Ok(Some(Expiry::Header)),
                    _ => {
                        graceful(conn.as_mut());
                        closing = true;
                        idled = Some(expiry);
                    }
                }
            }
        }
    }
}
