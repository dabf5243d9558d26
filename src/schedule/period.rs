//! Periods of dataset instances: whole local days or hours in the daemon's time zone (the zone
//! of Hive partitions and of the behavior dataset's `behavior_time` grain), so that an
//! instance's rows are exactly the rows whose period falls in it.

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

use crate::config::model::PeriodUnit;

/// `[start, end)` of one day or hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub unit: PeriodUnit,
    pub start: DateTime<Tz>,
    pub end: DateTime<Tz>,
}

/// The first instant of a local date (the earliest, if midnight repeats; 01:00 if a DST change
/// skips midnight).
fn midnight(tz: Tz, date: NaiveDate) -> Option<DateTime<Tz>> {
    let at = |h| {
        tz.from_local_datetime(&date.and_time(NaiveTime::from_hms_opt(h, 0, 0)?))
            .earliest()
    };
    at(0).or_else(|| at(1))
}

impl Period {
    /// The period containing `at`.
    pub fn containing(unit: PeriodUnit, at: DateTime<Utc>, tz: Tz) -> Option<Period> {
        let local = at.with_timezone(&tz);
        match unit {
            PeriodUnit::Day => Period::day(local.date_naive(), tz),
            PeriodUnit::Hour => {
                let start = local.with_minute(0)?.with_second(0)?.with_nanosecond(0)?;
                Some(Period {
                    unit,
                    start,
                    end: start + Duration::hours(1),
                })
            }
        }
    }

    /// One local day.
    pub fn day(date: NaiveDate, tz: Tz) -> Option<Period> {
        Some(Period {
            unit: PeriodUnit::Day,
            start: midnight(tz, date)?,
            end: midnight(tz, date.succ_opt()?)?,
        })
    }

    /// The last whole period that ends at or before `fire`: what a run fired at `fire` covers
    /// (the previous day for a daily job, the previous hour for an hourly one).
    pub fn before(unit: PeriodUnit, fire: DateTime<Utc>, tz: Tz) -> Option<Period> {
        Period::containing(unit, fire, tz)?.previous()
    }

    pub fn previous(&self) -> Option<Period> {
        let tz = self.start.timezone();
        Period::containing(self.unit, (self.start - Duration::seconds(1)).to_utc(), tz)
    }

    pub fn next(&self) -> Option<Period> {
        Period::containing(self.unit, self.end.to_utc(), self.start.timezone())
    }

    /// Every period from the one containing local midnight of `from` to the last one of `to`,
    /// in order (backfill: one instance each).
    pub fn between(
        unit: PeriodUnit,
        from: NaiveDate,
        to: NaiveDate,
        tz: Tz,
    ) -> Option<Vec<Period>> {
        let first = Period::containing(unit, Period::day(from, tz)?.start.to_utc(), tz)?;
        let end = Period::day(to, tz)?.end;
        let mut out = Vec::new();
        let mut p = first;
        while p.start < end {
            out.push(p);
            p = p.next()?;
        }
        Some(out)
    }

    /// `2026-11-24` or `2026-11-24T13`, in the period's zone: the key of idempotent backfills.
    pub fn label(&self) -> String {
        match self.unit {
            PeriodUnit::Day => self.start.format("%Y-%m-%d").to_string(),
            PeriodUnit::Hour => self.start.format("%Y-%m-%dT%H").to_string(),
        }
    }

    /// (label, start, end) as the run history stores them (bounds in RFC 3339 with the offset).
    pub fn record(&self) -> (String, String, String) {
        (self.label(), self.start.to_rfc3339(), self.end.to_rfc3339())
    }

    /// Reads a period back from the run history.
    pub fn from_record(unit: PeriodUnit, start: &str, tz: Tz) -> Option<Period> {
        let start = DateTime::parse_from_rfc3339(start).ok()?.to_utc();
        Period::containing(unit, start, tz)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|d| d.to_utc())
            .unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn a_daily_fire_covers_the_previous_local_day() {
        let tz = chrono_tz::Asia::Shanghai;
        // 05:00 Shanghai on the 25th is 21:00Z on the 24th.
        let p = Period::before(PeriodUnit::Day, utc("2026-11-24T21:00:00Z"), tz);
        let p = p.unwrap_or_else(|| panic!("period"));
        assert_eq!(p.label(), "2026-11-24");
        assert_eq!(p.start.to_rfc3339(), "2026-11-24T00:00:00+08:00");
        assert_eq!(p.end.to_rfc3339(), "2026-11-25T00:00:00+08:00");
        // A fire exactly at midnight covers the day that just ended.
        let p = Period::before(PeriodUnit::Day, utc("2026-11-24T16:00:00Z"), tz);
        assert_eq!(p.map(|p| p.label()), Some("2026-11-24".to_string()));
        let h = Period::before(PeriodUnit::Hour, utc("2026-11-24T21:00:05Z"), tz);
        assert_eq!(h.map(|p| p.label()), Some("2026-11-25T04".to_string()));
    }

    #[test]
    fn between_lists_every_day_or_hour_in_order() {
        let tz = chrono_tz::Asia::Shanghai;
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap_or_default();
        let days = Period::between(PeriodUnit::Day, d("2026-11-29"), d("2026-12-02"), tz)
            .unwrap_or_default();
        let labels: Vec<String> = days.iter().map(Period::label).collect();
        assert_eq!(
            labels,
            ["2026-11-29", "2026-11-30", "2026-12-01", "2026-12-02"]
        );
        let hours = Period::between(PeriodUnit::Hour, d("2026-11-29"), d("2026-11-29"), tz)
            .unwrap_or_default();
        assert_eq!(hours.len(), 24);
        assert_eq!(hours[23].label(), "2026-11-29T23");
        let back = Period::from_record(PeriodUnit::Day, &days[1].record().1, tz);
        assert_eq!(back, Some(days[1]));
    }
}
