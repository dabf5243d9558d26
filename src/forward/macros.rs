//! Filling a third party's MMA macros (`__OS__`, `__IMEI__`, `__IP__`, `__TS__`, …,
//! `spec/media-protocols.md` §5.9–§5.11) from a decoded hit, before it is forwarded.
//!
//! Rules:
//! * Macro names are matched case-insensitively (AdMaster writes `__AndroidID__`).
//! * Values are the hit's canonical values (`collect::decode`), in the form the MMA table
//!   gives: device ids as MD5 where the macro is the MD5 (`__IMEI__`, `__ANDROIDID__`,
//!   `__MAC__`), raw where it is raw (`__IDFA__`, `__OAID__`, `__ANDROIDID1__`); `__OS__` as
//!   0 Android, 1 iOS, 2 Windows Phone, 3 other; `__TS__` the event time in milliseconds, in
//!   seconds for AdMaster (its SDK's `timeStampUseSecond=true`, §5.10); `__IP__`/`__UA__` the
//!   user's, never the calling media server's.
//! * Every value is percent-encoded (unreserved characters only stay), so a value can never
//!   add a parameter, a comma token or a fragment.
//! * A known macro without a value: AdMaster's own convention is to leave it unreplaced
//!   ("如果 IDFA、IMEI、AndroidId 没有值，则不替换", §1 item 3), so it stays literal there;
//!   elsewhere it becomes empty (Miaozhen's example links carry `m5=` for an absent IDFA).
//! * Macros we do not know (a third party's own) are left as written.

use std::collections::HashMap;

use chrono::DateTime;

use crate::collect::decode::Row;
use crate::collect::landing::encode_component;
use crate::forward::format::Format;

/// What a macro is filled with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// A decoded column, as is.
    Column(&'static str),
    /// `os` as MMA's 0–3.
    OsMma,
    /// The event time (ms; s for AdMaster).
    Ts,
    /// MD5 of the MAC with colons (`__MAC1__`).
    MacColonMd5,
    /// A macro we know but never have a value for.
    Nothing,
}

/// The MMA macro names (upper case, without underscores around) and their sources.
const MACROS: &[(&str, Source)] = &[
    ("OS", Source::OsMma),
    ("IMEI", Source::Column("imei_md5")),
    ("ANDROIDID", Source::Column("android_id_md5")),
    ("ANDROIDID1", Source::Column("android_id")),
    ("IDFA", Source::Column("idfa")),
    ("OAID", Source::Column("oaid")),
    ("AAID", Source::Column("aaid")),
    ("CAID", Source::Column("caid")),
    ("MAC", Source::Column("mac_md5")),
    ("MAC1", Source::MacColonMd5),
    ("IP", Source::Column("user_ip")),
    ("UA", Source::Column("user_agent")),
    ("TS", Source::Ts),
    ("TERM", Source::Column("model")),
    ("OSVS", Source::Column("os_version")),
    ("REQUESTID", Source::Column("request_id")),
    ("POS", Source::Column("ad_slot")),
    ("OPENUDID", Source::Nothing),
    ("DUID", Source::Nothing),
    ("LBS", Source::Nothing),
    ("WIFI", Source::Nothing),
    ("SCWH", Source::Nothing),
    ("MUID", Source::Nothing),
    ("MUDS", Source::Nothing),
    ("AKEY", Source::Nothing),
    ("ANAME", Source::Nothing),
    ("APP", Source::Nothing),
];

/// The values of one decoded hit that third-party macros use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HitValues {
    columns: HashMap<&'static str, String>,
    /// Event time, Unix ms.
    pub event_ms: Option<i64>,
    /// Receive time, Unix ms.
    pub received_ms: Option<i64>,
}

