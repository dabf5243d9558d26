//! Run history: one row per pipeline run or dataset instance, shown to users with its error
//! reason; queued and waiting runs are recorded before they start. Also the source watermarks.

use std::collections::HashSet;
use std::fmt;

use rusqlite::OptionalExtension;

use super::{Catalog, CatalogError, now};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// Waiting for a concurrency slot (its workspace's or the daemon's), or behind the
    /// previous run of the same job (`overlap: queue`).
    Queued,
    /// Waiting for its sources to be committed up to the end of its period.
    Waiting,
    Running,
    Succeeded,
    Failed,
    /// Stopped by shutdown; an open batch is replayed by the next run.
    Cancelled,
    /// The sources were not committed up to the end of the period in time.
    TimedOut,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Waiting => "waiting",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::TimedOut => "timed_out",
        }
    }

    /// Every status, for metrics.
    pub const ALL: [RunStatus; 7] = [
        RunStatus::Queued,
        RunStatus::Waiting,
        RunStatus::Running,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Cancelled,
        RunStatus::TimedOut,
    ];
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One run as recorded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct RunRecord {
    pub id: i64,
    /// The pipeline or dataset job.
    pub pipeline: String,
    /// `schedule`, `misfire`, `retry`, `backfill`, `rerun`, `api`, `cli`.
    pub trigger: String,
    /// `queued`, `waiting`, `running`, `succeeded`, `failed`, `cancelled` or `timed_out`.
    pub status: String,
    /// When it started running (until then: when it was queued).
    pub started_at: String,
    pub finished_at: Option<String>,
    pub batches: i64,
    pub rows_in: i64,
    pub rows_out: i64,
    pub rows_quarantined: i64,
    /// Why it failed, timed out or was cancelled, for people.
    pub error: Option<String>,
    /// The workspace whose concurrency limit it counted against.
    pub workspace: Option<String>,
    pub queued_at: Option<String>,
    /// The fire time a scheduled run was made for.
    pub scheduled_for: Option<String>,
    /// The period a dataset instance covers (`2026-11-24` or `2026-11-24T13`), with its bounds.
    pub period: Option<String>,
    pub period_start: Option<String>,
    pub period_end: Option<String>,
    /// 1 for a first attempt; retries count up.
    pub attempt: i64,
    /// The run this one reruns or retries.
    pub rerun_of: Option<i64>,
}

/// Totals of a finished run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunTotals {
    pub batches: u64,
    pub rows_in: u64,
    pub rows_out: u64,
    pub rows_quarantined: u64,
}

/// A run recorded before it starts (queued or waiting).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewRun {
    pub pipeline: String,
    pub trigger: String,
    pub workspace: String,
    pub scheduled_for: Option<String>,
    /// (label, start, end), RFC 3339.
    pub period: Option<(String, String, String)>,
    pub attempt: u32,
    pub rerun_of: Option<i64>,
}

const COLUMNS: &str =
    "id, pipeline, trigger, status, started_at, finished_at, batches, rows_in, rows_out,
    rows_quarantined, error, workspace, queued_at, scheduled_for, period, period_start, period_end,
    attempt, rerun_of";

