//! The Kafka source scaled out and under failure, against real tansu brokers: two `backflow`
//! processes in one consumer group on one catalog split the partitions and land every message
//! once, also when one of them dies mid-batch; a broker killed mid-stream fails the run without
//! committing anything it did not land, and after its restart the next run completes the lake.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::kafka::{RUN_LIMIT, broker, create_topic, produce, unique};
use crate::support::*;

/// A project whose `kafka_events` pipeline reads `topic` with `group`, 20 messages a batch.
fn project(brokers: &str, topic: &str, group: &str) -> Project {
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
  max_records_per_batch: 20
  idle_ms: 1500
  # A dead member's partitions move to the other after 6 s without heartbeats.
  session_timeout_ms: 6000
  join_timeout_ms: 60000
transforms:
  - cast: {{n: int64, event_time: timestamp}}
sink:
  type: parquet
  dataset: kafka_events
  partition_by: {{column: event_time, granularity: day}}
"#
        ),
    );
    p
}

/// `n` JSON events with ids `range`, spread over `partitions`.
fn events(range: std::ops::Range<i64>, partitions: i32) -> Vec<(i32, String)> {
    range
        .map(|n| {
            let payload = serde_json::json!({
                "n": n,
                "event_time": format!("2026-03-{:02}T10:00:00Z", 1 + n % 28),
                "campaign": format!("c{}", n % 7),
            });
            ((n % i64::from(partitions)) as i32, payload.to_string())
        })
        .collect()
}

/// Every `n` in the lake, sorted (duplicates kept).
fn landed(p: &Project) -> Vec<i64> {
    let dir = p.lake().join("kafka_events");
    if parquet_files(&dir).is_empty() {
        return Vec::new();
    }
    sorted_i64(&read_dataset(&dir), "n")
}

