//! A 60-day ad monitoring report (by activity group and date) over generated `ad_events`
//! Parquet: answered from the rollups (built by `rebuild-rollups`' code, the same per-row
//! rollup code a batch commit runs) and timed against DuckDB answering the same query (exact
//! `count(DISTINCT …)`, GROUPING SETS) over the raw Parquet, in the same run. Prints the max
//! relative error of our uniques against DuckDB's, the rollup build time and size, and the hour
//! form's time.
//!
//! Generates `BENCH_EVENTS` events (default 200 000, so `cargo bench` stays quick) spread evenly
//! over 60 days into `dt=/hour=` partitions (one file, one commit manifest and one committed
//! catalog batch per hour), 20 activities in 5 groups, 90 % impressions, a device pool a fifth
//! of the events (OAID 70 %, IDFA 10 %, the rest IP + user agent only). Run:
//!
//! ```text
//! BENCH_EVENTS=200000000 BENCH_LAKE=/tmp/lake-200m \
//!     BACKFLOW_TEST_PYTHON=~/.cache/backflow/tools/py/bin/python cargo bench --bench report_60d
//! ```
//!
//! `BENCH_LAKE=/path` keeps (and reuses) the generated lake and its catalog
//! (`/path.catalog.sqlite`, rollups included: delete it to time the build again).
//! `BENCH_SCAN=1` also times the exact scan path (`exact=true`); `BENCH_DUCKDB_MEMORY` caps
//! DuckDB's memory (default 8GB; it spills to `/path.duckdb-tmp` beyond, at most
//! `BENCH_DUCKDB_SPILL`, default 8GB, then fails and the bench says so);
//! `BENCH_DUCKDB_KEY=hash` has DuckDB count distinct `hash(device key)` instead of the key text;
//! `BENCH_COMPARE_DAYS=N` compares (times and errors) over the first N days only;
//! `BENCH_DUCKDB_APPROX=1` also times DuckDB's `approx_count_distinct` over the 60 days.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use chrono::{Days, NaiveDate, TimeZone as _};
use polars::prelude::*;

#[path = "common/lake.rs"]
mod lake;

use backflow::catalog::{BatchStats, Catalog, NewActivity, RollupDelta};
use backflow::report::{AdMonitoringQuery, DateRange, Dimension, Form, RegionLevel, Reports};
use backflow::storage::{StorageUrl, StoreRegistry};

const DAYS: u64 = 60;
const ACTIVITIES: i64 = 20;

fn first_day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 1, 1).unwrap()
}

fn generate(lake_dir: &Path, events: usize, activity_ids: &[i64]) {
    let tz = chrono_tz::Asia::Shanghai;
    let hours = (DAYS * 24) as usize;
    let devices = (events / 5).max(1);
    let mut rng = lake::XorShift::new();
    for (h, n) in lake::hourly_batches(events, hours) {
        let day = first_day() + Days::new((h / 24) as u64);
        let hour = (h % 24) as u32;
        let start = tz
            .from_local_datetime(&day.and_hms_opt(hour, 0, 0).unwrap())
            .earliest()
            .unwrap()
            .timestamp_micros();
        let mut endpoint = Vec::with_capacity(n);
        let mut activity = Vec::with_capacity(n);
        let mut received = Vec::with_capacity(n);
        let mut oaid: Vec<Option<String>> = Vec::with_capacity(n);
        let mut idfa: Vec<Option<String>> = Vec::with_capacity(n);
        let mut ip = Vec::with_capacity(n);
        let mut ua = Vec::with_capacity(n);
        for _ in 0..n {
            let r = rng.next();
            endpoint.push(if r.is_multiple_of(10) {
                "click"
            } else {
                "impression"
            });
            activity.push(activity_ids[(r >> 8) as usize % activity_ids.len()]);
            received.push(start + ((r >> 16) % 3_600_000_000) as i64);
            let device = (rng.next() as usize) % devices;
            match device % 10 {
                0..=6 => {
                    oaid.push(Some(format!("oaid-{device}")));
                    idfa.push(None);
                }
                7 => {
                    oaid.push(None);
                    idfa.push(Some(format!("IDFA-{device}")));
                }
                _ => {
                    oaid.push(None);
                    idfa.push(None);
                }
            }
            ip.push(format!(
                "10.{}.{}.{}",
                device >> 16 & 255,
                device >> 8 & 255,
                device & 255
            ));
            ua.push(format!("ua-{}", device % 50));
        }
        let mut columns = vec![
            lake::event_ids(h, n),
            lake::utc_micros("received_at", received),
            Column::new("endpoint".into(), endpoint),
            Column::new("workspace".into(), vec!["ws"; n]),
            Column::new("activity_id".into(), activity),
            Column::new("channel".into(), vec!["huawei"; n]),
            Column::new("user_ip".into(), ip),
            Column::new("user_agent".into(), ua),
        ];
        columns.extend(lake::device_id_columns(idfa, vec![None; n], oaid));
        let mut df = DataFrame::new_infer_height(columns).unwrap();
        lake::write_hour(lake_dir, day, format!("{hour:02}"), h, &mut df);
    }
}

