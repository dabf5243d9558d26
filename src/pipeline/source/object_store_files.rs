//! The `object_store_files` source: NDJSON and CSV files (plain or gzip) dropped under a prefix.
//!
//! Positions are the explicit list of files a batch covers (path, size, e-tag). A file is
//! ingested exactly once: the catalog marks it in the same transaction that commits its batch,
//! and an open batch is replayed over the same list. A file that cannot be decoded as a whole
//! (truncated gzip, unreadable header) is quarantined as one record with the reason and never
//! half-ingested; a bad line or record is quarantined on its own.
//!
//! **Listing.** By default the whole prefix is listed for every batch. With
//! `listing: {mode: after_watermark}` only keys after the *watermark* — the greatest path the
//! pipeline has ingested, read from the catalog, so it moves only with commits — are listed
//! (S3 `start-after`: a prefix of 100 000 files costs one LIST request per batch, not 100), and
//! the whole prefix again when the last full listing is older than `full_every`, for files that
//! arrived under a smaller key. Stores that list in key order (S3, memory) stop listing once a
//! batch is full. Which files a batch takes never affects exactly-once: every file is ingested
//! once, keyed by its path.

use std::collections::HashSet;
use std::io::Read;

use bytes::Bytes;
use chrono::NaiveDate;
use chrono_tz::Tz;
use futures::{StreamExt, TryStreamExt};
use std::sync::Arc;

use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};

use crate::catalog::Catalog;
use crate::config::model::{Compression, FileFormat, Listing, ObjectStoreFilesSource};
use crate::pipeline::PipelineError;
use crate::storage::StorageUrl;
use crate::telemetry::Metrics;
use std::borrow::Cow;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::json_object::ObjectDecoder;
use crate::pipeline::frame::{Quarantine, QuarantinedRow, TextFrameBuilder};
use crate::storage::Location;

/// One source file as planned into a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceFile {
    /// Object path in the store (the catalog's key for "ingested").
    pub path: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e_tag: Option<String>,
}

/// A batch's positions for this source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePositions {
    pub files: Vec<SourceFile>,
    /// How the files were found (recorded in the manifest for operators).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listing: Option<ListingInfo>,
}

/// What the listing that planned a batch did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListingInfo {
    /// `full` or `after_watermark`.
    pub kind: String,
    /// The watermark listed after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Objects the listing returned (before filtering).
    pub listed: u64,
}

/// The catalog mark holding when the prefix was last listed in full (RFC 3339).
const FULL_LISTING_MARK: &str = "full_listing_at";

/// Plans the next batch of a pipeline: decides the listing (full or after the watermark),
/// lists, and records a full listing in the catalog. Returns the batch's positions, `None`
/// when nothing is pending.
pub async fn plan_batch(
    catalog: &Catalog,
    metrics: &Metrics,
    pipeline: &str,
    location: &Location,
    cfg: &ObjectStoreFilesSource,
    window: Window,
    tz: Tz,
) -> Result<Option<FilePositions>, PipelineError> {
    let now = chrono::Utc::now();
    let watermark = match cfg.listing {
        Listing::Full => None,
        Listing::AfterWatermark { full_every } => {
            let last_full = catalog
                .source_mark(pipeline, FULL_LISTING_MARK)?
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok());
            let due = last_full.is_none_or(|at| {
                (now - at.with_timezone(&chrono::Utc))
                    .to_std()
                    .is_ok_and(|age| age >= full_every)
            });
            if due {
                None
            } else {
                // Only a watermark inside the prefix bounds the listing (a changed URL lists all).
                let prefix = location.prefix.as_ref();
                catalog
                    .max_ingested_file(pipeline)?
                    .filter(|w| prefix.is_empty() || w.starts_with(&format!("{prefix}/")))
            }
        }
    };
    let ingested = match &watermark {
        Some(after) => catalog.ingested_files_after(pipeline, after)?,
        None => catalog.ingested_files(pipeline)?,
    };
    let planned = plan(location, cfg, &ingested, watermark.as_deref(), window, tz).await?;
    let kind = if watermark.is_some() {
        "after_watermark"
    } else {
        "full"
    };
    metrics
        .source
        .listings
        .get_or_create(&Metrics::source_labels(pipeline, kind))
        .inc();
    metrics
        .source
        .objects_listed
        .get_or_create(&Metrics::labels(pipeline))
        .inc_by(planned.listed);
    // At info when the listing found files for a batch; an idle poll (every minute on a
    // schedule) at debug; the listing metrics above count both.
    if planned.files.is_empty() {
        tracing::debug!(
            pipeline,
            listing = kind,
            after = watermark.as_deref().unwrap_or(""),
            listed = planned.listed,
            batch_files = 0,
            "source prefix listed"
        );
    } else {
        tracing::info!(
            pipeline,
            listing = kind,
            after = watermark.as_deref().unwrap_or(""),
            listed = planned.listed,
            batch_files = planned.files.len(),
            "source prefix listed"
        );
    }
    if watermark.is_none() && matches!(cfg.listing, Listing::AfterWatermark { .. }) {
        // Every file under the old watermark is in this batch (or was ingested): until the
        // next full listing, listing after the watermark misses nothing known.
        let below = catalog.max_ingested_file(pipeline)?;
        let late_left =
            planned.cut && below.is_some_and(|w| planned.files.last().is_some_and(|f| f.path <= w));
        if !late_left {
            catalog.set_source_mark(
                pipeline,
                FULL_LISTING_MARK,
                &now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            )?;
        }
    }
    if planned.files.is_empty() {
        return Ok(None);
    }
    Ok(Some(FilePositions {
        files: planned.files,
        listing: Some(ListingInfo {
            kind: kind.to_string(),
            after: watermark,
            listed: planned.listed,
        }),
    }))
}

