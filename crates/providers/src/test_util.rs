//! Helpers shared by the fixture tests of every format. Inputs under `fixtures/` are written
//! from the providers' public API references; outputs are golden files under
//! `fixtures/golden/` (reviewed by hand; `SWITCHYARD_UPDATE_GOLDEN=1` rewrites them).

use serde_json::{json, Value};

use crate::{
    sse,
    transcode::{BackendFormat, Format, Transcoder},
};

/// `doc` with one to three bytes replaced, removed or inserted (from `alphabet`): the
/// mutations the differential tests hold a fast path to its reference on.
pub(crate) fn mutate(rng: &mut fastrand::Rng, doc: &[u8], alphabet: &[u8]) -> Vec<u8> {
    let mut d = doc.to_vec();
    for _ in 0..rng.usize(1..4) {
        let at = rng.usize(..d.len());
        match rng.u8(..3) {
            0 => d[at] = alphabet[rng.usize(..alphabet.len())],
            1 => {
                d.remove(at);
            }
            _ => d.insert(at, alphabet[rng.usize(..alphabet.len())]),
        }
    }
    d
}

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures");

pub(crate) fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{name}")).unwrap()
}

/// Compares `actual` with the golden file, or rewrites it when asked to.
pub(crate) fn golden(name: &str, actual: &Value) {
    let path = format!("{FIXTURES}/golden/{name}");
    let pretty = serde_json::to_string_pretty(actual).unwrap() + "\n";
    if std::env::var_os("SWITCHYARD_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(format!("{FIXTURES}/golden")).unwrap();
        std::fs::write(&path, pretty).unwrap();
        return;
    }
    let expected: Value = serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|_| {
        panic!("missing {path}: run with SWITCHYARD_UPDATE_GOLDEN=1 and review it")
    }))
    .unwrap();
    assert_eq!(actual, &expected, "{name} differs from its golden file");
}

/// `created` and generated ids vary per run; everything else must match.
pub(crate) fn normalise(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        if o.contains_key("created") {
            o.insert("created".into(), json!(0));
        }
    }
    v
}

/// SSE bytes as `[{event, data}]` for golden comparison.
pub(crate) fn sse_events(bytes: &[u8]) -> Value {
    let mut p = sse::Parser::new();
    p.push(bytes).unwrap();
    let mut out = Vec::new();
    while let Some(e) = p.next_event() {
        let data = if &e.data[..] == b"[DONE]" {
            json!("[DONE]")
        } else {
            normalise(serde_json::from_slice(&e.data).unwrap())
        };
        let name = e.event.map(|n| String::from_utf8(n.to_vec()).unwrap());
        out.push(json!({"event": name, "data": data}));
    }
    assert_eq!(p.pending(), 0);
    Value::Array(out)
}

/// Feeds `input` through a transcoder in pieces cut at `splits`.
pub(crate) fn transcode(
    from: impl Into<BackendFormat>,
    to: Format,
    input: &[u8],
    splits: &[usize],
) -> Vec<u8> {
    let mut parser = sse::Parser::new();
    let mut t = Transcoder::new(from, to, true);
    let mut out = Vec::new();
    let mut last = 0;
    for &s in splits.iter().chain(std::iter::once(&input.len())) {
        parser.push(&input[last..s]).unwrap();
        last = s;
        while let Some(ev) = parser.next_event() {
            t.on_event(&ev.data, &mut out);
        }
    }
    if let Some(ev) = parser.finish() {
        t.on_event(&ev.data, &mut out);
    }
    t.finish(&mut out);
    out
}
