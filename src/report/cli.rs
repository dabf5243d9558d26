//! `backflow report …`: the same queries as the admin API's report routes, computed in-process
//! from the catalog and the lake (`--data-dir` / config like the other commands). Arguments are
//! turned into the API's parameters and parsed by the same code, so both answer alike.

use std::io::Write;

use clap::{Args, Subcommand};

use super::params::{self, Format};
use super::range::parse_day;
use super::{DateRange, Report, ReportError, Reports};

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Ad monitoring report (广告监测数据): impressions, clicks, unique impressions and clicks, CTR.
    AdMonitoring(AdMonitoringArgs),
    /// Tencent Ads report (腾讯广告数据): clicks and unique clicks of the feedback tasks, by ad.
    Tencent(TencentArgs),
    /// Dashboard (仪表盘): quota, volume with change, distinct IDs per type, growth trend.
    Dashboard(DashboardArgs),
    /// Data overview (数据概览): new total and billable data, today / 7 days / month / cumulative.
    Overview(RangeArgs),
    /// Resource records (数据资源): purchases and daily usage with the remaining count.
    Resources(RangeArgs),
    /// Recomputes the report rollups from the committed `ad_events` Parquet (every workspace),
    /// one day per transaction: by default the days that landed before rollups existed.
    RebuildRollups(RebuildArgs),
}

#[derive(Debug, Args)]
pub struct RebuildArgs {
    /// First day to rebuild (YYYY-MM-DD, lake time zone); with `--to`.
    #[arg(long, requires = "to")]
    pub from: Option<String>,
    /// Last day to rebuild, included; with `--from`.
    #[arg(long, requires = "from")]
    pub to: Option<String>,
    /// JSON (the only output; the flag keeps scripts explicit).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RangeArgs {
    #[arg(long)]
    pub workspace: String,
    /// First day (YYYY-MM-DD, workspace time zone).
    #[arg(long)]
    pub from: Option<String>,
    /// Last day, included.
    #[arg(long)]
    pub to: Option<String>,
    /// JSON (the only output today; the flag keeps scripts explicit).
    #[arg(long)]
    pub json: bool,
}

impl RangeArgs {
    fn pairs(&self) -> Vec<(String, String)> {
        let mut pairs = Vec::new();
        push(&mut pairs, "from", self.from.as_slice());
        push(&mut pairs, "to", self.to.as_slice());
        pairs
    }
}

fn json_out(value: &impl serde::Serialize, out: &mut dyn Write) -> Result<(), ReportError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| ReportError::Task(e.to_string()))?;
    writeln!(out, "{text}").map_err(|e| ReportError::Task(format!("writing the report: {e}")))
}

