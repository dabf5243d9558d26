//! Loading `schemas/media.yaml`: stage one parses plain serde types that mirror the YAML
//! (unknown keys are errors); stage two resolves templates and checks everything else,
//! collecting every error with its location and field path.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;

use serde_saphyr::Location;

use super::placement::{
    PlacementCtx, Seen, check_ident, check_macro, check_param_name, placements,
};
use super::raw::{
    RawAnswer, RawFieldSet, RawFixedParam, RawMedia, RawParam, RawProtocol, RawRegistry,
    RawServerAnswer,
};
use super::{
    ClickAnswer, FieldSet, FixedParam, ImpressionAnswer, KnownParam, LinkKind, MacroParam, Media,
    MediaRegistry, Protocol, ThirdPartyMode,
};
use crate::collect::fields::CanonicalField;
use crate::config::ConfigError;
use crate::config::error::{Collector, is_blank, parse_yaml};
use crate::config::raw::Located;

pub(super) fn load_str(file: &Path, text: &str) -> Result<MediaRegistry, Vec<ConfigError>> {
    if is_blank(text) {
        let message = "the file is empty; expected a media registry (field_sets, templates, media)";
        return Err(vec![ConfigError::new(file, (0, 0), "", message)]);
    }
    let raw: RawRegistry = parse_yaml(file, text).map_err(|err| vec![err])?;
    let mut errors = Collector::new(file);
    let field_sets = field_sets(&mut errors, raw.field_sets);
    let templates = templates(&mut errors, raw.templates);
    let media = media(&mut errors, raw.media, &templates, &field_sets);
    errors.finish(Some(MediaRegistry::new(media, templates, field_sets)))
}

fn field_sets(errors: &mut Collector<'_>, raw: Vec<RawFieldSet>) -> Vec<FieldSet> {
    let mut seen = Seen::default();
    raw.into_iter()
        .enumerate()
        .map(|(i, set)| {
            let path = format!("field_sets[{i}].id");
            if set.id.value().trim().is_empty() {
                errors.push(set.id.location(), &path, "field-set id must not be empty");
            }
            seen.check(errors, &set.id, &path, "field set");
            FieldSet {
                id: set.id.into_value(),
                fields: set.fields,
            }
        })
        .collect()
}

fn templates(errors: &mut Collector<'_>, raw: Vec<Located<RawProtocol>>) -> Vec<Protocol> {
    let mut seen = Seen::default();
    let mut out = Vec::new();
    for (i, raw) in raw.into_iter().enumerate() {
        let path = format!("templates[{i}]");
        let at = raw.location();
        let raw = raw.into_value();
        if let Some(template) = &raw.template {
            let message = "a template cannot extend another template";
            errors.push(template.location(), &format!("{path}.template"), message);
        }
        let Some(id) = &raw.id else {
            errors.push(at, &path, "a template needs an `id`");
            continue;
        };
        check_ident(errors, id, &format!("{path}.id"));
        seen.check(errors, id, &format!("{path}.id"), "template");
        let id = id.value().clone();
        let protocol = resolve(errors, &path, None, raw, id);
        check_protocol(errors, at, &path, &protocol);
        out.push(protocol);
    }
    out
}

