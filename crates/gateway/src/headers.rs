//! Header names the gateway itself reads or sets, built once: a name given as a string is
//! parsed and validated each time, and one that is not a standard header is also allocated.

use http::{HeaderMap, HeaderName, HeaderValue};

/// The request id: the caller's, else a fresh one; sent upstream and returned.
pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// OpenAI's `x-ratelimit-{limit,remaining,reset}-{what}` for one of the consumer's windows
/// (`what` is `requests` or `tokens`), on answers and on refusals alike.
pub(crate) fn put_rate_limit(
    h: &mut HeaderMap,
    what: &str,
    limit: u64,
    remaining: u64,
    reset_secs: u64,
) {
    for (name, value) in [
        (format!("x-ratelimit-limit-{what}"), limit.to_string()),
        (
            format!("x-ratelimit-remaining-{what}"),
            remaining.to_string(),
        ),
        (
            format!("x-ratelimit-reset-{what}"),
            format!("{reset_secs}s"),
        ),
    ] {
        if let (Ok(n), Ok(v)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            h.insert(n, v);
        }
    }
}
