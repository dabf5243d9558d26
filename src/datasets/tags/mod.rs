//! The user tag dataset (用户标签数据集, spec/datasets-admin.md §1.3): one row per user of the
//! committed monitoring-link hits, tags declared in the job's YAML (`pipelines/tags.yaml`).
//!
//! A version has two tables: `user_tags` (the wide table: `user_id`, `id_type`, the extra ID
//! columns, one column per tag) and `columns` (one row per column: its role, tag type, alias,
//! description, category and definition — the dataset's field mapping, §1.1.6).
//!
//! Windows end at the run's period end ([`build::window_end`]): the last local midnight, or
//! the start of the current hour for hourly refreshes, so a refresh at 10:05 counts hits up to
//! 10:00 and the next one picks up from there.

pub mod build;
pub mod partition;
pub mod source;

use std::path::PathBuf;

use chrono::{DateTime, Days, Utc};
use chrono_tz::Tz;
use polars::prelude::*;
use polars_core::query_result::QueryResult;

use super::{Built, DatasetError, Measures, ROW_GROUP_ROWS, polars, validate};
use crate::config::model::PublishPolicy;
use crate::config::model_tags::{TagKind, USER_ID_FIELDS, UserTagsBuild};
use crate::pipeline::sink::parquet::write_parquet;
use crate::storage::Location;
use source::Needed;

/// Name of the main table.
pub const MAIN_TABLE: &str = "user_tags";
/// Name of the column description table.
pub const COLUMNS_TABLE: &str = "columns";

/// The columns a refresh reads, with the tags that use each.
pub fn needed(build: &UserTagsBuild) -> Vec<Needed> {
    let mut out: Vec<Needed> = vec![Needed {
        name: "event_time".into(),
        default: None,
        used_by: Vec::new(),
    }];
    let text = Some(DataType::String);
    let optional = USER_ID_FIELDS
        .iter()
        .map(|(f, _)| ((*f).to_string(), text.clone()))
        .chain(build.id_columns.iter().map(|c| (c.clone(), text.clone())))
        .chain(
            ["is_bot", "is_test"]
                .iter()
                .filter(|_| !build.include_flagged)
                .map(|c| ((*c).to_string(), Some(DataType::Boolean))),
        );
    for (name, default) in optional {
        if !out.iter().any(|n| n.name == name) {
            out.push(Needed {
                name,
                default,
                used_by: Vec::new(),
            });
        }
    }
    for tag in &build.tags {
        for column in tag.kind.columns() {
            let user = (tag.name.clone(), tag.defined_at.clone());
            match out.iter_mut().find(|n| n.name == column) {
                Some(n) => n.used_by.push(user),
                None => out.push(Needed {
                    name: column,
                    default: None,
                    used_by: vec![user],
                }),
            }
        }
    }
    out
}

/// Builds a version's tables as of `now`; returns them with the window end used and the
/// number of partitions the hits were grouped in. `scratch` is a local directory for
/// downloaded source files and partitions (removed afterwards).
pub(super) async fn build_tables(
    lake: &Location,
    build: &UserTagsBuild,
    policy: &PublishPolicy,
    now: DateTime<Utc>,
    tz: Tz,
    scratch: std::path::PathBuf,
) -> Result<(Built, DateTime<Utc>, usize), DatasetError> {
    let end = build::window_end(now, build.window_end, tz);
    let start = build::window_start(end, build.lookback(), tz);
    // Partitions are local days of the pipeline's zone; a day either side covers any zone.
    let days = (
        start.with_timezone(&tz).date_naive() - Days::new(1),
        end.with_timezone(&tz).date_naive() + Days::new(1),
    );
    let needed = needed(build);
    let started = std::time::Instant::now();
    let scratch = partition::Scratch::create(scratch)?;
    let hits = source::read(lake, &build.source, days, &needed, scratch.path()).await?;
    tracing::debug!(
        dataset = %build.output, files = hits.files, rows = hits.rows,
        seconds = started.elapsed().as_secs_f64(), "source files listed and checked"
    );
    let parts = partition::count(hits.rows, build.partition_rows);
    let (build, policy) = (build.clone(), policy.clone());
    let built = tokio::task::spawn_blocking(move || {
        let grouping = Grouping {
            parts,
            scratch: &scratch,
            keep: &needed,
        };
        compute(hits.frame, &build, &policy, end, tz, grouping)
    })
    .await
    .map_err(|e| DatasetError::Task(e.to_string()))??;
    Ok((built, end, parts))
}

