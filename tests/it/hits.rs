//! Monitoring-link hits through the `ad_events` decoder, without any service: the twenty example
//! calls of `spec/media-protocols.md` §7 (`tests/fixtures/hits/examples.json`) decoded with the
//! shipped registry, and a deterministic stream of hostile query strings that must never make
//! the decoder panic or reject a well-formed record.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Instant;

use backflow::collect::decode::{BASE_COLUMNS, Row, decode};
use backflow::collect::fields::CanonicalField;
use backflow::collect::hit::{HitRecord, RECORD_VERSION};
use backflow::collect::link::Endpoint;
use backflow::collect::normalize::parse_ip;
use backflow::collect::query::decode_query;
use backflow::collect::registry::MediaRegistry;
use backflow::enrich::{COLUMNS as ENRICH_COLUMNS, Enricher};

/// The caller of every fixture hit: a media server in a documentation range.
const PEER_IP: &str = "198.51.100.250";
/// The caller's own `User-Agent` header (never the user's on server-to-server calls).
const PEER_UA: &str = "MediaServer/1.0";
/// How many of the twenty examples must run: all of them.
const MIN_RUN: usize = 20;

/// One §7 example as stored in the fixture.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Example {
    /// Example number in §7.
    n: u32,
    title: String,
    /// Media id in `schemas/media.yaml`.
    channel: String,
    endpoint: Endpoint,
    /// The query string exactly as in the spec (the part after `?`; the path part for the
    /// Miaozhen and AdMaster examples, which carry their parameters in the path).
    query: String,
    /// The hit's receive time: the example's own timestamp when it has one.
    received_at: String,
    /// Column → expected value (`null` = the column must be null).
    expect: BTreeMap<String, Option<String>>,
    /// The activity's link template when not the media's default.
    #[serde(default)]
    template: Option<String>,
    /// Why the example cannot run yet (it needs a link template `decode` does not select).
    #[serde(default)]
    skip: Option<String>,
    /// Free-text remark on how the expectation was derived.
    #[serde(default)]
    #[allow(dead_code)]
    note: Option<String>,
}

fn shipped_registry() -> MediaRegistry {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/media.yaml");
    MediaRegistry::load(&path).unwrap_or_else(|errors| {
        panic!(
            "schemas/media.yaml does not load:\n{}",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    })
}

fn examples() -> Vec<Example> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hits/examples.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// A journal record as the collector writes it.
fn hit(
    channel: &str,
    endpoint: Endpoint,
    query: &str,
    received_at: &str,
    forwarded_for: Option<&str>,
) -> HitRecord {
    HitRecord {
        v: RECORD_VERSION,
        event_id: "0190f0c0-0000-7000-8000-000000000001".into(),
        received_at: received_at.into(),
        endpoint,
        link_id: 7,
        activity_id: 3,
        workspace: "ws".into(),
        channel: channel.into(),
        template: None,
        activity_status: "on".into(),
        method: "GET".into(),
        query: query.into(),
        peer_ip: PEER_IP.into(),
        user_agent: Some(PEER_UA.into()),
        forwarded_for: forwarded_for.map(str::to_string),
    }
}

fn record_bytes(hit: &HitRecord) -> Vec<u8> {
    serde_json::to_vec(hit).unwrap_or_else(|e| panic!("serializing a hit record: {e}"))
}

/// Every column a decoded row has, in order.
fn all_columns() -> Vec<&'static str> {
    BASE_COLUMNS
        .iter()
        .copied()
        .chain(CanonicalField::ALL.iter().map(|f| f.as_str()))
        .chain(ENRICH_COLUMNS)
        .collect()
}

fn column<'r>(row: &'r Row, name: &str) -> Option<&'r str> {
    row.iter()
        .find(|(c, _)| *c == name)
        .and_then(|(_, v)| v.as_deref())
}

#[test]
fn the_twenty_spec_examples_decode_as_the_spec_expects() {
    let registry = shipped_registry();
    // Geo columns come from the project-built test database (tests/it/enrich.rs).
    let geo_dir = tempfile::tempdir().expect("tempdir");
    let enricher = crate::enrich::test_enricher(geo_dir.path());
    let examples = examples();
    let numbers: Vec<u32> = examples.iter().map(|e| e.n).collect();
    assert_eq!(
        numbers,
        (1..=20).collect::<Vec<_>>(),
        "the fixture holds §7's examples 1–20 in order"
    );
    let columns: BTreeSet<&str> = all_columns().into_iter().collect();

    let mut failures = Vec::new();
    let mut skipped = Vec::new();
    let mut ran = 0;
    for ex in &examples {
        assert!(!ex.expect.is_empty(), "example {}: empty `expect`", ex.n);
        for name in ex.expect.keys() {
            assert!(
                columns.contains(name.as_str()),
                "example {}: `expect` names `{name}`, which is not a column of a decoded row",
                ex.n
            );
        }
        if let Some(reason) = &ex.skip {
            eprintln!("skipped example {} ({}): {reason}", ex.n, ex.title);
            skipped.push(ex.n);
            continue;
        }
        ran += 1;
        let mut record = hit(&ex.channel, ex.endpoint, &ex.query, &ex.received_at, None);
        record.template = ex.template.clone();
        let record = record_bytes(&record);
        let row = match decode(&record, &registry, &enricher) {
            Ok(row) => row,
            Err(e) => {
                failures.push(format!(
                    "example {} ({}): decode failed: {e}",
                    ex.n, ex.title
                ));
                continue;
            }
        };
        for (name, want) in &ex.expect {
            let got = column(&row, name);
            if got != want.as_deref() {
                failures.push(format!(
                    "example {} ({}), column `{name}`: expected {want:?}, got {got:?}",
                    ex.n, ex.title
                ));
            }
        }
    }
    eprintln!(
        "§7 examples: {ran} ran, {} skipped {skipped:?}",
        skipped.len()
    );
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        ran >= MIN_RUN,
        "only {ran} of 20 examples ran (skipped: {skipped:?}); at least {MIN_RUN} must"
    );
}

