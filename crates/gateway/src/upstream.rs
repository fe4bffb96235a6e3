//! The pooled upstream HTTP client and one upstream attempt.

use std::time::Duration;

use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response};
use http_body_util::Full;
use switchyard_router::{FailureClass, Target, Timeouts, UpstreamKey};
use tokio::time::Instant;

use crate::{
    body::{Outgoing, Spliced},
    connect::{error_chain, Connector, TrustStore},
    error::UpstreamFailure,
    pool::{Pool, SendError, UpstreamBody},
};

/// Settings of the shared upstream client.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// TCP connect timeout when a backend sets none.
    pub connect_timeout: Duration,
    /// Request sent to response headers, when neither the backend (`timeouts.firstByte`) nor
    /// the route (`timeout`) sets a limit. A non-streamed answer's headers come only once the
    /// whole answer is generated, so this bounds a non-streamed generation: generous.
    pub first_byte_timeout: Duration,
    /// Longest silence between two chunks of a body (a stream's, or a slow error body's),
    /// and longest a client may leave a stream unread, when the backend sets no
    /// `timeouts.idle`.
    pub idle_timeout: Duration,
    /// The whole upstream call, body included, when neither the backend (`timeouts.total`)
    /// nor the route (`timeout`) sets a limit.
    pub total_timeout: Duration,
    /// How long an idle pooled connection is kept.
    pub pool_idle_timeout: Duration,
    /// Idle connections kept per upstream origin; more are closed as they come back.
    pub max_idle_per_origin: usize,
    /// The CAs upstream certificates are checked against, for backends without their own.
    pub roots: TrustStore,
    /// Offer h2 to TLS upstreams by ALPN (HTTP/1.1 otherwise). h2 multiplexes every request
    /// to an origin on one connection; HTTP/1.1 costs less CPU per request here (see the
    /// README's benchmark figures), at one connection per request in flight.
    pub http2: bool,
}

impl ClientConfig {
    /// The time limits of a request to a backend with `timeouts` on a route whose own
    /// timeout is `route_timeout` (see [`TimeLimits`]).
    pub fn limits(&self, timeouts: &Timeouts, route_timeout: Option<Duration>) -> TimeLimits {
        let t = timeouts;
        let default = |d: Duration| route_timeout.is_none().then_some(d);
        TimeLimits {
            connect: t.connect.unwrap_or(self.connect_timeout),
            first_byte: t.first_byte.or_else(|| default(self.first_byte_timeout)),
            idle: t.idle.unwrap_or(self.idle_timeout),
            total: t.total.or_else(|| default(self.total_timeout)),
        }
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout: Duration::from_secs(10),
            first_byte_timeout: Duration::from_secs(300),
            idle_timeout: Duration::from_secs(120),
            // The OpenAI and Anthropic SDKs' own default: the gateway gives up no sooner than
            // the caller would.
            total_timeout: Duration::from_secs(600),
            pool_idle_timeout: Duration::from_secs(90),
            max_idle_per_origin: 256,
            roots: TrustStore::Webpki,
            http2: true,
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

/// A backend's time limits for one request: its own `spec.timeouts`, else the client's
/// defaults, except that a route with its own `timeout` lifts the default first-byte and
/// total limits (its deadline bounds the call instead: a route that allows 30 minutes means
/// it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeLimits {
    /// TCP (and TLS) connect.
    pub connect: Duration,
    /// Request sent to response headers.
    pub first_byte: Option<Duration>,
    /// Between two chunks of a body; and how long a client may leave a stream unread.
    pub idle: Duration,
    /// The whole call, body included.
    pub total: Option<Duration>,
}

/// Why an attempt failed before a usable response arrived.
#[derive(Debug)]
pub struct AttemptError {
    /// Connect, timeout, protocol or invalid response.
    pub kind: UpstreamFailure,
    /// Details for the log and the error message.
    pub detail: String,
    /// Nothing was sent: the request could not be prepared (signed), which is no failure of
    /// the upstream's.
    local: bool,
}

impl AttemptError {
    /// An upstream failure.
    pub fn new(kind: UpstreamFailure, detail: impl Into<String>) -> Self {
        AttemptError {
            kind,
            detail: detail.into(),
            local: false,
        }
    }

    /// The retry class of this failure; `None` for one that another attempt would not help
    /// and that says nothing of the upstream's health.
    pub fn class(&self) -> Option<FailureClass> {
        (!self.local).then(|| failure_class(self.kind))
    }
}

/// The retry class of an upstream failure (what `spec.retry.on` calls it). Every one counts
/// against the backend's health.
pub fn failure_class(kind: UpstreamFailure) -> FailureClass {
    match kind {
        // A refused certificate will be refused again; but another backend (a fallback)
        // may well be reachable, as after any failure to connect.
        UpstreamFailure::Connect | UpstreamFailure::Tls => FailureClass::Connect,
        // A reset, an EOF or an answer that is not HTTP before any response byte reached the
        // caller: the backend could not be talked to, as good as unreachable (a crashing
        // server, a proxy or load balancer dropping the connection). The provider may have
        // seen the request; an LLM call is retried after a lost answer like after any other
        // failure.
        UpstreamFailure::Protocol => FailureClass::Connect,
        UpstreamFailure::Timeout => FailureClass::Timeout,
        // A 200 whose body is no answer is a server error that wore the wrong status.
        UpstreamFailure::InvalidResponse => FailureClass::ServerError,
    }
}

static USER_AGENT: HeaderValue =
    HeaderValue::from_static(concat!("switchyard/", env!("CARGO_PKG_VERSION")));

impl UpstreamClient {
    /// Builds the client, trusting `config.roots` (read now) with ring as rustls' crypto
    /// provider (chosen explicitly, so no process-wide default provider is needed). Call it
    /// within the runtime: the pool's sweeper is spawned on it.
    pub fn new(config: &ClientConfig) -> Result<Self, String> {
        let connector =
            Connector::new(config.roots.roots()?, config.http2).map_err(|e| e.to_string())?;
        Ok(UpstreamClient {
            pool: Pool::new(
                connector,
                config.pool_idle_timeout,
                config.max_idle_per_origin,
            ),
            config: config.clone(),
        })
    }

