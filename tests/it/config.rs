//! Configuration loading through the public API: the shipped pipeline, located errors
//! (pinned as full `Display` lines), cross-file checks, the daemon config and the JSON Schema.
//!
//! Paths are relative to the package root (cargo's working directory for tests), so the pinned
//! messages are stable.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use backflow::config::daemon::{DaemonConfig, LogFormat};
use backflow::config::load::{
    LoadOptions, load_pipeline_str, load_pipelines, pipeline_json_schema,
};
use backflow::config::load_schema_file;
use backflow::config::model::{
    ColumnType, Granularity, Keep, SinkConfig, SourceConfig, TransformStep,
};
use backflow::storage::StorageUrl;

const FIXTURES: &str = "tests/fixtures/config";
const SCHEMA_JSON: &str = "schemas/pipeline.schema.json";

fn opts() -> LoadOptions {
    LoadOptions {
        schemas_dir: Some(PathBuf::from("schemas")),
        default_time_zone: chrono_tz::UTC,
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(FIXTURES).join(name)
}

/// Loads one fixture file and returns its errors as `Display` lines.
fn error_lines(name: &str) -> Vec<String> {
    let report = load_pipelines(&[fixture(name)], &opts());
    assert!(report.pipelines.is_empty(), "{name} should not load");
    report.errors.iter().map(ToString::to_string).collect()
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn shipped_pipeline_loads() {
    let report = load_pipelines(&[PathBuf::from("pipelines")], &LoadOptions::default());
    assert_eq!(report.errors, [], "{:#?}", report.errors);
    let pipeline = report
        .pipelines
        .iter()
        .find(|p| p.name == "behavior_events")
        .unwrap_or_else(|| panic!("behavior_events not loaded"));
    let SourceConfig::ObjectStoreFiles(source) = &pipeline.source else {
        panic!("expected an object_store_files source");
    };
    assert_eq!(
        source.url,
        StorageUrl::File {
            root: PathBuf::from("./data/drops/behavior")
        }
    );
    let TransformStep::Validate(schema) = &pipeline.transforms[0] else {
        panic!("first step should validate: {:?}", pipeline.transforms[0]);
    };
    assert!(
        matches!(&pipeline.transforms[1], TransformStep::Dedup { keys, keep: Keep::First } if keys.len() == 6)
    );
    assert_eq!(schema.fields.len(), 12);
    let SinkConfig::Parquet(sink) = &pipeline.sink else {
        panic!("expected a parquet sink");
    };
    assert_eq!(
        (sink.dataset.as_str(), sink.partition_column.as_str()),
        ("behavior_events", "behavior_time")
    );
    assert_eq!(sink.granularity, Granularity::Hour);
    let schedule = pipeline
        .schedule
        .as_ref()
        .unwrap_or_else(|| panic!("scheduled"));
    assert_eq!(schedule.time_zone, chrono_tz::Asia::Shanghai);
    assert_eq!(pipeline.tests.len(), 3);
    // Expected rows name every schema column, in schema order.
    let columns: Vec<&str> = schema.fields.iter().map(|f| f.name.as_str()).collect();
    for test in &pipeline.tests {
        for row in &test.expect {
            assert_eq!(
                row.keys().map(String::as_str).collect::<Vec<_>>().len(),
                columns.len(),
                "{}",
                test.name
            );
            assert!(
                columns.iter().all(|c| row.contains_key(*c)),
                "{}",
                test.name
            );
        }
    }
}

#[test]
fn shipped_schema_matches_the_behavior_table() {
    let schema = load_schema_file(Path::new("schemas/behavior_event.yaml"))
        .unwrap_or_else(|e| panic!("{e:?}"));
    let required: Vec<&str> = schema
        .fields
        .iter()
        .filter(|f| f.required)
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(
        required,
        [
            "user_id",
            "id_type",
            "behavior_type",
            "behavior_time",
            "object_attribute"
        ]
    );
    let id_type = schema
        .fields
        .iter()
        .find(|f| f.name == "id_type")
        .unwrap_or_else(|| panic!("id_type"));
    assert_eq!(id_type.allowed.as_ref().map(Vec::len), Some(14));
    let time = schema
        .fields
        .iter()
        .find(|f| f.name == "behavior_time")
        .map(|f| f.ty);
    assert_eq!(time, Some(ColumnType::Timestamp));
    assert!(schema.fields.iter().all(|f| f.description.is_some()));
}

#[test]
fn every_semantic_error_of_a_file_is_reported_with_its_position() {
    let file = "tests/fixtures/config/broken/several_errors.yaml";
    assert_eq!(
        error_lines("broken/several_errors.yaml"),
        [
            format!(
                "{file}:5:8: source.url: storage URL `gs://bucket/drops` has unknown scheme `gs`; expected one of file, memory, s3"
            ),
            format!(
                "{file}:6:24: source.max_files_per_batch: expected a number greater than 0, found 0"
            ),
            format!(
                "{file}:8:13: transforms[0].filter: invalid SQL expression `amount >`: unable to parse 'amount >' as Expr"
            ),
            format!("{file}:11:7: transforms[1].derive: column name must not be empty"),
            format!("{file}:12:19: transforms[2].dedup.keys: expected at least one column"),
            format!(
                "{file}:13:24: transforms[3].validate.schema: unknown schema `no_such_schema`: schemas/no_such_schema.yaml does not exist"
            ),
            format!(
                "{file}:16:12: sink.dataset: invalid name `Broken-Dataset`, expected lower-case letters, digits and `_`, starting with a letter"
            ),
            format!(
                "{file}:19:9: schedule.cron: invalid cron expression `61 * * * *`: Minutes must be less than 59. ('61' specified.)"
            ),
            format!(
                "{file}:20:14: schedule.time_zone: unknown time zone `Mars/Olympus`, expected an IANA name such as Asia/Shanghai or UTC"
            ),
        ]
    );
}

#[test]
fn unknown_key_is_located_with_serdes_expected_list() {
    assert_eq!(
        error_lines("broken/unknown_key.yaml"),
        [
            "tests/fixtures/config/broken/unknown_key.yaml:2:1: sourc: unknown field `sourc`, expected one of kind, name, description, source, transforms, sink, schedule, tests"
        ]
    );
}

#[test]
fn unknown_source_type_lists_the_known_ones() {
    assert_eq!(
        error_lines("broken/unknown_source_type.yaml"),
        [
            "tests/fixtures/config/broken/unknown_source_type.yaml:3:9: source.type: unknown variant `pulsar`, expected one of object_store_files, journal, kafka, http"
        ]
    );
}

#[test]
fn malformed_yaml_is_located() {
    assert_eq!(
        error_lines("broken/malformed.yaml"),
        [
            "tests/fixtures/config/broken/malformed.yaml:3:5: source: while parsing a flow mapping, did not find expected ',' or '}'"
        ]
    );
}

#[test]
fn missing_file_is_an_error_without_position() {
    let report = load_pipelines(&[fixture("nope.yaml")], &opts());
    assert_eq!(report.files, 1);
    let lines: Vec<String> = report.errors.iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 1);
    assert!(
        lines[0].starts_with("tests/fixtures/config/nope.yaml: cannot read pipeline file: "),
        "{lines:?}"
    );
    assert_eq!(report.errors[0].line, 0);
}

#[test]
fn duplicate_names_and_datasets_across_files() {
    let report = load_pipelines(&[fixture("dup")], &opts());
    assert_eq!(report.files, 3);
    let names: Vec<&str> = report.pipelines.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["dup_pipeline"]);
    let lines: Vec<String> = report.errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "tests/fixtures/config/dup/b.yaml:1:7: name: duplicate pipeline name `dup_pipeline`, already defined at tests/fixtures/config/dup/a.yaml:1:7",
            "tests/fixtures/config/dup/c.yaml:3:32: sink.dataset: dataset `shared` is already written by pipeline `dup_pipeline` (tests/fixtures/config/dup/a.yaml:3:32); a dataset has one writer",
        ]
    );
}

