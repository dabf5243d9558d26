//! Report rollups: per-hour and per-day hit counts and distinct-device sketches of committed
//! `ad_events` rows, and per-day distinct-ID sketches (what `report::rollup` computes).
//!
//! A batch's rollup delta is merged by the transaction that commits the batch (see
//! [`apply_in`]), so rollups are exactly-once with the Parquet commit and lag ingestion by
//! nothing. Every day a commit touches gets its `version` bumped in `rollup_coverage`; a day
//! whose data landed before rollups existed is recorded there `complete = 0` (by the migration)
//! until `rebuild-rollups` replaces it. A rebuild replaces a day only if its version did not
//! move while the rebuild was reading the lake, so it never loses a concurrent batch.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use rusqlite::{OptionalExtension, Transaction, params};

use super::{Catalog, CatalogError};
use crate::report::sketch::Sketch;

/// Schema of this module (one entry of `MIGRATIONS`). Days that already hold `ad_events` data
/// (from the committed batches' file lists) start incomplete.
pub(super) const MIGRATION: &str = r#"
CREATE TABLE rollup_hours (
    id          INTEGER PRIMARY KEY,
    workspace   TEXT NOT NULL,
    day         TEXT NOT NULL,
    hour        INTEGER NOT NULL,
    activity_id INTEGER NOT NULL,
    link        INTEGER NOT NULL,
    kind        INTEGER NOT NULL,
    hits        INTEGER NOT NULL,
    sketch      BLOB NOT NULL,
    UNIQUE (workspace, day, hour, activity_id, link, kind)
);
CREATE TABLE rollup_days (
    id          INTEGER PRIMARY KEY,
    workspace   TEXT NOT NULL,
    day         TEXT NOT NULL,
    activity_id INTEGER NOT NULL,
    link        INTEGER NOT NULL,
    kind        INTEGER NOT NULL,
    hits        INTEGER NOT NULL,
    sketch      BLOB NOT NULL,
    UNIQUE (workspace, day, activity_id, link, kind)
);
CREATE TABLE rollup_ids (
    id          INTEGER PRIMARY KEY,
    workspace   TEXT NOT NULL,
    day         TEXT NOT NULL,
    id_type     TEXT NOT NULL,
    sketch      BLOB NOT NULL,
    UNIQUE (workspace, day, id_type)
);
CREATE TABLE rollup_coverage (
    day      TEXT PRIMARY KEY,
    version  INTEGER NOT NULL,
    complete INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO rollup_coverage (day, version, complete)
    SELECT DISTINCT substr(f.value, 14, 10), 0, 0
    FROM batches b, json_each(b.stats, '$.files') f
    WHERE b.state = 'committed' AND f.value LIKE 'ad_events/dt=%';
"#;

/// What a hit counts as in a rollup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HitKind {
    Impression = 0,
    /// Monitoring clicks and Tencent feedback clicks.
    Click = 1,
}

impl HitKind {
    fn from_i64(v: i64) -> Result<HitKind, CatalogError> {
        match v {
            0 => Ok(HitKind::Impression),
            1 => Ok(HitKind::Click),
            other => Err(CatalogError::Corrupt(format!("rollup kind {other}"))),
        }
    }
}

/// The key of a rollup cell. `link` is the link id of a Tencent feedback hit (0 for every other
/// endpoint); `hour` is the hour of day (0–23) in the lake time zone, `None` for a day cell.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RollupKey {
    pub workspace: String,
    pub day: String,
    pub hour: Option<u8>,
    pub activity_id: i64,
    pub link: i64,
    pub kind: HitKind,
}

/// Hits and distinct device keys of one cell.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RollupCell {
    pub hits: u64,
    pub devices: Sketch,
}

impl RollupCell {
    pub fn merge(&mut self, other: &RollupCell) {
        self.hits += other.hits;
        self.devices.merge(&other.devices);
    }
}

/// What a batch (or a rebuilt day) adds to the rollups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RollupDelta {
    /// Hour cells and day cells (`hour: None`).
    pub cells: BTreeMap<RollupKey, RollupCell>,
    /// Distinct ID values per (workspace, day, ID type).
    pub ids: BTreeMap<(String, String, String), Sketch>,
}

