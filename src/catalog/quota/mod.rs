//! Quota (purchased click records per workspace), its usage, the staging store for records held
//! out of the lake while a workspace's quota is exhausted, and the per-activity per-day counters.
//!
//! Everything a batch changes here (usage, counters, staged and released records, activities
//! paused for quota) is written by [`Catalog::commit_metered_batch`] in the same transaction
//! that commits the batch, so a crash and replay never counts, stages or releases twice.
//!
//! A workspace is *metered* from its first purchase on: before that it is unlimited (its clicks
//! are still counted per day, but not charged). `used` counts the clicks charged against
//! purchases; `remaining = purchased - used`.

use std::collections::{BTreeMap, HashMap};

use chrono::NaiveDate;
use rusqlite::OptionalExtension;
use serde::Serialize;

use super::activities::ActivityStatus;
use super::batches::{BatchStats, mark_committed};
use super::{Catalog, CatalogError, audit_in, now};

/// Schema of this module (one entry of `MIGRATIONS`).
pub(super) const MIGRATION: &str = r#"
CREATE TABLE quota_accounts (
    workspace   TEXT PRIMARY KEY,
    purchased   INTEGER NOT NULL,
    used        INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE quota_purchases (
    id          INTEGER PRIMARY KEY,
    workspace   TEXT NOT NULL,
    clicks      INTEGER NOT NULL CHECK (clicks > 0),
    at          TEXT NOT NULL,
    actor       TEXT NOT NULL,
    note        TEXT
);
CREATE INDEX quota_purchases_by_workspace ON quota_purchases (workspace, id);
CREATE TABLE quota_usage (
    workspace   TEXT NOT NULL,
    day         TEXT NOT NULL,
    clicks      INTEGER NOT NULL,
    PRIMARY KEY (workspace, day)
) WITHOUT ROWID;
CREATE TABLE quota_staged (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    pipeline    TEXT NOT NULL,
    workspace   TEXT NOT NULL,
    position    INTEGER NOT NULL,
    billable    INTEGER NOT NULL,
    received_at TEXT NOT NULL,
    staged_at   TEXT NOT NULL,
    record      BLOB NOT NULL
);
CREATE INDEX quota_staged_by_workspace ON quota_staged (pipeline, workspace, billable, id);
CREATE INDEX quota_staged_by_age ON quota_staged (received_at);
CREATE INDEX quota_staged_status ON quota_staged (workspace, billable, received_at);
CREATE TABLE activity_day_counts (
    activity_id  INTEGER NOT NULL,
    day          TEXT NOT NULL,
    workspace    TEXT NOT NULL,
    impressions  INTEGER NOT NULL DEFAULT 0,
    clicks       INTEGER NOT NULL DEFAULT 0,
    dedup_clicks INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (activity_id, day)
) WITHOUT ROWID;
CREATE INDEX activity_day_counts_by_workspace ON activity_day_counts (workspace, day);
CREATE TABLE activity_day_click_keys (
    activity_id INTEGER NOT NULL,
    day         TEXT NOT NULL,
    key         INTEGER NOT NULL,
    PRIMARY KEY (activity_id, day, key)
) WITHOUT ROWID;
"#;

/// Longest accepted purchase (a typo guard, far above any real package).
pub const MAX_PURCHASE: u64 = 1_000_000_000_000;

/// A workspace's quota.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuotaStatus {
    pub workspace: String,
    /// Whether the workspace ever bought quota (before its first purchase it is unlimited).
    pub metered: bool,
    /// Click records bought, in all.
    pub purchased: u64,
    /// Click records charged against purchases.
    pub used: u64,
    /// `purchased - used`; `None` while unmetered (unlimited).
    pub remaining: Option<u64>,
    /// Records held out of the lake, waiting for quota.
    pub staged: u64,
    /// Of which clicks (what a top-up must cover to release them all).
    pub staged_clicks: u64,
    /// Receive time of the oldest staged record (RFC 3339), if any.
    pub oldest_staged: Option<String>,
}

