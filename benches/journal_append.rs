//! Durable appends per second through the embedded journal, with 1, 64 and 512 concurrent
//! appenders of 300-byte records (a monitoring-link hit is ≈ 300 bytes), on a temp dir of the
//! local disk: every acknowledged append is fsync'd. Prints records per group commit after each
//! case. Run: `cargo bench --bench journal_append` (needs `harness = false`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

use backflow::journal::{Journal, JournalOptions};

const RECORD_BYTES: usize = 300;

fn append(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let record = Bytes::from(vec![b'h'; RECORD_BYTES]);
    let mut group = c.benchmark_group("journal_append");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(1));
    for concurrency in [1u64, 64, 512] {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = rt
            .block_on(Journal::open(dir.path(), JournalOptions::default()))
            .unwrap();
        group.bench_with_input(
            BenchmarkId::from_parameter(concurrency),
            &concurrency,
            |b, &concurrency| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let per_task = iters.div_ceil(concurrency);
                        let started = Instant::now();
                        let tasks: Vec<_> = (0..concurrency)
                            .map(|_| {
                                let journal = journal.clone();
                                let record = record.clone();
                                tokio::spawn(async move {
                                    for _ in 0..per_task {
                                        journal.append(record.clone()).await.unwrap();
                                    }
                                })
                            })
                            .collect();
                        for t in tasks {
                            t.await.unwrap();
                        }
                        // Time per append, as if exactly `iters` were made.
                        started
                            .elapsed()
                            .mul_f64(iters as f64 / (per_task * concurrency) as f64)
                    })
                });
            },
        );
        let stats = journal.stats();
        eprintln!(
            "concurrency {concurrency}: {} appends, {:.1} records per group commit (max {}), {} fsyncs",
            stats.appends,
            stats.records_per_group_commit(),
            stats.batch_records_max,
            stats.fsyncs
        );
        rt.block_on(journal.close()).unwrap();
    }
    group.finish();
}

criterion_group!(benches, append);
criterion_main!(benches);