fn media(
    errors: &mut Collector<'_>,
    raw: Located<Vec<RawMedia>>,
    templates: &[Protocol],
    field_sets: &[FieldSet],
) -> Vec<Media> {
    if raw.value().is_empty() {
        errors.push(raw.location(), "media", "expected at least one media");
    }
    let mut ids = Seen::default();
    let mut names = Seen::default();
    let mut rows = Seen::default();
    let mut out = Vec::new();
    for (i, raw) in raw.into_value().into_iter().enumerate() {
        let path = format!("media[{i}]");
        check_ident(errors, &raw.id, &format!("{path}.id"));
        ids.check(errors, &raw.id, &format!("{path}.id"), "media id");
        if raw.name.value().trim().is_empty() {
            let message = "name must not be empty";
            errors.push(raw.name.location(), &format!("{path}.name"), message);
        }
        names.check(errors, &raw.name, &format!("{path}.name"), "media name");
        let id = raw.id.value().clone();
        let protocol_path = format!("{path}.protocol");
        let (protocol, mut resolved) =
            media_protocol(errors, &protocol_path, raw.protocol, templates, &id);
        let mut alt_protocols: Vec<Protocol> = Vec::new();
        for (j, alt) in raw.alt_protocols.into_iter().enumerate() {
            let alt_path = format!("{path}.alt_protocols[{j}]");
            let at = alt.location();
            if alt.value().id.is_none() && alt.value().template.is_none() {
                let message = "an alternative protocol needs an `id` or a `template`";
                errors.push(at, &alt_path, message);
                continue;
            }
            let (alt, ok) = media_protocol(errors, &alt_path, alt, templates, &id);
            resolved &= ok;
            if alt.id == protocol.id || alt_protocols.iter().any(|p| p.id == alt.id) {
                let message = format!("duplicate protocol id `{}` in this media", alt.id);
                errors.push(at, &alt_path, message);
            }
            alt_protocols.push(alt);
        }
        let id_at = raw.id.location();
        let third_party = match raw.third_party {
            Some(mode) => {
                // Chaining sends the device through the third party to our click link, which
                // must then redirect: the media's clicks have to be device-followed.
                if *mode.value() == ThirdPartyMode::Chained
                    && resolved
                    && protocol.click_answer != Some(ClickAnswer::Redirect)
                {
                    let message = format!(
                        "third_party: chained needs clicks the device follows, but protocol `{}` answers clicks server-to-server (or not at all)",
                        protocol.id
                    );
                    errors.push(mode.location(), &format!("{path}.third_party"), message);
                }
                mode.into_value()
            }
            None => ThirdPartyMode::Forward,
        };
        let mut media = Media {
            id,
            name: raw.name.into_value(),
            name_en: raw.name_en,
            in_manual: raw.in_manual,
            protocol,
            alt_protocols,
            placements: Vec::new(),
            third_party,
        };
        let ctx = PlacementCtx {
            path: &path,
            media: &media,
            field_sets,
            resolved,
        };
        media.placements = match (raw.in_manual, raw.placements) {
            (true, Some(rows_raw)) => placements(errors, &ctx, rows_raw, &mut rows),
            (true, None) => {
                let message = "expected the manual's placement rows (or `in_manual: false`)";
                errors.push(id_at, &format!("{path}.placements"), message);
                Vec::new()
            }
            (false, Some(rows_raw)) => {
                let message =
                    "a media beyond the manual (`in_manual: false`) has no placement rows";
                errors.push(rows_raw.location(), &format!("{path}.placements"), message);
                Vec::new()
            }
            (false, None) => Vec::new(),
        };
        out.push(media);
    }
    out
}

/// Resolves a media's protocol: a template reference with optional overrides, or inline.
/// The flag is false when the template is unknown (the error is recorded; checks that depend
/// on the protocol are skipped so one typo yields one error).
fn media_protocol(
    errors: &mut Collector<'_>,
    path: &str,
    raw: Located<RawProtocol>,
    templates: &[Protocol],
    media_id: &str,
) -> (Protocol, bool) {
    let at = raw.location();
    let raw = raw.into_value();
    if let Some(id) = &raw.id {
        check_ident(errors, id, &format!("{path}.id"));
    }
    let base = raw.template.as_ref().and_then(|name| {
        let found = templates.iter().find(|t| &t.id == name.value());
        if found.is_none() {
            let known: Vec<_> = templates.iter().map(|t| t.id.as_str()).collect();
            let message = format!(
                "unknown template `{}`, expected one of {}",
                name.value(),
                known.join(", ")
            );
            errors.push(name.location(), &format!("{path}.template"), message);
        }
        found
    });
    let id = match (&raw.id, &raw.template) {
        (Some(id), _) => id.value().clone(),
        (None, Some(template)) => template.value().clone(),
        (None, None) => media_id.to_string(),
    };
    let resolved = raw.template.is_none() || base.is_some();
    let overrides = raw.has_overrides();
    let protocol = resolve(errors, path, base, raw, id);
    // A plain template reference was checked with the template.
    if overrides && resolved {
        check_protocol(errors, at, path, &protocol);
    }
    (protocol, resolved)
}

