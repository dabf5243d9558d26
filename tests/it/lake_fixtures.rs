//! Shared setup of the tests that build a lake of monitoring-link hits from file drops and check
//! dataset jobs over it with DuckDB (`tags`, `datasets`, `schedule`, `reports`): the `ad_drop`
//! pipeline and its project, hits as NDJSON lines, `backflow run` summaries, the published
//! version a dataset's `_current` points at, and a DuckDB comparison of two queries.

use std::path::Path;

use crate::support::*;

/// The device ID fields of an `ad_event`, in the priority order DESIGN.md gives them.
pub const ID_FIELDS: &[&str] = &[
    "idfa",
    "imei_md5",
    "oaid",
    "android_id_md5",
    "mac_md5",
    "caid",
    "aaid",
];

/// Hits dropped as files under `data/drops/ad`, through the `ad_event` schema (every column in
/// every file), landed in `ad_events` partitioned by `event_time` at `granularity` (`day`,
/// `hour`). The journal pipeline needs the daemon and media links; dataset jobs read only the
/// Parquet.
pub fn ad_drop_pipeline(granularity: &str) -> String {
    format!(
        r#"
name: ad_drop
source:
  type: object_store_files
  url: file://./data/drops/ad
transforms:
  - validate: {{schema: ad_event}}
sink:
  type: parquet
  dataset: ad_events
  partition_by: {{column: event_time, granularity: {granularity}}}
"#
    )
}

/// The repository's project without its `ad_events` pipeline (which reads the journal): the
/// test lands `ad_events` from file drops instead.
pub fn project_without_journal() -> Project {
    let p = Project::new();
    std::fs::remove_file(p.path().join("pipelines/ad_events.yaml")).expect("rm ad_events.yaml");
    p
}

/// [`project_without_journal`] with the [`ad_drop_pipeline`] at `granularity`.
pub fn ad_drop_project(granularity: &str) -> Project {
    let p = project_without_journal();
    p.write("pipelines/ad_drop.yaml", &ad_drop_pipeline(granularity));
    p
}

/// Removes the shipped behavior pipeline's every-minute schedule (a daemon then runs only what
/// the test schedules).
pub fn unschedule_behavior_events(p: &Project) {
    p.edit_pipeline(
        "schedule:\n  cron: \"* * * * *\"\n  time_zone: Asia/Shanghai\n",
        "",
    );
}

/// One hit as an NDJSON line of the `ad_event` schema, in workspace `ws` on link `1`; `extra`
/// holds further members (`,"oaid":"OA-1"`), device IDs and flags.
pub fn ad_hit(
    event_id: &str,
    endpoint: &str,
    time: &str,
    channel: &str,
    activity_id: i64,
    extra: &str,
) -> String {
    format!(
        r#"{{"event_id":"{event_id}","received_at":"{time}","event_time":"{time}","event_time_from_media":false,"endpoint":"{endpoint}","workspace":"ws","activity_id":{activity_id},"link_id":"1","channel":"{channel}","activity_status":"on","method":"GET","server_to_server":false,"raw_query":"q"{extra}}}"#
    )
}

/// Writes `hits` as the NDJSON file `data/drops/{folder}/{name}`.
pub fn drop_hits(p: &Project, folder: &str, name: &str, hits: &[String]) {
    p.write(
        &format!("data/drops/{folder}/{name}"),
        &(hits.join("\n") + "\n"),
    );
}

/// `backflow {args}`, asserting success; returns the JSON summary (the last stdout line).
pub fn run_ok(p: &Project, args: &[&str]) -> serde_json::Value {
    let out = p.run(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}\n{}",
        stdout(&out),
        stderr(&out)
    );
    serde_json::from_str(stdout(&out).lines().last().unwrap_or("")).expect("summary JSON")
}

/// The pointer readers resolve for a dataset job's output: the highest `_current/*.json`.
pub fn current_pointer(lake: &Path, dataset: &str) -> serde_json::Value {
    let dir = lake.join(format!("datasets/{dataset}/_current"));
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .expect("_current")
        .map(|e| e.expect("entry").path())
        .collect();
    names.sort();
    let last = names.last().expect("a pointer");
    serde_json::from_slice(&std::fs::read(last).expect("read pointer")).expect("pointer json")
}

/// DuckDB's scan of one table of a published version (`version`: its folder in the lake).
pub fn published_table(version: &str, table: &str) -> String {
    format!("read_parquet('data/lake/{version}/{table}/*.parquet', hive_partitioning = false)")
}

/// Rows of `left EXCEPT ALL right` plus `right EXCEPT ALL left`, and the row counts of both.
pub fn diff(p: &Project, left: &str, right: &str) -> (i64, i64, i64) {
    let sql = format!(
        "WITH l AS ({left}), r AS ({right}) SELECT \
         (SELECT count(*) FROM (SELECT * FROM l EXCEPT ALL SELECT * FROM r)) + \
         (SELECT count(*) FROM (SELECT * FROM r EXCEPT ALL SELECT * FROM l)), \
         (SELECT count(*) FROM l), (SELECT count(*) FROM r)"
    );
    let (_, _, rows) = duckdb(p.path(), &sql).expect("duckdb");
    let n = |i: usize| rows[0][i].as_i64().expect("count");
    (n(0), n(1), n(2))
}
