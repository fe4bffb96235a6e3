//! Upstream connections by origin: HTTP/1.1 connections each driven by the task that reads its
//! response, and HTTP/2 connections shared by many requests.
//!
//! HTTP/1.1: hyper's pooled client runs every connection in a task of its own and passes the
//! response body on through a channel one chunk per turn of that task, even when a whole
//! burst of events sits in its read buffer: a 20-event stream cost some 40 task switches and
//! the relay had to spin to gather a burst (measured: the connection task and the spinning
//! were a third of the gateway's CPU per stream). Here the task that reads the body also polls
//! the connection, so everything that has arrived is decoded in one go and nothing is spawned
//! per connection. Idle connections wait unpolled in a stack per origin (the most recently
//! used first, its buffers still warm). Each is checked before reuse; a request that still
//! finds its reused connection closed under it, before a byte of it was written, is sent again
//! on a new one.
//!
//! HTTP/2 (chosen by ALPN on TLS origins): one connection per origin carries every request,
//! driven by a task of its own (multiplexing needs one); another is opened only when all are
//! at the server's `MAX_CONCURRENT_STREAMS` (or [`MAX_STREAMS`]).
//!
//! Requests arrive with an absolute URI and their `Host`; each protocol writes them its own
//! way: origin-form with `Host` on HTTP/1.1 (absolute-form only to a forward proxy), and
//! `:authority` from the URI, without `Host`, on h2.

use std::{
    collections::HashMap,
    future::{poll_fn, Future},
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, Weak,
    },
    task::{Context, Poll, Waker},
    time::Duration,
};

use bytes::Bytes;
use http::{
    header,
    uri::{Authority, PathAndQuery, Scheme},
    HeaderValue, Request, Response, Uri,
};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::{
    body::Incoming,
    client::conn::{http1, http2},
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use switchyard_router::Egress;
use tokio::time::Instant;

use crate::{
    body::Outgoing,
    connect::{Connected, Connector, Stream},
    error::UpstreamFailure,
};

mod wakeup;

use wakeup::Wakeup;

type Io = TokioIo<Stream>;

/// Most requests in flight on one h2 connection before another is opened, when the server
/// allows more (servers commonly allow 100 to 250).
pub const MAX_STREAMS: usize = 100;

/// Where connections are kept: an endpoint's scheme and authority, compared exactly as
/// written (one host spelled two ways just gets two stacks), and the backend's connection
/// settings (its CA, server name and proxy: connections made otherwise are never shared).
/// Hashed as two byte strings with foldhash: `Authority`'s own case-folding hash, one byte at
/// a time through SipHash, cost some 700 instructions per lookup (callgrind), twice per
/// request.
#[derive(Clone)]
struct Origin {
    scheme: Scheme,
    authority: Authority,
    egress: u64,
}

impl PartialEq for Origin {
    fn eq(&self, other: &Self) -> bool {
        self.egress == other.egress
            && self.scheme.as_str() == other.scheme.as_str()
            && self.authority.as_str() == other.authority.as_str()
    }
}

impl Eq for Origin {}

impl std::hash::Hash for Origin {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.scheme.as_str().hash(state);
        self.authority.as_str().hash(state);
        self.egress.hash(state);
    }
}

/// One HTTP/1.1 connection: the handle requests are sent through, and the connection itself,
/// which makes progress only when polled.
struct Conn {
    tx: http1::SendRequest<Outgoing>,
    driver: http1::Connection<Io, Outgoing>,
    /// The connection future finished: closed, or broken.
    ended: bool,
    /// Plain http through a forward proxy: requests go in absolute-form, with this
    /// `Proxy-Authorization` if any.
    via_proxy: Option<Option<HeaderValue>>,
    /// The connection and its response bodies are polled with `waker`, whose wake-ups
    /// `wakeup` notes and passes on to the task reading them (see [`wakeup`]).
    wakeup: Arc<Wakeup>,
    waker: Waker,
    /// The task `wakeup` passes wake-ups on to, as last set.
    task: Option<Waker>,
}

impl Conn {
    /// Polls the connection on behalf of the task `cx` belongs to.
    fn drive(&mut self, cx: &mut Context<'_>) {
        self.serve(cx.waker());
        self.poll_driver();
    }

