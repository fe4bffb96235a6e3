//! `AIConsumer`: a caller and its limits.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, SecretKeyRef};

/// A caller of the gateway (an app, a team, a downstream relay): its key, what it may use,
/// and its limits.
#[derive(CustomResource, Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "switchyard.dev",
    version = "v1alpha1",
    kind = "AIConsumer",
    plural = "aiconsumers",
    namespaced,
    status = "AIConsumerStatus",
    shortname = "aic",
    category = "switchyard",
    printcolumn = r#"{"name":"Budget","type":"string","jsonPath":".spec.budget.usd"}"#,
    printcolumn = r#"{"name":"Period","type":"string","jsonPath":".spec.budget.period"}"#,
    printcolumn = r#"{"name":"Spend","type":"string","jsonPath":".status.spendUsd"}"#,
    printcolumn = r#"{"name":"Shared","type":"string","jsonPath":".spec.budgetRef.name","priority":1}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct AIConsumerSpec {
    /// The Secret key holding the caller's virtual API key. It is kept only as a hash and
    /// compared in constant time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_secret_ref: Option<SecretKeyRef>,
    /// More keys for the same caller, all valid at once, so a key can be rotated without
    /// downtime: add the new one, move clients over, remove the old one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_key_secret_refs: Vec<SecretKeyRef>,
    /// Kubernetes ServiceAccounts whose pods authenticate as this caller with a projected
    /// ServiceAccount token (audience `switchyard`) instead of a key: no Secret to hand out
    /// or rotate. Tokens are checked through the API server's TokenReview (cluster mode only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<ServiceAccountRef>,
    /// Model names, globs or AIRoute names this caller may use; empty allows everything.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Request and token rate limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// A spending cap per period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    /// A shared budget (an `AIBudget` in the same namespace) this caller also draws on: a
    /// request must fit both this and `budget`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_ref: Option<BudgetRef>,
}

/// A reference to an `AIBudget` in the AIConsumer's namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BudgetRef {
    /// The AIBudget's name.
    pub name: String,
}

/// A ServiceAccount, by namespace and name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountRef {
    /// The ServiceAccount's namespace; defaults to the AIConsumer's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The ServiceAccount's name.
    pub name: String,
}

/// Rate limits per consumer.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Most requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u64>,
    /// Most tokens (input + output) per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u64>,
}

/// A spending cap.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Budget {
    /// The cap in USD, as a decimal string (e.g. `"100.00"`).
    pub usd: String,
    /// The period after which spend resets.
    pub period: BudgetPeriod,
}

// The data plane uses it too, without depending on this crate.
pub use switchyard_types::BudgetPeriod;

/// Observed state of an AIConsumer.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AIConsumerStatus {
    /// The `metadata.generation` last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Accepted` and `ResolvedRefs`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Spend in the current budget period, in USD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spend_usd: Option<String>,
    /// The budget minus the spend, in USD (never below 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_usd: Option<String>,
    /// The highest threshold (50, 80, 100 % of the budget) reached in the current period;
    /// an Event is recorded each time a higher one is crossed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_percent: Option<u32>,
}
