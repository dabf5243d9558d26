use super::*;
use crate::config::daemon::KafkaSecurity;
use crate::config::model::{
    KafkaFormat, KafkaSasl, KafkaTls, KafkaTopics, Misfire, Overlap, RetryPolicy, SaslMechanism,
    StartFrom,
};

const MINIMAL: &str = "name: p\nsource: {type: object_store_files, url: memory://in}\n\
                       sink: {type: parquet, dataset: d, partition_by: {column: ts}}\n";

fn load(text: &str) -> Result<Pipeline, Vec<String>> {
    let opts = LoadOptions {
        schemas_dir: Some(PathBuf::from("schemas")),
        ..LoadOptions::default()
    };
    load_pipeline_str(Path::new("p.yaml"), text, &opts)
        .map_err(|errors| errors.iter().map(ToString::to_string).collect())
}

fn errors(text: &str) -> Vec<String> {
    match load(text) {
        Ok(pipeline) => panic!("expected errors, got {pipeline:?}"),
        Err(errors) => errors,
    }
}

#[test]
fn minimal_pipeline_gets_the_defaults() {
    let pipeline = load(MINIMAL).unwrap_or_else(|e| panic!("{e:?}"));
    let SourceConfig::ObjectStoreFiles(source) = &pipeline.source else {
        panic!("expected an object_store_files source");
    };
    assert_eq!(source.max_files_per_batch.get(), 100);
    assert_eq!(source.max_bytes_per_batch.get(), 256 * 1024 * 1024);
    assert_eq!(source.suffixes.len(), 8);
    assert_eq!(
        (source.format, source.compression),
        (FileFormat::Auto, Compression::Auto)
    );
    assert_eq!(source.csv, CsvOptions::default());
    let SinkConfig::Parquet(sink) = &pipeline.sink else {
        panic!("expected a parquet sink");
    };
    assert_eq!(
        (sink.granularity, sink.row_group_rows.get()),
        (Granularity::Hour, 1_000_000)
    );
    assert!(
        pipeline.schedule.is_none() && pipeline.tests.is_empty() && pipeline.transforms.is_empty()
    );
}

