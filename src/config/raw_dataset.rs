//! Stage one of dataset jobs (`kind: dataset`): a pipeline file that, instead of moving rows
//! from a source to a sink in batches, rebuilds a whole dataset from committed lake data,
//! writes it as a new version and publishes it (`datasets/{output}/version=…` + `_current`).
//!
//! Same rules as [`super::raw`]: every struct denies unknown keys, every field is documented
//! (the docs end up in `schemas/pipeline.schema.json`), checked values are [`Located`].

use std::marker::PhantomData;

use schemars::JsonSchema;
use serde::de::{self, MapAccess};
use serde::{Deserialize, Deserializer};

use super::raw::{Located, OrderedMap, RawPipeline, RawSchedule, Tagged, TaggedVisitor};
use super::raw_tags::RawUserTagsBuild;

/// Any file under `pipelines/`: a streaming pipeline (no `kind`, or `kind: stream`) or a
/// dataset job (`kind: dataset`). Used for the JSON Schema; the loader reads `kind` first.
#[derive(Debug, JsonSchema)]
#[schemars(title = "backflow pipeline file (format v1)")]
#[serde(untagged)]
#[allow(
    clippy::large_enum_variant,
    reason = "only used to generate the JSON Schema"
)]
pub enum RawPipelineFile {
    /// A streaming pipeline: source → transforms → sink.
    Stream(RawPipeline),
    /// A dataset job: rebuilds a dataset from the lake and publishes a new version.
    Dataset(RawDatasetJob),
}

/// The `kind` of a streaming pipeline.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[schemars(rename = "StreamKind")]
#[serde(rename_all = "snake_case")]
pub enum RawStreamKind {
    /// A streaming pipeline (the default when `kind` is left out).
    Stream,
}

/// The first look at a file: only its `kind` (everything else is read by the full parse).
#[derive(Debug, Deserialize)]
pub struct KindProbe {
    #[serde(default)]
    pub kind: Option<Located<String>>,
}

/// A dataset job (`kind: dataset`): rebuilds a dataset from committed lake data on a
/// schedule or on demand (`backflow run NAME`), validates it and publishes it atomically.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "DatasetJob")]
#[serde(deny_unknown_fields)]
pub struct RawDatasetJob {
    /// `dataset`.
    pub kind: RawDatasetKind,
    /// Unique job name, `[a-z][a-z0-9_]*` (shared with pipeline names); the key of its run
    /// history.
    pub name: Located<String>,
    /// Free text for people reading the job list.
    #[serde(default)]
    pub description: Option<String>,
    /// What to build. `type` must be the first key.
    pub dataset: RawDatasetBuild,
    /// How a new version is checked and published, and how many are kept.
    #[serde(default)]
    pub publish: Option<RawPublish>,
    /// When to refresh. Without a schedule the job runs only on demand (`backflow run`).
    #[serde(default)]
    pub schedule: Option<RawSchedule>,
    /// The period each scheduled, backfill or rerun instance covers, and the wait for its
    /// sources.
    #[serde(default)]
    pub refresh: Option<RawRefresh>,
}

/// How period instances of a dataset job are refreshed.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(rename = "Refresh")]
#[serde(deny_unknown_fields)]
pub struct RawRefresh {
    /// The period one instance covers, in the daemon's `time_zone`: `day` (default) or `hour`
    /// (needs `dataset.time_grain: hour`). A scheduled run covers the last whole period before
    /// its fire time; an instance rebuilds the rows of its period and keeps the rest of the
    /// current version.
    #[serde(default)]
    pub period: Option<Located<RawPeriodUnit>>,
    /// Wait until the pipelines writing the sources have committed everything that arrived
    /// before the period's end; without this the run starts at once.
    #[serde(default)]
    pub wait_for_sources: Option<RawWaitForSources>,
}

/// The unit of a refresh period.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema)]
#[schemars(rename = "PeriodUnit")]
#[serde(rename_all = "snake_case")]
pub enum RawPeriodUnit {
    /// Local midnight to midnight.
    #[default]
    Day,
    /// One local hour.
    Hour,
}

/// The wait for source watermarks.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "WaitForSources")]
#[serde(deny_unknown_fields)]
pub struct RawWaitForSources {
    /// Longest wait, e.g. `2h`; then the run ends `timed_out` and the previous version stays
    /// current.
    pub timeout: Located<String>,
    /// How often the watermarks are checked (default `30s`).
    #[serde(default)]
    pub poll_interval: Option<Located<String>>,
}

/// The only `kind` of a dataset job.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[schemars(rename = "DatasetKind")]
#[serde(rename_all = "snake_case")]
pub enum RawDatasetKind {
    /// A dataset job.
    Dataset,
}

/// A dataset kind, chosen by `type`. `type` must be the first key of the mapping.
#[derive(Debug, JsonSchema)]
#[schemars(rename = "DatasetBuild")]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RawDatasetBuild {
    /// The behavior dataset (行为数据集, spec/datasets-admin.md §1.7): one row per user,
    /// behavior type, period, channel and object, plus its dimension tables.
    Behavior(RawBehaviorBuild),
    /// The user tag dataset (用户标签数据集, spec/datasets-admin.md §1.3): one row per user, tags
    /// declared in `tags`.
    UserTags(RawUserTagsBuild),
}

