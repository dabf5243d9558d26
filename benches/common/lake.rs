//! Synthetic `ad_events` lakes for the benches over committed Parquet (`report_60d`,
//! `tags_90d`): a deterministic random source, events spread evenly over hourly batches, and
//! each hour written as one `dt=/hour=` Parquet file (zstd) with its commit manifest, as a
//! pipeline batch commits them. What the events hold is each bench's own.

use std::fmt::Display;
use std::path::Path;

use polars::prelude::*;

/// xorshift64: the same sequence on every run, no dependency.
pub struct XorShift(u64);

impl XorShift {
    pub fn new() -> XorShift {
        XorShift(0x9E37_79B9_7F4A_7C15)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// `events` spread evenly over `hours` hourly batches: `(hour index, events in it)`, the last
/// batches short (or absent) when `events` does not divide.
pub fn hourly_batches(events: usize, hours: usize) -> impl Iterator<Item = (usize, usize)> {
    let per_hour = events.div_ceil(hours);
    (0..hours)
        .map(move |h| (h, per_hour.min(events.saturating_sub(h * per_hour))))
        .take_while(|&(_, n)| n > 0)
}

/// `event_id` values `{h}-{i}` for the `n` events of hour `h`.
pub fn event_ids(h: usize, n: usize) -> Column {
    Column::new(
        "event_id".into(),
        (0..n).map(|i| format!("{h}-{i}")).collect::<Vec<_>>(),
    )
}

/// A UTC timestamp column from microseconds since the epoch.
pub fn utc_micros(name: &str, micros: Vec<i64>) -> Column {
    Column::new(name.into(), micros)
        .cast(&DataType::Datetime(
            TimeUnit::Microseconds,
            Some(TimeZone::UTC),
        ))
        .unwrap()
}

/// The seven device ID columns in the `ad_event` order, the last four all null.
pub fn device_id_columns(
    idfa: Vec<Option<String>>,
    imei_md5: Vec<Option<String>>,
    oaid: Vec<Option<String>>,
) -> Vec<Column> {
    let n = idfa.len();
    let none = || vec![None::<&str>; n];
    vec![
        Column::new("idfa".into(), idfa),
        Column::new("imei_md5".into(), imei_md5),
        Column::new("oaid".into(), oaid),
        Column::new("android_id_md5".into(), none()),
        Column::new("mac_md5".into(), none()),
        Column::new("caid".into(), none()),
        Column::new("aaid".into(), none()),
    ]
}

/// Writes one hour of events as `ad_events/dt={day}/hour={hour}/part-{seq}-0000.parquet` and
/// its commit manifest `ad_events/_commits/{seq}.json`.
pub fn write_hour(
    lake: &Path,
    day: impl Display,
    hour: impl Display,
    seq: usize,
    df: &mut DataFrame,
) {
    let relative = format!("ad_events/dt={day}/hour={hour}/part-{seq:012}-0000.parquet");
    let path = lake.join(&relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = std::fs::File::create(&path).unwrap();
    ParquetWriter::new(file)
        .with_compression(ParquetCompression::Zstd(None))
        .finish(df)
        .unwrap();
    let manifest = serde_json::json!({"files": [{"path": relative, "rows": df.height()}]});
    let manifest_path = lake.join(format!("ad_events/_commits/{seq:012}.json"));
    std::fs::create_dir_all(manifest_path.parent().unwrap()).unwrap();
    std::fs::write(manifest_path, manifest.to_string()).unwrap();
}
