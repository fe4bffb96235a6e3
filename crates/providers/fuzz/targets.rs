//! Fuzz targets for the parsers of `switchyard-providers`: every byte an upstream or a caller
//! sends passes through one of them, so none may panic, whatever the bytes.
//!
//! Each target is a plain `fn(&[u8])` that panics only on a bug: a parser that panicked, or
//! an invariant the input broke (the same events whatever the chunking, a caller's stream
//! that is well-formed SSE of JSON objects, a translated body that is JSON …). Two drivers
//! share them: the corpus runner under `cargo test` (`tests/tests/fuzz.rs`: the seed corpus
//! plus seeded mutations, on the stable toolchain, bounded in time) and libFuzzer through
//! cargo-fuzz (`fuzz_targets/`, coverage-guided, `make fuzz`). The seed corpus of a target is
//! `corpus/<name>/`.

use serde_json::Value;
use switchyard_providers::{
    anthropic, bedrock,
    chat::{self, FinishReason, Part, ToolCall},
    error, eventstream,
    openai::{self, chat::Dialect},
    responses, scan, sse,
    transcode::{self, BackendFormat, Format, Transcoder},
    ErrorSource, OpenAiError, Operation, Usage,
};

/// A fuzz target: panics only on a bug.
pub type Target = fn(&[u8]);

/// Every target by name (the name is its corpus directory and its cargo-fuzz binary).
pub const TARGETS: &[(&str, Target)] = &[
    ("sse_framer", sse_framer),
    ("json_scanner", json_scanner),
    ("eventstream", eventstream),
    ("eventstream_frames", eventstream_frames),
    ("request_openai", request_openai),
    ("request_anthropic", request_anthropic),
    ("request_responses", request_responses),
    ("stream_openai", stream_openai),
    ("stream_anthropic", stream_anthropic),
    ("stream_gemini", stream_gemini),
    ("stream_bedrock", stream_bedrock),
    ("response_openai", response_openai),
    ("response_anthropic", response_anthropic),
    ("response_gemini", response_gemini),
    ("response_bedrock", response_bedrock),
    ("response_responses", response_responses),
    ("stream_responses", stream_responses),
    ("openai_chunk", openai_chunk),
    ("upstream_error", upstream_error),
];

// === framing ===

/// The SSE framer: the same events whatever the chunking, each event's raw bytes exactly
/// the input's, and field values free of line breaks.
pub fn sse_framer(data: &[u8]) {
    let whole = sse_frame(data, &[]);
    // Chunk sizes chosen by the input itself, so the fuzzer explores them too.
    let step = usize::from(data.first().map_or(1, |b| b % 11)) + 1;
    let splits: Vec<usize> = (step..data.len()).step_by(step).collect();
    assert_eq!(
        sse_frame(data, &splits),
        whole,
        "chunked every {step} bytes"
    );
    let byte_by_byte: Vec<usize> = (1..data.len().min(512)).collect();
    assert_eq!(sse_frame(data, &byte_by_byte), whole, "fed byte by byte");
    let (events, last) = whole;
    let mut consumed = 0;
    for e in events.iter().chain(&last) {
        assert!(!e.data.contains(&b'\r'), "CR inside data: {:?}", e.data);
        if let Some(name) = &e.event {
            assert!(!name.contains(&b'\r') && !name.contains(&b'\n'));
        }
        consumed += e.raw.len();
    }
    let raw: Vec<u8> = events.iter().flat_map(|e| e.raw.to_vec()).collect();
    assert_eq!(
        &raw[..],
        &data[..raw.len()],
        "raw bytes are not the input's"
    );
    if let Some(last) = last {
        // `finish` completes a final CR with the LF it held back for.
        assert_eq!(&last.raw[..], &[&data[raw.len()..], b"\n"].concat()[..]);
        assert_eq!(consumed, data.len() + 1);
    }
}

type Framed = (Vec<sse::Event>, Option<sse::Event>);

