//! The validated user tag dataset (`dataset.type: user_tags`): what [`super::load`] builds
//! from [`super::raw_tags`] and [`crate::datasets::tags`] computes.

use super::model::CompiledExpr;

/// The device-key fields in the order a hit's user is chosen (DESIGN.md, "device key"), with
/// the ID type (用户标识类型) each gives. `_md5` fields hold MD5 hashes (spec §1.2.6: the
/// encryption state is declared in the dataset's `columns` table).
pub const USER_ID_FIELDS: &[(&str, &str)] = &[
    ("idfa", "idfa"),
    ("imei_md5", "imei"),
    ("oaid", "oaid"),
    ("android_id_md5", "android_id"),
    ("mac_md5", "mac"),
    ("caid", "caid"),
    ("aaid", "aaid"),
];

/// Hit columns that can be extra ID columns: every device-ID field of `ad_events`.
pub const ID_COLUMN_FIELDS: &[&str] = &[
    "idfa",
    "idfa_md5",
    "imei",
    "imei_md5",
    "oaid",
    "oaid_md5",
    "android_id",
    "android_id_md5",
    "mac",
    "mac_md5",
    "caid",
    "aaid",
];

/// Columns of a user tag dataset that must never be null.
pub const USER_TAGS_REQUIRED: &[&str] = &["user_id", "id_type"];

/// Prefix of every tag column (spec §1.8.5: `user_tag_`).
pub const TAG_PREFIX: &str = "user_tag_";

/// Longest tag name.
pub const MAX_TAG_NAME: usize = 64;

/// The user tag dataset.
#[derive(Debug, Clone)]
pub struct UserTagsBuild {
    pub output: String,
    /// Lake dataset of hits.
    pub source: String,
    pub include_flagged: bool,
    /// Extra ID columns, in order.
    pub id_columns: Vec<String>,
    pub window_end: WindowEnd,
    /// Hits per partition of the user grouping ([`DEFAULT_PARTITION_ROWS`]).
    pub partition_rows: u64,
    /// The tags in column order; a tag only refers to tags before it.
    pub tags: Vec<TagDef>,
}

/// Hits per partition of the user grouping unless the job says otherwise.
pub const DEFAULT_PARTITION_ROWS: u64 = 4_000_000;
/// The smallest `partition_rows` accepted.
pub const MIN_PARTITION_ROWS: u64 = 1_000;

impl UserTagsBuild {
    /// The main table's columns, in order: the key, its ID type, the extra IDs, the tags.
    pub fn columns(&self) -> Vec<String> {
        let mut out: Vec<String> = USER_TAGS_REQUIRED
            .iter()
            .map(|c| (*c).to_string())
            .collect();
        out.extend(self.id_columns.iter().cloned());
        out.extend(self.tags.iter().map(|t| t.name.clone()));
        out
    }

    /// The longest window of any tag: how far back hits are read.
    pub fn lookback(&self) -> Window {
        self.tags
            .iter()
            .filter_map(|t| t.kind.window())
            .max_by_key(|w| w.hours())
            .unwrap_or(Window::Days(1))
    }
}

/// Where windows end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowEnd {
    Day,
    Hour,
}

/// A window before the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// Calendar days in the workspace time zone.
    Days(u32),
    Hours(u32),
}

impl Window {
    /// Length in hours (days as 24 h), for ordering.
    pub fn hours(self) -> u64 {
        match self {
            Window::Days(d) => u64::from(d) * 24,
            Window::Hours(h) => u64::from(h),
        }
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Window::Days(d) => write!(f, "{d}d"),
            Window::Hours(h) => write!(f, "{h}h"),
        }
    }
}

/// One tag: a column of the dataset.
#[derive(Debug, Clone)]
pub struct TagDef {
    pub name: String,
    /// Where it is defined (`file:line:column`), for run errors.
    pub defined_at: String,
    pub alias: Option<String>,
    pub description: Option<String>,
    pub category: Option<String>,
    pub kind: TagKind,
}

/// Rows a hit-based tag reads.
#[derive(Debug, Clone)]
pub struct Scope {
    pub window: Window,
    pub filter: Option<CompiledExpr>,
}

