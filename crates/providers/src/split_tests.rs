//! The walk against `serde_json`: it must accept exactly what serde accepts (on texts no
//! deeper than its limit) and split them the same way.

use super::*;
use proptest::prelude::*;
use serde_json::{json, Value};

const BODIES: [&[u8]; 3] = [
    include_bytes!("../../../bench/bodies/claude-code.json"),
    include_bytes!("../../../bench/bodies/codex.json"),
    include_bytes!("../../../bench/bodies/openai-70k-model-last.json"),
];

/// Both splitters agree on `text`: the same verdict, and when accepted the same fields.
/// Returns the verdict.
#[track_caller]
fn agree(text: &[u8]) -> bool {
    let reference = split_serde(text).ok();
    let walked = split(text);
    assert_eq!(
        walked,
        reference,
        "walk and serde disagree on {:?}",
        String::from_utf8_lossy(text)
    );
    walked.is_some()
}

#[test]
fn splits_agent_bodies_as_serde_does() {
    for body in BODIES {
        let fields = split(body).expect("a real agent body is accepted");
        assert!(fields.iter().any(|(k, _)| k == "model"));
        agree(body);
    }
}

#[test]
fn hand_picked_texts() {
    let accepted = [
        r#"{}"#,
        " \t\r\n{ } \n",
        r#"{"model":"gpt-4o","stream":true}"#,
        r#"{ "a" : 1 , "b" : [ 1 , 2 ] , "c" : { "d" : null } }"#,
        r#"{"a":-0,"b":0.5,"c":1e5,"d":-1.25E-3,"e":1E+2,"f":10}"#,
        r#"{"a":true,"b":false,"c":null,"d":"","e":[],"f":{}}"#,
        r#"{"k\"ey":"v\\","\u00e9":"\ud83d\ude00","x":"\/\b\f\n\r\t"}"#,
        r#"{"dup":1,"dup":2}"#,
        r#"{"a":"\\\\\"","b":"\\"}"#,
        r#"{"a":"é ü 日本 😀"}"#,
        r#"{"a":[[[[[]]]]],"b":{"c":{"d":{}}}}"#,
        r#"{"a":"1"}"#,
        r#"{"a":1,"b":"\ud800"}"#,
    ];
    let refused = [
        "",
        " ",
        "[]",
        r#""s""#,
        "1",
        "{",
        "}",
        r#"{"a"}"#,
        r#"{"a":}"#,
        r#"{"a":1,}"#,
        r#"{,"a":1}"#,
        r#"{"a":1 "b":2}"#,
        r#"{"a"::1}"#,
        r#"{"a":1}}"#,
        r#"{"a":1}x"#,
        r#"{"a":1}{}"#,
        r#"{"a":01}"#,
        r#"{"a":1.}"#,
        r#"{"a":.5}"#,
        r#"{"a":1e}"#,
        r#"{"a":+1}"#,
        r#"{"a":--1}"#,
        r#"{"a":tru}"#,
        r#"{"a":truex}"#,
        r#"{"a":nul}"#,
        r#"{"a":True}"#,
        r#"{"a":"x}"#,
        r#"{"a":"x\"}"#,
        r#"{"a":"\x"}"#,
        r#"{"a":"\u12G4"}"#,
        r#"{"a":"\u12"}"#,
        "{\"a\":\"x\ty\"}",
        "{\"a\":\"x\u{1}y\"}",
        "{\"a\":1\u{0b}}",
        r#"{"a":[1,2}"#,
        r#"{"a":{"b":1]}"#,
        r#"{"a":[1,]}"#,
        r#"{"a":1}\"#,
        r#"{"a":\"x"}"#,
        r#"{"a":1\"b":2}"#,
        r#"{"a""b":1}"#,
        r#"{1:2}"#,
        r#"{"a":'x'}"#,
        r#"{"a":"x""y"}"#,
        r#"{"\ud800":1}"#,
    ];
    for text in accepted {
        assert!(split(text.as_bytes()).is_some(), "walk refused {text:?}");
        agree(text.as_bytes());
    }
    for text in refused {
        assert!(split(text.as_bytes()).is_none(), "walk accepted {text:?}");
        agree(text.as_bytes());
    }
    agree(b"{\"a\":\"\xff\"}");
    agree(b"{\"a\":1}\xc3");
}

