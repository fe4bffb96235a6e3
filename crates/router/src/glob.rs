//! Model-name globs: `*` matches any run of characters, `?` exactly one.

/// A compiled model pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    pattern: std::sync::Arc<str>,
    literal_len: usize,
    stars: usize,
}

impl Glob {
    /// Whether `s` contains glob metacharacters.
    pub fn is_glob(s: &str) -> bool {
        s.contains(['*', '?'])
    }

    /// Compiles a pattern.
    pub fn new(pattern: &str) -> Self {
        Glob {
            literal_len: pattern.chars().filter(|c| *c != '*' && *c != '?').count(),
            stars: pattern.matches('*').count(),
            pattern: pattern.into(),
        }
    }

    /// The pattern text.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// The pattern text, shared.
    pub fn pattern(&self) -> &std::sync::Arc<str> {
        &self.pattern
    }

    /// Orders more specific patterns first: more literal characters, then fewer stars.
    pub fn specificity(&self) -> (std::cmp::Reverse<usize>, usize) {
        (std::cmp::Reverse(self.literal_len), self.stars)
    }

    /// Whether `text` matches. Two-pointer match with single-star backtracking, over bytes
    /// (no allocation: this runs per request), stepping whole UTF-8 characters for `?`.
    pub fn matches(&self, text: &str) -> bool {
        let p = self.pattern.as_bytes();
        let t = text.as_bytes();
        let (mut pi, mut ti) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while ti < t.len() {
            if pi < p.len() && p[pi] == b'?' {
                pi += 1;
                ti += utf8_width(t[ti]);
            } else if pi < p.len() && p[pi] == b'*' {
                star = Some((pi, ti));
                pi += 1;
            } else if pi < p.len() && p[pi] == t[ti] {
                pi += 1;
                ti += 1;
            } else if let Some((sp, st)) = star {
                let next = st + utf8_width(t[st]);
                pi = sp + 1;
                ti = next;
                star = Some((sp, next));
            } else {
                return false;
            }
        }
        ti == t.len() && p[pi..].iter().all(|c| *c == b'*')
    }
}

fn utf8_width(lead: u8) -> usize {
    match lead {
        0xF0.. => 4,
        0xE0.. => 3,
        0xC0.. => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching() {
        let cases = [
            ("gpt-*", "gpt-4o", true),
            ("gpt-*", "gpt-", true),
            ("gpt-*", "claude", false),
            ("*", "anything", true),
            ("*-mini", "gpt-4o-mini", true),
            ("*-mini", "gpt-4o-mini-2", false),
            ("gpt-?o", "gpt-4o", true),
            ("gpt-?o", "gpt-40o", false),
            ("a*b*c", "a-x-b-y-c", true),
            ("a*b*c", "a-x-c-y-b", false),
            ("claude-*-latest", "claude-3-5-sonnet-latest", true),
            ("é*", "éa", true),
            ("?a", "éa", true),
            ("*a", "éa", true),
        ];
        for (p, t, want) in cases {
            assert_eq!(Glob::new(p).matches(t), want, "{p} vs {t}");
        }
    }

    #[test]
    fn specificity_orders_narrow_first() {
        let mut v = [Glob::new("*"), Glob::new("gpt-4*"), Glob::new("gpt-*")];
        v.sort_by_key(|g| g.specificity());
        let order: Vec<_> = v.iter().map(|g| g.as_str()).collect();
        assert_eq!(order, ["gpt-4*", "gpt-*", "*"]);
    }
}
