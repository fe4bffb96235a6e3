//! Walking the members of a JSON object (or the elements of an array) by byte spans, to read
//! a few fields of a large document without decoding the rest.
//!
//! A non-streamed completion is mostly generated text, yet the gateway wants only its usage and
//! finish reason. Deserializing the whole body to reach them cost some 10 000 instructions for
//! a 600-byte response (callgrind: 14% of a proxied request). Here strings are skipped by
//! searching eight bytes at a time for the next quote or backslash, containers by counting
//! brackets outside strings, and only the wanted values are decoded, exactly (by
//! `serde_json`, or for plain integers by [`plain_u64`]).
//!
//! The walk validates what it skips, in the same pass: string escapes and control characters,
//! literals, numbers, and the commas, colons and brackets of every nested container (each
//! token is checked where the old bracket-counting skip jumped over it, at about the same
//! cost). A malformed document yields the members before the fault and then ends, and
//! [`Cursor::complete`] says whether the document was one well-formed JSON value. It is not a
//! full validator in two respects: UTF-8 is not checked (nor are lone surrogates in `\u`
//! escapes), and nesting deeper than [`MAX_DEPTH`] counts as malformed.

use switchyard_types::swar::json_string_stop;

/// A position in a JSON document, walked forward one member or element at a time. A value
/// can be skipped (its span returned) or entered, so a wanted field deep inside is reached in
/// the same single pass.
#[derive(Clone, Copy)]
pub struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
    /// A value was just passed: a `,` or the container's end must come next.
    after_value: bool,
    /// Containers entered and not yet left.
    depth: usize,
    /// What the walk has left unchecked since [`Cursor::take_unchecked`], `nesting` counted
    /// from the document's top: keys and values passed by [`Cursor::value_noting`] are
    /// noted; a value passed by [`Cursor::value`] is not looked at, and counts as a `\u`
    /// escape (unsure).
    seen: Unchecked,
}

/// What the walk of one value did not check that a `serde_json::Value` parse does (see the
/// module's docs): whether it holds a `\u` escape (a key's included), which may be a lone
/// surrogate; a number of more than [`LONG_NUMBER`] characters or with an exponent, which may
/// not fit an `f64`; and how deeply its containers nest. A value with no escape and no such
/// number, and not nested too deeply, is one the parse accepts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Unchecked {
    /// A string in it has a `\u` escape.
    pub unicode: bool,
    /// A number in it has more than [`LONG_NUMBER`] characters or an exponent.
    pub long_number: bool,
    /// Containers open at its deepest point (0 for a scalar, 1 for `[]`).
    pub nesting: usize,
}

impl<'a> Cursor<'a> {
    /// At the start of `doc`.
    pub fn new(doc: &'a [u8]) -> Self {
        Cursor {
            b: doc,
            i: 0,
            after_value: false,
            depth: 0,
            seen: Unchecked::default(),
        }
    }

    /// What the walk has left unchecked in everything it passed since the last call (or its
    /// start), and starts noting afresh: see [`Unchecked`], whose `nesting` here is the
    /// deepest the walk went, counted from the document's top.
    pub(crate) fn take_unchecked(&mut self) -> Unchecked {
        std::mem::take(&mut self.seen)
    }

    /// Enters the object (`open` = `{`) or array (`[`) at the cursor; false, and nothing
    /// consumed, when the value there is something else.
    pub fn enter(&mut self, open: u8) -> bool {
        let i = ws(self.b, self.i);
        let entered = self.b.get(i) == Some(&open);
        if entered {
            self.i = i + 1;
            self.after_value = false;
            self.depth += 1;
            self.seen.nesting = self.seen.nesting.max(self.depth);
        }
        entered
    }