    fn poll_driver(&mut self) {
        let mut cx = Context::from_waker(&self.waker);
        if !self.ended && Pin::new(&mut self.driver).poll(&mut cx).is_ready() {
            self.ended = true;
        }
    }

    /// Whether the connection's wake-ups go to `task`.
    fn serves(&self, task: &Waker) -> bool {
        self.task.as_ref().is_some_and(|t| t.will_wake(task))
    }

    /// From now on the connection's wake-ups go to `task`.
    fn serve(&mut self, task: &Waker) {
        if !self.serves(task) {
            self.task = Some(task.clone());
            self.wakeup.set_task(Some(task.clone()));
        }
    }

    /// Back in the pool: its wake-ups go nowhere (and hold no finished task alive).
    fn rest(&mut self) {
        self.task = None;
        self.wakeup.set_task(None);
    }

    /// Whether an idle connection can take a request: lets it notice a close (the upstream's
    /// FIN is already in its socket) without waiting on anything.
    fn usable(&mut self) -> bool {
        self.poll_driver();
        self.ready()
    }

    /// Open and free to take a request, as last seen (no poll).
    fn ready(&self) -> bool {
        !self.ended && self.tx.is_ready()
    }

    /// Writes `req`'s target as this connection needs it: origin-form to an origin server
    /// (RFC 9112 §3.2.1), absolute-form to a forward proxy (§3.2.2); `Host` either way
    /// (§3.2), from the URI when the caller set none.
    fn shape(&self, req: &mut Request<Outgoing>) {
        if !req.headers().contains_key(header::HOST) {
            if let Some(host) = switchyard_router::egress::host_header(req.uri()) {
                req.headers_mut().insert(header::HOST, host);
            }
        }
        match &self.via_proxy {
            None => {
                let path = req
                    .uri()
                    .path_and_query()
                    .cloned()
                    .unwrap_or_else(|| PathAndQuery::from_static("/"));
                *req.uri_mut() = Uri::from(path);
            }
            Some(auth) => {
                if let Some(auth) = auth {
                    req.headers_mut()
                        .insert(header::PROXY_AUTHORIZATION, auth.clone());
                }
            }
        }
    }
}

/// One HTTP/2 connection, shared: its driver runs in a task of its own.
struct H2Conn {
    tx: http2::SendRequest<Outgoing>,
    /// Requests in flight on it (each holds a [`StreamSlot`]).
    streams: Arc<AtomicUsize>,
    /// The server's `MAX_CONCURRENT_STREAMS`, as last seen by the driver task.
    max_streams: Arc<AtomicUsize>,
    /// When a request last took a stream on it (for the idle sweep).
    since: Instant,
}

impl H2Conn {
    fn open(&self) -> bool {
        !self.tx.is_closed() && self.tx.is_ready()
    }

    fn has_room(&self) -> bool {
        let limit = self.max_streams.load(Ordering::Relaxed).min(MAX_STREAMS);
        self.streams.load(Ordering::Relaxed) < limit
    }

    /// Takes a stream on it.
    fn take(&self) -> (http2::SendRequest<Outgoing>, StreamSlot) {
        self.streams.fetch_add(1, Ordering::Relaxed);
        (self.tx.clone(), StreamSlot(Arc::clone(&self.streams)))
    }
}

/// One request's place on an h2 connection, given back when its response ends or is dropped.
struct StreamSlot(Arc<AtomicUsize>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An idle connection back for longer than this is polled before reuse (see `checkout`).
const RECHECK_AFTER: Duration = Duration::from_millis(1);

struct Idle {
    conn: Box<Conn>,
    since: Instant,
}

/// Why a request could not be sent or its response headers not read.
#[derive(Debug)]
pub enum SendError {
    /// No connection to the upstream could be made (TCP, proxy, TLS or the HTTP handshake).
    Connect {
        /// `Connect`, or `Tls` for a failed handshake.
        kind: UpstreamFailure,
        /// What happened.
        detail: String,
    },
    /// The connection failed while the request was sent or the response read.
    Protocol(hyper::Error),
    /// An h2 server refused the stream or went away before processing it (REFUSED_STREAM,
    /// or GOAWAY below its id): nothing was done, so sending it again is safe.
    Unprocessed(hyper::Error),
}

/// The upstream connections of the process, by origin.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    idle: Mutex<HashMap<Origin, Vec<Idle>, foldhash::fast::RandomState>>,
    h2: Mutex<HashMap<Origin, Vec<H2Conn>, foldhash::fast::RandomState>>,
    connector: Connector,
    builder: http1::Builder,
    h2_builder: http2::Builder<TokioExecutor>,
    idle_timeout: Duration,
    max_idle_per_origin: usize,
}