/// One purchase (资源包).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Purchase {
    pub id: i64,
    pub workspace: String,
    pub clicks: u64,
    pub at: String,
    pub actor: String,
    pub note: Option<String>,
}

/// Billable clicks landed on one day (pipeline time zone), metered or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DayUsage {
    pub day: NaiveDate,
    pub clicks: u64,
}

/// An activity's counters summed over days.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ActivityTotals {
    pub impressions: u64,
    /// Clicks and Tencent feedback clicks.
    pub clicks: u64,
    /// Distinct (device key, activity, day) click pairs, summed over days.
    pub dedup_clicks: u64,
}

/// An activity's counters on one day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActivityDay {
    pub activity_id: i64,
    pub day: NaiveDate,
    pub impressions: u64,
    pub clicks: u64,
    pub dedup_clicks: u64,
}

/// What planning a batch needs to know about one workspace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReleasePlan {
    /// Clicks the workspace may still land (`None`: unmetered) before this batch's release.
    pub remaining: Option<u64>,
    /// Staged records to release first: ids below this one (in id order); `None`: none.
    pub release: Option<Release>,
    /// Staged records left after the release (non-zero: the workspace keeps staging).
    pub staged_after: u64,
}

/// A release decided at planning time: every staged record of the workspace with an id below
/// `below` (there are `rows` of them, `clicks` billable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Release {
    pub below: i64,
    pub rows: u64,
    pub clicks: u64,
}

/// A staged record as read back for release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedRecord {
    pub id: i64,
    /// Its journal position (its lineage line in the lake).
    pub position: u64,
    pub record: Vec<u8>,
}

/// A record to stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewStaged {
    pub workspace: String,
    pub position: u64,
    pub billable: bool,
    /// The hit's receive time (RFC 3339); staged records are purged by it.
    pub received_at: String,
    pub record: Vec<u8>,
}

/// Counter increments of one activity on one day.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActivityDayDelta {
    pub impressions: u64,
    pub clicks: u64,
}

/// Everything a metered batch changes besides the batch itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeterEffects {
    /// Releases, per workspace, as planned.
    pub release: BTreeMap<String, Release>,
    /// Records held out of the lake, in journal order.
    pub stage: Vec<NewStaged>,
    /// Billable clicks landed per (workspace, day).
    pub usage: BTreeMap<(String, String), u64>,
    /// Per (workspace, activity, day).
    pub activity_days: BTreeMap<(String, i64, String), ActivityDayDelta>,
    /// Device-key hashes of landed clicks per (activity, day), for deduplicated clicks.
    pub click_keys: Vec<(String, i64, String, i64)>,
    /// What the landed rows add to the report rollups.
    pub rollups: super::rollups::RollupDelta,
    /// Event ids of replayed Kafka-journal records the batch landed (`replays`).
    pub replayed: Vec<String>,
}

/// What a metered commit did beyond the batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeterOutcome {
    /// Workspaces whose `on` activities were switched to `paused_quota`, with their ids.
    pub paused: BTreeMap<String, Vec<i64>>,
    /// Every workspace the batch touched (for refreshing gauges).
    pub workspaces: Vec<String>,
}

/// Staged records purged for age, per workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purged {
    pub workspace: String,
    pub records: u64,
    pub clicks: u64,
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn parse_day(day: &str) -> Result<NaiveDate, CatalogError> {
    NaiveDate::parse_from_str(day, "%Y-%m-%d")
        .map_err(|e| CatalogError::Corrupt(format!("day `{day}`: {e}")))
}

