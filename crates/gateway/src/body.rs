//! The body types shared by every handler: the response body, the upstream request body,
//! and the error a request body that did not arrive in time ends with.

use std::{borrow::Cow, io::IoSlice, sync::Arc};

use bytes::{Buf, Bytes};
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

/// A request body sent upstream.
pub type Outgoing = Full<Spliced>;

/// An upstream request's bytes as pieces of buffers it shares: a passthrough sends the
/// caller's body as received, in slices around the few bytes the gateway rewrote
/// ([`switchyard_providers::rewrite`]), so a 70 KB agent prompt is never copied. One buffer,
/// one frame: `Content-Length` and the h2 DATA frames are those of the body written out
/// whole, and hyper writes the pieces with one vectored write.
#[derive(Clone, Debug, Default)]
pub struct Spliced {
    /// None empty.
    parts: Arc<[Bytes]>,
    /// The part being read and how far into it.
    part: usize,
    offset: usize,
    remaining: usize,
}

// === impl Spliced ===

impl Spliced {
    /// `parts` in order.
    pub fn new(parts: impl IntoIterator<Item = Bytes>) -> Self {
        let parts: Arc<[Bytes]> = parts.into_iter().filter(|p| !p.is_empty()).collect();
        let remaining = parts.iter().map(Bytes::len).sum();
        Spliced {
            parts,
            part: 0,
            offset: 0,
            remaining,
        }
    }

    /// The bytes in one slice: borrowed when they are one piece (every body but a
    /// passthrough's), copied together otherwise.
    pub fn contiguous(&self) -> Cow<'_, [u8]> {
        match self.parts.get(self.part..).unwrap_or_default() {
            [] => Cow::Borrowed(&[]),
            [one] => Cow::Borrowed(one.get(self.offset..).unwrap_or_default()),
            _ => {
                let mut out = Vec::with_capacity(self.remaining);
                let mut rest = self.clone();
                while rest.has_remaining() {
                    let chunk = rest.chunk();
                    out.extend_from_slice(chunk);
                    rest.advance(chunk.len());
                }
                Cow::Owned(out)
            }
        }
    }
}

impl From<Bytes> for Spliced {
    fn from(b: Bytes) -> Self {
        Spliced::new([b])
    }
}

impl Buf for Spliced {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.parts
            .get(self.part)
            .and_then(|p| p.get(self.offset..))
            .unwrap_or_default()
    }

    fn advance(&mut self, cnt: usize) {
        // Past the end is the caller's bug; it leaves the buffer empty rather than panicking.
        let mut cnt = cnt.min(self.remaining);
        self.remaining -= cnt;
        while let Some(p) = self.parts.get(self.part) {
            let left = p.len().saturating_sub(self.offset);
            if cnt < left {
                self.offset += cnt;
                return;
            }
            cnt -= left;
            self.part += 1;
            self.offset = 0;
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let rest = self.parts.get(self.part + 1..).unwrap_or_default();
        let chunks = std::iter::once(self.chunk())
            .chain(rest.iter().map(|p| &p[..]))
            .filter(|c| !c.is_empty());
        let mut n = 0;
        for (slot, chunk) in dst.iter_mut().zip(chunks) {
            *slot = IoSlice::new(chunk);
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(mut s: Spliced, step: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while s.has_remaining() {
            let chunk = s.chunk();
            let n = chunk.len().min(step);
            out.extend_from_slice(&chunk[..n]);
            s.advance(n);
        }
        assert_eq!(s.chunk(), b"");
        out
    }

    #[test]
    fn reads_its_parts_in_order_however_it_is_advanced() {
        let s =
            Spliced::new([&b"{\"a\":"[..], b"", b"\"x\"", b",\"b\":[1]}"].map(Bytes::from_static));
        assert_eq!(s.remaining(), 17);
        for step in 1..=20 {
            assert_eq!(drain(s.clone(), step), b"{\"a\":\"x\",\"b\":[1]}");
        }
        let mut t = s.clone();
        t.advance(6);
        assert_eq!(t.contiguous(), &b"x\",\"b\":[1]}"[..]);
        let mut io = [IoSlice::new(&[]); 4];
        assert_eq!(t.chunks_vectored(&mut io), 2);
        assert_eq!((&io[0][..], &io[1][..]), (&b"x\""[..], &b",\"b\":[1]}"[..]));
        assert_eq!(t.chunks_vectored(&mut io[..1]), 1);
        t.advance(100);
        let mut io = [IoSlice::new(&[]); 4];
        assert_eq!((t.remaining(), t.chunks_vectored(&mut io)), (0, 0));
    }

    #[test]
    fn one_part_is_borrowed_whole() {
        let s = Spliced::from(Bytes::from_static(b"{}"));
        assert!(matches!(s.contiguous(), Cow::Borrowed(b"{}")));
        assert_eq!(Spliced::default().contiguous(), &b""[..]);
    }

    #[tokio::test]
    async fn its_body_is_one_frame_of_known_length() {
        use http_body::Body as _;
        let body = Outgoing::new(Spliced::new([&b"ab"[..], b"c"].map(Bytes::from_static)));
        assert_eq!(body.size_hint().exact(), Some(3));
        assert!(!body.is_end_stream());
        assert!(Outgoing::new(Spliced::default()).is_end_stream());
        let got = body.collect().await.map(|c| c.to_bytes());
        assert_eq!(got.ok().as_deref(), Some(&b"abc"[..]));
    }
}
