//! Byte tests on eight bytes at once (SIMD within a register), for the scans that look for
//! the few bytes a JSON string cannot hold as they are: the request-body walker and the
//! access log's string writer.

const ONES: u64 = 0x0101_0101_0101_0101;

/// A mask with the high bit set in (at least) the lowest byte of `v` equal to `c`: only the
/// lowest flag is exact (a borrow may flag bytes above it), which is all a search or a
/// yes/no test needs.
#[inline(always)]
pub fn flag(v: u64, c: u8) -> u64 {
    let x = v ^ (ONES * u64::from(c));
    x.wrapping_sub(ONES) & !x & (ONES << 7)
}

/// A mask with the high bit set in (at least) the lowest byte of `v` below `n` (`n` <= 128),
/// exact in the same way as [`flag`].
#[inline(always)]
pub fn below(v: u64, n: u8) -> u64 {
    v.wrapping_sub(ONES * u64::from(n)) & !v & (ONES << 7)
}

/// [`flag`]s for the bytes that end or must be escaped in a JSON string: `"`, `\` and the
/// control characters.
#[inline(always)]
pub fn json_string_stop(v: u64) -> u64 {
    flag(v, b'"') | flag(v, b'\\') | below(v, 0x20)
}
