//! Crash injection for the exactly-once tests.
//!
//! With `BACKFLOW_FAILPOINT=<name>` in its environment the process aborts (no destructors, no
//! flush: as abrupt as `kill -9`) when it reaches that point. Points: `after_intent`,
//! `after_first_put`, `before_manifest`, `after_manifest`, `after_commit`; dataset refreshes:
//! `dataset_before_publish`, `dataset_after_publish`. Unset (always, in
//! production), this is one environment lookup per point per batch.

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