/// The files of the next batch, and what listing them took.
#[derive(Debug)]
pub struct Planned {
    pub files: Vec<SourceFile>,
    /// Objects the listing returned.
    pub listed: u64,
    /// More pending files were seen (or not listed) beyond the batch.
    pub cut: bool,
}

/// Inclusive range of modification dates (in the workspace zone) for `backflow run --from --to`.
pub type Window = (Option<NaiveDate>, Option<NaiveDate>);

fn matches_suffix(cfg: &ObjectStoreFilesSource, name: &str) -> bool {
    let base = name.rsplit('/').next().unwrap_or(name);
    !base.starts_with('.')
        && !base.starts_with('_')
        && cfg.suffixes.iter().any(|s| base.ends_with(s.as_str()))
}

/// Lists not-yet-ingested files (after `after`, if given) in path order and takes the next
/// batch's worth.
pub async fn plan(
    location: &Location,
    cfg: &ObjectStoreFilesSource,
    ingested: &HashSet<String>,
    after: Option<&str>,
    window: Window,
    tz: Tz,
) -> Result<Planned, PipelineError> {
    let storage = |source| PipelineError::Storage {
        path: location.url.to_string(),
        source,
    };
    let mut listing = match after {
        Some(after) => location.store.list_with_offset(
            Some(&location.prefix),
            &object_store::path::Path::from(after),
        ),
        None => location.store.list(Some(&location.prefix)),
    };
    // S3 (ListObjectsV2) and the memory store list in key order: planning can stop listing
    // once the batch is full. Local directories are listed in no order: all, then sorted.
    let ordered = matches!(
        location.url,
        StorageUrl::S3 { .. } | StorageUrl::Memory { .. }
    );
    let pending = |m: &ObjectMeta| {
        let day = m.last_modified.with_timezone(&tz).date_naive();
        matches_suffix(cfg, m.location.as_ref())
            && !ingested.contains(m.location.as_ref())
            && window.0.is_none_or(|from| day >= from)
            && window.1.is_none_or(|to| day <= to)
    };
    let mut listed = 0u64;
    let mut batch = Batch::new(cfg);
    if ordered {
        while let Some(meta) = listing.try_next().await.map_err(storage)? {
            listed += 1;
            if pending(&meta) && !batch.add(meta) {
                return Ok(batch.finish(listed, true));
            }
        }
        return Ok(batch.finish(listed, false));
    }
    let mut all: Vec<ObjectMeta> = Vec::new();
    while let Some(meta) = listing.try_next().await.map_err(storage)? {
        listed += 1;
        if pending(&meta) {
            all.push(meta);
        }
    }
    all.sort_by(|a, b| a.location.cmp(&b.location));
    for meta in all {
        if !batch.add(meta) {
            return Ok(batch.finish(listed, true));
        }
    }
    Ok(batch.finish(listed, false))
}

/// A batch being filled in path order, within the file and byte limits.
struct Batch<'a> {
    cfg: &'a ObjectStoreFilesSource,
    files: Vec<SourceFile>,
    bytes: u64,
}

impl<'a> Batch<'a> {
    fn new(cfg: &'a ObjectStoreFilesSource) -> Self {
        Batch {
            cfg,
            files: Vec::new(),
            bytes: 0,
        }
    }

