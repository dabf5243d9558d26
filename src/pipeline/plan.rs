//! The sources' side of a batch: planning the next batch's positions, reading planned positions
//! (again, on a replay) and letting the source forget what a committed batch consumed.

use std::sync::Arc;

use serde::Serialize;
use tracing::{info, warn};

use super::fetched::Fetched;
use super::source::http::{self as http_source, HttpPositions};
use super::source::kafka::{self as kafka_source, KafkaPositions};
use super::source::object_store_files::{self as files_source, FilePositions};
use super::{PipelineError, RunOptions, Runtime, quota};
use crate::catalog::BatchIntent;
use crate::collect::registry::MediaRegistry;
use crate::config::model::{Pipeline, SourceConfig};
use crate::enrich::Enricher;
use crate::journal::{Journal, Position as JournalPosition};

/// A batch's positions as stored with its intent.
pub(super) fn to_positions(value: impl Serialize) -> Result<serde_json::Value, PipelineError> {
    serde_json::to_value(value).map_err(|e| PipelineError::Positions(e.to_string()))
}

/// Positions of a journal batch: `[from, to)`, with its quota decisions (absent: none).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub(super) struct JournalPositions {
    pub(super) from: u64,
    pub(super) to: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) quota: Option<quota::MeterPlan>,
}

impl Runtime {
    fn journal(&self) -> Result<&Journal, PipelineError> {
        self.journal.get().ok_or(PipelineError::NoJournal)
    }

    /// The next batch's positions, or `None` when the source has nothing new; with the batch's
    /// input when planning had to read it anyway (the journal), so it is not read twice.
    pub(super) async fn plan(
        &self,
        pipeline: &Pipeline,
        opts: &RunOptions,
        http: Option<&mut http_source::Session>,
    ) -> Result<Option<(serde_json::Value, Option<Fetched>)>, PipelineError> {
        match &pipeline.source {
            SourceConfig::ObjectStoreFiles(cfg) => {
                let source = self.stores.open(&cfg.url)?;
                let positions = files_source::plan_batch(
                    &self.catalog,
                    &self.metrics,
                    &pipeline.name,
                    &source,
                    cfg,
                    opts.window,
                    self.tz,
                )
                .await?;
                match positions {
                    None => Ok(None),
                    Some(positions) => to_positions(positions).map(|p| Some((p, None))),
                }
            }
            SourceConfig::Journal(cfg) => {
                let journal = self.journal()?;
                // No batch is open here: the one safe moment to forget expired staged records.
                self.purge_staged(&pipeline.name);
                // The catalog is the truth: the next batch starts where the last committed ended.
                let from = self
                    .catalog
                    .last_committed_positions(&pipeline.name)?
                    .and_then(|v| serde_json::from_value::<JournalPositions>(v).ok())
                    .map_or(1, |p| p.to);
                let records = journal
                    .read(
                        JournalPosition(from),
                        cfg.max_records_per_batch.get(),
                        cfg.max_bytes_per_batch.get(),
                    )
                    .await?;
                let to = records.last().map_or(from, |(last, _)| last.0 + 1);
                let meter = self.plan_quota(&pipeline.name, &records, cfg)?;
                if records.is_empty() && meter.release.is_empty() {
                    return Ok(None);
                }
                let (registry, enricher) = self.hit_decoding()?;
                let positions = to_positions(JournalPositions {
                    from,
                    to,
                    quota: (!meter.is_empty()).then_some(meter),
                })?;
                let fetched = Fetched::Hits {
                    records,
                    registry,
                    enricher,
                };
                Ok(Some((positions, Some(fetched))))
            }
            SourceConfig::Kafka(_) => Err(PipelineError::Task(
                "kafka batches are planned by `kafka_step`".to_string(),
            )),
            SourceConfig::Http(_) => {
                let Some(session) = http else {
                    return Err(PipelineError::Task("http session missing".to_string()));
                };
                // The catalog is the truth: the next batch continues where the last committed
                // one said.
                let resume = self
                    .catalog
                    .last_committed_positions(&pipeline.name)?
                    .map(serde_json::from_value::<HttpPositions>)
                    .transpose()
                    .map_err(|e| PipelineError::Positions(e.to_string()))?
                    .map(|p| p.next)
                    .unwrap_or_default();
                let Some(planned) = session.plan(resume).await? else {
                    return Ok(None);
                };
                let fetched = Fetched::Http {
                    pages: planned.pages,
                    input: Some(planned.input),
                };
                Ok(Some((to_positions(planned.positions)?, Some(fetched))))
            }
        }
    }

    /// The media registry and enricher for `format: hit_record` (set by `backflow serve`).
    #[allow(clippy::type_complexity, reason = "a pair of shared tables")]
    pub(super) fn kafka_hits(
        &self,
        cfg: &crate::config::model::KafkaSource,
    ) -> Result<Option<(Arc<MediaRegistry>, Arc<Enricher>)>, PipelineError> {
        match cfg.format {
            crate::config::model::KafkaFormat::Json => Ok(None),
            crate::config::model::KafkaFormat::HitRecord => self.hit_decoding().map(Some),
        }
    }

