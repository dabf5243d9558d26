//! Tencent Ads feedback tasks (腾讯广告 Feedback URL, `spec/media-backflow.md` R59–R61): one
//! Feedback URL per task, pasted into Tencent's click-monitoring dialog. A task starts
//! *not enabled* (未启用, stored `off`) until switched on by hand (R60), and can be renamed (R61).
//!
//! Each task owns one random 64-bit link id; the signed `/fb/{token}` URL is minted from it by
//! the collect module. The per-workspace name is unique, like activity names.

use rusqlite::{OptionalExtension, Row};

use super::activities::{ActivityStatus, check_name};
use super::{Catalog, CatalogError, now};

/// A feedback task as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct FeedbackTask {
    pub id: i64,
    pub workspace: String,
    pub name: String,
    /// Media id from the registry (`tencent_ads`).
    pub channel: String,
    /// The media's feedback protocol id (`tencent_feedback`): how hits are decoded and answered.
    pub protocol: String,
    /// `off` (未启用, the state after creation), `on`, or `paused_quota`.
    pub status: ActivityStatus,
    /// Link id (the `/fb/` token is minted from it); feedback hits carry it as `link_id`.
    pub link: u64,
    pub created_at: String,
    pub updated_at: String,
}

const SELECT: &str =
    "SELECT id, workspace, name, channel, protocol, status, link, created_at, updated_at
     FROM feedback_tasks";

fn from_row(r: &Row<'_>) -> rusqlite::Result<(FeedbackTask, String)> {
    Ok((
        FeedbackTask {
            id: r.get(0)?,
            workspace: r.get(1)?,
            name: r.get(2)?,
            channel: r.get(3)?,
            protocol: r.get(4)?,
            status: ActivityStatus::Off,
            link: r.get::<_, i64>(6)? as u64,
            created_at: r.get(7)?,
            updated_at: r.get(8)?,
        },
        r.get(5)?,
    ))
}

fn finish((mut task, status): (FeedbackTask, String)) -> Result<FeedbackTask, CatalogError> {
    task.status = ActivityStatus::parse(&status)?;
    Ok(task)
}

fn name_taken(workspace: &str, name: &str) -> CatalogError {
    CatalogError::Invalid(format!(
        "name: a feedback task named `{name}` already exists in workspace `{workspace}`"
    ))
}