    /// The next key (raw, see [`key_is`]) of the object being walked, with the cursor left on
    /// its value, which must then be skipped or entered. `None` at the object's end (consumed)
    /// or at a fault (the walk then ends).
    pub fn key(&mut self) -> Option<&'a [u8]> {
        let b = self.b;
        let mut i = ws(b, self.i);
        match b.get(i) {
            Some(b'}') => {
                self.i = i + 1;
                self.after_value = true; // the object itself
                self.depth = self.depth.saturating_sub(1);
                return None;
            }
            Some(b',') if self.after_value => i = ws(b, i + 1),
            Some(b'"') if !self.after_value => {}
            _ => return self.fault(),
        }
        if b.get(i) != Some(&b'"') {
            return self.fault();
        }
        let Some(end) = string_end_noting::<true>(b, i, &mut self.seen.unicode) else {
            return self.fault();
        };
        let colon = ws(b, end);
        if b.get(colon) != Some(&b':') {
            return self.fault();
        }
        self.i = colon + 1;
        self.after_value = false;
        Some(&b[i + 1..end - 1])
    }

    /// Moves to the next element of the array being walked; false at its end (consumed) or
    /// at a fault.
    pub fn element(&mut self) -> bool {
        let b = self.b;
        let mut i = ws(b, self.i);
        match b.get(i) {
            Some(b']') => {
                self.i = i + 1;
                self.after_value = true; // the array itself
                self.depth = self.depth.saturating_sub(1);
                return false;
            }
            Some(b',') if self.after_value => i = ws(b, i + 1),
            Some(_) if !self.after_value => {}
            _ => {
                self.i = usize::MAX;
                return false;
            }
        }
        match b.get(i) {
            Some(b']' | b',') | None => {
                self.i = usize::MAX;
                false
            }
            Some(_) => {
                self.i = i;
                true
            }
        }
    }

    /// Skips the value at the cursor and returns it as written.
    pub fn value(&mut self) -> Option<&'a [u8]> {
        let start = ws(self.b, self.i);
        // Not looked at for what a parse would check: unsure.
        self.seen.unicode = true;
        match value_end(self.b, start) {
            Some(end) => {
                self.i = end;
                self.after_value = true;
                Some(&self.b[start..end])
            }
            None => self.fault(),
        }
    }

    /// Skips the value at the cursor like [`Self::value`], also telling what in it the walk
    /// left unchecked (see [`Unchecked`]), so a caller that must check it further only looks
    /// again at values that need it.
    pub(crate) fn value_noting(&mut self) -> Option<(&'a [u8], Unchecked)> {
        let start = ws(self.b, self.i);
        let mut n = Unchecked::default();
        match value_end_noting::<true>(self.b, start, &mut n) {
            Some(end) => {
                self.i = end;
                self.after_value = true;
                self.seen.unicode |= n.unicode;
                self.seen.long_number |= n.long_number;
                self.seen.nesting = self.seen.nesting.max(self.depth + n.nesting);
                Some((&self.b[start..end], n))
            }
            None => self.fault(),
        }
    }

    /// Where the walk is: the byte offset past what it has read.
    pub fn offset(&self) -> usize {
        self.i
    }

    /// Whether the walk stopped at a fault (a malformed document) rather than at an end.
    pub fn failed(&self) -> bool {
        self.i == usize::MAX
    }

    /// Whether the walk has passed a whole value and only whitespace follows: after walking a
    /// document's top-level object to its end (the `key` that returned `None`), whether the
    /// document was well-formed JSON.
    pub fn complete(&self) -> bool {
        !self.failed() && self.after_value && ws(self.b, self.i) == self.b.len()
    }

    fn fault<T>(&mut self) -> Option<T> {
        self.i = usize::MAX;
        None
    }
}

/// A JSON number that is a plain non-negative integer of at most 19 digits (so it fits a
/// `u64`), else `None`: the caller then lets `serde_json` decide.
pub fn plain_u64(raw: &[u8]) -> Option<u64> {
    if raw.is_empty() || raw.len() > 19 || (raw.len() > 1 && raw[0] == b'0') {
        return None;
    }
    raw.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
    })
}

/// The members of the JSON object `doc` as (raw key, raw value) byte spans: the key without
/// its quotes and still escaped (compare it with [`key_is`]), the value as written.
pub fn members(doc: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut c = Cursor::new(doc);
    let mut open = c.enter(b'{');
    std::iter::from_fn(move || {
        if !open {
            return None;
        }
        let member = c.key().and_then(|k| Some((k, c.value()?)));
        open = member.is_some();
        member
    })
}

