//! Versions and the `_current` pointer.
//!
//! A refresh writes every table of a new version under `datasets/{name}/version={ts}/` with
//! create-only puts, then publishes it by writing the next pointer object
//! `datasets/{name}/_current/{seq:012}.json`, also create-only. Readers take the pointer with
//! the highest sequence number and read only the files it lists. Writing one new small object
//! is atomic on every store (a local rename, a single S3 PUT), and the create-only put means two
//! publishers can never both claim one sequence number, so readers see either the old version
//! or the whole new one — never a half-written version. A refresh that dies before its pointer
//! leaves an unreferenced `version=` folder, which retention deletes later.

use std::collections::BTreeSet;

use futures::TryStreamExt;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use super::DatasetError;
use crate::storage::Location;

/// Folder of a dataset's pointer objects.
pub const POINTER_DIR: &str = "_current";

/// The folder of a dataset under the lake root.
pub fn dataset_root(dataset: &str) -> String {
    format!("datasets/{dataset}")
}

/// A new version's folder name value: the UTC time, sortable, without `:`.
pub fn version_name(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y%m%dT%H%M%S%.6fZ").to_string()
}

/// One table file of a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableFile {
    /// `behavior`, `behavior_type`, `channel`, `object_attribute`.
    pub table: String,
    /// Relative to the lake root.
    pub path: String,
    pub rows: u64,
}

/// The content of a pointer object: what readers need to read the published version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pointer {
    pub dataset: String,
    pub seq: i64,
    pub version: String,
    /// The version's folder, relative to the lake root.
    pub path: String,
    pub job: String,
    pub run_id: Option<i64>,
    pub published_at: String,
    pub tables: Vec<TableFile>,
}

fn storage(path: &impl ToString) -> impl FnOnce(object_store::Error) -> DatasetError + '_ {
    move |source| DatasetError::Storage {
        path: path.to_string(),
        source,
    }
}

async fn list(lake: &Location, relative: &str) -> Result<Vec<String>, DatasetError> {
    let prefix = lake.child(relative);
    let listed: Vec<_> = lake
        .store
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(storage(&prefix))?;
    let mut out: Vec<String> = listed
        .iter()
        .filter_map(|meta| lake.relative(&meta.location))
        .collect();
    out.sort();
    Ok(out)
}

/// The sequence numbers of a dataset's pointer objects, ascending.
pub async fn pointer_seqs(lake: &Location, dataset: &str) -> Result<Vec<i64>, DatasetError> {
    let dir = format!("{}/{POINTER_DIR}", dataset_root(dataset));
    let mut seqs: Vec<i64> = list(lake, &dir)
        .await?
        .iter()
        .filter_map(|p| p.rsplit('/').next()?.strip_suffix(".json")?.parse().ok())
        .collect();
    seqs.sort_unstable();
    Ok(seqs)
}

fn pointer_path(dataset: &str, seq: i64) -> String {
    format!("{}/{POINTER_DIR}/{seq:012}.json", dataset_root(dataset))
}

/// Reads one pointer object.
pub async fn read_pointer(
    lake: &Location,
    dataset: &str,
    seq: i64,
) -> Result<Pointer, DatasetError> {
    let relative = pointer_path(dataset, seq);
    let path = lake.child(&relative);
    let bytes = match lake.store.get(&path).await {
        Ok(got) => got.bytes().await,
        Err(e) => Err(e),
    }
    .map_err(storage(&path))?;
    serde_json::from_slice(&bytes).map_err(|e| DatasetError::Pointer {
        path: relative,
        reason: e.to_string(),
    })
}

/// The published version readers should read: the pointer with the highest sequence number.
pub async fn current(lake: &Location, dataset: &str) -> Result<Option<Pointer>, DatasetError> {
    match pointer_seqs(lake, dataset).await?.last() {
        Some(seq) => read_pointer(lake, dataset, *seq).await.map(Some),
        None => Ok(None),
    }
}