impl Pool {
    /// A pool over `connector`. Connections idle longer than `idle_timeout` are closed; at
    /// most `max_idle_per_origin` HTTP/1.1 ones are kept per origin (a burst of a thousand
    /// streams does not leave a thousand sockets and their buffers behind).
    pub(crate) fn new(
        connector: Connector,
        idle_timeout: Duration,
        max_idle_per_origin: usize,
    ) -> Self {
        let builder = http1::Builder::new();
        let mut h2_builder = http2::Builder::new(TokioExecutor::new());
        // Windows sized so a streamed answer never waits on WINDOW_UPDATEs and a whole
        // non-streamed one (usually under 1 MiB) arrives in one flight; pings find a dead
        // connection that TCP would take minutes to notice.
        h2_builder
            .timer(TokioTimer::new())
            .initial_stream_window_size(2 * 1024 * 1024)
            .initial_connection_window_size(8 * 1024 * 1024)
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10));
        let inner = Arc::new(Inner {
            idle: Mutex::new(HashMap::default()),
            h2: Mutex::new(HashMap::default()),
            connector,
            builder,
            h2_builder,
            idle_timeout,
            max_idle_per_origin,
        });
        // Closes expired idle connections even when no request comes to find them.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(sweep(Arc::downgrade(&inner), idle_timeout));
        }
        Pool { inner }
    }

    /// Sends `req` (absolute URI, with its `Host`) to its origin as `egress` says, and returns
    /// the response once its headers have arrived; the body drives an HTTP/1.1 connection as
    /// it is read and gives it back to the pool at its end.
    pub async fn send(
        &self,
        mut req: Request<Outgoing>,
        egress: &Egress,
        connect_timeout: Duration,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let uri = req.uri();
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return Err(SendError::Connect {
                kind: UpstreamFailure::Connect,
                detail: format!("{uri} is not an absolute URI"),
            });
        };
        let origin = Origin {
            scheme: scheme.clone(),
            authority: authority.clone(),
            egress: egress.id,
        };
        // Only TLS origins can have h2 connections: skip the lookup for plain http.
        if origin.scheme == Scheme::HTTPS {
            if let Some((tx, slot)) = self.inner.checkout_h2(&origin) {
                return self.inner.send_h2(&origin, tx, slot, req).await;
            }
        }
        loop {
            let (mut conn, reused) = match self.inner.checkout(&origin) {
                Some(conn) => (conn, true),
                None => {
                    let connected = self
                        .inner
                        .connector
                        .connect(req.uri(), egress, connect_timeout)
                        .await
                        .map_err(|e| SendError::Connect {
                            kind: e.kind,
                            detail: e.detail,
                        })?;
                    if connected.h2 {
                        let (tx, slot) = self.inner.handshake_h2(&origin, connected).await?;
                        return self.inner.send_h2(&origin, tx, slot, req).await;
                    }
                    (self.inner.handshake(connected).await?, false)
                }
            };
            conn.shape(&mut req);
            let sent = conn.tx.try_send_request(req);
            let mut sent = std::pin::pin!(sent);
            // Polled as the body is (see `poll_on`): the response's arrival, decoded by the
            // connection during this poll, is seen by this poll instead of waking the task
            // for another turn of the whole request.
            let mut waiting = false;
            let result =
                poll_fn(|cx| poll_on(&mut conn, &mut waiting, cx, |c| sent.as_mut().poll(c))).await;
            match result {
                Ok(resp) => {
                    let pool = Arc::downgrade(&self.inner);
                    return Ok(resp.map(|body| UpstreamBody {
                        body,
                        conn: Some(Lease { conn, origin, pool }),
                        _stream: None,
                        waiting: false,
                    }));
                }
                Err(mut e) => match e.take_message() {
                    // Closed under us before the request went out: the upstream timed the
                    // idle connection out. Nothing was sent, so sending again is safe.
                    Some(again) if reused => req = again,
                    _ => return Err(SendError::Protocol(e.into_error())),
                },
            }
        }
    }

    /// Idle HTTP/1.1 connections kept for `origin` with default settings (for tests).
    pub fn idle_count(&self, scheme: &Scheme, authority: &Authority) -> usize {
        let idle = self.inner.idle.lock().unwrap_or_else(|p| p.into_inner());
        let origin = Origin {
            scheme: scheme.clone(),
            authority: authority.clone(),
            egress: 0,
        };
        idle.get(&origin).map_or(0, Vec::len)
    }

    /// Open h2 connections to `origin` with default settings (for tests).
    pub fn h2_count(&self, scheme: &Scheme, authority: &Authority) -> usize {
        let h2 = self.inner.h2.lock().unwrap_or_else(|p| p.into_inner());
        let origin = Origin {
            scheme: scheme.clone(),
            authority: authority.clone(),
            egress: 0,
        };
        h2.get(&origin)
            .map_or(0, |conns| conns.iter().filter(|c| c.open()).count())
    }
}

