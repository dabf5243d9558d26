//! Reports end to end: hits through the real daemon (several activities, groups, channels,
//! repeated devices, devices without IDs, another workspace), landed by `ad_events`, then the ad
//! monitoring report through the admin API and the CLI, compared cell by cell — every dimension
//! × bucket cell, every dimension over the range, every bucket, the total — with the same report
//! computed independently by DuckDB over the Parquet.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::lake_fixtures::ID_FIELDS;
use crate::serve::{Daemon, free_port, http, start_with};
use crate::support::*;

pub(crate) fn project() -> Project {
    let p = Project::new();
    p.edit_pipeline(
        "schedule:\n  cron: \"* * * * *\"\n  time_zone: Asia/Shanghai\n",
        "",
    );
    p.edit_file(
        "pipelines/ad_events.yaml",
        "schedule:\n  cron: \"*/10 * * * * *\"\n  time_zone: Asia/Shanghai\n",
        "",
    );
    p
}

pub(crate) fn create(
    p: &Project,
    env: &[(&str, String)],
    ws: &str,
    name: &str,
    group: &str,
    channel: &str,
) -> serde_json::Value {
    let out = p
        .command(&[
            "activity",
            "create",
            "--workspace",
            ws,
            "--name",
            name,
            "--group",
            group,
            "--channel",
            channel,
            "--format",
            "信息流",
            "--landing",
            "https://example.com/landing",
            "--json",
        ])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("spawn");
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_str(stdout(&out).trim()).expect("activity json")
}

/// A device as the media report it: (oaid, idfa, ip, ua); empty means not sent.
pub(crate) type Device = (&'static str, &'static str, &'static str, &'static str);

pub(crate) const DEVICES: [Device; 6] = [
    ("OA-1", "", "10.0.0.1", "ua-1"),
    ("OA-2", "", "10.0.0.2", "ua-1"),
    ("", "IDFA-1", "10.0.0.3", "ua-2"),
    ("", "", "10.0.0.4", "ua-2"),
    ("", "", "10.0.0.4", "ua-3"),
    ("", "", "", ""),
];

pub(crate) fn hit(activity: &serde_json::Value, kind: &str, d: Device) -> u16 {
    let url = activity[format!("{kind}_url")].as_str().expect("url");
    let url = url
        .replace("__OAID__", d.0)
        .replace("__IDFA__", d.1)
        .replace("__IP__", d.2)
        .replace("__UA__", d.3);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client")
            .get(&url)
            .header("user-agent", "Mozilla/5.0 (reports test)")
            .send()
            .await
            .expect("send")
            .status()
            .as_u16()
    })
}

pub(crate) fn get(d: &Daemon, path: &str, token: &str) -> http::Reply {
    http::send(
        reqwest::Method::GET,
        &format!("{}{path}", d.admin),
        Some(token),
    )
    .expect("request")
}

/// Triggers ad_events until a run started after this call has succeeded.
pub(crate) fn drain(d: &Daemon) {
    let last = || -> serde_json::Value {
        let runs = get(d, "/api/v1/runs?pipeline=ad_events&limit=1", &d.token);
        serde_json::from_str::<serde_json::Value>(&runs.body).expect("json")["runs"][0].clone()
    };
    let before = last()["id"].as_i64().unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let _ = http::send(
            reqwest::Method::POST,
            &format!("{}/api/v1/pipelines/ad_events/runs", d.admin),
            Some(&d.token),
        );
        std::thread::sleep(Duration::from_millis(300));
        let run = last();
        if run["id"].as_i64().unwrap_or(0) > before && run["status"] == "succeeded" {
            return;
        }
        assert!(run["status"] != "failed", "ad_events failed: {run}");
        assert!(Instant::now() < deadline, "ad_events did not run: {run}");
    }
}

pub(crate) type Cells = BTreeMap<(String, String), [u64; 4]>;

pub(crate) fn metrics(v: &serde_json::Value) -> [u64; 4] {
    let n = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"));
    [
        n("impressions"),
        n("clicks"),
        n("unique_impressions"),
        n("unique_clicks"),
    ]
}

