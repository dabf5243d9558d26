//! The embedded durable journal: the local log every monitoring-link hit is appended to before
//! the media gets its answer.
//!
//! **Why it exists.** `DESIGN.md` promises that a success answer means the event is durable: no
//! `200`/`302` before the hit is on disk. [`Journal::append`] therefore resolves only after the
//! record is written *and* fsync'd (`fdatasync` of the segment; plus a directory fsync whenever a
//! new segment file was created). The normalize pipeline reads from a consumer cursor and moves
//! the cursor only after its Parquet batch is committed, so the journal is the hand-off point of
//! the exactly-once protocol.
//!
//! **Why group commit.** One fsync per hit would cap a node at a few hundred hits per second.
//! Appenders instead queue their record for one writer thread (see `writer.rs`), which gathers
//! everything that arrives within `max_wait` (≤ 5 ms) of the first waiting record, up to
//! `max_batch_bytes`, and makes the whole batch durable with one `write_all` + one `sync_data`.
//! Many concurrent hits share one fsync; a lone hit waits at most `max_wait` extra.
//!
//! **Layout.** `dir/{first:020}.seg` segment files (format in `segment.rs`) and
//! `dir/cursors/{consumer}.cursor` (see `cursor.rs`). Positions are dense sequence numbers starting
//! at 1, derived from the file names and record order, so they survive restarts.
//!
//! **Recovery.** [`Journal::open`] verifies every record of every segment. Only the tail of the
//! last segment can be torn by a crash (it is the only place written after the last fsync), and
//! that tail is at most one batch long: a bad record in the last `max(max_batch_bytes, 4 MiB)`
//! bytes is *truncated* (with everything after it) and reported. A bad record anywhere else is corruption of acknowledged data: open refuses
//! to start and names the file and byte offset, instead of skipping past it.
//!
//! **Back-pressure.** More than `max_pending_bytes` queued but unwritten fails fast with
//! [`JournalError::Full`] (retryable: the endpoint answers `503` with `Retry-After`).

mod cursor;
mod error;
mod read;
mod recover;
mod segment;
mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

pub use error::JournalError;

use writer::{Msg, Request, Writer};

/// How many appends may sit in the writer's channel; past this, appends fail with `Full` (the
/// byte budget `max_pending_bytes` usually trips first).
const CHANNEL_CAPACITY: usize = 16 * 1024;

/// The default `max_batch_bytes`; recovery also treats at least this much of the last segment's
/// end as a possibly torn tail.
const DEFAULT_MAX_BATCH_BYTES: usize = 4 << 20;

/// Tuning of a [`Journal`]. `Default` gives the production values.
#[derive(Clone, Debug)]
pub struct JournalOptions {
    /// Start a new segment file once the active one would grow past this many bytes
    /// (default 64 MiB). A single record larger than this still gets a segment of its own.
    pub segment_bytes: u64,
    /// Longest an append waits for its group commit to start (default 2 ms; at most 5 ms).
    pub max_wait: Duration,
    /// A group commit writes at most this many bytes, framing included (default 4 MiB).
    pub max_batch_bytes: usize,
    /// Appends larger than this are refused with [`JournalError::TooLarge`] (default 64 KiB).
    pub max_record_bytes: usize,
    /// Back-pressure: an append that would make more than this many bytes queued but not yet
    /// written fails fast with [`JournalError::Full`] (default 64 MiB).
    pub max_pending_bytes: usize,
}

impl Default for JournalOptions {
    fn default() -> JournalOptions {
        JournalOptions {
            segment_bytes: 64 << 20,
            max_wait: Duration::from_millis(2),
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            max_record_bytes: 64 << 10,
            max_pending_bytes: 64 << 20,
        }
    }
}