impl HitValues {
    /// Keeps the non-null columns of a decoded row.
    pub fn from_row(row: Row) -> HitValues {
        let ms = |v: Option<&String>| {
            v.and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.timestamp_millis())
        };
        let columns: HashMap<&'static str, String> = row
            .into_iter()
            .filter_map(|(c, v)| v.filter(|v| !v.is_empty()).map(|v| (c, v)))
            .collect();
        HitValues {
            event_ms: ms(columns.get("event_time")),
            received_ms: ms(columns.get("received_at")),
            columns,
        }
    }

    /// A column's value.
    pub fn get(&self, column: &str) -> Option<&str> {
        self.columns.get(column).map(String::as_str)
    }

    /// MMA's `__OS__`: 0 Android, 1 iOS, 2 Windows Phone, 3 other; from the media's `os` value,
    /// else guessed from the user agent.
    pub fn os_mma(&self) -> Option<&'static str> {
        let from_os = self.get("os").and_then(|os| {
            let os = os.trim().to_ascii_lowercase();
            Some(match os.as_str() {
                "0" | "android" => "0",
                "1" | "ios" | "iphone" | "ipad" => "1",
                "2" | "wp" | "windows phone" | "windowsphone" => "2",
                "3" | "other" | "harmony" | "harmonyos" | "ohos" => "3",
                _ => return None,
            })
        });
        from_os.or_else(|| {
            let ua = self.get("user_agent")?.to_ascii_lowercase();
            if ua.contains("iphone") || ua.contains("ipad") || ua.contains("ios") {
                Some("1")
            } else if ua.contains("android") {
                Some("0")
            } else {
                None
            }
        })
    }

    fn value(&self, source: Source, format: Format) -> Option<String> {
        match source {
            Source::Column(c) => self.get(c).map(str::to_string),
            Source::OsMma => self.os_mma().map(str::to_string),
            Source::Ts => self.event_ms.map(|ms| {
                if format == Format::AdMaster {
                    (ms / 1000).to_string()
                } else {
                    ms.to_string()
                }
            }),
            Source::MacColonMd5 => {
                let mac = self.get("mac")?;
                let hex: Vec<char> = mac
                    .chars()
                    .filter(char::is_ascii_hexdigit)
                    .map(|c| c.to_ascii_uppercase())
                    .collect();
                if hex.len() != 12 {
                    return None;
                }
                let colons = hex
                    .chunks(2)
                    .map(|p| p.iter().collect::<String>())
                    .collect::<Vec<_>>()
                    .join(":");
                use md5::Digest;
                Some(hex::encode(md5::Md5::digest(colons.as_bytes())))
            }
            Source::Nothing => None,
        }
    }
}

fn source_of(name: &str) -> Option<Source> {
    MACROS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, s)| *s)
}

