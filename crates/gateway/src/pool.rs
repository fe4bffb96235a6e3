//! Upstream HTTP/1.1 connections, each driven by the task that reads its response.
//!
//! hyper's pooled client runs every connection in a task of its own and passes the response
//! body on through a channel one chunk per turn of that task, even when a whole burst of
//! events sits in its read buffer: a 20-event stream cost some 40 task switches and the relay
//! had to spin to gather a burst (measured: the connection task and the spinning were a third
//! of the gateway's CPU per stream). Here the task that reads the body also polls the
//! connection, so everything that has arrived is decoded in one go and nothing is spawned per
//! connection.
//!
//! Idle connections wait unpolled in a stack per origin (the most recently used first, its
//! buffers still warm). Each is checked before reuse; a request that still finds its reused
//! connection closed under it, before a byte of it was written, is sent again on a new one.

use std::{
    collections::HashMap,
    future::{poll_fn, Future},
    pin::Pin,
    sync::{Arc, Mutex, Weak},
    task::{Context, Poll, Waker},
    time::Duration,
};

use bytes::Bytes;
use http::{
    uri::{Authority, Scheme},
    Request, Response, Uri,
};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::Full;
use hyper::{body::Incoming, client::conn::http1};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::{client::legacy::connect::HttpConnector, rt::TokioIo};
use tokio::{net::TcpStream, time::Instant};
use tower::Service as _;

type Io = MaybeHttpsStream<TokioIo<TcpStream>>;

/// Where idle connections are kept: an endpoint's scheme and authority, compared exactly as
/// written (one host spelled two ways just gets two stacks). Hashed as two byte strings with
/// foldhash: `Authority`'s own case-folding hash, one byte at a time through SipHash, cost
/// some 700 instructions per lookup (callgrind), twice per request.
#[derive(Clone)]
struct Origin {
    scheme: Scheme,
    authority: Authority,
}

impl PartialEq for Origin {
    fn eq(&self, other: &Self) -> bool {
        self.scheme.as_str() == other.scheme.as_str()
            && self.authority.as_str() == other.authority.as_str()
    }
}

impl Eq for Origin {}

impl std::hash::Hash for Origin {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.scheme.as_str().hash(state);
        self.authority.as_str().hash(state);
    }
}

/// One HTTP/1.1 connection: the handle requests are sent through, and the connection itself,
/// which makes progress only when polled.
struct Conn {
    tx: http1::SendRequest<Full<Bytes>>,
    driver: http1::Connection<Io, Full<Bytes>>,
    /// The connection future finished: closed, or broken.
    ended: bool,
}

impl Conn {
    fn drive(&mut self, cx: &mut Context<'_>) {
        if !self.ended && Pin::new(&mut self.driver).poll(cx).is_ready() {
            self.ended = true;
        }
    }

    /// Whether an idle connection can take a request: lets it notice a close (the upstream's
    /// FIN is already in its socket) without waiting on anything.
    fn usable(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        self.drive(&mut cx);
        self.ready()
    }

    /// Open and free to take a request, as last seen (no poll).
    fn ready(&self) -> bool {
        !self.ended && self.tx.is_ready()
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
    /// No connection to the upstream could be made (TCP, TLS or the HTTP/1 handshake).
    Connect(String),
    /// The connection failed while the request was sent or the response read.
    Protocol(hyper::Error),
}

/// The upstream connections of the process, by origin.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    idle: Mutex<HashMap<Origin, Vec<Idle>, foldhash::fast::RandomState>>,
    connector: HttpsConnector<HttpConnector>,
    builder: http1::Builder,
    idle_timeout: Duration,
    max_idle_per_origin: usize,
}

