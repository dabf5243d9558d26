//! `journal.kind: kafka` through the real daemon and a real broker (tansu, `BACKFLOW_TEST_KAFKA`):
//! every acknowledged hit is in the topic exactly once and reaches `ad_events` through the
//! daemon-wired Kafka source; with the broker away impressions get `503` + `Retry-After` while
//! clicks redirect into the fallback file, which is replayed to the topic once the broker (and
//! its topic) is back.

use std::collections::BTreeSet;
use std::process::{Child, Stdio};
use std::time::Duration;

use backflow::collect::hit::HitRecord;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::collect::{create, hit};
use crate::serve::{Daemon, free_port, http, start_with};
use crate::support::*;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

pub(crate) fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let results = runtime()
        .block_on(admin.create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().request_timeout(Some(Duration::from_secs(30))),
        ))
        .expect("create_topics");
    for result in results {
        result.expect("topic created");
    }
}

/// Every message of `topic` (partitions `0..partitions`) as (key, record), reading until
/// `expect` arrived or a bounded number of empty polls.
fn consume(brokers: &str, topic: &str, partitions: i32, expect: usize) -> Vec<(String, HitRecord)> {
    consume_raw(brokers, topic, partitions, expect)
        .into_iter()
        .map(|(key, payload)| {
            let record: HitRecord = serde_json::from_slice(&payload).expect("hit record");
            (String::from_utf8_lossy(&key).into_owned(), record)
        })
        .collect()
}

/// Every message of `topic` (partitions `0..partitions`) as (key, payload) bytes, partition by
/// partition, reading until `expect` arrived or a bounded number of empty polls.
pub(crate) fn consume_raw(
    brokers: &str,
    topic: &str,
    partitions: i32,
    expect: usize,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    consume_raw_with(config, topic, partitions, expect)
}

/// `consume_raw` with the client settings `config` (brokers, TLS, login); a fresh group.
pub(crate) fn consume_raw_with(
    mut config: ClientConfig,
    topic: &str,
    partitions: i32,
    expect: usize,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let consumer: BaseConsumer = config
        .set(
            "group.id",
            format!("reader-{}", uuid::Uuid::now_v7().simple()),
        )
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition_offset(topic, p, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&list).expect("assign");
    let mut got = Vec::new();
    let mut empty = 0;
    // Bounded by polls (each at most a second), not by time; a few more after `expect` would
    // show a duplicate.
    while empty < if got.len() >= expect { 3 } else { 30 } {
        match consumer.poll(Duration::from_secs(1)) {
            Some(Ok(m)) => got.push((
                m.key().unwrap_or_default().to_vec(),
                m.payload().unwrap_or_default().to_vec(),
            )),
            Some(Err(e)) => panic!("consume: {e}"),
            None => empty += 1,
        }
    }
    got
}

pub(crate) fn kafka_env(public: u16, brokers: &str, topic: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "BACKFLOW__PUBLIC__BASE_URL",
            format!("http://127.0.0.1:{public}"),
        ),
        ("BACKFLOW__JOURNAL__KIND", "kafka".to_string()),
        ("BACKFLOW__JOURNAL__KAFKA__BROKERS", brokers.to_string()),
        ("BACKFLOW__JOURNAL__KAFKA__TOPIC", topic.to_string()),
        (
            "BACKFLOW__JOURNAL__KAFKA__MESSAGE_TIMEOUT_MS",
            "2000".to_string(),
        ),
    ]
}

