//! A model's prices, and what a request's usage cost at them.

use serde::Serialize;
use switchyard_providers::Usage;
use switchyard_types::MicroUsd;

/// Prices per million tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Pricing {
    /// Input tokens.
    pub input: MicroUsd,
    /// Output tokens.
    pub output: MicroUsd,
    /// Input tokens read from the prompt cache.
    pub cached_input: MicroUsd,
    /// Input tokens written to the prompt cache.
    pub cache_write: MicroUsd,
    /// Whether any price is known (from the resource or the built-in catalog): without one
    /// spend is unknown, and reported as such rather than as $0.
    pub known: bool,
}

// === impl Pricing ===

impl Pricing {
    /// The cost of `usage`, in USD (0 when no price is known: see [`Pricing::cost`]).
    pub fn cost_usd(&self, usage: &Usage) -> f64 {
        let micro_per_million = usage.uncached_input_tokens() as f64 * self.input.0 as f64
            + usage.cached_input_tokens as f64 * self.cached_input.0 as f64
            + usage.cache_write_tokens as f64 * self.cache_write.0 as f64
            + usage.output_tokens as f64 * self.output.0 as f64;
        micro_per_million / 1e12
    }

    /// The cost of `usage` in USD, `None` when the model has no known price.
    pub fn cost(&self, usage: &Usage) -> Option<f64> {
        self.known.then(|| self.cost_usd(usage))
    }

    /// What the prompt cache saved on `usage`, in USD: the cache reads at the input price
    /// less their price as reads. (Cache writes cost extra where providers charge for them;
    /// that premium is in the spend, not netted out here.)
    pub fn saved_usd(&self, usage: &Usage) -> f64 {
        let per_token = self.input.0.saturating_sub(self.cached_input.0);
        usage.cached_input_tokens as f64 * per_token as f64 / 1e12
    }

    /// A single figure for comparing backends: input plus output price.
    pub(crate) fn rank(&self) -> u64 {
        self.input.0.saturating_add(self.output.0)
    }
}
