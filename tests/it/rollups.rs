//! Report rollups end to end through the real daemon: the date and hour forms answered from the
//! rollups equal the exact scan of the committed Parquet (`exact=true`) cell by cell; a batch
//! that crashes and is replayed counts once in the rollups; `rebuild-rollups` reproduces them,
//! twice alike, also for days that landed before rollups existed; a cell of more than 2 048
//! devices goes HyperLogLog, is flagged `approximate`, and stays within 3 standard errors of
//! DuckDB's exact `count(DISTINCT …)`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::reports::{create, drain, get, metrics, project, report_cells};
use crate::serve::{Daemon, free_port, start_with};
use crate::support::*;

/// Sends `urls` with a few requests in flight; every answer must be a success.
fn send_all(urls: Vec<String>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        use futures::StreamExt;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let statuses: Vec<u16> = futures::stream::iter(urls)
            .map(|url| {
                let client = client.clone();
                async move {
                    client
                        .get(&url)
                        .header("user-agent", "Mozilla/5.0 (rollups test)")
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                        .unwrap_or(0)
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        for s in statuses {
            assert!((200..400).contains(&s), "hit answered {s}");
        }
    });
}

/// The URL of a hit by a device with this OAID (empty: none, the IP + UA key is used).
fn url(activity: &serde_json::Value, kind: &str, oaid: &str, ip: &str) -> String {
    activity[format!("{kind}_url")]
        .as_str()
        .expect("url")
        .replace("__OAID__", oaid)
        .replace("__IDFA__", "")
        .replace("__IP__", ip)
        .replace("__UA__", "ua")
}

fn json(d: &Daemon, path: &str) -> serde_json::Value {
    let reply = get(d, path, &d.token);
    assert_eq!(reply.status, 200, "{path}: {}", reply.body);
    serde_json::from_str(&reply.body).expect("json")
}

fn days() -> (String, String) {
    let today = chrono::Utc::now()
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .date_naive();
    (
        (today - chrono::Days::new(1)).to_string(),
        today.to_string(),
    )
}

/// Every cell of a table (`*` for "all"), with its `approximate` flag.
fn flagged(table: &serde_json::Value) -> BTreeMap<(String, String), ([u64; 4], bool)> {
    let mut out = BTreeMap::new();
    let flag = |v: &serde_json::Value| (metrics(v), v["approximate"] == true);
    let text = |v: &serde_json::Value| v["key"].as_str().expect("key").to_string();
    for row in table["by_dimension"].as_array().expect("rows") {
        out.insert((text(row), "*".into()), flag(row));
        for child in row["children"].as_array().cloned().unwrap_or_default() {
            out.insert((text(row), text(&child)), flag(&child));
        }
    }
    for row in table["by_bucket"].as_array().expect("rows") {
        out.insert(("*".into(), text(row)), flag(row));
    }
    out.insert(("*".into(), "*".into()), flag(&table["total"]));
    out
}

/// Asserts that the rollup answers of every time form and dimension equal the exact scan: hits
/// always, uniques exactly unless the cell is flagged approximate (then within 3 standard
/// errors).
fn rollups_equal_the_scan(d: &Daemon, ws: &str) -> serde_json::Value {
    let (from, to) = days();
    let base = format!("/api/v1/workspaces/{ws}/reports/ad-monitoring?from={from}&to={to}");
    for form in ["date", "hour"] {
        for by in ["group", "channel", "activity"] {
            let q = format!("{base}&form={form}&by={by}");
            let rolled = json(d, &q);
            let scanned = json(d, &format!("{q}&exact=true"));
            assert_eq!(rolled["source"], "rollup", "{rolled}");
            assert_eq!(scanned["source"], "scan");
            let (ours, exact) = (flagged(&rolled["table"]), flagged(&scanned["table"]));
            assert_eq!(
                ours.keys().collect::<Vec<_>>(),
                exact.keys().collect::<Vec<_>>()
            );
            for (cell, (m, approximate)) in &ours {
                let (want, _) = &exact[cell];
                let what = format!("form={form} by={by} cell={cell:?}: {m:?} vs {want:?}");
                assert_eq!(m[..2], want[..2], "counts are exact: {what}");
                if *approximate {
                    for i in 2..4 {
                        let error = (m[i] as f64 - want[i] as f64).abs() / (want[i].max(1) as f64);
                        assert!(error < 3.0 * 0.0081, "{what}");
                    }
                } else {
                    assert_eq!(m, want, "{what}");
                }
            }
            if ours.values().all(|(_, a)| !a) {
                assert_eq!(
                    report_cells(&rolled["table"]),
                    report_cells(&scanned["table"])
                );
            }
        }
    }
    json(d, &format!("{base}&form=date&by=activity"))
}

#[test]
fn a_replayed_batch_counts_once_in_the_rollups() {
    for point in ["after_manifest", "after_commit"] {
        let p = project();
        let (public, admin) = (free_port(), free_port());
        let env = vec![(
            "BACKFLOW__PUBLIC__BASE_URL",
            format!("http://127.0.0.1:{public}"),
        )];
        let a = create(&p, &env, "ws1", "a", "gA", "huawei");
        let b = create(&p, &env, "ws1", "b", "gB", "huawei");
        let mut crash_env = env.clone();
        crash_env.push(("BACKFLOW_FAILPOINT", point.to_string()));
        let mut d = start_with(&p, (public, admin), &crash_env);
        let mut urls = Vec::new();
        for i in 0..30 {
            let act = if i % 3 == 0 { &b } else { &a };
            let kind = if i % 4 == 0 { "click" } else { "impression" };
            urls.push(url(act, kind, &format!("OA-{}", i % 7), "10.0.0.1"));
        }
        send_all(urls);
        let _ = crate::serve::http::send(
            reqwest::Method::POST,
            &format!("{}/api/v1/pipelines/ad_events/runs", d.admin),
            Some(&d.token),
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        while d.child.try_wait().expect("wait").is_none() {
            assert!(
                Instant::now() < deadline,
                "{point}: the failpoint did not stop the daemon"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let child = crate::collect::start_again(&p, (public, admin), &env);
        let again = Daemon {
            child,
            admin: format!("http://127.0.0.1:{admin}"),
            public: format!("http://127.0.0.1:{public}"),
            token: d.token.clone(),
        };
        drain(&again);
        let report = rollups_equal_the_scan(&again, "ws1");
        let total = &report["table"]["total"];
        assert_eq!(
            (&total["impressions"], &total["clicks"]),
            (&22.into(), &8.into()),
            "{point}: every hit once: {total}"
        );
        assert_eq!(total["unique_impressions"], 7, "{point}: {total}");
    }
}

#[test]
fn rebuilt_rollups_equal_the_committed_ones_and_a_large_cell_is_approximate() {
    let p = project();
    let (public, admin) = (free_port(), free_port());
    let env = vec![(
        "BACKFLOW__PUBLIC__BASE_URL",
        format!("http://127.0.0.1:{public}"),
    )];
    let big = create(&p, &env, "ws1", "big", "gA", "huawei");
    let small = create(&p, &env, "ws1", "small", "gB", "ocean_engine");
    let d = start_with(&p, (public, admin), &env);
    // 3 000 distinct OAIDs on `big` (past the 2 048 exact limit), a few devices on `small`.
    let mut urls: Vec<String> = (0..3000)
        .map(|i| url(&big, "impression", &format!("OA-{i}"), "10.0.0.1"))
        .collect();
    for i in 0..40 {
        let kind = if i % 2 == 0 { "click" } else { "impression" };
        urls.push(url(&small, kind, "", &format!("10.0.1.{}", i % 9)));
    }
    send_all(urls);
    drain(&d);

    let report = rollups_equal_the_scan(&d, "ws1");
    let (from, to) = (
        report["from"].as_str().expect("from"),
        report["to"].as_str().expect("to"),
    );
    // The big activity's cells are HyperLogLog estimates, flagged, within 3σ of DuckDB.
    let (big_key, small_key) = (big["id"].to_string(), small["id"].to_string());
    let big_row = report["table"]["by_dimension"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["key"].as_str() == Some(big_key.as_str()))
        .expect("big row")
        .clone();
    assert_eq!(big_row["approximate"], true, "{big_row}");
    let small_row = report["table"]["by_dimension"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["key"].as_str() == Some(small_key.as_str()))
        .expect("small row")
        .clone();
    assert_eq!(small_row["approximate"], false, "{small_row}");
    let exact = json(
        &d,
        &format!(
            "/api/v1/workspaces/ws1/reports/ad-monitoring?from={from}&to={to}&by=activity&exact=true"
        ),
    );
    assert_eq!(exact["table"]["total"]["approximate"], false);
    let estimate = big_row["unique_impressions"].as_f64().expect("uniques");
    let sql = format!(
        "SELECT count(DISTINCT oaid) FROM read_parquet('{}/ad_events/*/*/*.parquet')
         WHERE workspace = 'ws1' AND activity_id = {}",
        p.lake().display(),
        big["id"]
    );
    if let Some((_, _, rows)) = duckdb(p.path(), &sql) {
        let truth = rows[0][0].as_f64().expect("count");
        assert_eq!(truth, 3000.0);
        let error = (estimate - truth).abs() / truth;
        assert!(
            error < 3.0 * 0.0081,
            "estimate {estimate} vs DuckDB {truth}: {error}"
        );
    }
    let dash = json(&d, "/api/v1/workspaces/ws1/reports/dashboard");
    assert_eq!(dash["ids_source"], "rollup");
    assert_eq!(dash["ids"]["approximate"], true, "{dash}");

    // Rebuilding the range changes nothing, however often.
    let hour_q = format!(
        "/api/v1/workspaces/ws1/reports/ad-monitoring?from={from}&to={to}&form=hour&by=group"
    );
    let date_q =
        format!("/api/v1/workspaces/ws1/reports/ad-monitoring?from={from}&to={to}&by=activity");
    let before = (
        json(&d, &date_q),
        json(&d, &hour_q),
        json(&d, "/api/v1/workspaces/ws1/reports/dashboard")["ids"].clone(),
    );
    for _ in 0..2 {
        let out = p.run(&[
            "report",
            "rebuild-rollups",
            "--from",
            from,
            "--to",
            to,
            "--json",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let summary: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
        assert_eq!(summary["rows"], 3040, "{summary}");
        let after = (
            json(&d, &date_q),
            json(&d, &hour_q),
            json(&d, "/api/v1/workspaces/ws1/reports/dashboard")["ids"].clone(),
        );
        assert_eq!(after, before);
    }

    // Days that landed before rollups existed: the reports scan them (exact) until a rebuild.
    {
        let conn = rusqlite::Connection::open(p.path().join("data/catalog.sqlite")).expect("open");
        conn.execute_batch(
            "DELETE FROM rollup_days; DELETE FROM rollup_hours; DELETE FROM rollup_ids;
             UPDATE rollup_coverage SET complete = 0;",
        )
        .expect("forget rollups");
    }
    let scanned = json(&d, &date_q);
    assert_eq!(scanned["source"], "scan");
    assert_eq!(scanned["table"], exact["table"]);
    assert_eq!(
        json(&d, "/api/v1/workspaces/ws1/reports/dashboard")["ids_source"],
        "scan"
    );
    let out = p.run(&["report", "rebuild-rollups", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let summary: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert!(
        !summary["days"].as_array().expect("days").is_empty(),
        "{summary}"
    );
    let after = (
        json(&d, &date_q),
        json(&d, &hour_q),
        json(&d, "/api/v1/workspaces/ws1/reports/dashboard")["ids"].clone(),
    );
    assert_eq!(after, before);
    assert_eq!(after.0["source"], "rollup");
}
