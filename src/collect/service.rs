//! Managing monitoring activities (监测活动) and Tencent feedback tasks: the one place that
//! checks input against the media registry, writes the catalog, mints the copy-paste links and
//! refreshes the running daemon's link table.
//!
//! The admin API (`src/api/activities.rs`) and the CLI's direct path (`backflow activity …
//! --data-dir`) both call this, so both accept and refuse exactly the same input with the same
//! messages, and print the same JSON. Every error names the input field it is about
//! ([`ServiceError::field`]), so the API can answer `{"error": …, "field": …}`.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize};
use tracing::warn;

use crate::catalog::{
    Activity, ActivityEdit, ActivityStatus, Catalog, CatalogError, FeedbackTask, NewActivity,
};
use crate::collect::link::{Endpoint, LinkSigner, new_link_id};
use crate::collect::links::{LinkCache, activity_links};
use crate::collect::registry::MediaRegistry;

/// Most activities one batch may create.
pub const MAX_BATCH: usize = 500;

/// The media whose feedback protocol a task uses when the request names none.
pub const DEFAULT_FEEDBACK_CHANNEL: &str = "tencent_ads";

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Bad input (HTTP 422), located at `field` when it is about one.
    #[error("{message}")]
    Invalid {
        field: Option<String>,
        message: String,
    },
    /// A name already taken (HTTP 409).
    #[error("{message}")]
    Conflict { field: String, message: String },
    /// No such activity or task, or not in the caller's workspace (HTTP 404).
    #[error("{0} not found")]
    NotFound(String),
    /// The catalog failed (HTTP 500; logged, never shown).
    #[error(transparent)]
    Catalog(CatalogError),
}

impl ServiceError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ServiceError::Invalid {
            field: Some(field.into()),
            message: message.into(),
        }
    }

    /// The input field the error is about.
    pub fn field(&self) -> Option<&str> {
        match self {
            ServiceError::Invalid { field, .. } => field.as_deref(),
            ServiceError::Conflict { field, .. } => Some(field),
            _ => None,
        }
    }
}

impl From<CatalogError> for ServiceError {
    fn from(e: CatalogError) -> Self {
        match e {
            // The catalog's checks say `field: message` (`activities[2].landing_url: …`).
            CatalogError::Invalid(message) => {
                let field = message
                    .split_once(": ")
                    .map(|(head, _)| head)
                    .filter(|head| {
                        !head.is_empty()
                            && head
                                .chars()
                                .all(|c| c.is_ascii_alphanumeric() || "_.[]".contains(c))
                    })
                    .map(str::to_string);
                match field {
                    Some(field) if message.contains("already exists") => {
                        ServiceError::Conflict { field, message }
                    }
                    field => ServiceError::Invalid { field, message },
                }
            }
            CatalogError::NotFound(what) => ServiceError::NotFound(what),
            other => ServiceError::Catalog(other),
        }
    }
}

/// Counters of one activity (R53), from the catalog's per-day counters that every `ad_events`
/// batch commits (see [`ActivityService::totals`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Counters {
    /// Accepted impression hits.
    pub impressions: u64,
    /// Accepted click hits.
    pub clicks: u64,
    /// Distinct (device key, activity, day) clicks (排重点击, DESIGN.md).
    pub dedup_clicks: u64,
}

/// An activity with its links and counters: what the API answers and the CLI prints.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ActivityView {
    #[serde(flatten)]
    pub activity: Activity,
    /// The impression monitoring link with the media's macros, to paste into the ad order.
    pub impression_url: String,
    /// The click monitoring link with the media's macros.
    pub click_url: String,
    /// For a media whose third-party monitoring is chained (`third_party: chained` in
    /// `schemas/media.yaml`) and an activity with a third-party click URL: the third party's
    /// click link wrapping ours, to paste into the ad order instead of `click_url`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chained_click_url: Option<String>,
    pub totals: Counters,
}