/// Whether the raw (still escaped) key `raw` is `name`. Keys with escapes (`"usa\u0067e"` is
/// `usage` too) are decoded first; real documents hardly ever have them.
#[inline]
pub fn key_is(raw: &[u8], name: &str) -> bool {
    // An escape takes at least two bytes for one character, so only a longer raw key can
    // decode to `name`.
    if raw.len() <= name.len() {
        return raw == name.as_bytes();
    }
    if !raw.contains(&b'\\') {
        return false;
    }
    let mut quoted = Vec::with_capacity(raw.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(raw);
    quoted.push(b'"');
    serde_json::from_slice::<String>(&quoted).is_ok_and(|k| k == name)
}

/// Whether `doc` has a member named by `key` (its quoted name, e.g. `"usage"`, in a prebuilt
/// finder) whose value is not `null`, told by the bytes alone: every occurrence of the quoted
/// name followed by a colon (whitespace allowed around it) counts, and none is missed. Inside
/// a JSON string every quote is escaped, so a quoted name followed by a colon is always a key,
/// and the name as a string value is followed by something else. It does not check that `doc`
/// is JSON: a hit is for a parse to confirm.
///
/// One search for the whole name per document: a search at every quote (a chunk of a stream
/// has a few dozen) cost some 1 300 instructions for a 200-byte chunk, this about a tenth.
pub fn has_live_member(doc: &[u8], key: &memchr::memmem::Finder<'_>) -> bool {
    let mut from = 0;
    while let Some(at) = doc.get(from..).and_then(|rest| key.find(rest)) {
        let after = from + at + key.needle().len();
        let i = ws(doc, after);
        if doc.get(i) == Some(&b':') && !doc[ws(doc, i + 1)..].starts_with(b"null") {
            return true;
        }
        // Occurrences may overlap (a quoted name ends with the quote the next one may
        // start with).
        from += at + 1;
    }
    false
}

fn ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// The first index from `j` whose byte `flags` marks, eight bytes at a time: one branch per
/// word, where a byte loop mispredicts at the end of every short string.
#[inline(always)]
fn find(b: &[u8], mut j: usize, flags: impl Fn(u64) -> u64) -> Option<usize> {
    while let Some(word) = b.get(j..j + 8).and_then(|w| <[u8; 8]>::try_from(w).ok()) {
        let m = flags(u64::from_le_bytes(word));
        if m != 0 {
            return Some(j + (m.trailing_zeros() / 8) as usize);
        }
        j += 8;
    }
    let mut w = [b' '; 8];
    let tail = b.get(j..)?;
    w[..tail.len()].copy_from_slice(tail);
    let m = flags(u64::from_le_bytes(w));
    let k = (m.trailing_zeros() / 8) as usize;
    (k < tail.len()).then_some(j + k)
}

/// The end (past the closing quote) of the string opening at `i`; `None` if it is not closed,
/// holds a control character or has an escape JSON does not define.
///
/// On x86_64, 64 bytes at a time (SSE2 through `safe_arch`): one mask of the quotes,
/// backslashes and control characters, whose bits are then visited in turn, so an escape
/// costs a few instructions rather than a new search (agent text has one every ~40 bytes:
/// the search from each escape was a quarter of decoding a Claude Code request).
///
/// When `NOTE`, a `\u` escape in the string sets `unicode`.
#[cfg(target_arch = "x86_64")]
fn string_end_noting<const NOTE: bool>(b: &[u8], i: usize, unicode: &mut bool) -> Option<usize> {
    // Most strings (keys, roles, ids) end within a word or two: found by the word test
    // before a block is loaded.
    let mut base = i + 1;
    for _ in 0..2 {
        let Some(word) = b
            .get(base..base + 8)
            .and_then(|w| <[u8; 8]>::try_from(w).ok())
        else {
            break;
        };
        let m = json_string_stop(u64::from_le_bytes(word));
        if m == 0 {
            base += 8;
            continue;
        }
        let k = base + (m.trailing_zeros() / 8) as usize;
        match b[k] {
            b'"' => return Some(k + 1),
            b'\\' => {
                note_unicode::<NOTE>(b, k, unicode);
                base = escape_end(b, k)?;
                break;
            }
            _ => return None,
        }
    }
    // Past the last escape: bits of the block before it are already handled.
    let mut from = base;
    while let Some(block) = b
        .get(base..base + 64)
        .and_then(|w| <&[u8; 64]>::try_from(w).ok())
    {
        let mut m = stops64(block) & (u64::MAX << (from - base));
        while m != 0 {
            let k = base + m.trailing_zeros() as usize;
            match b[k] {
                b'"' => return Some(k + 1),
                b'\\' => {
                    note_unicode::<NOTE>(b, k, unicode);
                    from = escape_end(b, k)?;
                    if from >= base + 64 {
                        break;
                    }
                    m &= u64::MAX << (from - base);
                }
                _ => return None,
            }
        }
        if from < base + 64 {
            from = base + 64;
        }
        base = from;
    }
    string_end_words::<NOTE>(b, from, unicode)
}

/// Notes a `\u` escape whose backslash is at `k`.
#[inline(always)]
fn note_unicode<const NOTE: bool>(b: &[u8], k: usize, unicode: &mut bool) {
    if NOTE && b.get(k + 1) == Some(&b'u') {
        *unicode = true;
    }
}

/// One bit per byte of a 64-byte block: a quote, a backslash or a control character (the
/// split's classifier).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn stops64(block: &[u8; 64]) -> u64 {
    let m = crate::split::masks(block);
    m.quote | m.backslash | m.control
}

