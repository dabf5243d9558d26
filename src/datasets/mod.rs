//! Dataset jobs (`kind: dataset`): rebuild a dataset from *committed* lake data, validate it,
//! publish it as a new version, keep the last N.
//!
//! A refresh is one run in the catalog's run history (`rows_in` = source rows read,
//! `rows_out` = rows of the main table, `error` = the reason shown to users):
//! 1. read the committed files of each source (through the `_commits/` manifests, like reports);
//! 2. build the tables with Polars ([`behavior`]);
//! 3. validate the main table: rows (unless `allow_empty`), key uniqueness, null ratios;
//! 4. write `datasets/{name}/version={ts}/{table}/part-0000.parquet` (create-only);
//! 5. publish: the next `_current/{seq}.json` pointer, then a catalog record ([`publish`]);
//! 6. retention: keep the last `keep_versions`, delete older and unpublished versions.
//!
//! Any failure before step 5 leaves the previous version current.
//!
//! A refresh for a **period** (scheduled, backfill and rerun instances, [`RefreshOptions`])
//! rebuilds only the rows whose behavior time falls in the period and carries every other row
//! of the current version over unchanged, so re-running a period is idempotent and older
//! periods can be backfilled without touching the rest.

pub mod behavior;
pub mod publish;
pub mod tags;

use std::time::Instant;

use chrono_tz::Tz;
use polars::prelude::*;
use serde::Serialize;
use tracing::{info, warn};

use crate::catalog::{CatalogError, RunStatus, RunTotals};
use crate::config::model::{BEHAVIOR_COLUMNS, DatasetBuild, DatasetJob, PublishPolicy};
use crate::pipeline::failpoint::{self, failpoint};
use crate::pipeline::sink::parquet::write_parquet;
use crate::pipeline::{PipelineError, Runtime};
use crate::report::ReportError;
use crate::report::lake::{self, CommittedFiles, Wanted};
use crate::schedule::Period;
use crate::storage::Location;
use crate::telemetry::RunLabels;
pub use publish::{Pointer, TableFile};

/// Rows per Parquet row group of dataset tables.
const ROW_GROUP_ROWS: usize = 1_000_000;

/// Why a refresh failed. The previous version stays current in every case.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("storage {path}: {source}")]
    Storage {
        path: String,
        source: object_store::Error,
    },
    #[error("reading source data: {0}")]
    Source(#[from] ReportError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Run(#[from] PipelineError),
    #[error("building the dataset ({stage}): {source}")]
    Polars {
        stage: &'static str,
        source: PolarsError,
    },
    #[error("source columns: {0}")]
    Columns(String),
    #[error("validation failed, not published: {0}")]
    Invalid(String),
    #[error("pointer {path} is unreadable: {reason}")]
    Pointer { path: String, reason: String },
    #[error("{0}")]
    Conflict(String),
    #[error("internal task failed: {0}")]
    Task(String),
    #[error("version {version} was published, but its change notice was not delivered: {source}")]
    Notice {
        version: String,
        source: Box<PipelineError>,
    },
}

impl DatasetError {
    /// Whether trying again later may succeed without anyone changing anything.
    pub fn retryable(&self) -> bool {
        match self {
            DatasetError::Storage { .. } | DatasetError::Task(_) | DatasetError::Conflict(_) => {
                true
            }
            DatasetError::Run(e) => e.retryable(),
            DatasetError::Notice { source, .. } => source.retryable(),
            DatasetError::Catalog(e) => e.retryable(),
            DatasetError::Source(ReportError::Storage { .. }) => true,
            _ => false,
        }
    }
}

fn polars(stage: &'static str) -> impl Fn(PolarsError) -> DatasetError {
    move |source| DatasetError::Polars { stage, source }
}

/// What a refresh did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct RefreshSummary {
    pub run_id: i64,
    pub job: String,
    pub dataset: String,
    pub status: String,
    /// The published version (`version=` value) and its pointer sequence number.
    pub version: String,
    pub seq: i64,
    /// Source rows read.
    pub rows_in: u64,
    /// Rows of the main table, and of each table.
    pub rows_out: u64,
    pub tables: Vec<TableFile>,
    /// Versions deleted by retention (pointer sequence numbers), and unpublished folders.
    pub deleted_versions: Vec<i64>,
    pub deleted_orphans: Vec<String>,
    /// Where the windows of a user tag dataset ended (RFC 3339 UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_end: Option<String>,
    /// How many partitions by user the hits of a user tag dataset were grouped in (1: all
    /// at once; see `partition_rows`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partitions: Option<usize>,
}

