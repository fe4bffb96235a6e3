//! Incremental Server-Sent Events framing.
//!
//! Upstream bodies arrive in arbitrary pieces: an event may be split anywhere, even inside a
//! `\r\n`. The parser buffers only the unfinished tail and hands back each complete event with
//! its exact original bytes, so a relay that does not need to change an event forwards it
//! without re-encoding.

use bytes::{Bytes, BytesMut};

/// One complete SSE event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The event exactly as received, terminating blank line included.
    pub raw: Bytes,
    /// The `event:` field, if any.
    pub event: Option<Bytes>,
    /// The `data:` lines joined with `\n` (empty when the event had no data, e.g. a comment).
    pub data: Bytes,
}

/// Splits a byte stream into SSE events.
#[derive(Debug, Default)]
pub struct Parser {
    buf: BytesMut,
    /// Where to resume scanning, so a long event split in many pieces is scanned once.
    scanned: usize,
    /// Start of the line being scanned, relative to `buf`.
    line_start: usize,
}

/// Upper bound on one buffered event: a provider never sends events this large, and a
/// runaway upstream must not grow the buffer without bound.
pub const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

/// The stream broke the SSE framing rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// An event grew past [`MAX_EVENT_BYTES`].
    #[error("server-sent event larger than {MAX_EVENT_BYTES} bytes")]
    TooLarge,
}

impl Parser {
    /// A parser with an empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), SseError> {
        if self.buf.len() + chunk.len() > MAX_EVENT_BYTES {
            return Err(SseError::TooLarge);
        }
        self.buf.extend_from_slice(chunk);
        Ok(())
    }

    /// Bytes received but not yet part of a complete event.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next complete event, if one has arrived.
    pub fn next_event(&mut self) -> Option<Event> {
        let end = self.find_event_end()?;
        let raw = self.buf.split_to(end).freeze();
        self.scanned = 0;
        self.line_start = 0;
        Some(parse_fields(raw))
    }

    /// At end of stream: the last event, if its final line ended in a lone CR that was held
    /// back in case an LF followed. Anything else left over is an incomplete event, which the
    /// SSE specification says to discard.
    pub fn finish(&mut self) -> Option<Event> {
        if self.buf.last() == Some(&b'\r') {
            self.buf.extend_from_slice(b"\n");
            return self.next_event();
        }
        None
    }

    /// Finds the end of the first event: the end of its first empty line.
    fn find_event_end(&mut self) -> Option<usize> {
        let buf = &self.buf[..];
        let mut i = self.scanned;
        while i < buf.len() {
            let b = buf[i];
            if b == b'\n' || b == b'\r' {
                let term_len = if b == b'\r' {
                    match buf.get(i + 1) {
                        Some(b'\n') => 2,
                        Some(_) => 1,
                        // A CR at the end may be the first half of CRLF: wait for more.
                        None => {
                            self.scanned = i;
                            return None;
                        }
                    }
                } else {
                    1
                };
                let empty_line = i == self.line_start;
                i += term_len;
                self.line_start = i;
                if empty_line {
                    return Some(i);
                }
            } else {
                // Jump to the next line break instead of stepping byte by byte: events are
                // long lines of JSON.
                match memchr::memchr2(b'\n', b'\r', &buf[i..]) {
                    Some(off) => i += off,
                    None => i = buf.len(),
                }
            }
        }
        self.scanned = i;
        None
    }
}

