//! The embedded state store (SQLite): tokens, activities, feedback tasks, batch intents and
//! commits, ingested source files, run history, published dataset versions, report rollups and
//! the audit log.
//!
//! SQLite runs in WAL mode with `synchronous = FULL`, so a committed transaction survives a
//! power cut: the exactly-once protocol relies on "intent recorded" and "batch committed" being
//! durable before the next step. Every multi-row change is one transaction. Other modules never
//! see SQL: they call the typed methods here.

mod activities;
mod batches;
mod datasets;
mod downloads;
mod feedback;
mod forward;
mod forward_kafka;
mod quota;
mod replays;
mod rollups;
mod runs;
mod tokens;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::Connection;

pub use activities::{Activity, ActivityEdit, ActivityStatus, NewActivity};
pub use batches::{BatchIntent, BatchStats};
pub use datasets::DatasetVersion;
pub use downloads::Download;
pub use feedback::FeedbackTask;
pub use forward::{ForwardJob, ForwardQueueStats, NewForwardJob};
pub use forward_kafka::{FORWARD_REPLAYS, ForwardKafkaOutcome, ForwardKafkaRecord};
pub use quota::{
    ActivityDay, ActivityDayDelta, ActivityTotals, DayUsage, MeterEffects, MeterOutcome, NewStaged,
    Purchase, Purged, QuotaStatus, Release, ReleasePlan, StagedRecord,
};
pub use replays::REPLAYED_RETENTION_DAYS;
pub use rollups::{
    Granularity as RollupGranularity, HitKind, Replaced, RollupCell, RollupDelta, RollupKey,
    RollupRow,
};
pub use runs::{NewRun, RunRecord, RunStatus, RunTotals};
pub use tokens::{IssuedToken, Role, TokenInfo};

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("catalog query failed: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("catalog holds corrupt data: {0}")]
    Corrupt(String),
    #[error(
        "pipeline `{pipeline}` already has an open batch {seq}; replay it before planning another"
    )]
    IntentOpen { pipeline: String, seq: i64 },
    #[error("pipeline `{pipeline}` has no open batch {seq} to commit")]
    NoSuchIntent { pipeline: String, seq: i64 },
    #[error("{0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("catalog schema version {found} is newer than this binary understands ({supported})")]
    TooNew { found: i64, supported: i64 },
}

impl CatalogError {
    /// Whether the same call may succeed later: the database was busy or locked by another
    /// process beyond the busy timeout.
    pub fn retryable(&self) -> bool {
        let sql = match self {
            CatalogError::Sql(e) | CatalogError::Open { source: e, .. } => e,
            _ => return false,
        };
        matches!(
            sql.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        )
    }
}

/// Each entry migrates the schema from version `index` to `index + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE tokens (
    id          INTEGER PRIMARY KEY,
    hash        TEXT NOT NULL UNIQUE,
    role        TEXT NOT NULL,
    workspace   TEXT,
    label       TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
);
CREATE TABLE batches (
    pipeline    TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('open', 'committed')),
    positions   TEXT NOT NULL,
    planned_at  TEXT NOT NULL,
    committed_at TEXT,
    stats       TEXT,
    PRIMARY KEY (pipeline, seq)
);
CREATE UNIQUE INDEX one_open_batch ON batches (pipeline) WHERE state = 'open';
CREATE TABLE ingested_files (
    pipeline    TEXT NOT NULL,
    path        TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    PRIMARY KEY (pipeline, path)
);
CREATE TABLE runs (
    id          INTEGER PRIMARY KEY,
    pipeline    TEXT NOT NULL,
    trigger     TEXT NOT NULL,
    status      TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    batches     INTEGER NOT NULL DEFAULT 0,
    rows_in     INTEGER NOT NULL DEFAULT 0,
    rows_out    INTEGER NOT NULL DEFAULT 0,
    rows_quarantined INTEGER NOT NULL DEFAULT 0,
    error       TEXT
);
CREATE INDEX runs_by_pipeline ON runs (pipeline, id);
CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY,
    at          TEXT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    detail      TEXT NOT NULL
);
"#,
    r#"
CREATE TABLE activity_groups (
    id          INTEGER PRIMARY KEY,
    workspace   TEXT NOT NULL,
    name        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    UNIQUE (workspace, name)
);
CREATE TABLE activities (
    id          INTEGER PRIMARY KEY,
    workspace   TEXT NOT NULL,
    group_id    INTEGER NOT NULL REFERENCES activity_groups (id),
    name        TEXT NOT NULL,
    channel     TEXT NOT NULL,
    ad_format   TEXT NOT NULL,
    landing_url TEXT,
    third_party_impression TEXT NOT NULL DEFAULT '[]',
    third_party_click      TEXT NOT NULL DEFAULT '[]',
    status      TEXT NOT NULL CHECK (status IN ('on', 'off', 'paused_quota')),
    impression_link INTEGER NOT NULL UNIQUE,
    click_link  INTEGER NOT NULL UNIQUE,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    UNIQUE (workspace, name)
);
"#,
    r#"
