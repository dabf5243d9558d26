//! The Tencent Ads report (腾讯广告数据, R33–R38): the clicks Tencent Ads reports to our Feedback
//! URLs, by ad name, with clicks and unique clicks only (R37).
//!
//! What "ad name" (广告名称) is: Tencent's feedback calls carry ids, never names, so the names
//! a campaign manager can read are the names of the **feedback tasks** (one Feedback URL each,
//! pasted into one Tencent click-monitoring setting and renamable, R61). `by=task` (the default)
//! has one row per feedback task of the workspace, labelled by its name; `by=adgroup` has one row
//! per Tencent ad id (`adgroup_id`, Tencent's 广告 level) seen in the range (`unknown` when
//! Tencent sent none). Rows are `endpoint = feedback` hits only: Tencent clicks on macro
//! monitoring links belong to their activity in the ad monitoring report.
//!
//! Forms, limits, pivots and uniques are the ad monitoring report's (same code): every cell counts
//! its own exact distinct device keys.

use polars::prelude::*;
use serde::Serialize;

use super::ad_monitoring::{
    BUCKET, Bucket, Cells, DEVICE, DIM, DetailRow, Form, IS_CLICK, Metrics, Pivot, RegionLevel,
    Row, Source, bucket_expr, cells, day_expr, detail_csv, device_key_expr, pivot, wanted,
};
use super::lake::{self, AD_EVENTS, Wanted};
use super::{DateRange, ReportError, Reports, polars, rollup};
use crate::catalog::{FeedbackTask, HitKind, RollupGranularity};

named_enum!(
    /// Query dimension of the Tencent report (广告名称).
    TencentDimension, "dimension" { Task => "task", Adgroup => "adgroup" }
);
named_enum!(
    /// Displayable items of the Tencent report (R37).
    TencentMetric, "metric" { Clicks => "clicks", UniqueClicks => "unique_clicks" }
);

/// A checked Tencent report query.
#[derive(Debug, Clone)]
pub struct TencentQuery {
    pub workspace: String,
    pub range: DateRange,
    pub form: Form,
    pub by: TencentDimension,
    /// Only these feedback tasks (ids); empty means all.
    pub tasks: Vec<i64>,
    /// Only these Tencent ad ids (`adgroup_id`); empty means all.
    pub adgroups: Vec<String>,
    pub region: RegionLevel,
    /// Metrics shown (CSV columns); empty means both.
    pub metrics: Vec<TencentMetric>,
    /// Scan the committed Parquet (exact uniques) even when the rollups could answer.
    pub exact: bool,
}

impl TencentQuery {
    pub fn shown_metrics(&self) -> Vec<TencentMetric> {
        if self.metrics.is_empty() {
            TencentMetric::ALL.to_vec()
        } else {
            self.metrics.clone()
        }
    }
}

/// Clicks of one cell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ClickMetrics {
    pub clicks: u64,
    pub unique_clicks: u64,
    /// Whether `unique_clicks` is a HyperLogLog estimate (see the ad monitoring report).
    pub approximate: bool,
}

impl ClickMetrics {
    fn of(m: &Metrics) -> ClickMetrics {
        ClickMetrics {
            clicks: m.clicks,
            unique_clicks: m.unique_clicks,
            approximate: m.approximate,
        }
    }

    pub fn value(&self, metric: TencentMetric) -> u64 {
        match metric {
            TencentMetric::Clicks => self.clicks,
            TencentMetric::UniqueClicks => self.unique_clicks,
        }
    }
}

/// One row of a pivot; `children` expand it.
#[derive(Debug, Clone, Serialize)]
pub struct ClickRow {
    pub key: String,
    pub label: String,
    #[serde(flatten)]
    pub metrics: ClickMetrics,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<ClickRow>,
}

impl ClickRow {
    fn of(r: &Row) -> ClickRow {
        ClickRow {
            key: r.key.clone(),
            label: r.label.clone(),
            metrics: ClickMetrics::of(&r.metrics),
            children: r.children.iter().map(ClickRow::of).collect(),
        }
    }
}

/// Both pivots of one table (广告名称-日期 / 日期-广告名称).
#[derive(Debug, Clone, Serialize)]
pub struct ClickPivot {
    pub bucket: &'static str,
    pub total: ClickMetrics,
    pub by_dimension: Vec<ClickRow>,
    pub by_bucket: Vec<ClickRow>,
}

impl ClickPivot {
    fn of(p: &Pivot) -> ClickPivot {
        ClickPivot {
            bucket: p.bucket,
            total: ClickMetrics::of(&p.total),
            by_dimension: p.by_dimension.iter().map(ClickRow::of).collect(),
            by_bucket: p.by_bucket.iter().map(ClickRow::of).collect(),
        }
    }
}