fn status_in(conn: &rusqlite::Connection, workspace: &str) -> Result<QuotaStatus, CatalogError> {
    let account: Option<(i64, i64)> = conn
        .query_row(
            "SELECT purchased, used FROM quota_accounts WHERE workspace = ?1",
            [workspace],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (staged, staged_clicks, oldest): (i64, i64, Option<String>) = conn.query_row(
        "SELECT count(*), coalesce(sum(billable), 0), min(received_at) FROM quota_staged
         WHERE workspace = ?1",
        [workspace],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let (purchased, used) = account.map_or((0, 0), |(p, u)| (to_u64(p), to_u64(u)));
    Ok(QuotaStatus {
        workspace: workspace.to_string(),
        metered: account.is_some(),
        purchased,
        used,
        remaining: account.map(|_| purchased.saturating_sub(used)),
        staged: to_u64(staged),
        staged_clicks: to_u64(staged_clicks),
        oldest_staged: oldest,
    })
}

impl Catalog {
    /// Records a purchase of `clicks` click records for a workspace (audited). The first
    /// purchase makes the workspace metered.
    pub fn add_quota(
        &self,
        workspace: &str,
        clicks: u64,
        actor: &str,
        note: Option<&str>,
    ) -> Result<QuotaStatus, CatalogError> {
        let workspace = workspace.trim();
        if workspace.is_empty() || workspace.chars().count() > 100 {
            return Err(CatalogError::Invalid(
                "workspace: must be 1 to 100 characters".into(),
            ));
        }
        if clicks == 0 || clicks > MAX_PURCHASE {
            return Err(CatalogError::Invalid(format!(
                "clicks: must be from 1 to {MAX_PURCHASE}"
            )));
        }
        if note.is_some_and(|n| n.chars().count() > 500) {
            return Err(CatalogError::Invalid("note: at most 500 characters".into()));
        }
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let at = now();
        tx.execute(
            "INSERT INTO quota_purchases (workspace, clicks, at, actor, note) VALUES (?1, ?2, ?3, ?4, ?5)",
            (workspace, to_i64(clicks), &at, actor, note),
        )?;
        tx.execute(
            "INSERT INTO quota_accounts (workspace, purchased, used, created_at, updated_at)
             VALUES (?1, ?2, 0, ?3, ?3)
             ON CONFLICT (workspace) DO UPDATE SET purchased = purchased + excluded.purchased,
                 updated_at = excluded.updated_at",
            (workspace, to_i64(clicks), &at),
        )?;
        let status = status_in(&tx, workspace)?;
        audit_in(
            &tx,
            actor,
            "quota.add",
            &format!(
                "workspace={workspace} clicks={clicks} purchased={} remaining={}{}",
                status.purchased,
                status.remaining.unwrap_or(0),
                note.map(|n| format!(" note={n}")).unwrap_or_default()
            ),
        )?;
        tx.commit()?;
        Ok(status)
    }

    /// A workspace's quota (an unknown workspace is unmetered with nothing used).
    pub fn quota(&self, workspace: &str) -> Result<QuotaStatus, CatalogError> {
        status_in(&self.conn(), workspace)
    }

    /// The quota of every workspace that is metered or has staged records, by name.
    pub fn quotas(&self) -> Result<Vec<QuotaStatus>, CatalogError> {
        let conn = self.conn();
        let names: Vec<String> = conn
            .prepare(
                "SELECT workspace FROM quota_accounts
                 UNION SELECT DISTINCT workspace FROM quota_staged ORDER BY 1",
            )?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        names.iter().map(|w| status_in(&conn, w)).collect()
    }

    /// A workspace's purchases, oldest first.
    pub fn quota_purchases(&self, workspace: &str) -> Result<Vec<Purchase>, CatalogError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, workspace, clicks, at, actor, note FROM quota_purchases
             WHERE workspace = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([workspace], |r| {
            Ok(Purchase {
                id: r.get(0)?,
                workspace: r.get(1)?,
                clicks: to_u64(r.get(2)?),
                at: r.get(3)?,
                actor: r.get(4)?,
                note: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Billable clicks landed per day in `[from, to]` (days without clicks are left out).
    pub fn usage_by_day(
        &self,
        workspace: &str,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<DayUsage>, CatalogError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT day, clicks FROM quota_usage WHERE workspace = ?1 AND day >= ?2 AND day <= ?3
             ORDER BY day",
        )?;
        let rows = stmt.query_map((workspace, from.to_string(), to.to_string()), |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })?;
        rows.map(|r| {
            let (day, clicks) = r?;
            Ok(DayUsage {
                day: parse_day(&day)?,
                clicks: to_u64(clicks),
            })
        })
        .collect()
    }

    /// Per-activity counters of a workspace, summed over all days.
    pub fn activity_totals(
        &self,
        workspace: &str,
    ) -> Result<HashMap<i64, ActivityTotals>, CatalogError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT activity_id, sum(impressions), sum(clicks), sum(dedup_clicks)
             FROM activity_day_counts WHERE workspace = ?1 GROUP BY activity_id",
        )?;
        let rows = stmt.query_map([workspace], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                ActivityTotals {
                    impressions: to_u64(r.get(1)?),
                    clicks: to_u64(r.get(2)?),
                    dedup_clicks: to_u64(r.get(3)?),
                },
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Per-activity per-day counters of a workspace in `[from, to]`, by day then activity.
    pub fn activity_days(
        &self,
        workspace: &str,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<ActivityDay>, CatalogError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT activity_id, day, impressions, clicks, dedup_clicks FROM activity_day_counts
             WHERE workspace = ?1 AND day >= ?2 AND day <= ?3 ORDER BY day, activity_id",
        )?;
        let rows = stmt.query_map((workspace, from.to_string(), to.to_string()), |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })?;
        rows.map(|r| {
            let (activity_id, day, impressions, clicks, dedup) = r?;
            Ok(ActivityDay {
                activity_id,
                day: parse_day(&day)?,
                impressions: to_u64(impressions),
                clicks: to_u64(clicks),
                dedup_clicks: to_u64(dedup),
            })
        })
        .collect()
    }

    /// For planning a batch: the quota of each named workspace and of every workspace with
    /// records staged by `pipeline`, with the release of staged records its quota allows (in
    /// staging order, stopping before the first click that does not fit; at most `max_release`
    /// records in all).
    pub fn plan_releases(
        &self,
        pipeline: &str,
        workspaces: &[&str],
        max_release: usize,
    ) -> Result<BTreeMap<String, ReleasePlan>, CatalogError> {
        let conn = self.conn();
        let mut names: Vec<String> = conn
            .prepare("SELECT DISTINCT workspace FROM quota_staged WHERE pipeline = ?1")?
            .query_map([pipeline], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        names.extend(workspaces.iter().map(|w| w.to_string()));
        names.sort();
        names.dedup();
        let mut budget = max_release as u64;
        let mut plans = BTreeMap::new();
        for workspace in names {
            let remaining: Option<u64> = conn
                .query_row(
                    "SELECT purchased, used FROM quota_accounts WHERE workspace = ?1",
                    [&workspace],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
                )
                .optional()?
                .map(|(p, u)| to_u64(p).saturating_sub(to_u64(u)));
            let staged: i64 = conn.query_row(
                "SELECT count(*) FROM quota_staged WHERE pipeline = ?1 AND workspace = ?2",
                (pipeline, &workspace),
                |r| r.get(0),
            )?;
            let mut plan = ReleasePlan {
                remaining,
                release: None,
                staged_after: to_u64(staged),
            };
            if staged > 0 && remaining != Some(0) && budget > 0 {
                let nth = |sql: &str, n: u64| -> Result<Option<i64>, CatalogError> {
                    Ok(conn
                        .query_row(sql, (pipeline, &workspace, to_i64(n)), |r| r.get(0))
                        .optional()?)
                };
                // The first click that does not fit, and the first record over the budget.
                let click_cut = match remaining {
                    Some(r) => nth(
                        "SELECT id FROM quota_staged WHERE pipeline = ?1 AND workspace = ?2
                         AND billable = 1 ORDER BY id LIMIT 1 OFFSET ?3",
                        r,
                    )?,
                    None => None,
                };
                let size_cut = nth(
                    "SELECT id FROM quota_staged WHERE pipeline = ?1 AND workspace = ?2
                     ORDER BY id LIMIT 1 OFFSET ?3",
                    budget,
                )?;
                let below = match (click_cut, size_cut) {
                    (Some(a), Some(b)) => a.min(b),
                    (Some(a), None) | (None, Some(a)) => a,
                    (None, None) => i64::MAX,
                };
                let (rows, clicks): (i64, i64) = conn.query_row(
                    "SELECT count(*), coalesce(sum(billable), 0) FROM quota_staged
                     WHERE pipeline = ?1 AND workspace = ?2 AND id < ?3",
                    (pipeline, &workspace, below),
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                if rows > 0 {
                    budget = budget.saturating_sub(to_u64(rows));
                    plan.staged_after = to_u64(staged - rows);
                    plan.release = Some(Release {
                        below,
                        rows: to_u64(rows),
                        clicks: to_u64(clicks),
                    });
                }
            }
            plans.insert(workspace, plan);
        }
        Ok(plans)
    }

    /// The staged records of a planned release, in staging order.
    pub fn staged_records(
        &self,
        pipeline: &str,
        workspace: &str,
        below: i64,
    ) -> Result<Vec<StagedRecord>, CatalogError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, position, record FROM quota_staged
             WHERE pipeline = ?1 AND workspace = ?2 AND id < ?3 ORDER BY id",
        )?;
        let rows = stmt.query_map((pipeline, workspace, below), |r| {
            Ok(StagedRecord {
                id: r.get(0)?,
                position: to_u64(r.get(1)?),
                record: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Commits a metered batch: the batch, its releases and staged records, usage, activity
    /// counters, and the switch of a workspace's `on` activities to `paused_quota` when its
    /// quota ran out, all in one transaction.
    pub fn commit_metered_batch(
        &self,
        pipeline: &str,
        seq: i64,
        stats: &BatchStats,
        effects: &MeterEffects,
    ) -> Result<MeterOutcome, CatalogError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        mark_committed(&tx, pipeline, seq, &[], stats)?;
        let mut outcome = MeterOutcome::default();
        let mut touched: Vec<String> = Vec::new();

        for (workspace, release) in &effects.release {
            let n = tx.execute(
                "DELETE FROM quota_staged WHERE pipeline = ?1 AND workspace = ?2 AND id < ?3",
                (pipeline, workspace, release.below),
            )?;
            if n as u64 != release.rows {
                return Err(CatalogError::Corrupt(format!(
                    "batch {pipeline}/{seq} releases {} staged records of `{workspace}`, found {n}",
                    release.rows
                )));
            }
            touched.push(workspace.clone());
        }
        let staged_at = now();
        {
            let mut insert = tx.prepare(
                "INSERT INTO quota_staged (pipeline, workspace, position, billable, received_at,
                    staged_at, record) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for s in &effects.stage {
                insert.execute(rusqlite::params![
                    pipeline,
                    s.workspace,
                    to_i64(s.position),
                    s.billable,
                    s.received_at,
                    staged_at,
                    s.record,
                ])?;
            }
        }
        let staging: std::collections::BTreeSet<&str> =
            effects.stage.iter().map(|s| s.workspace.as_str()).collect();

        let mut charged: BTreeMap<&str, u64> = BTreeMap::new();
        for ((workspace, day), clicks) in &effects.usage {
            tx.execute(
                "INSERT INTO quota_usage (workspace, day, clicks) VALUES (?1, ?2, ?3)
                 ON CONFLICT (workspace, day) DO UPDATE SET clicks = clicks + excluded.clicks",
                (workspace, day, to_i64(*clicks)),
            )?;
            *charged.entry(workspace).or_default() += clicks;
        }
        let mut ran_out: Vec<&str> = Vec::new();
        for (workspace, clicks) in &charged {
            let n = tx.execute(
                "UPDATE quota_accounts SET used = used + ?1, updated_at = ?2 WHERE workspace = ?3",
                (to_i64(*clicks), now(), workspace),
            )?;
            if n == 1 && status_in(&tx, workspace)?.remaining == Some(0) {
                ran_out.push(workspace);
            }
            touched.push(workspace.to_string());
        }

        let mut new_keys: HashMap<(&str, i64, &str), u64> = HashMap::new();
        {
            let mut insert = tx.prepare(
                "INSERT OR IGNORE INTO activity_day_click_keys (workspace, activity_id, day, key)
                 VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (workspace, activity, day, key) in &effects.click_keys {
                if insert.execute((workspace, activity, day, key))? == 1 {
                    *new_keys
                        .entry((workspace.as_str(), *activity, day.as_str()))
                        .or_default() += 1;
                }
            }
        }
        {
            let mut upsert = tx.prepare(
                "INSERT INTO activity_day_counts (activity_id, day, workspace, impressions, clicks, dedup_clicks)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (workspace, activity_id, day) DO UPDATE SET
                     impressions = impressions + excluded.impressions,
                     clicks = clicks + excluded.clicks,
                     dedup_clicks = dedup_clicks + excluded.dedup_clicks",
            )?;
            for ((workspace, activity, day), delta) in &effects.activity_days {
                let dedup = new_keys
                    .remove(&(workspace.as_str(), *activity, day.as_str()))
                    .unwrap_or(0);
                upsert.execute(rusqlite::params![
                    activity,
                    day,
                    workspace,
                    to_i64(delta.impressions),
                    to_i64(delta.clicks),
                    to_i64(dedup),
                ])?;
            }
        }

        super::rollups::apply_in(&tx, &effects.rollups)?;
        super::replays::insert_in(&tx, pipeline, &effects.replayed)?;

        let mut pause: Vec<&str> = staging.iter().chain(&ran_out).copied().collect();
        pause.sort_unstable();
        pause.dedup();
        for workspace in pause {
            let ids: Vec<i64> = tx
                .prepare(
                    "SELECT id FROM activities WHERE workspace = ?1 AND status = 'on' ORDER BY id",
                )?
                .query_map([workspace], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            for id in &ids {
                tx.execute(
                    "UPDATE activities SET status = ?1, updated_at = ?2 WHERE id = ?3",
                    (ActivityStatus::PausedQuota.as_str(), now(), id),
                )?;
                audit_in(
                    &tx,
                    "quota",
                    "activity.status",
                    &format!(
                        "id={id} status=paused_quota reason=quota_exhausted workspace={workspace}"
                    ),
                )?;
            }
            if !ids.is_empty() {
                outcome.paused.insert(workspace.to_string(), ids);
            }
        }
        tx.commit()?;
        touched.extend(staging.iter().map(|w| w.to_string()));
        touched.sort();
        touched.dedup();
        outcome.workspaces = touched;
        Ok(outcome)
    }

    /// Deletes `pipeline`'s staged records received before `before` (RFC 3339), audited with
    /// the count per workspace; and forgets click device keys of days before `keys_before`
    /// (they only matter while records of that day can still land). Never call it while the
    /// pipeline has an open batch: a replay must find the records its intent released.
    pub fn purge_staged(
        &self,
        pipeline: &str,
        before: &str,
        keys_before: NaiveDate,
    ) -> Result<Vec<Purged>, CatalogError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let purged: Vec<Purged> = tx
            .prepare(
                "SELECT workspace, count(*), coalesce(sum(billable), 0) FROM quota_staged
                 WHERE pipeline = ?1 AND received_at < ?2 GROUP BY workspace ORDER BY workspace",
            )?
            .query_map((pipeline, before), |r| {
                Ok(Purged {
                    workspace: r.get(0)?,
                    records: to_u64(r.get(1)?),
                    clicks: to_u64(r.get(2)?),
                })
            })?
            .collect::<Result<_, _>>()?;
        if !purged.is_empty() {
            tx.execute(
                "DELETE FROM quota_staged WHERE pipeline = ?1 AND received_at < ?2",
                (pipeline, before),
            )?;
        }
        for p in &purged {
            audit_in(
                &tx,
                "quota",
                "quota.purge",
                &format!(
                    "workspace={} records={} clicks={} received_before={before}",
                    p.workspace, p.records, p.clicks
                ),
            )?;
        }
        tx.execute(
            "DELETE FROM activity_day_click_keys WHERE day < ?1",
            [keys_before.to_string()],
        )?;
        tx.commit()?;
        Ok(purged)
    }
}

#[cfg(test)]
mod tests;
