//! A consumer's ledger: requests, tokens and spend by day and model.

use std::{collections::HashMap, sync::Arc};

/// Totals for one consumer, model and day.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntry {
    /// Requests that reached an upstream and were answered.
    pub requests: u64,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Cached input tokens.
    pub cached_input_tokens: u64,
    /// Spend in micro-USD.
    pub micro_usd: u64,
}

/// One consumer's ledger rows by (day, model). Lives under the consumer's lock
/// ([`crate::state::ConsumerState`]).
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    rows: HashMap<(u64, Arc<str>), LedgerEntry>,
}

// === impl Ledger ===

impl Ledger {
    /// Adds one request's totals under `day` and `model`.
    pub(crate) fn add(&mut self, day: u64, model: &Arc<str>, entry: LedgerEntry) {
        // Usage and spend derive from the upstream's numbers: saturate, never wrap.
        let e = self.rows.entry((day, model.clone())).or_default();
        e.requests = e.requests.saturating_add(entry.requests);
        e.input_tokens = e.input_tokens.saturating_add(entry.input_tokens);
        e.output_tokens = e.output_tokens.saturating_add(entry.output_tokens);
        e.cached_input_tokens = e
            .cached_input_tokens
            .saturating_add(entry.cached_input_tokens);
        e.micro_usd = e.micro_usd.saturating_add(entry.micro_usd);
        // Keep about two months of days.
        if self.rows.len() > 4096 {
            let oldest_kept = day.saturating_sub(62);
            self.rows.retain(|(d, _), _| *d >= oldest_kept);
        }
    }

    /// (day, model, totals), by day then model.
    pub(crate) fn rows(&self) -> Vec<(u64, Arc<str>, LedgerEntry)> {
        let mut out: Vec<_> = self
            .rows
            .iter()
            .map(|((d, m), e)| (*d, m.clone(), *e))
            .collect();
        out.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn about_two_months_of_days_are_kept() {
        let model: Arc<str> = Arc::from("m");
        let mut l = Ledger::default();
        let one = LedgerEntry {
            requests: 1,
            ..Default::default()
        };
        for day in 0..=4096 {
            l.add(day, &model, one);
        }
        let rows = l.rows();
        assert_eq!(rows.len(), 63);
        assert_eq!((rows[0].0, rows[62].0), (4034, 4096));
    }
}
