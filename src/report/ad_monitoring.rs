//! The ad monitoring report (广告监测数据, R24–R32).
//!
//! Forms: `date` (one bucket per day), `hour` (hour of day 00–23, 时段, over the range) and
//! `audience` (region — province or city — and OS distributions). Dimensions: activity group →
//! channel → activity, cascading filters, default all. Every cell — a dimension × bucket, a
//! dimension over the range, a bucket over all dimensions, the total — counts its own exact
//! distinct device keys.

use std::collections::{BTreeMap, HashMap};

use chrono_tz::Tz;
use polars::prelude::*;
use serde::Serialize;

use super::lake::{self, AD_EVENTS, Wanted};
use super::{DateRange, ReportError, Reports, polars, rollup};
use crate::catalog::{Activity, RollupGranularity};
use crate::pipeline::quota::DEVICE_KEY_FIELDS;

named_enum!(
    /// Report form (报表形式).
    Form, "form" { Date => "date", Hour => "hour", Audience => "audience" }
);
named_enum!(
    /// Query dimension (查询维度).
    Dimension, "dimension" { Group => "group", Channel => "channel", Activity => "activity" }
);
named_enum!(
    /// Granularity of the audience form's region table (R31).
    RegionLevel, "region level" { Province => "province", City => "city" }
);
named_enum!(
    /// Displayable items (R28).
    Metric, "metric" {
        Impressions => "impressions",
        Clicks => "clicks",
        UniqueImpressions => "unique_impressions",
        UniqueClicks => "unique_clicks",
        Ctr => "ctr",
    }
);

/// A checked ad monitoring query.
#[derive(Debug, Clone)]
pub struct AdMonitoringQuery {
    pub workspace: String,
    pub range: DateRange,
    pub form: Form,
    pub by: Dimension,
    /// Filters; empty means all.
    pub groups: Vec<String>,
    pub channels: Vec<String>,
    pub activities: Vec<i64>,
    pub region: RegionLevel,
    /// Metrics to show (CSV columns); empty means every metric of the form.
    pub metrics: Vec<Metric>,
    /// Scan the committed Parquet (exact uniques) even when the rollups could answer.
    pub exact: bool,
}

impl AdMonitoringQuery {
    /// The metrics shown: the requested ones, or all the form allows. CTR is only defined for
    /// the time forms (R28).
    pub fn shown_metrics(&self) -> Result<Vec<Metric>, ReportError> {
        let time = self.form != Form::Audience;
        if self.metrics.is_empty() {
            return Ok(Metric::ALL
                .iter()
                .copied()
                .filter(|m| time || *m != Metric::Ctr)
                .collect());
        }
        if !time && self.metrics.contains(&Metric::Ctr) {
            return Err(ReportError::Invalid(
                "metric `ctr` is only shown by the date and hour forms, not by audience".into(),
            ));
        }
        Ok(self.metrics.clone())
    }
}

/// Counters of one cell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Metrics {
    pub impressions: u64,
    /// Clicks and Tencent feedback clicks.
    pub clicks: u64,
    pub unique_impressions: u64,
    pub unique_clicks: u64,
    /// Clicks ÷ impressions (null without impressions); absent in the audience form.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ctr: Option<Option<f64>>,
    /// Whether a unique count is a HyperLogLog estimate (a rollup cell of more than 2 048
    /// devices: 0.81 % relative standard error) rather than exact.
    pub approximate: bool,
}

impl Metrics {
    fn with_ctr(mut self, time_form: bool) -> Metrics {
        self.ctr = time_form
            .then(|| (self.impressions > 0).then(|| self.clicks as f64 / self.impressions as f64));
        self
    }

    /// The value of one metric as CSV text.
    pub fn text(&self, metric: Metric) -> String {
        match metric {
            Metric::Impressions => self.impressions.to_string(),
            Metric::Clicks => self.clicks.to_string(),
            Metric::UniqueImpressions => self.unique_impressions.to_string(),
            Metric::UniqueClicks => self.unique_clicks.to_string(),
            Metric::Ctr => self
                .ctr
                .flatten()
                .map(|c| format!("{c:.6}"))
                .unwrap_or_default(),
        }
    }
}

/// One row of a pivot; `children` expand it (sparse: only cells with data).
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub key: String,
    pub label: String,
    #[serde(flatten)]
    pub metrics: Metrics,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<Row>,
}

