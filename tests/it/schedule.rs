//! The scheduler through the real binary: `backflow serve` firing cron schedules with seconds,
//! the admin API's run history, and the CLI's backfill and rerun. Covers overlap skip vs queue,
//! misfire run_once after a restart, per-workspace concurrency (queued runs visible in the API),
//! retries of a retryable failure (error failpoint) then success, the source-watermark wait
//! ending in a run or `timed_out` (the previous version stays current), backfill (one recorded
//! run per day, idempotent, `--force`), rerun of a failed run, and a cron that never fires.
//!
//! Slow steps are made deterministic with failpoints (`BACKFLOW_FAILPOINT_DELAY`,
//! `BACKFLOW_FAILPOINT_ERROR`) or a watermark that never comes; every wait is a bounded poll.

use std::time::{Duration, Instant};

use chrono::{NaiveDate, TimeZone};
use serde_json::{Value, json};

use crate::lake_fixtures::*;
use crate::serve::{Daemon, free_port, start_with};
use crate::support::*;

/// Hits landed in `ad_events` by the file pipeline `ad_drop`, no dataset job but the test's.
fn project() -> Project {
    let p = ad_drop_project("hour");
    unschedule_behavior_events(&p);
    std::fs::remove_file(p.path().join("pipelines/behavior_dataset.yaml"))
        .expect("rm behavior_dataset.yaml");
    p
}

/// A behavior dataset job over `ad_events` only, with the given extra YAML blocks.
fn write_job(p: &Project, name: &str, output: &str, extra: &str) {
    p.write(
        &format!("pipelines/{name}.yaml"),
        &format!(
            "kind: dataset\nname: {name}\ndataset:\n  type: behavior\n  output: {output}\n  \
             time_grain: day\n  behavior_events: null\n  ad_events: {{dataset: ad_events}}\n{extra}"
        ),
    );
}

fn shanghai() -> chrono_tz::Tz {
    chrono_tz::Asia::Shanghai
}

fn today() -> NaiveDate {
    chrono::Utc::now().with_timezone(&shanghai()).date_naive()
}

/// One impression hit at 10:00 Shanghai on `day`.
fn hit(n: u32, day: NaiveDate, device: &str) -> String {
    let at = shanghai()
        .from_local_datetime(&day.and_hms_opt(10, 0, 0).expect("time"))
        .single()
        .expect("local time")
        .to_utc()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    ad_hit(
        &format!("e{n}-{day}"),
        "impression",
        &at,
        "kuaishou",
        7,
        &format!(r#","oaid":"{device}""#),
    )
}

/// Drops hits for `day` and lands them with `backflow run ad_drop`.
fn land(p: &Project, day: NaiveDate, devices: &[&str]) {
    let hits: Vec<String> = devices
        .iter()
        .enumerate()
        .map(|(i, d)| hit(i as u32, day, d))
        .collect();
    drop_hits(p, "ad", &format!("{day}-{}.ndjson", devices.len()), &hits);
    let out = p.run(&["run", "ad_drop", "--json"]);
    assert!(out.status.success(), "ad_drop: {}", stderr(&out));
}

fn call(method: reqwest::Method, url: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let mut req = reqwest::Client::new()
            .request(method, url)
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("send");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    })
}

fn api(d: &Daemon, path: &str) -> Value {
    let (status, body) = call(
        reqwest::Method::GET,
        &format!("{}{path}", d.admin),
        &d.token,
        None,
    );
    assert_eq!(status, 200, "{path}: {body}");
    body
}

fn post(d: &Daemon, path: &str, body: Option<Value>) -> (u16, Value) {
    call(
        reqwest::Method::POST,
        &format!("{}{path}", d.admin),
        &d.token,
        body,
    )
}

