//! Quota metering of journal (monitoring-link) batches.
//!
//! * **Planning** decides, from the catalog's quota state, which staged records of each workspace
//!   a batch releases first and from which journal position on a workspace's records are staged
//!   instead of landed ([`MeterPlan`], stored with the intent: a replay makes the same split even
//!   if quota was bought in between).
//! * **Execution** splits the batch's records by that plan ([`split`]) and, after the
//!   transforms, counts what lands ([`tally`]): billable clicks per workspace and day, and
//!   impressions, clicks and deduplicated clicks per activity and day.
//! * **Commit** writes all of it with the batch in one catalog transaction.
//!
//! Billing follows DESIGN.md: one billable record is one click (`click` or Tencent `feedback`
//! endpoint); impressions are free. Once a workspace stages, all its records (impressions
//! too) are staged in journal order until the staged ones are released, so the lake keeps each
//! workspace's records in arrival order.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use bytes::Bytes;
use chrono::DateTime;
use chrono_tz::Tz;
use polars::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use tracing::{debug, info, warn};

use super::fetched::Fetched;
use super::plan::JournalPositions;
use super::source::kafka::{KafkaPositions, KafkaRecord};
use super::{PipelineError, Runtime};
use crate::catalog::{ActivityDayDelta, BatchStats, MeterEffects, NewStaged, Release, ReleasePlan};
use crate::collect::link::Endpoint;
use crate::config::model::{JournalSource, KafkaFormat, Pipeline};
use crate::journal::Position;
use crate::telemetry::WorkspaceLabels;

/// The device-key fields, in the order DESIGN.md gives them ("unique" and "deduplicated").
pub const DEVICE_KEY_FIELDS: [&str; 7] = [
    "idfa",
    "imei_md5",
    "oaid",
    "android_id_md5",
    "mac_md5",
    "caid",
    "aaid",
];

/// Days (pipeline time zone) of device keys kept beyond the staging retention: a released
/// record of an old day still deduplicates against its day's earlier clicks.
pub const KEY_MARGIN_DAYS: i64 = 2;

/// Quota settings of the runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaSettings {
    /// How long staged records wait for a top-up before they are purged.
    pub staging_retention: chrono::Duration,
}

impl Default for QuotaSettings {
    fn default() -> Self {
        QuotaSettings {
            staging_retention: chrono::Duration::days(30),
        }
    }
}

/// The quota decisions of one journal batch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeterPlan {
    /// Staged records released (landed) first, per workspace, in workspace then staging order.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub release: BTreeMap<String, Release>,
    /// Per workspace: its journal records at or after this position are staged.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stage_from: BTreeMap<String, u64>,
}

impl MeterPlan {
    pub fn is_empty(&self) -> bool {
        self.release.is_empty() && self.stage_from.is_empty()
    }
}

/// The part of a hit record metering reads.
#[derive(Deserialize)]
struct HitMeta {
    workspace: String,
    endpoint: Endpoint,
    received_at: String,
}

fn meta(record: &[u8]) -> Option<HitMeta> {
    serde_json::from_slice(record).ok()
}

/// Whether a record of this endpoint consumes quota.
pub fn billable(endpoint: Endpoint) -> bool {
    matches!(endpoint, Endpoint::Click | Endpoint::Feedback)
}

/// The workspaces of a batch's records, sorted.
pub fn workspaces(records: &[(Position, Bytes)]) -> Vec<String> {
    workspaces_of(records.iter().map(|(p, b)| (p.0, b.as_ref())))
}

/// The workspaces of (position, record) pairs, sorted.
fn workspaces_of<'a>(records: impl Iterator<Item = (u64, &'a [u8])>) -> Vec<String> {
    let set: BTreeSet<String> = records
        .filter_map(|(_, bytes)| meta(bytes).map(|m| m.workspace))
        .collect();
    set.into_iter().collect()
}

/// Decides a batch's releases and staging from each workspace's quota (`quotas` covers every
/// workspace of the records and every workspace with staged records). Unreadable records are
/// never staged: they land in quarantine with their reason.
pub fn plan(records: &[(Position, Bytes)], quotas: &BTreeMap<String, ReleasePlan>) -> MeterPlan {
    plan_of(records.iter().map(|(p, b)| (p.0, b.as_ref())), quotas)
}