/// Both pivots of one table (R30): dimension → bucket, and bucket → dimension.
#[derive(Debug, Clone, Serialize)]
pub struct Pivot {
    /// What a bucket is: `date`, `hour`, `province`, `city` or `os`.
    pub bucket: &'static str,
    pub total: Metrics,
    /// One row per dimension value in scope (also those without data), expandable by bucket.
    pub by_dimension: Vec<Row>,
    /// One row per bucket (every day or hour of the range for the time forms; the values seen
    /// for audience), expandable by dimension. Without children it is the chart's series.
    pub by_bucket: Vec<Row>,
}

/// An activity in the report's scope.
#[derive(Debug, Clone, Serialize)]
pub struct ScopeActivity {
    pub id: i64,
    pub name: String,
    pub group: String,
    pub channel: String,
}

/// The answer.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub workspace: String,
    pub form: Form,
    pub by: Dimension,
    pub from: chrono::NaiveDate,
    pub to: chrono::NaiveDate,
    pub time_zone: String,
    pub metrics: Vec<Metric>,
    /// What answered: `rollup` (the date and hour forms, once every day of the range has
    /// rollups) or `scan` (the committed Parquet: the audience form, `exact=true`, or days that
    /// landed before rollups existed and were not rebuilt).
    pub source: Source,
    /// The activities the filters select.
    pub activities: Vec<ScopeActivity>,
    /// Date, hour, or (audience) region table.
    pub table: Pivot,
    /// OS distribution (audience form only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os: Option<Pivot>,
}

/// Where a report's numbers come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Rollup,
    Scan,
}

/// Resolves the cascading filters against the workspace's activities. A group, channel or
/// activity the workspace does not have is the caller's error.
pub fn scope(
    activities: Vec<Activity>,
    q: &AdMonitoringQuery,
) -> Result<Vec<Activity>, ReportError> {
    for g in &q.groups {
        if !activities.iter().any(|a| &a.group == g) {
            return Err(ReportError::Invalid(format!(
                "unknown activity group `{g}` in workspace `{}`",
                q.workspace
            )));
        }
    }
    for c in &q.channels {
        if !activities.iter().any(|a| &a.channel == c) {
            return Err(ReportError::Invalid(format!(
                "no activity of channel `{c}` in workspace `{}`",
                q.workspace
            )));
        }
    }
    for id in &q.activities {
        if !activities.iter().any(|a| a.id == *id) {
            return Err(ReportError::Invalid(format!(
                "unknown activity {id} in workspace `{}`",
                q.workspace
            )));
        }
    }
    Ok(activities
        .into_iter()
        .filter(|a| q.groups.is_empty() || q.groups.contains(&a.group))
        .filter(|a| q.channels.is_empty() || q.channels.contains(&a.channel))
        .filter(|a| q.activities.is_empty() || q.activities.contains(&a.id))
        .collect())
}

/// (key, label) of an activity's dimension value.
pub fn dimension_of(a: &Activity, by: Dimension) -> (String, String) {
    match by {
        Dimension::Group => (a.group.clone(), a.group.clone()),
        Dimension::Channel => (a.channel.clone(), a.channel.clone()),
        Dimension::Activity => (a.id.to_string(), a.name.clone()),
    }
}

/// What a bucket is computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Date,
    Hour,
    Province,
    City,
    Os,
}

impl Bucket {
    pub fn name(self) -> &'static str {
        match self {
            Bucket::Date => "date",
            Bucket::Hour => "hour",
            Bucket::Province => "province",
            Bucket::City => "city",
            Bucket::Os => "os",
        }
    }

    fn column(self) -> Option<&'static str> {
        match self {
            Bucket::Date | Bucket::Hour => None,
            Bucket::Province => Some("geo_province"),
            Bucket::City => Some("geo_city"),
            Bucket::Os => Some("ua_os"),
        }
    }

    /// Every bucket of the range, when the axis is known in advance.
    fn axis(self, range: DateRange) -> Vec<String> {
        match self {
            Bucket::Date => range.iter().map(|d| d.to_string()).collect(),
            Bucket::Hour => (0..24).map(|h| format!("{h:02}")).collect(),
            _ => Vec::new(),
        }
    }
}

/// The label of a missing region or OS.
pub const UNKNOWN: &str = "unknown";

