//! `parse_duration` and `parse_price` never panic, whatever the text, and read every
//! well-formed value exactly. Seeded, with a case count from `PROPTEST_CASES` (as the other
//! crates' property tests; `make fuzz` raises it): this crate has no random-number
//! dependency, so a SplitMix64 stands in.

use std::time::Duration;

use switchyard_api::{parse_duration, parse_price, MicroUsd};

fn cases() -> u64 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse::<u64>().ok())
        .map_or(20_000, |c| c.saturating_mul(80))
}

/// SplitMix64: enough randomness to generate text, with a fixed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    /// 1 to `max` digits, often a single one.
    fn digits(&mut self, max: usize) -> String {
        let n = if self.below(2) == 0 {
            1
        } else {
            1 + self.below(max)
        };
        (0..n)
            .map(|_| char::from(b'0' + self.below(10) as u8))
            .collect()
    }
}

const UNITS: [(&str, u128); 7] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// Text made of what a duration is made of, in any order.
fn duration_soup(rng: &mut Rng) -> String {
    let pieces = [
        "0",
        "1",
        "9",
        ".",
        "..",
        "ns",
        "us",
        "µs",
        "µ",
        "ms",
        "s",
        "m",
        "h",
        " ",
        "-",
        "+",
        "x",
        "e3",
        "\u{0}",
        "340282366920938463463374607431768211455",
        "18446744073709551616",
        "999999999999999999999999999",
    ];
    let n = rng.below(8);
    (0..n).map(|_| rng.pick(&pieces)).collect()
}

/// A Go-style duration of one to four `<number><unit>` terms, numbers up to 45 digits, and
/// its exact length in nanoseconds (`None` when the sum does not fit the parser's range).
fn well_formed_duration(rng: &mut Rng) -> (String, Option<u128>) {
    let mut text = String::new();
    let mut total: Option<u128> = Some(0);
    for _ in 0..1 + rng.below(4) {
        let int = if rng.below(5) == 0 {
            String::new()
        } else {
            rng.digits(45)
        };
        let frac = if rng.below(3) == 0 {
            Some(rng.digits(25))
        } else {
            None
        };
        if int.is_empty() && frac.is_none() {
            continue;
        }
        let (unit, scale) = UNITS[rng.below(UNITS.len())];
        text.push_str(&int);
        if let Some(f) = &frac {
            text.push('.');
            text.push_str(f);
        }
        text.push_str(unit);
        // What the parser computes: the integer part times the unit, plus at most 18 digits
        // of the fraction times the unit, truncated.
        let whole = if int.is_empty() {
            Some(0)
        } else {
            int.parse::<u128>().ok()
        };
        let part = whole.and_then(|w| w.checked_mul(scale)).and_then(|n| {
            let Some(f) = &frac else { return Some(n) };
            let kept = &f[..f.len().min(18)];
            let digits = u32::try_from(kept.len()).ok()?;
            let f: u128 = kept.parse().ok()?;
            n.checked_add(f * scale / 10u128.pow(digits))
        });
        total = total.zip(part).and_then(|(t, p)| t.checked_add(p));
    }
    if text.is_empty() {
        return ("0".into(), Some(0));
    }
    let fits = total.filter(|n| n / 1_000_000_000 <= u128::from(u64::MAX));
    (text, fits)
}

#[test]
fn durations_never_panic_and_read_exactly() {
    let mut rng = Rng(0xD00A_710A);
    for _ in 0..cases() {
        let soup = duration_soup(&mut rng);
        let _ = parse_duration(&soup);
        let (text, nanos) = well_formed_duration(&mut rng);
        let got = parse_duration(&text);
        match nanos {
            Some(n) => {
                let secs = u64::try_from(n / 1_000_000_000).unwrap();
                let expected = Duration::new(secs, (n % 1_000_000_000) as u32);
                assert_eq!(got, Ok(expected), "{text:?}");
            }
            None => assert!(got.is_err(), "{text:?} is out of range: {got:?}"),
        }
    }
}

#[test]
fn prices_never_panic_and_read_exactly() {
    let mut rng = Rng(0x0009_21CE);
    let pieces = [
        "0",
        "1",
        "9",
        ".",
        "-",
        " ",
        "e",
        "18446744073709",
        "999999999999",
    ];
    for _ in 0..cases() {
        let soup: String = (0..rng.below(6)).map(|_| rng.pick(&pieces)).collect();
        let _ = parse_price(&soup);
        let int = rng.digits(22);
        let frac = (rng.below(2) == 0).then(|| rng.digits(6));
        let text = match &frac {
            Some(f) => format!("{int}.{f}"),
            None => int.clone(),
        };
        let expected = int.parse::<u64>().ok().and_then(|i| {
            let f = frac.as_deref().unwrap_or("");
            let micros = format!("{f:0<6}").parse::<u64>().ok()?;
            i.checked_mul(1_000_000)?.checked_add(micros)
        });
        assert_eq!(parse_price(&text).ok(), expected.map(MicroUsd), "{text:?}");
    }
}

#[test]
fn durations_at_the_edge_of_the_range() {
    assert_eq!(
        parse_duration("18446744073709551615s999999999ns"),
        Ok(Duration::MAX)
    );
    let max = u128::MAX.to_string();
    for text in [
        "18446744073709551616s".to_string(),
        format!("{max}ns"),
        format!("{max}.9ns"),
        format!("{}h", u128::MAX / 3_600_000_000_000),
    ] {
        assert!(parse_duration(&text).is_err(), "{text:?}");
    }
}

/// A fraction that carries the integer part's nanoseconds past `u128::MAX`: `parse_duration`
/// adds the fraction's share unchecked (crates/api/src/common.rs, `nanos += …`), which panics
/// in a debug build and wraps to a short duration in a release one. An upstream reaches it
/// through its `x-ratelimit-reset-*` headers (`switchyard_providers::ratelimit::rate_limit_hint`).
/// Found by this test; the fix (`checked_add`) belongs to the crate's own code.
#[test]
fn a_fraction_past_the_range_is_refused() {
    let text = format!("{}.999999999999999999h", u128::MAX / 3_600_000_000_000);
    assert!(parse_duration(&text).is_err(), "{text:?}");
}
