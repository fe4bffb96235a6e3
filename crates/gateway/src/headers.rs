//! Header names the gateway itself reads or sets, built once: a name given as a string is
//! parsed and validated each time, and one that is not a standard header is also allocated.

use http::HeaderName;

/// The request id: the caller's, else a fresh one; sent upstream and returned.
pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
