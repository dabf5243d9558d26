//! Tests of the daemon configuration (`daemon.rs`).

use super::*;
use crate::config::model::SaslMechanism;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn load_text(text: &str, vars: &[(&str, &str)]) -> Result<DaemonConfig, Vec<String>> {
    let dir = tempfile::tempdir().map_err(|e| vec![e.to_string()])?;
    let file = dir.path().join("backflow.yaml");
    std::fs::write(&file, text).map_err(|e| vec![e.to_string()])?;
    DaemonConfig::load(Some(&file), env(vars)).map_err(|errors| {
        errors
            .iter()
            .map(|e| e.to_string().replace(&*file.to_string_lossy(), "F"))
            .collect()
    })
}

#[test]
fn no_file_and_no_env_is_the_defaults() {
    let config = DaemonConfig::load(None, Vec::new());
    assert_eq!(config, Ok(DaemonConfig::default()));
}

#[test]
fn blank_file_is_the_defaults() {
    assert_eq!(
        load_text("# nothing yet\n", &[]),
        Ok(DaemonConfig::default())
    );
}

#[test]
fn catalog_and_lake_follow_the_final_data_dir() {
    let config = load_text(
        "data_dir: /srv/file\n",
        &[("BACKFLOW__DATA_DIR", "/srv/env")],
    );
    let config = config.unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(
        config.catalog_path,
        PathBuf::from("/srv/env/catalog.sqlite")
    );
    assert_eq!(
        config.lake_url,
        StorageUrl::File {
            root: PathBuf::from("/srv/env/lake")
        }
    );
}

#[test]
fn values_from_the_file_are_located() {
    let errors = load_text(
        "scheduler:\n  max_concurrent_runs: 11\n  max_runs_per_workspace: 0\nlog: {format: xml}\n",
        &[],
    );
    assert_eq!(
        errors,
        Err(vec![
            "F:4:15: log.format: unknown log format `xml`, expected one of text, json".to_string(),
            "F:2:24: scheduler.max_concurrent_runs: expected a number from 1 to 10, found `11`"
                .to_string(),
            "F:3:27: scheduler.max_runs_per_workspace: expected a number from 1 to 10, found `0`"
                .to_string(),
        ])
    );
}

#[test]
fn enrichment_paths_are_optional() {
    let config = load_text(
        "enrich:\n  geo_db: /srv/geo/dbip-city-lite.mmdb\n  city_tiers: \"\"\n",
        &[],
    );
    let config = config.unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(
        config.enrich_geo_db,
        Some(PathBuf::from("/srv/geo/dbip-city-lite.mmdb"))
    );
    assert_eq!(config.enrich_city_tiers, None);
    let env = DaemonConfig::load(None, env(&[("BACKFLOW__ENRICH__CITY_TIERS", "t.csv")]));
    assert_eq!(
        env.map(|c| c.enrich_city_tiers),
        Ok(Some(PathBuf::from("t.csv")))
    );
}

#[test]
fn env_names_are_case_insensitive_and_others_ignored() {
    let config = DaemonConfig::load(
        None,
        env(&[
            ("backflow__log__LEVEL", "debug"),
            ("BACKFLOW_X", "1"),
            ("PATH", "/"),
        ]),
    );
    assert_eq!(config.map(|c| c.log_level), Ok("debug".to_string()));
}

