//! The admin API for activities and Tencent feedback tasks through a real daemon over real HTTP,
//! and the CLI's API path (`--api`, `--token`): roles and workspace scopes, located JSON errors,
//! changes visible to the public endpoints at once, CSV export, audit, the OpenAPI document,
//! and feedback hits answered Tencent's way and landed as `endpoint = feedback` rows.

use std::time::Duration;

use serde_json::{Value, json};

use crate::serve::{Daemon, free_port, start_with};
use crate::support::*;

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

fn call(method: reqwest::Method, url: &str, token: Option<&str>, body: Option<Vec<u8>>) -> Reply {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let mut req = client.request(method, url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await.expect("send");
        Reply {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            body: resp.bytes().await.expect("body").to_vec(),
        }
    })
}

fn get(url: &str, token: Option<&str>) -> Reply {
    call(reqwest::Method::GET, url, token, None)
}

fn send_json(method: reqwest::Method, url: &str, token: &str, body: &Value) -> Reply {
    call(
        method,
        url,
        Some(token),
        Some(body.to_string().into_bytes()),
    )
}

fn token(p: &Project, role: &str, workspace: Option<&str>) -> String {
    let mut args = vec!["token", "create", "--role", role];
    if let Some(ws) = workspace {
        args.extend(["--workspace", ws]);
    }
    let out = p.run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).trim().to_string()
}

/// `backflow <args>` through the admin API of `d` with `token`.
fn cli(p: &Project, d: &Daemon, token: &str, args: &[&str]) -> std::process::Output {
    p.command(args)
        .env("BACKFLOW_API", &d.admin)
        .env("BACKFLOW_TOKEN", token)
        .output()
        .expect("spawn")
}

fn cli_json(p: &Project, d: &Daemon, token: &str, args: &[&str]) -> Value {
    let out = cli(p, d, token, args);
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    serde_json::from_str(stdout(&out).trim()).expect("CLI JSON")
}

fn daemon(p: &Project) -> Daemon {
    p.edit_pipeline(
        "schedule:\n  cron: \"* * * * *\"\n  time_zone: Asia/Shanghai\n",
        "",
    );
    let (public, admin) = (free_port(), free_port());
    let env = [(
        "BACKFLOW__PUBLIC__BASE_URL",
        format!("http://127.0.0.1:{public}"),
    )];
    start_with(p, (public, admin), &env)
}

fn metric(d: &Daemon, line: &str) -> bool {
    let m = crate::serve::http::send(
        reqwest::Method::GET,
        &format!("{}/metrics", d.admin),
        Some(&d.token),
    )
    .expect("metrics");
    m.body.contains(line)
}