#[test]
fn maps_keep_their_written_order() {
    let text = format!(
        "{MINIMAL}transforms:\n  - rename: {{z: a, b: y}}\n  - derive: {{c2: c * 2, a1: c2 + 1}}\n  - cast: {{z: int64, b: date}}\n"
    );
    let pipeline = load(&text).unwrap_or_else(|e| panic!("{e:?}"));
    let steps: Vec<String> = pipeline
        .transforms
        .iter()
        .map(|step| match step {
            TransformStep::Rename(pairs) => format!("{pairs:?}"),
            TransformStep::Derive(pairs) => format!(
                "{:?}",
                pairs
                    .iter()
                    .map(|(c, e)| (c, &e.source))
                    .collect::<Vec<_>>()
            ),
            TransformStep::Cast(pairs) => format!("{pairs:?}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        steps,
        [
            r#"[("z", "a"), ("b", "y")]"#,
            r#"[("c2", "c * 2"), ("a1", "c2 + 1")]"#,
            r#"[("z", Int64), ("b", Date)]"#,
        ]
    );
}

#[test]
fn empty_column_names_and_clashing_renames_are_errors() {
    let text = format!(
        "{MINIMAL}transforms:\n  - rename: {{a: x, b: x}}\n  - drop: [a, '']\n  - derive: {{'': '1'}}\n  - cast: {{a: integer}}\n"
    );
    assert_eq!(
        errors(&text),
        [
            "p.yaml:5:23: transforms[0].rename.b: `x` is already the target of the rename at line 5, column 17",
            "p.yaml:6:15: transforms[1].drop[1]: column name must not be empty",
            "p.yaml:7:14: transforms[2].derive: column name must not be empty",
            "p.yaml:8:15: transforms[3].cast.a: unknown column type `integer`, expected one of string, int64, float64, boolean, timestamp, date",
        ]
    );
}

#[test]
fn csv_delimiter_is_one_ascii_character() {
    let text = MINIMAL.replace(
        "url: memory://in}",
        "url: memory://in, csv: {delimiter: '；'}}",
    );
    assert_eq!(
        errors(&text),
        ["p.yaml:2:71: source.csv.delimiter: expected one ASCII character, found `；`"]
    );
}

#[test]
fn test_rows_hold_scalars_only() {
    let text = format!("{MINIMAL}tests:\n  - name: t\n    input: [{{a: 1, b: [1]}}]\n");
    assert_eq!(
        errors(&text),
        ["p.yaml:6:13: tests[0].input[0].b: expected a scalar or null, found a sequence"]
    );
}

#[test]
fn validate_resolves_the_shipped_schema() {
    let text = format!("{MINIMAL}transforms:\n  - validate: {{schema: behavior_event}}\n");
    let pipeline = load(&text).unwrap_or_else(|e| panic!("{e:?}"));
    assert!(
        matches!(&pipeline.transforms[0], TransformStep::Validate(s) if s.name == "behavior_event")
    );
}

#[test]
fn empty_file_says_so() {
    assert_eq!(
        errors("# nothing here yet\n"),
        ["p.yaml: the file is empty; expected a pipeline (name, source, sink, ...)"]
    );
}

#[test]
fn names_are_lower_snake_case() {
    assert!(check_ident("behavior_events2").is_ok());
    for bad in ["", "2x", "Behavior", "a-b", "_a", "a b"] {
        assert!(check_ident(bad).is_err(), "{bad}");
    }
}

#[test]
fn five_field_cron_keeps_crontab_weekdays() {
    use chrono::TimeZone;
    let after = chrono::Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).single();
    let after = after.unwrap_or_else(|| panic!("valid date"));
    let next = |expr: &str| {
        let schedule = parse_cron(expr).unwrap_or_else(|e| panic!("{e}"));
        schedule.after(&after).next().map(|t| t.to_rfc3339())
    };
    // 2024-01-01 is a Monday.
    assert_eq!(
        next("30 9 * * 1").as_deref(),
        Some("2024-01-01T09:30:00+00:00")
    );
    assert_eq!(
        next("0 0 * * 0").as_deref(),
        Some("2024-01-07T00:00:00+00:00")
    );
    assert_eq!(
        next("0 0 * * 6-7").as_deref(),
        Some("2024-01-06T00:00:00+00:00")
    );
    assert_eq!(
        next("0 0 * * 2-3").as_deref(),
        Some("2024-01-02T00:00:00+00:00")
    );
    assert_eq!(
        next("15 0 0 * * *").as_deref(),
        Some("2024-01-01T00:00:15+00:00")
    );
    assert_eq!(
        next("* * * * *").as_deref(),
        Some("2024-01-01T00:01:00+00:00")
    );
}

#[test]
fn cron_with_the_wrong_field_count_says_what_is_expected() {
    let err = parse_cron("* * *").err().unwrap_or_default();
    assert!(err.contains("expected 5 fields"), "{err}");
    assert!(parse_cron("0 0 * * 8").is_err());
}

const KAFKA_SINK: &str = "sink: {type: parquet, dataset: d, partition_by: {column: ts}}\n";

#[test]
fn kafka_source_gets_its_defaults_and_an_anchored_pattern() {
    let text = format!(
        "name: p\nsource:\n  type: kafka\n  brokers: [\"127.0.0.1:9092\"]\n  topic_pattern: \"events\\\\..*\"\n  group_id: g\n{KAFKA_SINK}"
    );
    let pipeline = load(&text).unwrap_or_else(|e| panic!("{e:?}"));
    let SourceConfig::Kafka(source) = &pipeline.source else {
        panic!("expected a kafka source");
    };
    assert_eq!(
        source.topics,
        KafkaTopics::Pattern("^events\\..*".to_string())
    );
    assert_eq!(
        (source.format, source.start_from),
        (KafkaFormat::Json, StartFrom::Earliest)
    );
    assert_eq!(source.max_records_per_batch.get(), 200_000);
    assert_eq!(source.idle.as_millis(), 2_000);
    assert!(source.headers_column.is_none() && source.key_column.is_none());
}

#[test]
fn kafka_source_errors_are_located_and_all_reported() {
    let text = format!(
        "name: p\nsource:\n  type: kafka\n  brokers: [\"127.0.0.1\", \"ok:9092\"]\n  topics: [\"a b\"]\n  topic_pattern: \"(\"\n  group_id: \"\"\n  idle_ms: 0\n{KAFKA_SINK}"
    );
    let errors = errors(&text);
    let want = [
        "p.yaml:4:13: source.brokers[0]: expected `host:port`, found `127.0.0.1`",
        "p.yaml:6:18: source.topic_pattern: give either `topics` or `topic_pattern`, not both",
        "p.yaml:7:13: source.group_id: group id must not be empty",
        "p.yaml:8:12: source.idle_ms: expected a number greater than 0, found 0",
    ];
    assert_eq!(errors, want, "{errors:#?}");
}

const FILES_SOURCE: &str = "name: p\nsource: {type: object_store_files, url: memory://in}\n";

#[test]
fn kafka_sink_gets_its_defaults_and_keeps_headers_and_client_properties_in_order() {
    let text = format!(
        "{FILES_SOURCE}sink:\n  type: kafka\n  brokers: [\"127.0.0.1:9092\"]\n  topic: events.out\n  key_column: user_id\n  headers: {{origin: backflow, env: test}}\n  client: {{linger.ms: 20, compression.type: lz4}}\n"
    );
    let pipeline = load(&text).unwrap_or_else(|e| panic!("{e:?}"));
    let SinkConfig::Kafka(sink) = &pipeline.sink else {
        panic!("expected a kafka sink");
    };
    assert_eq!(pipeline.sink.dataset(), None);
    assert_eq!(
        (sink.topic.as_str(), sink.key_column.as_str()),
        ("events.out", "user_id")
    );
    assert_eq!(sink.format, crate::config::model::KafkaSinkFormat::Json);
    assert_eq!(
        (
            sink.message_timeout.as_millis(),
            sink.max_in_flight.get(),
            sink.message_max_bytes
        ),
        (30_000, 100_000, 1_000_000)
    );
    let pairs = |v: &[(String, String)]| {
        v.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
    };
    assert_eq!(pairs(&sink.headers), ["origin=backflow", "env=test"]);
    assert_eq!(
        pairs(&sink.client),
        ["linger.ms=20", "compression.type=lz4"]
    );
}

#[test]
fn kafka_sink_errors_are_located_and_all_reported() {
    let text = format!(
        "{FILES_SOURCE}sink:\n  type: kafka\n  brokers: [\"nohost\"]\n  topic: \"a b\"\n  key_column: \"\"\n  headers: {{backflow-row: x}}\n  message_max_bytes: 10\n  sasl_password_env: \"p@ss\"\n  client: {{acks: \"1\", sasl.password: hunter2, no.such.property: 1, linger.ms: soon}}\n"
    );
    let errors = errors(&text);
    let want = [
        "p.yaml:5:13: sink.brokers[0]: expected `host:port`, found `nohost`",
        "p.yaml:6:10: sink.topic: `a b` is not a topic name (1-249 of `a-z A-Z 0-9 . _ -`)",
        "p.yaml:7:15: sink.key_column: column name must not be empty",
        "p.yaml:8:13: sink.headers: `backflow-row`: header names starting with `backflow-` are reserved for the dedup headers",
        "p.yaml:9:22: sink.message_max_bytes: expected a byte count from 1000 to 1000000000, found 10",
        "p.yaml:10:22: sink.sasl_password_env: `p@ss` is not an environment variable name (`[A-Z_][A-Z0-9_]*`); the secret itself never goes in YAML",
        "p.yaml:11:12: sink.client.acks: `acks` cannot be set here: the sink always waits for all in-sync replicas",
        "p.yaml:11:23: sink.client.sasl.password: `sasl.password` holds a secret, and secrets never go in the YAML; use `sasl_password_env`",
    ];
    assert_eq!(errors[..want.len()], want, "{errors:#?}");
    // librdkafka's own checks of the `client` properties, located at the value.
    assert_eq!(errors.len(), want.len() + 2, "{errors:#?}");
    assert!(
        errors[want.len()].starts_with(
            "p.yaml:11:65: sink.client.no.such.property: librdkafka refuses `no.such.property: 1`"
        ),
        "{errors:#?}"
    );
    assert!(
        errors[want.len() + 1].starts_with(
            "p.yaml:11:79: sink.client.linger.ms: librdkafka refuses `linger.ms: soon`"
        ),
        "{errors:#?}"
    );
}

#[test]
fn a_journal_pipeline_cannot_publish_to_kafka() {
    let text = "name: p\nsource: {type: journal}\nsink: {type: kafka, brokers: [\"k:9092\"], topic: hits, key_column: event_id}\n";
    let errors = errors(text);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].starts_with("p.yaml:3:49: sink: a `journal` pipeline is metered for billing"),
        "{errors:#?}"
    );
}