impl Pool {
    /// A pool over `connector` (TCP, and rustls for `https` origins, HTTP/1.1 by ALPN).
    /// Connections idle longer than `idle_timeout` are closed; at most `max_idle_per_origin`
    /// are kept per origin (a burst of a thousand streams does not leave a thousand sockets
    /// and their buffers behind).
    pub fn new(
        connector: HttpsConnector<HttpConnector>,
        idle_timeout: Duration,
        max_idle_per_origin: usize,
    ) -> Self {
        let builder = http1::Builder::new();
        let inner = Arc::new(Inner {
            idle: Mutex::new(HashMap::default()),
            connector,
            builder,
            idle_timeout,
            max_idle_per_origin,
        });
        // Closes expired idle connections even when no request comes to find them.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(sweep(Arc::downgrade(&inner), idle_timeout));
        }
        Pool { inner }
    }

    /// Sends `req` (absolute URI) and returns the response once its headers have arrived; the
    /// body drives the connection as it is read and gives it back to the pool at its end.
    pub async fn send(
        &self,
        mut req: Request<Full<Bytes>>,
        connect_timeout: Duration,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let uri = req.uri();
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return Err(SendError::Connect(format!("{uri} is not an absolute URI")));
        };
        let origin = Origin {
            scheme: scheme.clone(),
            authority: authority.clone(),
        };
        loop {
            let (mut conn, reused) = match self.inner.checkout(&origin) {
                Some(conn) => (conn, true),
                None => (self.connect(req.uri(), connect_timeout).await?, false),
            };
            let sent = conn.tx.try_send_request(req);
            let mut sent = std::pin::pin!(sent);
            let result = poll_fn(|cx| {
                conn.drive(cx);
                sent.as_mut().poll(cx)
            })
            .await;
            match result {
                Ok(resp) => {
                    let pool = Arc::downgrade(&self.inner);
                    return Ok(resp.map(|body| UpstreamBody {
                        body,
                        conn: Some(Lease { conn, origin, pool }),
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

    async fn connect(&self, uri: &Uri, timeout: Duration) -> Result<Box<Conn>, SendError> {
        let mut connector = self.inner.connector.clone();
        let connecting = async {
            poll_fn(|cx| connector.poll_ready(cx)).await?;
            connector.call(uri.clone()).await
        };
        let io = match tokio::time::timeout(timeout, connecting).await {
            Ok(Ok(io)) => io,
            Ok(Err(e)) => return Err(SendError::Connect(crate::upstream::error_chain(&*e))),
            Err(_) => {
                return Err(SendError::Connect(format!(
                    "no connection within {} ms",
                    timeout.as_millis()
                )))
            }
        };
        let (tx, driver) = self
            .inner
            .builder
            .handshake(io)
            .await
            .map_err(|e| SendError::Connect(crate::upstream::error_chain(&e)))?;
        // Boxed: the connection (hyper's whole dispatcher state, some hundreds of bytes) is
        // handed between pool, request and body; moved inline it was copied a dozen times per
        // request (callgrind: memcpy was 9% of a non-streaming request's instructions).
        Ok(Box::new(Conn {
            tx,
            driver,
            ended: false,
        }))
    }

    /// Idle connections kept for `origin` (for tests).
    pub fn idle_count(&self, scheme: &Scheme, authority: &Authority) -> usize {
        let idle = self.inner.idle.lock().unwrap_or_else(|p| p.into_inner());
        let origin = Origin {
            scheme: scheme.clone(),
            authority: authority.clone(),
        };
        idle.get(&origin).map_or(0, Vec::len)
    }
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

    fn put(&self, origin: Origin, conn: Box<Conn>) {
        // Only a known end is checked here: `checkout` polls the connection before any reuse
        // anyway, so polling it here too (some 750 instructions) would be paid twice.
        if conn.ended {
            return;
        }
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
        // Sockets are closed outside the lock.
        drop(expired);
    }
}

/// A connection on loan to one response.
struct Lease {
    conn: Box<Conn>,
    origin: Origin,
    pool: Weak<Inner>,
}

/// An upstream response body. Reading it drives its connection; at its end the connection
/// goes back to the pool. Dropped before its end, it closes the connection (what is left of
/// the response would otherwise be read as the next one's).
pub struct UpstreamBody {
    body: Incoming,
    conn: Option<Lease>,
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
        // Twice: a chunk the connection decodes after the body was found empty (it waits for
        // the body's "want" signal) is taken in the same poll, not after a wake-up.
        for _ in 0..2 {
            if let Some(lease) = this.conn.as_mut() {
                lease.conn.drive(cx);
            }
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(None) => {
                    this.release();
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(e))) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(frame))) => return Poll::Ready(Some(Ok(frame))),
                Poll::Pending => {}
            }
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
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

    use http_body_util::BodyExt;
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::*;

    /// A bare HTTP/1.1 upstream that counts its connections and answers every request on
    /// them with `ok`, closing each connection after its first response when `close_after`.
    async fn upstream(close_after: bool) -> (Uri, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
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
                            buf.drain(..end + 4);
                            let resp = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            if sock.write_all(resp).await.is_err() {
                                return;
                            }
                            if close_after {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (format!("http://{addr}/v1/x").parse().unwrap(), accepted)
    }

    fn pool(max_idle: usize) -> Pool {
        let connector = crate::upstream::connector().unwrap();
        Pool::new(connector, Duration::from_secs(30), max_idle)
    }

    fn get(uri: &Uri) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(Bytes::new()));
        *req.uri_mut() = uri.clone();
        req
    }

    async fn ok(pool: &Pool, uri: &Uri) -> Bytes {
        let resp = pool.send(get(uri), Duration::from_secs(2)).await.unwrap();
        resp.into_body().collect().await.unwrap().to_bytes()
    }

    fn idle(pool: &Pool, uri: &Uri) -> usize {
        pool.idle_count(uri.scheme().unwrap(), uri.authority().unwrap())
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
        let resp = pool.send(get(&uri), Duration::from_secs(2)).await.unwrap();
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
            // Let the upstream's FIN arrive.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn idle_connections_are_capped_per_origin() {
        let (uri, accepted) = upstream(false).await;
        let pool = pool(2);
        let resps = futures_util::future::join_all(
            (0..4).map(|_| pool.send(get(&uri), Duration::from_secs(2))),
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
            .send(get(&uri), Duration::from_secs(2))
            .await
            .err()
            .unwrap();
        assert!(matches!(err, SendError::Connect(_)), "{err:?}");
    }
}
