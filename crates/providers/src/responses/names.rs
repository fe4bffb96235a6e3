//! Responses `namespace` tools as the flat function tools of the chat APIs, and back.
//!
//! A Responses caller may group function tools it runs itself under a namespace
//! (`{"type": "namespace", "name": "multi_agent_v1", "tools": [{"type": "function", "name":
//! "spawn", …}]}`); the model's call then names both (`{"type": "function_call", "namespace":
//! "multi_agent_v1", "name": "spawn", …}`). Chat APIs know only flat names, so each inner tool
//! is declared as `multi_agent_v1__spawn` (Codex's own spelling for chat providers: a
//! namespace already ending in `__`, like `mcp__server__`, is joined as it is) and every call
//! is named back as the caller declared it, in complete responses and in streams.
//!
//! A flat name keeps within what every backend accepts (OpenAI and Bedrock:
//! `[a-zA-Z0-9_-]{1,64}`; Gemini: also starting with a letter or `_`): other characters
//! become `_`, a name too long is cut and ends in a hash of the whole, and one that would
//! repeat another tool's name gets a number.

use std::collections::{HashMap, HashSet};

/// The longest tool name every backend accepts.
const MAX_LEN: usize = 64;

/// Flat tool names made up for namespaced tools, and the caller's names they stand for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ToolNames {
    /// Flat name → (namespace, name).
    to_caller: HashMap<String, (String, String)>,
    /// (namespace, name) → flat name.
    to_flat: HashMap<(String, String), String>,
}

// === impl ToolNames ===

impl ToolNames {
    /// The flat name for `name` in `namespace`, made up (and remembered) the first time;
    /// `taken` holds every name already declared, which the new one must not repeat.
    pub(crate) fn flatten(
        &mut self,
        namespace: &str,
        name: &str,
        taken: &mut HashSet<String>,
    ) -> String {
        let key = (namespace.to_string(), name.to_string());
        if let Some(flat) = self.to_flat.get(&key) {
            return flat.clone();
        }
        let base = flat_name(namespace, name);
        let mut flat = base.clone();
        let mut n = 2u32;
        while taken.contains(&flat) || self.to_caller.contains_key(&flat) {
            let suffix = format!("_{n}");
            flat = format!("{}{suffix}", cut(&base, MAX_LEN - suffix.len()));
            n += 1;
        }
        taken.insert(flat.clone());
        self.to_caller.insert(flat.clone(), key.clone());
        self.to_flat.insert(key, flat.clone());
        flat
    }

    /// The flat name already made up for `name` in `namespace`, or one made the same way
    /// (a call replayed from a turn whose tools are no longer declared).
    pub(crate) fn flat(&self, namespace: &str, name: &str) -> String {
        self.to_flat
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
            .unwrap_or_else(|| flat_name(namespace, name))
    }

    /// The caller's `(namespace, name)` for a tool name the model used: the namespaced tool a
    /// flat name stands for, or the name itself with no namespace.
    pub fn caller_name<'a>(&'a self, name: &'a str) -> (Option<&'a str>, &'a str) {
        match self.to_caller.get(name) {
            Some((ns, n)) => (Some(ns.as_str()), n.as_str()),
            None => (None, name),
        }
    }

    /// Whether no name was made up.
    pub fn is_empty(&self) -> bool {
        self.to_caller.is_empty()
    }
}

/// `namespace__name`, within the charset and length every backend accepts.
fn flat_name(namespace: &str, name: &str) -> String {
    let joined = if namespace.ends_with("__") {
        format!("{namespace}{name}")
    } else {
        format!("{namespace}__{name}")
    };
    let mut clean: String = joined
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '_' | '-' => c,
            _ => '_',
        })
        .collect();
    if !clean.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        clean.insert(0, '_');
    }
    if clean.len() > MAX_LEN {
        // Cut, and keep names that differ only past the cut apart.
        let hash = format!("_{:08x}", fnv1a(joined.as_bytes()) as u32);
        clean = format!("{}{hash}", cut(&clean, MAX_LEN - hash.len()));
    }
    clean
}

/// The first `len` bytes of an ASCII string.
fn cut(s: &str, len: usize) -> &str {
    &s[..s.len().min(len)]
}

/// FNV-1a: a small stable hash, the same in every build.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_names_are_unique_and_valid_everywhere() {
        let mut names = ToolNames::default();
        let mut taken = HashSet::from(["multi_agent_v1__spawn".to_string()]);
        assert_eq!(
            names.flatten("mcp__server__", "search", &mut taken),
            "mcp__server__search"
        );
        // A flat name a plain tool already has gets a number.
        assert_eq!(
            names.flatten("multi_agent_v1", "spawn", &mut taken),
            "multi_agent_v1__spawn_2"
        );
        assert_eq!(
            names.caller_name("multi_agent_v1__spawn_2"),
            (Some("multi_agent_v1"), "spawn")
        );
        assert_eq!(
            names.caller_name("multi_agent_v1__spawn"),
            (None, "multi_agent_v1__spawn")
        );
        // The same tool twice is one name.
        assert_eq!(
            names.flatten("multi_agent_v1", "spawn", &mut taken),
            "multi_agent_v1__spawn_2"
        );
        let long = "n".repeat(80);
        let a = names.flatten("1.ns", &format!("{long}a"), &mut taken);
        let b = names.flatten("1.ns", &format!("{long}b"), &mut taken);
        for n in [&a, &b] {
            assert!(n.len() <= MAX_LEN, "{n}");
            assert!(n.starts_with("_1_ns__"), "{n}");
            assert!(n
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
        }
        assert_ne!(a, b);
        assert_eq!(names.caller_name(&b), (Some("1.ns"), &*format!("{long}b")));
    }
}