/// [`string_end_noting`] a word at a time.
#[cfg(not(target_arch = "x86_64"))]
fn string_end_noting<const NOTE: bool>(b: &[u8], i: usize, unicode: &mut bool) -> Option<usize> {
    string_end_words::<NOTE>(b, i + 1, unicode)
}

/// [`string_end_noting`] from `j`, inside the string, a word at a time.
fn string_end_words<const NOTE: bool>(b: &[u8], j: usize, unicode: &mut bool) -> Option<usize> {
    let mut j = j;
    loop {
        let k = string_stop(b, j)?;
        match b[k] {
            b'"' => return Some(k + 1),
            b'\\' => {
                note_unicode::<NOTE>(b, k, unicode);
                j = escape_end(b, k)?;
            }
            // A control character, which must be escaped in a string.
            _ => return None,
        }
    }
}

/// The end of the escape whose backslash is at `k`: one of `\" \\ \/ \b \f \n \r \t`, or
/// `\u` and four hex digits (not checked further: serde_json skips a raw value's escapes so).
#[inline(always)]
pub(crate) fn escape_end(b: &[u8], k: usize) -> Option<usize> {
    match *b.get(k + 1)? {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(k + 2),
        b'u' if b.get(k + 2..k + 6)?.iter().all(u8::is_ascii_hexdigit) => Some(k + 6),
        _ => None,
    }
}

/// The first quote, backslash or control character from `j`. Most strings (keys, short
/// values) end within a few words, found eight bytes at a time; past [`SHORT_STRING`] bytes
/// (a system prompt, a tool result) `memchr2`'s SIMD search finds the next quote or backslash
/// and the span before it is checked for control characters by a loop the compiler
/// vectorizes: about 0.1 ns a byte instead of 0.5 (perf: the word loop was 84% of hashing
/// a 4 KB prompt prefix for affinity).
#[inline(always)]
fn string_stop(b: &[u8], j: usize) -> Option<usize> {
    let short_end = j.saturating_add(SHORT_STRING).min(b.len());
    if let Some(k) = find(b.get(..short_end)?, j, json_string_stop) {
        return Some(k);
    }
    let rest = b.get(short_end..)?;
    let k = memchr::memchr2(b'"', b'\\', rest)?;
    let control = rest[..k].iter().fold(false, |any, &c| any | (c < 0x20));
    if control {
        // The first control character stops the string (the caller rejects it).
        return rest[..k]
            .iter()
            .position(|&c| c < 0x20)
            .map(|p| short_end + p);
    }
    Some(short_end + k)
}

/// The most characters [`Unchecked::long_number`] lets a number without an exponent have.
const LONG_NUMBER: usize = 300;

/// Bytes of a string searched word by word before the SIMD search takes over.
const SHORT_STRING: usize = 32;

/// Deepest nesting a skipped value may have; deeper counts as malformed (`serde_json`
/// refuses documents nested deeper than 128 by default, so no client could read them).
pub const MAX_DEPTH: usize = 1024;

