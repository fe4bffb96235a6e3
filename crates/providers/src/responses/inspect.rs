//! Usage and status of a Responses API answer passed through unchanged (OpenAI and Azure
//! backends serve `/responses` themselves): read by the same skipping scan as
//! [`crate::openai::inspect_response`], so the generated output around them is checked, not
//! parsed.

use serde::Deserialize;

use crate::{openai::ResponseInfo, scan, Usage};

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    input_tokens_details: Option<InputDetails>,
}

#[derive(Deserialize)]
struct InputDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
    #[serde(default)]
    cache_write_tokens: Option<u64>,
}

/// What a streamed event told: usage, status and whether it ended the answer.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EventInfo {
    /// Usage, from a terminal event's response object.
    pub usage: Option<Usage>,
    /// The response's final status, mapped as [`ResponseInfo::finish_reason`] is.
    pub finish_reason: Option<String>,
    /// The event ends the answer: `response.completed`, `response.incomplete`,
    /// `response.failed` or `error`. A stream that ends without one was cut short.
    pub terminal: bool,
    /// The event carries generated content (a `….delta`), for time to first token.
    pub content: bool,
    /// The response's `id`, from a terminal event (what a later `previous_response_id`
    /// names).
    pub response_id: Option<String>,
}

/// Reads usage and status from a complete Responses API response object, and whether the
/// body is one well-formed JSON object.
pub fn inspect_response(body: &[u8]) -> ResponseInfo {
    let mut info = ResponseInfo::default();
    let mut c = scan::Cursor::new(body);
    if !c.enter(b'{') {
        return info;
    }
    read_object(&mut c, &mut info);
    info.well_formed = c.complete();
    info
}

/// Inspects one event of a Responses API stream: `event` is its SSE `event:` name, when it
/// has one (OpenAI always sends it), else the payload's `type` is read.
pub fn inspect_event(event: Option<&[u8]>, data: &[u8]) -> EventInfo {
    let mut out = EventInfo::default();
    let kind = match event {
        Some(e) => e.to_vec(),
        None => scan::members(data)
            .find(|(k, _)| scan::key_is(k, "type"))
            .and_then(|(_, v)| serde_json::from_slice::<String>(v).ok())
            .map(String::into_bytes)
            .unwrap_or_default(),
    };
    match &kind[..] {
        b"response.completed" | b"response.incomplete" | b"response.failed" => {
            out.terminal = true;
            let mut info = ResponseInfo::default();
            let mut c = scan::Cursor::new(data);
            if c.enter(b'{') {
                while let Some(key) = c.key() {
                    if scan::key_is(key, "response") && c.enter(b'{') {
                        read_object(&mut c, &mut info);
                    } else if c.value().is_none() {
                        break;
                    }
                }
            }
            out.usage = info.usage;
            out.finish_reason = info.finish_reason;
            out.response_id = info.response_id;
        }
        // The id is known from the start: remembered before the answer can be continued.
        b"response.created" => {
            out.response_id = scan::members(data)
                .find(|(k, _)| scan::key_is(k, "response"))
                .and_then(|(_, r)| scan::members(r).find(|(k, _)| scan::key_is(k, "id")))
                .and_then(|(_, v)| serde_json::from_slice::<String>(v).ok());
        }
        b"error" => out.terminal = true,
        k => out.content = k.starts_with(b"response.") && k.ends_with(b".delta"),
    }
    out
}

/// Reads `id`, `usage` and `status` from the members of the response object being walked, leaving
/// the cursor past its end.
fn read_object(c: &mut scan::Cursor<'_>, info: &mut ResponseInfo) {
    while let Some(key) = c.key() {
        let Some(value) = c.value() else { break };
        if scan::key_is(key, "usage") {
            info.usage = serde_json::from_slice::<Option<WireUsage>>(value)
                .ok()
                .flatten()
                .map(|u| Usage {
                    input_tokens: u.input_tokens,
                    output_tokens: u.output_tokens,
                    cached_input_tokens: u
                        .input_tokens_details
                        .as_ref()
                        .and_then(|d| d.cached_tokens)
                        .unwrap_or(0),
                    cache_write_tokens: u
                        .input_tokens_details
                        .and_then(|d| d.cache_write_tokens)
                        .unwrap_or(0),
                });
        } else if scan::key_is(key, "id") {
            info.response_id = serde_json::from_slice::<String>(value).ok();
        } else if scan::key_is(key, "status") {
            info.finish_reason = serde_json::from_slice::<&str>(value)
                .ok()
                .and_then(finish_reason)
                .map(str::to_string);
        }
    }
}

/// A response status as the finish reason the access log and metrics name (OpenAI's chat
/// terms, as for every other format): `None` while the response is still running.
fn finish_reason(status: &str) -> Option<&'static str> {
    match status {
        "completed" => Some("stop"),
        "incomplete" => Some("length"),
        "failed" | "cancelled" => Some("error"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_usage_and_status_from_a_response_object() {
        let body = br#"{"id":"resp_1","object":"response","status":"completed","output":[{"type":"message","content":[{"type":"output_text","text":"hi \"there\""}]}],"usage":{"input_tokens":12,"input_tokens_details":{"cached_tokens":4},"output_tokens":3,"total_tokens":15}}"#;
        let info = inspect_response(body);
        assert!(info.well_formed);
        assert_eq!(info.finish_reason.as_deref(), Some("stop"));
        assert_eq!(info.response_id.as_deref(), Some("resp_1"));
        assert_eq!(
            info.usage,
            Some(Usage {
                input_tokens: 12,
                output_tokens: 3,
                cached_input_tokens: 4,
                cache_write_tokens: 0,
            })
        );
        assert!(!inspect_response(&body[..body.len() - 1]).well_formed);
        assert!(!inspect_response(b"<html>").well_formed);
    }

    #[test]
    fn terminal_events_carry_usage_and_deltas_count_as_content() {
        let done = br#"{"type":"response.incomplete","sequence_number":9,"response":{"id":"resp_9","status":"incomplete","usage":{"input_tokens":5,"output_tokens":2}}}"#;
        for event in [Some(&b"response.incomplete"[..]), None] {
            let info = inspect_event(event, done);
            assert!(info.terminal && !info.content);
            assert_eq!(info.response_id.as_deref(), Some("resp_9"));
            assert_eq!(info.finish_reason.as_deref(), Some("length"));
            assert_eq!(info.usage.map(|u| u.output_tokens), Some(2));
        }
        let delta = br#"{"type":"response.output_text.delta","delta":"hi"}"#;
        let info = inspect_event(None, delta);
        assert!(info.content && !info.terminal && info.usage.is_none());
        assert!(!inspect_event(Some(b"response.created"), b"{}").terminal);
        let created = br#"{"type":"response.created","sequence_number":0,"response":{"id":"resp_7","status":"in_progress","output":[]}}"#;
        let info = inspect_event(Some(b"response.created"), created);
        assert_eq!(info.response_id.as_deref(), Some("resp_7"));
        assert!(!info.terminal && info.usage.is_none());
        assert!(inspect_event(Some(b"error"), b"{}").terminal);
    }
}
