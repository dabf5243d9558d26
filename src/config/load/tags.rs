//! Stage two of the user tag dataset: [`RawUserTagsBuild`] to [`UserTagsBuild`], every error
//! collected with its position and field path (`dataset.tags.user_tag_x.window`).

use std::path::Path;

use super::Converter;
use crate::config::model::CompiledExpr;
use crate::config::model_tags::{
    AIPL_STAGES, CompareTo, DEFAULT_PARTITION_ROWS, ID_COLUMN_FIELDS, MAX_TAG_NAME,
    MIN_PARTITION_ROWS, RfmPart, RfmRule, Scope, TAG_PREFIX, TagDef, TagKind, USER_ID_FIELDS,
    UserTagsBuild, Window, WindowEnd,
};
use crate::config::raw::Located;
use crate::config::raw_tags::{RawCompareTo, RawRfmPart, RawTag, RawUserTagsBuild, RawWindowEnd};

/// Default `max_values` of a distinct tag (spec §1.3.4: multi-value tags pivot up to 50 values).
pub const DEFAULT_MAX_VALUES: u64 = 50;
/// Default separator of multi-value tags.
pub const DEFAULT_SEPARATOR: &str = ",";

/// Checks a tag name: `user_tag_` + `[a-z0-9_]+`, at most 64 characters.
pub(crate) fn check_tag_name(name: &str) -> Result<String, String> {
    let rest = name.strip_prefix(TAG_PREFIX).unwrap_or("");
    let valid = !rest.is_empty()
        && rest
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= MAX_TAG_NAME;
    if valid {
        Ok(name.to_string())
    } else {
        Err(format!(
            "invalid tag name `{name}`, expected `{TAG_PREFIX}` followed by lower-case letters, digits and `_`, at most {MAX_TAG_NAME} characters"
        ))
    }
}

/// Parses `7d` / `12h`.
pub(crate) fn parse_window(text: &str) -> Result<Window, String> {
    let bad = || {
        format!("invalid window `{text}`, expected whole days or hours such as `7d`, `30d`, `12h`")
    };
    let (digits, unit) = text.split_at(text.len().saturating_sub(1));
    let n: u32 = digits.parse().map_err(|_| bad())?;
    if n == 0 {
        return Err(format!("window `{text}` is empty, expected at least 1"));
    }
    match unit {
        "d" if n <= 3660 => Ok(Window::Days(n)),
        "h" if n <= 24 * 3660 => Ok(Window::Hours(n)),
        "d" | "h" => Err(format!("window `{text}` is longer than 10 years")),
        _ => Err(bad()),
    }
}

