//! The dashboard (仪表盘, R19–R23): resource statistics, backflow volume with the change versus
//! the previous period, distinct IDs per type, and the growth trend.
//!
//! Resource statistics and volumes come from the quota ledger and the counters every `ad_events`
//! batch commits (no scan). Distinct IDs come from the per-day distinct-ID sketches the same
//! commits maintain (`report::rollup`): exact up to 2 048 values of a type, HyperLogLog beyond;
//! while some day landed before rollups existed (and was not rebuilt) they are counted exactly
//! over every committed `ad_events` file of the workspace instead.

use chrono::{Days, NaiveDate};
use polars::prelude::*;
use serde::Serialize;

use super::ad_monitoring::Source;
use super::lake::{self, AD_EVENTS, Wanted};
use super::sketch::Sketch;
use super::{DateRange, ReportError, Reports, polars};
use crate::catalog::QuotaStatus;

/// Monitoring type (监测类型) of the trend: which hits a point counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MonitoringType {
    /// Impressions and clicks.
    All,
    Impression,
    /// Monitoring clicks and Tencent feedback clicks.
    Click,
}

impl std::str::FromStr for MonitoringType {
    type Err = ReportError;
    fn from_str(s: &str) -> Result<Self, ReportError> {
        match s.trim() {
            "all" => Ok(MonitoringType::All),
            "impression" => Ok(MonitoringType::Impression),
            "click" => Ok(MonitoringType::Click),
            other => Err(ReportError::Invalid(format!(
                "unknown monitoring type `{other}`, expected one of all, impression, click"
            ))),
        }
    }
}

/// A dashboard query: the trend's range and monitoring type.
#[derive(Debug, Clone)]
pub struct DashboardQuery {
    pub workspace: String,
    pub range: DateRange,
    pub kind: MonitoringType,
}

/// A period's volume and the previous period's (环比).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Change {
    pub current: u64,
    pub previous: u64,
    /// `(current - previous) / previous`; null when the previous period is empty.
    pub change: Option<f64>,
}

impl Change {
    fn new(current: u64, previous: u64) -> Change {
        Change {
            current,
            previous,
            change: (previous > 0).then(|| (current as f64 - previous as f64) / previous as f64),
        }
    }
}

/// Backflow volume (impressions + clicks).
#[derive(Debug, Clone, Serialize)]
pub struct VolumeStats {
    pub total: u64,
    /// The last 30 days including today, versus the 30 days before.
    pub last_month: Change,
    /// The last 7 days including today, versus the 7 days before.
    pub last_7_days: Change,
    /// Today versus yesterday.
    pub today: Change,
}

/// Distinct IDs per type (ID总数, MAC, IMEI, IDFA, 手机号, and the others collected).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IdStats {
    /// Sum of the types below: distinct (type, value) pairs.
    pub total: u64,
    pub mac: u64,
    pub imei: u64,
    pub idfa: u64,
    /// Mobile numbers: no media returns one (spec §6 item 7), so none are collected: null.
    pub mobile: Option<u64>,
    pub oaid: u64,
    pub android_id: u64,
    pub caid: u64,
    pub aaid: u64,
    /// Whether any count is a HyperLogLog estimate (more than 2 048 distinct values of a type:
    /// 0.81 % relative standard error); exact otherwise.
    pub approximate: bool,
}

/// The ID types counted and the column each is counted on (the MD5 columns, which the decoder
/// fills from a raw value too, so a device sent raw once and hashed once counts once).
pub const ID_COLUMNS: [(&str, &str); 7] = [
    ("mac", "mac_md5"),
    ("imei", "imei_md5"),
    ("idfa", "idfa_md5"),
    ("oaid", "oaid_md5"),
    ("android_id", "android_id_md5"),
    ("caid", "caid"),
    ("aaid", "aaid"),
];

