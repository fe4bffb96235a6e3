//! Types and parsers shared by every resource kind.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A reference to one key of a Secret in the same namespace as the referring resource.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    pub name: String,
    /// Key inside the Secret's `data` (or `stringData`) whose value is used.
    pub key: String,
}

/// A status condition, following the Kubernetes API conventions (`metav1.Condition`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type, e.g. `Accepted`, `ResolvedRefs`, `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Machine-readable CamelCase reason, e.g. `BackendNotFound`.
    pub reason: String,
    /// Human-readable explanation.
    #[serde(default)]
    pub message: String,
    /// Last time the condition changed status (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// The `metadata.generation` this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

// The data plane parses these too, without depending on this crate.
pub use switchyard_types::{parse_duration, parse_price, MicroUsd, ParseError};