#[test]
fn kafka_source_sasl_names_its_secret_and_defaults_to_none() {
    let text = format!(
        "name: p\nsource:\n  type: kafka\n  brokers: [\"127.0.0.1:9092\"]\n  topics: [t]\n  group_id: g\n  sasl: {{mechanism: plain, username: backflow, secret: KAFKA_PASSWORD}}\n{KAFKA_SINK}"
    );
    let pipeline = load(&text).unwrap_or_else(|e| panic!("{e:?}"));
    let SourceConfig::Kafka(source) = &pipeline.source else {
        panic!("expected a kafka source");
    };
    assert_eq!(
        source.sasl,
        Some(KafkaSasl {
            mechanism: SaslMechanism::Plain,
            username: "backflow".to_string(),
            secret: "KAFKA_PASSWORD".to_string(),
        })
    );
    assert_eq!(
        SaslMechanism::ScramSha512.librdkafka_name(),
        "SCRAM-SHA-512"
    );
    let plain = text.replace(
        "  sasl: {mechanism: plain, username: backflow, secret: KAFKA_PASSWORD}\n",
        "",
    );
    let pipeline = load(&plain).unwrap_or_else(|e| panic!("{e:?}"));
    let SourceConfig::Kafka(source) = &pipeline.source else {
        panic!("expected a kafka source");
    };
    assert_eq!(source.sasl, None);
}