/// A feedback task with its Feedback URL.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct FeedbackView {
    #[serde(flatten)]
    pub task: FeedbackTask,
    /// The URL to paste into Tencent's 点击监测 → 获取点击数据 dialog; Tencent appends its
    /// parameters to it.
    pub feedback_url: String,
}

/// A new activity (R46). Unknown keys are refused.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivityInput {
    /// Activity name (活动名称), unique in the workspace; 1–100 characters.
    pub name: String,
    /// Activity group (所属活动组); created if new. Fixed after creation.
    pub group: String,
    /// Channel (渠道): a media id of `schemas/media.yaml`, e.g. `ocean_engine`, `tencent_ads`.
    /// Fixed after creation.
    pub channel: String,
    /// Ad format (广告格式), e.g. 信息流, 开屏.
    pub ad_format: String,
    /// Where a click redirects (http or https only); none: clicks answer `204`.
    #[serde(default)]
    pub landing_url: Option<String>,
    /// Up to 3 third-party impression monitoring URLs (Miaozhen, AdMaster).
    #[serde(default)]
    pub third_party_impression: Vec<String>,
    /// Up to 3 third-party click monitoring URLs.
    #[serde(default)]
    pub third_party_click: Vec<String>,
    /// One of the media's alternative link templates; default: the media's own. Fixed after
    /// creation.
    #[serde(default)]
    pub template: Option<String>,
}

/// A batch of activities sharing everything but the name (R50); all or nothing.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchInput {
    /// One activity per name (1–500 names, each unique).
    pub names: Vec<String>,
    pub group: String,
    pub channel: String,
    pub ad_format: String,
    #[serde(default)]
    pub landing_url: Option<String>,
    #[serde(default)]
    pub third_party_impression: Vec<String>,
    #[serde(default)]
    pub third_party_click: Vec<String>,
    #[serde(default)]
    pub template: Option<String>,
}

/// A change to an activity: absent keys stay as they are. `channel`, `group` and `template` are
/// fixed after creation (R56) and refused when present.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EditInput {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub ad_format: Option<String>,
    /// A URL, or `null` to remove the landing URL.
    #[serde(default, deserialize_with = "present")]
    #[schemars(with = "Option<String>")]
    pub landing_url: Option<Option<String>>,
    /// Replaces the list (at most 3).
    #[serde(default)]
    pub third_party_impression: Option<Vec<String>>,
    /// Replaces the list (at most 3).
    #[serde(default)]
    pub third_party_click: Option<Vec<String>>,
    /// Refused: fixed after creation.
    #[serde(default, deserialize_with = "present")]
    #[schemars(with = "Option<serde_json::Value>")]
    pub channel: Option<Option<serde_json::Value>>,
    /// Refused: fixed after creation.
    #[serde(default, deserialize_with = "present")]
    #[schemars(with = "Option<serde_json::Value>")]
    pub group: Option<Option<serde_json::Value>>,
    /// Refused: fixed after creation.
    #[serde(default, deserialize_with = "present")]
    #[schemars(with = "Option<serde_json::Value>")]
    pub template: Option<Option<serde_json::Value>>,
}

/// `Some(value)` when the key is present, even as `null` (then `Some(None)`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// On or off, by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Switch {
    On,
    Off,
}

/// A switch request.
#[derive(Debug, Clone, Copy, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SwitchInput {
    pub status: Switch,
}

/// A new feedback task.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedbackInput {
    /// Task name, unique in the workspace; 1–100 characters.
    pub name: String,
    /// Media with a feedback protocol (default `tencent_ads`).
    #[serde(default)]
    pub channel: Option<String>,
}

/// A rename.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameInput {
    pub name: String,
}

/// How the links CSV is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CsvFlavor {
    /// For Excel: a UTF-8 byte-order mark (so Excel reads the Chinese names as UTF-8, not
    /// GBK) and text cells starting with `=`, `+`, `-` or `@` prefixed with `'` (so a name is
    /// never run as a formula).
    #[default]
    Excel,
    /// Plain RFC 4180 UTF-8, cells as stored: for scripts.
    Plain,
}

