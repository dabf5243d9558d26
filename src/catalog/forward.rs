//! The durable queue of third-party forward jobs (Miaozhen, AdMaster, …) and the forwarder's
//! progress through the journal.
//!
//! Why here: a job must be durable before the forwarder moves past its hit, and a sent job must
//! disappear in the same step that records its success. SQLite in WAL mode with
//! `synchronous = FULL` gives both as single transactions: jobs of a journal range are inserted
//! *together with* the new progress position (a crash never enqueues a range twice nor skips
//! one), and a success is one `DELETE`. Due jobs are *leased* (their due time pushed past the
//! request timeout) so a job in flight is not picked twice; if the process dies mid-request the
//! lease runs out and the job is sent again (at least once).

use rusqlite::OptionalExtension;

use super::{Catalog, CatalogError};

/// A job to enqueue: one GET to one third-party URL for one hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewForwardJob {
    /// Host of the configured URL (the metric label).
    pub destination: String,
    /// The URL with its macros filled.
    pub url: String,
    /// The user's user agent, sent as `User-Agent`.
    pub user_agent: Option<String>,
    /// The hit's event id (for logs).
    pub event_id: String,
    /// When the hit was received (Unix ms): the give-up horizon counts from here.
    pub hit_at_ms: i64,
}

/// A leased job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardJob {
    pub id: i64,
    pub destination: String,
    pub url: String,
    pub user_agent: Option<String>,
    pub event_id: String,
    pub hit_at_ms: i64,
    /// Attempts made before this one.
    pub attempts: u32,
}

/// Queue depth of one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardQueueStats {
    pub destination: String,
    pub depth: u64,
    /// Receive time (Unix ms) of the oldest queued hit.
    pub oldest_hit_at_ms: i64,
}

/// Inserts `jobs`, due at `now_ms` (inside the caller's transaction).
pub(super) fn insert_jobs(
    tx: &rusqlite::Transaction<'_>,
    jobs: &[NewForwardJob],
    now_ms: i64,
) -> Result<(), CatalogError> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO forward_jobs (destination, url, user_agent, event_id, hit_at_ms, next_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for j in jobs {
        insert.execute(rusqlite::params![
            j.destination,
            j.url,
            j.user_agent,
            j.event_id,
            j.hit_at_ms,
            now_ms
        ])?;
    }
    Ok(())
}

impl Catalog {
    /// The first journal position the forwarder has not turned into jobs yet, if it ever ran.
    pub fn forward_position(&self) -> Result<Option<u64>, CatalogError> {
        let next: Option<i64> = self
            .conn()
            .query_row(
                "SELECT next_position FROM forward_progress WHERE id = 1",
                [],
                |r| r.get(0),
            )
            .optional()?;
        Ok(next.map(|n| n.max(1) as u64))
    }