/// The end of the well-formed JSON value starting at `i`, or `None`.
fn value_end(b: &[u8], i: usize) -> Option<usize> {
    value_end_noting::<false>(b, i, &mut Unchecked::default())
}

/// [`value_end`], noting in `n` what the walk leaves unchecked (when `NOTE`).
#[inline(always)]
fn value_end_noting<const NOTE: bool>(b: &[u8], i: usize, n: &mut Unchecked) -> Option<usize> {
    match *b.get(i)? {
        b'{' | b'[' => container_end::<NOTE>(b, i, n),
        _ => scalar_end_noting::<NOTE>(b, i, n),
    }
}

/// The end of the string, literal or number starting at `i`.
pub(crate) fn scalar_end(b: &[u8], i: usize) -> Option<usize> {
    scalar_end_noting::<false>(b, i, &mut Unchecked::default())
}

/// [`scalar_end`], noting in `n` a `\u` escape or a long number (when `NOTE`).
#[inline(always)]
fn scalar_end_noting<const NOTE: bool>(b: &[u8], i: usize, n: &mut Unchecked) -> Option<usize> {
    let literal = |lit: &[u8]| b[i..].starts_with(lit).then_some(i + lit.len());
    match *b.get(i)? {
        b'"' => string_end_noting::<NOTE>(b, i, &mut n.unicode),
        b't' => literal(b"true"),
        b'f' => literal(b"false"),
        b'n' => literal(b"null"),
        _ => {
            let end = number_end(b, i)?;
            // Without an exponent, a number of at most `LONG_NUMBER` characters is under
            // 1e300 and so fits an `f64`.
            if NOTE
                && (end - i > LONG_NUMBER || b[i..end].iter().any(|&c| matches!(c, b'e' | b'E')))
            {
                n.long_number = true;
            }
            Some(end)
        }
    }
}

/// The end of the number starting at `i`: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
fn number_end(b: &[u8], mut i: usize) -> Option<usize> {
    let digits = |from: usize| b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match *b.get(i)? {
        b'0' => i += 1,
        b'1'..=b'9' => i += digits(i),
        _ => return None,
    }
    if b.get(i) == Some(&b'.') {
        let n = digits(i + 1);
        if n == 0 {
            return None;
        }
        i += 1 + n;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let n = digits(i);
        if n == 0 {
            return None;
        }
        i += n;
    }
    Some(i)
}

