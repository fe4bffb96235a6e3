//! A simulated provider prompt cache, per (key, model), with a time to live: each request's
//! prompt is cut into blocks (tools, system, then each message), and the longest prefix
//! of whole blocks seen before under the same key and model (and not expired) is reported as
//! read from the cache, the way the real providers report it:
//!
//! - **Anthropic** (`/v1/messages`) caches only where the request marks `cache_control`:
//!   the prefix up to the last marked block is written (`cache_creation_input_tokens`)
//!   unless it was already cached, in which case the longest cached prefix is read
//!   (`cache_read_input_tokens`) and the rest up to the mark written; a prefix under 1024
//!   tokens is not cached at all. Without any mark nothing is cached.
//! - **OpenAI** (`/v1/chat/completions`) caches automatically every prompt of 1024 tokens or
//!   more and reports `prompt_tokens_details.cached_tokens` for the longest prefix seen before,
//!   rounded down to 128-token steps; it reports no writes.
//!
//! Tokens are the mock's estimate (characters / 4), per block. An entry lives `ttl` after its
//! last use (Anthropic refreshes on a hit, as the real cache does).

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use serde_json::Value;

/// Below this many tokens a prefix is not cached (Anthropic's minimum for most models,
/// OpenAI's for all).
pub const MIN_CACHED_TOKENS: u64 = 1024;

/// OpenAI reports cached tokens in steps of this many.
const OPENAI_STEP: u64 = 128;

/// Entries above this are dropped, oldest first, so a long run stays bounded.
const MAX_ENTRIES: usize = 100_000;

/// The default lifetime: Anthropic's default (5 minutes); OpenAI's is "5 to 10 minutes".
/// (`--cache-ttl-secs` defaults to the same.)
#[cfg_attr(not(test), allow(dead_code))]
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);

/// One block boundary of a prompt.
#[derive(Debug, Clone, Copy)]
pub struct Boundary {
    /// Hash of everything up to and including this block.
    pub hash: u64,
    /// Tokens up to and including this block.
    pub tokens: u64,
    /// The block carries `cache_control` (Anthropic).
    pub marked: bool,
}

/// What the cache did for one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheUsage {
    /// Input tokens read from the cache.
    pub read: u64,
    /// Input tokens written to the cache.
    pub write: u64,
}

/// Which provider's rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rules {
    /// Explicit `cache_control` marks; writes reported.
    Anthropic,
    /// Automatic, 1024 tokens and up, 128-token steps; no writes reported.
    OpenAi,
}

/// The cache of one mock server.
#[derive(Debug)]
pub struct PrefixCache {
    ttl: Duration,
    entries: Mutex<HashMap<(String, String, u64), Instant>>,
}

impl PrefixCache {
    /// An empty cache whose entries live `ttl`.
    pub fn new(ttl: Duration) -> Self {
        PrefixCache {
            ttl,
            entries: Mutex::default(),
        }
    }

    /// Looks the prompt up under (`key`, `model`) and records what it leaves cached.
    pub fn account(&self, key: &str, model: &str, blocks: &[Boundary], rules: Rules) -> CacheUsage {
        let now = Instant::now();
        let Ok(mut entries) = self.entries.lock() else {
            return CacheUsage::default();
        };
        if entries.len() > MAX_ENTRIES {
            entries.retain(|_, expires| *expires > now);
        }
        let live = |entries: &HashMap<(String, String, u64), Instant>, h: u64| {
            entries
                .get(&(key.to_string(), model.to_string(), h))
                .is_some_and(|e| *e > now)
        };
        let store = |entries: &mut HashMap<(String, String, u64), Instant>, h: u64| {
            entries.insert((key.to_string(), model.to_string(), h), now + self.ttl);
        };
        match rules {
            Rules::Anthropic => {
                let Some(last_mark) = blocks.iter().rposition(|b| b.marked) else {
                    return CacheUsage::default();
                };
                let end = blocks[last_mark];
                if end.tokens < MIN_CACHED_TOKENS {
                    return CacheUsage::default();
                }
                // The longest cached prefix of whole blocks up to the last mark (the real
                // cache looks back from each mark over earlier block boundaries).
                let hit = blocks[..=last_mark]
                    .iter()
                    .rev()
                    .find(|b| live(&entries, b.hash));
                let read = hit.map_or(0, |b| b.tokens);
                if let Some(b) = hit {
                    store(&mut entries, b.hash); // a hit refreshes the entry
                }
                for b in blocks[..=last_mark].iter().filter(|b| b.marked) {
                    store(&mut entries, b.hash);
                }
                store(&mut entries, end.hash);
                CacheUsage {
                    read,
                    write: end.tokens.saturating_sub(read),
                }
            }
            Rules::OpenAi => {
                let total = blocks.last().map_or(0, |b| b.tokens);
                if total < MIN_CACHED_TOKENS {
                    return CacheUsage::default();
                }
                let hit = blocks.iter().rev().find(|b| live(&entries, b.hash));
                let read = hit.map_or(0, |b| b.tokens);
                for b in blocks.iter().filter(|b| b.tokens >= MIN_CACHED_TOKENS) {
                    store(&mut entries, b.hash);
                }
                let read = if read >= MIN_CACHED_TOKENS {
                    read / OPENAI_STEP * OPENAI_STEP
                } else {
                    0
                };
                CacheUsage { read, write: 0 }
            }
        }
    }
}

