//! The media registry (`schemas/media.yaml`): the 37 media of the reference manual with their
//! 81 placement rows, and the link protocols the media call our monitoring links with — how a
//! hit is answered and which query parameter fills which [`CanonicalField`].
//!
//! Data, not code (`DESIGN.md`): the media list changes with media policy. The file is loaded
//! and validated in two stages like every configuration file ([`crate::config::error`]); every
//! error names `file:line:column` and a field path such as
//! `media[3].protocol.click_macros[2].field`.
//!
//! A *protocol* is a named link template. Most are shared (`templates:` in the file, e.g.
//! `generic_mma`, `ocean_engine`); a media names its default one and may offer alternatives
//! (Tencent's legacy Feedback URL, Baidu's joint-debug syntax, Ocean Engine's client-send mode).
//! The media only substitute values, the parameter names are ours, so the mapping is per
//! protocol (`spec/media-protocols.md` §1 item 2): an activity records the protocol its links
//! were issued with.

mod load;
mod placement;
mod raw;

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use super::fields::CanonicalField;
use crate::config::ConfigError;

/// Where the shipped registry lives, relative to the project root.
pub const DEFAULT_PATH: &str = "schemas/media.yaml";

/// The loaded, validated media registry.
#[derive(Debug, Clone)]
pub struct MediaRegistry {
    media: Vec<Media>,
    by_id: HashMap<String, usize>,
    templates: Vec<Protocol>,
    field_sets: Vec<FieldSet>,
}

impl MediaRegistry {
    /// Reads and validates a registry file; every error is located in that file.
    pub fn load(path: &Path) -> Result<MediaRegistry, Vec<ConfigError>> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_str(path, &text),
            Err(err) => Err(vec![ConfigError::new(
                path,
                (0, 0),
                "",
                format!("cannot read media registry: {err}"),
            )]),
        }
    }

    /// Validates the text of a registry file named `file` (used in error messages only).
    pub fn from_str(file: &Path, text: &str) -> Result<MediaRegistry, Vec<ConfigError>> {
        load::load_str(file, text)
    }

    fn new(media: Vec<Media>, templates: Vec<Protocol>, field_sets: Vec<FieldSet>) -> Self {
        let by_id = media
            .iter()
            .enumerate()
            .map(|(i, m)| (m.id.clone(), i))
            .collect();
        Self {
            media,
            by_id,
            templates,
            field_sets,
        }
    }

    /// The media with this id.
    pub fn get(&self, id: &str) -> Option<&Media> {
        self.by_id.get(id).and_then(|&i| self.media.get(i))
    }

    /// The media with this Chinese (manual) name.
    pub fn get_by_name(&self, name: &str) -> Option<&Media> {
        self.media.iter().find(|m| m.name == name)
    }

    /// All media, in file order (the manual's order for the shipped file).
    pub fn media(&self) -> impl Iterator<Item = &Media> {
        self.media.iter()
    }

    /// Number of media.
    pub fn len(&self) -> usize {
        self.media.len()
    }

    /// Whether the registry has no media (never true for a loaded file).
    pub fn is_empty(&self) -> bool {
        self.media.is_empty()
    }

    /// Number of (media × placement) rows over all media.
    pub fn placement_count(&self) -> usize {
        self.media.iter().map(|m| m.placements.len()).sum()
    }

    /// Every placement row with its media, in file order.
    pub fn placements(&self) -> impl Iterator<Item = (&Media, &Placement)> {
        self.media
            .iter()
            .flat_map(|m| m.placements.iter().map(move |p| (m, p)))
    }

    /// A shared protocol template by id (e.g. `generic_mma`, `miaozhen`, `xiaohongshu`).
    pub fn template(&self, id: &str) -> Option<&Protocol> {
        self.templates.iter().find(|t| t.id == id)
    }

    /// All shared protocol templates, in file order.
    pub fn templates(&self) -> impl Iterator<Item = &Protocol> {
        self.templates.iter()
    }

    /// A field set (the manual's backflow field list) by id, e.g. `FS-01`.
    pub fn field_set(&self, id: &str) -> Option<&FieldSet> {
        self.field_sets.iter().find(|f| f.id == id)
    }
}