/// The main table without rows (no committed source file: column types are not known from
/// the source, so a sum is `float64`).
fn empty_output(build: &UserTagsBuild) -> PolarsResult<DataFrame> {
    let text = DataType::String;
    let mut columns: Vec<Column> = ["user_id", "id_type"]
        .iter()
        .map(|c| (*c).to_string())
        .chain(build.id_columns.iter().cloned())
        .map(|c| Column::new_empty(c.into(), &text))
        .collect();
    for tag in &build.tags {
        let dtype = match &tag.kind {
            TagKind::Count(_) => DataType::Int64,
            TagKind::Sum { .. } | TagKind::Ratio { .. } => DataType::Float64,
            TagKind::LastSeen(_) => DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC)),
            _ => text.clone(),
        };
        columns.push(Column::new_empty(tag.name.as_str().into(), &dtype));
    }
    DataFrame::new_infer_height(columns)
}

/// How the hits are grouped by user: in one pass, or split into `parts` partitions written
/// under `scratch` (only the `keep` columns, the user and the time).
struct Grouping<'a> {
    parts: usize,
    scratch: &'a partition::Scratch,
    keep: &'a [Needed],
}

fn collect(lf: LazyFrame) -> Result<DataFrame, DatasetError> {
    match lf
        .collect_with_engine(Engine::Streaming)
        .map_err(polars("group hits by user"))?
    {
        QueryResult::Single(df) => Ok(df),
        QueryResult::Multiple(_) => Err(DatasetError::Task(
            "the grouping returned several frames".into(),
        )),
    }
}

/// The per-user table before the row-wise tags.
enum Grouped {
    /// In one pass: the whole table in memory.
    Whole(DataFrame),
    /// In partitions: each partition's rows sorted by user in a scratch file, the files in
    /// user order, and the hits they count.
    Parts { files: Vec<PathBuf>, rows_in: u64 },
}

/// Hits per user of a grouped table.
fn rows_in(grouped: &DataFrame) -> u64 {
    grouped
        .column(build::ROWS)
        .ok()
        .and_then(|c| c.i64().ok().and_then(|c| c.sum()))
        .unwrap_or(0)
        .max(0) as u64
}

fn scan(files: &[PathBuf]) -> Result<LazyFrame, DatasetError> {
    let paths = files
        .iter()
        .map(|p| PlRefPath::try_from_pathbuf(p.clone()))
        .collect::<PolarsResult<_>>()
        .map_err(polars("path"))?;
    LazyFrame::scan_parquet_files(paths, ScanArgsParquet::default()).map_err(polars("scan"))
}

fn grouped(
    hits: LazyFrame,
    build: &UserTagsBuild,
    end: DateTime<Utc>,
    tz: Tz,
    grouping: &Grouping<'_>,
) -> Result<Grouped, DatasetError> {
    if grouping.parts <= 1 {
        let plan = build::plan(hits, build, end, tz).map_err(polars("plan"))?;
        return collect(plan).map(Grouped::Whole);
    }
    let started = std::time::Instant::now();
    let mut columns = vec![col(build::USER), col(build::PRIO), col(build::TIME)];
    columns.extend(
        grouping
            .keep
            .iter()
            .filter(|c| {
                c.name == "event_time"
                    || !c.used_by.is_empty()
                    || build.id_columns.contains(&c.name)
            })
            .map(|c| col(c.name.as_str())),
    );
    let prepared = build::prepare(hits, build, end, tz).select(columns);
    let bounds = partition::bounds(&prepared, grouping.parts)?;
    let dir = grouping.scratch.path().join("partitions");
    let parts = partition::write(prepared.clone(), &bounds, &dir)?;
    tracing::info!(
        dataset = %build.output, partitions = parts.len(),
        rows = parts.iter().map(|p| p.rows).sum::<u64>(),
        seconds = started.elapsed().as_secs_f64(), "hits partitioned by user"
    );
    if parts.is_empty() {
        // No hit counts: the grouping of none, for its columns.
        let plan = build::group(prepared.limit(0), build, end, tz).map_err(polars("plan"))?;
        return collect(plan).map(Grouped::Whole);
    }
    // Partitions are ranges of users in order: each sorted, they concatenate sorted.
    let dir = grouping.scratch.path().join("grouped");
    std::fs::create_dir_all(&dir)
        .map_err(|e| DatasetError::Task(format!("creating {}: {e}", dir.display())))?;
    let mut files = Vec::with_capacity(parts.len());
    let mut total = 0;
    for (i, part) in parts.iter().enumerate() {
        let started = std::time::Instant::now();
        let grouped = build::group(scan(&part.files)?, build, end, tz)
            .map_err(polars("plan"))?
            .sort([build::USER], SortMultipleOptions::default());
        let mut df = collect(grouped)?;
        total += rows_in(&df);
        let path = dir.join(format!("part-{i:03}.parquet"));
        let file = std::fs::File::create(&path)
            .map_err(|e| DatasetError::Task(format!("creating {}: {e}", path.display())))?;
        ParquetWriter::new(file)
            .with_compression(ParquetCompression::Lz4Raw)
            .finish(&mut df)
            .map_err(polars("write a grouped partition"))?;
        tracing::debug!(
            dataset = %build.output, partition = i, rows = part.rows, users = df.height(),
            seconds = started.elapsed().as_secs_f64(), "partition grouped by user"
        );
        files.push(path);
    }
    Ok(Grouped::Parts {
        files,
        rows_in: total,
    })
}

