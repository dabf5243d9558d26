//! A 60-day ad monitoring report (by activity group and date, exact uniques) over generated
//! `ad_events` Parquet, timed against DuckDB answering the same query over the same files.
//!
//! Generates `BENCH_EVENTS` events (default 2 000 000) spread evenly over 60 days into
//! `dt=/hour=` partitions (one file and one commit manifest per hour), 20 activities in 5
//! groups, 90 % impressions, a device pool a fifth of the events (OAID 70 %, IDFA 10 %, the rest
//! IP + user agent only). Run:
//!
//! ```text
//! BENCH_EVENTS=2000000 BACKFLOW_TEST_PYTHON=~/.cache/backflow/tools/py/bin/python \
//!     cargo bench --bench report_60d
//! ```
//!
//! `BENCH_LAKE=/path` keeps (and reuses) the generated lake.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use chrono::{Days, NaiveDate, TimeZone as _};
use polars::prelude::*;

use backflow::catalog::{Catalog, NewActivity};
use backflow::report::{AdMonitoringQuery, DateRange, Dimension, Form, RegionLevel, Reports};
use backflow::storage::{StorageUrl, StoreRegistry};

const DAYS: u64 = 60;
const ACTIVITIES: i64 = 20;

fn first_day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 1, 1).unwrap()
}

