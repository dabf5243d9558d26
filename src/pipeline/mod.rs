//! The pipeline runtime: source → transforms → sink, in batches, with the exactly-once commit
//! protocol of DESIGN.md.
//!
//! One batch goes through these steps, each durable before the next:
//! 1. **intent**: the catalog records the batch number and the source positions (file list);
//! 2. **write**: every output file is encoded deterministically and stored with a create-only put
//!    (a file already present was written by an earlier attempt of the same batch);
//! 3. **manifest**: `{dataset}/_commits/{batch}.json` lists the committed files;
//! 4. **commit**: the catalog marks the batch committed and the files ingested, in one transaction.
//!
//! A run first replays an open intent over the same positions, which yields the same names, so a
//! crash at any point leaves every input row in the lake exactly once after the next run.

pub mod failpoint;
pub mod frame;
pub mod kafka_tls;
mod publish;
pub mod quota;
pub mod sink;
pub mod source;
pub mod testing;
pub mod transform;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use chrono_tz::Tz;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::catalog::{BatchIntent, BatchStats, Catalog, CatalogError, RunStatus, RunTotals};
use crate::collect::decode as hit_decode;
use crate::collect::registry::MediaRegistry;
use crate::config::model::{ObjectStoreFilesSource, Pipeline, SinkConfig, SourceConfig};
use crate::enrich::Enricher;
use crate::journal::{Journal, JournalError, Position as JournalPosition};
use crate::storage::{Location, StorageError, StoreRegistry};
use crate::telemetry::{Metrics, RunLabels};
use failpoint::failpoint;
use frame::{Quarantine, QuarantinedRow, TextFrameBuilder};
use sink::parquet::{self as parquet_sink, EncodedFile, Put};
use source::http::{self as http_source, FetchedPage, HttpPositions};
use source::kafka::{self as kafka_source, KafkaPositions, KafkaRecord};
use source::object_store_files::{
    self as files_source, Decoded, FilePositions, SourceFile, Window,
};

/// Why a run or batch failed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("storage {path}: {source}")]
    Storage {
        path: String,
        source: object_store::Error,
    },
    #[error(transparent)]
    Open(#[from] StorageError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("{stage}: {source}")]
    Polars {
        stage: &'static str,
        source: polars::prelude::PolarsError,
    },
    #[error(transparent)]
    Transform(#[from] transform::TransformError),
    #[error("sink: {0}")]
    Sink(String),
    #[error(
        "source file {path} changed after its batch was planned ({detail}); restore it or move it aside"
    )]
    SourceChanged { path: String, detail: String },
    #[error("batch positions in the catalog are unreadable: {0}")]
    Positions(String),
    #[error("internal task failed: {0}")]
    Task(String),
    #[error("this pipeline reads the monitoring-link journal: it runs inside `backflow serve`")]
    NoJournal,
    #[error("journal: {0}")]
    Journal(#[from] JournalError),
    #[error("kafka: {0}")]
    Kafka(String),
    /// The brokers refused the client (login, ACL) or its secret is missing: retrying cannot
    /// help until someone changes the credentials or the permissions.
    #[error("kafka: {0}")]
    KafkaDenied(String),
    #[error("http source: {message}")]
    Http { message: String, retryable: bool },
    #[error("pipeline `{0}` is being run by another process (lock {1})")]
    Busy(String, String),
    #[error("cannot use lock file {path}: {source}")]
    Lock {
        path: String,
        source: std::io::Error,
    },
}

impl PipelineError {
    /// Whether trying again later may succeed without anyone changing anything.
    pub fn retryable(&self) -> bool {
        match self {
            PipelineError::Storage { .. }
            | PipelineError::Task(_)
            | PipelineError::Kafka(_)
            | PipelineError::Http { retryable: true, .. }
            // Another process runs the pipeline: it will be done later.
            | PipelineError::Busy(..) => true,
            PipelineError::Catalog(e) => e.retryable(),
            _ => false,
        }
    }
}