fn spawn_run(p: &Project, env: &[(&str, &str)]) -> Child {
    let mut cmd = p.command(&["run", "kafka_events", "--json"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn backflow")
}

fn summary(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "run failed: {}\n{}",
        stdout(out),
        stderr(out)
    );
    serde_json::from_str(stdout(out).lines().last().unwrap_or("")).expect("summary JSON")
}

#[test]
fn two_members_of_one_group_split_the_partitions_and_land_every_message_once() {
    let Some(brokers) = broker() else { return };
    let (topic, group) = (unique("scale"), unique("backflow"));
    create_topic(&brokers, &topic, 4);
    produce(&brokers, &topic, &events(0..600, 4));
    let p = project(&brokers, &topic, &group);

    // Each batch waits 400 ms after reading, so that neither process drains the topic alone
    // before the other has joined.
    let slow = [("BACKFLOW_FAILPOINT_DELAY", "kafka_planned:400")];
    let a = spawn_run(&p, &slow);
    let b = spawn_run(&p, &slow);
    let (a, b) = (
        wait_bounded(a, "member a", RUN_LIMIT),
        wait_bounded(b, "member b", RUN_LIMIT),
    );
    let (a, b) = (summary(&a), summary(&b));
    assert!(
        a["rows_out"].as_u64() > Some(0) && b["rows_out"].as_u64() > Some(0),
        "both members land messages: {a} {b}"
    );
    assert_eq!(
        a["rows_out"].as_u64().unwrap_or(0) + b["rows_out"].as_u64().unwrap_or(0),
        600,
        "{a} {b}"
    );
    assert_eq!(landed(&p), (0..600).collect::<Vec<_>>());

    // The group's offsets reached the lake: a third member finds nothing to do.
    let again = summary(&p.run_bounded(&["run", "kafka_events", "--json"], RUN_LIMIT));
    assert_eq!(again["batches"], 0, "{again}");
}

#[test]
fn a_member_dying_mid_batch_leaves_its_partitions_and_its_open_batch_to_the_other() {
    let Some(brokers) = broker() else { return };
    let (topic, group) = (unique("takeover"), unique("backflow"));
    create_topic(&brokers, &topic, 4);
    produce(&brokers, &topic, &events(0..600, 4));
    let p = project(&brokers, &topic, &group);

    // `b` is slow (1 s a batch: its own half takes longer than the 6 s session timeout); `a`
    // dies in its first batch, after writing a file and before the commit.
    let b = spawn_run(&p, &[("BACKFLOW_FAILPOINT_DELAY", "kafka_planned:1000")]);
    let a = spawn_run(&p, &[("BACKFLOW_FAILPOINT", "after_first_put")]);
    let a = wait_bounded(a, "member a", RUN_LIMIT);
    assert!(!a.status.success(), "the failpoint did not stop `a`");
    assert!(stderr(&a).contains("after_first_put"), "{}", stderr(&a));
    let b = summary(&wait_bounded(b, "member b", RUN_LIMIT));

    // `b` replayed the batch `a` left open (a's lock died with it).
    assert_eq!(b["replayed_batches"], 1, "{b}");
    // `a`'s partitions go to a member once the broker drops `a`: to `b` if it still runs then
    // (Kafka does so after the session timeout; tansu 0.6 only on the next join), else to the
    // next member that joins. Together: every message once.
    let c = summary(&p.run_bounded(&["run", "kafka_events", "--json"], RUN_LIMIT));
    assert_eq!(
        b["rows_out"].as_u64().unwrap_or(0) + c["rows_out"].as_u64().unwrap_or(0),
        600,
        "{b} {c}"
    );
    assert_eq!(landed(&p), (0..600).collect::<Vec<_>>());
}

/// A tansu broker of this test's own, storing in SQLite under `dir` (so a restart keeps the
/// topics, messages and group offsets).
pub(crate) struct Tansu {
    bin: String,
    dir: std::path::PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Tansu {
    fn start(bin: &str, dir: &Path) -> Tansu {
        let mut t = Tansu::stopped(bin, dir);
        t.restart();
        t
    }

    /// A broker on a free port, not started yet (nothing listens there until `restart`).
    pub(crate) fn stopped(bin: &str, dir: &Path) -> Tansu {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        Tansu {
            bin: bin.to_string(),
            dir: dir.to_path_buf(),
            port,
            child: None,
        }
    }

    pub(crate) fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub(crate) fn restart(&mut self) {
        let url = format!("tcp://{}", self.address());
        let log = std::fs::File::create(self.dir.join("tansu.log")).expect("log");
        let child = Command::new(&self.bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
            ])
            .arg(&url)
            // Relative to the working directory.
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(&self.dir)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn tansu");
        self.child = Some(child);
        for _ in 0..200 {
            if std::net::TcpStream::connect(self.address()).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("tansu did not listen on {}", self.address());
    }

    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.kill();
    }
}

fn manifests(p: &Project) -> usize {
    std::fs::read_dir(p.lake().join("kafka_events/_commits")).map_or(0, |d| d.count())
}

#[test]
fn a_broker_killed_mid_stream_fails_the_run_and_after_its_restart_every_message_lands_once() {
    let Some(bin) = require_env("BACKFLOW_TEST_TANSU") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut tansu = Tansu::start(&bin, dir.path());
    let brokers = tansu.address();
    let (topic, group) = (unique("restart"), unique("backflow"));
    create_topic(&brokers, &topic, 3);
    produce(&brokers, &topic, &events(0..300, 3));
    let p = project(&brokers, &topic, &group);

    let log = std::fs::File::create(p.path().join("run.log")).expect("log");
    let run = p
        .command(&["run", "kafka_events", "--json"])
        .env("BACKFLOW_FAILPOINT_DELAY", "kafka_planned:500")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("spawn");
    // Bounded wait for two committed batches, then the broker dies.
    for _ in 0..600 {
        if manifests(&p) >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(manifests(&p) >= 2, "no batch committed before the kill");
    tansu.kill();
    let failed = wait_bounded(run, "the run whose broker died", RUN_LIMIT);
    assert!(
        !failed.status.success(),
        "the run succeeded with the broker down: {}",
        stdout(&failed)
    );
    let log = std::fs::read_to_string(p.path().join("run.log")).expect("run log");
    assert!(
        log.lines().any(|l| l.starts_with("error: kafka:")
            && l.contains(&brokers)
            && l.contains("brokers down?")),
        "the failure names the brokers: {log}"
    );
    // What landed, landed once; the rest is not in the lake.
    let partial = landed(&p);
    let mut unique_ns = partial.clone();
    unique_ns.dedup();
    assert_eq!(partial, unique_ns, "duplicates after the broker died");
    assert!(partial.len() < 300, "{} rows", partial.len());

    tansu.restart();
    let summary = summary(&p.run_bounded(&["run", "kafka_events", "--json"], RUN_LIMIT));
    assert_eq!(landed(&p), (0..300).collect::<Vec<_>>(), "{summary}");
    let again = p.run_bounded(&["run", "kafka_events", "--json"], RUN_LIMIT);
    let again: serde_json::Value =
        serde_json::from_str(stdout(&again).lines().last().unwrap_or("")).expect("summary");
    assert_eq!(again["batches"], 0, "{again}");
}