pub(crate) const DIM: &str = "__dim";
pub(crate) const BUCKET: &str = "__bucket";
pub(crate) const IS_CLICK: &str = "__is_click";
pub(crate) const DEVICE: &str = "__device";

/// The device key (DESIGN.md): the first present of the device-ID fields, named so that equal
/// values of different ID types differ, else the user's IP and user agent. The same key the
/// quota's deduplicated clicks use (`pipeline::quota`).
pub fn device_key_expr() -> Expr {
    let present = |f: &str| col(f).is_not_null().and(col(f).neq(lit("")));
    let fallback = lit("ip_ua:")
        + col("user_ip").fill_null(lit(""))
        + lit("\n")
        + col("user_agent").fill_null(lit(""));
    DEVICE_KEY_FIELDS
        .iter()
        .rev()
        .fold(fallback, |otherwise, f| {
            when(present(f))
                .then(lit(format!("{f}:")) + col(*f))
                .otherwise(otherwise)
        })
}

/// Columns the report reads.
pub fn wanted(buckets: &[Bucket]) -> Vec<Wanted> {
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
        Wanted::text("user_ip"),
        Wanted::text("user_agent"),
    ];
    out.extend(DEVICE_KEY_FIELDS.iter().map(|f| Wanted::text(f)));
    out.extend(buckets.iter().filter_map(|b| b.column()).map(Wanted::text));
    out
}

/// Exact counters at every level of one table.
#[derive(Debug, Default)]
pub struct Cells {
    pub cells: HashMap<(String, String), Metrics>,
    pub dims: HashMap<String, Metrics>,
    pub buckets: HashMap<String, Metrics>,
    pub total: Metrics,
}

/// The receive day (`YYYY-MM-DD`) in the partition time zone.
pub(crate) fn day_expr(tz: Tz) -> Expr {
    col("received_at")
        .dt()
        .convert_time_zone(TimeZone::from_chrono(&tz))
        .dt()
        .strftime("%Y-%m-%d")
}

/// The bucket of a hit: its day, its hour of day, or its region / OS (`unknown` when missing).
pub(crate) fn bucket_expr(bucket: Bucket, tz: Tz) -> Expr {
    let local = col("received_at")
        .dt()
        .convert_time_zone(TimeZone::from_chrono(&tz));
    match bucket.column() {
        None if bucket == Bucket::Date => local.dt().strftime("%Y-%m-%d"),
        None => local.dt().strftime("%H"),
        Some(c) => when(col(c).is_null().or(col(c).eq(lit(""))))
            .then(lit(UNKNOWN))
            .otherwise(col(c)),
    }
}

/// Hits of `workspace` in `range` on the activities of `mapping` (activity_id → dimension
/// key), with their dimension, bucket, click flag and device key.
pub fn prepared(
    lf: LazyFrame,
    workspace: &str,
    range: DateRange,
    tz: Tz,
    mapping: DataFrame,
    bucket: Bucket,
    endpoints: &[&str],
) -> LazyFrame {
    let day = day_expr(tz);
    let bucket_expr = bucket_expr(bucket, tz);
    let mut endpoint_ok = lit(false);
    for e in endpoints {
        endpoint_ok = endpoint_ok.or(col("endpoint").eq(lit(*e)));
    }
    lf.filter(col("workspace").eq(lit(workspace)).and(endpoint_ok))
        .join(
            mapping.lazy(),
            [col("activity_id")],
            [col("activity_id")],
            JoinArgs::new(JoinType::Inner),
        )
        .with_column(day.alias("__day"))
        .filter(
            col("__day")
                .gt_eq(lit(range.from.to_string()))
                .and(col("__day").lt_eq(lit(range.to.to_string()))),
        )
        .select([
            col(DIM),
            bucket_expr.alias(BUCKET),
            col("endpoint").neq(lit("impression")).alias(IS_CLICK),
            device_key_expr().alias(DEVICE),
        ])
}

