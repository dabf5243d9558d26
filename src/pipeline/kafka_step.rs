//! A run's step for a Kafka source, whose members of one consumer group may run the pipeline in
//! several processes on one catalog.

use std::collections::BTreeMap;

use tracing::{info, warn};

use super::failpoint::{self, failpoint};
use super::fetched::Fetched;
use super::plan::to_positions;
use super::sink;
use super::source::kafka::{self as kafka_source, KafkaPositions};
use super::{PipelineError, RunSummary, Runtime};
use crate::config::model::{Pipeline, SourceConfig};
use crate::telemetry::Metrics;

impl Runtime {
    /// Where the catalog says each partition of a Kafka pipeline continues.
    fn kafka_catalog_next(
        &self,
        pipeline: &Pipeline,
    ) -> Result<BTreeMap<(String, i32), i64>, PipelineError> {
        Ok(self
            .catalog
            .last_committed_positions(&pipeline.name)?
            .map(serde_json::from_value::<KafkaPositions>)
            .transpose()
            .map_err(|e| PipelineError::Positions(e.to_string()))?
            .map(|p| p.next_offsets())
            .unwrap_or_default())
    }

    /// One step of a Kafka pipeline; `false` when the member's partitions are drained.
    ///
    /// Several processes may run the pipeline on one catalog, each a member of the group
    /// reading its own partitions. A member reads its batch outside any lock, then takes the
    /// pipeline's batch lock for the catalog part: it first replays a batch another member left
    /// open (a crashed process: the lock is free only once it is gone), then fits its own batch
    /// to the catalog (messages another member committed meanwhile are dropped), records the
    /// intent, writes and commits. Every message lands once whichever member read it.
    pub(super) async fn kafka_step(
        &self,
        pipeline: &Pipeline,
        session: &mut kafka_source::Session,
        publisher: Option<&sink::kafka::Publisher>,
        summary: &mut RunSummary,
    ) -> Result<bool, PipelineError> {
        let SourceConfig::Kafka(cfg) = &pipeline.source else {
            return Err(PipelineError::Task(
                "kafka session without a kafka source".into(),
            ));
        };
        let labels = Metrics::labels(&pipeline.name);
        session.set_offsets(self.kafka_catalog_next(pipeline)?);
        let planned = session.plan().await?;
        failpoint::injected_delay("kafka_planned").await;
        let _lock = self.batch_lock(&pipeline.name).await?;
        if let Some(intent) = self.catalog.open_intent(&pipeline.name)? {
            warn!(pipeline = %pipeline.name, batch = intent.seq, "replaying a batch left open by an earlier run or another member");
            self.metrics.batches_replayed.get_or_create(&labels).inc();
            summary.replayed_batches += 1;
            self.execute_counted(pipeline, &intent, None, Some(session), publisher, summary)
                .await?;
        }
        let catalog_next = self.kafka_catalog_next(pipeline)?;
        let read = planned.is_some();
        let (mut positions, records) = match planned {
            Some((positions, records)) => {
                let (positions, records, dropped) =
                    kafka_source::fit(positions, records, &catalog_next);
                if dropped > 0 {
                    info!(pipeline = %pipeline.name, messages = dropped, "dropped messages another member committed meanwhile");
                }
                (positions, records)
            }
            None => (None, Vec::new()),
        };
        if cfg.journal && cfg.format == crate::config::model::KafkaFormat::HitRecord {
            // Metered like a journal batch: decided now (no batch is open, the batch lock is
            // held), stored with the intent, so a replay makes the same split.
            self.purge_staged(&pipeline.name);
            let meter =
                self.plan_quota_kafka(&pipeline.name, &records, cfg.max_records_per_batch.get())?;
            if positions.is_none() && !meter.release.is_empty() {
                // Nothing new, but a top-up lets staged records land: a release-only batch.
                positions = Some(KafkaPositions {
                    ranges: Vec::new(),
                    next: catalog_next
                        .iter()
                        .map(
                            |((topic, partition), offset)| kafka_source::PartitionOffset {
                                topic: topic.clone(),
                                partition: *partition,
                                offset: *offset,
                            },
                        )
                        .collect(),
                    quota: None,
                });
            }
            if let Some(p) = positions.as_mut() {
                p.quota = (!meter.is_empty()).then_some(meter);
            }
        }
        let Some(positions) = positions else {
            if !read {
                return Ok(false);
            }
            session.set_offsets(catalog_next);
            return Ok(true);
        };
        info!(pipeline = %pipeline.name, messages = records.len(), ranges = %kafka_source::describe(&positions), "kafka batch planned");
        let planned_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let intent =
            self.catalog
                .create_intent(&pipeline.name, &to_positions(&positions)?, &planned_at)?;
        failpoint("after_intent");
        let fetched = Fetched::Kafka {
            cfg: cfg.clone(),
            records,
            hits: self.kafka_hits(cfg)?,
            released: Vec::new(),
        };
        self.execute_counted(
            pipeline,
            &intent,
            Some(fetched),
            Some(session),
            publisher,
            summary,
        )
        .await?;
        Ok(true)
    }
}
