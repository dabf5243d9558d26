//! Third-party forwarding end to end: the real daemon, activities with Miaozhen- and
//! AdMaster-shaped URLs pointing at a real HTTP server on 127.0.0.1 standing in for the third
//! party; macros filled, retries while it is down or failing, jobs surviving `kill -9`, the
//! give-up horizon; chained links; landing-URL macros without open redirects.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};

use crate::serve::{Daemon, free_port, start_with};
use crate::support::*;

const IDFA: &str = "6D92078A-8246-4BA4-AE5B-76104861E7DC";
const USER_AGENT: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) test";

/// One request the third party received.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    /// Path and query exactly as requested.
    pub(crate) target: String,
    user_agent: Option<String>,
    /// What it was answered.
    status: u16,
}

#[derive(Clone)]
struct ThirdPartyState {
    seen: Arc<Mutex<Vec<Seen>>>,
    status: Arc<AtomicU16>,
}

/// A stand-in Miaozhen / AdMaster server: records every request, answers a settable status.
pub(crate) struct ThirdParty {
    state: ThirdPartyState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

async fn record(State(state): State<ThirdPartyState>, uri: Uri, headers: HeaderMap) -> StatusCode {
    let status = state.status.load(Ordering::SeqCst);
    state.seen.lock().expect("lock").push(Seen {
        target: uri
            .path_and_query()
            .map(|pq| pq.as_str().to_string())
            .unwrap_or_default(),
        user_agent: headers
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        status,
    });
    StatusCode::from_u16(status).expect("status")
}

impl ThirdParty {
    pub(crate) fn start(port: u16, status: u16) -> ThirdParty {
        let state = ThirdPartyState {
            seen: Arc::default(),
            status: Arc::new(AtomicU16::new(status)),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, is_ready) = std::sync::mpsc::channel();
        let app = axum::Router::new()
            .fallback(record)
            .with_state(state.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("rt");
            rt.block_on(async move {
                let listener =
                    tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
                        .await
                        .expect("bind third party");
                ready.send(()).expect("ready");
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.await;
                    })
                    .await
                    .expect("serve");
            });
        });
        is_ready.recv().expect("third party up");
        ThirdParty {
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn set_status(&self, status: u16) {
        self.state.status.store(status, Ordering::SeqCst);
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().expect("lock").clone()
    }

    pub(crate) fn accepted(&self) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.status < 400).collect()
    }
}

impl Drop for ThirdParty {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub(crate) fn project() -> Project {
    let p = Project::new();
    // No behavior pipeline runs during these tests.
    p.edit_pipeline(
        "schedule:\n  cron: \"* * * * *\"\n  time_zone: Asia/Shanghai\n",
        "",
    );
    p
}

pub(crate) fn create(p: &Project, env: &[(&str, String)], args: &[&str]) -> serde_json::Value {
    let mut all = vec![
        "activity",
        "create",
        "--workspace",
        "ws1",
        "--group",
        "品牌",
        "--format",
        "开屏",
        "--json",
    ];
    all.extend_from_slice(args);
    let out = p
        .command(&all)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("spawn");
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_str(stdout(&out).trim()).expect("activity json")
}

/// Our link as the media's SDK fills it: os, IDFA, IP and time known, the rest unreplaced.
pub(crate) fn filled(link: &str, ts_ms: i64) -> String {
    link.replace("__OS__", "1")
        .replace("__IDFA__", IDFA)
        .replace("__IP__", "203.0.113.9")
        .replace("__TS__", &ts_ms.to_string())
}

/// A device's GET of one of our links; returns (status, location).
pub(crate) fn hit(url: &str) -> (u16, Option<String>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let resp = client
            .get(url)
            .header("user-agent", USER_AGENT)
            .send()
            .await
            .expect("send");
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        (resp.status().as_u16(), location)
    })
}