#[test]
fn forward_settings_parse_and_are_checked() {
    let config = load_text(
        "forward:\n  enabled: false\n  concurrency: 4\n  give_up_seconds: 60\n",
        &[("BACKFLOW__FORWARD__TIMEOUT_SECONDS", "2")],
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    assert!(!config.forward.enabled);
    assert_eq!(config.forward.concurrency.get(), 4);
    assert_eq!(config.forward.timeout, Duration::from_secs(2));
    assert_eq!(config.forward.give_up_after, Duration::from_secs(60));
    assert_eq!(config.forward.max_backoff, Duration::from_secs(600));
    assert_eq!(config.forward.kafka_group, "backflow-forward");
    assert_eq!(
        load_text("forward: {kafka_group: fwd.eu}\n", &[])
            .map(|c| c.forward.kafka_group)
            .as_deref(),
        Ok("fwd.eu")
    );
    assert_eq!(
        load_text(
            "forward: {enabled: yes, concurrency: 0, kafka_group: \"a b\"}\n",
            &[]
        ),
        Err(vec![
            "F:1:20: forward.enabled: expected true or false, found `yes`".to_string(),
            "F:1:38: forward.concurrency: expected a number from 1 to 256, found `0`".to_string(),
            "F:1:54: forward.kafka_group: expected a consumer group name (1 to 249 characters, no spaces), found `a b`".to_string(),
        ])
    );
}

#[test]
fn the_kafka_journal_is_configured_from_the_file_and_the_environment() {
    let config = load_text(
        "journal:\n  kind: kafka\n  kafka:\n    brokers: \"k1:9092, k2:9093\"\n    message_timeout_ms: 250\n",
        &[("BACKFLOW__JOURNAL__KAFKA__TOPIC", "hits.v1")],
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    let JournalConfig::Kafka(k) = config.journal else {
        panic!("not kafka: {:?}", config.journal)
    };
    assert_eq!(k.brokers, ["k1:9092", "k2:9093"]);
    assert_eq!(k.topic, "hits.v1");
    assert_eq!(k.message_timeout, Duration::from_millis(250));
    assert_eq!(k.max_in_flight.get(), 100_000);
    assert_eq!(k.fallback_dir, PathBuf::from("./data/fallback/kafka"));
    assert_eq!(k.security_protocol, KafkaSecurity::Plaintext);
    assert_eq!(k.sasl_mechanism, SaslMechanism::Plain);
    let config = load_text(
        "journal:\n  kind: kafka\n  kafka:\n    brokers: k1:9092\n    security_protocol: sasl_plaintext\n    sasl_mechanism: plain\n    sasl_username: collector\n    sasl_password_env: KAFKA_PASSWORD\n",
        &[],
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    let JournalConfig::Kafka(k) = config.journal else {
        panic!("not kafka: {:?}", config.journal)
    };
    assert_eq!(
        (k.sasl_mechanism, k.sasl_username.as_deref()),
        (SaslMechanism::Plain, Some("collector"))
    );
    // Without `kind: kafka` the producer's keys are not read.
    assert_eq!(
        load_text("journal: {kafka: {topic: t}}\n", &[]).map(|c| c.journal),
        Ok(JournalConfig::Local)
    );
}

#[test]
fn kafka_journal_errors_are_located() {
    assert_eq!(
        load_text("journal:\n  kind: kafak\n", &[]),
        Err(vec![
            "F:2:9: journal.kind: unknown journal kind `kafak`, expected one of local, kafka"
                .to_string()
        ])
    );
    assert_eq!(
        load_text("journal:\n  kind: kafka\n", &[]),
        Err(vec![
            "F:2:9: journal.kind: `kind: kafka` needs `journal.kafka.brokers` (comma-separated host:port)"
                .to_string()
        ])
    );
    assert_eq!(
        load_text(
            "journal:\n  kind: kafka\n  kafka:\n    brokers: k1\n    topic: \"a b\"\n    security_protocol: tls\n    sasl_password_env: \"s3cr3t!\"\n    sasl_mechanism: scram_sha_512\n",
            &[]
        ),
        Err(vec![
            "F:4:14: journal.kafka.brokers: expected comma-separated host:port, found `k1`"
                .to_string(),
            "F:5:12: journal.kafka.topic: expected a Kafka topic name (1 to 249 of a-z A-Z 0-9 . _ -), found `a b`"
                .to_string(),
            "F:6:24: journal.kafka.security_protocol: unknown security protocol `tls`, expected one of plaintext, sasl_plaintext, ssl, sasl_ssl"
                .to_string(),
            "F:7:24: journal.kafka.sasl_password_env: expected the name of an environment variable (letters, digits, `_`), found `s3cr3t!`; the password itself never goes in the config"
                .to_string(),
            "F:2:9: journal.kind: `kind: kafka` needs `journal.kafka.brokers` (comma-separated host:port)"
                .to_string(),
        ])
    );
}

#[test]
fn kafka_journal_tls_is_configured_from_the_file_and_the_environment() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = |name: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, "PEM").unwrap_or_else(|e| panic!("{e}"));
        path.display().to_string()
    };
    let (ca, cert, key) = (file("ca.pem"), file("client.pem"), file("client.key"));
    let config = load_text(
        &format!(
            "journal:\n  kind: kafka\n  kafka:\n    brokers: k1:9093\n    security_protocol: sasl_ssl\n    sasl_mechanism: scram_sha_256\n    sasl_username: collector\n    sasl_password_env: KAFKA_PASSWORD\n    tls:\n      ca: {ca}\n"
        ),
        &[
            ("BACKFLOW__JOURNAL__KAFKA__TLS__CERTIFICATE", &cert),
            ("BACKFLOW__JOURNAL__KAFKA__TLS__KEY", &key),
            ("BACKFLOW__JOURNAL__KAFKA__TLS__KEY_PASSWORD_ENV", "KAFKA_KEY_PASSWORD"),
        ],
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    let JournalConfig::Kafka(k) = config.journal else {
        panic!("not kafka: {:?}", config.journal)
    };
    assert_eq!(k.security_protocol, KafkaSecurity::SaslSsl);
    assert_eq!(
        k.tls,
        Box::new(crate::config::model::KafkaTls {
            ca: Some(PathBuf::from(&ca)),
            certificate: Some(PathBuf::from(&cert)),
            key: Some(PathBuf::from(&key)),
            key_password_env: Some("KAFKA_KEY_PASSWORD".to_string()),
        })
    );
    // `ssl` alone: the system trust store, no client certificate.
    let config = load_text(
        "journal:\n  kind: kafka\n  kafka: {brokers: \"k1:9093\", security_protocol: ssl}\n",
        &[],
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    let JournalConfig::Kafka(k) = config.journal else {
        panic!("not kafka: {:?}", config.journal)
    };
    assert_eq!(
        (k.security_protocol, k.tls),
        (KafkaSecurity::Ssl, Box::default())
    );
}

#[test]
fn kafka_journal_tls_errors_are_located() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let cert = dir.path().join("client.pem");
    std::fs::write(&cert, "PEM").unwrap_or_else(|e| panic!("{e}"));
    let cert = cert.display().to_string();
    let journal =
        |kafka: &str| format!("journal:\n  kind: kafka\n  kafka:\n    brokers: k1:9093\n{kafka}");
    // TLS settings with a plaintext protocol.
    assert_eq!(
        load_text(&journal("    tls: {ca: /no/such/ca.pem}\n"), &[]),
        Err(vec![
            "F:5:15: journal.kafka.tls.ca: `/no/such/ca.pem` does not exist (a relative path is from the working directory)".to_string(),
            "F:5:15: journal.kafka.tls.ca: TLS settings need `journal.kafka.security_protocol: ssl` or `sasl_ssl`, not `plaintext`".to_string(),
        ])
    );
    // A certificate without its key; a key password without a key; a SASL protocol without
    // its login.
    assert_eq!(
        load_text(
            &journal(&format!("    security_protocol: sasl_ssl\n    tls:\n      certificate: {cert}\n      key_password_env: \"k-p\"\n")),
            &[]
        ),
        Err(vec![
            "F:8:25: journal.kafka.tls.key_password_env: expected the name of an environment variable (letters, digits, `_`), found `k-p`; the password itself never goes in the config".to_string(),
            "F:7:20: journal.kafka.tls.certificate: a client certificate needs its private key in `journal.kafka.tls.key`".to_string(),
            "F:2:9: journal.kind: `security_protocol: sasl_ssl` needs `journal.kafka.sasl_username` and `journal.kafka.sasl_password_env`".to_string(),
        ])
    );
    // From the environment: the variable is named.
    assert_eq!(
        load_text(
            &journal("    security_protocol: ssl\n"),
            &[("BACKFLOW__JOURNAL__KAFKA__TLS__KEY_PASSWORD_ENV", "KAFKA_KEY_PASSWORD")]
        ),
        Err(vec![
            "<environment>: BACKFLOW__JOURNAL__KAFKA__TLS__KEY_PASSWORD_ENV: a key password needs the encrypted key in `journal.kafka.tls.key`".to_string(),
        ])
    );
}

#[test]
fn bad_env_value_names_the_variable() {
    let errors = DaemonConfig::load(None, env(&[("BACKFLOW__SHUTDOWN__GRACE_SECONDS", "soon")]));
    let messages: Vec<String> = errors
        .err()
        .unwrap_or_default()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        messages,
        [
            "<environment>: BACKFLOW__SHUTDOWN__GRACE_SECONDS: expected a whole number of seconds, found `soon`"
        ]
    );
}
