//! The Kafka source's SASL login against a real broker that requires one: tansu 0.6 started
//! with `--authentication` (`BACKFLOW_TEST_TANSU`), which answers nothing but the login until a
//! client has logged in. tansu 0.6.0 offers SCRAM-SHA-256/512 and OAUTHBEARER only: a PLAIN
//! login is refused (the refusal path), a SCRAM login with the user's password reads the topic,
//! one with a wrong password is refused.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::http_source::run_failing;
use crate::kafka::{RUN_LIMIT, unique};
use crate::support::*;

/// A tansu broker of this test's own that requires a SASL login (in memory).
struct AuthBroker {
    child: Child,
    brokers: String,
}

/// Creates the SCRAM-SHA-256 user `alice` (password `wonderland`) on the tansu `bin` listening
/// on `url` without authentication (tansu keeps it in its storage).
pub(crate) fn create_scram_user(bin: &str, url: &str) {
    let user = Command::new(bin)
        .args(["user", "create", "--broker", url, "--mechanism", "scram256"])
        .args(["alice", "wonderland"])
        .output()
        .expect("tansu user create");
    assert!(
        user.status.success(),
        "tansu user create: {}",
        stderr(&user)
    );
}

impl AuthBroker {
    fn start() -> Option<AuthBroker> {
        let bin = require_env("BACKFLOW_TEST_TANSU")?;
        let port = crate::serve::free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(bin)
            .args(["broker", "--authentication", "--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn tansu");
        let broker = AuthBroker {
            child,
            brokers: format!("127.0.0.1:{port}"),
        };
        for _ in 0..200 {
            if std::net::TcpStream::connect(&broker.brokers).is_ok() {
                return Some(broker);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("tansu did not listen on {}", broker.brokers);
    }
}

impl AuthBroker {
    /// A tansu on SQLite storage in `dir`: first without authentication, to create the SCRAM
    /// user `alice` (password `wonderland`, SCRAM-SHA-256) and `topic` with `messages`; then
    /// restarted on the same storage with `--authentication`.
    fn with_scram_user(
        dir: &std::path::Path,
        topic: &str,
        messages: &[(i32, String)],
    ) -> Option<AuthBroker> {
        let bin = require_env("BACKFLOW_TEST_TANSU")?;
        let port = crate::serve::free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let brokers = format!("127.0.0.1:{port}");
        let spawn = |auth: bool| {
            let mut cmd = Command::new(&bin);
            cmd.arg("broker");
            if auth {
                cmd.arg("--authentication");
            }
            let child = cmd
                .args(["--listener-url", &url, "--advertised-listener-url", &url])
                .args(["--storage-engine", "sqlite://tansu.db"])
                .current_dir(dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn tansu");
            let broker = AuthBroker {
                child,
                brokers: brokers.clone(),
            };
            for _ in 0..200 {
                if std::net::TcpStream::connect(&brokers).is_ok() {
                    return broker;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            panic!("tansu did not listen on {brokers}");
        };
        let open = spawn(false);
        create_scram_user(&bin, &url);
        crate::kafka::create_topic(&brokers, topic, 1);
        crate::kafka::produce(&brokers, topic, messages);
        drop(open);
        Some(spawn(true))
    }
}

impl Drop for AuthBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pipeline_yaml(brokers: &str, topic: &str, group: &str, sasl: &str) -> String {
    format!(
        r#"name: kafka_auth
source:
  type: kafka
  brokers: ["{brokers}"]
  topics: [{topic}]
  group_id: {group}
  idle_ms: 1500
  session_timeout_ms: 6000
  join_timeout_ms: 60000
  sasl: {sasl}
transforms:
  - cast: {{n: int64, event_time: timestamp}}
sink:
  type: parquet
  dataset: kafka_auth
  partition_by: {{column: event_time, granularity: day}}
"#
    )
}

#[test]
fn a_missing_sasl_secret_stops_the_run_and_a_refused_login_is_named_without_the_password() {
    let Some(broker) = AuthBroker::start() else {
        return;
    };
    let p = Project::new();
    p.write(
        "pipelines/kafka_auth.yaml",
        &pipeline_yaml(
            &broker.brokers,
            &unique("auth"),
            &unique("backflow"),
            "{mechanism: plain, username: backflow, secret: KAFKA_TEST_PASSWORD}",
        ),
    );
    let run = |password: Option<&str>| {
        let mut cmd = p.command(&["run", "kafka_auth", "--json"]);
        cmd.env_remove("KAFKA_TEST_PASSWORD")
            .env_remove("KAFKA_TEST_PASSWORD_FILE");
        if let Some(password) = password {
            cmd.env("KAFKA_TEST_PASSWORD", password);
        }
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn backflow");
        wait_bounded(child, "backflow run kafka_auth", RUN_LIMIT)
    };

    // No secret: the run stops before connecting, saying which variable to set.
    let out = run(None);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out).lines().any(|l| l
            == "error: kafka: source.sasl.secret: secret `KAFKA_TEST_PASSWORD` is not set: set the environment variable KAFKA_TEST_PASSWORD (or KAFKA_TEST_PASSWORD_FILE to a file holding it)"),
        "{}",
        stderr(&out)
    );

    // With the secret: the broker refuses the login; the error names the brokers, the login
    // and the variable, never the password; nothing lands.
    let out = run(Some("s3cr3t-pw"));
    assert!(!out.status.success(), "{}", stdout(&out));
    let error = stderr(&out)
        .lines()
        .find(|l| l.starts_with("error: "))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(
        error.starts_with(&format!(
            "error: kafka: {} refused the client: ",
            broker.brokers
        )) && error
            .contains("SASL PLAIN login as `backflow` with the password in KAFKA_TEST_PASSWORD")
            && error.ends_with("; not retried"),
        "{}",
        stderr(&out)
    );
    assert!(
        !stderr(&out).contains("s3cr3t-pw") && !stdout(&out).contains("s3cr3t-pw"),
        "the password is never logged"
    );
    assert!(parquet_files(&p.lake()).is_empty(), "nothing lands");
}

#[test]
fn a_refused_login_fails_the_run_at_once_not_retryable_counted_and_commits_nothing() {
    let Some(broker) = AuthBroker::start() else {
        return;
    };
    // The login is refused whatever the password, so any variable that is set serves as the
    // secret (`HOME`: this process cannot set one).
    let yaml = pipeline_yaml(
        &broker.brokers,
        &unique("auth"),
        &unique("backflow"),
        "{mechanism: plain, username: nobody, secret: HOME}",
    );
    let (err, runtime) = run_failing("kafka_auth.yaml", &yaml, "memory://kafka-auth-lake");
    let metrics = runtime.metrics.encode();

    assert!(!err.retryable(), "a refused login is not retried: {err}");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("kafka: {} refused the client: ", broker.brokers))
            && message.contains("Authentication")
            && message.contains("SASL PLAIN login as `nobody` with the password in HOME")
            && message.ends_with("; not retried"),
        "{message}"
    );
    assert!(
        metrics.lines().any(|l| l
            == "backflow_kafka_source_failures_total{pipeline=\"kafka_auth\",kind=\"unauthorized\"} 1"),
        "{metrics}"
    );
    // Nothing committed: no batch in the catalog, none open either.
    assert_eq!(
        runtime
            .catalog
            .last_committed_positions("kafka_auth")
            .expect("catalog"),
        None
    );
    assert!(
        runtime
            .catalog
            .open_intent("kafka_auth")
            .expect("catalog")
            .is_none()
    );
}

#[test]
fn a_scram_login_reads_the_topic_and_a_wrong_password_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let topic = unique("scram");
    let messages: Vec<(i32, String)> = (0..20)
        .map(|n| {
            (
                0,
                format!(r#"{{"n": {n}, "event_time": "2026-11-20T10:00:{n:02}Z"}}"#),
            )
        })
        .collect();
    let Some(broker) = AuthBroker::with_scram_user(dir.path(), &topic, &messages) else {
        return;
    };
    let p = Project::new();
    p.write(
        "pipelines/kafka_auth.yaml",
        &pipeline_yaml(
            &broker.brokers,
            &topic,
            &unique("backflow"),
            "{mechanism: scram_sha_256, username: alice, secret: KAFKA_TEST_PASSWORD}",
        ),
    );
    let run = |password: &str| {
        let child = p
            .command(&["run", "kafka_auth", "--json"])
            .env("KAFKA_TEST_PASSWORD", password)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn backflow");
        wait_bounded(child, "backflow run kafka_auth", RUN_LIMIT)
    };

    // A wrong password: refused, not retried, the password never shown, nothing lands.
    let out = run("not-the-password");
    assert!(!out.status.success(), "{}", stdout(&out));
    let error = stderr(&out)
        .lines()
        .find(|l| l.starts_with("error: "))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(
        error.starts_with(&format!(
            "error: kafka: {} refused the client: ",
            broker.brokers
        )) && error.contains(
            "SASL SCRAM-SHA-256 login as `alice` with the password in KAFKA_TEST_PASSWORD"
        ) && error.ends_with("; not retried"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("not-the-password"));
    assert!(parquet_files(&p.lake()).is_empty(), "nothing lands");

    // The right password: every message lands once.
    let out = run("wonderland");
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let lake = read_dataset(&p.lake().join("kafka_auth"));
    assert_eq!(lake.height(), messages.len());
}