#[test]
fn activities_through_the_admin_api_and_the_cli_api_path() {
    let p = Project::new();
    let d = daemon(&p);
    let api = format!("{}/api/v1", d.admin);
    let ws1 = format!("{api}/workspaces/ws1/activities");

    // Create with the CLI through the API: the JSON the direct path prints.
    let a = cli_json(
        &p,
        &d,
        &d.token,
        &[
            "activity",
            "create",
            "--workspace",
            "ws1",
            "--name",
            "hw-1",
            "--group",
            "双11",
            "--channel",
            "huawei",
            "--format",
            "信息流",
            "--landing",
            "https://example.com/a",
            "--third-party-click",
            "https://e.cn.miaozhen.com/r/k=1",
            "--json",
        ],
    );
    assert_eq!(a["status"], "on");
    assert_eq!(a["group"], "双11");
    assert_eq!(
        a["totals"],
        json!({"impressions": 0, "clicks": 0, "dedup_clicks": 0})
    );
    let id = a["id"].as_i64().expect("id");
    let click = a["click_url"].as_str().expect("click_url").to_string();
    assert!(click.starts_with(&format!("{}/c/", d.public)), "{click}");
    assert!(
        a["impression_url"]
            .as_str()
            .is_some_and(|u| u.contains("/i/"))
    );

    // The link works at once (the API reloads the link table; no waiting for the 2 s refresh).
    let r = get(&click, None);
    assert_eq!(
        (r.status, r.header("location")),
        (302, Some("https://example.com/a"))
    );

    // Edit: the new landing URL applies at once; channel and group are fixed (located 422).
    let edited = send_json(
        reqwest::Method::PATCH,
        &format!("{api}/activities/{id}"),
        &d.token,
        &json!({"landing_url": "https://example.com/b", "name": "hw-1b"}),
    );
    assert_eq!(
        edited.status,
        200,
        "{}",
        String::from_utf8_lossy(&edited.body)
    );
    assert_eq!(edited.json()["name"], "hw-1b");
    assert_eq!(
        get(&click, None).header("location"),
        Some("https://example.com/b")
    );
    for field in ["channel", "group"] {
        let r = send_json(
            reqwest::Method::PATCH,
            &format!("{api}/activities/{id}"),
            &d.token,
            &json!({ field: "x" }),
        );
        assert_eq!(r.status, 422);
        assert_eq!(r.json()["field"], field);
        assert!(
            r.json()["error"]
                .as_str()
                .is_some_and(|e| e.contains("cannot be changed")),
            "{}",
            r.json()
        );
    }
    let r = send_json(
        reqwest::Method::PATCH,
        &format!("{api}/activities/{id}"),
        &d.token,
        &json!({"landing_url": "javascript:alert(1)"}),
    );
    assert_eq!(
        (r.status, r.json()["field"].as_str()),
        (422, Some("landing_url"))
    );

    // Switch off with the CLI: collected no more, at once, but users still land.
    let out = cli(
        &p,
        &d,
        &d.token,
        &["activity", "switch", &id.to_string(), "off"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("is off"), "{}", stdout(&out));
    assert_eq!(get(&click, None).status, 302);
    assert!(metric(
        &d,
        r#"backflow_collect_hits_total{endpoint="click",outcome="activity_off"} 1"#
    ));
    let r = send_json(
        reqwest::Method::POST,
        &format!("{api}/activities/{id}/switch"),
        &d.token,
        &json!({"status": "on"}),
    );
    assert_eq!((r.status, r.json()["status"].as_str()), (200, Some("on")));

    // Batch: all or nothing; a taken name is a 409 located at its index.
    let batch = format!("{ws1}/batch");
    let r = send_json(
        reqwest::Method::POST,
        &batch,
        &d.token,
        &json!({"names": ["k-1", "hw-1b"], "group": "g", "channel": "kuaishou", "ad_format": "开屏"}),
    );
    assert_eq!(
        (r.status, r.json()["field"].as_str()),
        (409, Some("names[1]"))
    );
    let r = send_json(
        reqwest::Method::POST,
        &batch,
        &d.token,
        &json!({"names": ["k-1", "k-2", "k-3"], "group": "g", "channel": "kuaishou", "ad_format": "开屏",
                "landing_url": "https://example.com/k"}),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["activities"].as_array().map(Vec::len), Some(3));
    let list = cli_json(
        &p,
        &d,
        &d.token,
        &["activity", "list", "--workspace", "ws1", "--json"],
    );
    assert_eq!(
        list.as_array().map(Vec::len),
        Some(4),
        "no partial batch: {list}"
    );

    // Malformed and oversized bodies: JSON errors, located where possible.
    let r = call(
        reqwest::Method::POST,
        &ws1,
        Some(&d.token),
        Some(b"{not json".to_vec()),
    );
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].is_string());
    let r = send_json(
        reqwest::Method::POST,
        &ws1,
        &d.token,
        &json!({"name": "x", "group": "g", "channel": "kuaishou", "ad_format": "f", "colour": "red"}),
    );
    assert_eq!(
        (r.status, r.json()["field"].as_str()),
        (400, Some("colour"))
    );
    let r = send_json(
        reqwest::Method::POST,
        &ws1,
        &d.token,
        &json!({"name": "x", "group": "g", "channel": "nope", "ad_format": "f"}),
    );
    assert_eq!(
        (r.status, r.json()["field"].as_str()),
        (422, Some("channel"))
    );
    let r = send_json(
        reqwest::Method::POST,
        &ws1,
        &d.token,
        &json!({"group": "g", "channel": "kuaishou", "ad_format": "f"}),
    );
    assert_eq!((r.status, r.json()["field"].as_str()), (400, Some("name")));
    let r = send_json(
        reqwest::Method::POST,
        &batch,
        &d.token,
        &json!({"names": ["a", 7], "group": "g", "channel": "kuaishou", "ad_format": "f"}),
    );
    assert_eq!(
        (r.status, r.json()["field"].as_str()),
        (400, Some("names[1]"))
    );
    let huge = json!({"names": vec!["n".repeat(90); 3000], "group": "g", "channel": "kuaishou", "ad_format": "f"});
    let r = send_json(reqwest::Method::POST, &batch, &d.token, &huge);
    assert_eq!(r.status, 413);
    assert!(r.json()["error"].is_string());
    assert_eq!(
        get(&format!("{api}/activities/999999"), Some(&d.token)).status,
        404
    );

    // Roles and workspace scopes.
    let analyst = token(&p, "analyst", Some("ws1"));
    let other_admin = token(&p, "workspace_admin", Some("ws2"));
    assert_eq!(get(&ws1, Some(&analyst)).status, 200);
    let r = send_json(
        reqwest::Method::POST,
        &ws1,
        &analyst,
        &json!({"name": "x", "group": "g", "channel": "kuaishou", "ad_format": "f"}),
    );
    assert_eq!(r.status, 403);
    let out = cli(
        &p,
        &d,
        &analyst,
        &["activity", "switch", &id.to_string(), "off"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("HTTP 403"), "{}", stderr(&out));
    assert_eq!(get(&ws1, Some(&other_admin)).status, 403);
    assert_eq!(
        get(&format!("{api}/activities/{id}"), Some(&other_admin)).status,
        404,
        "another workspace's ids are not revealed"
    );
    assert_eq!(get(&ws1, None).status, 401);

    // Links: one activity, and the CSV export (Excel flavor over HTTP, plain from the CLI).
    let r = get(&format!("{api}/activities/{id}/links"), Some(&analyst));
    assert_eq!(r.json()["click_url"].as_str(), Some(click.as_str()));
    let r = get(&format!("{ws1}/links.csv"), Some(&analyst));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/csv; charset=utf-8"));
    assert!(
        r.header("content-disposition")
            .is_some_and(|v| v.starts_with("attachment"))
    );
    let text = String::from_utf8(r.body.clone()).expect("utf-8");
    assert!(text.starts_with("\u{feff}id,name,group,"), "{text}");
    assert_eq!(text.lines().count(), 5);
    let out = cli(
        &p,
        &d,
        &analyst,
        &[
            "activity",
            "links",
            "--workspace",
            "ws1",
            "--csv",
            "--ids",
            &id.to_string(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    assert_eq!(
        lines[0],
        "id,name,group,channel,ad_format,status,impression_url,click_url"
    );
    assert_eq!(lines.len(), 2);
    assert!(lines[1].ends_with(&click), "{}", lines[1]);
    let r = get(&format!("{ws1}/links.csv?format=xlsx"), Some(&analyst));
    assert_eq!(
        (r.status, r.json()["field"].as_str()),
        (400, Some("format"))
    );

    // The document describes every route and needs no token.
    let doc = get(&format!("{}/openapi.json", d.admin), None);
    assert_eq!(doc.status, 200);
    let doc = doc.json();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/api/v1/workspaces/{ws}/activities/batch"]["post"].is_object());
    assert!(doc["components"]["schemas"]["ActivityView"].is_object());
    // A valid OpenAPI 3.1 document, by an independent validator (in the test venv).
    if let Some(python) = require_env("BACKFLOW_TEST_PYTHON") {
        let file = p.path().join("openapi.json");
        std::fs::write(&file, doc.to_string()).expect("write");
        let out = std::process::Command::new(python)
            .args([
                "-c",
                "import json, sys; from openapi_spec_validator import validate; \
                 validate(json.load(open(sys.argv[1])))",
            ])
            .arg(&file)
            .output()
            .expect("python");
        assert!(out.status.success(), "{}", stderr(&out));
    }

    // Every change is audited with the token that made it.
    let catalog =
        backflow::catalog::Catalog::open(&p.path().join("data/catalog.sqlite")).expect("catalog");
    let audit = catalog.audit_entries(100).expect("audit");
    for action in ["activity.create", "activity.edit", "activity.status"] {
        assert!(
            audit
                .iter()
                .any(|(_, actor, a, _)| a == action && actor.starts_with("token:")),
            "{action}: {audit:?}"
        );
    }
}

#[test]
fn feedback_tasks_answer_tencent_start_disabled_and_land_as_feedback_rows() {
    let p = Project::new();
    let d = daemon(&p);
    let t = cli_json(
        &p,
        &d,
        &d.token,
        &[
            "feedback",
            "create",
            "--workspace",
            "ws1",
            "--name",
            "广点通 1",
            "--json",
        ],
    );
    assert_eq!(
        (t["status"].as_str(), t["protocol"].as_str()),
        (Some("off"), Some("tencent_feedback"))
    );
    let id = t["id"].as_i64().expect("id").to_string();
    let url = t["feedback_url"]
        .as_str()
        .expect("feedback_url")
        .to_string();
    assert!(
        url.starts_with(&format!("{}/fb/", d.public)) && !url.contains('?'),
        "{url}"
    );

    // Example 6 of spec/media-protocols.md §7: Tencent appends its fixed parameters.
    let query = "muid=f2d1311ca5c1ecb214c19a26e9ddbad0&click_time=1718000005&appid=1234567890\
                 &click_id=007210548a030059ccdfd1d4&app_type=ios&advertiser_id=20000&ip=198.51.100.23\
                 &user_agent=Mozilla%2F5.0%20%28iPhone%3B%20CPU%20iPhone%20OS%2017_5%20like%20Mac%20OS%20X%29\
                 &campaign_id=102043154&adgroup_id=228691429&creative_id=251986746\
                 &request_id=f3k2j1h0g9f8e7d6c5b4&site_set=SITE_SET_WECHAT&process_time=1718000005";
    let hit = format!("{url}?{query}");

    // Not enabled: Tencent still gets its `ret` 0 (joint debugging must pass), nothing is kept.
    let r = get(&hit, None);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["ret"], 0);
    assert!(metric(
        &d,
        r#"backflow_collect_hits_total{endpoint="feedback",outcome="task_off"} 1"#
    ));
    // A feedback token is not a click token, nor the other way round.
    let link_token = url.rsplit('/').next().expect("token");
    assert_eq!(
        get(&format!("{}/c/{link_token}", d.public), None).status,
        404
    );

    let out = cli(&p, &d, &d.token, &["feedback", "switch", &id, "on"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r = get(&hit, None);
    assert_eq!((r.status, r.json()["ret"].as_i64()), (200, Some(0)));
    assert!(r.header("location").is_none());
    assert!(metric(
        &d,
        r#"backflow_collect_hits_total{endpoint="feedback",outcome="accepted"} 1"#
    ));

    let renamed = cli_json(
        &p,
        &d,
        &d.token,
        &["feedback", "rename", &id, "微信朋友圈", "--json"],
    );
    assert_eq!(renamed["name"], "微信朋友圈");
    assert_eq!(
        renamed["feedback_url"].as_str(),
        Some(url.as_str()),
        "a rename keeps the URL"
    );
    let list = cli_json(
        &p,
        &d,
        &d.token,
        &["feedback", "list", "--workspace", "ws1", "--json"],
    );
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert_eq!(list[0]["status"], "on");
    let reader = token(&p, "read_only", Some("ws1"));
    let r = send_json(
        reqwest::Method::PATCH,
        &format!("{}/api/v1/feedback-tasks/{id}", d.admin),
        &reader,
        &json!({"name": "x"}),
    );
    assert_eq!(r.status, 403);

    // The hit lands as an ad_events row with endpoint=feedback and Tencent's fields mapped.
    let run_url = format!("{}/api/v1/pipelines/ad_events/runs", d.admin);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let _ = crate::serve::http::send(reqwest::Method::POST, &run_url, Some(&d.token));
        std::thread::sleep(Duration::from_millis(500));
        if read_dataset(&p.lake().join("ad_events")).height() == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ad_events did not land the feedback hit"
        );
    }
    let lake = read_dataset(&p.lake().join("ad_events"));
    let one = |c: &str| sorted_values(&lake, c).pop().unwrap_or_default();
    assert_eq!(one("endpoint"), "feedback");
    assert_eq!(one("channel"), "tencent_ads");
    assert_eq!(one("activity_id"), "0");
    assert_eq!(one("server_to_server"), "true");
    assert_eq!(
        one("idfa_md5"),
        "f2d1311ca5c1ecb214c19a26e9ddbad0",
        "app_type=ios"
    );
    assert_eq!(one("click_id"), "007210548a030059ccdfd1d4");
    assert_eq!(one("ad_slot"), "SITE_SET_WECHAT");
    assert_eq!(one("user_ip"), "198.51.100.23");
}