impl RawProtocol {
    /// Whether any protocol key besides `id`, `template` and `description` is given.
    fn has_overrides(&self) -> bool {
        self.feedback.is_some()
            || self.click_answer.is_some()
            || self.impression_answer.is_some()
            || self.timestamp_unit.is_some()
            || self.separator.is_some()
            || self.equalizer.is_some()
            || self.landing_param.is_some()
            || self.fixed_params.is_some()
            || self.impression_macros.is_some()
            || self.click_macros.is_some()
            || self.known_params.is_some()
    }
}

/// Converts `raw` and lays it over `base` (a template); every given key replaces the base's.
fn resolve(
    errors: &mut Collector<'_>,
    path: &str,
    base: Option<&Protocol>,
    raw: RawProtocol,
    id: String,
) -> Protocol {
    let mut p = base.cloned().unwrap_or_else(|| Protocol {
        id: String::new(),
        description: None,
        feedback: false,
        click_answer: None,
        impression_answer: None,
        timestamp_unit: None,
        separator: "&".to_string(),
        equalizer: "=".to_string(),
        landing_param: None,
        fixed_params: Vec::new(),
        impression_macros: Vec::new(),
        click_macros: Vec::new(),
        known_params: Vec::new(),
    });
    p.id = id;
    if raw.description.is_some() {
        p.description = raw.description;
    }
    if let Some(feedback) = raw.feedback {
        p.feedback = feedback;
    }
    if let Some(answer) = raw.click_answer {
        p.click_answer = click_answer(errors, &format!("{path}.click_answer"), answer);
    }
    if let Some(answer) = raw.impression_answer {
        let path = format!("{path}.impression_answer");
        p.impression_answer = impression_answer(errors, &path, answer);
    }
    if raw.timestamp_unit.is_some() {
        p.timestamp_unit = raw.timestamp_unit;
    }
    if let Some(separator) = raw.separator {
        if separator.value().is_empty() {
            let message = "separator must not be empty";
            errors.push(separator.location(), &format!("{path}.separator"), message);
        }
        p.separator = separator.into_value();
    }
    if let Some(equalizer) = raw.equalizer {
        p.equalizer = equalizer.into_value();
    }
    if let Some(landing) = raw.landing_param {
        check_param_name(errors, &landing, &format!("{path}.landing_param"));
        p.landing_param = Some(landing.into_value());
    }
    if let Some(fixed) = raw.fixed_params {
        p.fixed_params = fixed_params(errors, &format!("{path}.fixed_params"), fixed);
    }
    if let Some(list) = raw.impression_macros {
        p.impression_macros = macro_params(errors, &format!("{path}.impression_macros"), list);
    }
    if let Some(list) = raw.click_macros {
        p.click_macros = macro_params(errors, &format!("{path}.click_macros"), list);
    }
    if let Some(list) = raw.known_params {
        p.known_params = known_params(errors, &format!("{path}.known_params"), list);
    }
    p
}

fn click_answer(
    errors: &mut Collector<'_>,
    path: &str,
    raw: Located<RawAnswer>,
) -> Option<ClickAnswer> {
    let at = raw.location();
    match raw.into_value() {
        RawAnswer::Redirect => Some(ClickAnswer::Redirect),
        RawAnswer::ServerToServer(s2s) => {
            let (status, content_type, body) = server_answer(errors, path, *s2s)?;
            Some(ClickAnswer::ServerToServer {
                status,
                content_type,
                body,
            })
        }
        RawAnswer::Gif | RawAnswer::NoContent => {
            let message = "a click is answered with `redirect` or `server_to_server`";
            errors.push(at, path, message);
            None
        }
    }
}