/// Which workspace a caller may see: `None` = every workspace.
pub type Scope<'a> = Option<&'a str>;

/// The activities and feedback tasks of the catalog, with what their links need.
#[derive(Debug, Clone)]
pub struct ActivityService {
    catalog: Arc<Catalog>,
    registry: Arc<MediaRegistry>,
    signer: Arc<LinkSigner>,
    base_url: String,
    /// The running daemon's link table, reloaded after every change (absent on the CLI path).
    links: Option<LinkCache>,
}

impl ActivityService {
    pub fn new(
        catalog: Arc<Catalog>,
        registry: Arc<MediaRegistry>,
        signer: Arc<LinkSigner>,
        base_url: String,
        links: Option<LinkCache>,
    ) -> Self {
        ActivityService {
            catalog,
            registry,
            signer,
            base_url,
            links,
        }
    }

    pub fn registry(&self) -> &MediaRegistry {
        &self.registry
    }

    /// Makes a change visible to the endpoints at once (the daemon also reloads every 2 s).
    fn changed(&self) {
        if let Some(links) = &self.links
            && let Err(e) = links.reload(&self.catalog, &self.registry)
        {
            warn!(error = %e, "link table reload after a change failed; the periodic reload retries");
        }
    }

    fn check_channel(&self, channel: &str, template: Option<&str>) -> Result<(), ServiceError> {
        let Some(media) = self.registry.get(channel) else {
            let known: Vec<&str> = self.registry.media().map(|m| m.id.as_str()).collect();
            return Err(ServiceError::invalid(
                "channel",
                format!(
                    "unknown channel `{channel}`; the media registry has: {}",
                    known.join(", ")
                ),
            ));
        };
        if let Some(t) = template
            && media.protocol_by_id(t).is_none()
        {
            let known: Vec<&str> = media.protocols().map(|p| p.id.as_str()).collect();
            return Err(ServiceError::invalid(
                "template",
                format!(
                    "channel `{channel}` has no link template `{t}`; it has: {}",
                    known.join(", ")
                ),
            ));
        }
        Ok(())
    }

    /// Counters per activity id of a workspace (what has landed in the lake so far).
    fn totals(&self, workspace: &str) -> Result<HashMap<i64, Counters>, ServiceError> {
        Ok(self
            .catalog
            .activity_totals(workspace)?
            .into_iter()
            .map(|(id, t)| {
                let counters = Counters {
                    impressions: t.impressions,
                    clicks: t.clicks,
                    dedup_clicks: t.dedup_clicks,
                };
                (id, counters)
            })
            .collect())
    }

    fn view(&self, activity: Activity, totals: &HashMap<i64, Counters>) -> ActivityView {
        let counters = totals.get(&activity.id).copied().unwrap_or_default();
        let links = activity_links(activity, &self.base_url, &self.signer, &self.registry);
        ActivityView {
            activity: links.activity,
            impression_url: links.impression_url,
            click_url: links.click_url,
            chained_click_url: links.chained_click_url,
            totals: counters,
        }
    }

    fn view_one(&self, activity: Activity) -> Result<ActivityView, ServiceError> {
        let totals = self.totals(&activity.workspace)?;
        Ok(self.view(activity, &totals))
    }

    /// The activity, if the caller's scope includes its workspace.
    fn activity_in(&self, id: i64, scope: Scope<'_>) -> Result<Activity, ServiceError> {
        let activity = self.catalog.activity(id)?;
        match scope {
            Some(ws) if ws != activity.workspace => {
                Err(ServiceError::NotFound(format!("activity {id}")))
            }
            _ => Ok(activity),
        }
    }

    /// Creates one activity, enabled (R47).
    pub fn create(
        &self,
        workspace: &str,
        input: ActivityInput,
        actor: &str,
    ) -> Result<ActivityView, ServiceError> {
        self.check_channel(&input.channel, input.template.as_deref())?;
        let new = NewActivity {
            workspace: workspace.to_string(),
            name: input.name,
            group: input.group,
            channel: input.channel,
            ad_format: input.ad_format,
            landing_url: input.landing_url,
            third_party_impression: input.third_party_impression,
            third_party_click: input.third_party_click,
            template: input.template,
        };
        let created =
            self.catalog
                .create_activities_by(std::slice::from_ref(&new), new_link_id, actor)?;
        self.changed();
        let activity = created.into_iter().next().ok_or_else(|| {
            ServiceError::Catalog(CatalogError::Corrupt("nothing created".into()))
        })?;
        self.view_one(activity)
    }

