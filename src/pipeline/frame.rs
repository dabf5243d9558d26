//! Building frames from raw records, the quarantine accumulator, and rendering rows as JSON.
//!
//! Sources yield every value as text (JSON numbers and booleans as written, nested values as JSON
//! text, empty CSV fields as null): types are decided by `cast` and `validate` steps, so one bad
//! value sends one row to quarantine instead of failing a whole file. Every frame carries the
//! lineage columns [`SOURCE_FILE`] and [`SOURCE_LINE`] until the sink drops them.

use std::collections::HashMap;

use polars::prelude::*;

/// Lineage column: the object path a row came from.
pub const SOURCE_FILE: &str = "_source_file";
/// Lineage column: the 1-based line (NDJSON) or record (CSV) number in that file.
pub const SOURCE_LINE: &str = "_source_line";

/// True for the lineage columns the runtime adds.
pub fn is_lineage(name: &str) -> bool {
    name == SOURCE_FILE || name == SOURCE_LINE
}

/// Collects text records into columns, keeping first-seen column order. Values are appended
/// straight into Polars string builders (no per-value allocation).
pub struct TextFrameBuilder {
    index: HashMap<String, usize>,
    columns: Vec<TextColumn>,
    /// Column index last seen at each key position of a record.
    hints: Vec<usize>,
    files: StringChunkedBuilder,
    lines: Vec<i64>,
    /// Rows expected in all (see [`TextFrameBuilder::reserve`]): the capacity of new columns.
    expected: usize,
}

struct TextColumn {
    builder: StringChunkedBuilder,
    /// Rows appended so far (a column first seen at row r starts with r nulls).
    len: usize,
    name: String,
}

impl std::fmt::Debug for TextFrameBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextFrameBuilder")
            .field("rows", &self.lines.len())
            .finish()
    }
}

impl Default for TextFrameBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl TextFrameBuilder {
    pub fn new() -> Self {
        TextFrameBuilder {
            index: HashMap::new(),
            columns: Vec::new(),
            hints: Vec::new(),
            files: StringChunkedBuilder::new(SOURCE_FILE.into(), 1024),
            lines: Vec::new(),
            expected: 1024,
        }
    }

    /// Makes room for `additional` more rows (columns seen later are sized for them too).
    pub fn reserve(&mut self, additional: usize) {
        self.expected = self.lines.len() + additional;
        self.lines.reserve(additional);
        if self.lines.is_empty() {
            self.files = StringChunkedBuilder::new(SOURCE_FILE.into(), additional.max(1024));
        }
    }

    pub fn rows(&self) -> usize {
        self.lines.len()
    }

    /// Adds one record. Later duplicates of a key within a record are ignored (first wins).
    pub fn push<K, V, I>(&mut self, file: &str, line: i64, fields: I)
    where
        K: AsRef<str>,
        V: AsRef<str>,
        I: IntoIterator<Item = (K, Option<V>)>,
    {
        let row = self.lines.len();
        for (position, (name, value)) in fields.into_iter().enumerate() {
            let name = name.as_ref();
            // Records of one file usually list their keys in the same order: try the column
            // that held this position last time before hashing.
            let hinted = self
                .hints
                .get(position)
                .copied()
                .filter(|&c| self.columns[c].name == name);
            let col = match hinted.or_else(|| self.index.get(name).copied()) {
                Some(col) => col,
                None => {
                    let mut builder =
                        StringChunkedBuilder::new(name.into(), row.max(self.expected));
                    for _ in 0..row {
                        builder.append_null();
                    }
                    self.index.insert(name.to_string(), self.columns.len());
                    self.columns.push(TextColumn {
                        builder,
                        len: row,
                        name: name.to_string(),
                    });
                    self.columns.len() - 1
                }
            };
            match self.hints.get_mut(position) {
                Some(hint) => *hint = col,
                None => self.hints.push(col),
            }
            let column = &mut self.columns[col];
            if column.len == row {
                column
                    .builder
                    .append_option(value.as_ref().map(AsRef::as_ref));
                column.len += 1;
            }
        }
        for column in &mut self.columns {
            if column.len == row {
                column.builder.append_null();
                column.len += 1;
            }
        }
        self.files.append_value(file);
        self.lines.push(line);
    }

