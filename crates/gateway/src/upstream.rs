//! The pooled upstream HTTP client and one upstream attempt.

use std::{collections::HashMap, sync::Arc, time::Duration};

use arc_swap::ArcSwap;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::{TokioExecutor, TokioTimer},
};
use switchyard_router::{FailureClass, Target, UpstreamKey};
use tokio::time::Instant;

use crate::error::UpstreamFailure;

/// Settings of the shared upstream client.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// TCP connect timeout when a backend sets none.
    pub connect_timeout: Duration,
    /// How long an idle pooled connection is kept.
    pub pool_idle_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout: Duration::from_secs(10),
            pool_idle_timeout: Duration::from_secs(90),
        }
    }
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The upstream clients: connections are pooled per host, kept alive, and HTTP/2 is used when
/// a TLS upstream offers it through ALPN. One client per distinct connect timeout (the
/// connector owns that setting), created on first use and kept for the process's life, so
/// pools survive routing-table reloads.
#[derive(Clone)]
pub struct UpstreamClient {
    default: HttpClient,
    by_connect_timeout: Arc<ArcSwap<HashMap<Duration, HttpClient>>>,
    config: ClientConfig,
}

/// Why an attempt failed before a usable response arrived.
#[derive(Debug)]
pub struct AttemptError {
    /// Connect, timeout or protocol.
    pub kind: UpstreamFailure,
    /// Details for the log and the error message.
    pub detail: String,
}

impl AttemptError {
    /// The retry class of this failure.
    pub fn class(&self) -> Option<FailureClass> {
        match self.kind {
            UpstreamFailure::Connect => Some(FailureClass::Connect),
            UpstreamFailure::Timeout => Some(FailureClass::Timeout),
            UpstreamFailure::Protocol => None,
        }
    }
}

static USER_AGENT: HeaderValue =
    HeaderValue::from_static(concat!("switchyard/", env!("CARGO_PKG_VERSION")));

impl UpstreamClient {
    /// Builds the client: rustls with the webpki roots and ring as the crypto provider
    /// (chosen explicitly, so no process-wide default provider is needed).
    pub fn new(config: &ClientConfig) -> Result<Self, rustls::Error> {
        Ok(UpstreamClient {
            default: build_client(config, config.connect_timeout)?,
            by_connect_timeout: Arc::new(ArcSwap::from_pointee(HashMap::new())),
            config: config.clone(),
        })
    }

    fn client_for(&self, connect_timeout: Option<Duration>) -> HttpClient {
        let Some(t) = connect_timeout.filter(|t| *t != self.config.connect_timeout) else {
            return self.default.clone();
        };
        if let Some(c) = self.by_connect_timeout.load().get(&t) {
            return c.clone();
        }
        let Ok(client) = build_client(&self.config, t) else {
            return self.default.clone();
        };
        // Copy-on-write insert: rare (once per distinct timeout), and readers never lock.
        self.by_connect_timeout.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.entry(t).or_insert_with(|| client.clone());
            map
        });
        client
    }

    #[allow(clippy::too_many_arguments)]
    /// Sends one attempt to `target` at `uri` (one of the backend's, see
    /// [`switchyard_router::Backend::uri`]) and waits for the response headers, within the
    /// backend's first-byte timeout and the request's deadline. `extra_headers` carries trace
    /// context and provider headers (`anthropic-version`).
    pub async fn send(
        &self,
        target: &Target,
        uri: &http::Uri,
        body: Bytes,
        stream: bool,
        key: Option<&UpstreamKey>,
        request_id: &HeaderValue,
        extra_headers: &http::HeaderMap,
        deadline: Option<Instant>,
    ) -> Result<Response<Incoming>, AttemptError> {
        let backend = &target.backend;
        // `Bytes` clones share the buffer: the signer reads the same bytes that are sent.
        let signed_body = body.clone();
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = uri.clone();
        let h = req.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static(match (stream, backend.format.event_stream_framed()) {
                (true, false) => "text/event-stream",
                (true, true) => "application/vnd.amazon.eventstream",
                (false, _) => "application/json",
            }),
        );
        h.insert(header::USER_AGENT, USER_AGENT.clone());
        h.insert("x-request-id", request_id.clone());
        if let Some(key) = key {
            h.insert(key.name.clone(), key.header.clone());
        }
        for (name, value) in extra_headers {
            h.insert(name.clone(), value.clone());
        }
        for (name, value) in &backend.set_headers {
            h.insert(name.clone(), value.clone());
        }
        for name in &backend.remove_headers {
            h.remove(name);
        }
        // Last, over the request exactly as it goes out.
        if let Some(signer) = &backend.signer {
            let (mut parts, body) = req.into_parts();
            signer
                .sign(&parts.method, &parts.uri, &mut parts.headers, &signed_body)
                .map_err(|e| AttemptError {
                    kind: UpstreamFailure::Protocol,
                    detail: format!("the request could not be signed: {e}"),
                })?;
            req = Request::from_parts(parts, body);
        }

        let limit = earliest(
            backend.timeouts.first_byte.map(|d| Instant::now() + d),
            deadline,
        );
        let fut = self.client_for(backend.timeouts.connect).request(req);
        let result = match limit {
            Some(at) => match tokio::time::timeout_at(at, fut).await {
                Ok(r) => r,
                Err(_) => {
                    return Err(AttemptError {
                        kind: UpstreamFailure::Timeout,
                        detail: "no response headers in time".into(),
                    })
                }
            },
            None => fut.await,
        };
        result.map_err(|e| {
            let kind = if e.is_connect() {
                UpstreamFailure::Connect
            } else {
                UpstreamFailure::Protocol
            };
            AttemptError {
                kind,
                detail: error_chain(&e),
            }
        })
    }
}

/// The earlier of two optional instants.
pub fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

fn build_client(
    config: &ClientConfig,
    connect_timeout: Duration,
) -> Result<HttpClient, rustls::Error> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(Arc::new(rustls::crypto::ring::default_provider()))?
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    let client = Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(config.pool_idle_timeout)
        .build(https);
    Ok(client)
}
