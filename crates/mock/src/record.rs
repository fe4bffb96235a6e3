//! A bounded log of the last `/v1` requests, so tests can see what the gateway forwarded.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use http::header::HOST;
use http::request::Parts;
use http::{HeaderMap, Method, Uri, Version};
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::Value;

/// How many requests are kept; older ones are dropped first.
pub const CAPACITY: usize = 256;

/// The request log shared by all connections.
#[derive(Debug)]
pub struct RequestLog {
    recent: Mutex<VecDeque<Arc<Recorded>>>,
    total: AtomicU64,
}

/// One request as received. Stored unserialized: rendering JSON is left to the (rare) reader
/// so that recording stays a few moves and a short lock.
#[derive(Debug)]
pub struct Recorded {
    seq: u64,
    method: Method,
    uri: Uri,
    version: Version,
    /// Whether the connection was TLS.
    tls: bool,
    headers: HeaderMap,
    body: Option<Value>,
}

#[derive(Serialize)]
struct RecordedView<'a> {
    seq: u64,
    method: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2`: what went over the wire.
    version: &'static str,
    /// `:authority` on HTTP/2, the `Host` header on HTTP/1.x.
    authority: Option<&'a str>,
    tls: bool,
    headers: HeadersView<'a>,
    body: Option<&'a Value>,
}

/// Headers as one JSON object; repeated names are joined with ", " as HTTP allows.
struct HeadersView<'a>(&'a HeaderMap);

// === impl RequestLog ===

impl RequestLog {
    pub fn new() -> Self {
        Self {
            recent: Mutex::new(VecDeque::with_capacity(CAPACITY)),
            total: AtomicU64::new(0),
        }
    }

    /// Keeps a request as received on a connection (`tls` or not); extensions are dropped.
    pub fn record(&self, parts: Parts, tls: bool, body: Option<Value>) {
        let seq = self.total.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(Recorded {
            seq,
            method: parts.method,
            uri: parts.uri,
            version: parts.version,
            tls,
            headers: parts.headers,
            body,
        });
        let evicted = {
            let mut recent = self.lock();
            let evicted = if recent.len() >= CAPACITY {
                recent.pop_front()
            } else {
                None
            };
            recent.push_back(entry);
            evicted
        };
        // Freeing a whole request (headers, JSON tree) is the costly part; do it unlocked.
        drop(evicted);
    }

    /// The kept requests as a JSON array, oldest first.
    pub fn to_json(&self) -> serde_json::Result<Bytes> {
        let snapshot: Vec<Arc<Recorded>> = self.lock().iter().cloned().collect();
        let views: Vec<RecordedView<'_>> = snapshot.iter().map(|r| r.view()).collect();
        serde_json::to_vec(&views).map(Bytes::from)
    }

    pub fn clear(&self) {
        let drained = std::mem::take(&mut *self.lock());
        drop(drained);
    }

    /// Requests seen since start; clearing the log does not reset it.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// A panic while holding the lock cannot leave the deque inconsistent, so poisoning is
    /// ignored rather than turning every later request into an error.
    fn lock(&self) -> MutexGuard<'_, VecDeque<Arc<Recorded>>> {
        self.recent.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

// === impl Recorded ===

impl Recorded {
    fn view(&self) -> RecordedView<'_> {
        RecordedView {
            seq: self.seq,
            method: self.method.as_str(),
            path: self.uri.path(),
            query: self.uri.query(),
            version: version_str(self.version),
            authority: self
                .uri
                .authority()
                .map(|a| a.as_str())
                .or_else(|| self.headers.get(HOST).and_then(|h| h.to_str().ok())),
            tls: self.tls,
            headers: HeadersView(&self.headers),
            body: self.body.as_ref(),
        }
    }
}

fn version_str(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "unknown",
    }
}

// === impl HeadersView ===

impl Serialize for HeadersView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.keys_len()))?;
        for name in self.0.keys() {
            let mut values = self
                .0
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()));
            let mut joined = values.next().unwrap_or_default().into_owned();
            for value in values {
                joined.push_str(", ");
                joined.push_str(&value);
            }
            map.serialize_entry(name.as_str(), &joined)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(log: &RequestLog, path: &str) {
        let (parts, ()) = http::Request::post(path)
            .header("host", "mock:8000")
            .header("authorization", "Bearer k")
            .header("x-multi", "a")
            .header("x-multi", "b")
            .body(())
            .unwrap()
            .into_parts();
        log.record(parts, false, Some(serde_json::json!({"model": "m"})));
    }

    #[test]
    fn keeps_the_last_requests_in_order() {
        let log = RequestLog::new();
        for i in 0..CAPACITY + 3 {
            record(&log, &format!("/v1/chat/completions?i={i}"));
        }
        let json: Vec<Value> = serde_json::from_slice(&log.to_json().unwrap()).unwrap();
        assert_eq!(json.len(), CAPACITY);
        assert_eq!(json[0]["query"], "i=3");
        assert_eq!(json[0]["seq"], 3);
        assert_eq!(json[0]["path"], "/v1/chat/completions");
        assert_eq!(json[0]["method"], "POST");
        assert_eq!(json[0]["headers"]["authorization"], "Bearer k");
        assert_eq!(json[0]["headers"]["x-multi"], "a, b");
        assert_eq!(json[0]["body"]["model"], "m");
        assert_eq!(json[0]["version"], "HTTP/1.1");
        assert_eq!(json[0]["authority"], "mock:8000");
        assert_eq!(json[0]["tls"], false);
        assert_eq!(log.total(), CAPACITY as u64 + 3);

        log.clear();
        assert_eq!(&log.to_json().unwrap()[..], b"[]");
        assert_eq!(log.total(), CAPACITY as u64 + 3);
    }

    #[test]
    fn http2_authority_comes_from_the_uri() {
        let log = RequestLog::new();
        let (parts, ()) = http::Request::get("https://mock:8443/v1/models")
            .version(Version::HTTP_2)
            .body(())
            .unwrap()
            .into_parts();
        log.record(parts, true, None);
        let json: Vec<Value> = serde_json::from_slice(&log.to_json().unwrap()).unwrap();
        assert_eq!(json[0]["version"], "HTTP/2");
        assert_eq!(json[0]["authority"], "mock:8443");
        assert_eq!(json[0]["path"], "/v1/models");
        assert_eq!(json[0]["tls"], true);
    }
}