fn generate(lake: &Path, events: usize, activity_ids: &[i64]) {
    let tz = chrono_tz::Asia::Shanghai;
    let hours = (DAYS * 24) as usize;
    let per_hour = events.div_ceil(hours);
    let devices = (events / 5).max(1);
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for h in 0..hours {
        let seq = h as i64;
        let day = first_day() + Days::new((h / 24) as u64);
        let hour = (h % 24) as u32;
        let start = tz
            .from_local_datetime(&day.and_hms_opt(hour, 0, 0).unwrap())
            .earliest()
            .unwrap()
            .timestamp_micros();
        let n = per_hour.min(events.saturating_sub(h * per_hour));
        if n == 0 {
            break;
        }
        let mut endpoint = Vec::with_capacity(n);
        let mut activity = Vec::with_capacity(n);
        let mut received = Vec::with_capacity(n);
        let mut oaid: Vec<Option<String>> = Vec::with_capacity(n);
        let mut idfa: Vec<Option<String>> = Vec::with_capacity(n);
        let mut ip = Vec::with_capacity(n);
        let mut ua = Vec::with_capacity(n);
        for _ in 0..n {
            let r = next();
            endpoint.push(if r % 10 == 0 { "click" } else { "impression" });
            activity.push(activity_ids[(r >> 8) as usize % activity_ids.len()]);
            received.push(start + ((r >> 16) % 3_600_000_000) as i64);
            let device = (next() as usize) % devices;
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
        let mut df = DataFrame::new_infer_height(vec![
            Column::new(
                "event_id".into(),
                (0..n).map(|i| format!("{h}-{i}")).collect::<Vec<_>>(),
            ),
            Column::new("received_at".into(), received)
                .cast(&DataType::Datetime(
                    TimeUnit::Microseconds,
                    Some(TimeZone::UTC),
                ))
                .unwrap(),
            Column::new("endpoint".into(), endpoint),
            Column::new("workspace".into(), vec!["ws"; n]),
            Column::new("activity_id".into(), activity),
            Column::new("channel".into(), vec!["huawei"; n]),
            Column::new("user_ip".into(), ip),
            Column::new("user_agent".into(), ua),
            Column::new("idfa".into(), idfa),
            Column::new("imei_md5".into(), vec![None::<&str>; n]),
            Column::new("oaid".into(), oaid),
            Column::new("android_id_md5".into(), vec![None::<&str>; n]),
            Column::new("mac_md5".into(), vec![None::<&str>; n]),
            Column::new("caid".into(), vec![None::<&str>; n]),
            Column::new("aaid".into(), vec![None::<&str>; n]),
        ])
        .unwrap();
        let relative = format!("ad_events/dt={day}/hour={hour:02}/part-{seq:012}-0000.parquet");
        let path = lake.join(&relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let file = std::fs::File::create(&path).unwrap();
        ParquetWriter::new(file)
            .with_compression(ParquetCompression::Zstd(None))
            .finish(&mut df)
            .unwrap();
        let manifest = serde_json::json!({"files": [{"path": relative, "rows": n}]});
        let manifest_path = lake.join(format!("ad_events/_commits/{seq:012}.json"));
        std::fs::create_dir_all(manifest_path.parent().unwrap()).unwrap();
        std::fs::write(manifest_path, manifest.to_string()).unwrap();
    }
}

fn duckdb(python: &str, lake: &Path, ids: &[(i64, String)]) -> f64 {
    let values: Vec<String> = ids.iter().map(|(id, g)| format!("({id}, '{g}')")).collect();
    let from = first_day();
    let to = from + Days::new(DAYS - 1);
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
         SELECT grp, date, count(*) FILTER (WHERE NOT is_click), count(*) FILTER (WHERE is_click),
           count(DISTINCT dk) FILTER (WHERE NOT is_click), count(DISTINCT dk) FILTER (WHERE is_click)
         FROM hits GROUP BY GROUPING SETS ((grp, date), (grp), (date), ())",
        values.join(", "),
        lake = lake.display(),
    );
    let script = r#"
import sys, time, duckdb
con = duckdb.connect()
con.execute("SET enable_progress_bar = false")
t = time.perf_counter()
rows = con.sql(sys.argv[1]).fetchall()
print(time.perf_counter() - t, len(rows))
"#;
    let out = std::process::Command::new(python)
        .args(["-c", script, &sql])
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text.lines().last().unwrap_or("").split_whitespace();
    let secs: f64 = parts.next().unwrap().parse().unwrap();
    println!("duckdb: {secs:.3} s, {} rows", parts.next().unwrap_or("?"));
    secs
}

fn main() {
    let events: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    let keep = std::env::var("BENCH_LAKE").ok().map(PathBuf::from);
    let tmp = tempfile::tempdir().unwrap();
    let lake = keep.clone().unwrap_or_else(|| tmp.path().join("lake"));

    let catalog = Arc::new(Catalog::open_in_memory().unwrap());
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
    let created = catalog
        .create_activities(&new, || {
            counter += 1;
            counter
        })
        .unwrap();
    let ids: Vec<i64> = created.iter().map(|a| a.id).collect();
    if !lake.join("ad_events/_commits").exists() {
        let t = Instant::now();
        generate(&lake, events, &ids);
        println!(
            "generated {events} events over {DAYS} days in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }

    let stores = StoreRegistry::default();
    let location = stores
        .open(&StorageUrl::File { root: lake.clone() })
        .unwrap();
    let reports = Reports::new(Arc::clone(&catalog), location, chrono_tz::Asia::Shanghai);
    let q = AdMonitoringQuery {
        workspace: "ws".into(),
        range: DateRange {
            from: first_day(),
            to: first_day() + Days::new(DAYS - 1),
        },
        form: Form::Date,
        by: Dimension::Group,
        groups: vec![],
        channels: vec![],
        activities: vec![],
        region: RegionLevel::Province,
        metrics: vec![],
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let t = Instant::now();
    let files = rt
        .block_on(reports.committed.list(&reports.lake, "ad_events", q.range))
        .unwrap();
    let listed = t.elapsed().as_secs_f64();
    let wanted = backflow::report::ad_monitoring::wanted(&[]);
    rt.block_on(backflow::report::lake::frame(
        &reports.lake,
        &files,
        &wanted,
    ))
    .unwrap();
    println!(
        "phases: {} committed files listed in {listed:.3} s, scan planned (schemas read) in {:.3} s",
        files.len(),
        t.elapsed().as_secs_f64() - listed
    );
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    for run in 0..runs {
        let t = Instant::now();
        let report = rt.block_on(reports.ad_monitoring(&q)).unwrap();
        println!(
            "backflow run {run}: {:.3} s (total impressions {}, unique {}; clicks {}, unique {})",
            t.elapsed().as_secs_f64(),
            report.table.total.impressions,
            report.table.total.unique_impressions,
            report.table.total.clicks,
            report.table.total.unique_clicks,
        );
    }
    if let Ok(python) = std::env::var("BACKFLOW_TEST_PYTHON") {
        let groups: Vec<(i64, String)> = created.iter().map(|a| (a.id, a.group.clone())).collect();
        for _ in 0..3 {
            duckdb(&python, &lake, &groups);
        }
    }
}