#[test]
fn kafka_sasl_errors_are_located() {
    let source = |sasl: &str| {
        format!(
            "name: p\nsource:\n  type: kafka\n  brokers: [\"127.0.0.1:9092\"]\n  topics: [t]\n  group_id: g\n  sasl:\n{sasl}{KAFKA_SINK}"
        )
    };
    // The user name empty and the secret not a variable name: both reported.
    let found = errors(&source(
        "    mechanism: plain\n    username: \"\"\n    secret: hunter2!\n",
    ));
    let want = [
        "p.yaml:9:15: source.sasl.username: user name must not be empty",
        "p.yaml:10:13: source.sasl.secret: `hunter2!` is not an environment variable name (`[A-Z_][A-Z0-9_]*`); the secret itself never goes in YAML",
    ];
    assert_eq!(found, want, "{found:#?}");
    // A mechanism librdkafka would not log in with here.
    let found = errors(&source(
        "    mechanism: gssapi\n    username: u\n    secret: S\n",
    ));
    assert_eq!(
        found,
        [
            "p.yaml:8:16: source.sasl.mechanism: unknown variant `gssapi`, expected one of plain, scram_sha_256, scram_sha_512"
        ],
        "{found:#?}"
    );
    // SCRAM is accepted (librdkafka is built with OpenSSL).
    let pipeline = load(&source(
        "    mechanism: scram_sha_256\n    username: u\n    secret: S\n",
    ))
    .unwrap_or_else(|e| panic!("{e:?}"));
    let SourceConfig::Kafka(kafka) = &pipeline.source else {
        panic!("expected a kafka source");
    };
    assert_eq!(
        kafka.sasl.as_ref().map(|s| s.mechanism),
        Some(SaslMechanism::ScramSha256)
    );
    // A password in YAML is refused (by its key; the value is never echoed).
    let found = errors(&source(
        "    mechanism: plain\n    username: u\n    password: s3cr3t\n",
    ));
    assert_eq!(
        found,
        [
            "p.yaml:10:5: source.sasl.password: unknown field `password`, expected one of mechanism, username, secret"
        ],
        "{found:#?}"
    );
}

/// PEM stand-ins `ca.pem`, `client.pem`, `client.key` in a temporary directory (the loader
/// checks that they exist; librdkafka reads them when a client starts).
fn tls_files() -> (tempfile::TempDir, [String; 3]) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let files = ["ca.pem", "client.pem", "client.key"].map(|name| {
        let path = dir.path().join(name);
        std::fs::write(&path, "PEM").unwrap_or_else(|e| panic!("{e}"));
        path.display().to_string()
    });
    (dir, files)
}

#[test]
fn kafka_tls_settings_reach_the_source_the_sink_and_the_notices() {
    let (_dir, [ca, cert, key]) = tls_files();
    let text = format!(
        "name: p\nsource:\n  type: kafka\n  brokers: [\"k1:9093\"]\n  topics: [t]\n  group_id: g\n  security_protocol: sasl_ssl\n  sasl: {{mechanism: scram_sha_512, username: u, secret: S}}\n  tls:\n    ca: {ca}\n    certificate: {cert}\n    key: {key}\n    key_password_env: KEY_PASSWORD\n{KAFKA_SINK}"
    );
    let pipeline = load(&text).unwrap_or_else(|e| panic!("{e:?}"));
    let SourceConfig::Kafka(source) = &pipeline.source else {
        panic!("expected a kafka source");
    };
    assert_eq!(source.security_protocol, KafkaSecurity::SaslSsl);
    assert_eq!(
        source.tls,
        Box::new(KafkaTls {
            ca: Some(PathBuf::from(&ca)),
            certificate: Some(PathBuf::from(&cert)),
            key: Some(PathBuf::from(&key)),
            key_password_env: Some("KEY_PASSWORD".to_string()),
        })
    );
    // `sasl` alone is still SASL without TLS; `ssl` alone trusts the system's CAs.
    let text = format!(
        "name: p\nsource:\n  type: kafka\n  brokers: [\"k1:9093\"]\n  topics: [t]\n  group_id: g\n  sasl: {{mechanism: plain, username: u, secret: S}}\n{KAFKA_SINK}"
    );
    let pipeline = load(&text).unwrap_or_else(|e| panic!("{e:?}"));
    let SourceConfig::Kafka(source) = &pipeline.source else {
        panic!("expected a kafka source");
    };
    assert_eq!(source.security_protocol, KafkaSecurity::SaslPlaintext);
    let text = format!(
        "{FILES_SOURCE}sink:\n  type: kafka\n  brokers: [\"k1:9093\"]\n  topic: out\n  key_column: k\n  security_protocol: ssl\n"
    );
    let pipeline = load(&text).unwrap_or_else(|e| panic!("{e:?}"));
    let SinkConfig::Kafka(sink) = &pipeline.sink else {
        panic!("expected a kafka sink");
    };
    assert_eq!(
        (sink.security_protocol, &sink.tls),
        (KafkaSecurity::Ssl, &Box::default())
    );
    let text = format!(
        "{FILES_SOURCE}sink:\n  type: kafka\n  brokers: [\"k1:9093\"]\n  topic: out\n  key_column: k\n  security_protocol: sasl_ssl\n  sasl_mechanism: scram_sha_256\n  sasl_username: u\n  sasl_password_env: P\n  tls:\n    ca: {ca}\n"
    );
    let pipeline = load(&text).unwrap_or_else(|e| panic!("{e:?}"));
    let SinkConfig::Kafka(sink) = &pipeline.sink else {
        panic!("expected a kafka sink");
    };
    assert_eq!(
        (sink.security_protocol, sink.sasl_mechanism, &sink.tls.ca),
        (
            KafkaSecurity::SaslSsl,
            SaslMechanism::ScramSha256,
            &Some(PathBuf::from(&ca))
        )
    );
}

