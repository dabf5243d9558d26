//! Query-string decoding for monitoring-link hits (DESIGN.md "Conventions where the media
//! protocols disagree").
//!
//! Form rules: `+` and `%20` are both a space; every name and value is percent-decoded exactly
//! once (a `callback` that arrives double-encoded is stored decoded once, as the media expects it
//! back). Nothing here fails: a broken `%` sequence is kept literally and a value that is not
//! UTF-8 after decoding is replaced lossily, each flagged, so a media's malformed hit is still
//! accepted and counted rather than lost.

use std::borrow::Cow;

/// What was odd about a query string.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueryIssues {
    /// A `%` not followed by two hex digits (kept literally).
    pub invalid_percent_encoding: bool,
    /// Decoded bytes that were not UTF-8 (replaced with U+FFFD).
    pub invalid_utf8: bool,
    /// A parameter name that appeared more than once (the first value is canonical).
    pub duplicate_params: bool,
}

/// One decoded `name=value` pair, in arrival order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param<'a> {
    pub name: Cow<'a, str>,
    pub value: Cow<'a, str>,
}

/// The decoded parameters of a query string (without the leading `?`), in order, duplicates
/// included, and what was odd about it.
pub fn decode_query(raw: &str) -> (Vec<Param<'_>>, QueryIssues) {
    let mut issues = QueryIssues::default();
    let mut params: Vec<Param<'_>> = Vec::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = decode_component(name, &mut issues);
        let value = decode_component(value, &mut issues);
        params.push(Param { name, value });
    }
    // Sorted, not pairwise: a long query of distinct names must not cost quadratic time.
    let mut names: Vec<&str> = params.iter().map(|p| p.name.as_ref()).collect();
    names.sort_unstable();
    issues.duplicate_params = names.windows(2).any(|w| w[0] == w[1]);
    (params, issues)
}

/// The first value of `name`, if present.
pub fn first<'p>(params: &'p [Param<'_>], name: &str) -> Option<&'p str> {
    params
        .iter()
        .find(|p| p.name == name)
        .map(|p| p.value.as_ref())
}

/// Splits a raw query at a trailing parameter that carries an unencoded URL to the end, as
/// Miaozhen's `o=` does: the part from the first `&{name}=` (or a leading `{name}=`) to the end
/// is that parameter's value, verbatim and never split on `&`. Returns (the rest, the value).
pub fn split_trailing_param<'a>(raw: &'a str, name: &str) -> (&'a str, Option<&'a str>) {
    split_trailing(raw, "&", "=", name)
}

/// [`split_trailing_param`] for any link syntax: the landing part starts at the first
/// `{separator}{name}{equalizer}` (or a leading `{name}{equalizer}`) — AdMaster's `,u` — and
/// runs to the end, verbatim.
pub fn split_trailing<'a>(
    raw: &'a str,
    separator: &str,
    equalizer: &str,
    name: &str,
) -> (&'a str, Option<&'a str>) {
    let leading = format!("{name}{equalizer}");
    if let Some(rest) = raw.strip_prefix(&leading) {
        return ("", Some(rest));
    }
    let marker = format!("{separator}{name}{equalizer}");
    match raw.find(&marker) {
        Some(at) => (&raw[..at], Some(&raw[at + marker.len()..])),
        None => (raw, None),
    }
}

