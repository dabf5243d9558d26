//! From a journal record to an `ad_events` row: the query decoded once, each parameter mapped to
//! its canonical field by the media's link template, values normalized, the user's IP and user
//! agent chosen, the event time decided, and the row enriched (`crate::enrich`: user agent, IP
//! geo, bot and test flags). Pure: the same record always gives the same row, so a replayed
//! batch writes the same files.

use chrono::{DateTime, Utc};

use crate::collect::fields::CanonicalField;
use crate::collect::hit::HitRecord;
use crate::collect::link::Endpoint;
use crate::collect::links::{Answer, answer_for, protocol_of};
use crate::collect::normalize::{CanonicalValues, Dropped, is_macro, is_non_public, parse_ip};
use crate::collect::query::{decode_query, decode_tokens, split_trailing};
use crate::collect::registry::{LinkKind, MediaRegistry};
use crate::enrich::{Enricher, HitFacts};

/// How far the media's own timestamp may be from the receive time and still be the event time.
const PLAUSIBLE_MS: i64 = 24 * 3600 * 1000;

/// One decoded row: column name → text value (null when absent), in a stable column order.
pub type Row = Vec<(&'static str, Option<String>)>;

/// The columns every row has, before the canonical fields.
pub const BASE_COLUMNS: [&str; 20] = [
    "event_id",
    "received_at",
    "event_time",
    "event_time_from_media",
    "endpoint",
    "workspace",
    "activity_id",
    "link_id",
    "channel",
    "activity_status",
    "method",
    "server_to_server",
    "user_ip",
    "user_ip_public",
    "user_agent",
    "peer_ip",
    "header_user_agent",
    "landing",
    "unknown_fields",
    "raw_query",
];

fn is_ios(params: &[(String, String)], os_params: &[&str]) -> bool {
    params
        .iter()
        .filter(|(k, _)| os_params.contains(&k.as_str()))
        .any(|(_, v)| {
            let v = v.trim().to_ascii_lowercase();
            v == "1" || v.contains("ios") || v.contains("iphone")
        })
}

/// Decodes one journal record. Errors are record-level (not JSON, wrong version) and send the
/// record to quarantine with the reason. The row's columns are [`BASE_COLUMNS`], the canonical
/// fields, then [`crate::enrich::COLUMNS`].
pub fn decode(record: &[u8], registry: &MediaRegistry, enricher: &Enricher) -> Result<Row, String> {
    let hit: HitRecord =
        serde_json::from_slice(record).map_err(|e| format!("not a hit record: {e}"))?;
    if hit.v != crate::collect::hit::RECORD_VERSION {
        return Err(format!("hit record version {} is not supported", hit.v));
    }
    let protocol = protocol_of(registry, &hit.channel, hit.template.as_deref());
    let kind = if hit.endpoint == Endpoint::Impression {
        LinkKind::Impression
    } else {
        LinkKind::Click
    };
    // The answer the media expects tells who calls: a body means its server does.
    let answer = answer_for(
        registry,
        &hit.channel,
        hit.template.as_deref(),
        hit.endpoint,
    );
    let server_to_server = matches!(answer, Answer::Body { .. });

    // A landing parameter (Miaozhen `o=`, AdMaster `,u`) runs to the end of the query, unsplit.
    let separator = protocol.map_or("&", |p| p.separator.as_str());
    let equalizer = protocol.map_or("=", |p| p.equalizer.as_str());
    let landing_param = protocol.and_then(|p| p.landing_param.as_deref());
    let (query, landing) = match landing_param {
        Some(name) => split_trailing(&hit.query, separator, equalizer, name),
        None => (hit.query.as_str(), None),
    };
    let (decoded, _issues) = match protocol {
        // AdMaster-style `<code><value>` tokens: codes are the template's parameter names.
        Some(p) if p.equalizer.is_empty() => {
            let codes: Vec<&str> = p.param_fields(kind).map(|(name, _, _)| name).collect();
            decode_tokens(query, separator, &codes)
        }
        _ => decode_query(query),
    };
    let params: Vec<(String, String)> = decoded
        .into_iter()
        .map(|p| (p.name.into_owned(), p.value.into_owned()))
        .collect();
    let os_params: Vec<&str> = protocol
        .map(|p| {
            p.param_fields(kind)
                .filter(|(_, f, _)| *f == CanonicalField::Os)
                .map(|(n, _, _)| n)
                .collect()
        })
        .unwrap_or_default();
    let ios = is_ios(&params, &os_params);
    let mut values = CanonicalValues::default();
    for (name, value) in &params {
        if let Some(field) = protocol.and_then(|p| p.field_for_param_on(kind, name, ios)) {
            values.insert(field, value);
        }
    }

    // The user's address and agent: the media's parameters; on device calls also the caller.
    let first_forwarded = hit
        .forwarded_for
        .as_deref()
        .and_then(|f| f.split(',').next())
        .map(str::trim);
    let user_ip = values
        .get(CanonicalField::Ip)
        .or(values.get(CanonicalField::Ipv6))
        .map(str::to_string)
        .or_else(|| {
            (!server_to_server)
                .then(|| {
                    first_forwarded
                        .and_then(parse_ip)
                        .or_else(|| parse_ip(&hit.peer_ip))
                })
                .flatten()
                .map(|ip| ip.to_string())
        });
    let user_ip_parsed = user_ip.as_deref().and_then(parse_ip);
    let user_ip_public = user_ip_parsed.map(|ip| !is_non_public(ip));
    let user_agent = values
        .get(CanonicalField::Ua)
        .map(str::to_string)
        .or_else(|| {
            (!server_to_server)
                .then(|| hit.user_agent.clone())
                .flatten()
        });

    let received = DateTime::parse_from_rfc3339(&hit.received_at)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("received_at {:?}: {e}", hit.received_at))?;
    let media_ms = values
        .get(CanonicalField::Ts)
        .and_then(|v| v.parse::<i64>().ok());
    let (event_time, from_media) = match media_ms.and_then(DateTime::<Utc>::from_timestamp_millis) {
        Some(t) if (t.timestamp_millis() - received.timestamp_millis()).abs() <= PLAUSIBLE_MS => {
            (t, true)
        }
        _ => (received, false),
    };
    let unknown: Vec<&str> = values
        .dropped
        .iter()
        .filter(|(_, why)| **why == Dropped::Unknown)
        .map(|(f, _)| f.as_str())
        .collect();
    // A template probe: parameters arrived, and every one is an unreplaced macro.
    let template_probe = !values.raw.is_empty() && values.raw.values().all(|v| is_macro(v.trim()));
    let enriched = enricher.enrich(&HitFacts {
        user_agent: user_agent.as_deref(),
        public_ip: user_ip_parsed.filter(|_| user_ip_public == Some(true)),
        server_to_server,
        click_id: values.raw.get(&CanonicalField::ClickId).map(String::as_str),
        callback: values
            .raw
            .get(&CanonicalField::Callback)
            .map(String::as_str),
        template_probe,
    });
    let iso = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let endpoint = match hit.endpoint {
        Endpoint::Impression => "impression",
        Endpoint::Click => "click",
        Endpoint::Feedback => "feedback",
    };
    let mut row: Row = vec![
        ("event_id", Some(hit.event_id.clone())),
        ("received_at", Some(iso(received))),
        ("event_time", Some(iso(event_time))),
        ("event_time_from_media", Some(from_media.to_string())),
        ("endpoint", Some(endpoint.to_string())),
        ("workspace", Some(hit.workspace.clone())),
        ("activity_id", Some(hit.activity_id.to_string())),
        ("link_id", Some(hit.link_id.to_string())),
        ("channel", Some(hit.channel.clone())),
        ("activity_status", Some(hit.activity_status.clone())),
        ("method", Some(hit.method.clone())),
        ("server_to_server", Some(server_to_server.to_string())),
        ("user_ip", user_ip),
        ("user_ip_public", user_ip_public.map(|b| b.to_string())),
        ("user_agent", user_agent),
        ("peer_ip", Some(hit.peer_ip.clone())),
        ("header_user_agent", hit.user_agent.clone()),
        ("landing", landing.map(str::to_string)),
        (
            "unknown_fields",
            (!unknown.is_empty()).then(|| unknown.join(",")),
        ),
        ("raw_query", Some(hit.query.clone())),
    ];
    for field in CanonicalField::ALL {
        row.push((field.as_str(), values.get(field).map(str::to_string)));
    }
    row.extend(enriched);
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enricher() -> &'static Enricher {
        static ENRICHER: std::sync::OnceLock<Enricher> = std::sync::OnceLock::new();
        ENRICHER.get_or_init(|| Enricher::without_geo().unwrap_or_else(|e| panic!("{e}")))
    }

    fn registry() -> MediaRegistry {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/media.yaml");
        MediaRegistry::load(&path).unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn record(channel: &str, endpoint: Endpoint, query: &str) -> Vec<u8> {
        let hit = HitRecord {
            v: 1,
            event_id: "0190f0c0-0000-7000-8000-000000000001".into(),
            received_at: "2024-06-10T06:13:20.500000Z".into(),
            endpoint,
            link_id: 7,
            activity_id: 3,
            workspace: "ws".into(),
            channel: channel.into(),
            template: None,
            activity_status: "on".into(),
            method: "GET".into(),
            query: query.into(),
            peer_ip: "198.51.100.250".into(),
            user_agent: Some("MediaServer/1.0".into()),
            forwarded_for: None,
        };
        serde_json::to_vec(&hit).unwrap_or_default()
    }

    fn get<'a>(row: &'a Row, column: &str) -> Option<&'a str> {
        row.iter()
            .find(|(c, _)| *c == column)
            .and_then(|(_, v)| v.as_deref())
    }

    #[test]
    fn an_ocean_engine_server_call_keeps_the_users_fields_not_the_callers() {
        // Example 1 of spec/media-protocols.md §7 (shortened).
        let q = "aid=1780012345678901&cid=1780012345679999&csite=40001&imei=0b1f5c17d4d1484f7f8b9349d542a75b\
                 &os=0&ip=203.0.113.45&ua=Mozilla%2F5.0%20%28Linux%3B%20Android%2012%29&ts=1718000000123\
                 &callback=EJiw267wvfQCGKf2g74ZIPD89-vIATAMOAFCIjIwMTkxMTI3MTQxMTEzMDEwMDI2MDc3MjE1MTUwNTczNTBIAQ%3D%3D";
        let row = decode(
            &record("ocean_engine", Endpoint::Click, q),
            &registry(),
            enricher(),
        )
        .unwrap_or_default();
        assert_eq!(get(&row, "server_to_server"), Some("true"));
        assert_eq!(get(&row, "user_ip"), Some("203.0.113.45"));
        assert_eq!(
            get(&row, "user_agent"),
            Some("Mozilla/5.0 (Linux; Android 12)")
        );
        assert_eq!(get(&row, "header_user_agent"), Some("MediaServer/1.0"));
        assert_eq!(
            get(&row, "imei_md5"),
            Some("0b1f5c17d4d1484f7f8b9349d542a75b")
        );
        assert_eq!(get(&row, "ad_slot"), Some("40001"));
        assert_eq!(get(&row, "ts"), Some("1718000000123"));
        assert!(get(&row, "callback").is_some_and(|c| c.ends_with("NTBIAQ==")));
        // 1718000000123 ms is within a day of the receive time: it is the event time.
        assert_eq!(get(&row, "event_time"), Some("2024-06-10T06:13:20.123000Z"));
        assert_eq!(get(&row, "event_time_from_media"), Some("true"));
    }

    #[test]
    fn unreplaced_macros_are_null_and_listed() {
        let q = "aid=1&cid=2&imei=__IMEI__&oaid=__OAID__&os=0&ip=203.0.113.9&ts=1718000002789&callback=__CALLBACK_PARAM__";
        let row = decode(
            &record("ocean_engine", Endpoint::Click, q),
            &registry(),
            enricher(),
        )
        .unwrap_or_default();
        assert_eq!(get(&row, "imei_md5"), None);
        assert_eq!(get(&row, "callback"), None);
        let unknown = get(&row, "unknown_fields").unwrap_or_default();
        assert!(
            unknown.contains("imei_md5") && unknown.contains("callback"),
            "{unknown}"
        );
    }

    #[test]
    fn an_implausible_media_time_falls_back_to_the_receive_time() {
        let row = decode(
            &record("ocean_engine", Endpoint::Click, "ts=1500000000000&os=0"),
            &registry(),
            enricher(),
        )
        .unwrap_or_default();
        assert_eq!(get(&row, "event_time"), get(&row, "received_at"));
        assert_eq!(get(&row, "event_time_from_media"), Some("false"));
    }

    #[test]
    fn a_device_call_without_ip_parameters_uses_the_caller() {
        let row = decode(
            &record("huawei", Endpoint::Impression, "oaid=__OAID__"),
            &registry(),
            enricher(),
        )
        .unwrap_or_default();
        assert_eq!(get(&row, "server_to_server"), Some("false"));
        assert_eq!(get(&row, "user_ip"), Some("198.51.100.250"));
        assert_eq!(
            get(&row, "user_ip_public"),
            Some("false"),
            "documentation range is not public"
        );
        assert_eq!(get(&row, "user_agent"), Some("MediaServer/1.0"));
    }

    #[test]
    fn rows_carry_the_enrichment_columns_last() {
        let q = "aid=1&cid=2&os=0&ip=203.0.113.9&ua=Mozilla%2F5.0%20%28Linux%3B%20Android%2012%3B%20V2055A%20Build%2FSP1A.210812.003%3B%20wv%29";
        let row = decode(
            &record("ocean_engine", Endpoint::Click, q),
            &registry(),
            enricher(),
        )
        .unwrap_or_default();
        let names: Vec<&str> = row[row.len() - crate::enrich::COLUMNS.len()..]
            .iter()
            .map(|(c, _)| *c)
            .collect();
        assert_eq!(names, crate::enrich::COLUMNS);
        assert_eq!(get(&row, "ua_os"), Some("Android"));
        assert_eq!(get(&row, "ua_os_version"), Some("12"));
        assert_eq!(get(&row, "ua_device_model"), Some("V2055A"));
        assert_eq!(get(&row, "is_bot"), Some("false"));
        assert_eq!(get(&row, "traffic_flags"), None);
    }

    #[test]
    fn a_template_probe_and_a_joint_test_are_flagged() {
        let probe = "advertiser_id=__USER_ID__&cid=__IDEA_ID__&campaign_id=__PLAN_ID__&aid=__UNIT_ID__&imei=__IMEI__&ts=__TS__&callType=v2";
        let row = decode(
            &record("baidu", Endpoint::Click, probe),
            &registry(),
            enricher(),
        )
        .unwrap_or_default();
        assert_eq!(get(&row, "is_test"), Some("true"));
        assert!(get(&row, "traffic_flags").is_some_and(|f| f.contains("template_probe")));
        let real = "aid=1&cid=__CID__&os=0&ip=203.0.113.9";
        let row = decode(
            &record("ocean_engine", Endpoint::Click, real),
            &registry(),
            enricher(),
        )
        .unwrap_or_default();
        assert_eq!(get(&row, "is_test"), Some("false"));
    }

    #[test]
    fn a_record_that_is_not_a_hit_is_an_error() {
        assert!(
            decode(b"{\"v\":1}", &registry(), enricher())
                .is_err_and(|e| e.starts_with("not a hit record"))
        );
    }
}
