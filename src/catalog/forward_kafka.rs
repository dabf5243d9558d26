//! The forwarder's progress through the Kafka journal topic (`journal.kind: kafka`).
//!
//! The catalog, not the consumer group, says where the forwarder continues: per partition the
//! first offset not yet turned into jobs. A batch's jobs are inserted *together with* the new
//! offsets, and only records at or past the stored offset count — so a batch read twice (a
//! restart before the group's offsets followed, two members holding one partition for a moment
//! during a rebalance) enqueues its jobs once. Replayed fallback records (header
//! `backflow-replay`, see `replays.rs`) whose event id the forwarder already took are dropped
//! the same way, in the same transaction.

use std::collections::BTreeMap;

use rusqlite::OptionalExtension;

use super::forward::insert_jobs;
use super::{Catalog, CatalogError, NewForwardJob};

/// Schema of this module (one entry of `MIGRATIONS`).
pub(super) const MIGRATION: &str = r#"
CREATE TABLE forward_kafka_offsets (
    topic       TEXT NOT NULL,
    partition   INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
) WITHOUT ROWID;
"#;

/// The key under which the forwarder's replayed event ids are kept in
/// `kafka_replayed_events` (not a valid pipeline name).
pub const FORWARD_REPLAYS: &str = "@forward";

/// One message of the journal topic as the forwarder takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardKafkaRecord {
    pub partition: i32,
    pub offset: i64,
    /// Its jobs (none when its activity has no third-party URL for the endpoint).
    pub jobs: Vec<NewForwardJob>,
    /// The event id, when the message is a replay from a collector's fallback file.
    pub replayed_event: Option<String>,
}

/// What a batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardKafkaOutcome {
    /// The destination label of every job queued.
    pub enqueued: Vec<String>,
    /// Records below the stored offset: taken by an earlier batch.
    pub already_taken: u64,
    /// Replayed records whose event id was already taken.
    pub replay_duplicates: u64,
}