fn parse_fields(raw: Bytes) -> Event {
    let mut event = None;
    let mut data: Option<Bytes> = None;
    let mut joined: Option<Vec<u8>> = None;
    let mut start = 0;
    let bytes = &raw[..];
    while start < bytes.len() {
        let end = memchr::memchr2(b'\n', b'\r', &bytes[start..]).map_or(bytes.len(), |p| start + p);
        let line = &bytes[start..end];
        let next = if bytes.get(end) == Some(&b'\r') && bytes.get(end + 1) == Some(&b'\n') {
            end + 2
        } else {
            end + 1
        };
        if !line.is_empty() && line[0] != b':' {
            let (name, value_range) = match line.iter().position(|&b| b == b':') {
                Some(c) => {
                    let mut v = start + c + 1;
                    if bytes.get(v) == Some(&b' ') {
                        v += 1;
                    }
                    (&line[..c], v..end)
                }
                None => (line, end..end),
            };
            match name {
                b"data" => {
                    let value = raw.slice(value_range);
                    match (&mut joined, &data) {
                        (Some(j), _) => {
                            j.push(b'\n');
                            j.extend_from_slice(&value);
                        }
                        (None, Some(first)) => {
                            let mut j = first.to_vec();
                            j.push(b'\n');
                            j.extend_from_slice(&value);
                            joined = Some(j);
                        }
                        (None, None) => data = Some(value),
                    }
                }
                b"event" => event = Some(raw.slice(value_range)),
                _ => {}
            }
        }
        start = next;
    }
    let data = match joined {
        Some(j) => Bytes::from(j),
        None => data.unwrap_or_default(),
    };
    Event { raw, event, data }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(input: &[u8], splits: &[usize]) -> Vec<Event> {
        let mut p = Parser::new();
        let mut out = Vec::new();
        let mut last = 0;
        for &s in splits.iter().chain(std::iter::once(&input.len())) {
            p.push(&input[last..s]).unwrap();
            last = s;
            while let Some(e) = p.next_event() {
                out.push(e);
            }
        }
        out.extend(p.finish());
        assert_eq!(p.pending(), 0, "trailing bytes left");
        out
    }

    const STREAM: &[u8] = b"data: {\"a\":1}\n\n: keep-alive\n\nevent: message_start\r\ndata: {\"b\":\r\ndata: 2}\r\n\r\ndata:[DONE]\r\rdata: x\n\n";

    #[test]
    fn parses_whole_stream() {
        let ev = events(STREAM, &[]);
        assert_eq!(ev.len(), 5);
        assert_eq!(ev[0].data, &b"{\"a\":1}"[..]);
        assert_eq!(ev[1].data, &b""[..]);
        assert_eq!(ev[2].event.as_deref(), Some(&b"message_start"[..]));
        assert_eq!(ev[2].data, &b"{\"b\":\n2}"[..]);
        assert_eq!(ev[3].data, &b"[DONE]"[..]);
        assert_eq!(ev[4].data, &b"x"[..]);
        let mut p = Parser::new();
        p.push(b"data: y\r\r").unwrap();
        assert!(p.next_event().is_none());
        assert_eq!(p.finish().unwrap().data, &b"y"[..]);
        let raw: Vec<u8> = ev.iter().flat_map(|e| e.raw.to_vec()).collect();
        assert_eq!(raw, STREAM);
    }

    #[test]
    fn any_split_gives_same_events() {
        let whole = events(STREAM, &[]);
        for a in 0..=STREAM.len() {
            for b in a..=STREAM.len() {
                assert_eq!(events(STREAM, &[a, b]), whole, "split at {a},{b}");
            }
        }
    }

    #[test]
    fn byte_by_byte_random_streams() {
        for seed in 0..50 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut input = Vec::new();
            let n = rng.usize(1..20);
            for i in 0..n {
                input.extend_from_slice(format!("data: {{\"i\":{i}}}").as_bytes());
                input.extend_from_slice([&b"\n\n"[..], b"\r\n\r\n", b"\r\r"][rng.usize(0..3)]);
            }
            let splits: Vec<usize> = {
                let mut s: Vec<usize> = (0..rng.usize(0..10))
                    .map(|_| rng.usize(0..=input.len()))
                    .collect();
                s.sort_unstable();
                s
            };
            let ev = events(&input, &splits);
            assert_eq!(ev.len(), n);
            for (i, e) in ev.iter().enumerate() {
                assert_eq!(e.data, format!("{{\"i\":{i}}}").as_bytes());
            }
        }
    }

    #[test]
    fn refuses_unbounded_events() {
        let mut p = Parser::new();
        let big = vec![b'a'; MAX_EVENT_BYTES];
        p.push(&big).unwrap();
        assert_eq!(p.push(b"a"), Err(SseError::TooLarge));
    }
}
