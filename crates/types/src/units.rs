//! Prices and durations as manifests write them, parsed without floating point.

use std::time::Duration;

use serde::Serialize;

/// Errors from parsing durations and decimal prices.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The duration string is not a Go-style duration.
    #[error("invalid duration {0:?}: expected a Go-style duration such as \"500ms\", \"2s\" or \"1m30s\"")]
    Duration(String),
    /// The price is not a non-negative decimal.
    #[error("invalid price {0:?}: expected a non-negative decimal string such as \"2.50\" with at most 6 decimal places")]
    Price(String),
}

/// Parses a Go-style duration (`300ms`, `2s`, `1m30s`, `1h`, `1.5s`, `250us`).
///
/// A bare `0` is accepted, as in Go; negative durations are not, since every use is a timeout
/// or back-off.
pub fn parse_duration(s: &str) -> Result<Duration, ParseError> {
    let err = || ParseError::Duration(s.to_string());
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(err());
    }
    let mut rest = s;
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        if num_len == 0 {
            return Err(err());
        }
        let (num, tail) = rest.split_at(num_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            _ => return Err(err()),
        };
        let (int_part, frac_part) = match num.split_once('.') {
            Some((i, f)) => (i, f),
            None => (num, ""),
        };
        if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
            return Err(err());
        }
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| err())?
        };
        let mut nanos = int.checked_mul(unit_nanos).ok_or_else(err)?;
        if !frac_part.is_empty() {
            let digits = frac_part.len().min(18) as u32;
            let frac: u128 = frac_part[..digits as usize].parse().map_err(|_| err())?;
            // `frac * unit_nanos` stays far below u128::MAX (< 10^18 * 3.6 * 10^12); the sum
            // with a whole part at the top of the range does not.
            nanos = nanos
                .checked_add(frac * unit_nanos / 10u128.pow(digits))
                .ok_or_else(err)?;
        }
        total_nanos = total_nanos.checked_add(nanos).ok_or_else(err)?;
        rest = tail;
    }
    let secs = u64::try_from(total_nanos / 1_000_000_000).map_err(|_| err())?;
    Ok(Duration::new(secs, (total_nanos % 1_000_000_000) as u32))
}

/// A price in micro-USD per million tokens, parsed from a decimal string without going
/// through floating point, so "0.15" is exactly 150000 and sums do not drift.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct MicroUsd(pub u64);

/// Parses a non-negative decimal USD amount with at most 6 fractional digits.
pub fn parse_price(s: &str) -> Result<MicroUsd, ParseError> {
    let err = || ParseError::Price(s.to_string());
    let t = s.trim();
    let (int_part, frac_part) = match t.split_once('.') {
        Some((i, f)) => (i, f),
        None => (t, ""),
    };
    let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if int_part.is_empty() || !all_digits(int_part) || !all_digits(frac_part) {
        return Err(err());
    }
    if t.contains('.') && frac_part.is_empty() {
        return Err(err());
    }
    if frac_part.len() > 6 {
        return Err(err());
    }
    let int: u64 = int_part.parse().map_err(|_| err())?;
    let mut frac: u64 = if frac_part.is_empty() {
        0
    } else {
        frac_part.parse().map_err(|_| err())?
    };
    for _ in frac_part.len()..6 {
        frac *= 10;
    }
    int.checked_mul(1_000_000)
        .and_then(|v| v.checked_add(frac))
        .map(MicroUsd)
        .ok_or_else(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        for bad in ["", "5", "s", "-1s", "1x", "1..5s", "ms", ".s", "1s2"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn prices() {
        assert_eq!(parse_price("2.50").unwrap(), MicroUsd(2_500_000));
        assert_eq!(parse_price("0.15").unwrap(), MicroUsd(150_000));
        assert_eq!(parse_price("10").unwrap(), MicroUsd(10_000_000));
        assert_eq!(parse_price("0.000001").unwrap(), MicroUsd(1));
        for bad in ["", "-1", "1.", ".5", "1.0000001", "abc", "1e3", "1,5"] {
            assert!(parse_price(bad).is_err(), "{bad:?} should not parse");
        }
    }
}
