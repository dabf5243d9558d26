//! Monitoring activities (监测活动) and activity groups, per workspace
//! (`spec/media-backflow.md` §4.7). Each activity owns exactly one impression link and one click
//! link, identified by random 64-bit link ids that the signed link tokens carry.

use rusqlite::{OptionalExtension, Row, Transaction};

use super::{Catalog, CatalogError, now};

/// Whether an activity collects.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ActivityStatus {
    /// Collecting (the default on creation, R47).
    On,
    /// Switched off by hand (R54).
    Off,
    /// Switched off because the workspace's purchased records ran out; only a manual switch-on
    /// after top-up turns it back on (R55).
    PausedQuota,
}

impl ActivityStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ActivityStatus::On => "on",
            ActivityStatus::Off => "off",
            ActivityStatus::PausedQuota => "paused_quota",
        }
    }

    pub(super) fn parse(s: &str) -> Result<Self, CatalogError> {
        match s {
            "on" => Ok(ActivityStatus::On),
            "off" => Ok(ActivityStatus::Off),
            "paused_quota" => Ok(ActivityStatus::PausedQuota),
            other => Err(CatalogError::Corrupt(format!("activity status `{other}`"))),
        }
    }
}

/// What creating an activity needs (already validated by the caller against the media registry).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct NewActivity {
    pub workspace: String,
    pub name: String,
    /// Activity group name; created if new.
    pub group: String,
    /// Media id from the registry (渠道).
    pub channel: String,
    /// Ad format (广告格式).
    pub ad_format: String,
    /// Where a click redirects; http or https only.
    pub landing_url: Option<String>,
    #[serde(default)]
    pub third_party_impression: Vec<String>,
    #[serde(default)]
    pub third_party_click: Vec<String>,
    /// One of the media's alternative link templates (`schemas/media.yaml`), if not the default.
    #[serde(default)]
    pub template: Option<String>,
}

/// A change to an activity: `None` keeps a field; `landing_url: Some(None)` removes the landing
/// URL (clicks then answer `204`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActivityEdit {
    pub name: Option<String>,
    pub ad_format: Option<String>,
    pub landing_url: Option<Option<String>>,
    pub third_party_impression: Option<Vec<String>>,
    pub third_party_click: Option<Vec<String>>,
}

/// An activity as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct Activity {
    pub id: i64,
    pub workspace: String,
    pub group: String,
    pub name: String,
    pub channel: String,
    pub ad_format: String,
    pub landing_url: Option<String>,
    pub third_party_impression: Vec<String>,
    pub third_party_click: Vec<String>,
    pub status: ActivityStatus,
    /// The link template, when not the media's default.
    pub template: Option<String>,
    /// Link ids (the tokens are minted from these by the collect module).
    pub impression_link: u64,
    pub click_link: u64,
    pub created_at: String,
    pub updated_at: String,
}

const MAX_NAME: usize = 100;
const MAX_URL: usize = 2048;
const MAX_THIRD_PARTY: usize = 3;

/// Checks an URL is absolute http(s) and bounded.
pub fn check_http_url(what: &str, url: &str) -> Result<(), CatalogError> {
    if url.len() > MAX_URL {
        return Err(CatalogError::Invalid(format!(
            "{what}: longer than {MAX_URL} characters"
        )));
    }
    match url::Url::parse(url) {
        Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host().is_some() => Ok(()),
        Ok(u) => Err(CatalogError::Invalid(format!(
            "{what}: must start with http:// or https:// and name a host, found scheme `{}`",
            u.scheme()
        ))),
        Err(e) => Err(CatalogError::Invalid(format!(
            "{what}: not a valid URL ({e})"
        ))),
    }
}

pub(super) fn check_name(what: &str, name: &str) -> Result<(), CatalogError> {
    let trimmed = name.trim();
    if trimmed.is_empty()
        || trimmed.chars().count() > MAX_NAME
        || trimmed.chars().any(char::is_control)
    {
        return Err(CatalogError::Invalid(format!(
            "{what}: must be 1 to {MAX_NAME} characters without control characters"
        )));
    }
    Ok(())
}