/// Stores `bytes` at `relative` only if nothing is there; `false` if something was.
async fn put_create(lake: &Location, relative: &str, bytes: Vec<u8>) -> Result<bool, DatasetError> {
    let path = lake.child(relative);
    let opts = PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    match lake
        .store
        .put_opts(&path, PutPayload::from(bytes), opts)
        .await
    {
        Ok(_) => Ok(true),
        Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
        Err(source) => Err(DatasetError::Storage {
            path: path.to_string(),
            source,
        }),
    }
}

/// Writes one table file of a new version (create-only: a version folder is never reused).
pub async fn write_table(
    lake: &Location,
    version_dir: &str,
    table: &str,
    bytes: Vec<u8>,
    rows: u64,
) -> Result<TableFile, DatasetError> {
    let path = format!("{version_dir}/{table}/part-0000.parquet");
    if !put_create(lake, &path, bytes).await? {
        return Err(DatasetError::Conflict(format!(
            "{path} already exists; another refresh is writing the same version"
        )));
    }
    Ok(TableFile {
        table: table.to_string(),
        path,
        rows,
    })
}

/// Publishes `pointer` as the next sequence number; returns it. Fails, leaving the current
/// version current, if another publisher took the number first.
pub async fn publish(lake: &Location, mut pointer: Pointer) -> Result<Pointer, DatasetError> {
    let seq = pointer_seqs(lake, &pointer.dataset)
        .await?
        .last()
        .map_or(1, |s| s + 1);
    pointer.seq = seq;
    let relative = pointer_path(&pointer.dataset, seq);
    let bytes = serde_json::to_vec_pretty(&pointer).map_err(|e| DatasetError::Pointer {
        path: relative.clone(),
        reason: e.to_string(),
    })?;
    if !put_create(lake, &relative, bytes).await? {
        return Err(DatasetError::Conflict(format!(
            "pointer {relative} was written by another publisher; this version is not published"
        )));
    }
    Ok(pointer)
}

/// What retention removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Retained {
    /// Sequence numbers whose version and pointer were deleted.
    pub dropped: Vec<i64>,
    /// Unpublished `version=` folders (from failed or killed refreshes) deleted.
    pub orphans: Vec<String>,
}

/// Keeps the newest `keep` published versions and deletes the rest: the files of older and of
/// unpublished `version=` folders first, then the older pointers (a crash in between leaves an
/// old pointer to deleted files, never the current one). Call only while holding the job's
/// lock, after a publish, so no folder being written is taken for an orphan.
pub async fn retain(lake: &Location, dataset: &str, keep: usize) -> Result<Retained, DatasetError> {
    let seqs = pointer_seqs(lake, dataset).await?;
    let split = seqs.len().saturating_sub(keep.max(1));
    let (old, kept) = seqs.split_at(split);
    let mut kept_versions = BTreeSet::new();
    for seq in kept {
        kept_versions.insert(read_pointer(lake, dataset, *seq).await?.path);
    }
    let root = dataset_root(dataset);
    let mut out = Retained::default();
    let mut doomed = BTreeSet::new();
    for path in list(lake, &root).await? {
        let Some(rest) = path.strip_prefix(&format!("{root}/")) else {
            continue;
        };
        let Some(version) = rest.split('/').next().filter(|v| v.starts_with("version=")) else {
            continue;
        };
        let dir = format!("{root}/{version}");
        if kept_versions.contains(&dir) {
            continue;
        }
        let target = lake.child(&path);
        lake.store.delete(&target).await.map_err(storage(&target))?;
        doomed.insert(dir);
    }
    for seq in old {
        let pointer = read_pointer(lake, dataset, *seq).await?;
        doomed.remove(&pointer.path);
        let target = lake.child(&pointer_path(dataset, *seq));
        lake.store.delete(&target).await.map_err(storage(&target))?;
        out.dropped.push(*seq);
    }
    out.orphans = doomed.into_iter().collect();
    Ok(out)
}
