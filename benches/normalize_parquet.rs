//! Normalize + Parquet write of 1 M behavior rows: NDJSON decode, the shipped
//! `pipelines/behavior_events.yaml` transforms (dedup, schema validation with timestamp parsing),
//! Hive partitioning and zstd Parquet encoding. Run: `cargo bench --bench normalize_parquet`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use backflow::config::load::{LoadOptions, load_pipelines};
use backflow::config::model::{SinkConfig, SourceConfig};
use backflow::pipeline::frame::{Quarantine, TextFrameBuilder};
use backflow::pipeline::sink::parquet;
use backflow::pipeline::source::object_store_files::{SourceFile, decode};
use backflow::pipeline::transform;

const ROWS: usize = 1_000_000;

fn ndjson(rows: usize) -> Bytes {
    let types = ["浏览", "加购", "收藏", "购买"];
    let channels = ["app", "官网", "小程序", "门店1"];
    let mut out = String::with_capacity(rows * 260);
    for i in 0..rows {
        // Times spread over 10 days, in the formats media and apps really send.
        let secs = 1_795_000_000 + (i as i64 * 863) % 864_000;
        let time = match i % 3 {
            0 => format!("\"{secs}\""),
            1 => format!("{}", secs * 1000),
            _ => {
                let t = chrono::DateTime::from_timestamp(secs, 0).unwrap();
                format!("\"{}\"", t.format("%Y-%m-%d %H:%M:%S"))
            }
        };
        out.push_str(&format!(
            r#"{{"user_id":"u{}","id_type":"oneid","behavior_type":"{}","behavior_time":{time},"behavior_count":{},"behavior_amount":{}.5,"channel":"{}","object_attribute":"商品","object_attribute_value":"商品{}","object_attribute_value_id":"A{}"}}"#,
            i % 200_000,
            types[i % 4],
            1 + i % 5,
            i % 1000,
            channels[i % 4],
            i % 5000,
            i % 5000
        ));
        out.push('\n');
    }
    Bytes::from(out)
}

fn bench(c: &mut Criterion) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let report = load_pipelines(
        &[root.join("pipelines/behavior_events.yaml")],
        &LoadOptions::default(),
    );
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let pipeline = report.pipelines.into_iter().next().unwrap();
    let SourceConfig::ObjectStoreFiles(source) = &pipeline.source else {
        panic!("expected an object_store_files source");
    };
    let SinkConfig::Parquet(sink) = &pipeline.sink else {
        panic!("expected a parquet sink");
    };
    let data = ndjson(ROWS);
    let file = SourceFile {
        path: "bench.ndjson".into(),
        size: data.len() as u64,
        e_tag: None,
    };
    let tz = chrono_tz::Asia::Shanghai;

    let mut group = c.benchmark_group("normalize_parquet");
    group.sample_size(10);
    group.throughput(Throughput::Elements(ROWS as u64));
    group.bench_function("1M_behavior_rows", |b| {
        b.iter(|| {
            let mut rows = TextFrameBuilder::new();
            let mut quarantine = Quarantine::default();
            decode(source, &file, data.clone(), &mut rows, &mut quarantine);
            let df = rows.finish().unwrap();
            let df = transform::apply(df, &pipeline.transforms, tz, &mut quarantine).unwrap();
            let files = parquet::encode(df, sink, tz, 1, &mut quarantine).unwrap();
            assert!(quarantine.is_empty());
            files.iter().map(|f| f.bytes.len()).sum::<usize>()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
