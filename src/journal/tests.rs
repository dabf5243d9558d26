//! Unit tests of the journal, each on its own temp dir with real files and fsyncs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;

use super::segment::{FRAME_HEADER, HEADER_LEN};
use super::*;

/// Small segments so a few hundred records roll several times; a short wait keeps
/// sequential tests fast.
fn small() -> JournalOptions {
    JournalOptions {
        segment_bytes: 1024,
        max_wait: Duration::from_micros(200),
        max_batch_bytes: 64 << 10,
        max_record_bytes: 1024,
        max_pending_bytes: 1 << 20,
    }
}

/// A deterministic payload of varying length for record `i`.
fn payload(i: u64) -> Bytes {
    let mut s = format!("record-{i}-");
    s.extend(std::iter::repeat_n('x', (i % 97) as usize));
    Bytes::from(s)
}

/// Fixed-size payloads, so tests can compute byte offsets.
fn fixed(i: u64) -> Bytes {
    Bytes::from(format!("fixed-{i:010}"))
}
const FIXED_LEN: u64 = 16;

async fn append_n(j: &Journal, range: std::ops::Range<u64>, f: fn(u64) -> Bytes) {
    for i in range {
        let pos = j.append(f(i)).await.unwrap();
        assert_eq!(pos, Position(i));
    }
}

async fn read_all(j: &Journal) -> Vec<(Position, Bytes)> {
    j.read(Position(1), usize::MAX, usize::MAX).await.unwrap()
}

fn segment_paths(dir: &Path) -> Vec<PathBuf> {
    segment::list(dir)
        .unwrap()
        .into_iter()
        .map(|(_, p)| p)
        .collect()
}

fn flip_byte(path: &Path, offset: u64) {
    let mut data = std::fs::read(path).unwrap();
    data[offset as usize] ^= 0x40;
    std::fs::write(path, data).unwrap();
}

#[test]
fn handles_are_send_sync_and_clone() {
    fn check<T: Send + Sync + Clone + 'static>() {}
    check::<Journal>();
    fn error<T: std::error::Error + Send + Sync + 'static>() {}
    error::<JournalError>();
}

#[tokio::test]
async fn round_trip_across_segment_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let (j, report) = Journal::open(dir.path(), small()).await.unwrap();
    assert_eq!(report.next_position, Position(1));
    assert_eq!(report.segments, 1);
    append_n(&j, 1..501, payload).await;
    assert_eq!(j.next_position(), Position(501));
    let stats = j.stats();
    assert!(stats.segments > 10, "{stats:?}");
    assert_eq!(stats.appends, 500);
    assert_eq!(segment_paths(dir.path()).len(), stats.segments);

    // In chunks that cross segment boundaries.
    let mut pos = Position(1);
    let mut seen = 0;
    loop {
        let chunk = j.read(pos, 37, usize::MAX).await.unwrap();
        if chunk.is_empty() {
            break;
        }
        assert!(chunk.len() <= 37);
        for (p, data) in &chunk {
            assert_eq!(*p, Position(pos.0));
            assert_eq!(*data, payload(p.0));
            pos = Position(p.0 + 1);
            seen += 1;
        }
    }
    assert_eq!(seen, 500);

    // Byte limit: at least one record, never more bytes than allowed after the first.
    let one = j.read(Position(250), 100, 1).await.unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0], (Position(250), payload(250)));
    let some = j.read(Position(100), 100, 200).await.unwrap();
    assert!(some.iter().map(|(_, b)| b.len()).sum::<usize>() <= 200);
    assert_eq!(some[0].0, Position(100));
    assert!(j.read(Position(501), 10, 1000).await.unwrap().is_empty());
    assert!(j.read(Position(1), 0, 1000).await.unwrap().is_empty());
    assert_eq!(
        j.read(Position(0), 1, 1000).await.unwrap()[0].0,
        Position(1)
    );
    j.close().await.unwrap();
}

