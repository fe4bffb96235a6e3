//! One HTTP/1.1 keep-alive connection and one timed exchange on it.

use std::{net::SocketAddr, sync::Arc, time::Duration, time::Instant};

use anyhow::Context as _;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Where requests go and what they carry; built once, shared by every connection.
#[derive(Debug)]
pub struct Target {
    addr: SocketAddr,
    path: Uri,
    headers: HeaderMap,
    body: Bytes,
    timeout: Duration,
}

/// A connection ready to send.
pub type Sender = SendRequest<Full<Bytes>>;

/// Why an exchange failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No TCP connection.
    Connect,
    /// A complete response with a non-2xx status; the connection stays usable.
    Status,
    /// The connection broke; it must be replaced.
    Io,
    /// No complete answer in time; the connection must be replaced.
    Timeout,
}

/// When the answer to one request arrived.
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    /// The first body byte (the response end, for an empty body).
    pub first_byte: Instant,
    /// The last body byte.
    pub end: Instant,
    /// Body bytes.
    pub bytes: u64,
}

// === impl Target ===

impl Target {
    /// Parses `url` (`http://host:port/path`), resolves it once, and fixes the request.
    pub async fn new(
        url: &str,
        body: Bytes,
        extra_headers: &[String],
        timeout: Duration,
    ) -> anyhow::Result<Arc<Self>> {
        let uri: Uri = url.parse().with_context(|| format!("parsing {url}"))?;
        anyhow::ensure!(
            uri.scheme_str() == Some("http"),
            "only http:// URLs are supported"
        );
        let authority = uri.authority().context("the URL has no host:port")?.clone();
        let port = authority.port_u16().unwrap_or(80);
        let addr = tokio::net::lookup_host((authority.host(), port))
            .await
            .with_context(|| format!("resolving {authority}"))?
            .next()
            .with_context(|| format!("{authority} resolves to nothing"))?;
        let path: Uri = uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .context("parsing the path")?;
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_str(authority.as_str())?);
        if !body.is_empty() {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        for h in extra_headers {
            let (name, value) = h
                .split_once(':')
                .with_context(|| format!("header {h:?} is not `name: value`"))?;
            headers.append(
                HeaderName::from_bytes(name.trim().as_bytes())?,
                HeaderValue::from_str(value.trim())?,
            );
        }
        Ok(Arc::new(Target {
            addr,
            path,
            headers,
            body,
            timeout,
        }))
    }

    /// Opens one connection, within the request timeout (a SYN dropped by a full listen
    /// backlog would otherwise wait for the kernel's retries, minutes).
    pub async fn connect(&self) -> Result<Sender, Failure> {
        let stream = tokio::time::timeout(self.timeout, TcpStream::connect(self.addr))
            .await
            .map_err(|_| Failure::Connect)?
            .map_err(|_| Failure::Connect)?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|_| Failure::Connect)?;
        tokio::spawn(async move {
            // Ends when the sender is dropped or the peer closes; either is expected.
            let _ = conn.await;
        });
        Ok(sender)
    }

    fn request(&self) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(self.body.clone()));
        *req.method_mut() = if self.body.is_empty() {
            Method::GET
        } else {
            Method::POST
        };
        *req.uri_mut() = self.path.clone();
        *req.headers_mut() = self.headers.clone();
        req
    }

    /// Sends one request and reads the whole response body, within the request timeout.
    pub async fn exchange(&self, sender: &mut Sender) -> Result<Answer, Failure> {
        match tokio::time::timeout(self.timeout, self.exchange_inner(sender)).await {
            Ok(r) => r,
            Err(_) => Err(Failure::Timeout),
        }
    }

    async fn exchange_inner(&self, sender: &mut Sender) -> Result<Answer, Failure> {
        sender.ready().await.map_err(|_| Failure::Io)?;
        let resp = sender
            .send_request(self.request())
            .await
            .map_err(|_| Failure::Io)?;
        let ok = resp.status().is_success();
        let mut body = resp.into_body();
        let mut first_byte = None;
        let mut bytes = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| Failure::Io)?;
            if let Some(data) = frame.data_ref() {
                if first_byte.is_none() && !data.is_empty() {
                    first_byte = Some(Instant::now());
                }
                bytes += data.len() as u64;
            }
        }
        let end = Instant::now();
        if !ok {
            return Err(Failure::Status);
        }
        Ok(Answer {
            first_byte: first_byte.unwrap_or(end),
            end,
            bytes,
        })
    }
}

// === impl Failure ===

impl Failure {
    /// Counts this failure into `errors`.
    pub fn count(self, errors: &mut crate::stats::Errors) {
        match self {
            Failure::Connect => errors.connect += 1,
            Failure::Status => errors.status += 1,
            Failure::Io => errors.io += 1,
            Failure::Timeout => errors.timeout += 1,
        }
    }

    /// Whether the connection can carry another request.
    pub fn keeps_connection(self) -> bool {
        self == Failure::Status
    }
}