impl JournalOptions {
    /// Checks that the limits are consistent.
    pub fn validate(&self) -> Result<(), JournalError> {
        let bad = |msg: String| Err(JournalError::InvalidOptions(msg));
        if self.max_wait > Duration::from_millis(5) {
            return bad(format!(
                "max_wait is {:?}; it must be at most 5 ms",
                self.max_wait
            ));
        }
        if self.max_record_bytes > u32::MAX as usize - segment::FRAME_HEADER {
            return bad(format!(
                "max_record_bytes {} does not fit the 32-bit length",
                self.max_record_bytes
            ));
        }
        if segment::frame_len(self.max_record_bytes) > self.max_batch_bytes {
            return bad(format!(
                "max_batch_bytes {} must hold one framed record of max_record_bytes {} (+{} bytes)",
                self.max_batch_bytes,
                self.max_record_bytes,
                segment::FRAME_HEADER
            ));
        }
        if self.max_pending_bytes < segment::frame_len(self.max_record_bytes) {
            return bad(format!(
                "max_pending_bytes {} must hold at least one record of max_record_bytes {}",
                self.max_pending_bytes, self.max_record_bytes
            ));
        }
        if self.segment_bytes <= segment::HEADER_LEN {
            return bad(format!(
                "segment_bytes {} is smaller than the segment header",
                self.segment_bytes
            ));
        }
        Ok(())
    }
}

/// The sequence number of a record: dense, starting at 1, stable across restarts.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Position(pub u64);

/// The first position of a journal.
impl Default for Position {
    fn default() -> Position {
        Position(1)
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// What [`Journal::open`] found and repaired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segment files found (after creating the first one of a new journal).
    pub segments: usize,
    /// Valid records in all segments.
    pub records: u64,
    /// Bytes cut from the tail of the last segment (0 when it ended cleanly).
    pub truncated_bytes: u64,
    /// The segment and byte offset where the torn tail started, if one was cut.
    pub truncated_at: Option<(PathBuf, u64)>,
    /// The oldest position still on disk.
    pub first_position: Position,
    /// The position the next append gets.
    pub next_position: Position,
}

/// A snapshot of the journal's counters, for metrics (wired up in `telemetry`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JournalStats {
    /// Records made durable since open.
    pub appends: u64,
    /// Payload bytes made durable since open.
    pub append_bytes: u64,
    /// Group commits (batches made durable); `appends / group_commits` is records per fsync.
    pub group_commits: u64,
    /// All fsync calls: one per group commit, plus the data, header and directory fsyncs of
    /// segment rolls.
    pub fsyncs: u64,
    /// Most records one group commit made durable.
    pub batch_records_max: u64,
    /// Torn tails truncated by recovery (0 or 1 per open).
    pub torn_tails_truncated: u64,
    /// Bytes cut by recovery.
    pub truncated_bytes: u64,
    /// Appends refused by back-pressure ([`JournalError::Full`]).
    pub refused_full: u64,
    /// Appends refused as too large ([`JournalError::TooLarge`]).
    pub refused_too_large: u64,
    /// Appends that reached the writer but failed (IO errors).
    pub failed_appends: u64,
    /// Segment files on disk.
    pub segments: usize,
    /// Bytes in segment files on disk.
    pub segment_bytes: u64,
    /// Bytes queued but not yet written.
    pub pending_bytes: usize,
    /// Bytes deleted by [`Journal::retain`] since open.
    pub retained_bytes_freed: u64,
    /// The position the next append gets.
    pub next_position: Position,
}

impl JournalStats {
    /// Mean records per group commit (0 before the first commit).
    pub fn records_per_group_commit(&self) -> f64 {
        if self.group_commits == 0 {
            0.0
        } else {
            self.appends as f64 / self.group_commits as f64
        }
    }
}

/// One segment in the in-memory index.
#[derive(Clone, Debug)]
pub(crate) struct SegmentMeta {
    pub first: u64,
    pub path: PathBuf,
    /// Bytes written and fsync'd.
    pub bytes: u64,
    /// `(position, offset)` every `SPARSE_STRIDE` bytes, for reads.
    pub sparse: Vec<(u64, u64)>,
}

#[derive(Default)]
pub(crate) struct Counters {
    appends: AtomicU64,
    append_bytes: AtomicU64,
    group_commits: AtomicU64,
    fsyncs: AtomicU64,
    batch_records_max: AtomicU64,
    torn_tails_truncated: AtomicU64,
    truncated_bytes: AtomicU64,
    refused_full: AtomicU64,
    refused_too_large: AtomicU64,
    failed_appends: AtomicU64,
    retained_bytes_freed: AtomicU64,
}

