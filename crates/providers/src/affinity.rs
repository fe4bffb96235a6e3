//! Conversation affinity keys: what makes two requests "the same conversation", so that the
//! gateway can send them to the same backend and upstream key and the provider's prompt
//! cache, warmed by the first, serves the next.
//!
//! Read from the request's top-level fields as the inbound decode already split them (raw
//! JSON, nothing re-parsed but the small values named), in order:
//!
//! 1. the caller's explicit key (the `x-switchyard-affinity` header, read by the gateway);
//! 2. OpenAI's `prompt_cache_key`;
//! 3. Anthropic's `metadata.user_id` (Claude Code puts its session id there), or OpenAI's
//!    `user` / `safety_identifier`;
//! 4. with [`Source::Prefix`], a hash of the cacheable prefix: the system prompt
//!    (`system` / `instructions`), `tools`, and the first message (`messages[0]` /
//!    `input[0]`, or the whole `input` when it is a string), each cut at
//!    [`MAX_PREFIX_PART`] bytes. Every turn of a conversation repeats these, and a
//!    provider's prompt cache is keyed by exactly this prefix.
//!
//! The hash is CRC-32 over at most a few kilobytes, widened and mixed to 64 bits; the prefix
//! hash allocates nothing.

use std::borrow::Cow;

use serde::Deserialize;

/// Bytes of each prefix part hashed (the system prompt, the tools, the first message):
/// enough to tell conversations apart, bounded so a huge prompt costs no more than this.
pub const MAX_PREFIX_PART: usize = 4096;

/// Where an affinity key may come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Only keys the caller names (header, `prompt_cache_key`, user/session ids).
    Session,
    /// Those, else the hash of the cacheable prefix.
    Prefix,
}

/// The affinity key of a request from its top-level fields; `None` when it has none.
pub fn from_fields<'a>(
    fields: impl Iterator<Item = (&'a str, &'a str)> + Clone,
    source: Source,
) -> Option<u64> {
    let get = |name: &str| fields.clone().find(|(k, _)| *k == name).map(|(_, v)| v);
    // Borrowed when it can be, owned when it has an escape (it is a key all the same).
    #[derive(Deserialize)]
    struct Text<'t>(#[serde(borrow)] Cow<'t, str>);
    let string = |v: &'a str| -> Option<u64> {
        let Text(s) = serde_json::from_str(v).ok()?;
        (!s.is_empty()).then(|| hash_tagged(1, s.as_bytes()))
    };
    if let Some(h) = get("prompt_cache_key").and_then(string) {
        return Some(h);
    }
    if let Some(meta) = get("metadata") {
        // Claude Code's `user_id` is JSON in a string (`{\"device_id\":…,\"session_id\":…}`),
        // all escapes: borrowed, it failed to decode, and its requests fell through to the
        // prefix hash (and had no key at all on a `session` route).
        #[derive(Deserialize)]
        struct Meta {
            #[serde(default)]
            user_id: Option<String>,
        }
        if let Ok(Meta { user_id: Some(u) }) = serde_json::from_str::<Meta>(meta) {
            if !u.is_empty() {
                return Some(hash_tagged(2, u.as_bytes()));
            }
        }
    }
    for name in ["safety_identifier", "user"] {
        if let Some(h) = get(name).and_then(string) {
            return Some(h);
        }
    }
    if source == Source::Session {
        return None;
    }
    let mut h = PrefixHash::new(3);
    let mut any = false;
    for name in ["system", "instructions", "tools"] {
        if let Some(v) = get(name) {
            h.part(v.as_bytes());
            any = true;
        }
    }
    for name in ["messages", "input"] {
        if let Some(v) = get(name) {
            h.part(first_element(v.as_bytes()));
            any = true;
        }
    }
    any.then(|| h.finish())
}

/// A caller-given key (the header's value).
pub fn from_explicit(key: &[u8]) -> Option<u64> {
    (!key.is_empty()).then(|| hash_tagged(0, key))
}

/// The first element of a JSON array, or the whole value when it is not an array (a
/// Responses `input` string). Only the first [`MAX_PREFIX_PART`] bytes are hashed, so only
/// they are walked: a first element running past them (a long system prompt) is the window
/// itself, and the rest of the body is never scanned.
fn first_element(v: &[u8]) -> &[u8] {
    let window = &v[..v.len().min(MAX_PREFIX_PART + 1)];
    let mut c = crate::scan::Cursor::new(window);
    if c.enter(b'[') {
        if !c.element() {
            return window;
        }
        return c.value().unwrap_or(&window[1..]);
    }
    v
}

fn hash_tagged(tag: u8, bytes: &[u8]) -> u64 {
    let mut h = PrefixHash::new(tag);
    h.part(bytes);
    h.finish()
}

/// CRC-32 (IEEE, by `crc32fast`: SIMD where the CPU has it, some ten times faster than a
/// byte-at-a-time FNV on the 4 KB parts measured in `router/affinity`) over the tagged
/// parts, then widened with the bytes hashed and a final avalanche so that keys spread over
/// the rendezvous. CRC-32 is a fixed standard, so every replica and every version computes
/// the same key for the same conversation; two conversations sharing a key merely share a
/// placement.
struct PrefixHash {
    crc: crc32fast::Hasher,
    len: u64,
}

