//! Every link template of the shipped media registry through the real daemon: one activity per
//! (media, protocol), its impression and click links called with every macro replaced by a
//! realistic value, the answer checked against what the media expects, and each hit found in
//! the `ad_events` Parquet exactly once with the values its macros carried (DuckDB counts too).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use backflow::collect::fields::CanonicalField;
use backflow::collect::link::Endpoint;
use backflow::collect::links::{Answer, answer_for};
use backflow::collect::registry::{LinkKind, MediaRegistry, Protocol, TimestampUnit};

use crate::collect::hit;
use crate::serve::{free_port, start_with};
use crate::support::*;

/// The value a macro of `field` is replaced with, and what the `field` column then holds.
fn sample(field: CanonicalField, ts_s: i64, unit: Option<TimestampUnit>) -> (String, String) {
    let same = |v: &str| (v.to_string(), v.to_string());
    match field {
        CanonicalField::Imei => same("861234567890123"),
        // A device's hashed IDs are the MD5s of its raw ones, as a media would send them.
        CanonicalField::ImeiMd5 => same("ee7312e93d57adefe4b880dcf13ab6b5"),
        CanonicalField::IdfaMd5 => same("f2d1311ca5c1ecb214c19a26e9ddbad0"),
        CanonicalField::OaidMd5 => same("aded2e2caff9d1d1b7b2918987b69922"),
        CanonicalField::AndroidIdMd5 => same("6d7e9146fdc6416658b5e148489e7172"),
        CanonicalField::MacMd5 => same("b06efabeb184d3a424cac213ae9fa688"),
        CanonicalField::Idfa => same("6D92078A-8246-4BA4-AE5B-76104861E7DC"),
        CanonicalField::Oaid => same("6e3f1c2a-8b4d-4c3e-9f10-2a7b5c8d9e01"),
        CanonicalField::AndroidId => same("a1b2c3d4e5f60718"),
        CanonicalField::Mac => ("3c:2e:ff:11:22:33".into(), "3C2EFF112233".into()),
        CanonicalField::Aaid => same("1d2c3b4a-aaid-0001"),
        CanonicalField::Caid => same("43e260c0cd69b81073173045939e5947"),
        CanonicalField::Ip => same("203.0.113.45"),
        CanonicalField::Ipv6 => same("2001:db8::45"),
        CanonicalField::Ua => {
            same("Mozilla/5.0 (Linux; Android 12; V2055A Build/SP1A.210812.003; wv)")
        }
        CanonicalField::Os => same("0"),
        CanonicalField::OsVersion => same("12"),
        CanonicalField::Model => same("V2055A"),
        CanonicalField::Ts => {
            let sent = match unit {
                Some(TimestampUnit::Seconds) => ts_s.to_string(),
                _ => (ts_s * 1000).to_string(),
            };
            (sent, (ts_s * 1000).to_string())
        }
        CanonicalField::Callback => same("https://cb.example.com/cb?x=1&y=2"),
        CanonicalField::ClickId => same("click-777"),
        CanonicalField::AccountId => same("1001"),
        CanonicalField::CampaignId => same("2002"),
        CanonicalField::AdgroupId => same("3003"),
        CanonicalField::CreativeId => same("4004"),
        CanonicalField::AdSlot => same("5005"),
        CanonicalField::RequestId => same("req-6006"),
    }
}

/// The link with each of its macros replaced (encoded once, as a media would).
fn fill(
    url: &str,
    protocol: &Protocol,
    kind: LinkKind,
    ts_s: i64,
) -> (String, BTreeMap<&'static str, String>) {
    let mut url = url.to_string();
    let mut expect = BTreeMap::new();
    for m in protocol.macros(kind) {
        let (sent, stored) = sample(m.field, ts_s, protocol.timestamp_unit);
        let encoded: String = url::form_urlencoded::byte_serialize(sent.as_bytes()).collect();
        let needle = format!("{}{}{}", m.param, protocol.equalizer, m.macro_text);
        if url.contains(&needle) {
            url = url.replacen(
                &needle,
                &format!("{}{}{encoded}", m.param, protocol.equalizer),
                1,
            );
            // The first parameter of a field fills it (DESIGN.md "Duplicate parameters").
            expect.entry(m.field.as_str()).or_insert(stored);
        }
    }
    (url, expect)
}

