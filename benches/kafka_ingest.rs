//! Kafka → Parquet ingest against a local broker, compared with DuckDB on the same messages.
//!
//! ```text
//! BACKFLOW_TEST_KAFKA=127.0.0.1:PORT MESSAGES=5000000 nice -n 10 cargo bench --bench kafka_ingest
//! ```
//!
//! 1. creates a topic (`PARTITIONS`, default 4) and produces `MESSAGES` (default 200000)
//!    ad-event JSON messages with an idempotent `acks=all` producer (timed on its own: the
//!    broker's own speed), writing the same lines to an NDJSON file;
//! 2. runs `backflow run kafka_ingest` (this build's release binary) under `/usr/bin/time` into a
//!    fresh lake: messages/s, messages per CPU-second, and the end-to-end lag of the backlog
//!    (last message produced → its batch committed, i.e. the run's end);
//! 3. runs DuckDB (`BACKFLOW_TEST_PYTHON`, default the tool venv) on the NDJSON file twice, each
//!    under `/usr/bin/time` too: once into ONE unpartitioned file,
//!    `COPY (SELECT * FROM read_json(...)) TO ... (FORMAT parquet, COMPRESSION zstd)`, and once
//!    doing the work the lake layout asks of backflow: `dt` / `hour` of `event_time` in the
//!    workspace zone (Asia/Shanghai, the daemon's default), `COPY (SELECT *, dt, hour ...) TO
//!    '<dir>' (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (dt, hour))` (`(dt)` with
//!    `GRANULARITY=day`).
//!
//! Knobs besides `MESSAGES` / `PARTITIONS` / `TOPIC`:
//! * `GRANULARITY` (`hour`, default, as `pipelines/ad_events.yaml`; or `day`): the sink's
//!   `partition_by.granularity` on `event_time`, and DuckDB's `PARTITION_BY` to match;
//! * `SPREAD_HOURS`: unset (default) keeps the original stream, whose event times cycle over
//!   28 days and 24 hours (every batch touches every partition: many small files); `SPREAD_HOURS=1`
//!   gives event times rising evenly over one hour (10:30–11:30 UTC on 2026-03-01, so two hour
//!   partitions), as collector hits arrive within seconds of happening.
//!
//! `TOPIC=name` names the topic; when it exists already (an earlier run on the same broker), its
//! messages are read again instead of produced, by a fresh consumer group (the NDJSON file is
//! still written), so the ingest side can be measured repeatedly without the slow producer.
//!
//! Per core = rows per CPU-second (user + system) of the process, so a run that uses both cores
//! and one that uses one compare fairly.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Event time of message `n` of `messages`: the original 28-day cycle, or (`spread_secs`) rising
/// evenly over that many seconds from 2026-03-01T10:30:00Z.
fn event_time(n: u64, messages: u64, spread_secs: Option<u64>) -> String {
    match spread_secs {
        None => format!(
            "2026-03-{:02}T{:02}:{:02}:{:02}Z",
            1 + n % 28,
            n % 24,
            n % 60,
            (n / 60) % 60
        ),
        Some(spread) => {
            let start = chrono::DateTime::parse_from_rfc3339("2026-03-01T10:30:00Z")
                .expect("start")
                .to_utc();
            let offset = (u128::from(n) * u128::from(spread) / u128::from(messages.max(1))) as i64;
            (start + chrono::Duration::seconds(offset))
                .format("%Y-%m-%dT%H:%M:%SZ")
                .to_string()
        }
    }
}

/// One ad event, shaped like the behavior events the collection endpoints receive.
fn event(n: u64, event_time: &str) -> String {
    let kinds = ["impression", "click", "view", "complete"];
    let countries = ["FR", "DE", "US", "ES", "IT"];
    serde_json::json!({
        "event_id": format!("e{n:010}"),
        "event_time": event_time,
        "event_type": kinds[(n % 4) as usize],
        "campaign_id": format!("cmp-{}", n % 97),
        "creative_id": format!("cr-{}", n % 1009),
        "placement": format!("pl-{}", n % 31),
        "device": if n.is_multiple_of(3) { "mobile" } else { "desktop" },
        "country": countries[(n % 5) as usize],
        "cost_micros": (n * 37) % 100_000,
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36",
    })
    .to_string()
}