impl RollupDelta {
    pub fn is_empty(&self) -> bool {
        self.cells.is_empty() && self.ids.is_empty()
    }

    /// The days the delta touches.
    pub fn days(&self) -> std::collections::BTreeSet<&str> {
        self.cells
            .keys()
            .map(|k| k.day.as_str())
            .chain(self.ids.keys().map(|k| k.1.as_str()))
            .collect()
    }
}

/// A stored rollup cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupRow {
    pub key: RollupKey,
    pub cell: RollupCell,
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn sketch_of(bytes: &[u8], what: &str) -> Result<Sketch, CatalogError> {
    Sketch::from_bytes(bytes).map_err(|e| CatalogError::Corrupt(format!("{what}: {e}")))
}

/// Merges a delta into the rollups and bumps the version of every day it touches, inside the
/// caller's transaction (the batch commit).
pub(super) fn apply_in(tx: &Transaction<'_>, delta: &RollupDelta) -> Result<(), CatalogError> {
    if delta.is_empty() {
        return Ok(());
    }
    let mut get_hour = tx.prepare_cached(
        "SELECT id, hits, sketch FROM rollup_hours WHERE workspace = ?1 AND day = ?2 AND hour = ?3
         AND activity_id = ?4 AND link = ?5 AND kind = ?6",
    )?;
    let mut get_day = tx.prepare_cached(
        "SELECT id, hits, sketch FROM rollup_days WHERE workspace = ?1 AND day = ?2
         AND activity_id = ?3 AND link = ?4 AND kind = ?5",
    )?;
    for (key, cell) in &delta.cells {
        let found: Option<(i64, i64, Vec<u8>)> = match key.hour {
            Some(hour) => get_hour
                .query_row(
                    params![
                        key.workspace,
                        key.day,
                        hour,
                        key.activity_id,
                        key.link,
                        key.kind as i64
                    ],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?,
            None => get_day
                .query_row(
                    params![
                        key.workspace,
                        key.day,
                        key.activity_id,
                        key.link,
                        key.kind as i64
                    ],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?,
        };
        let table = if key.hour.is_some() {
            "rollup_hours"
        } else {
            "rollup_days"
        };
        match found {
            Some((id, hits, bytes)) => {
                let mut stored = RollupCell {
                    hits: u64::try_from(hits).unwrap_or(0),
                    devices: sketch_of(&bytes, table)?,
                };
                stored.merge(cell);
                tx.prepare_cached(&format!(
                    "UPDATE {table} SET hits = ?1, sketch = ?2 WHERE id = ?3"
                ))?
                .execute(params![
                    to_i64(stored.hits),
                    stored.devices.to_bytes(),
                    id
                ])?;
            }
            None => insert_cell(tx, key, cell)?,
        }
    }
    let mut get_ids = tx.prepare_cached(
        "SELECT id, sketch FROM rollup_ids WHERE workspace = ?1 AND day = ?2 AND id_type = ?3",
    )?;
    for ((workspace, day, id_type), sketch) in &delta.ids {
        let found: Option<(i64, Vec<u8>)> = get_ids
            .query_row(params![workspace, day, id_type], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        match found {
            Some((id, bytes)) => {
                let mut stored = sketch_of(&bytes, "rollup_ids")?;
                stored.merge(sketch);
                tx.prepare_cached("UPDATE rollup_ids SET sketch = ?1 WHERE id = ?2")?
                    .execute(params![stored.to_bytes(), id])?;
            }
            None => {
                tx.prepare_cached(
                    "INSERT INTO rollup_ids (workspace, day, id_type, sketch) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![workspace, day, id_type, sketch.to_bytes()])?;
            }
        }
    }
    for day in delta.days() {
        tx.prepare_cached(
            "INSERT INTO rollup_coverage (day, version, complete) VALUES (?1, 1, 1)
             ON CONFLICT (day) DO UPDATE SET version = version + 1",
        )?
        .execute([day])?;
    }
    Ok(())
}

fn insert_cell(
    tx: &Transaction<'_>,
    key: &RollupKey,
    cell: &RollupCell,
) -> Result<(), CatalogError> {
    let bytes = cell.devices.to_bytes();
    match key.hour {
        Some(hour) => tx
            .prepare_cached(
                "INSERT INTO rollup_hours (workspace, day, hour, activity_id, link, kind, hits, sketch)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                key.workspace,
                key.day,
                hour,
                key.activity_id,
                key.link,
                key.kind as i64,
                to_i64(cell.hits),
                bytes
            ])?,
        None => tx
            .prepare_cached(
                "INSERT INTO rollup_days (workspace, day, activity_id, link, kind, hits, sketch)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                key.workspace,
                key.day,
                key.activity_id,
                key.link,
                key.kind as i64,
                to_i64(cell.hits),
                bytes
            ])?,
    };
    Ok(())
}

/// Which cells a rollup read returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    Day,
    Hour,
}

/// How a rebuild of one day ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replaced {
    Done,
    /// A batch committed into the day while it was being read: nothing was written.
    Moved,
}