/// Whether an h2 error says the server did not process the stream: REFUSED_STREAM, or a
/// GOAWAY (graceful or not) that left this stream out.
fn unprocessed(e: &hyper::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM) || h2.is_go_away();
        }
        cur = err.source();
    }
    e.is_canceled()
}

impl Inner {
    fn checkout(&self, origin: &Origin) -> Option<Box<Conn>> {
        let now = Instant::now();
        loop {
            let idle = {
                let mut map = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                map.get_mut(origin)?.pop()?
            };
            // Checked (and dropped when dead) outside the lock.
            let mut conn = idle.conn;
            let idle_for = now.duration_since(idle.since);
            // Back for under a millisecond and already taking requests: a close arriving in
            // that window is as likely as one arriving between a check and the send (and a
            // request it catches unsent is sent again), so the poll (some 1 500 instructions,
            // a tenth of the pool's share of a request) is skipped.
            if idle_for < RECHECK_AFTER && conn.ready() {
                return Some(conn);
            }
            if idle_for < self.idle_timeout && conn.usable() {
                return Some(conn);
            }
        }
    }

    /// A stream on an open h2 connection to `origin` with room for one more.
    fn checkout_h2(&self, origin: &Origin) -> Option<(http2::SendRequest<Outgoing>, StreamSlot)> {
        let mut map = self.h2.lock().unwrap_or_else(|p| p.into_inner());
        let conns = map.get_mut(origin)?;
        conns.retain(H2Conn::open);
        let found = conns.iter_mut().find(|c| c.has_room()).map(|c| {
            c.since = Instant::now();
            c.take()
        });
        if conns.is_empty() {
            map.remove(origin);
        }
        found
    }

    /// Sends `req` on an h2 connection: `:authority` comes from the URI, so `Host` is dropped
    /// (RFC 9113 §8.3.1); hyper removes connection-specific headers itself. A connection that
    /// did not process the request (going away, refusing streams) takes no more: it is
    /// dropped from the pool, so the request's second try finds another.
    async fn send_h2(
        &self,
        origin: &Origin,
        mut tx: http2::SendRequest<Outgoing>,
        slot: StreamSlot,
        mut req: Request<Outgoing>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        req.headers_mut().remove(header::HOST);
        match tx.send_request(req).await {
            Ok(resp) => Ok(resp.map(|body| UpstreamBody {
                body,
                conn: None,
                _stream: Some(slot),
                waiting: false,
            })),
            Err(e) if unprocessed(&e) => {
                let mut map = self.h2.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(conns) = map.get_mut(origin) {
                    conns.retain(|c| !Arc::ptr_eq(&c.streams, &slot.0));
                }
                Err(SendError::Unprocessed(e))
            }
            Err(e) => Err(SendError::Protocol(e)),
        }
    }

