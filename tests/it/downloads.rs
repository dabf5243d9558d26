//! Click-detail downloads from the CLI, through the admin API and on a stopped daemon's data
//! dir; a task a crash left `processing` is built after the restart; an expired archive is
//! deleted, answered 410 and counted.

use std::time::{Duration, Instant};

use crate::collect::start_again;
use crate::reports::{DEVICES, archive_lines, create, drain, get, hit, project};
use crate::serve::{Daemon, free_port, http, start_with};
use crate::support::*;

#[test]
fn downloads_through_the_cli_the_api_a_restart_and_expiry() {
    let p = project();
    let (public, admin) = (free_port(), free_port());
    let env = vec![(
        "BACKFLOW__PUBLIC__BASE_URL",
        format!("http://127.0.0.1:{public}"),
    )];
    let a = create(&p, &env, "ws1", "a1", "gA", "huawei");
    let other = create(&p, &env, "ws2", "b1", "gA", "huawei");
    let d = start_with(&p, (public, admin), &env);
    let mut clicks = 0;
    for i in 0..24usize {
        let kind = if i % 2 == 0 { "click" } else { "impression" };
        let target = if i % 6 == 5 { &other } else { &a };
        assert!((200..400).contains(&hit(target, kind, DEVICES[i % DEVICES.len()])));
        if kind == "click" && i % 6 != 5 {
            clicks += 1;
        }
    }
    drain(&d);
    let today = chrono::Utc::now()
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .date_naive()
        .to_string();

    // Through the admin API: create, wait, write the archive.
    let api = [
        ("BACKFLOW_API", d.admin.clone()),
        ("BACKFLOW_TOKEN", d.token.clone()),
    ];
    let cli = |args: &[&str]| {
        p.command(args)
            .envs(api.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .expect("spawn")
    };
    let first = p.path().join("first.tar.gz");
    let out = cli(&[
        "download",
        "create",
        "--workspace",
        "ws1",
        "--from",
        &today,
        "--to",
        &today,
        "--name",
        "today",
        "--output",
        first.to_str().expect("path"),
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let task: serde_json::Value = serde_json::from_str(stdout(&out).trim()).expect("json");
    assert_eq!(task["status"], "succeeded", "{task}");
    assert_eq!(task["clicks"], clicks);
    let lines = archive_lines(&std::fs::read(&first).expect("archive"));
    assert_eq!(lines.len(), clicks, "one line per click of ws1");
    assert!(
        lines.iter().all(|l| l["activity_id"] == a["id"]),
        "ws1 only"
    );
    let id = task["id"].as_i64().expect("id");

    // list and get agree; a range beyond the month is refused with the reason.
    let out = cli(&["download", "list", "--workspace", "ws1", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let list: serde_json::Value = serde_json::from_str(stdout(&out).trim()).expect("json");
    assert_eq!(list[0]["id"], id);
    let out = cli(&["download", "get", &id.to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("succeeded"), "{}", stdout(&out));
    let out = cli(&[
        "download",
        "create",
        "--workspace",
        "ws1",
        "--from",
        "2020-01-01",
        "--to",
        &today,
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("last month"), "{}", stderr(&out));

    // Expiry: once past `expires_at` the worker deletes the archive; the API answers 410.
    let catalog =
        backflow::catalog::Catalog::open(&p.path().join("data/catalog.sqlite")).expect("catalog");
    let stored = catalog.download(id).expect("task");
    let file = p
        .path()
        .join("data/downloads")
        .join(stored.file.as_deref().expect("file"));
    assert!(file.exists());
    catalog
        .finish_download(
            id,
            stored.clicks.unwrap_or(0),
            stored.bytes.unwrap_or(0),
            stored.file.as_deref().unwrap_or(""),
            "2000-01-01T00:00:00.000000Z",
        )
        .expect("expire");
    let deadline = Instant::now() + Duration::from_secs(30);
    while file.exists() {
        assert!(Instant::now() < deadline, "expired archive not deleted");
        std::thread::sleep(Duration::from_millis(100));
    }
    let gone = get(&d, &format!("/api/v1/downloads/{id}/file"), &d.token);
    assert_eq!(gone.status, 410, "{}", gone.body);
    assert!(gone.body.contains("expired"), "{}", gone.body);
    let metrics = get(&d, "/metrics", &d.token).body;
    assert!(
        metrics.contains("backflow_downloads_total{status=\"expired\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("backflow_downloads_total{status=\"succeeded\"} 1"));

    // A crash leaves a task `processing`; the stopped daemon's data dir serves the CLI.
    let interrupted = catalog
        .create_download("ws1", "interrupted", &today, &today, "test")
        .expect("queue");
    let token = d.token.clone();
    drop(d);
    assert_eq!(
        catalog.claim_download().expect("claim").map(|t| t.id),
        Some(interrupted.id)
    );
    let direct = p.path().join("direct.tar.gz");
    let out = p.run(&[
        "download",
        "create",
        "--workspace",
        "ws1",
        "--from",
        &today,
        "--to",
        &today,
        "--output",
        direct.to_str().expect("path"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("succeeded"), "{}", stdout(&out));
    assert_eq!(
        archive_lines(&std::fs::read(&direct).expect("archive")).len(),
        clicks,
        "the CLI on the data dir builds the same archive"
    );
    assert_eq!(
        catalog.download(interrupted.id).expect("task").status,
        "processing"
    );

    let d = Daemon {
        child: start_again(&p, (public, admin), &env),
        admin: format!("http://127.0.0.1:{admin}"),
        public: format!("http://127.0.0.1:{public}"),
        token,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let t = get(
            &d,
            &format!("/api/v1/downloads/{}", interrupted.id),
            &d.token,
        );
        let t: serde_json::Value = serde_json::from_str(&t.body).expect("json");
        if t["status"] == "succeeded" {
            assert_eq!(t["clicks"], clicks);
            break;
        }
        assert!(t["status"] != "failed", "{t}");
        assert!(
            Instant::now() < deadline,
            "interrupted task not rebuilt: {t}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let file = http::send(
        reqwest::Method::GET,
        &format!("{}/api/v1/downloads/{}/file", d.admin, interrupted.id),
        Some(&d.token),
    )
    .expect("request");
    assert_eq!(file.status, 200);
}
