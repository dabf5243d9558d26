//! Shared test support: a throw-away project directory, the `backflow` binary, the real services
//! the test script started (moto S3 on 127.0.0.1, DuckDB in a Python venv), and lake readers.

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use polars::prelude::*;

pub const BIN: &str = env!("CARGO_BIN_EXE_backflow");

/// Fails in CI (where the test script must have provided the service), skips elsewhere.
pub fn require_env(name: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Some(v),
        _ if std::env::var_os("CI").is_some() => {
            panic!("{name} is not set: run the suite with `scripts/dev test`")
        }
        _ => {
            eprintln!("skipping: {name} is not set (run the suite with `scripts/dev test`)");
            None
        }
    }
}

/// A project directory: the repo's pipelines and schemas, and an empty data dir.
pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    pub fn new() -> Project {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        for sub in ["pipelines", "schemas"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
            for entry in std::fs::read_dir(repo.join(sub)).expect("read repo dir") {
                let entry = entry.expect("entry");
                std::fs::copy(entry.path(), dir.path().join(sub).join(entry.file_name()))
                    .expect("copy");
            }
        }
        std::fs::create_dir_all(dir.path().join("data/drops/behavior")).expect("mkdir drops");
        Project { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn drops(&self) -> PathBuf {
        self.path().join("data/drops/behavior")
    }

    pub fn lake(&self) -> PathBuf {
        self.path().join("data/lake")
    }

    /// Copies the repository's behavior fixtures into the drop folder.
    pub fn drop_fixtures(&self) {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/behavior");
        for entry in std::fs::read_dir(fixtures).expect("fixtures") {
            let entry = entry.expect("entry");
            std::fs::copy(entry.path(), self.drops().join(entry.file_name()))
                .expect("copy fixture");
        }
    }

    pub fn write(&self, relative: &str, contents: &str) {
        let path = self.path().join(relative);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, contents).expect("write");
    }

    /// Rewrites a key of the shipped behavior pipeline (simple line substitution).
    pub fn edit_pipeline(&self, from: &str, to: &str) {
        self.edit_file("pipelines/behavior_events.yaml", from, to);
    }

    /// Replaces the first `from` with `to` in a project file.
    pub fn edit_file(&self, relative: &str, from: &str, to: &str) {
        let path = self.path().join(relative);
        let text = std::fs::read_to_string(&path).expect("read pipeline");
        assert!(text.contains(from), "pipeline has no `{from}`");
        std::fs::write(&path, text.replacen(from, to, 1)).expect("write pipeline");
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .current_dir(self.path())
            .env_remove("BACKFLOW_FAILPOINT")
            .env_remove("BACKFLOW_FAILPOINT_ERROR")
            .env_remove("BACKFLOW_FAILPOINT_DELAY")
            .env("NO_COLOR", "1");
        for (key, _) in std::env::vars() {
            if key.starts_with("BACKFLOW__") {
                cmd.env_remove(key);
            }
        }
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("spawn backflow")
    }

    /// [`Project::run`], killed (and the test failed) if it has not exited within `limit`.
    pub fn run_bounded(&self, args: &[&str], limit: Duration) -> Output {
        let child = self
            .command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn backflow");
        wait_bounded(child, &format!("backflow {}", args.join(" ")), limit)
    }

    /// `backflow run behavior_events --json`, asserting success; returns the summary.
    pub fn run_pipeline_ok(&self) -> serde_json::Value {
        let out = self.run(&["run", "behavior_events", "--json"]);
        assert!(
            out.status.success(),
            "run failed: {}\n{}",
            stdout(&out),
            stderr(&out)
        );
        serde_json::from_str(stdout(&out).lines().last().unwrap_or("")).expect("summary JSON")
    }
}

