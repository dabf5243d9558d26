use chrono_tz::Tz;
use serde_json::{Value, json};

use super::*;
use crate::config::model::{FieldSpec, Keep};
use crate::pipeline::frame::{frame_from_records, rows_as_json};

const SH: Tz = chrono_tz::Asia::Shanghai;

fn records(values: Value) -> Vec<serde_json::Map<String, Value>> {
    match values {
        Value::Array(items) => items
            .into_iter()
            .filter_map(|v| match v {
                Value::Object(m) => Some(m),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn run(input: Value, steps: Vec<TransformStep>) -> (Value, Vec<String>) {
    let df = frame_from_records("t", &records(input)).expect("frame");
    let mut q = Quarantine::default();
    let out = apply(df, &steps, SH, &mut q).expect("apply");
    let rows = rows_as_json(&out, false)
        .expect("rows")
        .into_iter()
        .map(Value::Object)
        .collect();
    (
        Value::Array(rows),
        q.rows.into_iter().map(|r| r.reason).collect(),
    )
}

fn sql(s: &str) -> CompiledExpr {
    CompiledExpr {
        source: s.into(),
        expr: polars::sql::sql_expr(s).expect("sql"),
    }
}

#[test]
fn rename_cast_derive_filter_drop_in_order() {
    let (rows, bad) = run(
        json!([{"uid": "a", "amt": "2.5", "x": "1"}, {"uid": "b", "amt": "oops", "x": "1"}, {"uid": "c", "amt": "10"}]),
        vec![
            TransformStep::Rename(vec![
                ("uid".into(), "user_id".into()),
                ("missing".into(), "y".into()),
            ]),
            TransformStep::Cast(vec![("amt".into(), ColumnType::Float64)]),
            TransformStep::Derive(vec![("cents".into(), sql("amt * 100"))]),
            TransformStep::Filter(sql("cents >= 500")),
            TransformStep::Drop(vec!["x".into(), "not_there".into()]),
        ],
    );
    assert_eq!(
        rows,
        json!([{"user_id": "c", "amt": 10.0, "cents": 1000.0}])
    );
    assert_eq!(
        bad,
        vec!["t:2: amt: cannot parse \"oops\" as float64".to_string()]
    );
}

#[test]
fn filter_on_a_column_absent_from_the_batch_keeps_nothing_and_does_not_fail() {
    let (rows, bad) = run(
        json!([{"a": "1"}]),
        vec![TransformStep::Filter(sql("b = 'x'"))],
    );
    assert_eq!(rows, json!([]));
    assert!(bad.is_empty());
}

#[test]
fn dedup_keeps_the_first_or_last_row_per_key_in_input_order() {
    let input = json!([{"k": "1", "v": "a"}, {"k": "2", "v": "b"}, {"k": "1", "v": "c"}]);
    let (first, _) = run(
        input.clone(),
        vec![TransformStep::Dedup {
            keys: vec!["k".into()],
            keep: Keep::First,
        }],
    );
    assert_eq!(first, json!([{"k": "1", "v": "a"}, {"k": "2", "v": "b"}]));
    let (last, _) = run(
        input,
        vec![TransformStep::Dedup {
            keys: vec!["k".into()],
            keep: Keep::Last,
        }],
    );
    assert_eq!(last, json!([{"k": "2", "v": "b"}, {"k": "1", "v": "c"}]));
}

#[test]
fn validate_shapes_rows_to_the_schema_and_gives_every_reason() {
    let schema = DatasetSchema {
        name: "s".into(),
        description: None,
        fields: vec![
            FieldSpec {
                name: "id".into(),
                ty: ColumnType::String,
                required: true,
                allowed: None,
                description: None,
            },
            FieldSpec {
                name: "kind".into(),
                ty: ColumnType::String,
                required: false,
                allowed: Some(vec!["a".into(), "b".into()]),
                description: None,
            },
            FieldSpec {
                name: "n".into(),
                ty: ColumnType::Int64,
                required: false,
                allowed: None,
                description: None,
            },
            FieldSpec {
                name: "at".into(),
                ty: ColumnType::Timestamp,
                required: true,
                allowed: None,
                description: None,
            },
        ],
    };
    let (rows, bad) = run(
        json!([
            {"id": "1", "kind": "a", "n": "7", "at": "2026-01-01 08:00:00", "extra": "dropped"},
            {"kind": "z", "n": "x", "at": "soon"},
        ]),
        vec![TransformStep::Validate(schema)],
    );
    assert_eq!(
        rows,
        json!([{"id": "1", "kind": "a", "n": 7, "at": "2026-01-01T00:00:00Z"}])
    );
    assert_eq!(
        bad,
        vec![
            "t:2: id: required but missing; kind: \"z\" is not one of [a, b]; n: cannot parse \"x\" as int64; \
             at: cannot parse \"soon\" as timestamp (datetime, date, epoch seconds or milliseconds)"
                .to_string()
        ]
    );
}

#[test]
fn quarantined_rows_keep_the_value_as_it_arrived() {
    let df = frame_from_records("f.ndjson", &records(json!([{"n": "x"}]))).expect("frame");
    let mut q = Quarantine::default();
    apply(
        df,
        &[TransformStep::Cast(vec![("n".into(), ColumnType::Int64)])],
        SH,
        &mut q,
    )
    .expect("apply");
    assert_eq!(q.rows[0].raw.as_deref(), Some(r#"{"n":"x"}"#));
    assert_eq!(q.rows[0].source_line, Some(1));
}
