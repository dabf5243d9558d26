//! Interop: DuckDB reads our Parquet with Hive partitioning and gets the same rows and types.

use crate::support::*;

#[test]
fn duckdb_reads_the_lake_with_hive_partitions_and_correct_types() {
    let p = Project::new();
    p.drop_fixtures();
    p.run_pipeline_ok();
    let Some((columns, types, rows)) = duckdb(
        p.path(),
        "SELECT user_id, id_type, behavior_time, behavior_count, behavior_amount, dt, hour
         FROM read_parquet('data/lake/behavior_events/**/*.parquet', hive_partitioning = true)
         ORDER BY behavior_time, user_id",
    ) else {
        return;
    };
    assert_eq!(
        columns,
        [
            "user_id",
            "id_type",
            "behavior_time",
            "behavior_count",
            "behavior_amount",
            "dt",
            "hour"
        ]
    );
    assert_eq!(
        types[..5],
        [
            "VARCHAR",
            "VARCHAR",
            "TIMESTAMP WITH TIME ZONE",
            "BIGINT",
            "DOUBLE"
        ]
    );
    assert_eq!(types[5], "DATE");

    // The same rows Polars reads back, in the same order.
    let lake = read_dataset(&p.lake().join("behavior_events"));
    assert_eq!(rows.len(), lake.height());
    let first = &rows[0];
    // a0001's CSV date 20261123 is local midnight in Asia/Shanghai: 16:00 UTC the day before.
    assert_eq!(first[0], "a0001");
    assert_eq!(first[2], "2026-11-22 16:00:00+00:00");
    assert_eq!(first[3], 5);
    assert_eq!(first[4], 500.0);
    assert_eq!(first[5], "2026-11-23");
    assert_eq!(first[6], "00");
    let purchase = rows.iter().find(|r| r[0] == "13800000001").expect("row");
    assert_eq!(purchase[2], "2026-11-24 02:15:00+00:00");
    assert_eq!(
        (purchase[5].as_str(), purchase[6].as_str()),
        (Some("2026-11-24"), Some("10"))
    );

    // Every column chunk is zstd-compressed.
    let (_, _, codecs) = duckdb(
        p.path(),
        "SELECT DISTINCT compression FROM parquet_metadata('data/lake/behavior_events/**/*.parquet')",
    )
    .expect("duckdb");
    assert_eq!(codecs, vec![vec![serde_json::json!("ZSTD")]]);
}