/// Waits for `child` (stdout/stderr piped or not) at most `limit`: a hung process is killed and
/// the test fails naming `what`, instead of the test hanging until the runner kills it.
pub fn wait_bounded(mut child: Child, what: &str, limit: Duration) -> Output {
    fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        })
    }
    let (out, err) = (drain(child.stdout.take()), drain(child.stderr.take()));
    let polls = limit.as_millis() / 100;
    for _ in 0..polls {
        if let Some(status) = child.try_wait().expect("wait") {
            return Output {
                status,
                stdout: out.join().unwrap_or_default(),
                stderr: err.join().unwrap_or_default(),
            };
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    panic!(
        "{what} did not exit within {limit:?} (killed)\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(&err)
    );
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every Parquet file under `dir` (recursively), sorted.
pub fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "parquet") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

pub fn read_parquet_bytes(bytes: Vec<u8>) -> DataFrame {
    ParquetReader::new(std::io::Cursor::new(bytes))
        .finish()
        .expect("read parquet")
}

/// All rows of a dataset directory, as one frame (files in path order).
pub fn read_dataset(dir: &Path) -> DataFrame {
    let frames: Vec<DataFrame> = parquet_files(dir)
        .into_iter()
        .map(|p| read_parquet_bytes(std::fs::read(p).expect("read")))
        .collect();
    match frames.split_first() {
        None => DataFrame::empty(),
        Some((first, rest)) => {
            let mut df = first.clone();
            for f in rest {
                df.vstack_mut(f).expect("vstack");
            }
            df
        }
    }
}

/// An int64 column's values, sorted, duplicates kept (empty for an empty frame).
pub fn sorted_i64(df: &DataFrame, column: &str) -> Vec<i64> {
    if df.height() == 0 {
        return Vec::new();
    }
    let mut values: Vec<i64> = df
        .column(column)
        .expect("column")
        .i64()
        .expect("int64")
        .into_no_null_iter()
        .collect();
    values.sort_unstable();
    values
}

/// One string column's values, sorted (a row multiset key).
pub fn sorted_values(df: &DataFrame, column: &str) -> Vec<String> {
    if df.height() == 0 {
        return Vec::new();
    }
    let col = df
        .column(column)
        .expect("column")
        .cast(&DataType::String)
        .expect("cast");
    let mut values: Vec<String> = col
        .str()
        .expect("str")
        .iter()
        .map(|v| v.unwrap_or("<null>").to_string())
        .collect();
    values.sort();
    values
}

/// Every row rendered as a JSON line, sorted: the full row multiset of a dataset.
pub fn row_multiset(df: &DataFrame) -> Vec<String> {
    let mut rows: Vec<String> = backflow::pipeline::frame::rows_as_json(df, true)
        .expect("rows")
        .into_iter()
        .map(|r| serde_json::Value::Object(r).to_string())
        .collect();
    rows.sort();
    rows
}

/// A DuckDB result: column names, column types and rows.
pub type DuckRows = (Vec<String>, Vec<String>, Vec<Vec<serde_json::Value>>);

/// Runs a DuckDB query with the test venv's Python; returns (column names, column types, rows).
pub fn duckdb(cwd: &Path, sql: &str) -> Option<DuckRows> {
    let python = require_env("BACKFLOW_TEST_PYTHON")?;
    let script = r#"
import json, sys, duckdb
con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
rel = con.sql(sys.argv[1])
rows = [[v if v is None or isinstance(v, (int, float, str, bool)) else str(v) for v in r] for r in rel.fetchall()]
print(json.dumps({"columns": rel.columns, "types": [str(t) for t in rel.types], "rows": rows}))
"#;
    let out = Command::new(python)
        .args(["-c", script, sql])
        .current_dir(cwd)
        .output()
        .expect("run python");
    assert!(out.status.success(), "duckdb failed: {}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("duckdb json");
    let strings = |k: &str| {
        v[k].as_array()
            .expect(k)
            .iter()
            .map(|s| s.as_str().unwrap_or("").to_string())
            .collect()
    };
    let rows = v["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r.as_array().expect("row").clone())
        .collect();
    Some((strings("columns"), strings("types"), rows))
}

/// Where a test daemon's log goes: appended to the file named by `BACKFLOW_TEST_DAEMON_LOG`
/// (to debug a test), else nowhere.
pub fn daemon_stderr() -> std::process::Stdio {
    std::env::var_os("BACKFLOW_TEST_DAEMON_LOG")
        .and_then(|path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .ok()
        })
        .map_or_else(std::process::Stdio::null, std::process::Stdio::from)
}