    /// Creates one activity per name, sharing the other fields; all or nothing (R50–R51).
    pub fn create_batch(
        &self,
        workspace: &str,
        input: BatchInput,
        actor: &str,
    ) -> Result<Vec<ActivityView>, ServiceError> {
        if input.names.is_empty() || input.names.len() > MAX_BATCH {
            return Err(ServiceError::invalid(
                "names",
                format!("names: 1 to {MAX_BATCH} activity names"),
            ));
        }
        for (i, name) in input.names.iter().enumerate() {
            if input.names[..i].iter().any(|n| n.trim() == name.trim()) {
                return Err(ServiceError::invalid(
                    format!("names[{i}]"),
                    format!("names[{i}]: `{name}` appears twice in the batch"),
                ));
            }
        }
        self.check_channel(&input.channel, input.template.as_deref())?;
        let batch: Vec<NewActivity> = input
            .names
            .iter()
            .map(|name| NewActivity {
                workspace: workspace.to_string(),
                name: name.clone(),
                group: input.group.clone(),
                channel: input.channel.clone(),
                ad_format: input.ad_format.clone(),
                landing_url: input.landing_url.clone(),
                third_party_impression: input.third_party_impression.clone(),
                third_party_click: input.third_party_click.clone(),
                template: input.template.clone(),
            })
            .collect();
        let created = self
            .catalog
            .create_activities_by(&batch, new_link_id, actor)
            .map_err(|e| batch_field(e.into()))?;
        self.changed();
        let totals = self.totals(workspace)?;
        Ok(created.into_iter().map(|a| self.view(a, &totals)).collect())
    }

    /// Edits what may change (R56).
    pub fn edit(
        &self,
        id: i64,
        input: EditInput,
        scope: Scope<'_>,
        actor: &str,
    ) -> Result<ActivityView, ServiceError> {
        for (field, present) in [
            ("channel", input.channel.is_some()),
            ("group", input.group.is_some()),
            ("template", input.template.is_some()),
        ] {
            if present {
                return Err(ServiceError::invalid(
                    field,
                    format!(
                        "{field}: cannot be changed after creation (its links are in media ad \
                         orders); create a new activity instead"
                    ),
                ));
            }
        }
        self.activity_in(id, scope)?;
        let edit = ActivityEdit {
            name: input.name,
            ad_format: input.ad_format,
            landing_url: input.landing_url,
            third_party_impression: input.third_party_impression,
            third_party_click: input.third_party_click,
        };
        let activity = self.catalog.update_activity(id, &edit, actor)?;
        self.changed();
        self.view_one(activity)
    }

    /// Switches an activity on or off by hand. Switching on is also how a `paused_quota`
    /// activity comes back after a top-up (R55): nothing else turns it on.
    pub fn switch(
        &self,
        id: i64,
        to: Switch,
        scope: Scope<'_>,
        actor: &str,
    ) -> Result<ActivityView, ServiceError> {
        self.activity_in(id, scope)?;
        let status = match to {
            Switch::On => ActivityStatus::On,
            Switch::Off => ActivityStatus::Off,
        };
        let activity = self.catalog.set_activity_status(id, status, actor)?;
        self.changed();
        self.view_one(activity)
    }

    /// One activity with its links (提取链接, R57).
    pub fn get(&self, id: i64, scope: Scope<'_>) -> Result<ActivityView, ServiceError> {
        let activity = self.activity_in(id, scope)?;
        self.view_one(activity)
    }

