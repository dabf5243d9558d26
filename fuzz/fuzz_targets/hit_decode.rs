//! Fuzzes the `ad_events` decoder: a journal record with an arbitrary query, channel, endpoint,
//! receive time and `X-Forwarded-For`, decoded with the shipped registry and enriched. A
//! well-formed record must always decode (`Ok`); a record with an arbitrary `received_at` may be
//! refused, but nothing may panic.
//!
//! Input layout: byte 0 picks the channel (or, past the known list, takes an arbitrary one from
//! the input), byte 1 the endpoint and whether `received_at` is well-formed, bytes 2..10 the
//! receive time, and the rest the query (lossy UTF-8), split at the first 0xFF 0x00 into
//! channel / forwarded-for / query parts when needed.

#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use backflow::collect::decode::decode;
use backflow::collect::hit::{HitRecord, RECORD_VERSION};
use backflow::collect::link::Endpoint;
use backflow::collect::registry::MediaRegistry;
use backflow::enrich::Enricher;
use chrono::{DateTime, SecondsFormat};
use libfuzzer_sys::fuzz_target;

const CHANNELS: [&str; 12] = [
    "ocean_engine",
    "tencent_ads",
    "kuaishou",
    "baidu",
    "weibo",
    "zhihu",
    "oppo",
    "huawei",
    "bilibili",
    "iqiyi",
    "vivo",
    "huichuan",
];

fn registry() -> &'static MediaRegistry {
    static REGISTRY: OnceLock<MediaRegistry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/media.yaml");
        match MediaRegistry::load(&path) {
            Ok(registry) => registry,
            Err(errors) => panic!("schemas/media.yaml: {errors:?}"),
        }
    })
}

/// The enricher without a geo database (user agents, tiers and flags are still exercised).
fn enricher() -> &'static Enricher {
    static ENRICHER: OnceLock<Enricher> = OnceLock::new();
    ENRICHER.get_or_init(|| match Enricher::without_geo() {
        Ok(enricher) => enricher,
        Err(e) => panic!("enricher: {e}"),
    })
}

/// Splits at the first `0xFF 0x00` marker (bytes that never occur in UTF-8).
fn split_marker(data: &[u8]) -> (&[u8], Option<&[u8]>) {
    match data.windows(2).position(|w| w == [0xff, 0x00]) {
        Some(at) => (&data[..at], Some(&data[at + 2..])),
        None => (data, None),
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 10 {
        return;
    }
    let (head, rest) = data.split_at(10);
    let mode = head[1];
    let endpoint = match mode % 3 {
        0 => Endpoint::Click,
        1 => Endpoint::Impression,
        _ => Endpoint::Feedback,
    };
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&head[2..10]);
    let ts = i64::from_le_bytes(ts);

    let (channel, rest) = match CHANNELS.get(usize::from(head[0])) {
        Some(channel) => (channel.to_string(), rest),
        None => {
            let (channel, rest) = split_marker(rest);
            (
                String::from_utf8_lossy(channel).into_owned(),
                rest.unwrap_or_default(),
            )
        }
    };
    let (query, forwarded_for) = match split_marker(rest) {
        (query, Some(forwarded)) => (query, Some(String::from_utf8_lossy(forwarded).into_owned())),
        (query, None) => (query, None),
    };
    let well_formed = mode & 0x80 == 0;
    let received_at = if well_formed {
        // Any millisecond from 1970 to 9999: RFC 3339 has four-digit years, and the collector
        // stamps the current time.
        let Some(t) = DateTime::from_timestamp_millis(ts.rem_euclid(253_402_300_800_000)) else {
            return;
        };
        t.to_rfc3339_opts(SecondsFormat::Micros, true)
    } else {
        String::from_utf8_lossy(&ts.to_le_bytes()).into_owned()
    };

    let hit = HitRecord {
        v: RECORD_VERSION,
        event_id: "0190f0c0-0000-7000-8000-000000000001".into(),
        received_at,
        endpoint,
        link_id: 1,
        activity_id: 1,
        workspace: "fuzz".into(),
        channel,
        template: None,
        activity_status: "on".into(),
        method: "GET".into(),
        query: String::from_utf8_lossy(query).into_owned(),
        peer_ip: "198.51.100.250".into(),
        user_agent: Some("MediaServer/1.0".into()),
        forwarded_for,
    };
    let Ok(record) = serde_json::to_vec(&hit) else {
        return;
    };
    let result = decode(&record, registry(), enricher());
    if well_formed {
        if let Err(e) = result {
            panic!("a well-formed record was refused: {e} ({hit:?})");
        }
    }
});
