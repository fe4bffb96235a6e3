//! Budget periods: which day and which period (a day or a calendar month, UTC) a moment
//! falls in, and when that period ends.

use switchyard_types::{
    civil::{civil_from_days, days_from_civil},
    consumer::BudgetPeriod,
};

/// Days since the Unix epoch, and the id and end of the budget period containing `now_ms`.
pub fn budget_period(now_ms: u64, period: BudgetPeriod) -> (u64, u64, u64) {
    let day = now_ms / 86_400_000;
    match period {
        BudgetPeriod::Day => (day, day, (day + 1) * 86_400_000),
        BudgetPeriod::Month => {
            let (y, m, _) = civil_from_days(day as i64);
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            let next = days_from_civil(ny, nm, 1) as u64 * 86_400_000;
            (day, (y * 12 + i64::from(m)) as u64, next)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_month_ends_on_the_first_of_the_next_one() {
        // 2026-12-31T12:00:00Z: December's period ends at 2027-01-01T00:00:00Z.
        let dec31 = days_from_civil(2026, 12, 31) as u64 * 86_400_000 + 12 * 3_600_000;
        let jan1 = days_from_civil(2027, 1, 1) as u64 * 86_400_000;
        let (day, p, end) = budget_period(dec31, BudgetPeriod::Month);
        assert_eq!((day, end), (jan1 / 86_400_000 - 1, jan1));
        let (_, next, _) = budget_period(jan1, BudgetPeriod::Month);
        assert_ne!(p, next);
        assert_eq!(
            budget_period(jan1, BudgetPeriod::Day),
            (jan1 / 86_400_000, jan1 / 86_400_000, jan1 + 86_400_000)
        );
    }
}
