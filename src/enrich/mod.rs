//! Hit enrichment: user agent → OS, version, brand and model; IP → country, province, city and
//! city tier (城市级别); bot and test traffic flags. Device-ID normalization and unknown markers
//! are part of decoding (`collect::normalize`).
//!
//! An [`Enricher`] is built once at startup and shared (`Arc`). It is a pure function of the
//! hit and the loaded tables: the same record always gets the same columns (the user-agent
//! cache only saves work), so a replayed batch writes the same files.

pub mod flags;
pub mod geo;
#[cfg(test)]
pub mod mmdb_writer;
pub mod tiers;
pub mod ua;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tracing::{info, warn};

pub use flags::{FlagInput, TrafficFlags};
pub use geo::{GeoDb, GeoInfo};
pub use tiers::CityTiers;
pub use ua::{UaInfo, UaParser};

/// The columns enrichment adds to an `ad_events` row, in order.
pub const COLUMNS: [&str; 12] = [
    "ua_os",
    "ua_os_version",
    "ua_device_brand",
    "ua_device_model",
    "geo_country_code",
    "geo_country",
    "geo_province",
    "geo_city",
    "geo_city_tier",
    "is_bot",
    "is_test",
    "traffic_flags",
];

/// Why the enrichment tables could not be loaded (a startup error).
#[derive(Debug, thiserror::Error)]
pub enum EnrichError {
    #[error("geo database (enrich.geo_db): {0}")]
    Geo(String),
    #[error("city tier table (enrich.city_tiers):\n{}", .0.join("\n"))]
    Tiers(Vec<String>),
}

/// Where the tables come from (`enrich.*` in `backflow.yaml`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnrichOptions {
    /// A MaxMind DB City file; `None`: geo columns stay null.
    pub geo_db: Option<PathBuf>,
    /// A city tier CSV; `None`: the bundled table.
    pub city_tiers: Option<PathBuf>,
}

impl EnrichOptions {
    /// The `enrich.*` keys of the daemon's configuration.
    pub fn from_config(cfg: &crate::config::daemon::DaemonConfig) -> Self {
        Self {
            geo_db: cfg.enrich_geo_db.clone(),
            city_tiers: cfg.enrich_city_tiers.clone(),
        }
    }
}

/// The facts of one decoded hit that enrichment looks at.
#[derive(Debug, Clone, Copy, Default)]
pub struct HitFacts<'a> {
    /// The user's agent.
    pub user_agent: Option<&'a str>,
    /// The user's address, when it is public (private and reserved ones are not located).
    pub public_ip: Option<IpAddr>,
    pub server_to_server: bool,
    /// The click id and callback as sent.
    pub click_id: Option<&'a str>,
    pub callback: Option<&'a str>,
    /// Every mapped parameter was an unreplaced macro.
    pub template_probe: bool,
}

/// The loaded tables.
#[derive(Debug)]
pub struct Enricher {
    ua: UaParser,
    geo: Option<GeoDb>,
    tiers: CityTiers,
}

impl Enricher {
    /// Loads the user-agent regexes, the geo database (if any) and the tier table.
    pub fn load(options: &EnrichOptions) -> Result<Self, EnrichError> {
        let ua = UaParser::embedded();
        let geo = options
            .geo_db
            .as_deref()
            .map(GeoDb::open)
            .transpose()
            .map_err(EnrichError::Geo)?;
        let tiers = match &options.city_tiers {
            Some(path) => CityTiers::load(path),
            None => CityTiers::bundled(),
        }
        .map_err(EnrichError::Tiers)?;
        Ok(Self { ua, geo, tiers })
    }

    /// Loads like [`Enricher::load`] and says on the log what was loaded.
    pub fn open(options: &EnrichOptions) -> Result<Arc<Self>, EnrichError> {
        let enricher = Self::load(options)?;
        match &enricher.geo {
            Some(db) => info!(
                geo_db = %db.path().display(), database_type = db.database_type(),
                build_epoch = db.build_epoch(), city_tiers = enricher.tiers.len(),
                "enrichment: geo database loaded"
            ),
            None => warn!(
                "enrichment: no geo database configured (enrich.geo_db): geo_* columns stay null; see README \"Enrichment\""
            ),
        }
        Ok(Arc::new(enricher))
    }

    /// An enricher with no geo database, the embedded regexes and the bundled tier table.
    pub fn without_geo() -> Result<Self, EnrichError> {
        Self::load(&EnrichOptions::default())
    }

    /// Whether a geo database is loaded.
    pub fn has_geo(&self) -> bool {
        self.geo.is_some()
    }

    /// The user-agent parser (for benchmarks and tests).
    pub fn ua(&self) -> &UaParser {
        &self.ua
    }