#[derive(Debug, Clone, Serialize)]
pub struct TrendPoint {
    pub day: NaiveDate,
    pub count: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Trend {
    #[serde(rename = "type")]
    pub kind: MonitoringType,
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// One point per day of the range, zeros included.
    pub series: Vec<TrendPoint>,
}

/// The dashboard of a workspace.
#[derive(Debug, Clone, Serialize)]
pub struct Dashboard {
    pub workspace: String,
    pub today: NaiveDate,
    /// Purchased, used and remaining records (null remaining while unmetered).
    pub quota: QuotaStatus,
    pub volume: VolumeStats,
    pub ids: IdStats,
    /// Where the ID counts come from: `rollup` (the per-day distinct-ID sketches) or `scan`
    /// (every committed file, while some day landed before rollups existed and was not rebuilt).
    pub ids_source: Source,
    pub trend: Trend,
}

/// Distinct non-empty values of each ID column among `workspace`'s rows.
fn id_stats(lf: LazyFrame, workspace: &str) -> Result<IdStats, ReportError> {
    let exprs: Vec<Expr> = ID_COLUMNS
        .iter()
        .map(|(name, c)| {
            col(*c)
                .filter(col(*c).is_not_null().and(col(*c).neq(lit(""))))
                .n_unique()
                .cast(DataType::UInt64)
                .alias(*name)
        })
        .collect();
    let df = lf
        .filter(col("workspace").eq(lit(workspace)))
        .select(exprs)
        .collect()
        .map_err(polars("distinct ids"))?;
    let get = |name: &str| -> Result<u64, ReportError> {
        df.column(name)
            .and_then(|c| c.u64().map(|v| v.get(0).unwrap_or(0)))
            .map_err(polars("read ids"))
    };
    let mut ids = IdStats {
        mac: get("mac")?,
        imei: get("imei")?,
        idfa: get("idfa")?,
        mobile: None,
        oaid: get("oaid")?,
        android_id: get("android_id")?,
        caid: get("caid")?,
        aaid: get("aaid")?,
        total: 0,
        approximate: false,
    };
    ids.total = ids.mac + ids.imei + ids.idfa + ids.oaid + ids.android_id + ids.caid + ids.aaid;
    Ok(ids)
}

/// Distinct IDs per type from the merged per-day sketches.
fn ids_from_rollups(sketches: &std::collections::BTreeMap<String, Sketch>) -> IdStats {
    let mut approximate = false;
    let mut get = |name: &str| {
        let (n, approx) = sketches.get(name).map_or((0, false), Sketch::count);
        approximate |= approx;
        n
    };
    let mut ids = IdStats {
        mac: get("mac"),
        imei: get("imei"),
        idfa: get("idfa"),
        mobile: None,
        oaid: get("oaid"),
        android_id: get("android_id"),
        caid: get("caid"),
        aaid: get("aaid"),
        total: 0,
        approximate: false,
    };
    ids.approximate = approximate;
    ids.total = ids.mac + ids.imei + ids.idfa + ids.oaid + ids.android_id + ids.caid + ids.aaid;
    ids
}

impl Reports {
    /// Exact distinct IDs of a workspace over every committed `ad_events` file.
    async fn ids_by_scan(&self, workspace: &str) -> Result<IdStats, ReportError> {
        let files = self.committed.list_all(&self.lake, AD_EVENTS).await?;
        let mut wanted = vec![Wanted::text("workspace")];
        wanted.extend(ID_COLUMNS.iter().map(|(_, c)| Wanted::text(c)));
        let lf = lake::frame(&self.lake, &files, &wanted).await?;
        let workspace = workspace.to_string();
        match lf {
            Some(lf) => tokio::task::spawn_blocking(move || id_stats(lf, &workspace))
                .await
                .map_err(|e| ReportError::Task(e.to_string()))?,
            None => Ok(IdStats::default()),
        }
    }

    /// The dashboard. The query is checked by its parser before anything is read.
    pub async fn dashboard(&self, q: &DashboardQuery) -> Result<Dashboard, ReportError> {
        let today = self.today();
        let quota = self.catalog.quota(&q.workspace)?;
        // Counters from 59 days before today (the month before last) to the later of today and
        // the trend's end.
        let first = (today - Days::new(59)).min(q.range.from);
        let last = today.max(q.range.to);
        let mut per_day: std::collections::BTreeMap<NaiveDate, (u64, u64)> = Default::default();
        for d in self.catalog.activity_days(&q.workspace, first, last)? {
            let e = per_day.entry(d.day).or_default();
            e.0 += d.impressions;
            e.1 += d.clicks;
        }
        let sum = |from: NaiveDate, to: NaiveDate| -> u64 {
            per_day.range(from..=to).map(|(_, (i, c))| i + c).sum()
        };
        let window = |days: u64| {
            let start = today - Days::new(days - 1);
            Change::new(
                sum(start, today),
                sum(start - Days::new(days), start - Days::new(1)),
            )
        };
        let total: u64 = self
            .catalog
            .activity_totals(&q.workspace)?
            .values()
            .map(|t| t.impressions + t.clicks)
            .sum();
        let volume = VolumeStats {
            total,
            last_month: window(30),
            last_7_days: window(7),
            today: window(1),
        };
        let series = q
            .range
            .iter()
            .map(|day| {
                let (i, c) = per_day.get(&day).copied().unwrap_or_default();
                TrendPoint {
                    day,
                    count: match q.kind {
                        MonitoringType::All => i + c,
                        MonitoringType::Impression => i,
                        MonitoringType::Click => c,
                    },
                }
            })
            .collect();

        let (ids, ids_source) = if self.rollups_cover(None)? {
            let catalog = std::sync::Arc::clone(&self.catalog);
            let workspace = q.workspace.clone();
            let ids = tokio::task::spawn_blocking(move || -> Result<IdStats, ReportError> {
                Ok(ids_from_rollups(&catalog.rollup_ids(&workspace)?))
            })
            .await
            .map_err(|e| ReportError::Task(e.to_string()))??;
            (ids, Source::Rollup)
        } else {
            (self.ids_by_scan(&q.workspace).await?, Source::Scan)
        };
        Ok(Dashboard {
            workspace: q.workspace.clone(),
            today,
            quota,
            volume,
            ids,
            ids_source,
            trend: Trend {
                kind: q.kind,
                from: q.range.from,
                to: q.range.to,
                series,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_is_relative_to_the_previous_period() {
        assert_eq!(Change::new(15, 10).change, Some(0.5));
        assert_eq!(Change::new(5, 0).change, None);
        assert_eq!(Change::new(0, 4).change, Some(-1.0));
    }

    #[test]
    fn ids_are_distinct_non_empty_values_per_type() -> Result<(), ReportError> {
        let mut columns = vec![Column::new("workspace".into(), ["ws", "ws", "ws", "other"])];
        for (_, c) in ID_COLUMNS {
            let values: [Option<&str>; 4] = match c {
                "imei_md5" => [Some("a"), Some("a"), Some("b"), Some("z")],
                "oaid_md5" => [Some(""), None, Some("a"), Some("z")],
                _ => [None; 4],
            };
            columns.push(Column::new(c.into(), values));
        }
        let df = DataFrame::new_infer_height(columns).map_err(polars("test"))?;
        let ids = id_stats(df.lazy(), "ws")?;
        assert_eq!((ids.imei, ids.oaid, ids.mac, ids.total), (2, 1, 0, 3));
        Ok(())
    }
}
