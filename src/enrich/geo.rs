//! IP → country, province and city from an offline MaxMind DB (`.mmdb`) file: GeoLite2-City,
//! DB-IP City Lite, or any database with the GeoIP2 City layout. Names are taken in Simplified
//! Chinese (`zh-CN`) when the database has them, else in English.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use maxminddb::{Reader, geoip2};

/// Where an address is, as the database says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GeoInfo {
    /// ISO 3166-1 alpha-2 code (`CN`).
    pub country_code: Option<String>,
    /// Country name (`中国`).
    pub country: Option<String>,
    /// First-level subdivision (`广东`, `广东省`: as the database writes it).
    pub province: Option<String>,
    /// City (`深圳`, `深圳市`).
    pub city: Option<String>,
}

/// A loaded database.
pub struct GeoDb {
    path: PathBuf,
    reader: Reader<Vec<u8>>,
}

impl std::fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoDb")
            .field("path", &self.path)
            .field("database_type", &self.reader.metadata().database_type)
            .finish_non_exhaustive()
    }
}

impl GeoDb {
    /// Reads the whole file into memory and checks that it is a MaxMind DB with city records.
    pub fn open(path: &Path) -> Result<Self, String> {
        let reader = Reader::open_readfile(path)
            .map_err(|e| format!("{}: not a readable MaxMind DB: {e}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            reader,
        })
    }

    /// The file it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `database_type` from the file's metadata (`GeoLite2-City`, `DBIP-City-Lite`, …).
    pub fn database_type(&self) -> &str {
        &self.reader.metadata().database_type
    }

    /// The build time from the file's metadata (seconds since the epoch).
    pub fn build_epoch(&self) -> u64 {
        self.reader.metadata().build_epoch
    }

    /// Looks an address up; `None` when the database has no record for it (or the record is
    /// not in the City layout).
    pub fn lookup(&self, ip: IpAddr) -> Option<GeoInfo> {
        let result = self.reader.lookup(ip).ok()?;
        let city: geoip2::City<'_> = result.decode().ok()??;
        let name = |names: &geoip2::Names<'_>| {
            names
                .simplified_chinese
                .or(names.english)
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_string)
        };
        let info = GeoInfo {
            country_code: city.country.iso_code.map(str::to_string),
            country: name(&city.country.names),
            province: city.subdivisions.first().and_then(|s| name(&s.names)),
            city: name(&city.city.names),
        };
        (info != GeoInfo::default()).then_some(info)
    }
}