impl Converter<'_> {
    pub(super) fn user_tags(
        &mut self,
        file: &Path,
        raw: RawUserTagsBuild,
    ) -> Option<UserTagsBuild> {
        let output = self.ident(&raw.output, "dataset.output");
        let (source, include_flagged) = match raw.source {
            None => (Some("ad_events".to_string()), false),
            Some(s) => (
                match &s.dataset {
                    Some(d) => self.ident(d, "dataset.source.dataset"),
                    None => Some("ad_events".to_string()),
                },
                s.include_flagged,
            ),
        };
        let id_columns = match raw.id_columns {
            None => Some(
                USER_ID_FIELDS
                    .iter()
                    .map(|(f, _)| (*f).to_string())
                    .collect(),
            ),
            Some(list) => self.id_columns(list),
        };
        let mut tags: Vec<TagDef> = Vec::new();
        let mut ok = true;
        if raw.tags.0.is_empty() {
            self.errors.push(
                raw.output.location(),
                "dataset.tags",
                "no tags: declare at least one under `tags`",
            );
            ok = false;
        }
        // Tags with errors: references to them are not reported again.
        let mut failed: Vec<String> = Vec::new();
        for (name, tag) in raw.tags.0 {
            let path = format!("dataset.tags.{}", name.value());
            let checked = self
                .errors
                .check(name.location(), &path, check_tag_name(name.value()));
            if let Some(first) = tags.iter().find(|t| &t.name == name.value()) {
                self.errors.push(
                    name.location(),
                    &path,
                    format!(
                        "tag `{}` is already defined at {}",
                        first.name, first.defined_at
                    ),
                );
                ok = false;
                continue;
            }
            let (alias, description, category) = tag.meta();
            let (alias, description, category) =
                (alias.clone(), description.clone(), category.clone());
            let kind = self.tag(
                &path,
                tag,
                &Above {
                    tags: &tags,
                    failed: &failed,
                },
            );
            match (checked, kind) {
                (Some(checked), Some(kind)) => tags.push(TagDef {
                    name: checked,
                    defined_at: format!(
                        "{}:{}:{}",
                        file.display(),
                        name.location().line(),
                        name.location().column()
                    ),
                    alias,
                    description,
                    category,
                    kind,
                }),
                _ => {
                    failed.push(name.into_value());
                    ok = false;
                }
            }
        }
        let partition_rows = match &raw.partition_rows {
            None => Some(DEFAULT_PARTITION_ROWS),
            Some(n) if *n.value() < MIN_PARTITION_ROWS => {
                self.errors.push(
                    n.location(),
                    "dataset.partition_rows",
                    format!(
                        "partition_rows {} is too small, expected at least {MIN_PARTITION_ROWS}",
                        n.value()
                    ),
                );
                None
            }
            Some(n) => Some(*n.value()),
        };
        let id_columns: Vec<String> = id_columns?;
        let partition_rows = partition_rows?;
        if !ok {
            return None;
        }
        Some(UserTagsBuild {
            output: output?,
            source: source?,
            include_flagged,
            id_columns,
            window_end: match raw.window_end {
                RawWindowEnd::Day => WindowEnd::Day,
                RawWindowEnd::Hour => WindowEnd::Hour,
            },
            partition_rows,
            tags,
        })
    }

    fn id_columns(&mut self, list: Vec<Located<String>>) -> Option<Vec<String>> {
        let mut out: Vec<String> = Vec::new();
        let mut ok = true;
        for (i, column) in list.into_iter().enumerate() {
            let path = format!("dataset.id_columns[{i}]");
            if !ID_COLUMN_FIELDS.contains(&column.value().as_str()) {
                self.errors.push(
                    column.location(),
                    &path,
                    format!(
                        "unknown ID column `{}`, expected one of {}",
                        column.value(),
                        ID_COLUMN_FIELDS.join(", ")
                    ),
                );
                ok = false;
            } else if out.contains(column.value()) {
                self.errors
                    .push(column.location(), &path, "ID column given twice");
                ok = false;
            } else {
                out.push(column.into_value());
            }
        }
        ok.then_some(out)
    }

    fn tag_window(&mut self, raw: &Located<String>, path: &str) -> Option<Window> {
        self.errors.check(
            raw.location(),
            &format!("{path}.window"),
            parse_window(raw.value()),
        )
    }

    fn scope(
        &mut self,
        window: &Located<String>,
        filter: Option<&Located<String>>,
        path: &str,
    ) -> Option<Scope> {
        let window = self.tag_window(window, path);
        let filter = match filter {
            Some(f) => Some(self.expr(f, &format!("{path}.filter"))?),
            None => None,
        };
        Some(Scope {
            window: window?,
            filter,
        })
    }

    fn column(&mut self, raw: &Located<String>, path: &str) -> Option<String> {
        self.non_empty(raw, &format!("{path}.column"), "column name")
    }

    fn separator(&mut self, raw: Option<Located<String>>, path: &str) -> Option<String> {
        match raw {
            None => Some(DEFAULT_SEPARATOR.to_string()),
            Some(s) => self.non_empty(&s, &format!("{path}.separator"), "separator"),
        }
    }

    fn tag(&mut self, path: &str, raw: RawTag, above: &Above<'_>) -> Option<TagKind> {
        match raw {
            RawTag::Count(t) => self
                .scope(&t.window, t.filter.as_ref(), path)
                .map(TagKind::Count),
            RawTag::LastSeen(t) => self
                .scope(&t.window, t.filter.as_ref(), path)
                .map(TagKind::LastSeen),
            RawTag::Sum(t) => {
                let column = self.column(&t.column, path);
                let scope = self.scope(&t.window, t.filter.as_ref(), path);
                Some(TagKind::Sum {
                    column: column?,
                    scope: scope?,
                })
            }
            RawTag::Distinct(t) => {
                let column = self.column(&t.column, path);
                let scope = self.scope(&t.window, t.filter.as_ref(), path);
                let max = self.limit(
                    t.max_values,
                    &format!("{path}.max_values"),
                    DEFAULT_MAX_VALUES,
                );
                let max = max.and_then(|m| self.usize_limit(m, &format!("{path}.max_values")));
                let separator = self.separator(t.separator, path);
                Some(TagKind::Distinct {
                    column: column?,
                    scope: scope?,
                    max_values: max?.get(),
                    separator: separator?,
                })
            }
            RawTag::TopN(t) => {
                let column = self.column(&t.column, path);
                let scope = self.scope(&t.window, t.filter.as_ref(), path);
                let n = self.limit(Some(t.n), &format!("{path}.n"), 1);
                let n = n.and_then(|m| self.usize_limit(m, &format!("{path}.n")));
                let separator = self.separator(t.separator, path);
                Some(TagKind::TopN {
                    column: column?,
                    n: n?.get(),
                    scope: scope?,
                    separator: separator?,
                })
            }
            RawTag::Ratio(t) => {
                let numerator = self.numeric_ref(&t.numerator, &format!("{path}.numerator"), above);
                let denominator =
                    self.numeric_ref(&t.denominator, &format!("{path}.denominator"), above);
                let min = match t.min_denominator {
                    None => Some(1.0),
                    Some(m) => self.errors.check(
                        m.location(),
                        &format!("{path}.min_denominator"),
                        if *m.value() > 0.0 && m.value().is_finite() {
                            Ok(*m.value())
                        } else {
                            Err(format!(
                                "expected a number greater than 0, found {}",
                                m.value()
                            ))
                        },
                    ),
                };
                Some(TagKind::Ratio {
                    numerator: numerator?,
                    denominator: denominator?,
                    min_denominator: min?,
                })
            }
            RawTag::Rfm(t) => {
                let t = *t;
                let recency = self.rfm_part(t.recency, &format!("{path}.recency"), above, true);
                let frequency =
                    self.rfm_part(t.frequency, &format!("{path}.frequency"), above, false);
                let monetary = self.rfm_part(t.monetary, &format!("{path}.monetary"), above, false);
                Some(TagKind::Rfm(RfmRule {
                    recency: recency?,
                    frequency: frequency?,
                    monetary: monetary?,
                }))
            }
            RawTag::Aipl(t) => {
                // Checked in written order, kept from the highest stage down.
                let rules = [
                    (&t.awareness, AIPL_STAGES[3]),
                    (&t.interest, AIPL_STAGES[2]),
                    (&t.purchase, AIPL_STAGES[1]),
                    (&t.loyalty, AIPL_STAGES[0]),
                ];
                let mut out = Vec::new();
                let mut ok = true;
                for (rule, (stage, label)) in rules {
                    match self.tag_condition(rule, &format!("{path}.{stage}"), above) {
                        Some(expr) => out.push((label, expr)),
                        None => ok = false,
                    }
                }
                out.reverse();
                ok.then_some(TagKind::Aipl(out))
            }
        }
    }

    /// A reference to a tag above of a numeric kind.
    fn numeric_ref(
        &mut self,
        raw: &Located<String>,
        path: &str,
        above: &Above<'_>,
    ) -> Option<String> {
        let checked = match above.find(raw.value()) {
            Err(None) => return None,
            Err(Some(message)) => Err(message),
            Ok(t)
                if matches!(
                    t.kind,
                    TagKind::Count(_) | TagKind::Sum { .. } | TagKind::Ratio { .. }
                ) =>
            {
                Ok(t.name.clone())
            }
            Ok(t) => Err(format!(
                "tag `{}` is a `{}` tag, expected a numeric tag (count, sum or ratio)",
                t.name,
                t.kind.name()
            )),
        };
        self.errors.check(raw.location(), path, checked)
    }

    fn rfm_part(
        &mut self,
        raw: RawRfmPart,
        path: &str,
        above: &Above<'_>,
        recency: bool,
    ) -> Option<RfmPart> {
        let tag = if recency {
            let checked = match above.find(raw.tag.value()) {
                Err(None) => Err(String::new()),
                Err(Some(message)) => Err(message),
                Ok(t) if matches!(t.kind, TagKind::LastSeen(_)) => Ok(t.name.clone()),
                Ok(t) => Err(format!(
                    "tag `{}` is a `{}` tag, expected a `last_seen` tag",
                    t.name,
                    t.kind.name()
                )),
            };
            match checked {
                Err(message) if message.is_empty() => None,
                checked => self
                    .errors
                    .check(raw.tag.location(), &format!("{path}.tag"), checked),
            }
        } else {
            self.numeric_ref(&raw.tag, &format!("{path}.tag"), above)
        };
        let list = raw.thresholds.value();
        let thresholds = self.errors.check(
            raw.thresholds.location(),
            &format!("{path}.thresholds"),
            if list.is_empty() {
                Err("expected at least one threshold".to_string())
            } else if list.iter().any(|v| !v.is_finite()) {
                Err("thresholds must be finite numbers".to_string())
            } else if list.windows(2).any(|w| w[0] >= w[1]) {
                Err(format!(
                    "thresholds must be strictly ascending, found {list:?}"
                ))
            } else {
                Ok(list.clone())
            },
        );
        let compare_to = match raw.compare_to {
            None => Some(CompareTo::Mean),
            Some(c) => self.errors.check(
                c.location(),
                &format!("{path}.compare_to"),
                match c.value() {
                    RawCompareTo::Value(v) if v.is_finite() => Ok(CompareTo::Value(*v)),
                    RawCompareTo::Name(n) if n == "mean" => Ok(CompareTo::Mean),
                    RawCompareTo::Value(v) => {
                        Err(format!("expected `mean` or a number, found {v}"))
                    }
                    RawCompareTo::Name(n) => {
                        Err(format!("expected `mean` or a number, found `{n}`"))
                    }
                },
            ),
        };
        Some(RfmPart {
            tag: tag?,
            thresholds: thresholds?,
            compare_to: compare_to?,
        })
    }

    /// An SQL condition that may refer only to tags above (numeric, date or text).
    fn tag_condition(
        &mut self,
        raw: &Located<String>,
        path: &str,
        above: &Above<'_>,
    ) -> Option<CompiledExpr> {
        let expr = self.expr(raw, path)?;
        for name in expr.expr.clone().meta().root_names() {
            match above.find(&name) {
                Ok(_) => {}
                Err(None) => return None,
                Err(Some(message)) => {
                    self.errors.push(raw.location(), path, message);
                    return None;
                }
            }
        }
        Some(expr)
    }
}

