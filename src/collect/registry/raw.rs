//! Stage one of `schemas/media.yaml`: plain serde types that mirror the YAML. Every struct
//! denies unknown keys; values that stage two checks are [`Located`] so errors point at them.
//! The keys are documented for users at the top of `schemas/media.yaml`.

use serde::Deserialize;

use super::{BackflowMethod, PlacementMethod, Support, ThirdPartyMode, TimestampUnit};
use crate::config::raw::Located;

/// The registry file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRegistry {
    /// Backflow field lists as the manual prints them.
    pub(super) field_sets: Vec<RawFieldSet>,
    /// Shared protocol templates.
    pub(super) templates: Vec<Located<RawProtocol>>,
    /// The media.
    pub(super) media: Located<Vec<RawMedia>>,
}

/// One field set.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFieldSet {
    /// `FS-nn`.
    pub(super) id: Located<String>,
    /// Manual field names.
    pub(super) fields: Vec<String>,
}

/// A protocol: a template, a media's protocol, or overrides of a template.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProtocol {
    /// Protocol id.
    #[serde(default)]
    pub(super) id: Option<Located<String>>,
    /// Base template id (media protocols only).
    #[serde(default)]
    pub(super) template: Option<Located<String>>,
    /// Free text.
    #[serde(default)]
    pub(super) description: Option<String>,
    /// Fixed-name parameters appended by the media (Feedback URL).
    #[serde(default)]
    pub(super) feedback: Option<bool>,
    /// Click answer.
    #[serde(default)]
    pub(super) click_answer: Option<Located<RawAnswer>>,
    /// Impression answer.
    #[serde(default)]
    pub(super) impression_answer: Option<Located<RawAnswer>>,
    /// `s` or `ms`.
    #[serde(default)]
    pub(super) timestamp_unit: Option<TimestampUnit>,
    /// Parameter separator.
    #[serde(default)]
    pub(super) separator: Option<Located<String>>,
    /// Name/macro separator.
    #[serde(default)]
    pub(super) equalizer: Option<Located<String>>,
    /// Third-party landing parameter.
    #[serde(default)]
    pub(super) landing_param: Option<Located<String>>,
    /// Literal parameters.
    #[serde(default)]
    pub(super) fixed_params: Option<Vec<RawFixedParam>>,
    /// Impression macros.
    #[serde(default)]
    pub(super) impression_macros: Option<Vec<RawParam>>,
    /// Click macros.
    #[serde(default)]
    pub(super) click_macros: Option<Vec<RawParam>>,
    /// Parameters without a macro of ours.
    #[serde(default)]
    pub(super) known_params: Option<Vec<RawParam>>,
}

/// An answer as written; which variants are allowed depends on the key.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum RawAnswer {
    /// 302 to the landing URL.
    Redirect,
    /// 200 GIF.
    Gif,
    /// 204.
    NoContent,
    /// 2xx with a body.
    ServerToServer(Box<RawServerAnswer>),
}

/// A server-to-server answer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServerAnswer {
    /// HTTP status.
    pub(super) status: Located<u16>,
    /// Content type.
    pub(super) content_type: Located<String>,
    /// Body.
    pub(super) body: Located<String>,
}

/// A literal parameter.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFixedParam {
    /// Name.
    pub(super) param: Located<String>,
    /// Value.
    pub(super) value: String,
}

/// A macro parameter (`macro` required) or a known parameter (`macro` forbidden).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawParam {
    /// Name.
    pub(super) param: Located<String>,
    /// Macro text.
    #[serde(default, rename = "macro")]
    pub(super) macro_text: Option<Located<String>>,
    /// Canonical field name.
    pub(super) field: Located<String>,
    /// Canonical field name on iOS.
    #[serde(default)]
    pub(super) ios_field: Option<Located<String>>,
}

/// One media.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMedia {
    /// Stable id.
    pub(super) id: Located<String>,
    /// Chinese name.
    pub(super) name: Located<String>,
    /// English name.
    pub(super) name_en: String,
    /// Default protocol.
    pub(super) protocol: Located<RawProtocol>,
    /// Alternative protocols.
    #[serde(default)]
    pub(super) alt_protocols: Vec<Located<RawProtocol>>,
    /// Whether the media is one of the manual's 37 (default); a media beyond the manual's
    /// list (Xiaohongshu) has no placement rows.
    #[serde(default = "yes")]
    pub(super) in_manual: bool,
    /// Placement rows (required for the manual's media, absent for others).
    #[serde(default)]
    pub(super) placements: Option<Located<Vec<RawPlacement>>>,
    /// `forward` (default) or `chained`.
    #[serde(default)]
    pub(super) third_party: Option<Located<ThirdPartyMode>>,
}

fn yes() -> bool {
    true
}

/// One placement row.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPlacement {
    /// Row number.
    pub(super) row: Located<u32>,
    /// Placement method.
    pub(super) method: Located<PlacementMethod>,
    /// Slots.
    #[serde(default)]
    pub(super) slots: Vec<String>,
    /// Note id.
    #[serde(default)]
    pub(super) note: Option<String>,
    /// Backflow method.
    pub(super) backflow: Located<BackflowMethod>,
    /// Impression cell.
    pub(super) impression: Located<Support>,
    /// Click cell.
    pub(super) click: Located<Support>,
    /// Field-set id.
    pub(super) fields: Located<String>,
    /// Dual monitoring link.
    pub(super) dual_link: bool,
    /// Manual line.
    #[serde(default)]
    pub(super) manual_line: Option<u32>,
}