    /// The time limits of a request to a backend with `timeouts` on a route whose own
    /// timeout is `route_timeout` (see [`TimeLimits`]).
    pub fn limits(&self, timeouts: &Timeouts, route_timeout: Option<Duration>) -> TimeLimits {
        self.config.limits(timeouts, route_timeout)
    }

    /// Sends `call` and waits for the response headers, within the first-byte limit of
    /// `limits` and the request's deadline.
    pub async fn send(
        &self,
        call: &Call<'_>,
        limits: &TimeLimits,
        deadline: Option<Instant>,
    ) -> Result<Response<UpstreamBody>, AttemptError> {
        let backend = &call.target.backend;
        let limit = earliest(limits.first_byte.map(|d| Instant::now() + d), deadline);
        let connect_timeout = limits.connect;
        let build = || prepare(Request::new(Full::new(call.body.clone())), call);
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
                    return Err(AttemptError::new(
                        UpstreamFailure::Timeout,
                        "no response headers in time",
                    ))
                }
            },
            None => attempt.await?,
        };
        result.map_err(|e| match e {
            SendError::Connect { kind, detail } => AttemptError::new(kind, detail),
            SendError::Protocol(e) | SendError::Unprocessed(e) => {
                AttemptError::new(UpstreamFailure::Protocol, error_chain(&e))
            }
        })
    }
}

/// One attempt's request to a target.
pub struct Call<'a> {
    pub target: &'a Target,
    /// One of the backend's URIs (see [`switchyard_router::Backend::uri`]).
    pub uri: &'a http::Uri,
    pub body: Spliced,
    pub stream: bool,
    pub key: Option<&'a UpstreamKey>,
    pub request_id: &'a HeaderValue,
    /// Trace context and provider headers (`anthropic-version`).
    pub headers: &'a HeaderMap,
}

/// The request as it goes upstream: method, URI, `Host`, the gateway's headers, the key, the
/// backend's header changes, hop-by-hop headers removed, signed last.
fn prepare(mut req: Request<Outgoing>, call: &Call<'_>) -> Result<Request<Outgoing>, AttemptError> {
    let Call {
        target,
        uri,
        ref body,
        stream,
        key,
        request_id,
        headers: extra_headers,
    } = *call;
    let backend = &target.backend;
    *req.method_mut() = Method::POST;
    *req.uri_mut() = uri.clone();
    let h = req.headers_mut();
    // Sized for what follows, so the map is not grown (rehashing) on the way.
    h.reserve(6 + extra_headers.len() + backend.set_headers.len());
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
    h.insert(crate::headers::X_REQUEST_ID.clone(), request_id.clone());
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
    // Only the backend's own `headers.set` can bring a hop-by-hop header: the others are the
    // gateway's, so a backend without any skips the eight lookups.
    if !backend.set_headers.is_empty() {
        strip_hop_by_hop(h);
    }
    // Last, over the request exactly as it goes out.
    if let Some(signer) = &backend.signer {
        let (mut parts, b) = req.into_parts();
        signer
            .sign(
                &parts.method,
                &parts.uri,
                &mut parts.headers,
                &body.contiguous(),
            )
            .map_err(|e| AttemptError {
                kind: UpstreamFailure::Protocol,
                detail: format!("the request could not be signed: {e}"),
                local: true,
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
    fn every_limit_has_a_default_that_backend_and_route_override() {
        let c = ClientConfig::default();
        let secs = Duration::from_secs;
        let none = Timeouts::default();
        assert_eq!(
            c.limits(&none, None),
            TimeLimits {
                connect: secs(10),
                first_byte: Some(secs(300)),
                idle: secs(120),
                total: Some(secs(600)),
            }
        );
        let backend = Timeouts {
            connect: Some(secs(1)),
            first_byte: Some(secs(2)),
            idle: Some(secs(3)),
            total: Some(secs(4)),
        };
        assert_eq!(
            c.limits(&backend, Some(secs(3600))),
            TimeLimits {
                connect: secs(1),
                first_byte: Some(secs(2)),
                idle: secs(3),
                total: Some(secs(4)),
            }
        );
        // A route's own timeout replaces the default first-byte and total limits (a route
        // allowing an hour means it); connect and idle keep theirs.
        assert_eq!(
            c.limits(&none, Some(secs(3600))),
            TimeLimits {
                connect: secs(10),
                first_byte: None,
                idle: secs(120),
                total: None,
            }
        );
    }

    #[test]
    fn every_upstream_failure_is_retryable_but_a_local_one() {
        for (kind, class) in [
            (UpstreamFailure::Connect, FailureClass::Connect),
            (UpstreamFailure::Tls, FailureClass::Connect),
            (UpstreamFailure::Protocol, FailureClass::Connect),
            (UpstreamFailure::Timeout, FailureClass::Timeout),
            (UpstreamFailure::InvalidResponse, FailureClass::ServerError),
        ] {
            assert_eq!(
                AttemptError::new(kind, "x").class(),
                Some(class),
                "{kind:?}"
            );
        }
        let unsigned = AttemptError {
            kind: UpstreamFailure::Protocol,
            detail: String::new(),
            local: true,
        };
        assert_eq!(unsigned.class(), None);
    }

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