/// Fills the MMA macros of a third-party URL of `format` from a hit.
pub fn fill(url: &str, format: Format, hit: &HitValues) -> String {
    let mut out = String::with_capacity(url.len() + 64);
    let mut rest = url;
    while let Some(at) = rest.find("__") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        // The macro name: identifier characters up to the next `__`.
        let ident_len = after
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
            .count();
        let ident = &after[..ident_len];
        let Some(end) = ident.find("__").filter(|e| *e > 0) else {
            out.push_str("__");
            rest = after;
            continue;
        };
        let name = &ident[..end];
        let literal = &rest[at..at + 2 + end + 2];
        match source_of(name) {
            Some(source) => match hit.value(source, format) {
                Some(v) => out.push_str(&encode_component(&v)),
                None if format == Format::AdMaster => out.push_str(literal),
                None => {}
            },
            None => out.push_str(literal),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(pairs: &[(&'static str, &str)]) -> HitValues {
        HitValues::from_row(
            pairs
                .iter()
                .map(|(c, v)| (*c, Some((*v).to_string())))
                .collect(),
        )
    }

    fn android() -> HitValues {
        hit(&[
            ("event_time", "2024-06-10T06:13:20.123000Z"),
            ("received_at", "2024-06-10T06:13:21.000000Z"),
            ("os", "android"),
            ("imei_md5", "0b1f5c17d4d1484f7f8b9349d542a75b"),
            ("oaid", "6e3f1c2a-8b4d-4c3e-9f10-2a7b5c8d9e01"),
            ("user_ip", "203.0.113.45"),
            ("user_agent", "Mozilla/5.0 (Linux; Android 12, K)"),
            ("mac", "aa:bb:cc:dd:ee:ff"),
            ("mac_md5", "f0c0e3bd1ea0e5a8bd2e2b7e4b0c0f00"),
        ])
    }

    #[test]
    fn miaozhen_macros_are_filled_encoded_and_unknown_ones_emptied() {
        let url = "https://e.cn.miaozhen.com/r/k=2185278&p=7jFd3&mo=__OS__&ns=__IP__&m2=__IMEI__\
                   &m5=__IDFA__&m11=__OAID__&m6=__MAC1__&ts=__TS__&ua=__UA__&x=__THEIRS__&o=";
        let filled = fill(url, Format::Miaozhen, &android());
        let mac1 = {
            use md5::Digest;
            hex::encode(md5::Md5::digest(b"AA:BB:CC:DD:EE:FF"))
        };
        assert_eq!(
            filled,
            format!(
                "https://e.cn.miaozhen.com/r/k=2185278&p=7jFd3&mo=0&ns=203.0.113.45\
                 &m2=0b1f5c17d4d1484f7f8b9349d542a75b&m5=&m11=6e3f1c2a-8b4d-4c3e-9f10-2a7b5c8d9e01\
                 &m6={mac1}&ts=1718000000123\
                 &ua=Mozilla%2F5.0%20%28Linux%3B%20Android%2012%2C%20K%29&x=__THEIRS__&o="
            )
        );
    }

    #[test]
    fn admaster_keeps_unknown_macros_literal_and_sends_seconds() {
        let url = "http://c.admaster.com.cn/c/a1,b2,0a__OS__,0c__IMEI__,0d__AndroidID__,z__IDFA__,f__IP__,t__TS__,h";
        assert_eq!(
            fill(url, Format::AdMaster, &android()),
            "http://c.admaster.com.cn/c/a1,b2,0a0,0c0b1f5c17d4d1484f7f8b9349d542a75b,0d__AndroidID__,\
             z__IDFA__,f203.0.113.45,t1718000000,h"
        );
    }

    #[test]
    fn os_comes_from_the_media_value_else_the_user_agent() {
        assert_eq!(hit(&[("os", "1")]).os_mma(), Some("1"));
        assert_eq!(hit(&[("os", "iOS")]).os_mma(), Some("1"));
        assert_eq!(
            hit(&[("user_agent", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0)")]).os_mma(),
            Some("1")
        );
        assert_eq!(hit(&[("os", "weird")]).os_mma(), None);
    }

    #[test]
    fn hostile_values_cannot_add_parameters_and_odd_underscores_survive() {
        let evil = hit(&[("idfa", "x&o=https://evil.example/#\r\n,uhttp://evil")]);
        let filled = fill(
            "https://t.example/r/k=1&m5=__IDFA__&o=",
            Format::Miaozhen,
            &evil,
        );
        assert_eq!(
            filled,
            "https://t.example/r/k=1&m5=x%26o%3Dhttps%3A%2F%2Fevil.example%2F%23%0D%0A%2Cuhttp%3A%2F%2Fevil&o="
        );
        for odd in ["a__b", "__", "____", "x___IP___y", "__ IP__", "__IP"] {
            let out = fill(odd, Format::Other, &hit(&[("user_ip", "1.2.3.4")]));
            assert!(!out.is_empty() || odd.is_empty(), "{odd}");
        }
        // Ambiguous underscores are not a macro: left as written.
        assert_eq!(
            fill("x___IP___y", Format::Other, &hit(&[("user_ip", "1.2.3.4")])),
            "x___IP___y"
        );
        assert_eq!(
            fill("a__IP__b", Format::Other, &hit(&[("user_ip", "1.2.3.4")])),
            "a1.2.3.4b"
        );
    }
}
