//! Every way a request can fail, classified in one place: status code, who is at fault, and
//! the machine-readable code, rendered in the caller's format.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use switchyard_providers::{
    anthropic,
    chat::TranslateError,
    error::{ErrorOrigin, UpstreamClass},
    openai::DecodeError,
    transcode::Format,
    ErrorSource, OpenAiError,
};

use crate::body::{self, Body};

/// A request that could not be served.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No such endpoint.
    #[error("unknown endpoint {0}")]
    NotFound(String),
    /// The endpoint exists but not with this method.
    #[error("method {0} is not allowed on this endpoint")]
    MethodNotAllowed(String),
    /// The body is larger than the configured limit.
    #[error("request body exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The body could not be read from the client.
    #[error("could not read the request body: {0}")]
    BodyRead(String),
    /// The body did not arrive in time (`--body-read-timeout`, `--request-read-timeout`).
    #[error(transparent)]
    BodyTimeout(#[from] crate::body::BodyTimedOut),
    /// The body is not a valid request.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The request cannot be translated to the backend's format (or is malformed in a way
    /// only translation notices).
    #[error(transparent)]
    Translate(TranslateError),
    /// The route's backend speaks a format that cannot serve this endpoint.
    #[error("backend {backend} (provider {provider}) cannot serve {operation} requests")]
    UnsupportedByBackend {
        /// The backend's `namespace/name`.
        backend: String,
        /// Its provider.
        provider: &'static str,
        /// The operation asked for.
        operation: &'static str,
    },
    /// No key presented where one is required.
    #[error("missing API key: send it as 'Authorization: Bearer <key>' (or 'x-api-key: <key>')")]
    MissingKey,
    /// The presented key is unknown.
    #[error("incorrect API key provided")]
    InvalidKey,
    /// A ServiceAccount token the API server did not accept.
    #[error("the ServiceAccount token was not accepted: {0}")]
    TokenRejected(String),
    /// A valid ServiceAccount token whose account no AIConsumer lists.
    #[error("{0} is not a caller of this gateway: no AIConsumer lists it in spec.serviceAccounts")]
    ServiceAccountNotAllowed(String),
    /// The API server could not be asked about a ServiceAccount token: unreachable, too slow,
    /// or too many new tokens under review at once.
    #[error("the ServiceAccount token could not be checked right now: {0}; retry shortly")]
    TokenReviewUnavailable(&'static str),
    /// The caller may not use this model.
    #[error("you are not allowed to use model '{model}'")]
    ModelNotAllowed {
        /// The model asked for.
        model: String,
    },
    /// No route matches the model.
    #[error("the model '{model}' does not exist or you do not have access to it")]
    ModelNotFound {
        /// The model asked for.
        model: String,
    },
    /// No routing table has been loaded yet.
    #[error("the gateway has not loaded its routing table yet")]
    NotReady,
    /// The upstream could not be reached, did not answer in time, or answered with something
    /// that is not a response, on every attempt.
    #[error("upstream {backend} {kind}: {detail}")]
    Upstream {
        /// `connect`, `tls`, `timeout`, `protocol` or `invalid_response`.
        kind: UpstreamFailure,
        /// The backend's `namespace/name`.
        backend: String,
        /// What happened.
        detail: String,
    },
    /// The upstream answered with an error status on the last attempt.
    #[error("upstream {backend} answered {status}{}{message}", status_joiner(*.origin))]
    UpstreamStatus {
        /// The upstream's status.
        status: StatusCode,
        /// The backend's `namespace/name`.
        backend: String,
        /// The provider's error message; for a body no provider wrote, a short summary of
        /// it (see [`switchyard_providers::error::read_upstream_error`]).
        message: String,
        /// The upstream's error code, if it gave one.
        code: Option<String>,
        /// What kind of failure it is, decided once when the answer was read.
        class: UpstreamClass,
        /// Who wrote the body: the provider, or an edge, proxy or WAF in between.
        origin: ErrorOrigin,
        /// The upstream's `Retry-After`, passed on for 429 and 503.
        retry_after: Option<HeaderValue>,
    },
    /// The whole request ran past the route's timeout.
    #[error("the request did not complete within the route's timeout")]
    RouteTimeout,
    /// The consumer is over its requests- or tokens-per-minute limit.
    #[error("rate limit reached for {what} per minute: limit {limit}, retry in {reset_secs}s")]
    RateLimited {
        /// `requests` or `tokens`.
        what: &'static str,
        /// The limit.
        limit: u64,
        /// What is left in the window.
        remaining: u64,
        /// Seconds until the window resets.
        reset_secs: u64,
    },
    /// The request's maximum cost does not fit what is left of the consumer's budget.
    #[error(
        "this request may cost up to {reserve_usd} USD, more than the {remaining_usd} USD left of {budget} of {cap_usd} USD for this period; it resets in {reset_secs}s"
    )]
    BudgetExceeded {
        /// Which budget: `your budget` or `the shared budget ns/name`.
        budget: String,
        /// The cap.
        cap_usd: f64,
        /// What is left (cap − spend − reservations in flight).
        remaining_usd: f64,
        /// The request's reservation.
        reserve_usd: f64,
        /// Seconds until the period ends.
        reset_secs: u64,
    },
    /// The shared limit counters are unreachable and the failure mode is closed.
    #[error("limits cannot be checked right now (counter store unreachable); retry shortly")]
    LimitsUnavailable,
    /// Every backend of the route is at its `maxConcurrency`.
    #[error("every backend for this model is at its concurrency limit; retry shortly")]
    Saturated,
    /// The listener is at `--max-in-flight` requests: shed before any work is done.
    #[error("the gateway is at its limit of requests in flight; retry shortly")]
    Overloaded,
    /// Every upstream key of the backend is resting after rate limits, or disabled.
    #[error("every upstream key of backend {backend} is rate limited or disabled")]
    KeysExhausted {
        /// The backend's `namespace/name`.
        backend: String,
        /// When the first key is usable again, if any will be.
        retry_after: Option<std::time::Duration>,
    },
}