fn impression_answer(
    errors: &mut Collector<'_>,
    path: &str,
    raw: Located<RawAnswer>,
) -> Option<ImpressionAnswer> {
    let at = raw.location();
    match raw.into_value() {
        RawAnswer::Gif => Some(ImpressionAnswer::Gif),
        RawAnswer::NoContent => Some(ImpressionAnswer::NoContent),
        RawAnswer::ServerToServer(s2s) => {
            let (status, content_type, body) = server_answer(errors, path, *s2s)?;
            Some(ImpressionAnswer::ServerToServer {
                status,
                content_type,
                body,
            })
        }
        RawAnswer::Redirect => {
            let message =
                "an impression is answered with `gif`, `no_content` or `server_to_server`";
            errors.push(at, path, message);
            None
        }
    }
}

fn server_answer(
    errors: &mut Collector<'_>,
    path: &str,
    raw: RawServerAnswer,
) -> Option<(u16, String, String)> {
    let mut ok = true;
    let status = *raw.status.value();
    if !(200..=299).contains(&status) {
        let message = format!(
            "status {status} is not 2xx; media that call server-to-server count anything else \
             (a 302 above all) as a failure"
        );
        errors.push(
            raw.status.location(),
            &format!("{path}.server_to_server.status"),
            message,
        );
        ok = false;
    }
    let content_type = raw.content_type.value();
    if content_type.trim().is_empty() {
        let path = format!("{path}.server_to_server.content_type");
        errors.push(
            raw.content_type.location(),
            &path,
            "content_type must not be empty",
        );
        ok = false;
    } else if content_type.contains("json")
        && let Err(err) = serde_json::from_str::<serde_json::Value>(raw.body.value())
    {
        let message =
            format!("body is not valid JSON ({err}) but content_type is `{content_type}`");
        errors.push(
            raw.body.location(),
            &format!("{path}.server_to_server.body"),
            message,
        );
        ok = false;
    }
    ok.then(|| (status, raw.content_type.into_value(), raw.body.into_value()))
}

fn fixed_params(
    errors: &mut Collector<'_>,
    path: &str,
    raw: Vec<RawFixedParam>,
) -> Vec<FixedParam> {
    let mut seen = Seen::default();
    raw.into_iter()
        .enumerate()
        .map(|(i, fixed)| {
            let path = format!("{path}[{i}].param");
            check_param_name(errors, &fixed.param, &path);
            seen.check(errors, &fixed.param, &path, "parameter");
            FixedParam {
                param: fixed.param.into_value(),
                value: fixed.value,
            }
        })
        .collect()
}

fn macro_params(errors: &mut Collector<'_>, path: &str, raw: Vec<RawParam>) -> Vec<MacroParam> {
    let mut seen = Seen::default();
    let mut out = Vec::new();
    for (i, raw) in raw.into_iter().enumerate() {
        let path = format!("{path}[{i}]");
        let (param, field, ios_field) = param_common(errors, &path, &raw, &mut seen);
        let macro_text = match raw.macro_text {
            Some(text) => {
                check_macro(errors, &text, &format!("{path}.macro"));
                Some(text.into_value())
            }
            None => {
                let message = "a macro parameter needs a `macro` (use known_params for a \
                               parameter the media sends under a fixed name)";
                errors.push(raw.param.location(), &path, message);
                None
            }
        };
        if let (Some(field), Some(macro_text)) = (field, macro_text) {
            out.push(MacroParam {
                param,
                macro_text,
                field,
                ios_field,
            });
        }
    }
    out
}