/// The `type` values of a dataset build.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DatasetBuildKind {
    Behavior,
    UserTags,
}

impl<'de> Tagged<'de> for RawDatasetBuild {
    type Kind = DatasetBuildKind;
    const KINDS: &'static str = "behavior, user_tags";

    fn from_kind<A: MapAccess<'de>>(kind: DatasetBuildKind, rest: A) -> Result<Self, A::Error> {
        let rest = de::value::MapAccessDeserializer::new(rest);
        match kind {
            DatasetBuildKind::Behavior => RawBehaviorBuild::deserialize(rest).map(Self::Behavior),
            DatasetBuildKind::UserTags => RawUserTagsBuild::deserialize(rest).map(Self::UserTags),
        }
    }
}

impl<'de> Deserialize<'de> for RawDatasetBuild {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(TaggedVisitor(PhantomData))
    }
}

/// `type: behavior`: the behavior dataset from `behavior_events` and, mapped to behavior
/// types, `ad_events`.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "BehaviorBuild")]
#[serde(deny_unknown_fields)]
pub struct RawBehaviorBuild {
    /// Output dataset name, `[a-z][a-z0-9_]*`: the folder `datasets/{output}/` under the lake
    /// root. Two jobs cannot write the same output.
    pub output: Located<String>,
    /// Period a behavior time is rounded down to (in the workspace time zone): `day` (the
    /// manual's insight sample, default) or `hour`. Rows of one user, type, period, channel and
    /// object are summed into one row.
    #[serde(default)]
    pub time_grain: RawTimeGrain,
    /// The lake dataset of behavior events (default `behavior_events`); `null` leaves them out.
    #[serde(default = "default_behavior_events")]
    pub behavior_events: Option<Located<String>>,
    /// How monitoring-link hits become behaviors; leave out to use behavior events only.
    #[serde(default)]
    pub ad_events: Option<RawAdEventsMapping>,
}

fn default_behavior_events() -> Option<Located<String>> {
    Some(Located(serde_saphyr::Spanned {
        value: "behavior_events".to_string(),
        referenced: serde_saphyr::Location::UNKNOWN,
        defined: serde_saphyr::Location::UNKNOWN,
    }))
}

/// Period of a behavior row.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema)]
#[schemars(rename = "TimeGrain")]
#[serde(rename_all = "snake_case")]
pub enum RawTimeGrain {
    /// Local midnight.
    #[default]
    Day,
    /// The start of the local hour.
    Hour,
}

/// Monitoring-link hits as behaviors: the user is the first device ID present (idfa, imei_md5,
/// oaid, mac_md5, with ID types idfa, imei, oaid, mac); the channel is the media; the object
/// is the activity or the creative. Hits without any of these IDs are left out.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "AdEventsMapping")]
#[serde(deny_unknown_fields)]
pub struct RawAdEventsMapping {
    /// The lake dataset of hits (default `ad_events`).
    #[serde(default)]
    pub dataset: Option<Located<String>>,
    /// Behavior type per hit `endpoint` (`impression`, `click`, `feedback`); endpoints not
    /// listed are left out. Default `{impression: 曝光, click: 点击}`.
    #[serde(default)]
    pub behavior_types: Option<OrderedMap<Located<String>>>,
    /// What the behavior object is: `activity` (attribute 监测活动, value and value ID the
    /// activity id, default) or `creative` (attribute 创意, the media's creative id).
    #[serde(default)]
    pub object: RawAdObject,
    /// Keep hits flagged as bots or media tests (`is_bot`, `is_test`); default false.
    #[serde(default)]
    pub include_flagged: bool,
}

/// The object of an ad behavior.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema)]
#[schemars(rename = "AdObject")]
#[serde(rename_all = "snake_case")]
pub enum RawAdObject {
    /// The monitoring activity.
    #[default]
    Activity,
    /// The media's creative id.
    Creative,
}

/// Checks and retention of published versions.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(rename = "Publish")]
#[serde(deny_unknown_fields)]
pub struct RawPublish {
    /// How many published versions to keep (> 0, default 3); older ones are deleted after a
    /// publish.
    #[serde(default)]
    pub keep_versions: Option<Located<u64>>,
    /// Publish a version with no rows (default false: an empty result fails the run and the
    /// previous version stays current).
    #[serde(default)]
    pub allow_empty: bool,
    /// Largest share of nulls per column of the main table, from 0 to 1:
    /// `{channel: 0.5}`. Required columns are always checked at 0: `user_id`, `id_type`,
    /// `behavior_type`, `behavior_time` and `object_attribute` of the behavior dataset;
    /// `user_id` and `id_type` of a user tag dataset.
    #[serde(default)]
    pub max_null_ratio: Option<OrderedMap<Located<f64>>>,
    /// Announce each published version downstream (`{kafka: {brokers, topic, ...}}`). The
    /// brokers and topic are checked before the refresh builds anything; a notice that is not
    /// acknowledged fails the run after the version was published (its retry publishes and
    /// announces a newer version).
    #[serde(default)]
    pub notify: Option<super::raw_kafka_sink::RawNotify>,
}
