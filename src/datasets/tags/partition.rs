//! Partitions of the hits by user, so that a refresh larger than memory groups one partition
//! at a time.
//!
//! Grouping by user holds, per hit, the (user, value) pairs of the distinct and top-N tags and
//! their sorts (≈ 400 bytes per hit in the lookback, measured at 20 M hits). One streaming
//! pass over the lake writes the prepared hits ([`super::build::prepare`]) into `parts`
//! Parquet files by a hash of the user; each file then holds every hit of its users, so the
//! per-user table is the concatenation of the files grouped one by one. Peak memory follows
//! the partition size (`partition_rows`), not the lake.

use std::fs::File;
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use polars::prelude::*;
use polars_core::query_result::QueryResult;

use super::super::{DatasetError, polars};
use super::build::USER;

/// Rows buffered per partition before they are written as one row group.
const FLUSH_ROWS: usize = 64 * 1024;

/// How many partitions `rows` hits need with at most `partition_rows` each (1 to 256).
pub fn count(rows: u64, partition_rows: u64) -> usize {
    let parts = rows.div_ceil(partition_rows.max(1));
    parts.clamp(1, 256) as usize
}

/// A scratch directory, removed when dropped.
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// Creates `path` afresh: what a killed run left there is removed first (the job's lock is
    /// held, so no other run uses it).
    pub fn create(path: PathBuf) -> Result<Scratch, DatasetError> {
        let fail = |e: std::io::Error| {
            DatasetError::Task(format!("scratch directory {}: {e}", path.display()))
        };
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(fail(e)),
        }
        std::fs::create_dir_all(&path).map_err(fail)?;
        Ok(Scratch { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove a scratch directory");
        }
    }
}

/// One partition being written.
struct Part {
    path: PathBuf,
    pending: Vec<DataFrame>,
    pending_rows: usize,
    writer: Option<polars::io::parquet::write::BatchedWriter<File>>,
    rows: u64,
}

impl Part {
    fn flush(&mut self) -> PolarsResult<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut frames = std::mem::take(&mut self.pending).into_iter();
        let Some(mut df) = frames.next() else {
            return Ok(());
        };
        for next in frames {
            df.vstack_mut_owned(next)?;
        }
        self.pending_rows = 0;
        if self.writer.is_none() {
            let file = File::create(&self.path)?;
            self.writer = Some(
                ParquetWriter::new(file)
                    .with_compression(ParquetCompression::Lz4Raw)
                    .batched(df.schema())?,
            );
        }
        if let Some(writer) = &mut self.writer {
            writer.write_batch(&df)?;
        }
        Ok(())
    }
}

struct Writers {
    parts: Vec<Part>,
    hasher: foldhash::fast::FixedState,
}

impl Writers {
    fn push(&mut self, df: DataFrame) -> PolarsResult<()> {
        if df.height() == 0 {
            return Ok(());
        }
        let n = self.parts.len() as u64;
        let mut rows: Vec<Vec<IdxSize>> = vec![Vec::new(); self.parts.len()];
        let users = df.column(USER)?.str()?;
        for (i, user) in users.iter().enumerate() {
            let part = user.map_or(0, |u| self.hasher.hash_one(u) % n) as usize;
            rows[part].push(i as IdxSize);
        }
        for (part, take) in self.parts.iter_mut().zip(rows) {
            if take.is_empty() {
                continue;
            }
            let taken = df.take(&IdxCa::from_vec(PlSmallStr::EMPTY, take))?;
            part.pending_rows += taken.height();
            part.rows += taken.height() as u64;
            part.pending.push(taken);
            if part.pending_rows >= FLUSH_ROWS {
                part.flush()?;
            }
        }
        Ok(())
    }
}

/// Writes `hits` into `parts` files under `dir` by user; returns each non-empty file with its
/// row count.
pub fn write(
    hits: LazyFrame,
    parts: usize,
    dir: &Path,
) -> Result<Vec<(PathBuf, u64)>, DatasetError> {
    let writers = Arc::new(Mutex::new(Writers {
        parts: (0..parts)
            .map(|i| Part {
                path: dir.join(format!("part-{i:03}.parquet")),
                pending: Vec::new(),
                pending_rows: 0,
                writer: None,
                rows: 0,
            })
            .collect(),
        hasher: foldhash::fast::FixedState::with_seed(0x6261_636b_666c_6f77),
    }));
    let sink = Arc::clone(&writers);
    let callback = PlanCallback::new(move |df: DataFrame| {
        let mut writers = sink
            .lock()
            .map_err(|_| polars_err!(ComputeError: "a partition writer panicked"))?;
        writers.push(df)?;
        // `false`: keep the batches coming.
        Ok(false)
    });
    let result = hits
        .sink_batches(callback, false, None)
        .and_then(|lf| lf.collect_with_engine(Engine::Streaming));
    match result {
        Ok(QueryResult::Single(_) | QueryResult::Multiple(_)) => {}
        Err(e) => return Err(polars("partition hits by user")(e)),
    }
    let mut writers = writers
        .lock()
        .map_err(|_| DatasetError::Task("a partition writer panicked".into()))?;
    let mut out = Vec::new();
    for part in &mut writers.parts {
        part.flush().map_err(polars("write a partition"))?;
        if let Some(writer) = &part.writer {
            writer.finish().map_err(polars("finish a partition"))?;
            out.push((part.path.clone(), part.rows));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn partition_count_follows_the_rows_and_is_bounded() {
        assert_eq!(count(0, 1000), 1);
        assert_eq!(count(1000, 1000), 1);
        assert_eq!(count(1001, 1000), 2);
        assert_eq!(count(10_000_000, 0), 256);
        assert_eq!(count(100_000_000, 4_000_000), 25);
    }

    #[test]
    fn every_hit_of_a_user_lands_in_one_partition_and_none_is_lost() {
        let dir = tempfile_dir();
        let users: Vec<Option<String>> = (0..10_000)
            .map(|i| Some(format!("user-{}", i % 997)))
            .collect();
        let values: Vec<i64> = (0..10_000).collect();
        let df = df!(USER => users, "v" => values).unwrap();
        let files = write(df.lazy(), 7, dir.path()).unwrap();
        assert!(files.len() > 1 && files.len() <= 7);
        let mut seen_users = std::collections::HashMap::new();
        let mut total = 0;
        let mut sum = 0i64;
        for (i, (path, rows)) in files.iter().enumerate() {
            let part = LazyFrame::scan_parquet(
                PlRefPath::try_from_pathbuf(path.clone()).unwrap(),
                ScanArgsParquet::default(),
            )
            .unwrap()
            .collect()
            .unwrap();
            assert_eq!(part.height() as u64, *rows);
            total += part.height();
            sum += part.column("v").unwrap().i64().unwrap().sum().unwrap();
            for user in part.column(USER).unwrap().str().unwrap().iter().flatten() {
                let first = *seen_users.entry(user.to_string()).or_insert(i);
                assert_eq!(first, i, "{user} is in two partitions");
            }
        }
        assert_eq!(total, 10_000);
        assert_eq!(sum, (0..10_000i64).sum::<i64>());
        assert_eq!(seen_users.len(), 997);
    }

    fn tempfile_dir() -> Scratch {
        let path = std::env::temp_dir().join(format!(
            "backflow-partition-test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        Scratch::create(path).unwrap()
    }
}
