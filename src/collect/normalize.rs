//! Normalizing canonical field values (`spec/media-protocols.md` §6.2–6.3, DESIGN.md
//! conventions): unknown markers become null, device IDs are normalized and hashed, timestamps
//! get a unit. The raw value as sent is always kept beside the canonical one.

use std::collections::BTreeMap;
use std::net::IpAddr;

use md5::{Digest, Md5};

use crate::collect::fields::CanonicalField;

/// MD5 digests of junk inputs that some media hash before checking (§6.3).
const JUNK_MD5: [&str; 5] = [
    "d41d8cd98f00b204e9800998ecf8427e", // ""
    "9f89c84a559f573636a47ff8daed0d33", // 00000000-0000-0000-0000-000000000000
    "cfcd208495d565ef66e7dff9f98764da", // 0
    "37a6259cc0c1dae299a7866489dff0bd", // null
    "0f607264fc6318a92b9e13c65db7cd3c", // 02:00:00:00:00:00
];

const UNKNOWN_WORDS: [&str; 5] = ["null", "undefined", "unknown", "none", "nil"];

/// Whether a value is an unreplaced macro in any of the four syntaxes: `__X__` (any letter
/// case), `{{X}}`, `{x}`, `$x$`.
pub fn is_macro(value: &str) -> bool {
    let ident =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if let Some(inner) = value.strip_prefix("__").and_then(|v| v.strip_suffix("__")) {
        return ident(inner);
    }
    if let Some(inner) = value.strip_prefix("{{").and_then(|v| v.strip_suffix("}}")) {
        return ident(inner);
    }
    if let Some(inner) = value.strip_prefix('{').and_then(|v| v.strip_suffix('}')) {
        return ident(inner);
    }
    if let Some(inner) = value.strip_prefix('$').and_then(|v| v.strip_suffix('$')) {
        return ident(inner);
    }
    false
}

/// Whether a value means "unknown" for `field`: empty, an unreplaced macro, a null word, and for
/// ID fields also `0`, `-1`, all-zero IDs, the placeholder MAC and MD5s of junk.
pub fn is_unknown(field: CanonicalField, value: &str) -> bool {
    let v = value.trim();
    if v.is_empty() || is_macro(v) || UNKNOWN_WORDS.iter().any(|w| v.eq_ignore_ascii_case(w)) {
        return true;
    }
    if !field.is_id() {
        return false;
    }
    let all_zero =
        v.bytes().any(|b| b == b'0') && v.bytes().all(|b| matches!(b, b'0' | b'-' | b':'));
    all_zero
        || v == "-1"
        || v.eq_ignore_ascii_case("02:00:00:00:00:00")
        || v == "020000000000"
        || JUNK_MD5.iter().any(|j| v.eq_ignore_ascii_case(j))
}

fn md5_hex(input: &str) -> String {
    hex::encode(Md5::digest(input.as_bytes()))
}

fn is_md5(value: &str) -> bool {
    value.len() == 32 && value.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The raw field a hash field's raw input belongs to, and the hash field of a raw field.
fn hash_pair(field: CanonicalField) -> Option<(CanonicalField, CanonicalField)> {
    use CanonicalField as F;
    Some(match field {
        F::Imei | F::ImeiMd5 => (F::Imei, F::ImeiMd5),
        F::Idfa | F::IdfaMd5 => (F::Idfa, F::IdfaMd5),
        F::Oaid | F::OaidMd5 => (F::Oaid, F::OaidMd5),
        F::AndroidId | F::AndroidIdMd5 => (F::AndroidId, F::AndroidIdMd5),
        F::Mac | F::MacMd5 => (F::Mac, F::MacMd5),
        _ => return None,
    })
}

/// How a raw device ID is written before hashing: IMEI digits only, MAC upper case without
/// separators, IDFA/OAID/Android ID as sent (trimmed).
fn canonical_raw(field: CanonicalField, value: &str) -> Option<String> {
    let v = value.trim();
    match field {
        CanonicalField::Imei => {
            let digits: String = v.chars().filter(char::is_ascii_digit).collect();
            (!digits.is_empty()).then_some(digits)
        }
        CanonicalField::Mac => {
            let hex: String = v
                .chars()
                .filter(|c| c.is_ascii_hexdigit())
                .map(|c| c.to_ascii_uppercase())
                .collect();
            (hex.len() == 12).then_some(hex)
        }
        _ => Some(v.to_string()),
    }
}

/// Why a value was dropped (kept raw, canonical null).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    Unknown,
    Unparseable,
}

