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

/// The hits read, and how many files they came from.
pub struct Hits {
    pub frame: Option<LazyFrame>,
    pub files: usize,
}

/// One file's schema, and its rows when they had to be fetched (remote lakes).
struct FileSchema {
    relative: String,
    schema: Arc<Schema>,
    fetched: Option<DataFrame>,
}

/// Reads the committed hits of `dataset` in `days`, checking `needed` columns.
pub async fn read(
    lake: &Location,
    dataset: &str,
    days: (NaiveDate, NaiveDate),
    needed: &[Needed],
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
        });
    }
    let schemas = match &lake.url {
        StorageUrl::File { root } => {
            let (root, list) = (root.clone(), files.clone());
            tokio::task::spawn_blocking(move || local_schemas(&root, &list))
                .await
                .map_err(|e| DatasetError::Task(e.to_string()))??
        }
        _ => {
            let mut out = Vec::with_capacity(files.len());
            for relative in &files {
                let path = lake.child(relative);
                let bytes = match lake.store.get(&path).await {
                    Ok(got) => got.bytes().await,
                    Err(e) => Err(e),
                }
                .map_err(|source| DatasetError::Storage {
                    path: path.to_string(),
                    source,
                })?;
                let df = ParquetReader::new(std::io::Cursor::new(bytes))
                    .finish()
                    .map_err(polars("read parquet"))?;
                out.push(FileSchema {
                    relative: relative.clone(),
                    schema: df.schema().clone(),
                    fetched: Some(df),
                });
            }
            out
        }
    };
    let types = check_columns(dataset, &schemas, needed)?;
    let n = schemas.len();
    let root = match &lake.url {
        StorageUrl::File { root } => Some(root.clone()),
        _ => None,
    };
    Ok(Hits {
        frame: Some(frame(root, schemas, needed, &types)?),
        files: n,
    })
}

fn scan_args() -> ScanArgsParquet {
    ScanArgsParquet {
        hive_options: HiveOptions::new_disabled(),
        glob: false,
        ..Default::default()
    }
}

fn local_schemas(
    root: &std::path::Path,
    files: &[String],
) -> Result<Vec<FileSchema>, DatasetError> {
    files
        .iter()
        .map(|relative| {
            // The footer only: a refresh may read thousands of hourly files.
            let file = std::fs::File::open(root.join(relative))
                .map_err(|e| DatasetError::Task(format!("opening {relative}: {e}")))?;
            let arrow = ParquetReader::new(file)
                .schema()
                .map_err(polars("parquet schema"))?;
            Ok(FileSchema {
                relative: relative.clone(),
                schema: Arc::new(Schema::from_arrow_schema(&arrow)),
                fetched: None,
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
    root: Option<PathBuf>,
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
        match (file.fetched, &root) {
            (Some(df), _) => frames.push(df.lazy().select(select(&file.schema))),
            (None, Some(root)) => {
                let path = PlRefPath::try_from_pathbuf(root.join(&file.relative))
                    .map_err(polars("path"))?;
                let names: Vec<String> = file.schema.iter_names().map(|n| n.to_string()).collect();
                groups
                    .entry(names)
                    .or_insert_with(|| (Arc::clone(&file.schema), Vec::new()))
                    .1
                    .push(path);
            }
            (None, None) => {
                return Err(DatasetError::Task(format!(
                    "{} was neither fetched nor local",
                    file.relative
                )));
            }
        }
    }
    for (_, (schema, paths)) in groups {
        let lf = LazyFrame::scan_parquet_files(paths.into_iter().collect(), scan_args())
            .map_err(polars("scan parquet"))?;
        frames.push(lf.select(select(&schema)));
    }
    concat(frames, UnionArgs::default()).map_err(polars("concat"))
}
