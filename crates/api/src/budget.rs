//! `AIBudget`: one spending cap shared by several AIConsumers (a team's budget).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    common::Condition,
    consumer::{Budget, BudgetPeriod},
};

/// A spending cap that several AIConsumers draw on, each through `spec.budgetRef`. A request
/// is admitted only when its reserved maximum cost fits both its consumer's own budget (if
/// any) and this one.
#[derive(CustomResource, Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "switchyard.dev",
    version = "v1alpha1",
    kind = "AIBudget",
    plural = "aibudgets",
    namespaced,
    status = "AIBudgetStatus",
    shortname = "aib",
    category = "switchyard",
    printcolumn = r#"{"name":"Budget","type":"string","jsonPath":".spec.usd"}"#,
    printcolumn = r#"{"name":"Period","type":"string","jsonPath":".spec.period"}"#,
    printcolumn = r#"{"name":"Spend","type":"string","jsonPath":".status.spendUsd"}"#,
    printcolumn = r#"{"name":"Remaining","type":"string","jsonPath":".status.remainingUsd"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct AIBudgetSpec {
    /// The cap in USD, as a decimal string (e.g. `"500.00"`).
    pub usd: String,
    /// The period after which spend resets (default `month`).
    #[serde(default)]
    pub period: BudgetPeriod,
}

/// Observed state of an AIBudget.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AIBudgetStatus {
    /// Settled spend of every consumer drawing on it, in the current period, in USD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spend_usd: Option<String>,
    /// The cap minus the spend, in USD (never below 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_usd: Option<String>,
    /// The highest threshold (50, 80, 100 % of the cap) reached in the current period; an
    /// Event is recorded each time a higher one is crossed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_percent: Option<u32>,
    /// The AIConsumers (`namespace/name`) drawing on it in the serving table.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumers: Vec<String>,
    /// Reserved for conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

// === impl AIBudgetSpec ===

impl AIBudgetSpec {
    /// The same cap as a consumer's inline `spec.budget`.
    pub fn as_budget(&self) -> Budget {
        Budget {
            usd: self.usd.clone(),
            period: self.period,
        }
    }
}