    /// Enqueues the jobs of a journal range and moves the forwarder's progress to
    /// `next_position`, in one transaction. The jobs are due at `now_ms`.
    pub fn enqueue_forward_jobs(
        &self,
        jobs: &[NewForwardJob],
        next_position: u64,
        now_ms: i64,
    ) -> Result<(), CatalogError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        insert_jobs(&tx, jobs, now_ms)?;
        tx.execute(
            "INSERT INTO forward_progress (id, next_position) VALUES (1, ?1)
             ON CONFLICT (id) DO UPDATE SET next_position = excluded.next_position",
            [next_position as i64],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Leases up to `limit` jobs due at `now_ms`, oldest due first: their due time moves to
    /// `now_ms + lease_ms`, so they are not handed out again while in flight.
    pub fn lease_forward_jobs(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<ForwardJob>, CatalogError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let jobs = {
            let mut stmt = tx.prepare_cached(
                "SELECT id, destination, url, user_agent, event_id, hit_at_ms, attempts
                 FROM forward_jobs WHERE next_at_ms <= ?1 ORDER BY next_at_ms, id LIMIT ?2",
            )?;
            let rows = stmt.query_map(rusqlite::params![now_ms, limit as i64], |r| {
                Ok(ForwardJob {
                    id: r.get(0)?,
                    destination: r.get(1)?,
                    url: r.get(2)?,
                    user_agent: r.get(3)?,
                    event_id: r.get(4)?,
                    hit_at_ms: r.get(5)?,
                    attempts: r.get::<_, i64>(6)?.clamp(0, i64::from(u32::MAX)) as u32,
                })
            })?;
            rows.collect::<Result<Vec<_>, _>>()?
        };
        {
            let mut lease =
                tx.prepare_cached("UPDATE forward_jobs SET next_at_ms = ?1 WHERE id = ?2")?;
            for j in &jobs {
                lease.execute(rusqlite::params![now_ms.saturating_add(lease_ms), j.id])?;
            }
        }
        tx.commit()?;
        Ok(jobs)
    }

    /// Removes a job: it was sent, or it was given up.
    pub fn finish_forward_job(&self, id: i64) -> Result<(), CatalogError> {
        self.conn()
            .execute("DELETE FROM forward_jobs WHERE id = ?1", [id])?;
        Ok(())
    }

    /// Records a failed attempt; the job is due again at `next_at_ms`.
    pub fn retry_forward_job(
        &self,
        id: i64,
        next_at_ms: i64,
        error: &str,
    ) -> Result<(), CatalogError> {
        self.conn().execute(
            "UPDATE forward_jobs SET attempts = attempts + 1, next_at_ms = ?1, last_error = ?2
             WHERE id = ?3",
            rusqlite::params![next_at_ms, error, id],
        )?;
        Ok(())
    }

    /// Depth and oldest hit per destination.
    pub fn forward_queue_stats(&self) -> Result<Vec<ForwardQueueStats>, CatalogError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT destination, COUNT(*), MIN(hit_at_ms) FROM forward_jobs
             GROUP BY destination ORDER BY destination",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(ForwardQueueStats {
                destination: r.get(0)?,
                depth: r.get::<_, i64>(1)?.max(0) as u64,
                oldest_hit_at_ms: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(dest: &str, n: i64) -> NewForwardJob {
        NewForwardJob {
            destination: dest.into(),
            url: format!("https://{dest}/x/k=1&n={n}"),
            user_agent: Some("Mozilla/5.0".into()),
            event_id: format!("e{n}"),
            hit_at_ms: 1_000 + n,
        }
    }

    #[test]
    fn jobs_and_progress_move_together_and_leases_hide_jobs_in_flight() -> Result<(), CatalogError>
    {
        let c = Catalog::open_in_memory()?;
        assert_eq!(c.forward_position()?, None);
        c.enqueue_forward_jobs(&[job("a.example", 1), job("b.example", 2)], 11, 5_000)?;
        c.enqueue_forward_jobs(&[job("a.example", 3)], 20, 5_000)?;
        assert_eq!(c.forward_position()?, Some(20));
        let stats = c.forward_queue_stats()?;
        assert_eq!(stats.len(), 2);
        assert_eq!((stats[0].depth, stats[0].oldest_hit_at_ms), (2, 1_001));

        assert!(
            c.lease_forward_jobs(4_999, 1_000, 10)?.is_empty(),
            "not due yet"
        );
        let leased = c.lease_forward_jobs(5_000, 1_000, 2)?;
        assert_eq!(leased.len(), 2);
        assert_eq!(leased[0].event_id, "e1");
        // In flight: only the third is handed out until the lease runs out.
        let third = c.lease_forward_jobs(5_500, 1_000, 10)?;
        assert_eq!(third.len(), 1);
        assert_eq!(c.lease_forward_jobs(5_999, 1_000, 10)?.len(), 0);
        c.finish_forward_job(leased[0].id)?;
        c.retry_forward_job(leased[1].id, 9_000, "HTTP 500")?;
        // The third's lease ran out (a crash mid-request): it is handed out again.
        let again = c.lease_forward_jobs(6_500, 1_000, 10)?;
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].id, third[0].id);
        let retried = c.lease_forward_jobs(9_000, 1_000, 10)?;
        let retried = retried.iter().find(|j| j.id == leased[1].id);
        assert_eq!(retried.map(|j| j.attempts), Some(1));
        assert_eq!(
            c.forward_queue_stats()?
                .iter()
                .map(|s| s.depth)
                .sum::<u64>(),
            2
        );
        Ok(())
    }
}
