//! The writer: one dedicated OS thread that owns the active segment file and group-commits.
//!
//! Why a thread and not `spawn_blocking`: the writer lives as long as the journal and spends its
//! time in `write` and `fdatasync`, which must never run on a tokio worker; a long-lived
//! `spawn_blocking` task would pin a blocking-pool thread forever anyway, and a plain thread can
//! block on `recv_timeout` of a std channel for the group-commit wait.
//!
//! Group commit: the writer blocks for the first request, then drains what is already queued; if
//! the previous commit shared its fsync (the journal is busy) it also lingers while appends keep
//! arriving — each within the time the last write + fsync took — until the batch holds
//! `max_batch_bytes` or `max_wait` has passed since that first request was *enqueued* (so an
//! appender waits at most `max_wait` for its commit to start, even when the previous fsync was
//! slow). A silence longer than one commit means every appender in flight is already in the
//! batch: it is committed then. An idle journal commits a lone append at once. It frames the batch into one buffer, issues one `write_all` and one
//! `sync_data`, publishes the new durable high-water mark and only then completes every appender's
//! oneshot. A batch that crosses `segment_bytes` is split: the old segment is written and
//! fsync'd, a new segment is created (header fsync'd, directory fsync'd), and the rest goes there.
//!
//! Failure: when a write or fsync fails, the records not yet durable are answered with the error
//! and the file is truncated back to its last fsync'd length, so nothing unacknowledged remains
//! and positions stay dense. If even that truncation fails, the writer is poisoned: every later
//! append fails with an IO error until the process restarts and recovery cleans the tail.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::error::JournalError;
use super::segment::{self, HEADER_LEN, SPARSE_STRIDE};
use super::{Position, SegmentMeta, Shared};

/// A message to the writer thread.
pub(crate) enum Msg {
    /// Append one record.
    Append(Request),
    /// Finish everything queued before this message, then stop.
    Close(oneshot::Sender<()>),
}

/// One append waiting for its group commit.
pub(crate) struct Request {
    pub payload: Bytes,
    pub enqueued: Instant,
    pub reply: oneshot::Sender<Result<Position, JournalError>>,
}

/// The writer's state: the active segment and the next position to assign.
pub(crate) struct Writer {
    pub shared: Arc<Shared>,
    pub rx: Receiver<Msg>,
    pub file: File,
    pub path: PathBuf,
    /// Bytes of the active segment that are written and fsync'd.
    pub len: u64,
    /// Position the next record gets.
    pub next: u64,
    /// Offset of the active segment's last sparse index entry.
    pub last_sparse: u64,
    pub buf: Vec<u8>,
    pub poisoned: Option<String>,
}

