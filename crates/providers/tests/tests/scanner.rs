//! The JSON member scanner (`scan`) and the inspectors built on it agree with `serde_json` on
//! every valid document, and never panic on invalid ones (where the fuzz target's checks
//! apply: `targets::json_scanner`).

use proptest::{collection::vec, prelude::*};
use serde::{Deserialize, Serialize};
use serde_json::{ser::PrettyFormatter, Map, Value};
use switchyard_providers::{anthropic, openai, responses, scan, Usage};

use crate::{common::gen, targets};

/// `doc` written compactly, or pretty with `indent` (any JSON whitespace) between tokens.
fn write(doc: &Value, indent: Option<&[u8]>) -> Vec<u8> {
    let Some(indent) = indent else {
        return serde_json::to_vec(doc).unwrap();
    };
    let mut out = Vec::new();
    let mut ser =
        serde_json::Serializer::with_formatter(&mut out, PrettyFormatter::with_indent(indent));
    doc.serialize(&mut ser).unwrap();
    out
}

fn indent() -> impl Strategy<Value = Option<Vec<u8>>> {
    proptest::option::of(vec(proptest::sample::select(&b" \t\r\n"[..]), 0..4))
}

/// OpenAI's `usage`, decoded as the inspector's fallback decodes it.
#[derive(Deserialize)]
struct OpenAiUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<Details>,
}

#[derive(Deserialize)]
struct Details {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

/// What `openai::inspect_response` must find in `doc`, by `serde_json`.
fn openai_expected(doc: &Map<String, Value>) -> (Option<Usage>, Option<String>) {
    let usage = doc
        .get("usage")
        .and_then(|u| serde_json::from_value::<Option<OpenAiUsage>>(u.clone()).ok())
        .flatten()
        .map(|u| Usage {
            input_tokens: u.prompt_tokens,
            output_tokens: u.completion_tokens,
            cached_input_tokens: u
                .prompt_tokens_details
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
            cache_write_tokens: 0,
        });
    let finish = doc
        .get("choices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find_map(|c| c.get("finish_reason").and_then(Value::as_str))
        .map(str::to_string);
    (usage, finish)
}

/// What `anthropic::inspect_response` must find in `doc`, by `serde_json`.
fn anthropic_expected(doc: &Map<String, Value>) -> (Option<Usage>, Option<String>) {
    let usage = doc
        .get("usage")
        .and_then(|u| serde_json::from_value::<Option<anthropic::WireUsage>>(u.clone()).ok())
        .flatten()
        .map(anthropic::WireUsage::to_usage);
    let stop = doc
        .get("stop_reason")
        .and_then(Value::as_str)
        .map(str::to_string);
    (usage, stop)
}

/// The Responses API's `usage`, decoded as its inspector decodes it.
#[derive(Deserialize)]
struct ResponsesUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    input_tokens_details: Option<Details>,
}

/// What `responses::inspect::inspect_response` must find in `doc`, by `serde_json`.
fn responses_expected(doc: &Map<String, Value>) -> (Option<Usage>, Option<String>) {
    let usage = doc
        .get("usage")
        .and_then(|u| serde_json::from_value::<Option<ResponsesUsage>>(u.clone()).ok())
        .flatten()
        .map(|u| Usage {
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            cached_input_tokens: u
                .input_tokens_details
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
            cache_write_tokens: 0,
        });
    let status = match doc.get("status").and_then(Value::as_str) {
        Some("completed") => Some("stop"),
        Some("incomplete") => Some("length"),
        Some("failed" | "cancelled") => Some("error"),
        _ => None,
    };
    (usage, status.map(str::to_string))
}

proptest! {
    #![proptest_config(crate::common::proptest_config())]

    #[test]
    fn members_are_serde_jsons_entries(doc in gen::json_object(), indent in indent()) {
        let bytes = write(&Value::Object(doc.clone()), indent.as_deref());
        let members: Vec<(String, Value)> = scan::members(&bytes)
            .map(|(k, v)| {
                let key: String = serde_json::from_slice(&[b"\"", k, b"\""].concat()).unwrap();
                prop_assert!(scan::key_is(k, &key));
                Ok((key, serde_json::from_slice(v).unwrap()))
            })
            .collect::<Result<_, TestCaseError>>()?;
        // Compared with what serde_json reads of the same bytes: it may read a float back a
        // unit in the last place off the one it wrote.
        let read: Map<String, Value> = serde_json::from_slice(&bytes).unwrap();
        prop_assert_eq!(members.len(), doc.len());
        prop_assert_eq!(members, read.into_iter().collect::<Vec<_>>());
        // Walked to its end, the document is well-formed.
        let mut c = scan::Cursor::new(&bytes);
        let entered = c.enter(b'{');
        prop_assert!(entered);
        while c.key().is_some() {
            prop_assert!(c.value().is_some());
        }
        prop_assert!(c.complete());
    }

    #[test]
    fn elements_are_serde_jsons(list in vec(gen::json_value(), 0..8), indent in indent()) {
        let bytes = write(&Value::Array(list.clone()), indent.as_deref());
        let mut c = scan::Cursor::new(&bytes);
        let entered = c.enter(b'[');
        prop_assert!(entered);
        let mut walked = Vec::new();
        while c.element() {
            walked.push(serde_json::from_slice::<Value>(c.value().unwrap()).unwrap());
        }
        prop_assert!(c.complete());
        prop_assert_eq!(walked.len(), list.len());
        prop_assert_eq!(walked, serde_json::from_slice::<Vec<Value>>(&bytes).unwrap());
    }

    #[test]
    fn inspectors_find_what_serde_json_finds(doc in gen::json_object(), indent in indent()) {
        let bytes = write(&Value::Object(doc), indent.as_deref());
        let doc: Map<String, Value> = serde_json::from_slice(&bytes).unwrap();
        let info = openai::inspect_response(&bytes);
        prop_assert!(info.well_formed);
        prop_assert_eq!((info.usage, info.finish_reason), openai_expected(&doc));
        let info = anthropic::inspect_response(&bytes);
        prop_assert!(info.well_formed);
        prop_assert_eq!((info.usage, info.finish_reason), anthropic_expected(&doc));
        let info = responses::inspect::inspect_response(&bytes);
        prop_assert!(info.well_formed);
        prop_assert_eq!((info.usage, info.finish_reason), responses_expected(&doc));
    }

    #[test]
    fn plain_integers_are_read_exactly(n in any::<u64>()) {
        let text = n.to_string();
        // Up to 19 digits (always a u64); longer ones are left to serde_json.
        let expected = (text.len() <= 19).then_some(n);
        prop_assert_eq!(scan::plain_u64(text.as_bytes()), expected);
    }

    /// Damaged documents: the walk's verdict is `serde_json`'s, and nothing panics (the
    /// fuzz target's checks, on inputs proptest can shrink).
    #[test]
    fn damaged_documents_are_told_apart(
        doc in gen::json_object(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..4),
    ) {
        let mut bytes = serde_json::to_vec(&doc).unwrap();
        for (at, byte, op) in edits {
            let at = at.index(bytes.len() + 1);
            match op {
                0 if at < bytes.len() => bytes[at] = byte,
                1 if at < bytes.len() => {
                    bytes.remove(at);
                }
                _ => bytes.insert(at, byte),
            }
        }
        targets::json_scanner(&bytes);
    }
}
