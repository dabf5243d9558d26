//! A small MaxMind DB writer for tests: the suite builds its own `.mmdb` instead of shipping a
//! third-party database. It writes format 2.0 (https://maxmind.github.io/MaxMind-DB/): an IPv6
//! binary search tree with 32-bit records (IPv4 networks under `::/96`), a 16-byte separator,
//! the data section, then `\xAB\xCD\xEFMaxMind.com` and the metadata map.
//!
//! Only what GeoIP2-City-shaped test records need: maps, arrays, UTF-8 strings, unsigned ints.
//! Networks must not overlap. This file uses no `crate::` paths: the integration tests include
//! it by path (`tests/it/enrich.rs`).

use std::net::IpAddr;

/// A value in MaxMind DB's data format.
#[derive(Debug, Clone)]
pub enum Value {
    Str(String),
    U16(u16),
    U32(u32),
    U64(u64),
    Map(Vec<(String, Value)>),
    Array(Vec<Value>),
}

/// The control byte(s) of a field: type (extended types 8+ take a second byte) and size.
fn control(out: &mut Vec<u8>, kind: u8, size: usize) {
    let (size_bits, extra): (u8, Vec<u8>) = match size {
        0..=28 => (size as u8, Vec::new()),
        29..=284 => (29, vec![(size - 29) as u8]),
        285..=65_820 => (30, ((size - 285) as u16).to_be_bytes().to_vec()),
        _ => (31, ((size - 65_821) as u32).to_be_bytes()[1..].to_vec()),
    };
    if kind <= 7 {
        out.push((kind << 5) | size_bits);
    } else {
        out.push(size_bits);
        out.push(kind - 7);
    }
    out.extend(extra);
}

/// Big-endian bytes without leading zeros.
fn minimal(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

impl Value {
    /// Appends the encoded value.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Str(s) => {
                control(out, 2, s.len());
                out.extend_from_slice(s.as_bytes());
            }
            Value::U16(n) => {
                let b = n.to_be_bytes();
                let m = minimal(&b);
                control(out, 5, m.len());
                out.extend_from_slice(m);
            }
            Value::U32(n) => {
                let b = n.to_be_bytes();
                let m = minimal(&b);
                control(out, 6, m.len());
                out.extend_from_slice(m);
            }
            Value::U64(n) => {
                let b = n.to_be_bytes();
                let m = minimal(&b);
                control(out, 9, m.len());
                out.extend_from_slice(m);
            }
            Value::Map(pairs) => {
                control(out, 7, pairs.len());
                for (k, v) in pairs {
                    Value::Str(k.clone()).encode(out);
                    v.encode(out);
                }
            }
            Value::Array(items) => {
                control(out, 11, items.len());
                for v in items {
                    v.encode(out);
                }
            }
        }
    }
}

/// A search-tree record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Record {
    Empty,
    Node(u32),
    Data(u32),
}

/// Builds a database from (network, record) pairs.
#[derive(Debug, Default)]
pub struct Writer {
    nodes: Vec<[Record; 2]>,
    data: Vec<u8>,
    database_type: String,
}

/// `1.2.3.0/24` or `2400:da00::/32` → 128 bits and the prefix length in the IPv6 tree.
fn network(cidr: &str) -> (u128, u32) {
    let (addr, len) = cidr.split_once('/').unwrap_or((cidr, ""));
    let ip: IpAddr = addr
        .parse()
        .unwrap_or_else(|e| panic!("network {cidr}: {e}"));
    match ip {
        IpAddr::V4(v4) => {
            let len: u32 = len.parse().unwrap_or(32);
            (u128::from(u32::from(v4)), 96 + len)
        }
        IpAddr::V6(v6) => (u128::from(v6), len.parse().unwrap_or(128)),
    }
}

impl Writer {
    pub fn new(database_type: &str) -> Self {
        Self {
            nodes: vec![[Record::Empty; 2]],
            data: Vec::new(),
            database_type: database_type.to_string(),
        }
    }

    /// Adds a network with its record. Panics on overlapping networks (a test bug).
    pub fn insert(&mut self, cidr: &str, value: &Value) {
        let (bits, len) = network(cidr);
        assert!((1..=128).contains(&len), "network {cidr}: bad prefix");
        let offset = self.data.len() as u32;
        value.encode(&mut self.data);
        let mut node = 0usize;
        for depth in 0..len {
            let bit = ((bits >> (127 - depth)) & 1) as usize;
            if depth == len - 1 {
                assert_eq!(
                    self.nodes[node][bit],
                    Record::Empty,
                    "network {cidr} overlaps"
                );
                self.nodes[node][bit] = Record::Data(offset);
                break;
            }
            node = match self.nodes[node][bit] {
                Record::Node(n) => n as usize,
                Record::Empty => {
                    self.nodes.push([Record::Empty; 2]);
                    let n = self.nodes.len() - 1;
                    self.nodes[node][bit] = Record::Node(n as u32);
                    n
                }
                Record::Data(_) => panic!("network {cidr} overlaps"),
            };
        }
    }

    /// The database file's bytes.
    pub fn finish(self) -> Vec<u8> {
        let count = self.nodes.len() as u32;
        let mut out = Vec::new();
        for node in &self.nodes {
            for rec in node {
                let v = match *rec {
                    Record::Empty => count,
                    Record::Node(n) => n,
                    Record::Data(off) => count + 16 + off,
                };
                out.extend_from_slice(&v.to_be_bytes());
            }
        }
        out.extend_from_slice(&[0u8; 16]);
        out.extend_from_slice(&self.data);
        out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
        let metadata = Value::Map(vec![
            ("binary_format_major_version".into(), Value::U16(2)),
            ("binary_format_minor_version".into(), Value::U16(0)),
            ("build_epoch".into(), Value::U64(1_718_000_000)),
            ("database_type".into(), Value::Str(self.database_type)),
            (
                "description".into(),
                Value::Map(vec![(
                    "en".into(),
                    Value::Str("backflow test database".into()),
                )]),
            ),
            ("ip_version".into(), Value::U16(6)),
            (
                "languages".into(),
                Value::Array(vec![Value::Str("en".into()), Value::Str("zh-CN".into())]),
            ),
            ("node_count".into(), Value::U32(count)),
            ("record_size".into(), Value::U16(32)),
        ]);
        metadata.encode(&mut out);
        out
    }
}

/// `{"en": …, "zh-CN": …}` with the Chinese name only (the English one is not needed by tests).
fn names(zh: &str) -> Value {
    Value::Map(vec![("zh-CN".into(), Value::Str(zh.into()))])
}

/// One located network: (network, country ISO code, country, province, city).
pub type CityRow<'a> = (&'a str, &'a str, &'a str, Option<&'a str>, Option<&'a str>);

/// A GeoIP2-City-shaped database of located networks.
pub fn city_db(rows: &[CityRow<'_>]) -> Vec<u8> {
    let mut writer = Writer::new("backflow-test-City");
    for (cidr, iso, country, province, city) in rows {
        let mut record = vec![(
            "country".to_string(),
            Value::Map(vec![
                ("iso_code".into(), Value::Str((*iso).into())),
                ("names".into(), names(country)),
            ]),
        )];
        if let Some(p) = province {
            record.push((
                "subdivisions".into(),
                Value::Array(vec![Value::Map(vec![("names".into(), names(p))])]),
            ));
        }
        if let Some(c) = city {
            record.push(("city".into(), Value::Map(vec![("names".into(), names(c))])));
        }
        writer.insert(cidr, &Value::Map(record));
    }
    writer.finish()
}
