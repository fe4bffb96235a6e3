//! The body types shared by every handler: the response body, and the error a request body
//! that did not arrive in time ends with.

use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};

/// Errors a response body can end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response body: a complete buffer or a relayed stream.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A complete body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A request body that did not arrive in time: the error the listener's body reader ends with.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the request was not received within {limit} ({after:?})")]
pub struct BodyTimedOut {
    /// Which flag set the limit.
    pub(crate) limit: &'static str,
    /// The limit.
    pub(crate) after: std::time::Duration,
}