/// What a tag computes.
#[derive(Debug, Clone)]
pub enum TagKind {
    Count(Scope),
    Sum {
        column: String,
        scope: Scope,
    },
    LastSeen(Scope),
    Distinct {
        column: String,
        scope: Scope,
        max_values: usize,
        separator: String,
    },
    TopN {
        column: String,
        n: usize,
        scope: Scope,
        separator: String,
    },
    Ratio {
        numerator: String,
        denominator: String,
        min_denominator: f64,
    },
    Rfm(RfmRule),
    /// Stage rules from the highest (loyalty) down: (label, condition over tags).
    Aipl(Vec<(&'static str, CompiledExpr)>),
}

/// The manual's tag types (标签类型, spec §1.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagType {
    TextSingle,
    TextMulti,
    Date,
    Numeric,
}

impl TagType {
    pub fn as_str(self) -> &'static str {
        match self {
            TagType::TextSingle => "text_single",
            TagType::TextMulti => "text_multi",
            TagType::Date => "date",
            TagType::Numeric => "numeric",
        }
    }
}

impl TagKind {
    pub fn scope(&self) -> Option<&Scope> {
        match self {
            TagKind::Count(s) | TagKind::LastSeen(s) => Some(s),
            TagKind::Sum { scope, .. }
            | TagKind::Distinct { scope, .. }
            | TagKind::TopN { scope, .. } => Some(scope),
            TagKind::Ratio { .. } | TagKind::Rfm(_) | TagKind::Aipl(_) => None,
        }
    }

    pub fn window(&self) -> Option<Window> {
        self.scope().map(|s| s.window)
    }

    /// The `type` name as written.
    pub fn name(&self) -> &'static str {
        match self {
            TagKind::Count(_) => "count",
            TagKind::Sum { .. } => "sum",
            TagKind::LastSeen(_) => "last_seen",
            TagKind::Distinct { .. } => "distinct",
            TagKind::TopN { .. } => "top_n",
            TagKind::Ratio { .. } => "ratio",
            TagKind::Rfm(_) => "rfm",
            TagKind::Aipl(_) => "aipl",
        }
    }

    pub fn tag_type(&self) -> TagType {
        match self {
            TagKind::Count(_) | TagKind::Sum { .. } | TagKind::Ratio { .. } => TagType::Numeric,
            TagKind::LastSeen(_) => TagType::Date,
            TagKind::Distinct { .. } => TagType::TextMulti,
            TagKind::TopN { n, .. } if *n > 1 => TagType::TextMulti,
            TagKind::TopN { .. } | TagKind::Rfm(_) | TagKind::Aipl(_) => TagType::TextSingle,
        }
    }

    /// Hit columns the tag reads (besides the user and time).
    pub fn columns(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(Scope {
            filter: Some(f), ..
        }) = self.scope()
        {
            out.extend(
                f.expr
                    .clone()
                    .meta()
                    .root_names()
                    .iter()
                    .map(|n| n.to_string()),
            );
        }
        match self {
            TagKind::Sum { column, .. }
            | TagKind::Distinct { column, .. }
            | TagKind::TopN { column, .. } => out.push(column.clone()),
            _ => {}
        }
        out.sort();
        out.dedup();
        out
    }
}

/// The RFM user type rule.
#[derive(Debug, Clone)]
pub struct RfmRule {
    pub recency: RfmPart,
    pub frequency: RfmPart,
    pub monetary: RfmPart,
}

#[derive(Debug, Clone)]
pub struct RfmPart {
    pub tag: String,
    /// Ascending.
    pub thresholds: Vec<f64>,
    pub compare_to: CompareTo,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CompareTo {
    Mean,
    Value(f64),
}

/// RFM user types by (R high, F high, M high), spec §1.5.5.
pub const RFM_TYPES: &[((bool, bool, bool), &str)] = &[
    ((true, true, true), "高价值客户"),
    ((false, true, true), "重点保持客户"),
    ((true, false, true), "重点发展客户"),
    ((false, false, true), "重点挽留客户"),
    ((true, true, false), "一般价值客户"),
    ((false, true, false), "一般保持客户"),
    ((true, false, false), "一般发展客户"),
    ((false, false, false), "潜在客户"),
];

/// AIPL labels from the highest stage down.
pub const AIPL_STAGES: &[(&str, &str)] = &[
    ("loyalty", "L"),
    ("purchase", "P"),
    ("interest", "I"),
    ("awareness", "A"),
];