#[test]
fn nesting_past_the_limit_is_left_to_serde() {
    // serde skips a raw value's nesting without a depth limit.
    let deep = |n: usize| format!(r#"{{"a":{}1{}}}"#, "[".repeat(n), "]".repeat(n));
    assert!(split(deep(50).as_bytes()).is_some());
    assert!(split(deep(200).as_bytes()).is_none());
    let text = deep(200);
    let fields = fields(text.as_bytes()).expect("serde takes what the walk leaves");
    assert_eq!(fields.len(), 1);
}

/// Escapes and quotes on every position around the 64-byte block edges.
#[test]
fn block_edges() {
    for pad in 0..140 {
        for tail in [r#"\""#, r#"\\"#, r#"\\\""#, r#"\u0041"#, "é", r#"\n"#] {
            let text = format!(
                r#"{{"k":"{}{tail}","z":[1,{{"q":"{tail}"}}]}}"#,
                "x".repeat(pad)
            );
            assert!(split(text.as_bytes()).is_some(), "{text}");
            agree(text.as_bytes());
            let open = format!(r#"{{"k":"{}{tail}"#, "x".repeat(pad));
            agree(open.as_bytes());
            let key = format!(r#"{{"{}{tail}":{pad}}}"#, "y".repeat(pad));
            agree(key.as_bytes());
        }
    }
}

/// Long strings, as an agent's prompt is: one string over several blocks (most of them
/// taken by the early return for a block inside a string), with an escape, an escaped
/// quote, a raw control character, a bad escape or the closing quote on every position of a
/// later block, a second one a block further on, and the string left open to the end.
#[test]
fn long_strings_across_blocks() {
    let specials = [
        r#"\""#,
        r#"\\"#,
        r#"\n"#,
        r#"\u00e9"#,
        r#"\uD83D"#,
        r#"\u12"#,
        r#"\q"#,
        "\n",
        "\u{1}",
        "\u{7f}",
        r#"""#,
        r#"\"#,
        "é",
        "€",
    ];
    for at in 0..260 {
        for special in specials {
            for (then, after) in [("", 0), (special, 64), (r#"\\"#, 63), ("x", 1)] {
                let body = format!("{}{special}{}{then}", "a".repeat(at), "b".repeat(after));
                agree(format!(r#"{{"k":"{body}","z":[1,"{body}"]}}"#).as_bytes());
                agree(format!(r#"{{"k":"{body}"#).as_bytes());
                agree(format!(r#"{{"k":["{body}"]"#).as_bytes());
            }
        }
    }
}

/// The walk either agrees with serde or leaves the text to it (`None`), and never accepts
/// what serde refuses: for texts past the walk's depth limit.
#[track_caller]
fn agree_or_defer(text: &[u8]) {
    let reference = split_serde(text).ok();
    let walked = split(text);
    assert!(
        walked.is_none() || walked == reference,
        "walk accepted differently from serde: {:?}",
        String::from_utf8_lossy(text)
    );
}

/// Runs of backslashes of every length up to past a block, ending anywhere around the block
/// edges, before a quote, a letter, `u` with hex digits (split by the edge too) and the text's
/// end: in values and in keys.
#[test]
fn backslash_runs_across_block_edges() {
    for pad in 0..70 {
        for run in 1..=70 {
            let slashes = "\\".repeat(run);
            for after in ["\"", "n", "u00e9", "uD83D", "u12", "x", "/", ""] {
                let value = format!(r#"{{"k":"{}{slashes}{after}","z":1}}"#, "x".repeat(pad));
                agree(value.as_bytes());
                let key = format!(r#"{{"{}{slashes}{after}":1}}"#, "y".repeat(pad));
                agree(key.as_bytes());
                let open = format!(r#"{{"k":"{}{slashes}{after}"#, "x".repeat(pad));
                agree(open.as_bytes());
            }
        }
    }
}

/// `\u` escapes with their hex digits on both sides of a block edge, good and bad, and lone
/// surrogates: accepted in values (serde skips them unchecked), refused in keys (serde
/// decodes those).
#[test]
fn unicode_escapes_across_block_edges() {
    let escapes = [
        r"\u0041",
        r"\uD800",
        r"\udfff",
        r"\uD83D\uDE00",
        r"\u00G1",
        r"\u004",
        r"\uZZZZ",
        r"\u+041",
    ];
    for pad in 0..140 {
        for escape in escapes {
            let value = format!(r#"{{"k":"{}{escape}","z":[{escape:?}]}}"#, "x".repeat(pad));
            agree(value.as_bytes());
            let key = format!(r#"{{"{}{escape}":"v"}}"#, "y".repeat(pad));
            agree(key.as_bytes());
            let nested_key = format!(r#"{{"a":{{"{}{escape}":1}}}}"#, "y".repeat(pad));
            agree(nested_key.as_bytes());
        }
    }
}

/// Numbers and literals starting and ending on every position around the block edges, whole
/// and cut short, at the top level and nested.
#[test]
fn scalars_at_block_edges() {
    let scalars = [
        "0",
        "-0",
        "12345678901234567890",
        "1.5e-7",
        "-2.25E+10",
        "true",
        "false",
        "null",
        "tru",
        "nul",
        "1.",
        "-",
        "1e",
        "01",
        "truee",
        "1x",
    ];
    for pad in 0..140 {
        for scalar in scalars {
            let top = format!(r#"{{"{}":{scalar}}}"#, "k".repeat(pad));
            agree(top.as_bytes());
            let nested = format!(r#"{{"a":[{},{scalar},{scalar}]}}"#, "1".repeat(pad + 1));
            agree(nested.as_bytes());
            let spaced = format!("{{\"a\":{{\"b\":{}{scalar} }}}}", " ".repeat(pad));
            agree(spaced.as_bytes());
            let cut = format!(r#"{{"{}":{scalar}"#, "k".repeat(pad));
            agree(cut.as_bytes());
        }
    }
}

/// Nesting up to and past the walk's limit, across block edges, with the brackets balanced
/// or not: below the limit the walk agrees with serde; past it, it may leave the text to
/// serde but never accepts an unbalanced one.
#[test]
fn deep_nesting_around_the_limit() {
    let mut rng = fastrand::Rng::with_seed(3);
    for depth in 1..80 {
        for _ in 0..8 {
            let kinds: Vec<bool> = (0..depth).map(|_| rng.bool()).collect();
            let mut text = String::from(r#"{"a":"#);
            for &object in &kinds {
                text.push_str(if object { r#"{"k":"# } else { "[" });
            }
            text.push('1');
            for &object in kinds.iter().rev() {
                text.push(if object { '}' } else { ']' });
            }
            text.push('}');
            if depth < 60 {
                assert!(split(text.as_bytes()).is_some(), "depth {depth}");
                agree(text.as_bytes());
            } else {
                agree_or_defer(text.as_bytes());
            }
            // One bracket too few, too many, or of the wrong kind.
            let cut = rng.usize(..text.len());
            for broken in [
                format!("{}{}", &text[..cut], &text[cut + 1..]),
                text.replacen('}', "]", 1),
                text.replacen(']', "}", 1),
                format!("{}]", &text[..text.len() - 1]),
                format!("{text}}}"),
            ] {
                agree_or_defer(broken.as_bytes());
            }
        }
    }
    // Past the limit with objects only, then closed one short: a stack that had lost its
    // bottom past 62 levels would read 61 closes as reaching the top-level object again.
    for depth in 58..70 {
        for closes in depth - 2..=depth + 2 {
            let text = format!(
                r#"{{"a":{}1{}}}"#,
                r#"{"k":"#.repeat(depth),
                "}".repeat(closes)
            );
            agree_or_defer(text.as_bytes());
        }
    }
    // Past the limit, then back out past the top: the stack must not wrap into a valid one.
    for extra in 0..5 {
        let text = format!(
            r#"{{"a":{}{}}}"#,
            "[".repeat(64 + extra),
            "]".repeat(62 + extra)
        );
        assert!(split(text.as_bytes()).is_none());
        agree_or_defer(text.as_bytes());
    }
}

#[test]
fn sse2_masks_match_the_bytewise_ones() {
    let mut rng = fastrand::Rng::with_seed(11);
    let alphabet = b"\"\\ \t\n\r\x00\x1f\x20\x21\x7f\x80\xff{}[]:,aZ09";
    for round in 0..20_000 {
        let mut block = [0u8; 64];
        for b in block.iter_mut() {
            *b = if rng.bool() {
                alphabet[rng.usize(..alphabet.len())]
            } else {
                rng.u8(..)
            };
        }
        if round % 2 == 0 {
            // Plain text with at most one byte of the alphabet: the blocks a string is made
            // of, which the SSE2 classifier answers with one test.
            for b in block.iter_mut() {
                *b = rng.u8(0x20..0x7f).max(b'#');
            }
            if round % 4 == 0 {
                block[rng.usize(..64)] = alphabet[rng.usize(..alphabet.len())];
            }
        }
        assert_eq!(masks(&block), masks_bytewise(&block));
        assert_eq!(low(&block), low_bytewise(&block));
    }
}

/// Every byte value on every position of an otherwise plain block (ASCII letters, or bytes
/// of multi-byte characters): the one-test answer for plain blocks stops at exactly the
/// quotes, backslashes and control characters.
#[test]
fn sse2_masks_take_every_byte_on_every_position() {
    for fill in [b'a', b'#', b' ', 0x7f, 0x80, 0xa2, 0xdc, 0xff] {
        for at in 0..64 {
            for b in 0..=255u8 {
                let mut block = [fill; 64];
                block[at] = b;
                assert_eq!(masks(&block), masks_bytewise(&block), "{b:#x} at {at}");
            }
        }
    }
}

/// The escaped bytes of consecutive blocks, against a byte-at-a-time reading: runs of
/// backslashes of every length, across the blocks' edges.
#[test]
fn escaped_bytes_match_a_bytewise_reading() {
    let mut rng = fastrand::Rng::with_seed(5);
    for round in 0..20_000 {
        let blocks = 1 + round % 3;
        let density = rng.u32(1..=8);
        let bits: Vec<bool> = (0..64 * blocks).map(|_| rng.u32(..8) < density).collect();
        let mut expected = vec![false; bits.len() + 1];
        let mut escaping = false;
        for (i, &backslash) in bits.iter().enumerate() {
            if escaping {
                expected[i] = true;
                escaping = false;
            } else {
                escaping = backslash;
            }
        }
        expected[bits.len()] = escaping;
        let mut carry = 0;
        for (k, block) in bits.chunks(64).enumerate() {
            let mask = block
                .iter()
                .enumerate()
                .fold(0u64, |m, (i, &b)| m | u64::from(b) << i);
            let got = escaped(mask, &mut carry);
            for i in 0..64 {
                assert_eq!(
                    got >> i & 1 == 1,
                    expected[64 * k + i],
                    "{bits:?} at {}",
                    64 * k + i
                );
            }
        }
        assert_eq!(carry == 1, expected[bits.len()]);
    }
}

/// Single edits of real bodies and generated ones, at random places: whatever the walk
/// accepts serde accepts, split the same, and the other way round.
#[test]
fn mutated_texts_agree() {
    let mut rng = fastrand::Rng::with_seed(23);
    let interesting = b"\"\\{}[]:, \t\n\r0123456789-+.eEtrufalsn\x00\x1f\x7fu";
    let small = json!({
        "model": "m", "stream": true, "n": [1, -2.5e3, null, false],
        "messages": [{"role": "user", "content": "a \"quoted\" \\ line\n\u{e9}\u{1F600}"}],
        "tools": {"x": {"y": []}}
    })
    .to_string();
    let pretty =
        serde_json::to_string_pretty(&serde_json::from_str::<Value>(&small).unwrap()).unwrap();
    let mut seeds: Vec<Vec<u8>> = vec![small.into_bytes(), pretty.into_bytes()];
    seeds.extend(BODIES.iter().map(|b| b.to_vec()));
    let mut accepted = 0;
    for round in 0..3_000 {
        let seed = &seeds[round % seeds.len()];
        let mut text = seed.clone();
        for _ in 0..rng.usize(1..=3) {
            let at = rng.usize(..=text.len());
            let byte = interesting[rng.usize(..interesting.len())];
            match rng.u8(..3) {
                0 if at < text.len() => {
                    text.remove(at);
                }
                1 if at < text.len() => text[at] = byte,
                _ => text.insert(at, byte),
            }
        }
        accepted += usize::from(agree(&text));
    }
    // Both verdicts well represented: the edits are neither all harmless nor all fatal.
    assert!(
        (600..2_400).contains(&accepted),
        "{accepted} of 3000 accepted"
    );
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        "[\"\\\\/a-z\u{0}-\u{1f} é😀]{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((any::<String>(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn generated_objects_agree(
        fields in prop::collection::vec(("[a-z\"\\\\é]{0,8}", value()), 0..8),
        pretty in any::<bool>(),
    ) {
        let object = Value::Object(fields.into_iter().collect());
        let text = if pretty {
            serde_json::to_string_pretty(&object).unwrap()
        } else {
            object.to_string()
        };
        prop_assert!(split(text.as_bytes()).is_some());
        agree(text.as_bytes());
    }
}

/// Splits one of [`BODIES`] (`SPLIT_BODY`, an index) `SPLIT_N` times: for counting the
/// walk's instructions under callgrind (run twice with different counts and subtract).
#[test]
#[ignore = "a measurement harness, run by hand"]
fn split_repeatedly() {
    let n: usize = std::env::var("SPLIT_N").map_or(1, |v| v.parse().unwrap());
    let body: usize = std::env::var("SPLIT_BODY").map_or(0, |v| v.parse().unwrap());
    for _ in 0..n {
        let fields = split(std::hint::black_box(BODIES[body])).unwrap();
        std::hint::black_box(fields);
    }
}