/// [`plan`] over (position, record) pairs in batch order.
fn plan_of<'a>(
    records: impl Iterator<Item = (u64, &'a [u8])>,
    quotas: &BTreeMap<String, ReleasePlan>,
) -> MeterPlan {
    let mut plan = MeterPlan::default();
    let mut remaining: BTreeMap<&str, Option<u64>> = BTreeMap::new();
    let mut still_staged: HashSet<&str> = HashSet::new();
    for (workspace, q) in quotas {
        let released = q.release.map_or(0, |r| r.clicks);
        remaining.insert(workspace, q.remaining.map(|r| r.saturating_sub(released)));
        if let Some(release) = q.release {
            plan.release.insert(workspace.clone(), release);
        }
        if q.staged_after > 0 {
            still_staged.insert(workspace);
        }
    }
    for (position, bytes) in records {
        let Some(m) = meta(bytes) else { continue };
        if plan.stage_from.contains_key(&m.workspace) {
            continue;
        }
        let stage = if still_staged.contains(m.workspace.as_str()) {
            true
        } else if billable(m.endpoint) {
            match remaining.get_mut(m.workspace.as_str()) {
                Some(Some(0)) => true,
                Some(Some(r)) => {
                    *r -= 1;
                    false
                }
                Some(None) | None => false,
            }
        } else {
            false
        };
        if stage {
            plan.stage_from.insert(m.workspace, position);
        }
    }
    plan
}

/// The (index, payload) pairs a Kafka batch is planned and split by: its position in the
/// batch's (topic, partition, offset) order, which a replay reads back identically.
/// `keep` leaves out the replayed duplicates ([`Runtime::replay_mask`]).
fn kafka_indexed<'a>(
    records: &'a [KafkaRecord],
    keep: &'a [bool],
) -> impl Iterator<Item = (u64, &'a [u8])> {
    records
        .iter()
        .zip(keep)
        .filter(|(_, keep)| **keep)
        .enumerate()
        .map(|(i, (r, _))| (i as u64, r.payload.as_deref().unwrap_or_default()))
}

/// The header the Kafka journal's collectors put on records sent again from their fallback
/// file; only such records are checked against the landed replayed event ids.
pub const REPLAY_HEADER: &str = "backflow-replay";

#[derive(Deserialize)]
struct EventId {
    event_id: String,
}

/// The event id of a record sent again from a fallback file, if it is one.
fn replayed_event_id(record: &KafkaRecord) -> Option<String> {
    record.headers.iter().find(|(k, _)| k == REPLAY_HEADER)?;
    serde_json::from_slice::<EventId>(record.payload.as_deref()?)
        .ok()
        .map(|e| e.event_id)
}

/// Splits a Kafka batch's records by its plan: those that land (in batch order) and those
/// staged (keeping their offset as their position).
pub fn split_kafka(
    records: Vec<KafkaRecord>,
    plan: &MeterPlan,
) -> (Vec<KafkaRecord>, Vec<NewStaged>) {
    let (mut lake, mut stage) = (Vec::new(), Vec::new());
    for (index, record) in records.into_iter().enumerate() {
        let staged = record.payload.as_deref().and_then(meta).and_then(|m| {
            let from = plan.stage_from.get(&m.workspace)?;
            (index as u64 >= *from).then_some(m)
        });
        match staged {
            Some(m) => stage.push(NewStaged {
                workspace: m.workspace,
                position: u64::try_from(record.offset).unwrap_or_default(),
                billable: billable(m.endpoint),
                received_at: m.received_at,
                record: record.payload.unwrap_or_default(),
            }),
            None => lake.push(record),
        }
    }
    (lake, stage)
}

/// A batch's journal records split by its plan.
#[derive(Debug, Default)]
pub struct Split {
    /// Records that go on to the lake, in journal order.
    pub lake: Vec<(Position, Bytes)>,
    /// Records held out, in journal order.
    pub stage: Vec<NewStaged>,
}

