//! Splits a JSON object into its top-level fields, values left as raw text, checking on the
//! way that the whole text is JSON `serde_json` accepts.
//!
//! Every request the gateway forwards is split first (to read `model`, `stream`, the output
//! cap), and an agent's request is 20–200 KB of escape-dense text. `serde_json` checks it a
//! byte at a time and stops at every escape: on a 70 KB agent body that was 80 % of the
//! gateway's instructions for the request. This walk works as simdjson's first stage does: it
//! classifies 64 bytes per step into bit masks (quotes, backslashes, control bytes; SSE2
//! through `safe_arch` on x86_64, a byte loop elsewhere), derives from them which bytes are
//! inside strings, and then visits only the bytes outside strings, where the grammar is.
//!
//! It answers `None` for anything it does not accept, and the caller then asks `serde_json`,
//! so errors keep serde's words and a body this walk is unsure of still gets serde's verdict.
//! It must never accept what `serde_json` refuses: the differential tests below hold it to
//! that on generated, mutated and hand-picked texts.

use std::borrow::Cow;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::scan;

/// One top-level field: its name, and its value as raw JSON text borrowed from the body.
pub(crate) type Field<'a> = (Cow<'a, str>, &'a str);

/// Nesting deeper than this is left to `serde_json` (the walk keeps one bit per level).
const MAX_DEPTH: u32 = 64;

/// The top-level fields of `body`, which must be a JSON object, in order (a repeated name
/// kept each time it appears).
pub(crate) fn fields(body: &[u8]) -> Result<Vec<Field<'_>>, serde_json::Error> {
    match split(body) {
        Some(fields) => Ok(fields),
        None => split_serde(body),
    }
}

/// The same split by `serde_json`: the reference, and the error when the walk refuses.
fn split_serde(body: &[u8]) -> Result<Vec<Field<'_>>, serde_json::Error> {
    struct Fields<'a>(Vec<Field<'a>>);
    impl<'de> Deserialize<'de> for Fields<'de> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Fields<'de>;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                    let mut out = Vec::with_capacity(map.size_hint().unwrap_or(8));
                    while let Some((k, v)) = map.next_entry::<Cow<'de, str>, &'de RawValue>()? {
                        out.push((k, v.get()));
                    }
                    Ok(Fields(out))
                }
            }
            d.deserialize_map(V)
        }
    }
    serde_json::from_slice::<Fields<'_>>(body).map(|f| f.0)
}

/// The top-level fields of `body`, a JSON object; `None` when the body is not one this walk
/// accepts (then ask `serde_json`).
fn split(body: &[u8]) -> Option<Vec<Field<'_>>> {
    // The same verdict as `std::str::from_utf8`, with the SIMD the CPU has (std's check is
    // word at a time, and slow on the non-ASCII text agent prompts carry).
    let text = simdutf8::basic::from_utf8(body).ok()?;
    let mut walk = Walk::new(text);
    let (lanes, tail) = body.as_chunks::<16>();
    let mut blocks = lanes.chunks_exact(4);
    let mut base = 0;
    for block in &mut blocks {
        walk.block(base, masks(block))?;
        base += 64;
    }
    // The last partial block, padded with spaces: whitespace outside a string, and inside an
    // unterminated one it leaves the string open, which `finish` refuses.
    let mut last = [[b' '; 16]; 4];
    let rest = blocks.remainder();
    for (lane, src) in last.iter_mut().zip(rest) {
        *lane = *src;
    }
    if let Some(lane) = last.get_mut(rest.len()) {
        lane.get_mut(..tail.len())?.copy_from_slice(tail);
    }
    walk.block(base, masks(&last))?;
    walk.finish()
}

/// Per byte of a 64-byte block, one bit in each mask.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Masks {
    quote: u64,
    backslash: u64,
    /// Bytes `<= 0x20`: space and the control characters.
    low: u64,
    space: u64,
}

#[cfg(target_arch = "x86_64")]
fn masks(block: &[[u8; 16]]) -> Masks {
    use safe_arch::{
        cmp_eq_mask_i8_m128i, load_unaligned_m128i, max_u8_m128i, move_mask_i8_m128i,
        set_splat_i8_m128i,
    };
    let quote = set_splat_i8_m128i(b'"' as i8);
    let backslash = set_splat_i8_m128i(b'\\' as i8);
    let space = set_splat_i8_m128i(b' ' as i8);
    let bits = |v| u64::from(move_mask_i8_m128i(v) as u16);
    let mut m = Masks::default();
    for (i, lane) in block.iter().enumerate() {
        let v = load_unaligned_m128i(lane);
        let shift = 16 * i;
        m.quote |= bits(cmp_eq_mask_i8_m128i(v, quote)) << shift;
        m.backslash |= bits(cmp_eq_mask_i8_m128i(v, backslash)) << shift;
        // max(v, 0x20) == 0x20 exactly when v <= 0x20 (unsigned).
        m.low |= bits(cmp_eq_mask_i8_m128i(max_u8_m128i(v, space), space)) << shift;
        m.space |= bits(cmp_eq_mask_i8_m128i(v, space)) << shift;
    }
    m
}