/// A feedback task in the report's scope.
#[derive(Debug, Clone, Serialize)]
pub struct ScopeTask {
    pub id: i64,
    pub name: String,
    pub link_id: String,
}

/// The answer.
#[derive(Debug, Clone, Serialize)]
pub struct TencentReport {
    pub workspace: String,
    pub form: Form,
    pub by: TencentDimension,
    pub from: chrono::NaiveDate,
    pub to: chrono::NaiveDate,
    pub time_zone: String,
    pub metrics: Vec<TencentMetric>,
    /// What answered: `rollup` for the date and hour forms by task without an ad filter (once
    /// every day of the range has rollups), else `scan`.
    pub source: Source,
    /// The feedback tasks the filters select.
    pub tasks: Vec<ScopeTask>,
    pub table: ClickPivot,
    /// OS distribution (audience form only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os: Option<ClickPivot>,
}

/// Resolves the task filter; a task the workspace does not have is the caller's error.
fn scope(tasks: Vec<FeedbackTask>, q: &TencentQuery) -> Result<Vec<FeedbackTask>, ReportError> {
    for id in &q.tasks {
        if !tasks.iter().any(|t| t.id == *id) {
            return Err(ReportError::Invalid(format!(
                "unknown feedback task {id} in workspace `{}`",
                q.workspace
            )));
        }
    }
    Ok(tasks
        .into_iter()
        .filter(|t| q.tasks.is_empty() || q.tasks.contains(&t.id))
        .collect())
}

/// Feedback hits of the scope's tasks, with dimension, bucket, click flag and device key.
fn prepared(
    lf: LazyFrame,
    q: &TencentQuery,
    tz: chrono_tz::Tz,
    mapping: DataFrame,
    bucket: Bucket,
) -> LazyFrame {
    let adgroup = when(
        col("adgroup_id")
            .is_null()
            .or(col("adgroup_id").eq(lit(""))),
    )
    .then(lit(super::ad_monitoring::UNKNOWN))
    .otherwise(col("adgroup_id"));
    let mut lf = lf
        .filter(
            col("workspace")
                .eq(lit(q.workspace.clone()))
                .and(col("endpoint").eq(lit("feedback"))),
        )
        .join(
            mapping.lazy(),
            [col("link_id")],
            [col("link_id")],
            JoinArgs::new(JoinType::Inner),
        )
        .with_columns([day_expr(tz).alias("__day"), adgroup.alias("__adgroup")])
        .filter(
            col("__day")
                .gt_eq(lit(q.range.from.to_string()))
                .and(col("__day").lt_eq(lit(q.range.to.to_string()))),
        );
    if !q.adgroups.is_empty() {
        let mut keep = lit(false);
        for a in &q.adgroups {
            keep = keep.or(col("__adgroup").eq(lit(a.clone())));
        }
        lf = lf.filter(keep);
    }
    let dim = match q.by {
        TencentDimension::Task => col("__task"),
        TencentDimension::Adgroup => col("__adgroup"),
    };
    lf.select([
        dim.alias(DIM),
        bucket_expr(bucket, tz).alias(BUCKET),
        lit(true).alias(IS_CLICK),
        device_key_expr().alias(DEVICE),
    ])
}

