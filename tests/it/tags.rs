//! The user tag dataset end to end through the real binary: hits landed as committed Parquet
//! by a file-drop pipeline, `backflow run <job> --as-of …`, then DuckDB reads the published
//! version (resolved through `_current`) and compares it with every tag computed independently
//! in SQL from the same Parquet. Also: hour-level window boundaries; a tag on a missing column,
//! a removed column, an added column, a zero-row source and a refresh killed before publishing
//! each give their status and reason and leave the previous version current.

use std::fmt::Write as _;
use std::path::Path;

use chrono::{DateTime, Duration, Utc};

use crate::lake_fixtures::*;
use crate::support::*;

/// Hits as they come (only the columns each file has), into `ad_events`: schema changes.
const AD_RAW: &str = r#"
name: ad_raw
source:
  type: object_store_files
  url: file://./data/drops/raw
transforms:
  - cast: {event_time: timestamp, activity_id: int64}
sink:
  type: parquet
  dataset: ad_events
  partition_by: {column: event_time, granularity: hour}
"#;

/// Every tag kind, windows ending at the hour.
const TAGS: &str = r#"
kind: dataset
name: test_tags
dataset:
  type: user_tags
  output: test_tags
  id_columns: [idfa, imei_md5, oaid, android_id_md5, mac_md5, caid, aaid]
  window_end: hour
  tags:
    user_tag_impressions_7d: {type: count, window: 7d, filter: "endpoint = 'impression'"}
    user_tag_clicks_7d: {type: count, window: 7d, filter: "endpoint = 'click'"}
    user_tag_hits_12h: {type: count, window: 12h}
    user_tag_impressions_30d: {type: count, window: 30d, filter: "endpoint = 'impression'"}
    user_tag_clicks_30d: {type: count, window: 30d, filter: "endpoint = 'click'"}
    user_tag_clicks_90d: {type: count, window: 90d, filter: "endpoint = 'click'"}
    user_tag_hits_90d: {type: count, window: 90d}
    user_tag_activity_sum_30d: {type: sum, column: activity_id, window: 30d, filter: "endpoint = 'click'"}
    user_tag_last_seen: {type: last_seen, window: 90d}
    user_tag_last_click_30d: {type: last_seen, window: 30d, filter: "endpoint = 'click'"}
    user_tag_media_30d: {type: distinct, column: channel, window: 30d}
    user_tag_cities_90d: {type: distinct, column: geo_city, window: 90d, max_values: 2, separator: "|"}
    user_tag_top_click_media_30d: {type: top_n, column: channel, n: 1, window: 30d, filter: "endpoint = 'click'"}
    user_tag_top_media_90d: {type: top_n, column: channel, n: 2, window: 90d}
    user_tag_ctr_30d: {type: ratio, numerator: user_tag_clicks_30d, denominator: user_tag_impressions_30d, min_denominator: 10}
    user_tag_rfm:
      type: rfm
      recency: {tag: user_tag_last_seen, thresholds: [1, 7, 30]}
      frequency: {tag: user_tag_clicks_90d, thresholds: [1, 5, 10]}
      monetary: {tag: user_tag_hits_90d, thresholds: [10, 40], compare_to: 2}
    user_tag_aipl:
      type: aipl
      awareness: user_tag_impressions_30d >= 1
      interest: user_tag_clicks_30d >= 1
      purchase: user_tag_clicks_30d >= 3 AND user_tag_clicks_7d >= 1
      loyalty: user_tag_clicks_90d >= 8 OR user_tag_activity_sum_30d > 100
publish:
  keep_versions: 3
"#;

/// The run the test pretends to be; its hour starts at [`end`].
const AS_OF: &str = "2026-11-20T10:30:00Z";