/// What a run is asked to do.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// `schedule`, `manual`, `cli`, `api`…, recorded in run history.
    pub trigger: String,
    /// Only source files modified within these dates (inclusive, workspace zone).
    pub window: Window,
    /// Stop after this many batches (None: until the source is drained).
    pub max_batches: Option<usize>,
    /// The run already recorded for this (queued by the scheduler); `None` records a new one.
    pub run_id: Option<i64>,
}

/// What a run did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct RunSummary {
    pub run_id: i64,
    pub status: String,
    pub batches: u64,
    pub replayed_batches: u64,
    pub rows_in: u64,
    pub rows_out: u64,
    pub rows_quarantined: u64,
    pub files_failed: u64,
}

/// Everything a run needs, shared by the scheduler, the API and the CLI.
#[derive(Debug)]
pub struct Runtime {
    pub catalog: Arc<Catalog>,
    pub stores: StoreRegistry,
    pub lake: Location,
    pub tz: Tz,
    pub metrics: Arc<Metrics>,
    /// The daemon's journal, for `journal` sources (set by `backflow serve`).
    pub journal: OnceLock<Journal>,
    /// The media registry, for decoding hits (set by `backflow serve`).
    pub registry: OnceLock<Arc<MediaRegistry>>,
    /// The enrichment tables, for decoding hits (set by `backflow serve`).
    pub enricher: OnceLock<Arc<Enricher>>,
    /// Directory of per-pipeline lock files, so that two processes sharing a catalog (the daemon
    /// and `backflow run`) never run the same pipeline at once. `None` for in-memory catalogs.
    pub lock_dir: Option<PathBuf>,
    /// Quota metering of journal batches (staging retention).
    pub quota: quota::QuotaSettings,
}

/// When a batch was planned, in microseconds: what its output uses instead of "now", so a
/// replay writes the same bytes.
fn planned_at_micros(intent: &BatchIntent) -> Result<i64, PipelineError> {
    chrono::DateTime::parse_from_rfc3339(&intent.planned_at)
        .map(|t| t.timestamp_micros())
        .map_err(|e| PipelineError::Positions(format!("planned_at: {e}")))
}

fn to_positions(value: impl Serialize) -> Result<serde_json::Value, PipelineError> {
    serde_json::to_value(value).map_err(|e| PipelineError::Positions(e.to_string()))
}

/// Positions of a journal batch: `[from, to)`, with its quota decisions (absent: none).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
struct JournalPositions {
    from: u64,
    to: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    quota: Option<quota::MeterPlan>,
}

/// A batch's input as read, before decoding (which runs on the blocking pool).
enum Fetched {
    Files {
        cfg: ObjectStoreFilesSource,
        files: Vec<SourceFile>,
        contents: Vec<bytes::Bytes>,
    },
    Hits {
        records: Vec<(JournalPosition, bytes::Bytes)>,
        registry: Arc<MediaRegistry>,
        enricher: Arc<Enricher>,
    },
    Kafka {
        cfg: crate::config::model::KafkaSource,
        records: Vec<KafkaRecord>,
        /// For `format: hit_record`.
        hits: Option<(Arc<MediaRegistry>, Arc<Enricher>)>,
        /// Staged hit records a metered batch releases first (quota), by staged position.
        released: Vec<(JournalPosition, bytes::Bytes)>,
    },
    Http {
        pages: Vec<FetchedPage>,
        /// The pages' stored form, when just fetched (taken into the intent).
        input: Option<Vec<u8>>,
    },
}

impl Fetched {
    /// Decodes into text rows; returns how many whole files could not be decoded.
    /// Decodes the batch's input and applies the pipeline's transforms: the frame, with the
    /// rows read (decoded and quarantined) and the inputs that failed to read. Rows either
    /// step rejects are in `quarantine`.
    fn decode_transformed(
        self,
        transforms: &[crate::config::model::TransformStep],
        tz: Tz,
        quarantine: &mut Quarantine,
    ) -> Result<(polars::prelude::DataFrame, u64, u64), PipelineError> {
        let mut rows = TextFrameBuilder::new();
        let files_failed = self.decode(&mut rows, quarantine);
        let rows_in = (rows.rows() + quarantine.len()) as u64;
        let df = rows.finish().map_err(|source| PipelineError::Polars {
            stage: "decode",
            source,
        })?;
        let df = transform::apply(df, transforms, tz, quarantine)?;
        Ok((df, rows_in, files_failed))
    }

