//! Decoding one JSON object (an NDJSON line, a Kafka message, an HTTP record) into a text row,
//! without allocating per object.
//!
//! [`parse_object`] (serde_json, borrowed raw values) is the reference: it decides what is valid
//! and words every error. [`ObjectDecoder`] puts a scanner in front of it for the objects sources
//! nearly always carry — flat members whose values are strings, numbers, booleans or null — which
//! records the members as byte ranges in buffers reused from one object to the next and appends
//! them straight to the frame builder. The scanner only accepts what the reference accepts, with
//! the same result (the tests compare both on mutated inputs); on anything else (a nested value,
//! invalid JSON, a string escape it cannot resolve) it gives up and the reference decodes the
//! object, so rows and quarantine reasons do not depend on which one ran.

use super::object_store_files::parse_object;
use crate::pipeline::frame::TextFrameBuilder;

/// Where a key or value's text is: a byte range of the object, or an unescaped copy.
#[derive(Debug, Clone, Copy)]
enum Text {
    Span(usize, usize),
    Owned(usize),
}

/// Decodes JSON objects into rows; keep one per batch to reuse its buffers.
#[derive(Debug, Default)]
pub struct ObjectDecoder {
    members: Vec<(Text, Option<Text>)>,
    /// Unescaped strings of the current object (only those with a `\` escape).
    owned: Vec<String>,
}

