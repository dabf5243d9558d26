//! Data overview (数据概览, R39–R42) and resource records (数据资源, R62–R67), both from the
//! catalog's counters, which every `ad_events` batch commits together with its files (so they
//! agree with the lake exactly and cost no scan).

use std::collections::BTreeMap;

use chrono::{DateTime, Days, NaiveDate};
use serde::Serialize;

use super::{DateRange, ReportError, Reports};
use crate::catalog::{Purchase, QuotaStatus};

/// The longest resource-record range (R67).
pub const MAX_RESOURCE_DAYS: u64 = 90;

/// New data of one day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Volume {
    /// Impressions + clicks (新增数据总量).
    pub total: u64,
    /// Clicks (新增计费数据量).
    pub billable: u64,
}

impl std::ops::AddAssign for Volume {
    fn add_assign(&mut self, o: Volume) {
        self.total += o.total;
        self.billable += o.billable;
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DayVolume {
    pub day: NaiveDate,
    #[serde(flatten)]
    pub volume: Volume,
}

/// The data overview of a workspace.
#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    pub workspace: String,
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// Sum over the range.
    pub range: Volume,
    /// One point per day of the range (zeros included).
    pub series: Vec<DayVolume>,
    pub today: Volume,
    /// Today and the 6 days before.
    pub last_7_days: Volume,
    /// Today and the 29 days before.
    pub last_month: Volume,
    pub cumulative: Volume,
}

/// One day's usage with what remained at its end (None while the workspace is unmetered).
#[derive(Debug, Clone, Serialize)]
pub struct UsageRecord {
    pub day: NaiveDate,
    pub used: u64,
    pub remaining: Option<u64>,
}

/// Resource records of a workspace.
#[derive(Debug, Clone, Serialize)]
pub struct Resources {
    pub workspace: String,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub quota: QuotaStatus,
    pub purchases: Vec<Purchase>,
    /// Days with usage, oldest first.
    pub usage: Vec<UsageRecord>,
}

impl Reports {
    fn day_volumes(
        &self,
        workspace: &str,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<BTreeMap<NaiveDate, Volume>, ReportError> {
        let mut out: BTreeMap<NaiveDate, Volume> = BTreeMap::new();
        for d in self.catalog.activity_days(workspace, from, to)? {
            *out.entry(d.day).or_default() += Volume {
                total: d.impressions + d.clicks,
                billable: d.clicks,
            };
        }
        Ok(out)
    }

    /// The data overview over `range`, with today / 7 days / month / cumulative figures.
    pub fn overview(&self, workspace: &str, range: DateRange) -> Result<Overview, ReportError> {
        let today = self.today();
        let month_start = today - Days::new(29);
        let first = range.from.min(month_start);
        let days = self.day_volumes(workspace, first, range.to.max(today))?;
        let sum = |from: NaiveDate, to: NaiveDate| {
            let mut v = Volume::default();
            for (_, d) in days.range(from..=to) {
                v += *d;
            }
            v
        };
        let mut cumulative = Volume::default();
        for t in self.catalog.activity_totals(workspace)?.values() {
            cumulative += Volume {
                total: t.impressions + t.clicks,
                billable: t.clicks,
            };
        }
        Ok(Overview {
            workspace: workspace.to_string(),
            from: range.from,
            to: range.to,
            range: sum(range.from, range.to),
            series: range
                .iter()
                .map(|day| DayVolume {
                    day,
                    volume: days.get(&day).copied().unwrap_or_default(),
                })
                .collect(),
            today: sum(today, today),
            last_7_days: sum(today - Days::new(6), today),
            last_month: sum(month_start, today),
            cumulative,
        })
    }

    /// Purchases and daily usage over `range`. The remaining count at the end of a day is
    /// reconstructed backwards from today's: remaining now + clicks used after that day −
    /// purchases made after it.
    pub fn resources(&self, workspace: &str, range: DateRange) -> Result<Resources, ReportError> {
        let today = self.today();
        let quota = self.catalog.quota(workspace)?;
        let all_purchases = self.catalog.quota_purchases(workspace)?;
        let purchase_day = |p: &Purchase| {
            DateTime::parse_from_rfc3339(&p.at)
                .map(|t| t.with_timezone(&self.tz).date_naive())
                .map_err(|e| ReportError::Task(format!("purchase {} time `{}`: {e}", p.id, p.at)))
        };
        let mut purchases = Vec::new();
        let mut bought_by_day: BTreeMap<NaiveDate, u64> = BTreeMap::new();
        for p in all_purchases {
            let day = purchase_day(&p)?;
            *bought_by_day.entry(day).or_default() += p.clicks;
            if day >= range.from && day <= range.to {
                purchases.push(p);
            }
        }
        let usage_days = self
            .catalog
            .usage_by_day(workspace, range.from, range.to.max(today))?;
        let mut usage = Vec::new();
        for u in usage_days.iter().filter(|u| u.day <= range.to) {
            let remaining = quota.remaining.map(|now| {
                let used_after: u64 = usage_days
                    .iter()
                    .filter(|x| x.day > u.day)
                    .map(|x| x.clicks)
                    .sum();
                let bought_after: u64 = bought_by_day
                    .range(u.day.succ_opt().unwrap_or(u.day)..)
                    .filter(|(d, _)| **d > u.day)
                    .map(|(_, c)| *c)
                    .sum();
                (now + used_after).saturating_sub(bought_after)
            });
            usage.push(UsageRecord {
                day: u.day,
                used: u.clicks,
                remaining,
            });
        }
        Ok(Resources {
            workspace: workspace.to_string(),
            from: range.from,
            to: range.to,
            quota,
            purchases,
            usage,
        })
    }
}
