//! Monitoring links end to end through the real daemon: activities made with the CLI, hits on the
//! public listener answered the way each media expects, every accepted hit durable in the journal
//! before its answer, bad tokens and requests refused, switched-off activities not collected.

use std::time::Duration;

use backflow::collect::hit::HitRecord;
use backflow::journal::{Journal, JournalOptions, Position};

use crate::serve::{free_port, start_with};
use crate::support::*;

pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) location: Option<String>,
    pub(crate) content_type: Option<String>,
    pub(crate) body: Vec<u8>,
}

pub(crate) fn hit(method: reqwest::Method, url: &str) -> Reply {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .expect("client");
        let resp = client
            .request(method, url)
            .header("user-agent", "Mozilla/5.0 (test)")
            .send()
            .await
            .expect("send");
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let (location, content_type) = (header("location"), header("content-type"));
        let status = resp.status().as_u16();
        Reply {
            status,
            location,
            content_type,
            body: resp.bytes().await.expect("body").to_vec(),
        }
    })
}

pub(crate) fn create(
    p: &Project,
    env: &[(&str, String)],
    name: &str,
    channel: &str,
    landing: Option<&str>,
) -> serde_json::Value {
    let mut args = vec![
        "activity",
        "create",
        "--workspace",
        "ws1",
        "--name",
        name,
        "--group",
        "双11",
        "--channel",
        channel,
        "--format",
        "信息流",
        "--json",
    ];
    if let Some(l) = landing {
        args.extend(["--landing", l]);
    }
    let out = p
        .command(&args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("spawn");
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_str(stdout(&out).trim()).expect("activity json")
}

fn journal_records(p: &Project) -> Vec<HitRecord> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let (journal, _) = Journal::open(&p.path().join("data/journal"), JournalOptions::default())
            .await
            .expect("open journal");
        let records = journal
            .read(Position(1), 100_000, usize::MAX)
            .await
            .expect("read");
        journal.close().await.expect("close");
        records
            .into_iter()
            .map(|(_, bytes)| serde_json::from_slice(&bytes).expect("record json"))
            .collect()
    })
}

