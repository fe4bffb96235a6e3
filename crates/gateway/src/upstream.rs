//! The pooled upstream HTTP client and one upstream attempt.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response};
use http_body_util::Full;
use switchyard_router::{FailureClass, Target, UpstreamKey};
use tokio::time::Instant;

use crate::{
    connect::{error_chain, Connector, TrustStore},
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
    /// The CAs upstream certificates are checked against, for backends without their own.
    pub roots: TrustStore,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout: Duration::from_secs(10),
            pool_idle_timeout: Duration::from_secs(90),
            max_idle_per_origin: 256,
            roots: TrustStore::Webpki,
        }
    }
}

/// The upstream client: connections pooled per origin and kept alive, HTTP/1.1 or h2 by ALPN
/// (see [`crate::pool`]), TLS by rustls for `https` endpoints, through a forward proxy where
/// the backend or the environment names one (see [`crate::connect`]). Clones share the pool,
/// which outlives routing-table reloads.
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
            // A refused certificate will be refused again; but another backend (a fallback)
            // may well be reachable, as after any failure to connect.
            UpstreamFailure::Connect | UpstreamFailure::Tls => Some(FailureClass::Connect),
            UpstreamFailure::Timeout => Some(FailureClass::Timeout),
            UpstreamFailure::Protocol => None,
        }
    }
}

static USER_AGENT: HeaderValue =
    HeaderValue::from_static(concat!("switchyard/", env!("CARGO_PKG_VERSION")));

impl UpstreamClient {
    /// Builds the client, trusting `config.roots` (read now) with ring as rustls' crypto
    /// provider (chosen explicitly, so no process-wide default provider is needed). Call it
    /// within the runtime: the pool's sweeper is spawned on it.
    pub fn new(config: &ClientConfig) -> Result<Self, String> {
        let connector = Connector::new(config.roots.roots()?).map_err(|e| e.to_string())?;
        Ok(UpstreamClient {
            pool: Pool::new(
                connector,
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
        let limit = earliest(
            backend.timeouts.first_byte.map(|d| Instant::now() + d),
            deadline,
        );
        let connect_timeout = backend
            .timeouts
            .connect
            .unwrap_or(self.config.connect_timeout);
        let build = || {
            let request = Request::new(Full::new(body.clone()));
            prepare(
                request,
                target,
                uri,
                &body,
                stream,
                key,
                request_id,
                extra_headers,
            )
        };
        let attempt = async {
            match self
                .pool
                .send(build()?, &backend.egress, connect_timeout)
                .await
            {
                // An h2 server that did not process the request (it refused the stream, or
                // went away first): once more, on a new stream or connection.
                Err(SendError::Unprocessed(_)) => Ok(self
                    .pool
                    .send(build()?, &backend.egress, connect_timeout)
                    .await),
                other => Ok(other),
            }
        };
        let result = match limit {
            Some(at) => match tokio::time::timeout_at(at, attempt).await {
                Ok(r) => r?,
                Err(_) => {
                    return Err(AttemptError {
                        kind: UpstreamFailure::Timeout,
                        detail: "no response headers in time".into(),
                    })
                }
            },
            None => attempt.await?,
        };
        result.map_err(|e| match e {
            SendError::Connect { kind, detail } => AttemptError { kind, detail },
            SendError::Protocol(e) | SendError::Unprocessed(e) => AttemptError {
                kind: UpstreamFailure::Protocol,
                detail: error_chain(&e),
            },
        })
    }
}

/// The request as it goes upstream: method, URI, `Host`, the gateway's headers, the key, the
/// backend's header changes, hop-by-hop headers removed, signed last.
#[allow(clippy::too_many_arguments)]
fn prepare(
    mut req: Request<Full<Bytes>>,
    target: &Target,
    uri: &http::Uri,
    body: &Bytes,
    stream: bool,
    key: Option<&UpstreamKey>,
    request_id: &HeaderValue,
    extra_headers: &HeaderMap,
) -> Result<Request<Full<Bytes>>, AttemptError> {
    let backend = &target.backend;
    *req.method_mut() = Method::POST;
    *req.uri_mut() = uri.clone();
    let h = req.headers_mut();
    h.insert(header::HOST, backend.host.clone());
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
    strip_hop_by_hop(h);
    // Last, over the request exactly as it goes out.
    if let Some(signer) = &backend.signer {
        let (mut parts, b) = req.into_parts();
        signer
            .sign(&parts.method, &parts.uri, &mut parts.headers, body)
            .map_err(|e| AttemptError {
                kind: UpstreamFailure::Protocol,
                detail: format!("the request could not be signed: {e}"),
            })?;
        req = Request::from_parts(parts, b);
    }
    Ok(req)
}

/// Headers that concern one connection (RFC 9110 §7.6.1), never forwarded: `Connection`,
/// every header it names, and the fixed list. Framing (`Content-Length`) is hyper's to write
/// from the body.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    static FIXED: [HeaderName; 8] = [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ];
    // The common case (none present) costs eight lookups and no allocation.
    if let Some(named) = headers.get(header::CONNECTION).cloned() {
        if let Ok(named) = named.to_str() {
            for name in named.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                headers.remove(name);
            }
        }
    }
    for name in &FIXED {
        headers.remove(name);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut h = HeaderMap::new();
        for (n, v) in [
            ("connection", "keep-alive, X-Secret-Hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("te", "gzip"),
            ("trailer", "x-t"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("x-kept", "yes"),
            ("anthropic-beta", "b1"),
        ] {
            h.insert(HeaderName::from_static(n), HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["anthropic-beta", "x-kept"]);
    }
}
