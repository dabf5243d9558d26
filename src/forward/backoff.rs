//! Retry timing of forward jobs: exponential backoff with jitter, and the give-up horizon.

use std::time::Duration;

/// The first retry waits about this long.
pub const INITIAL: Duration = Duration::from_secs(1);

/// The wait before retry number `attempt` (1 = the first retry): `INITIAL · 2^(attempt-1)`,
/// capped at `max`, then "equal jitter": a uniformly random point in the upper half, so
/// retries of many jobs that failed together spread out but still back off.
/// `jitter` is a random number in `[0, 1)`.
pub fn delay(attempt: u32, max: Duration, jitter: f64) -> Duration {
    let exp = attempt.saturating_sub(1).min(30);
    let base = INITIAL
        .saturating_mul(1u32 << exp)
        .min(max)
        .max(Duration::from_millis(1));
    let half = base / 2;
    half + half.mul_f64(jitter.clamp(0.0, 1.0))
}

/// Whether a job whose hit arrived at `hit_at_ms` is given up instead of retried at
/// `retry_at_ms`: the retry would fall past the horizon.
pub fn past_horizon(hit_at_ms: i64, retry_at_ms: i64, horizon: Duration) -> bool {
    let horizon_ms = i64::try_from(horizon.as_millis()).unwrap_or(i64::MAX);
    retry_at_ms > hit_at_ms.saturating_add(horizon_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_within_their_jitter_band_and_stop_at_the_cap() {
        let max = Duration::from_secs(600);
        for attempt in 1..=12 {
            let base = Duration::from_secs(1 << (attempt - 1)).min(max);
            let low = delay(attempt, max, 0.0);
            let high = delay(attempt, max, 0.999_999);
            assert_eq!(low, base / 2, "attempt {attempt}");
            assert!(high < base && high >= low, "attempt {attempt}: {high:?}");
        }
        assert_eq!(delay(11, max, 0.0), Duration::from_secs(300));
        // No overflow, ever; a tiny cap still waits a little.
        assert_eq!(delay(u32::MAX, max, 0.0), Duration::from_secs(300));
        assert!(delay(5, Duration::ZERO, 0.5) <= Duration::from_millis(1));
        assert_eq!(delay(0, max, 0.0), Duration::from_millis(500));
        // Out-of-range jitter is clamped.
        assert!(delay(3, max, 7.0) <= Duration::from_secs(4));
    }

    #[test]
    fn the_horizon_counts_from_the_hit() {
        let day = Duration::from_secs(86_400);
        assert!(!past_horizon(0, 86_400_000, day));
        assert!(past_horizon(0, 86_400_001, day));
        assert!(!past_horizon(i64::MAX - 5, i64::MAX, Duration::MAX));
    }
}
