//! The journal's error type: every variant names what went wrong and where (file path, byte
//! offset, position), so an operator can act on it without reading the code.

use std::path::{Path, PathBuf};

/// Everything that can go wrong in the journal.
///
/// [`JournalError::retryable`] tells the collect endpoints whether to answer `503` with
/// `Retry-After` (the condition may clear: disk full, back-pressure, a transient IO error) or to
/// treat the failure as a caller bug / fatal state.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// A file system call failed on `path`.
    #[error("journal {}: {source}", path.display())]
    Io {
        /// The file or directory the call was about.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A record or file does not verify (bad CRC, bad framing, missing records, bad header).
    #[error("journal {} is corrupt at byte offset {offset}: {detail}", path.display())]
    Corrupt {
        /// The segment or cursor file.
        path: PathBuf,
        /// Byte offset in that file where the bad data starts.
        offset: u64,
        /// What did not verify.
        detail: String,
    },
    /// The record is larger than `max_record_bytes`.
    #[error("journal record of {size} bytes is larger than the limit of {max} bytes")]
    TooLarge {
        /// Size of the refused record.
        size: usize,
        /// The configured `max_record_bytes`.
        max: usize,
    },
    /// Back-pressure: more than `max_pending_bytes` are queued but not yet written.
    #[error("journal is full: too many appends are waiting for the disk; retry later")]
    Full,
    /// The journal was closed (or its writer stopped); no more appends are accepted.
    #[error("journal is closed")]
    Closed,
    /// `JournalOptions` are inconsistent.
    #[error("invalid journal options: {0}")]
    InvalidOptions(String),
    /// A consumer name is empty, too long, or has characters other than `[A-Za-z0-9_.-]`.
    #[error(
        "invalid journal consumer name `{0}`: use 1 to 128 characters of [A-Za-z0-9_.-], not starting with `.`"
    )]
    InvalidConsumer(String),
    /// A read asked for positions that [`crate::journal::Journal::retain`] already deleted.
    #[error(
        "journal position {requested} is no longer retained (first retained position is {first})"
    )]
    Deleted {
        /// The position asked for.
        requested: u64,
        /// The oldest position still on disk.
        first: u64,
    },
    /// A cursor commit points past the last durable record.
    #[error(
        "consumer `{consumer}` cannot commit cursor {next}: the journal ends before position {end}"
    )]
    CursorAhead {
        /// The consumer.
        consumer: String,
        /// The cursor it tried to commit.
        next: u64,
        /// The position the next append will get; cursors may be at most this.
        end: u64,
    },
    /// A blocking task of the journal panicked or was cancelled (a bug, never expected).
    #[error("journal background task failed: {0}")]
    Task(String),
}

impl JournalError {
    /// Whether the condition may clear by itself, so the caller should retry later (the collect
    /// endpoints answer `503` with `Retry-After`): back-pressure and IO errors (disk full, a
    /// flaky device). Corruption, closed journals and bad arguments are not retryable.
    pub fn retryable(&self) -> bool {
        matches!(self, JournalError::Full | JournalError::Io { .. })
    }

    /// Wraps an IO error with the path it is about.
    pub(crate) fn io(path: impl AsRef<Path>, source: std::io::Error) -> JournalError {
        JournalError::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// A corruption error at `offset` of `path`.
    pub(crate) fn corrupt(
        path: impl AsRef<Path>,
        offset: u64,
        detail: impl Into<String>,
    ) -> JournalError {
        JournalError::Corrupt {
            path: path.as_ref().to_path_buf(),
            offset,
            detail: detail.into(),
        }
    }

    /// A copy of this error for each appender of a failed group commit (`io::Error` is not
    /// `Clone`; the copy keeps its kind and message).
    pub(crate) fn duplicate(&self) -> JournalError {
        match self {
            JournalError::Io { path, source } => JournalError::Io {
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            JournalError::Corrupt {
                path,
                offset,
                detail,
            } => JournalError::Corrupt {
                path: path.clone(),
                offset: *offset,
                detail: detail.clone(),
            },
            JournalError::TooLarge { size, max } => JournalError::TooLarge {
                size: *size,
                max: *max,
            },
            JournalError::Full => JournalError::Full,
            JournalError::Closed => JournalError::Closed,
            JournalError::InvalidOptions(s) => JournalError::InvalidOptions(s.clone()),
            JournalError::InvalidConsumer(s) => JournalError::InvalidConsumer(s.clone()),
            JournalError::Deleted { requested, first } => JournalError::Deleted {
                requested: *requested,
                first: *first,
            },
            JournalError::CursorAhead {
                consumer,
                next,
                end,
            } => JournalError::CursorAhead {
                consumer: consumer.clone(),
                next: *next,
                end: *end,
            },
            JournalError::Task(s) => JournalError::Task(s.clone()),
        }
    }
}