/// Splits a batch's journal records by its plan (the same split on every replay).
pub fn split(records: Vec<(Position, Bytes)>, plan: &MeterPlan) -> Split {
    let mut out = Split::default();
    for (position, bytes) in records {
        let staged = meta(&bytes).and_then(|m| {
            let from = plan.stage_from.get(&m.workspace)?;
            (position.0 >= *from).then_some(m)
        });
        match staged {
            Some(m) => out.stage.push(NewStaged {
                workspace: m.workspace,
                position: position.0,
                billable: billable(m.endpoint),
                received_at: m.received_at,
                record: bytes.to_vec(),
            }),
            None => out.lake.push((position, bytes)),
        }
    }
    out
}

/// What the landed rows of a batch count for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Billable clicks per (workspace, day).
    pub usage: BTreeMap<(String, String), u64>,
    /// Per (workspace, activity, day).
    pub activity_days: BTreeMap<(String, i64, String), ActivityDayDelta>,
    /// Device-key hashes of clicks per (workspace, activity, day).
    pub click_keys: Vec<(String, i64, String, i64)>,
}

/// A stable 64-bit hash of a device key (the first 8 bytes of its SHA-256).
pub fn key_hash(key: &str) -> i64 {
    let digest = Sha256::digest(key.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

/// Counts the rows of a batch's output frame (after its transforms) by the day of
/// `day_column` in `tz` — the day of the `dt=` partition. Rows without a workspace, activity,
/// endpoint or day are not counted (the sink quarantines a row without its partition time).
pub fn tally(df: &DataFrame, day_column: &str, tz: Tz) -> PolarsResult<Tally> {
    let mut out = Tally::default();
    let text = |name: &str| -> PolarsResult<Option<StringChunked>> {
        match df.column(name) {
            Ok(c) => Ok(Some(c.cast(&DataType::String)?.str()?.clone())),
            Err(_) => Ok(None),
        }
    };
    let (Some(workspace), Some(endpoint), Ok(activity), Ok(ts)) = (
        text("workspace")?,
        text("endpoint")?,
        df.column("activity_id"),
        df.column(day_column),
    ) else {
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
    let activity = activity.cast(&DataType::Int64)?;
    let activity = activity.i64()?;
    let physical = ts.as_materialized_series().to_physical_repr().into_owned();
    let micros = physical.i64()?;
    let keys: Vec<Option<StringChunked>> = DEVICE_KEY_FIELDS
        .iter()
        .map(|f| text(f))
        .collect::<PolarsResult<_>>()?;
    let (ip, ua) = (text("user_ip")?, text("user_agent")?);
    let mut seen: HashSet<(String, i64, String, i64)> = HashSet::new();
    for row in 0..df.height() {
        let (Some(ws), Some(ep), Some(activity), Some(t)) = (
            workspace.get(row),
            endpoint.get(row),
            activity.get(row),
            micros.get(row),
        ) else {
            continue;
        };
        let Some(day) = DateTime::from_timestamp_micros(to_micros(t))
            .map(|t| t.with_timezone(&tz).format("%Y-%m-%d").to_string())
        else {
            continue;
        };
        let counts = out
            .activity_days
            .entry((ws.to_string(), activity, day.clone()))
            .or_default();
        match ep {
            "impression" => counts.impressions += 1,
            "click" | "feedback" => {
                counts.clicks += 1;
                *out.usage.entry((ws.to_string(), day.clone())).or_default() += 1;
                let key = device_key(&keys, ip.as_ref(), ua.as_ref(), row);
                let hashed = (ws.to_string(), activity, day, key_hash(&key));
                if seen.insert(hashed.clone()) {
                    out.click_keys.push(hashed);
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The device key of a row: the first present device ID (named, so equal values of different
/// ID types differ), else the user's IP and user agent.
fn device_key(
    ids: &[Option<StringChunked>],
    ip: Option<&StringChunked>,
    ua: Option<&StringChunked>,
    row: usize,
) -> String {
    for (field, column) in DEVICE_KEY_FIELDS.iter().zip(ids) {
        if let Some(value) = column
            .as_ref()
            .and_then(|c| c.get(row))
            .filter(|v| !v.is_empty())
        {
            return format!("{field}:{value}");
        }
    }
    let ip = ip.and_then(|c| c.get(row)).unwrap_or("");
    let ua = ua.and_then(|c| c.get(row)).unwrap_or("");
    format!("ip_ua:{ip}\n{ua}")
}

/// A metered batch between its split and its commit.
#[derive(Debug)]
pub(super) struct Metering {
    plan: MeterPlan,
    stage: Vec<NewStaged>,
    /// Replayed Kafka-journal event ids the batch lands (recorded at commit).
    replayed: Vec<String>,
}

impl Runtime {
    /// Deletes staged records past the retention (audited, counted) and refreshes the quota
    /// gauges. Failures are logged: they must not stop hits from landing.
    pub(super) fn purge_staged(&self, pipeline: &str) {
        let now = chrono::Utc::now();
        let before = (now - self.quota.staging_retention)
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let keys_before =
            (now - self.quota.staging_retention - chrono::Duration::days(KEY_MARGIN_DAYS))
                .with_timezone(&self.tz)
                .date_naive();
        match self.catalog.purge_staged(pipeline, &before, keys_before) {
            Ok(purged) => {
                for p in purged {
                    warn!(
                        pipeline, workspace = %p.workspace, records = p.records, clicks = p.clicks,
                        "staged records purged: quota was not topped up within the retention"
                    );
                    self.metrics
                        .quota_purged
                        .get_or_create(&WorkspaceLabels::of(&p.workspace))
                        .inc_by(p.records);
                }
            }
            Err(e) => warn!(pipeline, error = %e, "purging expired staged records failed"),
        }
        let replayed_before = (now
            - chrono::Duration::days(crate::catalog::REPLAYED_RETENTION_DAYS))
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        match self.catalog.prune_replayed(pipeline, &replayed_before) {
            Ok(0) => {}
            Ok(n) => debug!(
                pipeline,
                event_ids = n,
                "forgot replayed event ids past their retention"
            ),
            Err(e) => warn!(pipeline, error = %e, "pruning replayed event ids failed"),
        }
        match self.catalog.quotas() {
            Ok(all) => {
                for q in &all {
                    self.metrics.set_quota(q);
                }
            }
            Err(e) => warn!(pipeline, error = %e, "reading quotas for metrics failed"),
        }
    }

    /// Decides a new journal batch's releases and staging.
    pub(super) fn plan_quota(
        &self,
        pipeline: &str,
        records: &[(Position, Bytes)],
        cfg: &JournalSource,
    ) -> Result<MeterPlan, PipelineError> {
        let names = workspaces(records);
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let quotas =
            self.catalog
                .plan_releases(pipeline, &names, cfg.max_records_per_batch.get())?;
        Ok(plan(records, &quotas))
    }

    /// Decides a new Kafka batch's releases and staging (the daemon-wired journal pipeline of
    /// `journal.kind: kafka`), exactly as for a journal batch, by index in batch order.
    pub(super) fn plan_quota_kafka(
        &self,
        pipeline: &str,
        records: &[KafkaRecord],
        max_release: usize,
    ) -> Result<MeterPlan, PipelineError> {
        let (keep, _) = self.replay_mask(pipeline, records)?;
        let names = workspaces_of(kafka_indexed(records, &keep));
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let quotas = self.catalog.plan_releases(pipeline, &names, max_release)?;
        Ok(plan_of(kafka_indexed(records, &keep), &quotas))
    }

    /// Which records of a Kafka batch land: `false` for a record replayed from a collector's
    /// fallback file whose event id this pipeline already landed, or that an earlier record of
    /// the batch carries. With the replayed event ids kept (recorded at commit). Depends only on
    /// the batch and the committed catalog, so a replay of the batch decides the same.
    pub(super) fn replay_mask(
        &self,
        pipeline: &str,
        records: &[KafkaRecord],
    ) -> Result<(Vec<bool>, Vec<String>), PipelineError> {
        let ids: Vec<Option<String>> = records.iter().map(replayed_event_id).collect();
        let wanted: Vec<&str> = ids.iter().flatten().map(String::as_str).collect();
        let seen = if wanted.is_empty() {
            HashSet::new()
        } else {
            self.catalog.replayed_seen(pipeline, &wanted)?
        };
        let mut kept_ids: HashSet<&str> = HashSet::new();
        let mut keep = Vec::with_capacity(records.len());
        let mut landed = Vec::new();
        for id in &ids {
            keep.push(match id {
                None => true,
                Some(id) if seen.contains(id) || kept_ids.contains(id.as_str()) => false,
                Some(id) => {
                    kept_ids.insert(id);
                    landed.push(id.clone());
                    true
                }
            });
        }
        Ok((keep, landed))
    }

    /// The staged records a plan releases, read back from the catalog in release order.
    fn released(
        &self,
        pipeline: &Pipeline,
        plan: &MeterPlan,
    ) -> Result<Vec<(Position, Bytes)>, PipelineError> {
        let mut out = Vec::new();
        for (workspace, release) in &plan.release {
            let staged = self
                .catalog
                .staged_records(&pipeline.name, workspace, release.below)?;
            if staged.len() as u64 != release.rows {
                return Err(PipelineError::Positions(format!(
                    "the batch releases {} staged records of `{workspace}`, the catalog holds {}",
                    release.rows,
                    staged.len()
                )));
            }
            out.extend(
                staged
                    .into_iter()
                    .map(|s| (Position(s.position), Bytes::from(s.record))),
            );
        }
        Ok(out)
    }

    /// Splits a journal batch by its plan: the staged records it releases first (read back from
    /// the catalog), then its journal records that land; the rest is staged at commit. A Kafka
    /// batch of the daemon-wired journal pipeline is split the same way (by its recorded plan).
    pub(super) fn meter(
        &self,
        pipeline: &Pipeline,
        positions: &serde_json::Value,
        fetched: Fetched,
    ) -> Result<(Fetched, Option<Metering>), PipelineError> {
        match fetched {
            Fetched::Hits {
                records,
                registry,
                enricher,
            } => {
                let p: JournalPositions = serde_json::from_value(positions.clone())
                    .map_err(|e| PipelineError::Positions(e.to_string()))?;
                let plan = p.quota.unwrap_or_default();
                let mut lake = self.released(pipeline, &plan)?;
                let Split {
                    lake: from_journal,
                    stage,
                } = split(records, &plan);
                lake.extend(from_journal);
                Ok((
                    Fetched::Hits {
                        records: lake,
                        registry,
                        enricher,
                    },
                    Some(Metering {
                        plan,
                        stage,
                        replayed: Vec::new(),
                    }),
                ))
            }
            Fetched::Kafka {
                cfg,
                records,
                hits: Some(hits),
                released,
            } if cfg.journal && cfg.format == KafkaFormat::HitRecord => {
                let p: KafkaPositions = serde_json::from_value(positions.clone())
                    .map_err(|e| PipelineError::Positions(e.to_string()))?;
                let plan = p.quota.unwrap_or_default();
                let mut from_staging = released;
                from_staging.extend(self.released(pipeline, &plan)?);
                let (keep, replayed) = self.replay_mask(&pipeline.name, &records)?;
                let dropped: Vec<&KafkaRecord> = records
                    .iter()
                    .zip(&keep)
                    .filter(|(_, keep)| !**keep)
                    .map(|(r, _)| r)
                    .collect();
                if !dropped.is_empty() {
                    for r in &dropped {
                        debug!(pipeline = %pipeline.name, topic = %r.topic, partition = r.partition, offset = r.offset,
                            "replayed fallback record already landed: dropped");
                    }
                    info!(pipeline = %pipeline.name, messages = dropped.len(), "dropped fallback records a collector sent again");
                    self.metrics
                        .kafka_replay_duplicates
                        .get_or_create(&crate::telemetry::Metrics::labels(&pipeline.name))
                        .inc_by(dropped.len() as u64);
                }
                let records: Vec<KafkaRecord> = records
                    .into_iter()
                    .zip(keep)
                    .filter_map(|(r, keep)| keep.then_some(r))
                    .collect();
                let (lake, stage) = split_kafka(records, &plan);
                Ok((
                    Fetched::Kafka {
                        cfg,
                        records: lake,
                        hits: Some(hits),
                        released: from_staging,
                    },
                    Some(Metering {
                        plan,
                        stage,
                        replayed,
                    }),
                ))
            }
            other => Ok((other, None)),
        }
    }

    /// Commits a metered batch with its quota effects in one catalog transaction.
    pub(super) fn commit_metered(
        &self,
        pipeline: &Pipeline,
        seq: i64,
        stats: &BatchStats,
        metering: Metering,
        tally: Option<Tally>,
        rollups: crate::catalog::RollupDelta,
    ) -> Result<(), PipelineError> {
        let tally = tally.unwrap_or_default();
        let staged = metering.stage.len();
        let mut staged_by_ws: BTreeMap<&str, u64> = BTreeMap::new();
        for s in &metering.stage {
            *staged_by_ws.entry(s.workspace.as_str()).or_default() += 1;
        }
        let staged_by_ws: Vec<(String, u64)> = staged_by_ws
            .into_iter()
            .map(|(w, n)| (w.to_string(), n))
            .collect();
        let mut clicks_by_ws: BTreeMap<&str, u64> = BTreeMap::new();
        for ((workspace, _), n) in &tally.usage {
            *clicks_by_ws.entry(workspace.as_str()).or_default() += n;
        }
        let clicks_by_ws: Vec<(String, u64)> = clicks_by_ws
            .into_iter()
            .map(|(w, n)| (w.to_string(), n))
            .collect();
        let effects = MeterEffects {
            release: metering.plan.release,
            stage: metering.stage,
            usage: tally.usage,
            activity_days: tally.activity_days,
            click_keys: tally.click_keys,
            rollups,
            replayed: metering.replayed,
        };
        let outcome = self
            .catalog
            .commit_metered_batch(&pipeline.name, seq, stats, &effects)?;
        for (workspace, release) in &effects.release {
            self.metrics
                .quota_released
                .get_or_create(&WorkspaceLabels::of(workspace))
                .inc_by(release.rows);
        }
        for (workspace, n) in staged_by_ws {
            self.metrics
                .quota_staged_total
                .get_or_create(&WorkspaceLabels::of(&workspace))
                .inc_by(n);
        }
        for (workspace, n) in clicks_by_ws {
            self.metrics
                .quota_billable_clicks
                .get_or_create(&WorkspaceLabels::of(&workspace))
                .inc_by(n);
        }
        for (workspace, ids) in &outcome.paused {
            warn!(pipeline = %pipeline.name, batch = seq, workspace = %workspace, activities = ?ids,
                "quota exhausted: activities switched to paused_quota; new records are staged");
        }
        for workspace in &outcome.workspaces {
            match self.catalog.quota(workspace) {
                Ok(q) => self.metrics.set_quota(&q),
                Err(e) => warn!(error = %e, "reading quota for metrics failed"),
            }
        }
        if staged > 0 || !effects.release.is_empty() {
            info!(
                pipeline = %pipeline.name,
                batch = seq,
                staged,
                released = effects.release.values().map(|r| r.rows).sum::<u64>(),
                "quota: records staged and released"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ws: &str, endpoint: &str) -> Bytes {
        Bytes::from(
            serde_json::json!({
                "workspace": ws,
                "endpoint": endpoint,
                "received_at": "2026-01-01T00:00:00.000000Z",
            })
            .to_string(),
        )
    }

    fn batch(items: &[(&str, &str)]) -> Vec<(Position, Bytes)> {
        items
            .iter()
            .enumerate()
            .map(|(i, (ws, ep))| (Position(100 + i as u64), record(ws, ep)))
            .collect()
    }

    fn quota(remaining: Option<u64>, staged_after: u64, release: Option<Release>) -> ReleasePlan {
        ReleasePlan {
            remaining,
            release,
            staged_after,
        }
    }

    #[test]
    fn the_first_click_that_does_not_fit_starts_staging_for_its_workspace_only() {
        let records = batch(&[
            ("a", "click"),
            ("a", "impression"),
            ("b", "click"),
            ("a", "click"),
            ("a", "impression"),
            ("b", "click"),
            ("a", "feedback"),
        ]);
        let quotas = BTreeMap::from([
            ("a".to_string(), quota(Some(1), 0, None)),
            ("b".to_string(), quota(None, 0, None)),
        ]);
        let decided = plan(&records, &quotas);
        assert_eq!(decided.stage_from, BTreeMap::from([("a".to_string(), 103)]));
        let split = split(records, &decided);
        assert_eq!(
            split.lake.iter().map(|(p, _)| p.0).collect::<Vec<_>>(),
            [100, 101, 102, 105]
        );
        assert_eq!(
            split
                .stage
                .iter()
                .map(|s| (s.position, s.billable))
                .collect::<Vec<_>>(),
            [(103, true), (104, false), (106, true)],
            "impressions follow the clicks into staging, in order"
        );
    }

    #[test]
    fn a_workspace_with_records_left_staged_stages_everything_new() {
        let records = batch(&[("a", "impression"), ("a", "click")]);
        let release = Release {
            below: 9,
            rows: 3,
            clicks: 2,
        };
        let quotas = BTreeMap::from([("a".to_string(), quota(Some(2), 5, Some(release)))]);
        let decided = plan(&records, &quotas);
        assert_eq!(decided.release.get("a"), Some(&release));
        assert_eq!(decided.stage_from.get("a"), Some(&100));
        // Everything staged was released and one click fits: only the second click stages.
        let quotas = BTreeMap::from([("a".to_string(), quota(Some(3), 0, Some(release)))]);
        let records = batch(&[("a", "click"), ("a", "click")]);
        assert_eq!(plan(&records, &quotas).stage_from.get("a"), Some(&101));
        // Unreadable records are never staged.
        let junk = vec![(Position(1), Bytes::from_static(b"not json"))];
        let quotas = BTreeMap::from([("a".to_string(), quota(Some(0), 1, None))]);
        assert!(split(junk, &plan(&[], &quotas)).stage.is_empty());
    }

    #[test]
    fn tally_counts_by_partition_day_and_deduplicates_clicks_per_device() -> PolarsResult<()> {
        // 2026-01-01T16:30Z is 2026-01-02 in Shanghai.
        let t1 = 1_767_285_000_000_000_i64;
        let t0 = t1 - 3_600_000_000 * 12;
        let df = df!(
            "workspace" => ["w", "w", "w", "w", "w"],
            "endpoint" => ["click", "click", "impression", "feedback", "click"],
            "activity_id" => [1i64, 1, 1, 1, 1],
            "received_at" => [t1, t1, t1, t1, t0],
            "idfa" => [Some("X"), Some("X"), None, None, Some("X")],
            "oaid" => [None::<&str>, None, None, None, None],
            "user_ip" => ["1.1.1.1", "1.1.1.1", "1.1.1.1", "2.2.2.2", "1.1.1.1"],
            "user_agent" => ["ua", "ua", "ua", "ua", "ua"],
        )?
        .lazy()
        .with_column(col("received_at").cast(DataType::Datetime(
            TimeUnit::Microseconds,
            Some(polars::prelude::TimeZone::UTC),
        )))
        .collect()?;
        let t = tally(&df, "received_at", chrono_tz::Asia::Shanghai)?;
        let day2 = ("w".to_string(), 1, "2026-01-02".to_string());
        assert_eq!(
            t.activity_days.get(&day2),
            Some(&ActivityDayDelta {
                impressions: 1,
                clicks: 3
            })
        );
        assert_eq!(t.usage.get(&("w".into(), "2026-01-02".into())), Some(&3));
        assert_eq!(t.usage.get(&("w".into(), "2026-01-01".into())), Some(&1));
        // Day 2: idfa X and the feedback click's ip+ua; day 1: idfa X again (another day).
        assert_eq!(t.click_keys.len(), 3);
        assert_eq!(key_hash("idfa:X"), key_hash("idfa:X"));
        assert_ne!(key_hash("idfa:X"), key_hash("oaid:X"));
        Ok(())
    }
}