/// Runs `cmd` under `/usr/bin/time`; returns (wall, cpu seconds).
fn timed(cmd: &mut Command, what: &str) -> (Duration, f64, String) {
    let times = tempfile::NamedTempFile::new().expect("temp file");
    let program = cmd.get_program().to_owned();
    let args: Vec<_> = cmd.get_args().map(ToOwned::to_owned).collect();
    let mut wrapped = Command::new("/usr/bin/time");
    wrapped
        .arg("-f")
        .arg("%U %S")
        .arg("-o")
        .arg(times.path())
        .arg(program)
        .args(args);
    if let Some(dir) = cmd.get_current_dir() {
        wrapped.current_dir(dir);
    }
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            wrapped.env(k, v);
        }
    }
    let started = Instant::now();
    let out = wrapped.output().expect("spawn");
    let wall = started.elapsed();
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(times.path()).expect("times");
    let cpu: f64 = text
        .lines()
        .last()
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|v| v.parse::<f64>().ok())
        .sum();
    (wall, cpu, String::from_utf8_lossy(&out.stdout).into_owned())
}

fn main() {
    let Ok(brokers) = std::env::var("BACKFLOW_TEST_KAFKA") else {
        eprintln!("kafka_ingest: set BACKFLOW_TEST_KAFKA=127.0.0.1:PORT (a tansu or Kafka broker)");
        return;
    };
    let messages = env_or("MESSAGES", 200_000);
    let partitions = env_or("PARTITIONS", 4) as i32;
    let spread_secs = std::env::var("SPREAD_HOURS")
        .ok()
        .map(|v| v.parse::<u64>().expect("SPREAD_HOURS: whole hours") * 3600);
    let granularity = std::env::var("GRANULARITY").unwrap_or_else(|_| "hour".into());
    assert!(
        granularity == "hour" || granularity == "day",
        "GRANULARITY: `hour` or `day`"
    );
    let work = tempfile::tempdir().expect("tempdir");
    // `TOPIC`: a named topic; when it exists already its messages are reused (not produced again).
    let topic = std::env::var("TOPIC")
        .unwrap_or_else(|_| format!("bench-{}", uuid::Uuid::now_v7().simple()));
    let rt = tokio::runtime::Runtime::new().expect("runtime");

    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .expect("admin");
    let mut reuse = false;
    for r in rt
        .block_on(admin.create_topics(
            &[NewTopic::new(
                &topic,
                partitions,
                TopicReplication::Fixed(1),
            )],
            &AdminOptions::new(),
        ))
        .expect("create topic")
    {
        match r {
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => reuse = true,
            other => {
                other.expect("topic created");
            }
        }
    }

    // 1. Produce, and write the same lines as NDJSON.
    let ndjson = work.path().join("events.ndjson");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&ndjson).expect("ndjson"));
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    let started = Instant::now();
    rt.block_on(async {
        let mut pending = std::collections::VecDeque::new();
        for n in 0..messages {
            let payload = event(n, &event_time(n, messages, spread_secs));
            writeln!(file, "{payload}").expect("write ndjson");
            if reuse {
                continue;
            }
            let key = format!("cmp-{}", n % 97);
            let future = producer.send_result(
                FutureRecord::to(&topic)
                    .partition((n % partitions as u64) as i32)
                    .key(&key)
                    .payload(&payload),
            );
            match future {
                Ok(f) => pending.push_back(f),
                Err((e, _)) => panic!("enqueue: {e}"),
            }
            // Bounded in-flight: await the oldest delivery reports.
            while pending.len() >= 100_000 {
                if let Some(f) = pending.pop_front() {
                    f.await
                        .expect("canceled")
                        .map_err(|(e, _)| e)
                        .expect("delivered");
                }
            }
        }
        for f in pending {
            f.await
                .expect("canceled")
                .map_err(|(e, _)| e)
                .expect("delivered");
        }
    });
    file.flush().expect("flush");
    let produce = started.elapsed();
    let produced_at = Instant::now();
    let bytes = std::fs::metadata(&ndjson).map(|m| m.len()).unwrap_or(0);

    // 2. backflow: Kafka → Parquet.
    let project = work.path().join("project");
    let group = format!("{topic}-{}", uuid::Uuid::now_v7().simple());
    std::fs::create_dir_all(project.join("pipelines")).expect("mkdir");
    std::fs::write(
        project.join("pipelines/kafka_ingest.yaml"),
        format!(
            r#"name: kafka_ingest
source:
  type: kafka
  brokers: ["{brokers}"]
  topics: [{topic}]
  group_id: {group}
  idle_ms: 3000
transforms:
  - cast: {{event_time: timestamp, cost_micros: int64}}
sink:
  type: parquet
  dataset: ad_events
  partition_by: {{column: event_time, granularity: {granularity}}}
"#
        ),
    )
    .expect("pipeline");
    let (wall, cpu, run_out) = timed(
        Command::new(env!("CARGO_BIN_EXE_backflow"))
            .args(["run", "kafka_ingest", "--json"])
            .current_dir(&project)
            .env("RUST_LOG", "warn"),
        "backflow run",
    );
    let lag = produced_at.elapsed();
    let summary = run_out.lines().last().unwrap_or("").to_string();

    // 3. DuckDB: the same messages as NDJSON → Parquet, one file, then the lake's partitions.
    let python = std::env::var("BACKFLOW_TEST_PYTHON").unwrap_or_else(|_| {
        format!(
            "{}/.cache/backflow/tools/py/bin/python",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let script = format!(
        "import duckdb; duckdb.sql(\"COPY (SELECT * FROM read_json('{}')) TO '{}' (FORMAT parquet, COMPRESSION zstd)\")",
        ndjson.display(),
        work.path().join("duckdb.parquet").display()
    );
    let (duck_wall, duck_cpu, _) = timed(Command::new(&python).args(["-c", &script]), "duckdb");
    // `event_time` reads as a naive TIMESTAMP in UTC; `dt` / `hour` are its day and hour in the
    // workspace zone, formatted as backflow's `dt=YYYY-MM-DD/hour=HH` keys.
    let duck_parts = work.path().join("duckdb-partitioned");
    let (keys, by) = if granularity == "hour" {
        (
            "strftime(local, '%Y-%m-%d') AS dt, strftime(local, '%H') AS hour",
            "dt, hour",
        )
    } else {
        ("strftime(local, '%Y-%m-%d') AS dt", "dt")
    };
    let script = format!(
        "import duckdb; duckdb.sql(\"COPY (SELECT * EXCLUDE (local), {keys} FROM (SELECT *, timezone('Asia/Shanghai', timezone('UTC', event_time)) AS local FROM read_json('{}'))) TO '{}' (FORMAT parquet, COMPRESSION zstd, PARTITION_BY ({by}))\")",
        ndjson.display(),
        duck_parts.display()
    );
    let (part_wall, part_cpu, _) = timed(
        Command::new(&python).args(["-c", &script]),
        "duckdb partitioned",
    );

    let rate = |d: Duration| messages as f64 / d.as_secs_f64();
    println!(
        "kafka_ingest: {messages} messages ({:.0} MiB NDJSON), {partitions} partitions, topic {topic}{}; event times {}, {granularity} partitions",
        bytes as f64 / 1048576.0,
        if reuse {
            " (reused: not produced again)"
        } else {
            ""
        },
        match spread_secs {
            None => "over 28 days (SPREAD_HOURS unset)".to_string(),
            Some(s) => format!("over {} h (SPREAD_HOURS)", s / 3600),
        }
    );
    println!(
        "  produce (rdkafka → broker): {:.1} s, {:.0} msg/s",
        produce.as_secs_f64(),
        rate(produce)
    );
    println!(
        "  backflow kafka → parquet:   {:.1} s wall, {:.1} CPU-s, {:.0} msg/s, {:.0} msg per CPU-s, {} files; lag (last produced → committed) {:.1} s",
        wall.as_secs_f64(),
        cpu,
        rate(wall),
        messages as f64 / cpu.max(0.001),
        parquet_files(&project.join("data/lake/ad_events")),
        lag.as_secs_f64()
    );
    println!("  backflow run summary: {summary}");
    println!(
        "  duckdb ndjson → parquet:    {:.1} s wall, {:.1} CPU-s, {:.0} rows/s, {:.0} rows per CPU-s, 1 file",
        duck_wall.as_secs_f64(),
        duck_cpu,
        rate(duck_wall),
        messages as f64 / duck_cpu.max(0.001)
    );
    println!(
        "  duckdb ndjson → partitions: {:.1} s wall, {:.1} CPU-s, {:.0} rows/s, {:.0} rows per CPU-s, {} files",
        part_wall.as_secs_f64(),
        part_cpu,
        rate(part_wall),
        messages as f64 / part_cpu.max(0.001),
        parquet_files(&duck_parts)
    );
    println!(
        "  backflow per CPU-s / duckdb's: {:.0} % of the unpartitioned, {:.0} % of the partitioned",
        100.0 * duck_cpu / cpu.max(0.001),
        100.0 * part_cpu / cpu.max(0.001)
    );
}

/// Parquet files under `dir`, recursively.
fn parquet_files(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() {
                parquet_files(&path)
            } else {
                usize::from(path.extension().is_some_and(|x| x == "parquet"))
            }
        })
        .sum()
}