    /// The activities of a workspace with links and counters (R53).
    pub fn list(&self, workspace: &str) -> Result<Vec<ActivityView>, ServiceError> {
        let totals = self.totals(workspace)?;
        Ok(self
            .catalog
            .activities(workspace)?
            .into_iter()
            .map(|a| self.view(a, &totals))
            .collect())
    }

    /// The links of a workspace's activities as CSV (批量导出链接, R58); only `ids` when given.
    pub fn links_csv(
        &self,
        workspace: &str,
        ids: Option<&[i64]>,
        flavor: CsvFlavor,
    ) -> Result<Vec<u8>, ServiceError> {
        let all = self.list(workspace)?;
        if let Some(ids) = ids
            && let Some(missing) = ids
                .iter()
                .find(|id| !all.iter().any(|a| a.activity.id == **id))
        {
            return Err(ServiceError::invalid(
                "ids",
                format!("ids: no activity {missing} in workspace `{workspace}`"),
            ));
        }
        let mut out = Vec::new();
        if flavor == CsvFlavor::Excel {
            out.extend_from_slice("\u{feff}".as_bytes());
        }
        let cell = |s: &str| -> String {
            if flavor == CsvFlavor::Excel && s.starts_with(['=', '+', '-', '@']) {
                format!("'{s}")
            } else {
                s.to_string()
            }
        };
        let mut w = csv::Writer::from_writer(&mut out);
        let csv_err = |e: csv::Error| ServiceError::Catalog(CatalogError::Corrupt(e.to_string()));
        w.write_record([
            "id",
            "name",
            "group",
            "channel",
            "ad_format",
            "status",
            "impression_url",
            "click_url",
        ])
        .map_err(csv_err)?;
        for a in all
            .iter()
            .filter(|a| ids.is_none_or(|ids| ids.contains(&a.activity.id)))
        {
            w.write_record([
                a.activity.id.to_string(),
                cell(&a.activity.name),
                cell(&a.activity.group),
                a.activity.channel.clone(),
                cell(&a.activity.ad_format),
                a.activity.status.as_str().to_string(),
                a.impression_url.clone(),
                a.click_url.clone(),
            ])
            .map_err(csv_err)?;
        }
        w.flush()
            .map_err(|e| ServiceError::Catalog(CatalogError::Corrupt(e.to_string())))?;
        drop(w);
        Ok(out)
    }

    fn feedback_view(&self, task: FeedbackTask) -> FeedbackView {
        let token = self.signer.mint(task.link, Endpoint::Feedback);
        let feedback_url = format!(
            "{}{}{token}",
            self.base_url.trim_end_matches('/'),
            Endpoint::Feedback.path()
        );
        FeedbackView { task, feedback_url }
    }

    fn task_in(&self, id: i64, scope: Scope<'_>) -> Result<FeedbackTask, ServiceError> {
        let task = self.catalog.feedback_task(id)?;
        match scope {
            Some(ws) if ws != task.workspace => {
                Err(ServiceError::NotFound(format!("feedback task {id}")))
            }
            _ => Ok(task),
        }
    }

    /// Creates a feedback task, not enabled until switched on (R60).
    pub fn create_feedback(
        &self,
        workspace: &str,
        input: FeedbackInput,
        actor: &str,
    ) -> Result<FeedbackView, ServiceError> {
        let channel = input
            .channel
            .unwrap_or_else(|| DEFAULT_FEEDBACK_CHANNEL.to_string());
        self.check_channel(&channel, None)?;
        let protocol = self
            .registry
            .get(&channel)
            .and_then(|m| m.feedback_protocol())
            .ok_or_else(|| {
                ServiceError::invalid(
                    "channel",
                    format!("channel: `{channel}` has no feedback protocol in the media registry"),
                )
            })?;
        let task = self.catalog.create_feedback_task(
            workspace,
            &input.name,
            &channel,
            &protocol.id,
            new_link_id(),
            actor,
        )?;
        self.changed();
        Ok(self.feedback_view(task))
    }

