//! Report parameters as the admin API and the CLI both receive them: `name=value` pairs, where
//! the multi-select filters may repeat or hold comma-separated values. One parser keeps the two
//! front ends identical, including their error messages.

use chrono::NaiveDate;

use super::range::parse_day;
use super::{
    AdMonitoringQuery, DateRange, Dimension, Form, MAX_REPORT_DAYS, Metric, RegionLevel,
    ReportError, TencentDimension, TencentMetric, TencentQuery,
};

/// Output format of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
}

const KNOWN: &[&str] = &[
    "from", "to", "form", "by", "group", "channel", "activity", "region", "metrics", "metric",
    "format", "exact",
];

fn values<'a>(pairs: &'a [(String, String)], name: &'a str) -> impl Iterator<Item = &'a str> {
    pairs
        .iter()
        .filter(move |(k, _)| k == name)
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

fn single<'a>(pairs: &'a [(String, String)], name: &str) -> Result<Option<&'a str>, ReportError> {
    let mut found = pairs
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str());
    let first = found.next();
    if found.next().is_some() {
        return Err(ReportError::Invalid(format!(
            "`{name}` is given more than once"
        )));
    }
    Ok(first.map(str::trim).filter(|v| !v.is_empty()))
}

/// Checks that every parameter is known (a misspelt filter must not silently mean "all").
pub fn check_known(pairs: &[(String, String)], known: &[&str]) -> Result<(), ReportError> {
    for (k, _) in pairs {
        if !known.contains(&k.as_str()) {
            return Err(ReportError::Invalid(format!(
                "unknown parameter `{k}`, expected one of {}",
                known.join(", ")
            )));
        }
    }
    Ok(())
}

/// The requested range (default: the 7 days before today; at most 60 days).
pub fn range(pairs: &[(String, String)], today: NaiveDate) -> Result<DateRange, ReportError> {
    let from = single(pairs, "from")?
        .map(|v| parse_day("from", v))
        .transpose()?;
    let to = single(pairs, "to")?
        .map(|v| parse_day("to", v))
        .transpose()?;
    DateRange::resolve(from, to, today, 7, MAX_REPORT_DAYS)
}

/// `format=json|csv` (default json).
pub fn format(pairs: &[(String, String)]) -> Result<Format, ReportError> {
    match single(pairs, "format")? {
        None | Some("json") => Ok(Format::Json),
        Some("csv") => Ok(Format::Csv),
        Some(other) => Err(ReportError::Invalid(format!(
            "unknown format `{other}`, expected one of json, csv"
        ))),
    }
}

/// `exact=true|false` (default false): scan the committed Parquet for exact uniques instead of
/// answering from the rollups.
fn exact(pairs: &[(String, String)]) -> Result<bool, ReportError> {
    match single(pairs, "exact")? {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(ReportError::Invalid(format!(
            "exact: `{other}` is not true or false"
        ))),
    }
}

