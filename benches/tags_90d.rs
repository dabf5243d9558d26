//! A user tag refresh (the shipped `pipelines/tags.yaml`: 7/30/90-day counts, last seen,
//! distinct media, top media and cities, CTR, RFM, AIPL) over generated `ad_events` Parquet,
//! timed and its peak RSS measured against DuckDB computing the same tags from the same files
//! and writing them to Parquet.
//!
//! Generates `BENCH_EVENTS` hits (default 2 000 000) spread evenly over 90 days into
//! `dt=/hour=` partitions (one file and one commit manifest per hour) for `BENCH_EVENTS / 10`
//! devices (OAID 60 %, IDFA 20 %, IMEI MD5 10 %, no device ID 10 %), 8 media, 30 cities, 85 %
//! impressions, 1 % bots. Both sides run as their own process under `/usr/bin/time -v`: the
//! release `backflow run user_tags --as-of …` and Python's DuckDB. Run:
//!
//! ```text
//! BENCH_EVENTS=100000000 BENCH_DIR=/tmp/bench-tags-100m \
//! BACKFLOW_TEST_PYTHON=~/.cache/backflow/tools/py/bin/python \
//!     nice -n 10 cargo bench --bench tags_90d
//! ```
//!
//! `BENCH_DIR` keeps (and reuses) the generated project and lake; `BENCH_RUNS` (default 1)
//! repeats the timed runs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use polars::prelude::*;

#[path = "common/lake.rs"]
mod lake;

const DAYS: i64 = 90;
/// The run the bench pretends to be; windows end at 2026-04-01T00:00Z.
const AS_OF: &str = "2026-04-01T00:30:00Z";

fn end() -> DateTime<Utc> {
    "2026-04-01T00:00:00Z".parse().unwrap()
}

fn generate(lake_dir: &Path, events: usize) {
    let hours = (DAYS * 24) as usize;
    let devices = (events / 10).max(1);
    let start = end() - Duration::days(DAYS);
    let media = [
        "oceanengine",
        "tencent",
        "kuaishou",
        "bilibili",
        "baidu",
        "huawei",
        "xiaomi",
        "weibo",
    ];
    let cities: Vec<String> = (0..30).map(|i| format!("city-{i:02}")).collect();
    let mut rng = lake::XorShift::new();
    for (h, n) in lake::hourly_batches(events, hours) {
        let hour_start = start + Duration::hours(h as i64);
        let local = hour_start.with_timezone(&chrono_tz::Asia::Shanghai);
        let (day, hour) = (local.format("%Y-%m-%d"), local.format("%H"));
        let base = hour_start.timestamp_micros();
        let mut endpoint = Vec::with_capacity(n);
        let mut time = Vec::with_capacity(n);
        let mut channel = Vec::with_capacity(n);
        let mut city: Vec<Option<&str>> = Vec::with_capacity(n);
        let mut bot = Vec::with_capacity(n);
        let mut oaid: Vec<Option<String>> = Vec::with_capacity(n);
        let mut idfa: Vec<Option<String>> = Vec::with_capacity(n);
        let mut imei: Vec<Option<String>> = Vec::with_capacity(n);
        for _ in 0..n {
            let r = rng.next();
            endpoint.push(if r % 100 < 85 { "impression" } else { "click" });
            time.push(base + ((r >> 8) % 3_600_000_000) as i64);
            let device = (rng.next() as usize) % devices;
            // A device's media and cities lean on a few values.
            channel.push(media[(device + (r >> 40) as usize % 3) % media.len()]);
            city.push(match (r >> 44) % 10 {
                0 => None,
                k => Some(cities[(device + k as usize / 4) % cities.len()].as_str()),
            });
            bot.push((r >> 50).is_multiple_of(100));
            let (o, i, m) = match device % 10 {
                0..=5 => (Some(format!("oaid-{device}")), None, None),
                6 | 7 => (None, Some(format!("IDFA-{device}")), None),
                8 => (None, None, Some(format!("{device:032x}"))),
                _ => (None, None, None),
            };
            oaid.push(o);
            idfa.push(i);
            imei.push(m);
        }
        let mut columns = vec![
            lake::event_ids(h, n),
            lake::utc_micros("event_time", time),
            Column::new("endpoint".into(), endpoint),
            Column::new("workspace".into(), vec!["ws"; n]),
            Column::new("activity_id".into(), vec![1i64; n]),
            Column::new("channel".into(), channel),
            Column::new("geo_city".into(), city),
            Column::new("is_bot".into(), bot),
            Column::new("is_test".into(), vec![false; n]),
        ];
        columns.extend(lake::device_id_columns(idfa, imei, oaid));
        let mut df = DataFrame::new_infer_height(columns).unwrap();
        lake::write_hour(lake_dir, day, hour, h + 1, &mut df);
    }
}

