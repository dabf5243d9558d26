//! The geo database the tests build themselves (no third-party database in the repository):
//! a few public networks with GeoIP2-City-shaped records, written by the project's own MaxMind
//! DB writer (`src/enrich/mmdb_writer.rs`, included here by path).

use std::path::{Path, PathBuf};

use backflow::enrich::{EnrichOptions, Enricher};

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
