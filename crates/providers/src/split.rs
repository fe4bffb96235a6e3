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
//! The escaped bytes come from the backslash mask by arithmetic (odd-length runs, see
//! [`escaped`]), not a loop per backslash; a block all inside one string is done after the
//! masks. Each visit steps a state table ([`GRAMMAR`]) and a bit stack of open containers
//! moved by a multiply ([`MUL`]), without a branch on the byte; the top-level object's own
//! keys, colons, commas and values (where the fields are cut) take a branch of their own.
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
    let (blocks, tail) = body.as_chunks::<64>();
    let mut base = 0;
    for block in blocks {
        walk.block(base, block)?;
        base += 64;
    }
    // The last partial block, padded with spaces: whitespace outside a string, and inside an
    // unterminated one it leaves the string open, which `finish` refuses.
    let mut last = [b' '; 64];
    last.get_mut(..tail.len())?.copy_from_slice(tail);
    walk.block(base, &last)?;
    walk.finish()
}

/// Per byte of a 64-byte block, one bit in each mask.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Masks {
    pub(crate) quote: u64,
    pub(crate) backslash: u64,
    /// Bytes `< 0x20`, the control characters.
    pub(crate) control: u64,
}

/// The block's four 16-byte lanes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn lanes(block: &[u8; 64]) -> [safe_arch::m128i; 4] {
    let (lanes, _) = block.as_chunks::<16>();
    let lane = |i: usize| safe_arch::load_unaligned_m128i(&lanes[i]);
    [lane(0), lane(1), lane(2), lane(3)]
}

/// One bit per byte of the four lanes, from comparisons that set a byte's top bit.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn bits(v: [safe_arch::m128i; 4]) -> u64 {
    let lane = |i: usize| u64::from(safe_arch::move_mask_i8_m128i(v[i]) as u16) << (16 * i);
    lane(0) | lane(1) | lane(2) | lane(3)
}

/// The masks, all empty when the block has no quote, backslash or control character (most
/// of a long string's blocks), which one test finds.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn masks(block: &[u8; 64]) -> Masks {
    use safe_arch::{
        bitor_m128i, cmp_eq_mask_i8_m128i, max_u8_m128i, min_u8_m128i, move_mask_i8_m128i,
        set_splat_i8_m128i,
    };
    let v = lanes(block);
    let each =
        |f: &dyn Fn(safe_arch::m128i) -> safe_arch::m128i| [f(v[0]), f(v[1]), f(v[2]), f(v[3])];
    let quote = set_splat_i8_m128i(b'"' as i8);
    let backslash = set_splat_i8_m128i(b'\\' as i8);
    let below_space = set_splat_i8_m128i(0x1f);
    // max(v, 0x1f) == 0x1f exactly when v < 0x20 (unsigned).
    let control = |v| cmp_eq_mask_i8_m128i(max_u8_m128i(v, below_space), below_space);
    let quotes = each(&|v| cmp_eq_mask_i8_m128i(v, quote));
    let backslashes = each(&|v| cmp_eq_mask_i8_m128i(v, backslash));
    let least = min_u8_m128i(min_u8_m128i(v[0], v[1]), min_u8_m128i(v[2], v[3]));
    let any_control = control(least);
    let or4 =
        |x: [safe_arch::m128i; 4]| bitor_m128i(bitor_m128i(x[0], x[1]), bitor_m128i(x[2], x[3]));
    if move_mask_i8_m128i(bitor_m128i(
        bitor_m128i(or4(quotes), or4(backslashes)),
        any_control,
    )) == 0
    {
        return Masks::default();
    }
    Masks {
        quote: bits(quotes),
        backslash: bits(backslashes),
        // Control characters are rare (JSON escapes them in strings): their own mask only
        // when the block has one.
        control: if move_mask_i8_m128i(any_control) != 0 {
            bits(each(&control))
        } else {
            0
        },
    }
}

/// Bytes `<= 0x20`: space and the control characters.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn low(block: &[u8; 64]) -> u64 {
    use safe_arch::{cmp_eq_mask_i8_m128i, max_u8_m128i, set_splat_i8_m128i};
    let v = lanes(block);
    let space = set_splat_i8_m128i(b' ' as i8);
    // max(v, 0x20) == 0x20 exactly when v <= 0x20 (unsigned).
    let low = |v| cmp_eq_mask_i8_m128i(max_u8_m128i(v, space), space);
    bits([low(v[0]), low(v[1]), low(v[2]), low(v[3])])
}