    /// Renames a feedback task (R61).
    pub fn rename_feedback(
        &self,
        id: i64,
        input: RenameInput,
        scope: Scope<'_>,
        actor: &str,
    ) -> Result<FeedbackView, ServiceError> {
        self.task_in(id, scope)?;
        let task = self.catalog.rename_feedback_task(id, &input.name, actor)?;
        Ok(self.feedback_view(task))
    }

    /// Switches a feedback task on or off.
    pub fn switch_feedback(
        &self,
        id: i64,
        to: Switch,
        scope: Scope<'_>,
        actor: &str,
    ) -> Result<FeedbackView, ServiceError> {
        self.task_in(id, scope)?;
        let status = match to {
            Switch::On => ActivityStatus::On,
            Switch::Off => ActivityStatus::Off,
        };
        let task = self.catalog.set_feedback_task_status(id, status, actor)?;
        self.changed();
        Ok(self.feedback_view(task))
    }

    /// One feedback task with its URL.
    pub fn get_feedback(&self, id: i64, scope: Scope<'_>) -> Result<FeedbackView, ServiceError> {
        Ok(self.feedback_view(self.task_in(id, scope)?))
    }

    /// The feedback tasks of a workspace with their URLs (R61).
    pub fn list_feedback(&self, workspace: &str) -> Result<Vec<FeedbackView>, ServiceError> {
        Ok(self
            .catalog
            .feedback_tasks(Some(workspace))?
            .into_iter()
            .map(|t| self.feedback_view(t))
            .collect())
    }
}

