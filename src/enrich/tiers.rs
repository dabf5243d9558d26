//! City tiers (城市级别): a table of Chinese city names to 一线 … 五线, bundled
//! (`schemas/city_tiers.csv`, embedded in the binary) or read from a file the user names.
//! Loading checks every line and reports all problems as `file:line: message`.

use std::collections::HashMap;
use std::path::Path;

/// The bundled table.
pub const BUNDLED: &str = include_str!("../../schemas/city_tiers.csv");
/// How the bundled table is named in messages.
pub const BUNDLED_NAME: &str = "schemas/city_tiers.csv (bundled)";
/// The tiers a table may use, highest first.
pub const TIERS: [&str; 6] = ["一线", "新一线", "二线", "三线", "四线", "五线"];

/// Suffixes of prefecture-level units whose leading name is the city's name in the table.
const UNIT_SUFFIXES: [&str; 4] = ["自治州", "地区", "盟", "林区"];
/// Municipalities: a database may leave the city empty and name them as the province.
const MUNICIPALITIES: [&str; 4] = ["北京", "上海", "天津", "重庆"];

/// A loaded table: normalized city name → tier.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CityTiers {
    tiers: HashMap<String, &'static str>,
}

/// `深圳市` → `深圳`; trims spaces.
fn normalize(name: &str) -> &str {
    let name = name.trim();
    name.strip_suffix('市')
        .filter(|n| !n.is_empty())
        .unwrap_or(name)
}

impl CityTiers {
    /// The bundled table.
    pub fn bundled() -> Result<Self, Vec<String>> {
        Self::parse(BUNDLED_NAME, BUNDLED)
    }

