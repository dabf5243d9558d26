//! Kafka against a real broker (tansu, started by `scripts/dev test` on 127.0.0.1 and passed as
//! `BACKFLOW_TEST_KAFKA`): the rdkafka client round trip, and the `kafka` pipeline source landing
//! every message exactly once — through crashes between the lake commit and the offset commit.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

use crate::support::*;

pub(crate) fn broker() -> Option<String> {
    require_env("BACKFLOW_TEST_KAFKA")
}

/// A name no other test (or earlier run against the same broker) uses.
pub(crate) fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7().simple())
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
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

/// Produces `(partition, payload)` messages with an idempotent `acks=all` producer, each with a
/// `source` header, and waits for every delivery report.
pub(crate) fn produce(brokers: &str, topic: &str, messages: &[(i32, String)]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .expect("producer");
    runtime().block_on(async {
        for (partition, payload) in messages {
            let headers = OwnedHeaders::new().insert(Header {
                key: "source",
                value: Some("test"),
            });
            producer
                .send(
                    FutureRecord::<(), _>::to(topic)
                        .partition(*partition)
                        .payload(payload)
                        .headers(headers),
                    Timeout::After(Duration::from_secs(30)),
                )
                .await
                .map_err(|(e, _)| e)
                .expect("delivered");
        }
    });
}

/// The group's committed offsets, partition → offset (absent: none committed).
pub(crate) fn committed(
    brokers: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> BTreeMap<i32, i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut list = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition(topic, p);
    }
    let offsets = consumer
        .committed_offsets(list, Timeout::After(Duration::from_secs(30)))
        .expect("committed offsets");
    offsets
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            rdkafka::Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect()
}

#[test]
fn rdkafka_produces_and_a_group_consumes_and_commits_through_the_broker() {
    let Some(brokers) = broker() else { return };
    let topic = unique("smoke");
    let group = unique("smoke-group");
    create_topic(&brokers, &topic, 1);
    produce(&brokers, &topic, &[(0, "one".into()), (0, "two".into())]);

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[&topic]).expect("subscribe");
    let mut got = Vec::new();
    // Bounded by attempts, not time: each poll waits at most a second.
    for _ in 0..60 {
        if got.len() == 2 {
            break;
        }
        if let Some(message) = consumer.poll(Duration::from_secs(1)) {
            let message = message.expect("message");
            got.push(String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned());
            consumer
                .commit_message(&message, CommitMode::Sync)
                .expect("commit");
        }
    }
    assert_eq!(got, ["one", "two"]);
    drop(consumer);
    assert_eq!(
        committed(&brokers, &group, &topic, 1),
        BTreeMap::from([(0, 2)])
    );
}

const PARTITIONS: i32 = 3;

/// A project with a `kafka_events` pipeline reading `topic` with `group`, 7 messages a batch.
fn kafka_project(brokers: &str, topic: &str, group: &str) -> Project {
    let p = Project::new();
    p.write(
        "pipelines/kafka_events.yaml",
        &format!(
            r#"name: kafka_events
source:
  type: kafka
  brokers: ["{brokers}"]
  topics: [{topic}]
  group_id: {group}
  headers_column: kafka_headers
  max_records_per_batch: 7
  idle_ms: 1500
  # After a crash the broker keeps the dead member until its session times out (librdkafka's
  # default 45 s): the rerun waits that long for its assignment.
  join_timeout_ms: 120000
transforms:
  - cast: {{n: int64, event_time: timestamp}}
sink:
  type: parquet
  dataset: kafka_events
  partition_by: {{column: event_time, granularity: hour}}
"#
        ),
    );
    p
}

/// `n` JSON events spread over the partitions.
fn events(range: std::ops::Range<i64>) -> Vec<(i32, String)> {
    range
        .map(|n| {
            let payload = serde_json::json!({
                "n": n,
                "event_time": format!("2026-03-01T{:02}:00:00Z", n % 24),
                "what": "impression",
            });
            ((n % i64::from(PARTITIONS)) as i32, payload.to_string())
        })
        .collect()
}

/// How long one `backflow run` of a Kafka pipeline may take before the test kills it and fails
/// (a rerun after a crash waits up to `join_timeout_ms`, 120 s, for its assignment).
pub(crate) const RUN_LIMIT: Duration = Duration::from_secs(300);

