//! Enrichment with the geo database the tests build themselves (no third-party database in the
//! repository): a few public networks with GeoIP2-City-shaped records, written by the project's
//! own MaxMind DB writer (`src/enrich/mmdb_writer.rs`, included here by path); and end to end,
//! the real daemon loading it through `enrich.geo_db` and landing enriched hits in Parquet.

use std::path::{Path, PathBuf};
use std::time::Duration;

use backflow::enrich::{EnrichOptions, Enricher};

use crate::serve::{free_port, start_with};
use crate::support::*;

#[path = "../../src/enrich/mmdb_writer.rs"]
#[allow(dead_code)]
mod mmdb_writer;

/// (network, country code, country, province, city), as a zh-CN database writes them.
const NETWORKS: &[mmdb_writer::CityRow<'static>] = &[
    // §7 example 12 (Weibo): 61.135.152.218.
    ("61.135.0.0/16", "CN", "中国", Some("北京市"), Some("北京")),
    // §7 example 5 (Tencent): 183.226.102.120; a municipality named only as the province.
    ("183.226.0.0/16", "CN", "中国", Some("重庆"), None),
    (
        "113.87.0.0/16",
        "CN",
        "中国",
        Some("广东省"),
        Some("深圳市"),
    ),
    (
        "8.8.8.0/24",
        "US",
        "美国",
        Some("加利福尼亚州"),
        Some("山景城"),
    ),
    ("2400:da00::/32", "CN", "中国", Some("北京"), Some("北京")),
];

/// Writes the test database into `dir`; returns its path.
pub fn write_test_db(dir: &Path) -> PathBuf {
    let path = dir.join("backflow-test-city.mmdb");
    std::fs::write(&path, mmdb_writer::city_db(NETWORKS)).expect("write test mmdb");
    path
}

/// An enricher with the test database.
pub fn test_enricher(dir: &Path) -> Enricher {
    Enricher::load(&EnrichOptions {
        geo_db: Some(write_test_db(dir)),
        city_tiers: None,
    })
    .expect("enricher with the test database")
}

#[test]
fn the_written_database_reads_back_with_the_maxminddb_reader() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = backflow::enrich::GeoDb::open(&write_test_db(dir.path())).expect("open");
    assert_eq!(db.database_type(), "backflow-test-City");
    let at = |ip: &str| db.lookup(ip.parse().expect("ip"));
    let beijing = at("61.135.152.218").expect("record");
    assert_eq!(
        (
            beijing.country_code.as_deref(),
            beijing.province.as_deref(),
            beijing.city.as_deref()
        ),
        (Some("CN"), Some("北京市"), Some("北京"))
    );
    assert_eq!(
        at("8.8.8.8").and_then(|g| g.city).as_deref(),
        Some("山景城")
    );
    assert_eq!(
        at("2400:da00::8").and_then(|g| g.city).as_deref(),
        Some("北京")
    );
    assert_eq!(at("9.9.9.9"), None);
    assert_eq!(at("2001:4860::1"), None);
}

/// GET with the given headers; returns the status.
fn get(url: &str, headers: &[(&str, &str)]) -> u16 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let mut request = client.get(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("send").status().as_u16()
    })
}

/// Creates an activity with the CLI; returns its JSON.
fn create(p: &Project, env: &[(&str, String)], name: &str, channel: &str) -> serde_json::Value {
    let args = [
        "activity",
        "create",
        "--workspace",
        "ws1",
        "--name",
        name,
        "--group",
        "enrich",
        "--channel",
        channel,
        "--format",
        "信息流",
        "--landing",
        "https://example.com/landing",
        "--json",
    ];
    let out = p
        .command(&args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("spawn");
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_str(stdout(&out).trim()).expect("activity json")
}

#[test]
fn the_daemon_loads_the_configured_geo_database_and_lands_enriched_columns() {
    let p = Project::new();
    let db = write_test_db(p.path());
    let (public, admin) = (free_port(), free_port());
    let env = [
        (
            "BACKFLOW__PUBLIC__BASE_URL",
            format!("http://127.0.0.1:{public}"),
        ),
        ("BACKFLOW__ENRICH__GEO_DB", db.display().to_string()),
    ];
    let oe = create(&p, &env, "oe-geo", "ocean_engine");
    let hw = create(&p, &env, "hw-geo", "huawei");
    let d = start_with(&p, (public, admin), &env);

    // Ocean Engine's server reports a Shenzhen iPhone user (the user's IP and UA are parameters).
    let iphone = "Mozilla%2F5.0%20%28iPhone%3B%20CPU%20iPhone%20OS%2016_5%20like%20Mac%20OS%20X%29";
    let oe_click = oe["click_url"]
        .as_str()
        .expect("click_url")
        .replace("__IP__", "113.87.1.2")
        .replace("__UA__", iphone)
        .replace("__OS__", "1");
    assert_eq!(get(&oe_click, &[("user-agent", "MediaServer/1.0")]), 200);
    // A script calls a Huawei impression link from Beijing (device call: the caller is the user).
    let hw_imp = hw["impression_url"]
        .as_str()
        .expect("impression_url")
        .replace("__OS__", "0");
    let headers = [
        ("user-agent", "python-requests/2.31.0"),
        ("x-forwarded-for", "61.135.152.218"),
    ];
    assert_eq!(get(&hw_imp, &headers), 200);

    let run_url = format!("{}/api/v1/pipelines/ad_events/runs", d.admin);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while parquet_files(&p.lake().join("ad_events")).is_empty()
        || read_dataset(&p.lake().join("ad_events")).height() < 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "ad_events did not land the hits"
        );
        let _ = crate::serve::http::send(reqwest::Method::POST, &run_url, Some(&d.token));
        std::thread::sleep(Duration::from_millis(500));
    }

    let Some((columns, types, rows)) = duckdb(
        p.path(),
        "SELECT channel, user_ip, geo_country_code, geo_country, geo_province, geo_city,
                geo_city_tier, ua_os, ua_os_version, ua_device_model, is_bot, is_test, traffic_flags
         FROM read_parquet('data/lake/ad_events/**/*.parquet', hive_partitioning = true)
         ORDER BY channel",
    ) else {
        return;
    };
    assert_eq!(columns.len(), 13);
    assert_eq!(types[10..12], ["BOOLEAN", "BOOLEAN"]);
    let as_strings = |row: &Vec<serde_json::Value>| -> Vec<String> {
        row.iter()
            .map(|v| match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect()
    };
    assert_eq!(
        as_strings(&rows[0]),
        [
            "huawei",
            "61.135.152.218",
            "CN",
            "中国",
            "北京市",
            "北京",
            "一线",
            "null",
            "null",
            "null",
            "true",
            "false",
            "http_tool_ua"
        ]
    );
    assert_eq!(
        as_strings(&rows[1]),
        [
            "ocean_engine",
            "113.87.1.2",
            "CN",
            "中国",
            "广东省",
            "深圳市",
            "一线",
            "iOS",
            "16.5",
            "iPhone",
            "false",
            "false",
            "null"
        ]
    );
}
