//! The `parquet` sink: Hive partitions `dt=YYYY-MM-DD[/hour=HH]` (workspace time zone) under
//! `{lake}/{dataset}/`, zstd, `TIMESTAMP(MICROS, UTC)`, deterministic names
//! `part-{batch:012}-{n:04}.parquet`, create-only puts.
//!
//! Encoding is pure: the same batch frame always gives the same files with the same names, which
//! is what lets a replayed batch find its earlier files already in place instead of writing rows
//! twice.

use std::collections::HashMap;

use chrono::DateTime;
use chrono_tz::Tz;
use object_store::{PutMode, PutOptions, PutPayload};
use polars::prelude::*;

use crate::config::model::{Granularity, ParquetSink};
use crate::pipeline::PipelineError;
use crate::pipeline::frame::{Quarantine, is_lineage};
use crate::storage::Location;

/// One encoded output file, not yet stored.
#[derive(Debug, Clone)]
pub struct EncodedFile {
    /// Path relative to the lake root, e.g. `behavior_events/dt=2026-11-24/hour=10/part-….parquet`.
    pub path: String,
    pub rows: u64,
    pub bytes: Vec<u8>,
}

/// The deterministic file name of part `n` of batch `seq`.
pub fn part_name(seq: i64, n: usize) -> String {
    format!("part-{seq:012}-{n:04}.parquet")
}

/// Path of a batch's commit manifest, relative to the lake root.
pub fn manifest_path(dataset: &str, seq: i64) -> String {
    format!("{dataset}/_commits/{seq:012}.json")
}

fn partition_key(micros: i64, granularity: Granularity, tz: Tz) -> Option<String> {
    let local = DateTime::from_timestamp_micros(micros)?.with_timezone(&tz);
    Some(match granularity {
        Granularity::Day => format!("dt={}", local.format("%Y-%m-%d")),
        Granularity::Hour => format!(
            "dt={}/hour={}",
            local.format("%Y-%m-%d"),
            local.format("%H")
        ),
    })
}

