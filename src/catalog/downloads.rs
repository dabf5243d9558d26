//! Click-detail download tasks (下载数据明细, R68–R70): `queued → processing → succeeded |
//! failed (reason)`. The archive itself lives under the data dir; the row names it and says
//! until when it may be fetched.

use rusqlite::{OptionalExtension, Row};

use super::{Catalog, CatalogError, now};

/// A download task as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct Download {
    pub id: i64,
    pub workspace: String,
    pub name: String,
    /// First day of click details (workspace time zone).
    pub from: String,
    /// Last day, included.
    pub to: String,
    /// `queued`, `processing`, `succeeded` or `failed`.
    pub status: String,
    /// Why it failed.
    pub reason: Option<String>,
    /// Click lines in the archive.
    pub clicks: Option<u64>,
    /// Archive size.
    pub bytes: Option<u64>,
    /// Archive path relative to the data dir (null once expired).
    #[serde(skip)]
    pub file: Option<String>,
    pub created_by: String,
    pub created_at: String,
    pub updated_at: String,
    /// When the archive stops being downloadable (RFC 3339), once succeeded.
    pub expires_at: Option<String>,
}

const SELECT: &str = "SELECT id, workspace, name, day_from, day_to, status, reason, clicks, bytes,
    file, created_by, created_at, updated_at, expires_at FROM downloads";

fn from_row(r: &Row<'_>) -> rusqlite::Result<Download> {
    Ok(Download {
        id: r.get(0)?,
        workspace: r.get(1)?,
        name: r.get(2)?,
        from: r.get(3)?,
        to: r.get(4)?,
        status: r.get(5)?,
        reason: r.get(6)?,
        clicks: r.get::<_, Option<i64>>(7)?.map(|n| n.max(0) as u64),
        bytes: r.get::<_, Option<i64>>(8)?.map(|n| n.max(0) as u64),
        file: r.get(9)?,
        created_by: r.get(10)?,
        created_at: r.get(11)?,
        updated_at: r.get(12)?,
        expires_at: r.get(13)?,
    })
}

impl Catalog {
    /// Queues a download task.
    pub fn create_download(
        &self,
        workspace: &str,
        name: &str,
        from: &str,
        to: &str,
        actor: &str,
    ) -> Result<Download, CatalogError> {
        let at = now();
        let id = {
            let conn = self.conn();
            conn.execute(
                "INSERT INTO downloads (workspace, name, day_from, day_to, status, created_by,
                    created_at, updated_at) VALUES (?1, ?2, ?3, ?4, 'queued', ?5, ?6, ?6)",
                (workspace, name, from, to, actor, &at),
            )?;
            conn.last_insert_rowid()
        };
        self.audit(
            actor,
            "download.create",
            &format!("id={id} workspace={workspace} from={from} to={to}"),
        )?;
        self.download(id)
    }

    /// One download task.
    pub fn download(&self, id: i64) -> Result<Download, CatalogError> {
        self.conn()
            .query_row(&format!("{SELECT} WHERE id = ?1"), [id], from_row)
            .optional()?
            .ok_or_else(|| CatalogError::NotFound(format!("download {id}")))
    }

    /// Download tasks of a workspace, newest first.
    pub fn downloads(&self, workspace: &str) -> Result<Vec<Download>, CatalogError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!("{SELECT} WHERE workspace = ?1 ORDER BY id DESC"))?;
        let rows = stmt.query_map([workspace], from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// At start: tasks an earlier process left `processing` go back to `queued` (re-run).
    pub fn requeue_processing_downloads(&self) -> Result<usize, CatalogError> {
        Ok(self.conn().execute(
            "UPDATE downloads SET status = 'queued', updated_at = ?1 WHERE status = 'processing'",
            [now()],
        )?)
    }

    /// Takes the oldest queued task and marks it `processing` — one statement, so two
    /// processes on one catalog (the daemon's worker, `backflow download create`) never both
    /// take a task.
    pub fn claim_download(&self) -> Result<Option<Download>, CatalogError> {
        self.claim_where(
            "(SELECT id FROM downloads WHERE status = 'queued' ORDER BY id LIMIT 1)",
            None,
        )
    }

    /// Marks task `id` `processing` if it is still queued; `None` when someone else took it.
    pub fn claim_download_id(&self, id: i64) -> Result<Option<Download>, CatalogError> {
        self.claim_where("?2", Some(id))
    }

    fn claim_where(&self, which: &str, id: Option<i64>) -> Result<Option<Download>, CatalogError> {
        let claimed: Option<i64> = self
            .conn()
            .query_row(
                &format!(
                    "UPDATE downloads SET status = 'processing', updated_at = ?1
                     WHERE id = {which} AND status = 'queued' RETURNING id"
                ),
                rusqlite::params_from_iter(
                    std::iter::once(rusqlite::types::Value::Text(now()))
                        .chain(id.map(rusqlite::types::Value::Integer)),
                ),
                |r| r.get(0),
            )
            .optional()?;
        claimed.map(|id| self.download(id)).transpose()
    }

    /// Marks a task succeeded with its archive.
    pub fn finish_download(
        &self,
        id: i64,
        clicks: u64,
        bytes: u64,
        file: &str,
        expires_at: &str,
    ) -> Result<(), CatalogError> {
        self.conn().execute(
            "UPDATE downloads SET status = 'succeeded', reason = NULL, clicks = ?2, bytes = ?3,
                file = ?4, expires_at = ?5, updated_at = ?6 WHERE id = ?1",
            rusqlite::params![id, clicks as i64, bytes as i64, file, expires_at, now()],
        )?;
        Ok(())
    }

    /// Marks a task failed with the reason.
    pub fn fail_download(&self, id: i64, reason: &str) -> Result<(), CatalogError> {
        self.conn().execute(
            "UPDATE downloads SET status = 'failed', reason = ?2, updated_at = ?3 WHERE id = ?1",
            (id, reason, now()),
        )?;
        Ok(())
    }

    /// Succeeded tasks whose archive expired before `at` and still names a file.
    pub fn expired_downloads(&self, at: &str) -> Result<Vec<Download>, CatalogError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "{SELECT} WHERE status = 'succeeded' AND file IS NOT NULL AND expires_at < ?1"
        ))?;
        let rows = stmt.query_map([at], from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Forgets an expired task's archive (the file was deleted).
    pub fn clear_download_file(&self, id: i64) -> Result<(), CatalogError> {
        self.conn().execute(
            "UPDATE downloads SET file = NULL, updated_at = ?2 WHERE id = ?1",
            (id, now()),
        )?;
        Ok(())
    }
}
