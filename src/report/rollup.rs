//! Report rollups: what a committed `ad_events` batch adds to the per-hour and per-day hit
//! counts and distinct-device sketches, and to the per-day distinct-ID sketches, and how the
//! reports read them back.
//!
//! * **Written** by the batch commit itself ([`delta`] over the batch's output frame, merged in
//!   the catalog transaction that commits the batch): exactly-once with the Parquet commit, so a
//!   replayed batch never counts twice, and reports lag ingestion by nothing more than the
//!   batch.
//! * **Keys**: workspace, day and hour of `received_at` in the lake time zone (the `dt=`/`hour=`
//!   of the row), activity, Tencent feedback link (feedback hits only) and kind (impression, or
//!   click = `click` + `feedback`). Day cells are stored besides hour cells, so a 60-day report
//!   by date merges 60 × activities sketches, not 1 440 ×.
//! * **Uniques** are the DESIGN.md device key, hashed (SHA-256, first 64 bits) into a
//!   [`Sketch`]: exact up to 2 048 devices per merged cell, HyperLogLog (0.81 % standard error)
//!   beyond, and then flagged `approximate` in the report.
//! * **Rebuilt** from the committed Parquet by [`Reports::rebuild_rollups`] for days that landed
//!   before rollups existed (the catalog marks them), or any range on request.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate};
use chrono_tz::Tz;
use polars::prelude::*;
use serde::Serialize;

use super::ad_monitoring::{Cells, Metrics};
use super::dashboard::ID_COLUMNS;
use super::lake::{self, Wanted};
use super::sketch::{Sketch, hash_parts};
use super::{DateRange, ReportError, Reports};
use crate::catalog::{HitKind, Replaced, RollupCell, RollupDelta, RollupKey, RollupRow};
use crate::pipeline::quota::DEVICE_KEY_FIELDS;

fn text(df: &DataFrame, name: &str) -> PolarsResult<Option<StringChunked>> {
    match df.column(name) {
        Ok(c) => Ok(Some(c.cast(&DataType::String)?.str()?.clone())),
        Err(_) => Ok(None),
    }
}

/// The device-key hash of a row (DESIGN.md: the first present device ID, named, else the
/// user's IP and user agent) — the same key the scan path and the quota's deduplicated clicks
/// use.
fn device_hash(
    ids: &[Option<StringChunked>],
    ip: Option<&StringChunked>,
    ua: Option<&StringChunked>,
    row: usize,
) -> u64 {
    for (field, column) in DEVICE_KEY_FIELDS.iter().zip(ids) {
        if let Some(value) = column
            .as_ref()
            .and_then(|c| c.get(row))
            .filter(|v| !v.is_empty())
        {
            return hash_parts(&[field.as_bytes(), b":", value.as_bytes()]);
        }
    }
    let ip = ip.and_then(|c| c.get(row)).unwrap_or("");
    let ua = ua.and_then(|c| c.get(row)).unwrap_or("");
    hash_parts(&[b"ip_ua:", ip.as_bytes(), b"\n", ua.as_bytes()])
}

/// Columns [`delta`] reads.
pub fn columns() -> Vec<Wanted> {
    let mut out = vec![
        Wanted::text("workspace"),
        Wanted::text("endpoint"),
        Wanted {
            name: "activity_id",
            dtype: || DataType::Int64,
        },
        Wanted {
            name: "received_at",
            dtype: || DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC)),
        },
        Wanted::text("link_id"),
        Wanted::text("user_ip"),
        Wanted::text("user_agent"),
    ];
    out.extend(DEVICE_KEY_FIELDS.iter().map(|f| Wanted::text(f)));
    out.extend(ID_COLUMNS.iter().map(|(_, c)| Wanted::text(c)));
    out.sort_by_key(|w| w.name);
    out.dedup_by_key(|w| w.name);
    out
}

type HourAcc = HashMap<(u32, u32, u8, i64, i64, HitKind), (u64, Vec<u64>)>;