/// xorshift64*: a tiny deterministic generator, so a failure is reproducible from its index.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-ish in `0..n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &'a [&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// Parameter names the shipped templates map, so that hostile values reach the normalizers.
#[rustfmt::skip]
const NAMES: &[&str] = &[
    "ip", "ipv6", "ua", "user_agent", "useragent", "ts", "click_time", "clicktime", "timestamp",
    "os", "device_os_type", "devicetype", "mo", "0a", "imei", "imei_md5", "imeiMd5", "muid",
    "idfa", "idfa2", "idfa_md5", "oaid", "hash_oaid", "androidid", "hash_android_id",
    "android_id_md5", "mac", "mac_md5", "caid", "callback", "callback_url", "IMP", "ext_info",
    "click_id", "campaign_id", "aid", "cid", "csite", "request_id", "model", "o", "u", "k", "p",
    "m2", "zhs2s", "sign", "", "%", "+", "a%00b", "名字",
];

/// Values: ids, timestamps of every length, addresses, macros in all four syntaxes, markers.
#[rustfmt::skip]
const VALUES: &[&str] = &[
    "", "0", "-1", "1", "2", "4", "ios", "android", "iPhone15,2", "null", "NULL", "undefined",
    "__IMEI__", "__imei__", "__", "____", "{{IP}}", "{{", "}}", "{ua}", "{}", "$im$", "$$", "$",
    "1718000000", "1718000000123", "1718000000123456", "99999999999999", "9223372036854775807",
    "-9223372036854775808", "0000000000", "203.0.113.45", "2001:db8::1", "[2001:db8::1]",
    "[::ffff:10.0.0.1]", "::", "256.1.1.1", "0b1f5c17d4d1484f7f8b9349d542a75b",
    "F2D1311CA5C1ECB214C19A26E9DDBAD0", "00000000-0000-0000-0000-000000000000",
    "02:00:00:00:00:00", "3C:2E:FF:11:22:33", "6D92078A-8246-4BA4-AE5B-76104861E7DC",
    "https%3A%2F%2Fx.example%2Fcb%3Fa%3D1%2526b", "http://x.example/?a=1&b=2", "拉活测试",
    "%E6%8B%89", "%E6%8B", "%FF%FE", "%C0%80", "%ED%A0%80", "%F4%90%80%80", "%", "%%", "%2",
    "%zz", "%%41", "+", "++", "%2B", "a+b%20c", "\u{feff}", "🦀", "\u{fffd}", " ", "\t",
];

/// Separators and junk between tokens.
#[rustfmt::skip]
const GLUE: &[&str] = &["&", "&", "&", "=", "&&", "==", "&=", "=&", "?", "#", ",", ";"];