fn check(new: &NewActivity) -> Result<(), CatalogError> {
    check_name("workspace", &new.workspace)?;
    check_name("name", &new.name)?;
    check_name("group", &new.group)?;
    check_name("channel", &new.channel)?;
    check_name("ad_format", &new.ad_format)?;
    if let Some(url) = &new.landing_url {
        check_http_url("landing_url", url)?;
    }
    for (what, urls) in [
        ("third_party_impression", &new.third_party_impression),
        ("third_party_click", &new.third_party_click),
    ] {
        if urls.len() > MAX_THIRD_PARTY {
            return Err(CatalogError::Invalid(format!(
                "{what}: at most {MAX_THIRD_PARTY} URLs"
            )));
        }
        for url in urls {
            check_http_url(what, url)?;
        }
    }
    Ok(())
}

fn group_id(tx: &Transaction<'_>, workspace: &str, group: &str) -> Result<i64, CatalogError> {
    let existing: Option<i64> = tx
        .query_row(
            "SELECT id FROM activity_groups WHERE workspace = ?1 AND name = ?2",
            (workspace, group),
            |r| r.get(0),
        )
        .optional()?;
    if let Some(id) = existing {
        return Ok(id);
    }
    tx.execute(
        "INSERT INTO activity_groups (workspace, name, created_at) VALUES (?1, ?2, ?3)",
        (workspace, group, now()),
    )?;
    Ok(tx.last_insert_rowid())
}

const SELECT: &str =
    "SELECT a.id, a.workspace, g.name, a.name, a.channel, a.ad_format, a.landing_url,
        a.third_party_impression, a.third_party_click, a.status, a.impression_link, a.click_link,
        a.created_at, a.updated_at, a.template
     FROM activities a JOIN activity_groups g ON g.id = a.group_id";

fn from_row(r: &Row<'_>) -> rusqlite::Result<(Activity, String)> {
    let json_list = |s: String| serde_json::from_str::<Vec<String>>(&s).unwrap_or_default();
    Ok((
        Activity {
            id: r.get(0)?,
            workspace: r.get(1)?,
            group: r.get(2)?,
            name: r.get(3)?,
            channel: r.get(4)?,
            ad_format: r.get(5)?,
            landing_url: r.get(6)?,
            third_party_impression: json_list(r.get(7)?),
            third_party_click: json_list(r.get(8)?),
            status: ActivityStatus::On,
            template: r.get(14)?,
            impression_link: r.get::<_, i64>(10)? as u64,
            click_link: r.get::<_, i64>(11)? as u64,
            created_at: r.get(12)?,
            updated_at: r.get(13)?,
        },
        r.get(9)?,
    ))
}

fn finish((mut activity, status): (Activity, String)) -> Result<Activity, CatalogError> {
    activity.status = ActivityStatus::parse(&status)?;
    Ok(activity)
}

impl Catalog {
    /// Creates activities in one transaction (a batch either fully exists or not at all).
    /// `link_ids` yields fresh random link ids (two per activity).
    pub fn create_activities(
        &self,
        batch: &[NewActivity],
        link_ids: impl FnMut() -> u64,
    ) -> Result<Vec<Activity>, CatalogError> {
        self.create_activities_by(batch, link_ids, "system")
    }