#[tokio::test]
async fn positions_and_records_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open(dir.path(), small()).await.unwrap();
    append_n(&j, 1..201, payload).await;
    j.close().await.unwrap();

    let (j, report) = Journal::open(dir.path(), small()).await.unwrap();
    assert_eq!(report.records, 200);
    assert_eq!(report.next_position, Position(201));
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(report.truncated_at, None);
    assert!(report.segments > 1);
    assert_eq!(j.next_position(), Position(201));
    append_n(&j, 201..301, payload).await;
    let all = read_all(&j).await;
    assert_eq!(all.len(), 300);
    for (p, data) in all {
        assert_eq!(data, payload(p.0));
    }
    // Dropping every handle without close also stops the writer.
    drop(j);
    let (j, report) = Journal::open(dir.path(), small()).await.unwrap();
    assert_eq!(report.next_position, Position(301));
    j.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let opts = JournalOptions {
        segment_bytes: 256 << 10,
        ..JournalOptions::default()
    };
    let (j, _) = Journal::open(dir.path(), opts).await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..64u64 {
        let j = j.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0..200u64 {
                let data = Bytes::from(format!("task-{t}-record-{i}"));
                got.push((j.append(data.clone()).await.unwrap(), data));
            }
            got
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    acked.sort_by_key(|(p, _)| *p);
    let positions: Vec<u64> = acked.iter().map(|(p, _)| p.0).collect();
    assert_eq!(positions, (1..=12_800).collect::<Vec<_>>());
    let all = read_all(&j).await;
    assert_eq!(all, acked);
    let stats = j.stats();
    assert_eq!(stats.appends, 12_800);
    assert!(
        stats.group_commits < stats.appends / 4,
        "no group commit: {stats:?}"
    );
    assert!(stats.records_per_group_commit() > 4.0);
    assert_eq!(stats.pending_bytes, 0);
    j.close().await.unwrap();
}

/// Writes 10 fixed records, closes, applies `damage` to the only segment, and reopens.
async fn damaged(damage: impl FnOnce(&Path)) -> (tempfile::TempDir, Journal, RecoveryReport) {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open(dir.path(), small()).await.unwrap();
    append_n(&j, 1..11, fixed).await;
    j.close().await.unwrap();
    let seg = &segment_paths(dir.path())[0];
    damage(seg);
    let (j, report) = Journal::open(dir.path(), small()).await.unwrap();
    (dir, j, report)
}

async fn assert_first_nine_then_continue(j: &Journal, report: &RecoveryReport) {
    let record_len = FRAME_HEADER as u64 + FIXED_LEN;
    let (path, offset) = report.truncated_at.clone().unwrap();
    assert!(path.ends_with("00000000000000000001.seg"));
    assert_eq!(offset, HEADER_LEN + 9 * record_len);
    assert_eq!(report.records, 9);
    assert_eq!(report.next_position, Position(10));
    let all = read_all(j).await;
    assert_eq!(all.len(), 9);
    for (p, data) in &all {
        assert_eq!(*data, fixed(p.0));
    }
    assert_eq!(j.append(fixed(10)).await.unwrap(), Position(10));
    assert_eq!(read_all(j).await.len(), 10);
    let stats = j.stats();
    assert_eq!(stats.torn_tails_truncated, 1);
    assert_eq!(stats.truncated_bytes, report.truncated_bytes);
}

#[tokio::test]
async fn torn_tail_mid_record_is_truncated() {
    let (_dir, j, report) = damaged(|seg| {
        let len = std::fs::metadata(seg).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(seg).unwrap();
        f.set_len(len - 5).unwrap();
    })
    .await;
    assert_eq!(report.truncated_bytes, FRAME_HEADER as u64 + FIXED_LEN - 5);
    assert_first_nine_then_continue(&j, &report).await;
}

#[tokio::test]
async fn flipped_byte_in_last_record_is_truncated() {
    let (_dir, j, report) = damaged(|seg| {
        let len = std::fs::metadata(seg).unwrap().len();
        flip_byte(seg, len - 3);
    })
    .await;
    assert_eq!(report.truncated_bytes, FRAME_HEADER as u64 + FIXED_LEN);
    assert_first_nine_then_continue(&j, &report).await;
}