/// Every cell of a report table, `*` standing for "all": (dimension, bucket) → metrics. Rows
/// without data (the dense axis of the time forms) are left out, as DuckDB has no such rows.
pub(crate) fn report_cells(table: &serde_json::Value) -> Cells {
    let mut out = Cells::new();
    let mut transposed = Cells::new();
    let rows = |k: &str| table[k].as_array().expect(k).clone();
    for row in rows("by_dimension") {
        let dim = row["key"].as_str().expect("key").to_string();
        out.insert((dim.clone(), "*".into()), metrics(&row));
        for child in row["children"].as_array().cloned().unwrap_or_default() {
            let bucket = child["key"].as_str().expect("key").to_string();
            out.insert((dim.clone(), bucket), metrics(&child));
        }
    }
    for row in rows("by_bucket") {
        let bucket = row["key"].as_str().expect("key").to_string();
        if metrics(&row) != [0; 4] {
            out.insert(("*".into(), bucket.clone()), metrics(&row));
        }
        for child in row["children"].as_array().cloned().unwrap_or_default() {
            let dim = child["key"].as_str().expect("key").to_string();
            transposed.insert((dim, bucket.clone()), metrics(&child));
        }
    }
    out.insert(("*".into(), "*".into()), metrics(&table["total"]));
    let leaves: Cells = out
        .iter()
        .filter(|((d, b), _)| d != "*" && b != "*")
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    assert_eq!(leaves, transposed, "both pivots hold the same cells");
    out
}

/// Text column `c` of the hits `e` in DuckDB (empty as NULL), or NULL where no file has it.
fn optional_column(columns: &[String], c: &str) -> String {
    if columns.iter().any(|x| x == c) {
        format!("nullif(e.{c}, '')")
    } else {
        "NULL".to_string()
    }
}

/// The device key of a hit `e` in DuckDB: its first ID present, else its IP and user agent. ID
/// columns no file has are left out.
fn device_key_sql(columns: &[String]) -> String {
    let whens: Vec<String> = ID_FIELDS
        .iter()
        .filter(|f| columns.iter().any(|x| x == *f))
        .map(|f| format!("WHEN e.{f} IS NOT NULL AND e.{f} <> '' THEN '{f}:' || e.{f}"))
        .collect();
    format!(
        "CASE {} ELSE 'ip_ua:' || coalesce(e.user_ip, '') || chr(10) || coalesce(e.user_agent, '') END",
        whens.join(" ")
    )
}

/// The same report computed by DuckDB over the lake's Parquet. Every file is committed here
/// (no crash in this test), so the whole dataset is read, with `dt`/`hour` from the partitions.
#[allow(clippy::too_many_arguments)]
fn duckdb_cells(
    p: &Project,
    activities: &[(i64, &str)],
    ws: &str,
    from: &str,
    to: &str,
    dim: &str,
    bucket: &str,
    columns: &[String],
) -> Option<Cells> {
    let acts: Vec<String> = activities
        .iter()
        .map(|(id, g)| format!("({id}, '{g}')"))
        .collect();
    let optional = |c: &str| optional_column(columns, c);
    let device_key = device_key_sql(columns);
    let sql = format!(
        "WITH acts(activity_id, grp) AS (VALUES {acts}),
         hits AS (
           SELECT CAST(e.dt AS VARCHAR) AS date,
                  lpad(CAST(e.hour AS VARCHAR), 2, '0') AS hour,
                  e.channel AS channel,
                  CAST(e.activity_id AS VARCHAR) AS activity,
                  a.grp AS grp,
                  coalesce({province}, 'unknown') AS province,
                  coalesce({os}, 'unknown') AS os,
                  e.endpoint <> 'impression' AS is_click,
                  {device_key} AS dk
           FROM read_parquet('{lake}/ad_events/*/*/*.parquet', hive_partitioning = true) e
           JOIN acts a ON a.activity_id = e.activity_id
           WHERE e.workspace = '{ws}' AND e.endpoint IN ('impression', 'click', 'feedback')
             AND CAST(e.dt AS VARCHAR) BETWEEN '{from}' AND '{to}')
         SELECT coalesce({dim}, '*'), coalesce({bucket}, '*'),
                count(*) FILTER (WHERE NOT is_click), count(*) FILTER (WHERE is_click),
                count(DISTINCT dk) FILTER (WHERE NOT is_click),
                count(DISTINCT dk) FILTER (WHERE is_click)
         FROM hits GROUP BY GROUPING SETS (({dim}, {bucket}), ({dim}), ({bucket}), ())",
        acts = acts.join(", "),
        province = optional("geo_province"),
        os = optional("ua_os"),
        lake = p.lake().display(),
    );
    let (_, _, rows) = duckdb(p.path(), &sql)?;
    Some(
        rows.iter()
            .map(|r| {
                let s = |i: usize| r[i].as_str().expect("text").to_string();
                let n = |i: usize| r[i].as_u64().expect("count");
                ((s(0), s(1)), [n(2), n(3), n(4), n(5)])
            })
            .collect(),
    )
}

fn parquet_columns(p: &Project) -> Option<Vec<String>> {
    let sql = format!(
        "SELECT column_name FROM (DESCRIBE SELECT * FROM read_parquet('{}/ad_events/*/*/*.parquet', union_by_name = true))",
        p.lake().display()
    );
    let (_, _, rows) = duckdb(p.path(), &sql)?;
    Some(
        rows.iter()
            .map(|r| r[0].as_str().unwrap_or("").to_string())
            .collect(),
    )
}