fn sse_frame(data: &[u8], splits: &[usize]) -> Framed {
    let mut p = sse::Parser::new();
    let mut events = Vec::new();
    let mut last = 0;
    for &s in splits.iter().chain(std::iter::once(&data.len())) {
        if p.push(&data[last..s]).is_err() {
            break;
        }
        last = s;
        while let Some(e) = p.next_event() {
            events.push(e);
        }
    }
    let end = p.finish();
    if end.is_some() {
        assert_eq!(p.pending(), 0, "bytes left after the final event");
    }
    (events, end)
}

/// The `data:` payloads of an SSE stream, as the relay hands them to a transcoder.
fn sse_payloads(data: &[u8]) -> Vec<Vec<u8>> {
    let (events, last) = sse_frame(data, &[]);
    events
        .into_iter()
        .chain(last)
        .map(|e| e.data.to_vec())
        .collect()
}

/// The AWS event-stream decoder: the same messages (or the same error) whatever the
/// chunking, raw bytes exactly the input's, and every message's envelope a JSON object.
pub fn eventstream(data: &[u8]) {
    let whole = es_decode(data, &[]);
    let step = usize::from(data.first().map_or(1, |b| b % 13)) + 1;
    let splits: Vec<usize> = (step..data.len()).step_by(step).collect();
    let chunked = es_decode(data, &splits);
    assert_eq!(chunked.0, whole.0, "chunked every {step} bytes");
    assert_eq!(chunked.1, whole.1, "chunked every {step} bytes");
    let raw: Vec<u8> = whole.0.iter().flat_map(|m| m.raw.to_vec()).collect();
    assert_eq!(&raw[..], &data[..raw.len()]);
    for m in &whole.0 {
        let env = bedrock::envelope(m);
        assert!(is_json_object(&env), "envelope is not a JSON object");
    }
}

type Decoded = (Vec<eventstream::Message>, Option<eventstream::FrameError>);

fn es_decode(data: &[u8], splits: &[usize]) -> Decoded {
    let mut d = eventstream::Decoder::new();
    let mut out = Vec::new();
    let mut err = None;
    let mut last = 0;
    for &s in splits.iter().chain(std::iter::once(&data.len())) {
        if let Err(e) = d.push(&data[last..s]) {
            err.get_or_insert(e);
        }
        last = s;
        while let Some(m) = d.next_message() {
            out.push(m);
        }
    }
    (out, err)
}

/// Event-stream messages with valid preludes and checksums around fuzzed headers and
/// payloads, so the fuzzer reaches the header parser and the Bedrock stream decoder rather
/// than stopping at a checksum. Input: frames of `headers_len:u8 | headers | payload_len:u16
/// (big-endian) | payload`.
pub fn eventstream_frames(data: &[u8]) {
    let mut wire = Vec::new();
    let mut rest = data;
    let mut frames = 0;
    while let Some((&hlen, r)) = rest.split_first() {
        let (headers, r) = r.split_at(usize::from(hlen).min(r.len()));
        let plen = match r {
            [a, b, ..] => usize::from(u16::from_be_bytes([*a, *b])),
            _ => 0,
        };
        let r = r.get(2..).unwrap_or_default();
        let (payload, r) = r.split_at(plen.min(r.len()));
        wire.extend(es_frame(headers, payload));
        frames += 1;
        rest = r;
    }
    let (messages, err) = es_decode(&wire, &[]);
    // Framing is always right here; only a header can be wrong, and it ends the stream.
    assert!(
        matches!(err, None | Some(eventstream::FrameError::Header)),
        "{err:?}"
    );
    if err.is_none() {
        assert_eq!(messages.len(), frames);
    }
    let envelopes: Vec<Vec<u8>> = messages
        .iter()
        .map(|m| bedrock::envelope(m).to_vec())
        .collect();
    transcode_all(BackendFormat::Bedrock, &envelopes);
}

