//! The Kafka sink against a real broker (tansu, `BACKFLOW_TEST_KAFKA`; and brokers of the tests'
//! own, `BACKFLOW_TEST_TANSU`, for a broker down at start and lost mid-batch): NDJSON files
//! published once per row with the key and the dedup headers, what the topic cannot take in
//! quarantine, nothing committed while the broker is away, replays recognizable by their headers.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::util::Timeout;

use crate::kafka::{broker, create_topic, unique};
use crate::kafka_scale::Tansu;
use crate::support::*;

/// One message as consumed.
#[derive(Debug, Clone)]
struct Consumed {
    partition: i32,
    key: Option<String>,
    payload: String,
    headers: BTreeMap<String, String>,
}

impl Consumed {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.payload).expect("payload is JSON")
    }

    /// The dedup pair: (`backflow-batch`, `backflow-row`).
    fn dedup(&self) -> (String, u64) {
        (
            self.headers["backflow-batch"].clone(),
            self.headers["backflow-row"].parse().expect("row number"),
        )
    }
}

/// Every message of `topic`, read from the beginning of each partition to its end (no group).
fn consume_all(brokers: &str, topic: &str) -> Vec<Consumed> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        // librdkafka wants a group even for assigned partitions; nothing is committed to it.
        .set("group.id", unique("sink-reader"))
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Timeout::After(Duration::from_secs(30)))
        .expect("metadata");
    let partitions: Vec<i32> = metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| p.id())
        .collect();
    assert!(!partitions.is_empty(), "topic {topic} has no partitions");
    let mut list = rdkafka::TopicPartitionList::new();
    for p in &partitions {
        list.add_partition_offset(topic, *p, rdkafka::Offset::Beginning)
            .expect("offset");
    }
    consumer.assign(&list).expect("assign");
    let mut at_end = BTreeSet::new();
    let mut out = Vec::new();
    // Bounded by polls, not time: each waits at most a second.
    for _ in 0..120 {
        if at_end.len() == partitions.len() {
            return out;
        }
        match consumer.poll(Duration::from_secs(1)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => panic!("consume: {e}"),
            Some(Ok(m)) => {
                at_end.remove(&m.partition());
                out.push(Consumed {
                    partition: m.partition(),
                    key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    payload: String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
                    headers: m
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|h| {
                                    (
                                        h.key.to_string(),
                                        String::from_utf8_lossy(h.value.unwrap_or_default())
                                            .into_owned(),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                });
            }
        }
    }
    panic!("topic {topic}: partitions {partitions:?} not all read to their end");
}

/// A project whose `kafka_out` pipeline publishes `data/drops/events` (NDJSON, one file a
/// batch) to `topic`, keyed by `user_id`, messages of at most 2000 bytes.
fn project(brokers: &str, topic: &str) -> Project {
    let p = Project::new();
    p.write(
        "pipelines/kafka_out.yaml",
        &format!(
            r#"name: kafka_out
source:
  type: object_store_files
  url: file://./data/drops/events
  max_files_per_batch: 1
transforms:
  - cast: {{n: int64, event_time: timestamp, amount: float64}}
sink:
  type: kafka
  brokers: ["{brokers}"]
  topic: {topic}
  key_column: user_id
  headers: {{origin: backflow-test}}
  message_timeout_ms: 5000
  message_max_bytes: 2000
  client: {{linger.ms: 5}}
"#
        ),
    );
    p
}

/// Drops two NDJSON files of 6 rows each (n = 0..12); row 5 has no user id, row 9 a 3000-byte
/// note (over the sink's message limit). Returns the rows the topic must get, by n.
fn drop_events(p: &Project) -> BTreeMap<i64, serde_json::Value> {
    let dir = p.path().join("data/drops/events");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut expected = BTreeMap::new();
    for (file, range) in [("a.ndjson", 0..6), ("b.ndjson", 6..12)] {
        let mut text = String::new();
        for n in range {
            let user = (n != 5).then(|| format!("u{}", n % 4));
            let note = if n == 9 {
                Some("x".repeat(3000))
            } else if n % 2 == 0 {
                None
            } else {
                Some(format!("note {n}"))
            };
            let row = serde_json::json!({
                "user_id": user,
                "n": n,
                "event_time": format!("2026-03-01 1{}:00:00", n % 10),
                "note": note,
                "amount": n as f64 + 0.5,
            });
            text.push_str(&row.to_string());
            text.push('\n');
            if n != 5 && n != 9 {
                // Typed: int64 and float64 as numbers, the local time (Asia/Shanghai) as RFC
                // 3339 UTC, the null kept.
                expected.insert(
                    n,
                    serde_json::json!({
                        "user_id": user,
                        "n": n,
                        "event_time": format!("2026-03-01T{:02}:00:00Z", 2 + n % 10),
                        "note": note,
                        "amount": n as f64 + 0.5,
                    }),
                );
            }
        }
        std::fs::write(dir.join(file), text).expect("write drop");
    }
    expected
}

fn run_ok(p: &Project) -> serde_json::Value {
    let out = p.run(&["run", "kafka_out", "--json"]);
    assert!(
        out.status.success(),
        "run failed: {}\n{}",
        stdout(&out),
        stderr(&out)
    );
    serde_json::from_str(stdout(&out).lines().last().unwrap_or("")).expect("summary JSON")
}

fn catalog(p: &Project) -> backflow::catalog::Catalog {
    backflow::catalog::Catalog::open(&p.path().join("data/catalog.sqlite")).expect("catalog")
}

/// Asserts every expected row arrived with its key and headers, each (batch, row) pair once
/// counted over distinct pairs; returns how many messages there were in all (replays included).
fn assert_delivered(
    messages: &[Consumed],
    expected: &BTreeMap<i64, serde_json::Value>,
) -> BTreeMap<(String, u64), String> {
    let mut by_pair: BTreeMap<(String, u64), String> = BTreeMap::new();
    for m in messages {
        let previous = by_pair.insert(m.dedup(), m.payload.clone());
        if let Some(previous) = previous {
            assert_eq!(previous, m.payload, "a replay must carry the same payload");
        }
        assert_eq!(m.headers["origin"], "backflow-test", "{m:?}");
        let json = m.json();
        assert_eq!(
            m.key.as_deref(),
            json["user_id"].as_str(),
            "keyed by user_id: {m:?}"
        );
        // Members in column order.
        assert!(m.payload.starts_with(r#"{"user_id":"#), "{m:?}");
    }
    let mut got: BTreeMap<i64, serde_json::Value> = BTreeMap::new();
    for payload in by_pair.values() {
        let json: serde_json::Value = serde_json::from_str(payload).expect("JSON");
        let n = json["n"].as_i64().expect("n");
        assert!(
            got.insert(n, json).is_none(),
            "row {n} under two dedup pairs"
        );
    }
    assert_eq!(&got, expected);
    // One key, one partition.
    let mut partitions: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
    for m in messages {
        partitions
            .entry(m.key.clone().unwrap_or_default())
            .or_default()
            .insert(m.partition);
    }
    assert!(partitions.values().all(|p| p.len() == 1), "{partitions:?}");
    by_pair
}

#[test]
fn ndjson_files_land_on_the_topic_once_keyed_with_dedup_headers() {
    let Some(brokers) = broker() else { return };
    let topic = unique("sink");
    create_topic(&brokers, &topic, 3);
    let p = project(&brokers, &topic);
    let expected = drop_events(&p);

    let summary = run_ok(&p);
    assert_eq!(summary["batches"], 2, "{summary}");
    assert_eq!(summary["rows_in"], 12, "{summary}");
    assert_eq!(summary["rows_out"], 10, "{summary}");
    assert_eq!(summary["rows_quarantined"], 2, "{summary}");

    let messages = consume_all(&brokers, &topic);
    assert_eq!(messages.len(), 10, "every row once: {messages:#?}");
    let pairs = assert_delivered(&messages, &expected);
    // Batch 1 is a.ndjson (rows 0..6 of its frame, row 5 quarantined), batch 2 b.ndjson.
    let keys: Vec<(String, u64)> = pairs.keys().cloned().collect();
    let want: Vec<(String, u64)> = [0, 1, 2, 3, 4]
        .map(|r| ("kafka_out/1".to_string(), r))
        .into_iter()
        .chain([0, 1, 2, 4, 5].map(|r| ("kafka_out/2".to_string(), r)))
        .collect();
    assert_eq!(keys, want);

    let quarantine = read_dataset(&p.lake().join("quarantine"));
    let reasons = sorted_values(&quarantine, "reason");
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons[0].ends_with("a.ndjson:6: sink.key_column `user_id` is null"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].contains("b.ndjson:4: message of ")
            && reasons[1].ends_with("is over sink.message_max_bytes (2000)"),
        "{reasons:?}"
    );

    // Nothing new: no batch, no message.
    let again = run_ok(&p);
    assert_eq!(again["batches"], 0, "{again}");
    assert_eq!(consume_all(&brokers, &topic).len(), 10);
}

#[test]
fn a_missing_topic_fails_the_run_naming_it_and_is_not_created() {
    let Some(brokers) = broker() else { return };
    let topic = unique("missing");
    let p = project(&brokers, &topic);
    drop_events(&p);
    let out = p.run(&["run", "kafka_out"]);
    assert!(!out.status.success(), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "topic `{topic}` does not exist on brokers {brokers}; create it"
        )),
        "{err}"
    );
    assert_eq!(
        catalog(&p).committed_batches("kafka_out").expect("batches"),
        0
    );
    assert!(
        catalog(&p)
            .open_intent("kafka_out")
            .expect("intent")
            .is_none()
    );
    // tansu does not create topics on a producer's metadata request either.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .expect("consumer");
    let md = consumer
        .fetch_metadata(Some(&topic), Timeout::After(Duration::from_secs(30)))
        .expect("metadata");
    assert!(
        md.topics()
            .iter()
            .all(|t| t.name() != topic || t.error().is_some() || t.partitions().is_empty()),
        "the topic was created"
    );
}

