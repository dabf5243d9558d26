//! Run history: one row per pipeline run, shown to users with its error reason.

use std::fmt;

use super::{Catalog, CatalogError, now};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    /// Stopped by shutdown; an open batch is replayed by the next run.
    Cancelled,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One run as recorded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RunRecord {
    pub id: i64,
    pub pipeline: String,
    pub trigger: String,
    pub status: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub batches: i64,
    pub rows_in: i64,
    pub rows_out: i64,
    pub rows_quarantined: i64,
    pub error: Option<String>,
}

/// Totals of a finished run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunTotals {
    pub batches: u64,
    pub rows_in: u64,
    pub rows_out: u64,
    pub rows_quarantined: u64,
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

    /// Runs left `running` by a process that died are marked failed at startup.
    pub fn fail_abandoned_runs(&self) -> Result<usize, CatalogError> {
        Ok(self.conn().execute(
            "UPDATE runs SET status = 'failed', finished_at = ?1,
             error = 'the process stopped during this run; its open batch is replayed by the next run'
             WHERE status = 'running'",
            [now()],
        )?)
    }

    /// The most recent runs, newest first, optionally of one pipeline.
    pub fn recent_runs(
        &self,
        pipeline: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RunRecord>, CatalogError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, pipeline, trigger, status, started_at, finished_at, batches, rows_in, rows_out,
                    rows_quarantined, error
             FROM runs WHERE (?1 IS NULL OR pipeline = ?1) ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map((pipeline, limit as i64), |r| {
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
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
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