fn compute(
    hits: Option<LazyFrame>,
    build: &UserTagsBuild,
    policy: &PublishPolicy,
    end: DateTime<Utc>,
    tz: Tz,
    grouping: Grouping<'_>,
) -> Result<Built, DatasetError> {
    let Some(hits) = hits else {
        let mut main = empty_output(build).map_err(polars("empty frame"))?;
        validate(&main, policy, &["user_id"])?;
        return encode(&mut main, build, 0);
    };
    let started = std::time::Instant::now();
    let grouped = grouped(hits, build, end, tz, &grouping)?;
    tracing::debug!(dataset = %build.output, seconds = started.elapsed().as_secs_f64(), "hits grouped by user");
    let started = std::time::Instant::now();
    let built = match grouped {
        Grouped::Whole(df) => {
            let rows_in = rows_in(&df);
            let mut main =
                build::finish(df, build, end, false, None).map_err(polars("row-wise tags"))?;
            validate(&main, policy, &["user_id"])?;
            encode(&mut main, build, rows_in)
        }
        Grouped::Parts { files, rows_in } => {
            finish_parts(&files, build, policy, end, rows_in, grouping.scratch)
        }
    };
    tracing::debug!(dataset = %build.output, seconds = started.elapsed().as_secs_f64(), "row-wise tags, checks, encoding");
    built
}

/// Finishes grouped partitions one at a time into one Parquet file in the scratch directory
/// (row groups in user order), checking the whole table as it goes: memory holds one
/// partition, never the table. RFM means are taken over all partitions first.
fn finish_parts(
    files: &[PathBuf],
    build: &UserTagsBuild,
    policy: &PublishPolicy,
    end: DateTime<Utc>,
    rows_in: u64,
    scratch: &partition::Scratch,
) -> Result<Built, DatasetError> {
    let means = build::rfm_means(scan(files)?, build, end).map_err(polars("RFM means"))?;
    let out = scratch.path().join(format!("{MAIN_TABLE}.parquet"));
    let mut writer = None;
    let mut measures = Measures::default();
    let mut rows_out = 0u64;
    for path in files {
        let file = std::fs::File::open(path)
            .map_err(|e| DatasetError::Task(format!("opening {}: {e}", path.display())))?;
        let grouped = ParquetReader::new(file)
            .finish()
            .map_err(polars("read a grouped partition"))?;
        let part = build::finish(grouped, build, end, true, Some(&means))
            .map_err(polars("row-wise tags"))?;
        measures.add(&part, policy, &["user_id"])?;
        rows_out += part.height() as u64;
        let writer = match &mut writer {
            Some(writer) => writer,
            None => {
                let file = std::fs::File::create(&out)
                    .map_err(|e| DatasetError::Task(format!("creating {}: {e}", out.display())))?;
                let batched = ParquetWriter::new(file)
                    .with_compression(ParquetCompression::Zstd(None))
                    .with_statistics(StatisticsOptions::full())
                    .batched(part.schema())
                    .map_err(polars("parquet encode"))?;
                writer.insert(batched)
            }
        };
        for offset in (0..part.height()).step_by(ROW_GROUP_ROWS) {
            let mut group = part.slice(offset as i64, ROW_GROUP_ROWS);
            group.rechunk_mut();
            writer
                .write_batch(&group)
                .map_err(polars("parquet encode"))?;
        }
    }
    measures.judge(policy, &["user_id"])?;
    let Some(writer) = writer else {
        return Err(DatasetError::Task("no grouped partition to finish".into()));
    };
    writer.finish().map_err(polars("parquet encode"))?;
    let main = std::fs::read(&out)
        .map_err(|e| DatasetError::Task(format!("reading {}: {e}", out.display())))?;
    let mut columns = columns_table(build).map_err(polars("columns table"))?;
    let columns_rows = columns.height() as u64;
    Ok(Built {
        rows_in,
        rows_out,
        tables: vec![
            (MAIN_TABLE, main, rows_out),
            (
                COLUMNS_TABLE,
                write_parquet(&mut columns, ROW_GROUP_ROWS)?,
                columns_rows,
            ),
        ],
    })
}

