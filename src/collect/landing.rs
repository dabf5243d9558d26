//! Macros in an activity's landing URL, filled from the click that is redirected there.
//!
//! An advertiser may write macros into the landing URL (`https://shop.example/p?idfa=__IDFA__&cb=__CALLBACK__`)
//! so the landing page receives the click's device id, callback or click id. On a device click
//! the `302` then goes to the landing URL with those macros replaced by the hit's values.
//!
//! Which macros: the media's own click macros, in the media's syntax (`__IDFA__` for MMA media,
//! `{{IDFA}}` for Baidu, `{ip}` for Weibo: whatever its link template in `schemas/media.yaml`
//! says), then our canonical names as `__FIELD__` (`__OAID__`, `__IMEI_MD5__`, `__CALLBACK__`,
//! `__CLICK_ID__`, alias `__CLICKID__`). A macro the hit has no value for becomes empty; a value
//! is normalized like every canonical value (an unreplaced macro or `null` is no value).
//!
//! **No open redirect.** Only macros after the first `?` or `#` are filled; a macro in the
//! scheme, host or path stays literal. Every value is percent-encoded (only unreserved
//! characters stay), so it cannot end the parameter, start a fragment or break the header
//! (`https://evil.example/`, `%0d%0aLocation:` arrive as inert text). As a last guard the
//! result must keep the landing URL's scheme, host, port and path, else the macros are emptied.
//!
//! **Cheap.** Compiled once per link table reload; the request path only decodes the query
//! when the landing URL has macros.

use std::fmt::Write as _;

use crate::collect::fields::CanonicalField;
use crate::collect::normalize::CanonicalValues;
use crate::collect::query::{decode_query, split_trailing_param};
use crate::collect::registry::{LinkKind, Protocol};

/// Percent-encodes every byte except the unreserved characters (`A-Z a-z 0-9 - . _ ~`).
pub fn encode_component(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Field(CanonicalField),
}

/// A landing URL with macros, compiled for one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LandingTemplate {
    parts: Vec<Part>,
    /// The click link's query parameters that fill the fields used, in the protocol's order.
    params: Vec<(String, CanonicalField)>,
    /// The protocol's trailing landing parameter (Miaozhen `o`), split off before decoding.
    landing_param: Option<String>,
    /// Scheme, host, port and path that every rendered URL must keep.
    fixed: String,
    /// The URL with every macro empty (the fallback should a render ever change `fixed`).
    empty: String,
}

/// `scheme://host:port/path` of a URL, if it parses.
fn fixed_part(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    Some(format!(
        "{}://{}:{}{}",
        u.scheme(),
        u.host_str()?,
        u.port_or_known_default()?,
        u.path()
    ))
}