    async fn handshake(&self, connected: Connected) -> Result<Box<Conn>, SendError> {
        let (tx, driver) =
            self.builder
                .handshake(connected.io)
                .await
                .map_err(|e| SendError::Connect {
                    kind: UpstreamFailure::Connect,
                    detail: crate::connect::error_chain(&e),
                })?;
        // Boxed: the connection (hyper's whole dispatcher state, some hundreds of bytes) is
        // handed between pool, request and body; moved inline it was copied a dozen times per
        // request (callgrind: memcpy was 9% of a non-streaming request's instructions).
        let (wakeup, waker) = Wakeup::new();
        Ok(Box::new(Conn {
            tx,
            driver,
            ended: false,
            via_proxy: connected.via_proxy,
            wakeup,
            waker,
            task: None,
        }))
    }

    /// Starts an h2 connection and takes its first stream. It is shared from then on unless
    /// another connection to the origin, opened meanwhile, still has room: then it serves
    /// this request alone and closes after it.
    async fn handshake_h2(
        &self,
        origin: &Origin,
        connected: Connected,
    ) -> Result<(http2::SendRequest<Outgoing>, StreamSlot), SendError> {
        let (tx, driver) =
            self.h2_builder
                .handshake(connected.io)
                .await
                .map_err(|e| SendError::Connect {
                    kind: UpstreamFailure::Connect,
                    detail: crate::connect::error_chain(&e),
                })?;
        // hyper's default until the server's SETTINGS say otherwise.
        let max_streams = Arc::new(AtomicUsize::new(MAX_STREAMS));
        let seen = Arc::clone(&max_streams);
        let mut driver = driver;
        tokio::spawn(async move {
            let ended = poll_fn(|cx| {
                let polled = Pin::new(&mut driver).poll(cx);
                seen.store(driver.current_max_send_streams(), Ordering::Relaxed);
                polled
            })
            .await;
            if let Err(e) = ended {
                tracing::debug!(error = %e, "upstream h2 connection ended");
            }
        });
        let conn = H2Conn {
            tx,
            streams: Arc::new(AtomicUsize::new(0)),
            max_streams,
            since: Instant::now(),
        };
        let taken = conn.take();
        let mut map = self.h2.lock().unwrap_or_else(|p| p.into_inner());
        let conns = map.entry(origin.clone()).or_default();
        conns.retain(H2Conn::open);
        if !conns.iter().any(H2Conn::has_room) {
            conns.push(conn);
        }
        Ok(taken)
    }

