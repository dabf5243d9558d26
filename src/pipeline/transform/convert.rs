//! Converting columns to declared types, row by row, with a reason for every value that does not
//! convert. Used by `cast` and `validate` steps.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, TimeZone as _};
use chrono_tz::Tz;
use polars::prelude::*;

use crate::config::model::ColumnType;

/// The Polars type a column type is stored as.
pub fn dtype(ty: ColumnType) -> DataType {
    match ty {
        ColumnType::String => DataType::String,
        ColumnType::Int64 => DataType::Int64,
        ColumnType::Float64 => DataType::Float64,
        ColumnType::Boolean => DataType::Boolean,
        ColumnType::Timestamp => DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC)),
        ColumnType::Date => DataType::Date,
    }
}

pub fn type_name(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::String => "string",
        ColumnType::Int64 => "int64",
        ColumnType::Float64 => "float64",
        ColumnType::Boolean => "boolean",
        ColumnType::Timestamp => "timestamp (datetime, date, epoch seconds or milliseconds)",
        ColumnType::Date => "date",
    }
}

/// A converted column, and for each row that had a value which did not convert, the value.
pub struct Converted {
    pub column: Column,
    /// `(row, value as text)` of every failed conversion.
    pub failures: Vec<(usize, String)>,
}

/// Converts `column` to `ty`. Values already of the target type pass through; anything else is
/// read as text with the parsers below. Nulls stay null and are not failures.
pub fn convert(column: &Column, ty: ColumnType, tz: Tz) -> PolarsResult<Converted> {
    let target = dtype(ty);
    let name = column.name().clone();
    if column.dtype() == &target {
        return Ok(Converted {
            column: column.clone(),
            failures: Vec::new(),
        });
    }
    let text = column.cast(&DataType::String)?;
    let text = text.str()?;
    let mut failures = Vec::new();
    let mut note = |row: usize, value: &str| failures.push((row, value.to_string()));
    let series = match ty {
        ColumnType::Int64 => parse_each::<Int64Type, _>(text, &mut note, parse_i64)
            .with_name(name)
            .into_series(),
        ColumnType::Float64 => parse_each::<Float64Type, _>(text, &mut note, parse_f64)
            .with_name(name)
            .into_series(),
        ColumnType::Boolean => {
            let values: BooleanChunked = text
                .iter()
                .enumerate()
                .map(|(row, v)| {
                    v.and_then(|s| parse_bool(s).or_else(|| note_none(&mut note, row, s)))
                })
                .collect();
            values.with_name(name).into_series()
        }
        ColumnType::Timestamp => {
            parse_each::<Int64Type, _>(text, &mut note, |s| parse_timestamp_micros(s, tz))
                .with_name(name)
                .into_series()
                .cast(&target)?
        }
        ColumnType::Date => {
            parse_each::<Int32Type, _>(text, &mut note, |s| parse_date(s, tz).map(days_since_epoch))
                .with_name(name)
                .into_series()
                .cast(&target)?
        }
        ColumnType::String => text.clone().with_name(name).into_series(),
    };
    Ok(Converted {
        column: series.into(),
        failures,
    })
}

fn note_none<T>(note: &mut impl FnMut(usize, &str), row: usize, value: &str) -> Option<T> {
    note(row, value);
    None
}

fn parse_each<T, F>(
    text: &StringChunked,
    note: &mut impl FnMut(usize, &str),
    parse: F,
) -> ChunkedArray<T>
where
    T: PolarsNumericType,
    F: Fn(&str) -> Option<T::Native>,
{
    text.iter()
        .enumerate()
        .map(|(row, v)| v.and_then(|s| parse(s).or_else(|| note_none(note, row, s))))
        .collect()
}

pub fn parse_i64(s: &str) -> Option<i64> {
    let s = s.trim();
    s.parse::<i64>().ok().or_else(|| {
        let f = s.parse::<f64>().ok()?;
        (f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
    })
}

pub fn parse_f64(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|f| f.is_finite())
}

pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "y" | "t" => Some(true),
        "false" | "0" | "no" | "n" | "f" => Some(false),
        _ => None,
    }
}

fn days_since_epoch(d: NaiveDate) -> i32 {
    d.signed_duration_since(NaiveDate::default()).num_days() as i32
}

fn local_to_micros(naive: NaiveDateTime, tz: Tz) -> Option<i64> {
    tz.from_local_datetime(&naive)
        .earliest()
        .map(|t| t.timestamp_micros())
}

const NAIVE_FORMATS: [&str; 4] = [
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y/%m/%d %H:%M:%S%.f",
    "%Y-%m-%d %H:%M",
];
const DATE_FORMATS: [&str; 3] = ["%Y-%m-%d", "%Y%m%d", "%Y/%m/%d"];