    /// Reads the input of planned positions (again, on a replay).
    pub(super) async fn fetch(
        &self,
        pipeline: &Pipeline,
        intent: &BatchIntent,
    ) -> Result<Fetched, PipelineError> {
        let positions = &intent.positions;
        let parse_err = |e: serde_json::Error| PipelineError::Positions(e.to_string());
        match &pipeline.source {
            SourceConfig::ObjectStoreFiles(cfg) => {
                let source = self.stores.open(&cfg.url)?;
                let positions: FilePositions =
                    serde_json::from_value(positions.clone()).map_err(parse_err)?;
                let contents = files_source::fetch(&source, &positions.files).await?;
                Ok(Fetched::Files {
                    cfg: cfg.clone(),
                    files: positions.files,
                    contents,
                })
            }
            SourceConfig::Journal(_) => {
                let p: JournalPositions =
                    serde_json::from_value(positions.clone()).map_err(parse_err)?;
                let journal = self.journal()?;
                let want = p.to.saturating_sub(p.from) as usize;
                let mut records = if want == 0 {
                    // A batch that only releases staged records.
                    Vec::new()
                } else {
                    journal
                        .read(JournalPosition(p.from), want, usize::MAX)
                        .await?
                };
                records.retain(|(pos, _)| pos.0 < p.to);
                if records.len() != want {
                    return Err(PipelineError::Positions(format!(
                        "journal positions [{}, {}) hold {} records, expected {want}",
                        p.from,
                        p.to,
                        records.len()
                    )));
                }
                let (registry, enricher) = self.hit_decoding()?;
                Ok(Fetched::Hits {
                    records,
                    registry,
                    enricher,
                })
            }
            SourceConfig::Kafka(cfg) => {
                let p: KafkaPositions =
                    serde_json::from_value(positions.clone()).map_err(parse_err)?;
                info!(pipeline = %pipeline.name, ranges = %kafka_source::describe(&p), "re-reading the batch's kafka offsets");
                let hits = self.kafka_hits(cfg)?;
                let records = kafka_source::fetch(cfg, &p, &self.metrics, &pipeline.name).await?;
                Ok(Fetched::Kafka {
                    cfg: cfg.clone(),
                    records,
                    hits,
                    released: Vec::new(),
                })
            }
            SourceConfig::Http(_) => {
                let p: HttpPositions =
                    serde_json::from_value(positions.clone()).map_err(parse_err)?;
                let input = self
                    .catalog
                    .batch_input(&pipeline.name, intent.seq)?
                    .ok_or_else(|| {
                        PipelineError::Positions(format!(
                            "batch {} has no stored input to replay",
                            intent.seq
                        ))
                    })?;
                info!(pipeline = %pipeline.name, batch = intent.seq, pages = p.pages.len(), records = p.records, "replaying the batch's stored http records");
                let pages = http_source::decode_input(&input, &p)?;
                Ok(Fetched::Http { pages, input: None })
            }
        }
    }

    /// What decoding hits needs (set by `backflow serve` with the journal).
    fn hit_decoding(&self) -> Result<(Arc<MediaRegistry>, Arc<Enricher>), PipelineError> {
        let registry = self.registry.get().cloned();
        let enricher = self.enricher.get().cloned();
        registry.zip(enricher).ok_or(PipelineError::NoJournal)
    }

    /// Lets the source forget what a committed batch consumed (journal: cursor and retention).
    pub(super) async fn after_commit(
        &self,
        pipeline: &Pipeline,
        positions: &serde_json::Value,
        kafka: Option<&mut kafka_source::Session>,
    ) {
        if let Some(session) = kafka {
            match serde_json::from_value::<KafkaPositions>(positions.clone()) {
                Ok(p) => session.committed(&p),
                Err(e) => {
                    warn!(pipeline = %pipeline.name, error = %e, "kafka positions unreadable; offsets not committed")
                }
            }
            return;
        }
        if let (SourceConfig::Journal(_), Some(journal)) = (&pipeline.source, self.journal.get()) {
            let Ok(p) = serde_json::from_value::<JournalPositions>(positions.clone()) else {
                return;
            };
            if let Err(e) = journal
                .commit_cursor(&pipeline.name, JournalPosition(p.to))
                .await
            {
                warn!(pipeline = %pipeline.name, error = %e, "journal cursor not advanced; retention waits");
                return;
            }
            match journal.retain().await {
                Ok(freed) if freed > 0 => {
                    info!(pipeline = %pipeline.name, bytes = freed, "journal segments released")
                }
                Ok(_) => {}
                Err(e) => warn!(pipeline = %pipeline.name, error = %e, "journal retention failed"),
            }
        }
    }
}