/// A backflow field list exactly as the manual prints it (`spec/media-backflow.md` §1.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldSet {
    /// `FS-nn`.
    pub id: String,
    /// The manual's field names, in its order (empty for "-").
    pub fields: Vec<String>,
}

/// One ad media.
#[derive(Debug, Clone)]
pub struct Media {
    /// Stable id, `[a-z][a-z0-9_]*` (e.g. `ocean_engine`, `tencent_ads`).
    pub id: String,
    /// The manual's Chinese name, exactly (e.g. `抖音/头条`).
    pub name: String,
    /// English name.
    pub name_en: String,
    /// One of the manual's 37 media; `false` for media we serve beyond its list (Xiaohongshu),
    /// which have no placement rows.
    pub in_manual: bool,
    /// The protocol links are issued with unless an activity picks an alternative.
    pub protocol: Protocol,
    /// Alternative protocols (ids unique within the media, distinct from the default's).
    pub alt_protocols: Vec<Protocol>,
    /// The media's rows of the manual's table, in order.
    pub placements: Vec<Placement>,
    /// How an activity's third-party monitoring (Miaozhen, AdMaster) reaches the third party.
    pub third_party: ThirdPartyMode,
}

/// How third-party monitoring is carried for a media (`DESIGN.md` "Third-party monitoring").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThirdPartyMode {
    /// Only our link goes into the ad order; we forward every hit server-side (the default).
    #[default]
    Forward,
    /// The media carries the third party's click link, which wraps ours (Miaozhen `&o=`,
    /// AdMaster `,u`): the third party counts the click first and redirects the device to us.
    /// Clicks are then not forwarded (the third party has them); impressions still are.
    Chained,
}

impl Media {
    /// The query string to append to our link for copy-paste into the media's ad order, for
    /// the default protocol; see [`Protocol::query_template`] for the encoding rule.
    pub fn query_template(&self, kind: LinkKind) -> String {
        self.protocol.query_template(kind)
    }

    /// Maps a query parameter name of an incoming hit on a default-protocol link to its
    /// canonical field (first match; see [`Protocol::field_for_param`]).
    pub fn field_for_param(&self, kind: LinkKind, param: &str) -> Option<CanonicalField> {
        self.protocol.field_for_param(kind, param)
    }

    /// The default protocol, then the alternatives.
    pub fn protocols(&self) -> impl Iterator<Item = &Protocol> {
        std::iter::once(&self.protocol).chain(self.alt_protocols.iter())
    }

    /// One of this media's protocols by id.
    pub fn protocol_by_id(&self, id: &str) -> Option<&Protocol> {
        self.protocols().find(|p| p.id == id)
    }

    /// The protocol that serves the Feedback URL (`/fb/{link}`), if the media has one.
    pub fn feedback_protocol(&self) -> Option<&Protocol> {
        self.protocols().find(|p| p.feedback)
    }

    /// Whether any placement row of the media supports this kind of backflow.
    pub fn supports(&self, kind: LinkKind) -> bool {
        if !self.in_manual {
            // No manual rows: what its protocols answer is what it supports.
            return self.protocols().any(|p| match kind {
                LinkKind::Impression => p.impression_answer.is_some(),
                LinkKind::Click => p.click_answer.is_some(),
            });
        }
        self.placements.iter().any(|p| p.supports(kind))
    }
}

/// One (media × placement method) row of the manual's table (`spec/media-backflow.md` §1.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Row number 1–81 in the manual's table.
    pub row: u32,
    /// Placement method (投放方式).
    pub method: PlacementMethod,
    /// Common ad slots (常用点位), the manual's Chinese names.
    pub slots: Vec<String>,
    /// Placement note id (投放说明, `N01`–`N24` of §1.6).
    pub note: Option<String>,
    /// Backflow method (回流方式).
    pub backflow: BackflowMethod,
    /// Impression backflow (曝光回流).
    pub impression: Support,
    /// Click backflow (点击回流).
    pub click: Support,
    /// Field-set id (`FS-nn`).
    pub field_set: String,
    /// The backflow fields (回流字段) of that field set, manual names in manual order.
    pub fields: Vec<String>,
    /// Whether the media accepts two monitoring links on one creative (是否支持双监控链接).
    pub dual_link: bool,
    /// The manual line of the row's placement-method cell.
    pub manual_line: Option<u32>,
}