/// State shared by the handles, the writer thread and blocking readers.
pub(crate) struct Shared {
    dir: PathBuf,
    opts: JournalOptions,
    /// Segments sorted by first position; the last one is the writer's active segment.
    segments: RwLock<Vec<SegmentMeta>>,
    /// First position that is not durable yet: readers never go at or past it.
    durable_next: AtomicU64,
    /// Appends queued or being written.
    in_flight: AtomicU64,
    /// Framed bytes queued or being written.
    pending_bytes: AtomicUsize,
    stats: Counters,
    cursors: Mutex<HashMap<String, u64>>,
    /// Serializes cursor file replacement.
    cursor_write: Mutex<()>,
    closed: AtomicBool,
}

impl Shared {
    fn segments(&self) -> RwLockReadGuard<'_, Vec<SegmentMeta>> {
        self.segments.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn segments_mut(&self) -> RwLockWriteGuard<'_, Vec<SegmentMeta>> {
        self.segments
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn cursors(&self) -> MutexGuard<'_, HashMap<String, u64>> {
        self.cursors.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct Inner {
    shared: Arc<Shared>,
    tx: SyncSender<Msg>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

/// A handle to an open journal; cheap to clone, `Send + Sync`. The writer thread stops when
/// [`Journal::close`] is called or the last handle is dropped.
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("dir", &self.inner.shared.dir)
            .field("next_position", &self.next_position())
            .finish()
    }
}

/// Runs blocking file work off the tokio workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, JournalError> + Send + 'static,
) -> Result<T, JournalError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| JournalError::Task(e.to_string()))?
}