struct Sent {
    what: String,
    activity_id: i64,
    endpoint: &'static str,
    expect: BTreeMap<&'static str, String>,
}

fn every_protocol(registry: &MediaRegistry) -> Vec<(String, Protocol, bool)> {
    let mut out = Vec::new();
    for media in registry.media() {
        for (i, protocol) in media.protocols().enumerate() {
            if !protocol.feedback {
                out.push((media.id.clone(), protocol.clone(), i == 0));
            }
        }
    }
    out
}

#[test]
fn every_media_template_lands_in_ad_events_exactly_once_with_its_macro_values() {
    let registry =
        MediaRegistry::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/media.yaml"))
            .expect("registry");
    let p = Project::new();
    let (public, admin) = (free_port(), free_port());
    let env = [(
        "BACKFLOW__PUBLIC__BASE_URL",
        format!("http://127.0.0.1:{public}"),
    )];
    let protocols = every_protocol(&registry);
    assert!(protocols.len() > 40, "{} protocols", protocols.len());
    let mut activities = Vec::new();
    for (n, (channel, protocol, is_default)) in protocols.iter().enumerate() {
        let name = format!("{channel}-{}", protocol.id);
        let mut args = vec![
            "activity",
            "create",
            "--workspace",
            "ws1",
            "--name",
            &name,
            "--group",
            "全媒体",
            "--channel",
            channel,
            "--format",
            "信息流",
            "--landing",
            "https://example.com/landing",
            "--json",
        ];
        if !is_default {
            args.extend(["--template", protocol.id.as_str()]);
        }
        let out = p
            .command(&args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .expect("spawn");
        assert!(
            out.status.success(),
            "activity {n} {name}: {}",
            stderr(&out)
        );
        let a: serde_json::Value = serde_json::from_str(stdout(&out).trim()).expect("json");
        activities.push((channel.clone(), protocol.clone(), a));
    }

    let d = start_with(&p, (public, admin), &env);
    let ts_s = chrono::Utc::now().timestamp();
    let mut sent: Vec<Sent> = Vec::new();
    for (channel, protocol, a) in &activities {
        let id = a["id"].as_i64().expect("id");
        let template = a["template"].as_str();
        for (kind, endpoint, key) in [
            (LinkKind::Impression, Endpoint::Impression, "impression_url"),
            (LinkKind::Click, Endpoint::Click, "click_url"),
        ] {
            let supported = match kind {
                LinkKind::Impression => protocol.impression_answer.is_some(),
                LinkKind::Click => protocol.click_answer.is_some(),
            };
            if !supported {
                continue;
            }
            let (url, expect) = fill(a[key].as_str().expect("url"), protocol, kind, ts_s);
            let what = format!("{channel}/{} {key}: {url}", protocol.id);
            let query = url.split_once('?').map_or("", |(_, q)| q);
            for m in protocol.macros(kind) {
                assert!(
                    !query.contains(m.macro_text.as_str()),
                    "{} left in {what}",
                    m.macro_text
                );
            }
            let r = hit(reqwest::Method::GET, &url);
            match answer_for(&registry, channel, template, endpoint) {
                Answer::Gif => assert_eq!(
                    (r.status, r.content_type.as_deref(), r.body.len()),
                    (200, Some("image/gif"), 43),
                    "{what}"
                ),
                Answer::NoContent => assert_eq!(r.status, 204, "{what}"),
                Answer::Redirect => assert_eq!(
                    (r.status, r.location.as_deref()),
                    (302, Some("https://example.com/landing")),
                    "{what}"
                ),
                Answer::Body { status, body, .. } => {
                    assert_eq!(r.status, status, "{what}");
                    assert_eq!(r.body, body.as_bytes(), "{what}");
                }
            }
            sent.push(Sent {
                what,
                activity_id: id,
                endpoint: if endpoint == Endpoint::Impression {
                    "impression"
                } else {
                    "click"
                },
                expect,
            });
        }
    }
    assert!(sent.len() > 80, "{} hits", sent.len());

    // Land them.
    let run_url = format!("{}/api/v1/pipelines/ad_events/runs", d.admin);
    let deadline = Instant::now() + Duration::from_secs(90);
    let lake_dir = p.lake().join("ad_events");
    loop {
        let _ = crate::serve::http::send(reqwest::Method::POST, &run_url, Some(&d.token));
        std::thread::sleep(Duration::from_millis(500));
        if read_dataset(&lake_dir).height() >= sent.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ad_events did not land {} hits",
            sent.len()
        );
    }
    let lake = read_dataset(&lake_dir);
    let rows = backflow::pipeline::frame::rows_as_json(&lake, true).expect("rows");
    assert_eq!(rows.len(), sent.len(), "every hit exactly once");
    let mut by_key: BTreeMap<(i64, String), Vec<&serde_json::Map<String, serde_json::Value>>> =
        BTreeMap::new();
    for row in &rows {
        let id = row["activity_id"].as_i64().expect("activity_id");
        let endpoint = row["endpoint"].as_str().expect("endpoint").to_string();
        by_key.entry((id, endpoint)).or_default().push(row);
    }
    let mut failures = Vec::new();
    for s in &sent {
        let Some(found) = by_key.get(&(s.activity_id, s.endpoint.to_string())) else {
            failures.push(format!("{}: not in the lake", s.what));
            continue;
        };
        if found.len() != 1 {
            failures.push(format!("{}: {} rows", s.what, found.len()));
            continue;
        }
        let row = found[0];
        for (column, want) in &s.expect {
            let got = match &row[*column] {
                serde_json::Value::String(v) => Some(v.clone()),
                serde_json::Value::Null => None,
                other => Some(other.to_string()),
            };
            if got.as_deref() != Some(want.as_str()) {
                failures.push(format!(
                    "{}: column {column}: want {want:?}, got {got:?}",
                    s.what
                ));
            }
        }
        // Enriched: the user's agent (the media's `ua` value, or the device's header) parsed.
        if row["user_agent"]
            .as_str()
            .is_some_and(|ua| ua.contains("Android 12"))
            && (row["ua_os"].as_str() != Some("Android")
                || row["ua_os_version"].as_str() != Some("12"))
        {
            failures.push(format!(
                "{}: user agent not enriched: ua_os {} ua_os_version {}",
                s.what, row["ua_os"], row["ua_os_version"]
            ));
        }
        if !row["unknown_fields"].is_null() {
            failures.push(format!(
                "{}: unknown fields {}",
                s.what, row["unknown_fields"]
            ));
        }
    }
    let parsed = rows
        .iter()
        .filter(|r| r["ua_os"].as_str() == Some("Android"))
        .count();
    assert!(
        parsed > 10,
        "only {parsed} rows with a parsed Android agent"
    );
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // The activity list counts what landed: one impression and one click per activity that
    // supports them (each click from its own device key, so deduplicated clicks equal clicks).
    let out = p
        .command(&["activity", "list", "--workspace", "ws1", "--json"])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("spawn");
    assert!(out.status.success(), "{}", stderr(&out));
    let listed: Vec<serde_json::Value> = serde_json::from_str(stdout(&out).trim()).expect("json");
    assert_eq!(listed.len(), activities.len());
    for a in &listed {
        let id = a["id"].as_i64().expect("id");
        let sent_of = |endpoint: &str| {
            sent.iter()
                .filter(|s| s.activity_id == id && s.endpoint == endpoint)
                .count() as u64
        };
        let totals = &a["totals"];
        assert_eq!(
            (
                totals["impressions"].as_u64(),
                totals["clicks"].as_u64(),
                totals["dedup_clicks"].as_u64()
            ),
            (
                Some(sent_of("impression")),
                Some(sent_of("click")),
                Some(sent_of("click"))
            ),
            "{a}"
        );
    }

    // An independent reader agrees: DuckDB sees each event once, with the right types.
    if let Some((_, _, rows)) = duckdb(
        p.path(),
        "SELECT count(*), count(DISTINCT event_id), count(DISTINCT activity_id) \
         FROM read_parquet('data/lake/ad_events/**/*.parquet', hive_partitioning = true)",
    ) {
        assert_eq!(
            rows[0],
            [
                serde_json::json!(sent.len()),
                serde_json::json!(sent.len()),
                serde_json::json!(activities.len())
            ]
        );
    }
}