fn end() -> DateTime<Utc> {
    "2026-11-20T10:00:00Z".parse().expect("end")
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// A small deterministic generator (no dependency needed for test data).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// One hit as an NDJSON line.
fn hit(n: usize, endpoint: &str, at: DateTime<Utc>, channel: &str, extra: &str) -> String {
    let time = at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    ad_hit(
        &format!("e{n}"),
        endpoint,
        &time,
        channel,
        7 + (n % 5) as i64,
        extra,
    )
}

/// Device `d`'s ID fields as JSON members: one or two IDs, or none (IP only).
fn device_ids(d: usize) -> String {
    match d % 9 {
        8 => r#","user_ip":"1.2.3.4""#.to_string(),
        7 => format!(r#","idfa":"IDFA-{d}","oaid":"OA-{d}""#),
        k => format!(
            r#","{}":"{}-{d}""#,
            ID_FIELDS[k],
            ID_FIELDS[k].to_uppercase()
        ),
    }
}

/// ~3000 hits of 45 devices over 100 days before the end and 2 hours after, plus hits on
/// every window boundary.
fn generated_hits() -> Vec<String> {
    let mut rng = Lcg(42);
    let channels = ["kuaishou", "tencent", "bilibili", "oceanengine"];
    let cities = [
        r#","geo_city":"北京""#,
        r#","geo_city":"上海""#,
        r#","geo_city":"广州""#,
        "",
    ];
    let mut out = Vec::new();
    let span = 102 * 24 * 3600;
    for n in 0..3000 {
        // Skewed devices: low numbers are heavy users.
        let d = (rng.next(45) * rng.next(45) / 44) as usize;
        let at = end() - Duration::days(100) + Duration::seconds(rng.next(span) as i64);
        let endpoint = match rng.next(20) {
            0..=13 => "impression",
            14..=18 => "click",
            _ => "feedback",
        };
        let flags = match rng.next(50) {
            0 => r#","is_bot":true"#,
            1 => r#","is_test":true"#,
            _ => "",
        };
        let channel = channels[(d + rng.next(3) as usize) % 4];
        let city = cities[(d + rng.next(2) as usize) % 4];
        out.push(hit(
            n,
            endpoint,
            at,
            channel,
            &format!("{}{city}{flags}", device_ids(d)),
        ));
    }
    // Boundaries: a window includes its start and excludes the end.
    let edges = [
        end(),
        end() - Duration::seconds(1),
        end() - Duration::days(7),
        end() - Duration::days(7) - Duration::seconds(1),
        end() - Duration::hours(12),
        end() - Duration::days(30),
        end() - Duration::days(90),
        end() - Duration::days(90) - Duration::seconds(1),
    ];
    for (i, at) in edges.iter().enumerate() {
        for endpoint in ["impression", "click"] {
            out.push(hit(
                10_000 + i * 2 + usize::from(endpoint == "click"),
                endpoint,
                *at,
                "tencent",
                r#","oaid":"EDGE""#,
            ));
        }
    }
    out
}

/// A project whose `ad_events` come from file drops: through the schema (daily partitions), or
/// `raw`.
fn project(raw: bool) -> Project {
    let p = if raw {
        let p = project_without_journal();
        p.write("pipelines/ad_raw.yaml", AD_RAW);
        p
    } else {
        ad_drop_project("day")
    };
    p.write("pipelines/test_tags.yaml", TAGS);
    p
}

fn refresh(p: &Project, job: &str, as_of: &str) -> serde_json::Value {
    run_ok(p, &["run", job, "--json", "--as-of", as_of])
}

fn refresh_fails(p: &Project, job: &str, as_of: &str) -> String {
    let out = p.run(&["run", job, "--as-of", as_of]);
    assert!(
        !out.status.success(),
        "the refresh should fail: {}",
        stdout(&out)
    );
    stderr(&out)
}

/// The folder of the version `_current` points at, relative to the lake.
fn current_path(lake: &Path, dataset: &str) -> String {
    current_pointer(lake, dataset)["path"]
        .as_str()
        .expect("path")
        .to_string()
}

/// Every tag of [`TAGS`] computed by DuckDB from the committed Parquet, as of `end`.
fn expected_sql(end: DateTime<Utc>) -> String {
    let start = |d: Duration| micros(end - d);
    let (e, s12h, s7, s30, s90) = (
        micros(end),
        start(Duration::hours(12)),
        start(Duration::days(7)),
        start(Duration::days(30)),
        start(Duration::days(90)),
    );
    let present = |f: &str| format!("({f} IS NOT NULL AND {f} <> '')");
    let mut user = String::from("CASE");
    let mut prio = String::from("CASE");
    for (i, f) in ID_FIELDS.iter().enumerate() {
        let _ = write!(user, " WHEN {} THEN {f}", present(f));
        let _ = write!(prio, " WHEN {} THEN {i}", present(f));
    }
    user.push_str(" END");
    prio.push_str(" END");
    let ids: Vec<String> = ID_FIELDS
        .iter()
        .map(|f| format!("max(CASE WHEN {} THEN {f} END) AS {f}", present(f)))
        .collect();
    let ids = ids.join(", ");
    format!(
        r#"
WITH h AS (
  SELECT *, epoch_us(event_time) AS t, {user} AS u, {prio} AS prio
  FROM read_parquet('data/lake/ad_events/**/*.parquet', union_by_name = true, hive_partitioning = false)
  WHERE epoch_us(event_time) >= {s90} AND epoch_us(event_time) < {e}
    AND NOT coalesce(is_bot, false) AND NOT coalesce(is_test, false)
), hu AS (SELECT * FROM h WHERE u IS NOT NULL),
base AS (
  SELECT u,
    ['idfa', 'imei', 'oaid', 'android_id', 'mac', 'caid', 'aaid'][min(prio) + 1] AS id_type,
    {ids},
    count(*) FILTER (WHERE t >= {s7} AND endpoint = 'impression') AS user_tag_impressions_7d,
    count(*) FILTER (WHERE t >= {s7} AND endpoint = 'click') AS user_tag_clicks_7d,
    count(*) FILTER (WHERE t >= {s12h}) AS user_tag_hits_12h,
    count(*) FILTER (WHERE t >= {s30} AND endpoint = 'impression') AS user_tag_impressions_30d,
    count(*) FILTER (WHERE t >= {s30} AND endpoint = 'click') AS user_tag_clicks_30d,
    count(*) FILTER (WHERE t >= {s90} AND endpoint = 'click') AS user_tag_clicks_90d,
    count(*) AS user_tag_hits_90d,
    coalesce(sum(activity_id) FILTER (WHERE t >= {s30} AND endpoint = 'click'), 0)::BIGINT AS user_tag_activity_sum_30d,
    max(event_time) AS user_tag_last_seen,
    max(event_time) FILTER (WHERE t >= {s30} AND endpoint = 'click') AS user_tag_last_click_30d
  FROM hu GROUP BY u
),
media AS (
  SELECT u, string_agg(v, ',' ORDER BY v) AS user_tag_media_30d
  FROM (SELECT DISTINCT u, channel AS v FROM hu WHERE t >= {s30} AND channel IS NOT NULL) GROUP BY u
),
cities AS (
  SELECT u, string_agg(v, '|' ORDER BY v) AS user_tag_cities_90d FROM (
    SELECT u, v, row_number() OVER (PARTITION BY u ORDER BY v) AS r
    FROM (SELECT DISTINCT u, geo_city AS v FROM hu WHERE geo_city IS NOT NULL)
  ) WHERE r <= 2 GROUP BY u
),
top_click AS (
  SELECT u, string_agg(v, ',' ORDER BY n DESC, v) AS user_tag_top_click_media_30d FROM (
    SELECT u, v, n, row_number() OVER (PARTITION BY u ORDER BY n DESC, v) AS r FROM
      (SELECT u, channel AS v, count(*) AS n FROM hu WHERE t >= {s30} AND endpoint = 'click' AND channel IS NOT NULL GROUP BY ALL)
  ) WHERE r <= 1 GROUP BY u
),
top_media AS (
  SELECT u, string_agg(v, ',' ORDER BY n DESC, v) AS user_tag_top_media_90d FROM (
    SELECT u, v, n, row_number() OVER (PARTITION BY u ORDER BY n DESC, v) AS r FROM
      (SELECT u, channel AS v, count(*) AS n FROM hu WHERE channel IS NOT NULL GROUP BY ALL)
  ) WHERE r <= 2 GROUP BY u
),
joined AS (
  SELECT b.*, media.user_tag_media_30d, cities.user_tag_cities_90d,
    top_click.user_tag_top_click_media_30d, top_media.user_tag_top_media_90d,
    CASE WHEN user_tag_impressions_30d >= 10 THEN user_tag_clicks_30d::DOUBLE / user_tag_impressions_30d END AS user_tag_ctr_30d
  FROM base b
  LEFT JOIN media USING (u) LEFT JOIN cities USING (u)
  LEFT JOIN top_click USING (u) LEFT JOIN top_media USING (u)
),
scored AS (
  SELECT *,
    (user_tag_last_seen IS NOT NULL AND user_tag_clicks_90d IS NOT NULL AND user_tag_hits_90d IS NOT NULL) AS valid,
    1 + (rd < 1)::INT + (rd < 7)::INT + (rd < 30)::INT AS rs,
    1 + (user_tag_clicks_90d >= 1)::INT + (user_tag_clicks_90d >= 5)::INT + (user_tag_clicks_90d >= 10)::INT AS fs,
    1 + (user_tag_hits_90d >= 10)::INT + (user_tag_hits_90d >= 40)::INT AS ms
  FROM (SELECT *, ({e} - epoch_us(user_tag_last_seen)) // 86400000000 AS rd FROM joined)
),
rfm AS (
  SELECT *,
    rs >= avg(rs) FILTER (WHERE valid) OVER () AS hr,
    fs >= avg(fs) FILTER (WHERE valid) OVER () AS hf,
    ms >= 2 AS hm
  FROM scored
)
SELECT u AS user_id, id_type, idfa, imei_md5, oaid, android_id_md5, mac_md5, caid, aaid,
  user_tag_impressions_7d, user_tag_clicks_7d, user_tag_hits_12h, user_tag_impressions_30d,
  user_tag_clicks_30d, user_tag_clicks_90d, user_tag_hits_90d, user_tag_activity_sum_30d,
  user_tag_last_seen, user_tag_last_click_30d, user_tag_media_30d, user_tag_cities_90d,
  user_tag_top_click_media_30d, user_tag_top_media_90d, round(user_tag_ctr_30d, 9) AS user_tag_ctr_30d,
  CASE WHEN NOT valid THEN NULL
    WHEN hr AND hf AND hm THEN '高价值客户' WHEN NOT hr AND hf AND hm THEN '重点保持客户'
    WHEN hr AND NOT hf AND hm THEN '重点发展客户' WHEN NOT hr AND NOT hf AND hm THEN '重点挽留客户'
    WHEN hr AND hf THEN '一般价值客户' WHEN NOT hr AND hf THEN '一般保持客户'
    WHEN hr THEN '一般发展客户' ELSE '潜在客户' END AS user_tag_rfm,
  CASE WHEN user_tag_clicks_90d >= 8 OR user_tag_activity_sum_30d > 100 THEN 'L'
    WHEN user_tag_clicks_30d >= 3 AND user_tag_clicks_7d >= 1 THEN 'P'
    WHEN user_tag_clicks_30d >= 1 THEN 'I'
    WHEN user_tag_impressions_30d >= 1 THEN 'A' END AS user_tag_aipl
FROM rfm
"#
    )
}

fn published(version: &str) -> String {
    format!(
        "SELECT * REPLACE (round(user_tag_ctr_30d, 9) AS user_tag_ctr_30d) FROM {}",
        published_table(version, "user_tags")
    )
}

/// Asserts the published version equals the SQL, showing a few differing rows if not.
fn check_against_sql(p: &Project, version: &str, end: DateTime<Utc>) -> i64 {
    let expected = expected_sql(end);
    let (differ, published_rows, expected_rows) = diff(p, &published(version), &expected);
    if differ != 0 {
        let sample = duckdb(
            p.path(),
            &format!(
                "(SELECT 'published' AS side, * FROM (SELECT * FROM ({}) EXCEPT ALL SELECT * FROM ({expected})) LIMIT 3) \
                 UNION ALL (SELECT 'sql' AS side, * FROM (SELECT * FROM ({expected}) EXCEPT ALL SELECT * FROM ({})) LIMIT 3)",
                published(version),
                published(version)
            ),
        );
        panic!("{differ} rows differ from the SQL computation: {sample:?}");
    }
    assert_eq!(published_rows, expected_rows);
    published_rows
}

fn distinct_values(p: &Project, version: &str, column: &str) -> Vec<String> {
    let (_, _, rows) = duckdb(
        p.path(),
        &format!(
            "SELECT DISTINCT {column}::VARCHAR FROM {} WHERE {column} IS NOT NULL ORDER BY 1",
            published_table(version, "user_tags")
        ),
    )
    .expect("duckdb");
    rows.iter()
        .map(|r| r[0].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn every_tag_kind_equals_duckdb_sql_over_the_same_parquet() {
    if require_env("BACKFLOW_TEST_PYTHON").is_none() {
        return;
    }
    let p = project(false);
    drop_hits(&p, "ad", "hits.ndjson", &generated_hits());
    run_ok(&p, &["run", "ad_drop", "--json"]);

    let summary = refresh(&p, "test_tags", AS_OF);
    assert_eq!(summary["status"], "succeeded");
    assert_eq!(summary["window_end"], "2026-11-20T10:00:00Z");
    let version = current_path(&p.lake(), "test_tags");
    let users = check_against_sql(&p, &version, end());
    assert!(users >= 30, "{users} users");
    assert_eq!(summary["rows_out"], users);

    // The data exercises every kind: several RFM types and AIPL stages, ratios given and
    // withheld, multi-value tags with several values.
    assert!(distinct_values(&p, &version, "user_tag_rfm").len() >= 4);
    assert_eq!(
        distinct_values(&p, &version, "user_tag_aipl"),
        ["A", "I", "L", "P"]
    );
    assert!(!distinct_values(&p, &version, "user_tag_ctr_30d").is_empty());
    assert!(
        distinct_values(&p, &version, "user_tag_media_30d")
            .iter()
            .any(|v| v.contains(','))
    );
    assert!(
        distinct_values(&p, &version, "user_tag_cities_90d")
            .iter()
            .all(|v| v.split('|').count() <= 2)
    );

    // The boundary device: each window includes its start, the end is excluded.
    let (_, _, rows) = duckdb(
        p.path(),
        &format!(
            "SELECT user_tag_clicks_7d, user_tag_hits_12h, user_tag_clicks_90d, strftime(user_tag_last_seen, '%Y-%m-%dT%H:%M:%S') \
             FROM {} WHERE user_id = 'EDGE'",
            published_table(&version, "user_tags")
        ),
    )
    .expect("duckdb");
    // clicks at end-1s, end-12h, end-7d (not end-7d-1s) in 7d; end-1s and end-12h in 12h (x2
    // endpoints); all but end and end-90d-1s in 90d.
    assert_eq!(rows[0][0].as_i64(), Some(3));
    assert_eq!(rows[0][1].as_i64(), Some(4));
    assert_eq!(rows[0][2].as_i64(), Some(6));
    assert_eq!(rows[0][3].as_str(), Some("2026-11-20T09:59:59"));

    // The columns table describes every column with its tag type.
    let (_, _, rows) = duckdb(
        p.path(),
        &format!(
            "SELECT column_name, role, tag_type FROM {} WHERE column_name IN ('user_id', 'oaid', 'user_tag_media_30d', 'user_tag_top_click_media_30d', 'user_tag_top_media_90d', 'user_tag_last_seen', 'user_tag_ctr_30d') ORDER BY 1",
            published_table(&version, "columns")
        ),
    )
    .expect("duckdb");
    let rows: Vec<String> = rows
        .iter()
        .map(|r| format!("{} {} {}", r[0], r[1], r[2]))
        .collect();
    assert_eq!(
        rows,
        [
            r#""oaid" "id" null"#,
            r#""user_id" "key" null"#,
            r#""user_tag_ctr_30d" "tag" "numeric""#,
            r#""user_tag_last_seen" "tag" "date""#,
            r#""user_tag_media_30d" "tag" "text_multi""#,
            r#""user_tag_top_click_media_30d" "tag" "text_single""#,
            r#""user_tag_top_media_90d" "tag" "text_multi""#,
        ]
    );

    // The shipped example runs on the same data.
    let shipped = refresh(&p, "user_tags", AS_OF);
    assert_eq!(shipped["status"], "succeeded");
    assert_eq!(shipped["rows_out"], users);
}

#[test]
fn a_refresh_split_into_partitions_by_user_equals_the_one_pass_refresh_and_duckdb() {
    if require_env("BACKFLOW_TEST_PYTHON").is_none() {
        return;
    }
    let p = project(false);
    let parts = TAGS
        .replace("name: test_tags", "name: test_tags_parts")
        .replace("output: test_tags", "output: test_tags_parts")
        .replace(
            "window_end: hour",
            "window_end: hour\n  partition_rows: 1000",
        );
    p.write("pipelines/test_tags_parts.yaml", &parts);
    drop_hits(&p, "ad", "hits.ndjson", &generated_hits());
    run_ok(&p, &["run", "ad_drop", "--json"]);

    let one = refresh(&p, "test_tags", AS_OF);
    assert_eq!(one["partitions"], 1);
    // About 2 800 hits in the partitions read, at most 1 000 per partition.
    let split = refresh(&p, "test_tags_parts", AS_OF);
    assert_eq!(split["status"], "succeeded");
    assert!(split["partitions"].as_u64() >= Some(3), "{split}");
    assert_eq!(split["rows_in"], one["rows_in"]);
    assert_eq!(split["rows_out"], one["rows_out"]);

    let version = current_path(&p.lake(), "test_tags_parts");
    let users = check_against_sql(&p, &version, end());
    assert_eq!(split["rows_out"], users);
    let (differ, _, _) = diff(
        &p,
        &published(&version),
        &published(&current_path(&p.lake(), "test_tags")),
    );
    assert_eq!(differ, 0, "the split and one-pass versions differ");
    // Partitions are finished one at a time into one file, still in user order.
    let (_, _, rows) = duckdb(
        p.path(),
        &format!(
            "SELECT count(*) FILTER (WHERE prev >= user_id), count(*) FROM (SELECT user_id, \
             lag(user_id) OVER (ORDER BY file_row_number) AS prev FROM \
             read_parquet('data/lake/{version}/user_tags/*.parquet', file_row_number = true))"
        ),
    )
    .expect("duckdb");
    assert_eq!(rows[0][0].as_i64(), Some(0), "user_id out of order");
    assert_eq!(rows[0][1].as_i64(), Some(users));
    // The partitions were scratch: nothing is left in the data dir.
    let scratch = p.path().join("data/tmp/dataset-test_tags_parts");
    assert!(!scratch.exists(), "{} was left behind", scratch.display());
}

/// `backflow run JOB --as-of AS_OF --json` on the lake of bucket `b`.
fn refresh_on(p: &Project, b: &crate::s3::Bucket, job: &str) -> serde_json::Value {
    let mut cmd = p.command(&["run", job, "--json", "--as-of", AS_OF]);
    b.env(&mut cmd);
    let out = cmd.output().expect("spawn");
    assert!(out.status.success(), "{job} failed: {}", stderr(&out));
    serde_json::from_str(stdout(&out).lines().last().unwrap_or("")).expect("summary JSON")
}

#[tokio::test]
async fn a_refresh_on_an_s3_lake_equals_the_one_on_local_disk() {
    let Some(endpoint) = require_env("BACKFLOW_TEST_S3_ENDPOINT") else {
        return;
    };
    let name = format!(
        "tags-lake-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos()
    );
    let b = crate::s3::bucket(endpoint, &name);
    let parts = |p: &Project| {
        let job = TAGS.replace(
            "window_end: hour",
            "window_end: hour\n  partition_rows: 1000",
        );
        p.write("pipelines/test_tags.yaml", &job);
    };
    let local = project(false);
    parts(&local);
    drop_hits(&local, "ad", "hits.ndjson", &generated_hits());
    run_ok(&local, &["run", "ad_drop", "--json"]);
    let want = refresh(&local, "test_tags", AS_OF);
    let version = current_path(&local.lake(), "test_tags");
    let want_rows = row_multiset(&read_dataset(
        &local.lake().join(&version).join("user_tags"),
    ));

    // The same hits into the bucket's lake, the same refresh: files are downloaded to the
    // scratch directory and grouped in partitions there.
    let remote = project(false);
    parts(&remote);
    drop_hits(&remote, "ad", "hits.ndjson", &generated_hits());
    let mut cmd = remote.command(&["run", "ad_drop", "--json"]);
    b.env(&mut cmd);
    let out = cmd.output().expect("spawn");
    assert!(out.status.success(), "ad_drop on S3: {}", stderr(&out));
    let got = refresh_on(&remote, &b, "test_tags");
    assert_eq!(got["rows_in"], want["rows_in"]);
    assert_eq!(got["partitions"], want["partitions"]);
    assert!(got["partitions"].as_u64() >= Some(3), "{got}");
    let pointers = b.keys("lake/datasets/test_tags/_current").await;
    assert_eq!(pointers.len(), 1, "{pointers:?}");
    let pointer: serde_json::Value =
        serde_json::from_slice(&b.get(&pointers[0]).await).expect("pointer");
    let path = pointer["path"].as_str().expect("path");
    let got_rows = b.dataset_rows(&format!("lake/{path}/user_tags")).await;
    assert_eq!(got_rows.len(), want_rows.len());
    assert!(
        got_rows == want_rows,
        "the S3 refresh differs from the local one"
    );
    assert!(!remote.path().join("data/tmp/dataset-test_tags").exists());
}

#[test]
fn hourly_refreshes_move_the_windows_by_the_hour() {
    if require_env("BACKFLOW_TEST_PYTHON").is_none() {
        return;
    }
    let p = project(false);
    drop_hits(&p, "ad", "hits.ndjson", &generated_hits());
    run_ok(&p, &["run", "ad_drop", "--json"]);
    // 10:59:59 is still the 10:00 period; 11:00:00 starts the next.
    for (as_of, end) in [
        ("2026-11-20T10:59:59Z", "2026-11-20T10:00:00Z"),
        ("2026-11-20T11:00:00Z", "2026-11-20T11:00:00Z"),
        ("2026-11-20T12:10:00Z", "2026-11-20T12:00:00Z"),
    ] {
        let summary = refresh(&p, "test_tags", as_of);
        assert_eq!(summary["window_end"], end);
        let version = current_path(&p.lake(), "test_tags");
        check_against_sql(&p, &version, end.parse().expect("end"));
    }
    // The hit at 10:00:00 counts from the 11:00 refresh on.
    let (_, _, rows) = duckdb(
        p.path(),
        &format!(
            "SELECT user_tag_clicks_7d, strftime(user_tag_last_seen, '%H:%M:%S') FROM {} WHERE user_id = 'EDGE'",
            published_table(&current_path(&p.lake(), "test_tags"), "user_tags")
        ),
    )
    .expect("duckdb");
    // end-7d and end-7d-1s fell out of the 7-day window two hours later.
    assert_eq!(rows[0][0].as_i64(), Some(3));
    assert_eq!(rows[0][1].as_str(), Some("10:00:00"));
}

/// A raw hit with only the columns given.
fn raw_hit(n: usize, at: &str, oaid: &str, extra: &str) -> String {
    format!(
        r#"{{"event_id":"r{n}","event_time":"{at}","endpoint":"click","activity_id":7,"channel":"kuaishou","oaid":"{oaid}"{extra}}}"#
    )
}

#[test]
fn bad_input_fails_with_its_reason_and_keeps_the_previous_version() {
    let p = project(true);
    // A zero-row source: nothing committed.
    let reason = refresh_fails(&p, "test_tags", AS_OF);
    assert!(
        reason.contains("validation failed, not published: the new version has no rows"),
        "{reason}"
    );
    assert!(!p.lake().join("datasets/test_tags/_current").exists());

    // Hits with geo_city, then a first version.
    drop_hits(
        &p,
        "raw",
        "a.ndjson",
        &[
            raw_hit(1, "2026-11-18T03:00:00Z", "OA-1", r#","geo_city":"北京""#),
            raw_hit(2, "2026-11-18T04:00:00Z", "OA-2", r#","geo_city":"上海""#),
        ],
    );
    run_ok(&p, &["run", "ad_raw", "--json"]);
    let first = refresh(&p, "test_tags", AS_OF);
    assert_eq!(first["rows_out"], 2);
    let v1 = current_path(&p.lake(), "test_tags");

    // Killed after writing its version, before publishing: v1 stays current.
    let killed = p
        .command(&["run", "test_tags", "--as-of", AS_OF])
        .env("BACKFLOW_FAILPOINT", "dataset_before_publish")
        .output()
        .expect("spawn");
    assert!(!killed.status.success());
    assert_eq!(current_path(&p.lake(), "test_tags"), v1);

    // A tag on a column no file has: the tag and its line are named.
    p.edit_file(
        "pipelines/test_tags.yaml",
        "\npublish:",
        "\n    user_tag_oops: {type: distinct, column: no_such_column, window: 7d}\npublish:",
    );
    let reason = refresh_fails(&p, "test_tags", AS_OF);
    assert!(
        reason.contains("source columns: tag `user_tag_oops` (./pipelines/test_tags.yaml:36:5) uses column `no_such_column`, which no committed file of `ad_events` in the window has"),
        "{reason}"
    );
    assert_eq!(current_path(&p.lake(), "test_tags"), v1);
    p.edit_file(
        "pipelines/test_tags.yaml",
        "    user_tag_oops: {type: distinct, column: no_such_column, window: 7d}\n",
        "",
    );

    // The source loses geo_city (a newer file without it): the tag that uses it fails.
    drop_hits(
        &p,
        "raw",
        "b.ndjson",
        &[raw_hit(3, "2026-11-19T03:00:00Z", "OA-3", "")],
    );
    run_ok(&p, &["run", "ad_raw", "--json"]);
    let reason = refresh_fails(&p, "test_tags", AS_OF);
    assert!(
        reason.contains("column `geo_city` used by tag `user_tag_cities_90d` (./pipelines/test_tags.yaml:21:5) was removed from `ad_events`: the newest committed file ad_events/dt=2026-11-19/hour=11/"),
        "{reason}"
    );
    assert_eq!(current_path(&p.lake(), "test_tags"), v1);

    // geo_city is back and a new column appears: older files read the new one as null, the
    // refresh succeeds and publishes (deleting the killed refresh's folder).
    drop_hits(
        &p,
        "raw",
        "c.ndjson",
        &[raw_hit(
            4,
            "2026-11-19T05:00:00Z",
            "OA-4",
            r#","geo_city":"广州","new_column":"x""#,
        )],
    );
    run_ok(&p, &["run", "ad_raw", "--json"]);
    let next = refresh(&p, "test_tags", AS_OF);
    assert_eq!(next["rows_out"], 4);
    assert_eq!(next["seq"], 2);
    assert_eq!(next["deleted_orphans"].as_array().map(Vec::len), Some(1));
    assert_ne!(current_path(&p.lake(), "test_tags"), v1);

    // Only hits older than every window: zero rows in the window, not published.
    let reason = refresh_fails(&p, "test_tags", "2027-06-01T00:00:00Z");
    assert!(reason.contains("the new version has no rows"), "{reason}");
    assert_eq!(next["seq"], 2);
}