/// The sum of a metric's samples (every label set) from the daemon's `/metrics`.
pub(crate) fn metric(admin: &str, token: &str, name: &str) -> f64 {
    let reply = crate::serve::http::send(
        reqwest::Method::GET,
        &format!("{admin}/metrics"),
        Some(token),
    )
    .expect("metrics");
    reply
        .body
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Polls `done` every 100 ms for at most 60 s.
pub(crate) fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(crate) fn env_for(public: u16, extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    let mut env = vec![
        (
            "BACKFLOW__PUBLIC__BASE_URL",
            format!("http://127.0.0.1:{public}"),
        ),
        ("BACKFLOW__FORWARD__MAX_BACKOFF_SECONDS", "1".to_string()),
        ("BACKFLOW__FORWARD__TIMEOUT_SECONDS", "2".to_string()),
    ];
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    env
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[test]
fn hits_are_forwarded_with_macros_filled_and_retried_until_the_third_party_is_back() {
    let p = project();
    let (public, admin, third) = (free_port(), free_port(), free_port());
    let env = env_for(public, &[]);
    let mz = format!(
        "http://127.0.0.1:{third}/mz/x/k=2185278&p=7jFd3&mo=__OS__&ns=__IP__&m5=__IDFA__&m2=__IMEI__&ts=__TS__&o="
    );
    let am = format!(
        "http://127.0.0.1:{third}/am/c/a1,b2,0a__OS__,z__IDFA__,f__IP__,t__TS__,0c__IMEI__,h"
    );
    let a = create(
        &p,
        &env,
        &[
            "--name",
            "bili-1",
            "--channel",
            "bilibili",
            "--third-party-impression",
            &mz,
            "--third-party-click",
            &am,
        ],
    );
    let d: Daemon = start_with(&p, (public, admin), &env);
    let ts = now_ms();
    // The third party is down (nothing listens on its port): our answers do not wait for it.
    assert_eq!(
        hit(&filled(a["impression_url"].as_str().expect("url"), ts)).0,
        200
    );
    assert_eq!(
        hit(&filled(a["click_url"].as_str().expect("url"), ts)).0,
        204
    );
    wait_for("failed attempts while the third party is down", || {
        metric(&d.admin, &d.token, "backflow_forward_failed_attempts_total") >= 4.0
    });
    assert_eq!(
        metric(&d.admin, &d.token, "backflow_forward_enqueued_total"),
        2.0
    );

    // It comes back answering 500: still retried.
    let server = ThirdParty::start(third, 500);
    wait_for("two 500 answers", || server.seen().len() >= 2);
    server.set_status(200);
    wait_for("both hits forwarded", || server.accepted().len() >= 2);
    wait_for("an empty queue", || {
        metric(&d.admin, &d.token, "backflow_forward_sent_total") == 2.0
            && metric(&d.admin, &d.token, "backflow_forward_queue_depth") == 0.0
    });

    let accepted = server.accepted();
    let targets: Vec<&str> = accepted.iter().map(|s| s.target.as_str()).collect();
    // Miaozhen: unknown IMEI emptied; AdMaster: left unreplaced (its convention), seconds.
    let want_mz = format!("/mz/x/k=2185278&p=7jFd3&mo=1&ns=203.0.113.9&m5={IDFA}&m2=&ts={ts}&o=");
    let want_am = format!(
        "/am/c/a1,b2,0a1,z{IDFA},f203.0.113.9,t{},0c__IMEI__,h",
        ts / 1000
    );
    assert!(targets.contains(&want_mz.as_str()), "{targets:#?}");
    assert!(targets.contains(&want_am.as_str()), "{targets:#?}");
    assert!(
        accepted
            .iter()
            .all(|s| s.user_agent.as_deref() == Some(USER_AGENT)),
        "the user's agent is passed through: {accepted:#?}"
    );
    assert!(metric(&d.admin, &d.token, "backflow_forward_given_up_total") == 0.0);
    let body = crate::serve::http::send(
        reqwest::Method::GET,
        &format!("{}/metrics", d.admin),
        Some(&d.token),
    )
    .expect("metrics")
    .body;
    assert!(
        body.contains(r#"backflow_forward_sent_total{destination="127.0.0.1"} 2"#),
        "{body}"
    );
}

#[test]
fn queued_jobs_survive_kill_9_and_are_sent_after_restart() {
    let p = project();
    let (public, admin, third) = (free_port(), free_port(), free_port());
    let env = env_for(public, &[]);
    let mz = format!("http://127.0.0.1:{third}/mz/r/k=1&p=2&m5=__IDFA__&o=");
    let a = create(
        &p,
        &env,
        &[
            "--name",
            "bili-2",
            "--channel",
            "bilibili",
            "--third-party-click",
            &mz,
        ],
    );
    let mut d = start_with(&p, (public, admin), &env);
    let ts = now_ms();
    for _ in 0..3 {
        assert_eq!(
            hit(&filled(a["click_url"].as_str().expect("url"), ts)).0,
            204
        );
    }
    wait_for("the jobs queued and failing", || {
        metric(&d.admin, &d.token, "backflow_forward_enqueued_total") == 3.0
            && metric(&d.admin, &d.token, "backflow_forward_failed_attempts_total") >= 3.0
    });
    d.child.kill().expect("kill -9");
    d.child.wait().expect("reap");

    let server = ThirdParty::start(third, 200);
    let mut again = crate::collect::start_again(&p, (public, admin), &env);
    wait_for("the queued jobs sent after the restart", || {
        server.accepted().len() >= 3
    });
    let want = format!("/mz/r/k=1&p=2&m5={IDFA}&o=");
    assert!(
        server.accepted().iter().all(|s| s.target == want),
        "{:#?}",
        server.accepted()
    );
    wait_for("an empty queue", || {
        metric(&d.admin, &d.token, "backflow_forward_queue_depth") == 0.0
            && metric(&d.admin, &d.token, "backflow_forward_sent_total") >= 3.0
    });
    // The restarted reader went on where the queued jobs ended: nothing was queued twice.
    assert_eq!(
        metric(&d.admin, &d.token, "backflow_forward_enqueued_total"),
        0.0
    );
    let _ = again.kill();
    let _ = again.wait();
}

#[test]
fn a_job_still_failing_past_the_give_up_horizon_is_given_up() {
    let p = project();
    let (public, admin, third) = (free_port(), free_port(), free_port());
    let env = env_for(public, &[("BACKFLOW__FORWARD__GIVE_UP_SECONDS", "2")]);
    let server = ThirdParty::start(third, 503);
    let a = create(
        &p,
        &env,
        &[
            "--name",
            "bili-3",
            "--channel",
            "bilibili",
            "--third-party-impression",
            &format!("http://127.0.0.1:{third}/mz/x/k=1&o="),
        ],
    );
    let d = start_with(&p, (public, admin), &env);
    assert_eq!(
        hit(&filled(
            a["impression_url"].as_str().expect("url"),
            now_ms()
        ))
        .0,
        200
    );
    wait_for("the job given up", || {
        metric(&d.admin, &d.token, "backflow_forward_given_up_total") == 1.0
    });
    wait_for("an empty queue", || {
        metric(&d.admin, &d.token, "backflow_forward_queue_depth") == 0.0
    });
    // How many attempts fit in the horizon depends on the machine (the first decode compiles
    // the user-agent rules); retries themselves are tested above. At least one was made.
    assert!(!server.seen().is_empty(), "attempted before giving up");
    assert_eq!(
        metric(&d.admin, &d.token, "backflow_forward_sent_total"),
        0.0
    );
}

#[test]
fn chained_media_get_the_third_partys_link_wrapping_ours_and_their_clicks_are_not_forwarded() {
    let p = project();
    let (public, admin, third) = (free_port(), free_port(), free_port());
    let env = env_for(public, &[]);
    let server = ThirdParty::start(third, 200);
    let mz_click = format!("http://127.0.0.1:{third}/mz/r/k=9&p=1&o=https://brand.example/old");
    let mz_imp = format!("http://127.0.0.1:{third}/mz/x/k=9&p=1&mo=__OS__&o=");
    let a = create(
        &p,
        &env,
        &[
            "--name",
            "iqiyi-1",
            "--channel",
            "iqiyi",
            "--landing",
            "https://brand.example/landing",
            "--third-party-click",
            &mz_click,
            "--third-party-impression",
            &mz_imp,
        ],
    );
    let click_url = a["click_url"].as_str().expect("click_url");
    assert_eq!(
        a["chained_click_url"].as_str(),
        Some(format!("http://127.0.0.1:{third}/mz/r/k=9&p=1&o={click_url}").as_str()),
        "{a}"
    );
    // A media that is not chained prints no chained link.
    let b = create(
        &p,
        &env,
        &[
            "--name",
            "bili-4",
            "--channel",
            "bilibili",
            "--third-party-click",
            &mz_click,
        ],
    );
    assert!(b.get("chained_click_url").is_none(), "{b}");

    let d = start_with(&p, (public, admin), &env);
    let ts = now_ms();
    // The click arrives through the third party's redirect, then the impression.
    let (status, location) = hit(&filled(click_url, ts));
    assert_eq!(
        (status, location.as_deref()),
        (302, Some("https://brand.example/landing"))
    );
    assert_eq!(
        hit(&filled(a["impression_url"].as_str().expect("url"), ts)).0,
        200
    );
    wait_for("the impression forwarded", || !server.accepted().is_empty());
    // Jobs are made in journal order: the click (first) made none.
    assert_eq!(
        metric(&d.admin, &d.token, "backflow_forward_enqueued_total"),
        1.0
    );
    assert_eq!(server.accepted()[0].target, "/mz/x/k=9&p=1&mo=1&o=");
}

#[test]
fn landing_url_macros_are_filled_and_a_click_never_leaves_its_landing_page() {
    let p = project();
    let (public, admin) = (free_port(), free_port());
    let env = env_for(public, &[]);
    let a = create(
        &p,
        &env,
        &[
            "--name",
            "bili-5",
            "--channel",
            "bilibili",
            "--landing",
            "https://shop.example/p/__IDFA__?idfa=__IDFA__&os=__OS__&oaid=__OAID__&cb=__CALLBACK__#ip=__IP__",
        ],
    );
    let plain = create(
        &p,
        &env,
        &[
            "--name",
            "bili-6",
            "--channel",
            "bilibili",
            "--landing",
            "https://shop.example/plain?a=1",
        ],
    );
    let _d = start_with(&p, (public, admin), &env);
    let click = a["click_url"].as_str().expect("click_url");

    let (status, location) = hit(&filled(click, now_ms()));
    assert_eq!(status, 302);
    // A macro in the path stays literal; the query and fragment are filled; unknown → empty.
    assert_eq!(
        location.as_deref(),
        Some(
            format!("https://shop.example/p/__IDFA__?idfa={IDFA}&os=1&oaid=&cb=#ip=203.0.113.9")
                .as_str()
        )
    );

    for attack in [
        "https%3A%2F%2Fevil.example%2F",
        "%0d%0aLocation:%20https://evil.example/",
        "x%26next%3Dhttps://evil.example%23",
        "//evil.example",
    ] {
        let url = click
            .replace("__IDFA__", attack)
            .replace("__OS__", attack)
            .replace("__IP__", "203.0.113.9");
        let (status, location) = hit(&url);
        assert_eq!(status, 302, "{attack}");
        let location = location.expect("location");
        let parsed = url::Url::parse(&location).expect("absolute URL");
        assert_eq!(
            (parsed.scheme(), parsed.host_str(), parsed.path()),
            ("https", Some("shop.example"), "/p/__IDFA__"),
            "{attack}: {location}"
        );
        assert_eq!(
            parsed.query_pairs().count(),
            4,
            "{attack}: a value stays inside its parameter: {location}"
        );
    }

    let (status, location) = hit(plain["click_url"].as_str().expect("url"));
    assert_eq!(
        (status, location.as_deref()),
        (302, Some("https://shop.example/plain?a=1"))
    );
}