    /// Adds a file unless the batch is full (a single large file still makes a batch).
    fn add(&mut self, meta: ObjectMeta) -> bool {
        if !self.files.is_empty()
            && (self.files.len() >= self.cfg.max_files_per_batch.get()
                || self.bytes + meta.size > self.cfg.max_bytes_per_batch.get())
        {
            return false;
        }
        self.bytes += meta.size;
        self.files.push(SourceFile {
            path: meta.location.to_string(),
            size: meta.size,
            e_tag: meta.e_tag,
        });
        true
    }

    fn finish(self, listed: u64, cut: bool) -> Planned {
        Planned {
            files: self.files,
            listed,
            cut,
        }
    }
}

/// Fetches the files of a batch (a few at a time), checking each is still what was planned.
pub async fn fetch(location: &Location, files: &[SourceFile]) -> Result<Vec<Bytes>, PipelineError> {
    let fetches = files.iter().cloned().map(|file| {
        let store = Arc::clone(&location.store);
        async move { fetch_one(store, file).await }
    });
    futures::stream::iter(fetches)
        .buffered(4)
        .try_collect()
        .await
}

async fn fetch_one(store: Arc<dyn ObjectStore>, file: SourceFile) -> Result<Bytes, PipelineError> {
    {
        let path = object_store::path::Path::from(file.path.as_str());
        let storage = |source| match source {
            object_store::Error::NotFound { .. } => PipelineError::SourceChanged {
                path: file.path.clone(),
                detail: "it was deleted".to_string(),
            },
            source => PipelineError::Storage {
                path: file.path.clone(),
                source,
            },
        };
        let bytes = store
            .get(&path)
            .await
            .map_err(storage)?
            .bytes()
            .await
            .map_err(storage)?;
        if bytes.len() as u64 != file.size {
            return Err(PipelineError::SourceChanged {
                path: file.path.clone(),
                detail: format!(
                    "planned with {} bytes, now {} bytes",
                    file.size,
                    bytes.len()
                ),
            });
        }
        Ok(bytes)
    }
}

fn is_gzip(cfg: &ObjectStoreFilesSource, path: &str) -> bool {
    match cfg.compression {
        Compression::Gzip => true,
        Compression::None => false,
        Compression::Auto => path.ends_with(".gz"),
    }
}

fn is_csv(cfg: &ObjectStoreFilesSource, path: &str) -> bool {
    match cfg.format {
        FileFormat::Csv => true,
        FileFormat::Ndjson => false,
        FileFormat::Auto => path.trim_end_matches(".gz").ends_with(".csv"),
    }
}

/// Outcome of decoding one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// Rows (and possibly quarantined lines) were taken from the file.
    Ok,
    /// The file as a whole could not be decoded and was quarantined as one record.
    Failed,
}

/// Decodes one file into `rows`; bad lines and undecodable files go to `quarantine`.
pub fn decode(
    cfg: &ObjectStoreFilesSource,
    file: &SourceFile,
    bytes: Bytes,
    rows: &mut TextFrameBuilder,
    quarantine: &mut Quarantine,
) -> Decoded {
    let whole_file = |quarantine: &mut Quarantine, reason: String| {
        quarantine.push(QuarantinedRow {
            reason: format!("{}: {reason}", file.path),
            source_file: Some(file.path.clone()),
            source_line: None,
            raw: None,
        });
        Decoded::Failed
    };
    let data: Bytes = if is_gzip(cfg, &file.path) {
        let mut out = Vec::with_capacity(bytes.len() * 4);
        match flate2::read::MultiGzDecoder::new(&bytes[..]).read_to_end(&mut out) {
            Ok(_) => Bytes::from(out),
            Err(e) => {
                return whole_file(
                    quarantine,
                    format!("not a readable gzip file (truncated or corrupt): {e}"),
                );
            }
        }
    } else {
        bytes
    };
    if is_csv(cfg, &file.path) {
        decode_csv(cfg, file, &data, rows, quarantine)
            .unwrap_or_else(|reason| whole_file(quarantine, reason))
    } else {
        decode_ndjson(file, &data, rows, quarantine);
        Decoded::Ok
    }
}

fn decode_ndjson(
    file: &SourceFile,
    data: &[u8],
    rows: &mut TextFrameBuilder,
    quarantine: &mut Quarantine,
) {
    let mut decoder = ObjectDecoder::new();
    for (index, line) in data.split(|&b| b == b'\n').enumerate() {
        let line_no = index as i64 + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let bad = |reason: String| QuarantinedRow {
            reason: format!("{}:{line_no}: {reason}", file.path),
            source_file: Some(file.path.clone()),
            source_line: Some(line_no),
            raw: Some(String::from_utf8_lossy(line).into_owned()),
        };
        if let Err(reason) = decoder.push_row(line, &[], rows, &file.path, line_no) {
            quarantine.push(bad(reason));
        }
    }
}