#[test]
fn hits_are_answered_per_media_and_durable_before_the_answer() {
    let p = Project::new();
    p.edit_pipeline(
        "schedule:\n  cron: \"* * * * *\"\n  time_zone: Asia/Shanghai\n",
        "",
    );
    let (public, admin) = (free_port(), free_port());
    let env = [(
        "BACKFLOW__PUBLIC__BASE_URL",
        format!("http://127.0.0.1:{public}"),
    )];
    let redirect = create(
        &p,
        &env,
        "huawei-1",
        "huawei",
        Some("https://example.com/landing?from=hw"),
    );
    let s2s = create(
        &p,
        &env,
        "oe-1",
        "ocean_engine",
        Some("https://example.com/oe"),
    );
    let no_landing = create(&p, &env, "huawei-2", "huawei", None);
    let imp = redirect["impression_url"].as_str().expect("impression_url");
    let clk = redirect["click_url"].as_str().expect("click_url");
    assert!(
        imp.starts_with(&format!("http://127.0.0.1:{public}/i/")),
        "{imp}"
    );
    assert!(
        clk.contains("/c/") && clk.contains("__OAID__"),
        "the media's macros are filled in: {clk}"
    );
    assert_eq!(redirect["status"], "on");

    let d = start_with(&p, (public, admin), &env);
    let get = reqwest::Method::GET;

    // Device click: 302 to the activity's own landing URL, never anywhere else.
    let r = hit(get.clone(), &format!("{clk}&o=https://evil.example.net/"));
    assert_eq!(r.status, 302);
    assert_eq!(
        r.location.as_deref(),
        Some("https://example.com/landing?from=hw")
    );
    // Impression: the 43-byte GIF.
    let r = hit(get.clone(), imp);
    assert_eq!(
        (r.status, r.content_type.as_deref(), r.body.len()),
        (200, Some("image/gif"), 43)
    );
    let r = hit(reqwest::Method::HEAD, imp);
    assert_eq!((r.status, r.body.len()), (200, 0));
    // Server-to-server click (Ocean Engine): 200 with the body the media expects, no redirect.
    let r = hit(get.clone(), s2s["click_url"].as_str().expect("url"));
    assert_eq!(r.status, 200);
    assert!(
        String::from_utf8_lossy(&r.body).contains("\"ret\":0"),
        "{:?}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.location, None);
    // A click without a landing URL: 204.
    assert_eq!(
        hit(get.clone(), no_landing["click_url"].as_str().expect("url")).status,
        204
    );
    let accepted = 5;

    // Refused: a tampered token, a token for the other endpoint, another method, an over-long URL.
    let token = imp
        .split("/i/")
        .nth(1)
        .and_then(|t| t.split('?').next())
        .expect("token");
    let mut tampered: Vec<char> = token.chars().collect();
    tampered[5] = if tampered[5] == 'A' { 'B' } else { 'A' };
    let tampered: String = tampered.into_iter().collect();
    assert_eq!(
        hit(get.clone(), &format!("{}/i/{tampered}", d.public)).status,
        404
    );
    assert_eq!(
        hit(get.clone(), &format!("{}/c/{token}", d.public)).status,
        404
    );
    assert_eq!(hit(reqwest::Method::POST, imp).status, 405);
    assert_eq!(
        hit(get.clone(), &format!("{imp}&pad={}", "x".repeat(20_000))).status,
        414
    );

    // Switched off: users still land, nothing is collected.
    let id = no_landing["id"].as_i64().expect("id").to_string();
    let out = p.run(&["activity", "switch", &id, "off"]);
    assert!(out.status.success(), "{}", stderr(&out));
    std::thread::sleep(Duration::from_millis(2500)); // the link table refreshes every 2 s
    assert_eq!(
        hit(get.clone(), no_landing["click_url"].as_str().expect("url")).status,
        204
    );

    let m = crate::serve::http::send(get.clone(), &format!("{}/metrics", d.admin), Some(&d.token))
        .expect("metrics");
    assert!(
        m.body.contains(
            r#"backflow_collect_hits_total{endpoint="impression",outcome="bad_signature"} 1"#
        ),
        "{}",
        m.body
    );
    assert!(
        m.body
            .contains(r#"backflow_collect_hits_total{endpoint="click",outcome="activity_off"} 1"#),
        "{}",
        m.body
    );
    assert!(
        m.body.contains(
            r#"backflow_collect_hits_total{endpoint="click",outcome="wrong_endpoint"} 1"#
        ),
        "{}",
        m.body
    );
    assert!(
        m.body
            .contains(&format!("backflow_journal_appends_total {accepted}")),
        "{}",
        m.body
    );

    // The ad_events pipeline lands every accepted hit, decoded, exactly once.
    let run_url = format!("{}/api/v1/pipelines/ad_events/runs", d.admin);
    let runs_url = format!("{}/api/v1/runs?pipeline=ad_events&limit=1", d.admin);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        // A scheduled run may hold the pipeline (409): then wait for the next one.
        let _ = crate::serve::http::send(reqwest::Method::POST, &run_url, Some(&d.token));
        std::thread::sleep(Duration::from_millis(500));
        let runs = crate::serve::http::send(get.clone(), &runs_url, Some(&d.token)).expect("runs");
        let runs: serde_json::Value = serde_json::from_str(&runs.body).expect("json");
        let lake = read_dataset(&p.lake().join("ad_events"));
        if runs["runs"][0]["status"] == "succeeded" && lake.height() == accepted {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ad_events did not land the hits: {runs}"
        );
    }
    let lake = read_dataset(&p.lake().join("ad_events"));
    assert_eq!(
        sorted_values(&lake, "channel"),
        ["huawei", "huawei", "huawei", "huawei", "ocean_engine"]
    );
    let endpoints = sorted_values(&lake, "endpoint");
    assert_eq!(
        endpoints.iter().filter(|e| *e == "click").count(),
        3,
        "{endpoints:?}"
    );
    let raw = sorted_values(&lake, "raw_query");
    assert!(
        raw.iter()
            .any(|q| q.ends_with("&o=https://evil.example.net/")),
        "recorded, never followed: {raw:?}"
    );
    let unknown = sorted_values(&lake, "unknown_fields");
    assert!(
        unknown.iter().any(|u| u.contains("oaid")),
        "unreplaced __OAID__ is an unknown marker: {unknown:?}"
    );
    assert_eq!(
        lake.column("received_at").expect("received_at").dtype(),
        &polars::prelude::DataType::Datetime(
            polars::prelude::TimeUnit::Microseconds,
            Some(polars::prelude::TimeZone::UTC)
        )
    );

    // Stop, then read the journal: exactly the accepted hits, each whole.
    let mut d = d;
    let pid = d.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    d.child.wait().expect("wait");
    let records = journal_records(&p);
    assert_eq!(records.len(), accepted, "{records:#?}");
    let mut ids: Vec<&str> = records.iter().map(|r| r.event_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), accepted, "event ids are unique");
    let first = &records[0];
    assert_eq!(
        (first.workspace.as_str(), first.channel.as_str()),
        ("ws1", "huawei")
    );
    assert!(
        first.query.ends_with("&o=https://evil.example.net/"),
        "raw query kept whole: {}",
        first.query
    );
    assert_eq!(first.peer_ip, "127.0.0.1");
    assert_eq!(first.user_agent.as_deref(), Some("Mozilla/5.0 (test)"));
    assert!(records.iter().any(|r| r.method == "HEAD"));
}

