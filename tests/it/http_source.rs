//! The `http` pipeline source against a real HTTP server on 127.0.0.1 (axum, started in the
//! test): every paging mode lands every record once, the next run fetches only what is new,
//! 429 / 500 / HTML / a looping cursor / the request budget each stop or retry as documented,
//! a crash is replayed from the stored records, and secrets are sent but never shown.

use std::collections::BTreeMap;
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, Response};
use serde_json::json;

use crate::support::*;

/// One request the fake API received.
#[derive(Debug, Clone)]
struct Seen {
    query: BTreeMap<String, String>,
    headers: BTreeMap<String, String>,
    at: Instant,
}

impl Seen {
    fn q(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }
}

/// The fake API's answer.
struct Reply {
    status: u16,
    content_type: &'static str,
    headers: Vec<(&'static str, String)>,
    body: String,
}

fn ok(body: serde_json::Value) -> Reply {
    Reply {
        status: 200,
        content_type: "application/json",
        headers: Vec::new(),
        body: body.to_string(),
    }
}

fn status(code: u16, body: &str) -> Reply {
    Reply {
        status: code,
        content_type: "text/plain",
        headers: Vec::new(),
        body: body.to_string(),
    }
}

type Handler = dyn Fn(&Seen, usize) -> Reply + Send + Sync;

/// A fake API on 127.0.0.1: `handler(request, how many times this exact query was asked)`.
struct Fake {
    url: String,
    log: Arc<Mutex<Vec<Seen>>>,
    handler: Arc<Mutex<Arc<Handler>>>,
    _rt: tokio::runtime::Runtime,
}

impl Fake {
    fn start(handler: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static) -> Fake {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let log: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let handler: Arc<Mutex<Arc<Handler>>> = Arc::new(Mutex::new(Arc::new(handler)));
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (log2, handler2) = (Arc::clone(&log), Arc::clone(&handler));
        let app = axum::Router::new().fallback(move |request: Request<Body>| {
            let (log, handler) = (Arc::clone(&log2), Arc::clone(&handler2));
            async move {
                let query: BTreeMap<String, String> = request
                    .uri()
                    .query()
                    .map(|q| {
                        url::form_urlencoded::parse(q.as_bytes())
                            .into_owned()
                            .collect()
                    })
                    .unwrap_or_default();
                let headers = request
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                    .collect();
                let seen = Seen {
                    query,
                    headers,
                    at: Instant::now(),
                };
                let count = {
                    let mut log = log.lock().expect("log");
                    log.push(seen.clone());
                    log.iter().filter(|s| s.query == seen.query).count()
                };
                let handler = Arc::clone(&handler.lock().expect("handler"));
                let reply = handler(&seen, count);
                let mut response = Response::builder()
                    .status(reply.status)
                    .header("content-type", reply.content_type);
                for (k, v) in reply.headers {
                    response = response.header(k, v);
                }
                response.body(Body::from(reply.body)).expect("response")
            }
        });
        rt.spawn(async move { axum::serve(listener, app).await });
        Fake {
            url,
            log,
            handler,
            _rt: rt,
        }
    }

    /// Replaces the API's behaviour (e.g. after a failure is fixed).
    fn set(&self, handler: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static) {
        *self.handler.lock().expect("handler") = Arc::new(handler);
    }

    fn requests(&self) -> Vec<Seen> {
        self.log.lock().expect("log").clone()
    }