#[test]
fn kafka_tls_errors_are_located() {
    let (_dir, [ca, cert, _]) = tls_files();
    let source = |rest: &str| {
        format!(
            "name: p\nsource:\n  type: kafka\n  brokers: [\"k1:9093\"]\n  topics: [t]\n  group_id: g\n{rest}{KAFKA_SINK}"
        )
    };
    // TLS settings with a protocol without TLS; a file that does not exist.
    let found = errors(&source("  tls:\n    ca: /no/such/ca.pem\n"));
    let want = [
        "p.yaml:8:5: source.tls: TLS settings need `security_protocol: ssl` or `sasl_ssl`, not `plaintext`",
    ];
    assert_eq!(found, want, "{found:#?}");
    let found = errors(&source(
        "  security_protocol: ssl\n  tls:\n    ca: /no/such/ca.pem\n",
    ));
    let want = [
        "p.yaml:9:9: source.tls.ca: `/no/such/ca.pem` does not exist (a relative path is from the working directory)",
    ];
    assert_eq!(found, want, "{found:#?}");
    // A certificate without its key; an unknown protocol; a SASL protocol without a login; a
    // login with a protocol without SASL.
    let found = errors(&source(&format!(
        "  security_protocol: ssl\n  tls:\n    key_password_env: KEY_PASSWORD\n    certificate: {cert}\n"
    )));
    let want = [
        "p.yaml:10:18: source.tls.certificate: a client certificate needs its private key in `tls.key`",
        "p.yaml:9:23: source.tls.key_password_env: a key password needs the encrypted key in `tls.key`",
    ];
    assert_eq!(found, want, "{found:#?}");
    let found = errors(&source("  security_protocol: tls\n"));
    let want = [
        "p.yaml:7:22: source.security_protocol: unknown variant `tls`, expected one of plaintext, sasl_plaintext, ssl, sasl_ssl",
    ];
    assert_eq!(found, want, "{found:#?}");
    let found = errors(&source("  security_protocol: sasl_ssl\n"));
    let want = [
        "p.yaml:7:22: source.security_protocol: `sasl_ssl` needs a `sasl` login (mechanism, username, secret)",
    ];
    assert_eq!(found, want, "{found:#?}");
    let found = errors(&source(
        "  security_protocol: ssl\n  sasl: {mechanism: plain, username: u, secret: S}\n",
    ));
    let want = [
        "p.yaml:8:21: source.sasl: a `sasl` login needs `security_protocol: sasl_plaintext` or `sasl_ssl`, not `ssl`",
    ];
    assert_eq!(found, want, "{found:#?}");
    // The sink: the same rules, and the TLS properties cannot be set through `client`.
    let found = errors(&format!(
        "{FILES_SOURCE}sink:\n  type: kafka\n  brokers: [\"k1:9093\"]\n  topic: out\n  key_column: k\n  security_protocol: sasl_plaintext\n  sasl_username: u\n  sasl_password_env: P\n  client: {{ssl.endpoint.identification.algorithm: none, ssl.key.pem: x}}\n  tls:\n    ca: {ca}\n"
    ));
    let want = [
        "p.yaml:13:5: sink.tls: TLS settings need `security_protocol: ssl` or `sasl_ssl`, not `sasl_plaintext`",
        "p.yaml:11:12: sink.client.ssl.endpoint.identification.algorithm: `ssl.endpoint.identification.algorithm` cannot be set here: the brokers' host names are always verified",
        "p.yaml:11:57: sink.client.ssl.key.pem: `ssl.key.pem` holds a secret, and secrets never go in the YAML; use the files of `tls`",
    ];
    assert_eq!(found, want, "{found:#?}");
    // Dataset change notices take the same settings.
    let (jobs, found) = load_job_text(&format!(
        "kind: dataset\nname: j\ndataset: {{type: behavior, output: b, time_grain: day}}\npublish:\n  notify:\n    kafka:\n      brokers: [\"k1:9093\"]\n      topic: changes\n      security_protocol: ssl\n      tls: {{certificate: {cert}}}\n"
    ));
    assert!(jobs.is_empty());
    assert_eq!(
        found,
        [
            "j.yaml:10:26: publish.notify.kafka.tls.certificate: a client certificate needs its private key in `tls.key`"
        ],
        "{found:#?}"
    );
}

#[test]
fn schedule_policies_get_defaults_and_parse() {
    let pipeline = load(&format!("{MINIMAL}schedule: {{cron: \"*/5 * * * * *\"}}\n"))
        .unwrap_or_else(|e| panic!("{e:?}"));
    let s = pipeline.schedule.unwrap_or_else(|| panic!("a schedule"));
    assert_eq!(
        (s.overlap, s.misfire, s.retries, s.workspace.as_str()),
        (
            Overlap::Skip,
            Misfire::RunOnce,
            RetryPolicy::default(),
            "default"
        )
    );
    let text = format!(
        "{MINIMAL}schedule:\n  cron: \"0 5 * * *\"\n  overlap: queue\n  misfire: skip\n  workspace: ws1\n  retries: {{max: 3, backoff_initial: 500ms, backoff_max: 2m}}\n"
    );
    let s = load(&text)
        .unwrap_or_else(|e| panic!("{e:?}"))
        .schedule
        .unwrap_or_else(|| panic!("a schedule"));
    assert_eq!(
        (s.overlap, s.misfire, s.workspace.as_str()),
        (Overlap::Queue, Misfire::Skip, "ws1")
    );
    assert_eq!(s.retries.max, 3);
    assert_eq!(
        [
            s.retries.backoff(1),
            s.retries.backoff(2),
            s.retries.backoff(9)
        ],
        [
            std::time::Duration::from_millis(500),
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(120)
        ]
    );
}

