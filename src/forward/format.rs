//! Third-party link formats (`spec/media-protocols.md` §5.9–§5.10) and the "chained" link: the
//! third party's click link wrapping ours, for media that carry only the third party's link.
//!
//! Miaozhen: `…/r/k=…&p=…&o=<landing>` (no `?`; `o=` is always last and runs to the end).
//! AdMaster: `…/c/a1,b2,…,u<landing>` (comma tokens; `,u` is last and runs to the end).
//! Both accept the landing part unencoded (§5.9 `o=` "raw with its own `?` and `&`"), which is
//! what chaining uses: our click URL goes in verbatim, so the media's macros in it stay literal
//! and are still substituted by the media, and nesting works (`A&o=B,u<ours>`).

/// The format of a third-party monitoring URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Miaozhen (秒针): `&`/`=` parameters in the path, landing in `o=`.
    Miaozhen,
    /// AdMaster: comma-separated `<code><value>` tokens, landing as `,u`.
    AdMaster,
    /// Anything else: macros are filled, but it cannot wrap our link.
    Other,
}

/// Recognizes a third-party URL by host (`*.miaozhen.com`, `*.admaster.com.cn`), else by shape:
/// parameters with `=` in the path is Miaozhen's, comma tokens without `=` in the path is
/// AdMaster's (so look-alike test servers and white-label domains are recognized too).
pub fn format_of(url: &str) -> Format {
    let Ok(parsed) = url::Url::parse(url) else {
        return Format::Other;
    };
    let host = parsed.host_str().unwrap_or("").to_ascii_lowercase();
    if host == "miaozhen.com" || host.ends_with(".miaozhen.com") {
        return Format::Miaozhen;
    }
    if host == "admaster.com.cn" || host.ends_with(".admaster.com.cn") {
        return Format::AdMaster;
    }
    let path = parsed.path();
    if path.contains('=') {
        Format::Miaozhen
    } else if path.contains(',') {
        Format::AdMaster
    } else {
        Format::Other
    }
}

/// Whether a third-party click URL can wrap ours (its format is known).
pub fn can_chain(url: &str) -> bool {
    format_of(url) != Format::Other
}

/// Replaces the landing part of a third-party URL with `inner` (appending one when absent).
fn wrap(url: &str, inner: &str) -> Option<String> {
    match format_of(url) {
        Format::Miaozhen => {
            let base = match url.find("&o=") {
                Some(at) => &url[..at],
                None => url.trim_end_matches('&'),
            };
            Some(format!("{base}&o={inner}"))
        }
        Format::AdMaster => {
            // `u` is the only code starting with `u` (§5.10), so the first `,u` is the landing.
            let base = match url.find(",u") {
                Some(at) => &url[..at],
                None => url.trim_end_matches(','),
            };
            Some(format!("{base},u{inner}"))
        }
        Format::Other => None,
    }
}

/// The chained click link: the activity's third-party click URLs of a known format wrapping our
/// click URL, the first one outermost; `None` when none of them can wrap.
pub fn chained_click_url(third_party_click: &[String], our_click_url: &str) -> Option<String> {
    let chainable: Vec<&String> = third_party_click.iter().filter(|u| can_chain(u)).collect();
    if chainable.is_empty() {
        return None;
    }
    chainable
        .iter()
        .rev()
        .try_fold(our_click_url.to_string(), |inner, url| wrap(url, &inner))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_recognized_by_host_then_shape() {
        assert_eq!(
            format_of("https://e.cn.miaozhen.com/r/k=1&p=2&o="),
            Format::Miaozhen
        );
        assert_eq!(
            format_of("http://c.admaster.com.cn/c/a1,b2,h"),
            Format::AdMaster
        );
        assert_eq!(
            format_of("http://127.0.0.1:9/mz/r/k=1&p=2&mo=__OS__&o="),
            Format::Miaozhen
        );
        assert_eq!(
            format_of("http://127.0.0.1:9/am/c/a1,b2,0a__OS__,h"),
            Format::AdMaster
        );
        assert_eq!(
            format_of("https://track.example.com/t?idfa=__IDFA__"),
            Format::Other
        );
        assert_eq!(format_of("not a url"), Format::Other);
    }

    #[test]
    fn chaining_wraps_ours_raw_and_replaces_an_existing_landing() {
        let ours = "https://bf.example/c/TOKEN?os=__OS__&idfa=__IDFA__";
        assert_eq!(
            chained_click_url(
                &["https://e.cn.miaozhen.com/r/k=1&p=2&o=https://brand.example/x?a=1&b=2".into()],
                ours
            )
            .as_deref(),
            Some(
                "https://e.cn.miaozhen.com/r/k=1&p=2&o=https://bf.example/c/TOKEN?os=__OS__&idfa=__IDFA__"
            )
        );
        assert_eq!(
            chained_click_url(
                &["http://c.admaster.com.cn/c/a1,b2,0a__OS__,h".into()],
                ours
            )
            .as_deref(),
            Some(
                "http://c.admaster.com.cn/c/a1,b2,0a__OS__,h,uhttps://bf.example/c/TOKEN?os=__OS__&idfa=__IDFA__"
            )
        );
        // Nested: Miaozhen outermost, then AdMaster, then ours; an unknown format is skipped.
        let nested = chained_click_url(
            &[
                "https://e.cn.miaozhen.com/r/k=1&o=".into(),
                "https://t.example/t?x=1".into(),
                "http://c.admaster.com.cn/c/a1,uhttps%3A%2F%2Fold".into(),
            ],
            ours,
        );
        assert_eq!(
            nested.as_deref(),
            Some(
                "https://e.cn.miaozhen.com/r/k=1&o=http://c.admaster.com.cn/c/a1,uhttps://bf.example/c/TOKEN?os=__OS__&idfa=__IDFA__"
            )
        );
        assert_eq!(
            chained_click_url(&["https://t.example/t?x=1".into()], ours),
            None
        );
        assert_eq!(chained_click_url(&[], ours), None);
    }
}