type Cells = std::collections::BTreeMap<(String, String), [u64; 4]>;

/// DuckDB's answer (every cell of every level, `*` for "all") and its time.
fn duckdb(
    python: &str,
    lake: &Path,
    ids: &[(i64, String)],
    days: u64,
    approx: bool,
) -> Option<(f64, Cells)> {
    let values: Vec<String> = ids.iter().map(|(id, g)| format!("({id}, '{g}')")).collect();
    let from = first_day();
    let to = from + Days::new(days - 1);
    // `BENCH_DUCKDB_KEY=hash`: distinct 64-bit hashes of the device key instead of the key text
    // (a third of the memory; collisions ≈ n²/2⁶⁵, none expected at 40 M devices).
    let key = match std::env::var("BENCH_DUCKDB_KEY").as_deref() {
        Ok("hash") => "hash(dk)",
        _ => "dk",
    };
    // DuckDB's own HyperLogLog (`approx_count_distinct`) for reference.
    let distinct = |filter: &str| {
        if approx {
            format!("approx_count_distinct({key}) FILTER (WHERE {filter})")
        } else {
            format!("count(DISTINCT {key}) FILTER (WHERE {filter})")
        }
    };
    let sql = format!(
        "WITH acts(activity_id, grp) AS (VALUES {}),
         hits AS (SELECT CAST(e.dt AS VARCHAR) AS date, a.grp, e.endpoint <> 'impression' AS is_click,
           CASE WHEN idfa IS NOT NULL AND idfa <> '' THEN 'idfa:' || idfa
                WHEN imei_md5 IS NOT NULL AND imei_md5 <> '' THEN 'imei_md5:' || imei_md5
                WHEN oaid IS NOT NULL AND oaid <> '' THEN 'oaid:' || oaid
                WHEN android_id_md5 IS NOT NULL AND android_id_md5 <> '' THEN 'android_id_md5:' || android_id_md5
                WHEN mac_md5 IS NOT NULL AND mac_md5 <> '' THEN 'mac_md5:' || mac_md5
                WHEN caid IS NOT NULL AND caid <> '' THEN 'caid:' || caid
                WHEN aaid IS NOT NULL AND aaid <> '' THEN 'aaid:' || aaid
                ELSE 'ip_ua:' || coalesce(user_ip, '') || chr(10) || coalesce(user_agent, '') END AS dk
           FROM read_parquet('{lake}/ad_events/*/*/*.parquet', hive_partitioning = true) e
           JOIN acts a ON a.activity_id = e.activity_id
           WHERE e.workspace = 'ws' AND CAST(e.dt AS VARCHAR) BETWEEN '{from}' AND '{to}')
         SELECT coalesce(grp, '*'), coalesce(date, '*'),
           count(*) FILTER (WHERE NOT is_click), count(*) FILTER (WHERE is_click),
           {}, {}
         FROM hits GROUP BY GROUPING SETS ((grp, date), (grp), (date), ())",
        values.join(", "),
        distinct("NOT is_click"),
        distinct("is_click"),
        lake = lake.display(),
    );
    let what = if approx {
        "approx_count_distinct"
    } else {
        "exact count(DISTINCT)"
    };
    println!("duckdb over {days} days, {what} of {key}");
    let memory = std::env::var("BENCH_DUCKDB_MEMORY").unwrap_or_else(|_| "8GB".into());
    let spill_cap = std::env::var("BENCH_DUCKDB_SPILL").unwrap_or_else(|_| "8GB".into());
    let started = Instant::now();
    let spill = lake.with_extension("duckdb-tmp");
    let script = r#"
import json, sys, time, duckdb
con = duckdb.connect()
con.execute("SET enable_progress_bar = false")
con.execute("SET preserve_insertion_order = false")
con.execute(f"SET memory_limit = '{sys.argv[2]}'")
con.execute(f"SET temp_directory = '{sys.argv[3]}'")
con.execute(f"SET max_temp_directory_size = '{sys.argv[4]}'")
t = time.perf_counter()
rows = con.sql(sys.argv[1]).fetchall()
print(json.dumps({"seconds": time.perf_counter() - t, "rows": rows}))
"#;
    let out = std::process::Command::new(python)
        .args([
            "-c",
            script,
            &sql,
            &memory,
            &spill.display().to_string(),
            &spill_cap,
        ])
        .output()
        .expect("python");
    let _ = std::fs::remove_dir_all(&spill);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        println!(
            "duckdb failed after {:.1} s (memory_limit {memory}, max_temp_directory_size {spill_cap}): {}",
            started.elapsed().as_secs_f64(),
            err.lines().last().unwrap_or("")
        );
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("duckdb json");
    let secs = v["seconds"].as_f64().unwrap();
    let cells: Cells = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let s = |i: usize| r[i].as_str().unwrap().to_string();
            let n = |i: usize| r[i].as_u64().unwrap();
            ((s(0), s(1)), [n(2), n(3), n(4), n(5)])
        })
        .collect();
    println!(
        "duckdb (memory_limit {memory}): {secs:.3} s, {} cells",
        cells.len()
    );
    Some((secs, cells))
}

