//! The hits a tag refresh reads: the committed files of the source in the `dt=` partitions the
//! longest window needs, with the columns the tags use checked against every file's schema.
//!
//! A column a tag uses must be in the newest file read: missing from every file, it is a
//! definition error; missing from the newest files only, it was removed from the source, and
//! computing on would silently give empty tags. Either fails the run with the tag and column
//! named. A column missing only from older files was added later: those rows read it as null.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::NaiveDate;
use object_store::ObjectStoreExt;
use polars::prelude::*;

use super::super::{DatasetError, polars};
use crate::report::DateRange;
use crate::report::lake::CommittedFiles;
use crate::storage::{Location, StorageUrl};

/// A column the refresh reads: its name, its type when no file has it (`None`: required, no
/// default), and the tags that use it (empty for the user and time columns).
#[derive(Debug, Clone)]
pub struct Needed {
    pub name: String,
    pub default: Option<DataType>,
    /// (tag, where it is defined).
    pub used_by: Vec<(String, String)>,
}

/// The hits read, how many files they came from, and how many rows those files hold.
pub struct Hits {
    pub frame: Option<LazyFrame>,
    pub files: usize,
    pub rows: u64,
}

/// One file's schema and row count, and where it is read from: in the lake (local lakes) or
/// downloaded to the scratch directory (remote lakes).
struct FileSchema {
    relative: String,
    local: PathBuf,
    schema: Arc<Schema>,
    rows: u64,
}

/// Reads the committed hits of `dataset` in `days`, checking `needed` columns. Files of a
/// remote lake are downloaded into `scratch` one at a time (never held in memory).
pub async fn read(
    lake: &Location,
    dataset: &str,
    days: (NaiveDate, NaiveDate),
    needed: &[Needed],
    scratch: &std::path::Path,
) -> Result<Hits, DatasetError> {
    let range = DateRange {
        from: days.0,
        to: days.1,
    };
    let files = CommittedFiles::default().list(lake, dataset, range).await?;
    if files.is_empty() {
        return Ok(Hits {
            frame: None,
            files: 0,
            rows: 0,
        });
    }
    let local: Vec<(String, PathBuf)> = match &lake.url {
        StorageUrl::File { root } => files
            .iter()
            .map(|relative| (relative.clone(), root.join(relative)))
            .collect(),
        _ => download(lake, &files, scratch).await?,
    };
    let schemas = tokio::task::spawn_blocking(move || local_schemas(&local))
        .await
        .map_err(|e| DatasetError::Task(e.to_string()))??;
    let types = check_columns(dataset, &schemas, needed)?;
    let n = schemas.len();
    let rows = schemas.iter().map(|f| f.rows).sum();
    Ok(Hits {
        frame: Some(frame(schemas, needed, &types)?),
        files: n,
        rows,
    })
}

/// Downloads the files of a remote lake into `scratch/source/`, one at a time.
async fn download(
    lake: &Location,
    files: &[String],
    scratch: &std::path::Path,
) -> Result<Vec<(String, PathBuf)>, DatasetError> {
    let dir = scratch.join("source");
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| DatasetError::Task(format!("creating {}: {e}", dir.display())))?;
    let mut out = Vec::with_capacity(files.len());
    for (i, relative) in files.iter().enumerate() {
        let path = lake.child(relative);
        let bytes = match lake.store.get(&path).await {
            Ok(got) => got.bytes().await,
            Err(e) => Err(e),
        }
        .map_err(|source| DatasetError::Storage {
            path: path.to_string(),
            source,
        })?;
        let local = dir.join(format!("{i:06}.parquet"));
        tokio::fs::write(&local, &bytes)
            .await
            .map_err(|e| DatasetError::Task(format!("writing {}: {e}", local.display())))?;
        out.push((relative.clone(), local));
    }
    Ok(out)
}

fn scan_args() -> ScanArgsParquet {
    ScanArgsParquet {
        hive_options: HiveOptions::new_disabled(),
        glob: false,
        ..Default::default()
    }
}