fn known_params(errors: &mut Collector<'_>, path: &str, raw: Vec<RawParam>) -> Vec<KnownParam> {
    let mut seen = Seen::default();
    let mut out = Vec::new();
    for (i, raw) in raw.into_iter().enumerate() {
        let path = format!("{path}[{i}]");
        let (param, field, ios_field) = param_common(errors, &path, &raw, &mut seen);
        if let Some(text) = &raw.macro_text {
            let message = "a known parameter has no `macro` (move it to impression_macros / \
                           click_macros)";
            errors.push(text.location(), &format!("{path}.macro"), message);
        }
        if let Some(field) = field {
            out.push(KnownParam {
                param,
                field,
                ios_field,
            });
        }
    }
    out
}

/// Checks name, field and ios_field of a parameter entry.
fn param_common(
    errors: &mut Collector<'_>,
    path: &str,
    raw: &RawParam,
    seen: &mut Seen,
) -> (String, Option<CanonicalField>, Option<CanonicalField>) {
    let name_path = format!("{path}.param");
    check_param_name(errors, &raw.param, &name_path);
    seen.check(errors, &raw.param, &name_path, "parameter");
    let field = canonical(errors, &raw.field, &format!("{path}.field"));
    let ios_field = raw
        .ios_field
        .as_ref()
        .and_then(|f| canonical(errors, f, &format!("{path}.ios_field")));
    (raw.param.value().clone(), field, ios_field)
}

fn canonical(
    errors: &mut Collector<'_>,
    raw: &Located<String>,
    path: &str,
) -> Option<CanonicalField> {
    errors.check(raw.location(), path, raw.value().parse::<CanonicalField>())
}

/// Cross-list checks of a resolved protocol (lists are checked one by one while converting).
fn check_protocol(errors: &mut Collector<'_>, at: Location, path: &str, p: &Protocol) {
    if p.feedback {
        if !p.impression_macros.is_empty() || !p.click_macros.is_empty() {
            let message = "a feedback protocol has no macros: the media appends its parameters \
                           (list them under known_params)";
            errors.push(at, path, message);
        }
        if p.known_params.is_empty() {
            let message = "a feedback protocol needs known_params (the names the media appends)";
            errors.push(at, path, message);
        }
        if p.impression_answer.is_some() {
            let message = "a feedback protocol carries clicks only; remove impression_answer";
            errors.push(at, path, message);
        }
    }
    // A clash between known/fixed/landing would show for both kinds: report each once.
    let mut clashes = BTreeSet::new();
    for kind in [LinkKind::Impression, LinkKind::Click] {
        let mut names: HashMap<&str, &str> = HashMap::new();
        let macros: HashSet<&str> = p.macros(kind).iter().map(|m| m.param.as_str()).collect();
        let known: HashSet<&str> = p.known_params.iter().map(|k| k.param.as_str()).collect();
        let fixed: HashSet<&str> = p.fixed_params.iter().map(|f| f.param.as_str()).collect();
        let landing: HashSet<&str> = p.landing_param.iter().map(String::as_str).collect();
        let lists = [
            (kind_key(kind), macros),
            ("known_params", known),
            ("fixed_params", fixed),
            ("landing_param", landing),
        ];
        for (list, params) in lists {
            let mut params: Vec<_> = params.into_iter().collect();
            params.sort_unstable();
            for param in params {
                if let Some(first) = names.insert(param, list)
                    && first != list
                {
                    clashes.insert(format!("parameter `{param}` is in both {first} and {list}"));
                }
            }
        }
    }
    for message in clashes {
        errors.push(at, path, message);
    }
}