impl Placement {
    /// The placement name as the manual prints it (媒体直投 / 媒体竞价平台 / 程序化投放).
    pub fn name(&self) -> &'static str {
        self.method.name_zh()
    }

    /// Whether this row supports this kind of backflow.
    pub fn supports(&self, kind: LinkKind) -> bool {
        match kind {
            LinkKind::Impression => self.impression.is_supported(),
            LinkKind::Click => self.click.is_supported(),
        }
    }
}

/// Placement method (投放方式).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlacementMethod {
    /// 媒体直投: slot and schedule agreed offline; the media runs the ads.
    DirectBuy,
    /// 媒体竞价平台: self-serve orders in the media's ad platform.
    BiddingPlatform,
    /// 程序化投放: delivery through a DSP.
    Programmatic,
}

impl PlacementMethod {
    /// The manual's Chinese name.
    pub fn name_zh(self) -> &'static str {
        match self {
            PlacementMethod::DirectBuy => "媒体直投",
            PlacementMethod::BiddingPlatform => "媒体竞价平台",
            PlacementMethod::Programmatic => "程序化投放",
        }
    }
}

/// Backflow method (回流方式).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackflowMethod {
    /// 广告监测: our impression and click monitoring links.
    AdMonitoring,
    /// FeedbackURL: Tencent's legacy Feedback URL (clicks only, fixed appended parameters).
    FeedbackUrl,
    /// Unidesk: Weibo's bidding platform (mechanism not described by the manual).
    Unidesk,
}

/// A cell of the impression / click backflow columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Support {
    /// 支持.
    Supported,
    /// 不支持.
    NotSupported,
    /// "-" in the manual.
    Unspecified,
    /// 无点击行为 (OTT TV rows; click column only).
    NoClickBehaviour,
}

impl Support {
    /// Only [`Support::Supported`] counts as supported.
    pub fn is_supported(self) -> bool {
        self == Support::Supported
    }
}

/// Which monitoring link a hit came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkKind {
    /// `/i/{link}`.
    Impression,
    /// `/c/{link}` (and `/fb/{link}`, the Feedback URL, which carries clicks only).
    Click,
}

/// How a media calls links of one template, and what it expects back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protocol {
    /// Protocol id: the template id, or the id given where a media defines or overrides it.
    pub id: String,
    /// Free text.
    pub description: Option<String>,
    /// The media appends fixed-name parameters itself (Tencent's legacy Feedback URL):
    /// no macros, only [`Protocol::known_params`], clicks only.
    pub feedback: bool,
    /// How a click is answered; `None` when the protocol carries no clicks.
    pub click_answer: Option<ClickAnswer>,
    /// How an impression is answered; `None` when the protocol carries no impressions.
    pub impression_answer: Option<ImpressionAnswer>,
    /// Unit of the media's timestamp macro; `None` when undocumented (detect by length).
    pub timestamp_unit: Option<TimestampUnit>,
    /// Between parameters in the query template (`&`; AdMaster `,`).
    pub separator: String,
    /// Between a parameter name and its macro (`=`; AdMaster empty).
    pub equalizer: String,
    /// Parameter carrying a third-party landing URL to the end of the link (Miaozhen `o`).
    pub landing_param: Option<String>,
    /// Literal parameters put first in the query template (Zhihu `zhs2s=1`).
    pub fixed_params: Vec<FixedParam>,
    /// The impression link's macro parameters, in template order.
    pub impression_macros: Vec<MacroParam>,
    /// The click link's macro parameters, in template order.
    pub click_macros: Vec<MacroParam>,
    /// Parameters that arrive under fixed names without a macro of ours (appended by the
    /// media, or fixed by a third party); they map for both kinds, after the macros.
    pub known_params: Vec<KnownParam>,
}

impl Protocol {
    /// The macro parameters of one link kind.
    pub fn macros(&self, kind: LinkKind) -> &[MacroParam] {
        match kind {
            LinkKind::Impression => &self.impression_macros,
            LinkKind::Click => &self.click_macros,
        }
    }