#[tokio::test]
async fn zero_filled_tail_is_truncated() {
    let (_dir, j, report) = damaged(|seg| {
        let mut data = std::fs::read(seg).unwrap();
        let n = data.len();
        data[n - (FRAME_HEADER + FIXED_LEN as usize)..].fill(0);
        data.extend([0u8; 100]);
        std::fs::write(seg, data).unwrap();
    })
    .await;
    assert_eq!(
        report.truncated_bytes,
        FRAME_HEADER as u64 + FIXED_LEN + 100
    );
    assert_first_nine_then_continue(&j, &report).await;
}

#[tokio::test]
async fn torn_header_of_a_new_segment_is_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open(dir.path(), small()).await.unwrap();
    append_n(&j, 1..301, fixed).await;
    j.close().await.unwrap();
    let segs = segment_paths(dir.path());
    let last = segs.last().unwrap();
    let first_of_last = segment::parse_file_name(last.file_name().unwrap().to_str().unwrap());
    // As if the crash hit while the last segment was being created: its header is torn.
    std::fs::write(last, b"BFJ").unwrap();
    let (j, report) = Journal::open(dir.path(), small()).await.unwrap();
    assert_eq!(report.truncated_at, Some((last.clone(), 0)));
    assert_eq!(Some(report.next_position.0), first_of_last);
    let pos = j.append(fixed(999)).await.unwrap();
    assert_eq!(Some(pos.0), first_of_last);
    j.close().await.unwrap();
}