/// What the ad monitoring and the Tencent report share: workspace, range, form, region,
/// metrics and output.
#[derive(Debug, Args)]
pub struct LinkReportArgs {
    #[arg(long)]
    pub workspace: String,
    /// First day (YYYY-MM-DD, workspace time zone; default: 7 days before today).
    #[arg(long)]
    pub from: Option<String>,
    /// Last day, included (default: yesterday). At most 60 days in all.
    #[arg(long)]
    pub to: Option<String>,
    /// date, hour or audience.
    #[arg(long, default_value = "date")]
    pub form: String,
    /// Audience form: province or city.
    #[arg(long, default_value = "province")]
    pub region: String,
    /// Metrics to show (default: all of the report's; ad monitoring: impressions, clicks,
    /// unique_impressions, unique_clicks, ctr; Tencent: clicks, unique_clicks).
    #[arg(long)]
    pub metrics: Vec<String>,
    /// Print the report as JSON (the API's shape).
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Print the detail table as CSV (the API's export).
    #[arg(long)]
    pub csv: bool,
    /// Exact uniques from a scan of the committed Parquet instead of the rollups.
    #[arg(long)]
    pub exact: bool,
}

impl LinkReportArgs {
    /// The API's query parameters: these, with `by` and the report's own filters.
    fn pairs(&self, by: &str, filters: &[(&str, &[String])]) -> Vec<(String, String)> {
        let mut pairs = Vec::new();
        push(&mut pairs, "from", self.from.as_slice());
        push(&mut pairs, "to", self.to.as_slice());
        push(&mut pairs, "form", std::slice::from_ref(&self.form));
        pairs.push(("by".into(), by.to_string()));
        for (name, values) in filters {
            push(&mut pairs, name, values);
        }
        push(&mut pairs, "region", std::slice::from_ref(&self.region));
        push(&mut pairs, "metrics", &self.metrics);
        if self.csv {
            pairs.push(("format".into(), "csv".into()));
        }
        if self.exact {
            pairs.push(("exact".into(), "true".into()));
        }
        pairs
    }
}

fn push(pairs: &mut Vec<(String, String)>, name: &str, values: &[String]) {
    pairs.extend(values.iter().map(|v| (name.to_string(), v.clone())));
}

#[derive(Debug, Args)]
pub struct AdMonitoringArgs {
    #[command(flatten)]
    pub common: LinkReportArgs,
    /// group, channel or activity.
    #[arg(long, default_value = "group")]
    pub by: String,
    /// Only these activity groups (repeat or comma-separate).
    #[arg(long)]
    pub group: Vec<String>,
    /// Only these channels (media ids).
    #[arg(long)]
    pub channel: Vec<String>,
    /// Only these activity ids.
    #[arg(long)]
    pub activity: Vec<String>,
}

impl AdMonitoringArgs {
    fn pairs(&self) -> Vec<(String, String)> {
        self.common.pairs(
            &self.by,
            &[
                ("group", &self.group),
                ("channel", &self.channel),
                ("activity", &self.activity),
            ],
        )
    }
}

#[derive(Debug, Args)]
pub struct TencentArgs {
    #[command(flatten)]
    pub common: LinkReportArgs,
    /// task (feedback task name) or adgroup (Tencent ad id).
    #[arg(long, default_value = "task")]
    pub by: String,
    /// Only these feedback task ids (repeat or comma-separate).
    #[arg(long)]
    pub task: Vec<String>,
    /// Only these Tencent ad ids (adgroup_id).
    #[arg(long)]
    pub adgroup: Vec<String>,
}

impl TencentArgs {
    fn pairs(&self) -> Vec<(String, String)> {
        self.common.pairs(
            &self.by,
            &[("task", &self.task), ("adgroup", &self.adgroup)],
        )
    }
}

#[derive(Debug, Args)]
pub struct DashboardArgs {
    #[arg(long)]
    pub workspace: String,
    /// First day of the trend (YYYY-MM-DD; default: 7 days before today).
    #[arg(long)]
    pub from: Option<String>,
    /// Last day of the trend, included (default: yesterday). At most 60 days in all.
    #[arg(long)]
    pub to: Option<String>,
    /// Monitoring type of the trend: all, impression or click.
    #[arg(long = "type", default_value = "all")]
    pub kind: String,
    /// JSON (the only output; the flag keeps scripts explicit).
    #[arg(long)]
    pub json: bool,
}

/// Runs a report command, writing the answer to `out`.
pub async fn run(
    reports: &Reports,
    command: ReportCommand,
    out: &mut dyn Write,
) -> Result<(), ReportError> {
    let io = |e: std::io::Error| ReportError::Task(format!("writing the report: {e}"));
    match command {
        ReportCommand::AdMonitoring(args) => {
            let (q, format) =
                params::ad_monitoring(&args.common.workspace, &args.pairs(), reports.today())?;
            let report = reports.ad_monitoring(&q).await?;
            match (format, args.common.json) {
                (_, true) => {
                    let text = serde_json::to_string_pretty(&report)
                        .map_err(|e| ReportError::Task(e.to_string()))?;
                    writeln!(out, "{text}").map_err(io)?;
                }
                (Format::Csv, false) => {
                    let body = report
                        .to_csv()
                        .map_err(|e| ReportError::Task(e.to_string()))?;
                    out.write_all(&body).map_err(io)?;
                }
                (Format::Json, false) => print_text(&report, out).map_err(io)?,
            }
        }
        ReportCommand::Tencent(args) => {
            let (q, format) =
                params::tencent(&args.common.workspace, &args.pairs(), reports.today())?;
            let report = reports.tencent(&q).await?;
            match (format, args.common.json) {
                (Format::Csv, false) => {
                    let body = report
                        .to_csv()
                        .map_err(|e| ReportError::Task(e.to_string()))?;
                    out.write_all(&body).map_err(io)?;
                }
                _ => json_out(&report, out)?,
            }
        }
        ReportCommand::Dashboard(args) => {
            let mut pairs = Vec::new();
            push(&mut pairs, "from", args.from.as_slice());
            push(&mut pairs, "to", args.to.as_slice());
            push(&mut pairs, "type", std::slice::from_ref(&args.kind));
            let q = params::dashboard(&args.workspace, &pairs, reports.today())?;
            json_out(&reports.dashboard(&q).await?, out)?;
        }
        ReportCommand::Overview(args) => {
            let range = params::overview(&args.pairs(), reports.today())?;
            json_out(&reports.overview(&args.workspace, range)?, out)?;
        }
        ReportCommand::Resources(args) => {
            let range = params::resources(&args.pairs(), reports.today())?;
            json_out(&reports.resources(&args.workspace, range)?, out)?;
        }
        ReportCommand::RebuildRollups(args) => {
            let range = match (&args.from, &args.to) {
                (Some(from), Some(to)) => {
                    let (from, to) = (parse_day("from", from)?, parse_day("to", to)?);
                    if to < from {
                        return Err(ReportError::Invalid(format!(
                            "the range ends ({to}) before it starts ({from})"
                        )));
                    }
                    Some(DateRange { from, to })
                }
                _ => None,
            };
            json_out(&reports.rebuild_rollups(range).await?, out)?;
        }
    }
    Ok(())
}

/// A readable table: each dimension row with its buckets below it, then the total.
fn print_text(report: &Report, out: &mut dyn Write) -> std::io::Result<()> {
    let metrics = &report.metrics;
    writeln!(
        out,
        "{} report of {} by {} from {} to {} ({})",
        report.form, report.workspace, report.by, report.from, report.to, report.time_zone
    )?;
    if report.table.total.approximate {
        writeln!(
            out,
            "(some unique counts are HyperLogLog estimates: 0.81 % relative standard error)"
        )?;
    }
    let header: Vec<&str> = metrics.iter().map(|m| m.as_str()).collect();
    writeln!(
        out,
        "{}\t{}\t{}",
        report.by,
        report.table.bucket,
        header.join("\t")
    )?;
    let line = |m: &super::ad_monitoring::Metrics| -> String {
        metrics
            .iter()
            .map(|x| m.text(*x))
            .collect::<Vec<_>>()
            .join("\t")
    };
    for row in &report.table.by_dimension {
        writeln!(out, "{}\t(all)\t{}", row.label, line(&row.metrics))?;
        for child in &row.children {
            writeln!(out, "\t{}\t{}", child.label, line(&child.metrics))?;
        }
    }
    writeln!(out, "total\t\t{}", line(&report.table.total))?;
    if let Some(os) = &report.os {
        writeln!(out, "os\t\t{}", header.join("\t"))?;
        for row in &os.by_bucket {
            writeln!(out, "{}\t\t{}", row.label, line(&row.metrics))?;
        }
    }
    Ok(())
}