    /// The query string to append to our link for copy-paste into the media's ad order,
    /// e.g. `idfa=__IDFA__&ts=__TS__`.
    ///
    /// Rule: fixed parameters first, then the macro parameters in template order, joined by
    /// the protocol's separator (`&`, AdMaster `,`). Parameter names and macros are written
    /// literally, never percent-encoded: the media find and replace the macro text as written
    /// (`{{IP}}`, `{ip}`, `$ua$`), and the loader rejects names and macros containing a
    /// separator, `=`, `#`, `?`, `%` or whitespace, so literal is always safe to paste. Fixed
    /// values are ordinary values and are percent-encoded (form rules). Known parameters and
    /// the landing parameter are left out (the media or a third party adds them), so a
    /// feedback protocol yields its fixed parameters only, usually nothing.
    pub fn query_template(&self, kind: LinkKind) -> String {
        let fixed = self.fixed_params.iter().map(|f| {
            let value: String = url::form_urlencoded::byte_serialize(f.value.as_bytes()).collect();
            format!("{}={value}", f.param)
        });
        let macros = self
            .macros(kind)
            .iter()
            .map(|m| format!("{}{}{}", m.param, self.equalizer, m.macro_text));
        fixed
            .chain(macros)
            .collect::<Vec<_>>()
            .join(&self.separator)
    }

    /// Maps a query parameter name of an incoming hit to its canonical field: the first macro
    /// parameter of this kind with that exact (case-sensitive) name, else the first known
    /// parameter. Fixed, landing and unknown parameters map to `None`; they stay in the raw
    /// query string. For a parameter with an [`MacroParam::ios_field`] this is the non-iOS
    /// field; see [`Protocol::field_for_param_on`].
    pub fn field_for_param(&self, kind: LinkKind, param: &str) -> Option<CanonicalField> {
        self.field_for_param_on(kind, param, false)
    }

    /// Like [`Protocol::field_for_param`], for a hit whose os is known: on iOS a parameter
    /// with an `ios_field` (Tencent `muid`: IMEI MD5 on Android, IDFA MD5 on iOS) fills that.
    pub fn field_for_param_on(
        &self,
        kind: LinkKind,
        param: &str,
        ios: bool,
    ) -> Option<CanonicalField> {
        self.param_fields(kind)
            .find(|(name, _, _)| *name == param)
            .map(|(_, field, ios_field)| match ios_field {
                Some(ios_field) if ios => ios_field,
                _ => field,
            })
    }

    /// Every mapped parameter of this kind as `(name, field, ios_field)`: macros in template
    /// order, then known parameters.
    pub fn param_fields(
        &self,
        kind: LinkKind,
    ) -> impl Iterator<Item = (&str, CanonicalField, Option<CanonicalField>)> {
        let macros = self
            .macros(kind)
            .iter()
            .map(|m| (m.param.as_str(), m.field, m.ios_field));
        let known = self
            .known_params
            .iter()
            .map(|k| (k.param.as_str(), k.field, k.ios_field));
        macros.chain(known)
    }
}

/// How a click is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClickAnswer {
    /// The device follows our link: `302` to the activity's landing URL (`204` without one).
    Redirect,
    /// The media's server reports the click: answer `status` with this body (a `302` is an
    /// error for such media).
    ServerToServer {
        /// HTTP status, 2xx.
        status: u16,
        /// `Content-Type` of the body.
        content_type: String,
        /// The body, e.g. `{"ret":0,"code":0,"msg":"ok"}` (Tencent needs `ret` = 0).
        body: String,
    },
}

/// How an impression is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImpressionAnswer {
    /// `200 image/gif`, the 43-byte 1×1 GIF.
    Gif,
    /// `204 No Content`.
    NoContent,
    /// The media's server reports the impression and expects this answer (Tencent).
    ServerToServer {
        /// HTTP status, 2xx.
        status: u16,
        /// `Content-Type` of the body.
        content_type: String,
        /// The body.
        body: String,
    },
}

/// Unit of a media's timestamp macro.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum TimestampUnit {
    /// Unix seconds (10 digits), YAML `s`.
    #[serde(rename = "s")]
    Seconds,
    /// Unix milliseconds (13 digits), YAML `ms`.
    #[serde(rename = "ms")]
    Milliseconds,
}

/// One `param=macro` pair of a link template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MacroParam {
    /// Our query parameter name (case-sensitive).
    pub param: String,
    /// The macro text the media substitutes, literally (`__IDFA__`, `{{IDFA}}`, `{ip}`, `$ua$`).
    pub macro_text: String,
    /// The canonical field the value fills.
    pub field: CanonicalField,
    /// The field filled instead when the hit's os is iOS.
    pub ios_field: Option<CanonicalField>,
}

