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

fn create_topic(brokers: &str, topic: &str, partitions: i32) {
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
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
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
            Some(Ok(m)) => {
                let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
                let record: HitRecord =
                    serde_json::from_slice(m.payload().unwrap_or_default()).expect("hit record");
                got.push((key, record));
            }
            Some(Err(e)) => panic!("consume: {e}"),
            None => empty += 1,
        }
    }
    got
}

fn kafka_env(public: u16, brokers: &str, topic: &str) -> Vec<(&'static str, String)> {
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
fn wait_for_state(d: &Daemon, state: &str) {
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

fn metrics(d: &Daemon) -> String {
    http::send(
        http::Method::GET,
        &format!("{}/metrics", d.admin),
        Some(&d.token),
    )
    .expect("metrics")
    .body
}

fn metric(body: &str, name: &str) -> Option<f64> {
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