#[tokio::test]
async fn corruption_in_an_older_segment_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open(dir.path(), small()).await.unwrap();
    append_n(&j, 1..301, fixed).await;
    j.close().await.unwrap();
    let segs = segment_paths(dir.path());
    assert!(segs.len() >= 3);
    let record_len = FRAME_HEADER as u64 + FIXED_LEN;
    let bad_offset = HEADER_LEN + 5 * record_len;
    flip_byte(&segs[0], bad_offset + FRAME_HEADER as u64 + 2);
    match Journal::open(dir.path(), small()).await {
        Err(JournalError::Corrupt {
            path,
            offset,
            detail,
        }) => {
            assert_eq!(path, segs[0]);
            assert_eq!(offset, bad_offset);
            assert!(detail.contains("CRC"), "{detail}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // The damaged file was left alone for the operator.
    assert_eq!(segment_paths(dir.path()), segs);
}

#[tokio::test]
async fn corruption_far_from_the_tail_of_the_last_segment_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let opts = JournalOptions {
        max_record_bytes: 64 << 10,
        max_batch_bytes: 256 << 10,
        max_pending_bytes: 1 << 20,
        ..JournalOptions::default()
    };
    let (j, _) = Journal::open(dir.path(), opts.clone()).await.unwrap();
    let big = Bytes::from(vec![7u8; 64 << 10]);
    for _ in 0..80 {
        j.append(big.clone()).await.unwrap();
    }
    j.close().await.unwrap();
    let seg = &segment_paths(dir.path())[0];
    flip_byte(seg, HEADER_LEN + 100);
    match Journal::open(dir.path(), opts).await {
        Err(JournalError::Corrupt {
            path,
            offset,
            detail,
        }) => {
            assert_eq!(&path, seg);
            assert_eq!(offset, HEADER_LEN);
            assert!(detail.contains("too far back"), "{detail}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[tokio::test]
async fn a_missing_segment_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open(dir.path(), small()).await.unwrap();
    append_n(&j, 1..301, fixed).await;
    j.close().await.unwrap();
    let segs = segment_paths(dir.path());
    std::fs::remove_file(&segs[1]).unwrap();
    match Journal::open(dir.path(), small()).await {
        Err(JournalError::Corrupt { path, offset, .. }) => {
            assert_eq!(path, segs[2]);
            assert_eq!(offset, 0);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[tokio::test]
async fn cursor_commits_are_durable() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open(dir.path(), small()).await.unwrap();
    assert_eq!(j.cursor("ad_events").unwrap(), Position(1));
    append_n(&j, 1..21, fixed).await;
    j.commit_cursor("ad_events", Position(11)).await.unwrap();
    j.commit_cursor("audit", Position(21)).await.unwrap();
    assert_eq!(j.cursor("ad_events").unwrap(), Position(11));
    match j.commit_cursor("ad_events", Position(22)).await {
        Err(JournalError::CursorAhead {
            next: 22, end: 21, ..
        }) => {}
        other => panic!("expected CursorAhead, got {other:?}"),
    }
    assert!(matches!(
        j.cursor("../etc"),
        Err(JournalError::InvalidConsumer(_))
    ));
    j.close().await.unwrap();
    let (j, _) = Journal::open(dir.path(), small()).await.unwrap();
    assert_eq!(j.cursor("ad_events").unwrap(), Position(11));
    assert_eq!(j.cursor("audit").unwrap(), Position(21));
    assert_eq!(j.cursor("never").unwrap(), Position(1));
    j.close().await.unwrap();
}

#[tokio::test]
async fn retain_deletes_only_fully_consumed_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open(dir.path(), small()).await.unwrap();
    append_n(&j, 1..301, fixed).await;
    assert_eq!(j.retain().await.unwrap(), 0, "no consumer yet: keep all");
    let firsts: Vec<u64> = segment::list(dir.path())
        .unwrap()
        .into_iter()
        .map(|(f, _)| f)
        .collect();
    assert!(firsts.len() >= 4);
    // Consumer `a` is in the middle of the third segment, `b` at the start of the second.
    j.commit_cursor("a", Position(firsts[2] + 1)).await.unwrap();
    j.commit_cursor("b", Position(firsts[1])).await.unwrap();
    let before = j.stats().segment_bytes;
    let freed = j.retain().await.unwrap();
    assert!(freed > 0);
    assert_eq!(j.stats().segment_bytes, before - freed);
    let left: Vec<u64> = segment::list(dir.path())
        .unwrap()
        .into_iter()
        .map(|(f, _)| f)
        .collect();
    assert_eq!(left, firsts[1..]);
    match j.read(Position(1), 10, 1000).await {
        Err(JournalError::Deleted {
            requested: 1,
            first,
        }) => assert_eq!(first, firsts[1]),
        other => panic!("expected Deleted, got {other:?}"),
    }
    let rest = j
        .read(Position(firsts[1]), usize::MAX, usize::MAX)
        .await
        .unwrap();
    assert_eq!(rest.len() as u64, 301 - firsts[1]);
    // Everyone consumed everything: all but the active segment go; positions go on.
    j.commit_cursor("a", Position(301)).await.unwrap();
    j.commit_cursor("b", Position(301)).await.unwrap();
    j.retain().await.unwrap();
    assert_eq!(segment_paths(dir.path()).len(), 1);
    j.close().await.unwrap();
    let (j, report) = Journal::open(dir.path(), small()).await.unwrap();
    assert_eq!(report.next_position, Position(301));
    assert_eq!(report.first_position.0, *firsts.last().unwrap());
    assert_eq!(j.append(fixed(301)).await.unwrap(), Position(301));
    j.close().await.unwrap();
}

#[tokio::test]
async fn too_large_records_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open(dir.path(), small()).await.unwrap();
    let err = j.append(Bytes::from(vec![0u8; 1025])).await.unwrap_err();
    assert!(matches!(
        err,
        JournalError::TooLarge {
            size: 1025,
            max: 1024
        }
    ));
    assert!(!err.retryable());
    assert_eq!(
        j.append(Bytes::from(vec![0u8; 1024])).await.unwrap(),
        Position(1)
    );
    assert_eq!(j.append(Bytes::new()).await.unwrap(), Position(2));
    assert_eq!(j.stats().refused_too_large, 1);
    j.close().await.unwrap();
}

#[tokio::test]
async fn back_pressure_fails_fast_with_full() {
    let dir = tempfile::tempdir().unwrap();
    let opts = JournalOptions {
        max_wait: Duration::from_millis(5),
        max_pending_bytes: 3 * (FRAME_HEADER + FIXED_LEN as usize),
        max_record_bytes: FIXED_LEN as usize,
        ..small()
    };
    let (j, _) = Journal::open(dir.path(), opts).await.unwrap();
    let results = futures::future::join_all((0..50).map(|i| j.append(fixed(i)))).await;
    let full = results
        .iter()
        .filter(|r| matches!(r, Err(JournalError::Full)))
        .count();
    let ok: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert!(full > 0 && !ok.is_empty(), "{results:?}");
    assert_eq!(full + ok.len(), 50);
    assert!(JournalError::Full.retryable());
    assert_eq!(j.stats().refused_full, full as u64);
    assert_eq!(read_all(&j).await.len(), ok.len());
    j.close().await.unwrap();
}

#[tokio::test]
async fn append_after_close_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open(dir.path(), small()).await.unwrap();
    let other = j.clone();
    j.append(fixed(1)).await.unwrap();
    j.close().await.unwrap();
    assert!(matches!(
        other.append(fixed(2)).await,
        Err(JournalError::Closed)
    ));
    assert!(!JournalError::Closed.retryable());
    // Reads still work on the remaining handle.
    assert_eq!(read_all(&other).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_makes_every_accepted_append_durable() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open(dir.path(), small()).await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let j = j.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..1000u64 {
                match j.append(fixed(t * 1000 + i)).await {
                    Ok(p) => acked.push((p, fixed(t * 1000 + i))),
                    Err(JournalError::Closed) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    j.clone().close().await.unwrap();
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    drop(j);
    let (j, report) = Journal::open(dir.path(), small()).await.unwrap();
    assert_eq!(report.records, acked.len() as u64);
    acked.sort_by_key(|(p, _)| *p);
    assert_eq!(read_all(&j).await, acked);
    j.close().await.unwrap();
}

#[tokio::test]
async fn invalid_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for opts in [
        JournalOptions {
            max_wait: Duration::from_millis(6),
            ..JournalOptions::default()
        },
        JournalOptions {
            max_batch_bytes: 1000,
            ..JournalOptions::default()
        },
        JournalOptions {
            max_pending_bytes: 10,
            ..JournalOptions::default()
        },
        JournalOptions {
            segment_bytes: 4,
            ..JournalOptions::default()
        },
    ] {
        assert!(matches!(
            Journal::open(dir.path(), opts).await,
            Err(JournalError::InvalidOptions(_))
        ));
    }
    assert!(JournalOptions::default().validate().is_ok());
}

#[tokio::test]
async fn a_registered_consumer_holds_retention_before_its_first_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open(dir.path(), small()).await.unwrap();
    append_n(&j, 1..301, fixed).await;
    // `late` has read nothing yet; `fast` consumed everything.
    assert_eq!(
        j.register_consumer("late", Position(1)).await.unwrap(),
        Position(1)
    );
    j.commit_cursor("fast", Position(301)).await.unwrap();
    assert_eq!(
        j.retain().await.unwrap(),
        0,
        "`late` still needs every segment"
    );
    assert_eq!(read_all(&j).await.len(), 300);
    // Registering again keeps the cursor; a start past the end is clamped to the end.
    j.commit_cursor("late", Position(5)).await.unwrap();
    assert_eq!(
        j.register_consumer("late", Position(200)).await.unwrap(),
        Position(5)
    );
    assert_eq!(
        j.register_consumer("new", Position(u64::MAX))
            .await
            .unwrap(),
        Position(301)
    );
    j.close().await.unwrap();
    // Registration is durable: it survives a restart.
    let (j, _) = Journal::open(dir.path(), small()).await.unwrap();
    assert_eq!(j.cursor("late").unwrap(), Position(5));
    assert_eq!(j.retain().await.unwrap(), 0);
    // A removed consumer no longer holds retention.
    assert!(j.remove_consumer("late").await.unwrap());
    assert!(!j.remove_consumer("late").await.unwrap());
    assert!(j.retain().await.unwrap() > 0);
    j.close().await.unwrap();
    let (j, _) = Journal::open(dir.path(), small()).await.unwrap();
    assert_eq!(j.cursor("late").unwrap(), Position(1), "forgotten for good");
    j.close().await.unwrap();
}