ALTER TABLE activities ADD COLUMN template TEXT;
"#,
    quota::MIGRATION,
    r#"
CREATE TABLE feedback_tasks (
    id          INTEGER PRIMARY KEY,
    workspace   TEXT NOT NULL,
    name        TEXT NOT NULL,
    channel     TEXT NOT NULL,
    protocol    TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('on', 'off', 'paused_quota')),
    link        INTEGER NOT NULL UNIQUE,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    UNIQUE (workspace, name)
);
"#,
    // Third-party forwarding (`forward.rs`): the durable retry queue and the forwarder's
    // progress through the journal (one row).
    r#"
CREATE TABLE forward_jobs (
    id          INTEGER PRIMARY KEY,
    destination TEXT NOT NULL,
    url         TEXT NOT NULL,
    user_agent  TEXT,
    event_id    TEXT NOT NULL,
    hit_at_ms   INTEGER NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_at_ms  INTEGER NOT NULL,
    last_error  TEXT
);
CREATE INDEX forward_jobs_due ON forward_jobs (next_at_ms, id);
CREATE TABLE forward_progress (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    next_position INTEGER NOT NULL
);
"#,
    // Reports: click-detail download tasks (`downloads.rs`), and per-workspace activity
    // counters (feedback hits share activity id 0 across workspaces, so the workspace must be
    // part of the key; rows merged before this version stay as they were).
    r#"
CREATE TABLE downloads (
    id           INTEGER PRIMARY KEY,
    workspace    TEXT NOT NULL,
    name         TEXT NOT NULL,
    day_from     TEXT NOT NULL,
    day_to       TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('queued', 'processing', 'succeeded', 'failed')),
    reason       TEXT,
    clicks       INTEGER,
    bytes        INTEGER,
    file         TEXT,
    created_by   TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    expires_at   TEXT
);
CREATE INDEX downloads_by_workspace ON downloads (workspace, id);
CREATE INDEX downloads_by_status ON downloads (status, id);
CREATE TABLE activity_day_counts_v2 (
    workspace    TEXT NOT NULL,
    activity_id  INTEGER NOT NULL,
    day          TEXT NOT NULL,
    impressions  INTEGER NOT NULL DEFAULT 0,
    clicks       INTEGER NOT NULL DEFAULT 0,
    dedup_clicks INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (workspace, activity_id, day)
) WITHOUT ROWID;
INSERT INTO activity_day_counts_v2 (workspace, activity_id, day, impressions, clicks, dedup_clicks)
    SELECT workspace, activity_id, day, impressions, clicks, dedup_clicks FROM activity_day_counts;
DROP TABLE activity_day_counts;
ALTER TABLE activity_day_counts_v2 RENAME TO activity_day_counts;
CREATE INDEX activity_day_counts_by_workspace ON activity_day_counts (workspace, day);
"#,
    // Published dataset versions (`datasets.rs`): a record per `_current` pointer written.
    r#"
CREATE TABLE dataset_versions (
    dataset      TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    version      TEXT NOT NULL,
    job          TEXT NOT NULL,
    run_id       INTEGER,
    rows         INTEGER NOT NULL,
    published_at TEXT NOT NULL,
    deleted_at   TEXT,
    PRIMARY KEY (dataset, seq)
);
"#,
    // Deduplicated-click keys per workspace: Tencent feedback rows all have activity 0, so
    // without the workspace one device's feedback clicks in two workspaces counted once.
    // Keys of activity 0 cannot be attributed and are dropped (they only feed today's
    // deduplicated feedback count, which restarts from the next batch).
    r#"
CREATE TABLE activity_day_click_keys_v2 (
    workspace   TEXT NOT NULL,
    activity_id INTEGER NOT NULL,
    day         TEXT NOT NULL,
    key         INTEGER NOT NULL,
    PRIMARY KEY (workspace, activity_id, day, key)
) WITHOUT ROWID;
INSERT INTO activity_day_click_keys_v2 (workspace, activity_id, day, key)
    SELECT a.workspace, k.activity_id, k.day, k.key
    FROM activity_day_click_keys k JOIN activities a ON a.id = k.activity_id;
DROP TABLE activity_day_click_keys;
ALTER TABLE activity_day_click_keys_v2 RENAME TO activity_day_click_keys;
"#,
    // The scheduler (`runs.rs`): queued and waiting runs, the period an instance covers, the
    // fire time it was made for, retries and reruns; source watermarks per pipeline.
    r#"