#[test]
fn a_crash_after_delivery_before_the_commit_resends_the_batch_with_the_same_headers() {
    let Some(brokers) = broker() else { return };
    let topic = unique("resend");
    create_topic(&brokers, &topic, 3);
    let p = project(&brokers, &topic);
    let expected = drop_events(&p);

    let crashed = p
        .command(&["run", "kafka_out"])
        .env("BACKFLOW_FAILPOINT", "kafka_sink_delivered")
        .output()
        .expect("spawn");
    assert!(!crashed.status.success(), "the failpoint did not stop it");
    assert!(
        catalog(&p)
            .open_intent("kafka_out")
            .expect("intent")
            .is_some()
    );
    assert_eq!(
        catalog(&p).committed_batches("kafka_out").expect("batches"),
        0
    );

    let summary = run_ok(&p);
    assert_eq!(summary["replayed_batches"], 1, "{summary}");
    assert_eq!(summary["batches"], 2, "{summary}");
    let messages = consume_all(&brokers, &topic);
    // Batch 1 (5 messages) went out twice, batch 2 once: at least once, and the replays carry
    // the same dedup headers and payloads, so dropping seen pairs leaves every row once.
    assert_eq!(messages.len(), 15, "{messages:#?}");
    let pairs = assert_delivered(&messages, &expected);
    assert_eq!(pairs.len(), 10);
}

