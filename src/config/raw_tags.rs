//! Stage one of the user tag dataset (`kind: dataset`, `dataset.type: user_tags`): the tags as
//! written in YAML. Each tag is an entry of `dataset.tags`, keyed by its column name, with its
//! kind in `type` (first key). Same rules as [`super::raw`]: unknown keys are errors, every field
//! is documented, checked values are [`Located`].

use std::marker::PhantomData;

use schemars::JsonSchema;
use serde::de::{self, MapAccess};
use serde::{Deserialize, Deserializer};

use super::raw::{Located, OrderedMap, Tagged, TaggedVisitor};

/// `type: user_tags`: the user tag dataset (用户标签数据集, spec/datasets-admin.md §1.3), one row
/// per user, from committed monitoring-link hits.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "UserTagsBuild")]
#[serde(deny_unknown_fields)]
pub struct RawUserTagsBuild {
    /// Output dataset name, `[a-z][a-z0-9_]*`: the folder `datasets/{output}/` under the lake
    /// root. Two jobs cannot write the same output.
    pub output: Located<String>,
    /// Where the hits come from (default: `ad_events`, flagged hits left out).
    #[serde(default)]
    pub source: Option<RawTagSource>,
    /// Extra ID columns (用户标识 besides `user_id`, spec §1.2.4): device-ID fields of the hits,
    /// each output as a column of that name holding the user's largest non-null value in the
    /// lookback. Default: the device-key fields `idfa, imei_md5, oaid, android_id_md5, mac_md5,
    /// caid, aaid`.
    #[serde(default)]
    pub id_columns: Option<Vec<Located<String>>>,
    /// Where every window ends: `day` (the last local midnight, default: a daily refresh sees
    /// whole days) or `hour` (the start of the current local hour, for hourly refreshes). A
    /// window `7d` is `[end - 7 days, end)`; hits after `end` wait for the next refresh.
    #[serde(default)]
    pub window_end: RawWindowEnd,
    /// Hits per partition when grouping by user (default 4 000 000, at least 1 000). A
    /// refresh reading more hits than this first splits them by user into partitions on local
    /// disk (the daemon's `data_dir/tmp/`) and groups one partition at a time: peak memory
    /// follows this number (about 1 GiB per 2 M hits with the shipped tags), not the lake.
    #[serde(default)]
    pub partition_rows: Option<Located<u64>>,
    /// The tags, in column order, keyed by column name: `user_tag_` then lower-case letters,
    /// digits and `_` (at most 64 characters). A tag may use only tags defined above it.
    pub tags: OrderedMap<RawTag>,
}

/// The hits tags are computed from.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(rename = "TagSource")]
#[serde(deny_unknown_fields)]
pub struct RawTagSource {
    /// The lake dataset of hits (default `ad_events`); only committed files are read, and only
    /// the `dt=` partitions the longest window needs.
    #[serde(default)]
    pub dataset: Option<Located<String>>,
    /// Keep hits flagged as bots or media tests (`is_bot`, `is_test`); default false.
    #[serde(default)]
    pub include_flagged: bool,
}

/// Where windows end.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema)]
#[schemars(rename = "WindowEnd")]
#[serde(rename_all = "snake_case")]
pub enum RawWindowEnd {
    /// The last local midnight (workspace time zone) at or before the run.
    #[default]
    Day,
    /// The start of the current local hour.
    Hour,
}

/// Declares the fields every tag kind shares, then the kind's own.
macro_rules! tag_struct {
    ($(#[$meta:meta])* $name:ident, $schema:literal { $($(#[$fmeta:meta])* pub $field:ident: $ty:ty,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Deserialize, JsonSchema)]
        #[schemars(rename = $schema)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty,)*
            /// Display name (标签别名), e.g. `近7天点击次数`.
            #[serde(default)]
            pub alias: Option<String>,
            /// What the tag means (标签说明).
            #[serde(default)]
            pub description: Option<String>,
            /// Tag category (标签类目), e.g. `广告行为`.
            #[serde(default)]
            pub category: Option<String>,
        }
    };
}

tag_struct!(
    /// `type: count`: the user's hits in the window that pass `filter` (numeric, 0 when none).
    RawCountTag, "CountTag" {
        /// Length of the window before the end: `7d`, `30d`, `90d`, `12h` (whole days or hours).
        pub window: Located<String>,
        /// SQL condition over hit columns, e.g. `endpoint = 'click'`; a null result does not count.
        #[serde(default)]
        pub filter: Option<Located<String>>,
    }
);