fn run_kafka(p: &Project) -> serde_json::Value {
    let out = p.run_bounded(&["run", "kafka_events", "--json"], RUN_LIMIT);
    assert!(
        out.status.success(),
        "run failed: {}\n{}",
        stdout(&out),
        stderr(&out)
    );
    serde_json::from_str(stdout(&out).lines().last().unwrap_or("")).expect("summary JSON")
}

fn landed(p: &Project) -> Vec<i64> {
    sorted_i64(&read_dataset(&p.lake().join("kafka_events")), "n")
}

#[test]
fn kafka_messages_land_once_with_headers_and_poison_messages_in_quarantine() {
    let Some(brokers) = broker() else { return };
    let (topic, group) = (unique("events"), unique("backflow"));
    create_topic(&brokers, &topic, PARTITIONS);
    let mut messages = events(0..20);
    messages.insert(5, (1, "not json at all".into()));
    messages.insert(9, (2, "[1, 2, 3]".into()));
    produce(&brokers, &topic, &messages);

    let p = kafka_project(&brokers, &topic, &group);
    let summary = run_kafka(&p);
    assert_eq!(summary["rows_in"], 22, "{summary}");
    assert_eq!(summary["rows_out"], 20, "{summary}");
    assert_eq!(summary["rows_quarantined"], 2, "{summary}");
    assert_eq!(landed(&p), (0..20).collect::<Vec<_>>());

    let lake = read_dataset(&p.lake().join("kafka_events"));
    let headers = sorted_values(&lake, "kafka_headers");
    assert!(
        headers.iter().all(|h| h == r#"{"source":"test"}"#),
        "{headers:?}"
    );
    let quarantine = read_dataset(&p.lake().join("quarantine"));
    let reasons = sorted_values(&quarantine, "reason");
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with(&format!("kafka {topic}/2@"))
                && r.ends_with("expected a JSON object, found an array")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with(&format!("kafka {topic}/1@")) && r.contains("invalid JSON")),
        "{reasons:?}"
    );

    // The group follows the lake: every partition committed to its end.
    let ends = committed(&brokers, &group, &topic, PARTITIONS);
    assert_eq!(ends.values().sum::<i64>(), 22, "{ends:?}");

    // Nothing new: no batch. New messages: only they land.
    let again = run_kafka(&p);
    assert_eq!(again["batches"], 0, "{again}");
    produce(&brokers, &topic, &events(20..25));
    let more = run_kafka(&p);
    assert_eq!(more["rows_out"], 5, "{more}");
    assert_eq!(landed(&p), (0..25).collect::<Vec<_>>());
}

/// The process dies at `point` in the first batch; the rerun must leave every message once.
fn crash_then_rerun(point: &str) {
    let Some(brokers) = broker() else { return };
    let (topic, group) = (unique("crash"), unique("backflow"));
    create_topic(&brokers, &topic, PARTITIONS);
    produce(&brokers, &topic, &events(0..30));
    let p = kafka_project(&brokers, &topic, &group);

    let crashed = p
        .command(&["run", "kafka_events"])
        .env("BACKFLOW_FAILPOINT", point)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let crashed = wait_bounded(crashed, "the crashing run", RUN_LIMIT);
    assert!(
        !crashed.status.success(),
        "{point}: the failpoint did not stop the process"
    );
    assert!(stderr(&crashed).contains(point), "{}", stderr(&crashed));
    // The crash left the group's offsets behind the lake (or the batch open).
    assert!(
        committed(&brokers, &group, &topic, PARTITIONS).is_empty(),
        "{point}: offsets were committed before the crash"
    );

    let summary = run_kafka(&p);
    assert_eq!(
        landed(&p),
        (0..30).collect::<Vec<_>>(),
        "{point}: {summary}"
    );
    let ends = committed(&brokers, &group, &topic, PARTITIONS);
    assert_eq!(ends.values().sum::<i64>(), 30, "{point}: {ends:?}");
    let again = run_kafka(&p);
    assert_eq!(again["batches"], 0, "{point}: {again}");
    assert_eq!(landed(&p), (0..30).collect::<Vec<_>>());
}

#[test]
fn a_crash_between_the_lake_commit_and_the_offset_commit_duplicates_nothing() {
    crash_then_rerun("after_commit");
}

#[test]
fn a_crash_mid_batch_is_replayed_over_the_recorded_offsets() {
    crash_then_rerun("after_first_put");
}