fn es_frame(headers: &[u8], payload: &[u8]) -> Vec<u8> {
    let total = 12 + headers.len() + payload.len() + 4;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(headers.len() as u32).to_be_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out.extend_from_slice(headers);
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

// === the JSON member scanner ===

/// The scanner ([`scan`]) and the inspectors built on it: the walk tells well-formed
/// documents from malformed ones exactly as `serde_json` does (outside the documented
/// differences), and on a well-formed object or array it yields exactly its members.
pub fn json_scanner(data: &[u8]) {
    let (complete, members) = walk_object(data);
    let serde = serde_json::from_slice::<serde_json::Map<String, Value>>(data);
    let comparable = serde_comparable(data, serde.as_ref().err());
    if comparable {
        assert_eq!(complete, serde.is_ok(), "object verdicts differ");
    }
    if let (true, Ok(map)) = (complete, &serde) {
        // Duplicate keys: serde_json keeps the last, as does this fold.
        let mut walked = serde_json::Map::new();
        for (k, v) in &members {
            let key = decode_key(k);
            assert!(scan::key_is(k, &key), "key_is({k:?}, {key:?})");
            let value: Value = match serde_json::from_slice(v) {
                Ok(v) => v,
                Err(e) => panic!("member value {v:?} is not JSON: {e}"),
            };
            if let Some(n) = scan::plain_u64(v) {
                assert_eq!(value.as_u64(), Some(n), "plain_u64({v:?})");
            }
            walked.insert(key, value);
        }
        assert_eq!(&walked, map, "members differ from serde_json's");
    }
    let (complete, elements) = walk_array(data);
    let serde = serde_json::from_slice::<Vec<Value>>(data);
    if serde_comparable(data, serde.as_ref().err()) {
        assert_eq!(complete, serde.is_ok(), "array verdicts differ");
    }
    if let (true, Ok(list)) = (complete, &serde) {
        let walked: Vec<Value> = elements
            .iter()
            .map(|e| serde_json::from_slice(e).unwrap_or(Value::Null))
            .collect();
        assert_eq!(&walked, list, "elements differ from serde_json's");
    }
    let object_ok = serde_json::from_slice::<serde_json::Map<String, Value>>(data);
    for (name, info) in [
        ("openai", openai::inspect_response(data)),
        ("anthropic", anthropic::inspect_response(data)),
        ("responses", responses::inspect::inspect_response(data)),
    ] {
        if serde_comparable(data, object_ok.as_ref().err()) {
            assert_eq!(
                info.well_formed,
                object_ok.is_ok(),
                "{name} inspect_response"
            );
        }
    }
}

/// Raw (key, value) spans of an object's members.
type Members<'a> = Vec<(&'a [u8], &'a [u8])>;

/// Walks `doc` as a top-level object, skipping every value: (well-formed, members).
fn walk_object(doc: &[u8]) -> (bool, Members<'_>) {
    let mut c = scan::Cursor::new(doc);
    let mut members = Vec::new();
    if !c.enter(b'{') {
        return (false, members);
    }
    while let Some(k) = c.key() {
        match c.value() {
            Some(v) => members.push((k, v)),
            None => break,
        }
    }
    (c.complete(), members)
}

fn walk_array(doc: &[u8]) -> (bool, Vec<&[u8]>) {
    let mut c = scan::Cursor::new(doc);
    let mut elements = Vec::new();
    if !c.enter(b'[') {
        return (false, elements);
    }
    while c.element() {
        match c.value() {
            Some(v) => elements.push(v),
            None => break,
        }
    }
    (c.complete(), elements)
}

fn decode_key(raw: &[u8]) -> String {
    let quoted = [b"\"", raw, b"\""].concat();
    match serde_json::from_slice::<String>(&quoted) {
        Ok(k) => k,
        Err(e) => panic!("key {raw:?} of a well-formed document does not decode: {e}"),
    }
}

/// Whether the scanner's verdict on `doc` must equal `serde_json`'s. The documented
/// differences (see [`scan`]): UTF-8 and lone surrogates are not checked, nesting may go
/// deeper than `serde_json`'s limit of 128; and `serde_json` refuses numbers too large for an
/// `f64`, which are still JSON.
fn serde_comparable(doc: &[u8], err: Option<&serde_json::Error>) -> bool {
    if std::str::from_utf8(doc).is_err() || has_surrogate_escape(doc) {
        return false;
    }
    let Some(e) = err else { return true };
    let msg = e.to_string();
    !["out of range", "recursion limit"]
        .iter()
        .any(|m| msg.contains(m))
}

/// Whether `data` may spell a UTF-16 surrogate as a `\u` escape. JSON's grammar allows a
/// lone one; `serde_json` refuses to decode it, while the scanner and the raw passthrough
/// (which copies values as they came) do not look.
fn has_surrogate_escape(data: &[u8]) -> bool {
    data.windows(3)
        .any(|w| w[0] == b'\\' && w[1] == b'u' && matches!(w[2], b'd' | b'D'))
}

// === inbound requests ===

/// The backends a request may be encoded for.
const BACKENDS: [(BackendFormat, Dialect); 5] = [
    (BackendFormat::OpenAiChat, Dialect::OpenAi),
    (BackendFormat::OpenAiChat, Dialect::Compatible),
    (BackendFormat::Anthropic, Dialect::Compatible),
    (BackendFormat::Gemini, Dialect::Compatible),
    (BackendFormat::Bedrock, Dialect::Compatible),
];

/// OpenAI requests: the passthrough decoder of every OpenAI operation, and the Chat
/// Completions decoder with the request encoded for every backend.
pub fn request_openai(data: &[u8]) {
    for op in [
        Operation::ChatCompletions,
        Operation::Completions,
        Operation::Embeddings,
        Operation::Responses,
    ] {
        if let Ok(r) = openai::Request::decode(op, data) {
            assert!(!r.model.is_empty());
            assert!(!r.client_wants_usage || r.stream);
            let body = r.encode("fuzz-model");
            assert!(
                is_json_object(&body) || has_surrogate_escape(data),
                "{op:?} passthrough body is not JSON"
            );
            let _ = r.estimated_input_tokens();
        }
    }
    if let Ok(req) = openai::chat::decode_request(data, "fuzz") {
        encode_everywhere(&req);
    }
}

/// Anthropic requests: the passthrough decoder of both endpoints, and the Messages decoder
/// with the request encoded for every backend.
pub fn request_anthropic(data: &[u8]) {
    for endpoint in [
        anthropic::Endpoint::Messages,
        anthropic::Endpoint::CountTokens,
    ] {
        if let Ok(r) = anthropic::Request::decode(endpoint, data) {
            assert!(!r.model.is_empty());
            let body = r.encode("fuzz-model");
            assert!(
                is_json_object(&body) || has_surrogate_escape(data),
                "{endpoint:?} passthrough body is not JSON"
            );
            let _ = r.estimated_input_tokens();
        }
    }
    if let Ok(req) = anthropic::decode_request(data, "fuzz") {
        encode_everywhere(&req);
    }
}

/// Responses requests, under both hosted-tool policies: encoded for every backend, and
/// their echo repeated in a response and a stream.
pub fn request_responses(data: &[u8]) {
    let dropping = responses::decode_request_with(data, chat::UnsupportedTools::Drop);
    let rejecting = responses::decode_request_with(data, chat::UnsupportedTools::Reject);
    if let Ok(d) = &rejecting {
        assert!(d.reject_unsupported_tools().is_ok());
    }
    let Ok(decoded) = dropping else { return };
    // Rejecting is dropping followed by the refusal, whichever way it is asked.
    assert_eq!(
        rejecting.is_ok(),
        decoded.reject_unsupported_tools().is_ok()
    );
    encode_everywhere(&decoded.request);
    let body = responses::encode_response(&sample_response(), &decoded.echo);
    assert!(is_json_object(&body), "echoed response is not JSON");
    for from in [BackendFormat::OpenAiChat, BackendFormat::Anthropic] {
        let mut t = Transcoder::for_responses(from, decoded.echo.clone());
        let mut out = Vec::new();
        for ev in sample_stream(from) {
            t.on_event(&ev, &mut out);
        }
        t.finish(&mut out);
        check_caller_stream(&out);
    }
}

fn encode_everywhere(req: &chat::Request) {
    check_dropped(&req.dropped);
    for (to, dialect) in BACKENDS {
        if let Ok(body) = transcode::encode_request(req, to, dialect, "fuzz-model") {
            assert!(is_json_object(&body), "{to:?}/{dialect:?} body is not JSON");
        }
    }
    let path = bedrock::path(&req.model, req.stream);
    assert!(
        path.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~%/".contains(&b)),
        "unsafe Bedrock path {path:?}"
    );
}

/// What [`chat::Dropped`] promises: short names, safe for a header, a bounded number.
fn check_dropped(d: &chat::Dropped) {
    assert!(d.names().len() <= chat::Dropped::MAX_NAMES);
    for n in d.names() {
        assert!(n.chars().count() <= chat::Dropped::MAX_NAME, "{n:?}");
        assert!(
            n.bytes().all(|b| b.is_ascii_graphic() && b != b','),
            "{n:?}"
        );
    }
    let h = d.header_value();
    assert!(
        h.bytes().all(|b| b == b' ' || b.is_ascii_graphic()),
        "{h:?}"
    );
}

// === stream transcoders ===

/// An OpenAI Chat Completions stream, translated for every caller format.
pub fn stream_openai(data: &[u8]) {
    transcode_all(BackendFormat::OpenAiChat, &sse_payloads(data));
}

/// An Anthropic Messages stream, translated for every caller format.
pub fn stream_anthropic(data: &[u8]) {
    transcode_all(BackendFormat::Anthropic, &sse_payloads(data));
}

/// A Gemini `streamGenerateContent?alt=sse` stream, translated for every caller format.
pub fn stream_gemini(data: &[u8]) {
    transcode_all(BackendFormat::Gemini, &sse_payloads(data));
}

/// A Bedrock `ConverseStream` as the envelopes the relay makes of its messages (one per SSE
/// event here, so the fuzzer works on the JSON), translated for every caller format.
pub fn stream_bedrock(data: &[u8]) {
    transcode_all(BackendFormat::Bedrock, &sse_payloads(data));
}

/// Feeds `events` through a transcoder to every caller format, ending as the relay does: a
/// finished upstream is closed, one cut short gets an error. The caller's stream is always
/// well-formed, whatever the upstream sent.
fn transcode_all(from: BackendFormat, events: &[Vec<u8>]) {
    let callers = [
        (Format::OpenAiChat, true),
        (Format::OpenAiChat, false),
        (Format::Anthropic, false),
        (Format::Responses, false),
    ];
    for (to, usage) in callers {
        let mut t = Transcoder::new(from, to, usage).naming_model("fuzz-model");
        let mut out = Vec::new();
        for ev in events {
            t.on_event(ev, &mut out);
        }
        if t.upstream_complete() {
            t.finish(&mut out);
        } else {
            t.error(
                "upstream_error",
                "the upstream stream ended early",
                &mut out,
            );
        }
        assert!(
            t.is_done(),
            "{from:?} → {to:?}: the caller's stream was not ended"
        );
        check_caller_stream(&out);
    }
}

/// A caller's stream: whole SSE events, each `[DONE]` or a JSON object, nothing after
/// `[DONE]` or an error.
fn check_caller_stream(out: &[u8]) {
    let mut p = sse::Parser::new();
    assert!(p.push(out).is_ok());
    let mut ended = false;
    while let Some(e) = p.next_event() {
        assert!(!ended, "an event after the end: {:?}", e.raw);
        if &e.data[..] == b"[DONE]" {
            ended = true;
            continue;
        }
        let v: Value = match serde_json::from_slice(&e.data) {
            Ok(v) => v,
            Err(err) => panic!("caller event is not JSON ({err}): {:?}", e.raw),
        };
        assert!(v.is_object(), "caller event is not an object: {v}");
        ended = v.get("error").is_some() || v.get("type").is_some_and(|t| t == "error");
    }
    assert_eq!(p.pending(), 0, "the caller's stream ends inside an event");
}

// === complete responses ===

/// An OpenAI `chat.completion`, translated for every caller format and inspected.
pub fn response_openai(data: &[u8]) {
    let _ = openai::inspect_response(data);
    translate_all(BackendFormat::OpenAiChat, data);
}

/// An Anthropic Messages response, translated for every caller format and inspected.
pub fn response_anthropic(data: &[u8]) {
    let _ = anthropic::inspect_response(data);
    translate_all(BackendFormat::Anthropic, data);
}

/// A Gemini `generateContent` response, translated for every caller format.
pub fn response_gemini(data: &[u8]) {
    translate_all(BackendFormat::Gemini, data);
}

/// A Bedrock Converse response, translated for every caller format.
pub fn response_bedrock(data: &[u8]) {
    translate_all(BackendFormat::Bedrock, data);
}

fn translate_all(from: BackendFormat, data: &[u8]) {
    for to in [Format::OpenAiChat, Format::Anthropic, Format::Responses] {
        let named = transcode::response_naming_model(from, to, None, data, "fuzz-model");
        if let Ok((body, _, _)) = &named {
            assert!(is_json_object(body), "{from:?} → {to:?} body is not JSON");
        }
        assert_eq!(
            transcode::response(from, to, data).is_ok(),
            named.is_ok(),
            "naming the model changed the verdict"
        );
    }
}

// === Responses passthrough ===

/// A Responses API body from a backend that serves the API itself (passed through, only
/// inspected): well-formed exactly when `serde_json` says so.
pub fn response_responses(data: &[u8]) {
    let info = responses::inspect::inspect_response(data);
    let serde = serde_json::from_slice::<serde_json::Map<String, Value>>(data);
    if serde_comparable(data, serde.as_ref().err()) {
        assert_eq!(info.well_formed, serde.is_ok(), "verdicts differ");
    }
}

/// A passed-through Responses API stream, inspected event by event as the relay does: by
/// the `event:` name, or without one by the payload's `type`, which agree when the two do.
pub fn stream_responses(data: &[u8]) {
    let (events, last) = sse_frame(data, &[]);
    for e in events.iter().chain(&last) {
        let named = responses::inspect::inspect_event(e.event.as_deref(), &e.data);
        let unnamed = responses::inspect::inspect_event(None, &e.data);
        assert!(!(named.content && named.terminal));
        assert!(!(unnamed.content && unnamed.terminal));
        let kind = serde_json::from_slice::<Value>(&e.data)
            .ok()
            .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_string));
        let types = scan::members(&e.data)
            .filter(|(k, _)| scan::key_is(k, "type"))
            .count();
        if let (Some(name), Some(kind), 1) = (&e.event, &kind, types) {
            if name[..] == *kind.as_bytes() {
                assert_eq!(named, unnamed, "event {kind}");
            }
        }
        if !named.terminal {
            assert_eq!((named.usage, named.finish_reason), (None, None));
        }
    }
}

