//! Partitions of the hits by user, so that a refresh larger than memory groups one partition
//! at a time.
//!
//! Grouping by user holds, per hit, the (user, value) pairs of the distinct and top-N tags and
//! their sorts (≈ 400 bytes per hit in the lookback, measured at 20 M hits). One streaming
//! pass over the lake writes the prepared hits ([`super::build::prepare`]) into partitions that
//! are **ranges of users** (bounds from a sample of the first hits); each partition holds every
//! hit of its users, so the per-user table is the concatenation of the partitions grouped one
//! by one — already in `user_id` order when each is sorted. Peak memory follows the partition
//! size (`partition_rows`), not the lake.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use polars::prelude::*;
use polars_core::query_result::QueryResult;

use super::super::{DatasetError, polars};
use super::build::USER;

/// The partition column while writing.
const PART: &str = "__part";
/// Users sampled per partition to place the range bounds.
const SAMPLE_PER_PART: usize = 20_000;

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

/// The lower bounds of partitions 1.. (partition 0 starts at the smallest user): quantiles of
/// the users of the first hits. Fewer than `parts - 1` when the sample has fewer users.
pub fn bounds(hits: &LazyFrame, parts: usize) -> Result<Vec<String>, DatasetError> {
    if parts <= 1 {
        return Ok(Vec::new());
    }
    let sample = hits
        .clone()
        .select([col(USER)])
        .slice(0, (parts * SAMPLE_PER_PART) as IdxSize)
        .unique(None, UniqueKeepStrategy::Any)
        .sort([USER], SortMultipleOptions::default());
    let df = match sample
        .collect_with_engine(Engine::Streaming)
        .map_err(polars("sample users"))?
    {
        QueryResult::Single(df) => df,
        QueryResult::Multiple(_) => {
            return Err(DatasetError::Task(
                "the sample returned several frames".into(),
            ));
        }
    };
    let users = df
        .column(USER)
        .and_then(|c| c.str().cloned())
        .map_err(polars("sample users"))?;
    let n = users.len();
    let mut out: Vec<String> = Vec::with_capacity(parts - 1);
    let first = users.get(0);
    for i in 1..parts {
        if let Some(user) = users.get(i * n / parts)
            && first.is_some_and(|first| first < user)
            && out.last().is_none_or(|last| last.as_str() < user)
        {
            out.push(user.to_string());
        }
    }
    Ok(out)
}

/// The partition of each user: how many bounds are at or below it.
fn part_of(bounds: &Arc<Vec<String>>) -> Expr {
    let bounds = Arc::clone(bounds);
    col(USER).map(
        move |c: Column| {
            let users = c.str()?;
            let parts: UInt32Chunked = users
                .iter()
                .map(|u| u.map(|u| bounds.partition_point(|b| b.as_str() <= u) as u32))
                .collect();
            Ok(parts.with_name(PART.into()).into_column())
        },
        |_, field| Ok(Field::new(field.name().clone(), DataType::UInt32)),
    )
}

/// One partition written: its files and rows.
pub struct Part {
    pub files: Vec<PathBuf>,
    pub rows: u64,
}

/// Writes `hits` into one folder per range of users under `dir` (in parallel, LZ4 Parquet);
/// returns the non-empty partitions in user order.
pub fn write(hits: LazyFrame, bounds: &[String], dir: &Path) -> Result<Vec<Part>, DatasetError> {
    let bounds = Arc::new(bounds.to_vec());
    let parts = bounds.len() + 1;
    let destination = SinkDestination::Partitioned {
        base_path: PlRefPath::try_from_pathbuf(dir.to_path_buf()).map_err(polars("path"))?,
        file_path_provider: None,
        partition_strategy: PartitionStrategy::Keyed {
            keys: vec![part_of(&bounds).alias(PART)],
            include_keys: false,
            keys_pre_grouped: false,
        },
        max_rows_per_file: IdxSize::MAX,
        approximate_bytes_per_file: u64::MAX,
    };
    let format = FileWriteFormat::Parquet(Arc::new(ParquetWriteOptions {
        compression: ParquetCompression::Lz4Raw,
        ..ParquetWriteOptions::default()
    }));
    let args = UnifiedSinkArgs {
        mkdir: true,
        maintain_order: false,
        ..UnifiedSinkArgs::default()
    };
    hits.sink(destination, format, args)
        .and_then(|lf| lf.collect_with_engine(Engine::Streaming))
        .map_err(polars("partition hits by user"))?;
    let mut out = Vec::new();
    for i in 0..parts {
        let folder = dir.join(format!("{PART}={i}"));
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&folder) {
            Ok(entries) => entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(DatasetError::Task(format!(
                    "listing {}: {e}",
                    folder.display()
                )));
            }
        };
        files.sort();
        let mut rows = 0u64;
        for file in &files {
            let f = std::fs::File::open(file)
                .map_err(|e| DatasetError::Task(format!("opening {}: {e}", file.display())))?;
            rows += ParquetReader::new(f)
                .num_rows()
                .map_err(polars("partition row count"))? as u64;
        }
        if rows > 0 {
            out.push(Part { files, rows });
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
    fn partitions_are_ranges_of_users_in_order_and_no_hit_is_lost() {
        let dir = tempfile_dir();
        // Users in hash-like order, each with several hits.
        let users: Vec<Option<String>> = (0..10_000u64)
            .map(|i| {
                Some(format!(
                    "{:016x}",
                    (i % 997).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                ))
            })
            .collect();
        let values: Vec<i64> = (0..10_000).collect();
        let df = df!(USER => users, "v" => values).unwrap();
        let bounds = bounds(&df.clone().lazy(), 7).unwrap();
        assert_eq!(bounds.len(), 6);
        assert!(bounds.windows(2).all(|w| w[0] < w[1]), "{bounds:?}");
        let parts = write(df.lazy(), &bounds, dir.path()).unwrap();
        assert_eq!(parts.len(), 7);
        let mut total = 0;
        let mut sum = 0i64;
        let mut last_max: Option<String> = None;
        for part in &parts {
            let paths = part
                .files
                .iter()
                .map(|p| PlRefPath::try_from_pathbuf(p.clone()).unwrap())
                .collect();
            let df = LazyFrame::scan_parquet_files(paths, ScanArgsParquet::default())
                .unwrap()
                .collect()
                .unwrap();
            assert_eq!(df.height() as u64, part.rows);
            // Between 1/14 and 2/7 of the hits each: the sample placed the bounds.
            assert!((700..3000).contains(&df.height()), "{}", df.height());
            total += df.height();
            sum += df.column("v").unwrap().i64().unwrap().sum().unwrap();
            let users = df.column(USER).unwrap().str().unwrap();
            let min = users.iter().flatten().min().unwrap();
            let max = users.iter().flatten().max().unwrap();
            if let Some(previous) = &last_max {
                assert!(previous.as_str() < min, "partitions overlap");
            }
            last_max = Some(max.to_string());
        }
        assert_eq!(total, 10_000);
        assert_eq!(sum, (0..10_000i64).sum::<i64>());
    }

    #[test]
    fn a_sample_with_few_users_gives_fewer_partitions() {
        let df = df!(USER => ["a", "a", "b", "b", "c"]).unwrap();
        let bounds = bounds(&df.lazy(), 10).unwrap();
        assert!(bounds.len() <= 2, "{bounds:?}");
        assert!(bounds.windows(2).all(|w| w[0] < w[1]));
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