/// The version's tables as Parquet.
fn encode(
    main: &mut DataFrame,
    build: &UserTagsBuild,
    rows_in: u64,
) -> Result<Built, DatasetError> {
    let mut columns = columns_table(build).map_err(polars("columns table"))?;
    let rows_out = main.height() as u64;
    let mut tables = Vec::with_capacity(2);
    for (name, df) in [(MAIN_TABLE, main), (COLUMNS_TABLE, &mut columns)] {
        let rows = df.height() as u64;
        tables.push((name, write_parquet(df, ROW_GROUP_ROWS)?, rows));
    }
    Ok(Built {
        rows_in,
        rows_out,
        tables,
    })
}

/// How a tag is defined, in one line (`count 7d where endpoint = 'click'`).
fn definition(kind: &TagKind) -> String {
    let scope = |s: &crate::config::model_tags::Scope| match &s.filter {
        Some(f) => format!("{} where {}", s.window, f.source),
        None => s.window.to_string(),
    };
    match kind {
        TagKind::Count(s) => format!("count {}", scope(s)),
        TagKind::LastSeen(s) => format!("last_seen {}", scope(s)),
        TagKind::Sum { column, scope: s } => format!("sum({column}) {}", scope(s)),
        TagKind::Distinct {
            column,
            scope: s,
            max_values,
            ..
        } => format!("distinct({column}) {} max {max_values}", scope(s)),
        TagKind::TopN {
            column,
            n,
            scope: s,
            ..
        } => format!("top {n} of {column} {}", scope(s)),
        TagKind::Ratio {
            numerator,
            denominator,
            min_denominator,
        } => format!("{numerator} / {denominator} when {denominator} >= {min_denominator}"),
        TagKind::Rfm(r) => format!(
            "rfm r={} f={} m={}",
            r.recency.tag, r.frequency.tag, r.monetary.tag
        ),
        TagKind::Aipl(rules) => rules
            .iter()
            .map(|(label, e)| format!("{label}: {}", e.source))
            .collect::<Vec<_>>()
            .join("; "),
    }
}

/// The `columns` table: one row per column of the main table.
fn columns_table(build: &UserTagsBuild) -> PolarsResult<DataFrame> {
    let mut rows: Vec<[Option<String>; 9]> = vec![
        [
            Some("user_id".into()),
            Some("key".into()),
            None,
            None,
            None,
            Some("用户标识".into()),
            Some("The first device ID of the user's hits (idfa, imei_md5, oaid, android_id_md5, mac_md5, caid, aaid).".into()),
            None,
            None,
        ],
        [
            Some("id_type".into()),
            Some("id_type".into()),
            None,
            None,
            None,
            Some("用户标识类型".into()),
            Some("ID type of user_id: idfa, imei (MD5), oaid, android_id (MD5), mac (MD5), caid, aaid.".into()),
            None,
            None,
        ],
    ];
    for id in &build.id_columns {
        let md5 = id.ends_with("_md5");
        rows.push([
            Some(id.clone()),
            Some("id".into()),
            None,
            Some(id.trim_end_matches("_md5").into()),
            Some(if md5 { "md5" } else { "plain" }.into()),
            None,
            Some("The largest value of this ID among the user's hits in the lookback.".into()),
            None,
            None,
        ]);
    }
    for tag in &build.tags {
        rows.push([
            Some(tag.name.clone()),
            Some("tag".into()),
            Some(tag.kind.tag_type().as_str().into()),
            None,
            None,
            tag.alias.clone(),
            tag.description.clone(),
            tag.category.clone(),
            Some(definition(&tag.kind)),
        ]);
    }
    let names = [
        "column_name",
        "role",
        "tag_type",
        "id_type",
        "encryption",
        "alias",
        "description",
        "category",
        "definition",
    ];
    let columns: Vec<Column> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let values: Vec<Option<String>> = rows.iter().map(|r| r[i].clone()).collect();
            Column::new((*name).into(), values)
        })
        .collect();
    DataFrame::new_infer_height(columns)
}
