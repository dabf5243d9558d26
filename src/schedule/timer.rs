//! When a schedule fires, computed from the wall clock and the last fire time handled.
//!
//! The timer never sleeps longer than [`MAX_NAP`] before looking at the clock again, so a
//! clock that jumps (NTP step, VM resume) is noticed within that time:
//! - forward, past one or more fire times: the fires are *missed* and the misfire policy
//!   decides (`run_once`: one run for the latest, `skip`: none), counted either way;
//! - backwards: fire times already handled are not fired again (their periods ran); the jump
//!   is logged and counted, and the timer waits for the first fire time after the last one
//!   handled.
//!
//! On startup, the latest fire time before now is compared with the job's run history: if the
//! job has runs and none was made at or after that fire time, the fire was missed while the
//! daemon was down.

use chrono::{DateTime, Utc};

use crate::config::model::Schedule;

/// Longest sleep before the clock is read again.
pub const MAX_NAP: std::time::Duration = std::time::Duration::from_secs(15);
/// A fire handled later than this after its time counts as missed.
pub const GRACE: chrono::Duration = chrono::Duration::seconds(30);

/// What the timer should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Sleep this long, then ask again.
    Wait(std::time::Duration),
    /// Fire for `at` (the latest due fire time). `late`: `at` is older than [`GRACE`] (the
    /// misfire policy applies); `skipped`: earlier due fire times that will not run.
    Fire {
        at: DateTime<Utc>,
        late: bool,
        skipped: usize,
    },
    /// The schedule has no fire time after `last`.
    Never,
}

/// Fire times after `last` up to `now`, at most this many looked at.
const MAX_DUE: usize = 100_000;

/// The next step for a schedule whose fires up to `last` are handled.
pub fn step(schedule: &Schedule, last: DateTime<Utc>, now: DateTime<Utc>) -> Step {
    let from = last.with_timezone(&schedule.time_zone);
    let mut due = schedule
        .parsed
        .after(&from)
        .map(|t| t.with_timezone(&Utc))
        .take_while(|t| *t <= now)
        .take(MAX_DUE);
    let Some(first) = due.next() else {
        return match schedule.parsed.after(&from).next() {
            None => Step::Never,
            Some(next) => {
                let wait = (next.with_timezone(&Utc) - now)
                    .to_std()
                    .unwrap_or_default()
                    .min(MAX_NAP);
                Step::Wait(wait)
            }
        };
    };
    let (mut latest, mut skipped) = (first, 0);
    for t in due {
        latest = t;
        skipped += 1;
    }
    Step::Fire {
        at: latest,
        late: now - latest > GRACE,
        skipped,
    }
}

/// The latest fire time at or before `now`, if any.
pub fn previous_fire(schedule: &Schedule, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let now_tz = now.with_timezone(&schedule.time_zone);
    if schedule.parsed.includes(now_tz) {
        return Some(now);
    }
    schedule
        .parsed
        .after(&now_tz)
        .next_back()
        .map(|t| t.with_timezone(&Utc))
}

/// The next `n` fire times after `now`.
pub fn next_fires(schedule: &Schedule, now: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
    schedule
        .parsed
        .after(&now.with_timezone(&schedule.time_zone))
        .take(n)
        .map(|t| t.with_timezone(&Utc))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load::parse_cron;
    use crate::config::model::{Misfire, Overlap, RetryPolicy};

    fn schedule(cron: &str) -> Schedule {
        Schedule {
            cron: cron.to_string(),
            parsed: parse_cron(cron).unwrap_or_else(|e| panic!("{e}")),
            time_zone: chrono_tz::Asia::Shanghai,
            overlap: Overlap::Skip,
            misfire: Misfire::RunOnce,
            retries: RetryPolicy::default(),
            workspace: "default".into(),
        }
    }

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|d| d.to_utc())
            .unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn waits_until_the_next_fire_at_most_a_nap() {
        let s = schedule("0 5 * * *");
        // 04:59:55 Shanghai.
        let step = step(&s, t("2026-11-24T20:59:50Z"), t("2026-11-24T20:59:55Z"));
        assert_eq!(step, Step::Wait(std::time::Duration::from_secs(5)));
        let step2 = super::step(&s, t("2026-11-24T10:00:00Z"), t("2026-11-24T10:00:00Z"));
        assert_eq!(step2, Step::Wait(MAX_NAP));
    }

    #[test]
    fn fires_on_time_and_treats_a_forward_jump_as_a_misfire() {
        let s = schedule("0 5 * * *");
        assert_eq!(
            step(&s, t("2026-11-24T20:59:50Z"), t("2026-11-24T21:00:01Z")),
            Step::Fire {
                at: t("2026-11-24T21:00:00Z"),
                late: false,
                skipped: 0
            }
        );
        // The clock jumped three days and an hour ahead: four fire times passed; the latest
        // is an hour old (late), the three before it are skipped.
        assert_eq!(
            step(&s, t("2026-11-24T20:59:50Z"), t("2026-11-27T22:00:00Z")),
            Step::Fire {
                at: t("2026-11-27T21:00:00Z"),
                late: true,
                skipped: 3
            }
        );
    }

    #[test]
    fn a_backward_jump_does_not_fire_again() {
        let s = schedule("*/10 * * * * *");
        // Last handled 12:00:00; the clock now reads 11:00:00: wait (at most a nap), no fire.
        let step = step(&s, t("2026-11-24T12:00:00Z"), t("2026-11-24T11:00:00Z"));
        assert_eq!(step, Step::Wait(MAX_NAP));
    }

    #[test]
    fn previous_and_next_fires() {
        let s = schedule("0 5 * * *");
        let now = t("2026-11-25T03:00:00Z");
        assert_eq!(previous_fire(&s, now), Some(t("2026-11-24T21:00:00Z")));
        assert_eq!(
            next_fires(&s, now, 3),
            [
                t("2026-11-25T21:00:00Z"),
                t("2026-11-26T21:00:00Z"),
                t("2026-11-27T21:00:00Z")
            ]
        );
    }
}
