//! Crash injection for the exactly-once tests.
//!
//! With `BACKFLOW_FAILPOINT=<name>` in its environment the process aborts (no destructors, no
//! flush: as abrupt as `kill -9`) when it reaches that point. Points: `after_intent`,
//! `after_first_put`, `before_manifest`, `after_manifest`, `after_commit`; Kafka sinks:
//! `kafka_sink_delivered` (every message acknowledged, batch not committed); dataset refreshes:
//! `dataset_before_publish`, `dataset_after_publish`; the Kafka journal's fallback replay:
//! `kafka_fallback_replayed` (a file's records acknowledged, the file not removed). Unset (always, in
//! production), this is one environment lookup per point per batch.
//!
//! [`injected_error`] makes a point fail with a retryable error instead, a given number of
//! times (`BACKFLOW_FAILPOINT_ERROR=dataset_read_sources:2`), for the scheduler's retries.

/// Aborts the process if `BACKFLOW_FAILPOINT` names this point.
pub fn failpoint(name: &str) {
    if std::env::var_os("BACKFLOW_FAILPOINT").is_some_and(|v| v == name) {
        tracing::error!(
            failpoint = name,
            "BACKFLOW_FAILPOINT reached: aborting the process"
        );
        std::process::abort();
    }
}

/// Error injection for the retry tests: with `BACKFLOW_FAILPOINT_ERROR=<name>:<n>`, the first
/// `n` times this process reaches the point it gets `Some(message)` (the caller fails with a
/// retryable error); later times, and always without the variable, `None`.
pub fn injected_error(name: &str) -> Option<String> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static REACHED: AtomicU64 = AtomicU64::new(0);
    let spec = std::env::var("BACKFLOW_FAILPOINT_ERROR").ok()?;
    let (point, times) = spec.split_once(':')?;
    if point != name {
        return None;
    }
    let times: u64 = times.parse().ok()?;
    let n = REACHED.fetch_add(1, Ordering::SeqCst) + 1;
    (n <= times).then(|| {
        tracing::warn!(
            failpoint = name,
            n,
            times,
            "BACKFLOW_FAILPOINT_ERROR: injecting an error"
        );
        format!("injected transient error {n} of {times} (BACKFLOW_FAILPOINT_ERROR={spec})")
    })
}

/// Delay injection for the concurrency tests: with `BACKFLOW_FAILPOINT_DELAY=<name>:<ms>`,
/// reaching the point waits that long (a long-running step, deterministic to observe).
pub async fn injected_delay(name: &str) {
    let Ok(spec) = std::env::var("BACKFLOW_FAILPOINT_DELAY") else {
        return;
    };
    let Some((point, ms)) = spec.split_once(':') else {
        return;
    };
    if point == name
        && let Ok(ms) = ms.parse::<u64>()
    {
        tracing::warn!(failpoint = name, ms, "BACKFLOW_FAILPOINT_DELAY: delaying");
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
}
