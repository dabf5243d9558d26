//! Reads and retention; both run on the blocking pool and open segment files on their own, so
//! they never wait for the writer.
//!
//! A read never looks at or past `durable_next`, which the writer raises only after the fsync:
//! a consumer can never see a record that a crash could still take back.

use std::io::ErrorKind;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::error::JournalError;
use super::segment::{self, Frame, FrameReader, HEADER_LEN};
use super::{Position, Shared};

/// Records `>= from`, at most `max_records`, stopping before `max_bytes` of payload (but at
/// least one record when one is durable).
pub(crate) fn read(
    shared: &Arc<Shared>,
    from: u64,
    max_records: usize,
    max_bytes: usize,
) -> Result<Vec<(Position, Bytes)>, JournalError> {
    let end = shared.durable_next.load(Ordering::Acquire);
    let mut out = Vec::new();
    let mut bytes = 0usize;
    let mut pos = from;
    while pos < end && out.len() < max_records {
        let (path, seg_end, start_pos, start_offset) = {
            let segments = shared.segments();
            let first = segments.first().map_or(end, |s| s.first);
            if pos < first {
                return Err(JournalError::Deleted {
                    requested: pos,
                    first,
                });
            }
            let idx = segments
                .partition_point(|s| s.first <= pos)
                .saturating_sub(1);
            let Some(seg) = segments.get(idx) else {
                return Ok(out);
            };
            let seg_end = segments
                .get(idx + 1)
                .map_or(end, |next| next.first.min(end));
            let (start_pos, start_offset) = seg
                .sparse
                .iter()
                .rev()
                .find(|(p, _)| *p <= pos)
                .copied()
                .unwrap_or((seg.first, HEADER_LEN));
            (seg.path.clone(), seg_end, start_pos, start_offset)
        };
        let mut reader = match FrameReader::open(&path, start_offset) {
            Ok(r) => r,
            Err(JournalError::Io { source, .. }) if source.kind() == ErrorKind::NotFound => {
                // `retain` deleted the segment after we looked it up.
                let first = shared.segments().first().map_or(end, |s| s.first);
                return Err(JournalError::Deleted {
                    requested: pos,
                    first,
                });
            }
            Err(e) => return Err(e),
        };
        let mut p = start_pos;
        while p < seg_end {
            let wanted = p >= pos;
            let mut payload = Vec::new();
            match reader.next(wanted.then_some(&mut payload))? {
                Frame::Record { len, .. } => {
                    if wanted {
                        if !out.is_empty() && bytes.saturating_add(len) > max_bytes {
                            return Ok(out);
                        }
                        bytes = bytes.saturating_add(len);
                        out.push((Position(p), Bytes::from(payload)));
                        if out.len() >= max_records {
                            return Ok(out);
                        }
                    }
                }
                Frame::End => {
                    return Err(JournalError::corrupt(
                        &path,
                        reader.offset(),
                        format!(
                            "segment ends at position {p}, but positions up to {} are durable",
                            seg_end - 1
                        ),
                    ));
                }
                Frame::Bad { offset, detail } => {
                    return Err(JournalError::corrupt(&path, offset, detail));
                }
            }
            p += 1;
        }
        pos = p;
    }
    Ok(out)
}

/// Deletes every segment whose records are all below `min_cursor` (a segment is fully consumed
/// when the next segment starts at or below the cursor); never the active, last segment.
pub(crate) fn retain(shared: &Arc<Shared>, min_cursor: u64) -> Result<u64, JournalError> {
    let victims: Vec<_> = {
        let mut segments = shared.segments_mut();
        let mut n = 0;
        while n + 1 < segments.len() && segments[n + 1].first <= min_cursor {
            n += 1;
        }
        segments.drain(..n).collect()
    };
    if victims.is_empty() {
        return Ok(0);
    }
    let mut freed = 0;
    for seg in &victims {
        let size = std::fs::metadata(&seg.path)
            .map(|m| m.len())
            .unwrap_or(seg.bytes);
        match std::fs::remove_file(&seg.path) {
            Ok(()) => freed += size,
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(JournalError::io(&seg.path, e)),
        }
        tracing::info!(path = %seg.path.display(), bytes = size, "journal: consumed segment deleted");
    }
    segment::sync_dir(&shared.dir)?;
    Ok(freed)
}