/// What the rows of `df` (an `ad_events` frame: a batch's output, or a day read back) add to
/// the rollups. Rows without a workspace or `received_at` count for nothing (the sink
/// quarantines the latter); hit cells count `impression`, `click` and `feedback` rows with an
/// activity id, as the reports do.
pub fn delta(df: &DataFrame, tz: Tz) -> PolarsResult<RollupDelta> {
    let mut out = RollupDelta::default();
    let (Some(workspace), Ok(ts)) = (text(df, "workspace")?, df.column("received_at")) else {
        return Ok(out);
    };
    let DataType::Datetime(unit, _) = ts.dtype() else {
        return Ok(out);
    };
    let to_micros = match unit {
        TimeUnit::Nanoseconds => |v: i64| v / 1000,
        TimeUnit::Microseconds => |v: i64| v,
        TimeUnit::Milliseconds => |v: i64| v.saturating_mul(1000),
    };
    let physical = ts.as_materialized_series().to_physical_repr().into_owned();
    let micros = physical.i64()?;
    let endpoint = text(df, "endpoint")?;
    let activity = match df.column("activity_id") {
        Ok(c) => Some(c.cast(&DataType::Int64)?.i64()?.clone()),
        Err(_) => None,
    };
    let link = text(df, "link_id")?;
    let keys: Vec<Option<StringChunked>> = DEVICE_KEY_FIELDS
        .iter()
        .map(|f| text(df, f))
        .collect::<PolarsResult<_>>()?;
    let (ip, ua) = (text(df, "user_ip")?, text(df, "user_agent")?);
    let id_columns: Vec<(&str, Option<StringChunked>)> = ID_COLUMNS
        .iter()
        .map(|(name, c)| Ok((*name, text(df, c)?)))
        .collect::<PolarsResult<_>>()?;

    // Interned workspaces and days; (day, hour) cached per quarter hour (offsets change on
    // quarter-hour boundaries at most).
    let mut workspaces: Vec<String> = Vec::new();
    let mut workspace_ids: HashMap<&str, u32> = HashMap::new();
    let mut days: Vec<String> = Vec::new();
    let mut day_ids: HashMap<String, u32> = HashMap::new();
    let mut slots: HashMap<i64, Option<(u32, u8)>> = HashMap::new();
    let mut hours: HourAcc = HashMap::new();
    let mut ids: HashMap<(u32, u32, usize), Vec<u64>> = HashMap::new();
    for row in 0..df.height() {
        let (Some(ws), Some(t)) = (workspace.get(row), micros.get(row)) else {
            continue;
        };
        let t = to_micros(t);
        let slot = *slots.entry(t.div_euclid(900_000_000)).or_insert_with(|| {
            let local = DateTime::from_timestamp_micros(t)?.with_timezone(&tz);
            let day = local.format("%Y-%m-%d").to_string();
            let next = days.len() as u32;
            let id = *day_ids.entry(day.clone()).or_insert_with(|| {
                days.push(day);
                next
            });
            Some((id, local.format("%H").to_string().parse().unwrap_or(0)))
        });
        let Some((day, hour)) = slot else { continue };
        let next = workspaces.len() as u32;
        let ws_id = *workspace_ids.entry(ws).or_insert_with(|| {
            workspaces.push(ws.to_string());
            next
        });
        for (i, (_, column)) in id_columns.iter().enumerate() {
            if let Some(value) = column
                .as_ref()
                .and_then(|c| c.get(row))
                .filter(|v| !v.is_empty())
            {
                ids.entry((ws_id, day, i))
                    .or_default()
                    .push(hash_parts(&[value.as_bytes()]));
            }
        }
        let ep = endpoint.as_ref().and_then(|e| e.get(row));
        let kind = match ep {
            Some("impression") => HitKind::Impression,
            Some("click") | Some("feedback") => HitKind::Click,
            _ => continue,
        };
        let feedback = ep == Some("feedback");
        // Feedback hits belong to no activity (id 0); the Tencent report keys them by link.
        let Some(activity_id) = activity
            .as_ref()
            .and_then(|a| a.get(row))
            .or(feedback.then_some(0))
        else {
            continue;
        };
        let link_id = if feedback {
            link.as_ref()
                .and_then(|l| l.get(row))
                .and_then(|l| l.parse::<u64>().ok())
                .map_or(0, |l| l as i64)
        } else {
            0
        };
        let cell = hours
            .entry((ws_id, day, hour, activity_id, link_id, kind))
            .or_default();
        cell.0 += 1;
        cell.1
            .push(device_hash(&keys, ip.as_ref(), ua.as_ref(), row));
    }
    let name = |v: &[String], i: u32| v.get(i as usize).cloned().unwrap_or_default();
    for ((ws, day, hour, activity_id, link, kind), (hits, hashes)) in hours {
        let cell = RollupCell {
            hits,
            devices: Sketch::from_hashes(hashes),
        };
        let mut key = RollupKey {
            workspace: name(&workspaces, ws),
            day: name(&days, day),
            hour: None,
            activity_id,
            link,
            kind,
        };
        out.cells.entry(key.clone()).or_default().merge(&cell);
        key.hour = Some(hour);
        out.cells.insert(key, cell);
    }
    for ((ws, day, column), hashes) in ids {
        let id_type = id_columns.get(column).map(|c| c.0).unwrap_or_default();
        out.ids.insert(
            (name(&workspaces, ws), name(&days, day), id_type.to_string()),
            Sketch::from_hashes(hashes),
        );
    }
    Ok(out)
}