#[cfg(not(target_arch = "x86_64"))]
fn masks(block: &[u8; 64]) -> Masks {
    masks_bytewise(block)
}

#[cfg(not(target_arch = "x86_64"))]
fn low(block: &[u8; 64]) -> u64 {
    low_bytewise(block)
}

/// The portable classifier (and the reference the SSE2 one is tested against).
#[cfg(any(test, not(target_arch = "x86_64")))]
fn masks_bytewise(block: &[u8; 64]) -> Masks {
    let mut m = Masks::default();
    for (i, &b) in block.iter().enumerate() {
        let bit = 1u64 << i;
        match b {
            b'"' => m.quote |= bit,
            b'\\' => m.backslash |= bit,
            0..=0x1f => m.control |= bit,
            _ => {}
        }
    }
    m
}

#[cfg(any(test, not(target_arch = "x86_64")))]
fn low_bytewise(block: &[u8; 64]) -> u64 {
    block
        .iter()
        .enumerate()
        .fold(0, |m, (i, &b)| m | u64::from(b <= b' ') << i)
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

const EVEN: u64 = 0x5555_5555_5555_5555;
const ODD: u64 = !EVEN;

/// The bytes escaped by a backslash, from the block's backslashes, without a loop: a run of
/// backslashes escapes the byte after it when the run is odd-length (its backslashes pair up
/// as `\\` from its start). `carry` is 1 when the block's first byte is escaped by the last
/// backslash of the block before, and is set the same way for the next block.
fn escaped(backslash: u64, carry: &mut u64) -> u64 {
    // A first byte escaped from the block before is no escape itself.
    let runs = backslash & !*carry;
    let follows = runs << 1 | *carry;
    // In a run starting on an even bit, the backslashes on even bits escape the odd bits
    // after them, and the other way round. Adding its start bit to a run starting on an odd
    // bit clears it (the carry lands past its end), which tells the two kinds apart.
    let odd_starts = runs & ODD & !(runs << 1);
    let (even_runs, over) = odd_starts.overflowing_add(runs);
    *carry = u64::from(over);
    (EVEN ^ (even_runs << 1)) & follows
}

/// What a byte outside strings is (an index into [`GRAMMAR`]'s rows).
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

const CLASS: [u8; 256] = {
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

/// The byte after a backslash: 0 a one-byte escape, 1 `u` (four hex digits follow), 2 none.
static ESCAPE: [u8; 256] = {
    let mut t = [2; 256];
    let simple = b"\"\\/bfnrt";
    let mut i = 0;
    while i < simple.len() {
        t[simple[i] as usize] = 0;
        i += 1;
    }
    t[b'u' as usize] = 1;
    t
};

/// The walk's state: what the grammar allows next, times 16, plus 8 when the innermost open
/// container is an object. (A state plus a class indexes [`GRAMMAR`].)
mod state {
    /// After `{` or `[`: a key or `}`, a value or `]`.
    pub const FIRST: u8 = 0;
    /// After `,` in an object: a key.
    pub const KEY: u8 = 1 << 4;
    /// After a key: `:`.
    pub const COLON: u8 = 2 << 4;
    /// After `:`, or `,` in an array: a value.
    pub const VALUE: u8 = 3 << 4;
    /// After a value: `,` or the container's close.
    pub const NEXT: u8 = 4 << 4;
    /// Something the grammar does not allow was read (kept until the block's end).
    pub const ERROR: u8 = 5 << 4;
    /// Nothing read yet: the top-level `{`.
    pub const START: u8 = 6 << 4;
    /// After the top-level `}`: only whitespace.
    pub const DONE: u8 = 7 << 4;
    /// Added when the innermost container is an object.
    pub const OBJECT: u8 = 8;
}

/// The next state (without [`state::OBJECT`]) from a state and a class; `ERROR` for anything
/// the grammar does not allow. `START` and `DONE` are the top level's, which
/// [`Walk::top`] reads instead.
const GRAMMAR: [u8; 256] = {
    use class::{CLOSE_ARRAY, CLOSE_OBJECT, COMMA, OPEN_ARRAY, OPEN_OBJECT, QUOTE, SCALAR};
    use state::{ERROR, FIRST, KEY, NEXT, OBJECT, VALUE};
    const fn at(state: u8, class: u8) -> usize {
        (state | class) as usize
    }
    let mut t = [ERROR; 256];
    let values = [VALUE | OBJECT, VALUE, FIRST];
    let mut k = 0;
    while k < values.len() {
        let s = values[k];
        t[at(s, QUOTE)] = NEXT;
        t[at(s, SCALAR)] = NEXT;
        t[at(s, OPEN_OBJECT)] = FIRST;
        t[at(s, OPEN_ARRAY)] = FIRST;
        k += 1;
    }
    t[at(FIRST | OBJECT, QUOTE)] = state::COLON;
    t[at(KEY | OBJECT, QUOTE)] = state::COLON;
    t[at(state::COLON | OBJECT, class::COLON)] = VALUE;
    t[at(NEXT | OBJECT, COMMA)] = KEY;
    t[at(NEXT, COMMA)] = VALUE;
    t[at(FIRST | OBJECT, CLOSE_OBJECT)] = NEXT;
    t[at(NEXT | OBJECT, CLOSE_OBJECT)] = NEXT;
    t[at(FIRST, CLOSE_ARRAY)] = NEXT;
    t[at(NEXT, CLOSE_ARRAY)] = NEXT;
    t
};

/// How each class moves the stack of open containers (see [`Walk::stack`]): the stack
/// becomes `(stack * MUL[class] + ADD[class]) / 2`, which pushes a bit for `{` (1) and `[`
/// (0), pops one for `}` and `]`, and keeps the stack for the rest, without a branch. (The
/// stack is below [`TOO_DEEP`] there, so `stack * 4` does not overflow.) 256 entries, so that
/// a class indexes them unchecked; only the first 8 are read.
const MUL: [u64; 256] = {
    let mut t = [2; 256];
    t[class::OPEN_OBJECT as usize] = 4;
    t[class::OPEN_ARRAY as usize] = 4;
    t[class::CLOSE_OBJECT as usize] = 1;
    t[class::CLOSE_ARRAY as usize] = 1;
    t
};

const ADD: [u64; 256] = {
    let mut t = [0; 256];
    t[class::OPEN_OBJECT as usize] = 2;
    t
};

/// The stack at and past which the walk leaves the text to `serde_json`: 61 levels open.
const TOO_DEEP: u64 = 1 << 62;

/// The visit's tables in one place, so that one register addresses them all.
struct Tables {
    class: [u8; 256],
    keep: [u64; 256],
    grammar: [u8; 256],
    mul: [u64; 256],
    add: [u64; 256],
}

/// Per class, the bits of the stack the visit's rare-event test sees: none for a scalar.
const KEEP: [u64; 256] = {
    let mut t = [!0; 256];
    t[class::SCALAR as usize] = 0;
    t
};

static TABLES: Tables = Tables {
    class: CLASS,
    keep: KEEP,
    grammar: GRAMMAR,
    mul: MUL,
    add: ADD,
};

impl Tables {
    /// The stack after a byte of `class`.
    #[inline(always)]
    fn push_pop(&self, stack: u64, class: u8) -> u64 {
        let c = usize::from(class);
        stack.wrapping_mul(self.mul[c]).wrapping_add(self.add[c]) >> 1
    }
}

struct Walk<'a> {
    text: &'a str,
    bytes: &'a [u8],
    /// Whether the first byte of the next block is escaped (a block ended in an escape).
    escaped_carry: u64,
    /// All ones when the next block starts inside a string.
    in_string_carry: u64,
    /// One of [`state`]'s.
    state: u8,
    /// The open containers, one bit each (1 an object), the innermost lowest, above a 1 bit
    /// that marks the bottom: 1 outside the top-level object, 3 inside it.
    stack: u64,
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
            state: state::START,
            stack: 1,
            skip_to: 0,
            key: (0, 0),
            value_start: 0,
            fields: Vec::with_capacity(16),
        }
    }

    #[inline(always)]
    fn block(&mut self, base: usize, bytes: &[u8; 64]) -> Option<()> {
        let m = masks(bytes);
        if m == Masks::default() && self.escaped_carry == 0 && self.in_string_carry != 0 {
            return Some(()); // all inside one string, and nothing in it to check
        }
        let escaped = escaped(m.backslash, &mut self.escaped_carry);
        // Each escaped byte must make an escape (outside strings a backslash is refused
        // anyway: it is visited, and no class takes it). An escaped quote or backslash (two
        // in three of an agent body's escapes) is one, as its mask says: only the others are
        // looked up.
        let mut check = escaped & !(m.quote | m.backslash);
        while check != 0 {
            let i = check.trailing_zeros() as usize;
            check &= check - 1;
            let kind = ESCAPE[usize::from(bytes[i & 63])];
            if kind != 0 {
                self.unicode_escape(base + i, kind)?;
            }
        }
        let quotes = m.quote & !escaped;
        if quotes == 0 && self.in_string_carry != 0 {
            // All inside one string that has escapes (a prompt's newlines): nothing to visit.
            return (m.control == 0).then_some(());
        }
        let in_string = prefix_xor(quotes) ^ self.in_string_carry;
        self.in_string_carry = ((in_string as i64) >> 63) as u64;
        if m.control & in_string != 0 {
            return None; // a raw control character in a string
        }
        let outside = !in_string;
        let mut blanks = m.control & outside;
        while blanks != 0 {
            let i = blanks.trailing_zeros() as usize;
            if !matches!(bytes[i & 63], b'\t' | b'\n' | b'\r') {
                return None;
            }
            blanks &= blanks - 1;
        }
        // Outside strings every byte but whitespace and closing quotes is visited; inside,
        // only the opening quote. (A block all inside strings needs no whitespace mask.)
        let mut visit = quotes & in_string;
        if outside != 0 {
            visit |= outside & !low(bytes) & !quotes;
        }
        if self.skip_to > base {
            visit &= after(self.skip_to - base);
        }
        // The state in locals, written back once.
        let mut state = self.state;
        let mut stack = self.stack;
        let mut deep = 0;
        while visit != 0 {
            let i = visit.trailing_zeros() as usize;
            visit &= visit - 1;
            let class = TABLES.class[usize::from(bytes[i & 63])];
            // A scalar, or the top-level object's own fields (or outside it): the rare events,
            // found by one test (`keep` clears the stack for a scalar).
            if stack & TABLES.keep[usize::from(class)] < 4 {
                if class == class::SCALAR {
                    let end = self.scalar_end(base + i)?;
                    visit &= after(end - base);
                    self.skip_to = end;
                }
                if stack < 4 {
                    (state, stack) = self.top(base + i, class, state, stack)?;
                    continue;
                }
            }
            deep |= stack;
            state = TABLES.grammar[usize::from(state | class)];
            stack = TABLES.push_pop(stack, class);
            state |= (stack as u8 & 1) << 3;
        }
        self.state = state;
        self.stack = stack;
        // Past the depth limit the stack may have overflowed: refused, whatever it read.
        (state & !state::OBJECT != state::ERROR && deep < TOO_DEEP).then_some(())
    }

    /// Checks the escaped byte at `p`, of `kind` ([`ESCAPE`]) 1 or 2: `u` and four hex digits.
    #[cold]
    fn unicode_escape(&self, p: usize, kind: u8) -> Option<()> {
        let hex = self.bytes.get(p + 1..p + 5)?;
        (kind == 1 && hex.iter().all(u8::is_ascii_hexdigit)).then_some(())
    }

    /// Takes the byte at `p` of `class` outside any container or in the top-level object's
    /// own fields: the next state and stack, and the top-level field's places.
    #[inline(never)]
    fn top(&mut self, p: usize, class: u8, st: u8, stack: u64) -> Option<(u8, u64)> {
        use state::{COLON, DONE, ERROR, FIRST, KEY, NEXT, OBJECT, START, VALUE};
        let st = st & !OBJECT;
        match stack {
            1 if st == START && class == class::OPEN_OBJECT => return Some((FIRST | OBJECT, 3)),
            3 => {}
            _ => return None, // past the top-level object (or a stack past the depth limit)
        }
        match class {
            class::QUOTE if st == FIRST || st == KEY => self.key.0 = p,
            class::COLON if st == COLON => {
                self.key.1 = self.trim_end(p)?.checked_sub(1)?;
            }
            class::COMMA if st == NEXT => self.end_field(p)?,
            class::CLOSE_OBJECT if st == NEXT || st == FIRST => {
                if st == NEXT {
                    self.end_field(p)?;
                }
                return Some((DONE, 1));
            }
            _ if st == VALUE => self.value_start = p,
            _ => {}
        }
        let next = GRAMMAR[usize::from(st | OBJECT | class)];
        let stack = TABLES.push_pop(stack, class);
        (next != ERROR).then_some((next | ((stack as u8 & 1) << 3), stack))
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
        (self.state == state::DONE && self.stack == 1 && self.in_string_carry == 0)
            .then_some(self.fields)
    }
}

/// The bits from `k` up (none when `k` is 64 or more).
fn after(k: usize) -> u64 {
    if k < 64 {
        !0 << k
    } else {
        0
    }
}

#[cfg(test)]
#[path = "split_tests.rs"]
mod tests;
