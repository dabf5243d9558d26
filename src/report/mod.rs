//! Reports (报表分析, `spec/media-backflow.md` §4.3–4.6, §4.9): what campaign managers read.
//!
//! The ad monitoring report is computed exactly with Polars over the *committed* `ad_events`
//! Parquet (files listed by a `_commits/` manifest; partitions pruned by `dt=`): impressions and
//! clicks are counts, unique impressions and unique clicks are exact distinct device keys
//! (DESIGN.md) over each cell of the report — a dimension row over the whole range is its own
//! distinct count, never a sum of daily uniques.
//!
//! Everything here is read-only; a query is checked (range, form, dimension, the activities it
//! names) before any file is read, so a bad request computes nothing.

/// A closed set of names a query may give (form, dimension, metric…): the enum, its `ALL`, its
/// text (`as_str`, `Display`, snake_case in JSON) and a `FromStr` whose error lists the names.
macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::report::ReportError;
            fn from_str(s: &str) -> Result<Self, $crate::report::ReportError> {
                $name::ALL.iter().copied().find(|v| v.as_str() == s.trim()).ok_or_else(|| {
                    let names: Vec<&str> = $name::ALL.iter().map(|v| v.as_str()).collect();
                    $crate::report::ReportError::Invalid(format!(
                        "unknown {} `{s}`, expected one of {}", $what, names.join(", ")
                    ))
                })
            }
        }
    };
}

pub mod ad_monitoring;
pub mod cli;
pub mod dashboard;
pub mod downloads;
pub mod lake;
pub mod overview;
pub mod params;
pub mod range;
pub mod rollup;
pub mod sketch;
pub mod tencent;

use std::sync::Arc;

use chrono_tz::Tz;

use crate::catalog::{Catalog, CatalogError};
use crate::storage::Location;

pub use ad_monitoring::{AdMonitoringQuery, Dimension, Form, Metric, RegionLevel, Report, Source};
pub use dashboard::{Dashboard, DashboardQuery, MonitoringType};
pub use lake::CommittedFiles;
pub use range::{DateRange, MAX_REPORT_DAYS};
pub use tencent::{TencentDimension, TencentMetric, TencentQuery, TencentReport};

/// Why a report could not be answered. `Invalid` and `NotFound` are the caller's (4xx); the
/// others are ours (5xx).
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("reading the lake at {path}: {source}")]
    Storage {
        path: String,
        source: object_store::Error,
    },
    #[error("commit manifest {path} is unreadable: {reason}")]
    Manifest { path: String, reason: String },
    #[error("computing the report ({stage}): {source}")]
    Polars {
        stage: &'static str,
        source: polars::error::PolarsError,
    },
    #[error("report task failed: {0}")]
    Task(String),
}

/// Wraps a Polars error of report stage `stage`.
fn polars(stage: &'static str) -> impl Fn(polars::error::PolarsError) -> ReportError {
    move |source| ReportError::Polars { stage, source }
}

impl ReportError {
    /// Whether the caller caused it (a 4xx), as opposed to us (a 5xx).
    pub fn is_user(&self) -> bool {
        matches!(self, ReportError::Invalid(_) | ReportError::NotFound(_))
    }
}

/// What every report needs: the catalog (activities, quota), the lake and the `dt=` time zone.
#[derive(Debug, Clone)]
pub struct Reports {
    pub catalog: Arc<Catalog>,
    pub lake: Location,
    /// The partition time zone of the lake (the workspace time zone of the daemon config).
    pub tz: Tz,
    /// Commit manifests already read (they are immutable once written).
    pub committed: Arc<CommittedFiles>,
    /// Where click-detail download archives live (`{data_dir}/downloads` in `serve`).
    pub downloads_dir: std::path::PathBuf,
    /// The daemon's metrics (a private set for reports opened by the CLI).
    pub metrics: Arc<crate::telemetry::Metrics>,
}

impl Reports {
    pub fn new(catalog: Arc<Catalog>, lake: Location, tz: Tz) -> Reports {
        Reports {
            catalog,
            lake,
            tz,
            committed: Arc::new(CommittedFiles::default()),
            downloads_dir: std::path::PathBuf::from("downloads"),
            metrics: Arc::new(crate::telemetry::Metrics::new()),
        }
    }

    /// The same, with download archives under `dir`.
    pub fn with_downloads_dir(mut self, dir: std::path::PathBuf) -> Reports {
        self.downloads_dir = dir;
        self
    }

    /// Reports over a pipeline runtime's catalog, lake and time zone.
    pub fn from_runtime(runtime: &crate::pipeline::Runtime) -> Reports {
        Reports {
            metrics: Arc::clone(&runtime.metrics),
            ..Reports::new(
                Arc::clone(&runtime.catalog),
                runtime.lake.clone(),
                runtime.tz,
            )
        }
    }

    /// Today in the report time zone.
    pub fn today(&self) -> chrono::NaiveDate {
        chrono::Utc::now().with_timezone(&self.tz).date_naive()
    }
}