/// A field of a decoded JSON object: its name and its value as text (see [`raw_to_text`]).
pub type Field<'a> = (Cow<'a, str>, Option<Cow<'a, str>>);

/// Decodes one JSON object (an NDJSON line, a Kafka message) into fields; the error says why
/// it is not one (invalid JSON, or which kind of value it is instead).
pub fn parse_object(data: &[u8]) -> Result<Vec<Field<'_>>, String> {
    match serde_json::from_slice::<RawObject<'_>>(data) {
        Ok(RawObject(members)) => members
            .into_iter()
            .map(|(k, v)| Ok((k, raw_to_text(v).map_err(|e| format!("invalid JSON: {e}"))?)))
            .collect(),
        // Not an object (or not JSON): say what it is, from a full parse of this rare input.
        Err(_) => Err(match serde_json::from_slice::<serde_json::Value>(data) {
            Ok(other) => format!("expected a JSON object, found {}", json_kind(&other)),
            Err(e) => format!("invalid JSON: {e}"),
        }),
    }
}

/// A JSON object's members, borrowed from the line: keys and raw value text, in order.
struct RawObject<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for RawObject<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> Visitor<'de> for Members {
            type Value = RawObject<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some((Key(key), value)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    members.push((key, value));
                }
                Ok(RawObject(members))
            }
        }
        deserializer.deserialize_map(Members)
    }
}