#[test]
fn a_broker_down_at_start_or_lost_mid_batch_commits_nothing_and_the_rows_follow_later() {
    let Some(bin) = require_env("BACKFLOW_TEST_TANSU") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut tansu = Tansu::stopped(&bin, dir.path());
    let brokers = tansu.address();
    let topic = unique("down");
    let p = project(&brokers, &topic);
    let expected = drop_events(&p);

    // Down at start: the broker check fails the run before anything is planned.
    let out = p.run(&["run", "kafka_out"]);
    assert!(!out.status.success(), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("sink brokers {brokers} unreachable")),
        "{err}"
    );
    assert!(
        catalog(&p)
            .open_intent("kafka_out")
            .expect("intent")
            .is_none()
    );
    assert_eq!(
        catalog(&p).committed_batches("kafka_out").expect("batches"),
        0
    );

    // Lost mid-batch: the broker dies after the check, while the batch waits to be sent.
    tansu.restart();
    create_topic(&brokers, &topic, 3);
    let log_path = p.path().join("run.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let run = p
        .command(&["run", "kafka_out"])
        .env("BACKFLOW_FAILPOINT_DELAY", "kafka_sink_send:3000")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn");
    for _ in 0..600 {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if text.contains("BACKFLOW_FAILPOINT_DELAY: delaying") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    tansu.kill();
    let out = run.wait_with_output().expect("wait");
    assert!(!out.status.success());
    let err = std::fs::read_to_string(&log_path).expect("log");
    assert!(
        err.contains(&format!("not acknowledged by brokers {brokers}")),
        "{err}"
    );
    assert!(
        catalog(&p)
            .open_intent("kafka_out")
            .expect("intent")
            .is_some()
    );
    assert_eq!(
        catalog(&p).committed_batches("kafka_out").expect("batches"),
        0
    );

    // Back: the open batch is replayed, then the rest; every row is on the topic.
    tansu.restart();
    let summary = run_ok(&p);
    assert_eq!(summary["replayed_batches"], 1, "{summary}");
    assert_eq!(summary["batches"], 2, "{summary}");
    let messages = consume_all(&brokers, &topic);
    let pairs = assert_delivered(&messages, &expected);
    assert_eq!(pairs.len(), 10);
}

#[test]
fn a_dataset_job_announces_each_published_version_on_its_notice_topic() {
    let Some(brokers) = broker() else { return };
    let topic = unique("notices");
    create_topic(&brokers, &topic, 1);
    let p = Project::new();
    p.drop_fixtures();
    p.run_pipeline_ok();
    p.edit_file(
        "pipelines/behavior_dataset.yaml",
        "publish:\n",
        &format!("publish:\n  notify:\n    kafka: {{brokers: [\"{brokers}\"], topic: {topic}}}\n"),
    );
    let run = |p: &Project| {
        let out = p.run(&["run", "behavior_dataset", "--json"]);
        assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
        serde_json::from_str::<serde_json::Value>(stdout(&out).lines().last().unwrap_or(""))
            .expect("summary JSON")
    };
    let first = run(&p);
    let second = run(&p);
    let notices = consume_all(&brokers, &topic);
    assert_eq!(notices.len(), 2, "{notices:#?}");
    for (notice, summary) in notices.iter().zip([&first, &second]) {
        let json = notice.json();
        assert_eq!(notice.key.as_deref(), Some("behavior"));
        assert_eq!(json["dataset"], "behavior");
        assert_eq!(json["job"], "behavior_dataset");
        assert_eq!(json["version"], summary["version"], "{json} {summary}");
        assert_eq!(json["seq"], summary["seq"]);
        assert_eq!(json["rows"], summary["rows_out"]);
        assert!(
            json["published_at"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z'))
        );
        assert_eq!(
            notice.dedup(),
            (format!("behavior_dataset/{}", summary["seq"]), 0)
        );
    }

    // A notice topic that is missing fails the refresh before anything is published.
    p.edit_file(
        "pipelines/behavior_dataset.yaml",
        &format!("topic: {topic}}}"),
        "topic: no.such.topic}",
    );
    let out = p.run(&["run", "behavior_dataset"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("kafka topic `no.such.topic` does not exist"),
        "{}",
        stderr(&out)
    );
    let third = run_after_fix(&p, &topic);
    assert_eq!(third["seq"], 3, "the failed run published nothing: {third}");
}

/// Points the dataset job's notices back at `topic` and runs it.
fn run_after_fix(p: &Project, topic: &str) -> serde_json::Value {
    p.edit_file(
        "pipelines/behavior_dataset.yaml",
        "topic: no.such.topic}",
        &format!("topic: {topic}}}"),
    );
    let out = p.run(&["run", "behavior_dataset", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_str(stdout(&out).lines().last().unwrap_or("")).expect("summary JSON")
}
