//! The command line as users meet it: validate, test, run errors.

use crate::support::*;

#[test]
fn validate_reports_every_error_of_every_file_with_its_location() {
    let p = Project::new();
    p.write(
        "pipelines/broken.yaml",
        "name: broken\nsource:\n  type: object_store_files\n  url: gs://bucket/x\ntransforms:\n  - filter: \"a >\"\nsink:\n  type: parquet\n  dataset: broken\n  partition_by: {column: t}\nschedule:\n  cron: \"not a cron\"\n",
    );
    p.write("pipelines/typo.yaml", "name: typo\nsourc: {}\n");
    let out = p.run(&["validate"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("pipelines/broken.yaml:4:8: source.url:"),
        "{err}"
    );
    assert!(err.contains("unknown scheme `gs`"), "{err}");
    assert!(
        err.contains("pipelines/broken.yaml:6:13: transforms[0].filter:"),
        "{err}"
    );
    assert!(
        err.contains("pipelines/broken.yaml:12:9: schedule.cron:"),
        "{err}"
    );
    assert!(err.contains("pipelines/typo.yaml:2:1"), "{err}");
    assert!(err.contains("unknown field `sourc`"), "{err}");
    assert!(err.contains("error(s) in 9 file(s)"), "{err}");
}

#[test]
fn test_runs_the_shipped_pipeline_tests_and_reports_a_failing_expectation() {
    let p = Project::new();
    let out = p.run(&["test"]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("8 passed, 0 failed"),
        "{}",
        stdout(&out)
    );

    p.edit_pipeline(
        "expect_quarantine: [id_type]",
        "expect_quarantine: [user_id]",
    );
    let out = p.run(&["test", "behavior_events"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("FAIL behavior_events: an unknown ID type is quarantined"),
        "{text}"
    );
    assert!(text.contains("does not contain \"user_id\""), "{text}");
}

#[test]
fn run_of_an_unknown_pipeline_is_a_clear_error() {
    let p = Project::new();
    let out = p.run(&["run", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no pipeline or dataset job named `nope`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_bad_daemon_setting_in_the_environment_names_the_variable() {
    let p = Project::new();
    let out = p
        .command(&["validate"])
        .env("BACKFLOW__LAKE__URL", "ftp://x")
        .output()
        .expect("spawn");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("BACKFLOW__LAKE__URL"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_shipped_example_daemon_config_is_valid_and_equals_the_defaults() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/backflow.yaml");
    let loaded = backflow::config::DaemonConfig::load(Some(&example), Vec::new())
        .expect("example config loads");
    let defaults = backflow::config::DaemonConfig::load(None, Vec::new()).expect("defaults");
    assert_eq!(
        loaded, defaults,
        "deploy/backflow.yaml documents the defaults; keep them in step"
    );
}

#[test]
fn validate_also_checks_the_media_registry() {
    let p = Project::new();
    let out = p.run(&["validate"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("38 media (37 of the manual), 81 placement rows"),
        "{}",
        stdout(&out)
    );

    let registry = p.path().join("schemas/media.yaml");
    let text = std::fs::read_to_string(&registry).expect("read");
    std::fs::write(&registry, text.replacen("media:", "mediaa:", 1)).expect("write");
    let out = p.run(&["validate"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("schemas/media.yaml:"),
        "{}",
        stderr(&out)
    );
}
