//! How a route picks and retries its backends.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A retryable failure class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
pub enum RetryOn {
    /// Upstream answered with a 5xx status.
    #[serde(rename = "5xx")]
    ServerError,
    /// Upstream answered 429 Too Many Requests.
    #[serde(rename = "429")]
    RateLimited,
    /// Upstream did not answer in time.
    #[serde(rename = "timeout")]
    Timeout,
    /// The connection to the upstream could not be made.
    #[serde(rename = "connect")]
    Connect,
}

/// Prompt-cache affinity: which requests count as one conversation, kept on one backend and
/// upstream key so the provider's prompt cache warmed by one turn serves the next (weighted
/// rendezvous hashing: weights hold in aggregate; a conversation moves only when its backend
/// is unhealthy or saturated or its key resting). `prefix` (default): the
/// `x-switchyard-affinity` header, else `prompt_cache_key`, else `metadata.user_id` (or
/// `safety_identifier` / `user`), else a hash of the system prompt, tools and first message;
/// `session`: the named keys only; `none`: random by weight. See docs/pricing.md.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Affinity {
    /// Named session keys, else the hash of the cacheable prefix.
    #[default]
    Prefix,
    /// Named session keys only (header, `prompt_cache_key`, user/session ids).
    Session,
    /// No affinity: random by weight.
    None,
}

/// How a backend is chosen among the primary set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Random by weight.
    #[default]
    Weighted,
    /// The backend with the lowest recent latency.
    LeastLatency,
    /// The backend whose model is cheapest per token.
    Cheapest,
}

impl Strategy {
    /// The name used in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Weighted => "weighted",
            Strategy::LeastLatency => "least-latency",
            Strategy::Cheapest => "cheapest",
        }
    }
}
