//! A passthrough's upstream body as edits of the caller's body: ranges of the caller's bytes
//! and, between them, the few bytes the gateway writes (the model, `stream_options`, an output
//! cap).
//!
//! An agent's request is 20–200 KB, and a passthrough changes a few dozen bytes of it. Writing
//! the whole body again around those cost 12 % of the gateway's instructions for a 70 KB
//! request (callgrind): the gateway instead sends the ranges as slices of the buffer it
//! received ([`Rewrite::slices`]). [`Rewrite::to_vec`] writes the body out whole, for tests
//! and for callers that need it contiguous.

use std::ops::Range;

use bytes::Bytes;

/// The upstream body, as pieces of the caller's body and of the text the gateway wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    /// Everything the gateway writes, back to back.
    ours: Vec<u8>,
    /// The upstream body in order; none empty.
    pieces: Vec<Piece>,
    /// The length of the caller's body the `Caller` ranges lie in.
    body_len: usize,
}

/// One run of the upstream body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// These bytes of the caller's body.
    Caller(Range<usize>),
    /// These bytes of what the gateway wrote.
    Ours(Range<usize>),
}

/// Builds a [`Rewrite`] of `body` front to back: each edit lies after the previous one.
pub(crate) struct Editor<'b> {
    body: &'b [u8],
    ours: Vec<u8>,
    pieces: Vec<Piece>,
    /// How much of the body the pieces so far have passed.
    cursor: usize,
    /// A field was written before the body's first (an `insert_first`).
    added_first: bool,
    /// An edit did not lie where it had to (a value not borrowed from `body`, or out of
    /// order): the rewrite falls back to the encoder `finish` is given.
    broken: bool,
}

// === impl Rewrite ===

impl Rewrite {
    /// The whole upstream body as one buffer the gateway wrote (no piece of the caller's).
    pub fn whole(ours: Vec<u8>) -> Self {
        let pieces = if ours.is_empty() {
            Vec::new()
        } else {
            vec![Piece::Ours(0..ours.len())]
        };
        Rewrite {
            ours,
            pieces,
            body_len: 0,
        }
    }

    /// The pieces in order.
    pub fn pieces(&self) -> &[Piece] {
        &self.pieces
    }

    /// The upstream body's length.
    pub fn len(&self) -> usize {
        self.pieces.iter().map(|p| p.range().len()).sum()
    }

    /// The upstream body is empty.
    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// The upstream body as slices of `body`, the caller's body this was made from, and of
    /// one buffer holding what the gateway wrote: no byte of the caller's copied. `None`
    /// when `body` is not that body (its length differs).
    pub fn slices(&self, body: &Bytes) -> Option<Vec<Bytes>> {
        if self.pieces.iter().any(|p| matches!(p, Piece::Caller(_))) && body.len() != self.body_len
        {
            return None;
        }
        let ours = Bytes::copy_from_slice(&self.ours);
        self.pieces
            .iter()
            .map(|p| {
                let (from, r) = match p {
                    Piece::Caller(r) => (body, r),
                    Piece::Ours(r) => (&ours, r),
                };
                from.get(r.clone()).map(|_| from.slice(r.clone()))
            })
            .collect()
    }

    /// The upstream body written out whole; `body` is the caller's body this was made from.
    pub fn to_vec(&self, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        for p in &self.pieces {
            let part = match p {
                Piece::Caller(r) => body.get(r.clone()),
                Piece::Ours(r) => self.ours.get(r.clone()),
            };
            out.extend_from_slice(part.unwrap_or_default());
        }
        out
    }
}

// === impl Piece ===

impl Piece {
    fn range(&self) -> &Range<usize> {
        match self {
            Piece::Caller(r) | Piece::Ours(r) => r,
        }
    }
}

// === impl Editor ===

impl<'b> Editor<'b> {
    pub(crate) fn new(body: &'b [u8]) -> Self {
        Editor {
            body,
            ours: Vec::new(),
            pieces: Vec::new(),
            cursor: 0,
            added_first: false,
            broken: false,
        }
    }

    /// Replaces `value`, a slice of the body (a field's raw value as the split borrowed it),
    /// with what `write` writes.
    pub(crate) fn replace(&mut self, value: &str, write: impl FnOnce(&mut Vec<u8>)) {
        match self.span(value) {
            Some(r) if r.start >= self.cursor => {
                self.keep_to(r.start);
                self.write(write);
                self.cursor = r.end;
            }
            _ => self.broken = true,
        }
    }

    /// Adds `"name":n` as the object's first field.
    pub(crate) fn insert_first(&mut self, name: &str, n: u64) {
        let Some(open) = self.body.iter().position(|&b| b == b'{') else {
            self.broken = true;
            return;
        };
        let rest = self.body.get(open + 1..).unwrap_or_default();
        let empty = rest.trim_ascii_start().starts_with(b"}");
        self.insert_at(open + 1, |out| {
            out.push(b'"');
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            if !empty {
                out.push(b',');
            }
        });
        self.added_first = true;
    }

