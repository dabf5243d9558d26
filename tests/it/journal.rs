//! The embedded journal through its public API: a real `kill -9` of a process that is appending
//! (nothing it acknowledged may be lost), a producer and a consumer running side by side, and
//! recovery from damaged segment files.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use backflow::journal::{Journal, JournalError, JournalOptions, Position};
use bytes::Bytes;

/// Set only in the re-invoked child process of the crash test.
const CHILD_DIR: &str = "BACKFLOW_JOURNAL_CRASH_DIR";
const CHILD_ROUND: &str = "BACKFLOW_JOURNAL_CRASH_ROUND";

fn crash_options() -> JournalOptions {
    JournalOptions {
        segment_bytes: 256 << 10,
        ..JournalOptions::default()
    }
}

/// What task `task` appends as its `i`-th record in crash round `round`; lengths vary.
fn crash_payload(round: u64, task: u64, i: u64) -> Bytes {
    let mut s = format!("round={round} task={task} i={i} ");
    s.extend(std::iter::repeat_n('z', ((task * 31 + i) % 300) as usize));
    Bytes::from(s)
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    out.sort();
    out
}

/// Not a test of its own: the crash test re-runs this binary with `CHILD_DIR` set, and then this
/// appends from 16 tasks and prints `ACK position task i` after each acknowledged append, until
/// it is killed (or stops by itself after 10 s).
#[test]
fn crash_child_appender() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let round: u64 = std::env::var(CHILD_ROUND).unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let (journal, _) = Journal::open(Path::new(&dir), crash_options())
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let tasks: Vec<_> = (0..16u64)
            .map(|task| {
                let journal = journal.clone();
                tokio::spawn(async move {
                    let mut i = 0;
                    while Instant::now() < deadline && i < 100_000 {
                        let pos = journal.append(crash_payload(round, task, i)).await.unwrap();
                        println!("ACK {} {task} {i}", pos.0);
                        i += 1;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_appending_loses_no_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    // position -> (round, task, i) of every append a child acknowledged.
    let mut acked: HashMap<u64, (u64, u64, u64)> = HashMap::new();
    for round in 0..2u64 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "journal::crash_child_appender",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, dir.path())
            .env(CHILD_ROUND, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Some(rest) = line.strip_prefix("ACK ") else {
                    continue;
                };
                let nums: Vec<u64> = rest.split(' ').filter_map(|n| n.parse().ok()).collect();
                if let [pos, task, i] = nums[..] {
                    let _ = tx.send((pos, task, i));
                }
            }
        });
        // Wait until the child is up and acknowledging, let it run ~200 ms (and at least 100
        // acknowledgements, on a loaded machine), then SIGKILL it mid-stream.
        let (mut this_round, rx) = tokio::task::spawn_blocking(move || {
            let mut got = Vec::new();
            let Ok(first) = rx.recv_timeout(Duration::from_secs(10)) else {
                return (got, rx);
            };
            got.push(first);
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(10)
                && (started.elapsed() < Duration::from_millis(200) || got.len() < 100)
            {
                match rx.recv_timeout(Duration::from_millis(10)) {
                    Ok(ack) => got.push(ack),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
            (got, rx)
        })
        .await
        .unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        this_round.extend(rx.try_iter());
        assert!(
            this_round.len() >= 100,
            "the child acknowledged only {} appends in 10 s",
            this_round.len()
        );
        for (pos, task, i) in this_round {
            let prev = acked.insert(pos, (round, task, i));
            assert!(prev.is_none(), "position {pos} acknowledged twice");
        }

        let (journal, report) = Journal::open(dir.path(), crash_options()).await.unwrap();
        let all = journal
            .read(Position(1), usize::MAX, usize::MAX)
            .await
            .unwrap();
        assert_eq!(all.len() as u64, report.records);
        let positions: Vec<u64> = all.iter().map(|(p, _)| p.0).collect();
        assert_eq!(positions, (1..report.next_position.0).collect::<Vec<_>>());
        let on_disk: HashMap<u64, Bytes> = all.into_iter().map(|(p, b)| (p.0, b)).collect();
        eprintln!(
            "round {round}: {} records on disk, {} acknowledged to the children; {report:?}",
            on_disk.len(),
            acked.len()
        );
        for (pos, (r, task, i)) in &acked {
            assert_eq!(
                on_disk.get(pos),
                Some(&crash_payload(*r, *task, *i)),
                "acknowledged record {pos} lost or changed after kill -9"
            );
        }
        journal.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_reads_everything_once_while_producers_append() {
    let dir = tempfile::tempdir().unwrap();
    let opts = JournalOptions {
        segment_bytes: 32 << 10,
        ..JournalOptions::default()
    };
    let (journal, _) = Journal::open(dir.path(), opts).await.unwrap();
    let producers: Vec<_> = (0..8u64)
        .map(|t| {
            let journal = journal.clone();
            tokio::spawn(async move {
                for i in 0..500u64 {
                    journal
                        .append(Bytes::from(format!("{t}:{i}")))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    let mut seen = HashSet::new();
    let mut last = 0;
    let started = Instant::now();
    while seen.len() < 4000 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "consumer stalled"
        );
        let from = journal.cursor("normalize").unwrap();
        let batch = journal.read(from, 300, 4096).await.unwrap();
        if batch.is_empty() {
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue;
        }
        for (pos, data) in &batch {
            assert_eq!(pos.0, last + 1, "positions are dense and ordered");
            last = pos.0;
            assert!(seen.insert(data.clone()), "record read twice");
        }
        journal
            .commit_cursor("normalize", Position(last + 1))
            .await
            .unwrap();
        journal.retain().await.unwrap();
    }
    for p in producers {
        p.await.unwrap();
    }
    assert!(
        journal
            .read(Position(last + 1), 10, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let stats = journal.stats();
    assert!(stats.retained_bytes_freed > 0, "{stats:?}");
    assert_eq!(segments(dir.path()).len(), stats.segments);
    journal.close().await.unwrap();
}

#[tokio::test]
async fn a_torn_tail_is_cut_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let opts = JournalOptions {
        segment_bytes: 4096,
        max_wait: Duration::ZERO,
        ..JournalOptions::default()
    };
    let (journal, _) = Journal::open(dir.path(), opts.clone()).await.unwrap();
    for i in 1..=300u64 {
        journal
            .append(Bytes::from(format!("hit {i:05}")))
            .await
            .unwrap();
    }
    journal.close().await.unwrap();
    let segs = segments(dir.path());
    assert!(segs.len() > 1);
    let last = segs.last().unwrap();
    let len = std::fs::metadata(last).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(last)
        .unwrap()
        .set_len(len - 4)
        .unwrap();

    let (journal, report) = Journal::open(dir.path(), opts).await.unwrap();
    assert_eq!(report.records, 299);
    assert_eq!(report.truncated_bytes, 8 + 9 - 4);
    assert_eq!(report.truncated_at, Some((last.clone(), len - 17)));
    assert_eq!(journal.next_position(), Position(300));
    assert_eq!(
        journal.append(Bytes::from("hit 00300")).await.unwrap(),
        Position(300)
    );
    let all = journal.read(Position(1), 1000, usize::MAX).await.unwrap();
    for (pos, data) in &all {
        assert_eq!(data, &Bytes::from(format!("hit {:05}", pos.0)));
    }
    assert_eq!(all.len(), 300);
    journal.close().await.unwrap();
}

#[tokio::test]
async fn corruption_in_an_older_segment_is_refused_with_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let opts = JournalOptions {
        segment_bytes: 4096,
        max_wait: Duration::ZERO,
        ..JournalOptions::default()
    };
    let (journal, _) = Journal::open(dir.path(), opts.clone()).await.unwrap();
    for i in 1..=1000u64 {
        journal
            .append(Bytes::from(format!("hit {i:05}")))
            .await
            .unwrap();
    }
    journal.close().await.unwrap();
    let segs = segments(dir.path());
    let victim = &segs[1];
    let mut data = std::fs::read(victim).unwrap();
    // Record 3 of the segment: 8-byte segment header, then 17 bytes per record.
    data[8 + 3 * 17 + 8] ^= 1;
    std::fs::write(victim, data).unwrap();
    let err = Journal::open(dir.path(), opts).await.unwrap_err();
    match &err {
        JournalError::Corrupt { path, offset, .. } => {
            assert_eq!(path, victim);
            assert_eq!(*offset, 8 + 3 * 17);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(!err.retryable());
    let msg = err.to_string();
    assert!(
        msg.contains(&victim.display().to_string()) && msg.contains("offset 59"),
        "{msg}"
    );
}

/// Throughput probe (not run by default): `cargo test --release --test it journal::throughput
/// -- --ignored --nocapture` prints durable appends per second and records per group commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn throughput() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = Journal::open(dir.path(), JournalOptions::default())
        .await
        .unwrap();
    let record = Bytes::from(vec![b'h'; 300]);
    for concurrency in [1u64, 64, 512] {
        let before = journal.stats();
        let per_task = if concurrency == 1 {
            300
        } else {
            60_000 / concurrency
        };
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
        let secs = started.elapsed().as_secs_f64();
        let after = journal.stats();
        let appends = after.appends - before.appends;
        let commits = after.group_commits - before.group_commits;
        eprintln!(
            "concurrency {concurrency}: {appends} appends in {secs:.2} s = {:.0}/s, {:.1} records per group commit",
            appends as f64 / secs,
            appends as f64 / commits as f64
        );
    }
    journal.close().await.unwrap();
}
