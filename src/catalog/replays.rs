//! Event ids of hit records the Kafka journal's collectors sent again from their fallback file
//! (header `backflow-replay`), as landed by the daemon-wired journal pipeline of
//! `journal.kind: kafka`.
//!
//! A collector that crashes between the broker's acknowledgement of a replayed record and the
//! shortening of its fallback file sends that record again (same `event_id`). The consumer
//! checks only messages carrying the replay header against this table and drops an id already
//! landed; the ids a batch lands are inserted in the same transaction as its commit
//! ([`super::Catalog::commit_metered_batch`]), so a replayed batch decides the same. Rows older
//! than [`REPLAYED_RETENTION_DAYS`] are pruned when the pipeline plans a batch.

use std::collections::HashSet;

use super::{Catalog, CatalogError};

/// Schema of this module (one entry of `MIGRATIONS`).
pub(super) const MIGRATION: &str = r#"
CREATE TABLE kafka_replayed_events (
    pipeline    TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    seen_at     TEXT NOT NULL,
    PRIMARY KEY (pipeline, event_id)
) WITHOUT ROWID;
CREATE INDEX kafka_replayed_events_by_age ON kafka_replayed_events (seen_at);
"#;

/// How long a landed replayed event id is remembered: far longer than any fallback file waits
/// for its broker.
pub const REPLAYED_RETENTION_DAYS: i64 = 30;

/// Records the replayed event ids a batch landed (inside its commit transaction).
pub(super) fn insert_in(
    tx: &rusqlite::Transaction<'_>,
    pipeline: &str,
    event_ids: &[String],
) -> Result<(), CatalogError> {
    if event_ids.is_empty() {
        return Ok(());
    }
    let at = super::now();
    let mut insert = tx.prepare(
        "INSERT OR IGNORE INTO kafka_replayed_events (pipeline, event_id, seen_at)
         VALUES (?1, ?2, ?3)",
    )?;
    for id in event_ids {
        insert.execute((pipeline, id, &at))?;
    }
    Ok(())
}

impl Catalog {
    /// Which of these replayed event ids `pipeline` has already landed.
    pub fn replayed_seen(
        &self,
        pipeline: &str,
        event_ids: &[&str],
    ) -> Result<HashSet<String>, CatalogError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT 1 FROM kafka_replayed_events WHERE pipeline = ?1 AND event_id = ?2")?;
        let mut seen = HashSet::new();
        for id in event_ids {
            if stmt.exists((pipeline, id))? {
                seen.insert((*id).to_string());
            }
        }
        Ok(seen)
    }

    /// Forgets `pipeline`'s replayed event ids recorded before `before` (RFC 3339); returns
    /// how many.
    pub fn prune_replayed(&self, pipeline: &str, before: &str) -> Result<u64, CatalogError> {
        let conn = self.conn();
        let n = conn.execute(
            "DELETE FROM kafka_replayed_events WHERE pipeline = ?1 AND seen_at < ?2",
            (pipeline, before),
        )?;
        Ok(n as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replayed_ids_are_seen_per_pipeline_once_committed_and_pruned_by_age()
    -> Result<(), CatalogError> {
        let c = Catalog::open_in_memory()?;
        let seq = c
            .create_intent("p", &serde_json::json!({}), "2026-01-01T00:00:00Z")?
            .seq;
        assert!(c.replayed_seen("p", &["e1"])?.is_empty());
        let effects = crate::catalog::MeterEffects {
            replayed: vec!["e1".to_string()],
            ..Default::default()
        };
        c.commit_metered_batch("p", seq, &crate::catalog::BatchStats::default(), &effects)?;
        assert_eq!(
            c.replayed_seen("p", &["e1", "e2"])?,
            HashSet::from(["e1".to_string()])
        );
        assert!(c.replayed_seen("other", &["e1"])?.is_empty());
        assert_eq!(c.prune_replayed("p", "2000-01-01T00:00:00Z")?, 0);
        assert_eq!(c.prune_replayed("p", "2999-01-01T00:00:00Z")?, 1);
        assert!(c.replayed_seen("p", &["e1"])?.is_empty());
        Ok(())
    }
}