/// Computes every level of a table from prepared hits: one pass keeps the distinct (dimension,
/// bucket, kind, device) tuples with their hit counts; the four levels are grouped from those.
pub fn cells(prepared: LazyFrame) -> Result<Cells, ReportError> {
    let distinct = prepared
        .group_by([col(DIM), col(BUCKET), col(IS_CLICK), col(DEVICE)])
        .agg([len().cast(DataType::UInt64).alias("n")])
        .collect()
        .map_err(polars("distinct devices"))?;
    let level = |keys: &[&str]| -> Result<DataFrame, ReportError> {
        let mut by: Vec<Expr> = keys.iter().map(|k| col(*k)).collect();
        by.push(col(IS_CLICK));
        distinct
            .clone()
            .lazy()
            .group_by(by)
            .agg([
                col("n").sum().cast(DataType::UInt64).alias("hits"),
                col(DEVICE)
                    .n_unique()
                    .cast(DataType::UInt64)
                    .alias("uniques"),
            ])
            .collect()
            .map_err(polars("aggregate"))
    };
    let mut out = Cells::default();
    for (key, m) in read_level(&level(&[DIM, BUCKET])?, &[DIM, BUCKET])? {
        out.cells.insert((key[0].clone(), key[1].clone()), m);
    }
    for (key, m) in read_level(&level(&[DIM])?, &[DIM])? {
        out.dims.insert(key[0].clone(), m);
    }
    for (key, m) in read_level(&level(&[BUCKET])?, &[BUCKET])? {
        out.buckets.insert(key[0].clone(), m);
    }
    if let Some((_, m)) = read_level(&level(&[])?, &[])?.into_iter().next() {
        out.total = m;
    }
    Ok(out)
}

fn read_level(
    df: &DataFrame,
    keys: &[&str],
) -> Result<BTreeMap<Vec<String>, Metrics>, ReportError> {
    let p = polars("read result");
    let key_columns: Vec<&StringChunked> = keys
        .iter()
        .map(|k| df.column(k).and_then(|c| c.str()))
        .collect::<PolarsResult<_>>()
        .map_err(&p)?;
    let is_click = df.column(IS_CLICK).and_then(|c| c.bool()).map_err(&p)?;
    let hits = df.column("hits").and_then(|c| c.u64()).map_err(&p)?;
    let uniques = df.column("uniques").and_then(|c| c.u64()).map_err(&p)?;
    let mut out: BTreeMap<Vec<String>, Metrics> = BTreeMap::new();
    for row in 0..df.height() {
        let key: Vec<String> = key_columns
            .iter()
            .map(|c| c.get(row).unwrap_or("").to_string())
            .collect();
        let m = out.entry(key).or_default();
        let (h, u) = (hits.get(row).unwrap_or(0), uniques.get(row).unwrap_or(0));
        if is_click.get(row).unwrap_or(false) {
            m.clicks += h;
            m.unique_clicks += u;
        } else {
            m.impressions += h;
            m.unique_impressions += u;
        }
    }
    Ok(out)
}

/// Builds both pivots of a table.
pub fn pivot(
    cells: &Cells,
    bucket: Bucket,
    range: DateRange,
    dims: &[(String, String)],
    time_form: bool,
) -> Pivot {
    let mut axis = bucket.axis(range);
    if axis.is_empty() {
        axis = cells.buckets.keys().cloned().collect();
        axis.sort();
    }
    let m = |x: Option<&Metrics>| x.copied().unwrap_or_default().with_ctr(time_form);
    let by_dimension = dims
        .iter()
        .map(|(key, label)| Row {
            key: key.clone(),
            label: label.clone(),
            metrics: m(cells.dims.get(key)),
            children: axis
                .iter()
                .filter_map(|b| {
                    let c = cells.cells.get(&(key.clone(), b.clone()))?;
                    Some(Row {
                        key: b.clone(),
                        label: b.clone(),
                        metrics: m(Some(c)),
                        children: Vec::new(),
                    })
                })
                .collect(),
        })
        .collect();
    let by_bucket = axis
        .iter()
        .map(|b| Row {
            key: b.clone(),
            label: b.clone(),
            metrics: m(cells.buckets.get(b)),
            children: dims
                .iter()
                .filter_map(|(key, label)| {
                    let c = cells.cells.get(&(key.clone(), b.clone()))?;
                    Some(Row {
                        key: key.clone(),
                        label: label.to_string(),
                        metrics: m(Some(c)),
                        children: Vec::new(),
                    })
                })
                .collect(),
        })
        .collect();
    Pivot {
        bucket: bucket.name(),
        total: m(Some(&cells.total)),
        by_dimension,
        by_bucket,
    }
}