tag_struct!(
    /// `type: sum`: the sum of a numeric column over the user's hits in the window that pass
    /// `filter` (numeric, 0 when none; nulls are skipped).
    RawSumTag, "SumTag" {
        /// A numeric column of the hits.
        pub column: Located<String>,
        /// Length of the window: `7d`, `30d`, `12h`.
        pub window: Located<String>,
        /// SQL condition over hit columns.
        #[serde(default)]
        pub filter: Option<Located<String>>,
    }
);

tag_struct!(
    /// `type: last_seen`: the time of the user's latest hit in the window that passes `filter`
    /// (date tag, a UTC timestamp; null when none).
    RawLastSeenTag, "LastSeenTag" {
        /// Length of the window: `90d`.
        pub window: Located<String>,
        /// SQL condition over hit columns.
        #[serde(default)]
        pub filter: Option<Located<String>>,
    }
);

tag_struct!(
    /// `type: distinct`: the distinct non-null values of a column over the user's hits in the
    /// window that pass `filter`, sorted, joined by `separator` (multi-value text tag; null when
    /// none).
    RawDistinctTag, "DistinctTag" {
        /// A column of the hits, read as text (`channel`, `activity_id`, `geo_city`…).
        pub column: Located<String>,
        /// Length of the window: `30d`.
        pub window: Located<String>,
        /// SQL condition over hit columns.
        #[serde(default)]
        pub filter: Option<Located<String>>,
        /// At most this many values (the first in sorted order); default 50, the manual's
        /// pivot limit for multi-value tags.
        #[serde(default)]
        pub max_values: Option<Located<u64>>,
        /// Between values (default `,`).
        #[serde(default)]
        pub separator: Option<Located<String>>,
    }
);

tag_struct!(
    /// `type: top_n`: the `n` values of a column with the most hits of the user in the window
    /// that pass `filter`, most first (ties: smaller value first), joined by `separator`. With
    /// `n: 1` a single-value text tag, else multi-value; null when none.
    RawTopNTag, "TopNTag" {
        /// A column of the hits, read as text (`channel` for the most-clicked media).
        pub column: Located<String>,
        /// How many values (> 0).
        pub n: Located<u64>,
        /// Length of the window: `30d`.
        pub window: Located<String>,
        /// SQL condition over hit columns.
        #[serde(default)]
        pub filter: Option<Located<String>>,
        /// Between values (default `,`).
        #[serde(default)]
        pub separator: Option<Located<String>>,
    }
);

tag_struct!(
    /// `type: ratio`: one numeric tag divided by another (CTR = clicks / impressions); null
    /// when the denominator is below `min_denominator`.
    RawRatioTag, "RatioTag" {
        /// A `count` or `sum` tag defined above.
        pub numerator: Located<String>,
        /// A `count` or `sum` tag defined above.
        pub denominator: Located<String>,
        /// Smallest denominator a ratio is given for (default 1, > 0).
        #[serde(default)]
        pub min_denominator: Option<Located<f64>>,
    }
);

tag_struct!(
    /// `type: rfm`: the RFM user type (spec §1.5.5). Each of recency, frequency and monetary is
    /// scored from thresholds; a score at or above its comparison value is high. The three
    /// high/low results give one of 高价值客户, 重点保持客户, 重点发展客户, 重点挽留客户, 一般价值客户,
    /// 一般保持客户, 一般发展客户, 潜在客户 (text tag). Users whose recency tag is null get null.
    RawRfmTag, "RfmTag" {
        /// Recency: a `last_seen` tag; its value is the whole days from it to the window end.
        /// Score = 1 + the number of thresholds the days are *below*.
        pub recency: RawRfmPart,
        /// Frequency: a numeric tag. Score = 1 + the number of thresholds it reaches (≥).
        pub frequency: RawRfmPart,
        /// Monetary: a numeric tag. Score = 1 + the number of thresholds it reaches (≥).
        pub monetary: RawRfmPart,
    }
);

