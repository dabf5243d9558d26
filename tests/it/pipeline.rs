//! The behavior-events pipeline end to end on the local filesystem, through the real binary.

use std::io::Write;

use crate::support::*;

#[test]
fn fixture_drops_land_once_with_bad_rows_in_quarantine() {
    let p = Project::new();
    p.drop_fixtures();
    let summary = p.run_pipeline_ok();
    // 7 NDJSON lines + 4 CSV records + 2 gzip lines.
    assert_eq!(summary["rows_in"], 13, "{summary}");
    assert_eq!(summary["rows_out"], 9, "{summary}");
    assert_eq!(summary["rows_quarantined"], 4, "{summary}");
    assert_eq!(summary["status"], "succeeded");

    let lake = read_dataset(&p.lake().join("behavior_events"));
    assert_eq!(
        sorted_values(&lake, "user_id"),
        [
            "13800000001",
            "a0001",
            "a0002",
            "a0003",
            "a0004",
            "a0007",
            "a0009",
            "a0010",
            "a0011"
        ]
    );
    let quarantine = read_dataset(&p.lake().join("quarantine"));
    let reasons = sorted_values(&quarantine, "reason");
    assert_eq!(reasons.len(), 4);
    assert!(
        reasons
            .iter()
            .any(|r| r == "2026-11-24-app.ndjson:5: expected a JSON object, found an array"),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r == "2026-11-24-store.csv:4: expected 11 fields, found 7"),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("2026-11-24-app.ndjson:6: id_type: \"phone\" is not one of")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r
                .starts_with("2026-11-24-app.ndjson:7: behavior_time: cannot parse \"yesterday\"")),
        "{reasons:?}"
    );

    // Partitions follow behavior_time in Asia/Shanghai: 2026-11-24 10:15 local is hour=10.
    let hour10 = p.lake().join("behavior_events/dt=2026-11-24/hour=10");
    assert_eq!(
        parquet_files(&hour10).len(),
        1,
        "{:?}",
        parquet_files(&p.lake())
    );

    // Nothing new: a second run commits no batch and writes nothing.
    let again = p.run_pipeline_ok();
    assert_eq!(again["batches"], 0);
    assert_eq!(read_dataset(&p.lake().join("behavior_events")).height(), 9);

    // A new file is picked up by the next run, as batch 2.
    std::fs::write(
        p.drops().join("later.ndjson"),
        r#"{"user_id":"z1","id_type":"oneid","behavior_type":"浏览","behavior_time":"2026-11-24 12:00:00","object_attribute":"商品","object_attribute_value":"X"}"#,
    )
    .expect("write");
    let third = p.run_pipeline_ok();
    assert_eq!(
        (third["batches"].as_u64(), third["rows_out"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(
        p.lake()
            .join("behavior_events/_commits/000000000002.json")
            .exists()
    );
    assert_eq!(read_dataset(&p.lake().join("behavior_events")).height(), 10);
}

#[test]
fn output_files_have_deterministic_names_utc_microsecond_timestamps_and_no_lineage() {
    let p = Project::new();
    p.drop_fixtures();
    p.run_pipeline_ok();
    let files = parquet_files(&p.lake().join("behavior_events"));
    assert!(!files.is_empty());
    for file in &files {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        assert!(
            name.starts_with("part-000000000001-") && name.ends_with(".parquet"),
            "{name}"
        );
        let df = read_parquet_bytes(std::fs::read(file).expect("read"));
        assert_eq!(
            df.column("behavior_time").expect("col").dtype(),
            &polars::prelude::DataType::Datetime(
                polars::prelude::TimeUnit::Microseconds,
                Some(polars::prelude::TimeZone::UTC)
            )
        );
        assert!(
            df.column("_source_file").is_err(),
            "lineage columns must not reach the lake"
        );
    }
}

#[test]
fn a_truncated_gzip_file_is_quarantined_whole_and_the_rest_lands() {
    let p = Project::new();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    for i in 0..500 {
        writeln!(
            enc,
            r#"{{"user_id":"u{i}","id_type":"oneid","behavior_type":"浏览","behavior_time":"2026-11-24 08:00:00","object_attribute":"商品","object_attribute_value":"X"}}"#
        )
        .expect("gz");
    }
    let full = enc.finish().expect("gz");
    std::fs::write(
        p.drops().join("a-broken.ndjson.gz"),
        &full[..full.len() / 2],
    )
    .expect("write");
    std::fs::write(p.drops().join("b-good.ndjson.gz"), &full).expect("write");
    let summary = p.run_pipeline_ok();
    assert_eq!(summary["files_failed"], 1, "{summary}");
    assert_eq!(summary["rows_out"], 500, "{summary}");
    let quarantine = read_dataset(&p.lake().join("quarantine"));
    let reasons = sorted_values(&quarantine, "reason");
    assert_eq!(reasons.len(), 1);
    assert!(
        reasons[0].starts_with("a-broken.ndjson.gz: not a readable gzip file"),
        "{reasons:?}"
    );
}

#[test]
fn a_batch_limit_splits_the_drop_into_several_committed_batches() {
    let p = Project::new();
    p.drop_fixtures();
    p.edit_pipeline(
        "  format: auto\n",
        "  format: auto\n  max_files_per_batch: 1\n",
    );
    let summary = p.run_pipeline_ok();
    assert_eq!(summary["batches"], 3, "{summary}");
    for seq in 1..=3 {
        assert!(
            p.lake()
                .join(format!("behavior_events/_commits/{seq:012}.json"))
                .exists()
        );
    }
    assert_eq!(read_dataset(&p.lake().join("behavior_events")).height(), 9);
}

#[test]
fn from_and_to_select_source_files_by_modification_date_and_leave_the_rest_pending() {
    let p = Project::new();
    let line = |user: &str| {
        format!(
            r#"{{"user_id":"{user}","id_type":"oneid","behavior_type":"浏览","behavior_time":"2026-01-01 08:00:00","object_attribute":"商品","object_attribute_value":"X"}}"#
        )
    };
    std::fs::write(p.drops().join("old.ndjson"), line("old")).expect("write");
    std::fs::write(p.drops().join("new.ndjson"), line("new")).expect("write");
    // 2026-01-01 12:00 UTC is 20:00 on 2026-01-01 in Asia/Shanghai.
    let january = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_767_268_800);
    std::fs::File::options()
        .write(true)
        .open(p.drops().join("old.ndjson"))
        .and_then(|f| f.set_modified(january))
        .expect("set mtime");

    let out = p.run(&[
        "run",
        "behavior_events",
        "--from",
        "2026-01-01",
        "--to",
        "2026-01-01",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        sorted_values(&read_dataset(&p.lake().join("behavior_events")), "user_id"),
        ["old"]
    );

    let out = p.run(&[
        "run",
        "behavior_events",
        "--from",
        "2026-01-02",
        "--to",
        "2026-01-31",
        "--json",
    ]);
    assert!(out.status.success());
    assert!(stdout(&out).contains(r#""batches":0"#), "{}", stdout(&out));

    p.run_pipeline_ok();
    assert_eq!(
        sorted_values(&read_dataset(&p.lake().join("behavior_events")), "user_id"),
        ["new", "old"]
    );
}

#[test]
fn a_pipeline_locked_by_another_process_is_refused_with_a_clear_error() {
    let p = Project::new();
    let lock_dir = p.path().join("data/locks");
    std::fs::create_dir_all(&lock_dir).expect("mkdir");
    let lock = std::fs::File::create(lock_dir.join("behavior_events.lock")).expect("lock file");
    lock.lock().expect("take the lock");
    let out = p.run(&["run", "behavior_events"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("is being run by another process"),
        "{}",
        stderr(&out)
    );
    drop(lock);
    p.run_pipeline_ok();
}
