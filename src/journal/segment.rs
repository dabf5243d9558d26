//! Segment files: naming, the on-disk record format, and sequential scanning.
//!
//! A segment is `{first:020}.seg`, where `first` is the position of its first record. It starts
//! with an 8-byte header (`BFJRNL`, a zero byte, format version `1`), followed by records:
//!
//! ```text
//! [len: u32 LE][crc: u32 LE][payload: len bytes]
//! crc = CRC-32 (IEEE, as crc32fast / zlib compute it) over the 4 length bytes, then the payload
//! ```
//!
//! The CRC covers the length too, so a flipped length bit cannot make the reader frame the rest of
//! the file wrongly, and a zero-filled tail (what some file systems leave after a power cut) never
//! verifies (`crc32([0, 0, 0, 0]) != 0`). A record's position is the segment's `first` plus its
//! index in the file; positions are never stored, so they cannot disagree with the file names.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::error::JournalError;

/// Segment header: magic and format version.
pub(crate) const MAGIC: [u8; 8] = *b"BFJRNL\x00\x01";
/// Length of the segment header.
pub(crate) const HEADER_LEN: u64 = MAGIC.len() as u64;
/// Length of a record's frame header (length + CRC).
pub(crate) const FRAME_HEADER: usize = 8;
/// The in-memory sparse index keeps one `(position, offset)` entry per this many bytes of a
/// segment, so a read seeks close to its first record instead of scanning from the start.
pub(crate) const SPARSE_STRIDE: u64 = 256 * 1024;

/// File name of the segment whose first record has position `first`.
pub(crate) fn file_name(first: u64) -> String {
    format!("{first:020}.seg")
}

/// The first position encoded in a segment file name, if `name` is one.
pub(crate) fn parse_file_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".seg")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// The segment files in `dir`, sorted by first position.
pub(crate) fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, JournalError> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| JournalError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| JournalError::io(dir, e))?;
        let name = entry.file_name();
        if let Some(first) = name.to_str().and_then(parse_file_name) {
            out.push((first, entry.path()));
        }
    }
    out.sort_unstable_by_key(|(first, _)| *first);
    Ok(out)
}

/// The CRC stored in a record's frame.
pub(crate) fn checksum(len_le: [u8; 4], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len_le);
    h.update(payload);
    h.finalize()
}

/// Appends one framed record to `buf`.
pub(crate) fn encode(buf: &mut Vec<u8>, payload: &[u8]) {
    // Callers refuse records above `max_record_bytes`, which options cap at `u32::MAX`.
    let len_le = u32::try_from(payload.len())
        .unwrap_or(u32::MAX)
        .to_le_bytes();
    buf.extend_from_slice(&len_le);
    buf.extend_from_slice(&checksum(len_le, payload).to_le_bytes());
    buf.extend_from_slice(payload);
}

/// Framed size of a record with `payload_len` bytes.
pub(crate) fn frame_len(payload_len: usize) -> usize {
    FRAME_HEADER + payload_len
}

/// What the next frame of a segment turned out to be.
pub(crate) enum Frame {
    /// A record that starts at `offset`, of `len` payload bytes. The payload was read (and
    /// verified) into the buffer, or skipped when the caller asked to skip it.
    Record { offset: u64, len: usize },
    /// Clean end of file.
    End,
    /// Data at `offset` that is not a valid record.
    Bad { offset: u64, detail: String },
}

/// Reads frames sequentially from a segment file.
pub(crate) struct FrameReader {
    reader: BufReader<File>,
    path: PathBuf,
    offset: u64,
    file_len: u64,
}

impl FrameReader {
    /// Opens `path` and positions the reader at `offset` (use [`HEADER_LEN`] for the first record;
    /// [`FrameReader::check_header`] verifies the header).
    pub(crate) fn open(path: &Path, offset: u64) -> Result<FrameReader, JournalError> {
        let file = File::open(path).map_err(|e| JournalError::io(path, e))?;
        let file_len = file
            .metadata()
            .map_err(|e| JournalError::io(path, e))?
            .len();
        let mut reader = BufReader::with_capacity(1 << 20, file);
        reader
            .seek(SeekFrom::Start(offset))
            .map_err(|e| JournalError::io(path, e))?;
        Ok(FrameReader {
            reader,
            path: path.to_path_buf(),
            offset,
            file_len,
        })
    }

    /// The file's length when it was opened.
    pub(crate) fn file_len(&self) -> u64 {
        self.file_len
    }

    /// The offset of the next frame.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// Reads and checks the segment header (the reader must be at offset 0). Returns a detail
    /// message when it is missing or wrong.
    pub(crate) fn check_header(&mut self) -> Result<Option<String>, JournalError> {
        if self.file_len < HEADER_LEN {
            return Ok(Some(format!(
                "segment header is torn: file has {} of {HEADER_LEN} header bytes",
                self.file_len
            )));
        }
        let mut magic = [0u8; HEADER_LEN as usize];
        self.reader
            .read_exact(&mut magic)
            .map_err(|e| JournalError::io(&self.path, e))?;
        self.offset = HEADER_LEN;
        if magic != MAGIC {
            return Ok(Some(format!(
                "not a backflow journal segment of format 1 (header {magic:02x?})"
            )));
        }
        Ok(None)
    }