/// One RFM dimension.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "RfmPart")]
#[serde(deny_unknown_fields)]
pub struct RawRfmPart {
    /// The tag the dimension is read from (defined above).
    pub tag: Located<String>,
    /// Score thresholds, ascending, at least one.
    pub thresholds: Located<Vec<f64>>,
    /// The comparison value (对比值): `mean` (the mean score of all users of the version,
    /// default) or a number.
    #[serde(default)]
    pub compare_to: Option<Located<RawCompareTo>>,
}

/// An RFM comparison value.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[schemars(rename = "CompareTo")]
#[serde(untagged)]
pub enum RawCompareTo {
    /// A fixed score.
    Value(f64),
    /// `mean`.
    Name(String),
}

tag_struct!(
    /// `type: aipl`: the AIPL stage (spec §1.6): `L` when `loyalty` holds, else `P` when
    /// `purchase` holds, else `I` when `interest` holds, else `A` when `awareness` holds, else
    /// null (text tag). Each rule is an SQL condition over tags defined above, combined with
    /// `AND` / `OR`, e.g. `user_tag_clicks_30d >= 3 AND user_tag_impressions_30d >= 10`.
    RawAiplTag, "AiplTag" {
        /// Awareness (认知).
        pub awareness: Located<String>,
        /// Interest (兴趣).
        pub interest: Located<String>,
        /// Purchase (购买).
        pub purchase: Located<String>,
        /// Loyalty (忠诚).
        pub loyalty: Located<String>,
    }
);

/// One tag, chosen by `type` (the first key).
#[derive(Debug, JsonSchema)]
#[schemars(rename = "Tag")]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RawTag {
    /// Number of hits.
    Count(RawCountTag),
    /// Sum of a column.
    Sum(RawSumTag),
    /// Latest hit time.
    LastSeen(RawLastSeenTag),
    /// Distinct values.
    Distinct(RawDistinctTag),
    /// Most frequent values.
    TopN(RawTopNTag),
    /// Ratio of two tags.
    Ratio(RawRatioTag),
    /// RFM user type.
    Rfm(Box<RawRfmTag>),
    /// AIPL stage.
    Aipl(RawAiplTag),
}

/// The `type` values of a tag.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TagKind {
    Count,
    Sum,
    LastSeen,
    Distinct,
    TopN,
    Ratio,
    Rfm,
    Aipl,
}

impl<'de> Tagged<'de> for RawTag {
    type Kind = TagKind;
    const KINDS: &'static str = "count, sum, last_seen, distinct, top_n, ratio, rfm, aipl";

    fn from_kind<A: MapAccess<'de>>(kind: TagKind, rest: A) -> Result<Self, A::Error> {
        let rest = de::value::MapAccessDeserializer::new(rest);
        Ok(match kind {
            TagKind::Count => Self::Count(RawCountTag::deserialize(rest)?),
            TagKind::Sum => Self::Sum(RawSumTag::deserialize(rest)?),
            TagKind::LastSeen => Self::LastSeen(RawLastSeenTag::deserialize(rest)?),
            TagKind::Distinct => Self::Distinct(RawDistinctTag::deserialize(rest)?),
            TagKind::TopN => Self::TopN(RawTopNTag::deserialize(rest)?),
            TagKind::Ratio => Self::Ratio(RawRatioTag::deserialize(rest)?),
            TagKind::Rfm => Self::Rfm(Box::new(RawRfmTag::deserialize(rest)?)),
            TagKind::Aipl => Self::Aipl(RawAiplTag::deserialize(rest)?),
        })
    }
}

impl<'de> Deserialize<'de> for RawTag {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(TaggedVisitor(PhantomData))
    }
}

impl RawTag {
    /// Alias, description and category.
    pub fn meta(&self) -> (&Option<String>, &Option<String>, &Option<String>) {
        match self {
            Self::Count(t) => (&t.alias, &t.description, &t.category),
            Self::Sum(t) => (&t.alias, &t.description, &t.category),
            Self::LastSeen(t) => (&t.alias, &t.description, &t.category),
            Self::Distinct(t) => (&t.alias, &t.description, &t.category),
            Self::TopN(t) => (&t.alias, &t.description, &t.category),
            Self::Ratio(t) => (&t.alias, &t.description, &t.category),
            Self::Rfm(t) => (&t.alias, &t.description, &t.category),
            Self::Aipl(t) => (&t.alias, &t.description, &t.category),
        }
    }
}
