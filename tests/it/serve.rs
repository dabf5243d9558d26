//! `backflow serve` as a real process: health, the first admin token, bearer auth with roles,
//! metrics, a run triggered through the admin API, and graceful shutdown on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

pub(crate) struct Daemon {
    pub(crate) child: Child,
    pub(crate) admin: String,
    pub(crate) public: String,
    pub(crate) token: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(p: &Project) -> Daemon {
    start_with(p, (free_port(), free_port()), &[])
}

/// Starts `backflow serve` on the given (public, admin) ports with extra environment.
pub(crate) fn start_with(
    p: &Project,
    (public, admin): (u16, u16),
    env: &[(&str, String)],
) -> Daemon {
    let mut child = p
        .command(&["serve"])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("BACKFLOW__PUBLIC__LISTEN", format!("127.0.0.1:{public}"))
        .env("BACKFLOW__ADMIN__LISTEN", format!("127.0.0.1:{admin}"))
        .env("BACKFLOW__SHUTDOWN__GRACE_SECONDS", "10")
        .stdout(Stdio::piped())
        .stderr(crate::support::daemon_stderr())
        .spawn()
        .expect("spawn serve");
    let stdout = child.stdout.take().expect("stdout");
    // The token line comes only from a fresh catalog: never wait for it forever.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) else {
        let _ = child.kill();
        panic!(
            "no initial admin token line within 30 s (a catalog that has tokens prints none: use start_again)"
        );
    };
    let token = line
        .trim()
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(
        token.starts_with("bft_"),
        "first line should carry the initial admin token: {line:?}"
    );
    let daemon = Daemon {
        child,
        admin: format!("http://127.0.0.1:{admin}"),
        public: format!("http://127.0.0.1:{public}"),
        token,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while http::blocking_get(&format!("{}/healthz", daemon.admin)).is_err() {
        assert!(Instant::now() < deadline, "daemon did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
    daemon
}

pub(crate) mod http {
    //! A tiny blocking HTTP client over the async reqwest, enough for these tests.
    pub use ::reqwest::*;

    pub struct Reply {
        pub status: u16,
        pub body: String,
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    pub fn blocking_get(url: &str) -> Result<Reply> {
        send(Method::GET, url, None)
    }

    pub fn send(method: Method, url: &str, token: Option<&str>) -> Result<Reply> {
        rt().block_on(async {
            // Bounded: a daemon that stops answering fails the test instead of hanging it.
            let client = Client::builder()
                .timeout(std::time::Duration::from_secs(60))
                .build()?;
            let mut req = client.request(method, url);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let resp = req.send().await?;
            let status = resp.status().as_u16();
            Ok(Reply {
                status,
                body: resp.text().await?,
            })
        })
    }
}

use http::Method;

#[test]
fn serve_answers_health_enforces_tokens_runs_pipelines_and_stops_on_sigterm() {
    let p = Project::new();
    p.drop_fixtures();
    // Only manual runs here: no schedule firing during the test.
    p.edit_pipeline(
        "schedule:\n  cron: \"* * * * *\"\n  time_zone: Asia/Shanghai\n",
        "",
    );
    let d = start(&p);

    assert_eq!(
        http::blocking_get(&format!("{}/healthz", d.public))
            .expect("get")
            .status,
        200
    );
    assert_eq!(
        http::blocking_get(&format!("{}/readyz", d.admin))
            .expect("get")
            .status,
        200
    );

    // No token, a wrong token: 401. The admin token: 200.
    let metrics = format!("{}/metrics", d.admin);
    assert_eq!(
        http::send(Method::GET, &metrics, None).expect("get").status,
        401
    );
    assert_eq!(
        http::send(Method::GET, &metrics, Some("bft_wrong"))
            .expect("get")
            .status,
        401
    );
    let m = http::send(Method::GET, &metrics, Some(&d.token)).expect("get");
    assert_eq!(m.status, 200);
    assert!(
        m.body.contains("backflow_auth_failures_total 2"),
        "{}",
        m.body
    );

    // A read-only token made with the CLI (the daemon holds the catalog open: SQLite WAL allows it)
    // may read but not trigger runs.
    let out = p.run(&["token", "create", "--role", "read_only", "--label", "test"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let reader = stdout(&out).trim().to_string();
    let run_url = format!("{}/api/v1/pipelines/behavior_events/runs", d.admin);
    assert_eq!(
        http::send(Method::POST, &run_url, Some(&reader))
            .expect("post")
            .status,
        403
    );
    assert_eq!(
        http::send(
            Method::GET,
            &format!("{}/api/v1/pipelines", d.admin),
            Some(&reader)
        )
        .expect("get")
        .status,
        200
    );
    let missing = format!("{}/api/v1/pipelines/nope/runs", d.admin);
    assert_eq!(
        http::send(Method::POST, &missing, Some(&d.token))
            .expect("post")
            .status,
        404
    );

    // Trigger a run and watch it succeed in the run history.
    assert_eq!(
        http::send(Method::POST, &run_url, Some(&d.token))
            .expect("post")
            .status,
        202
    );
    let runs_url = format!("{}/api/v1/runs?pipeline=behavior_events", d.admin);
    let deadline = Instant::now() + Duration::from_secs(60);
    let run = loop {
        let runs: serde_json::Value = serde_json::from_str(
            &http::send(Method::GET, &runs_url, Some(&d.token))
                .expect("get")
                .body,
        )
        .expect("json");
        let first = runs["runs"][0].clone();
        if first["status"] != "running" && !first.is_null() {
            break first;
        }
        assert!(Instant::now() < deadline, "run did not finish: {runs}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["rows_out"], 9, "{run}");
    assert_eq!(run["trigger"], "api");
    let m = http::send(Method::GET, &metrics, Some(&d.token)).expect("get");
    assert!(
        m.body
            .contains(r#"backflow_pipeline_rows_out_total{pipeline="behavior_events"} 9"#),
        "{}",
        m.body
    );
    assert!(
        m.body
            .contains("backflow_pipeline_batch_duration_seconds_count"),
        "{}",
        m.body
    );

    // SIGTERM: a clean exit well within the grace period.
    let mut d = d;
    let pid = d.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = d.child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "daemon did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn sigterm_during_a_large_batch_stops_within_the_grace_period_and_loses_nothing() {
    let p = Project::new();
    p.edit_pipeline(
        "schedule:\n  cron: \"* * * * *\"\n  time_zone: Asia/Shanghai\n",
        "",
    );
    const FILES: usize = 20;
    const ROWS: usize = 2000;
    for f in 0..FILES {
        let mut text = String::new();
        for r in 0..ROWS {
            text.push_str(&format!(
                r#"{{"user_id":"u{f}-{r}","id_type":"oneid","behavior_type":"浏览","behavior_time":"2026-11-{:02} {:02}:00:00","object_attribute":"商品","object_attribute_value":"X"}}"#,
                1 + r % 28,
                r % 24
            ));
            text.push('\n');
        }
        std::fs::write(p.drops().join(format!("f{f:03}.ndjson")), text).expect("write");
    }
    let mut d = start(&p);
    let run_url = format!("{}/api/v1/pipelines/behavior_events/runs", d.admin);
    assert_eq!(
        http::send(Method::POST, &run_url, Some(&d.token))
            .expect("post")
            .status,
        202
    );
    std::thread::sleep(Duration::from_millis(300));
    let pid = d.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    // Grace is 10 s in `start`; the process must be gone well before grace + margin.
    let deadline = Instant::now() + Duration::from_secs(20);
    while d.child.try_wait().expect("wait").is_none() {
        assert!(
            Instant::now() < deadline,
            "daemon did not stop within its grace period"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Whatever the batch had reached, the next run finishes it: every row exactly once.
    p.run_pipeline_ok();
    let ids = sorted_values(&read_dataset(&p.lake().join("behavior_events")), "user_id");
    let mut want: Vec<String> = (0..FILES)
        .flat_map(|f| (0..ROWS).map(move |r| format!("u{f}-{r}")))
        .collect();
    want.sort();
    assert_eq!(ids, want);
}