    /// The enrichment columns of one hit, in [`COLUMNS`] order.
    pub fn enrich(&self, hit: &HitFacts<'_>) -> [(&'static str, Option<String>); COLUMNS.len()] {
        let ua = hit
            .user_agent
            .filter(|a| !a.trim().is_empty())
            .map(|a| self.ua.parse(a));
        let ua = ua.as_deref();
        let geo = hit
            .public_ip
            .and_then(|ip| self.geo.as_ref()?.lookup(ip))
            .unwrap_or_default();
        let tier = self.tiers.tier_for(
            geo.country_code.as_deref(),
            geo.province.as_deref(),
            geo.city.as_deref(),
        );
        let flags = flags::flags(&FlagInput {
            user_agent: hit.user_agent,
            spider: ua.is_some_and(|u| u.spider),
            server_to_server: hit.server_to_server,
            click_id: hit.click_id,
            callback: hit.callback,
            template_probe: hit.template_probe,
        });
        let ua_field = |f: fn(&UaInfo) -> &Option<String>| ua.and_then(|u| f(u).clone());
        [
            ("ua_os", ua_field(|u| &u.os)),
            ("ua_os_version", ua_field(|u| &u.os_version)),
            ("ua_device_brand", ua_field(|u| &u.brand)),
            ("ua_device_model", ua_field(|u| &u.model)),
            ("geo_country_code", geo.country_code),
            ("geo_country", geo.country),
            ("geo_province", geo.province),
            ("geo_city", geo.city),
            ("geo_city_tier", tier.map(str::to_string)),
            ("is_bot", Some(flags.is_bot().to_string())),
            ("is_test", Some(flags.is_test().to_string())),
            ("traffic_flags", flags.joined()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(cols: &'a [(&'static str, Option<String>)], name: &str) -> Option<&'a str> {
        cols.iter()
            .find(|(c, _)| *c == name)
            .and_then(|(_, v)| v.as_deref())
    }

    fn test_db(dir: &std::path::Path) -> PathBuf {
        let path = dir.join("test-city.mmdb");
        let bytes = mmdb_writer::city_db(&[
            ("61.135.0.0/16", "CN", "中国", Some("北京市"), Some("北京")),
            ("183.226.0.0/16", "CN", "中国", Some("重庆"), None),
            (
                "113.87.0.0/16",
                "CN",
                "中国",
                Some("广东省"),
                Some("深圳市"),
            ),
            ("8.8.8.0/24", "US", "美国", None, None),
            ("2400:da00::/32", "CN", "中国", Some("北京"), Some("北京")),
        ]);
        std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{e}"));
        path
    }

    #[test]
    fn columns_follow_the_declared_order() {
        let e = Enricher::without_geo().unwrap_or_else(|e| panic!("{e}"));
        let cols = e.enrich(&HitFacts::default());
        let names: Vec<&str> = cols.iter().map(|(c, _)| *c).collect();
        assert_eq!(names, COLUMNS);
        assert_eq!(get(&cols, "is_bot"), Some("false"));
        assert_eq!(get(&cols, "traffic_flags"), Some("no_user_agent"));
        assert_eq!(get(&cols, "geo_city"), None);
    }

    #[test]
    fn a_public_address_gets_province_city_and_tier() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let options = EnrichOptions {
            geo_db: Some(test_db(dir.path())),
            city_tiers: None,
        };
        let e = Enricher::load(&options).unwrap_or_else(|e| panic!("{e}"));
        let at = |ip: &str| {
            e.enrich(&HitFacts {
                public_ip: ip.parse().ok(),
                user_agent: Some("Mozilla/5.0 (iPhone; CPU iPhone OS 16_5 like Mac OS X)"),
                ..HitFacts::default()
            })
        };
        let shenzhen = at("113.87.1.2");
        assert_eq!(get(&shenzhen, "geo_country_code"), Some("CN"));
        assert_eq!(get(&shenzhen, "geo_country"), Some("中国"));
        assert_eq!(get(&shenzhen, "geo_province"), Some("广东省"));
        assert_eq!(get(&shenzhen, "geo_city"), Some("深圳市"));
        assert_eq!(get(&shenzhen, "geo_city_tier"), Some("一线"));
        assert_eq!(get(&shenzhen, "ua_os"), Some("iOS"));
        let chongqing = at("183.226.102.120");
        assert_eq!(get(&chongqing, "geo_city"), None);
        assert_eq!(get(&chongqing, "geo_city_tier"), Some("新一线"));
        let us = at("8.8.8.8");
        assert_eq!(get(&us, "geo_country_code"), Some("US"));
        assert_eq!(get(&us, "geo_city_tier"), None);
        assert_eq!(get(&at("2400:da00::1"), "geo_city"), Some("北京"));
        assert_eq!(
            get(&at("1.1.1.1"), "geo_country"),
            None,
            "not in the database"
        );
    }

    #[test]
    fn a_missing_or_bad_database_is_a_startup_error() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let missing = EnrichOptions {
            geo_db: Some(dir.path().join("nope.mmdb")),
            city_tiers: None,
        };
        assert!(matches!(Enricher::load(&missing), Err(EnrichError::Geo(_))));
        let junk = dir.path().join("junk.mmdb");
        std::fs::write(&junk, b"not a database").unwrap_or_else(|e| panic!("{e}"));
        let junk = EnrichOptions {
            geo_db: Some(junk),
            city_tiers: None,
        };
        assert!(matches!(Enricher::load(&junk), Err(EnrichError::Geo(_))));
        let tiers = dir.path().join("tiers.csv");
        std::fs::write(&tiers, "city,tier\n上海,零线\n").unwrap_or_else(|e| panic!("{e}"));
        let bad_tiers = EnrichOptions {
            geo_db: None,
            city_tiers: Some(tiers.clone()),
        };
        let err = Enricher::load(&bad_tiers).err().map(|e| e.to_string());
        let want = format!("{}:2: unknown tier `零线`", tiers.display());
        assert!(err.as_deref().is_some_and(|e| e.contains(&want)), "{err:?}");
    }
}