/// A failure to get an answer from an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// No connection could be made.
    Connect,
    /// The TLS handshake failed: most often the upstream's certificate was refused.
    Tls,
    /// No response (or body) in time.
    Timeout,
    /// The connection broke (reset, closed) or what came back was not HTTP.
    Protocol,
    /// A response in good HTTP whose body is not what the format promises (a 200 whose
    /// body is not JSON, or is cut short).
    InvalidResponse,
}

impl UpstreamFailure {
    /// The `kind` label of `switchyard_upstream_errors_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamFailure::Connect => "connect",
            UpstreamFailure::Tls => "tls",
            UpstreamFailure::Timeout => "timeout",
            UpstreamFailure::Protocol => "protocol",
            UpstreamFailure::InvalidResponse => "invalid_response",
        }
    }
}

impl std::fmt::Display for UpstreamFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UpstreamFailure::Connect => "unreachable",
            UpstreamFailure::Tls => "TLS handshake failed",
            UpstreamFailure::Timeout => "timed out",
            UpstreamFailure::Protocol => "failed",
            UpstreamFailure::InvalidResponse => "sent an invalid response",
        })
    }
}

impl GatewayError {
    /// The status code sent to the caller.
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::NotFound(_) => StatusCode::NOT_FOUND,
            GatewayError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::BodyRead(_) | GatewayError::Decode(_) => StatusCode::BAD_REQUEST,
            GatewayError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            GatewayError::MissingKey
            | GatewayError::InvalidKey
            | GatewayError::TokenRejected(_) => StatusCode::UNAUTHORIZED,
            GatewayError::ServiceAccountNotAllowed(_) => StatusCode::FORBIDDEN,
            GatewayError::ModelNotAllowed { .. } => StatusCode::FORBIDDEN,
            GatewayError::ModelNotFound { .. } => StatusCode::NOT_FOUND,
            GatewayError::Translate(_) | GatewayError::UnsupportedByBackend { .. } => {
                StatusCode::BAD_REQUEST
            }
            GatewayError::NotReady | GatewayError::TokenReviewUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            GatewayError::Upstream { kind, .. } => match kind {
                UpstreamFailure::Timeout => StatusCode::GATEWAY_TIMEOUT,
                UpstreamFailure::Connect
                | UpstreamFailure::Tls
                | UpstreamFailure::Protocol
                | UpstreamFailure::InvalidResponse => StatusCode::BAD_GATEWAY,
            },
            // The upstream refused the gateway's own credentials: not the caller's problem,
            // and a 401 would make SDKs blame the caller's key.
            GatewayError::UpstreamStatus { .. } if self.key_rejected() => StatusCode::BAD_GATEWAY,
            // Something between the gateway and the provider refused a request the provider
            // never saw: a 4xx would blame the caller for the gateway's or the upstream's
            // failure. (A 429 stays a 429, whoever limits.)
            GatewayError::UpstreamStatus {
                status,
                origin: ErrorOrigin::Intermediary,
                ..
            } if status.is_client_error() && *status != StatusCode::TOO_MANY_REQUESTS => {
                StatusCode::BAD_GATEWAY
            }
            // A provider's 401 that is not about the key's validity (a restricted key missing
            // a scope): the key may not do this. A 403 says so; a 401 would make SDKs blame
            // the caller's own key.
            GatewayError::UpstreamStatus { status, .. } if *status == StatusCode::UNAUTHORIZED => {
                StatusCode::FORBIDDEN
            }
            GatewayError::UpstreamStatus { status, .. } => match status.as_u16() {
                429 | 503 | 504 => *status,
                // Anthropic's "overloaded": 503 for OpenAI callers (their SDKs retry it);
                // Anthropic callers get 529 back (see `to_response`).
                529 => StatusCode::SERVICE_UNAVAILABLE,
                400..=499 => *status,
                _ => StatusCode::BAD_GATEWAY,
            },
            GatewayError::RouteTimeout => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::Saturated
            | GatewayError::LimitsUnavailable
            | GatewayError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::RateLimited { .. } | GatewayError::BudgetExceeded { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            // Every key is resting after the upstream's own 429s: that is a rate limit, and
            // SDKs back off on 429 with the Retry-After we send.
            GatewayError::KeysExhausted { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// The upstream refused the gateway's key (by status, or by code where the provider uses
    /// another status for it: Gemini answers 400 API_KEY_INVALID).
    pub fn key_rejected(&self) -> bool {
        matches!(
            self,
            GatewayError::UpstreamStatus {
                class: UpstreamClass::KeyRejected,
                ..
            }
        )
    }

    /// Who is at fault.
    pub fn source(&self) -> ErrorSource {
        match self {
            GatewayError::NotFound(_)
            | GatewayError::MethodNotAllowed(_)
            | GatewayError::BodyTooLarge { .. }
            | GatewayError::BodyRead(_)
            | GatewayError::BodyTimeout(_)
            | GatewayError::Decode(_)
            | GatewayError::Translate(_)
            | GatewayError::UnsupportedByBackend { .. }
            | GatewayError::MissingKey
            | GatewayError::InvalidKey
            | GatewayError::TokenRejected(_)
            | GatewayError::ServiceAccountNotAllowed(_)
            | GatewayError::ModelNotAllowed { .. }
            | GatewayError::ModelNotFound { .. }
            | GatewayError::RateLimited { .. }
            | GatewayError::BudgetExceeded { .. } => ErrorSource::Caller,
            GatewayError::NotReady
            | GatewayError::TokenReviewUnavailable(_)
            | GatewayError::RouteTimeout
            | GatewayError::Saturated
            | GatewayError::Overloaded
            | GatewayError::LimitsUnavailable => ErrorSource::Gateway,
            GatewayError::Upstream { .. }
            | GatewayError::UpstreamStatus { .. }
            | GatewayError::KeysExhausted { .. } => ErrorSource::Upstream,
        }
    }

    /// A stable machine-readable code.
    pub fn code(&self) -> &str {
        match self {
            GatewayError::NotFound(_) => "unknown_url",
            GatewayError::MethodNotAllowed(_) => "method_not_allowed",
            GatewayError::BodyTooLarge { .. } => "request_too_large",
            GatewayError::BodyRead(_) => "body_read_error",
            GatewayError::BodyTimeout(_) => "request_timeout",
            GatewayError::Decode(DecodeError::Json(_)) => "invalid_json",
            GatewayError::Decode(DecodeError::Missing(_)) => "missing_required_parameter",
            GatewayError::Decode(DecodeError::Type { .. }) => "invalid_type",
            GatewayError::Decode(DecodeError::StreamUnsupported) => "unsupported_parameter",
            GatewayError::Translate(TranslateError::Invalid { .. }) => "invalid_request",
            GatewayError::Translate(
                TranslateError::Unsupported { .. } | TranslateError::Refused { .. },
            ) => "unsupported_parameter",
            GatewayError::UnsupportedByBackend { .. } => "unsupported_by_backend",
            GatewayError::MissingKey => "missing_api_key",
            GatewayError::InvalidKey | GatewayError::TokenRejected(_) => "invalid_api_key",
            GatewayError::ServiceAccountNotAllowed(_) => "service_account_not_allowed",
            GatewayError::TokenReviewUnavailable(_) => "token_review_unavailable",
            GatewayError::ModelNotAllowed { .. } => "model_not_allowed",
            GatewayError::ModelNotFound { .. } => "model_not_found",
            GatewayError::NotReady => "not_ready",
            GatewayError::Upstream { kind, .. } => match kind {
                UpstreamFailure::Connect => "upstream_unreachable",
                UpstreamFailure::Tls => "upstream_tls_error",
                UpstreamFailure::Timeout => "upstream_timeout",
                UpstreamFailure::Protocol => "upstream_protocol_error",
                UpstreamFailure::InvalidResponse => "upstream_invalid_response",
            },
            GatewayError::UpstreamStatus { .. } if self.key_rejected() => "upstream_auth_failed",
            GatewayError::UpstreamStatus { code, .. } => {
                code.as_deref().unwrap_or("upstream_error")
            }
            GatewayError::RouteTimeout => "route_timeout",
            GatewayError::Saturated => "backend_saturated",
            GatewayError::Overloaded => "gateway_overloaded",
            GatewayError::RateLimited { .. } => "rate_limit_exceeded",
            GatewayError::BudgetExceeded { .. } => switchyard_providers::error::INSUFFICIENT_QUOTA,
            GatewayError::LimitsUnavailable => "limits_unavailable",
            GatewayError::KeysExhausted { .. } => "upstream_keys_exhausted",
        }
    }

    fn param(&self) -> Option<&str> {
        match self {
            GatewayError::Decode(d) => d.param(),
            GatewayError::Translate(t) => Some(t.param()).filter(|p| !p.is_empty()),
            GatewayError::ModelNotAllowed { .. } | GatewayError::ModelNotFound { .. } => {
                Some("model")
            }
            _ => None,
        }
    }

    fn message(&self) -> String {
        match self {
            GatewayError::UpstreamStatus {
                status, backend, ..
            } if self.key_rejected() => format!(
                "upstream {backend} rejected the gateway's credentials ({status}); the operator must fix the backend's key"
            ),
            other => other.to_string(),
        }
    }

    /// Renders the error in the caller's format: OpenAI's `{"error":{…}}` shape, or
    /// Anthropic's `{"type":"error","error":{"type","message"}}` with the Anthropic error type
    /// for the status. The one place error bodies are written.
    pub fn to_response(&self, format: Format) -> Response<Body> {
        let message = self.message();
        let (status, json) = match format {
            // The Responses API's errors are OpenAI's.
            Format::OpenAiChat | Format::Responses => (
                self.status(),
                OpenAiError {
                    message: &message,
                    source: self.source(),
                    code: self.code(),
                    param: self.param(),
                }
                .to_json(),
            ),
            Format::Anthropic => {
                let status = match self {
                    GatewayError::UpstreamStatus { status, .. } if status.as_u16() == 529 => {
                        *status
                    }
                    _ => self.status(),
                };
                // Anthropic's shape has no `param`: name it in the message.
                let message = match self.param() {
                    Some(p) if !message.contains(p) => format!("{p}: {message}"),
                    _ => message,
                };
                (
                    status,
                    anthropic::error_json(anthropic::error_type(status.as_u16()), &message),
                )
            }
        };
        let mut resp = json_response(status, json);
        let retry_after = match self {
            GatewayError::UpstreamStatus {
                retry_after: Some(v),
                ..
            } => Some(v.clone()),
            GatewayError::Saturated
            | GatewayError::Overloaded
            | GatewayError::LimitsUnavailable
            | GatewayError::TokenReviewUnavailable(_) => Some(HeaderValue::from_static("1")),
            GatewayError::RateLimited { reset_secs, .. }
            | GatewayError::BudgetExceeded { reset_secs, .. } => {
                HeaderValue::try_from((*reset_secs).max(1).to_string()).ok()
            }
            GatewayError::KeysExhausted { retry_after, .. } => {
                let secs = retry_after.map_or(1, |d| d.as_millis().div_ceil(1000).max(1));
                HeaderValue::try_from(secs.to_string()).ok()
            }
            _ => None,
        };
        if let Some(v) = retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if let GatewayError::RateLimited {
            what,
            limit,
            remaining,
            reset_secs,
        } = self
        {
            crate::headers::put_rate_limit(
                resp.headers_mut(),
                what,
                *limit,
                *remaining,
                *reset_secs,
            );
        }
        resp
    }
}

/// Between the status and the message of [`GatewayError::UpstreamStatus`]: a provider's
/// message follows a colon; an intermediary's summary reads on ("… answered 400 Bad Request
/// with a body that is not …").
fn status_joiner(origin: ErrorOrigin) -> &'static str {
    match origin {
        ErrorOrigin::Provider => ": ",
        ErrorOrigin::Intermediary => " ",
    }
}

/// A JSON response with the right content type.
pub fn json_response(status: StatusCode, json: Bytes) -> Response<Body> {
    let mut resp = Response::new(body::full(json));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use switchyard_providers::error::read_upstream_error;

    use super::*;

    const NGINX_400: &str = "<html>\r\n<head><title>400 Bad Request</title></head>\r\n<body>\r\n<center><h1>400 Bad Request</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

    /// The error an answer of `status` with `body` leaves on the last attempt.
    fn upstream_status(status: u16, content_type: &str, body: &str) -> GatewayError {
        let read = read_upstream_error(status, body.as_bytes(), Some(content_type), None, "openai");
        GatewayError::UpstreamStatus {
            status: StatusCode::from_u16(status).unwrap(),
            backend: "default/edge".into(),
            message: read.message,
            code: read.code,
            class: read.class,
            origin: read.origin,
            retry_after: None,
        }
    }

    async fn render(err: &GatewayError, format: Format) -> (u16, serde_json::Value) {
        let resp = err.to_response(format);
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn an_unavailable_token_review_is_a_503_to_retry_in_a_second() {
        let err =
            GatewayError::TokenReviewUnavailable("too many new tokens are being checked at once");
        let resp = err.to_response(Format::OpenAiChat);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
        let (s, v) = render(&err, Format::OpenAiChat).await;
        assert_eq!(s, 503, "{v}");
        assert_eq!(v["error"]["code"], "token_review_unavailable", "{v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains("too many new tokens"), "{message}");
    }

    #[tokio::test]
    async fn an_edge_refusal_is_the_upstreams_failure() {
        for status in [400, 403, 404, 407, 413] {
            let err = upstream_status(status, "text/html", NGINX_400);
            assert!(!err.key_rejected(), "{status}");
            let (s, v) = render(&err, Format::OpenAiChat).await;
            assert_eq!(s, 502, "{status}: {v}");
            assert_eq!(v["error"]["type"], "upstream_error", "{v}");
            assert_eq!(v["error"]["code"], "upstream_error", "{v}");
            let message = v["error"]["message"].as_str().unwrap();
            assert!(
                message.starts_with(&format!(
                    "upstream default/edge answered {status} {} with a body that is not openai's error format (text/html, {} bytes)",
                    StatusCode::from_u16(status).unwrap().canonical_reason().unwrap(),
                    NGINX_400.len()
                )),
                "{message}"
            );
            assert!(message.ends_with(": \"400 Bad Request\""), "{message}");
            let (s, v) = render(&err, Format::Anthropic).await;
            assert_eq!(s, 502, "{status}: {v}");
            assert_eq!(v["error"]["type"], "api_error", "{v}");
        }
        // A 401 speaks of credentials whoever sent it; a 429 and a 503 keep their status.
        let err = upstream_status(
            401,
            "text/html",
            "<title>401 Authorization Required</title>",
        );
        assert!(err.key_rejected());
        assert_eq!(render(&err, Format::OpenAiChat).await.0, 502);
        let err = upstream_status(429, "text/plain", "Too Many Requests");
        let (s, v) = render(&err, Format::Anthropic).await;
        assert_eq!(
            (s, v["error"]["type"].as_str()),
            (429, Some("rate_limit_error"))
        );
        let (s, v) = render(
            &upstream_status(503, "text/html", NGINX_400),
            Format::OpenAiChat,
        )
        .await;
        assert_eq!(s, 503);
        assert!(
            !v["error"]["message"].as_str().unwrap().contains('<'),
            "{v}"
        );
    }

    #[tokio::test]
    async fn a_key_that_may_not_do_this_is_no_invalid_key() {
        // A restricted key missing a scope: the caller's request is refused (as a 403, so
        // SDKs do not blame the caller's own key), and the key is not called invalid.
        let scope = r#"{"error":{"message":"You have insufficient permissions for this operation. Missing scopes: model.request.","type":"invalid_request_error","param":null,"code":null}}"#;
        let err = upstream_status(401, "application/json", scope);
        assert!(!err.key_rejected());
        let (s, v) = render(&err, Format::OpenAiChat).await;
        assert_eq!(s, 403, "{v}");
        let (s, v) = render(&err, Format::Anthropic).await;
        assert_eq!(
            (s, v["error"]["type"].as_str()),
            (403, Some("permission_error"))
        );
        // A model the key has no access to: the provider's 403 and code, relayed.
        let model = r#"{"error":{"message":"Project `p` does not have access to model `m`","type":"invalid_request_error","param":null,"code":"model_not_found"}}"#;
        let err = upstream_status(403, "application/json", model);
        assert!(!err.key_rejected());
        let (s, v) = render(&err, Format::OpenAiChat).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (403, Some("model_not_found"))
        );
        // An invalid key is the gateway's problem, never the caller's 401.
        let invalid = r#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#;
        let err = upstream_status(401, "application/json", invalid);
        assert!(err.key_rejected());
        assert_eq!(render(&err, Format::OpenAiChat).await.0, 502);
    }

    #[tokio::test]
    async fn a_providers_own_4xx_stays_the_callers() {
        let openai = r#"{"error":{"message":"Invalid value for 'temperature'","type":"invalid_request_error","param":"temperature","code":"invalid_value"}}"#;
        let err = upstream_status(400, "application/json", openai);
        let (s, v) = render(&err, Format::OpenAiChat).await;
        assert_eq!(s, 400, "{v}");
        assert_eq!(v["error"]["code"], "invalid_value");
        assert_eq!(
            v["error"]["message"],
            "upstream default/edge answered 400 Bad Request: Invalid value for 'temperature'"
        );
        let anthropic = r#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: Field required"}}"#;
        let err = upstream_status(400, "application/json", anthropic);
        let (s, v) = render(&err, Format::Anthropic).await;
        assert_eq!(
            (s, v["error"]["type"].as_str()),
            (400, Some("invalid_request_error"))
        );
    }
}