/// Decodes a link written in a token syntax without `=`: AdMaster's comma-separated
/// `<code><value>` tokens (`0a1,z6D92…,f203.0.113.200`). Each token's code is the longest of
/// `codes` it starts with (`0a` before `a`, `spec/media-protocols.md` §6.2 item 10), the rest
/// is the value, decoded once. A token no code matches (`h`, `i0`) is kept whole as a name
/// without a value: it maps to nothing, and the raw query keeps it anyway.
pub fn decode_tokens<'a>(
    raw: &'a str,
    separator: &str,
    codes: &[&str],
) -> (Vec<Param<'a>>, QueryIssues) {
    let mut issues = QueryIssues::default();
    let mut params: Vec<Param<'a>> = Vec::new();
    for token in raw.split(separator).filter(|t| !t.is_empty()) {
        let code = codes
            .iter()
            .filter(|c| !c.is_empty() && token.starts_with(**c))
            .max_by_key(|c| c.len());
        let (name, value) = match code {
            Some(code) => token.split_at(code.len()),
            None => (token, ""),
        };
        let value = decode_component(value, &mut issues);
        params.push(Param {
            name: Cow::Borrowed(name),
            value,
        });
    }
    let mut names: Vec<&str> = params.iter().map(|p| p.name.as_ref()).collect();
    names.sort_unstable();
    issues.duplicate_params = names.windows(2).any(|w| w[0] == w[1]);
    (params, issues)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes one component once: `+` → space, `%XX` → byte.
fn decode_component<'a>(s: &'a str, issues: &mut QueryIssues) -> Cow<'a, str> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => match (
                bytes.get(i + 1).and_then(|b| hex_value(*b)),
                bytes.get(i + 2).and_then(|b| hex_value(*b)),
            ) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 3;
                }
                _ => {
                    issues.invalid_percent_encoding = true;
                    out.push(b'%');
                    i += 1;
                }
            },
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    match String::from_utf8(out) {
        Ok(s) => Cow::Owned(s),
        Err(e) => {
            issues.invalid_utf8 = true;
            Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(raw: &str) -> Vec<(String, String)> {
        decode_query(raw)
            .0
            .into_iter()
            .map(|p| (p.name.into_owned(), p.value.into_owned()))
            .collect()
    }

    #[test]
    fn plus_and_percent_20_are_spaces_and_values_decode_once() {
        assert_eq!(
            pairs("ua=Mozilla%2F5.0+(iPhone)&cb=https%3A%2F%2Fx.com%2Fa%3Fk%3Dv%2526w&e="),
            [
                ("ua".into(), "Mozilla/5.0 (iPhone)".into()),
                ("cb".into(), "https://x.com/a?k=v%26w".into()),
                ("e".into(), String::new())
            ]
        );
    }

    #[test]
    fn broken_escapes_and_bytes_are_kept_and_flagged() {
        let (params, issues) = decode_query("a=100%&b=%zz&c=%E4%B8");
        assert_eq!(params[0].value, "100%");
        assert_eq!(params[1].value, "%zz");
        assert_eq!(params[2].value, "\u{fffd}");
        assert!(issues.invalid_percent_encoding && issues.invalid_utf8);
        assert!(!issues.duplicate_params);
    }

    #[test]
    fn duplicates_keep_all_values_and_first_wins() {
        let (params, issues) = decode_query("devicetype=iPhone7,2&devicetype=ios&x");
        assert!(issues.duplicate_params);
        assert_eq!(first(&params, "devicetype"), Some("iPhone7,2"));
        assert_eq!(first(&params, "x"), Some(""));
        assert_eq!(params.len(), 3);
    }

    #[test]
    fn admaster_tokens_take_the_longest_code_and_the_landing_runs_to_the_end() {
        let raw =
            "a82981,b1587357,0a1,n__MAC__,riPhone15%2C2,h,uhttps%3A%2F%2Fx.example%2Fp%2Cq,z1";
        let (rest, landing) = split_trailing(raw, ",", "", "u");
        assert_eq!(landing, Some("https%3A%2F%2Fx.example%2Fp%2Cq,z1"));
        let (params, issues) = decode_tokens(rest, ",", &["a", "b", "0a", "n", "r", "z"]);
        let pairs: Vec<(&str, &str)> = params
            .iter()
            .map(|p| (p.name.as_ref(), p.value.as_ref()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("a", "82981"),
                ("b", "1587357"),
                ("0a", "1"),
                ("n", "__MAC__"),
                ("r", "iPhone15,2"),
                ("h", "")
            ]
        );
        assert!(!issues.duplicate_params && !issues.invalid_percent_encoding);
        // A leading landing token takes the whole link.
        assert_eq!(
            split_trailing("uhttp://x", ",", "", "u"),
            ("", Some("http://x"))
        );
    }

    #[test]
    fn a_trailing_landing_param_runs_to_the_end() {
        assert_eq!(
            split_trailing_param("m2=abc&o=https://l.com/p?a=1&b=2", "o"),
            ("m2=abc", Some("https://l.com/p?a=1&b=2"))
        );
        assert_eq!(
            split_trailing_param("o=https://l.com/?x=1&y", "o"),
            ("", Some("https://l.com/?x=1&y"))
        );
        assert_eq!(
            split_trailing_param("m2=abc&oo=1", "o"),
            ("m2=abc&oo=1", None)
        );
    }
}
