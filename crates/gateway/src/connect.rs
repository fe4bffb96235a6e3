//! Opening upstream connections: TCP to the origin or to a forward proxy, `CONNECT` through
//! the proxy for `https`, then TLS with the backend's trust and server name, h2 or HTTP/1.1
//! by ALPN.
//!
//! Only connection set-up lives here; the pool decides when a new connection is needed.

use std::{
    future::poll_fn,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use http::{uri::Scheme, HeaderValue, Uri};
use hyper_util::{
    client::{
        legacy::connect::{proxy::Tunnel, HttpConnector},
        proxy::matcher::Matcher,
    },
    rt::TokioIo,
};
use rustls::{pki_types::ServerName, ClientConfig, RootCertStore};
use switchyard_router::Egress;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::{client::TlsStream, TlsConnector};
use tower::Service as _;

use crate::error::UpstreamFailure;

/// Which CAs upstream certificates are verified against, for backends without a
/// `spec.tls.caSecretRef` of their own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TrustStore {
    /// The Mozilla roots compiled into the binary (webpki-roots): the same everywhere,
    /// whatever the image has installed.
    #[default]
    Webpki,
    /// The system's: `SSL_CERT_FILE` / `SSL_CERT_DIR` when set, else the distribution's
    /// bundle. Where an egress proxy inspects TLS with a private CA installed there.
    System,
}

impl std::str::FromStr for TrustStore {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "webpki" => Ok(TrustStore::Webpki),
            "system" => Ok(TrustStore::System),
            other => Err(format!("{other:?}: expected webpki or system")),
        }
    }
}

impl TrustStore {
    /// The roots of this store. The system store is read now (files, once): one that yields
    /// no certificate is an error, not an empty store that would refuse every upstream.
    pub fn roots(self) -> Result<RootCertStore, String> {
        let mut roots = RootCertStore::empty();
        match self {
            TrustStore::Webpki => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            TrustStore::System => {
                let found = rustls_native_certs::load_native_certs();
                for e in &found.errors {
                    tracing::warn!(error = %e, "a system CA certificate could not be read");
                }
                let (added, ignored) = roots.add_parsable_certificates(found.certs);
                if ignored > 0 {
                    tracing::warn!(
                        ignored,
                        "system CA certificates not usable as trust anchors"
                    );
                }
                if added == 0 {
                    return Err("the system trust store has no usable CA certificate \
                                (checked SSL_CERT_FILE, SSL_CERT_DIR and the system bundle)"
                        .into());
                }
            }
        }
        Ok(roots)
    }
}

/// A connection just made, and how requests must be written on it.
pub(crate) struct Connected {
    pub io: TokioIo<Stream>,
    /// ALPN chose h2.
    pub h2: bool,
    /// A plain-http request through a forward proxy: absolute-form target, with this
    /// `Proxy-Authorization` if any.
    pub via_proxy: Option<Option<HeaderValue>>,
}

/// Why no connection was made.
#[derive(Debug)]
pub(crate) struct ConnectError {
    pub kind: UpstreamFailure,
    pub detail: String,
}

/// Makes upstream connections.
pub(crate) struct Connector {
    tcp: HttpConnector,
    tls: Arc<ClientConfig>,
    env_proxy: Matcher,
    /// Offer h2 by ALPN; when false, only HTTP/1.1 is offered, to every backend.
    http2: bool,
}

impl Connector {
    /// A connector trusting `roots` (for backends without their own CA), offering h2 by ALPN
    /// when `http2`, and following the process's `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` /
    /// `NO_PROXY` (either case).
    pub fn new(roots: RootCertStore, http2: bool) -> Result<Self, rustls::Error> {
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_keepalive(Some(Duration::from_secs(60)));
        let env_proxy = Matcher::from_env();
        let mut tls = switchyard_router::egress::client_config(roots)?;
        if !http2 {
            tls = http1_only(&tls);
        }
        Ok(Connector {
            tcp,
            tls,
            env_proxy,
            http2,
        })
    }

    /// Connects to the origin of `uri` as `egress` says, within `timeout` (TCP, proxy and TLS
    /// together).
    pub async fn connect(
        &self,
        uri: &Uri,
        egress: &Egress,
        timeout: Duration,
    ) -> Result<Connected, ConnectError> {
        match tokio::time::timeout(timeout, self.connect_now(uri, egress)).await {
            Ok(r) => r,
            Err(_) => Err(ConnectError {
                kind: UpstreamFailure::Connect,
                detail: format!("no connection within {} ms", timeout.as_millis()),
            }),
        }
    }