/// The tags defined above the one being checked, and the names of those with errors.
struct Above<'a> {
    tags: &'a [TagDef],
    failed: &'a [String],
}

impl Above<'_> {
    /// The tag named `name`; `Err(None)` when it has errors of its own (already reported).
    fn find(&self, name: &str) -> Result<&TagDef, Option<String>> {
        match self.tags.iter().find(|t| t.name == name) {
            Some(t) => Ok(t),
            None if self.failed.iter().any(|f| f == name) => Err(None),
            None => Err(Some(unknown_tag(name, self.tags))),
        }
    }
}

fn unknown_tag(name: &str, above: &[TagDef]) -> String {
    if above.is_empty() {
        format!("unknown tag `{name}`: no tag is defined above this one")
    } else {
        let names: Vec<&str> = above.iter().map(|t| t.name.as_str()).collect();
        format!(
            "unknown tag `{name}`, expected one defined above: {}",
            names.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_whole_days_or_hours() {
        assert_eq!(parse_window("7d"), Ok(Window::Days(7)));
        assert_eq!(parse_window("12h"), Ok(Window::Hours(12)));
        for bad in ["", "d", "7", "7w", "-1d", "1.5d", "0d"] {
            assert!(parse_window(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tag_names_need_the_prefix() {
        assert!(check_tag_name("user_tag_clicks_7d").is_ok());
        for bad in [
            "clicks",
            "user_tag_",
            "user_tag_Clicks",
            "user_unique_id",
            "user_id",
        ] {
            assert!(check_tag_name(bad).is_err(), "{bad}");
        }
        assert!(check_tag_name(&format!("user_tag_{}", "x".repeat(56))).is_err());
    }
}