    /// Reads a table file.
    pub fn load(path: &Path) -> Result<Self, Vec<String>> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            vec![format!(
                "{}: cannot read city tier table: {e}",
                path.display()
            )]
        })?;
        Self::parse(&path.display().to_string(), &text)
    }

    /// Parses a table: `#` comments and blank lines, a `city,tier` header, then one city a
    /// line. Every error is `origin:line: message`.
    pub fn parse(origin: &str, text: &str) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        let mut tiers = HashMap::new();
        let mut first_line: HashMap<String, usize> = HashMap::new();
        let mut header = false;
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let line = line.trim().trim_start_matches('\u{feff}');
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            if !header {
                header = true;
                if fields != ["city", "tier"] {
                    errors.push(format!(
                        "{origin}:{n}: expected the header `city,tier`, found `{line}`"
                    ));
                }
                continue;
            }
            let [city, tier] = fields[..] else {
                errors.push(format!(
                    "{origin}:{n}: expected two fields `city,tier`, found {}",
                    fields.len()
                ));
                continue;
            };
            let city = normalize(city);
            if city.is_empty() {
                errors.push(format!("{origin}:{n}: the city is empty"));
                continue;
            }
            let Some(tier) = TIERS.iter().find(|t| **t == tier) else {
                errors.push(format!(
                    "{origin}:{n}: unknown tier `{tier}`, expected one of {}",
                    TIERS.join(", ")
                ));
                continue;
            };
            if let Some(first) = first_line.get(city) {
                errors.push(format!(
                    "{origin}:{n}: `{city}` is already listed on line {first}"
                ));
                continue;
            }
            first_line.insert(city.to_string(), n);
            tiers.insert(city.to_string(), *tier);
        }
        if !header {
            errors.push(format!("{origin}:1: no `city,tier` header"));
        }
        if errors.is_empty() {
            Ok(Self { tiers })
        } else {
            Err(errors)
        }
    }

    /// How many cities the table has.
    pub fn len(&self) -> usize {
        self.tiers.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.tiers.is_empty()
    }

    /// The tier of a city as a geo database names it (`深圳`, `深圳市`, `延边朝鲜族自治州`).
    pub fn tier_of(&self, city: &str) -> Option<&'static str> {
        let name = normalize(city);
        if let Some(tier) = self.tiers.get(name) {
            return Some(tier);
        }
        if !UNIT_SUFFIXES.iter().any(|s| name.ends_with(s)) {
            return None;
        }
        // The leading name of an autonomous prefecture, league or area: 2 to 4 characters,
        // longest first.
        let chars: Vec<(usize, char)> = name.char_indices().collect();
        (2..=4usize).rev().find_map(|len| {
            let end = chars.get(len).map(|(at, _)| *at)?;
            self.tiers.get(&name[..end]).copied()
        })
    }

    /// The tier of a located address: the city, or for a municipality named only as the
    /// province, the province. Only Chinese cities (`country_code` `CN`) have a tier.
    pub fn tier_for(
        &self,
        country_code: Option<&str>,
        province: Option<&str>,
        city: Option<&str>,
    ) -> Option<&'static str> {
        if country_code != Some("CN") {
            return None;
        }
        match city {
            Some(city) => self.tier_of(city),
            None => province
                .map(normalize)
                .filter(|p| MUNICIPALITIES.contains(p))
                .and_then(|p| self.tier_of(p)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundled() -> CityTiers {
        CityTiers::bundled().unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn the_bundled_table_loads_and_has_every_upper_tier() {
        let t = bundled();
        let count = |tier: &str| t.tiers.values().filter(|v| **v == tier).count();
        assert_eq!(count("一线"), 4);
        assert_eq!(count("新一线"), 15);
        assert_eq!(count("二线"), 30);
        assert_eq!(count("三线"), 70);
        assert!(t.len() > 300, "{}", t.len());
    }

    #[test]
    fn names_match_with_or_without_suffixes() {
        let t = bundled();
        assert_eq!(t.tier_of("深圳"), Some("一线"));
        assert_eq!(t.tier_of("深圳市"), Some("一线"));
        assert_eq!(t.tier_of(" 成都市 "), Some("新一线"));
        assert_eq!(t.tier_of("延边朝鲜族自治州"), Some("五线"));
        assert_eq!(t.tier_of("黔东南苗族侗族自治州"), Some("四线"));
        assert_eq!(t.tier_of("大兴安岭地区"), Some("五线"));
        assert_eq!(t.tier_of("Shenzhen"), None);
        assert_eq!(t.tier_of("市"), None);
        assert_eq!(t.tier_of(""), None);
    }

    #[test]
    fn only_chinese_cities_and_municipalities_by_province() {
        let t = bundled();
        assert_eq!(
            t.tier_for(Some("CN"), Some("广东"), Some("深圳")),
            Some("一线")
        );
        assert_eq!(t.tier_for(Some("CN"), Some("北京市"), None), Some("一线"));
        assert_eq!(t.tier_for(Some("CN"), Some("吉林省"), None), None);
        assert_eq!(t.tier_for(Some("US"), None, Some("上海")), None);
        assert_eq!(t.tier_for(None, None, Some("上海")), None);
    }

    #[test]
    fn every_error_is_located() {
        let text = "# comment\ncity,tier\n上海,一线\n上海市,二线\n广州,超一线\n深圳\n,一线\n";
        let errors = CityTiers::parse("t.csv", text).err().unwrap_or_default();
        assert_eq!(
            errors,
            [
                "t.csv:4: `上海` is already listed on line 3",
                "t.csv:5: unknown tier `超一线`, expected one of 一线, 新一线, 二线, 三线, 四线, 五线",
                "t.csv:6: expected two fields `city,tier`, found 1",
                "t.csv:7: the city is empty",
            ]
        );
        let errors = CityTiers::parse("t.csv", "name,level\n")
            .err()
            .unwrap_or_default();
        assert_eq!(
            errors,
            ["t.csv:1: expected the header `city,tier`, found `name,level`"]
        );
        assert!(CityTiers::parse("t.csv", "# only comments\n").is_err());
    }
}