    async fn connect_now(&self, uri: &Uri, egress: &Egress) -> Result<Connected, ConnectError> {
        let tls = uri.scheme() == Some(&Scheme::HTTPS);
        let proxy = match &egress.proxy {
            Some(p) => Some((p.uri.clone(), p.auth.clone())),
            None => self
                .env_proxy
                .intercept(uri)
                .map(|i| (i.uri().clone(), i.basic_auth().cloned())),
        };
        let connect_err = |detail: String| ConnectError {
            kind: UpstreamFailure::Connect,
            detail,
        };
        let tcp = match (&proxy, tls) {
            (Some((proxy_uri, auth)), true) => {
                let mut tunnel = Tunnel::new(proxy_uri.clone(), self.tcp.clone());
                if let Some(auth) = auth {
                    tunnel = tunnel.with_auth(auth.clone());
                }
                poll_fn(|cx| tunnel.poll_ready(cx))
                    .await
                    .map_err(|e| connect_err(format!("proxy {proxy_uri}: {}", error_chain(&e))))?;
                tunnel
                    .call(uri.clone())
                    .await
                    .map_err(|e| connect_err(format!("proxy {proxy_uri}: {}", error_chain(&e))))?
            }
            (Some((proxy_uri, _)), false) => self
                .tcp_to(proxy_uri.clone())
                .await
                .map_err(|e| connect_err(format!("proxy {proxy_uri}: {e}")))?,
            (None, _) => self.tcp_to(uri.clone()).await.map_err(connect_err)?,
        };
        let tcp = tcp.into_inner();
        if !tls {
            return Ok(Connected {
                io: TokioIo::new(Stream::Plain(tcp)),
                h2: false,
                via_proxy: proxy.map(|(_, auth)| auth),
            });
        }
        let name = match &egress.server_name {
            Some(name) => name.clone(),
            None => server_name(uri).map_err(|detail| ConnectError {
                kind: UpstreamFailure::Tls,
                detail,
            })?,
        };
        let config = match &egress.tls {
            // A backend's own CA: its configuration offers h2 too (built with the table).
            Some(own) if !self.http2 => http1_only(own),
            Some(own) => Arc::clone(own),
            None => Arc::clone(&self.tls),
        };
        let stream = TlsConnector::from(config)
            .connect(name.clone(), tcp)
            .await
            .map_err(|e| ConnectError {
                kind: UpstreamFailure::Tls,
                detail: tls_detail(&e, &name, egress.tls.is_some()),
            })?;
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        Ok(Connected {
            io: TokioIo::new(Stream::Tls(Box::new(stream))),
            h2,
            via_proxy: None,
        })
    }

    async fn tcp_to(&self, uri: Uri) -> Result<TokioIo<TcpStream>, String> {
        let mut tcp = self.tcp.clone();
        poll_fn(|cx| tcp.poll_ready(cx))
            .await
            .map_err(|e| error_chain(&e))?;
        tcp.call(uri).await.map_err(|e| error_chain(&e))
    }
}

/// `config` offering only HTTP/1.1 by ALPN.
fn http1_only(config: &Arc<ClientConfig>) -> Arc<ClientConfig> {
    let mut config = ClientConfig::clone(config);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// The name to verify the certificate of `uri`'s host against (an IP address is verified as
/// one: the certificate must list it).
fn server_name(uri: &Uri) -> Result<ServerName<'static>, String> {
    let host = uri.host().ok_or("the upstream URI has no host")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|_| format!("{host:?} is not a server name"))
}

/// What went wrong in a TLS handshake, in words an operator can act on.
fn tls_detail(e: &io::Error, name: &ServerName<'_>, own_ca: bool) -> String {
    let name = name.to_str();
    let trusted = if own_ca {
        "the backend's spec.tls.caSecretRef bundle"
    } else {
        "the gateway's trust store (--upstream-roots)"
    };
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(why)) => format!(
            "the upstream's certificate for {name:?} was refused ({why:?}); trusted: {trusted}"
        ),
        Some(other) => format!("TLS handshake with {name:?} failed: {other}"),
        None => format!("TLS handshake with {name:?} failed: {e}"),
    }
}

/// An error and its sources, joined by `: `.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

/// A TCP stream, or TLS over one.
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
