//! The listener: accepts TCP connections and serves HTTP/1.1 and h2c on each (or, with TLS,
//! HTTP/1.1 and h2 by ALPN), with graceful drain on shutdown.

use std::{convert::Infallible, future::Future, net::SocketAddr, time::Duration};

use hyper::{
    body::Incoming,
    server::conn::{http1, http2},
    service::service_fn,
    Request,
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::graceful::{GracefulShutdown, Watcher},
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
};

use crate::{admin::Admin, service::Gateway, tls::TlsReloader};

/// Serves the gateway on `listener` until `shutdown` resolves, then lets open requests
/// (streams included) finish for up to `drain`.
pub async fn serve_gateway(
    listener: TcpListener,
    gateway: Gateway,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
    tls: Option<TlsReloader>,
) {
    serve(
        listener,
        shutdown,
        drain,
        tls,
        move |req: Request<Incoming>| {
            let gw = gateway.clone();
            async move { Ok::<_, Infallible>(gw.handle(req).await) }
        },
    )
    .await
}

/// Serves the admin endpoints on `listener` until `shutdown` resolves.
pub async fn serve_admin(listener: TcpListener, admin: Admin, shutdown: impl Future<Output = ()>) {
    serve(
        listener,
        shutdown,
        Duration::from_secs(1),
        None,
        move |req: Request<Incoming>| {
            let admin = admin.clone();
            async move { Ok::<_, Infallible>(admin.handle(&req).await) }
        },
    )
    .await
}

/// Longest a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

async fn serve<F, Fut>(
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
    tls: Option<TlsReloader>,
    handler: F,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<hyper::Response<crate::body::Body>, Infallible>> + Send + 'static,
{
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .keep_alive(true);
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new());
    let builders = (h1, h2);
    let graceful = GracefulShutdown::new();
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
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let watcher = graceful.watcher();
        let builders = builders.clone();
        let acceptor = tls.as_ref().map(TlsReloader::acceptor);
        tokio::spawn(async move {
            let result = match acceptor {
                None => {
                    // Bounded like a TLS handshake: a client that sends nothing is not kept.
                    let h2 =
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, h2_preface(&stream)).await {
                            Ok(Ok(h2)) => h2,
                            Ok(Err(_)) | Err(_) => return,
                        };
                    serve_io(stream, h2, &builders, watcher, handler).await
                }
                Some(acceptor) => {
                    // The handshake runs in the connection's task, bounded, so a slow or
                    // silent client never holds up the accept loop.
                    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                    serve_io(tls, h2, &builders, watcher, handler).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(drain) => tracing::warn!("drain timeout reached with connections still open"),
    }
}

/// Serves one connection as HTTP/2 or HTTP/1.1, watched for graceful shutdown.
async fn serve_io<I, F, Fut>(
    io: I,
    h2: bool,
    (h1_builder, h2_builder): &(http1::Builder, http2::Builder<TokioExecutor>),
    watcher: Watcher,
    handler: F,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<hyper::Response<crate::body::Body>, Infallible>> + Send + 'static,
{
    let io = TokioIo::new(io);
    if h2 {
        let conn = h2_builder.serve_connection(io, service_fn(handler));
        watcher.watch(conn).await.map_err(Into::into)
    } else {
        let conn = h1_builder.serve_connection(io, service_fn(handler));
        watcher.watch(conn).await.map_err(Into::into)
    }
}

/// The client connection preface of HTTP/2 with prior knowledge (h2c).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether a plaintext client speaks h2c, told by peeking at its first bytes (left in the
/// socket). hyper-util's auto-detection read those 24 bytes apart instead, and the HTTP/1
/// read buffer that then took the rest of the request doubled to 16 KiB on every connection
/// (massif, `make bench` workload 4).
async fn h2_preface(stream: &TcpStream) -> std::io::Result<bool> {
    let mut buf = [0u8; 24];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 || buf[..n] != H2_PREFACE[..n] {
            return Ok(false);
        }
        if n == H2_PREFACE.len() {
            return Ok(true);
        }
        // Part of the preface so far (clients send it in one write, so this is rare); peek
        // would return the same bytes at once, so wait a little for the rest.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