fn local_schemas(files: &[(String, PathBuf)]) -> Result<Vec<FileSchema>, DatasetError> {
    files
        .iter()
        .map(|(relative, local)| {
            // The footer only: a refresh may read thousands of hourly files.
            let file = std::fs::File::open(local)
                .map_err(|e| DatasetError::Task(format!("opening {relative}: {e}")))?;
            let mut reader = ParquetReader::new(file);
            let arrow = reader.schema().map_err(polars("parquet schema"))?;
            let rows = reader.num_rows().map_err(polars("parquet row count"))?;
            Ok(FileSchema {
                relative: relative.clone(),
                local: local.clone(),
                schema: Arc::new(Schema::from_arrow_schema(&arrow)),
                rows: rows as u64,
            })
        })
        .collect()
}

/// The type of every needed column (from the files that have it), or the first problem.
fn check_columns(
    dataset: &str,
    files: &[FileSchema],
    needed: &[Needed],
) -> Result<BTreeMap<String, DataType>, DatasetError> {
    let mut types = BTreeMap::new();
    let mut problems = Vec::new();
    let Some(newest) = files.last() else {
        return Ok(types);
    };
    for column in needed {
        let having: Vec<&FileSchema> = files
            .iter()
            .filter(|f| f.schema.contains(&column.name))
            .collect();
        let users = || {
            column
                .used_by
                .iter()
                .map(|(tag, at)| format!("`{tag}` ({at})"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match having.first() {
            Some(first) => {
                if let Some(dtype) = first.schema.get(&column.name) {
                    types.insert(column.name.clone(), dtype.clone());
                }
                if !newest.schema.contains(&column.name) && !column.used_by.is_empty() {
                    problems.push(format!(
                        "column `{}` used by tag {} was removed from `{dataset}`: the newest committed file {} lacks it ({} of {} files in the window have it)",
                        column.name,
                        users(),
                        newest.relative,
                        having.len(),
                        files.len()
                    ));
                }
            }
            None => match &column.default {
                Some(dtype) if column.used_by.is_empty() => {
                    types.insert(column.name.clone(), dtype.clone());
                }
                _ if column.used_by.is_empty() => problems.push(format!(
                    "required column `{}` is missing from every committed file of `{dataset}` in the window",
                    column.name
                )),
                _ => problems.push(format!(
                    "tag {} uses column `{}`, which no committed file of `{dataset}` in the window has",
                    users(),
                    column.name
                )),
            },
        }
    }
    if problems.is_empty() {
        Ok(types)
    } else {
        Err(DatasetError::Columns(problems.join("; ")))
    }
}

/// One frame of the needed columns over all files: files of one schema scanned together, a
/// column a file lacks read as null.
fn frame(
    files: Vec<FileSchema>,
    needed: &[Needed],
    types: &BTreeMap<String, DataType>,
) -> Result<LazyFrame, DatasetError> {
    let select = |schema: &Schema| -> Vec<Expr> {
        needed
            .iter()
            .filter_map(|c| {
                let dtype = types.get(&c.name)?;
                Some(if schema.contains(&c.name) {
                    col(c.name.as_str()).cast(dtype.clone())
                } else {
                    lit(NULL).cast(dtype.clone()).alias(c.name.as_str())
                })
            })
            .collect()
    };
    let mut frames = Vec::new();
    let mut groups: BTreeMap<Vec<String>, (Arc<Schema>, Vec<PlRefPath>)> = BTreeMap::new();
    for file in files {
        let path = PlRefPath::try_from_pathbuf(file.local).map_err(polars("path"))?;
        let names: Vec<String> = file.schema.iter_names().map(|n| n.to_string()).collect();
        groups
            .entry(names)
            .or_insert_with(|| (Arc::clone(&file.schema), Vec::new()))
            .1
            .push(path);
    }
    for (_, (schema, paths)) in groups {
        let lf = LazyFrame::scan_parquet_files(paths.into_iter().collect(), scan_args())
            .map_err(polars("scan parquet"))?;
        frames.push(lf.select(select(&schema)));
    }
    concat(frames, UnionArgs::default()).map_err(polars("concat"))
}