/// The dimension values of a scope, ordered by label then key, and the activity → key frame.
pub fn dimensions(
    scope: &[Activity],
    by: Dimension,
) -> Result<(Vec<(String, String)>, DataFrame), ReportError> {
    let mut dims: Vec<(String, String)> = scope.iter().map(|a| dimension_of(a, by)).collect();
    dims.sort_by(|a, b| (&a.1, &a.0).cmp(&(&b.1, &b.0)));
    dims.dedup_by(|a, b| a.0 == b.0);
    let ids: Vec<i64> = scope.iter().map(|a| a.id).collect();
    let keys: Vec<String> = scope.iter().map(|a| dimension_of(a, by).0).collect();
    let mapping = DataFrame::new_infer_height(vec![
        Column::new("activity_id".into(), ids),
        Column::new(DIM.into(), keys),
    ])
    .map_err(polars("scope"))?;
    Ok((dims, mapping))
}

impl Reports {
    /// The ad monitoring report. The query is checked and its activities resolved before any
    /// file is read.
    pub async fn ad_monitoring(&self, q: &AdMonitoringQuery) -> Result<Report, ReportError> {
        let metrics = q.shown_metrics()?;
        let scope = scope(self.catalog.activities(&q.workspace)?, q)?;
        let (dims, mapping) = dimensions(&scope, q.by)?;
        let tables: Vec<Bucket> = match (q.form, q.region) {
            (Form::Date, _) => vec![Bucket::Date],
            (Form::Hour, _) => vec![Bucket::Hour],
            (Form::Audience, RegionLevel::Province) => vec![Bucket::Province, Bucket::Os],
            (Form::Audience, RegionLevel::City) => vec![Bucket::City, Bucket::Os],
        };
        let time_form = q.form != Form::Audience;
        if time_form && !q.exact && self.rollups_cover(Some(q.range))? {
            let table = self.ad_monitoring_rollup(q, &scope, &dims).await?;
            return Ok(self.report(q, metrics, Source::Rollup, &scope, table, None));
        }
        let files = self.committed.list(&self.lake, AD_EVENTS, q.range).await?;
        let lf = lake::frame(&self.lake, &files, &wanted(&tables)).await?;
        let (workspace, range, tz) = (q.workspace.clone(), q.range, self.tz);
        let dims_owned = dims.clone();
        let pivots = tokio::task::spawn_blocking(move || -> Result<Vec<Pivot>, ReportError> {
            tables
                .iter()
                .map(|&bucket| {
                    let cells = match &lf {
                        Some(lf) => cells(prepared(
                            lf.clone(),
                            &workspace,
                            range,
                            tz,
                            mapping.clone(),
                            bucket,
                            &["impression", "click", "feedback"],
                        ))?,
                        None => Cells::default(),
                    };
                    Ok(pivot(&cells, bucket, range, &dims_owned, time_form))
                })
                .collect()
        })
        .await
        .map_err(|e| ReportError::Task(e.to_string()))??;
        let mut pivots = pivots.into_iter();
        let table = pivots
            .next()
            .ok_or_else(|| ReportError::Task("no table".into()))?;
        Ok(self.report(q, metrics, Source::Scan, &scope, table, pivots.next()))
    }

    /// The date or hour table from the rollups: day cells for `date`, hour cells for `hour`.
    async fn ad_monitoring_rollup(
        &self,
        q: &AdMonitoringQuery,
        scope: &[Activity],
        dims: &[(String, String)],
    ) -> Result<Pivot, ReportError> {
        let (bucket, granularity) = match q.form {
            Form::Hour => (Bucket::Hour, RollupGranularity::Hour),
            _ => (Bucket::Date, RollupGranularity::Day),
        };
        let dim_of: HashMap<i64, String> = scope
            .iter()
            .map(|a| (a.id, dimension_of(a, q.by).0))
            .collect();
        let catalog = std::sync::Arc::clone(&self.catalog);
        let (workspace, range, dims) = (q.workspace.clone(), q.range, dims.to_vec());
        tokio::task::spawn_blocking(move || -> Result<Pivot, ReportError> {
            let rows = catalog.rollup_cells(&workspace, range.from, range.to, granularity)?;
            let cells = rollup::cells(&rows, |r| {
                Some((
                    dim_of.get(&r.key.activity_id)?.clone(),
                    rollup::time_bucket(r),
                ))
            });
            Ok(pivot(&cells, bucket, range, &dims, true))
        })
        .await
        .map_err(|e| ReportError::Task(e.to_string()))?
    }