    fn decode(self, rows: &mut TextFrameBuilder, quarantine: &mut Quarantine) -> u64 {
        match self {
            Fetched::Files {
                cfg,
                files,
                contents,
            } => {
                let mut failed = 0;
                for (file, bytes) in files.iter().zip(contents) {
                    if files_source::decode(&cfg, file, bytes, rows, quarantine) == Decoded::Failed
                    {
                        failed += 1;
                    }
                }
                failed
            }
            Fetched::Hits {
                records,
                registry,
                enricher,
            } => {
                for (position, bytes) in records {
                    match hit_decode::decode(&bytes, &registry, &enricher) {
                        Ok(row) => rows.push("journal", position.0 as i64, row),
                        Err(reason) => quarantine.push(QuarantinedRow {
                            reason: format!("journal:{}: {reason}", position.0),
                            source_file: Some("journal".to_string()),
                            source_line: Some(position.0 as i64),
                            raw: Some(String::from_utf8_lossy(&bytes).into_owned()),
                        }),
                    }
                }
                0
            }
            Fetched::Kafka {
                cfg,
                records,
                hits,
                released,
            } => {
                if let Some((registry, enricher)) = &hits {
                    for (position, bytes) in released {
                        match hit_decode::decode(&bytes, registry, enricher) {
                            Ok(row) => rows.push("quota_staged", position.0 as i64, row),
                            Err(reason) => quarantine.push(QuarantinedRow {
                                reason: format!("quota_staged:{}: {reason}", position.0),
                                source_file: Some("quota_staged".to_string()),
                                source_line: Some(position.0 as i64),
                                raw: Some(String::from_utf8_lossy(&bytes).into_owned()),
                            }),
                        }
                    }
                }
                kafka_source::decode(&cfg, records, hits.as_ref(), rows, quarantine);
                0
            }
            Fetched::Http { pages, .. } => {
                http_source::decode(pages, rows, quarantine);
                0
            }
        }
    }
}

#[derive(Serialize)]
struct Manifest<'a> {
    pipeline: &'a str,
    dataset: &'a str,
    batch: i64,
    planned_at: &'a str,
    source: &'a serde_json::Value,
    files: Vec<ManifestFile>,
    quarantine: Option<ManifestFile>,
    rows_in: u64,
    rows_out: u64,
    rows_quarantined: u64,
}

#[derive(Serialize)]
struct ManifestFile {
    path: String,
    rows: u64,
    bytes: u64,
}

struct Encoded {
    files: Vec<EncodedFile>,
    quarantine: Option<EncodedFile>,
    rows_in: u64,
    rows_quarantined: u64,
    files_failed: u64,
    /// What the landed rows count for (metered batches).
    tally: Option<quota::Tally>,
    /// What the landed rows add to the report rollups (`ad_events` only).
    rollups: crate::catalog::RollupDelta,
}