fn kind_key(kind: LinkKind) -> &'static str {
    match kind {
        LinkKind::Impression => "impression_macros",
        LinkKind::Click => "click_macros",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "field_sets:\n  - {id: FS-01, fields: [IMEI]}\ntemplates:\n  - id: mma\n    click_answer: redirect\n    impression_answer: gif\n    impression_macros: [{param: idfa, macro: __IDFA__, field: idfa}]\n    click_macros: [{param: idfa, macro: __IDFA__, field: idfa}]\n";

    fn row(backflow: &str, click: &str) -> String {
        format!(
            "      - {{row: 1, method: direct_buy, backflow: {backflow}, impression: supported, click: {click}, fields: FS-01, dual_link: true}}\n"
        )
    }

    fn media(protocol: &str, rows: &str) -> String {
        format!(
            "{HEAD}media:\n  - id: demo\n    name: 演示\n    name_en: Demo\n    protocol: {protocol}\n    placements:\n{rows}"
        )
    }

    fn errors_of(text: &str) -> Vec<String> {
        match load_str(Path::new("m.yaml"), text) {
            Ok(registry) => panic!("expected errors, got {registry:#?}"),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn chained_third_party_mode_needs_device_followed_clicks() {
        let text = media("{template: mma}", &row("ad_monitoring", "supported")).replace(
            "    placements:\n",
            "    third_party: chained\n    placements:\n",
        );
        let registry =
            load_str(Path::new("m.yaml"), &text).unwrap_or_else(|errors| panic!("{errors:#?}"));
        assert_eq!(
            registry.get("demo").map(|m| m.third_party),
            Some(ThirdPartyMode::Chained)
        );
        let s2s = text.replace(
            "    click_answer: redirect\n",
            "    click_answer: {server_to_server: {status: 200, content_type: application/json, body: '{}'}}\n",
        );
        let errors = errors_of(&s2s);
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(
            errors[0].contains(
                "media[0].third_party: third_party: chained needs clicks the device follows"
            ),
            "{errors:#?}"
        );
        let typo = text.replace("third_party: chained", "third_party: chain");
        assert!(errors_of(&typo)[0].contains("unknown variant `chain`"));
    }

    #[test]
    fn a_valid_snippet_loads() {
        let text = media("{template: mma}", &row("ad_monitoring", "supported"));
        let registry = match load_str(Path::new("m.yaml"), &text) {
            Ok(registry) => registry,
            Err(errors) => panic!("{errors:#?}"),
        };
        assert_eq!(registry.placement_count(), 1);
        assert_eq!(
            registry.get("demo").map(|m| m.protocol.id.as_str()),
            Some("mma")
        );
    }

    #[test]
    fn unknown_key_is_located_with_its_path() {
        let text = media(
            "{template: mma, click_macros: [{param: ip, macro: __IP__, feild: ip}]}",
            &row("ad_monitoring", "supported"),
        );
        let errors = errors_of(&text);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with(
                "m.yaml:13:73: media[0].protocol.click_macros[0].feild: unknown field `feild`"
            ),
            "{errors:?}"
        );
    }

    #[test]
    fn bad_fields_macros_and_duplicates_are_all_collected() {
        let protocol = "\n      template: mma\n      click_macros:\n        - {param: ip, macro: __IP__, field: ip}\n        - {param: ua, macro: UA, field: ua}\n        - {param: ip, macro: __IPV6__, field: ipv_6}\n      fixed_params: [{param: ua, value: x}]";
        let errors = errors_of(&media(protocol, &row("ad_monitoring", "supported")));
        assert_eq!(
            errors,
            [
                "m.yaml:17:30: media[0].protocol.click_macros[1].macro: macro `UA` is not in a known macro syntax: __NAME__, {{NAME}}, {name} or $name$",
                "m.yaml:18:19: media[0].protocol.click_macros[2].param: duplicate parameter `ip` (first at line 16, column 19)",
                "m.yaml:18:47: media[0].protocol.click_macros[2].field: unknown canonical field `ipv_6`, expected one of imei, imei_md5, idfa, idfa_md5, oaid, oaid_md5, android_id, android_id_md5, mac, mac_md5, aaid, caid, ip, ipv6, ua, os, os_version, model, ts, callback, click_id, account_id, campaign_id, adgroup_id, creative_id, ad_slot, request_id",
                "m.yaml:14:7: media[0].protocol: parameter `ua` is in both click_macros and fixed_params",
            ]
        );
    }

    #[test]
    fn unknown_template_and_missing_answers_are_located() {
        let errors = errors_of(&media(
            "{template: gdt}",
            &row("ad_monitoring", "supported"),
        ));
        assert_eq!(
            errors,
            [
                "m.yaml:13:26: media[0].protocol.template: unknown template `gdt`, expected one of mma"
            ]
        );
        let feedback_row = row("feedback_url", "supported")
            .replace("row: 1, method: direct_buy", "row: 2, method: programmatic");
        let text = HEAD.replace("    click_answer: redirect\n", "")
            + "media:\n  - id: demo\n    name: 演示\n    name_en: Demo\n    protocol: {template: mma}\n    placements:\n"
            + &row("ad_monitoring", "supported")
            + &feedback_row;
        assert_eq!(
            errors_of(&text),
            [
                "m.yaml:14:93: media[0].placements[0].click: clicks are supported but protocol `mma` has no click_answer",
                "m.yaml:15:50: media[0].placements[1].backflow: a feedback_url row needs a feedback protocol (e.g. alt_protocols: [{template: tencent_feedback}])",
            ]
        );
    }

    #[test]
    fn answers_feedback_protocols_and_ids_are_checked() {
        let text = format!(
            "{HEAD}  - {{id: mma, click_answer: {{server_to_server: {{status: 302, content_type: application/json, body: 'ret=0'}}}}}}\n  - id: Fb\n    feedback: true\n    impression_answer: redirect\n    click_macros: [{{param: a, macro: __A__, field: ts}}]\nmedia:\n  - id: demo\n    name: 演示\n    name_en: Demo\n    protocol: {{template: mma}}\n    alt_protocols: [{{template: mma}}]\n    placements:\n{}",
            row("ad_monitoring", "supported")
        );
        assert_eq!(
            errors_of(&text),
            [
                "m.yaml:9:10: templates[1].id: duplicate template `mma` (first at line 4, column 9)",
                "m.yaml:9:57: templates[1].click_answer.server_to_server.status: status 302 is not 2xx; media that call server-to-server count anything else (a 302 above all) as a failure",
                "m.yaml:9:100: templates[1].click_answer.server_to_server.body: body is not valid JSON (expected value at line 1 column 1) but content_type is `application/json`",
                "m.yaml:10:9: templates[2].id: invalid id `Fb`, expected lower-case letters, digits and `_`, starting with a letter",
                "m.yaml:12:24: templates[2].impression_answer: an impression is answered with `gif`, `no_content` or `server_to_server`",
                "m.yaml:10:5: templates[2]: a feedback protocol has no macros: the media appends its parameters (list them under known_params)",
                "m.yaml:10:5: templates[2]: a feedback protocol needs known_params (the names the media appends)",
                "m.yaml:19:21: media[0].alt_protocols[0]: duplicate protocol id `mma` in this media",
            ]
        );
    }

    #[test]
    fn duplicate_media_rows_and_unknown_field_sets_are_reported() {
        let one = media("{template: mma}", &row("ad_monitoring", "supported"));
        let text = format!(
            "{one}  - id: demo\n    name: 演示\n    name_en: Again\n    protocol: {{template: mma}}\n    placements:\n{}{}",
            row("ad_monitoring", "supported").replace("FS-01", "FS-99"),
            row("ad_monitoring", "supported").replace("row: 1", "row: 2"),
        );
        assert_eq!(
            errors_of(&text),
            [
                "m.yaml:16:9: media[1].id: duplicate media id `demo` (first at line 10, column 9)",
                "m.yaml:17:11: media[1].name: duplicate media name `演示` (first at line 11, column 11)",
                "m.yaml:21:15: media[1].placements[0].row: duplicate row `1` (first at line 15, column 15)",
                "m.yaml:21:112: media[1].placements[0].fields: unknown field set `FS-99`, expected one of FS-01",
                "m.yaml:22:26: media[1].placements[1].method: a media has one row per placement method; `媒体直投` is already row 1",
            ]
        );
    }
}