    fn report(
        &self,
        q: &AdMonitoringQuery,
        metrics: Vec<Metric>,
        source: Source,
        scope: &[Activity],
        table: Pivot,
        os: Option<Pivot>,
    ) -> Report {
        Report {
            workspace: q.workspace.clone(),
            form: q.form,
            by: q.by,
            from: q.range.from,
            to: q.range.to,
            time_zone: self.tz.name().to_string(),
            metrics,
            source,
            activities: scope
                .iter()
                .map(|a| ScopeActivity {
                    id: a.id,
                    name: a.name.clone(),
                    group: a.group.clone(),
                    channel: a.channel.clone(),
                })
                .collect(),
            table,
            os,
        }
    }
}

impl Report {
    /// The detail table as CSV: one line per dimension × bucket cell with data, in the
    /// dimension → bucket order.
    pub fn to_csv(&self) -> Result<Vec<u8>, csv::Error> {
        let metric_names: Vec<&str> = self.metrics.iter().map(|m| m.as_str()).collect();
        let rows = self.table.by_dimension.iter().map(|row| DetailRow {
            key: &row.key,
            label: &row.label,
            cells: row
                .children
                .iter()
                .map(|c| {
                    (
                        c.key.as_str(),
                        self.metrics.iter().map(|m| c.metrics.text(*m)).collect(),
                    )
                })
                .collect(),
        });
        let id_column = (self.by == Dimension::Activity).then_some("activity_id");
        detail_csv(
            id_column,
            self.by.as_str(),
            self.table.bucket,
            &metric_names,
            rows,
        )
    }
}

/// One dimension row of a detail table: its key, its label, and its bucket cells (bucket key,
/// metric values as text).
pub(crate) struct DetailRow<'a> {
    pub key: &'a str,
    pub label: &'a str,
    pub cells: Vec<(&'a str, Vec<String>)>,
}

