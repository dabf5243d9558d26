//! Declarative transform steps, applied in order to a batch frame.
//!
//! Expressions (`filter`, `derive`) are SQL compiled to Polars expressions at load time; the
//! type-changing steps (`cast`, `validate`) convert row by row so that each value that does not
//! fit sends its row to quarantine with a reason instead of failing the batch.

pub mod convert;

use chrono_tz::Tz;
use polars::prelude::*;

use crate::config::model::{ColumnType, CompiledExpr, DatasetSchema, Keep, TransformStep};
use crate::pipeline::frame::{Quarantine, SOURCE_FILE, SOURCE_LINE};

/// A step that cannot run at all (as opposed to a row that does not fit, which is quarantined).
#[derive(Debug, thiserror::Error)]
#[error("transforms[{step}] ({kind}): {message}")]
pub struct TransformError {
    pub step: usize,
    pub kind: &'static str,
    pub message: String,
}

fn step_kind(step: &TransformStep) -> &'static str {
    match step {
        TransformStep::Rename(_) => "rename",
        TransformStep::Cast(_) => "cast",
        TransformStep::Filter(_) => "filter",
        TransformStep::Derive(_) => "derive",
        TransformStep::Drop(_) => "drop",
        TransformStep::Dedup { .. } => "dedup",
        TransformStep::Validate(_) => "validate",
    }
}

/// Applies `steps` to `df`; rows that fail a `cast` or `validate` go to `quarantine`.
pub fn apply(
    mut df: DataFrame,
    steps: &[TransformStep],
    tz: Tz,
    quarantine: &mut Quarantine,
) -> Result<DataFrame, TransformError> {
    for (index, step) in steps.iter().enumerate() {
        let fail = |e: PolarsError| TransformError {
            step: index,
            kind: step_kind(step),
            message: e.to_string(),
        };
        df = match step {
            TransformStep::Rename(pairs) => rename(df, pairs).map_err(fail)?,
            TransformStep::Cast(columns) => cast(df, columns, tz, quarantine).map_err(fail)?,
            TransformStep::Filter(expr) => filter(df, expr).map_err(fail)?,
            TransformStep::Derive(columns) => derive(df, columns).map_err(fail)?,
            TransformStep::Drop(columns) => df.drop_many(columns.iter().map(String::as_str)),
            TransformStep::Dedup { keys, keep } => dedup(df, keys, *keep).map_err(fail)?,
            TransformStep::Validate(schema) => {
                validate(df, schema, tz, quarantine).map_err(fail)?
            }
        };
    }
    Ok(df)
}

/// Renames present columns; a missing source column is not an error (sparse input is normal).
fn rename(mut df: DataFrame, pairs: &[(String, String)]) -> PolarsResult<DataFrame> {
    for (from, to) in pairs {
        if df.schema().contains(from) {
            if from != to && df.schema().contains(to) {
                df = df.drop(to)?;
            }
            df.rename(from, to.as_str().into())?;
        }
    }
    Ok(df)
}

fn cast(
    mut df: DataFrame,
    columns: &[(String, ColumnType)],
    tz: Tz,
    quarantine: &mut Quarantine,
) -> PolarsResult<DataFrame> {
    let original = df.clone();
    let mut reasons: Vec<Option<String>> = vec![None; df.height()];
    for (name, ty) in columns {
        let Ok(column) = df.column(name) else {
            continue;
        };
        let converted = convert::convert(column, *ty, tz)?;
        for (row, value) in converted.failures {
            add_reason(
                &mut reasons[row],
                format!(
                    "{name}: cannot parse {value:?} as {}",
                    convert::type_name(*ty)
                ),
            );
        }
        df.with_column(converted.column)?;
    }
    split_keeping_original(original, df, reasons, quarantine)
}

/// Keeps the good rows of `shaped`; the bad rows go to quarantine as they arrived in `original`
/// (same height and row order), so the record shows the value that did not convert.
fn split_keeping_original(
    original: DataFrame,
    shaped: DataFrame,
    reasons: Vec<Option<String>>,
    quarantine: &mut Quarantine,
) -> PolarsResult<DataFrame> {
    if reasons.iter().all(Option::is_none) {
        return Ok(shaped);
    }
    let bad_mask: BooleanChunked = reasons.iter().map(|r| Some(r.is_some())).collect();
    let good = shaped.filter(&!&bad_mask)?;
    let bad = original.filter(&bad_mask)?;
    let bad_reasons: Vec<Option<String>> = reasons.into_iter().filter(Option::is_some).collect();
    quarantine.split_off(bad, bad_reasons)?;
    Ok(good)
}