/// The end of the object or array opening at `i`, every token inside checked: one pass,
/// iterative (a bit per open container says whether it is an object), so a deep document
/// cannot exhaust the stack. When `NOTE`, what it leaves unchecked goes to `n`.
fn container_end<const NOTE: bool>(b: &[u8], i: usize, n: &mut Unchecked) -> Option<usize> {
    enum Next {
        /// `b[j]` opens a container.
        Open,
        /// A member (object) or element (array) starts at `b[j]`.
        Member,
        /// A value ended before `j`: a comma or the container's end comes next.
        AfterValue,
        /// `b[j]` closes the innermost container.
        Close,
    }
    let mut objects = [0u64; MAX_DEPTH / 64];
    let mut depth = 0usize;
    let is_object = |objects: &[u64], depth: usize| {
        let d = depth - 1;
        objects[d / 64] & (1 << (d % 64)) != 0
    };
    let mut j = i;
    let mut next = Next::Open;
    loop {
        match next {
            Next::Open => {
                if depth == MAX_DEPTH {
                    return None;
                }
                let object = b[j] == b'{';
                let (word, bit) = (depth / 64, 1u64 << (depth % 64));
                if object {
                    objects[word] |= bit;
                } else {
                    objects[word] &= !bit;
                }
                depth += 1;
                if NOTE && depth > n.nesting {
                    n.nesting = depth;
                }
                j = ws(b, j + 1);
                let close = if object { b'}' } else { b']' };
                next = if b.get(j) == Some(&close) {
                    Next::Close
                } else {
                    Next::Member
                };
            }
            Next::Member => {
                if is_object(&objects, depth) {
                    if b.get(j) != Some(&b'"') {
                        return None;
                    }
                    j = ws(b, string_end_noting::<NOTE>(b, j, &mut n.unicode)?);
                    if b.get(j) != Some(&b':') {
                        return None;
                    }
                    j = ws(b, j + 1);
                }
                next = match *b.get(j)? {
                    b'{' | b'[' => Next::Open,
                    _ => {
                        j = scalar_end_noting::<NOTE>(b, j, n)?;
                        Next::AfterValue
                    }
                };
            }
            Next::AfterValue => {
                j = ws(b, j);
                next = match (*b.get(j)?, is_object(&objects, depth)) {
                    (b',', _) => {
                        j = ws(b, j + 1);
                        Next::Member
                    }
                    (b'}', true) | (b']', false) => Next::Close,
                    _ => return None,
                };
            }
            Next::Close => {
                depth -= 1;
                j += 1;
                if depth == 0 {
                    return Some(j);
                }
                next = Next::AfterValue;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// The block walk finds the same end as the word walk, escapes and stops at every offset
    /// around the 64-byte block edges.
    #[test]
    fn string_end_blocks_agree_with_words() {
        let pieces: [&[u8]; 8] = [
            b"\\n", b"\\u00e9", b"\\\\", b"\\\"", b"\"", b"\x01", b"\\x", b"\\u12",
        ];
        for len in [
            0usize, 1, 15, 16, 60, 61, 62, 63, 64, 65, 120, 127, 128, 129, 200,
        ] {
            for piece in pieces {
                for at in [0, 1, 62, 63, 64, 65, 126, 127, 128] {
                    let mut text = vec![b'a'; len];
                    let at = at.min(len);
                    text.splice(at..at, piece.iter().copied());
                    for tail in [&b"\""[..], b"", b"xyz\"  "] {
                        let mut doc = b"\"".to_vec();
                        doc.extend_from_slice(&text);
                        doc.extend_from_slice(tail);
                        assert_eq!(
                            string_end_noting::<false>(&doc, 0, &mut false),
                            string_end_words::<false>(&doc, 1, &mut false),
                            "{}",
                            String::from_utf8_lossy(&doc)
                        );
                    }
                }
            }
        }
    }

    use super::*;

    fn keys(doc: &str) -> Vec<(String, String)> {
        members(doc.as_bytes())
            .map(|(k, v)| {
                (
                    String::from_utf8(k.to_vec()).unwrap(),
                    String::from_utf8(v.to_vec()).unwrap(),
                )
            })
            .collect()
    }

    fn elements(doc: &[u8]) -> Vec<&[u8]> {
        let mut c = Cursor::new(doc);
        let mut out = Vec::new();
        if c.enter(b'[') {
            while c.element() {
                match c.value() {
                    Some(v) => out.push(v),
                    None => break,
                }
            }
        }
        out
    }

    #[test]
    fn members_are_split_at_the_top_level_only() {
        let doc =
            r#" { "a" : 1 , "b":{"c":[1,{"d":"}]"}],"e":"x\"y"},"f" :"\\", "g":[] ,"h":null}"#;
        assert_eq!(
            keys(doc),
            [
                ("a", "1"),
                ("b", r#"{"c":[1,{"d":"}]"}],"e":"x\"y"}"#),
                ("f", r#""\\""#),
                ("g", "[]"),
                ("h", "null"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert!(keys("{}").is_empty());
        assert_eq!(
            elements(br#"[ {"a":"]"} , 2,"x" ]"#),
            [&br#"{"a":"]"}"#[..], b"2", br#""x""#]
        );
        assert!(elements(b"[]").is_empty());
        // Entering a value walks inside it; the walk then goes on after it.
        let mut c = Cursor::new(br#"{"a":[{"x":1},{"y":{"z":"}"}}],"b":true}"#);
        assert!(c.enter(b'{'));
        assert_eq!(c.key(), Some(&b"a"[..]));
        assert!(!c.enter(b'{') && c.enter(b'['));
        assert!(c.element() && c.enter(b'{'));
        assert_eq!((c.key(), c.value()), (Some(&b"x"[..]), Some(&b"1"[..])));
        assert_eq!(c.key(), None);
        assert!(!c.failed());
        assert!(c.element());
        assert_eq!(c.value(), Some(&br#"{"y":{"z":"}"}}"#[..]));
        assert!(!c.element());
        assert_eq!((c.key(), c.value()), (Some(&b"b"[..]), Some(&b"true"[..])));
        assert_eq!(c.key(), None);
    }

    #[test]
    fn malformed_documents_end_the_walk_without_panicking() {
        for doc in [
            "",
            "[1]",
            "{",
            "{\"a\"",
            "{\"a\":",
            "{\"a\":1",
            "{\"a\" 1}",
            "{\"a\":\"x",
            "{\"a\":{\"b\":1}",
            "{\"a\":1 \"b\":2}",
            "{\"a\\",
            "{\"a\":-}",
            "{\"a\":1,}",
            "{\"a\":]}",
            "{\"a\":}",
        ] {
            let got = keys(doc);
            assert!(got.len() <= 1, "{doc:?}: {got:?}");
        }
        assert_eq!(keys(r#"{"a":1,"b" 2}"#), [("a".into(), "1".into())]);
        for doc in ["", "[", "[1", "[1 2]", "[\"x", "{}"] {
            assert!(elements(doc.as_bytes()).len() <= 1, "{doc:?}");
        }
    }

    #[test]
    fn plain_integers_only() {
        assert_eq!(plain_u64(b"0"), Some(0));
        assert_eq!(
            plain_u64(b"1234567890123456789"),
            Some(1_234_567_890_123_456_789)
        );
        for raw in [
            &b""[..],
            b"01",
            b"-1",
            b"1.0",
            b"1e3",
            b"null",
            b"12345678901234567890",
        ] {
            assert_eq!(plain_u64(raw), None, "{raw:?}");
        }
        let mut c = Cursor::new(b"{\"a\":1 \"b\":2}");
        assert!(c.enter(b'{') && c.key().is_some() && c.value().is_some());
        assert_eq!(c.key(), None);
        assert!(c.failed());
    }

    /// Walks `doc` as a top-level object, skipping every value, as the inspect functions do.
    fn well_formed(doc: &[u8]) -> bool {
        let mut c = Cursor::new(doc);
        if !c.enter(b'{') {
            return false;
        }
        while c.key().is_some() {
            if c.value().is_none() {
                break;
            }
        }
        c.complete()
    }

    /// What `serde_json` says of `doc` as a top-level object.
    fn serde_says(doc: &[u8]) -> bool {
        serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(doc).is_ok()
    }

    #[test]
    fn the_walk_tells_well_formed_documents_from_malformed_ones() {
        let good: &[&[u8]] = &[
            br#"{}"#,
            br#" { "a" : [ 1 , -2.5e+3 , 0 , true , false , null , "x\"\\\/\b\f\n\r\t\u00e9" , { } , [ ] ] } "#,
            br#"{"a":{"b":{"c":[[[]]]}},"d":"\u0041"}"#,
            br#"{"n":-0.0,"m":1E9,"k":12}"#,
        ];
        for doc in good {
            assert!(well_formed(doc), "{}", String::from_utf8_lossy(doc));
            assert!(serde_says(doc));
        }
        let bad: &[&[u8]] = &[
            b"",
            b"[]",
            b"null",
            b"{",
            br#"{"a":1"#,
            br#"{"a":1}x"#,
            br#"{"a":1}{}"#,
            br#"{"a":tru}"#,
            br#"{"a":[1,,2]}"#,
            br#"{"a":[1,]}"#,
            br#"{"a":{"b" 1}}"#,
            br#"{"a":{"b":1,}}"#,
            br#"{"a":[1}]}"#,
            br#"{"a":{"b":1]}"#,
            br#"{"a":01}"#,
            br#"{"a":1.}"#,
            br#"{"a":1e}"#,
            br#"{"a":-}"#,
            br#"{"a":+1}"#,
            br#"{"a":"\x"}"#,
            br#"{"a":"\u12"}"#,
            b"{\"a\":\"tab\there\"}",
            br#"{"a":[{"b":"c"}]"#,
            br#"{"a" "b"}"#,
        ];
        for doc in bad {
            assert!(!well_formed(doc), "{}", String::from_utf8_lossy(doc));
            assert!(!serde_says(doc), "{}", String::from_utf8_lossy(doc));
        }
        // Too deep to follow is malformed; deep but within reach is not.
        let deep = |n: usize| {
            [
                b"{\"a\":".as_slice(),
                &b"[".repeat(n),
                &b"]".repeat(n),
                b"}",
            ]
            .concat()
        };
        assert!(well_formed(&deep(MAX_DEPTH)));
        assert!(!well_formed(&deep(MAX_DEPTH + 1)));
    }

    #[test]
    fn the_walk_agrees_with_serde_json_on_mutated_documents() {
        let base: &[&[u8]] = &[
            br#"{"id":"c","choices":[{"index":0,"message":{"role":"assistant","content":"say \"hi\" {[}]"},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":20,"total_tokens":30}}"#,
            br#"{"type":"message","content":[{"type":"text","text":"a\nb"}],"stop_reason":"end_turn","usage":{"input_tokens":1,"output_tokens":2},"x":[1.5,-3e2,true,false,null]}"#,
            // Strings past the word-by-word search, so mutations reach the SIMD one.
            br#"{"system":"You are a careful assistant: answer in full sentences, cite \"sources\", and never\nmake anything up. Keep answers short.","messages":[{"role":"user","content":"tell me about the weather in the mountains this weekend, please"}]}"#,
        ];
        // Bytes a mutation may write: every structural character and some that are not.
        let alphabet = b"{}[]\",:\\ 01-.eE+tfnuxa\t\n";
        let mut rng = fastrand::Rng::with_seed(7);
        let mut checked = 0;
        for doc in base {
            for _ in 0..20_000 {
                let d = crate::test_util::mutate(&mut rng, doc, alphabet);
                // `serde_json` refuses lone surrogates, which the walk does not look for.
                if d.windows(3).any(|w| w == br"\ud" || w == br"\uD") {
                    continue;
                }
                assert_eq!(
                    well_formed(&d),
                    serde_says(&d),
                    "{}",
                    String::from_utf8_lossy(&d)
                );
                checked += 1;
            }
        }
        assert!(checked > 30_000);
    }

    /// What a walk notes over what it passed: keys' `\u` escapes, values passed by
    /// `value_noting`, the deepest container from the document's top, and a value passed
    /// unlooked-at by `value` as unsure.
    #[test]
    fn the_walk_notes_what_it_passed() {
        let walk = |doc: &[u8], look: bool| {
            let mut c = Cursor::new(doc);
            assert!(c.enter(b'{'));
            assert_eq!(c.take_unchecked().nesting, 1);
            while c.key().is_some() {
                if c.enter(b'[') {
                    while c.element() {
                        assert!(c.value_noting().is_some());
                    }
                } else if look {
                    assert!(c.value_noting().is_some());
                } else {
                    assert!(c.value().is_some());
                }
            }
            assert!(c.complete());
            c.take_unchecked()
        };
        let n = |unicode, long_number, nesting| Unchecked {
            unicode,
            long_number,
            nesting,
        };
        assert_eq!(walk(br#"{"a":1,"b":"x\n"}"#, true), n(false, false, 1));
        assert_eq!(walk(br#"{"a":1,"b":"x\n"}"#, false), n(true, false, 0));
        assert_eq!(walk(br#"{"\u0061":1}"#, true), n(true, false, 1));
        assert_eq!(walk(br#"{"a":"\u00e9"}"#, true), n(true, false, 1));
        assert_eq!(walk(br#"{"a":"\\u00e9"}"#, true), n(false, false, 1));
        assert_eq!(walk(br#"{"a":[1,[2,[3]]]}"#, true), n(false, false, 4));
        assert_eq!(walk(br#"{"a":[],"b":{"c":{}}}"#, true), n(false, false, 3));
        assert_eq!(walk(br#"{"a":[1e3]}"#, true), n(false, true, 2));
        let long = format!(r#"{{"a":[{}],"b":-{}}}"#, "9".repeat(300), "9".repeat(299));
        assert_eq!(walk(long.as_bytes(), true), n(false, false, 2));
        let long = format!(r#"{{"a":[{}]}}"#, "9".repeat(301));
        assert_eq!(walk(long.as_bytes(), true), n(false, true, 2));
    }

    #[test]
    fn escaped_keys_are_decoded() {
        assert!(key_is(b"usage", "usage"));
        assert!(key_is(br"usa\u0067e", "usage"));
        assert!(!key_is(br"usage\n", "usage"));
        assert!(!key_is(b"usag", "usage"));
    }
}