/// The CSV detail table every report exports: `[id_column,] dimension, bucket, metrics…`, one
/// line per dimension × bucket cell with data, in dimension → bucket order.
pub(crate) fn detail_csv<'a>(
    id_column: Option<&str>,
    dimension: &str,
    bucket: &str,
    metric_names: &[&str],
    rows: impl Iterator<Item = DetailRow<'a>>,
) -> Result<Vec<u8>, csv::Error> {
    let mut out = csv::Writer::from_writer(Vec::new());
    let mut header: Vec<&str> = id_column.into_iter().collect();
    header.extend([dimension, bucket]);
    header.extend(metric_names);
    out.write_record(&header)?;
    for row in rows {
        for (bucket_key, values) in row.cells {
            let mut record: Vec<&str> = Vec::new();
            if id_column.is_some() {
                record.push(row.key);
            }
            record.extend([row.label, bucket_key]);
            record.extend(values.iter().map(String::as_str));
            out.write_record(&record)?;
        }
    }
    out.into_inner().map_err(|e| e.into_error().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> chrono::NaiveDate {
        chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap_or_default()
    }

    /// (workspace, endpoint, activity, received_at µs UTC, idfa, oaid, ip, ua)
    type Hit = (
        &'static str,
        &'static str,
        i64,
        i64,
        Option<&'static str>,
        Option<&'static str>,
        Option<&'static str>,
        Option<&'static str>,
    );

    fn frame(hits: &[Hit]) -> PolarsResult<LazyFrame> {
        let mut df = DataFrame::new_infer_height(vec![
            Column::new(
                "workspace".into(),
                hits.iter().map(|h| h.0).collect::<Vec<_>>(),
            ),
            Column::new(
                "endpoint".into(),
                hits.iter().map(|h| h.1).collect::<Vec<_>>(),
            ),
            Column::new(
                "activity_id".into(),
                hits.iter().map(|h| h.2).collect::<Vec<_>>(),
            ),
            Column::new(
                "received_at".into(),
                hits.iter().map(|h| h.3).collect::<Vec<_>>(),
            ),
            Column::new("idfa".into(), hits.iter().map(|h| h.4).collect::<Vec<_>>()),
            Column::new("oaid".into(), hits.iter().map(|h| h.5).collect::<Vec<_>>()),
            Column::new(
                "user_ip".into(),
                hits.iter().map(|h| h.6).collect::<Vec<_>>(),
            ),
            Column::new(
                "user_agent".into(),
                hits.iter().map(|h| h.7).collect::<Vec<_>>(),
            ),
        ])?;
        let ts = df.column("received_at")?.cast(&DataType::Datetime(
            TimeUnit::Microseconds,
            Some(TimeZone::UTC),
        ))?;
        df.with_column(ts)?;
        for f in DEVICE_KEY_FIELDS {
            if df.column(f).is_err() {
                df.with_column(Column::full_null(f.into(), df.height(), &DataType::String))?;
            }
        }
        Ok(df.lazy())
    }

    // 2026-03-01 00:30 Asia/Shanghai is 2026-02-28 16:30 UTC.
    const D1_0030: i64 = 1_772_296_200_000_000;
    const HOUR: i64 = 3_600_000_000;
    const DAY: i64 = 24 * HOUR;

    #[test]
    fn uniques_are_distinct_device_keys_per_cell_and_days_follow_the_time_zone()
    -> Result<(), ReportError> {
        let hits: Vec<Hit> = vec![
            ("ws", "impression", 1, D1_0030, Some("A"), None, None, None),
            (
                "ws",
                "impression",
                1,
                D1_0030 + HOUR,
                Some("A"),
                Some("X"),
                None,
                None,
            ),
            ("ws", "click", 1, D1_0030 + DAY, Some("A"), None, None, None),
            // same oaid value as an idfa elsewhere: a different device
            (
                "ws",
                "impression",
                2,
                D1_0030,
                None,
                Some("A"),
                Some("1.1.1.1"),
                Some("ua"),
            ),
            (
                "ws",
                "impression",
                2,
                D1_0030 + DAY,
                None,
                None,
                Some("1.1.1.1"),
                Some("ua"),
            ),
            (
                "ws",
                "feedback",
                2,
                D1_0030 + DAY,
                Some(""),
                None,
                Some("1.1.1.1"),
                Some("ua"),
            ),
            ("ws", "impression", 2, D1_0030 + DAY, None, None, None, None),
            // other workspace, out of range, out of scope, not a hit kind
            (
                "other",
                "impression",
                1,
                D1_0030,
                Some("Z"),
                None,
                None,
                None,
            ),
            (
                "ws",
                "impression",
                1,
                D1_0030 - HOUR,
                Some("Z"),
                None,
                None,
                None,
            ),
            ("ws", "impression", 9, D1_0030, Some("Z"), None, None, None),
            ("ws", "conversion", 1, D1_0030, Some("Z"), None, None, None),
        ];
        let lf = frame(&hits).map_err(polars("test"))?;
        let range = DateRange {
            from: day("2026-03-01"),
            to: day("2026-03-02"),
        };
        let mapping = DataFrame::new_infer_height(vec![
            Column::new("activity_id".into(), vec![1i64, 2]),
            Column::new(DIM.into(), vec!["g1", "g1"]),
        ])
        .map_err(polars("test"))?;
        let c = cells(prepared(
            lf,
            "ws",
            range,
            chrono_tz::Asia::Shanghai,
            mapping,
            Bucket::Date,
            &["impression", "click", "feedback"],
        ))?;
        let m = |i, c, ui, uc| Metrics {
            impressions: i,
            clicks: c,
            unique_impressions: ui,
            unique_clicks: uc,
            ctr: None,
            approximate: false,
        };
        assert_eq!(c.total, m(5, 2, 4, 2));
        assert_eq!(c.dims["g1"], m(5, 2, 4, 2));
        assert_eq!(c.buckets["2026-03-01"], m(3, 0, 2, 0));
        assert_eq!(c.buckets["2026-03-02"], m(2, 2, 2, 2));
        assert_eq!(
            c.cells[&("g1".to_string(), "2026-03-02".to_string())],
            m(2, 2, 2, 2)
        );
        let pivot = pivot(&c, Bucket::Date, range, &[("g1".into(), "g1".into())], true);
        assert_eq!(pivot.by_bucket.len(), 2);
        assert_eq!(pivot.by_dimension[0].children.len(), 2);
        assert_eq!(pivot.total.ctr, Some(Some(0.4)));
        Ok(())
    }
}