impl Catalog {
    /// Creates a feedback task, not enabled (`off`).
    pub fn create_feedback_task(
        &self,
        workspace: &str,
        name: &str,
        channel: &str,
        protocol: &str,
        link: u64,
        actor: &str,
    ) -> Result<FeedbackTask, CatalogError> {
        check_name("workspace", workspace)?;
        check_name("name", name)?;
        let name = name.trim();
        let conn = self.conn();
        let taken: Option<i64> = conn
            .query_row(
                "SELECT id FROM feedback_tasks WHERE workspace = ?1 AND name = ?2",
                (workspace, name),
                |r| r.get(0),
            )
            .optional()?;
        if taken.is_some() {
            return Err(name_taken(workspace, name));
        }
        let at = now();
        conn.execute(
            "INSERT INTO feedback_tasks (workspace, name, channel, protocol, status, link,
                created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, 'off', ?5, ?6, ?6)",
            rusqlite::params![workspace, name, channel, protocol, link as i64, at],
        )?;
        let id = conn.last_insert_rowid();
        drop(conn);
        self.audit(
            actor,
            "feedback.create",
            &format!("id={id} workspace={workspace} name={name}"),
        )?;
        self.feedback_task(id)
    }

    /// One feedback task by id.
    pub fn feedback_task(&self, id: i64) -> Result<FeedbackTask, CatalogError> {
        let conn = self.conn();
        let row = conn
            .query_row(&format!("{SELECT} WHERE id = ?1"), [id], from_row)
            .optional()?;
        row.map(finish)
            .transpose()?
            .ok_or_else(|| CatalogError::NotFound(format!("feedback task {id}")))
    }

    /// Feedback tasks of a workspace (every workspace with `None`), by id.
    pub fn feedback_tasks(
        &self,
        workspace: Option<&str>,
    ) -> Result<Vec<FeedbackTask>, CatalogError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "{SELECT} WHERE ?1 IS NULL OR workspace = ?1 ORDER BY id"
        ))?;
        let rows = stmt.query_map([workspace], from_row)?;
        rows.map(|r| finish(r?)).collect()
    }

    /// Renames a feedback task (R61).
    pub fn rename_feedback_task(
        &self,
        id: i64,
        name: &str,
        actor: &str,
    ) -> Result<FeedbackTask, CatalogError> {
        check_name("name", name)?;
        let name = name.trim();
        let task = self.feedback_task(id)?;
        let conn = self.conn();
        let taken: Option<i64> = conn
            .query_row(
                "SELECT id FROM feedback_tasks WHERE workspace = ?1 AND name = ?2 AND id != ?3",
                (&task.workspace, name, id),
                |r| r.get(0),
            )
            .optional()?;
        if taken.is_some() {
            return Err(name_taken(&task.workspace, name));
        }
        conn.execute(
            "UPDATE feedback_tasks SET name = ?1, updated_at = ?2 WHERE id = ?3",
            (name, now(), id),
        )?;
        drop(conn);
        self.audit(actor, "feedback.rename", &format!("id={id} name={name}"))?;
        self.feedback_task(id)
    }

    /// Sets a feedback task's status; returns the updated task.
    pub fn set_feedback_task_status(
        &self,
        id: i64,
        status: ActivityStatus,
        actor: &str,
    ) -> Result<FeedbackTask, CatalogError> {
        let n = self.conn().execute(
            "UPDATE feedback_tasks SET status = ?1, updated_at = ?2 WHERE id = ?3",
            (status.as_str(), now(), id),
        )?;
        if n == 0 {
            return Err(CatalogError::NotFound(format!("feedback task {id}")));
        }
        self.audit(
            actor,
            "feedback.status",
            &format!("id={id} status={}", status.as_str()),
        )?;
        self.feedback_task(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_starts_not_enabled_is_renamed_and_switched_with_audit() -> Result<(), CatalogError> {
        let c = Catalog::open_in_memory()?;
        let t =
            c.create_feedback_task("ws", "gdt 1", "tencent_ads", "tencent_feedback", 42, "cli")?;
        assert_eq!((t.status, t.link), (ActivityStatus::Off, 42));
        c.create_feedback_task("ws", "gdt 2", "tencent_ads", "tencent_feedback", 43, "cli")?;
        assert!(matches!(
            c.create_feedback_task("ws", "gdt 2", "tencent_ads", "tencent_feedback", 44, "cli"),
            Err(CatalogError::Invalid(m)) if m.starts_with("name: ")
        ));
        assert!(matches!(
            c.rename_feedback_task(t.id, "gdt 2", "cli"),
            Err(CatalogError::Invalid(m)) if m.contains("already exists")
        ));
        assert_eq!(c.rename_feedback_task(t.id, " 微信 ", "cli")?.name, "微信");
        assert_eq!(
            c.set_feedback_task_status(t.id, ActivityStatus::On, "token:3")?
                .status,
            ActivityStatus::On
        );
        assert_eq!(c.feedback_tasks(Some("ws"))?.len(), 2);
        assert_eq!(c.feedback_tasks(Some("other"))?.len(), 0);
        assert_eq!(c.feedback_tasks(None)?.len(), 2);
        assert!(matches!(
            c.set_feedback_task_status(99, ActivityStatus::On, "t"),
            Err(CatalogError::NotFound(_))
        ));
        let actions: Vec<String> = c
            .audit_entries(10)?
            .into_iter()
            .map(|(_, _, action, _)| action)
            .collect();
        assert!(
            ["feedback.create", "feedback.rename", "feedback.status"]
                .iter()
                .all(|a| actions.iter().any(|x| x == a)),
            "{actions:?}"
        );
        Ok(())
    }
}