/// A parameter that arrives under a fixed name without a macro of ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownParam {
    /// The parameter name (case-sensitive).
    pub param: String,
    /// The canonical field the value fills.
    pub field: CanonicalField,
    /// The field filled instead when the hit's os is iOS.
    pub ios_field: Option<CanonicalField>,
}

/// A literal parameter of a link template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixedParam {
    /// The parameter name.
    pub param: String,
    /// Its value, as the media expects it.
    pub value: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(text: &str) -> MediaRegistry {
        match MediaRegistry::from_str(Path::new("m.yaml"), text) {
            Ok(registry) => registry,
            Err(errors) => panic!("{errors:#?}"),
        }
    }

    const SMALL: &str = r#"
field_sets:
  - {id: FS-01, fields: [IMEI, IP]}
templates:
  - id: mma
    click_answer: redirect
    impression_answer: gif
    fixed_params: [{param: src, value: "a b&c"}]
    impression_macros:
      - {param: idfa, macro: __IDFA__, field: idfa}
      - {param: ts, macro: __TS__, field: ts}
    click_macros:
      - {param: ip, macro: '{{IP}}', field: ip}
      - {param: ua, macro: $ua$, field: ua}
      - {param: ip2, macro: '{ip}', field: ip}
    known_params:
      - {param: muid, field: imei_md5, ios_field: idfa_md5}
  - id: am
    click_answer: redirect
    separator: ","
    equalizer: ""
    landing_param: u
    click_macros: [{param: 0a, macro: __OS__, field: os}, {param: z, macro: __IDFA__, field: idfa}]
media:
  - id: demo
    name: 演示
    name_en: Demo
    protocol: {template: mma}
    alt_protocols: [{template: am}]
    placements:
      - {row: 1, method: direct_buy, slots: [开屏], note: N01, backflow: ad_monitoring, impression: supported, click: supported, fields: FS-01, dual_link: true}
"#;

    #[test]
    fn query_template_is_literal_in_template_order() {
        let registry = registry(SMALL);
        let Some(media) = registry.get("demo") else {
            panic!("demo missing")
        };
        assert_eq!(
            media.query_template(LinkKind::Impression),
            "src=a+b%26c&idfa=__IDFA__&ts=__TS__"
        );
        assert_eq!(
            media.query_template(LinkKind::Click),
            "src=a+b%26c&ip={{IP}}&ua=$ua$&ip2={ip}"
        );
        let Some(admaster) = media.protocol_by_id("am") else {
            panic!("am missing")
        };
        assert_eq!(
            admaster.query_template(LinkKind::Click),
            "0a__OS__,z__IDFA__"
        );
        assert_eq!(admaster.query_template(LinkKind::Impression), "");
    }

    #[test]
    fn field_for_param_maps_exact_names_per_kind() {
        let registry = registry(SMALL);
        let Some(media) = registry.get("demo") else {
            panic!("demo missing")
        };
        use CanonicalField as F;
        assert_eq!(
            media.field_for_param(LinkKind::Impression, "idfa"),
            Some(F::Idfa)
        );
        assert_eq!(media.field_for_param(LinkKind::Click, "idfa"), None);
        assert_eq!(media.field_for_param(LinkKind::Click, "ip2"), Some(F::Ip));
        assert_eq!(media.field_for_param(LinkKind::Click, "IP"), None);
        assert_eq!(media.field_for_param(LinkKind::Click, "src"), None);
        // Known parameters map for both kinds; iOS switches the field.
        assert_eq!(
            media.field_for_param(LinkKind::Click, "muid"),
            Some(F::ImeiMd5)
        );
        assert_eq!(
            media
                .protocol
                .field_for_param_on(LinkKind::Impression, "muid", true),
            Some(F::IdfaMd5)
        );
        assert_eq!(registry.placement_count(), 1);
        assert_eq!(media.placements[0].name(), "媒体直投");
        assert_eq!(media.placements[0].fields, ["IMEI", "IP"]);
        assert!(media.supports(LinkKind::Click));
        assert_eq!(
            media.protocols().map(|p| p.id.as_str()).collect::<Vec<_>>(),
            ["mma", "am"]
        );
    }
}