/// Waits (bounded) until `/readyz` names the Kafka journal state `state`.
pub(crate) fn wait_for_state(d: &Daemon, state: &str) {
    let want = format!("journal: kafka {state} ");
    let mut last = String::new();
    for _ in 0..150 {
        if let Ok(r) = http::blocking_get(&format!("{}/readyz", d.admin)) {
            assert_eq!(r.status, 200, "readiness reports, never gates: {}", r.body);
            if r.body.contains(&want) {
                return;
            }
            last = r.body;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("/readyz never reported `{want}`; last: {last:?}");
}

pub(crate) fn metrics(d: &Daemon) -> String {
    http::send(
        http::Method::GET,
        &format!("{}/metrics", d.admin),
        Some(&d.token),
    )
    .expect("metrics")
    .body
}

pub(crate) fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn acknowledged_hits_are_in_the_topic_once_and_land_in_ad_events() {
    let Some(brokers) = require_env("BACKFLOW_TEST_KAFKA") else {
        return;
    };
    let topic = format!("hits-{}", uuid::Uuid::now_v7().simple());
    create_topic(&brokers, &topic, 3);
    let p = Project::new();
    let (public, admin) = (free_port(), free_port());
    let env = kafka_env(public, &brokers, &topic);
    let a = create(&p, &env, "hw", "huawei", Some("https://example.com/l"));
    let b = create(&p, &env, "oe", "ocean_engine", None);
    let d = start_with(&p, (public, admin), &env);
    wait_for_state(&d, "ready");

    let urls = [
        &a["impression_url"],
        &a["click_url"],
        &b["impression_url"],
        &b["click_url"],
    ];
    let sent = 24;
    for i in 0..sent {
        let url = urls[i % urls.len()].as_str().expect("url");
        let r = hit(reqwest::Method::GET, &format!("{url}&n={i}"));
        assert!(matches!(r.status, 200 | 204 | 302), "{}", r.status);
    }
    let m = metrics(&d);
    assert_eq!(
        metric(&m, r#"backflow_collect_kafka_state{status="ready"}"#),
        Some(1.0),
        "{m}"
    );

    // In the topic: every answered hit once, keyed by its event id.
    let messages = consume(&brokers, &topic, 3, sent);
    let ids: BTreeSet<String> = messages.iter().map(|(_, r)| r.event_id.clone()).collect();
    assert_eq!((messages.len(), ids.len()), (sent, sent), "once each");
    assert!(messages.iter().all(|(k, r)| *k == r.event_id));
    let queries: BTreeSet<String> = messages
        .iter()
        .filter_map(|(_, r)| r.query.split("&n=").nth(1).map(str::to_string))
        .collect();
    assert_eq!(queries.len(), sent, "every request's own record");
    // Nothing went to the local journal.
    assert!(!p.path().join("data/fallback/kafka/pending.ndjson").exists());

    // ad_events reads the topic (daemon-wired Kafka source, format hit_record).
    let run_url = format!("{}/api/v1/pipelines/ad_events/runs", d.admin);
    let mut landed = Vec::new();
    for _ in 0..60 {
        let _ = http::send(http::Method::POST, &run_url, Some(&d.token));
        std::thread::sleep(Duration::from_secs(1));
        if p.lake().join("ad_events/_commits").exists() {
            landed = sorted_values(&read_dataset(&p.lake().join("ad_events")), "event_id");
            if landed.len() >= sent {
                break;
            }
        }
    }
    assert_eq!(
        landed.into_iter().collect::<BTreeSet<_>>(),
        ids,
        "the lake holds exactly the topic's hits"
    );
    assert_eq!(
        read_dataset(&p.lake().join("ad_events")).height(),
        sent,
        "no duplicates in the lake"
    );
}

/// A tansu broker of this test's own, on `port` (in-memory: a restart loses its topics).
fn start_tansu(port: u16) -> Option<Broker> {
    let bin = std::env::var("BACKFLOW_TEST_TANSU").ok().or_else(|| {
        std::env::var("HOME")
            .ok()
            .map(|h| format!("{h}/.cache/backflow/tools/bin/tansu"))
    })?;
    if !std::path::Path::new(&bin).exists() {
        eprintln!("skipping: no tansu binary at {bin} (set BACKFLOW_TEST_TANSU)");
        return None;
    }
    let url = format!("tcp://127.0.0.1:{port}");
    let broker = Broker(
        std::process::Command::new(bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
            ])
            .arg(&url)
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn tansu"),
    );
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(broker);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("tansu did not listen on {port}");
}

struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn without_its_broker_impressions_get_503_and_clicks_redirect_then_replay_to_the_topic() {
    if require_env("BACKFLOW_TEST_KAFKA").is_none() {
        return;
    }
    let port = free_port();
    let brokers = format!("127.0.0.1:{port}");
    let topic = "hits";
    let p = Project::new();
    let (public, admin) = (free_port(), free_port());
    let env = kafka_env(public, &brokers, topic);
    let a = create(&p, &env, "hw", "huawei", Some("https://example.com/l"));
    // Broker down at start: the daemon starts anyway and says so.
    let d = start_with(&p, (public, admin), &env);
    wait_for_state(&d, "broker_down");

    let imp = a["impression_url"].as_str().expect("url");
    let clk = a["click_url"].as_str().expect("url");
    let r = hit(reqwest::Method::GET, imp);
    assert_eq!(r.status, 503);
    let with_retry_after = {
        let rt = runtime();
        rt.block_on(async {
            reqwest::get(imp)
                .await
                .expect("send")
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
    };
    assert_eq!(with_retry_after.as_deref(), Some("1"));
    let clicks = 3;
    for i in 0..clicks {
        let r = hit(reqwest::Method::GET, &format!("{clk}&n={i}"));
        assert_eq!(
            (r.status, r.location.as_deref()),
            (302, Some("https://example.com/l")),
            "a click still lands"
        );
    }
    let pending = std::fs::read_to_string(p.path().join("data/fallback/kafka/pending.ndjson"))
        .expect("fallback file");
    let kept: BTreeSet<String> = pending
        .lines()
        .map(|l| {
            serde_json::from_str::<HitRecord>(l)
                .expect("hit record")
                .event_id
        })
        .collect();
    assert_eq!(kept.len(), clicks);
    let m = metrics(&d);
    assert_eq!(
        metric(&m, "backflow_collect_fallback_records_total"),
        Some(clicks as f64),
        "{m}"
    );
    assert_eq!(
        metric(&m, "backflow_collect_fallback_pending"),
        Some(clicks as f64)
    );
    assert_eq!(
        metric(
            &m,
            r#"backflow_collect_hits_total{endpoint="impression",outcome="journal_unavailable"}"#
        ),
        Some(2.0)
    );

    // The broker comes back without the topic: still nothing accepted, a clear state.
    let Some(broker) = start_tansu(port) else {
        return;
    };
    wait_for_state(&d, "topic_missing");
    assert_eq!(hit(reqwest::Method::GET, imp).status, 503);
    let r = hit(reqwest::Method::GET, &format!("{clk}&n=late"));
    assert_eq!(r.status, 302);

    // The topic appears: the fallback file is replayed, impressions are accepted again.
    create_topic(&brokers, topic, 1);
    wait_for_state(&d, "ready");
    let mut m = String::new();
    for _ in 0..100 {
        m = metrics(&d);
        if metric(&m, "backflow_collect_fallback_pending") == Some(0.0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        metric(&m, "backflow_collect_fallback_replayed_total"),
        Some(clicks as f64 + 1.0),
        "{m}"
    );
    assert_eq!(hit(reqwest::Method::GET, imp).status, 200);
    let messages = consume(&brokers, topic, 1, clicks + 2);
    let ids: Vec<String> = messages.iter().map(|(_, r)| r.event_id.clone()).collect();
    let unique: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!((ids.len(), unique.len()), (clicks + 2, clicks + 2));
    assert!(
        kept.is_subset(&unique),
        "every kept click reached the topic"
    );
    assert!(
        !p.path().join("data/fallback/kafka/pending.ndjson").exists(),
        "replayed files are removed"
    );
    let left: Vec<_> = std::fs::read_dir(p.path().join("data/fallback/kafka"))
        .expect("dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // The broker is lost mid-run: the same answers, the click kept again.
    drop(broker);
    assert_eq!(hit(reqwest::Method::GET, imp).status, 503);
    let r = hit(reqwest::Method::GET, &format!("{clk}&n=after"));
    assert_eq!(r.status, 302);
    let m = metrics(&d);
    assert_eq!(metric(&m, "backflow_collect_fallback_pending"), Some(1.0));
    assert!(
        std::fs::read_to_string(p.path().join("data/fallback/kafka/pending.ndjson"))
            .expect("fallback file")
            .contains("n=after")
    );
}

/// `kafka_env` with ad_events scheduled once a year: it runs only when the test asks.
fn quiet_kafka_project(
    public: u16,
    brokers: &str,
    topic: &str,
) -> (Project, Vec<(&'static str, String)>) {
    let p = Project::new();
    p.edit_file(
        "pipelines/ad_events.yaml",
        "cron: \"*/10 * * * * *\"",
        "cron: \"0 0 0 1 1 *\"",
    );
    (p, kafka_env(public, brokers, topic))
}

/// Waits (bounded) until the daemon process has exited (a failpoint aborted it).
fn wait_exit(d: &mut Daemon) {
    // The run first joins the consumer group (up to its 60 s join timeout under load).
    for _ in 0..1200 {
        if d.child.try_wait().expect("wait").is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the failpoint did not stop the daemon");
}

pub(crate) fn restart(
    p: &Project,
    (public, admin): (u16, u16),
    env: &[(&str, String)],
    token: &str,
) -> Daemon {
    let child = crate::collect::start_again(p, (public, admin), env);
    Daemon {
        child,
        admin: format!("http://127.0.0.1:{admin}"),
        public: format!("http://127.0.0.1:{public}"),
        token: token.to_string(),
    }
}

/// Runs ad_events until a run succeeds. After a crash the group still holds the dead member
/// until its session times out (45 s): a run may fail to get partitions (retryable) meanwhile,
/// so a bounded number of failed runs is tolerated.
fn drain_kafka(d: &Daemon) {
    for _ in 0..4 {
        let runs = format!("{}/api/v1/runs?pipeline=ad_events&limit=1", d.admin);
        let last = |d: &Daemon| -> serde_json::Value {
            let r = http::send(http::Method::GET, &runs, Some(&d.token)).expect("runs");
            serde_json::from_str::<serde_json::Value>(&r.body).expect("json")["runs"][0].clone()
        };
        let before = last(d)["id"].as_i64().unwrap_or(0);
        let _ = http::send(
            http::Method::POST,
            &format!("{}/api/v1/pipelines/ad_events/runs", d.admin),
            Some(&d.token),
        );
        for _ in 0..600 {
            let run = last(d);
            if run["id"].as_i64().unwrap_or(0) > before {
                match run["status"].as_str() {
                    Some("succeeded") => return,
                    Some("failed") => break,
                    _ => {}
                }
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    panic!("ad_events did not succeed in 4 runs");
}

#[test]
fn kafka_mode_meters_quota_and_counts_activities_once_across_a_crash_before_commit() {
    use crate::quota::{catalog, create, hit, landed, markers, quota_add, quota_show};
    if require_env("BACKFLOW_TEST_KAFKA").is_none() {
        return;
    }
    // A broker of its own: the daemon's group (`backflow-ad_events`) is shared with the other
    // daemons of the suite on the shared broker, whose killed members would hold up its
    // rebalances until their sessions time out.
    let port = free_port();
    let brokers = format!("127.0.0.1:{port}");
    let Some(_broker) = start_tansu(port) else {
        return;
    };
    let topic = "hits";
    // One partition: the batch order is the send order, as in the journal.
    create_topic(&brokers, topic, 1);
    let (public, admin) = (free_port(), free_port());
    let (p, env) = quiet_kafka_project(public, &brokers, topic);
    let a = create(&p, &env, "ws1", "a");
    let b = create(&p, &env, "ws2", "b");
    quota_add(&p, "ws1", 2);
    let mut crash_env = env.clone();
    crash_env.push(("BACKFLOW_FAILPOINT", "after_manifest".to_string()));
    let mut d = start_with(&p, (public, admin), &crash_env);
    wait_for_state(&d, "ready");
    // ws1: three clicks and an impression on a quota of 2; ws2 (unmetered): two clicks.
    for n in 0..3 {
        assert_eq!(hit(&a, "click", n), 302);
    }
    assert!(matches!(hit(&a, "impression", 3), 200 | 204));
    for n in 10..12 {
        assert_eq!(hit(&b, "click", n), 302);
    }
    // The batch (n=0, n=1 land; n=2 and the impression are staged) dies after its manifest.
    let _ = http::send(
        http::Method::POST,
        &format!("{}/api/v1/pipelines/ad_events/runs", d.admin),
        Some(&d.token),
    );
    wait_exit(&mut d);
    // A purchase while the batch is open must not change what its replay writes.
    quota_add(&p, "ws1", 5);
    assert_eq!(
        quota_show(&p, "ws1")["used"],
        0,
        "nothing counted before the commit"
    );

    let again = restart(&p, (public, admin), &env, &d.token);
    wait_for_state(&again, "ready");
    drain_kafka(&again);
    drain_kafka(&again);
    let lake = landed(&p.lake());
    let rows = &lake["ws1"];
    assert_eq!(
        markers(rows),
        [0, 1, 2, 3],
        "every ws1 hit exactly once: {rows:?}"
    );
    assert_eq!(rows[0].1, 1, "the replayed batch wrote n=0 and n=1");
    assert!(rows[2].1 > 1, "n=2 and n=3 were staged, then released");
    assert_eq!(markers(&lake["ws2"]), [10, 11]);
    let q = quota_show(&p, "ws1");
    assert_eq!(
        (&q["purchased"], &q["used"], &q["remaining"], &q["staged"]),
        (&7.into(), &3.into(), &4.into(), &0.into()),
        "{q}"
    );
    let c = catalog(&p);
    let (ida, idb) = (a["id"].as_i64().expect("id"), b["id"].as_i64().expect("id"));
    let t = &c.activity_totals("ws1").expect("totals")[&ida];
    assert_eq!((t.impressions, t.clicks, t.dedup_clicks), (1, 3, 1));
    let t = &c.activity_totals("ws2").expect("totals")[&idb];
    assert_eq!((t.impressions, t.clicks, t.dedup_clicks), (0, 2, 1));
    assert_eq!(
        quota_show(&p, "ws2")["remaining"],
        serde_json::Value::Null,
        "unmetered"
    );
    assert_eq!(
        c.activity(ida).expect("activity").status,
        backflow::catalog::ActivityStatus::PausedQuota,
        "the replayed batch staged records: paused"
    );
    let m = metrics(&again);
    assert!(
        m.contains(r#"backflow_pipeline_batches_replayed_total{pipeline="ad_events"} 1"#),
        "{m}"
    );
}

/// The `replaying-*.ndjson` files of the fallback dir.
fn replaying_files(p: &Project) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(p.path().join("data/fallback/kafka"))
        .expect("fallback dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|f| {
            f.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("replaying-"))
        })
        .collect()
}

#[test]
fn a_fallback_record_sent_again_after_a_crash_lands_once() {
    use crate::quota::{create, hit, landed, markers};
    if require_env("BACKFLOW_TEST_KAFKA").is_none() {
        return;
    }
    let port = free_port();
    let brokers = format!("127.0.0.1:{port}");
    let topic = "hits";
    let (public, admin) = (free_port(), free_port());
    let (p, env) = quiet_kafka_project(public, &brokers, topic);
    let a = create(&p, &env, "ws1", "a");
    // Broker down: the clicks go to the fallback file.
    let mut crash_env = env.clone();
    crash_env.push(("BACKFLOW_FAILPOINT", "kafka_fallback_replayed".to_string()));
    let mut d = start_with(&p, (public, admin), &crash_env);
    wait_for_state(&d, "broker_down");
    let clicks = 3;
    for n in 0..clicks {
        assert_eq!(hit(&a, "click", n), 302);
    }
    // The broker and topic appear: the file is replayed, every record acknowledged, and the
    // collector dies before it removes the file.
    let Some(_broker) = start_tansu(port) else {
        return;
    };
    create_topic(&brokers, topic, 1);
    wait_exit(&mut d);
    let files = replaying_files(&p);
    assert_eq!(files.len(), 1, "the replayed file is still there");
    // Land the first copies (the file set aside so this start does not send it yet).
    let aside = p.path().join("replaying.aside");
    std::fs::rename(&files[0], &aside).expect("set aside");
    let d2 = restart(&p, (public, admin), &env, &d.token);
    wait_for_state(&d2, "ready");
    drain_kafka(&d2);
    assert_eq!(markers(&landed(&p.lake())["ws1"]), [0, 1, 2]);
    drop(d2);
    // The next start finds the file again and sends every record a second time.
    std::fs::rename(&aside, &files[0]).expect("put back");
    let d3 = restart(&p, (public, admin), &env, &d.token);
    wait_for_state(&d3, "ready");
    let mut m = String::new();
    for _ in 0..100 {
        m = metrics(&d3);
        if metric(&m, "backflow_collect_fallback_pending") == Some(0.0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        metric(&m, "backflow_collect_fallback_replayed_total"),
        Some(clicks as f64),
        "{m}"
    );
    let messages = consume(&brokers, topic, 1, 2 * clicks as usize);
    assert_eq!(
        messages.len(),
        2 * clicks as usize,
        "each click is in the topic twice"
    );
    drain_kafka(&d3);
    let lake = landed(&p.lake());
    assert_eq!(
        markers(&lake["ws1"]),
        [0, 1, 2],
        "each click once in the lake: {lake:?}"
    );
    let m = metrics(&d3);
    assert_eq!(
        metric(
            &m,
            r#"backflow_pipeline_kafka_replay_duplicates_dropped_total{pipeline="ad_events"}"#
        ),
        Some(clicks as f64),
        "{m}"
    );
    // Their quota counters counted each click once too.
    let c = crate::quota::catalog(&p);
    let id = a["id"].as_i64().expect("id");
    assert_eq!(c.activity_totals("ws1").expect("totals")[&id].clicks, 3);
}