    pub fn finish(self) -> PolarsResult<DataFrame> {
        let height = self.lines.len();
        let mut columns: Vec<Column> = Vec::with_capacity(self.columns.len() + 2);
        for column in self.columns {
            columns.push(column.builder.finish().into_series().into());
        }
        columns.push(self.files.finish().into_series().into());
        columns.push(Series::new(SOURCE_LINE.into(), self.lines).into());
        DataFrame::new(height, columns)
    }
}

/// Renders a JSON value the way sources render it: strings as is, null as null, anything else as
/// its JSON text.
pub fn json_to_text(value: serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s),
        other => Some(other.to_string()),
    }
}

/// Builds a text frame from JSON objects (pipeline tests use this, exactly like the NDJSON source).
pub fn frame_from_records(
    file: &str,
    records: &[serde_json::Map<String, serde_json::Value>],
) -> PolarsResult<DataFrame> {
    let mut builder = TextFrameBuilder::new();
    for (i, record) in records.iter().enumerate() {
        builder.push(
            file,
            i as i64 + 1,
            record
                .iter()
                .map(|(k, v)| (k.clone(), json_to_text(v.clone()))),
        );
    }
    builder.finish()
}

/// One quarantined row: why, where from, and what it held.
#[derive(Debug, Clone, PartialEq)]
pub struct QuarantinedRow {
    pub reason: String,
    pub source_file: Option<String>,
    pub source_line: Option<i64>,
    /// The row's values as a JSON object, or the raw text when it never became a row.
    pub raw: Option<String>,
}

/// Rows sent to quarantine during one batch, in the order they were found.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Quarantine {
    pub rows: Vec<QuarantinedRow>,
}

impl Quarantine {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn push(&mut self, row: QuarantinedRow) {
        self.rows.push(row);
    }

    pub fn extend(&mut self, other: Quarantine) {
        self.rows.extend(other.rows);
    }

    /// Moves the rows of `df` selected by `reasons` (Some = bad) to quarantine; returns the rest.
    pub fn split_off(
        &mut self,
        df: DataFrame,
        reasons: Vec<Option<String>>,
    ) -> PolarsResult<DataFrame> {
        if reasons.iter().all(Option::is_none) {
            return Ok(df);
        }
        let bad_mask: BooleanChunked = reasons.iter().map(|r| Some(r.is_some())).collect();
        let bad = df.filter(&bad_mask)?;
        let good = df.filter(&!&bad_mask)?;
        let records = rows_as_json(&bad, false)?;
        let files = bad
            .column(SOURCE_FILE)
            .ok()
            .and_then(|c| c.str().ok().cloned());
        let lines = bad
            .column(SOURCE_LINE)
            .ok()
            .and_then(|c| c.i64().ok().cloned());
        for (i, (reason, record)) in reasons.into_iter().flatten().zip(records).enumerate() {
            let source_file = files.as_ref().and_then(|f| f.get(i)).map(str::to_string);
            let source_line = lines.as_ref().and_then(|l| l.get(i));
            // Every reason names where the row came from, as source-level reasons do.
            let reason = match (&source_file, source_line) {
                (Some(file), Some(line)) => format!("{file}:{line}: {reason}"),
                _ => reason,
            };
            self.rows.push(QuarantinedRow {
                reason,
                source_file,
                source_line,
                raw: Some(serde_json::Value::Object(record).to_string()),
            });
        }
        Ok(good)
    }

    /// The quarantine dataset's frame: `reason, source_file, source_line, raw, quarantined_at`.
    pub fn to_frame(&self, quarantined_at_micros: i64) -> PolarsResult<DataFrame> {
        let n = self.rows.len();
        let reason: StringChunked = self.rows.iter().map(|r| Some(r.reason.as_str())).collect();
        let file: StringChunked = self.rows.iter().map(|r| r.source_file.as_deref()).collect();
        let line: Int64Chunked = self.rows.iter().map(|r| r.source_line).collect();
        let raw: StringChunked = self.rows.iter().map(|r| r.raw.as_deref()).collect();
        let at = Int64Chunked::full("quarantined_at".into(), quarantined_at_micros, n)
            .into_series()
            .cast(&DataType::Datetime(
                TimeUnit::Microseconds,
                Some(TimeZone::UTC),
            ))?;
        DataFrame::new(
            n,
            vec![
                reason.with_name("reason".into()).into_series().into(),
                file.with_name("source_file".into()).into_series().into(),
                line.with_name("source_line".into()).into_series().into(),
                raw.with_name("raw".into()).into_series().into(),
                at.into(),
            ],
        )
    }
}