impl Catalog {
    /// Per partition of `topic`, the first offset the forwarder has not taken.
    pub fn forward_kafka_offsets(&self, topic: &str) -> Result<BTreeMap<i32, i64>, CatalogError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT partition, next_offset FROM forward_kafka_offsets WHERE topic = ?1",
        )?;
        let rows = stmt.query_map([topic], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records where partitions seen for the first time start; a partition that already has
    /// an offset keeps it.
    pub fn seed_forward_kafka_offsets(
        &self,
        topic: &str,
        starts: &[(i32, i64)],
    ) -> Result<(), CatalogError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO forward_kafka_offsets (topic, partition, next_offset)
                 VALUES (?1, ?2, ?3)",
            )?;
            for (partition, offset) in starts {
                insert.execute((topic, partition, offset))?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Enqueues the jobs of a batch of `topic`'s records and moves each partition's offset
    /// past them, in one transaction; records below the stored offsets and replayed
    /// duplicates are dropped. The jobs are due at `now_ms`.
    pub fn enqueue_forward_kafka(
        &self,
        topic: &str,
        records: &[ForwardKafkaRecord],
        now_ms: i64,
    ) -> Result<ForwardKafkaOutcome, CatalogError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut outcome = ForwardKafkaOutcome::default();
        let mut next: BTreeMap<i32, (Option<i64>, i64)> = BTreeMap::new();
        {
            let mut stored = tx.prepare_cached(
                "SELECT next_offset FROM forward_kafka_offsets WHERE topic = ?1 AND partition = ?2",
            )?;
            let mut seen = tx.prepare_cached(
                "SELECT 1 FROM kafka_replayed_events WHERE pipeline = ?1 AND event_id = ?2",
            )?;
            let mut jobs = Vec::new();
            let mut replayed = Vec::new();
            for r in records {
                let entry = match next.get(&r.partition) {
                    Some(e) => *e,
                    None => {
                        let s: Option<i64> = stored
                            .query_row((topic, r.partition), |row| row.get(0))
                            .optional()?;
                        let e = (s, s.unwrap_or(i64::MIN));
                        next.insert(r.partition, e);
                        e
                    }
                };
                let (from, upto) = entry;
                // Below what the catalog held before this batch, or repeated within it.
                if r.offset < upto {
                    outcome.already_taken += 1;
                    continue;
                }
                next.insert(r.partition, (from, r.offset + 1));
                if let Some(id) = &r.replayed_event {
                    if seen.exists((FORWARD_REPLAYS, id))? || replayed.contains(id) {
                        outcome.replay_duplicates += 1;
                        continue;
                    }
                    replayed.push(id.clone());
                }
                jobs.extend(r.jobs.iter().cloned());
            }
            insert_jobs(&tx, &jobs, now_ms)?;
            super::replays::insert_in(&tx, FORWARD_REPLAYS, &replayed)?;
            outcome.enqueued = jobs.into_iter().map(|j| j.destination).collect();
            let mut upsert = tx.prepare_cached(
                "INSERT INTO forward_kafka_offsets (topic, partition, next_offset) VALUES (?1, ?2, ?3)
                 ON CONFLICT (topic, partition) DO UPDATE
                 SET next_offset = MAX(next_offset, excluded.next_offset)",
            )?;
            for (partition, (from, upto)) in &next {
                if Some(*upto) != *from && *upto != i64::MIN {
                    upsert.execute((topic, partition, upto))?;
                }
            }
        }
        tx.commit()?;
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(
        partition: i32,
        offset: i64,
        jobs: usize,
        replay: Option<&str>,
    ) -> ForwardKafkaRecord {
        ForwardKafkaRecord {
            partition,
            offset,
            jobs: (0..jobs)
                .map(|n| NewForwardJob {
                    destination: format!("d{n}.example"),
                    url: format!("https://d{n}.example/p{partition}o{offset}"),
                    user_agent: None,
                    event_id: format!("e{partition}-{offset}"),
                    hit_at_ms: 1,
                })
                .collect(),
            replayed_event: replay.map(str::to_string),
        }
    }

    fn depth(c: &Catalog) -> u64 {
        c.forward_queue_stats()
            .map(|s| s.iter().map(|s| s.depth).sum())
            .unwrap_or(0)
    }

    #[test]
    fn a_batch_read_again_enqueues_nothing_and_offsets_only_move_forward()
    -> Result<(), CatalogError> {
        let c = Catalog::open_in_memory()?;
        c.seed_forward_kafka_offsets("hits", &[(0, 10), (1, 0)])?;
        c.seed_forward_kafka_offsets("hits", &[(0, 99)])?;
        assert_eq!(
            c.forward_kafka_offsets("hits")?,
            BTreeMap::from([(0, 10), (1, 0)])
        );
        let batch = [
            record(0, 9, 1, None), // before the start of partition 0
            record(0, 10, 2, None),
            record(0, 11, 0, None),
            record(1, 0, 1, None),
            record(1, 0, 1, None), // repeated within the batch
        ];
        let first = c.enqueue_forward_kafka("hits", &batch, 100)?;
        assert_eq!(first.enqueued.len(), 3);
        assert_eq!(first.already_taken, 2);
        assert_eq!(
            c.forward_kafka_offsets("hits")?,
            BTreeMap::from([(0, 12), (1, 1)])
        );
        // The same messages again (a restart before the group's offsets followed), then new.
        let again = c.enqueue_forward_kafka("hits", &batch, 100)?;
        assert_eq!((again.enqueued.len(), again.already_taken), (0, 5));
        let more = c.enqueue_forward_kafka("hits", &[record(2, 7, 1, None)], 100)?;
        assert_eq!(more.enqueued, ["d0.example"]);
        assert_eq!(depth(&c), 4);
        assert_eq!(
            c.forward_kafka_offsets("hits")?,
            BTreeMap::from([(0, 12), (1, 1), (2, 8)])
        );
        assert!(c.forward_kafka_offsets("other")?.is_empty());
        Ok(())
    }

    #[test]
    fn a_replayed_record_taken_once_is_dropped_when_replayed_again() -> Result<(), CatalogError> {
        let c = Catalog::open_in_memory()?;
        let first = c.enqueue_forward_kafka(
            "hits",
            &[
                record(0, 0, 1, Some("e1")),
                record(0, 1, 1, Some("e1")),
                record(0, 2, 1, None),
            ],
            100,
        )?;
        assert_eq!((first.enqueued.len(), first.replay_duplicates), (2, 1));
        let later = c.enqueue_forward_kafka("hits", &[record(0, 3, 1, Some("e1"))], 100)?;
        assert_eq!((later.enqueued.len(), later.replay_duplicates), (0, 1));
        assert_eq!(c.forward_kafka_offsets("hits")?, BTreeMap::from([(0, 4)]));
        assert_eq!(depth(&c), 2);
        Ok(())
    }
}