    /// Adds `field` (`"name":value`) as the object's last field.
    pub(crate) fn insert_last(&mut self, field: &[u8]) {
        let Some(close) = self.body.iter().rposition(|&b| b == b'}') else {
            self.broken = true;
            return;
        };
        let before = self.body.get(..close).unwrap_or_default();
        let empty = before.trim_ascii_end().ends_with(b"{") && !self.added_first;
        self.insert_at(close, |out| {
            if !empty {
                out.push(b',');
            }
            out.extend_from_slice(field);
        });
    }

    /// The rewrite; `fallback` encodes the whole body when an edit could not be placed,
    /// which only a value not borrowed from the body would cause.
    pub(crate) fn finish(mut self, fallback: impl FnOnce() -> Vec<u8>) -> Rewrite {
        if self.broken {
            return Rewrite::whole(fallback());
        }
        self.keep_to(self.body.len());
        Rewrite {
            ours: self.ours,
            pieces: self.pieces,
            body_len: self.body.len(),
        }
    }

    /// Where `part` lies in the body, when it is a slice of it.
    fn span(&self, part: &str) -> Option<Range<usize>> {
        let start = (part.as_ptr() as usize).checked_sub(self.body.as_ptr() as usize)?;
        let end = start.checked_add(part.len())?;
        (end <= self.body.len()).then_some(start..end)
    }

    fn insert_at(&mut self, at: usize, write: impl FnOnce(&mut Vec<u8>)) {
        if at < self.cursor || at > self.body.len() {
            self.broken = true;
            return;
        }
        self.keep_to(at);
        self.write(write);
    }

    /// The caller's bytes up to `to`, kept.
    fn keep_to(&mut self, to: usize) {
        if to > self.cursor {
            self.pieces.push(Piece::Caller(self.cursor..to));
            self.cursor = to;
        }
    }

    fn write(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        let start = self.ours.len();
        write(&mut self.ours);
        if self.ours.len() > start {
            self.pieces.push(Piece::Ours(start..self.ours.len()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(body: &str, edit: impl FnOnce(&mut Editor<'_>, &str)) -> Rewrite {
        let mut e = Editor::new(body.as_bytes());
        edit(&mut e, body);
        e.finish(|| b"fallback".to_vec())
    }

    fn text(r: &Rewrite, body: &str) -> String {
        let whole = r.to_vec(body.as_bytes());
        let sliced: Vec<u8> = r
            .slices(&Bytes::copy_from_slice(body.as_bytes()))
            .unwrap()
            .concat();
        assert_eq!(whole, sliced);
        assert_eq!(whole.len(), r.len());
        String::from_utf8(whole).unwrap()
    }

    #[test]
    fn edits_keep_every_other_byte() {
        let body = r#" { "model" : "a", "x":[1, 2] ,"s":{} } "#;
        let r = rewrite(body, |e, b| {
            e.insert_first("max_tokens", 7);
            let m = b.find("\"a\"").unwrap();
            e.replace(&b[m..m + 3], |o| o.extend_from_slice(b"\"bb\""));
            let s = b.find("{}").unwrap();
            e.replace(&b[s..s + 2], |o| o.extend_from_slice(b"{\"u\":1}"));
            e.insert_last(b"\"z\":true");
        });
        assert_eq!(
            text(&r, body),
            r#" {"max_tokens":7, "model" : "bb", "x":[1, 2] ,"s":{"u":1} ,"z":true} "#
        );
        assert!(r.pieces().len() <= 9);
    }

    #[test]
    fn fields_added_to_an_empty_object_are_separated() {
        let r = rewrite("{ }", |e, _| {
            e.insert_first("n", 1);
            e.insert_last(b"\"z\":2");
        });
        assert_eq!(text(&r, "{ }"), r#"{"n":1 ,"z":2}"#);
        let r = rewrite("{}", |e, _| e.insert_last(b"\"z\":2"));
        assert_eq!(text(&r, "{}"), r#"{"z":2}"#);
    }

    #[test]
    fn an_edit_out_of_place_falls_back_to_the_encoder() {
        let other = String::from("\"m\"");
        let r = rewrite(r#"{"model":"m"}"#, |e, _| e.replace(&other, |_| {}));
        assert_eq!(text(&r, r#"{"model":"m"}"#), "fallback");
        let r = rewrite(r#"{"a":"b","c":"d"}"#, |e, b| {
            e.replace(&b[13..16], |_| {});
            e.replace(&b[5..8], |_| {});
        });
        assert_eq!(text(&r, r#"{"a":"b","c":"d"}"#), "fallback");
    }

    #[test]
    fn slices_refuse_another_body() {
        let r = rewrite(r#"{"a":1}"#, |e, b| e.replace(&b[5..6], |o| o.push(b'2')));
        assert_eq!(r.slices(&Bytes::from_static(b"{}")), None);
        assert_eq!(
            Rewrite::whole(b"{}".to_vec())
                .slices(&Bytes::new())
                .unwrap()
                .concat(),
            b"{}"
        );
    }
}
