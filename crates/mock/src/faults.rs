//! Per-request behaviour knobs: CLI flags give the defaults, `x-mock-*` headers override them.

use std::fmt;
use std::time::Duration;

use http::{HeaderMap, HeaderName, StatusCode};

/// Upper bound on content chunks: the non-streamed reply is built in memory, so an unbounded
/// header value would let one request allocate without limit.
pub const MAX_CHUNKS: u32 = 65_536;
/// Upper bound on any injected delay; longer values are almost certainly typos.
pub const MAX_DELAY_MS: u64 = 3_600_000;

const LATENCY_MS: HeaderName = HeaderName::from_static("x-mock-latency-ms");
const CHUNKS: HeaderName = HeaderName::from_static("x-mock-chunks");
const CHUNK_DELAY_MS: HeaderName = HeaderName::from_static("x-mock-chunk-delay-ms");
const STATUS: HeaderName = HeaderName::from_static("x-mock-status");
const RETRY_AFTER: HeaderName = HeaderName::from_static("x-mock-retry-after");
const RESET_AFTER: HeaderName = HeaderName::from_static("x-mock-reset-after");
const FAIL_FIRST: HeaderName = HeaderName::from_static("x-mock-fail-first");
const FAULT: HeaderName = HeaderName::from_static("x-mock-fault");
const TOOL_ARGS: HeaderName = HeaderName::from_static("x-mock-tool-args");

/// Everything that shapes one response besides its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Knobs {
    /// Delay before the response headers.
    pub latency: Duration,
    /// Content chunks in a reply (streamed or not, so both carry the same text).
    pub chunks: u32,
    /// Delay between stream frames.
    pub chunk_delay: Duration,
    /// Answer with this error status instead of a reply.
    pub status: Option<StatusCode>,
    /// `Retry-After` seconds on an injected error.
    pub retry_after: Option<u64>,
    /// Abort a stream after this many content chunks.
    pub reset_after: Option<u32>,
    /// Fail only the first N requests of the request's `x-mock-scenario` (with `status`, or
    /// 500), then answer normally: "fails, then recovers".
    pub fail_first: Option<u32>,
    /// Faults in an otherwise normal answer (`x-mock-fault`).
    pub fault: Faults,
    /// The arguments object of a tool call, instead of ones made up from the tool's schema
    /// (`x-mock-tool-args`, JSON): lets a real agent client run the tool it is asked to.
    pub tool_args: Option<serde_json::Value>,
}

/// Faults `x-mock-fault` injects into an answer, named as a comma-separated list: the ways a
/// provider (or something in front of it) breaks that a status code cannot express.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// `malformed-json`: a successful non-streamed reply is cut in half, so its body is not
    /// JSON any more (status 200 and the JSON content type are kept).
    pub malformed_json: bool,
    /// `truncate-stream`: `x-mock-reset-after` ends the stream cleanly (the terminating
    /// chunk is sent) instead of breaking the connection: a stream that just stops, with no
    /// finish reason and no `[DONE]` / `message_stop`.
    pub truncate_stream: bool,
    /// `echo-key`: error messages quote the key the request presented, raw, as the
    /// `Authorization` value and base64-encoded, as some providers do.
    pub echo_key: bool,
    /// `stall-body`: a non-streamed body (an error's too) stops halfway and never finishes.
    pub stall_body: bool,
}

/// A knob header whose value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnobError {
    header: HeaderName,
    reason: &'static str,
}

// === impl Knobs ===

impl Knobs {
    /// Defaults taken from the command line; no fault is injected unless a header asks.
    pub fn defaults(latency_ms: u64, chunks: u32, chunk_delay_ms: u64) -> Self {
        Self {
            latency: Duration::from_millis(latency_ms.min(MAX_DELAY_MS)),
            chunks: chunks.min(MAX_CHUNKS),
            chunk_delay: Duration::from_millis(chunk_delay_ms.min(MAX_DELAY_MS)),
            status: None,
            retry_after: None,
            reset_after: None,
            fail_first: None,
            fault: Faults::default(),
            tool_args: None,
        }
    }

    /// Applies the `x-mock-*` headers of one request on top of `self`.
    pub fn with_headers(&self, headers: &HeaderMap) -> Result<Self, KnobError> {
        let mut knobs = self.clone();
        if let Some(ms) = number(headers, &LATENCY_MS, MAX_DELAY_MS)? {
            knobs.latency = Duration::from_millis(ms);
        }
        if let Some(n) = number(headers, &CHUNKS, u64::from(MAX_CHUNKS))? {
            knobs.chunks = narrow(n);
        }
        if let Some(ms) = number(headers, &CHUNK_DELAY_MS, MAX_DELAY_MS)? {
            knobs.chunk_delay = Duration::from_millis(ms);
        }
        if let Some(code) = number(headers, &STATUS, 599)? {
            knobs.status = Some(error_status(code)?);
        }
        if let Some(secs) = number(headers, &RETRY_AFTER, u64::from(u32::MAX))? {
            knobs.retry_after = Some(secs);
        }
        if let Some(n) = number(headers, &RESET_AFTER, u64::from(MAX_CHUNKS))? {
            knobs.reset_after = Some(narrow(n));
        }
        if let Some(n) = number(headers, &FAIL_FIRST, u64::from(u32::MAX))? {
            knobs.fail_first = Some(narrow(n));
        }
        if let Some(value) = headers.get(&FAULT) {
            knobs.fault = Faults::parse(value.as_bytes())?;
        }
        if let Some(value) = headers.get(&TOOL_ARGS) {
            match serde_json::from_slice::<serde_json::Value>(value.as_bytes()) {
                Ok(args @ serde_json::Value::Object(_)) => knobs.tool_args = Some(args),
                _ => {
                    return Err(KnobError {
                        header: TOOL_ARGS,
                        reason: "expected a JSON object",
                    })
                }
            }
        }
        Ok(knobs)
    }
}

