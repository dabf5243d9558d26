//! Recovery on open: verify every segment, cut a torn tail, rebuild the in-memory index.
//!
//! Only the end of the last segment can be torn: older segments were fsync'd completely before
//! the next one was created, and the writer has at most one batch (`max_batch_bytes`) unsynced
//! at a time. So a bad record in the last `max(max_batch_bytes, 4 MiB)` bytes of the last segment
//! is a torn write and is truncated, together with everything after it; a bad record anywhere
//! else, or a gap between segments, means acknowledged data is damaged and open fails with the
//! file and byte offset.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::error::JournalError;
use super::segment::{self, HEADER_LEN, MAGIC};
use super::{
    Counters, DEFAULT_MAX_BATCH_BYTES, JournalOptions, Position, RecoveryReport, SegmentMeta,
    Shared, cursor,
};

/// What the writer needs to continue where the last run stopped.
pub(crate) struct Recovered {
    pub shared: Arc<Shared>,
    pub file: File,
    pub path: PathBuf,
    pub len: u64,
    pub last_sparse: u64,
}

/// Opens the journal in `dir` (creating it), verifies and repairs it.
pub(crate) fn recover(
    dir: &Path,
    opts: JournalOptions,
) -> Result<(Recovered, RecoveryReport), JournalError> {
    if !dir.is_dir() {
        std::fs::create_dir_all(dir).map_err(|e| JournalError::io(dir, e))?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            segment::sync_dir(parent)?;
        }
    }
    let cursors = cursor::load_all(dir)?;
    let window = opts.max_batch_bytes.max(DEFAULT_MAX_BATCH_BYTES) as u64;
    let files = segment::list(dir)?;
    let mut metas: Vec<SegmentMeta> = Vec::with_capacity(files.len());
    let mut records = 0u64;
    let mut last_records = 0u64;
    let mut truncated_bytes = 0u64;
    let mut truncated_at = None;
    for (i, (first, path)) in files.iter().enumerate() {
        let is_last = i + 1 == files.len();
        if let Some(prev) = metas.last() {
            let expected = prev.first + last_records;
            if *first != expected {
                return Err(JournalError::corrupt(
                    path,
                    0,
                    format!(
                        "segment starts at position {first}, but the previous segment {} ends before position {expected}",
                        prev.path.display()
                    ),
                ));
            }
        }
        let scan = segment::scan(path, *first)?;
        let mut valid_len = scan.valid_len;
        if let Some((offset, detail)) = scan.bad {
            let torn = is_last
                && if scan.bad_header {
                    scan.file_len < HEADER_LEN
                } else {
                    scan.file_len - offset <= window
                };
            if !torn {
                let where_ = if is_last {
                    format!(
                        "; {} bytes before the end of the last segment, too far back to be a torn write",
                        scan.file_len - offset
                    )
                } else {
                    String::new()
                };
                return Err(JournalError::corrupt(
                    path,
                    offset,
                    format!("{detail}{where_}"),
                ));
            }
            cut_tail(path, valid_len, scan.bad_header)?;
            if scan.bad_header {
                valid_len = HEADER_LEN;
            }
            truncated_bytes = scan.file_len - scan.valid_len;
            truncated_at = Some((path.clone(), offset));
            tracing::warn!(
                path = %path.display(),
                offset,
                bytes = truncated_bytes,
                detail = %detail,
                "journal: torn tail truncated"
            );
        }
        records += scan.records;
        last_records = scan.records;
        metas.push(SegmentMeta {
            first: *first,
            path: path.clone(),
            bytes: valid_len,
            sparse: scan.sparse,
        });
    }
    let (file, path, len, next) = match metas.last() {
        Some(active) => {
            let mut file = OpenOptions::new()
                .write(true)
                .open(&active.path)
                .map_err(|e| JournalError::io(&active.path, e))?;
            file.seek(SeekFrom::Start(active.bytes))
                .map_err(|e| JournalError::io(&active.path, e))?;
            (
                file,
                active.path.clone(),
                active.bytes,
                active.first + last_records,
            )
        }
        None => {
            // A new journal (or one whose segments were all removed by hand: continue after
            // the furthest cursor so positions never go back under a consumer).
            let first = cursors.values().copied().max().unwrap_or(1).max(1);
            let (file, path) = segment::create(dir, first)?;
            metas.push(SegmentMeta {
                first,
                path: path.clone(),
                bytes: HEADER_LEN,
                sparse: Vec::new(),
            });
            (file, path, HEADER_LEN, first)
        }
    };
    let last_sparse = metas
        .last()
        .and_then(|m| m.sparse.last())
        .map_or(HEADER_LEN, |(_, offset)| *offset);
    let report = RecoveryReport {
        segments: metas.len(),
        records,
        truncated_bytes,
        truncated_at,
        first_position: Position(metas.first().map_or(next, |m| m.first)),
        next_position: Position(next),
    };
    let stats = Counters::default();
    if report.truncated_at.is_some() {
        stats.torn_tails_truncated.store(1, Ordering::Relaxed);
        stats
            .truncated_bytes
            .store(truncated_bytes, Ordering::Relaxed);
    }
    let shared = Arc::new(Shared {
        dir: dir.to_path_buf(),
        opts,
        segments: RwLock::new(metas),
        durable_next: AtomicU64::new(next),
        in_flight: AtomicU64::new(0),
        pending_bytes: AtomicUsize::new(0),
        stats,
        cursors: Mutex::new(cursors),
        cursor_write: Mutex::new(()),
        closed: AtomicBool::new(false),
    });
    let recovered = Recovered {
        shared,
        file,
        path,
        len,
        last_sparse,
    };
    Ok((recovered, report))
}

/// Cuts the last segment back to `valid_len` (or rewrites a torn header) and fsyncs it.
fn cut_tail(path: &Path, valid_len: u64, bad_header: bool) -> Result<(), JournalError> {
    let mut file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| JournalError::io(path, e))?;
    let result = if bad_header {
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)).map(|_| ()))
            .and_then(|()| file.write_all(&MAGIC))
    } else {
        file.set_len(valid_len)
    };
    result
        .and_then(|()| file.sync_all())
        .map_err(|e| JournalError::io(path, e))
}