/// An object key, borrowed from the line unless it has escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// A member's value as sources yield it: strings unescaped, null as null, anything else (numbers,
/// booleans, nested values) as its JSON text as written.
fn raw_to_text(raw: &RawValue) -> Result<Option<Cow<'_, str>>, serde_json::Error> {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'"') if !text.contains('\\') => Ok(Some(Cow::Borrowed(&text[1..text.len() - 1]))),
        Some(b'"') => serde_json::from_str::<String>(text).map(|s| Some(Cow::Owned(s))),
        Some(b'n') => Ok(None),
        _ => Ok(Some(Cow::Borrowed(text))),
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn decode_csv(
    cfg: &ObjectStoreFilesSource,
    file: &SourceFile,
    data: &[u8],
    rows: &mut TextFrameBuilder,
    quarantine: &mut Quarantine,
) -> Result<Decoded, String> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(cfg.csv.delimiter)
        .has_headers(cfg.csv.has_header)
        .flexible(true)
        .from_reader(data);
    let mut header: Option<Vec<String>> = None;
    if cfg.csv.has_header {
        let names = reader
            .byte_headers()
            .map_err(|e| format!("cannot read the CSV header: {e}"))?;
        let names = names
            .iter()
            .map(|n| String::from_utf8(n.to_vec()).map(|s| s.trim().to_string()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| "the CSV header is not UTF-8".to_string())?;
        header = Some(names);
    }
    // Everything decoded so far goes into a per-file builder first: a file that fails half-way
    // contributes no rows at all.
    let mut file_rows = Vec::new();
    let mut file_bad = Vec::new();
    let mut record = csv::ByteRecord::new();
    let mut index = 0i64;
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(format!("CSV is malformed: {e}")),
        }
        index += 1;
        let line = record.position().map_or(index, |p| p.line() as i64);
        let names = header
            .get_or_insert_with(|| (1..=record.len()).map(|i| format!("column_{i}")).collect());
        let raw = || {
            let fields: Vec<String> = record
                .iter()
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .collect();
            fields.join(&char::from(cfg.csv.delimiter).to_string())
        };
        let bad = |reason: String, raw: String| QuarantinedRow {
            reason: format!("{}:{line}: {reason}", file.path),
            source_file: Some(file.path.clone()),
            source_line: Some(line),
            raw: Some(raw),
        };
        if record.len() != names.len() {
            file_bad.push(bad(
                format!("expected {} fields, found {}", names.len(), record.len()),
                raw(),
            ));
            continue;
        }
        let mut fields = Vec::with_capacity(names.len());
        let mut utf8 = true;
        for (name, value) in names.iter().zip(record.iter()) {
            match std::str::from_utf8(value) {
                Ok("") => fields.push((name.clone(), None)),
                Ok(v) => fields.push((name.clone(), Some(v.to_string()))),
                Err(_) => {
                    utf8 = false;
                    break;
                }
            }
        }
        if utf8 {
            file_rows.push((line, fields));
        } else {
            file_bad.push(bad("a field is not valid UTF-8".to_string(), raw()));
        }
    }
    for (line, fields) in file_rows {
        rows.push(&file.path, line, fields);
    }
    for bad in file_bad {
        quarantine.push(bad);
    }
    Ok(Decoded::Ok)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::num::{NonZeroU64, NonZeroUsize};

    use super::*;
    use crate::config::model::CsvOptions;
    use crate::pipeline::frame::rows_as_json;

    fn cfg() -> ObjectStoreFilesSource {
        ObjectStoreFilesSource {
            url: "memory://t"
                .parse()
                .unwrap_or(crate::storage::StorageUrl::File {
                    root: "/tmp".into(),
                }),
            format: FileFormat::Auto,
            compression: Compression::Auto,
            suffixes: vec![
                ".ndjson".into(),
                ".csv".into(),
                ".ndjson.gz".into(),
                ".csv.gz".into(),
            ],
            csv: CsvOptions::default(),
            max_files_per_batch: NonZeroUsize::MIN,
            max_bytes_per_batch: NonZeroU64::MIN,
            listing: crate::config::model::Listing::Full,
        }
    }

    fn file(path: &str, data: &[u8]) -> SourceFile {
        SourceFile {
            path: path.into(),
            size: data.len() as u64,
            e_tag: None,
        }
    }

    fn run(path: &str, data: &[u8]) -> (Decoded, usize, Quarantine) {
        let mut rows = TextFrameBuilder::new();
        let mut q = Quarantine::default();
        let outcome = decode(
            &cfg(),
            &file(path, data),
            Bytes::copy_from_slice(data),
            &mut rows,
            &mut q,
        );
        (outcome, rows.rows(), q)
    }

    #[test]
    fn ndjson_bad_lines_are_quarantined_with_file_and_line() {
        let data = b"{\"a\":1}\n[1,2]\n\n{oops\n{\"a\":\"x\",\"b\":{\"c\":true}}\r\n";
        let (outcome, rows, q) = run("d/x.ndjson", data);
        assert_eq!(outcome, Decoded::Ok);
        assert_eq!(rows, 2);
        assert_eq!(
            q.rows[0].reason,
            "d/x.ndjson:2: expected a JSON object, found an array"
        );
        assert_eq!(q.rows[0].source_line, Some(2));
        assert!(
            q.rows[1]
                .reason
                .starts_with("d/x.ndjson:4: invalid JSON: key must be a string"),
            "{}",
            q.rows[1].reason
        );
    }

    #[test]
    fn nested_values_become_json_text() -> polars::prelude::PolarsResult<()> {
        let mut rows = TextFrameBuilder::new();
        let mut q = Quarantine::default();
        let data = b"{\"n\":1.5,\"o\":{\"k\":[1]},\"s\":\"t\",\"z\":null}\n";
        decode(
            &cfg(),
            &file("x.ndjson", data),
            Bytes::copy_from_slice(data),
            &mut rows,
            &mut q,
        );
        let json = rows_as_json(&rows.finish()?, false)?;
        assert_eq!(
            serde_json::Value::Object(json[0].clone()),
            serde_json::json!({"n": "1.5", "o": "{\"k\":[1]}", "s": "t", "z": null})
        );
        Ok(())
    }

    #[test]
    fn csv_rows_with_the_wrong_field_count_are_quarantined() {
        let (outcome, rows, q) = run("x.csv", b"a,b,c\n1,2,3\n4,5\n6,7,8\n");
        assert_eq!((outcome, rows), (Decoded::Ok, 2));
        assert_eq!(q.rows[0].reason, "x.csv:3: expected 3 fields, found 2");
        assert_eq!(q.rows[0].raw.as_deref(), Some("4,5"));
    }

    #[test]
    fn a_truncated_gzip_file_is_quarantined_whole() -> std::io::Result<()> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        for i in 0..1000 {
            writeln!(enc, "{{\"i\":{i}}}")?;
        }
        let full = enc.finish()?;
        let (outcome, rows, _) = run("x.ndjson.gz", &full);
        assert_eq!((outcome, rows), (Decoded::Ok, 1000));
        let (outcome, rows, q) = run("x.ndjson.gz", &full[..full.len() / 2]);
        assert_eq!((outcome, rows), (Decoded::Failed, 0));
        assert!(
            q.rows[0]
                .reason
                .starts_with("x.ndjson.gz: not a readable gzip file"),
            "{}",
            q.rows[0].reason
        );
        Ok(())
    }
}
