//! Consumer limits.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A budget period.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BudgetPeriod {
    /// Resets at 00:00 UTC.
    Day,
    /// Resets on the first day of the month, 00:00 UTC.
    #[default]
    Month,
}