/// The canonical values of one hit, and the raw values as sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CanonicalValues {
    /// Canonical values (absent = null).
    pub values: BTreeMap<CanonicalField, String>,
    /// Every value as it arrived (decoded once), for audit.
    pub raw: BTreeMap<CanonicalField, String>,
    /// Values that arrived but were dropped, and why.
    pub dropped: BTreeMap<CanonicalField, Dropped>,
}

impl CanonicalValues {
    pub fn get(&self, field: CanonicalField) -> Option<&str> {
        self.values.get(&field).map(String::as_str)
    }

    /// Adds a value as it arrived. The first value of a field wins (duplicates are ignored).
    pub fn insert(&mut self, field: CanonicalField, value: &str) {
        if self.raw.contains_key(&field) {
            return;
        }
        self.raw.insert(field, value.to_string());
        if is_unknown(field, value) {
            self.dropped.insert(field, Dropped::Unknown);
            return;
        }
        let v = value.trim();
        match field {
            CanonicalField::Ts => match ts_millis(v) {
                Some(ms) => {
                    self.values.insert(field, ms.to_string());
                }
                None => {
                    self.dropped.insert(field, Dropped::Unparseable);
                }
            },
            CanonicalField::Ip | CanonicalField::Ipv6 => match parse_ip(v) {
                Some(ip) => {
                    self.values.insert(field, ip.to_string());
                }
                None => {
                    self.dropped.insert(field, Dropped::Unparseable);
                }
            },
            // The callback is stored decoded once and verbatim: never trimmed or re-encoded.
            CanonicalField::Callback => {
                self.values.insert(field, value.to_string());
            }
            _ => match hash_pair(field) {
                Some(pair) => self.insert_device_id(field, pair, v),
                None => {
                    self.values.insert(field, v.to_string());
                }
            },
        }
    }

    /// A 32-hex value is taken as the MD5 already (lower-cased); anything else is a raw ID,
    /// normalized and hashed into the MD5 field.
    fn insert_device_id(
        &mut self,
        field: CanonicalField,
        (raw_field, md5_field): (CanonicalField, CanonicalField),
        v: &str,
    ) {
        if is_md5(v) {
            self.values
                .entry(md5_field)
                .or_insert_with(|| v.to_ascii_lowercase());
            return;
        }
        match canonical_raw(raw_field, v) {
            Some(raw) => {
                self.values
                    .entry(md5_field)
                    .or_insert_with(|| md5_hex(&raw));
                self.values.entry(raw_field).or_insert(raw);
            }
            None => {
                self.dropped.insert(field, Dropped::Unparseable);
            }
        }
    }
}

/// 10 digits are seconds, 13 milliseconds; anything else is not a timestamp.
pub fn ts_millis(v: &str) -> Option<i64> {
    if !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match v.len() {
        10 => v.parse::<i64>().ok().map(|s| s * 1000),
        13 => v.parse::<i64>().ok(),
        _ => None,
    }
}