impl ObjectDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes `data` (one JSON object) and appends it to `rows` as the row `(file, line)`, after
    /// the `leading` fields. The error is [`parse_object`]'s: why `data` is not a JSON object.
    pub fn push_row(
        &mut self,
        data: &[u8],
        leading: &[(&str, Option<&str>)],
        rows: &mut TextFrameBuilder,
        file: &str,
        line: i64,
    ) -> Result<(), String> {
        if let Some(text) = self.scan(data) {
            let resolve = |t: Text| match t {
                Text::Span(from, to) => &text[from..to],
                Text::Owned(i) => self.owned[i].as_str(),
            };
            rows.push(
                file,
                line,
                leading.iter().copied().chain(
                    self.members
                        .iter()
                        .map(|&(key, value)| (resolve(key), value.map(resolve))),
                ),
            );
            return Ok(());
        }
        let fields = parse_object(data)?;
        rows.push(
            file,
            line,
            leading.iter().copied().chain(
                fields
                    .iter()
                    .map(|(key, value)| (key.as_ref(), value.as_deref())),
            ),
        );
        Ok(())
    }

    /// The fast path: records the members of a flat object with scalar values; `None` when the
    /// reference must decide.
    fn scan<'d>(&mut self, data: &'d [u8]) -> Option<&'d str> {
        self.members.clear();
        self.owned.clear();
        // Valid JSON is valid UTF-8; checking the whole object once lets every range below be
        // sliced from the text (all of them start and end next to an ASCII delimiter).
        let text = std::str::from_utf8(data).ok()?;
        let b = text.as_bytes();
        let mut i = skip_ws(b, 0);
        if b.get(i) != Some(&b'{') {
            return None;
        }
        i = skip_ws(b, i + 1);
        if b.get(i) == Some(&b'}') {
            i += 1;
        } else {
            loop {
                if b.get(i) != Some(&b'"') {
                    return None;
                }
                let (key, next) = self.string(text, i)?;
                i = skip_ws(b, next);
                if b.get(i) != Some(&b':') {
                    return None;
                }
                i = skip_ws(b, i + 1);
                let value = match *b.get(i)? {
                    b'"' => {
                        let (value, next) = self.string(text, i)?;
                        i = next;
                        Some(value)
                    }
                    b'n' if b[i..].starts_with(b"null") => {
                        i += 4;
                        None
                    }
                    b't' if b[i..].starts_with(b"true") => {
                        i += 4;
                        Some(Text::Span(i - 4, i))
                    }
                    b'f' if b[i..].starts_with(b"false") => {
                        i += 5;
                        Some(Text::Span(i - 5, i))
                    }
                    b'-' | b'0'..=b'9' => {
                        let end = number(b, i)?;
                        let value = Text::Span(i, end);
                        i = end;
                        Some(value)
                    }
                    // Nested objects and arrays, and anything invalid.
                    _ => return None,
                };
                self.members.push((key, value));
                i = skip_ws(b, i);
                match b.get(i) {
                    Some(b',') => i = skip_ws(b, i + 1),
                    Some(b'}') => {
                        i += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        (skip_ws(b, i) == b.len()).then_some(text)
    }

    /// The string starting with the quote at `start`: its text and the index after its closing
    /// quote. Escapes are resolved by serde_json, exactly as the reference resolves them.
    fn string(&mut self, text: &str, start: usize) -> Option<(Text, usize)> {
        let b = text.as_bytes();
        // The first byte that is a quote, a backslash or a control character, 8 bytes a step.
        let mut i = start + 1;
        while let Some(word) = b.get(i..i + 8) {
            let flags = specials(u64::from_le_bytes(word.try_into().ok()?));
            if flags != 0 {
                i += (flags.trailing_zeros() / 8) as usize;
                break;
            }
            i += 8;
        }
        while !matches!(*b.get(i)?, b'"' | b'\\' | 0..=0x1f) {
            i += 1;
        }
        if b[i] == b'"' {
            return Some((Text::Span(start + 1, i), i + 1));
        }
        // Escapes (rare): find the closing quote, then let serde_json unescape.
        loop {
            match *b.get(i)? {
                b'"' => break,
                b'\\' => i += 2,
                // Control characters are invalid in a JSON string.
                0..=0x1f => return None,
                _ => i += 1,
            }
        }
        let end = i + 1;
        let unescaped: String = serde_json::from_str(text.get(start..end)?).ok()?;
        self.owned.push(unescaped);
        Some((Text::Owned(self.owned.len() - 1), end))
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;

/// The bytes of `word` (little-endian) that are `"`, `\` or below 0x20, flagged in their high
/// bit. The lowest flag is exact; flags above it may be spurious (borrows), so only the lowest
/// is read.
fn specials(word: u64) -> u64 {
    let zero = |v: u64| v.wrapping_sub(ONES) & !v;
    let quote = zero(word ^ (ONES * u64::from(b'"')));
    let backslash = zero(word ^ (ONES * u64::from(b'\\')));
    let control = word.wrapping_sub(ONES * 0x20) & !word;
    (quote | backslash | control) & (ONES * 0x80)
}

/// JSON whitespace, as serde_json skips it.
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\t' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// The end of the number starting at `i`, by the JSON grammar
/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?` (what serde_json accepts as a raw value).
fn number(b: &[u8], mut i: usize) -> Option<usize> {
    let digits = |mut i: usize| {
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        i
    };
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match b.get(i)? {
        b'0' => i += 1,
        b'1'..=b'9' => i = digits(i + 1),
        _ => return None,
    }
    if b.get(i) == Some(&b'.') {
        let end = digits(i + 1);
        if end == i + 1 {
            return None;
        }
        i = end;
    }
    if let Some(b'e' | b'E') = b.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = b.get(i) {
            i += 1;
        }
        let end = digits(i);
        if end == i {
            return None;
        }
        i = end;
    }
    Some(i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::frame::rows_as_json;

    /// What the scanner makes of `data`, as the reference's field list.
    fn scanned(data: &[u8]) -> Option<Vec<(String, Option<String>)>> {
        let mut decoder = ObjectDecoder::new();
        let text = decoder.scan(data)?;
        let resolve = |t: Text| match t {
            Text::Span(from, to) => text[from..to].to_string(),
            Text::Owned(i) => decoder.owned[i].clone(),
        };
        Some(
            decoder
                .members
                .iter()
                .map(|&(k, v)| (resolve(k), v.map(resolve)))
                .collect(),
        )
    }

    fn reference(data: &[u8]) -> Result<Vec<(String, Option<String>)>, String> {
        parse_object(data).map(|fields| {
            fields
                .into_iter()
                .map(|(k, v)| (k.into_owned(), v.map(|v| v.into_owned())))
                .collect()
        })
    }

    /// The scanner either defers, or agrees with the reference (which must then accept).
    fn check(data: &[u8]) {
        if let Some(fields) = scanned(data) {
            assert_eq!(
                Ok(fields),
                reference(data),
                "{:?}",
                String::from_utf8_lossy(data)
            );
        }
    }

    const SEEDS: [&str; 9] = [
        r#"{"event_id":"e0000000001","cost_micros":37,"ok":true,"no":false,"x":null}"#,
        r#" { "a" : -0.5e+3 , "b":"caf\u00e9 \"q\" \\ \/","c":0,"d":-12.25E-2 } "#,
        r#"{"k\"ey":"v","uni":"日本語","e":"","n":1e5}"#,
        r#"{"dup":"1","dup":"2","t":"2026-03-01T00:00:00Z"}"#,
        r#"{}"#,
        r#"{"nested":{"a":[1,2]},"after":"x"}"#,
        r#"{"s":"\ud83d\ude00","lone":"\ud800"}"#,
        "{\"tab\":\"a\tb\",\"nl\":\"\\n\"}\r\n",
        r#"{"user_agent":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0","é":"ü→x"}"#,
    ];

    #[test]
    fn the_scanner_takes_flat_objects_and_defers_the_rest() {
        assert!(scanned(SEEDS[0].as_bytes()).is_some());
        assert!(scanned(SEEDS[1].as_bytes()).is_some());
        assert!(scanned(SEEDS[3].as_bytes()).is_some());
        assert!(scanned(SEEDS[4].as_bytes()).is_some());
        // Nested values, and invalid input, are the reference's.
        assert!(scanned(SEEDS[5].as_bytes()).is_none());
        assert!(scanned(b"[1]").is_none());
        assert!(scanned(br#"{"a":01}"#).is_none());
        assert!(scanned(br#"{"a":1,}"#).is_none());
        for seed in SEEDS {
            check(seed.as_bytes());
        }
    }

    #[test]
    fn the_scanner_agrees_with_the_reference_on_mutated_objects() {
        // Every seed with each byte deleted, replaced by an interesting byte, or followed by one.
        let bytes: &[u8] = b"\"\\{}[],:. -+0123456789eEtfnu\t\n\x01\x7fa";
        let mut cases = 0;
        for seed in SEEDS {
            let seed = seed.as_bytes();
            for i in 0..seed.len() {
                let mut deleted = seed.to_vec();
                deleted.remove(i);
                check(&deleted);
                for &b in bytes {
                    let mut replaced = seed.to_vec();
                    replaced[i] = b;
                    check(&replaced);
                    let mut inserted = seed.to_vec();
                    inserted.insert(i, b);
                    check(&inserted);
                    cases += 2;
                }
            }
            // Truncations and a non-UTF-8 byte.
            for end in 0..seed.len() {
                check(&seed[..end]);
            }
            let mut invalid = seed.to_vec();
            invalid.insert(seed.len() / 2, 0xff);
            check(&invalid);
        }
        assert!(cases > 10_000, "{cases}");
    }

    #[test]
    fn the_word_scan_finds_the_first_special_byte_at_every_position() {
        for at in 0..8 {
            for special in [b'"', b'\\', 0x00, 0x1f] {
                for filler in [b'a', 0x20, 0x7f, 0x80, 0xff, b'"' + 1, b'\\' - 1] {
                    let mut word = [filler; 8];
                    word[at] = special;
                    // Specials after the first one do not move it.
                    if at < 7 {
                        word[7] = b'"';
                    }
                    let flags = specials(u64::from_le_bytes(word));
                    assert_eq!(flags.trailing_zeros() / 8, at as u32, "{word:?}");
                }
            }
        }
        assert_eq!(specials(u64::from_le_bytes(*b"abc 012~")), 0);
    }

    #[test]
    fn rows_are_the_same_on_either_path() -> polars::prelude::PolarsResult<()> {
        let mut decoder = ObjectDecoder::new();
        let mut fast = TextFrameBuilder::new();
        let mut slow = TextFrameBuilder::new();
        for (n, seed) in SEEDS.iter().enumerate() {
            let line = n as i64 + 1;
            let lead = [("lead", Some("x"))];
            let got = decoder.push_row(seed.as_bytes(), &lead, &mut fast, "f", line);
            match parse_object(seed.as_bytes()) {
                Ok(fields) => {
                    assert_eq!(got, Ok(()));
                    slow.push(
                        "f",
                        line,
                        lead.into_iter()
                            .chain(fields.iter().map(|(k, v)| (k.as_ref(), v.as_deref()))),
                    );
                }
                Err(reason) => assert_eq!(got, Err(reason)),
            }
        }
        assert_eq!(
            rows_as_json(&fast.finish()?, true)?,
            rows_as_json(&slow.finish()?, true)?
        );
        Ok(())
    }
}