#[test]
fn activity_cli_validates_input_and_exports_links_as_csv() {
    let p = Project::new();
    let out = p.run(&[
        "activity",
        "create",
        "--workspace",
        "w",
        "--name",
        "n",
        "--group",
        "g",
        "--channel",
        "nope",
        "--format",
        "f",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown channel `nope`"),
        "{}",
        stderr(&out)
    );
    let out = p.run(&[
        "activity",
        "create",
        "--workspace",
        "w",
        "--name",
        "n",
        "--group",
        "g",
        "--channel",
        "kuaishou",
        "--format",
        "f",
        "--landing",
        "ftp://x.com/",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("landing_url: must start with http:// or https://"),
        "{}",
        stderr(&out)
    );

    create(&p, &[], "k1", "kuaishou", Some("https://example.com/k"));
    create(&p, &[], "b1", "baidu", None);
    let out = p.run(&["activity", "links", "--workspace", "ws1", "--csv"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "id,name,group,channel,ad_format,status,impression_url,click_url"
    );
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[1].contains(",k1,双11,kuaishou,信息流,on,http://127.0.0.1:8080/i/"),
        "{}",
        lines[1]
    );
    let out = p.run(&["activity", "list", "--workspace", "ws1", "--json"]);
    let list: serde_json::Value = serde_json::from_str(stdout(&out).trim()).expect("json");
    assert_eq!(list.as_array().map(Vec::len), Some(2));
}

/// Starts `backflow serve` without waiting for an initial token (the catalog already has one).
pub(crate) fn start_again(
    p: &Project,
    (public, admin): (u16, u16),
    env: &[(&str, String)],
) -> std::process::Child {
    let child = p
        .command(&["serve"])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("BACKFLOW__PUBLIC__LISTEN", format!("127.0.0.1:{public}"))
        .env("BACKFLOW__ADMIN__LISTEN", format!("127.0.0.1:{admin}"))
        .stdout(std::process::Stdio::null())
        .stderr(crate::support::daemon_stderr())
        .spawn()
        .expect("spawn serve");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while crate::serve::http::blocking_get(&format!("http://127.0.0.1:{admin}/healthz")).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "daemon did not come up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    child
}

#[test]
fn a_daemon_killed_mid_batch_lands_every_accepted_hit_exactly_once_after_restart() {
    let p = Project::new();
    p.edit_pipeline(
        "schedule:\n  cron: \"* * * * *\"\n  time_zone: Asia/Shanghai\n",
        "",
    );
    // Only the run this test triggers may reach the failpoint, not a scheduled one mid-load.
    p.edit_file(
        "pipelines/ad_events.yaml",
        "schedule:\n  cron: \"*/10 * * * * *\"\n  time_zone: Asia/Shanghai\n",
        "",
    );
    let (public, admin) = (free_port(), free_port());
    let env = [(
        "BACKFLOW__PUBLIC__BASE_URL",
        format!("http://127.0.0.1:{public}"),
    )];
    let a = create(&p, &env, "hw", "huawei", Some("https://example.com/l"));
    let b = create(&p, &env, "oe", "ocean_engine", None);
    let mut crash_env = env.to_vec();
    crash_env.push(("BACKFLOW_FAILPOINT", "after_first_put".to_string()));
    let mut d = start_with(&p, (public, admin), &crash_env);

    let urls = [
        &a["impression_url"],
        &a["click_url"],
        &b["impression_url"],
        &b["click_url"],
    ];
    let mut accepted = 0;
    for i in 0..40 {
        let url = urls[i % urls.len()].as_str().expect("url");
        let r = hit(reqwest::Method::GET, &format!("{url}&n={i}"));
        assert!(matches!(r.status, 200 | 204 | 302), "{}", r.status);
        accepted += 1;
    }
    // The next ad_events batch dies after its first Parquet file: the daemon is gone.
    let _ = crate::serve::http::send(
        reqwest::Method::POST,
        &format!("{}/api/v1/pipelines/ad_events/runs", d.admin),
        Some(&d.token),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while d.child.try_wait().expect("wait").is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the failpoint did not stop the daemon"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !p.lake().join("ad_events/_commits").exists(),
        "the batch must not have committed"
    );

    let mut again = start_again(&p, (public, admin), &env);
    let run_url = format!("http://127.0.0.1:{admin}/api/v1/pipelines/ad_events/runs");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let _ = crate::serve::http::send(reqwest::Method::POST, &run_url, Some(&d.token));
        std::thread::sleep(Duration::from_millis(500));
        if p.lake().join("ad_events/_commits").exists()
            && read_dataset(&p.lake().join("ad_events")).height() >= accepted
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ad_events did not recover"
        );
    }
    let m = crate::serve::http::send(
        reqwest::Method::GET,
        &format!("http://127.0.0.1:{admin}/metrics"),
        Some(&d.token),
    )
    .expect("metrics");
    let _ = again.kill();
    let _ = again.wait();
    assert!(
        m.body
            .contains(r#"backflow_pipeline_batches_replayed_total{pipeline="ad_events"} 1"#),
        "{}",
        m.body
    );
    let lake = read_dataset(&p.lake().join("ad_events"));
    let ids = sorted_values(&lake, "event_id");
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(
        (ids.len(), unique.len()),
        (accepted, accepted),
        "every accepted hit exactly once"
    );
}

#[test]
fn over_the_rate_limit_impressions_get_429_and_device_clicks_still_land() {
    let p = Project::new();
    p.edit_pipeline(
        "schedule:\n  cron: \"* * * * *\"\n  time_zone: Asia/Shanghai\n",
        "",
    );
    let (public, admin) = (free_port(), free_port());
    let env = [
        (
            "BACKFLOW__PUBLIC__BASE_URL",
            format!("http://127.0.0.1:{public}"),
        ),
        ("BACKFLOW__PUBLIC__RATE_LIMIT_PER_IP", "1".to_string()),
    ];
    let a = create(&p, &env, "hw", "huawei", Some("https://example.com/l"));
    let d = start_with(&p, (public, admin), &env);
    let imp = a["impression_url"].as_str().expect("url");
    let started = std::time::Instant::now();
    let statuses: Vec<u16> = (0..20)
        .map(|_| hit(reqwest::Method::GET, imp).status)
        .collect();
    // A burst of one second's worth (1), then one more per second however slow the machine.
    let allowed = 1 + started.elapsed().as_secs_f64().ceil() as usize;
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert!(
        limited >= 20usize.saturating_sub(allowed) && limited > 0,
        "at most {allowed} of 20 allowed, the rest 429: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    let r = hit(reqwest::Method::GET, a["click_url"].as_str().expect("url"));
    assert_eq!(
        (r.status, r.location.as_deref()),
        (302, Some("https://example.com/l"))
    );
    let m = crate::serve::http::send(
        reqwest::Method::GET,
        &format!("{}/metrics", d.admin),
        Some(&d.token),
    )
    .expect("metrics");
    assert!(
        m.body.contains(&format!(r#"backflow_collect_hits_total{{endpoint="impression",outcome="rate_limited_ip"}} {limited}"#)),
        "{}",
        m.body
    );
}

#[test]
fn an_activity_on_an_alternative_template_mints_its_macros_and_answers_its_way() {
    let p = Project::new();
    let out = p.run(&[
        "activity",
        "create",
        "--workspace",
        "w",
        "--name",
        "t",
        "--group",
        "g",
        "--channel",
        "tencent_ads",
        "--format",
        "f",
        "--template",
        "no_such_template",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("has no link template `no_such_template`"),
        "{}",
        stderr(&out)
    );

    // Ocean Engine's alternative `ocean_engine_client_send` is a device (redirect) template.
    let (public, admin) = (free_port(), free_port());
    let env = [(
        "BACKFLOW__PUBLIC__BASE_URL",
        format!("http://127.0.0.1:{public}"),
    )];
    let mut args = vec![
        "activity",
        "create",
        "--workspace",
        "w",
        "--name",
        "cs",
        "--group",
        "g",
        "--channel",
        "ocean_engine",
        "--format",
        "f",
        "--landing",
        "https://example.com/cs",
        "--template",
        "ocean_engine_client_send",
        "--json",
    ];
    let out = p
        .command(&args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("spawn");
    assert!(out.status.success(), "{}", stderr(&out));
    let a: serde_json::Value = serde_json::from_str(stdout(&out).trim()).expect("json");
    assert_eq!(a["template"], "ocean_engine_client_send");
    args[5] = "default";
    args.truncate(args.len() - 3);
    args.push("--json");
    let out = p
        .command(&args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("spawn");
    let default: serde_json::Value = serde_json::from_str(stdout(&out).trim()).expect("json");

    let _d = start_with(&p, (public, admin), &env);
    let r = hit(reqwest::Method::GET, a["click_url"].as_str().expect("url"));
    assert_eq!(
        (r.status, r.location.as_deref()),
        (302, Some("https://example.com/cs"))
    );
    let r = hit(
        reqwest::Method::GET,
        default["click_url"].as_str().expect("url"),
    );
    assert_eq!(
        r.status, 200,
        "the default Ocean Engine template is server-to-server"
    );
}