#[test]
fn load_pipeline_str_uses_the_default_time_zone() {
    let text = "name: p\nsource: {type: object_store_files, url: memory://in}\n\
                sink: {type: parquet, dataset: d, partition_by: {column: ts, granularity: day}}\n\
                schedule: {cron: '0 3 * * *'}\n";
    let pipeline = load_pipeline_str(Path::new("inline.yaml"), text, &opts())
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(pipeline.file, PathBuf::from("inline.yaml"));
    assert_eq!(pipeline.schedule.map(|s| s.time_zone), Some(chrono_tz::UTC));
}

#[test]
fn daemon_defaults_without_a_file() {
    let config =
        DaemonConfig::load(None, env(&[("HOME", "/root")])).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(config.data_dir, PathBuf::from("./data"));
    assert_eq!(config.time_zone, chrono_tz::Asia::Shanghai);
    assert_eq!(config.pipelines_dir, PathBuf::from("./pipelines"));
    assert_eq!(config.schemas_dir, PathBuf::from("./schemas"));
    assert_eq!(
        config.lake_url,
        "file://./data/lake"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"))
    );
    assert_eq!(config.catalog_path, PathBuf::from("./data/catalog.sqlite"));
    assert_eq!(
        config.public_listen,
        "127.0.0.1:8080"
            .parse::<SocketAddr>()
            .unwrap_or_else(|e| panic!("{e}"))
    );
    assert_eq!(
        config.admin_listen,
        "127.0.0.1:8081"
            .parse::<SocketAddr>()
            .unwrap_or_else(|e| panic!("{e}"))
    );
    assert_eq!(
        (config.log_format, config.log_level.as_str()),
        (LogFormat::Text, "info")
    );
    assert_eq!(config.shutdown_grace, Duration::from_secs(30));
    assert_eq!(config.max_concurrent_runs.get(), 3);
    assert_eq!(config.max_runs_per_workspace.get(), 3);
}