    fn clear(&self) {
        self.log.lock().expect("log").clear();
    }
}

/// Record `n`: an id, a time (its partition) and a value.
fn record(n: i64, value: &str) -> serde_json::Value {
    json!({"id": n, "ts": format!("2026-03-0{}T{:02}:00:00Z", 1 + n % 3, n % 24), "v": value})
}

fn records(range: std::ops::Range<i64>, value: &str) -> Vec<serde_json::Value> {
    range.map(|n| record(n, value)).collect()
}

/// A shared list of records the API serves (tests append to it between runs).
type Data = Arc<Mutex<Vec<serde_json::Value>>>;

/// Page-number API over `data`: `?page=N&per_page=S`, pages from 1, `{"items": [...]}`.
fn page_api(data: &Data) -> impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static {
    let data = Arc::clone(data);
    move |seen, _| {
        let page: usize = seen.q("page").and_then(|p| p.parse().ok()).unwrap_or(1);
        let size: usize = seen
            .q("per_page")
            .and_then(|p| p.parse().ok())
            .unwrap_or(10);
        let data = data.lock().expect("data");
        let items: Vec<_> = data
            .iter()
            .skip((page - 1) * size)
            .take(size)
            .cloned()
            .collect();
        ok(json!({"items": items}))
    }
}

const PAGE_SOURCE: &str = "  paging:\n    page_number: {param: page, size_param: per_page, size: 10}\n  records: /items\n";

/// A project with the `api_events` pipeline: `source_keys` are the source's keys after `url`.
fn project(url: &str, source_keys: &str) -> Project {
    let p = Project::new();
    p.write(
        "pipelines/api_events.yaml",
        &format!(
            "name: api_events\nsource:\n  type: http\n  url: {url}/v1/events\n{source_keys}\
             transforms:\n  - cast: {{id: int64, ts: timestamp}}\n\
             sink:\n  type: parquet\n  dataset: api_events\n  partition_by: {{column: ts, granularity: day}}\n"
        ),
    );
    p
}

fn run(p: &Project, env: &[(&str, &str)]) -> Output {
    let mut cmd = p.command(&["run", "api_events", "--json"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("spawn")
}

fn run_ok(p: &Project) -> serde_json::Value {
    let out = run(p, &[]);
    assert!(
        out.status.success(),
        "run failed: {}\n{}",
        stdout(&out),
        stderr(&out)
    );
    serde_json::from_str(stdout(&out).lines().last().unwrap_or("")).expect("summary JSON")
}

fn run_fails(p: &Project) -> String {
    let out = run(p, &[]);
    assert!(
        !out.status.success(),
        "the run should fail: {}\n{}",
        stdout(&out),
        stderr(&out)
    );
    stderr(&out)
}

/// The ids in the lake, sorted (duplicates kept: a duplicate fails the comparison).
fn landed(p: &Project, dataset: &str) -> Vec<i64> {
    let df = read_dataset(&p.lake().join(dataset));
    if df.height() == 0 {
        return Vec::new();
    }
    let mut ids: Vec<i64> = df
        .column("id")
        .expect("id")
        .i64()
        .expect("int64")
        .into_no_null_iter()
        .collect();
    ids.sort_unstable();
    ids
}

fn pages_asked(fake: &Fake) -> Vec<String> {
    fake.requests()
        .iter()
        .map(|s| s.q("page").unwrap_or("-").to_string())
        .collect()
}

#[test]
fn page_number_pages_land_once_and_the_next_run_fetches_only_new_records() {
    let data: Data = Arc::new(Mutex::new(records(0..23, "a")));
    let fake = Fake::start(page_api(&data));
    let p = project(
        &fake.url,
        &format!("{PAGE_SOURCE}  max_pages_per_batch: 2\n"),
    );
    let first = run_ok(&p);
    assert_eq!(first["batches"], 2, "{first}");
    assert_eq!(landed(&p, "api_events"), (0..23).collect::<Vec<_>>());
    assert_eq!(pages_asked(&fake), ["1", "2", "3"]);

    // Nine more records: page 3 is asked again (its first 3 records are in the lake), then 4.
    data.lock().expect("data").extend(records(23..32, "a"));
    fake.clear();
    let second = run_ok(&p);
    assert_eq!(second["rows_out"], 9, "{second}");
    assert_eq!(pages_asked(&fake), ["3", "4"]);
    assert_eq!(landed(&p, "api_events"), (0..32).collect::<Vec<_>>());

    // Nothing new: one request, no batch.
    fake.clear();
    let third = run_ok(&p);
    assert_eq!(third["batches"], 0, "{third}");
    assert_eq!(pages_asked(&fake), ["4"]);
}

/// Cursor API: `?cursor=c{offset}`, 5 records a page, `has_more`, and a resume cursor on the
/// last page.
fn cursor_api(data: &Data) -> impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static {
    let data = Arc::clone(data);
    move |seen, _| {
        let offset: usize = seen
            .q("cursor")
            .and_then(|c| c.strip_prefix('c'))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let data = data.lock().expect("data");
        let items: Vec<_> = data.iter().skip(offset).take(5).cloned().collect();
        let next = offset + items.len();
        ok(
            json!({"data": items, "paging": {"next": format!("c{next}"), "has_more": next < data.len()}}),
        )
    }
}

#[test]
fn cursor_pages_land_once_and_the_next_run_resumes_from_the_last_cursor() {
    let data: Data = Arc::new(Mutex::new(records(0..12, "a")));
    let fake = Fake::start(cursor_api(&data));
    let source = "  paging:\n    cursor: {param: cursor, from: /paging/next, has_more: /paging/has_more}\n  records: /data\n";
    let p = project(&fake.url, source);
    run_ok(&p);
    assert_eq!(landed(&p, "api_events"), (0..12).collect::<Vec<_>>());
    let cursors: Vec<_> = fake
        .requests()
        .iter()
        .map(|s| s.q("cursor").unwrap_or("-").to_string())
        .collect();
    assert_eq!(cursors, ["-", "c5", "c10"]);

    data.lock().expect("data").extend(records(12..15, "a"));
    fake.clear();
    let second = run_ok(&p);
    assert_eq!(second["rows_out"], 3, "{second}");
    let cursors: Vec<_> = fake
        .requests()
        .iter()
        .map(|s| s.q("cursor").unwrap_or("-").to_string())
        .collect();
    assert_eq!(cursors, ["c12"]);
    assert_eq!(landed(&p, "api_events"), (0..15).collect::<Vec<_>>());
}

/// The media report API the shipped example talks to: a day per request, pages of `page_size`,
/// `{"code": 0, "data": {"list": [...]}}`, a bearer token.
fn report_api(
    days: BTreeMap<&'static str, usize>,
    token: &'static str,
) -> impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static {
    move |seen, _| {
        if seen.headers.get("authorization").map(String::as_str) != Some(&format!("Bearer {token}"))
        {
            return ok(json!({"code": 40100, "message": "invalid token"}));
        }
        let day = seen.q("start_date").unwrap_or("");
        assert_eq!(seen.q("end_date"), Some(day), "one day per request");
        assert_eq!(seen.q("level"), Some("campaign"));
        let page: usize = seen.q("page").and_then(|p| p.parse().ok()).unwrap_or(1);
        let size: usize = seen
            .q("page_size")
            .and_then(|p| p.parse().ok())
            .unwrap_or(100);
        let campaigns = days.get(day).copied().unwrap_or(0);
        let list: Vec<_> = (0..campaigns)
            .skip((page - 1) * size)
            .take(size)
            .map(|c| {
                json!({"stat_date": day, "campaign_id": format!("17900000000000000{c:02}"),
                       "campaign_name": format!("campaign {c}"), "impressions": 1000 + c,
                       "clicks": 10 + c, "cost": format!("{}.50", 100 + c)})
            })
            .collect();
        ok(json!({"code": 0, "message": "OK", "data": {"list": list, "page_info": {"page": page}}}))
    }
}

#[test]
fn the_shipped_media_report_pipeline_fetches_each_closed_day_once_and_duckdb_reads_it() {
    let token = "tok-report-7f3a";
    let days = BTreeMap::from([
        ("2026-03-01", 3),
        ("2026-03-02", 0),
        ("2026-03-03", 2),
        ("2026-03-04", 1),
    ]);
    let fake = Fake::start(report_api(days, token));
    let p = Project::new();
    let file = "pipelines/media_report_api.yaml";
    p.edit_file(
        file,
        "https://ads-api.example.com/open_api/v1/report/campaign/daily",
        &format!("{}/open_api/v1/report/campaign/daily", fake.url),
    );
    p.edit_file(
        file,
        "from: 2026-11-01",
        "from: 2026-03-01\n    until: 2026-03-04",
    );
    p.edit_file(file, "size: 100}", "size: 2}");
    let run_report = || {
        let out = p
            .command(&["run", "media_report_api", "--json"])
            .env("MEDIA_API_TOKEN", token)
            .output()
            .expect("spawn");
        assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
        serde_json::from_str::<serde_json::Value>(stdout(&out).lines().last().unwrap_or(""))
            .expect("summary")
    };
    let first = run_report();
    assert_eq!(first["rows_out"], 5, "{first}");
    let asked: Vec<_> = fake
        .requests()
        .iter()
        .map(|s| {
            format!(
                "{}/{}",
                s.q("start_date").unwrap_or(""),
                s.q("page").unwrap_or("")
            )
        })
        .collect();
    // Day 1: 3 campaigns in pages of 2; day 2 empty; day 3: a full page, then an empty one.
    assert_eq!(
        asked,
        [
            "2026-03-01/1",
            "2026-03-01/2",
            "2026-03-02/1",
            "2026-03-03/1",
            "2026-03-03/2"
        ]
    );

    // Every window is done: no request at all.
    fake.clear();
    let second = run_report();
    assert_eq!(second["batches"], 0, "{second}");
    assert!(fake.requests().is_empty());

    // One more day allowed: only it is fetched.
    p.edit_file(file, "until: 2026-03-04", "until: 2026-03-05");
    let third = run_report();
    assert_eq!(third["rows_out"], 1, "{third}");
    let days: Vec<_> = fake
        .requests()
        .iter()
        .map(|s| s.q("start_date").unwrap_or("").to_string())
        .collect();
    assert_eq!(days, ["2026-03-04"]);

    let Some((_, types, rows)) = duckdb(
        p.path(),
        "SELECT dt, count(*), count(DISTINCT (campaign_id, stat_date)), sum(clicks), sum(cost)
         FROM read_parquet('data/lake/media_daily_report/**/*.parquet', hive_partitioning = true)
         GROUP BY dt ORDER BY dt",
    ) else {
        return;
    };
    assert_eq!(types[0], "DATE");
    let got: Vec<String> = rows
        .iter()
        .map(|r| format!("{} {} {} {} {}", r[0], r[1], r[2], r[3], r[4]))
        .collect();
    assert_eq!(
        got,
        [
            "\"2026-03-01\" 3 3 33 304.5",
            "\"2026-03-03\" 2 2 21 202.0",
            "\"2026-03-04\" 1 1 10 100.5"
        ]
    );
}

#[test]
fn a_429_with_retry_after_is_waited_then_the_page_is_taken() {
    let data: Data = Arc::new(Mutex::new(records(0..15, "a")));
    let pages = page_api(&data);
    let fake = Fake::start(move |seen, count| {
        if seen.q("page") == Some("2") && count == 1 {
            return Reply {
                headers: vec![("retry-after", "1".to_string())],
                ..status(429, "slow down")
            };
        }
        pages(seen, count)
    });
    let p = project(&fake.url, PAGE_SOURCE);
    let summary = run_ok(&p);
    assert_eq!(summary["rows_out"], 15, "{summary}");
    assert_eq!(landed(&p, "api_events"), (0..15).collect::<Vec<_>>());
    let page2: Vec<Instant> = fake
        .requests()
        .iter()
        .filter(|s| s.q("page") == Some("2"))
        .map(|s| s.at)
        .collect();
    assert_eq!(page2.len(), 2);
    // Retry-After: 1 was honoured (a lower bound: the retry cannot come earlier).
    assert!(
        page2[1] - page2[0] >= Duration::from_millis(950),
        "{:?}",
        page2[1] - page2[0]
    );
}

#[test]
fn a_500_is_retried_then_the_run_fails_naming_the_page_and_nothing_of_it_lands() {
    let data: Data = Arc::new(Mutex::new(records(0..15, "a")));
    let pages = page_api(&data);
    let fake = Fake::start(move |seen, count| {
        if seen.q("page") == Some("2") {
            return status(500, "upstream exploded");
        }
        pages(seen, count)
    });
    let source = format!("{PAGE_SOURCE}  retries: {{max: 2, initial: 10ms, max_backoff: 50ms}}\n");
    let p = project(&fake.url, &source);
    let err = run_fails(&p);
    assert!(err.contains("page=2"), "{err}");
    assert!(err.contains("HTTP 500"), "{err}");
    assert!(err.contains("gave up after 3 attempt(s)"), "{err}");
    assert!(err.contains("upstream exploded"), "{err}");
    assert_eq!(pages_asked(&fake), ["1", "2", "2", "2"]);
    // Page 1 is committed; nothing of page 2.
    assert_eq!(landed(&p, "api_events"), (0..10).collect::<Vec<_>>());

    fake.set(page_api(&data));
    fake.clear();
    run_ok(&p);
    assert_eq!(pages_asked(&fake), ["2"]);
    assert_eq!(landed(&p, "api_events"), (0..15).collect::<Vec<_>>());
}

#[test]
fn an_html_answer_stops_the_run_with_the_url_content_type_and_first_bytes() {
    let data: Data = Arc::new(Mutex::new(records(0..15, "a")));
    let pages = page_api(&data);
    let fake = Fake::start(move |seen, count| {
        if seen.q("page") == Some("2") {
            return Reply {
                status: 200,
                content_type: "text/html; charset=utf-8",
                headers: Vec::new(),
                body: "<!DOCTYPE html><html><body>Maintenance</body></html>".into(),
            };
        }
        pages(seen, count)
    });
    let p = project(&fake.url, PAGE_SOURCE);
    let err = run_fails(&p);
    assert!(err.contains("/v1/events?page=2&per_page=10"), "{err}");
    assert!(err.contains("not JSON"), "{err}");
    assert!(err.contains("content-type text/html"), "{err}");
    assert!(
        err.contains("<!DOCTYPE html><html><body>Maintenance"),
        "{err}"
    );
    assert_eq!(landed(&p, "api_events"), (0..10).collect::<Vec<_>>());

    fake.set(page_api(&data));
    run_ok(&p);
    assert_eq!(landed(&p, "api_events"), (0..15).collect::<Vec<_>>());
}

#[test]
fn a_repeated_cursor_stops_the_run_instead_of_looping() {
    let fake = Fake::start(|seen, _| match seen.q("cursor") {
        None => ok(json!({"data": records(0..5, "a"), "next": "c1"})),
        // c1 answers its records but points at itself: an API stuck on one page.
        Some(_) => ok(json!({"data": records(5..10, "a"), "next": "c1"})),
    });
    let source = "  paging:\n    cursor: {param: cursor, from: /next}\n  records: /data\n";
    let p = project(&fake.url, source);
    let err = run_fails(&p);
    assert!(err.contains("cursor `c1` again"), "{err}");
    assert_eq!(fake.requests().len(), 2);
    // The first page is in the lake; the looping page is not taken.
    assert_eq!(landed(&p, "api_events"), (0..5).collect::<Vec<_>>());
    // The next run asks for c1 again and stops again: nothing twice.
    run_fails(&p);
    assert_eq!(landed(&p, "api_events"), (0..5).collect::<Vec<_>>());
}

#[test]
fn the_request_budget_stops_the_run_cleanly_and_the_next_run_continues() {
    let data: Data = Arc::new(Mutex::new(records(0..20, "a")));
    let fake = Fake::start(page_api(&data));
    let source = "  paging:\n    page_number: {param: page, size_param: per_page, size: 4}\n  records: /items\n  max_requests_per_run: 2\n  max_pages_per_batch: 1\n";
    let p = project(&fake.url, source);
    let first = run_ok(&p);
    assert_eq!(
        (first["status"].as_str(), first["rows_out"].as_u64()),
        (Some("succeeded"), Some(8)),
        "{first}"
    );
    assert_eq!(landed(&p, "api_events"), (0..8).collect::<Vec<_>>());
    run_ok(&p);
    assert_eq!(landed(&p, "api_events"), (0..16).collect::<Vec<_>>());
    run_ok(&p);
    assert_eq!(landed(&p, "api_events"), (0..20).collect::<Vec<_>>());
    assert_eq!(pages_asked(&fake), ["1", "2", "3", "4", "5", "6"]);
}

#[test]
fn a_crash_is_replayed_from_the_stored_records_never_refetched_into_the_lake() {
    for point in [
        "after_intent",
        "after_first_put",
        "after_manifest",
        "after_commit",
    ] {
        let data: Data = Arc::new(Mutex::new(records(0..15, "first")));
        let fake = Fake::start(page_api(&data));
        let p = project(
            &fake.url,
            &format!("{PAGE_SOURCE}  max_pages_per_batch: 1\n"),
        );
        let crashed = run(&p, &[("BACKFLOW_FAILPOINT", point)]);
        assert!(!crashed.status.success(), "{point}: no crash");
        assert!(stderr(&crashed).contains(point), "{}", stderr(&crashed));

        // The API now answers page 1 differently: the lake must keep what batch 1 fetched.
        {
            let mut data = data.lock().expect("data");
            for (n, item) in data.iter_mut().enumerate().take(10) {
                *item = record(n as i64, "changed");
            }
        }
        fake.clear();
        let summary = run_ok(&p);
        let replayed = u64::from(point != "after_commit");
        assert_eq!(summary["replayed_batches"], replayed, "{point}: {summary}");
        assert_eq!(
            landed(&p, "api_events"),
            (0..15).collect::<Vec<_>>(),
            "{point}: {summary}"
        );
        let lake = read_dataset(&p.lake().join("api_events"));
        let values = sorted_values(&lake, "v");
        assert_eq!(values, vec!["first"; 15], "{point}");
        // Page 1 was never asked again.
        assert_eq!(pages_asked(&fake), ["2"], "{point}");
    }
}

#[test]
fn secrets_are_sent_from_the_environment_and_never_shown() {
    let secret = "s3cr3t-9b1f0c";
    for (auth, check) in [
        ("bearer: {secret: API_TOKEN}", "bearer"),
        ("header: {name: X-Api-Key, secret: API_TOKEN}", "header"),
        ("query: {name: access_token, secret: API_TOKEN}", "query"),
    ] {
        let data: Data = Arc::new(Mutex::new(records(0..3, "a")));
        let pages = page_api(&data);
        let fake = Fake::start(move |seen, count| {
            let sent = match check {
                "bearer" => seen.headers.get("authorization").cloned(),
                "header" => seen.headers.get("x-api-key").map(|v| format!("Bearer {v}")),
                _ => seen.q("access_token").map(|v| format!("Bearer {v}")),
            };
            if sent.as_deref() != Some("Bearer s3cr3t-9b1f0c") {
                return status(401, "who are you");
            }
            pages(seen, count)
        });
        let source = format!("  auth:\n    {auth}\n{PAGE_SOURCE}");
        let p = project(&fake.url, &source);

        // Without the secret the run fails before any request, naming the variable.
        let out = run(&p, &[]);
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("secret `API_TOKEN` is not set"),
            "{}",
            stderr(&out)
        );
        assert!(fake.requests().is_empty());

        // A wrong secret: a 401 whose message shows the URL without it.
        let out = run(&p, &[("API_TOKEN", "wrong-0000"), ("RUST_LOG", "debug")]);
        assert!(!out.status.success());
        let shown = format!("{}{}", stdout(&out), stderr(&out));
        assert!(shown.contains("HTTP 401"), "{check}: {shown}");
        assert!(
            !shown.contains("wrong-0000"),
            "{check}: secret shown: {shown}"
        );

        // The secret from a file (`API_TOKEN_FILE`), debug logging on.
        let file = p.path().join("token.txt");
        std::fs::write(&file, format!("{secret}\n")).expect("write");
        let out = run(
            &p,
            &[
                ("API_TOKEN_FILE", file.to_str().expect("utf-8")),
                ("RUST_LOG", "debug"),
            ],
        );
        assert!(out.status.success(), "{check}: {}", stderr(&out));
        assert_eq!(landed(&p, "api_events"), [0, 1, 2]);
        let shown = format!("{}{}", stdout(&out), stderr(&out));
        assert!(
            !shown.contains(secret),
            "{check}: secret in the output: {shown}"
        );
        if check == "query" {
            assert!(shown.contains("access_token=***"), "{shown}");
        }
        // Nor in the catalog or the lake.
        for path in walk(p.path().join("data")) {
            let bytes = std::fs::read(&path).expect("read");
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{check}: secret stored in {}",
                path.display()
            );
        }
    }
}

fn walk(dir: std::path::PathBuf) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// The metric line `name{pipeline="metered"[,kind="…"]} value`, as a number (0 if absent).
fn metric(text: &str, name: &str, kind: Option<&str>) -> u64 {
    let labels = match kind {
        Some(kind) => format!("{{pipeline=\"metered\",kind=\"{kind}\"}}"),
        None => "{pipeline=\"metered\"}".to_string(),
    };
    let prefix = format!("backflow_{name}_total{labels} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A runtime in this process (memory lake, in-memory catalog), to read its metrics.
pub(crate) fn in_process(lake: &str) -> backflow::pipeline::Runtime {
    let stores = backflow::storage::StoreRegistry::default();
    let lake = stores.open(&lake.parse().expect("url")).expect("lake");
    backflow::pipeline::Runtime {
        catalog: Arc::new(backflow::catalog::Catalog::open_in_memory().expect("catalog")),
        stores,
        lake,
        tz: chrono_tz::Asia::Shanghai,
        metrics: Arc::new(backflow::telemetry::Metrics::new()),
        journal: std::sync::OnceLock::new(),
        registry: std::sync::OnceLock::new(),
        enricher: std::sync::OnceLock::new(),
        lock_dir: None,
        quota: Default::default(),
    }
}

/// Loads `yaml` (as file `file`) and runs it in this process on the lake `lake`, expecting the
/// run to fail: the error and the runtime (its metrics and catalog).
pub(crate) fn run_failing(
    file: &str,
    yaml: &str,
    lake: &str,
) -> (
    backflow::pipeline::PipelineError,
    backflow::pipeline::Runtime,
) {
    let opts = backflow::config::LoadOptions::default();
    let pipeline = backflow::config::load_pipeline_str(std::path::Path::new(file), yaml, &opts)
        .expect("pipeline");
    let runtime = in_process(lake);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cancel = tokio_util::sync::CancellationToken::new();
    let err = rt
        .block_on(runtime.run(
            &pipeline,
            &backflow::pipeline::RunOptions::default(),
            &cancel,
        ))
        .expect_err("the run fails");
    (err, runtime)
}

fn in_process_pipeline(url: &str, source_keys: &str) -> backflow::config::model::Pipeline {
    let text = format!(
        "name: metered\nsource:\n  type: http\n  url: {url}/v1/events\n{source_keys}\
         transforms:\n  - cast: {{id: int64, ts: timestamp}}\n\
         sink:\n  type: parquet\n  dataset: metered\n  partition_by: {{column: ts, granularity: day}}\n"
    );
    let opts = backflow::config::LoadOptions::default();
    backflow::config::load_pipeline_str(std::path::Path::new("m.yaml"), &text, &opts)
        .expect("pipeline")
}

#[test]
fn shutdown_during_a_retry_wait_commits_what_was_fetched_and_stops() {
    use backflow::pipeline::RunOptions;
    let data: Data = Arc::new(Mutex::new(records(0..15, "a")));
    let pages = page_api(&data);
    let fake = Fake::start(move |seen, count| {
        if seen.q("page") == Some("2") {
            return Reply {
                headers: vec![("retry-after", "30".to_string())],
                ..status(503, "maintenance")
            };
        }
        pages(seen, count)
    });
    let pipeline = in_process_pipeline(&fake.url, PAGE_SOURCE);
    let runtime = in_process("memory://cancel-lake");
    let cancel = tokio_util::sync::CancellationToken::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let summary = rt.block_on(async {
        let canceller = async {
            // Bounded: at most 2000 polls of 10 ms for the 503 to arrive.
            for _ in 0..2000 {
                if fake.requests().iter().any(|s| s.q("page") == Some("2")) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            cancel.cancel();
        };
        let opts = RunOptions::default();
        let (summary, ()) = tokio::join!(runtime.run(&pipeline, &opts, &cancel), canceller);
        summary
    });
    let summary = summary.expect("run");
    assert_eq!(
        (summary.status.as_str(), summary.rows_out),
        ("cancelled", 10),
        "{summary:?}"
    );
    assert_eq!(pages_asked(&fake), ["1", "2"]);
}

#[test]
fn metrics_count_statuses_retries_pages_the_budget_and_bad_answers() {
    use backflow::pipeline::{RunOptions, Runtime};

    let data: Data = Arc::new(Mutex::new(records(0..25, "a")));
    let pages = page_api(&data);
    let fake = Fake::start(move |seen, count| {
        if seen.q("page") == Some("2") && count == 1 {
            return Reply {
                headers: vec![("retry-after", "0".to_string())],
                ..status(429, "slow down")
            };
        }
        pages(seen, count)
    });
    let source = format!("{PAGE_SOURCE}  max_requests_per_run: 3\n");
    let pipeline = in_process_pipeline(&fake.url, &source);
    let runtime = in_process("memory://metered-lake");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cancel = tokio_util::sync::CancellationToken::new();
    let run =
        |runtime: &Runtime| rt.block_on(runtime.run(&pipeline, &RunOptions::default(), &cancel));

    // Page 1, page 2 refused once (429), page 2 again: the budget of 3 is spent.
    let summary = run(&runtime).expect("run");
    assert_eq!(
        (summary.status.as_str(), summary.rows_out),
        ("succeeded", 20)
    );
    let m = runtime.metrics.encode();
    assert_eq!(metric(&m, "http_source_requests", Some("200")), 2, "{m}");
    assert_eq!(metric(&m, "http_source_requests", Some("429")), 1, "{m}");
    assert_eq!(metric(&m, "http_source_retries", None), 1, "{m}");
    assert_eq!(metric(&m, "http_source_pages", None), 2, "{m}");
    assert_eq!(metric(&m, "http_source_budget_exhausted", None), 1, "{m}");

    // An HTML page: the run fails and the bad answer is counted by reason.
    fake.set(|_, _| Reply {
        status: 200,
        content_type: "text/html",
        headers: Vec::new(),
        body: "<html>login</html>".into(),
    });
    let err = run(&runtime).expect_err("an HTML page fails the run");
    assert!(!err.retryable(), "{err}");
    let m = runtime.metrics.encode();
    assert_eq!(
        metric(&m, "http_source_bad_responses", Some("not_json")),
        1,
        "{m}"
    );
}