    fn put(&self, origin: Origin, mut conn: Box<Conn>) {
        // Only a known end is checked here: `checkout` polls the connection before any reuse
        // anyway, so polling it here too (some 750 instructions) would be paid twice.
        if conn.ended {
            return;
        }
        conn.rest();
        let mut map = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let stack = map.entry(origin).or_default();
        if stack.len() < self.max_idle_per_origin {
            stack.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }
}

async fn sweep(pool: Weak<Inner>, idle_timeout: Duration) {
    let every = (idle_timeout / 2).max(Duration::from_secs(1));
    loop {
        tokio::time::sleep(every).await;
        let Some(pool) = pool.upgrade() else { return };
        let now = Instant::now();
        let expired: Vec<Idle> = {
            let mut map = pool.idle.lock().unwrap_or_else(|p| p.into_inner());
            let mut out = Vec::new();
            for stack in map.values_mut() {
                // Oldest first: the stack is pushed in order of return.
                let n = stack
                    .iter()
                    .take_while(|i| now.duration_since(i.since) >= idle_timeout)
                    .count();
                out.extend(stack.drain(..n));
            }
            map.retain(|_, s| !s.is_empty());
            out
        };
        // h2 connections with no stream in flight and none taken for the idle timeout are let
        // go: dropping the last handle closes the connection.
        let closed: Vec<H2Conn> = {
            let mut map = pool.h2.lock().unwrap_or_else(|p| p.into_inner());
            let mut out = Vec::new();
            for conns in map.values_mut() {
                let mut i = 0;
                while i < conns.len() {
                    let c = &conns[i];
                    let idle = c.streams.load(Ordering::Relaxed) == 0
                        && now.duration_since(c.since) >= idle_timeout;
                    if !c.open() || idle {
                        out.push(conns.swap_remove(i));
                    } else {
                        i += 1;
                    }
                }
            }
            map.retain(|_, c| !c.is_empty());
            out
        };
        // Sockets are closed outside the lock.
        drop(expired);
        drop(closed);
    }
}

/// A connection on loan to one response.
struct Lease {
    conn: Box<Conn>,
    origin: Origin,
    pool: Weak<Inner>,
}

/// An upstream response body. Reading an HTTP/1.1 one drives its connection; at its end the
/// connection goes back to the pool. Dropped before its end, it closes the connection (what
/// is left of the response would otherwise be read as the next one's). An h2 one holds its
/// place on the shared connection until dropped.
pub struct UpstreamBody {
    body: Incoming,
    conn: Option<Lease>,
    _stream: Option<StreamSlot>,
    /// The last poll left the connection waiting (HTTP/1.1): until something wakes it, there
    /// is nothing to look for.
    waiting: bool,
}

impl UpstreamBody {
    fn release(&mut self) {
        if let Some(lease) = self.conn.take() {
            if let Some(pool) = lease.pool.upgrade() {
                pool.put(lease.origin, lease.conn);
            }
        }
    }
}

impl HttpBody for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = match this.conn.as_mut() {
            Some(lease) => {
                let body = &mut this.body;
                poll_on(&mut lease.conn, &mut this.waiting, cx, |c| {
                    Pin::new(&mut *body).poll_frame(c)
                })
            }
            // h2: the connection's own task wakes this one.
            None => Pin::new(&mut this.body).poll_frame(cx),
        };
        match polled {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Err(_))) => this.conn = None,
            Poll::Ready(Some(Ok(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// How many times one poll of an HTTP/1.1 response or body drives its connection while
/// wake-ups keep arriving during the poll, before it leaves the rest to its task.
const ROUNDS: usize = 3;

/// Polls what `poll` reads from `conn` (the response, then its body), driving the connection
/// first, with the connection's own waker (see [`wakeup`]). `waiting`: the last poll found
/// nothing; until the connection is woken, neither it nor `poll` is polled again.
fn poll_on<T>(
    conn: &mut Conn,
    waiting: &mut bool,
    cx: &mut Context<'_>,
    mut poll: impl FnMut(&mut Context<'_>) -> Poll<T>,
) -> Poll<T> {
    if *waiting && conn.serves(cx.waker()) && !conn.wakeup.woken() {
        return Poll::Pending;
    }
    *waiting = false;
    conn.wakeup.begin();
    for _ in 0..ROUNDS {
        conn.drive(cx);
        let polled = poll(&mut Context::from_waker(&conn.waker));
        if polled.is_ready() {
            conn.wakeup.end();
            return polled;
        }
        // Woken during the poll (the body's first poll lets the connection read it; a chunk
        // arrived meanwhile): look again.
        if conn.wakeup.settle() {
            *waiting = true;
            return Poll::Pending;
        }
    }
    conn.wakeup.end();
    cx.waker().wake_by_ref();
    Poll::Pending
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // Read to its end without the final poll (a consumer that trusted `is_end_stream`):
        // the connection is still good.
        if self.body.is_end_stream() {
            self.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::{BodyExt, Full};
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::*;

    /// How the bare upstream answers.
    #[derive(Clone, Copy)]
    enum Answer {
        /// `ok`, connection kept.
        Ok,
        /// `ok`, then the socket is closed.
        OkThenClose,
        /// `ok` marked `Connection: close`, the socket left open (the client must close it).
        OkMarkedClose,
        /// `100 Continue`, then `ok`.
        ContinueThenOk,
    }

    /// A bare HTTP/1.1 upstream that counts its connections, records each request head as
    /// it came, and answers every request on them as `answer` says.
    async fn upstream_with(answer: Answer) -> (Uri, Arc<AtomicUsize>, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (count, seen) = (accepted.clone(), heads.clone());
        tokio::spawn(async move {
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let n = match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        buf.extend_from_slice(&chunk[..n]);
                        // Requests here have no body: one head, one answer.
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                            seen.lock().unwrap().push(head);
                            buf.drain(..end + 4);
                            let ok = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            let resp = match answer {
                                Answer::Ok | Answer::OkThenClose => ok.to_string(),
                                Answer::OkMarkedClose => "HTTP/1.1 200 OK\r\nconnection: close\r\n\
                                     content-length: 2\r\n\r\nok"
                                    .to_string(),
                                Answer::ContinueThenOk => {
                                    format!("HTTP/1.1 100 Continue\r\n\r\n{ok}")
                                }
                            };
                            if sock.write_all(resp.as_bytes()).await.is_err() {
                                return;
                            }
                            match answer {
                                Answer::OkThenClose => return,
                                // Keeps the socket open without reading: a request sent on it
                                // would wait forever.
                                Answer::OkMarkedClose => {
                                    tokio::time::sleep(Duration::from_secs(30)).await;
                                    return;
                                }
                                _ => {}
                            }
                        }
                    }
                });
            }
        });
        (
            format!("http://{addr}/v1/x?a=1").parse().unwrap(),
            accepted,
            heads,
        )
    }

    async fn upstream(close_after: bool) -> (Uri, Arc<AtomicUsize>) {
        let answer = if close_after {
            Answer::OkThenClose
        } else {
            Answer::Ok
        };
        let (uri, accepted, _) = upstream_with(answer).await;
        (uri, accepted)
    }

    fn pool(max_idle: usize) -> Pool {
        let roots = crate::connect::TrustStore::Webpki.roots().unwrap();
        let connector = Connector::new(roots, true).unwrap();
        Pool::new(connector, Duration::from_secs(30), max_idle)
    }

    fn defaults() -> Egress {
        Egress::default()
    }

    fn get(uri: &Uri) -> Request<Outgoing> {
        let mut req = Request::new(Full::default());
        *req.uri_mut() = uri.clone();
        req
    }

    async fn ok(pool: &Pool, uri: &Uri) -> Bytes {
        let resp = pool
            .send(get(uri), &defaults(), Duration::from_secs(2))
            .await
            .unwrap();
        resp.into_body().collect().await.unwrap().to_bytes()
    }

    fn idle(pool: &Pool, uri: &Uri) -> usize {
        pool.idle_count(uri.scheme().unwrap(), uri.authority().unwrap())
    }

    /// Waits (bounded) until the pool's idle HTTP/1.1 connections have seen their upstream
    /// close them: polled as `checkout` polls one (`Conn::usable`), none can take a request.
    /// The next `checkout` then finds them ended however soon it comes.
    async fn wait_upstream_closed(pool: &Pool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let closed = {
                let mut idle = pool.inner.idle.lock().unwrap();
                idle.values_mut().flatten().all(|i| !i.conn.usable())
            };
            if closed {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the upstream's close never reached the pool"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test]
    async fn a_connection_read_to_its_end_is_reused() {
        let (uri, accepted) = upstream(false).await;
        let pool = pool(8);
        for _ in 0..5 {
            assert_eq!(ok(&pool, &uri).await, "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(idle(&pool, &uri), 1);
    }

    #[tokio::test]
    async fn a_body_dropped_unread_closes_its_connection() {
        let (uri, accepted) = upstream(false).await;
        let pool = pool(8);
        let resp = pool
            .send(get(&uri), &defaults(), Duration::from_secs(2))
            .await
            .unwrap();
        drop(resp);
        assert_eq!(idle(&pool, &uri), 0);
        assert_eq!(ok(&pool, &uri).await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_is_not_reused() {
        let (uri, accepted) = upstream(true).await;
        let pool = pool(8);
        for _ in 0..3 {
            assert_eq!(ok(&pool, &uri).await, "ok");
            wait_upstream_closed(&pool).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn idle_connections_are_capped_per_origin() {
        let (uri, accepted) = upstream(false).await;
        let pool = pool(2);
        let egress = defaults();
        let resps = futures_util::future::join_all(
            (0..4).map(|_| pool.send(get(&uri), &egress, Duration::from_secs(2))),
        )
        .await;
        for r in resps {
            r.unwrap().into_body().collect().await.unwrap();
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 4);
        assert_eq!(idle(&pool, &uri), 2);
    }

    #[tokio::test]
    async fn connect_failures_say_so() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri: Uri = format!("http://{}/", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        drop(listener);
        let err = pool(8)
            .send(get(&uri), &defaults(), Duration::from_secs(2))
            .await
            .err()
            .unwrap();
        assert!(matches!(err, SendError::Connect { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn requests_go_out_in_origin_form_with_host() {
        let (uri, _, heads) = upstream_with(Answer::Ok).await;
        let pool = pool(8);
        assert_eq!(ok(&pool, &uri).await, "ok");
        let heads = heads.lock().unwrap();
        let head = heads[0].to_ascii_lowercase();
        let authority = uri.authority().unwrap().as_str();
        assert!(head.starts_with("get /v1/x?a=1 http/1.1\r\n"), "{head}");
        assert!(head.contains(&format!("\r\nhost: {authority}")), "{head}");
    }

    #[tokio::test]
    async fn a_body_in_pieces_goes_out_whole_with_its_length() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let got = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // The head, then as many body bytes as it declares.
            loop {
                let n = sock.read(&mut chunk).await.unwrap();
                assert!(n > 0, "the connection closed before the body was sent");
                buf.extend_from_slice(&chunk[..n]);
                let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .split("\r\n")
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map_or(0, |n| n.parse().unwrap());
                if buf.len() >= end + 4 + len {
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    sock.write_all(ok).await.unwrap();
                    return (head, buf.split_off(end + 4));
                }
            }
        });
        let parts = [
            Bytes::from_static(b"{\"a\":"),
            Bytes::from_static(b"\"x\""),
            Bytes::from(vec![b' '; 70_000]),
            Bytes::from_static(b"}"),
        ];
        let want = parts.concat();
        let mut req = Request::new(Full::new(crate::body::Spliced::new(parts)));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = format!("http://{addr}/v1/x").parse().unwrap();
        let resp = pool(8)
            .send(req, &defaults(), Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
        let (head, sent) = got.await.unwrap();
        assert!(
            head.split("\r\n").any(|l| l == "content-length: 70009"),
            "{head}"
        );
        assert!(!head.contains("transfer-encoding"), "{head}");
        assert!(sent == want, "the body differs");
    }

    #[tokio::test]
    async fn a_response_marked_connection_close_ends_its_connection() {
        let (uri, accepted, _) = upstream_with(Answer::OkMarkedClose).await;
        let pool = pool(8);
        for _ in 0..3 {
            let got = tokio::time::timeout(Duration::from_secs(5), ok(&pool, &uri)).await;
            assert_eq!(got.expect("a request sent on a closing connection"), "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
        assert_eq!(idle(&pool, &uri), 0);
    }

    #[tokio::test]
    async fn informational_responses_are_passed_over() {
        let (uri, accepted, _) = upstream_with(Answer::ContinueThenOk).await;
        let pool = pool(8);
        for _ in 0..2 {
            assert_eq!(ok(&pool, &uri).await, "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn plain_http_through_a_proxy_goes_in_absolute_form_with_its_credentials() {
        // The "proxy" is the bare upstream: it records what a proxy would receive.
        let (proxy, _, heads) = upstream_with(Answer::Ok).await;
        let proxy_url = format!("http://{}", proxy.authority().unwrap());
        let egress = Egress::new(None, None, Some((&proxy_url, Some(b"user:pass")))).unwrap();
        let origin: Uri = "http://origin.invalid:8080/v1/chat?x=1".parse().unwrap();
        let pool = pool(8);
        let resp = pool
            .send(get(&origin), &egress, Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
        let head = heads.lock().unwrap()[0].to_ascii_lowercase();
        assert!(
            head.starts_with("get http://origin.invalid:8080/v1/chat?x=1 http/1.1\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\nhost: origin.invalid:8080"), "{head}");
        assert!(
            head.contains("\r\nproxy-authorization: basic dxnlcjpwyxnz"),
            "{head}"
        );
    }
}