/// Parses an ad monitoring query.
pub fn ad_monitoring(
    workspace: &str,
    pairs: &[(String, String)],
    today: NaiveDate,
) -> Result<(AdMonitoringQuery, Format), ReportError> {
    check_known(pairs, KNOWN)?;
    let form: Form = single(pairs, "form")?.unwrap_or("date").parse()?;
    let by: Dimension = single(pairs, "by")?.unwrap_or("group").parse()?;
    let region: RegionLevel = single(pairs, "region")?.unwrap_or("province").parse()?;
    let activities = values(pairs, "activity")
        .map(|v| {
            v.parse::<i64>()
                .map_err(|_| ReportError::Invalid(format!("activity: `{v}` is not an activity id")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let metrics = values(pairs, "metrics")
        .chain(values(pairs, "metric"))
        .map(str::parse)
        .collect::<Result<Vec<Metric>, _>>()?;
    let q = AdMonitoringQuery {
        workspace: workspace.to_string(),
        range: range(pairs, today)?,
        form,
        by,
        groups: values(pairs, "group").map(str::to_string).collect(),
        channels: values(pairs, "channel").map(str::to_string).collect(),
        activities,
        region,
        metrics,
        exact: exact(pairs)?,
    };
    q.shown_metrics()?;
    Ok((q, format(pairs)?))
}

const TENCENT_KNOWN: &[&str] = &[
    "from", "to", "form", "by", "task", "adgroup", "region", "metrics", "metric", "format", "exact",
];

/// Parses a Tencent Ads report query.
pub fn tencent(
    workspace: &str,
    pairs: &[(String, String)],
    today: NaiveDate,
) -> Result<(TencentQuery, Format), ReportError> {
    check_known(pairs, TENCENT_KNOWN)?;
    let form: Form = single(pairs, "form")?.unwrap_or("date").parse()?;
    let by: TencentDimension = single(pairs, "by")?.unwrap_or("task").parse()?;
    let region: RegionLevel = single(pairs, "region")?.unwrap_or("province").parse()?;
    let tasks = values(pairs, "task")
        .map(|v| {
            v.parse::<i64>()
                .map_err(|_| ReportError::Invalid(format!("task: `{v}` is not a feedback task id")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let metrics = values(pairs, "metrics")
        .chain(values(pairs, "metric"))
        .map(str::parse)
        .collect::<Result<Vec<TencentMetric>, _>>()?;
    let q = TencentQuery {
        workspace: workspace.to_string(),
        range: range(pairs, today)?,
        form,
        by,
        tasks,
        adgroups: values(pairs, "adgroup").map(str::to_string).collect(),
        region,
        metrics,
        exact: exact(pairs)?,
    };
    Ok((q, format(pairs)?))
}

/// Parses a dashboard query: the trend's `from`, `to` (default the 7 days before today, at most
/// 60) and `type` (monitoring type: all, impression, click; default all).
pub fn dashboard(
    workspace: &str,
    pairs: &[(String, String)],
    today: NaiveDate,
) -> Result<super::DashboardQuery, ReportError> {
    check_known(pairs, &["from", "to", "type", "format"])?;
    if format(pairs)? != Format::Json {
        return Err(ReportError::Invalid(
            "the dashboard is only answered as json".into(),
        ));
    }
    Ok(super::DashboardQuery {
        workspace: workspace.to_string(),
        range: range(pairs, today)?,
        kind: single(pairs, "type")?.unwrap_or("all").parse()?,
    })
}

/// Parses a data overview query: `from`, `to` (default the 7 days before today, at most 60).
pub fn overview(pairs: &[(String, String)], today: NaiveDate) -> Result<DateRange, ReportError> {
    check_known(pairs, &["from", "to", "format"])?;
    if format(pairs)? != Format::Json {
        return Err(ReportError::Invalid(
            "the overview is only answered as json".into(),
        ));
    }
    range(pairs, today)
}

/// Parses a resource-records query: `from`, `to` (default the last 7 days including today, at
/// most 90).
pub fn resources(pairs: &[(String, String)], today: NaiveDate) -> Result<DateRange, ReportError> {
    check_known(pairs, &["from", "to", "format"])?;
    if format(pairs)? != Format::Json {
        return Err(ReportError::Invalid(
            "resource records are only answered as json".into(),
        ));
    }
    let from = single(pairs, "from")?
        .map(|v| parse_day("from", v))
        .transpose()?;
    let to = single(pairs, "to")?
        .map(|v| parse_day("to", v))
        .transpose()?;
    let to = match (from, to) {
        (None, None) => Some(today),
        (_, to) => to,
    };
    DateRange::resolve(from, to, today, 7, super::overview::MAX_RESOURCE_DAYS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(s: &[(&str, &str)]) -> Vec<(String, String)> {
        s.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 3, 10).unwrap_or_default()
    }

    #[test]
    fn filters_repeat_or_split_on_commas() -> Result<(), ReportError> {
        let (q, f) = ad_monitoring(
            "ws",
            &pairs(&[
                ("group", "a,b"),
                ("group", "c"),
                ("activity", "1, 2"),
                ("form", "hour"),
                ("by", "activity"),
                ("format", "csv"),
            ]),
            today(),
        )?;
        assert_eq!(q.groups, ["a", "b", "c"]);
        assert_eq!(q.activities, [1, 2]);
        assert_eq!(
            (q.form, q.by, f),
            (Form::Hour, Dimension::Activity, Format::Csv)
        );
        Ok(())
    }

    #[test]
    fn bad_input_is_named() {
        let cases = [
            (vec![("form", "week")], "unknown form `week`"),
            (vec![("by", "media")], "unknown dimension `media`"),
            (vec![("metrics", "cpc")], "unknown metric `cpc`"),
            (
                vec![("form", "audience"), ("metrics", "ctr")],
                "only shown by",
            ),
            (vec![("activity", "x")], "not an activity id"),
            (vec![("grup", "a")], "unknown parameter `grup`"),
            (
                vec![("from", "2026-01-01"), ("to", "2026-03-09")],
                "at most 60",
            ),
            (
                vec![("from", "2026-03-09"), ("to", "2026-03-01")],
                "before it starts",
            ),
            (vec![("format", "xml")], "unknown format"),
        ];
        for (p, expected) in cases {
            let got = ad_monitoring("ws", &pairs(&p), today());
            assert!(
                matches!(&got, Err(ReportError::Invalid(m)) if m.contains(expected)),
                "{p:?}: {got:?}"
            );
        }
    }
}