// === stream chunk inspection ===

/// The OpenAI relay's fast path: a chunk [`openai::may_carry_usage_or_finish`] passes over
/// carries neither usage nor a finish reason (it is not parsed at all).
pub fn openai_chunk(data: &[u8]) {
    let info = openai::inspect_chunk(data);
    assert_eq!(info.finished, info.finish_reason.is_some());
    assert!(!info.usage_only || info.usage.is_some());
    // What the chunk says, read as the JSON object it should be. (`inspect_chunk` itself
    // also reads an array as the struct it expects, a `serde` leniency no provider relies
    // on, so it is not the reference here.) The scan looks for the keys as written: a key
    // spelled with escapes (`"usa\u0067e"`), which no provider sends, is a blind spot.
    let Ok(Value::Object(chunk)) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    if openai::may_carry_usage_or_finish(data) || data.windows(2).any(|w| w == br"\u") {
        return;
    }
    assert!(
        chunk.get("usage").is_none_or(Value::is_null),
        "usage missed by the scan"
    );
    let finish = chunk
        .get("choices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c.get("finish_reason").is_some_and(|f| !f.is_null()));
    assert!(!finish, "finish reason missed by the scan");
}

// === errors ===

/// Upstream error bodies of any provider (and of whatever sits in front of it), read for
/// every status and content type; and error bodies written around any message.
pub fn upstream_error(data: &[u8]) {
    let (head, body) = data.split_at(data.len().min(3));
    let status = match head {
        [a, b, ..] => 100 + u16::from_be_bytes([*a, *b]) % 500,
        _ => 500,
    };
    let pick = head.get(2).copied().unwrap_or(0);
    let content_type = [
        None,
        Some("text/html; charset=utf-8"),
        Some("application/json"),
        Some("text/plain"),
        Some(""),
        Some(";"),
    ][usize::from(pick % 6)];
    let aws = [
        None,
        Some("ThrottlingException:http://internal.amazon.com/coral/"),
    ][usize::from(pick / 6 % 2)];
    for provider in ["openai", "anthropic", "gemini", "bedrock"] {
        let e = error::read_upstream_error(status, body, content_type, aws, provider);
        if e.origin == error::ErrorOrigin::Intermediary {
            // A summary, never the body itself.
            assert!(e.message.chars().count() < 400, "{:?}", e.message);
        }
    }
    let _ = error::classify(status, std::str::from_utf8(body).ok());
    let text = String::from_utf8_lossy(body);
    let e = OpenAiError {
        message: &text,
        source: ErrorSource::Upstream,
        code: &text,
        param: Some(&text),
    };
    assert!(is_json_object(&e.to_json()));
    check_caller_stream(&e.to_sse_event());
    assert!(is_json_object(&anthropic::error_json(&text, &text)));
    check_caller_stream(&anthropic::error_sse_event(&text, &text));
}

// === helpers ===

fn is_json_object(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body).is_ok_and(|v| v.is_object())
}