impl Reports {
    /// The Tencent Ads report. The query is checked and its tasks resolved before any file is
    /// read.
    pub async fn tencent(&self, q: &TencentQuery) -> Result<TencentReport, ReportError> {
        let metrics = q.shown_metrics();
        let tasks = scope(self.catalog.feedback_tasks(Some(&q.workspace))?, q)?;
        let mapping = DataFrame::new_infer_height(vec![
            Column::new(
                "link_id".into(),
                tasks.iter().map(|t| t.link.to_string()).collect::<Vec<_>>(),
            ),
            Column::new(
                "__task".into(),
                tasks.iter().map(|t| t.id.to_string()).collect::<Vec<_>>(),
            ),
        ])
        .map_err(polars("scope"))?;
        let tables: Vec<Bucket> = match (q.form, q.region) {
            (Form::Date, _) => vec![Bucket::Date],
            (Form::Hour, _) => vec![Bucket::Hour],
            (Form::Audience, RegionLevel::Province) => vec![Bucket::Province, Bucket::Os],
            (Form::Audience, RegionLevel::City) => vec![Bucket::City, Bucket::Os],
        };
        let mut columns = wanted(&tables);
        columns.push(Wanted::text("link_id"));
        columns.push(Wanted::text("adgroup_id"));
        let task_dims: Vec<(String, String)> = {
            let mut d: Vec<(String, String)> = tasks
                .iter()
                .map(|t| (t.id.to_string(), t.name.clone()))
                .collect();
            d.sort_by(|a, b| (&a.1, &a.0).cmp(&(&b.1, &b.0)));
            d
        };
        let by_rollup = q.form != Form::Audience
            && q.by == TencentDimension::Task
            && q.adgroups.is_empty()
            && !q.exact
            && self.rollups_cover(Some(q.range))?;
        if by_rollup {
            let (bucket, granularity) = match q.form {
                Form::Hour => (Bucket::Hour, RollupGranularity::Hour),
                _ => (Bucket::Date, RollupGranularity::Day),
            };
            let task_of: std::collections::HashMap<i64, String> = tasks
                .iter()
                .map(|t| (t.link as i64, t.id.to_string()))
                .collect();
            let catalog = std::sync::Arc::clone(&self.catalog);
            let (workspace, range) = (q.workspace.clone(), q.range);
            let pivot = tokio::task::spawn_blocking(move || -> Result<Pivot, ReportError> {
                let rows = catalog.rollup_cells(&workspace, range.from, range.to, granularity)?;
                let cells = rollup::cells(&rows, |r| {
                    if r.key.kind != HitKind::Click || r.key.link == 0 {
                        return None;
                    }
                    Some((task_of.get(&r.key.link)?.clone(), rollup::time_bucket(r)))
                });
                Ok(pivot(&cells, bucket, range, &task_dims, false))
            })
            .await
            .map_err(|e| ReportError::Task(e.to_string()))??;
            return Ok(self.tencent_report(
                q,
                metrics,
                Source::Rollup,
                &tasks,
                ClickPivot::of(&pivot),
                None,
            ));
        }
        let files = self.committed.list(&self.lake, AD_EVENTS, q.range).await?;
        let lf = lake::frame(&self.lake, &files, &columns).await?;
        let (query, tz) = (q.clone(), self.tz);
        let pivots = tokio::task::spawn_blocking(move || -> Result<Vec<Pivot>, ReportError> {
            tables
                .iter()
                .map(|&bucket| {
                    let c = match &lf {
                        Some(lf) if mapping.height() > 0 => {
                            cells(prepared(lf.clone(), &query, tz, mapping.clone(), bucket))?
                        }
                        _ => Cells::default(),
                    };
                    let dims = match query.by {
                        TencentDimension::Task => task_dims.clone(),
                        TencentDimension::Adgroup => {
                            let mut keys: Vec<String> = c.dims.keys().cloned().collect();
                            keys.sort();
                            keys.into_iter().map(|k| (k.clone(), k)).collect()
                        }
                    };
                    Ok(pivot(&c, bucket, query.range, &dims, false))
                })
                .collect()
        })
        .await
        .map_err(|e| ReportError::Task(e.to_string()))??;
        let mut pivots = pivots.iter().map(ClickPivot::of);
        let table = pivots
            .next()
            .ok_or_else(|| ReportError::Task("no table".into()))?;
        Ok(self.tencent_report(q, metrics, Source::Scan, &tasks, table, pivots.next()))
    }

    fn tencent_report(
        &self,
        q: &TencentQuery,
        metrics: Vec<TencentMetric>,
        source: Source,
        tasks: &[FeedbackTask],
        table: ClickPivot,
        os: Option<ClickPivot>,
    ) -> TencentReport {
        TencentReport {
            workspace: q.workspace.clone(),
            form: q.form,
            by: q.by,
            from: q.range.from,
            to: q.range.to,
            time_zone: self.tz.name().to_string(),
            metrics,
            source,
            tasks: tasks
                .iter()
                .map(|t| ScopeTask {
                    id: t.id,
                    name: t.name.clone(),
                    link_id: t.link.to_string(),
                })
                .collect(),
            table,
            os,
        }
    }
}

impl TencentReport {
    /// The detail table as CSV: one line per ad × bucket cell with data.
    pub fn to_csv(&self) -> Result<Vec<u8>, csv::Error> {
        let metric_names: Vec<&str> = self.metrics.iter().map(|m| m.as_str()).collect();
        let rows = self.table.by_dimension.iter().map(|row| DetailRow {
            key: &row.key,
            label: &row.label,
            cells: row
                .children
                .iter()
                .map(|c| {
                    let values = self.metrics.iter().map(|m| c.metrics.value(*m).to_string());
                    (c.key.as_str(), values.collect())
                })
                .collect(),
        });
        let id_column = (self.by == TencentDimension::Task).then_some("task_id");
        detail_csv(
            id_column,
            self.by.as_str(),
            self.table.bucket,
            &metric_names,
            rows,
        )
    }
}