/// Hits and distinct devices of one cell, by kind, while cells are merged.
#[derive(Debug, Default, Clone)]
struct Acc {
    impressions: RollupCell,
    clicks: RollupCell,
}

impl Acc {
    fn add(&mut self, kind: HitKind, cell: &RollupCell) {
        match kind {
            HitKind::Impression => self.impressions.merge(cell),
            HitKind::Click => self.clicks.merge(cell),
        }
    }

    fn merge(&mut self, other: &Acc) {
        self.impressions.merge(&other.impressions);
        self.clicks.merge(&other.clicks);
    }

    fn metrics(&self) -> Metrics {
        let (unique_impressions, a) = self.impressions.devices.count();
        let (unique_clicks, b) = self.clicks.devices.count();
        Metrics {
            impressions: self.impressions.hits,
            clicks: self.clicks.hits,
            unique_impressions,
            unique_clicks,
            ctr: None,
            approximate: a || b,
        }
    }
}

/// Every level of a table from rollup rows: `place` gives a row's (dimension, bucket), or
/// `None` when the row is out of scope. Leaf cells are merged first, then dimensions, buckets
/// and the total from the leaves (a union of unions is the union).
pub fn cells(rows: &[RollupRow], place: impl Fn(&RollupRow) -> Option<(String, String)>) -> Cells {
    let mut leaves: HashMap<(String, String), Acc> = HashMap::new();
    for row in rows {
        if let Some(key) = place(row) {
            leaves.entry(key).or_default().add(row.key.kind, &row.cell);
        }
    }
    let mut dims: HashMap<String, Acc> = HashMap::new();
    let mut buckets: HashMap<String, Acc> = HashMap::new();
    for ((dim, bucket), acc) in &leaves {
        dims.entry(dim.clone()).or_default().merge(acc);
        buckets.entry(bucket.clone()).or_default().merge(acc);
    }
    let mut total = Acc::default();
    for acc in buckets.values() {
        total.merge(acc);
    }
    Cells {
        cells: leaves
            .iter()
            .map(|(k, a)| (k.clone(), a.metrics()))
            .collect(),
        dims: dims.iter().map(|(k, a)| (k.clone(), a.metrics())).collect(),
        buckets: buckets
            .iter()
            .map(|(k, a)| (k.clone(), a.metrics()))
            .collect(),
        total: total.metrics(),
    }
}

/// The bucket of a rollup row in a time form: its day, or its hour of day (`00`–`23`).
pub fn time_bucket(row: &RollupRow) -> String {
    match row.key.hour {
        Some(h) => format!("{h:02}"),
        None => row.key.day.clone(),
    }
}

/// What a rebuild did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RebuildSummary {
    pub days: Vec<NaiveDate>,
    pub files: u64,
    pub rows: u64,
    pub cells: u64,
    pub seconds: f64,
}

/// Attempts per day when batches keep committing into it while it is read.
const REBUILD_ATTEMPTS: usize = 5;

impl Reports {
    /// Recomputes the rollups of `range` (default: the days whose data landed before rollups
    /// existed) from the committed `ad_events` Parquet, for every workspace. Each day is
    /// replaced in one transaction, and only if no batch committed into it meanwhile (then it
    /// is read again), so a rebuild is idempotent and safe while the daemon runs.
    pub async fn rebuild_rollups(
        &self,
        range: Option<DateRange>,
    ) -> Result<RebuildSummary, ReportError> {
        let started = std::time::Instant::now();
        let days = match range {
            Some(r) => r.iter().collect(),
            None => self.catalog.incomplete_rollup_days(None, None)?,
        };
        let mut summary = RebuildSummary::default();
        for day in days {
            let mut done = false;
            for _ in 0..REBUILD_ATTEMPTS {
                let sources = self.catalog.rollup_sources(day, day)?;
                let Some((_, version, files)) = sources.into_iter().next() else {
                    break;
                };
                let (delta, rows) = self.read_day(&files).await?;
                let cells = delta.cells.len() as u64;
                if self.catalog.replace_rollup_day(day, version, &delta)? == Replaced::Done {
                    summary.files += files.len() as u64;
                    summary.rows += rows;
                    summary.cells += cells;
                    tracing::info!(%day, files = files.len(), rows, cells, "rollups rebuilt");
                    done = true;
                    break;
                }
            }
            if !done {
                return Err(ReportError::Task(format!(
                    "rollups of {day}: batches kept committing into the day while it was read \
                     ({REBUILD_ATTEMPTS} attempts); run the rebuild again"
                )));
            }
            summary.days.push(day);
        }
        summary.seconds = started.elapsed().as_secs_f64();
        Ok(summary)
    }