#[test]
fn ad_monitoring_report_equals_duckdb_over_the_lake_cell_by_cell() {
    let p = project();
    let (public, admin) = (free_port(), free_port());
    let env = vec![(
        "BACKFLOW__PUBLIC__BASE_URL",
        format!("http://127.0.0.1:{public}"),
    )];
    let a1 = create(&p, &env, "ws1", "a1", "gA", "huawei");
    let a2 = create(&p, &env, "ws1", "a2", "gA", "ocean_engine");
    let a3 = create(&p, &env, "ws1", "a3", "gB", "huawei");
    let other = create(&p, &env, "ws2", "elsewhere", "gA", "huawei");
    let out = p.run(&["quota", "add", "--workspace", "ws1", "--clicks", "1000"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let d = start_with(&p, (public, admin), &env);

    let plan = [&a1, &a2, &a3, &a1, &other];
    for i in 0..90usize {
        let kind = if i % 3 == 0 { "click" } else { "impression" };
        let status = hit(
            plan[i % plan.len()],
            kind,
            DEVICES[(i * 7 + i / 5) % DEVICES.len()],
        );
        assert!((200..400).contains(&status), "hit {i}: {status}");
    }
    drain(&d);

    let id = |a: &serde_json::Value| a["id"].as_i64().expect("id");
    let activities = [(id(&a1), "gA"), (id(&a2), "gA"), (id(&a3), "gB")];
    let today = chrono::Utc::now()
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .date_naive();
    let (from, to) = (
        (today - chrono::Days::new(1)).to_string(),
        today.to_string(),
    );
    let Some(columns) = parquet_columns(&p) else {
        return;
    };
    let base = "/api/v1/workspaces/ws1/reports/ad-monitoring";

    for (form, bucket) in [("date", "date"), ("hour", "hour"), ("audience", "province")] {
        for (by, dim) in [
            ("group", "grp"),
            ("channel", "channel"),
            ("activity", "activity"),
        ] {
            let reply = get(
                &d,
                &format!("{base}?from={from}&to={to}&form={form}&by={by}"),
                &d.token,
            );
            assert_eq!(reply.status, 200, "{}", reply.body);
            let report: serde_json::Value = serde_json::from_str(&reply.body).expect("json");
            let source = if form == "audience" { "scan" } else { "rollup" };
            assert_eq!(report["source"], source, "form={form}");
            let ours = report_cells(&report["table"]);
            let Some(theirs) =
                duckdb_cells(&p, &activities, "ws1", &from, &to, dim, bucket, &columns)
            else {
                return;
            };
            assert_eq!(ours, theirs, "form={form} by={by}");
            assert_eq!(ours[&("*".into(), "*".into())], {
                let t = &theirs[&("*".to_string(), "*".to_string())];
                *t
            });
            if form == "audience" {
                let os = report_cells(&report["os"]);
                let theirs = duckdb_cells(&p, &activities, "ws1", &from, &to, dim, "os", &columns)
                    .expect("duckdb");
                assert_eq!(os, theirs, "os by={by}");
                assert!(report["table"]["total"].get("ctr").is_none(), "no CTR");
            } else {
                let t = &report["table"]["total"];
                let ctr =
                    t["clicks"].as_f64().unwrap_or(0.0) / t["impressions"].as_f64().unwrap_or(1.0);
                assert!(
                    (t["ctr"].as_f64().unwrap_or(-1.0) - ctr).abs() < 1e-12,
                    "{t}"
                );
            }
        }
    }
    // The data are what the test meant: repeated devices make uniques smaller than counts, and
    // the other workspace's hits are not in ws1's report.
    let all = get(&d, &format!("{base}?from={from}&to={to}"), &d.token);
    let all: serde_json::Value = serde_json::from_str(&all.body).expect("json");
    let total = metrics(&all["table"]["total"]);
    assert_eq!(total[0] + total[1], 72, "{total:?}");
    assert!(total[2] < total[0] && total[3] < total[1], "{total:?}");

    // Overview and resource records agree with the lake (they come from the batch counters).
    let overview = get(&d, "/api/v1/workspaces/ws1/reports/overview", &d.token);
    assert_eq!(overview.status, 200, "{}", overview.body);
    let overview: serde_json::Value = serde_json::from_str(&overview.body).expect("json");
    for period in ["last_7_days", "last_month", "cumulative"] {
        assert_eq!(
            overview[period]["total"],
            total[0] + total[1],
            "{period}: {overview}"
        );
        assert_eq!(
            overview[period]["billable"], total[1],
            "{period}: {overview}"
        );
    }
    assert_eq!(overview["series"].as_array().map(Vec::len), Some(7));
    let out = p.run(&["report", "resources", "--workspace", "ws1", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let resources: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(resources["purchases"][0]["clicks"], 1000, "{resources}");
    assert_eq!(resources["quota"]["used"], total[1], "{resources}");
    let usage = resources["usage"].as_array().expect("usage");
    let used: u64 = usage.iter().map(|u| u["used"].as_u64().unwrap_or(0)).sum();
    assert_eq!(used, total[1]);
    assert_eq!(usage.last().expect("a day")["remaining"], 1000 - total[1]);
    let long = get(
        &d,
        "/api/v1/workspaces/ws1/reports/resources?from=2026-01-01&to=2026-04-01",
        &d.token,
    );
    assert_eq!(long.status, 400, "{}", long.body);
    assert!(long.body.contains("at most 90"), "{}", long.body);

    // Cascading filters: group gA and channel huawei leave a1 only.
    let filtered = get(
        &d,
        &format!("{base}?from={from}&to={to}&by=activity&group=gA&channel=huawei"),
        &d.token,
    );
    let filtered: serde_json::Value = serde_json::from_str(&filtered.body).expect("json");
    let only_a1 = report_cells(&filtered["table"]);
    let theirs = duckdb_cells(
        &p,
        &activities[..1],
        "ws1",
        &from,
        &to,
        "activity",
        "date",
        &columns,
    )
    .expect("duckdb");
    assert_eq!(only_a1, theirs);

    // CSV: the API's export and the CLI's are the same bytes; the CLI's JSON is the API's.
    let query = format!("from={from}&to={to}&form=hour&by=activity");
    let csv = get(&d, &format!("{base}?{query}&format=csv"), &d.token);
    assert_eq!(csv.status, 200);
    assert!(
        csv.body.starts_with(
            "activity_id,activity,hour,impressions,clicks,unique_impressions,unique_clicks,ctr\n"
        ),
        "{}",
        csv.body
    );
    let cli = |extra: &str| {
        let out = p.run(&[
            "report",
            "ad-monitoring",
            "--workspace",
            "ws1",
            "--from",
            &from,
            "--to",
            &to,
            "--form",
            "hour",
            "--by",
            "activity",
            extra,
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    assert_eq!(cli("--csv"), csv.body);
    let api_json = get(&d, &format!("{base}?{query}"), &d.token);
    let cli_json: serde_json::Value = serde_json::from_str(&cli("--json")).expect("cli json");
    assert_eq!(
        cli_json,
        serde_json::from_str::<serde_json::Value>(&api_json.body).expect("json")
    );
}

#[test]
fn report_requests_are_checked_before_anything_is_computed() {
    let p = project();
    let (public, admin) = (free_port(), free_port());
    let env = vec![(
        "BACKFLOW__PUBLIC__BASE_URL",
        format!("http://127.0.0.1:{public}"),
    )];
    create(&p, &env, "ws1", "a1", "gA", "huawei");
    let d = start_with(&p, (public, admin), &env);
    let out = p.run(&[
        "token",
        "create",
        "--role",
        "read_only",
        "--workspace",
        "ws2",
        "--label",
        "other team",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let scoped = stdout(&out).trim().to_string();
    let base = "/api/v1/workspaces/ws1/reports/ad-monitoring";

    let reply = get(&d, base, &scoped);
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert!(
        reply.body.contains("scoped to workspace `ws2`"),
        "{}",
        reply.body
    );
    // Its own workspace is fine (and empty: no activities there).
    let own = get(&d, "/api/v1/workspaces/ws2/reports/ad-monitoring", &scoped);
    assert_eq!(own.status, 200, "{}", own.body);
    assert_eq!(get(&d, base, "bft_wrong").status, 401);
    for report in ["overview", "resources"] {
        let reply = get(
            &d,
            &format!("/api/v1/workspaces/ws1/reports/{report}"),
            &scoped,
        );
        assert_eq!(reply.status, 403, "{report}: {}", reply.body);
    }

    for (query, status, reason) in [
        (
            "from=2026-01-01&to=2026-03-02",
            400,
            "at most 60 consecutive days",
        ),
        ("from=2026-03-02&to=2026-03-01", 400, "before it starts"),
        ("activity=999999", 400, "unknown activity 999999"),
        ("form=week", 400, "unknown form `week`"),
        ("metrics=cpc", 400, "unknown metric `cpc`"),
        ("form=audience&metrics=ctr", 400, "ctr"),
        ("by=media", 400, "unknown dimension"),
        ("from=yesterday", 400, "not a date"),
    ] {
        let reply = get(&d, &format!("{base}?{query}"), &d.token);
        assert_eq!(reply.status, status, "{query}: {}", reply.body);
        let body: serde_json::Value = serde_json::from_str(&reply.body).expect("json");
        assert!(
            body["error"].as_str().unwrap_or("").contains(reason),
            "{query}: {}",
            reply.body
        );
    }
    // The CLI says the same.
    let out = p.run(&[
        "report",
        "ad-monitoring",
        "--workspace",
        "ws1",
        "--from",
        "2026-01-01",
        "--to",
        "2026-03-02",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("at most 60 consecutive days"),
        "{}",
        stderr(&out)
    );
    // The default range is the 7 days before today.
    let reply = get(&d, base, &d.token);
    let body: serde_json::Value = serde_json::from_str(&reply.body).expect("json");
    let today = chrono::Utc::now()
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .date_naive();
    assert_eq!(body["to"], (today - chrono::Days::new(1)).to_string());
    assert_eq!(body["from"], (today - chrono::Days::new(7)).to_string());
    assert_eq!(body["table"]["by_bucket"].as_array().map(Vec::len), Some(7));
}

/// Tencent feedback devices: (muid, app_type, ip, user agent, adgroup_id); empty means not sent.
type FbDevice = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
);

const FB_DEVICES: [FbDevice; 5] = [
    (
        "0f607264fc6318a92b9e13c65db7cd3d",
        "android",
        "198.51.100.23",
        "ua-a",
        "228691429",
    ),
    (
        "1f607264fc6318a92b9e13c65db7cd3d",
        "android",
        "198.51.100.24",
        "ua-a",
        "228691430",
    ),
    (
        "2f607264fc6318a92b9e13c65db7cd3d",
        "ios",
        "203.0.113.9",
        "ua-i",
        "228691429",
    ),
    ("", "android", "203.0.113.10", "ua-b", ""),
    ("", "", "", "", "228691430"),
];

fn feedback_hit(url: &str, d: FbDevice) -> u16 {
    let mut query = vec!["click_time=1718000005".to_string()];
    for (k, v) in [
        ("muid", d.0),
        ("app_type", d.1),
        ("ip", d.2),
        ("user_agent", d.3),
        ("adgroup_id", d.4),
    ] {
        if !v.is_empty() {
            query.push(format!("{k}={v}"));
        }
    }
    http::send(
        reqwest::Method::GET,
        &format!("{url}?{}", query.join("&")),
        None,
    )
    .expect("feedback hit")
    .status
}

/// The Tencent report computed by DuckDB: feedback rows of the tasks' links.
#[allow(clippy::too_many_arguments)]
fn duckdb_tencent_cells(
    p: &Project,
    tasks: &[(i64, String)],
    ws: &str,
    from: &str,
    to: &str,
    dim: &str,
    bucket: &str,
    columns: &[String],
) -> Option<Cells> {
    let links: Vec<String> = tasks
        .iter()
        .map(|(id, link)| format!("('{link}', '{id}')"))
        .collect();
    let optional = |c: &str| optional_column(columns, c);
    let sql = format!(
        "WITH links(link_id, task) AS (VALUES {links}),
         hits AS (
           SELECT CAST(e.dt AS VARCHAR) AS date,
                  lpad(CAST(e.hour AS VARCHAR), 2, '0') AS hour,
                  l.task AS task,
                  coalesce({adgroup}, 'unknown') AS adgroup,
                  coalesce({province}, 'unknown') AS province,
                  coalesce({os}, 'unknown') AS os,
                  {device_key} AS dk
           FROM read_parquet('{lake}/ad_events/*/*/*.parquet', hive_partitioning = true, union_by_name = true) e
           JOIN links l ON l.link_id = e.link_id
           WHERE e.workspace = '{ws}' AND e.endpoint = 'feedback'
             AND CAST(e.dt AS VARCHAR) BETWEEN '{from}' AND '{to}')
         SELECT coalesce({dim}, '*'), coalesce({bucket}, '*'), count(*), count(DISTINCT dk)
         FROM hits GROUP BY GROUPING SETS (({dim}, {bucket}), ({dim}), ({bucket}), ())",
        links = links.join(", "),
        adgroup = optional("adgroup_id"),
        province = optional("geo_province"),
        os = optional("ua_os"),
        device_key = device_key_sql(columns),
        lake = p.lake().display(),
    );
    let (_, _, rows) = duckdb(p.path(), &sql)?;
    Some(
        rows.iter()
            .map(|r| {
                let s = |i: usize| r[i].as_str().expect("text").to_string();
                let n = |i: usize| r[i].as_u64().expect("count");
                ((s(0), s(1)), [0, n(2), 0, n(3)])
            })
            .collect(),
    )
}

/// Tencent report cells in the ad monitoring shape (impressions always 0).
fn tencent_cells(table: &serde_json::Value) -> Cells {
    let mut with_zeros = table.clone();
    fn fill(v: &mut serde_json::Value) {
        if let Some(o) = v.as_object_mut() {
            if o.contains_key("clicks") {
                o.insert("impressions".into(), 0.into());
                o.insert("unique_impressions".into(), 0.into());
            }
            for (_, child) in o.iter_mut() {
                fill(child);
            }
        } else if let Some(a) = v.as_array_mut() {
            a.iter_mut().for_each(fill);
        }
    }
    fill(&mut with_zeros);
    assert!(table["total"].get("impressions").is_none(), "clicks only");
    report_cells(&with_zeros)
}

#[test]
fn tencent_report_and_dashboard_equal_duckdb_over_the_lake() {
    let p = project();
    let (public, admin) = (free_port(), free_port());
    let env = vec![(
        "BACKFLOW__PUBLIC__BASE_URL",
        format!("http://127.0.0.1:{public}"),
    )];
    // A monitoring activity on tencent_ads too: its clicks are not in the Tencent report.
    let act = create(&p, &env, "ws1", "macro", "gA", "tencent_ads");
    let out = p.run(&["quota", "add", "--workspace", "ws1", "--clicks", "1000"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = p.run(&["quota", "add", "--workspace", "ws2", "--clicks", "1000"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let d = start_with(&p, (public, admin), &env);
    let task = |ws: &str, name: &str| -> (i64, String, String) {
        let out = p
            .command(&[
                "feedback",
                "create",
                "--workspace",
                ws,
                "--name",
                name,
                "--json",
            ])
            .env("BACKFLOW_API", &d.admin)
            .env("BACKFLOW_TOKEN", &d.token)
            .output()
            .expect("spawn");
        assert!(out.status.success(), "{}", stderr(&out));
        let t: serde_json::Value = serde_json::from_str(stdout(&out).trim()).expect("json");
        let id = t["id"].as_i64().expect("id");
        let out = p
            .command(&["feedback", "switch", &id.to_string(), "on"])
            .env("BACKFLOW_API", &d.admin)
            .env("BACKFLOW_TOKEN", &d.token)
            .output()
            .expect("spawn");
        assert!(out.status.success(), "{}", stderr(&out));
        (
            id,
            t["link"].as_u64().expect("link").to_string(),
            t["feedback_url"].as_str().expect("url").to_string(),
        )
    };
    let t1 = task("ws1", "朋友圈");
    let t2 = task("ws1", "QQ 空间");
    let elsewhere = task("ws2", "other");
    let plan = [&t1, &t2, &t1, &elsewhere];
    for i in 0..40usize {
        let status = feedback_hit(&plan[i % plan.len()].2, FB_DEVICES[(i * 3 + i / 4) % 5]);
        assert_eq!(status, 200, "hit {i}");
    }
    for device in &DEVICES[..4] {
        let status = hit(&act, "click", *device);
        assert!((200..400).contains(&status), "{status}");
    }
    drain(&d);

    let today = chrono::Utc::now()
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .date_naive();
    let (from, to) = (
        (today - chrono::Days::new(1)).to_string(),
        today.to_string(),
    );
    let Some(columns) = parquet_columns(&p) else {
        return;
    };
    let tasks = [(t1.0, t1.1.clone()), (t2.0, t2.1.clone())];
    let base = "/api/v1/workspaces/ws1/reports/tencent";
    for (form, bucket) in [("date", "date"), ("hour", "hour"), ("audience", "province")] {
        for by in ["task", "adgroup"] {
            let reply = get(
                &d,
                &format!("{base}?from={from}&to={to}&form={form}&by={by}"),
                &d.token,
            );
            assert_eq!(reply.status, 200, "{}", reply.body);
            let report: serde_json::Value = serde_json::from_str(&reply.body).expect("json");
            let source = if form == "audience" || by == "adgroup" {
                "scan"
            } else {
                "rollup"
            };
            assert_eq!(report["source"], source, "form={form} by={by}");
            let ours = tencent_cells(&report["table"]);
            let theirs = duckdb_tencent_cells(&p, &tasks, "ws1", &from, &to, by, bucket, &columns)
                .expect("duckdb");
            assert_eq!(ours, theirs, "form={form} by={by}");
            if form == "audience" {
                let os = tencent_cells(&report["os"]);
                let theirs =
                    duckdb_tencent_cells(&p, &tasks, "ws1", &from, &to, by, "os", &columns)
                        .expect("duckdb");
                assert_eq!(os, theirs, "os by={by}");
            }
        }
    }
    // The data are what the test meant: 30 feedback clicks in ws1, repeated devices.
    let all = get(&d, &format!("{base}?from={from}&to={to}"), &d.token);
    let all: serde_json::Value = serde_json::from_str(&all.body).expect("json");
    let total = &all["table"]["total"];
    assert_eq!(total["clicks"], 30, "{all}");
    assert!(total["unique_clicks"].as_u64().unwrap_or(99) <= 5, "{all}");
    let names: Vec<&str> = all["table"]["by_dimension"]
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|r| r["label"].as_str())
        .collect();
    assert_eq!(names, ["QQ 空间", "朋友圈"]);

    // One task only; the CLI's CSV is the API's.
    let query = format!("from={from}&to={to}&task={}&form=hour", t2.0);
    let only = get(&d, &format!("{base}?{query}"), &d.token);
    let only: serde_json::Value = serde_json::from_str(&only.body).expect("json");
    assert_eq!(
        tencent_cells(&only["table"]),
        duckdb_tencent_cells(&p, &tasks[1..], "ws1", &from, &to, "task", "hour", &columns)
            .expect("duckdb")
    );
    let csv = get(&d, &format!("{base}?{query}&format=csv"), &d.token);
    assert_eq!(csv.status, 200);
    assert!(
        csv.body
            .starts_with("task_id,task,hour,clicks,unique_clicks\n"),
        "{}",
        csv.body
    );
    let out = p.run(&[
        "report",
        "tencent",
        "--workspace",
        "ws1",
        "--from",
        &from,
        "--to",
        &to,
        "--task",
        &t2.0.to_string(),
        "--form",
        "hour",
        "--csv",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), csv.body);

    // Dashboard: volumes, distinct IDs per type and the trend, against DuckDB over the lake.
    let dash = get(
        &d,
        &format!("/api/v1/workspaces/ws1/reports/dashboard?from={from}&to={to}&type=click"),
        &d.token,
    );
    assert_eq!(dash.status, 200, "{}", dash.body);
    let dash: serde_json::Value = serde_json::from_str(&dash.body).expect("json");
    let day = dash["today"].as_str().expect("today").to_string();
    let scalar = |sql: String| -> u64 {
        let (_, _, rows) = duckdb(p.path(), &sql).expect("duckdb");
        rows[0][0].as_u64().expect("count")
    };
    let lake = format!(
        "read_parquet('{}/ad_events/*/*/*.parquet', hive_partitioning = true, union_by_name = true)",
        p.lake().display()
    );
    let count = |filter: &str| {
        scalar(format!(
            "SELECT count(*) FROM {lake} WHERE workspace = 'ws1' AND {filter}"
        ))
    };
    let days_back = |n: u64| {
        (chrono::NaiveDate::parse_from_str(&day, "%Y-%m-%d").expect("day") - chrono::Days::new(n))
            .to_string()
    };
    assert_eq!(dash["volume"]["total"], count("true"), "{dash}");
    assert_eq!(
        dash["volume"]["total"], 34,
        "30 feedback + 4 clicks: {dash}"
    );
    assert_eq!(
        dash["volume"]["today"]["current"],
        count(&format!("CAST(dt AS VARCHAR) = '{day}'"))
    );
    assert_eq!(
        dash["volume"]["today"]["previous"],
        count(&format!("CAST(dt AS VARCHAR) = '{}'", days_back(1)))
    );
    assert_eq!(
        dash["volume"]["last_7_days"]["current"],
        count(&format!(
            "CAST(dt AS VARCHAR) BETWEEN '{}' AND '{day}'",
            days_back(6)
        ))
    );
    for (name, column) in [
        ("mac", "mac_md5"),
        ("imei", "imei_md5"),
        ("idfa", "idfa_md5"),
        ("oaid", "oaid_md5"),
        ("android_id", "android_id_md5"),
        ("caid", "caid"),
        ("aaid", "aaid"),
    ] {
        let theirs = if columns.iter().any(|c| c == column) {
            scalar(format!(
                "SELECT count(DISTINCT nullif({column}, '')) FROM {lake} WHERE workspace = 'ws1'"
            ))
        } else {
            0
        };
        assert_eq!(dash["ids"][name], theirs, "{name}: {dash}");
    }
    assert!(dash["ids"]["mobile"].is_null());
    assert_eq!(dash["ids_source"], "rollup", "{dash}");
    assert_eq!(dash["ids"]["approximate"], false, "{dash}");
    assert_eq!(dash["ids"]["imei"], 2, "two android muids: {dash}");
    assert_eq!(dash["ids"]["idfa"], 1, "one iOS muid: {dash}");
    for point in dash["trend"]["series"].as_array().expect("series") {
        let d = point["day"].as_str().expect("day");
        assert_eq!(
            point["count"],
            count(&format!(
                "CAST(dt AS VARCHAR) = '{d}' AND endpoint <> 'impression'"
            )),
            "{point}"
        );
    }
    assert_eq!(dash["quota"]["purchased"], 1000);
    assert_eq!(dash["quota"]["used"], 34);
    let out = p.run(&["report", "dashboard", "--workspace", "ws1", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let cli: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(
        (&cli["ids"], &cli["volume"]),
        (&dash["ids"], &dash["volume"])
    );
    let bad = get(
        &d,
        "/api/v1/workspaces/ws1/reports/dashboard?type=view",
        &d.token,
    );
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("unknown monitoring type"), "{}", bad.body);

    // Click-detail download: created, processed in the background, fetched twice, unpacked,
    // and its lines are exactly DuckDB's clicks of ws1, in receive order.
    let post = |body: serde_json::Value| -> (u16, serde_json::Value) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(async {
            let r = reqwest::Client::new()
                .post(format!("{}/api/v1/workspaces/ws1/downloads", d.admin))
                .bearer_auth(&d.token)
                .json(&body)
                .send()
                .await
                .expect("send");
            let status = r.status().as_u16();
            (status, r.json().await.unwrap_or_default())
        })
    };
    let (status, task) = post(serde_json::json!({"from": from, "to": to, "name": "week"}));
    assert_eq!(status, 202, "{task}");
    assert_eq!(task["status"], "queued");
    let id = task["id"].as_i64().expect("id");
    let deadline = Instant::now() + Duration::from_secs(60);
    let task = loop {
        let t = get(&d, &format!("/api/v1/downloads/{id}"), &d.token);
        let t: serde_json::Value = serde_json::from_str(&t.body).expect("json");
        if t["status"] == "succeeded" {
            break t;
        }
        assert!(t["status"] != "failed", "{t}");
        assert!(Instant::now() < deadline, "download not processed: {t}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let fetch = || -> Vec<u8> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(async {
            let r = reqwest::Client::new()
                .get(format!("{}/api/v1/downloads/{id}/file", d.admin))
                .bearer_auth(&d.token)
                .send()
                .await
                .expect("send");
            assert_eq!(r.status().as_u16(), 200);
            r.bytes().await.expect("body").to_vec()
        })
    };
    let archive = fetch();
    assert_eq!(archive, fetch(), "downloadable many times");
    let lines = archive_lines(&archive);
    let ours: Vec<String> = lines
        .iter()
        .map(|l| l["event_id"].as_str().expect("event_id").to_string())
        .collect();
    let (_, _, rows) = duckdb(
        p.path(),
        &format!(
            "SELECT event_id FROM {lake} WHERE workspace = 'ws1' AND endpoint IN ('click', 'feedback')
             AND CAST(dt AS VARCHAR) BETWEEN '{from}' AND '{to}' ORDER BY received_at, event_id"
        ),
    )
    .expect("duckdb");
    let theirs: Vec<String> = rows
        .iter()
        .map(|r| r[0].as_str().expect("id").to_string())
        .collect();
    assert_eq!(ours, theirs);
    assert_eq!(task["clicks"], theirs.len());
    assert!(lines.iter().all(|l| l["raw_query"].is_string()));
    let (status, body) = post(serde_json::json!({"from": "2020-01-01", "to": to}));
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("last month"),
        "{body}"
    );
    let list = get(&d, "/api/v1/workspaces/ws1/downloads", &d.token);
    assert!(list.body.contains("\"week\""), "{}", list.body);

    // Bad input is named; another workspace's task is unknown here.
    for (query, reason) in [
        (format!("task={}", elsewhere.0), "unknown feedback task"),
        ("metrics=impressions".to_string(), "unknown metric"),
        ("by=creative".to_string(), "unknown dimension"),
        ("from=2026-01-01&to=2026-03-02".to_string(), "at most 60"),
    ] {
        let reply = get(&d, &format!("{base}?{query}"), &d.token);
        assert_eq!(reply.status, 400, "{query}: {}", reply.body);
        assert!(reply.body.contains(reason), "{query}: {}", reply.body);
    }
}

/// The NDJSON lines of every `clicks-*.log` in a download archive (.tar.gz).
pub(crate) fn archive_lines(archive: &[u8]) -> Vec<serde_json::Value> {
    let mut tar = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(archive), &mut tar)
        .expect("gunzip");
    let mut lines: Vec<serde_json::Value> = Vec::new();
    let mut at = 0;
    while at + 512 <= tar.len() && tar[at] != 0 {
        let name = String::from_utf8_lossy(&tar[at..at + 100])
            .trim_end_matches('\0')
            .to_string();
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&tar[at + 124..at + 135]).trim(), 8)
                .expect("size");
        assert!(
            name.starts_with("clicks-") && name.ends_with(".log"),
            "{name}"
        );
        let body = String::from_utf8(tar[at + 512..at + 512 + size].to_vec()).expect("utf8");
        lines.extend(
            body.lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("ndjson")),
        );
        at += 512 + size.div_ceil(512) * 512;
    }
    lines
}