fn record(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRecord> {
    Ok(RunRecord {
        id: r.get(0)?,
        pipeline: r.get(1)?,
        trigger: r.get(2)?,
        status: r.get(3)?,
        started_at: r.get(4)?,
        finished_at: r.get(5)?,
        batches: r.get(6)?,
        rows_in: r.get(7)?,
        rows_out: r.get(8)?,
        rows_quarantined: r.get(9)?,
        error: r.get(10)?,
        workspace: r.get(11)?,
        queued_at: r.get(12)?,
        scheduled_for: r.get(13)?,
        period: r.get(14)?,
        period_start: r.get(15)?,
        period_end: r.get(16)?,
        attempt: r.get(17)?,
        rerun_of: r.get(18)?,
    })
}

impl Catalog {
    /// Records the start of a run; returns its id.
    pub fn start_run(&self, pipeline: &str, trigger: &str) -> Result<i64, CatalogError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO runs (pipeline, trigger, status, started_at) VALUES (?1, ?2, 'running', ?3)",
            (pipeline, trigger, now()),
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// Records a run before it starts, as `queued` or `waiting`; returns its id.
    pub fn queue_run(&self, run: &NewRun, status: RunStatus) -> Result<i64, CatalogError> {
        let conn = self.conn();
        let at = now();
        let (period, start, end) = match &run.period {
            Some((label, start, end)) => (Some(label), Some(start), Some(end)),
            None => (None, None, None),
        };
        conn.execute(
            "INSERT INTO runs (pipeline, trigger, status, started_at, queued_at, workspace,
                               scheduled_for, period, period_start, period_end, attempt, rerun_of)
             VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            rusqlite::params![
                run.pipeline,
                run.trigger,
                status.as_str(),
                at,
                run.workspace,
                run.scheduled_for,
                period,
                start,
                end,
                run.attempt.max(1),
                run.rerun_of,
            ],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// Moves a recorded run that has not started to another waiting state (`waiting` →
    /// `queued`).
    pub fn set_run_status(&self, id: i64, status: RunStatus) -> Result<(), CatalogError> {
        self.conn().execute(
            "UPDATE runs SET status = ?1 WHERE id = ?2 AND status IN ('queued', 'waiting')",
            (status.as_str(), id),
        )?;
        Ok(())
    }

    /// Marks a queued run as running now.
    pub fn begin_run(&self, id: i64) -> Result<(), CatalogError> {
        let n = self.conn().execute(
            "UPDATE runs SET status = 'running', started_at = ?1 WHERE id = ?2",
            (now(), id),
        )?;
        if n == 1 {
            Ok(())
        } else {
            Err(CatalogError::NotFound(format!("run {id}")))
        }
    }

    /// Records how a run ended.
    pub fn finish_run(
        &self,
        id: i64,
        status: RunStatus,
        totals: RunTotals,
        error: Option<&str>,
    ) -> Result<(), CatalogError> {
        self.conn().execute(
            "UPDATE runs SET status = ?1, finished_at = ?2, batches = ?3, rows_in = ?4, rows_out = ?5,
             rows_quarantined = ?6, error = ?7 WHERE id = ?8",
            (
                status.as_str(),
                now(),
                totals.batches as i64,
                totals.rows_in as i64,
                totals.rows_out as i64,
                totals.rows_quarantined as i64,
                error,
                id,
            ),
        )?;
        Ok(())
    }

    /// Ends a run that is still queued, waiting or running (one that never reached the code
    /// that records its end, e.g. refused by the job lock). Returns whether it was open.
    pub fn finish_open_run(
        &self,
        id: i64,
        status: RunStatus,
        error: &str,
    ) -> Result<bool, CatalogError> {
        Ok(self.conn().execute(
            "UPDATE runs SET status = ?1, finished_at = ?2, error = ?3
             WHERE id = ?4 AND status IN ('queued', 'waiting', 'running')",
            (status.as_str(), now(), error, id),
        )? == 1)
    }

    /// Adds a note to a finished run's reason (e.g. that a retry follows).
    pub fn append_run_note(&self, id: i64, note: &str) -> Result<(), CatalogError> {
        self.conn().execute(
            "UPDATE runs SET error = CASE WHEN error IS NULL THEN ?1 ELSE error || '; ' || ?1 END
             WHERE id = ?2",
            (note, id),
        )?;
        Ok(())
    }

    /// Runs left running by a process that died are marked failed at startup; runs it left
    /// queued or waiting are cancelled (they never started).
    pub fn fail_abandoned_runs(&self) -> Result<usize, CatalogError> {
        let conn = self.conn();
        let at = now();
        let failed = conn.execute(
            "UPDATE runs SET status = 'failed', finished_at = ?1,
             error = 'the process stopped during this run; its open batch is replayed by the next run'
             WHERE status = 'running'",
            [&at],
        )?;
        let cancelled = conn.execute(
            "UPDATE runs SET status = 'cancelled', finished_at = ?1,
             error = 'the daemon stopped before this run started'
             WHERE status IN ('queued', 'waiting')",
            [&at],
        )?;
        Ok(failed + cancelled)
    }

    /// One run by id.
    pub fn run(&self, id: i64) -> Result<Option<RunRecord>, CatalogError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM runs WHERE id = ?1"))?;
        let mut rows = stmt.query_map([id], record)?;
        Ok(rows.next().transpose()?)
    }

    /// The most recent runs, newest first, optionally of one pipeline and one status.
    pub fn recent_runs(
        &self,
        pipeline: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RunRecord>, CatalogError> {
        self.find_runs(pipeline, None, limit)
    }

    /// The most recent runs, newest first, filtered by pipeline and status.
    pub fn find_runs(
        &self,
        pipeline: Option<&str>,
        status: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RunRecord>, CatalogError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM runs WHERE (?1 IS NULL OR pipeline = ?1)
             AND (?2 IS NULL OR status = ?2) ORDER BY id DESC LIMIT ?3"
        ))?;
        let rows = stmt.query_map((pipeline, status, limit as i64), record)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The periods of a job that have a succeeded run.
    pub fn succeeded_periods(&self, pipeline: &str) -> Result<HashSet<String>, CatalogError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT DISTINCT period FROM runs WHERE pipeline = ?1 AND status = 'succeeded'
             AND period IS NOT NULL",
        )?;
        let rows = stmt.query_map([pipeline], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// When the job last had a run made for it (queued or started), cancelled runs left out;
    /// `None` if it never ran. RFC 3339, UTC.
    pub fn last_run_made(&self, pipeline: &str) -> Result<Option<String>, CatalogError> {
        Ok(self.conn().query_row(
            "SELECT max(coalesce(scheduled_for, queued_at, started_at)) FROM runs
             WHERE pipeline = ?1 AND status != 'cancelled'",
            [pipeline],
            |r| r.get(0),
        )?)
    }

    /// Moves a pipeline's source watermark forward to `up_to` (never back): every record that
    /// reached its source before `up_to` is committed.
    pub fn advance_watermark(&self, pipeline: &str, up_to: &str) -> Result<(), CatalogError> {
        self.conn().execute(
            "INSERT INTO watermarks (pipeline, up_to, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (pipeline) DO UPDATE SET up_to = excluded.up_to, updated_at = excluded.updated_at
             WHERE excluded.up_to > watermarks.up_to",
            (pipeline, up_to, now()),
        )?;
        Ok(())
    }

    /// A pipeline's source watermark (RFC 3339, UTC), if it ever drained its source.
    pub fn watermark(&self, pipeline: &str) -> Result<Option<String>, CatalogError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT up_to FROM watermarks WHERE pipeline = ?1",
                [pipeline],
                |r| r.get(0),
            )
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_history_records_outcome_and_abandoned_runs_fail() -> Result<(), CatalogError> {
        let c = Catalog::open_in_memory()?;
        let a = c.start_run("p", "schedule")?;
        let totals = RunTotals {
            batches: 1,
            rows_in: 5,
            rows_out: 4,
            rows_quarantined: 1,
        };
        c.finish_run(a, RunStatus::Succeeded, totals, None)?;
        c.start_run("p", "manual")?;
        assert_eq!(c.fail_abandoned_runs()?, 1);
        let runs = c.recent_runs(Some("p"), 10)?;
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].status, "failed");
        assert!(
            runs[0]
                .error
                .as_deref()
                .is_some_and(|e| e.contains("replayed"))
        );
        assert_eq!(
            (runs[1].status.as_str(), runs[1].rows_out),
            ("succeeded", 4)
        );
        assert!(c.recent_runs(Some("other"), 10)?.is_empty());
        Ok(())
    }
}