impl LandingTemplate {
    /// Compiles `landing_url` for clicks on a link of `protocol`; `None` when it has no macro
    /// (the common case: the request path then redirects to the stored URL as is).
    pub fn compile(landing_url: &str, protocol: Option<&Protocol>) -> Option<LandingTemplate> {
        let start = landing_url.find(['?', '#'])?;
        // Candidate macros, longest first so `__IMEI_MD5__` is not read as a shorter one.
        let mut macros: Vec<(String, CanonicalField)> = protocol
            .map(|p| {
                p.macros(LinkKind::Click)
                    .iter()
                    .map(|m| (m.macro_text.clone(), m.field))
                    .collect()
            })
            .unwrap_or_default();
        for field in CanonicalField::ALL {
            macros.push((
                format!("__{}__", field.as_str().to_ascii_uppercase()),
                field,
            ));
        }
        macros.push(("__CLICKID__".to_string(), CanonicalField::ClickId));
        macros.sort_by_key(|(m, _)| std::cmp::Reverse(m.len()));

        let mut parts = vec![Part::Literal(landing_url[..start].to_string())];
        let mut literal = String::new();
        let mut rest = &landing_url[start..];
        'scan: while !rest.is_empty() {
            for (text, field) in &macros {
                if let Some(after) = rest.strip_prefix(text.as_str()) {
                    parts.push(Part::Literal(std::mem::take(&mut literal)));
                    parts.push(Part::Field(*field));
                    rest = after;
                    continue 'scan;
                }
            }
            let mut chars = rest.chars();
            if let Some(c) = chars.next() {
                literal.push(c);
            }
            rest = chars.as_str();
        }
        parts.push(Part::Literal(literal));
        parts.retain(|p| !matches!(p, Part::Literal(l) if l.is_empty()));
        let used: Vec<CanonicalField> = parts
            .iter()
            .filter_map(|p| match p {
                Part::Field(f) => Some(*f),
                Part::Literal(_) => None,
            })
            .collect();
        if used.is_empty() {
            return None;
        }
        let params = protocol
            .map(|p| {
                p.param_fields(LinkKind::Click)
                    .filter(|(_, f, _)| used.contains(f))
                    .map(|(name, f, _)| (name.to_string(), f))
                    .collect()
            })
            .unwrap_or_default();
        let mut template = LandingTemplate {
            parts,
            params,
            landing_param: protocol.and_then(|p| p.landing_param.clone()),
            fixed: fixed_part(landing_url).unwrap_or_default(),
            empty: String::new(),
        };
        template.empty = template.render_with(|_| None);
        Some(template)
    }

    fn render_with<'v>(&self, value: impl Fn(CanonicalField) -> Option<&'v str>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(l) => out.push_str(l),
                Part::Field(f) => out.push_str(&encode_component(value(*f).unwrap_or(""))),
            }
        }
        out
    }

    /// The landing URL for a click whose raw query string is `query`.
    pub fn render(&self, query: &str) -> String {
        let query = match &self.landing_param {
            Some(name) => split_trailing_param(query, name).0,
            None => query,
        };
        let (decoded, _) = decode_query(query);
        let mut values = CanonicalValues::default();
        for param in &decoded {
            if let Some((_, field)) = self.params.iter().find(|(n, _)| *n == param.name) {
                values.insert(*field, &param.value);
            }
        }
        let out = self.render_with(|f| values.get(f));
        if fixed_part(&out).as_deref() == Some(self.fixed.as_str()) {
            out
        } else {
            self.empty.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::registry::MediaRegistry;

    fn registry() -> MediaRegistry {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/media.yaml");
        MediaRegistry::load(&path).unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn compile(url: &str, media: &str) -> Option<LandingTemplate> {
        let registry = registry();
        LandingTemplate::compile(url, registry.get(media).map(|m| &m.protocol))
    }

    #[test]
    fn a_landing_url_without_macros_compiles_to_nothing() {
        assert_eq!(compile("https://shop.example/p?a=1#top", "bilibili"), None);
        assert_eq!(compile("https://shop.example/__IDFA__/p", "bilibili"), None);
    }

    #[test]
    fn media_and_canonical_macros_are_filled_encoded_and_unknown_ones_emptied() {
        let t = compile(
            "https://shop.example/p?idfa=__IDFA__&oaid=__OAID__&os=__OS__&cb=__CALLBACK__&c=__CLICKID__#m=__IMEI_MD5__",
            "bilibili",
        )
        .unwrap_or_else(|| panic!("has macros"));
        let url = t.render("os=1&idfa=6D92078A-8246-4BA4-AE5B-76104861E7DC&oaid=__OAID__&imei_md5=0B1F5C17D4D1484F7F8B9349D542A75B");
        assert_eq!(
            url,
            "https://shop.example/p?idfa=6D92078A-8246-4BA4-AE5B-76104861E7DC&oaid=&os=1&cb=&c=#m=0b1f5c17d4d1484f7f8b9349d542a75b"
        );
    }

    #[test]
    fn the_media_syntax_is_used_for_baidu() {
        let registry = registry();
        let Some(baidu) = registry.get("baidu") else {
            return;
        };
        let Some(m) = baidu
            .protocol
            .macros(LinkKind::Click)
            .iter()
            .find(|m| m.field == CanonicalField::ClickId || m.field == CanonicalField::Ip)
        else {
            return;
        };
        let t = LandingTemplate::compile(
            &format!("https://shop.example/p?v={}", m.macro_text),
            Some(&baidu.protocol),
        )
        .unwrap_or_else(|| panic!("has macros"));
        let value = if m.field == CanonicalField::Ip {
            "203.0.113.7"
        } else {
            "abc"
        };
        assert_eq!(
            t.render(&format!("{}={value}", m.param)),
            format!("https://shop.example/p?v={value}")
        );
    }

    #[test]
    fn attack_values_stay_inside_their_parameter() {
        let t = compile("https://shop.example/p?idfa=__IDFA__&x=1", "bilibili")
            .unwrap_or_else(|| panic!("has macros"));
        for attack in [
            "https%3A%2F%2Fevil.example%2F",
            "x%0d%0aLocation:%20https://evil.example/",
            "a%26next%3Dhttps%3A%2F%2Fevil.example",
            "%23@evil.example",
            "\\\\evil.example",
        ] {
            let url = t.render(&format!("idfa={attack}"));
            let parsed = url::Url::parse(&url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(parsed.host_str(), Some("shop.example"), "{url}");
            assert_eq!(parsed.path(), "/p", "{url}");
            assert_eq!(parsed.query_pairs().count(), 2, "{url}");
            assert!(!url.contains('\r') && !url.contains('\n'), "{url}");
            assert!(axum::http::HeaderValue::from_str(&url).is_ok(), "{url}");
        }
    }

    #[test]
    fn encode_component_keeps_only_unreserved() {
        assert_eq!(encode_component("a-b_c.d~e"), "a-b_c.d~e");
        assert_eq!(
            encode_component("a b/c?d&e=f#g,h"),
            "a%20b%2Fc%3Fd%26e%3Df%23g%2Ch"
        );
        assert_eq!(encode_component("中"), "%E4%B8%AD");
    }
}