/// The shipped tags in DuckDB SQL, written to `out`.
fn duckdb_sql(lake: &Path, out: &Path) -> String {
    let e = end().timestamp_micros();
    let s = |days: i64| (end() - Duration::days(days)).timestamp_micros();
    let (s7, s30, s90) = (s(7), s(30), s(90));
    let fields = [
        "idfa",
        "imei_md5",
        "oaid",
        "android_id_md5",
        "mac_md5",
        "caid",
        "aaid",
    ];
    let present = |f: &str| format!("({f} IS NOT NULL AND {f} <> '')");
    let user: String = fields
        .iter()
        .map(|f| format!(" WHEN {} THEN {f}", present(f)))
        .collect();
    let prio: String = fields
        .iter()
        .enumerate()
        .map(|(i, f)| format!(" WHEN {} THEN {i}", present(f)))
        .collect();
    let ids: Vec<String> = fields
        .iter()
        .map(|f| format!("max(CASE WHEN {} THEN {f} END) AS {f}", present(f)))
        .collect();
    let top = |name: &str, tag: &str, column: &str, n: usize, filter: &str| {
        format!(
            "{name} AS (SELECT u, string_agg(v, ',' ORDER BY c DESC, v) AS {tag} FROM (
               SELECT u, v, c, row_number() OVER (PARTITION BY u ORDER BY c DESC, v) AS r FROM
                 (SELECT u, {column} AS v, count(*) AS c FROM hu WHERE {filter} AND {column} IS NOT NULL GROUP BY ALL)
             ) WHERE r <= {n} GROUP BY u)"
        )
    };
    format!(
        r#"COPY (
WITH h AS (
  SELECT *, epoch_us(event_time) AS t, CASE{user} END AS u, CASE{prio} END AS prio
  FROM read_parquet('{lake}/ad_events/*/*/*.parquet', hive_partitioning = false)
  WHERE epoch_us(event_time) >= {s90} AND epoch_us(event_time) < {e}
    AND NOT coalesce(is_bot, false) AND NOT coalesce(is_test, false)
), hu AS (SELECT * FROM h WHERE u IS NOT NULL),
base AS (
  SELECT u, ['idfa', 'imei', 'oaid', 'android_id', 'mac', 'caid', 'aaid'][min(prio) + 1] AS id_type,
    {ids},
    count(*) FILTER (WHERE t >= {s7} AND endpoint = 'impression') AS user_tag_impressions_7d,
    count(*) FILTER (WHERE t >= {s7} AND endpoint = 'click') AS user_tag_clicks_7d,
    count(*) FILTER (WHERE t >= {s30} AND endpoint = 'impression') AS user_tag_impressions_30d,
    count(*) FILTER (WHERE t >= {s30} AND endpoint = 'click') AS user_tag_clicks_30d,
    count(*) FILTER (WHERE endpoint = 'click') AS user_tag_clicks_90d,
    count(*) AS user_tag_hits_90d,
    max(event_time) AS user_tag_last_seen,
    max(event_time) FILTER (WHERE endpoint = 'click') AS user_tag_last_click
  FROM hu GROUP BY u
),
media AS (SELECT u, string_agg(v, ',' ORDER BY v) AS user_tag_media_30d
  FROM (SELECT DISTINCT u, channel AS v FROM hu WHERE t >= {s30} AND channel IS NOT NULL) GROUP BY u),
{top_click},
{top_cities},
scored AS (
  SELECT b.*, media.user_tag_media_30d, top_click.user_tag_top_click_media_30d, top_cities.user_tag_top_cities_90d,
    CASE WHEN user_tag_impressions_30d >= 10 THEN user_tag_clicks_30d::DOUBLE / user_tag_impressions_30d END AS user_tag_ctr_30d,
    1 + (rd < 1)::INT + (rd < 7)::INT + (rd < 30)::INT AS rs,
    1 + (user_tag_clicks_90d >= 1)::INT + (user_tag_clicks_90d >= 3)::INT + (user_tag_clicks_90d >= 10)::INT AS fs,
    1 + (user_tag_hits_90d >= 10)::INT + (user_tag_hits_90d >= 50)::INT + (user_tag_hits_90d >= 200)::INT AS ms
  FROM (SELECT *, ({e} - epoch_us(user_tag_last_seen)) // 86400000000 AS rd FROM base) b
  LEFT JOIN media USING (u) LEFT JOIN top_click USING (u) LEFT JOIN top_cities USING (u)
),
rfm AS (SELECT *, rs >= avg(rs) OVER () AS hr, fs >= avg(fs) OVER () AS hf, ms >= avg(ms) OVER () AS hm FROM scored)
SELECT u AS user_id, id_type, idfa, imei_md5, oaid, android_id_md5, mac_md5, caid, aaid,
  user_tag_impressions_7d, user_tag_clicks_7d, user_tag_impressions_30d, user_tag_clicks_30d,
  user_tag_clicks_90d, user_tag_hits_90d, user_tag_last_seen, user_tag_last_click, user_tag_media_30d,
  user_tag_top_click_media_30d, user_tag_top_cities_90d, user_tag_ctr_30d,
  CASE WHEN hr AND hf AND hm THEN '高价值客户' WHEN NOT hr AND hf AND hm THEN '重点保持客户'
    WHEN hr AND NOT hf AND hm THEN '重点发展客户' WHEN NOT hr AND NOT hf AND hm THEN '重点挽留客户'
    WHEN hr AND hf THEN '一般价值客户' WHEN NOT hr AND hf THEN '一般保持客户'
    WHEN hr THEN '一般发展客户' ELSE '潜在客户' END AS user_tag_rfm,
  CASE WHEN user_tag_clicks_90d >= 10 AND user_tag_clicks_30d >= 3 THEN 'L'
    WHEN user_tag_clicks_30d >= 3 AND user_tag_clicks_7d >= 1 THEN 'P'
    WHEN user_tag_clicks_30d >= 1 THEN 'I'
    WHEN user_tag_impressions_30d >= 1 THEN 'A' END AS user_tag_aipl
FROM rfm ORDER BY user_id
) TO '{out}' (FORMAT parquet, COMPRESSION zstd)"#,
        lake = lake.display(),
        out = out.display(),
        ids = ids.join(", "),
        top_click = top(
            "top_click",
            "user_tag_top_click_media_30d",
            "channel",
            1,
            &format!("t >= {s30} AND endpoint = 'click'")
        ),
        top_cities = top(
            "top_cities",
            "user_tag_top_cities_90d",
            "geo_city",
            3,
            "true"
        ),
    )
}