/// A small complete response, for encoders whose other input is fuzzed.
fn sample_response() -> chat::Response {
    chat::Response {
        id: "resp_1".into(),
        model: "m".into(),
        content: vec![
            Part::Text("hi".into()),
            Part::ToolCall(ToolCall {
                id: "call_1".into(),
                name: "get_weather".into(),
                arguments: serde_json::Map::new(),
            }),
        ],
        finish_reason: Some(FinishReason::ToolCalls),
        stop_sequence: None,
        usage: Some(Usage {
            input_tokens: 3,
            output_tokens: 2,
            cached_input_tokens: 0,
            cache_write_tokens: 0,
        }),
    }
}

/// A small upstream stream in `from`'s format, for transcoders whose other input is fuzzed.
fn sample_stream(from: BackendFormat) -> Vec<Vec<u8>> {
    let events: &[&str] = match from {
        BackendFormat::Anthropic => &[
            r#"{"type":"message_start","message":{"id":"msg_1","model":"m","usage":{"input_tokens":3}}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hi"}}"#,
            r#"{"type":"content_block_stop","index":0}"#,
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{}}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"city\":\"Paris\"}"}}"#,
            r#"{"type":"content_block_stop","index":1}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":2}}"#,
            r#"{"type":"message_stop"}"#,
        ],
        _ => &[
            r#"{"id":"c1","model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"hi"}}]}"#,
            r#"{"id":"c1","model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":"}}]}}]}"#,
            r#"{"id":"c1","model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Paris\"}"}}]},"finish_reason":"tool_calls"}]}"#,
            r#"{"id":"c1","model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#,
            "[DONE]",
        ],
    };
    events.iter().map(|e| e.as_bytes().to_vec()).collect()
}