/// Splits a batch frame into partitions and encodes each as one Parquet file. Rows whose
/// partition timestamp is null go to quarantine.
pub fn encode(
    df: DataFrame,
    sink: &ParquetSink,
    tz: Tz,
    seq: i64,
    quarantine: &mut Quarantine,
) -> Result<Vec<EncodedFile>, PipelineError> {
    let column = &sink.partition_column;
    let polars = |stage: &'static str| move |source| PipelineError::Polars { stage, source };
    if df.height() == 0 {
        // Nothing to write (e.g. an HTTP batch that only moves past empty windows).
        return Ok(Vec::new());
    }
    let Ok(ts) = df.column(column) else {
        return Err(PipelineError::Sink(format!(
            "sink.partition_by.column `{column}` is not in the output; columns are: {}",
            df.get_column_names()
                .iter()
                .map(|c| c.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    };
    let DataType::Datetime(unit, _) = ts.dtype() else {
        return Err(PipelineError::Sink(format!(
            "sink.partition_by.column `{column}` is {}, not a timestamp; add a `cast` or `validate` step",
            ts.dtype()
        )));
    };
    let to_micros = match unit {
        TimeUnit::Nanoseconds => |v: i64| v / 1000,
        TimeUnit::Microseconds => |v: i64| v,
        TimeUnit::Milliseconds => |v: i64| v.saturating_mul(1000),
    };
    let physical = ts.as_materialized_series().to_physical_repr().into_owned();
    let values = physical.i64().map_err(polars("partition"))?;
    // Offsets change at most on quarter-hour boundaries, so keys are cached per 15 minutes.
    let mut cache: HashMap<i64, Option<String>> = HashMap::new();
    let mut reasons: Vec<Option<String>> = Vec::with_capacity(df.height());
    let keys: StringChunked = values
        .iter()
        .map(|v| {
            let key = v.map(to_micros).and_then(|micros| {
                cache
                    .entry(micros.div_euclid(900_000_000))
                    .or_insert_with(|| partition_key(micros, sink.granularity, tz))
                    .clone()
            });
            reasons.push(
                key.is_none()
                    .then(|| format!("{column}: no partition time (null or out of range)")),
            );
            key
        })
        .collect();
    const KEY: &str = "__backflow_partition";
    let mut df = df;
    df.with_column(keys.with_name(KEY.into()).into_series().into_column())
        .map_err(polars("partition"))?;
    let df = quarantine
        .split_off(df, reasons)
        .map_err(polars("partition"))?;
    let lineage: Vec<PlSmallStr> = df
        .get_column_names()
        .into_iter()
        .filter(|c| is_lineage(c.as_str()))
        .cloned()
        .collect();
    let df = df.drop_many(lineage);
    let mut parts = df
        .partition_by_stable([KEY], true)
        .map_err(polars("partition"))?;
    let key_of = |part: &DataFrame| -> String {
        part.column(KEY)
            .ok()
            .and_then(|c| c.str().ok()?.get(0).map(str::to_string))
            .unwrap_or_default()
    };
    parts.sort_by_cached_key(key_of);
    let mut files = Vec::with_capacity(parts.len());
    for (n, part) in parts.into_iter().enumerate() {
        let key = key_of(&part);
        let mut part = part.drop(KEY).map_err(polars("partition"))?;
        let bytes = write_parquet(&mut part, sink.row_group_rows.get())?;
        files.push(EncodedFile {
            path: format!("{}/{key}/{}", sink.dataset, part_name(seq, n)),
            rows: part.height() as u64,
            bytes,
        });
    }
    Ok(files)
}

/// Encodes a batch's quarantined rows as one file under
/// `quarantine/pipeline={name}/dt={planned date}/`.
pub fn encode_quarantine(
    quarantine: &Quarantine,
    pipeline: &str,
    seq: i64,
    planned_at_micros: i64,
    tz: Tz,
) -> Result<Option<EncodedFile>, PipelineError> {
    if quarantine.is_empty() {
        return Ok(None);
    }
    let polars = |source| PipelineError::Polars {
        stage: "quarantine",
        source,
    };
    let mut df = quarantine.to_frame(planned_at_micros).map_err(polars)?;
    let key = partition_key(planned_at_micros, Granularity::Day, tz)
        .unwrap_or_else(|| "dt=unknown".into());
    let bytes = write_parquet(&mut df, 1_000_000)?;
    Ok(Some(EncodedFile {
        path: format!("quarantine/pipeline={pipeline}/{key}/{}", part_name(seq, 0)),
        rows: quarantine.len() as u64,
        bytes,
    }))
}

pub(crate) fn write_parquet(
    df: &mut DataFrame,
    row_group_rows: usize,
) -> Result<Vec<u8>, PipelineError> {
    let mut buf = Vec::new();
    ParquetWriter::new(&mut buf)
        .with_compression(ParquetCompression::Zstd(None))
        .with_statistics(StatisticsOptions::full())
        .with_row_group_size(Some(row_group_rows))
        .finish(df)
        .map_err(|source| PipelineError::Polars {
            stage: "parquet encode",
            source,
        })?;
    Ok(buf)
}

/// Whether a create-only put wrote the object or found it there already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    Written,
    AlreadyPresent,
}

/// Stores `bytes` at `relative` under the lake only if nothing is there yet.
pub async fn put_create_only(
    lake: &Location,
    relative: &str,
    bytes: Vec<u8>,
) -> Result<Put, PipelineError> {
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
        Ok(_) => Ok(Put::Written),
        Err(object_store::Error::AlreadyExists { .. }) => Ok(Put::AlreadyPresent),
        Err(source) => Err(PipelineError::Storage {
            path: path.to_string(),
            source,
        }),
    }
}
