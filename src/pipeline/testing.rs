//! `backflow test`: runs the `tests:` block of a pipeline — input rows through its transforms,
//! compared with the expected output rows and quarantine reasons.

use chrono_tz::Tz;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::config::model::{Pipeline, PipelineTest};
use crate::pipeline::frame::{Quarantine, frame_from_records, rows_as_json};
use crate::pipeline::transform;

/// The outcome of one test case.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TestOutcome {
    pub pipeline: String,
    pub name: String,
    pub failures: Vec<String>,
}

impl TestOutcome {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Runs every test of a pipeline.
pub fn run_tests(pipeline: &Pipeline, tz: Tz) -> Vec<TestOutcome> {
    pipeline
        .tests
        .iter()
        .map(|test| TestOutcome {
            pipeline: pipeline.name.clone(),
            name: test.name.clone(),
            failures: run_one(pipeline, test, tz).err().unwrap_or_default(),
        })
        .collect()
}

fn run_one(pipeline: &Pipeline, test: &PipelineTest, tz: Tz) -> Result<(), Vec<String>> {
    let input_name = format!("{}#{}", pipeline.file.display(), test.name);
    let df = frame_from_records(&input_name, &test.input)
        .map_err(|e| vec![format!("building input: {e}")])?;
    let mut quarantine = Quarantine::default();
    let out = transform::apply(df, &pipeline.transforms, tz, &mut quarantine)
        .map_err(|e| vec![e.to_string()])?;
    let rows = rows_as_json(&out, false).map_err(|e| vec![format!("rendering output: {e}")])?;
    let mut failures = Vec::new();
    if rows.len() != test.expect.len() {
        failures.push(format!(
            "expected {} output rows, got {}",
            test.expect.len(),
            rows.len()
        ));
    }
    for (i, (got, want)) in rows.iter().zip(&test.expect).enumerate() {
        failures.extend(compare_row(i, got, want));
    }
    for extra in rows.iter().skip(test.expect.len()) {
        failures.push(format!(
            "unexpected output row: {}",
            Value::Object(extra.clone())
        ));
    }
    if quarantine.len() != test.expect_quarantine.len() {
        failures.push(format!(
            "expected {} quarantined rows, got {}: {:?}",
            test.expect_quarantine.len(),
            quarantine.len(),
            quarantine
                .rows
                .iter()
                .map(|r| r.reason.as_str())
                .collect::<Vec<_>>()
        ));
    }
    for (i, (got, want)) in quarantine
        .rows
        .iter()
        .zip(&test.expect_quarantine)
        .enumerate()
    {
        if !got.reason.contains(want.as_str()) {
            failures.push(format!(
                "quarantine[{i}]: reason {:?} does not contain {want:?}",
                got.reason
            ));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures)
    }
}

fn compare_row(index: usize, got: &Map<String, Value>, want: &Map<String, Value>) -> Vec<String> {
    let mut failures = Vec::new();
    for (key, expected) in want {
        match got.get(key) {
            None => failures.push(format!(
                "row {index}: column `{key}` is missing from the output"
            )),
            Some(actual) if !same_value(actual, expected) => failures.push(format!(
                "row {index}: `{key}` expected {expected}, got {actual}"
            )),
            Some(_) => {}
        }
    }
    for key in got.keys().filter(|k| !want.contains_key(*k)) {
        failures.push(format!(
            "row {index}: unexpected column `{key}` = {}",
            got[key]
        ));
    }
    failures
}

fn same_value(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        _ => actual == expected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_compare_by_value_and_missing_columns_are_reported() {
        let got = json!({"a": 1.0, "b": "x"});
        let want = json!({"a": 1, "c": null});
        let (Value::Object(got), Value::Object(want)) = (got, want) else {
            return;
        };
        let failures = compare_row(0, &got, &want);
        assert_eq!(
            failures,
            vec![
                "row 0: column `c` is missing from the output".to_string(),
                "row 0: unexpected column `b` = \"x\"".to_string()
            ]
        );
    }
}