impl Journal {
    /// Opens or creates the journal in `dir` (creating the directory), verifies every record,
    /// truncates a torn tail of the last segment (reported in the [`RecoveryReport`]) and starts
    /// the writer thread. Corruption anywhere else is a [`JournalError::Corrupt`] naming the file
    /// and byte offset: the journal refuses to start rather than lose acknowledged records.
    pub async fn open(
        dir: &Path,
        opts: JournalOptions,
    ) -> Result<(Journal, RecoveryReport), JournalError> {
        opts.validate()?;
        let dir = dir.to_path_buf();
        let (recovered, report) = blocking(move || recover::recover(&dir, opts)).await?;
        let shared = recovered.shared;
        let (tx, rx) = std::sync::mpsc::sync_channel(CHANNEL_CAPACITY);
        let writer = Writer {
            shared: Arc::clone(&shared),
            rx,
            file: recovered.file,
            path: recovered.path,
            len: recovered.len,
            next: report.next_position.0,
            last_sparse: recovered.last_sparse,
            buf: Vec::with_capacity(shared.opts.max_batch_bytes),
            poisoned: None,
        };
        let handle = std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| JournalError::io(&shared.dir, e))?;
        tracing::info!(
            dir = %shared.dir.display(),
            segments = report.segments,
            records = report.records,
            next = report.next_position.0,
            truncated_bytes = report.truncated_bytes,
            "journal opened"
        );
        let journal = Journal {
            inner: Arc::new(Inner {
                shared,
                tx,
                writer: Mutex::new(Some(handle)),
            }),
        };
        Ok((journal, report))
    }

    /// Appends one record and resolves with its position only after it is written and fsync'd
    /// (with the directory fsync'd too when the record opened a new segment).
    ///
    /// Fails fast with [`JournalError::TooLarge`] above `max_record_bytes`,
    /// [`JournalError::Full`] under back-pressure, [`JournalError::Closed`] after
    /// [`Journal::close`]. Dropping the future after the record was queued does not withdraw
    /// it: it may still become durable, unacknowledged (the caller then sees at-least-once).
    pub async fn append(&self, record: Bytes) -> Result<Position, JournalError> {
        let shared = &self.inner.shared;
        if shared.closed.load(Ordering::Acquire) {
            return Err(JournalError::Closed);
        }
        let max = shared.opts.max_record_bytes;
        if record.len() > max {
            shared
                .stats
                .refused_too_large
                .fetch_add(1, Ordering::Relaxed);
            return Err(JournalError::TooLarge {
                size: record.len(),
                max,
            });
        }
        let framed = segment::frame_len(record.len());
        let before = shared.pending_bytes.fetch_add(framed, Ordering::AcqRel);
        if before + framed > shared.opts.max_pending_bytes {
            shared.pending_bytes.fetch_sub(framed, Ordering::AcqRel);
            shared.stats.refused_full.fetch_add(1, Ordering::Relaxed);
            return Err(JournalError::Full);
        }
        let (reply, answer) = oneshot::channel();
        shared.in_flight.fetch_add(1, Ordering::AcqRel);
        let request = Request {
            payload: record,
            enqueued: Instant::now(),
            reply,
        };
        if let Err(e) = self.inner.tx.try_send(Msg::Append(request)) {
            shared.pending_bytes.fetch_sub(framed, Ordering::AcqRel);
            shared.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(match e {
                TrySendError::Full(_) => {
                    shared.stats.refused_full.fetch_add(1, Ordering::Relaxed);
                    JournalError::Full
                }
                TrySendError::Disconnected(_) => JournalError::Closed,
            });
        }
        // The writer drops the sender only when it stops before handling the request.
        answer.await.map_err(|_| JournalError::Closed)?
    }

    /// Up to `max_records` records with position `>= from`, in order, stopping before the
    /// payloads exceed `max_bytes` (but always at least one record when one exists). Only
    /// durable records are returned. Reading below the oldest retained position fails with
    /// [`JournalError::Deleted`]; every returned record's CRC was verified.
    pub async fn read(
        &self,
        from: Position,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<(Position, Bytes)>, JournalError> {
        let shared = Arc::clone(&self.inner.shared);
        blocking(move || read::read(&shared, from.0.max(1), max_records, max_bytes)).await
    }

    /// The position the next append will get (exact when no append is in flight).
    pub fn next_position(&self) -> Position {
        let shared = &self.inner.shared;
        let in_flight = shared.in_flight.load(Ordering::Acquire);
        Position(shared.durable_next.load(Ordering::Acquire) + in_flight)
    }

    /// The first position `consumer` has not consumed yet ([`Position(1)`](Position) if it never
    /// committed). Served from memory; the value is durable once [`Journal::commit_cursor`]
    /// returned.
    pub fn cursor(&self, consumer: &str) -> Result<Position, JournalError> {
        cursor::validate(consumer)?;
        let cursors = self.inner.shared.cursors();
        Ok(Position(cursors.get(consumer).copied().unwrap_or(1)))
    }

    /// Whether `consumer` has a cursor (it committed or registered, and was not removed).
    pub fn has_consumer(&self, consumer: &str) -> bool {
        self.inner.shared.cursors().contains_key(consumer)
    }

    /// Durably stores `next` as the first position `consumer` has not consumed (temp file,
    /// fsync, rename, directory fsync). `next` may not pass [`Journal::next_position`]'s durable
    /// part; it may move backwards (to re-read). Consumers known here hold back
    /// [`Journal::retain`].
    pub async fn commit_cursor(&self, consumer: &str, next: Position) -> Result<(), JournalError> {
        cursor::validate(consumer)?;
        let shared = Arc::clone(&self.inner.shared);
        let end = shared.durable_next.load(Ordering::Acquire);
        let next = next.0.max(1);
        if next > end {
            return Err(JournalError::CursorAhead {
                consumer: consumer.to_string(),
                next,
                end,
            });
        }
        let consumer = consumer.to_string();
        blocking(move || {
            let _serial = shared
                .cursor_write
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            cursor::store(&shared.dir, &consumer, next)?;
            shared.cursors().insert(consumer, next);
            Ok(())
        })
        .await
    }

    /// Makes `consumer` known to retention before it has consumed anything: when it has no
    /// cursor yet, `start` (clamped to the oldest retained and the durable end) is stored
    /// durably as its cursor. Returns the consumer's cursor.
    ///
    /// Why: [`Journal::retain`] only waits for consumers that have a cursor. A consumer that
    /// has not committed yet (a pipeline before its first batch, the forwarder on its first
    /// start) would otherwise see the segments it still needs deleted as soon as another
    /// consumer commits. Every consumer registers when the daemon starts.
    pub async fn register_consumer(
        &self,
        consumer: &str,
        start: Position,
    ) -> Result<Position, JournalError> {
        cursor::validate(consumer)?;
        if let Some(next) = self.inner.shared.cursors().get(consumer).copied() {
            return Ok(Position(next));
        }
        let (first, end) = {
            let shared = &self.inner.shared;
            let end = shared.durable_next.load(Ordering::Acquire);
            let first = shared.segments().first().map_or(end, |s| s.first);
            (first, end)
        };
        let start = Position(start.0.clamp(first.max(1), end.max(1)));
        self.commit_cursor(consumer, start).await?;
        Ok(start)
    }

    /// Forgets `consumer`: its cursor file is deleted, so retention no longer waits for it
    /// (a forwarder that was switched off must not hold the disk forever). Returns whether it
    /// had a cursor.
    pub async fn remove_consumer(&self, consumer: &str) -> Result<bool, JournalError> {
        cursor::validate(consumer)?;
        let shared = Arc::clone(&self.inner.shared);
        let consumer = consumer.to_string();
        blocking(move || {
            let _serial = shared
                .cursor_write
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let known = shared.cursors().remove(&consumer).is_some();
            cursor::remove(&shared.dir, &consumer)?;
            Ok(known)
        })
        .await
    }

    /// Deletes the segments all of whose records are below the smallest cursor of all known
    /// consumers (never the active segment; nothing when no consumer has a cursor). Returns the
    /// bytes freed. Consumers that never committed are unknown here: they must
    /// [`Journal::register_consumer`] first.
    pub async fn retain(&self) -> Result<u64, JournalError> {
        let shared = Arc::clone(&self.inner.shared);
        let Some(min) = shared.cursors().values().copied().min() else {
            return Ok(0);
        };
        let freed = blocking(move || read::retain(&shared, min)).await?;
        self.inner
            .shared
            .stats
            .retained_bytes_freed
            .fetch_add(freed, Ordering::Relaxed);
        Ok(freed)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> JournalStats {
        let shared = &self.inner.shared;
        let c = &shared.stats;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (segments, segment_bytes) = {
            let segs = shared.segments();
            (segs.len(), segs.iter().map(|s| s.bytes).sum())
        };
        JournalStats {
            appends: get(&c.appends),
            append_bytes: get(&c.append_bytes),
            group_commits: get(&c.group_commits),
            fsyncs: get(&c.fsyncs),
            batch_records_max: get(&c.batch_records_max),
            torn_tails_truncated: get(&c.torn_tails_truncated),
            truncated_bytes: get(&c.truncated_bytes),
            refused_full: get(&c.refused_full),
            refused_too_large: get(&c.refused_too_large),
            failed_appends: get(&c.failed_appends),
            segments,
            segment_bytes,
            pending_bytes: shared.pending_bytes.load(Ordering::Relaxed),
            retained_bytes_freed: get(&c.retained_bytes_freed),
            next_position: self.next_position(),
        }
    }

    /// Stops accepting appends, lets the writer make everything already accepted durable, and
    /// stops the writer thread. Other handles get [`JournalError::Closed`] from then on; reads
    /// keep working.
    pub async fn close(self) -> Result<(), JournalError> {
        self.inner.shared.closed.store(true, Ordering::Release);
        let (done, finished) = oneshot::channel();
        let tx = self.inner.tx.clone();
        // A blocking send: the channel may be full of appends that must be written first.
        let sent = blocking(move || Ok(tx.send(Msg::Close(done)).is_ok())).await?;
        if sent {
            // An error only means the writer already stopped.
            let _ = finished.await;
        }
        let handle = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            blocking(move || {
                handle
                    .join()
                    .map_err(|_| JournalError::Task("journal writer thread panicked".into()))
            })
            .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