/// How a refresh is run.
#[derive(Debug, Clone, Default)]
pub struct RefreshOptions {
    /// `schedule`, `backfill`, `rerun`, `api`, `cli`…, recorded in the run history.
    pub trigger: String,
    /// The run already recorded for this refresh (queued by the scheduler); `None` records a
    /// new one.
    pub run_id: Option<i64>,
    /// Rebuild only this period and keep the current version's other rows; `None` rebuilds
    /// everything.
    pub period: Option<Period>,
    /// Refresh as if run at this time (default: now, or the end of `period`): a user tag
    /// dataset's windows end at the hour or day containing it. Source data committed later is
    /// still read; only the windows move.
    pub as_of: Option<chrono::DateTime<chrono::Utc>>,
}

impl RefreshOptions {
    pub fn now(trigger: &str) -> RefreshOptions {
        RefreshOptions {
            trigger: trigger.to_string(),
            ..RefreshOptions::default()
        }
    }
}

/// Built tables, encoded, ready to store.
struct Built {
    rows_in: u64,
    rows_out: u64,
    tables: Vec<(&'static str, Vec<u8>, u64)>,
}

/// Runs a refresh of `job` now, recorded in the run history. Holds the job's lock (shared with
/// pipelines) for the whole run, so the daemon and `backflow run` never refresh one job at once.
pub async fn refresh(
    runtime: &Runtime,
    job: &DatasetJob,
    opts: &RefreshOptions,
) -> Result<RefreshSummary, DatasetError> {
    let _lock = runtime.lock(&job.name)?;
    let run_id = match opts.run_id {
        Some(id) => {
            runtime.catalog.begin_run(id)?;
            id
        }
        None => runtime.catalog.start_run(&job.name, &opts.trigger)?,
    };
    runtime.metrics.runs_in_progress.inc();
    let started = Instant::now();
    let mut summary = RefreshSummary {
        run_id,
        job: job.name.clone(),
        dataset: job.output().to_string(),
        ..RefreshSummary::default()
    };
    let result = run(runtime, job, opts, &mut summary).await;
    runtime.metrics.runs_in_progress.dec();
    let status = if result.is_ok() {
        RunStatus::Succeeded
    } else {
        RunStatus::Failed
    };
    summary.status = status.to_string();
    let totals = RunTotals {
        batches: u64::from(result.is_ok()),
        rows_in: summary.rows_in,
        rows_out: summary.rows_out,
        rows_quarantined: 0,
    };
    let error = result.as_ref().err().map(ToString::to_string);
    runtime
        .catalog
        .finish_run(run_id, status, totals, error.as_deref())?;
    runtime
        .metrics
        .runs
        .get_or_create(&RunLabels {
            pipeline: job.name.clone(),
            status: status.to_string(),
        })
        .inc();
    match &result {
        Ok(()) => info!(
            job = %job.name, dataset = %summary.dataset, version = %summary.version, seq = summary.seq,
            rows_in = summary.rows_in, rows_out = summary.rows_out,
            seconds = started.elapsed().as_secs_f64(), "dataset version published"
        ),
        Err(e) => {
            warn!(job = %job.name, error = %e, "dataset refresh failed; the previous version stays current")
        }
    }
    result.map(|()| summary)
}

async fn run(
    runtime: &Runtime,
    job: &DatasetJob,
    opts: &RefreshOptions,
    summary: &mut RefreshSummary,
) -> Result<(), DatasetError> {
    let lake = &runtime.lake;
    let started_at = chrono::Utc::now();
    // Change notices: a broker that is down (or a missing topic) fails the run before anything
    // is built or published.
    let notifier = match &job.publish.notify {
        Some(cfg) => Some(
            crate::pipeline::sink::kafka::Publisher::connect(
                cfg,
                &job.name,
                std::sync::Arc::clone(&runtime.metrics),
            )
            .await?,
        ),
        None => None,
    };
    failpoint::injected_delay("dataset_read_sources").await;
    if let Some(message) = failpoint::injected_error("dataset_read_sources") {
        return Err(DatasetError::Storage {
            path: "(failpoint)".to_string(),
            source: object_store::Error::Generic {
                store: "failpoint",
                source: message.into(),
            },
        });
    }
    let period = opts.period.as_ref();
    let built = match &job.build {
        DatasetBuild::Behavior(build) => {
            let committed = CommittedFiles::default();
            let behavior_events = match &build.behavior_events {
                Some(ds) => source(lake, &committed, ds, behavior::BEHAVIOR_EVENT_COLUMNS).await?,
                None => None,
            };
            let ad_events = match &build.ad_events {
                Some(m) => source(lake, &committed, &m.dataset, behavior::AD_EVENT_COLUMNS).await?,
                None => None,
            };
            // A period instance keeps the current version's rows outside its period.
            let kept = match period {
                Some(period) => match current(lake, job.output()).await? {
                    Some(pointer) => {
                        let files: Vec<String> = pointer
                            .tables
                            .iter()
                            .filter(|t| t.table == "behavior")
                            .map(|t| t.path.clone())
                            .collect();
                        lake::frame(lake, &files, behavior::BEHAVIOR_EVENT_COLUMNS)
                            .await?
                            .map(|lf| lf.filter(in_period(period).not()))
                    }
                    None => None,
                },
                None => None,
            };
            let (build, policy, tz) = (build.clone(), job.publish.clone(), runtime.tz);
            let window = period.map(in_period);
            tokio::task::spawn_blocking(move || {
                let inputs = Inputs {
                    behavior_events,
                    ad_events,
                    window,
                    kept,
                };
                build_tables(&build, inputs, &policy, tz)
            })
            .await
            .map_err(|e| DatasetError::Task(e.to_string()))??
        }
        DatasetBuild::UserTags(build) => {
            // A period instance is the snapshot as of the period's end.
            let now = opts
                .as_of
                .or(period.map(|p| p.end.with_timezone(&chrono::Utc)))
                .unwrap_or(started_at);
            // Scratch space next to the lock files (`data_dir/tmp/`, one per job: its lock
            // is held), else a fresh one in the system's.
            let scratch = match runtime.lock_dir.as_ref().and_then(|d| d.parent()) {
                Some(data_dir) => data_dir
                    .join("tmp")
                    .join(format!("dataset-{}", build.output)),
                None => std::env::temp_dir().join(format!(
                    "backflow-dataset-{}-{}-{}",
                    build.output,
                    std::process::id(),
                    chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
                )),
            };
            let (built, end, parts) =
                tags::build_tables(lake, build, &job.publish, now, runtime.tz, scratch).await?;
            summary.window_end = Some(end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
            summary.partitions = Some(parts);
            built
        }
    };
    summary.rows_in = built.rows_in;
    summary.rows_out = built.rows_out;

    let version = publish::version_name(started_at);
    let dir = format!("{}/version={version}", publish::dataset_root(job.output()));
    for (table, bytes, rows) in built.tables {
        let file = publish::write_table(lake, &dir, table, bytes, rows).await?;
        summary.tables.push(file);
    }
    failpoint("dataset_before_publish");
    let pointer = Pointer {
        dataset: job.output().to_string(),
        seq: 0,
        version: version.clone(),
        path: dir,
        job: job.name.clone(),
        run_id: Some(summary.run_id),
        published_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        tables: summary.tables.clone(),
    };
    let pointer = publish::publish(lake, pointer).await?;
    failpoint("dataset_after_publish");
    summary.version = version;
    summary.seq = pointer.seq;
    runtime.catalog.record_dataset_version(
        &pointer.dataset,
        pointer.seq,
        &pointer.version,
        &job.name,
        pointer.run_id,
        summary.rows_out,
    )?;
    if let Some(notifier) = &notifier {
        notify(notifier, job, &pointer, summary.rows_out).await?;
    }
    let retained = publish::retain(lake, job.output(), job.publish.keep_versions.get()).await?;
    for seq in &retained.dropped {
        runtime
            .catalog
            .mark_dataset_version_deleted(job.output(), *seq)?;
    }
    summary.deleted_versions = retained.dropped;
    summary.deleted_orphans = retained.orphans;
    Ok(())
}

/// Announces a published version on the job's notice topic: one message keyed by the dataset,
/// headers `backflow-batch: {job}/{seq}`, `backflow-row: 0` (the same if it is ever sent again).
async fn notify(
    notifier: &crate::pipeline::sink::kafka::Publisher,
    job: &DatasetJob,
    pointer: &Pointer,
    rows: u64,
) -> Result<(), DatasetError> {
    let payload = serde_json::json!({
        "dataset": pointer.dataset,
        "version": pointer.version,
        "seq": pointer.seq,
        "rows": rows,
        "published_at": pointer.published_at,
        "path": pointer.path,
        "job": job.name,
    });
    let message = crate::pipeline::sink::kafka::Message {
        row: 0,
        key: pointer.dataset.clone().into_bytes(),
        payload: payload.to_string().into_bytes(),
    };
    let batch = crate::pipeline::sink::kafka::batch_id(&job.name, pointer.seq);
    match notifier.send(&batch, &[message]).await {
        Ok(_) => {
            info!(job = %job.name, dataset = %pointer.dataset, version = %pointer.version, seq = pointer.seq, "dataset change notice delivered");
            Ok(())
        }
        Err(e) => {
            warn!(job = %job.name, dataset = %pointer.dataset, version = %pointer.version, seq = pointer.seq, error = %e, "version published, but its change notice was not delivered; the run fails (a retry publishes and announces a newer version)");
            Err(DatasetError::Notice {
                version: pointer.version.clone(),
                source: Box::new(e),
            })
        }
    }
}

/// A lazy frame over the committed files of a source dataset (`None`: no committed file).
async fn source(
    lake: &Location,
    committed: &CommittedFiles,
    dataset: &str,
    wanted: &[Wanted],
) -> Result<Option<LazyFrame>, DatasetError> {
    let files = committed.list_all(lake, dataset).await?;
    Ok(lake::frame(lake, &files, wanted).await?)
}

fn empty_main() -> PolarsResult<LazyFrame> {
    let columns: Vec<Column> = BEHAVIOR_COLUMNS
        .iter()
        .map(|c| Column::new_empty((*c).into(), &behavior::dtype_of(c)))
        .collect();
    Ok(DataFrame::new_infer_height(columns)?.lazy())
}

fn count(lf: &LazyFrame) -> Result<u64, DatasetError> {
    let df = lf
        .clone()
        .select([len().cast(DataType::Int64).alias("n")])
        .collect()
        .map_err(polars("count source rows"))?;
    let n = df.column("n").map_err(polars("count source rows"))?;
    Ok(n.i64().ok().and_then(|c| c.get(0)).unwrap_or(0).max(0) as u64)
}

/// `behavior_time` within the period.
fn in_period(period: &Period) -> Expr {
    let at = |t: &chrono::DateTime<Tz>| {
        lit(t.timestamp_micros()).cast(DataType::Datetime(
            TimeUnit::Microseconds,
            Some(TimeZone::UTC),
        ))
    };
    col("behavior_time")
        .gt_eq(at(&period.start))
        .and(col("behavior_time").lt(at(&period.end)))
}

/// The sources of a build: frames of committed source rows, the period filter (over mapped
/// behavior rows), and the current version's rows to keep.
struct Inputs {
    behavior_events: Option<LazyFrame>,
    ad_events: Option<LazyFrame>,
    window: Option<Expr>,
    kept: Option<LazyFrame>,
}

fn build_tables(
    build: &crate::config::model::BehaviorBuild,
    sources: Inputs,
    policy: &PublishPolicy,
    tz: Tz,
) -> Result<Built, DatasetError> {
    let mut rows_in = 0;
    let mut inputs = vec![empty_main().map_err(polars("empty frame"))?];
    let window = |lf: LazyFrame| match &sources.window {
        Some(w) => lf.filter(w.clone()),
        None => lf,
    };
    // Source rows read: all of them, or (a period instance) those mapped into the period.
    let windowed = sources.window.is_some();
    if let Some(lf) = sources.behavior_events {
        let mapped = window(behavior::from_behavior_events(lf.clone()));
        rows_in += count(if windowed { &mapped } else { &lf })?;
        inputs.push(mapped);
    }
    if let (Some(lf), Some(mapping)) = (sources.ad_events, &build.ad_events) {
        let mapped =
            window(behavior::from_ad_events(lf.clone(), mapping).map_err(polars("map ad events"))?);
        rows_in += count(if windowed { &mapped } else { &lf })?;
        inputs.push(mapped);
    }
    // Kept rows are already one per key and outside the period: aggregating them again with
    // the new rows leaves them as they are.
    inputs.extend(sources.kept);
    let mut main = behavior::aggregate(inputs, build.time_grain, tz)
        .and_then(LazyFrame::collect)
        .map_err(polars("aggregate"))?;
    validate(&main, policy, &behavior::key_columns())?;
    let mut types = behavior::value_dimension(main.clone().lazy(), "behavior_type")
        .collect()
        .map_err(polars("behavior type dimension"))?;
    let mut channels = behavior::value_dimension(main.clone().lazy(), "channel")
        .collect()
        .map_err(polars("channel dimension"))?;
    let mut objects = behavior::object_dimension(main.clone().lazy())
        .collect()
        .map_err(polars("object dimension"))?;
    let rows_out = main.height() as u64;
    let mut tables = Vec::with_capacity(4);
    for (name, df) in [
        ("behavior", &mut main),
        ("behavior_type", &mut types),
        ("channel", &mut channels),
        ("object_attribute", &mut objects),
    ] {
        let rows = df.height() as u64;
        tables.push((name, write_parquet(df, ROW_GROUP_ROWS)?, rows));
    }
    Ok(Built {
        rows_in,
        rows_out,
        tables,
    })
}

/// The publish checks of the main table; every failed check is in the message.
pub fn validate(
    main: &DataFrame,
    policy: &PublishPolicy,
    key: &[&str],
) -> Result<(), DatasetError> {
    let mut measures = Measures::default();
    measures.add(main, policy, key)?;
    measures.judge(policy, key)
}

/// What [`validate`] checks, added up over the parts of a table whose parts share no key.
#[derive(Debug, Default)]
pub struct Measures {
    rows: usize,
    duplicates: usize,
    /// Nulls per `max_null_ratio` column (a missing column counts all its rows).
    nulls: Vec<usize>,
}

impl Measures {
    /// Adds one part of the table.
    pub fn add(
        &mut self,
        part: &DataFrame,
        policy: &PublishPolicy,
        key: &[&str],
    ) -> Result<(), DatasetError> {
        let height = part.height();
        self.rows += height;
        self.nulls.resize(policy.max_null_ratio.len(), 0);
        if height == 0 {
            return Ok(());
        }
        let keys: Vec<Expr> = key.iter().map(|c| col(*c)).collect();
        self.duplicates += part
            .clone()
            .lazy()
            .group_by(keys)
            .agg([len().alias("n")])
            .filter(col("n").gt(lit(1)))
            .collect()
            .map_err(polars("key uniqueness"))?
            .height();
        for (i, (column, _)) in policy.max_null_ratio.iter().enumerate() {
            self.nulls[i] += part
                .column(column)
                .map(|c| c.null_count())
                .unwrap_or(height);
        }
        Ok(())
    }

    /// The verdict on the whole table.
    pub fn judge(&self, policy: &PublishPolicy, key: &[&str]) -> Result<(), DatasetError> {
        let mut problems = Vec::new();
        let height = self.rows;
        if height == 0 && !policy.allow_empty {
            problems.push(
                "the new version has no rows (no committed source rows, or none mapped); set publish.allow_empty to publish empty versions".to_string(),
            );
        }
        if height > 0 {
            if self.duplicates > 0 {
                problems.push(format!(
                    "{} key(s) occur more than once (key: {})",
                    self.duplicates,
                    key.join(", ")
                ));
            }
            for (i, (column, max)) in policy.max_null_ratio.iter().enumerate() {
                let nulls = self.nulls.get(i).copied().unwrap_or(height);
                let ratio = nulls as f64 / height as f64;
                if ratio > *max {
                    problems.push(format!(
                        "column `{column}` is {:.1}% null ({nulls} of {height} rows), more than the allowed {:.1}%",
                        ratio * 100.0,
                        max * 100.0
                    ));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(DatasetError::Invalid(problems.join("; ")))
        }
    }
}

/// The published version of a dataset readers should read, if any.
pub async fn current(lake: &Location, dataset: &str) -> Result<Option<Pointer>, DatasetError> {
    publish::current(lake, dataset).await
}