    async fn read_day(&self, files: &[String]) -> Result<(RollupDelta, u64), ReportError> {
        let Some(lf) = lake::frame(&self.lake, files, &columns()).await? else {
            return Ok((RollupDelta::default(), 0));
        };
        let tz = self.tz;
        tokio::task::spawn_blocking(move || {
            let p = |source| ReportError::Polars {
                stage: "rebuild rollups",
                source,
            };
            let df = lf.collect().map_err(p)?;
            let rows = df.height() as u64;
            Ok((delta(&df, tz).map_err(p)?, rows))
        })
        .await
        .map_err(|e| ReportError::Task(e.to_string()))?
    }

    /// Whether every day of `range` is covered by rollups (none landed before rollups existed
    /// without being rebuilt).
    pub fn rollups_cover(&self, range: Option<DateRange>) -> Result<bool, ReportError> {
        Ok(self
            .catalog
            .incomplete_rollup_days(range.map(|r| r.from), range.map(|r| r.to))?
            .is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_rolls_up_by_local_day_and_hour_with_day_cells_as_unions() -> PolarsResult<()> {
        // 2026-01-01T16:30Z is 2026-01-02 00:30 in Shanghai.
        let t1 = 1_767_285_000_000_000_i64;
        let df = df!(
            "workspace" => ["w", "w", "w", "w", "w", "w"],
            "endpoint" => ["click", "impression", "impression", "feedback", "conversion", "impression"],
            "activity_id" => [Some(1i64), Some(1), Some(1), Some(0), Some(1), None],
            "received_at" => [t1, t1, t1 + 3_600_000_000, t1, t1, t1],
            "link_id" => ["5", "5", "5", "18446744073709551615", "5", "5"],
            "idfa" => [Some("X"), Some("X"), Some("X"), None, None, None],
            "oaid_md5" => [Some("o1"), Some("o1"), Some(""), None, None, Some("o2")],
            "user_ip" => ["1.1.1.1", "1.1.1.1", "1.1.1.1", "2.2.2.2", "1.1.1.1", "1.1.1.1"],
            "user_agent" => ["ua", "ua", "ua", "ua", "ua", "ua"],
        )?
        .lazy()
        .with_column(col("received_at").cast(DataType::Datetime(
            TimeUnit::Microseconds,
            Some(polars::prelude::TimeZone::UTC),
        )))
        .collect()?;
        let d = delta(&df, chrono_tz::Asia::Shanghai)?;
        let key = |hour, activity_id, link, kind| RollupKey {
            workspace: "w".into(),
            day: "2026-01-02".into(),
            hour,
            activity_id,
            link,
            kind,
        };
        let imp_day = &d.cells[&key(None, 1, 0, HitKind::Impression)];
        assert_eq!((imp_day.hits, imp_day.devices.count()), (2, (1, false)));
        assert_eq!(d.cells[&key(Some(0), 1, 0, HitKind::Impression)].hits, 1);
        assert_eq!(d.cells[&key(Some(1), 1, 0, HitKind::Impression)].hits, 1);
        assert_eq!(d.cells[&key(Some(0), 1, 0, HitKind::Click)].hits, 1);
        let feedback = &d.cells[&key(Some(0), 0, -1, HitKind::Click)];
        assert_eq!(feedback.hits, 1, "feedback keyed by its link (u64 bits)");
        assert_eq!(d.cells.len(), 7, "{:?}", d.cells.keys().collect::<Vec<_>>());
        // IDs: every row of the workspace, empty values left out.
        let oaid = &d.ids[&("w".into(), "2026-01-02".into(), "oaid".into())];
        assert_eq!(oaid.count(), (2, false));
        Ok(())
    }
}