    /// [`Catalog::create_activities`], audited as `actor` (e.g. `token:7`, `cli`).
    pub fn create_activities_by(
        &self,
        batch: &[NewActivity],
        mut link_ids: impl FnMut() -> u64,
        actor: &str,
    ) -> Result<Vec<Activity>, CatalogError> {
        for (i, new) in batch.iter().enumerate() {
            check(new).map_err(|e| match e {
                CatalogError::Invalid(m) if batch.len() > 1 => {
                    CatalogError::Invalid(format!("activities[{i}].{m}"))
                }
                other => other,
            })?;
        }
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut ids = Vec::with_capacity(batch.len());
        for (i, new) in batch.iter().enumerate() {
            let taken: Option<i64> = tx
                .query_row(
                    "SELECT id FROM activities WHERE workspace = ?1 AND name = ?2",
                    (&new.workspace, &new.name),
                    |r| r.get(0),
                )
                .optional()?;
            if taken.is_some() {
                let at = if batch.len() > 1 {
                    format!("activities[{i}].")
                } else {
                    String::new()
                };
                return Err(CatalogError::Invalid(format!(
                    "{at}name: an activity named `{}` already exists in workspace `{}`",
                    new.name, new.workspace
                )));
            }
            let group = group_id(&tx, &new.workspace, new.group.trim())?;
            let at = now();
            // Link ids are stored as SQLite's signed 64-bit integers (bit-for-bit).
            tx.execute(
                "INSERT INTO activities (workspace, group_id, name, channel, ad_format, landing_url,
                    third_party_impression, third_party_click, status, impression_link, click_link,
                    created_at, updated_at, template)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'on', ?9, ?10, ?11, ?11, ?12)",
                rusqlite::params![
                    new.workspace,
                    group,
                    new.name.trim(),
                    new.channel,
                    new.ad_format,
                    new.landing_url,
                    serde_json::Value::from(new.third_party_impression.clone()).to_string(),
                    serde_json::Value::from(new.third_party_click.clone()).to_string(),
                    link_ids() as i64,
                    link_ids() as i64,
                    at,
                    new.template,
                ],
            )?;
            ids.push(tx.last_insert_rowid());
        }
        tx.commit()?;
        drop(conn);
        let created = ids
            .iter()
            .map(|id| self.activity(*id))
            .collect::<Result<Vec<_>, _>>()?;
        for a in &created {
            self.audit(
                actor,
                "activity.create",
                &format!("id={} workspace={} name={}", a.id, a.workspace, a.name),
            )?;
        }
        Ok(created)
    }

    /// One activity by id.
    pub fn activity(&self, id: i64) -> Result<Activity, CatalogError> {
        let conn = self.conn();
        let row = conn
            .query_row(&format!("{SELECT} WHERE a.id = ?1"), [id], from_row)
            .optional()?;
        row.map(finish)
            .transpose()?
            .ok_or_else(|| CatalogError::NotFound(format!("activity {id}")))
    }

    /// Activities of a workspace, by id.
    pub fn activities(&self, workspace: &str) -> Result<Vec<Activity>, CatalogError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!("{SELECT} WHERE a.workspace = ?1 ORDER BY a.id"))?;
        let rows = stmt.query_map([workspace], from_row)?;
        rows.map(|r| finish(r?)).collect()
    }

    /// Every activity of every workspace (the collect endpoints' link table).
    pub fn all_activities(&self) -> Result<Vec<Activity>, CatalogError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!("{SELECT} ORDER BY a.id"))?;
        let rows = stmt.query_map([], from_row)?;
        rows.map(|r| finish(r?)).collect()
    }

    /// The activity a link id belongs to, and whether it is its click link.
    pub fn activity_by_link(&self, link: u64) -> Result<Option<(Activity, bool)>, CatalogError> {
        let conn = self.conn();
        let row = conn
            .query_row(
                &format!("{SELECT} WHERE a.impression_link = ?1 OR a.click_link = ?1"),
                [link as i64],
                from_row,
            )
            .optional()?;
        drop(conn);
        row.map(|r| {
            let activity = finish(r)?;
            let is_click = activity.click_link == link;
            Ok((activity, is_click))
        })
        .transpose()
    }

    /// Changes what may change after creation (R56: not the channel, the group or the link
    /// template, whose macros are already in media ad orders). Checked like a new activity;
    /// audited with the names of the changed fields.
    pub fn update_activity(
        &self,
        id: i64,
        edit: &ActivityEdit,
        actor: &str,
    ) -> Result<Activity, CatalogError> {
        let current = self.activity(id)?;
        let mut next = NewActivity {
            workspace: current.workspace.clone(),
            name: current.name.clone(),
            group: current.group.clone(),
            channel: current.channel.clone(),
            ad_format: current.ad_format.clone(),
            landing_url: current.landing_url.clone(),
            third_party_impression: current.third_party_impression.clone(),
            third_party_click: current.third_party_click.clone(),
            template: current.template.clone(),
        };
        let mut changed = Vec::new();
        if let Some(name) = &edit.name {
            next.name = name.trim().to_string();
            changed.push("name");
        }
        if let Some(ad_format) = &edit.ad_format {
            next.ad_format = ad_format.clone();
            changed.push("ad_format");
        }
        if let Some(landing_url) = &edit.landing_url {
            next.landing_url = landing_url.clone();
            changed.push("landing_url");
        }
        if let Some(urls) = &edit.third_party_impression {
            next.third_party_impression = urls.clone();
            changed.push("third_party_impression");
        }
        if let Some(urls) = &edit.third_party_click {
            next.third_party_click = urls.clone();
            changed.push("third_party_click");
        }
        check(&next)?;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let taken: Option<i64> = tx
            .query_row(
                "SELECT id FROM activities WHERE workspace = ?1 AND name = ?2 AND id != ?3",
                (&next.workspace, &next.name, id),
                |r| r.get(0),
            )
            .optional()?;
        if taken.is_some() {
            return Err(CatalogError::Invalid(format!(
                "name: an activity named `{}` already exists in workspace `{}`",
                next.name, next.workspace
            )));
        }
        tx.execute(
            "UPDATE activities SET name = ?1, ad_format = ?2, landing_url = ?3,
                third_party_impression = ?4, third_party_click = ?5, updated_at = ?6
             WHERE id = ?7",
            rusqlite::params![
                next.name,
                next.ad_format,
                next.landing_url,
                serde_json::Value::from(next.third_party_impression.clone()).to_string(),
                serde_json::Value::from(next.third_party_click.clone()).to_string(),
                now(),
                id,
            ],
        )?;
        tx.commit()?;
        drop(conn);
        self.audit(
            actor,
            "activity.edit",
            &format!("id={id} fields={}", changed.join(",")),
        )?;
        self.activity(id)
    }

    /// Sets an activity's status; returns the updated activity.
    pub fn set_activity_status(
        &self,
        id: i64,
        status: ActivityStatus,
        actor: &str,
    ) -> Result<Activity, CatalogError> {
        let n = self.conn().execute(
            "UPDATE activities SET status = ?1, updated_at = ?2 WHERE id = ?3",
            (status.as_str(), now(), id),
        )?;
        if n == 0 {
            return Err(CatalogError::NotFound(format!("activity {id}")));
        }
        self.audit(
            actor,
            "activity.status",
            &format!("id={id} status={}", status.as_str()),
        )?;
        self.activity(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(name: &str) -> NewActivity {
        NewActivity {
            workspace: "ws".into(),
            name: name.into(),
            group: "双11".into(),
            channel: "ocean_engine".into(),
            ad_format: "信息流".into(),
            landing_url: Some("https://example.com/landing?a=1".into()),
            third_party_impression: vec![],
            third_party_click: vec!["https://e.cn.miaozhen.com/r/k=1".into()],
            template: None,
        }
    }

    fn counter() -> impl FnMut() -> u64 {
        let mut n = u64::MAX - 10; // above i64::MAX: stored bit-for-bit
        move || {
            n += 1;
            n
        }
    }

    #[test]
    fn a_batch_is_created_with_groups_inline_and_links_per_activity() -> Result<(), CatalogError> {
        let c = Catalog::open_in_memory()?;
        let created = c.create_activities(&[new("a"), new("b")], counter())?;
        assert_eq!(created.len(), 2);
        assert_eq!(created[0].group, "双11");
        assert_eq!(created[0].status, ActivityStatus::On);
        assert_ne!(created[0].impression_link, created[0].click_link);
        assert_eq!(c.activities("ws")?.len(), 2);
        let (found, is_click) = c
            .activity_by_link(created[1].click_link)?
            .ok_or(CatalogError::NotFound("x".into()))?;
        assert_eq!((found.name.as_str(), is_click), ("b", true));
        assert_eq!(c.activity_by_link(12345)?, None);
        Ok(())
    }

    #[test]
    fn bad_input_is_refused_and_leaves_nothing_behind() -> Result<(), CatalogError> {
        let c = Catalog::open_in_memory()?;
        let mut bad = new("c");
        bad.landing_url = Some("javascript:alert(1)".into());
        let err = c.create_activities(&[new("ok"), bad], counter());
        assert!(
            matches!(&err, Err(CatalogError::Invalid(m)) if m.starts_with("activities[1].landing_url")),
            "{err:?}"
        );
        assert!(c.activities("ws")?.is_empty(), "no partial batch");
        let mut many = new("d");
        many.third_party_click = vec!["https://a.com".into(); 4];
        assert!(
            matches!(c.create_activities(&[many], counter()), Err(CatalogError::Invalid(m)) if m.contains("at most 3"))
        );
        c.create_activities(&[new("e")], counter())?;
        assert!(
            matches!(c.create_activities(&[new("e")], counter()), Err(CatalogError::Invalid(m)) if m.contains("already exists"))
        );
        Ok(())
    }

    #[test]
    fn an_edit_changes_only_editable_fields_and_is_checked() -> Result<(), CatalogError> {
        let c = Catalog::open_in_memory()?;
        let a = c
            .create_activities(&[new("a"), new("b")], counter())?
            .remove(0);
        let edit = ActivityEdit {
            name: Some(" a2 ".into()),
            landing_url: Some(None),
            third_party_impression: Some(vec!["https://v.admaster.com.cn/i/a1".into()]),
            ..ActivityEdit::default()
        };
        let edited = c.update_activity(a.id, &edit, "token:1")?;
        assert_eq!(edited.name, "a2");
        assert_eq!(edited.landing_url, None);
        assert_eq!(edited.third_party_impression.len(), 1);
        assert_eq!(
            (edited.channel.as_str(), edited.impression_link),
            (a.channel.as_str(), a.impression_link)
        );
        let taken = ActivityEdit {
            name: Some("b".into()),
            ..ActivityEdit::default()
        };
        assert!(
            matches!(c.update_activity(a.id, &taken, "t"), Err(CatalogError::Invalid(m)) if m.starts_with("name: ")),
        );
        let bad = ActivityEdit {
            landing_url: Some(Some("ftp://x".into())),
            ..ActivityEdit::default()
        };
        assert!(c.update_activity(a.id, &bad, "t").is_err());
        assert_eq!(
            c.activity(a.id)?.name,
            "a2",
            "a refused edit changes nothing"
        );
        assert!(
            c.audit_entries(10)?
                .iter()
                .any(|(_, actor, action, detail)| actor == "token:1"
                    && action == "activity.edit"
                    && detail.contains("fields=name,landing_url,third_party_impression"))
        );
        Ok(())
    }

    #[test]
    fn status_switches_are_audited() -> Result<(), CatalogError> {
        let c = Catalog::open_in_memory()?;
        let a = c.create_activities(&[new("a")], counter())?.remove(0);
        assert_eq!(
            c.set_activity_status(a.id, ActivityStatus::PausedQuota, "quota")?
                .status,
            ActivityStatus::PausedQuota
        );
        assert!(matches!(
            c.set_activity_status(999, ActivityStatus::Off, "t"),
            Err(CatalogError::NotFound(_))
        ));
        assert!(
            c.audit_entries(10)?
                .iter()
                .any(|(_, actor, action, _)| actor == "quota" && action == "activity.status")
        );
        Ok(())
    }
}
