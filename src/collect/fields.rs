//! Canonical hit fields: the one vocabulary every media's macros are mapped onto
//! (`spec/media-protocols.md` §6.1). The media registry maps query parameters to these; the hit
//! parser normalizes their values; the `ad_events` schema stores them.

use std::fmt;
use std::str::FromStr;

/// A canonical field of a monitoring-link hit.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum CanonicalField {
    /// IMEI, raw digits as sent (hashed into `imei_md5`).
    Imei,
    /// MD5 of the IMEI, 32 lower-case hex.
    ImeiMd5,
    /// IDFA, raw UUID (upper case).
    Idfa,
    /// MD5 of the IDFA, 32 lower-case hex.
    IdfaMd5,
    /// OAID, raw (UUID or 64 hex).
    Oaid,
    /// MD5 of the OAID.
    OaidMd5,
    /// Android ID, raw (hashed into `android_id_md5`).
    AndroidId,
    /// MD5 of the Android ID.
    AndroidIdMd5,
    /// MAC address, raw (normalized upper case without separators, hashed into `mac_md5`).
    Mac,
    /// MD5 of the normalized MAC.
    MacMd5,
    /// Alibaba AAID.
    Aaid,
    /// China Advertising ID (CAID), as sent.
    Caid,
    /// The user's IP (v4 or v6).
    Ip,
    /// The user's IPv6 when the media sends it separately.
    Ipv6,
    /// The user's user agent.
    Ua,
    /// Operating system as sent (normalized later per template: 0 Android, 1 iOS, …).
    Os,
    /// Operating system version.
    OsVersion,
    /// Device model.
    Model,
    /// The media's event timestamp (seconds or milliseconds as sent).
    Ts,
    /// Conversion callback (URL or parameter), stored decoded once, verbatim.
    Callback,
    /// The media's click id.
    ClickId,
    /// Account / advertiser id.
    AccountId,
    /// Campaign (plan / project) id.
    CampaignId,
    /// Ad group (unit / promotion) id.
    AdgroupId,
    /// Creative (idea) id.
    CreativeId,
    /// Placement / site / ad slot.
    AdSlot,
    /// The media's request or impression id.
    RequestId,
}

impl CanonicalField {
    pub const ALL: [CanonicalField; 27] = [
        CanonicalField::Imei,
        CanonicalField::ImeiMd5,
        CanonicalField::Idfa,
        CanonicalField::IdfaMd5,
        CanonicalField::Oaid,
        CanonicalField::OaidMd5,
        CanonicalField::AndroidId,
        CanonicalField::AndroidIdMd5,
        CanonicalField::Mac,
        CanonicalField::MacMd5,
        CanonicalField::Aaid,
        CanonicalField::Caid,
        CanonicalField::Ip,
        CanonicalField::Ipv6,
        CanonicalField::Ua,
        CanonicalField::Os,
        CanonicalField::OsVersion,
        CanonicalField::Model,
        CanonicalField::Ts,
        CanonicalField::Callback,
        CanonicalField::ClickId,
        CanonicalField::AccountId,
        CanonicalField::CampaignId,
        CanonicalField::AdgroupId,
        CanonicalField::CreativeId,
        CanonicalField::AdSlot,
        CanonicalField::RequestId,
    ];

    /// The snake_case name (as in YAML and Parquet).
    pub fn as_str(self) -> &'static str {
        match self {
            CanonicalField::Imei => "imei",
            CanonicalField::ImeiMd5 => "imei_md5",
            CanonicalField::Idfa => "idfa",
            CanonicalField::IdfaMd5 => "idfa_md5",
            CanonicalField::Oaid => "oaid",
            CanonicalField::OaidMd5 => "oaid_md5",
            CanonicalField::AndroidId => "android_id",
            CanonicalField::AndroidIdMd5 => "android_id_md5",
            CanonicalField::Mac => "mac",
            CanonicalField::MacMd5 => "mac_md5",
            CanonicalField::Aaid => "aaid",
            CanonicalField::Caid => "caid",
            CanonicalField::Ip => "ip",
            CanonicalField::Ipv6 => "ipv6",
            CanonicalField::Ua => "ua",
            CanonicalField::Os => "os",
            CanonicalField::OsVersion => "os_version",
            CanonicalField::Model => "model",
            CanonicalField::Ts => "ts",
            CanonicalField::Callback => "callback",
            CanonicalField::ClickId => "click_id",
            CanonicalField::AccountId => "account_id",
            CanonicalField::CampaignId => "campaign_id",
            CanonicalField::AdgroupId => "adgroup_id",
            CanonicalField::CreativeId => "creative_id",
            CanonicalField::AdSlot => "ad_slot",
            CanonicalField::RequestId => "request_id",
        }
    }

    /// Whether this field holds a device or user identifier (the all-zero rule applies).
    pub fn is_id(self) -> bool {
        matches!(
            self,
            CanonicalField::Imei
                | CanonicalField::ImeiMd5
                | CanonicalField::Idfa
                | CanonicalField::IdfaMd5
                | CanonicalField::Oaid
                | CanonicalField::OaidMd5
                | CanonicalField::AndroidId
                | CanonicalField::AndroidIdMd5
                | CanonicalField::Mac
                | CanonicalField::MacMd5
                | CanonicalField::Aaid
                | CanonicalField::Caid
                | CanonicalField::ClickId
                | CanonicalField::AccountId
                | CanonicalField::CampaignId
                | CanonicalField::AdgroupId
                | CanonicalField::CreativeId
                | CanonicalField::RequestId
        )
    }
}

impl fmt::Display for CanonicalField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CanonicalField {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CanonicalField::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = CanonicalField::ALL.iter().map(|f| f.as_str()).collect();
                format!(
                    "unknown canonical field `{s}`, expected one of {}",
                    names.join(", ")
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_str_and_serde() {
        for field in CanonicalField::ALL {
            assert_eq!(field.as_str().parse::<CanonicalField>(), Ok(field));
            assert_eq!(
                serde_json::to_value(field).ok(),
                Some(serde_json::json!(field.as_str()))
            );
        }
        assert!(!CanonicalField::Os.is_id());
        assert!(CanonicalField::Idfa.is_id());
    }
}