impl Catalog {
    /// Merges a delta into the rollups in a transaction of its own (rebuild tools, tests; the
    /// pipeline merges within its batch commit).
    pub fn apply_rollups(&self, delta: &RollupDelta) -> Result<(), CatalogError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        apply_in(&tx, delta)?;
        tx.commit()?;
        Ok(())
    }

    /// The rollup cells of `workspace` on days `from..=to`.
    pub fn rollup_cells(
        &self,
        workspace: &str,
        from: NaiveDate,
        to: NaiveDate,
        granularity: Granularity,
    ) -> Result<Vec<RollupRow>, CatalogError> {
        let conn = self.conn();
        let sql = match granularity {
            Granularity::Day => {
                "SELECT day, NULL, activity_id, link, kind, hits, sketch FROM rollup_days
                 WHERE workspace = ?1 AND day BETWEEN ?2 AND ?3"
            }
            Granularity::Hour => {
                "SELECT day, hour, activity_id, link, kind, hits, sketch FROM rollup_hours
                 WHERE workspace = ?1 AND day BETWEEN ?2 AND ?3"
            }
        };
        let mut stmt = conn.prepare_cached(sql)?;
        let rows = stmt.query_map(params![workspace, from.to_string(), to.to_string()], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<i64>>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, Vec<u8>>(6)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (day, hour, activity_id, link, kind, hits, bytes) = row?;
            out.push(RollupRow {
                key: RollupKey {
                    workspace: workspace.to_string(),
                    day,
                    hour: hour.map(|h| u8::try_from(h).unwrap_or(u8::MAX)),
                    activity_id,
                    link,
                    kind: HitKind::from_i64(kind)?,
                },
                cell: RollupCell {
                    hits: u64::try_from(hits).unwrap_or(0),
                    devices: sketch_of(&bytes, "rollup cell")?,
                },
            });
        }
        Ok(out)
    }

    /// Distinct IDs of `workspace` per ID type, over every day.
    pub fn rollup_ids(&self, workspace: &str) -> Result<BTreeMap<String, Sketch>, CatalogError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT id_type, sketch FROM rollup_ids WHERE workspace = ?1")?;
        let rows = stmt.query_map([workspace], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        let mut out: BTreeMap<String, Sketch> = BTreeMap::new();
        for row in rows {
            let (id_type, bytes) = row?;
            out.entry(id_type)
                .or_default()
                .merge(&sketch_of(&bytes, "rollup_ids")?);
        }
        Ok(out)
    }

    /// Days (in `from..=to`, or all) whose data landed before rollups existed and that were not
    /// rebuilt since.
    pub fn incomplete_rollup_days(
        &self,
        from: Option<NaiveDate>,
        to: Option<NaiveDate>,
    ) -> Result<Vec<NaiveDate>, CatalogError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT day FROM rollup_coverage WHERE complete = 0
             AND day >= ?1 AND day <= ?2 ORDER BY day",
        )?;
        let from = from.map_or_else(|| "0000-00-00".to_string(), |d| d.to_string());
        let to = to.map_or_else(|| "9999-99-99".to_string(), |d| d.to_string());
        let days = stmt.query_map([from, to], |r| r.get::<_, String>(0))?;
        days.map(|d| {
            let d = d?;
            NaiveDate::parse_from_str(&d, "%Y-%m-%d")
                .map_err(|e| CatalogError::Corrupt(format!("rollup day `{d}`: {e}")))
        })
        .collect()
    }

    /// For each day of `from..=to`: its rollup version and the `ad_events` files that batches
    /// committed in the catalog wrote into its `dt=` partition, read together. (A file whose
    /// commit manifest exists but whose batch is not committed in the catalog yet is left out:
    /// its batch adds it to the rollups when it commits.)
    pub fn rollup_sources(
        &self,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<(NaiveDate, i64, Vec<String>)>, CatalogError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut out = Vec::new();
        let mut day = from;
        while day <= to {
            let text = day.to_string();
            let version: i64 = tx
                .query_row(
                    "SELECT version FROM rollup_coverage WHERE day = ?1",
                    [&text],
                    |r| r.get(0),
                )
                .optional()?
                .unwrap_or(0);
            out.push((day, version, Vec::new()));
            day = match day.succ_opt() {
                Some(d) => d,
                None => break,
            };
        }
        let mut stmt = tx.prepare(
            "SELECT f.value FROM batches b, json_each(b.stats, '$.files') f
             WHERE b.state = 'committed' AND f.value >= ?1 AND f.value < ?2",
        )?;
        let files = stmt.query_map(
            [
                format!("ad_events/dt={from}/"),
                format!("ad_events/dt={to}/\u{10FFFF}"),
            ],
            |r| r.get::<_, String>(0),
        )?;
        let index: std::collections::HashMap<String, usize> = out
            .iter()
            .enumerate()
            .map(|(i, (d, _, _))| (d.to_string(), i))
            .collect();
        for file in files {
            let file = file?;
            let day = file.get(13..23).unwrap_or_default();
            if let Some(&i) = index.get(day) {
                out[i].2.push(file);
            }
        }
        drop(stmt);
        tx.commit()?;
        for entry in &mut out {
            entry.2.sort();
        }
        Ok(out)
    }

    /// The version of a day's rollups (0 when no commit touched it).
    pub fn rollup_version(&self, day: NaiveDate) -> Result<i64, CatalogError> {
        let conn = self.conn();
        Ok(conn
            .query_row(
                "SELECT version FROM rollup_coverage WHERE day = ?1",
                [day.to_string()],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0))
    }

    /// Replaces every rollup row of `day` (all workspaces) by `delta`'s cells of that day and
    /// marks the day complete — unless its version moved from `version`, in which case nothing
    /// is written. One transaction.
    pub fn replace_rollup_day(
        &self,
        day: NaiveDate,
        version: i64,
        delta: &RollupDelta,
    ) -> Result<Replaced, CatalogError> {
        let day_text = day.to_string();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let now: i64 = tx
            .query_row(
                "SELECT version FROM rollup_coverage WHERE day = ?1",
                [&day_text],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0);
        if now != version {
            return Ok(Replaced::Moved);
        }
        for table in ["rollup_hours", "rollup_days", "rollup_ids"] {
            tx.execute(&format!("DELETE FROM {table} WHERE day = ?1"), [&day_text])?;
        }
        for (key, cell) in delta.cells.iter().filter(|(k, _)| k.day == day_text) {
            insert_cell(&tx, key, cell)?;
        }
        for ((workspace, d, id_type), sketch) in &delta.ids {
            if *d == day_text {
                tx.prepare_cached(
                    "INSERT INTO rollup_ids (workspace, day, id_type, sketch) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![workspace, d, id_type, sketch.to_bytes()])?;
            }
        }
        tx.execute(
            "INSERT INTO rollup_coverage (day, version, complete) VALUES (?1, ?2, 1)
             ON CONFLICT (day) DO UPDATE SET version = version + 1, complete = 1",
            params![day_text, version + 1],
        )?;
        tx.commit()?;
        Ok(Replaced::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(day: &str, hour: Option<u8>, activity_id: i64, kind: HitKind) -> RollupKey {
        RollupKey {
            workspace: "ws".into(),
            day: day.into(),
            hour,
            activity_id,
            link: 0,
            kind,
        }
    }

    fn cell(hits: u64, devices: &[u64]) -> RollupCell {
        RollupCell {
            hits,
            devices: Sketch::from_hashes(devices.to_vec()),
        }
    }

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap_or_default()
    }

    #[test]
    fn deltas_merge_into_stored_cells_and_bump_day_versions() -> Result<(), CatalogError> {
        let c = Catalog::open_in_memory()?;
        let mut delta = RollupDelta::default();
        delta.cells.insert(
            key("2026-03-01", Some(8), 1, HitKind::Click),
            cell(2, &[1, 2]),
        );
        delta
            .cells
            .insert(key("2026-03-01", None, 1, HitKind::Click), cell(2, &[1, 2]));
        delta.ids.insert(
            ("ws".into(), "2026-03-01".into(), "oaid".into()),
            Sketch::from_hashes(vec![7]),
        );
        c.apply_rollups(&delta)?;
        c.apply_rollups(&delta)?;
        let d = day("2026-03-01");
        let hours = c.rollup_cells("ws", d, d, Granularity::Hour)?;
        assert_eq!(hours.len(), 1);
        assert_eq!(hours[0].cell, cell(4, &[1, 2]));
        assert_eq!(hours[0].key.hour, Some(8));
        let days = c.rollup_cells("ws", d, d, Granularity::Day)?;
        assert_eq!(days[0].cell.hits, 4);
        assert_eq!(c.rollup_ids("ws")?["oaid"].count(), (1, false));
        assert_eq!(c.rollup_version(d)?, 2);
        assert!(c.incomplete_rollup_days(None, None)?.is_empty());
        assert!(c.rollup_cells("other", d, d, Granularity::Day)?.is_empty());
        Ok(())
    }

    #[test]
    fn days_with_data_from_before_rollups_start_incomplete_until_rebuilt()
    -> Result<(), CatalogError> {
        let c = Catalog::open_in_memory()?;
        c.create_intent("ad_events", &serde_json::json!({}), "t")?;
        let file = "ad_events/dt=2026-03-01/hour=08/part-000000000001-0000.parquet";
        let stats = crate::catalog::BatchStats {
            files: vec![
                file.into(),
                "behavior_events/dt=2026-03-02/hour=00/part-000000000001-0000.parquet".into(),
            ],
            ..Default::default()
        };
        c.commit_batch("ad_events", 1, &[], &stats, &RollupDelta::default())?;
        // What the migration does on a catalog that already committed batches.
        let marking = MIGRATION
            .find("INSERT INTO rollup_coverage")
            .map(|i| &MIGRATION[i..])
            .unwrap_or_default();
        c.conn().execute_batch(marking)?;
        let d = day("2026-03-01");
        assert_eq!(c.incomplete_rollup_days(None, None)?, [d]);
        assert!(
            c.incomplete_rollup_days(Some(day("2026-03-02")), None)?
                .is_empty()
        );
        let sources = c.rollup_sources(d, day("2026-03-02"))?;
        assert_eq!(sources[0], (d, 0, vec![file.to_string()]));
        assert_eq!(sources[1].2, Vec::<String>::new());
        assert_eq!(
            c.replace_rollup_day(d, 0, &RollupDelta::default())?,
            Replaced::Done
        );
        assert!(c.incomplete_rollup_days(None, None)?.is_empty());
        Ok(())
    }

    #[test]
    fn a_rebuild_replaces_a_day_unless_a_commit_moved_it() -> Result<(), CatalogError> {
        let c = Catalog::open_in_memory()?;
        let d = day("2026-03-01");
        let mut old = RollupDelta::default();
        old.cells.insert(
            key("2026-03-01", None, 1, HitKind::Impression),
            cell(9, &[9]),
        );
        c.apply_rollups(&old)?;
        let version = c.rollup_version(d)?;
        let mut new = RollupDelta::default();
        new.cells.insert(
            key("2026-03-01", None, 2, HitKind::Impression),
            cell(1, &[5]),
        );
        new.cells.insert(
            key("2026-03-02", None, 2, HitKind::Impression),
            cell(1, &[5]),
        );
        c.apply_rollups(&old)?; // a batch commits meanwhile
        assert_eq!(c.replace_rollup_day(d, version, &new)?, Replaced::Moved);
        let version = c.rollup_version(d)?;
        assert_eq!(c.replace_rollup_day(d, version, &new)?, Replaced::Done);
        let rows = c.rollup_cells("ws", d, day("2026-03-02"), Granularity::Day)?;
        assert_eq!(rows.len(), 1, "only the replaced day's cells: {rows:?}");
        assert_eq!(rows[0].key.activity_id, 2);
        Ok(())
    }
}