#[cfg(not(target_arch = "x86_64"))]
fn masks(block: &[[u8; 16]]) -> Masks {
    masks_bytewise(block)
}

/// The portable classifier (and the reference the SSE2 one is tested against).
#[cfg(any(test, not(target_arch = "x86_64")))]
fn masks_bytewise(block: &[[u8; 16]]) -> Masks {
    let mut m = Masks::default();
    for (i, &b) in block.iter().flatten().enumerate() {
        let bit = 1u64 << i;
        match b {
            b'"' => m.quote |= bit,
            b'\\' => m.backslash |= bit,
            b' ' => {
                m.low |= bit;
                m.space |= bit;
            }
            0..=0x1f => m.low |= bit,
            _ => {}
        }
    }
    m
}

/// Bit `i` of the result is the XOR of bits `0..=i`: with quote bits in, the bytes from each
/// opening quote up to (not including) its closing quote.
fn prefix_xor(mut x: u64) -> u64 {
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    x ^= x << 16;
    x ^= x << 32;
    x
}

/// What the grammar allows next (the classes in [`ALLOWED`]).
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Expect {
    /// Nothing read yet: the top-level `{`.
    Start,
    /// After `{`: a key or `}`.
    ObjectFirst,
    /// After `[`: a value or `]`.
    ArrayFirst,
    /// After `,` in an object.
    Key,
    /// After a key.
    Colon,
    /// After `:`, or `,` in an array.
    Value,
    /// After a value: `,` or the container's close.
    Next,
    /// After the top-level `}`: only whitespace.
    Done,
}

/// What a byte outside strings is: an index, dense so that `step`'s match is a jump table.
mod class {
    pub const OPEN_OBJECT: u8 = 0;
    pub const OPEN_ARRAY: u8 = 1;
    pub const CLOSE_OBJECT: u8 = 2;
    pub const CLOSE_ARRAY: u8 = 3;
    pub const COMMA: u8 = 4;
    pub const COLON: u8 = 5;
    pub const QUOTE: u8 = 6;
    /// The start of a number or literal (or of something invalid, which its parse refuses).
    pub const SCALAR: u8 = 7;
}

static CLASS: [u8; 256] = {
    let mut t = [class::SCALAR; 256];
    t[b'{' as usize] = class::OPEN_OBJECT;
    t[b'[' as usize] = class::OPEN_ARRAY;
    t[b'}' as usize] = class::CLOSE_OBJECT;
    t[b']' as usize] = class::CLOSE_ARRAY;
    t[b',' as usize] = class::COMMA;
    t[b':' as usize] = class::COLON;
    t[b'"' as usize] = class::QUOTE;
    t
};

/// The classes each [`Expect`] allows (bit `1 << class`), indexed by it.
const ALLOWED: [u8; 8] = {
    use class::*;
    let value = 1 << OPEN_OBJECT | 1 << OPEN_ARRAY | 1 << QUOTE | 1 << SCALAR;
    [
        1 << OPEN_OBJECT,
        1 << QUOTE | 1 << CLOSE_OBJECT,
        value | 1 << CLOSE_ARRAY,
        1 << QUOTE,
        1 << COLON,
        value,
        1 << COMMA | 1 << CLOSE_OBJECT | 1 << CLOSE_ARRAY,
        0,
    ]
};

struct Walk<'a> {
    text: &'a str,
    bytes: &'a [u8],
    /// Whether the first byte of the next block is escaped (a block ended in an escape).
    escaped_carry: u64,
    /// All ones when the next block starts inside a string.
    in_string_carry: u64,
    expect: Expect,
    depth: u32,
    /// Bit `d` set when the container at depth `d + 1` is an object.
    objects: u64,
    /// The end of the last scalar read: its later bytes are not visited again.
    skip_to: usize,
    /// The top-level key being read: where its opening quote is, and its closing quote.
    key: (usize, usize),
    /// Where the top-level value being read starts.
    value_start: usize,
    fields: Vec<Field<'a>>,
}

impl<'a> Walk<'a> {
    fn new(text: &'a str) -> Self {
        Walk {
            text,
            bytes: text.as_bytes(),
            escaped_carry: 0,
            in_string_carry: 0,
            expect: Expect::Start,
            depth: 0,
            objects: 0,
            skip_to: 0,
            key: (0, 0),
            value_start: 0,
            fields: Vec::with_capacity(16),
        }
    }

