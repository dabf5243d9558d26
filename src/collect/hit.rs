//! The journal record of one accepted hit: what arrived, exactly, and when. Canonical fields are
//! derived from it later by the `ad_events` pipeline (pure and replayable), so the request path
//! does only what must happen before answering: verify, stamp, append durably.

use serde::{Deserialize, Serialize};

use crate::collect::link::Endpoint;

/// The 43-byte transparent 1×1 GIF answered to impressions.
pub const GIF_1X1: [u8; 43] = [
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// Current record format version.
pub const RECORD_VERSION: u32 = 1;

/// One hit as appended to the journal (one JSON object per record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HitRecord {
    /// Record format version.
    pub v: u32,
    /// UUIDv7, unique per hit.
    pub event_id: String,
    /// Server receive time, RFC 3339 UTC with microseconds.
    pub received_at: String,
    pub endpoint: Endpoint,
    /// The link hit. For `endpoint = feedback` it identifies the Tencent feedback task (each
    /// task owns one link id for life).
    pub link_id: u64,
    /// The monitoring activity; `0` for `endpoint = feedback` (a feedback task is not an
    /// activity, so per-activity counts never pick up feedback hits by accident).
    pub activity_id: i64,
    pub workspace: String,
    /// Media id (registry) of the activity's channel.
    pub channel: String,
    /// The link template (protocol id) when not the media's default; the feedback protocol
    /// (`tencent_feedback`) on feedback hits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Status of the activity (or feedback task) when the hit arrived (`on` or `paused_quota`).
    pub activity_status: String,
    /// `GET` or `HEAD`.
    pub method: String,
    /// The raw query string as received (not decoded).
    pub query: String,
    /// TCP peer address of the caller (a media server on server-to-server calls).
    pub peer_ip: String,
    /// The caller's `User-Agent` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// The `X-Forwarded-For` header as received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarded_for: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gif_is_a_valid_43_byte_gif89a() {
        assert_eq!(GIF_1X1.len(), 43);
        assert_eq!(&GIF_1X1[..6], b"GIF89a");
        assert_eq!(GIF_1X1[42], 0x3b, "trailer");
    }
}