/// One pseudo-random query string; bytes outside UTF-8 are made valid lossily, as a collector
/// reading a raw request target would have to.
fn random_query(rng: &mut XorShift) -> String {
    let mut bytes: Vec<u8> = Vec::new();
    let params = match rng.below(100) {
        0..=3 => 0,
        4 => 100 + rng.below(300),
        _ => rng.below(24),
    };
    for i in 0..params {
        if i > 0 {
            bytes.extend_from_slice(rng.pick(GLUE).as_bytes());
        }
        bytes.extend_from_slice(rng.pick(NAMES).as_bytes());
        if rng.below(8) != 0 {
            bytes.push(b'=');
        }
        match rng.below(40) {
            // Raw random bytes, most of them not UTF-8.
            0..=3 => {
                for _ in 0..rng.below(64) {
                    bytes.push((rng.next() & 0xff) as u8);
                }
            }
            // A very long value: up to 20 KB of escapes, pluses and text.
            4 if rng.below(40) == 0 => {
                let len = 1 + rng.below(20 * 1024);
                let start = bytes.len();
                while bytes.len() - start < len {
                    let piece = rng.pick(VALUES);
                    bytes.extend_from_slice(piece.as_bytes());
                    if piece.is_empty() {
                        bytes.push(b'x');
                    }
                }
            }
            // Several values glued together.
            5..=9 => {
                for _ in 0..1 + rng.below(4) {
                    bytes.extend_from_slice(rng.pick(VALUES).as_bytes());
                }
            }
            _ => bytes.extend_from_slice(rng.pick(VALUES).as_bytes()),
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Invariants every decoded row keeps, whatever the query.
fn check_row(row: &Row, query: &str, case: usize, channel: &str) {
    let ctx = || format!("case {case}, channel {channel}, query {query:?}");
    let names: Vec<&str> = row.iter().map(|(c, _)| *c).collect();
    assert_eq!(names, all_columns(), "column order ({})", ctx());
    assert_eq!(
        column(row, "raw_query"),
        Some(query),
        "raw_query ({})",
        ctx()
    );
    assert!(
        column(row, "event_time").is_some(),
        "event_time ({})",
        ctx()
    );
    for field in CanonicalField::ALL {
        let name = field.as_str();
        let Some(value) = column(row, name) else {
            continue;
        };
        if name.ends_with("_md5") {
            assert!(
                value.len() == 32
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
                "`{name}` = {value:?} is not 32 lower-case hex ({})",
                ctx()
            );
        }
    }
    if let Some(ts) = column(row, "ts") {
        assert!(ts.parse::<i64>().is_ok(), "ts = {ts:?} ({})", ctx());
    }
    for name in ["ip", "ipv6", "user_ip"] {
        if let Some(ip) = column(row, name) {
            assert!(parse_ip(ip).is_some(), "`{name}` = {ip:?} ({})", ctx());
        }
    }
}

#[test]
fn hostile_queries_never_panic_and_always_decode() {
    const CASES: usize = 20_000;
    let registry = shipped_registry();
    let geo_dir = tempfile::tempdir().expect("tempdir");
    let enricher = crate::enrich::test_enricher(geo_dir.path());
    let channels = [
        "ocean_engine",
        "tencent_ads",
        "kuaishou",
        "baidu",
        "weibo",
        "zhihu",
        "oppo",
        "huawei",
        "bilibili",
        "no_such_media",
    ];
    let endpoints = [Endpoint::Click, Endpoint::Impression, Endpoint::Feedback];
    let received = [
        "2024-06-10T06:13:20Z",
        "2024-06-10T06:13:20.123456Z",
        "1970-01-01T00:00:00Z",
        "2024-06-10T14:13:20+08:00",
    ];
    let forwarded = [
        None,
        Some("203.0.113.1, 10.0.0.1"),
        Some("garbage,,"),
        Some(""),
    ];

    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let started = Instant::now();
    let mut longest = 0;
    let mut total = 0;
    for case in 0..CASES {
        let query = random_query(&mut rng);
        longest = longest.max(query.len());
        total += query.len();
        // The query decoder alone: every pair comes back, nothing panics.
        let (params, _issues) = decode_query(&query);
        let pairs = query.split('&').filter(|p| !p.is_empty()).count();
        assert_eq!(params.len(), pairs, "case {case}: {query:?}");

        let channel = channels[case % channels.len()];
        let record = hit(
            channel,
            endpoints[rng.below(endpoints.len())],
            &query,
            received[rng.below(received.len())],
            forwarded[rng.below(forwarded.len())],
        );
        match decode(&record_bytes(&record), &registry, &enricher) {
            Ok(row) => check_row(&row, &query, case, channel),
            Err(e) => panic!("case {case}, channel {channel}: {e} (query {query:?})"),
        }
    }
    let elapsed = started.elapsed();
    eprintln!("{CASES} hostile queries ({total} bytes) in {elapsed:?}, longest {longest} bytes");
    assert!(
        longest >= 10 * 1024,
        "the generator must produce very long queries"
    );
}

#[test]
fn thousands_of_parameters_decode_and_duplicates_are_detected_among_them() {
    // 16 KB is the collector's default URL limit: thousands of parameters, all distinct, or with
    // one duplicate at the very end, or all the same. (Speed is measured by benches, not here.)
    let many_names: Vec<String> = (0..8000).map(|i| format!("p{i}=")).collect();
    let distinct = many_names.join("&");
    let with_dup = format!("{distinct}&p0=again");
    let all_same = "a&".repeat(8 * 1024);
    let (params, issues) = decode_query(&distinct);
    assert_eq!((params.len(), issues.duplicate_params), (8000, false));
    let (params, issues) = decode_query(&with_dup);
    assert_eq!((params.len(), issues.duplicate_params), (8001, true));
    let (_, issues) = decode_query(&all_same);
    assert!(issues.duplicate_params);
    let registry = shipped_registry();
    let enricher = Enricher::without_geo().expect("enricher");
    for query in [distinct, all_same] {
        let row = decode(
            &record_bytes(&hit(
                "ocean_engine",
                Endpoint::Click,
                &query,
                "2024-06-10T06:13:20Z",
                None,
            )),
            &registry,
            &enricher,
        );
        assert!(row.is_ok(), "{row:?}");
    }
}