#[test]
fn daemon_env_overrides_the_file() {
    let file = fixture("backflow.yaml");
    let vars = env(&[
        ("BACKFLOW__LAKE__URL", "memory://lake"),
        ("BACKFLOW__SCHEDULER__MAX_CONCURRENT_RUNS", "5"),
    ]);
    let config = DaemonConfig::load(Some(&file), vars).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(
        config.lake_url,
        StorageUrl::Memory {
            name: "lake".into(),
            prefix: String::new()
        }
    );
    assert_eq!(config.max_concurrent_runs.get(), 5);
    // From the file, and derived from its data_dir:
    assert_eq!(config.log_format, LogFormat::Json);
    assert_eq!(config.public_listen.port(), 80);
    assert_eq!(
        config.catalog_path,
        PathBuf::from("/var/lib/backflow/catalog.sqlite")
    );
}

#[test]
fn daemon_unknown_env_key_names_the_variable() {
    let errors = DaemonConfig::load(None, env(&[("BACKFLOW__LAKE__URLL", "memory://x")]))
        .err()
        .unwrap_or_default();
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "<environment>: BACKFLOW__LAKE__URLL: unknown key `lake.urll`, expected one of BACKFLOW__DATA_DIR, \
          BACKFLOW__TIME_ZONE, BACKFLOW__PIPELINES_DIR, BACKFLOW__SCHEMAS_DIR, BACKFLOW__LAKE__URL, \
          BACKFLOW__CATALOG__PATH, BACKFLOW__PUBLIC__LISTEN, BACKFLOW__PUBLIC__BASE_URL, BACKFLOW__PUBLIC__MAX_URL_BYTES, BACKFLOW__PUBLIC__RATE_LIMIT_PER_IP, BACKFLOW__PUBLIC__RATE_LIMIT_GLOBAL, BACKFLOW__ADMIN__LISTEN, BACKFLOW__LOG__FORMAT, \
          BACKFLOW__LOG__LEVEL, BACKFLOW__SHUTDOWN__GRACE_SECONDS, BACKFLOW__SCHEDULER__MAX_CONCURRENT_RUNS, \
          BACKFLOW__SCHEDULER__MAX_RUNS_PER_WORKSPACE, BACKFLOW__QUOTA__STAGING_RETENTION_DAYS, BACKFLOW__REPORTS__DOWNLOAD_TTL_HOURS, \
          BACKFLOW__FORWARD__ENABLED, BACKFLOW__FORWARD__CONCURRENCY, BACKFLOW__FORWARD__TIMEOUT_SECONDS, \
          BACKFLOW__FORWARD__GIVE_UP_SECONDS, BACKFLOW__FORWARD__MAX_BACKOFF_SECONDS, BACKFLOW__FORWARD__KAFKA_GROUP, \
          BACKFLOW__ENRICH__GEO_DB, BACKFLOW__ENRICH__CITY_TIERS, BACKFLOW__JOURNAL__KIND, \
          BACKFLOW__JOURNAL__KAFKA__BROKERS, BACKFLOW__JOURNAL__KAFKA__TOPIC, BACKFLOW__JOURNAL__KAFKA__MESSAGE_TIMEOUT_MS, \
          BACKFLOW__JOURNAL__KAFKA__MAX_IN_FLIGHT, BACKFLOW__JOURNAL__KAFKA__MESSAGE_MAX_BYTES, BACKFLOW__JOURNAL__KAFKA__FALLBACK_DIR, \
          BACKFLOW__JOURNAL__KAFKA__SECURITY_PROTOCOL, BACKFLOW__JOURNAL__KAFKA__SASL_MECHANISM, \
          BACKFLOW__JOURNAL__KAFKA__SASL_USERNAME, BACKFLOW__JOURNAL__KAFKA__SASL_PASSWORD_ENV, \
          BACKFLOW__JOURNAL__KAFKA__TLS__CA, BACKFLOW__JOURNAL__KAFKA__TLS__CERTIFICATE, \
          BACKFLOW__JOURNAL__KAFKA__TLS__KEY, BACKFLOW__JOURNAL__KAFKA__TLS__KEY_PASSWORD_ENV"
        ]
    );
}