/// Runs `cmd` under `/usr/bin/time -v`; returns (wall seconds, CPU seconds, peak RSS MiB,
/// stdout). CPU seconds (user + system) are what to compare on a shared machine.
fn timed(cmd: Command) -> (f64, f64, f64, String) {
    let program = cmd.get_program().to_owned();
    let args: Vec<_> = cmd.get_args().map(ToOwned::to_owned).collect();
    let mut outer = Command::new("/usr/bin/time");
    outer.arg("-v").arg(program).args(args);
    if let Some(dir) = cmd.get_current_dir() {
        outer.current_dir(dir);
    }
    let t = Instant::now();
    let out = outer.output().expect("/usr/bin/time");
    let secs = t.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}", stderr);
    let field = |name: &str| -> f64 {
        stderr
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(f64::NAN)
    };
    let rss_kb = field("Maximum resident set size (kbytes):");
    let cpu = field("User time (seconds):") + field("System time (seconds):");
    (
        secs,
        cpu,
        rss_kb / 1024.0,
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn main() {
    let events: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let tmp = tempfile::tempdir().unwrap();
    let project = std::env::var("BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| tmp.path().to_path_buf());
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    for sub in ["pipelines", "schemas"] {
        std::fs::create_dir_all(project.join(sub)).unwrap();
    }
    std::fs::copy(
        repo.join("pipelines/tags.yaml"),
        project.join("pipelines/tags.yaml"),
    )
    .unwrap();
    std::fs::copy(
        repo.join("schemas/media.yaml"),
        project.join("schemas/media.yaml"),
    )
    .unwrap();
    let lake = project.join("data/lake");
    if !lake.join("ad_events/_commits").exists() {
        let t = Instant::now();
        generate(&lake, events);
        println!(
            "generated {events} events, {} devices, over {DAYS} days in {:.1} s",
            events / 10,
            t.elapsed().as_secs_f64()
        );
    }
    for run in 0..runs {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_backflow"));
        cmd.args(["run", "user_tags", "--json", "--as-of", AS_OF])
            .current_dir(&project);
        let (secs, cpu, rss, stdout) = timed(cmd);
        let summary: serde_json::Value =
            serde_json::from_str(stdout.lines().last().unwrap_or("{}")).unwrap_or_default();
        println!(
            "backflow run {run}: {secs:.2} s ({cpu:.1} CPU-s), peak RSS {rss:.0} MiB, {} users from {} hits, {} partitions",
            summary["rows_out"], summary["rows_in"], summary["partitions"]
        );
    }
    if let Ok(python) = std::env::var("BACKFLOW_TEST_PYTHON") {
        let out = project.join("duckdb_tags.parquet");
        let script = r#"
import sys, duckdb
con = duckdb.connect()
con.execute("SET enable_progress_bar = false")
con.execute("SET TimeZone = 'UTC'")
con.execute(sys.argv[1])
print(con.sql(f"SELECT count(*) FROM read_parquet('{sys.argv[2]}')").fetchone()[0])
"#;
        for run in 0..runs {
            let mut cmd = Command::new(&python);
            cmd.args([
                "-c",
                script,
                &duckdb_sql(&lake, &out),
                &out.display().to_string(),
            ])
            // DuckDB spills to `.tmp/` under its working directory.
            .current_dir(&project);
            let (secs, cpu, rss, stdout) = timed(cmd);
            println!(
                "duckdb run {run}: {secs:.2} s ({cpu:.1} CPU-s), peak RSS {rss:.0} MiB, {} users",
                stdout.trim()
            );
        }
        // Both results, row for row (the ratio rounded to 9 places).
        let check = r#"
import sys, duckdb
con = duckdb.connect()
con.execute("SET enable_progress_bar = false")
con.execute("SET TimeZone = 'UTC'")
a = f"SELECT * REPLACE (round(user_tag_ctr_30d, 9) AS user_tag_ctr_30d) FROM read_parquet('{sys.argv[1]}', hive_partitioning = false)"
b = f"SELECT * REPLACE (round(user_tag_ctr_30d, 9) AS user_tag_ctr_30d) FROM read_parquet('{sys.argv[2]}')"
print(con.sql(f"SELECT (SELECT count(*) FROM ({a} EXCEPT ALL {b})) + (SELECT count(*) FROM ({b} EXCEPT ALL {a}))").fetchone()[0])
"#;
        let pointer_dir = lake.join("datasets/user_tags/_current");
        let mut pointers: Vec<_> = std::fs::read_dir(&pointer_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        pointers.sort();
        let pointer: serde_json::Value =
            serde_json::from_slice(&std::fs::read(pointers.last().unwrap()).unwrap()).unwrap();
        let ours = lake
            .join(pointer["path"].as_str().unwrap())
            .join("user_tags/*.parquet");
        let out = Command::new(&python)
            .args([
                "-c",
                check,
                &ours.display().to_string(),
                &out.display().to_string(),
            ])
            .output()
            .unwrap();
        println!(
            "rows differing between backflow and duckdb: {}",
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
}
