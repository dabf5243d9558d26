//! Batch intents and commits: the catalog half of the exactly-once protocol.
//!
//! A batch is planned (an *intent* with its source positions) before anything is written, and
//! committed (with the source advanced in the same transaction) only after every output file and
//! the commit manifest exist. There is at most one open intent per pipeline.

use std::collections::HashSet;

use rusqlite::{OptionalExtension, Transaction};
use serde::{Deserialize, Serialize};

use super::rollups::RollupDelta;
use super::{Catalog, CatalogError, now};

/// A planned batch.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchIntent {
    pub pipeline: String,
    pub seq: i64,
    /// Source positions as the source recorded them (e.g. the file list with sizes).
    pub positions: serde_json::Value,
    /// When the batch was planned (RFC 3339, UTC); the runtime uses it instead of "now" so a
    /// replay produces identical output.
    pub planned_at: String,
}

/// What a committed batch wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchStats {
    pub rows_in: u64,
    pub rows_out: u64,
    pub rows_quarantined: u64,
    pub files: Vec<String>,
    pub bytes: u64,
}

impl Catalog {
    /// The open intent of a pipeline, if a previous run stopped before committing it.
    pub fn open_intent(&self, pipeline: &str) -> Result<Option<BatchIntent>, CatalogError> {
        let conn = self.conn();
        let row = conn
            .query_row(
                "SELECT seq, positions, planned_at FROM batches WHERE pipeline = ?1 AND state = 'open'",
                [pipeline],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)),
            )
            .optional()?;
        row.map(|(seq, positions, planned_at)| {
            let positions = serde_json::from_str(&positions).map_err(|e| {
                CatalogError::Corrupt(format!("batch {pipeline}/{seq} positions: {e}"))
            })?;
            Ok(BatchIntent {
                pipeline: pipeline.to_string(),
                seq,
                positions,
                planned_at,
            })
        })
        .transpose()
    }

    /// Records the intent of the next batch (sequence = last + 1). Fails if one is open.
    pub fn create_intent(
        &self,
        pipeline: &str,
        positions: &serde_json::Value,
        planned_at: &str,
    ) -> Result<BatchIntent, CatalogError> {
        self.create_intent_with_input(pipeline, positions, planned_at, None)
    }

    /// Records the intent of the next batch together with its input (for sources that cannot
    /// be read twice), in one transaction; the input is deleted when the batch commits.
    pub fn create_intent_with_input(
        &self,
        pipeline: &str,
        positions: &serde_json::Value,
        planned_at: &str,
        input: Option<&[u8]>,
    ) -> Result<BatchIntent, CatalogError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let open: Option<i64> = tx
            .query_row(
                "SELECT seq FROM batches WHERE pipeline = ?1 AND state = 'open'",
                [pipeline],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(seq) = open {
            return Err(CatalogError::IntentOpen {
                pipeline: pipeline.to_string(),
                seq,
            });
        }
        let seq: i64 = tx.query_row(
            "SELECT coalesce(max(seq), 0) + 1 FROM batches WHERE pipeline = ?1",
            [pipeline],
            |r| r.get(0),
        )?;
        tx.execute(
            "INSERT INTO batches (pipeline, seq, state, positions, planned_at) VALUES (?1, ?2, 'open', ?3, ?4)",
            (pipeline, seq, positions.to_string(), planned_at),
        )?;
        if let Some(input) = input {
            tx.execute(
                "INSERT INTO batch_inputs (pipeline, seq, data) VALUES (?1, ?2, ?3)",
                (pipeline, seq, input),
            )?;
        }
        tx.commit()?;
        Ok(BatchIntent {
            pipeline: pipeline.to_string(),
            seq,
            positions: positions.clone(),
            planned_at: planned_at.to_string(),
        })
    }

    /// Commits a batch, advances its file source and merges its report rollups in one
    /// transaction.
    pub fn commit_batch(
        &self,
        pipeline: &str,
        seq: i64,
        ingested_files: &[String],
        stats: &BatchStats,
        rollups: &RollupDelta,
    ) -> Result<(), CatalogError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        mark_committed(&tx, pipeline, seq, ingested_files, stats)?;
        super::rollups::apply_in(&tx, rollups)?;
        tx.commit()?;
        Ok(())
    }

    /// The input stored with an open batch's intent, if any.
    pub fn batch_input(&self, pipeline: &str, seq: i64) -> Result<Option<Vec<u8>>, CatalogError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT data FROM batch_inputs WHERE pipeline = ?1 AND seq = ?2",
                (pipeline, seq),
                |r| r.get(0),
            )
            .optional()?)
    }

    /// The greatest source file path a pipeline has ingested (the listing watermark).
    pub fn max_ingested_file(&self, pipeline: &str) -> Result<Option<String>, CatalogError> {
        Ok(self.conn().query_row(
            "SELECT max(path) FROM ingested_files WHERE pipeline = ?1",
            [pipeline],
            |r| r.get(0),
        )?)
    }

    /// The ingested source files of a pipeline whose path sorts after `after`.
    pub fn ingested_files_after(
        &self,
        pipeline: &str,
        after: &str,
    ) -> Result<HashSet<String>, CatalogError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT path FROM ingested_files WHERE pipeline = ?1 AND path > ?2")?;
        let rows = stmt.query_map((pipeline, after), |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A source's mark (small state outside batches), e.g. when it last listed in full.
    pub fn source_mark(&self, pipeline: &str, name: &str) -> Result<Option<String>, CatalogError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT value FROM source_marks WHERE pipeline = ?1 AND name = ?2",
                (pipeline, name),
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Sets a source's mark.
    pub fn set_source_mark(
        &self,
        pipeline: &str,
        name: &str,
        value: &str,
    ) -> Result<(), CatalogError> {
        self.conn().execute(
            "INSERT INTO source_marks (pipeline, name, value) VALUES (?1, ?2, ?3)
             ON CONFLICT (pipeline, name) DO UPDATE SET value = excluded.value",
            (pipeline, name, value),
        )?;
        Ok(())
    }

    /// The positions of a pipeline's last committed batch.
    pub fn last_committed_positions(
        &self,
        pipeline: &str,
    ) -> Result<Option<serde_json::Value>, CatalogError> {
        let conn = self.conn();
        let text: Option<String> = conn
            .query_row(
                "SELECT positions FROM batches WHERE pipeline = ?1 AND state = 'committed' ORDER BY seq DESC LIMIT 1",
                [pipeline],
                |r| r.get(0),
            )
            .optional()?;
        text.map(|t| {
            serde_json::from_str(&t)
                .map_err(|e| CatalogError::Corrupt(format!("batch positions: {e}")))
        })
        .transpose()
    }

    /// Every source file a pipeline has already ingested.
    pub fn ingested_files(&self, pipeline: &str) -> Result<HashSet<String>, CatalogError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT path FROM ingested_files WHERE pipeline = ?1")?;
        let rows = stmt.query_map([pipeline], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Number of committed batches of a pipeline.
    pub fn committed_batches(&self, pipeline: &str) -> Result<i64, CatalogError> {
        Ok(self.conn().query_row(
            "SELECT count(*) FROM batches WHERE pipeline = ?1 AND state = 'committed'",
            [pipeline],
            |r| r.get(0),
        )?)
    }
}

/// Marks an open batch committed and records its ingested files, inside the caller's
/// transaction (the commit of a metered batch adds its quota effects to the same transaction).
pub(super) fn mark_committed(
    tx: &Transaction<'_>,
    pipeline: &str,
    seq: i64,
    ingested_files: &[String],
    stats: &BatchStats,
) -> Result<(), CatalogError> {
    let stats_json = serde_json::to_string(stats)
        .map_err(|e| CatalogError::Corrupt(format!("batch stats: {e}")))?;
    let n = tx.execute(
        "UPDATE batches SET state = 'committed', committed_at = ?1, stats = ?2
         WHERE pipeline = ?3 AND seq = ?4 AND state = 'open'",
        (now(), stats_json, pipeline, seq),
    )?;
    if n != 1 {
        return Err(CatalogError::NoSuchIntent {
            pipeline: pipeline.to_string(),
            seq,
        });
    }
    tx.execute(
        "DELETE FROM batch_inputs WHERE pipeline = ?1 AND seq = ?2",
        (pipeline, seq),
    )?;
    let mut insert =
        tx.prepare("INSERT INTO ingested_files (pipeline, path, seq) VALUES (?1, ?2, ?3)")?;
    for path in ingested_files {
        insert.execute((pipeline, path, seq))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn one_open_intent_at_a_time_and_commit_advances_the_source() -> Result<(), CatalogError> {
        let c = Catalog::open_in_memory()?;
        let first = c.create_intent("p", &json!({"files": ["a"]}), "2026-01-01T00:00:00Z")?;
        assert_eq!(first.seq, 1);
        assert!(matches!(
            c.create_intent("p", &json!({}), "t"),
            Err(CatalogError::IntentOpen { seq: 1, .. })
        ));
        assert_eq!(c.open_intent("p")?, Some(first.clone()));
        // Another pipeline is independent.
        assert_eq!(c.create_intent("q", &json!({}), "t")?.seq, 1);

        c.commit_batch(
            "p",
            1,
            &["a".into()],
            &BatchStats::default(),
            &RollupDelta::default(),
        )?;
        assert_eq!(c.open_intent("p")?, None);
        assert!(c.ingested_files("p")?.contains("a"));
        assert!(matches!(
            c.commit_batch("p", 1, &[], &BatchStats::default(), &RollupDelta::default()),
            Err(CatalogError::NoSuchIntent { .. })
        ));
        assert_eq!(c.create_intent("p", &json!({}), "t")?.seq, 2);
        assert_eq!(c.committed_batches("p")?, 1);
        Ok(())
    }

    #[test]
    fn a_batch_input_lives_from_its_intent_to_its_commit() -> Result<(), CatalogError> {
        let c = Catalog::open_in_memory()?;
        let intent = c.create_intent_with_input("h", &json!({"next": 1}), "t", Some(b"records"))?;
        assert_eq!(c.batch_input("h", intent.seq)?, Some(b"records".to_vec()));
        c.commit_batch(
            "h",
            intent.seq,
            &[],
            &BatchStats::default(),
            &Default::default(),
        )?;
        assert_eq!(c.batch_input("h", intent.seq)?, None);
        Ok(())
    }

    #[test]
    fn the_listing_watermark_is_the_greatest_ingested_path() -> Result<(), CatalogError> {
        let c = Catalog::open_in_memory()?;
        assert_eq!(c.max_ingested_file("f")?, None);
        c.create_intent("f", &json!({}), "t")?;
        let files = ["d/dt=2026-03-02/b".to_string(), "d/dt=2026-03-01/a".into()];
        c.commit_batch("f", 1, &files, &BatchStats::default(), &Default::default())?;
        assert_eq!(
            c.max_ingested_file("f")?.as_deref(),
            Some("d/dt=2026-03-02/b")
        );
        let after = c.ingested_files_after("f", "d/dt=2026-03-01/z")?;
        assert_eq!(after.len(), 1);
        assert_eq!(c.source_mark("f", "full_listing_at")?, None);
        c.set_source_mark("f", "full_listing_at", "1")?;
        c.set_source_mark("f", "full_listing_at", "2")?;
        assert_eq!(c.source_mark("f", "full_listing_at")?.as_deref(), Some("2"));
        Ok(())
    }

    #[test]
    fn a_failed_commit_leaves_the_intent_open_and_nothing_ingested() -> Result<(), CatalogError> {
        let c = Catalog::open_in_memory()?;
        c.create_intent("p", &json!({}), "t")?;
        c.create_intent("r", &json!({}), "t")?;
        c.commit_batch(
            "r",
            1,
            &["dup".into()],
            &BatchStats::default(),
            &RollupDelta::default(),
        )?;
        // The same path twice violates the primary key: the whole commit must roll back.
        let err = c.commit_batch(
            "p",
            1,
            &["x".into(), "x".into()],
            &BatchStats::default(),
            &RollupDelta::default(),
        );
        assert!(err.is_err());
        assert!(c.open_intent("p")?.is_some());
        assert!(c.ingested_files("p")?.is_empty());
        Ok(())
    }
}