    /// Reads the next frame. With `payload = Some(buf)` the payload is read into `buf` and its
    /// CRC verified; with `None` it is skipped unread (and unverified).
    pub(crate) fn next(&mut self, payload: Option<&mut Vec<u8>>) -> Result<Frame, JournalError> {
        let offset = self.offset;
        let remaining = self.file_len.saturating_sub(offset);
        if remaining == 0 {
            return Ok(Frame::End);
        }
        if remaining < FRAME_HEADER as u64 {
            return Ok(Frame::Bad {
                offset,
                detail: format!("torn record header: {remaining} of {FRAME_HEADER} bytes"),
            });
        }
        let mut head = [0u8; FRAME_HEADER];
        self.reader
            .read_exact(&mut head)
            .map_err(|e| JournalError::io(&self.path, e))?;
        let len_le = [head[0], head[1], head[2], head[3]];
        let stored = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let len = u32::from_le_bytes(len_le) as usize;
        if len as u64 > remaining - FRAME_HEADER as u64 {
            return Ok(Frame::Bad {
                offset,
                detail: format!(
                    "record of {len} bytes runs past the end of the file ({} bytes left)",
                    remaining - FRAME_HEADER as u64
                ),
            });
        }
        match payload {
            Some(buf) => {
                buf.clear();
                buf.resize(len, 0);
                self.reader
                    .read_exact(buf)
                    .map_err(|e| JournalError::io(&self.path, e))?;
                let computed = checksum(len_le, buf);
                if computed != stored {
                    return Ok(Frame::Bad {
                        offset,
                        detail: format!(
                            "CRC mismatch in a record of {len} bytes: stored {stored:08x}, computed {computed:08x}"
                        ),
                    });
                }
            }
            None => {
                self.reader
                    .seek_relative(len as i64)
                    .map_err(|e| JournalError::io(&self.path, e))?;
            }
        }
        self.offset = offset + (FRAME_HEADER + len) as u64;
        Ok(Frame::Record { offset, len })
    }
}

/// The result of verifying a whole segment.
pub(crate) struct Scan {
    /// Valid records, from the start of the file up to the first bad frame.
    pub records: u64,
    /// Length of the valid prefix (header plus valid records).
    pub valid_len: u64,
    /// Length of the file.
    pub file_len: u64,
    /// Sparse index entries `(position, offset)` of the valid prefix.
    pub sparse: Vec<(u64, u64)>,
    /// The first bad frame, if any: offset and what is wrong.
    pub bad: Option<(u64, String)>,
    /// Whether the bad part is the header itself (torn when `file_len < HEADER_LEN`).
    pub bad_header: bool,
}

/// Reads every record of a segment and verifies its CRC, stopping at the first bad frame.
pub(crate) fn scan(path: &Path, first: u64) -> Result<Scan, JournalError> {
    let mut reader = FrameReader::open(path, 0)?;
    let file_len = reader.file_len();
    if let Some(detail) = reader.check_header()? {
        return Ok(Scan {
            records: 0,
            valid_len: 0,
            file_len,
            sparse: Vec::new(),
            bad: Some((0, detail)),
            bad_header: true,
        });
    }
    let mut buf = Vec::new();
    let mut records = 0u64;
    let mut sparse = Vec::new();
    let mut last_sparse = HEADER_LEN;
    loop {
        match reader.next(Some(&mut buf))? {
            Frame::Record { offset, .. } => {
                if offset >= last_sparse + SPARSE_STRIDE {
                    sparse.push((first + records, offset));
                    last_sparse = offset;
                }
                records += 1;
            }
            Frame::End => {
                return Ok(Scan {
                    records,
                    valid_len: reader.offset(),
                    file_len,
                    sparse,
                    bad: None,
                    bad_header: false,
                });
            }
            Frame::Bad { offset, detail } => {
                return Ok(Scan {
                    records,
                    valid_len: offset,
                    file_len,
                    sparse,
                    bad: Some((offset, detail)),
                    bad_header: false,
                });
            }
        }
    }
}

/// Creates a new, empty segment: header written and fsync'd, then the directory fsync'd so the
/// file's name survives a power cut. Returns the file opened for writing, positioned at its end.
pub(crate) fn create(dir: &Path, first: u64) -> Result<(File, PathBuf), JournalError> {
    use std::io::Write;
    let path = dir.join(file_name(first));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| JournalError::io(&path, e))?;
    let written = file
        .write_all(&MAGIC)
        .and_then(|()| file.sync_data())
        .map_err(|e| JournalError::io(&path, e))
        .and_then(|()| sync_dir(dir));
    if let Err(e) = written {
        // Best effort: a half-made segment would be found as a torn tail on the next start.
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok((file, path))
}

/// fsyncs a directory, making file creations, renames and deletions in it durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| JournalError::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort() {
        assert_eq!(file_name(1), "00000000000000000001.seg");
        assert_eq!(parse_file_name(&file_name(123_456)), Some(123_456));
        assert_eq!(parse_file_name("1.seg"), None);
        assert_eq!(parse_file_name("0000000000000000000x.seg"), None);
        assert_eq!(parse_file_name("00000000000000000001.seg.tmp"), None);
    }

    #[test]
    fn zeroes_never_verify() {
        assert_ne!(checksum([0; 4], &[]), 0);
        let mut buf = Vec::new();
        encode(&mut buf, b"hello");
        assert_eq!(buf.len(), frame_len(5));
        assert_eq!(&buf[..4], &5u32.to_le_bytes());
    }
}