#[test]
fn schedule_errors_are_located_and_all_reported() {
    let text = format!("{MINIMAL}schedule:\n  cron: \"0 0 30 2 *\"\n  overlap: sometimes\n");
    assert_eq!(
        errors(&text),
        ["p.yaml:6:12: schedule.overlap: unknown variant `sometimes`, expected one of skip, queue"]
    );
    let text = format!(
        "{MINIMAL}schedule:\n  cron: \"0 0 30 2 *\"\n  workspace: \" \"\n  retries: {{max: 21, backoff_initial: 10x, backoff_max: 8d}}\n"
    );
    assert_eq!(
        errors(&text),
        [
            "p.yaml:5:9: schedule.cron: cron expression `0 0 30 2 *` never fires: no date matches it (e.g. February 30)",
            "p.yaml:6:14: schedule.workspace: the workspace must not be empty",
            "p.yaml:7:18: schedule.retries.max: expected a number from 0 to 20, found 21",
            "p.yaml:7:39: schedule.retries.backoff_initial: expected a duration like `500ms`, `30s`, `5m`, `6h` or `1d`, found `10x`",
            "p.yaml:7:57: schedule.retries.backoff_max: invalid duration `8d`: longer than 7 days",
        ]
    );
    let text = format!(
        "{MINIMAL}schedule:\n  cron: \"* * * * *\"\n  retries: {{max: 1, backoff_initial: 5m, backoff_max: 1m}}\n"
    );
    assert_eq!(
        errors(&text),
        [
            "p.yaml:6:55: schedule.retries.backoff_max: backoff_max (60s) is shorter than backoff_initial (300s)"
        ]
    );
}

#[test]
fn dataset_job_refresh_is_checked_against_the_time_grain() {
    let job = "kind: dataset\nname: j\ndataset: {type: behavior, output: b, time_grain: day}\n";
    let (jobs, errors) = load_job_text(&format!(
        "{job}refresh:\n  period: day\n  wait_for_sources: {{timeout: 2h}}\n"
    ));
    assert!(errors.is_empty(), "{errors:?}");
    let wait = jobs[0]
        .refresh
        .wait_for_sources
        .unwrap_or_else(|| panic!("a wait"));
    assert_eq!(
        (wait.timeout.as_secs(), wait.poll_interval.as_secs()),
        (7200, 30)
    );
    let (_, errors) = load_job_text(&format!(
        "{job}refresh:\n  period: hour\n  wait_for_sources: {{timeout: 0s}}\n"
    ));
    assert_eq!(
        errors,
        [
            "j.yaml:5:11: refresh.period: `hour` periods need `dataset.time_grain: hour` (a day row cannot be rebuilt one hour at a time)",
            "j.yaml:6:31: refresh.wait_for_sources.timeout: invalid duration `0s`: it must be greater than 0",
        ]
    );
}

#[test]
fn dataset_change_notices_take_kafka_producer_settings_with_located_errors() {
    let job = "kind: dataset\nname: j\ndataset: {type: behavior, output: b, time_grain: day}\n";
    let (jobs, errors) = load_job_text(&format!(
        "{job}publish:\n  notify:\n    kafka: {{brokers: [\"127.0.0.1:9092\"], topic: datasets.changes}}\n"
    ));
    assert!(errors.is_empty(), "{errors:?}");
    let notify = jobs[0]
        .publish
        .notify
        .as_ref()
        .unwrap_or_else(|| panic!("a notice"));
    assert_eq!(
        (notify.topic.as_str(), notify.key_column.as_str()),
        ("datasets.changes", "dataset")
    );
    let (_, errors) = load_job_text(&format!(
        "{job}publish:\n  notify:\n    kafka: {{brokers: [x], topic: \"a b\", client: {{acks: 0}}}}\n"
    ));
    assert_eq!(
        errors,
        [
            "j.yaml:6:23: publish.notify.kafka.brokers[0]: expected `host:port`, found `x`",
            "j.yaml:6:34: publish.notify.kafka.topic: `a b` is not a topic name (1-249 of `a-z A-Z 0-9 . _ -`)",
            "j.yaml:6:50: publish.notify.kafka.client.acks: `acks` cannot be set here: the sink always waits for all in-sync replicas",
        ]
    );
}

/// Loads a dataset job file; errors with the file named `j.yaml`.
fn load_job_text(text: &str) -> (Vec<DatasetJob>, Vec<String>) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("j.yaml");
    std::fs::write(&file, text).unwrap_or_else(|e| panic!("{e}"));
    let report = load_pipelines(&[file], &LoadOptions::default());
    let prefix = format!("{}/", dir.path().display());
    let errors = report
        .errors
        .iter()
        .map(|e| e.to_string().replace(&prefix, ""))
        .collect();
    (report.jobs, errors)
}