impl PrefixHash {
    fn new(tag: u8) -> Self {
        let mut f = PrefixHash {
            crc: crc32fast::Hasher::new(),
            len: 0,
        };
        f.crc.update(&[tag]);
        f
    }

    fn part(&mut self, bytes: &[u8]) {
        let bytes = &bytes[..bytes.len().min(MAX_PREFIX_PART)];
        self.crc.update(bytes);
        // A separator, so that parts cannot run into each other.
        self.crc.update(&[0xff]);
        self.len = self.len.wrapping_add(bytes.len() as u64 + 1);
    }

    fn finish(&self) -> u64 {
        mix(u64::from(self.crc.clone().finalize()) | (self.len << 32))
    }
}

/// splitmix64's finalizer: a cheap, well-spread 64-bit mix.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(body: &str, source: Source) -> Option<u64> {
        let fields: Vec<(String, String)> =
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(body)
                .unwrap()
                .into_iter()
                .map(|(k, v)| (k, v.to_string()))
                .collect();
        from_fields(fields.iter().map(|(k, v)| (k.as_str(), v.as_str())), source)
    }

    #[test]
    fn turns_of_one_conversation_share_a_key_and_others_do_not() {
        let t1 = r#"{"model":"m","system":"be brief","tools":[{"name":"t"}],"messages":[{"role":"user","content":"hi"}]}"#;
        let t2 = r#"{"model":"m","system":"be brief","tools":[{"name":"t"}],"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"yo"},{"role":"user","content":"more"}]}"#;
        let other = r#"{"model":"m","system":"be brief","tools":[{"name":"t"}],"messages":[{"role":"user","content":"another"}]}"#;
        let a = key(t1, Source::Prefix).unwrap();
        assert_eq!(Some(a), key(t2, Source::Prefix));
        assert_ne!(Some(a), key(other, Source::Prefix));
        // Sessions only: no named key, no affinity.
        assert_eq!(key(t1, Source::Session), None);
    }

    #[test]
    fn named_keys_win_in_order() {
        let with_pck = r#"{"prompt_cache_key":"conv-1","user":"u","messages":[{"role":"user","content":"x"}]}"#;
        let same_pck =
            r#"{"prompt_cache_key":"conv-1","messages":[{"role":"user","content":"y"}]}"#;
        assert_eq!(
            key(with_pck, Source::Session),
            key(same_pck, Source::Prefix)
        );
        let claude = r#"{"metadata":{"user_id":"user_abc_session_42"},"messages":[]}"#;
        assert!(key(claude, Source::Session).is_some());
        let empty = r#"{"metadata":{"user_id":""},"messages":[]}"#;
        assert_eq!(key(empty, Source::Session), None);
        // Claude Code's, JSON in a string: keyed by it, whatever the prompt.
        let session = |id: &str, text: &str| {
            let body = format!(
                r#"{{"metadata":{{"user_id":"{{\"device_id\":\"d\",\"session_id\":\"{id}\"}}"}},"system":"{text}","messages":[]}}"#
            );
            key(&body, Source::Session)
        };
        assert!(session("s1", "a").is_some());
        assert_eq!(session("s1", "a"), session("s1", "b"));
        assert_ne!(session("s1", "a"), session("s2", "a"));
        let escaped = r#"{"prompt_cache_key":"conv\u002d1","messages":[]}"#;
        assert_eq!(
            key(escaped, Source::Session),
            key(same_pck, Source::Session)
        );
        // The header's value is its own namespace: the same text as a prompt_cache_key
        // does not collide by construction of the tag.
        assert_ne!(from_explicit(b"conv-1"), key(same_pck, Source::Session));
    }

    #[test]
    fn a_first_message_longer_than_the_window_keys_by_its_beginning() {
        let long = "x".repeat(3 * MAX_PREFIX_PART);
        let t1 = format!(r#"{{"messages":[{{"role":"system","content":"{long}"}}]}}"#);
        let t2 = format!(
            r#"{{"messages":[{{"role":"system","content":"{long}"}},{{"role":"user","content":"more"}}]}}"#
        );
        let other = format!(r#"{{"messages":[{{"role":"system","content":"y{long}"}}]}}"#);
        let a = key(&t1, Source::Prefix);
        assert!(a.is_some());
        assert_eq!(a, key(&t2, Source::Prefix));
        assert_ne!(a, key(&other, Source::Prefix));
        // Just under the window: the element ends inside it and the next turns are apart.
        let short = "x".repeat(MAX_PREFIX_PART - 40);
        let s1 = format!(r#"{{"messages":[{{"role":"user","content":"{short}"}}]}}"#);
        let s2 = format!(
            r#"{{"messages":[{{"role":"user","content":"{short}"}},{{"role":"user","content":"b"}}]}}"#
        );
        assert_eq!(key(&s1, Source::Prefix), key(&s2, Source::Prefix));
    }

    #[test]
    fn responses_input_string_and_array() {
        let a = r#"{"instructions":"i","input":"hello"}"#;
        let b = r#"{"instructions":"i","input":[{"role":"user","content":"hello"}]}"#;
        let b2 = r#"{"instructions":"i","input":[{"role":"user","content":"hello"},{"role":"user","content":"again"}]}"#;
        assert!(key(a, Source::Prefix).is_some());
        assert_eq!(key(b, Source::Prefix), key(b2, Source::Prefix));
    }
}