ALTER TABLE runs ADD COLUMN workspace TEXT;
ALTER TABLE runs ADD COLUMN queued_at TEXT;
ALTER TABLE runs ADD COLUMN scheduled_for TEXT;
ALTER TABLE runs ADD COLUMN period TEXT;
ALTER TABLE runs ADD COLUMN period_start TEXT;
ALTER TABLE runs ADD COLUMN period_end TEXT;
ALTER TABLE runs ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1;
ALTER TABLE runs ADD COLUMN rerun_of INTEGER;
CREATE INDEX runs_by_status ON runs (status);
CREATE TABLE watermarks (
    pipeline    TEXT PRIMARY KEY,
    up_to       TEXT NOT NULL,
    updated_at  TEXT NOT NULL

);
"#,
    // Inputs of open batches whose source cannot be read twice (HTTP pull): the fetched records,
    // written with the intent and deleted by its commit (`batches.rs`); and small per-source
    // marks that are not part of a batch (the object-store source's last full listing).
    r#"
CREATE TABLE batch_inputs (
    pipeline    TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    data        BLOB NOT NULL,
    PRIMARY KEY (pipeline, seq)
);
CREATE TABLE source_marks (
    pipeline    TEXT NOT NULL,
    name        TEXT NOT NULL,
    value       TEXT NOT NULL,
    PRIMARY KEY (pipeline, name)
);
"#,
    // Report rollups (`rollups.rs`): hourly and daily hit counts with distinct-device sketches,
    // daily distinct-ID sketches, and which days they cover.
    rollups::MIGRATION,
    // Replayed fallback records of the Kafka journal (`replays.rs`): event ids landed once.
    replays::MIGRATION,
    // The forwarder's offsets in the Kafka journal topic (`forward_kafka.rs`).
    forward_kafka::MIGRATION,
];

/// The catalog. Cheap to share behind an `Arc`; calls are short and serialized.
#[derive(Debug)]
pub struct Catalog {
    conn: Mutex<Connection>,
}

impl Catalog {
    /// Opens (creating if needed) the catalog file and brings its schema up to date. Two
    /// processes creating the same catalog at once (scaled-out Kafka pipelines) may find it
    /// busy while the other sets it up: that is retried for about ten seconds.
    pub fn open(path: &Path) -> Result<Catalog, CatalogError> {
        let mut attempt = 0;
        loop {
            match Self::open_once(path) {
                Err(e) if e.retryable() && attempt < 100 => {
                    attempt += 1;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                other => return other,
            }
        }
    }

    fn open_once(path: &Path) -> Result<Catalog, CatalogError> {
        let open_err = |source| CatalogError::Open {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                open_err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                    Some(format!("cannot create {}: {e}", dir.display())),
                ))
            })?;
        }
        let conn = Connection::open(path).map_err(open_err)?;
        // Another process may be opening (migrating) the same catalog right now.
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        Self::init(conn).map_err(|e| match e {
            CatalogError::Sql(source) => open_err(source),
            other => other,
        })
    }

    /// A private in-memory catalog, for unit tests and `backflow test`.
    pub fn open_in_memory() -> Result<Catalog, CatalogError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Catalog, CatalogError> {
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let supported = MIGRATIONS.len() as i64;
        if version > supported {
            return Err(CatalogError::TooNew {
                found: version,
                supported,
            });
        }
        for (index, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            // Immediate: two processes opening a new catalog at once migrate one after the
            // other, and the second skips what the first applied.
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let current: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
            if current > index as i64 {
                continue;
            }
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", index as i64 + 1)?;
            tx.commit()?;
        }
        Ok(Catalog {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (transactions roll
        // back on drop), so a poisoned lock is safe to keep using.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends to the audit log.
    pub fn audit(&self, actor: &str, action: &str, detail: &str) -> Result<(), CatalogError> {
        audit_in(&self.conn(), actor, action, detail)
    }

    /// The most recent audit entries, newest first: (at, actor, action, detail).
    pub fn audit_entries(
        &self,
        limit: usize,
    ) -> Result<Vec<(String, String, String, String)>, CatalogError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT at, actor, action, detail FROM audit_log ORDER BY id DESC LIMIT ?1")?;
        let rows = stmt.query_map([limit as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// Appends to the audit log inside a caller's transaction (so the entry commits with the change).
fn audit_in(
    conn: &Connection,
    actor: &str,
    action: &str,
    detail: &str,
) -> Result<(), CatalogError> {
    conn.execute(
        "INSERT INTO audit_log (at, actor, action, detail) VALUES (?1, ?2, ?3, ?4)",
        (now(), actor, action, detail),
    )?;
    Ok(())
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reopening_keeps_state_and_schema_version() -> Result<(), CatalogError> {
        let dir = tempfile::tempdir().map_err(|e| CatalogError::Corrupt(e.to_string()))?;
        let path = dir.path().join("nested/catalog.sqlite");
        {
            let catalog = Catalog::open(&path)?;
            catalog.audit("test", "create", "x")?;
        }
        let catalog = Catalog::open(&path)?;
        assert_eq!(catalog.audit_entries(10)?.len(), 1);
        Ok(())
    }
}