impl Runtime {
    /// Runs a pipeline until its source is drained (or `max_batches`, or cancellation between
    /// batches), replaying an open batch first. The run is recorded in the catalog.
    pub async fn run(
        &self,
        pipeline: &Pipeline,
        opts: &RunOptions,
        cancel: &CancellationToken,
    ) -> Result<RunSummary, PipelineError> {
        // A Kafka pipeline may run in several processes at once (members of one consumer group
        // on one catalog): its batches are serialized instead (`kafka_step`).
        let _lock = match pipeline.source {
            SourceConfig::Kafka(_) => None,
            _ => self.lock(&pipeline.name)?,
        };
        let started = chrono::Utc::now();
        let run_id = match opts.run_id {
            Some(id) => {
                self.catalog.begin_run(id)?;
                id
            }
            None => self.catalog.start_run(&pipeline.name, &opts.trigger)?,
        };
        self.metrics.runs_in_progress.inc();
        let mut summary = RunSummary {
            run_id,
            ..RunSummary::default()
        };
        let result = self.run_batches(pipeline, opts, cancel, &mut summary).await;
        self.metrics.runs_in_progress.dec();
        let status = match &result {
            Ok(()) if cancel.is_cancelled() => RunStatus::Cancelled,
            Ok(()) => RunStatus::Succeeded,
            Err(_) => RunStatus::Failed,
        };
        summary.status = status.to_string();
        let totals = RunTotals {
            batches: summary.batches,
            rows_in: summary.rows_in,
            rows_out: summary.rows_out,
            rows_quarantined: summary.rows_quarantined,
        };
        let error = result.as_ref().err().map(ToString::to_string);
        self.catalog
            .finish_run(run_id, status, totals, error.as_deref())?;
        // A run over the whole source that ended because nothing was left committed everything
        // that reached the source before it started: the source watermark (dataset jobs wait
        // for it, `schedule::watermark`).
        if status == RunStatus::Succeeded
            && opts.max_batches.is_none()
            && opts.window == (None, None)
        {
            let up_to = started.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            self.catalog.advance_watermark(&pipeline.name, &up_to)?;
        }
        self.metrics
            .runs
            .get_or_create(&RunLabels {
                pipeline: pipeline.name.clone(),
                status: status.to_string(),
            })
            .inc();
        result.map(|()| summary)
    }

    pub(crate) fn lock(&self, name: &str) -> Result<Option<std::fs::File>, PipelineError> {
        let Some(dir) = &self.lock_dir else {
            return Ok(None);
        };
        let path = dir.join(format!("{name}.lock"));
        let lock_err = |source| PipelineError::Lock {
            path: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(lock_err)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(lock_err)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(std::fs::TryLockError::WouldBlock) => Err(PipelineError::Busy(
                name.to_string(),
                path.display().to_string(),
            )),
            Err(std::fs::TryLockError::Error(e)) => Err(lock_err(e)),
        }
    }

    async fn run_batches(
        &self,
        pipeline: &Pipeline,
        opts: &RunOptions,
        cancel: &CancellationToken,
        summary: &mut RunSummary,
    ) -> Result<(), PipelineError> {
        let labels = Metrics::labels(&pipeline.name);
        // A Kafka sink keeps one producer for the whole run; a broker that is down (or a topic
        // that is missing) fails the run here, before anything is planned.
        let publisher = match &pipeline.sink {
            SinkConfig::Kafka(cfg) => Some(
                sink::kafka::Publisher::connect(cfg, &pipeline.name, Arc::clone(&self.metrics))
                    .await?,
            ),
            SinkConfig::Parquet(_) => None,
        };
        let publisher = publisher.as_ref();
        // A Kafka source keeps one group member for the whole run.
        let mut kafka = match &pipeline.source {
            SourceConfig::Kafka(cfg) => Some(kafka_source::Session::connect(
                cfg,
                &pipeline.name,
                Arc::clone(&self.metrics),
            )?),
            _ => None,
        };
        // An HTTP source keeps its client and request budget for the whole run.
        let mut http = match &pipeline.source {
            SourceConfig::Http(cfg) => Some(http_source::Session::connect(
                cfg,
                &pipeline.name,
                self.tz,
                Arc::clone(&self.metrics),
                cancel.clone(),
            )?),
            _ => None,
        };
        let result = async {
            loop {
                match http.as_mut().and_then(http_source::Session::take_stop) {
                    Some(http_source::Stop::Budget) => return Ok(()),
                    Some(http_source::Stop::Failed(e)) => return Err(e),
                    None => {}
                }
                if cancel.is_cancelled()
                    || opts
                        .max_batches
                        .is_some_and(|max| summary.batches as usize >= max)
                {
                    if let Some(session) = kafka.as_mut() {
                        session.finish().await;
                    }
                    return Ok(());
                }
                if let Some(session) = kafka.as_mut() {
                    if !self
                        .kafka_step(pipeline, session, publisher, summary)
                        .await?
                    {
                        // The last offset commit's answer (bounded wait).
                        session.finish().await;
                        return Ok(());
                    }
                    continue;
                }
                let (intent, prefetched) = match self.catalog.open_intent(&pipeline.name)? {
                    Some(intent) => {
                        warn!(pipeline = %pipeline.name, batch = intent.seq, "replaying a batch left open by an earlier run");
                        self.metrics.batches_replayed.get_or_create(&labels).inc();
                        summary.replayed_batches += 1;
                        (intent, None)
                    }
                    None => {
                        let Some((positions, mut prefetched)) =
                            self.plan(pipeline, opts, http.as_mut()).await?
                        else {
                            return Ok(());
                        };
                        let planned_at =
                            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
                        // A source that cannot be read twice keeps its input with the intent.
                        let input = match &mut prefetched {
                            Some(Fetched::Http { input, .. }) => input.take(),
                            _ => None,
                        };
                        let intent = self.catalog.create_intent_with_input(
                            &pipeline.name,
                            &positions,
                            &planned_at,
                            input.as_deref(),
                        )?;
                        (intent, prefetched)
                    }
                };
                failpoint("after_intent");
                self.execute_counted(pipeline, &intent, prefetched, None, publisher, summary)
                    .await?;
            }
        }
        .await;
        // Closing the consumer is bounded (a broker that died must not hang the run).
        if let Some(session) = kafka {
            session.close().await;
        }
        result
    }

