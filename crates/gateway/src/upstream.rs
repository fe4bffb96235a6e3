//! The pooled upstream HTTP client and one upstream attempt.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use switchyard_router::{FailureClass, Target, UpstreamKey};
use tokio::time::Instant;

use crate::{
    error::UpstreamFailure,
    pool::{Pool, SendError, UpstreamBody},
};

/// Settings of the shared upstream client.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// TCP connect timeout when a backend sets none.
    pub connect_timeout: Duration,
    /// How long an idle pooled connection is kept.
    pub pool_idle_timeout: Duration,
    /// Idle connections kept per upstream origin; more are closed as they come back.
    pub max_idle_per_origin: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout: Duration::from_secs(10),
            pool_idle_timeout: Duration::from_secs(90),
            max_idle_per_origin: 256,
        }
    }
}

/// The upstream client: HTTP/1.1 connections pooled per origin and kept alive (see
/// [`crate::pool`]), TLS by rustls for `https` endpoints. Clones share the pool, which
/// outlives routing-table reloads.
#[derive(Clone)]
pub struct UpstreamClient {
    pool: Pool,
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
    /// (chosen explicitly, so no process-wide default provider is needed). Call it within
    /// the runtime: the pool's sweeper is spawned on it.
    pub fn new(config: &ClientConfig) -> Result<Self, rustls::Error> {
        Ok(UpstreamClient {
            pool: Pool::new(
                connector()?,
                config.pool_idle_timeout,
                config.max_idle_per_origin,
            ),
            config: config.clone(),
        })
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
    ) -> Result<Response<UpstreamBody>, AttemptError> {
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
        h.insert(crate::service::X_REQUEST_ID.clone(), request_id.clone());
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
        let connect_timeout = backend
            .timeouts
            .connect
            .unwrap_or(self.config.connect_timeout);
        let fut = self.pool.send(req, connect_timeout);
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
        result.map_err(|e| match e {
            SendError::Connect(detail) => AttemptError {
                kind: UpstreamFailure::Connect,
                detail,
            },
            SendError::Protocol(e) => AttemptError {
                kind: UpstreamFailure::Protocol,
                detail: error_chain(&e),
            },
        })
    }
}

/// TCP (no delay, keep-alive probes) with rustls for `https` origins, offering HTTP/1.1 by
/// ALPN: the connector of the upstream pool.
pub(crate) fn connector() -> Result<HttpsConnector<HttpConnector>, rustls::Error> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_keepalive(Some(Duration::from_secs(60)));
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(Arc::new(rustls::crypto::ring::default_provider()))?
        .https_or_http()
        .enable_http1()
        .wrap_connector(http))
}

/// The earlier of two optional instants.
pub fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

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