fn add_reason(slot: &mut Option<String>, reason: String) {
    match slot {
        Some(existing) => {
            existing.push_str("; ");
            existing.push_str(&reason);
        }
        None => *slot = Some(reason),
    }
}

/// Columns an expression reads that the frame lacks are added as nulls, so sparse JSON input
/// (a key absent from every row of a batch) does not fail the batch.
fn with_referenced_columns(mut df: DataFrame, expr: &Expr) -> PolarsResult<DataFrame> {
    for name in expr.clone().meta().root_names() {
        if !df.schema().contains(&name) {
            df.with_column(Column::full_null(name, df.height(), &DataType::String))?;
        }
    }
    Ok(df)
}

fn filter(df: DataFrame, expr: &CompiledExpr) -> PolarsResult<DataFrame> {
    let df = with_referenced_columns(df, &expr.expr)?;
    // Null (unknown) counts as false, as in SQL WHERE.
    df.lazy()
        .filter(expr.expr.clone().fill_null(lit(false)))
        .collect()
}

fn derive(mut df: DataFrame, columns: &[(String, CompiledExpr)]) -> PolarsResult<DataFrame> {
    for (name, expr) in columns {
        df = with_referenced_columns(df, &expr.expr)?;
        df = df
            .lazy()
            .with_column(expr.expr.clone().alias(name.as_str()))
            .collect()?;
    }
    Ok(df)
}

fn dedup(df: DataFrame, keys: &[String], keep: Keep) -> PolarsResult<DataFrame> {
    let mut df = df;
    for key in keys {
        if !df.schema().contains(key) {
            df.with_column(Column::full_null(
                key.as_str().into(),
                df.height(),
                &DataType::String,
            ))?;
        }
    }
    let keep = match keep {
        Keep::First => UniqueKeepStrategy::First,
        Keep::Last => UniqueKeepStrategy::Last,
    };
    df.unique_stable(Some(keys), keep, None)
}

/// Shapes the frame to the schema: its fields in order (missing ones null), each converted to its
/// type; rows with a value that does not convert, a missing required value, or a value outside
/// `allowed` go to quarantine with every reason. Columns not in the schema are dropped, lineage kept.
fn validate(
    df: DataFrame,
    schema: &DatasetSchema,
    tz: Tz,
    quarantine: &mut Quarantine,
) -> PolarsResult<DataFrame> {
    let height = df.height();
    let mut reasons: Vec<Option<String>> = vec![None; height];
    let mut columns: Vec<Column> = Vec::with_capacity(schema.fields.len() + 2);
    for field in &schema.fields {
        let name = field.name.as_str();
        let converted = match df.column(name) {
            Ok(column) => convert::convert(column, field.ty, tz)?,
            Err(_) => convert::Converted {
                column: Column::full_null(name.into(), height, &convert::dtype(field.ty)),
                failures: Vec::new(),
            },
        };
        let mut failed = vec![false; height];
        for (row, value) in converted.failures {
            failed[row] = true;
            add_reason(
                &mut reasons[row],
                format!(
                    "{name}: cannot parse {value:?} as {}",
                    convert::type_name(field.ty)
                ),
            );
        }
        if field.required {
            for (row, present) in converted.column.is_not_null().iter().enumerate() {
                if present != Some(true) && !failed[row] {
                    add_reason(&mut reasons[row], format!("{name}: required but missing"));
                }
            }
        }
        if let Some(allowed) = &field.allowed {
            let text = converted.column.cast(&DataType::String)?;
            for (row, value) in text.str()?.iter().enumerate() {
                if let Some(value) = value.filter(|v| !allowed.iter().any(|a| a == v)) {
                    add_reason(
                        &mut reasons[row],
                        format!("{name}: {value:?} is not one of [{}]", allowed.join(", ")),
                    );
                }
            }
        }
        columns.push(converted.column);
    }
    for lineage in [SOURCE_FILE, SOURCE_LINE] {
        if let Ok(column) = df.column(lineage) {
            columns.push(column.clone());
        }
    }
    let shaped = DataFrame::new(height, columns)?;
    split_keeping_original(df, shaped, reasons, quarantine)
}

#[cfg(test)]
mod tests;
