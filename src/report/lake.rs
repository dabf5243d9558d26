//! Reading committed `ad_events` rows for reports.
//!
//! Only files a batch's commit manifest (`{dataset}/_commits/{batch}.json`) lists are read: a
//! file written by a batch that crashed before its manifest is not data yet (its replay writes
//! the same name and then the manifest). Partitions are pruned by listing only the `dt=` days of
//! the range. Manifests are immutable once written, so each is read once per process.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use polars::prelude::*;
use serde::Deserialize;

use super::{DateRange, ReportError, polars};
use crate::pipeline::sink::parquet::manifest_path;
use crate::storage::{Location, StorageUrl};

/// The dataset the monitoring reports read.
pub const AD_EVENTS: &str = "ad_events";

#[derive(Deserialize)]
struct Manifest {
    files: Vec<ManifestFile>,
}

#[derive(Deserialize)]
struct ManifestFile {
    path: String,
}

/// The files one commit manifest lists.
type FileSet = Arc<HashSet<String>>;

/// Commit manifests read so far, by (dataset, batch).
#[derive(Debug, Default)]
pub struct CommittedFiles {
    manifests: Mutex<HashMap<(String, i64), FileSet>>,
}

/// The batch number of a data file named `part-{batch:012}-{n:04}.parquet`.
fn batch_of(relative: &str) -> Option<i64> {
    let name = relative.rsplit('/').next()?;
    name.strip_prefix("part-")?.split('-').next()?.parse().ok()
}

impl CommittedFiles {
    /// Committed data files of `dataset` in the `dt=` partitions of `range`, relative to the
    /// lake root, in path order.
    pub async fn list(
        &self,
        lake: &Location,
        dataset: &str,
        range: DateRange,
    ) -> Result<Vec<String>, ReportError> {
        let prefixes: Vec<String> = range
            .iter()
            .map(|day| format!("{dataset}/dt={day}"))
            .collect();
        self.list_prefixes(lake, dataset, &prefixes).await
    }

    /// Every committed data file of `dataset` (all partitions), relative to the lake root.
    pub async fn list_all(
        &self,
        lake: &Location,
        dataset: &str,
    ) -> Result<Vec<String>, ReportError> {
        self.list_prefixes(lake, dataset, &[dataset.to_string()])
            .await
    }

    async fn list_prefixes(
        &self,
        lake: &Location,
        dataset: &str,
        prefixes: &[String],
    ) -> Result<Vec<String>, ReportError> {
        let mut candidates = Vec::new();
        for prefix in prefixes {
            let prefix = lake.child(prefix);
            let listed: Vec<_> =
                lake.store
                    .list(Some(&prefix))
                    .try_collect()
                    .await
                    .map_err(|source| ReportError::Storage {
                        path: prefix.to_string(),
                        source,
                    })?;
            for meta in listed {
                if let Some(relative) = lake.relative(&meta.location)
                    && relative.ends_with(".parquet")
                    && let Some(batch) = batch_of(&relative)
                {
                    candidates.push((batch, relative));
                }
            }
        }
        self.committed(lake, dataset, candidates).await
    }

    /// The candidates (batch, relative path) a commit manifest lists, sorted.
    async fn committed(
        &self,
        lake: &Location,
        dataset: &str,
        candidates: Vec<(i64, String)>,
    ) -> Result<Vec<String>, ReportError> {
        let mut out = Vec::with_capacity(candidates.len());
        for (batch, relative) in candidates {
            if let Some(files) = self.manifest(lake, dataset, batch).await?
                && files.contains(&relative)
            {
                out.push(relative);
            }
        }
        out.sort();
        Ok(out)
    }

    /// The files batch `batch` committed, or `None` when it has no manifest (not committed).
    async fn manifest(
        &self,
        lake: &Location,
        dataset: &str,
        batch: i64,
    ) -> Result<Option<Arc<HashSet<String>>>, ReportError> {
        let key = (dataset.to_string(), batch);
        if let Some(hit) = self
            .manifests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(Some(Arc::clone(hit)));
        }
        let relative = manifest_path(dataset, batch);
        let path = lake.child(&relative);
        let bytes = match lake.store.get(&path).await {
            Ok(got) => got.bytes().await,
            Err(e) => Err(e),
        };
        let bytes = match bytes {
            Ok(b) => b,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(source) => {
                return Err(ReportError::Storage {
                    path: path.to_string(),
                    source,
                });
            }
        };
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| ReportError::Manifest {
                path: relative,
                reason: e.to_string(),
            })?;
        let files: Arc<HashSet<String>> =
            Arc::new(manifest.files.into_iter().map(|f| f.path).collect());
        self.manifests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, Arc::clone(&files));
        Ok(Some(files))
    }
}

