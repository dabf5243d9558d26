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
//!
//! The runtime's parts: `run` (the run loop and its summary), `kafka_step` (a Kafka source's
//! step, several group members on one catalog), `plan` (the sources' positions: planning,
//! re-reading on a replay, after a commit), `fetched` (decoding a batch's input and applying the
//! transforms), `execute` (a batch through a Parquet sink; puts and counts shared with
//! `publish`, a batch through a Kafka sink), `quota` (metering) and `lock` (the lock files).

mod execute;
pub mod failpoint;
mod fetched;
pub mod frame;
mod kafka_step;
pub mod kafka_tls;
mod lock;
mod plan;
mod publish;
pub mod quota;
mod run;
pub mod sink;
pub mod source;
pub mod testing;
pub mod transform;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use chrono_tz::Tz;
use serde::Serialize;

use crate::catalog::{Catalog, CatalogError};
use crate::collect::registry::MediaRegistry;
use crate::enrich::Enricher;
use crate::journal::{Journal, JournalError};
use crate::storage::{Location, StorageError, StoreRegistry};
use crate::telemetry::Metrics;
use source::object_store_files::Window;

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