    fn block(&mut self, base: usize, m: Masks) -> Option<()> {
        // Escapes, one backslash at a time: a backslash not itself escaped escapes the next
        // byte. Agent bodies hold one every ~40 bytes, each checked here.
        let mut escaped = self.escaped_carry;
        self.escaped_carry = 0;
        let mut starts = m.backslash & !escaped;
        while starts != 0 {
            let i = starts.trailing_zeros();
            scan::escape_end(self.bytes, base + i as usize)?;
            // Shifted out at bit 63: then the next block's first byte is the escaped one.
            let next = 2u64 << i;
            escaped |= next;
            starts &= starts - 1;
            starts &= !next;
            if i == 63 {
                self.escaped_carry = 1;
            }
        }
        let quotes = m.quote & !escaped;
        let in_string = prefix_xor(quotes) ^ self.in_string_carry;
        self.in_string_carry = ((in_string as i64) >> 63) as u64;
        let control = m.low & !m.space;
        if control & in_string != 0 {
            return None; // a raw control character in a string
        }
        let outside = !in_string;
        let mut blanks = control & outside;
        while blanks != 0 {
            let p = base + blanks.trailing_zeros() as usize;
            if !matches!(self.bytes.get(p), Some(b'\t' | b'\n' | b'\r')) {
                return None;
            }
            blanks &= blanks - 1;
        }
        // Outside strings every byte but whitespace and closing quotes is visited; inside,
        // only the opening quote.
        let mut visit = (outside & !m.low & !quotes) | (quotes & in_string);
        let block = self.bytes.get(base..).unwrap_or_default();
        while visit != 0 {
            let i = visit.trailing_zeros() as usize;
            visit &= visit - 1;
            let p = base + i;
            if p < self.skip_to {
                continue;
            }
            let c = *block.get(i)?;
            let class = CLASS[usize::from(c)];
            if ALLOWED[self.expect as usize] >> class & 1 == 0 {
                return None;
            }
            self.step(p, class)?;
        }
        Some(())
    }

    /// Takes the byte at `p`, of a class the grammar allows here.
    #[inline(always)]
    fn step(&mut self, p: usize, class: u8) -> Option<()> {
        use Expect::*;
        match class {
            class::QUOTE if matches!(self.expect, ObjectFirst | Key) => {
                if self.depth == 1 {
                    self.key.0 = p;
                }
                self.expect = Colon;
            }
            class::QUOTE => {
                self.value_at(p);
                self.expect = Next;
            }
            class::COLON => {
                if self.depth == 1 {
                    self.key.1 = self.trim_end(p)?.checked_sub(1)?;
                }
                self.expect = Value;
            }
            class::COMMA => {
                if self.depth == 1 {
                    self.end_field(p)?;
                }
                self.expect = if self.in_object() { Key } else { Value };
            }
            class::OPEN_OBJECT | class::OPEN_ARRAY => {
                self.value_at(p);
                self.open(class == class::OPEN_OBJECT)?;
            }
            class::CLOSE_OBJECT | class::CLOSE_ARRAY => {
                if self.in_object() != (class == class::CLOSE_OBJECT) {
                    return None;
                }
                if self.depth == 1 && self.expect == Next {
                    self.end_field(p)?;
                }
                self.depth -= 1;
                self.expect = if self.depth == 0 { Done } else { Next };
            }
            _ => {
                self.value_at(p);
                self.skip_to = self.scalar_end(p)?;
                self.expect = Next;
            }
        }
        Some(())
    }

    fn in_object(&self) -> bool {
        // depth >= 1 wherever this is asked (after `{` or `[`).
        self.objects >> (self.depth.wrapping_sub(1) & 63) & 1 != 0
    }

    fn open(&mut self, object: bool) -> Option<()> {
        if self.depth >= MAX_DEPTH {
            return None;
        }
        let bit = 1u64 << self.depth;
        self.objects = if object {
            self.objects | bit
        } else {
            self.objects & !bit
        };
        self.depth += 1;
        self.expect = if object {
            Expect::ObjectFirst
        } else {
            Expect::ArrayFirst
        };
        Some(())
    }

    fn value_at(&mut self, p: usize) {
        if self.depth == 1 {
            self.value_start = p;
        }
    }

    /// The end of the text before `p` with the whitespace between them left out.
    fn trim_end(&self, p: usize) -> Option<usize> {
        let before = self.bytes.get(..p)?;
        let last = before
            .iter()
            .rposition(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))?;
        Some(last + 1)
    }

    fn end_field(&mut self, p: usize) -> Option<()> {
        let (open, close) = self.key;
        if self.bytes.get(close) != Some(&b'"') {
            return None;
        }
        let name = self.text.get(open + 1..close)?;
        let name = if name.contains('\\') {
            Cow::Owned(serde_json::from_str::<String>(self.text.get(open..=close)?).ok()?)
        } else {
            Cow::Borrowed(name)
        };
        let value = self.text.get(self.value_start..self.trim_end(p)?)?;
        self.fields.push((name, value));
        Some(())
    }

    /// The end of the number or literal starting at `p`, which must be followed by a
    /// delimiter. (A quote is a class of its own, so `scan::scalar_end` never reads a string
    /// here.)
    fn scalar_end(&self, p: usize) -> Option<usize> {
        let end = scan::scalar_end(self.bytes, p)?;
        match self.bytes.get(end) {
            None
            | Some(b' ' | b'\t' | b'\n' | b'\r' | b',' | b'}' | b']' | b':' | b'{' | b'[' | b'"') => {
                Some(end)
            }
            Some(_) => None,
        }
    }

    fn finish(self) -> Option<Vec<Field<'a>>> {
        (self.expect == Expect::Done && self.in_string_carry == 0).then_some(self.fields)
    }
}

#[cfg(test)]
#[path = "split_tests.rs"]
mod tests;