impl Writer {
    /// The thread's main loop; returns when closed or when every sender is gone.
    pub(crate) fn run(mut self) {
        let max_batch = self.shared.opts.max_batch_bytes;
        let max_wait = self.shared.opts.max_wait;
        let mut carry: Option<Request> = None;
        // Linger for more appends only when the last commit shared its fsync: a lone appender
        // (idle journal) is committed at once instead of waiting `max_wait` for company that
        // is not coming; under load, requests queue during each fsync and batches form anyway.
        let mut last_batch = 1usize;
        // How long the last write + fsync took: the longest silence worth waiting through for
        // company. All appenders may already be in the batch (a client with N connections has
        // at most N hits in flight); lingering the full `max_wait` for requests that cannot
        // come would add `max_wait` to every hit's latency and cap throughput at N / max_wait.
        let mut last_commit = std::time::Duration::ZERO;
        loop {
            let first = match carry.take() {
                Some(r) => r,
                None => match self.rx.recv() {
                    Ok(Msg::Append(r)) => r,
                    Ok(Msg::Close(done)) => {
                        let _ = done.send(());
                        return;
                    }
                    Err(_) => return,
                },
            };
            let deadline = first.enqueued + max_wait;
            let mut bytes = segment::frame_len(first.payload.len());
            let mut batch = vec![first];
            let mut close = None;
            while bytes < max_batch {
                let msg = match self.rx.try_recv() {
                    Ok(m) => m,
                    Err(TryRecvError::Disconnected) => break,
                    Err(TryRecvError::Empty) => {
                        let now = Instant::now();
                        if last_batch <= 1 || now >= deadline {
                            break;
                        }
                        match self.rx.recv_timeout((deadline - now).min(last_commit)) {
                            Ok(m) => m,
                            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                                break;
                            }
                        }
                    }
                };
                match msg {
                    Msg::Append(r) => {
                        let len = segment::frame_len(r.payload.len());
                        if bytes + len > max_batch {
                            carry = Some(r);
                            break;
                        }
                        bytes += len;
                        batch.push(r);
                    }
                    Msg::Close(done) => {
                        close = Some(done);
                        break;
                    }
                }
            }
            last_batch = batch.len();
            let started = Instant::now();
            self.commit(batch, bytes);
            last_commit = started.elapsed();
            if let Some(done) = close {
                if let Some(r) = carry.take() {
                    let len = segment::frame_len(r.payload.len());
                    self.commit(vec![r], len);
                }
                let _ = done.send(());
                return;
            }
        }
    }

    /// Writes and fsyncs one batch, then answers its appenders.
    fn commit(&mut self, batch: Vec<Request>, bytes: usize) {
        let base = self.next;
        let (durable, error) = self.write_batch(&batch);
        self.next = base + durable;
        let shared = &self.shared;
        let stats = &shared.stats;
        if durable > 0 {
            let payload: u64 = batch
                .iter()
                .take(durable as usize)
                .map(|r| r.payload.len() as u64)
                .sum();
            stats.appends.fetch_add(durable, Ordering::Relaxed);
            stats.append_bytes.fetch_add(payload, Ordering::Relaxed);
            stats.group_commits.fetch_add(1, Ordering::Relaxed);
            stats
                .batch_records_max
                .fetch_max(durable, Ordering::Relaxed);
        }
        let failed = batch.len() as u64 - durable;
        if failed > 0 {
            stats.failed_appends.fetch_add(failed, Ordering::Relaxed);
        }
        shared.pending_bytes.fetch_sub(bytes, Ordering::AcqRel);
        shared
            .in_flight
            .fetch_sub(batch.len() as u64, Ordering::AcqRel);
        // Readers see the records only now, after their fsync.
        shared.durable_next.store(self.next, Ordering::Release);
        for (i, req) in batch.into_iter().enumerate() {
            let result = if (i as u64) < durable {
                Ok(Position(base + i as u64))
            } else {
                Err(match &error {
                    Some(e) => e.duplicate(),
                    None => JournalError::Closed,
                })
            };
            // The appender may have stopped waiting (its future dropped); its record stays durable.
            let _ = req.reply.send(result);
        }
    }

    /// Returns how many records of the batch are durable, and the error that stopped the rest.
    fn write_batch(&mut self, batch: &[Request]) -> (u64, Option<JournalError>) {
        if let Some(why) = &self.poisoned {
            return (0, Some(self.poisoned_error(why)));
        }
        let segment_bytes = self.shared.opts.segment_bytes;
        let base = self.next;
        let mut durable = 0u64;
        let mut sparse = Vec::new();
        let mut last_sparse = self.last_sparse;
        self.buf.clear();
        for (i, req) in batch.iter().enumerate() {
            let frame = segment::frame_len(req.payload.len()) as u64;
            let mut offset = self.len + self.buf.len() as u64;
            if offset > HEADER_LEN && offset + frame > segment_bytes {
                if let Err(e) = self.flush() {
                    return (durable, Some(self.recover_from(e)));
                }
                self.publish(std::mem::take(&mut sparse));
                self.last_sparse = last_sparse;
                durable = i as u64;
                if let Err(e) = self.roll(base + durable) {
                    tracing::error!(error = %e, "journal: cannot start a new segment");
                    return (durable, Some(e));
                }
                offset = HEADER_LEN;
                last_sparse = HEADER_LEN;
            }
            if offset >= last_sparse + SPARSE_STRIDE {
                sparse.push((base + i as u64, offset));
                last_sparse = offset;
            }
            segment::encode(&mut self.buf, &req.payload);
        }
        if let Err(e) = self.flush() {
            return (durable, Some(self.recover_from(e)));
        }
        self.publish(sparse);
        self.last_sparse = last_sparse;
        (batch.len() as u64, None)
    }

    /// One `write_all` of the buffer and one `sync_data`.
    fn flush(&mut self) -> Result<(), JournalError> {
        self.file
            .write_all(&self.buf)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| JournalError::io(&self.path, e))?;
        self.shared.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.len += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// After a failed write or fsync: cut the file back to its last fsync'd length.
    fn recover_from(&mut self, error: JournalError) -> JournalError {
        tracing::error!(error = %error, "journal: group commit failed; the batch is refused");
        self.buf.clear();
        let len = self.len;
        let cut = self
            .file
            .set_len(len)
            .and_then(|()| self.file.sync_data())
            .and_then(|()| self.file.seek(SeekFrom::Start(len)).map(|_| ()));
        if let Err(e) = cut {
            let why = format!(
                "cannot truncate {} after a failed write: {e}",
                self.path.display()
            );
            tracing::error!(error = %e, path = %self.path.display(), "journal: writer poisoned");
            self.poisoned = Some(why);
        }
        error
    }

    fn poisoned_error(&self, why: &str) -> JournalError {
        JournalError::io(
            &self.path,
            std::io::Error::other(format!(
                "journal writer stopped after an unrecoverable error ({why}); restart to recover"
            )),
        )
    }

    /// Makes the active segment's new length and sparse entries visible to readers and
    /// `retain` (the active segment is always the last one of the index).
    fn publish(&mut self, sparse: Vec<(u64, u64)>) {
        let mut segments = self.shared.segments_mut();
        if let Some(active) = segments.last_mut() {
            active.bytes = self.len;
            active.sparse.extend(sparse);
        }
    }

    /// Starts a new segment whose first record will be `first`.
    fn roll(&mut self, first: u64) -> Result<(), JournalError> {
        let (file, path) = segment::create(&self.shared.dir, first)?;
        // create() fsyncs the header and the directory.
        self.shared.stats.fsyncs.fetch_add(2, Ordering::Relaxed);
        tracing::info!(path = %path.display(), first, "journal: new segment");
        self.shared.segments_mut().push(SegmentMeta {
            first,
            path: path.clone(),
            bytes: HEADER_LEN,
            sparse: Vec::new(),
        });
        self.file = file;
        self.path = path;
        self.len = HEADER_LEN;
        self.last_sparse = HEADER_LEN;
        Ok(())
    }
}