/// The job's runs, oldest first.
fn runs(d: &Daemon, job: &str) -> Vec<Value> {
    let mut runs = api(d, &format!("/api/v1/runs?pipeline={job}&limit=1000"))["runs"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    runs.reverse();
    runs
}

fn metrics(d: &Daemon) -> String {
    let (_, body) = call(
        reqwest::Method::GET,
        &format!("{}/metrics", d.admin),
        &d.token,
        None,
    );
    body.as_str().map(str::to_string).unwrap_or_default()
}

/// Polls `check` every 100 ms until it returns `Some`, for at most `secs`.
fn until<T>(secs: u64, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn status(r: &Value) -> &str {
    r["status"].as_str().unwrap_or_default()
}

fn daemon(p: &Project, env: &[(&str, String)]) -> Daemon {
    start_with(p, (free_port(), free_port()), env)
}

fn current_seq(p: &Project, output: &str) -> Option<String> {
    let dir = p.lake().join(format!("datasets/{output}/_current"));
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.pop()
}

/// A job whose source pipeline never ran (no watermark): every run waits, then times out.
fn never_covered(p: &Project, overlap: &str) {
    write_job(
        p,
        "behavior_dataset",
        "behavior",
        &format!(
            "publish: {{allow_empty: true}}\n\
             schedule:\n  cron: \"* * * * * *\"\n  overlap: {overlap}\n\
             refresh:\n  period: day\n  wait_for_sources: {{timeout: 2s, poll_interval: 100ms}}\n"
        ),
    );
}

#[test]
fn overlap_skip_drops_fires_while_a_run_waits_and_the_wait_times_out_keeping_the_version() {
    let p = project();
    never_covered(&p, "skip");
    // A published (empty) version first, to show it stays current.
    let out = p.run(&["run", "behavior_dataset", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let before = current_seq(&p, "behavior");
    assert!(before.is_some());
    let d = daemon(&p, &[]);
    let timed_out = until(60, "two timed-out runs", || {
        let runs = runs(&d, "behavior_dataset");
        let active = runs
            .iter()
            .filter(|r| ["queued", "waiting", "running"].contains(&status(r)))
            .count();
        assert!(active <= 1, "overlap skip allows one active run: {runs:?}");
        let done: Vec<Value> = runs
            .into_iter()
            .filter(|r| status(r) == "timed_out")
            .collect();
        (done.len() >= 2).then_some(done)
    });
    let reason = timed_out[0]["error"].as_str().unwrap_or_default();
    assert!(
        reason.contains("sources not committed up to")
            && reason.contains("ad_events (pipeline ad_drop has not drained its source yet)"),
        "{reason}"
    );
    assert!(
        ["schedule", "misfire"].contains(&timed_out[0]["trigger"].as_str().unwrap_or_default())
    );
    assert!(timed_out[0]["period"].is_string());
    let m = metrics(&d);
    assert!(
        m.lines().any(|l| l.starts_with(
            "backflow_schedule_overlaps_skipped_total{pipeline=\"behavior_dataset\"}"
        )),
        "{m}"
    );
    assert!(m.contains(
        "backflow_schedule_watermark_waits_total{pipeline=\"behavior_dataset\",outcome=\"timed_out\"}"
    ));
    let all = runs(&d, "behavior_dataset");
    drop(d);
    assert_eq!(
        current_seq(&p, "behavior"),
        before,
        "the previous version stays current: {all:?}"
    );
}

#[test]
fn overlap_queue_lines_fires_up_behind_the_active_run_in_order() {
    let p = project();
    never_covered(&p, "queue");
    let d = daemon(&p, &[]);
    let runs = until(
        60,
        "queued runs behind a waiting one, then two timed out",
        || {
            let runs = runs(&d, "behavior_dataset");
            let waiting = runs.iter().filter(|r| status(r) == "waiting").count();
            assert!(waiting <= 1, "one run of a job at a time: {runs:?}");
            let queued = runs.iter().filter(|r| status(r) == "queued").count();
            let timed_out = runs.iter().filter(|r| status(r) == "timed_out").count();
            (queued >= 1 && timed_out >= 2).then_some(runs)
        },
    );
    // Runs end in the order they were made: no timed-out run after a still-open one.
    let first_open = runs
        .iter()
        .position(|r| status(r) != "timed_out")
        .unwrap_or(runs.len());
    assert!(
        runs[first_open..].iter().all(|r| status(r) != "timed_out"),
        "{runs:?}"
    );
    assert!(!metrics(&d).contains("backflow_schedule_overlaps_skipped_total"));
}

#[test]
fn runs_beyond_the_workspace_limit_wait_queued_and_all_finish() {
    let p = project();
    let day = today() - chrono::Days::new(2);
    land(&p, day, &["OA-1", "OA-2"]);
    for (name, output) in [
        ("job_a", "behavior_a"),
        ("job_b", "behavior_b"),
        ("job_c", "behavior_c"),
    ] {
        write_job(&p, name, output, "");
    }
    let d = daemon(
        &p,
        &[
            ("BACKFLOW__SCHEDULER__MAX_RUNS_PER_WORKSPACE", "1".into()),
            (
                "BACKFLOW_FAILPOINT_DELAY",
                "dataset_read_sources:1500".into(),
            ),
        ],
    );
    for name in ["job_a", "job_b", "job_c"] {
        let (status, body) = post(&d, &format!("/api/v1/jobs/{name}/runs"), None);
        assert_eq!(status, 202, "{body}");
    }
    let mut saw_queued = false;
    until(60, "three succeeded runs", || {
        let all = api(&d, "/api/v1/runs?limit=100")["runs"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let running = all.iter().filter(|r| status(r) == "running").count();
        assert!(running <= 1, "workspace limit 1: {all:?}");
        if running == 1 && all.iter().any(|r| status(r) == "queued") {
            saw_queued = true;
            assert!(
                all.iter()
                    .filter(|r| r["pipeline"] != "ad_drop")
                    .all(|r| r["workspace"] == "default")
            );
        }
        (all.iter().filter(|r| status(r) == "succeeded").count() == 3).then_some(())
    });
    assert!(
        saw_queued,
        "a run waited in the queued state while another ran"
    );
}

#[test]
fn a_retryable_failure_is_retried_with_backoff_then_succeeds() {
    let p = project();
    land(&p, today() - chrono::Days::new(2), &["OA-1"]);
    write_job(
        &p,
        "behavior_dataset",
        "behavior",
        "schedule:\n  cron: \"0 0 0 1 1 *\"\n  retries: {max: 3, backoff_initial: 100ms, backoff_max: 1s}\n",
    );
    let d = daemon(
        &p,
        &[("BACKFLOW_FAILPOINT_ERROR", "dataset_read_sources:2".into())],
    );
    let (status_code, _) = post(&d, "/api/v1/jobs/behavior_dataset/runs", None);
    assert_eq!(status_code, 202);
    let runs = until(60, "a succeeded attempt", || {
        let runs = runs(&d, "behavior_dataset");
        runs.iter()
            .any(|r| status(r) == "succeeded")
            .then_some(runs)
    });
    let summary: Vec<(String, i64, String)> = runs
        .iter()
        .map(|r| {
            (
                status(r).to_string(),
                r["attempt"].as_i64().unwrap_or(0),
                r["trigger"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("failed".to_string(), 1, "api".to_string()),
            ("failed".to_string(), 2, "retry".to_string()),
            ("succeeded".to_string(), 3, "retry".to_string()),
        ]
    );
    let first = runs[0]["error"].as_str().unwrap_or_default();
    assert!(
        first.contains("injected transient error 1 of 2") && first.contains("retry 1 of 3"),
        "{first}"
    );
    assert_eq!(runs[1]["rerun_of"], runs[0]["id"]);
    assert_eq!(runs[2]["rerun_of"], runs[0]["id"]);
    assert!(
        metrics(&d).contains("backflow_schedule_retries_total{pipeline=\"behavior_dataset\"} 2")
    );
}

#[test]
fn a_fire_missed_while_the_daemon_was_down_runs_once_at_restart() {
    let p = project();
    land(&p, today() - chrono::Days::new(1), &["OA-1"]);
    write_job(
        &p,
        "behavior_dataset",
        "behavior",
        "schedule:\n  cron: \"*/2 * * * * *\"\n  misfire: run_once\n",
    );
    let token = {
        let d = daemon(&p, &[]);
        until(30, "a scheduled run", || {
            runs(&d, "behavior_dataset")
                .iter()
                .any(|r| r["trigger"] == "schedule" && status(r) != "queued")
                .then_some(())
        });
        d.token.clone()
    };
    // Down for longer than one period of the cron: at least one fire time passes.
    std::thread::sleep(Duration::from_millis(2500));
    let (public, admin) = (free_port(), free_port());
    let d = Daemon {
        child: crate::collect::start_again(&p, (public, admin), &[]),
        admin: format!("http://127.0.0.1:{admin}"),
        public: format!("http://127.0.0.1:{public}"),
        token,
    };
    let misfire = until(30, "the misfire run", || {
        runs(&d, "behavior_dataset")
            .into_iter()
            .find(|r| r["trigger"] == "misfire")
    });
    assert!(misfire["scheduled_for"].is_string());
    assert!(misfire["period"].is_string());
    assert!(metrics(&d).contains(
        "backflow_schedule_misfires_total{pipeline=\"behavior_dataset\",outcome=\"run_once\"}"
    ));
}

#[test]
fn a_refresh_waits_for_its_sources_then_runs() {
    let p = project();
    let yesterday = today() - chrono::Days::new(1);
    write_job(
        &p,
        "behavior_dataset",
        "behavior",
        "refresh:\n  wait_for_sources: {timeout: 2m, poll_interval: 100ms}\n",
    );
    let d = daemon(&p, &[]);
    let day = yesterday.to_string();
    let (code, plan) = post(
        &d,
        "/api/v1/jobs/behavior_dataset/backfill",
        Some(json!({"from": day, "to": day})),
    );
    assert_eq!(code, 202, "{plan}");
    let run_id = plan["runs"][0]["run_id"].as_i64().expect("run id");
    assert_eq!(plan["runs"][0]["period"], day.as_str());
    until(30, "the run waiting for its sources", || {
        let r = api(&d, &format!("/api/v1/runs/{run_id}"));
        (status(&r) == "waiting").then_some(())
    });
    // The source pipeline lands yesterday's hits and drains: its watermark passes the end of
    // yesterday, and the waiting run goes on.
    land(&p, yesterday, &["OA-1", "OA-2"]);
    let r = until(60, "the run to finish", || {
        let r = api(&d, &format!("/api/v1/runs/{run_id}"));
        (!["queued", "waiting", "running"].contains(&status(&r))).then_some(r)
    });
    assert_eq!(status(&r), "succeeded", "{r}");
    assert_eq!(r["rows_out"], 2);
    let wm = api(&d, "/api/v1/pipelines")["pipelines"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "ad_drop").cloned())
        .expect("ad_drop");
    assert!(wm["watermark"].is_string(), "{wm}");
    assert!(metrics(&d).contains(
        "backflow_schedule_watermark_waits_total{pipeline=\"behavior_dataset\",outcome=\"satisfied\"} 1"
    ));
}

fn backfill(p: &Project, from: NaiveDate, to: NaiveDate, force: bool) -> (bool, String) {
    let (from, to) = (from.to_string(), to.to_string());
    let mut args = vec!["backfill", "behavior_dataset", "--from", &from, "--to", &to];
    if force {
        args.push("--force");
    }
    let out = p.run(&args);
    (
        out.status.success(),
        format!("{}{}", stdout(&out), stderr(&out)),
    )
}

/// The run id on the progress line of `day` with `status`.
fn run_id_of(out: &str, day: NaiveDate, status: &str) -> i64 {
    let prefix = format!("behavior_dataset {day}: run ");
    out.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .find_map(|rest| {
            let (id, tail) = rest.split_once(' ')?;
            tail.starts_with(status).then(|| id.parse().ok()).flatten()
        })
        .unwrap_or_else(|| panic!("no `{status}` line for {day}: {out}"))
}

/// Rows of the published version's main table.
fn published_rows(p: &Project) -> usize {
    let pointer = current_pointer(&p.lake(), "behavior");
    let table = pointer["tables"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["table"] == "behavior"))
        .expect("behavior table");
    let bytes = std::fs::read(p.lake().join(table["path"].as_str().expect("path"))).expect("read");
    read_parquet_bytes(bytes).height()
}

#[test]
fn backfill_records_one_run_per_day_is_idempotent_and_reruns_a_failed_day() {
    let p = project();
    write_job(&p, "behavior_dataset", "behavior", "");
    let d1 = today() - chrono::Days::new(5);
    let (d2, d3) = (d1 + chrono::Days::new(1), d1 + chrono::Days::new(2));
    // Day 1 has no data yet and nothing is published: its instance fails (an empty version
    // is not published); days 2 and 3 succeed, each keeping the days before.
    land(&p, d2, &["OA-2"]);
    land(&p, d3, &["OA-3", "OA-4"]);
    let (ok, out) = backfill(&p, d1, d3, false);
    assert!(!ok, "day 1 fails: {out}");
    assert!(out.contains("3 run(s) queued"), "{out}");
    let failed = run_id_of(&out, d1, "failed");
    assert!(out.contains("has no rows"), "{out}");
    run_id_of(&out, d2, "succeeded: 1 rows");
    run_id_of(&out, d3, "succeeded: 3 rows");
    assert!(out.contains("2 period(s) succeeded, 1 not"), "{out}");
    assert_eq!(published_rows(&p), 3);

    // Rerun the failed day once its data is there.
    land(&p, d1, &["OA-1"]);
    let out = p.run(&["rerun", &failed.to_string()]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    let rerun = run_id_of(&text, d1, "succeeded: 4 rows");
    assert!(
        text.contains(&format!("run {failed} rerun as run {rerun}")),
        "{text}"
    );
    // A succeeded run is not rerun.
    let out = p.run(&["rerun", &rerun.to_string()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("run {rerun} is succeeded")),
        "{}",
        stderr(&out)
    );

    // Every day succeeded: a second backfill does nothing, unless forced.
    let (ok, out) = backfill(&p, d1, d3, false);
    assert!(ok, "{out}");
    assert!(out.contains("3 period(s) already succeeded"), "{out}");
    assert!(out.contains("0 run(s) queued"), "{out}");
    let (ok, out) = backfill(&p, d1, d3, true);
    assert!(ok, "{out}");
    assert!(
        out.contains("3 run(s) queued") && out.contains("3 period(s) succeeded, 0 not"),
        "{out}"
    );
    // Rebuilding a day replaces its rows and keeps the others: still one row per device.
    assert_eq!(published_rows(&p), 4);
}

#[test]
fn a_cron_that_never_fires_is_a_located_error() {
    let p = project();
    write_job(
        &p,
        "behavior_dataset",
        "behavior",
        "schedule:\n  cron: \"0 0 30 2 *\"\n",
    );
    let out = p.run(&["validate"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("pipelines/behavior_dataset.yaml:")
            && err.contains(": schedule.cron: cron expression `0 0 30 2 *` never fires: no date matches it (e.g. February 30)"),
        "{err}"
    );
}