/// A column a report reads, and the type it is read as when a file does not have it.
#[derive(Debug, Clone, Copy)]
pub struct Wanted {
    pub name: &'static str,
    pub dtype: fn() -> DataType,
}

impl Wanted {
    pub const fn text(name: &'static str) -> Wanted {
        Wanted {
            name,
            dtype: || DataType::String,
        }
    }
}

/// Selects `wanted` from a frame with `schema`: a column the file lacks (an optional, later
/// added column such as `geo_province`) is read as null.
fn select_wanted(lf: LazyFrame, schema: &Schema, wanted: &[Wanted]) -> LazyFrame {
    let exprs: Vec<Expr> = wanted
        .iter()
        .map(|w| {
            if schema.contains(w.name) {
                col(w.name)
            } else {
                lit(NULL).cast((w.dtype)()).alias(w.name)
            }
        })
        .collect();
    lf.select(exprs)
}

/// A lazy frame of `wanted` over the given committed files. Local lakes are scanned in place
/// (one scan per distinct file schema); remote lakes are fetched and read in memory.
pub async fn frame(
    lake: &Location,
    files: &[String],
    wanted: &[Wanted],
) -> Result<Option<LazyFrame>, ReportError> {
    if files.is_empty() {
        return Ok(None);
    }
    match &lake.url {
        StorageUrl::File { root } => {
            let root = root.clone();
            let files = files.to_vec();
            let wanted = wanted.to_vec();
            tokio::task::spawn_blocking(move || scan_local(&root, &files, &wanted))
                .await
                .map_err(|e| ReportError::Task(e.to_string()))?
                .map(Some)
        }
        _ => {
            let mut frames = Vec::with_capacity(files.len());
            for relative in files {
                let path = lake.child(relative);
                let bytes = match lake.store.get(&path).await {
                    Ok(got) => got.bytes().await,
                    Err(e) => Err(e),
                }
                .map_err(|source| ReportError::Storage {
                    path: path.to_string(),
                    source,
                })?;
                let df = ParquetReader::new(std::io::Cursor::new(bytes))
                    .finish()
                    .map_err(polars("read parquet"))?;
                let schema = df.schema().clone();
                frames.push(select_wanted(df.lazy(), &schema, wanted));
            }
            concat(frames, UnionArgs::default())
                .map(Some)
                .map_err(polars("concat"))
        }
    }
}

fn scan_args() -> ScanArgsParquet {
    ScanArgsParquet {
        hive_options: HiveOptions::new_disabled(),
        glob: false,
        ..Default::default()
    }
}

fn scan_local(
    root: &std::path::Path,
    files: &[String],
    wanted: &[Wanted],
) -> Result<LazyFrame, ReportError> {
    // Files of one schema are scanned together; schemas differ when the dataset gained columns.
    let mut groups: BTreeMap<Vec<String>, (Arc<Schema>, Vec<PlRefPath>)> = BTreeMap::new();
    for relative in files {
        let path: PathBuf = root.join(relative);
        let path = PlRefPath::try_from_pathbuf(path).map_err(polars("path"))?;
        let schema = LazyFrame::scan_parquet(path.clone(), scan_args())
            .and_then(|mut lf| lf.collect_schema())
            .map_err(polars("parquet schema"))?;
        let names: Vec<String> = schema.iter_names().map(|n| n.to_string()).collect();
        groups
            .entry(names)
            .or_insert_with(|| (schema, Vec::new()))
            .1
            .push(path);
    }
    let mut frames = Vec::with_capacity(groups.len());
    for (_, (schema, paths)) in groups {
        let lf = LazyFrame::scan_parquet_files(paths.into_iter().collect(), scan_args())
            .map_err(polars("scan parquet"))?;
        frames.push(select_wanted(lf, &schema, wanted));
    }
    concat(frames, UnionArgs::default()).map_err(polars("concat"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_numbers_come_from_part_names() {
        assert_eq!(
            batch_of("ad_events/dt=2026-01-01/hour=03/part-000000000042-0001.parquet"),
            Some(42)
        );
        assert_eq!(
            batch_of("ad_events/dt=2026-01-01/hour=03/other.parquet"),
            None
        );
    }
}
