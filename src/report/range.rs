//! Report time filters: whole days in the partition time zone, both ends included.

use chrono::{Days, NaiveDate};
use serde::Serialize;

use super::ReportError;

/// The longest range a report answers (R27, R36, R42): 60 consecutive days.
pub const MAX_REPORT_DAYS: u64 = 60;

/// Days `[from, to]`, both included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DateRange {
    pub from: NaiveDate,
    pub to: NaiveDate,
}

impl DateRange {
    /// Resolves a requested range. Without bounds: the `default_days` days before `today`
    /// (today excluded). With one bound: `default_days` days from or up to it. A range that ends
    /// before it starts, or spans more than `max_days`, is the caller's error.
    pub fn resolve(
        from: Option<NaiveDate>,
        to: Option<NaiveDate>,
        today: NaiveDate,
        default_days: u64,
        max_days: u64,
    ) -> Result<DateRange, ReportError> {
        let span = Days::new(default_days.saturating_sub(1));
        let (from, to) = match (from, to) {
            (Some(f), Some(t)) => (f, t),
            (Some(f), None) => (f, f + span),
            (None, Some(t)) => (t - span, t),
            (None, None) => {
                let to = today - Days::new(1);
                (to - span, to)
            }
        };
        if to < from {
            return Err(ReportError::Invalid(format!(
                "the range ends ({to}) before it starts ({from})"
            )));
        }
        let range = DateRange { from, to };
        if range.days() > max_days {
            return Err(ReportError::Invalid(format!(
                "the range {from}..{to} spans {} days; at most {max_days} consecutive days",
                range.days()
            )));
        }
        Ok(range)
    }

    /// Number of days in the range.
    pub fn days(&self) -> u64 {
        (self.to - self.from).num_days().unsigned_abs() + 1
    }

    /// Every day of the range, in order.
    pub fn iter(&self) -> impl Iterator<Item = NaiveDate> + use<> {
        let from = self.from;
        (0..self.days()).map(move |d| from + Days::new(d))
    }
}

/// Parses a `YYYY-MM-DD` query value.
pub fn parse_day(what: &str, value: &str) -> Result<NaiveDate, ReportError> {
    NaiveDate::parse_from_str(value.trim(), "%Y-%m-%d")
        .map_err(|_| ReportError::Invalid(format!("{what}: `{value}` is not a date (YYYY-MM-DD)")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap_or_default()
    }

    #[test]
    fn default_is_the_previous_seven_days_without_today() {
        let r = DateRange::resolve(None, None, day("2026-03-10"), 7, 60).ok();
        assert_eq!(
            r,
            Some(DateRange {
                from: day("2026-03-03"),
                to: day("2026-03-09")
            })
        );
    }

    #[test]
    fn sixty_days_pass_sixty_one_do_not_and_reversed_ranges_are_rejected() {
        let today = day("2026-03-10");
        let ok = DateRange::resolve(
            Some(day("2026-01-01")),
            Some(day("2026-03-01")),
            today,
            7,
            60,
        );
        assert_eq!(ok.map(|r| r.days()).ok(), Some(60));
        let long = DateRange::resolve(
            Some(day("2026-01-01")),
            Some(day("2026-03-02")),
            today,
            7,
            60,
        );
        assert!(
            matches!(&long, Err(ReportError::Invalid(m)) if m.contains("61 days")),
            "{long:?}"
        );
        let reversed = DateRange::resolve(
            Some(day("2026-03-02")),
            Some(day("2026-03-01")),
            today,
            7,
            60,
        );
        assert!(matches!(&reversed, Err(ReportError::Invalid(m)) if m.contains("before")));
    }

    #[test]
    fn bad_dates_are_named() {
        assert!(
            matches!(parse_day("from", "2026-13-01"), Err(ReportError::Invalid(m)) if m.contains("from"))
        );
    }
}