#[test]
fn http_source_gets_its_defaults() {
    let text = format!(
        "name: p\nsource:\n  type: http\n  url: https://api.example.com/v1/report\n  records: /data/list\n{KAFKA_SINK}"
    );
    let pipeline = load(&text).unwrap_or_else(|e| panic!("{e:?}"));
    let SourceConfig::Http(source) = &pipeline.source else {
        panic!("expected an http source");
    };
    assert_eq!(source.paging, crate::config::model::Paging::None);
    assert!(source.auth.is_none() && source.window.is_none() && source.success.is_none());
    assert_eq!(source.timeout.as_secs(), 30);
    assert_eq!(
        (source.retries.max, source.retries.initial.as_millis()),
        (5, 500)
    );
    assert_eq!(source.max_requests_per_run.get(), 1000);
    assert_eq!(source.max_pages_per_batch.get(), 100);
}

#[test]
fn http_source_errors_are_located_and_all_reported() {
    let text = format!(
        "name: p\nsource:\n  type: http\n  url: ftp://api.example.com/x\n  headers: {{\"bad header\": x}}\n  auth:\n    bearer: {{secret: my-token}}\n  paging:\n    cursor: {{param: c, from: next}}\n  window:\n    start_param: d\n    format: \"%Q\"\n    length: 1w\n    from: \"2026-13-01\"\n  records: /data\n  timeout: 30\n{KAFKA_SINK}"
    );
    let errors = errors(&text);
    let want = [
        "p.yaml:4:8: source.url: expected an http:// or https:// URL with a host, found scheme `ftp`",
        "p.yaml:5:13: source.headers: `bad header` is not a valid header name",
        "p.yaml:7:22: source.auth.bearer.secret: `my-token` is not an environment variable name (`[A-Z_][A-Z0-9_]*`); the secret itself never goes in YAML",
        "p.yaml:9:30: source.paging.cursor.from: `next` is not a JSON pointer: write `/next` (or `\"\"` for the whole body)",
        "p.yaml:12:13: source.window.format: invalid strftime format `%Q`",
        "p.yaml:13:13: source.window.length: expected a duration like `500ms`, `30s`, `5m`, `6h` or `1d`, found `1w`",
        "p.yaml:14:11: source.window.from: expected `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SS`, found `2026-13-01`",
        "p.yaml:16:12: source.timeout: expected a duration like `500ms`, `30s`, `5m`, `6h` or `1d`, found `30`",
    ];
    assert_eq!(errors, want, "{errors:#?}");
}

#[test]
fn listing_after_watermark_gets_its_default_interval() {
    let text = MINIMAL.replace(
        "url: memory://in}",
        "url: memory://in, listing: {mode: after_watermark}}",
    );
    let pipeline = load(&text).unwrap_or_else(|e| panic!("{e:?}"));
    let SourceConfig::ObjectStoreFiles(source) = &pipeline.source else {
        panic!("expected an object_store_files source");
    };
    assert_eq!(
        source.listing,
        crate::config::model::Listing::AfterWatermark {
            full_every: std::time::Duration::from_secs(3600)
        }
    );
    let text = MINIMAL.replace(
        "url: memory://in}",
        "url: memory://in, listing: {full_every: 5m}}",
    );
    assert_eq!(
        errors(&text),
        [
            "p.yaml:2:76: source.listing.full_every: `full_every` applies to `mode: after_watermark` only"
        ]
    );
}