/// Every cell of our report, `*` for "all", with whether its uniques are estimates.
fn our_cells(
    report: &backflow::report::Report,
) -> std::collections::BTreeMap<(String, String), ([u64; 4], bool)> {
    let m = |x: &backflow::report::ad_monitoring::Metrics| {
        (
            [
                x.impressions,
                x.clicks,
                x.unique_impressions,
                x.unique_clicks,
            ],
            x.approximate,
        )
    };
    let mut out = std::collections::BTreeMap::new();
    for row in &report.table.by_dimension {
        out.insert((row.key.clone(), "*".to_string()), m(&row.metrics));
        for c in &row.children {
            out.insert((row.key.clone(), c.key.clone()), m(&c.metrics));
        }
    }
    for row in &report.table.by_bucket {
        out.insert(("*".to_string(), row.key.clone()), m(&row.metrics));
    }
    out.insert(("*".into(), "*".into()), m(&report.table.total));
    out
}

fn main() {
    let events: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let keep = std::env::var("BENCH_LAKE").ok().map(PathBuf::from);
    let tmp = tempfile::tempdir().unwrap();
    let lake = keep.clone().unwrap_or_else(|| tmp.path().join("lake"));
    let catalog_path = lake.with_extension("catalog.sqlite");
    let fresh_catalog = !catalog_path.exists();
    let catalog = Arc::new(Catalog::open(&catalog_path).unwrap());
    if fresh_catalog {
        let mut counter = 0u64;
        let new: Vec<NewActivity> = (0..ACTIVITIES)
            .map(|i| NewActivity {
                workspace: "ws".into(),
                name: format!("a{i}"),
                group: format!("g{}", i % 5),
                channel: "huawei".into(),
                ad_format: "feed".into(),
                landing_url: None,
                third_party_impression: vec![],
                third_party_click: vec![],
                template: None,
            })
            .collect();
        catalog
            .create_activities(&new, || {
                counter += 1;
                counter
            })
            .unwrap();
    }
    let created = catalog.activities("ws").unwrap();
    let ids: Vec<i64> = created.iter().map(|a| a.id).collect();
    if !lake.join("ad_events/_commits").exists() {
        let t = Instant::now();
        generate(&lake, events, &ids);
        println!(
            "generated {events} events over {DAYS} days in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    let parquet_bytes: u64 = walk(&lake.join("ad_events"))
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    println!("lake: {:.2} GB of Parquet", parquet_bytes as f64 / 1e9);

    let stores = StoreRegistry::default();
    let location = stores
        .open(&StorageUrl::File { root: lake.clone() })
        .unwrap();
    let reports = Reports::new(Arc::clone(&catalog), location, chrono_tz::Asia::Shanghai);
    let range = DateRange {
        from: first_day(),
        to: first_day() + Days::new(DAYS - 1),
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    if fresh_catalog {
        // The hourly files as the daemon's batches would have committed them.
        let mut files: Vec<String> = Vec::new();
        for entry in std::fs::read_dir(lake.join("ad_events/_commits")).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            let m: serde_json::Value = serde_json::from_str(&text).unwrap();
            files.push(m["files"][0]["path"].as_str().unwrap().to_string());
        }
        files.sort();
        for file in &files {
            let intent = catalog
                .create_intent("ad_events", &serde_json::json!({}), "2026-01-01T00:00:00Z")
                .unwrap();
            let stats = BatchStats {
                files: vec![file.clone()],
                ..BatchStats::default()
            };
            catalog
                .commit_batch(
                    "ad_events",
                    intent.seq,
                    &[],
                    &stats,
                    &RollupDelta::default(),
                )
                .unwrap();
        }
        let t = Instant::now();
        let summary = rt.block_on(reports.rebuild_rollups(Some(range))).unwrap();
        println!(
            "rollups built (rebuild-rollups, {} days, {} files, {} rows, {} cells) in {:.1} s",
            summary.days.len(),
            summary.files,
            summary.rows,
            summary.cells,
            t.elapsed().as_secs_f64()
        );
    }
    let size = |table: &str| -> (u64, u64) {
        let conn = rusqlite::Connection::open(&catalog_path).unwrap();
        conn.query_row(
            &format!("SELECT count(*), coalesce(sum(length(sketch)), 0) FROM {table}"),
            [],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
        )
        .unwrap()
    };
    for table in ["rollup_days", "rollup_hours", "rollup_ids"] {
        let (rows, bytes) = size(table);
        println!(
            "{table}: {rows} rows, {:.1} MB of sketches",
            bytes as f64 / 1e6
        );
    }
    println!(
        "catalog file: {:.1} MB",
        std::fs::metadata(&catalog_path)
            .map(|m| m.len())
            .unwrap_or(0) as f64
            / 1e6
    );

    let mut q = AdMonitoringQuery {
        workspace: "ws".into(),
        range,
        form: Form::Date,
        by: Dimension::Group,
        groups: vec![],
        channels: vec![],
        activities: vec![],
        region: RegionLevel::Province,
        metrics: vec![],
        exact: false,
    };
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let mut report = None;
    for run in 0..runs {
        let t = Instant::now();
        let r = rt.block_on(reports.ad_monitoring(&q)).unwrap();
        println!(
            "backflow 60-day by group and date, run {run}: {:.3} s from {:?} (impressions {}, unique {}; clicks {}, unique {})",
            t.elapsed().as_secs_f64(),
            r.source,
            r.table.total.impressions,
            r.table.total.unique_impressions,
            r.table.total.clicks,
            r.table.total.unique_clicks,
        );
        report = Some(r);
    }
    q.form = Form::Hour;
    for run in 0..runs.min(2) {
        let t = Instant::now();
        let r = rt.block_on(reports.ad_monitoring(&q)).unwrap();
        println!(
            "backflow 60-day by group and hour of day, run {run}: {:.3} s from {:?}",
            t.elapsed().as_secs_f64(),
            r.source
        );
    }
    q.form = Form::Date;
    if std::env::var("BENCH_SCAN").is_ok_and(|v| v == "1") {
        q.exact = true;
        let t = Instant::now();
        let r = rt.block_on(reports.ad_monitoring(&q)).unwrap();
        println!(
            "backflow exact scan (exact=true): {:.3} s from {:?}",
            t.elapsed().as_secs_f64(),
            r.source
        );
    }
    q.exact = false;
    let Ok(python) = std::env::var("BACKFLOW_TEST_PYTHON") else {
        return;
    };
    let groups: Vec<(i64, String)> = created.iter().map(|a| (a.id, a.group.clone())).collect();
    if std::env::var("BENCH_DUCKDB_APPROX").is_ok_and(|v| v == "1") {
        duckdb(&python, &lake, &groups, DAYS, true);
    }
    // The exact comparison, over the first `BENCH_COMPARE_DAYS` days (default all 60): exact
    // distinct over 200 M rows does not fit DuckDB in 8 GB of memory and 8 GB of spill here.
    let days: u64 = std::env::var("BENCH_COMPARE_DAYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DAYS);
    let report = if days == DAYS {
        report
    } else {
        q.range.to = first_day() + Days::new(days - 1);
        let t = Instant::now();
        let r = rt.block_on(reports.ad_monitoring(&q)).unwrap();
        println!(
            "backflow {days}-day by group and date: {:.3} s from {:?} (impressions {}, unique {})",
            t.elapsed().as_secs_f64(),
            r.source,
            r.table.total.impressions,
            r.table.total.unique_impressions,
        );
        Some(r)
    };
    if let Some(report) = report {
        let Some((_, theirs)) = duckdb(&python, &lake, &groups, days, false) else {
            return;
        };
        let ours = our_cells(&report);
        let mut worst = (0.0f64, String::new());
        let (mut squares, mut values, mut beyond_2sigma, mut beyond_3sigma) = (0.0f64, 0u64, 0, 0);
        let (mut approximate, mut exact_cells) = (0, 0);
        for (cell, want) in &theirs {
            let (got, approx) = ours.get(cell).copied().unwrap_or(([0; 4], false));
            assert_eq!(got[..2], want[..2], "{cell:?}: hits are exact");
            if approx {
                approximate += 1;
            } else {
                exact_cells += 1;
                assert_eq!(got, *want, "{cell:?}: an exact cell is exact");
            }
            for i in 2..4 {
                let error = (got[i] as f64 - want[i] as f64).abs() / (want[i].max(1) as f64);
                squares += error * error;
                values += 1;
                beyond_2sigma += usize::from(error > 2.0 * 0.0081);
                beyond_3sigma += usize::from(error > 3.0 * 0.0081);
                if error > worst.0 {
                    worst = (
                        error,
                        format!(
                            "{cell:?} {} {} vs {}",
                            ["", "", "unique_impressions", "unique_clicks"][i],
                            got[i],
                            want[i]
                        ),
                    );
                }
            }
        }
        println!(
            "uniques vs DuckDB over {days} days: {} cells ({approximate} approximate, {exact_cells} exact), max relative error {:.3} % at {}",
            theirs.len(),
            worst.0 * 100.0,
            worst.1
        );
        println!(
            "  {values} unique counts: RMS relative error {:.3} %, {beyond_2sigma} beyond 2σ (1.62 %), {beyond_3sigma} beyond 3σ (2.43 %)",
            (squares / values.max(1) as f64).sqrt() * 100.0
        );
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