/// An IPv4 or IPv6 address, brackets allowed.
pub fn parse_ip(v: &str) -> Option<IpAddr> {
    v.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

/// Whether an address is private, loopback, link-local or otherwise not geo-locatable.
pub fn is_non_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64 // 100.64.0.0/10 CGNAT
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00 // unique local
                || (v6.segments()[0] & 0xffc0) == 0xfe80 // link local
                || (v6.segments()[0] == 0x2001 && v6.segments()[1] == 0x0db8) // documentation
                || v6.to_ipv4_mapped().is_some_and(|v4| is_non_public(IpAddr::V4(v4)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CanonicalField as F;

    #[test]
    fn unknown_markers_in_every_syntax_become_null_with_the_raw_kept() {
        for v in [
            "",
            "__IDFA__",
            "__idfa__",
            "{{IMEI}}",
            "{imei_MD5}",
            "$im$",
            "NULL",
            "null",
            "undefined",
        ] {
            let mut c = CanonicalValues::default();
            c.insert(F::Idfa, v);
            assert_eq!(c.get(F::Idfa), None, "{v:?}");
            assert_eq!(c.raw.get(&F::Idfa).map(String::as_str), Some(v));
            assert_eq!(c.dropped.get(&F::Idfa), Some(&Dropped::Unknown));
        }
    }

    #[test]
    fn the_zero_rule_applies_to_id_fields_only() {
        let mut c = CanonicalValues::default();
        c.insert(F::Idfa, "00000000-0000-0000-0000-000000000000");
        c.insert(F::Oaid, &"0".repeat(64));
        c.insert(F::Mac, "02:00:00:00:00:00");
        c.insert(F::ImeiMd5, "CFCD208495D565EF66E7DFF9F98764DA");
        c.insert(F::Os, "0");
        assert_eq!(c.values.len(), 1, "{:?}", c.values);
        assert_eq!(c.get(F::Os), Some("0"), "os=0 is Android, not unknown");
    }

    #[test]
    fn md5_values_are_lower_cased_and_raw_ids_hashed() {
        let mut c = CanonicalValues::default();
        c.insert(F::ImeiMd5, "0F607264FC6318A92B9E13C65DB7CD3D");
        c.insert(F::Mac, "aa:bb:cc:dd:ee:ff");
        c.insert(F::Idfa, "6D92078A-8246-4BA4-AE5B-76104861E7DC");
        c.insert(F::AndroidIdMd5, "9774d56d682e549c"); // raw Android ID in an MD5 parameter
        assert_eq!(c.get(F::ImeiMd5), Some("0f607264fc6318a92b9e13c65db7cd3d"));
        assert_eq!(c.get(F::Mac), Some("AABBCCDDEEFF"));
        assert_eq!(c.get(F::MacMd5), Some(md5_hex("AABBCCDDEEFF").as_str()));
        assert_eq!(
            c.get(F::IdfaMd5),
            Some(md5_hex("6D92078A-8246-4BA4-AE5B-76104861E7DC").as_str())
        );
        assert_eq!(c.get(F::AndroidId), Some("9774d56d682e549c"));
        assert_eq!(
            c.get(F::AndroidIdMd5),
            Some(md5_hex("9774d56d682e549c").as_str())
        );
    }

    #[test]
    fn imei_keeps_digits_and_hashes_them() {
        let mut c = CanonicalValues::default();
        c.insert(F::Imei, " 86-1234567890123 ");
        assert_eq!(c.get(F::Imei), Some("861234567890123"));
        assert_eq!(c.get(F::ImeiMd5), Some(md5_hex("861234567890123").as_str()));
    }

    #[test]
    fn timestamps_have_ten_or_thirteen_digits() {
        assert_eq!(ts_millis("1700000000"), Some(1_700_000_000_000));
        assert_eq!(ts_millis("1700000000123"), Some(1_700_000_000_123));
        for bad in ["0", "1700000000123456", "17000000001", "abc", ""] {
            assert_eq!(ts_millis(bad), None, "{bad}");
        }
        let mut c = CanonicalValues::default();
        c.insert(F::Ts, "0");
        assert_eq!(c.dropped.get(&F::Ts), Some(&Dropped::Unparseable));
    }

    #[test]
    fn ips_parse_with_brackets_and_private_ranges_are_flagged() {
        assert_eq!(
            parse_ip("[2001:db8::1]").map(|i| i.to_string()).as_deref(),
            Some("2001:db8::1")
        );
        assert_eq!(parse_ip("1.2.3.4x"), None);
        for private in [
            "10.1.2.3",
            "192.168.1.1",
            "127.0.0.1",
            "100.64.0.1",
            "fe80::1",
            "fd00::1",
            "::ffff:10.0.0.1",
            "2001:db8::1",
        ] {
            assert!(parse_ip(private).is_some_and(is_non_public), "{private}");
        }
        assert!(!parse_ip("114.114.114.114").is_some_and(is_non_public));
    }

    #[test]
    fn the_first_value_of_a_field_wins_and_callbacks_stay_verbatim() {
        let mut c = CanonicalValues::default();
        c.insert(F::Callback, " https://ad.oceanengine.com/track?cb=a%2Bb ");
        c.insert(F::Callback, "second");
        assert_eq!(
            c.get(F::Callback),
            Some(" https://ad.oceanengine.com/track?cb=a%2Bb ")
        );
    }
}