/// The rows of a frame as JSON objects, for pipeline tests and quarantine records. Timestamps are
/// RFC 3339 in UTC (`Z`), dates `YYYY-MM-DD`. Lineage columns are included only if asked for.
pub fn rows_as_json(
    df: &DataFrame,
    with_lineage: bool,
) -> PolarsResult<Vec<serde_json::Map<String, serde_json::Value>>> {
    let columns: Vec<&Column> = df
        .columns()
        .iter()
        .filter(|c| with_lineage || !is_lineage(c.name().as_str()))
        .collect();
    let mut out = Vec::with_capacity(df.height());
    for row in 0..df.height() {
        let mut record = serde_json::Map::new();
        for column in &columns {
            record.insert(column.name().to_string(), any_to_json(column.get(row)?));
        }
        out.push(record);
    }
    Ok(out)
}

pub(crate) fn any_to_json(value: AnyValue<'_>) -> serde_json::Value {
    use serde_json::Value;
    match value {
        AnyValue::Null => Value::Null,
        AnyValue::Boolean(b) => Value::Bool(b),
        AnyValue::String(s) => Value::String(s.to_string()),
        AnyValue::StringOwned(s) => Value::String(s.to_string()),
        AnyValue::Int8(v) => v.into(),
        AnyValue::Int16(v) => v.into(),
        AnyValue::Int32(v) => v.into(),
        AnyValue::Int64(v) => v.into(),
        AnyValue::UInt8(v) => v.into(),
        AnyValue::UInt16(v) => v.into(),
        AnyValue::UInt32(v) => v.into(),
        AnyValue::UInt64(v) => v.into(),
        AnyValue::Float32(v) => {
            serde_json::Number::from_f64(v as f64).map_or(Value::Null, Value::Number)
        }
        AnyValue::Float64(v) => serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number),
        AnyValue::Datetime(v, unit, _) | AnyValue::DatetimeOwned(v, unit, _) => {
            let micros = match unit {
                TimeUnit::Nanoseconds => v / 1000,
                TimeUnit::Microseconds => v,
                TimeUnit::Milliseconds => v.saturating_mul(1000),
            };
            chrono::DateTime::from_timestamp_micros(micros)
                .map(|t| Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)))
                .unwrap_or(Value::Null)
        }
        AnyValue::Date(days) => chrono::NaiveDate::from_num_days_from_ce_opt(days + 719_163)
            .map(|d| Value::String(d.format("%Y-%m-%d").to_string()))
            .unwrap_or(Value::Null),
        other => Value::String(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_frames_keep_first_seen_order_and_fill_gaps_with_null() -> PolarsResult<()> {
        let mut b = TextFrameBuilder::new();
        b.push("f", 1, [("a".to_string(), Some("1".to_string()))]);
        b.push(
            "f",
            2,
            [
                ("b".to_string(), Some("x".to_string())),
                ("a".to_string(), None),
            ],
        );
        let df = b.finish()?;
        let names: Vec<_> = df
            .get_column_names()
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(names, ["a", "b", SOURCE_FILE, SOURCE_LINE]);
        let rows = rows_as_json(&df, false)?;
        assert_eq!(
            serde_json::Value::Object(rows[0].clone()),
            json!({"a": "1", "b": null})
        );
        assert_eq!(
            serde_json::Value::Object(rows[1].clone()),
            json!({"a": null, "b": "x"})
        );
        Ok(())
    }

    #[test]
    fn split_off_moves_bad_rows_with_their_lineage() -> PolarsResult<()> {
        let df = frame_from_records(
            "in.ndjson",
            &[json!({"v": 1}), json!({"v": 2})].map(|v| match v {
                serde_json::Value::Object(m) => m,
                _ => serde_json::Map::new(),
            }),
        )?;
        let mut q = Quarantine::default();
        let good = q.split_off(df, vec![None, Some("v: bad".into())])?;
        assert_eq!(good.height(), 1);
        assert_eq!(q.rows[0].reason, "in.ndjson:2: v: bad");
        assert_eq!(q.rows[0].source_line, Some(2));
        assert_eq!(q.rows[0].source_file.as_deref(), Some("in.ndjson"));
        assert_eq!(q.rows[0].raw.as_deref(), Some(r#"{"v":"2"}"#));
        Ok(())
    }
}
