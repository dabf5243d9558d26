//! Stage two, part two: placement rows and the small shared checks (ids, parameter names,
//! macro syntax, duplicates).

use std::collections::HashMap;

use serde_saphyr::Location;

use super::raw::RawPlacement;
use super::{BackflowMethod, FieldSet, LinkKind, Media, Placement, PlacementMethod, Support};
use crate::config::error::Collector;
use crate::config::raw::Located;

/// What a media's placement rows are checked against.
pub(super) struct PlacementCtx<'a> {
    pub(super) path: &'a str,
    pub(super) media: &'a Media,
    pub(super) field_sets: &'a [FieldSet],
    /// Whether the media's protocols resolved (else their checks are skipped).
    pub(super) resolved: bool,
}

pub(super) fn placements(
    errors: &mut Collector<'_>,
    ctx: &PlacementCtx<'_>,
    raw: Located<Vec<RawPlacement>>,
    rows: &mut Seen,
) -> Vec<Placement> {
    let path = format!("{}.placements", ctx.path);
    if raw.value().is_empty() {
        errors.push(raw.location(), &path, "expected at least one placement row");
    }
    let mut methods: HashMap<PlacementMethod, u32> = HashMap::new();
    let mut out = Vec::new();
    for (j, raw) in raw.into_value().into_iter().enumerate() {
        let path = format!("{path}[{j}]");
        let row = *raw.row.value();
        if row == 0 {
            errors.push(
                raw.row.location(),
                &format!("{path}.row"),
                "rows are numbered from 1",
            );
        }
        let row_key = Located(serde_saphyr::Spanned::new(
            row.to_string(),
            raw.row.location(),
            raw.row.location(),
        ));
        rows.check(errors, &row_key, &format!("{path}.row"), "row");
        let method = *raw.method.value();
        if let Some(first) = methods.insert(method, row) {
            let message = format!(
                "a media has one row per placement method; `{}` is already row {first}",
                method.name_zh()
            );
            errors.push(raw.method.location(), &format!("{path}.method"), message);
        }
        if *raw.impression.value() == Support::NoClickBehaviour {
            let message = "`no_click_behaviour` is a click cell; use not_supported or unspecified";
            errors.push(
                raw.impression.location(),
                &format!("{path}.impression"),
                message,
            );
        }
        let field_set = ctx.field_sets.iter().find(|f| &f.id == raw.fields.value());
        if field_set.is_none() {
            let known: Vec<_> = ctx.field_sets.iter().map(|f| f.id.as_str()).collect();
            let message = format!(
                "unknown field set `{}`, expected one of {}",
                raw.fields.value(),
                known.join(", ")
            );
            errors.push(raw.fields.location(), &format!("{path}.fields"), message);
        }
        if ctx.resolved {
            check_served(errors, ctx.media, &path, &raw);
        }
        out.push(Placement {
            row,
            method,
            slots: raw.slots,
            note: raw.note,
            backflow: *raw.backflow.value(),
            impression: *raw.impression.value(),
            click: *raw.click.value(),
            field_set: raw.fields.into_value(),
            fields: field_set.map(|f| f.fields.clone()).unwrap_or_default(),
            dual_link: raw.dual_link,
            manual_line: raw.manual_line,
        });
    }
    out
}

/// Checks that the protocol serving a row can answer what the row supports.
fn check_served(errors: &mut Collector<'_>, media: &Media, path: &str, raw: &RawPlacement) {
    let protocol = match raw.backflow.value() {
        BackflowMethod::FeedbackUrl => match media.feedback_protocol() {
            Some(protocol) => protocol,
            None => {
                let message = "a feedback_url row needs a feedback protocol \
                               (e.g. alt_protocols: [{template: tencent_feedback}])";
                errors.push(
                    raw.backflow.location(),
                    &format!("{path}.backflow"),
                    message,
                );
                return;
            }
        },
        BackflowMethod::AdMonitoring | BackflowMethod::Unidesk => {
            if media.protocol.feedback {
                let message = format!(
                    "the default protocol `{}` is a feedback protocol; monitoring-link rows need \
                     a macro protocol",
                    media.protocol.id
                );
                errors.push(
                    raw.backflow.location(),
                    &format!("{path}.backflow"),
                    message,
                );
                return;
            }
            &media.protocol
        }
    };
    let cells = [
        (LinkKind::Impression, &raw.impression, "impression"),
        (LinkKind::Click, &raw.click, "click"),
    ];
    for (kind, cell, key) in cells {
        if !cell.value().is_supported() {
            continue;
        }
        let answered = match kind {
            LinkKind::Impression => protocol.impression_answer.is_some(),
            LinkKind::Click => protocol.click_answer.is_some(),
        };
        if !answered {
            let message = format!(
                "{key}s are supported but protocol `{}` has no {key}_answer",
                protocol.id
            );
            errors.push(cell.location(), &format!("{path}.{key}"), message);
        } else if protocol.param_fields(kind).next().is_none() {
            let message = format!(
                "{key}s are supported but protocol `{}` maps no {key} parameter",
                protocol.id
            );
            errors.push(cell.location(), &format!("{path}.{key}"), message);
        }
    }
}

/// First occurrences of names, to report duplicates with the first position.
#[derive(Default)]
pub(super) struct Seen(HashMap<String, Location>);

impl Seen {
    pub(super) fn check(
        &mut self,
        errors: &mut Collector<'_>,
        name: &Located<String>,
        path: &str,
        what: &str,
    ) {
        let at = name.location();
        if let Some(first) = self.0.get(name.value()) {
            let message = format!(
                "duplicate {what} `{}` (first at line {}, column {})",
                name.value(),
                first.line(),
                first.column()
            );
            errors.push(at, path, message);
        } else {
            self.0.insert(name.value().clone(), at);
        }
    }
}

pub(super) fn check_ident(errors: &mut Collector<'_>, name: &Located<String>, path: &str) {
    let mut chars = name.value().chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        let message = format!(
            "invalid id `{}`, expected lower-case letters, digits and `_`, starting with a letter",
            name.value()
        );
        errors.push(name.location(), path, message);
    }
}

/// Characters that would break a pasted query template if written literally.
fn breaks_query(c: char) -> bool {
    c.is_whitespace() || c.is_control() || matches!(c, '&' | '=' | '#' | '?' | '%' | ',')
}

pub(super) fn check_param_name(errors: &mut Collector<'_>, name: &Located<String>, path: &str) {
    let value = name.value();
    if value.is_empty() {
        errors.push(name.location(), path, "parameter name must not be empty");
    } else if value.chars().any(breaks_query) {
        let message = format!(
            "parameter name `{value}` contains whitespace or one of & = # ? % , (it is pasted \
             into links literally)"
        );
        errors.push(name.location(), path, message);
    }
}

/// A macro must be in one of the four syntaxes the media use (media-protocols.md §1 item 1).
pub(super) fn check_macro(errors: &mut Collector<'_>, text: &Located<String>, path: &str) {
    let value = text.value();
    let word = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let inner = |open: &str, close: &str| {
        value
            .strip_prefix(open)
            .and_then(|rest| rest.strip_suffix(close))
            .filter(|rest| word(rest))
    };
    let valid = inner("__", "__").is_some()
        || inner("{{", "}}").is_some()
        || inner("{", "}").is_some()
        || inner("$", "$").is_some();
    if !valid {
        let message = format!(
            "macro `{value}` is not in a known macro syntax: __NAME__, {{{{NAME}}}}, {{name}} or $name$"
        );
        errors.push(text.location(), path, message);
    }
}
