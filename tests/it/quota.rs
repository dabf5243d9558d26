//! Quota end to end through the real daemon: a workspace that runs out of purchased clicks keeps
//! answering hits (clicks still redirect) while its records are staged out of the lake and its
//! activities pause; a top-up releases the staged records in order, exactly once, also across a
//! crash; staged records past the retention are purged, audited and counted.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use backflow::catalog::{ActivityStatus, Catalog};

use crate::serve::{Daemon, free_port, start_with};
use crate::support::*;

fn get(url: &str) -> u16 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client")
            .get(url)
            .header("user-agent", "Mozilla/5.0 (quota test)")
            .send()
            .await
            .expect("send")
            .status()
            .as_u16()
    })
}

/// A project whose ad_events pipeline runs only when the test asks (no schedule tick between).
fn project() -> Project {
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

fn env_for(public: u16) -> Vec<(&'static str, String)> {
    vec![(
        "BACKFLOW__PUBLIC__BASE_URL",
        format!("http://127.0.0.1:{public}"),
    )]
}

pub(crate) fn create(
    p: &Project,
    env: &[(&str, String)],
    workspace: &str,
    name: &str,
) -> serde_json::Value {
    let out = p
        .command(&[
            "activity",
            "create",
            "--workspace",
            workspace,
            "--name",
            name,
            "--group",
            "g",
            "--channel",
            "huawei",
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

pub(crate) fn quota_add(p: &Project, workspace: &str, clicks: u64) {
    let out = p.run(&[
        "quota",
        "add",
        "--workspace",
        workspace,
        "--clicks",
        &clicks.to_string(),
        "--note",
        "test order",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
}

pub(crate) fn quota_show(p: &Project, workspace: &str) -> serde_json::Value {
    let out = p.run(&["quota", "show", "--workspace", workspace, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_str(stdout(&out).trim()).expect("quota json")
}

/// Hits a link with a marker `n` the lake rows can be matched by.
pub(crate) fn hit(activity: &serde_json::Value, kind: &str, n: u32) -> u16 {
    let url = activity[format!("{kind}_url")].as_str().expect("url");
    get(&format!("{url}&n={n}"))
}

fn last_run_id(admin: &str, token: &str) -> i64 {
    let runs = crate::serve::http::send(
        reqwest::Method::GET,
        &format!("{admin}/api/v1/runs?pipeline=ad_events&limit=1"),
        Some(token),
    )
    .expect("runs");
    let runs: serde_json::Value = serde_json::from_str(&runs.body).expect("json");
    runs["runs"][0]["id"].as_i64().unwrap_or(0)
}

/// Triggers ad_events until a run that started after this call has succeeded (it drained the
/// journal and released what the quota allows).
pub(crate) fn drain(admin: &str, token: &str) {
    let before = last_run_id(admin, token);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // 409 while a run holds the pipeline: try again.
        let _ = crate::serve::http::send(
            reqwest::Method::POST,
            &format!("{admin}/api/v1/pipelines/ad_events/runs"),
            Some(token),
        );
        std::thread::sleep(Duration::from_millis(300));
        let runs = crate::serve::http::send(
            reqwest::Method::GET,
            &format!("{admin}/api/v1/runs?pipeline=ad_events&limit=1"),
            Some(token),
        )
        .expect("runs");
        let runs: serde_json::Value = serde_json::from_str(&runs.body).expect("json");
        let run = &runs["runs"][0];
        if run["id"].as_i64().unwrap_or(0) > before && run["status"] == "succeeded" {
            return;
        }
        assert!(run["status"] != "failed", "ad_events failed: {run}");
        assert!(Instant::now() < deadline, "ad_events did not run: {runs}");
    }
}

/// `n` marker → batch number, per workspace, of every ad_events row in the lake.
pub(crate) fn landed(lake: &Path) -> BTreeMap<String, Vec<(u32, i64)>> {
    let mut out: BTreeMap<String, Vec<(u32, i64)>> = BTreeMap::new();
    for file in parquet_files(&lake.join("ad_events")) {
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let batch: i64 = name
            .strip_prefix("part-")
            .and_then(|r| r.get(..12))
            .and_then(|b| b.parse().ok())
            .expect("part name");
        let df = read_parquet_bytes(std::fs::read(&file).expect("read"));
        let ws = df.column("workspace").expect("workspace");
        let ws = ws.str().expect("str");
        let q = df.column("raw_query").expect("raw_query");
        let q = q.str().expect("str");
        for row in 0..df.height() {
            let n = q
                .get(row)
                .and_then(|q| q.rsplit("&n=").next())
                .and_then(|n| n.parse().ok())
                .expect("marker");
            out.entry(ws.get(row).unwrap_or("").to_string())
                .or_default()
                .push((n, batch));
        }
    }
    for rows in out.values_mut() {
        rows.sort();
    }
    out
}

pub(crate) fn markers(rows: &[(u32, i64)]) -> Vec<u32> {
    rows.iter().map(|(n, _)| *n).collect()
}

fn metrics(d: &Daemon) -> String {
    crate::serve::http::send(
        reqwest::Method::GET,
        &format!("{}/metrics", d.admin),
        Some(&d.token),
    )
    .expect("metrics")
    .body
}

pub(crate) fn catalog(p: &Project) -> Catalog {
    Catalog::open(&p.path().join("data/catalog.sqlite")).expect("catalog")
}

#[test]
fn exhausted_quota_stages_records_and_a_top_up_releases_them_in_order_exactly_once() {
    let p = project();
    let (public, admin) = (free_port(), free_port());
    let env = env_for(public);
    let a = create(&p, &env, "ws1", "a");
    let b = create(&p, &env, "ws1", "b");
    let free = create(&p, &env, "ws2", "never bought");
    quota_add(&p, "ws1", 3);
    let d = start_with(&p, (public, admin), &env);

    // Three clicks fit; the fourth (n=5) does not: from there on ws1 is staged, impressions too.
    let plan = [
        (&a, "impression"),
        (&a, "click"),
        (&b, "click"),
        (&b, "impression"),
        (&a, "click"),
        (&a, "click"),
        (&a, "impression"),
        (&b, "click"),
    ];
    for (n, (activity, kind)) in plan.iter().enumerate() {
        let status = hit(activity, kind, n as u32);
        assert_eq!(status, if *kind == "click" { 302 } else { 200 }, "n={n}");
    }
    // A workspace that never bought quota is not metered.
    for n in 100..103 {
        assert_eq!(hit(&free, "click", n), 302);
    }
    drain(&d.admin, &d.token);

    let lake = landed(&p.lake());
    assert_eq!(markers(&lake["ws1"]), [0, 1, 2, 3, 4], "{lake:?}");
    assert_eq!(markers(&lake["ws2"]), [100, 101, 102]);
    let q = quota_show(&p, "ws1");
    assert_eq!(
        (
            &q["purchased"],
            &q["used"],
            &q["remaining"],
            &q["staged"],
            &q["staged_clicks"]
        ),
        (&3.into(), &3.into(), &0.into(), &3.into(), &2.into()),
        "{q}"
    );
    let unmetered = quota_show(&p, "ws2");
    assert_eq!(
        (&unmetered["metered"], &unmetered["remaining"]),
        (&false.into(), &serde_json::Value::Null)
    );
    let c = catalog(&p);
    for activity in [&a, &b] {
        let id = activity["id"].as_i64().expect("id");
        assert_eq!(
            c.activity(id).expect("activity").status,
            ActivityStatus::PausedQuota
        );
    }
    let free_id = free["id"].as_i64().expect("id");
    assert_eq!(
        c.activity(free_id).expect("activity").status,
        ActivityStatus::On
    );
    assert!(
        c.audit_entries(50)
            .expect("audit")
            .iter()
            .any(|(_, actor, action, detail)| actor == "quota"
                && action == "activity.status"
                && detail.contains("paused_quota")),
        "the automatic pause is audited"
    );
    let m = metrics(&d);
    for line in [
        r#"backflow_quota_remaining_clicks{workspace="ws1"} 0"#,
        r#"backflow_quota_staged_records{workspace="ws1"} 3"#,
        r#"backflow_quota_records_staged_total{workspace="ws1"} 3"#,
        r#"backflow_quota_billable_clicks_total{workspace="ws2"} 3"#,
    ] {
        assert!(m.contains(line), "{line}\n{m}");
    }

    // A paused activity still collects and its users still land; the click joins the staged.
    assert_eq!(hit(&a, "click", 8), 302);
    drain(&d.admin, &d.token);
    assert_eq!(quota_show(&p, "ws1")["staged"], 4);

    // Two more clicks release the staged records up to the one that does not fit (n=8).
    quota_add(&p, "ws1", 2);
    drain(&d.admin, &d.token);
    let lake = landed(&p.lake());
    assert_eq!(markers(&lake["ws1"]), [0, 1, 2, 3, 4, 5, 6, 7], "{lake:?}");
    let q = quota_show(&p, "ws1");
    assert_eq!(
        (&q["used"], &q["remaining"], &q["staged"]),
        (&5.into(), &0.into(), &1.into())
    );

    quota_add(&p, "ws1", 10);
    drain(&d.admin, &d.token);
    let lake = landed(&p.lake());
    let ws1 = &lake["ws1"];
    assert_eq!(
        markers(ws1),
        [0, 1, 2, 3, 4, 5, 6, 7, 8],
        "each exactly once"
    );
    // In order: a record never lands in an earlier batch than one received before it.
    assert!(
        ws1.windows(2).all(|w| w[0].1 <= w[1].1),
        "staged records land after what came before them: {ws1:?}"
    );
    let q = quota_show(&p, "ws1");
    assert_eq!(
        (&q["used"], &q["remaining"], &q["staged"]),
        (&6.into(), &9.into(), &0.into())
    );
    let m = metrics(&d);
    assert!(
        m.contains(r#"backflow_quota_records_released_total{workspace="ws1"} 4"#),
        "{m}"
    );

    // Activities stay paused after the top-up until switched on by hand.
    let a_id = a["id"].as_i64().expect("id");
    assert_eq!(
        c.activity(a_id).expect("activity").status,
        ActivityStatus::PausedQuota
    );
    let out = p.run(&["activity", "switch", &a_id.to_string(), "on"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        c.activity(a_id).expect("activity").status,
        ActivityStatus::On
    );

    // Counters: clicks land once each, per activity; the same device (ip + ua) once a day.
    let totals = c.activity_totals("ws1").expect("totals");
    let b_id = b["id"].as_i64().expect("id");
    assert_eq!((totals[&a_id].impressions, totals[&a_id].clicks), (2, 4));
    assert_eq!((totals[&b_id].impressions, totals[&b_id].clicks), (1, 2));
    assert_eq!(totals[&a_id].dedup_clicks, 1, "one device, one day");
    let today = chrono::Utc::now()
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .date_naive();
    let usage: u64 = c
        .usage_by_day("ws1", today - chrono::Days::new(1), today)
        .expect("usage")
        .iter()
        .map(|u| u.clicks)
        .sum();
    assert_eq!(usage, 6);
    let out = p.run(&["quota", "usage", "--workspace", "ws1", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("\"clicks\""), "{}", stdout(&out));
}

#[test]
fn a_crash_before_commit_replays_the_same_split_and_counts_once() {
    let p = project();
    let (public, admin) = (free_port(), free_port());
    let env = env_for(public);
    let a = create(&p, &env, "ws1", "a");
    quota_add(&p, "ws1", 1);
    let mut crash_env = env.clone();
    crash_env.push(("BACKFLOW_FAILPOINT", "after_manifest".to_string()));
    let mut d = start_with(&p, (public, admin), &crash_env);
    for n in 0..3 {
        assert_eq!(hit(&a, "click", n), 302);
    }
    // The batch (n=0 lands, n=1 and n=2 staged) dies after its manifest, before its commit.
    let _ = crate::serve::http::send(
        reqwest::Method::POST,
        &format!("{}/api/v1/pipelines/ad_events/runs", d.admin),
        Some(&d.token),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while d.child.try_wait().expect("wait").is_none() {
        assert!(
            Instant::now() < deadline,
            "the failpoint did not stop the daemon"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A purchase while the batch is open must not change what its replay writes.
    quota_add(&p, "ws1", 5);
    assert_eq!(
        quota_show(&p, "ws1")["used"],
        0,
        "nothing counted before the commit"
    );

    let child = crate::collect::start_again(&p, (public, admin), &env);
    let again = Daemon {
        child,
        admin: format!("http://127.0.0.1:{admin}"),
        public: format!("http://127.0.0.1:{public}"),
        token: d.token.clone(),
    };
    drain(&again.admin, &again.token);
    drain(&again.admin, &again.token);
    let lake = landed(&p.lake());
    let rows = &lake["ws1"];
    assert_eq!(
        markers(rows),
        [0, 1, 2],
        "every click exactly once: {rows:?}"
    );
    assert_eq!(rows[0].1, 1, "the replayed batch wrote n=0 only");
    assert!(rows[1].1 > 1, "n=1 and n=2 were staged, then released");
    let q = quota_show(&p, "ws1");
    assert_eq!(
        (&q["purchased"], &q["used"], &q["remaining"], &q["staged"]),
        (&6.into(), &3.into(), &3.into(), &0.into()),
        "{q}"
    );
    let m = metrics(&again);
    assert!(
        m.contains(r#"backflow_pipeline_batches_replayed_total{pipeline="ad_events"} 1"#),
        "{m}"
    );
    let c = catalog(&p);
    let id = a["id"].as_i64().expect("id");
    assert_eq!(c.activity_totals("ws1").expect("totals")[&id].clicks, 3);
    assert_eq!(
        c.activity(id).expect("activity").status,
        ActivityStatus::PausedQuota,
        "the replayed batch staged records: paused"
    );
}

#[test]
fn staged_records_past_the_retention_are_purged_audited_and_counted() {
    let p = project();
    let (public, admin) = (free_port(), free_port());
    let env = env_for(public);
    let a = create(&p, &env, "ws1", "a");
    quota_add(&p, "ws1", 1);
    let d = start_with(&p, (public, admin), &env);
    for n in 0..3 {
        assert_eq!(hit(&a, "click", n), 302);
    }
    drain(&d.admin, &d.token);
    assert_eq!(quota_show(&p, "ws1")["staged"], 2);

    // Backdate the staged records past the 30-day retention (no waiting a month).
    let db = rusqlite::Connection::open(p.path().join("data/catalog.sqlite")).expect("sqlite");
    db.busy_timeout(Duration::from_secs(10)).expect("timeout");
    let n = db
        .execute(
            "UPDATE quota_staged SET received_at = '2000-01-01T00:00:00.000000Z'",
            [],
        )
        .expect("backdate");
    assert_eq!(n, 2);
    drop(db);

    // The next batch purges them before planning; a later top-up has nothing to release.
    drain(&d.admin, &d.token);
    let q = quota_show(&p, "ws1");
    assert_eq!((&q["staged"], &q["used"]), (&0.into(), &1.into()), "{q}");
    quota_add(&p, "ws1", 5);
    drain(&d.admin, &d.token);
    assert_eq!(markers(&landed(&p.lake())["ws1"]), [0]);
    let m = metrics(&d);
    assert!(
        m.contains(r#"backflow_quota_records_purged_total{workspace="ws1"} 2"#),
        "{m}"
    );
    let audit = catalog(&p).audit_entries(50).expect("audit");
    assert!(
        audit
            .iter()
            .any(|(_, _, action, detail)| action == "quota.purge"
                && detail.contains("workspace=ws1 records=2 clicks=2")),
        "{audit:?}"
    );
}

#[test]
fn quota_cli_validates_and_shows_an_unmetered_workspace() {
    let p = Project::new();
    let out = p.run(&["quota", "add", "--workspace", "w", "--clicks", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("clicks: must be from 1"),
        "{}",
        stderr(&out)
    );
    let out = p.run(&["quota", "show", "--workspace", "w"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("unlimited"), "{}", stdout(&out));
    quota_add(&p, "w", 1000);
    let out = p.run(&["quota", "show", "--workspace", "w"]);
    assert!(stdout(&out).contains("remaining  1000"), "{}", stdout(&out));
    let audit = catalog(&p).audit_entries(5).expect("audit");
    assert!(
        audit.iter().any(|(_, actor, action, detail)| actor == "cli"
            && action == "quota.add"
            && detail.contains("note=test order")),
        "{audit:?}"
    );
}