fn job_errors(text: &str) -> Vec<String> {
    match job::load_job(Path::new("t.yaml"), text, &LoadOptions::default()) {
        Ok(loaded) => panic!("expected errors, got {:?}", loaded.job),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

const TAGS_HEAD: &str = "kind: dataset\nname: t\ndataset:\n  type: user_tags\n  output: t\n";

#[test]
fn user_tags_get_their_defaults() {
    let text = format!(
        "{TAGS_HEAD}  tags:\n    user_tag_a: {{type: count, window: 7d}}\n    user_tag_b: {{type: top_n, column: channel, n: 2, window: 12h}}\n"
    );
    let loaded = job::load_job(Path::new("t.yaml"), &text, &LoadOptions::default())
        .unwrap_or_else(|e| panic!("{e:?}"));
    let crate::config::model::DatasetBuild::UserTags(build) = &loaded.job.build else {
        panic!("expected user_tags");
    };
    assert_eq!(
        (
            build.source.as_str(),
            build.include_flagged,
            build.id_columns.len()
        ),
        ("ad_events", false, 7)
    );
    assert_eq!(build.window_end, crate::config::model_tags::WindowEnd::Day);
    assert_eq!(build.partition_rows, 4_000_000);
    assert_eq!(build.tags[0].defined_at, "t.yaml:7:5");
    assert_eq!(build.lookback(), crate::config::model_tags::Window::Days(7));
    assert_eq!(
        loaded.job.publish.max_null_ratio,
        [("user_id".to_string(), 0.0), ("id_type".to_string(), 0.0)]
    );
}

#[test]
fn a_dataset_job_that_is_not_valid_yaml_reports_its_syntax_error() {
    let dir = std::env::temp_dir().join(format!("backflow-bad-yaml-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let file = dir.join("t.yaml");
    std::fs::write(&file, "kind: dataset # a job\nname: t\ndataset: [1\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let report = load_pipelines(std::slice::from_ref(&file), &LoadOptions::default());
    std::fs::remove_dir_all(&dir).ok();
    let errors: Vec<String> = report.errors.iter().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(!errors[0].contains("unknown variant"), "{errors:?}");
}

#[test]
fn a_tiny_partition_size_is_a_located_error() {
    let text = format!(
        "{TAGS_HEAD}  partition_rows: 10\n  tags:\n    user_tag_a: {{type: count, window: 7d}}\n"
    );
    assert_eq!(
        job_errors(&text),
        [
            "t.yaml:6:19: dataset.partition_rows: partition_rows 10 is too small, expected at least 1000"
        ]
    );
}

#[test]
fn user_tag_errors_are_located_and_all_reported() {
    let text = format!(
        "{TAGS_HEAD}  id_columns: [idfa, phone]\n  tags:\n    clicks: {{type: count, window: 7x}}\n    user_tag_a: {{type: count, window: 0d, filter: \"endpoint = = 'x'\"}}\n    user_tag_r: {{type: ratio, numerator: user_tag_a, denominator: user_tag_b, min_denominator: 0}}\n    user_tag_l: {{type: last_seen, window: 1d}}\n    user_tag_n: {{type: count, window: 1d}}\n    user_tag_rfm:\n      type: rfm\n      recency: {{tag: user_tag_n, thresholds: [3, 1]}}\n      frequency: {{tag: user_tag_l, thresholds: [1], compare_to: median}}\n      monetary: {{tag: user_tag_n, thresholds: []}}\n    user_tag_p:\n      type: aipl\n      awareness: user_tag_zzz > 1\n      interest: user_tag_n > 1\n      purchase: user_tag_n > 2\n      loyalty: user_tag_n > 3\n    user_tag_t: {{type: top_n, column: channel, n: 0, window: 7d}}\npublish:\n  max_null_ratio: {{user_id: 0.1}}\n"
    );
    assert_eq!(
        job_errors(&text),
        [
            "t.yaml:6:22: dataset.id_columns[1]: unknown ID column `phone`, expected one of idfa, idfa_md5, imei, imei_md5, oaid, oaid_md5, android_id, android_id_md5, mac, mac_md5, caid, aaid",
            "t.yaml:8:5: dataset.tags.clicks: invalid tag name `clicks`, expected `user_tag_` followed by lower-case letters, digits and `_`, at most 64 characters",
            "t.yaml:8:35: dataset.tags.clicks.window: invalid window `7x`, expected whole days or hours such as `7d`, `30d`, `12h`",
            "t.yaml:9:39: dataset.tags.user_tag_a.window: window `0d` is empty, expected at least 1",
            "t.yaml:9:51: dataset.tags.user_tag_a.filter: invalid SQL expression `endpoint = = 'x'`: unable to parse 'endpoint = = 'x'' as Expr",
            "t.yaml:10:67: dataset.tags.user_tag_r.denominator: unknown tag `user_tag_b`: no tag is defined above this one",
            "t.yaml:10:96: dataset.tags.user_tag_r.min_denominator: expected a number greater than 0, found 0",
            "t.yaml:15:22: dataset.tags.user_tag_rfm.recency.tag: tag `user_tag_n` is a `count` tag, expected a `last_seen` tag",
            "t.yaml:15:46: dataset.tags.user_tag_rfm.recency.thresholds: thresholds must be strictly ascending, found [3.0, 1.0]",
            "t.yaml:16:24: dataset.tags.user_tag_rfm.frequency.tag: tag `user_tag_l` is a `last_seen` tag, expected a numeric tag (count, sum or ratio)",
            "t.yaml:16:65: dataset.tags.user_tag_rfm.frequency.compare_to: expected `mean` or a number, found `median`",
            "t.yaml:17:47: dataset.tags.user_tag_rfm.monetary.thresholds: expected at least one threshold",
            "t.yaml:20:18: dataset.tags.user_tag_p.awareness: unknown tag `user_tag_zzz`, expected one defined above: user_tag_l, user_tag_n",
            "t.yaml:24:51: dataset.tags.user_tag_t.n: expected a number greater than 0, found 0",
        ]
    );
    // A tag defined twice is a YAML error (duplicate key), located too.
    let text = format!(
        "{TAGS_HEAD}  tags:\n    user_tag_a: {{type: count, window: 7d}}\n    user_tag_a: {{type: count, window: 1d}}\n"
    );
    let errors = job_errors(&text);
    assert!(
        errors.len() == 1
            && errors[0].starts_with("t.yaml:8:5: dataset.tags: duplicate mapping key: user_tag_a"),
        "{errors:?}"
    );
}