/// The block boundaries of a prompt: `tools` (whole), `system` (whole), then each message.
/// A block is marked when it, or any content part in it, has `cache_control`.
pub fn boundaries(
    tools: Option<&Value>,
    system: Option<&Value>,
    messages: &[Value],
) -> Vec<Boundary> {
    let mut out = Vec::with_capacity(messages.len() + 2);
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut chars: usize = 0;
    let mut push = |v: &Value, counted: usize| {
        // The cache keys on content: where the marks sit does not change a prefix.
        let text = unmarked(v).to_string();
        for b in text.bytes().chain(std::iter::once(0xff)) {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        chars += counted;
        out.push(Boundary {
            hash,
            tokens: (chars as u64) / 4,
            marked: marked(v),
        });
    };
    if let Some(t) = tools.filter(|t| !t.is_null()) {
        push(t, 0);
    }
    if let Some(s) = system.filter(|s| !s.is_null()) {
        push(s, text_chars(s));
    }
    for m in messages {
        push(m, text_chars(m.get("content").unwrap_or(&Value::Null)));
    }
    out
}

fn unmarked(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .filter(|(k, _)| *k != "cache_control")
                .map(|(k, v)| (k.clone(), unmarked(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(unmarked).collect()),
        other => other.clone(),
    }
}

fn marked(v: &Value) -> bool {
    match v {
        Value::Object(o) => o.contains_key("cache_control") || o.values().any(marked),
        Value::Array(a) => a.iter().any(marked),
        _ => false,
    }
}

fn text_chars(v: &Value) -> usize {
    match v {
        Value::String(s) => s.chars().count(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .map(|s| s.chars().count())
            .sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn long(tag: &str) -> String {
        format!("{tag} {}", "lorem ipsum dolor sit amet ".repeat(200))
    }

    #[test]
    fn anthropic_writes_then_reads_at_the_marks() {
        let c = PrefixCache::new(DEFAULT_TTL);
        let system =
            json!([{"type": "text", "text": long("sys"), "cache_control": {"type": "ephemeral"}}]);
        let t1 = [
            json!({"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]}),
        ];
        let b1 = boundaries(None, Some(&system), &t1);
        let u1 = c.account("k", "m", &b1, Rules::Anthropic);
        assert_eq!((u1.read, u1.write), (0, b1[1].tokens));
        let t2 = [
            json!({"role": "user", "content": [{"type": "text", "text": "hi"}]}),
            json!({"role": "assistant", "content": "yo"}),
            json!({"role": "user", "content": [{"type": "text", "text": "more", "cache_control": {"type": "ephemeral"}}]}),
        ];
        let b2 = boundaries(None, Some(&system), &t2);
        let u2 = c.account("k", "m", &b2, Rules::Anthropic);
        // Turn 1's prefix (system and first message) is read, the rest up to the new mark
        // written: marks moving does not change the content a prefix is keyed by.
        assert_eq!(u2.read, b2[1].tokens);
        assert_eq!(u2.write, b2[3].tokens - b2[1].tokens);
        // Another key, or another model: cold.
        assert_eq!(c.account("other", "m", &b2, Rules::Anthropic).read, 0);
        assert_eq!(c.account("k", "m2", &b2, Rules::Anthropic).read, 0);
        // No mark: nothing cached.
        let plain = boundaries(None, Some(&json!(long("sys"))), &t2[..1]);
        assert_eq!(
            c.account("k", "m", &plain, Rules::Anthropic),
            CacheUsage::default()
        );
    }

    #[test]
    fn openai_caches_long_prompts_automatically_in_steps() {
        let c = PrefixCache::new(DEFAULT_TTL);
        let m1 = [
            json!({"role": "system", "content": long("a")}),
            json!({"role": "user", "content": "q1"}),
        ];
        let b1 = boundaries(None, None, &m1);
        assert_eq!(c.account("k", "m", &b1, Rules::OpenAi).read, 0);
        let m2 = [
            m1[0].clone(),
            m1[1].clone(),
            json!({"role": "assistant", "content": "a1"}),
            json!({"role": "user", "content": "q2"}),
        ];
        let b2 = boundaries(None, None, &m2);
        let u = c.account("k", "m", &b2, Rules::OpenAi);
        assert_eq!(u.read, b1[1].tokens / 128 * 128);
        assert!(u.read >= MIN_CACHED_TOKENS);
        // Short prompts never.
        let short = boundaries(None, None, &[json!({"role": "user", "content": "hi"})]);
        c.account("k", "m", &short, Rules::OpenAi);
        assert_eq!(c.account("k", "m", &short, Rules::OpenAi).read, 0);
        // Expired entries are misses.
        let c = PrefixCache::new(Duration::ZERO);
        c.account("k", "m", &b1, Rules::OpenAi);
        assert_eq!(c.account("k", "m", &b2, Rules::OpenAi).read, 0);
    }
}
