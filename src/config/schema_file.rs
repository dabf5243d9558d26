//! Dataset schema files (`schemas/{name}.yaml`): the columns a `validate` step checks rows
//! against. Parsed in the same two stages as pipelines, with the same located errors.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use super::error::{Collector, ConfigError, is_blank, parse_yaml};
use super::load::{check_ident, parse_column_type};
use super::model::{DatasetSchema, FieldSpec};
use super::raw::{Located, TypeName};

/// A dataset schema file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatasetSchema {
    /// Schema name, `[a-z][a-z0-9_]*`; a `validate` step names it and finds it as `{name}.yaml`.
    name: Located<String>,
    /// Free text.
    #[serde(default)]
    description: Option<String>,
    /// The columns, in output order.
    fields: Located<Vec<RawField>>,
}

/// One column of a dataset schema.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    /// Column name (unique within the schema).
    name: Located<String>,
    /// Column type: string, int64, float64, boolean, timestamp or date.
    #[serde(rename = "type")]
    ty: Located<TypeName>,
    /// Whether a row without a value here goes to quarantine (default false).
    #[serde(default)]
    required: bool,
    /// If set, a non-null value must be one of these (string columns only).
    #[serde(default)]
    allowed: Option<Located<Vec<String>>>,
    /// What the column holds.
    #[serde(default)]
    description: Option<String>,
}

/// Reads and validates a dataset schema file; every error is located in that file.
pub fn load_schema_file(path: &Path) -> Result<DatasetSchema, Vec<ConfigError>> {
    match std::fs::read_to_string(path) {
        Ok(text) => load_schema_str(path, &text),
        Err(err) => Err(vec![ConfigError::file(
            path,
            format!("cannot read schema file: {err}"),
        )]),
    }
}

/// Validates the text of a dataset schema file named `file`.
pub fn load_schema_str(file: &Path, text: &str) -> Result<DatasetSchema, Vec<ConfigError>> {
    if is_blank(text) {
        let message = "the file is empty; expected a dataset schema (name, fields)";
        return Err(vec![ConfigError::file(file, message)]);
    }
    let raw: RawDatasetSchema = parse_yaml(file, text).map_err(|err| vec![err])?;
    let mut errors = Collector::new(file);
    let name = errors.check(raw.name.location(), "name", check_ident(raw.name.value()));
    let fields = convert_fields(&mut errors, raw.fields);
    let schema = name.zip(fields).map(|(name, fields)| DatasetSchema {
        name,
        description: raw.description,
        fields,
    });
    errors.finish(schema)
}

fn convert_fields(
    errors: &mut Collector<'_>,
    raw: Located<Vec<RawField>>,
) -> Option<Vec<FieldSpec>> {
    if raw.value().is_empty() {
        errors.push(raw.location(), "fields", "expected at least one field");
        return None;
    }
    let mut seen: HashMap<String, serde_saphyr::Location> = HashMap::new();
    let fields: Vec<Option<FieldSpec>> = raw
        .into_value()
        .into_iter()
        .enumerate()
        .map(|(i, field)| {
            let at = field.name.location();
            if let Some(first) = seen.insert(field.name.value().clone(), at) {
                let message = format!(
                    "duplicate field `{}` (first declared at line {}, column {})",
                    field.name.value(),
                    first.line(),
                    first.column()
                );
                errors.push(at, &format!("fields[{i}].name"), message);
            }
            convert_field(errors, i, field)
        })
        .collect();
    fields.into_iter().collect()
}

fn convert_field(errors: &mut Collector<'_>, i: usize, raw: RawField) -> Option<FieldSpec> {
    let name = raw.name.value();
    let name = if name.trim().is_empty() {
        errors.push(
            raw.name.location(),
            &format!("fields[{i}].name"),
            "field name must not be empty",
        );
        None
    } else {
        Some(name.clone())
    };
    let ty = errors.check(
        raw.ty.location(),
        &format!("fields[{i}].type"),
        parse_column_type(&raw.ty.value().0),
    );
    let allowed = match raw.allowed {
        Some(allowed) => check_allowed(errors, i, ty, allowed)?,
        None => None,
    };
    Some(FieldSpec {
        name: name?,
        ty: ty?,
        required: raw.required,
        allowed,
        description: raw.description,
    })
}

fn check_allowed(
    errors: &mut Collector<'_>,
    i: usize,
    ty: Option<super::model::ColumnType>,
    allowed: Located<Vec<String>>,
) -> Option<Option<Vec<String>>> {
    let path = format!("fields[{i}].allowed");
    if allowed.value().is_empty() {
        errors.push(
            allowed.location(),
            &path,
            "expected at least one allowed value",
        );
        return None;
    }
    if ty.is_some_and(|ty| ty != super::model::ColumnType::String) {
        errors.push(
            allowed.location(),
            &path,
            "`allowed` is only supported on string fields",
        );
        return None;
    }
    Some(Some(allowed.into_value()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::ColumnType;

    fn errors_of(text: &str) -> Vec<String> {
        match load_schema_str(Path::new("s.yaml"), text) {
            Ok(schema) => panic!("expected errors, got {schema:?}"),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn reads_fields_in_order() {
        let text = "name: ev\nfields:\n  - {name: a, type: string, required: true, allowed: [x, y]}\n  - {name: b, type: timestamp}\n";
        let schema = match load_schema_str(Path::new("s.yaml"), text) {
            Ok(schema) => schema,
            Err(errors) => panic!("{errors:?}"),
        };
        assert_eq!(schema.name, "ev");
        let summary: Vec<_> = schema
            .fields
            .iter()
            .map(|f| (f.name.as_str(), f.ty, f.required))
            .collect();
        assert_eq!(
            summary,
            [
                ("a", ColumnType::String, true),
                ("b", ColumnType::Timestamp, false)
            ]
        );
        assert_eq!(
            schema.fields[0].allowed.as_deref(),
            Some(&["x".to_string(), "y".to_string()][..])
        );
    }

    #[test]
    fn collects_duplicate_names_and_bad_types() {
        let text = "name: ev\nfields:\n  - {name: a, type: string}\n  - {name: a, type: integer}\n";
        assert_eq!(
            errors_of(text),
            [
                "s.yaml:4:12: fields[1].name: duplicate field `a` (first declared at line 3, column 12)",
                "s.yaml:4:21: fields[1].type: unknown column type `integer`, expected one of string, int64, float64, boolean, timestamp, date",
            ]
        );
    }

    #[test]
    fn unknown_key_is_an_error() {
        let errors = errors_of("name: ev\nfields:\n  - {name: a, type: string, requird: true}\n");
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].starts_with("s.yaml:3:29: fields[0].requird: unknown field `requird`"),
            "{errors:?}"
        );
    }
}