    /// Counts a committed batch's rows in the metrics.
    pub(super) fn count_rows(&self, labels: &crate::telemetry::PipelineLabels, stats: &BatchStats) {
        self.metrics
            .rows_in
            .get_or_create(labels)
            .inc_by(stats.rows_in);
        self.metrics
            .rows_out
            .get_or_create(labels)
            .inc_by(stats.rows_out);
        self.metrics
            .rows_quarantined
            .get_or_create(labels)
            .inc_by(stats.rows_quarantined);
    }

    /// Stores one encoded file of batch `seq` create-only and counts it: written, or already
    /// there from an earlier attempt (a replay), and its bytes.
    pub(super) async fn put_counted(
        &self,
        pipeline: &str,
        seq: i64,
        path: &str,
        bytes: Vec<u8>,
    ) -> Result<(), PipelineError> {
        let labels = Metrics::labels(pipeline);
        let size = bytes.len() as u64;
        match parquet_sink::put_create_only(&self.lake, path, bytes).await? {
            Put::Written => {
                self.metrics.files_written.get_or_create(&labels).inc();
            }
            Put::AlreadyPresent => {
                info!(pipeline = %pipeline, batch = seq, path = %path, "file already written by an earlier attempt");
                self.metrics
                    .files_already_present
                    .get_or_create(&labels)
                    .inc();
            }
        }
        self.metrics
            .bytes_written
            .get_or_create(&labels)
            .inc_by(size);
        Ok(())
    }