#[test]
fn daemon_bad_values_are_all_reported() {
    let file = fixture("backflow.yaml");
    let vars = env(&[
        ("BACKFLOW__PUBLIC__LISTEN", "localhost"),
        ("BACKFLOW__TIME_ZONE", "Asia/Shangai"),
    ]);
    let errors = DaemonConfig::load(Some(&file), vars)
        .err()
        .unwrap_or_default();
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "<environment>: BACKFLOW__TIME_ZONE: unknown time zone `Asia/Shangai`, expected an IANA name such as Asia/Shanghai or UTC",
            "<environment>: BACKFLOW__PUBLIC__LISTEN: invalid address `localhost`, expected an IP address and port such as 127.0.0.1:8080",
        ]
    );
}

/// `schemas/pipeline.schema.json` is generated; run with `BACKFLOW_BLESS=1` to rewrite it.
#[test]
fn checked_in_json_schema_is_up_to_date() {
    let generated = serde_json::to_string_pretty(&pipeline_json_schema())
        .unwrap_or_else(|e| panic!("{e}"))
        + "\n";
    if std::env::var_os("BACKFLOW_BLESS").is_some() {
        std::fs::write(SCHEMA_JSON, &generated)
            .unwrap_or_else(|e| panic!("cannot write {SCHEMA_JSON}: {e}"));
        return;
    }
    let checked_in = std::fs::read_to_string(SCHEMA_JSON).unwrap_or_default();
    assert!(
        checked_in == generated,
        "{SCHEMA_JSON} is out of date; regenerate it with `BACKFLOW_BLESS=1 cargo test --test it config::checked_in_json_schema_is_up_to_date`"
    );
}

#[test]
fn json_schema_documents_the_fields() {
    let schema = pipeline_json_schema();
    let text = schema.to_string();
    assert!(text.contains("max_files_per_batch"));
    assert!(text.contains("Unique pipeline name"));
    // A file is a streaming pipeline or a dataset job; each denies unknown keys.
    for def in ["Pipeline", "DatasetJob"] {
        assert_eq!(
            schema["$defs"][def]["additionalProperties"],
            serde_json::Value::Bool(false),
            "{def}"
        );
    }
    assert!(text.contains("Output dataset name"));
}