/// A batch error located in the request: `activities[i].name` → `names[i]`; the other fields
/// are shared, so `activities[i].landing_url` → `landing_url`.
fn batch_field(e: ServiceError) -> ServiceError {
    let relocate = |field: &str| -> String {
        match field
            .strip_prefix("activities[")
            .and_then(|r| r.split_once("]."))
        {
            Some((i, "name")) => format!("names[{i}]"),
            Some((_, rest)) => rest.to_string(),
            None => field.to_string(),
        }
    };
    match e {
        ServiceError::Invalid {
            field: Some(field),
            message,
        } => ServiceError::Invalid {
            field: Some(relocate(&field)),
            message,
        },
        ServiceError::Conflict { field, message } => ServiceError::Conflict {
            field: relocate(&field),
            message,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> ActivityService {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/media.yaml");
        let registry = MediaRegistry::load(&path).unwrap_or_else(|e| panic!("{e:?}"));
        let catalog = Catalog::open_in_memory().unwrap_or_else(|e| panic!("{e}"));
        ActivityService::new(
            Arc::new(catalog),
            Arc::new(registry),
            Arc::new(LinkSigner::new(1, [3u8; 32])),
            "https://t.example.com/".into(),
            Some(LinkCache::default()),
        )
    }

    fn input(name: &str) -> ActivityInput {
        serde_json::from_value(serde_json::json!({
            "name": name, "group": "双11", "channel": "kuaishou", "ad_format": "信息流",
            "landing_url": "https://example.com/l"
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_created_activity_is_in_the_link_table_at_once() -> Result<(), ServiceError> {
        let s = service();
        let a = s.create("ws", input("a"), "test")?;
        assert!(a.impression_url.starts_with("https://t.example.com/i/"));
        assert_eq!(s.links.as_ref().map(LinkCache::len), Some(2));
        assert_eq!(a.totals, Counters::default());
        Ok(())
    }

    #[test]
    fn errors_name_their_field() {
        let s = service();
        let mut bad = input("a");
        bad.channel = "nope".into();
        assert_eq!(
            s.create("ws", bad, "t")
                .err()
                .as_ref()
                .and_then(|e| e.field()),
            Some("channel")
        );
        let mut bad = input("a");
        bad.landing_url = Some("javascript:x".into());
        assert_eq!(
            s.create("ws", bad, "t")
                .err()
                .as_ref()
                .and_then(|e| e.field()),
            Some("landing_url")
        );
        let batch: BatchInput = serde_json::from_value(serde_json::json!({
            "names": ["x", "y", "x"], "group": "g", "channel": "kuaishou", "ad_format": "f"
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            s.create_batch("ws", batch, "t")
                .err()
                .as_ref()
                .and_then(|e| e.field()),
            Some("names[2]")
        );
        let batch: BatchInput = serde_json::from_value(serde_json::json!({
            "names": ["x", "y"], "group": "g", "channel": "kuaishou", "ad_format": "f",
            "third_party_click": ["ftp://no"]
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            s.create_batch("ws", batch, "t")
                .err()
                .as_ref()
                .and_then(|e| e.field()),
            Some("third_party_click")
        );
        assert!(s.list("ws").is_ok_and(|l| l.is_empty()), "all or nothing");
    }

    #[test]
    fn fixed_fields_are_refused_by_name_and_scopes_hide_other_workspaces()
    -> Result<(), ServiceError> {
        let s = service();
        let a = s.create("ws", input("a"), "t")?;
        let id = a.activity.id;
        for field in ["channel", "group", "template"] {
            let edit: EditInput = serde_json::from_value(serde_json::json!({ field: null }))
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                s.edit(id, edit, None, "t")
                    .err()
                    .as_ref()
                    .and_then(|e| e.field()),
                Some(field)
            );
        }
        let edit: EditInput = serde_json::from_value(serde_json::json!({"landing_url": null}))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.edit(id, edit, None, "t")?.activity.landing_url, None);
        assert!(matches!(
            s.get(id, Some("other")),
            Err(ServiceError::NotFound(_))
        ));
        assert!(matches!(
            s.switch(id, Switch::Off, Some("other"), "t"),
            Err(ServiceError::NotFound(_))
        ));
        assert!(matches!(
            s.create("ws", input("a"), "t"),
            Err(ServiceError::Conflict { field, .. }) if field == "name"
        ));
        Ok(())
    }

    #[test]
    fn the_excel_csv_has_a_bom_and_defuses_formulas() -> Result<(), ServiceError> {
        let s = service();
        s.create("ws", input("=HYPERLINK(\"x\")"), "t")?;
        let b = s.create("ws", input("普通, \"quoted\""), "t")?;
        let excel =
            String::from_utf8(s.links_csv("ws", None, CsvFlavor::Excel)?).unwrap_or_default();
        assert!(excel.starts_with('\u{feff}'));
        assert!(excel.contains(",\"'=HYPERLINK(\"\"x\"\")\","), "{excel}");
        assert!(excel.contains(",\"普通, \"\"quoted\"\"\","), "{excel}");
        let plain =
            String::from_utf8(s.links_csv("ws", Some(&[b.activity.id]), CsvFlavor::Plain)?)
                .unwrap_or_default();
        assert!(plain.starts_with("id,name,"));
        assert_eq!(plain.lines().count(), 2, "{plain}");
        assert_eq!(
            s.links_csv("ws", Some(&[999]), CsvFlavor::Plain)
                .err()
                .as_ref()
                .and_then(|e| e.field()),
            Some("ids")
        );
        Ok(())
    }

    #[test]
    fn a_feedback_task_mints_a_feedback_url_and_joins_the_link_table() -> Result<(), ServiceError> {
        let s = service();
        let t = s.create_feedback(
            "ws",
            FeedbackInput {
                name: "gdt".into(),
                channel: None,
            },
            "t",
        )?;
        assert_eq!(t.task.protocol, "tencent_feedback");
        assert_eq!(t.task.status, ActivityStatus::Off);
        assert!(t.feedback_url.starts_with("https://t.example.com/fb/"));
        assert!(
            !t.feedback_url.contains('?'),
            "Tencent appends the parameters"
        );
        let links = s.links.clone().unwrap_or_default();
        assert_eq!(
            links.get(t.task.link).map(|l| l.endpoint),
            Some(Endpoint::Feedback)
        );
        let err = s.create_feedback(
            "ws",
            FeedbackInput {
                name: "k".into(),
                channel: Some("kuaishou".into()),
            },
            "t",
        );
        assert_eq!(err.err().as_ref().and_then(|e| e.field()), Some("channel"));
        Ok(())
    }
}