    /// Executes a batch and counts it in the run summary and the metrics.
    async fn execute_counted(
        &self,
        pipeline: &Pipeline,
        intent: &BatchIntent,
        prefetched: Option<Fetched>,
        kafka: Option<&mut kafka_source::Session>,
        publisher: Option<&sink::kafka::Publisher>,
        summary: &mut RunSummary,
    ) -> Result<(), PipelineError> {
        let labels = Metrics::labels(&pipeline.name);
        let started = Instant::now();
        match self
            .execute(pipeline, intent, prefetched, kafka, publisher)
            .await
        {
            Ok((stats, files_failed)) => {
                summary.batches += 1;
                summary.rows_in += stats.rows_in;
                summary.rows_out += stats.rows_out;
                summary.rows_quarantined += stats.rows_quarantined;
                summary.files_failed += files_failed;
                self.metrics.batches_committed.get_or_create(&labels).inc();
                self.metrics
                    .batch_duration
                    .get_or_create(&labels)
                    .observe(started.elapsed().as_secs_f64());
                Ok(())
            }
            Err(e) => {
                self.metrics.commit_failures.get_or_create(&labels).inc();
                Err(e)
            }
        }
    }

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
    async fn kafka_step(
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

    /// Waits for the pipeline's batch lock (another process of the same group holds it while it
    /// commits a batch). `None` for in-memory catalogs.
    async fn batch_lock(&self, name: &str) -> Result<Option<std::fs::File>, PipelineError> {
        let Some(dir) = &self.lock_dir else {
            return Ok(None);
        };
        let path = dir.join(format!("{name}.batch.lock"));
        let shown = path.display().to_string();
        let locked = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)?;
            file.lock()?;
            Ok(file)
        })
        .await
        .map_err(|e| PipelineError::Task(e.to_string()))?;
        locked.map(Some).map_err(|source| PipelineError::Lock {
            path: shown,
            source,
        })
    }

    fn journal(&self) -> Result<&Journal, PipelineError> {
        self.journal.get().ok_or(PipelineError::NoJournal)
    }

    /// The next batch's positions, or `None` when the source has nothing new; with the batch's
    /// input when planning had to read it anyway (the journal), so it is not read twice.
    async fn plan(
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
    fn kafka_hits(
        &self,
        cfg: &crate::config::model::KafkaSource,
    ) -> Result<Option<(Arc<MediaRegistry>, Arc<Enricher>)>, PipelineError> {
        match cfg.format {
            crate::config::model::KafkaFormat::Json => Ok(None),
            crate::config::model::KafkaFormat::HitRecord => self.hit_decoding().map(Some),
        }
    }

    /// Reads the input of planned positions (again, on a replay).
    async fn fetch(
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
    async fn after_commit(
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

    /// Executes (or replays) one planned batch through to its commit.
    async fn execute(
        &self,
        pipeline: &Pipeline,
        intent: &BatchIntent,
        prefetched: Option<Fetched>,
        kafka: Option<&mut kafka_source::Session>,
        publisher: Option<&sink::kafka::Publisher>,
    ) -> Result<(BatchStats, u64), PipelineError> {
        let SinkConfig::Parquet(sink_cfg) = &pipeline.sink else {
            return self
                .execute_kafka(pipeline, intent, prefetched, kafka, publisher)
                .await;
        };
        let labels = Metrics::labels(&pipeline.name);
        // A replay (or a source that planned without reading) reads its positions now.
        let fetched = match prefetched {
            Some(fetched) => fetched,
            None => self.fetch(pipeline, intent).await?,
        };
        let (fetched, metering) = self.meter(pipeline, &intent.positions, fetched)?;
        let (ingested, inputs) = match &fetched {
            Fetched::Files { files, .. } => (
                files.iter().map(|f| f.path.clone()).collect::<Vec<_>>(),
                files.len(),
            ),
            Fetched::Hits { records, .. } => (Vec::new(), records.len()),
            Fetched::Kafka { records, .. } => (Vec::new(), records.len()),
            Fetched::Http { pages, .. } => (Vec::new(), pages.len()),
        };
        if let Fetched::Files { files, .. } = &fetched {
            self.metrics
                .files_read
                .get_or_create(&labels)
                .inc_by(files.len() as u64);
        }

        let planned_at_micros = planned_at_micros(intent)?;
        let (pipeline_owned, tz, seq) = (pipeline.clone(), self.tz, intent.seq);
        let metered = metering.is_some();
        let encoded = tokio::task::spawn_blocking(move || -> Result<Encoded, PipelineError> {
            let mut quarantine = Quarantine::default();
            let (df, rows_in, files_failed) =
                fetched.decode_transformed(&pipeline_owned.transforms, tz, &mut quarantine)?;
            let SinkConfig::Parquet(sink_cfg) = &pipeline_owned.sink else {
                return Err(PipelineError::Task(
                    "parquet batch without a parquet sink".into(),
                ));
            };
            let tally = metered
                .then(|| quota::tally(&df, &sink_cfg.partition_column, tz))
                .transpose()
                .map_err(|source| PipelineError::Polars {
                    stage: "quota",
                    source,
                })?;
            let rollups = if sink_cfg.dataset == crate::report::lake::AD_EVENTS {
                crate::report::rollup::delta(&df, tz).map_err(|source| PipelineError::Polars {
                    stage: "rollups",
                    source,
                })?
            } else {
                crate::catalog::RollupDelta::default()
            };
            let files = parquet_sink::encode(df, sink_cfg, tz, seq, &mut quarantine)?;
            let quarantine_file = parquet_sink::encode_quarantine(
                &quarantine,
                &pipeline_owned.name,
                seq,
                planned_at_micros,
                tz,
            )?;
            Ok(Encoded {
                files,
                quarantine: quarantine_file,
                rows_in,
                rows_quarantined: quarantine.len() as u64,
                files_failed,
                tally,
                rollups,
            })
        })
        .await
        .map_err(|e| PipelineError::Task(e.to_string()))??;
        self.metrics
            .files_failed
            .get_or_create(&labels)
            .inc_by(encoded.files_failed);

        let mut manifest_files = Vec::with_capacity(encoded.files.len());
        let mut bytes_total = 0u64;
        let outputs = encoded
            .files
            .into_iter()
            .map(|f| (f, false))
            .chain(encoded.quarantine.map(|f| (f, true)));
        let mut quarantine_entry = None;
        for (index, (file, is_quarantine)) in outputs.enumerate() {
            let entry = ManifestFile {
                path: file.path.clone(),
                rows: file.rows,
                bytes: file.bytes.len() as u64,
            };
            bytes_total += entry.bytes;
            self.put_counted(&pipeline.name, seq, &file.path, file.bytes)
                .await?;
            if index == 0 {
                failpoint("after_first_put");
            }
            if is_quarantine {
                quarantine_entry = Some(entry);
            } else {
                manifest_files.push(entry);
            }
        }
        failpoint("before_manifest");
        let rows_out: u64 = manifest_files.iter().map(|f| f.rows).sum();
        let stats = BatchStats {
            rows_in: encoded.rows_in,
            rows_out,
            rows_quarantined: encoded.rows_quarantined,
            files: manifest_files.iter().map(|f| f.path.clone()).collect(),
            bytes: bytes_total,
        };
        let manifest = Manifest {
            pipeline: &pipeline.name,
            dataset: &sink_cfg.dataset,
            batch: seq,
            planned_at: &intent.planned_at,
            source: &intent.positions,
            files: manifest_files,
            quarantine: quarantine_entry,
            rows_in: stats.rows_in,
            rows_out,
            rows_quarantined: stats.rows_quarantined,
        };
        let manifest = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| PipelineError::Positions(e.to_string()))?;
        parquet_sink::put_create_only(
            &self.lake,
            &parquet_sink::manifest_path(&sink_cfg.dataset, seq),
            manifest,
        )
        .await?;
        failpoint("after_manifest");

        match metering {
            Some(metering) => {
                self.commit_metered(
                    pipeline,
                    seq,
                    &stats,
                    metering,
                    encoded.tally,
                    encoded.rollups,
                )?;
            }
            None => self.catalog.commit_batch(
                &pipeline.name,
                seq,
                &ingested,
                &stats,
                &encoded.rollups,
            )?,
        }
        self.count_rows(&labels, &stats);
        info!(
            pipeline = %pipeline.name,
            batch = seq,
            inputs,
            rows_in = stats.rows_in,
            rows_out = stats.rows_out,
            rows_quarantined = stats.rows_quarantined,
            files_out = stats.files.len(),
            bytes = stats.bytes,
            "batch committed"
        );
        failpoint("after_commit");
        self.after_commit(pipeline, &intent.positions, kafka).await;
        Ok((stats, encoded.files_failed))
    }
}