/// Parses an instant to microseconds since the epoch (UTC). Accepted: epoch seconds (10 digits)
/// or milliseconds (13 digits); RFC 3339 with an offset; `YYYY-MM-DD HH:MM:SS[.f]` (also with
/// `T` or `/`), `YYYYMMDDHHMMSS`, and dates `YYYY-MM-DD`, `YYYYMMDD`, `YYYY/MM/DD` (midnight),
/// all in `tz` when no offset is given.
pub fn parse_timestamp_micros(s: &str, tz: Tz) -> Option<i64> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return match s.len() {
            10 => s.parse::<i64>().ok().map(|secs| secs * 1_000_000),
            13 => s.parse::<i64>().ok().map(|ms| ms * 1_000),
            8 => parse_date(s, tz).and_then(|d| local_to_micros(d.and_time(NaiveTime::MIN), tz)),
            14 => NaiveDateTime::parse_from_str(s, "%Y%m%d%H%M%S")
                .ok()
                .and_then(|n| local_to_micros(n, tz)),
            _ => None,
        };
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_micros());
    }
    for format in NAIVE_FORMATS {
        if let Ok(n) = NaiveDateTime::parse_from_str(s, format) {
            return local_to_micros(n, tz);
        }
    }
    DATE_FORMATS
        .iter()
        .find_map(|f| NaiveDate::parse_from_str(s, f).ok())
        .and_then(|d| local_to_micros(d.and_time(NaiveTime::MIN), tz))
}

/// Parses a calendar date; a full timestamp is accepted and taken as its date in `tz`.
pub fn parse_date(s: &str, tz: Tz) -> Option<NaiveDate> {
    let s = s.trim();
    DATE_FORMATS
        .iter()
        .find_map(|f| NaiveDate::parse_from_str(s, f).ok())
        .or_else(|| {
            if s.len() == 8 {
                return None;
            }
            let micros = parse_timestamp_micros(s, tz)?;
            DateTime::from_timestamp_micros(micros).map(|t| t.with_timezone(&tz).date_naive())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SH: Tz = chrono_tz::Asia::Shanghai;

    fn iso(micros: Option<i64>) -> Option<String> {
        micros
            .and_then(DateTime::from_timestamp_micros)
            .map(|t| t.to_rfc3339())
    }

    #[test]
    fn timestamps_in_every_accepted_shape() {
        let expected = Some("2021-10-23T02:00:00+00:00".to_string());
        for s in [
            "2021-10-23 10:00:00",
            "2021-10-23T10:00:00",
            "2021/10/23 10:00:00",
            "20211023100000",
            "1634954400",
            "1634954400000",
            "2021-10-23T02:00:00Z",
            "2021-10-23T10:00:00+08:00",
            " 2021-10-23 10:00:00.000 ",
        ] {
            assert_eq!(iso(parse_timestamp_micros(s, SH)), expected, "{s}");
        }
        assert_eq!(
            iso(parse_timestamp_micros("20211023", SH)).as_deref(),
            Some("2021-10-22T16:00:00+00:00")
        );
        assert_eq!(
            iso(parse_timestamp_micros("2021-10-23", SH)).as_deref(),
            Some("2021-10-22T16:00:00+00:00")
        );
    }

    #[test]
    fn garbage_and_odd_digit_counts_do_not_parse() {
        for s in [
            "yesterday",
            "",
            "0",
            "16349544000000000",
            "2021-13-01",
            "2021-10-23 25:00:00",
            "163495440",
        ] {
            assert_eq!(parse_timestamp_micros(s, SH), None, "{s}");
        }
    }

    #[test]
    fn numbers_and_booleans() {
        assert_eq!(parse_i64(" 42 "), Some(42));
        assert_eq!(parse_i64("5.0"), Some(5));
        assert_eq!(parse_i64("5.5"), None);
        assert_eq!(parse_f64("NaN"), None);
        assert_eq!(parse_f64("1e3"), Some(1000.0));
        assert_eq!(parse_bool("TRUE"), Some(true));
        assert_eq!(parse_bool("maybe"), None);
    }

    #[test]
    fn convert_reports_each_failed_row() -> PolarsResult<()> {
        let col: Column = Series::new("t".into(), [Some("1634954400"), None, Some("nope")]).into();
        let out = convert(&col, ColumnType::Timestamp, SH)?;
        assert_eq!(out.column.dtype(), &dtype(ColumnType::Timestamp));
        assert_eq!(out.failures, vec![(2, "nope".to_string())]);
        assert_eq!(out.column.null_count(), 2);
        Ok(())
    }
}