// === impl Faults ===

impl Faults {
    fn parse(value: &[u8]) -> Result<Self, KnobError> {
        let mut faults = Faults::default();
        let value = std::str::from_utf8(value).unwrap_or("\u{fffd}");
        for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let flag = match name {
                "malformed-json" => &mut faults.malformed_json,
                "truncate-stream" => &mut faults.truncate_stream,
                "echo-key" => &mut faults.echo_key,
                "stall-body" => &mut faults.stall_body,
                _ => {
                    return Err(KnobError {
                        header: FAULT,
                        reason: "expected malformed-json, truncate-stream, echo-key or stall-body",
                    })
                }
            };
            *flag = true;
        }
        Ok(faults)
    }
}

fn number(headers: &HeaderMap, name: &HeaderName, max: u64) -> Result<Option<u64>, KnobError> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    let invalid = |reason| KnobError {
        header: name.clone(),
        reason,
    };
    let n = value
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .ok_or_else(|| invalid("expected an unsigned integer"))?;
    if n > max {
        return Err(invalid("value too large"));
    }
    Ok(Some(n))
}

/// Callers already bounded `n` by a `u32` maximum.
fn narrow(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Only error statuses make sense: a 2xx/3xx "fault" would need a body the mock cannot invent.
fn error_status(code: u64) -> Result<StatusCode, KnobError> {
    u16::try_from(code)
        .ok()
        .filter(|c| (400..=599).contains(c))
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(KnobError {
            header: STATUS,
            reason: "expected a status between 400 and 599",
        })
}

// === impl KnobError ===

impl fmt::Display for KnobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {} header: {}", self.header, self.reason)
    }
}

impl std::error::Error for KnobError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, http::HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn no_headers_keeps_defaults() {
        let defaults = Knobs::defaults(5, 8, 2);
        assert_eq!(defaults.with_headers(&HeaderMap::new()).unwrap(), defaults);
        assert_eq!(defaults.latency, Duration::from_millis(5));
        assert_eq!(defaults.status, None);
    }

    #[test]
    fn headers_override_flags() {
        let knobs = Knobs::defaults(0, 8, 0)
            .with_headers(&headers(&[
                ("x-mock-latency-ms", "120"),
                ("x-mock-chunks", " 3 "),
                ("x-mock-chunk-delay-ms", "7"),
                ("x-mock-status", "429"),
                ("x-mock-retry-after", "2"),
                ("x-mock-reset-after", "1"),
                ("x-mock-tool-args", r#"{"file_path": "/tmp/a.txt"}"#),
            ]))
            .unwrap();
        assert_eq!(
            knobs,
            Knobs {
                latency: Duration::from_millis(120),
                chunks: 3,
                chunk_delay: Duration::from_millis(7),
                status: Some(StatusCode::TOO_MANY_REQUESTS),
                retry_after: Some(2),
                reset_after: Some(1),
                fail_first: None,
                fault: Faults::default(),
                tool_args: Some(serde_json::json!({"file_path": "/tmp/a.txt"})),
            }
        );
    }

    #[test]
    fn faults_are_a_list_of_names() {
        let knobs = Knobs::defaults(0, 8, 0)
            .with_headers(&headers(&[("x-mock-fault", "echo-key, stall-body")]))
            .unwrap();
        assert_eq!(
            knobs.fault,
            Faults {
                echo_key: true,
                stall_body: true,
                ..Faults::default()
            }
        );
        let err = Knobs::defaults(0, 8, 0)
            .with_headers(&headers(&[("x-mock-fault", "echo-key,explode")]))
            .unwrap_err();
        assert_eq!(err.header, "x-mock-fault");
    }

    #[test]
    fn rejects_bad_values() {
        let defaults = Knobs::defaults(0, 8, 0);
        for (name, value) in [
            ("x-mock-chunks", "many"),
            ("x-mock-chunks", "-1"),
            ("x-mock-chunks", "65537"),
            ("x-mock-latency-ms", "99999999999"),
            ("x-mock-status", "200"),
            ("x-mock-status", "600"),
            ("x-mock-status", "70000"),
            ("x-mock-tool-args", "[1]"),
            ("x-mock-tool-args", "{not json"),
        ] {
            let err = defaults
                .with_headers(&headers(&[(name, value)]))
                .unwrap_err();
            assert_eq!(err.header, name, "{name}: {value}");
        }
    }

    #[test]
    fn flag_defaults_are_clamped() {
        let knobs = Knobs::defaults(u64::MAX, u32::MAX, u64::MAX);
        assert_eq!(knobs.chunks, MAX_CHUNKS);
        assert_eq!(knobs.latency, Duration::from_millis(MAX_DELAY_MS));
    }
}
