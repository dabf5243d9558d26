//! Consumer cursors: one small text file per consumer in `{journal}/cursors/{consumer}.cursor`
//! holding `next=N\n`, the first position the consumer has not consumed yet.
//!
//! A cursor is replaced atomically: write a temp file, fsync it, rename it over the old one, fsync
//! the directory. A crash leaves either the old or the new cursor, never a torn one; stray temp
//! files are removed on open.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::error::JournalError;
use super::segment::sync_dir;

const SUFFIX: &str = ".cursor";
const TMP_SUFFIX: &str = ".cursor.tmp";

/// The directory holding the cursor files of the journal in `dir`.
pub(crate) fn cursor_dir(dir: &Path) -> PathBuf {
    dir.join("cursors")
}

/// Checks that `consumer` is usable as a file name on every platform.
pub(crate) fn validate(consumer: &str) -> Result<(), JournalError> {
    let ok = !consumer.is_empty()
        && consumer.len() <= 128
        && !consumer.starts_with('.')
        && consumer
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(JournalError::InvalidConsumer(consumer.to_string()))
    }
}

/// Creates the cursor directory if needed and loads every cursor in it.
pub(crate) fn load_all(dir: &Path) -> Result<HashMap<String, u64>, JournalError> {
    let cdir = cursor_dir(dir);
    if !cdir.is_dir() {
        std::fs::create_dir_all(&cdir).map_err(|e| JournalError::io(&cdir, e))?;
        sync_dir(dir)?;
    }
    let mut out = HashMap::new();
    let entries = std::fs::read_dir(&cdir).map_err(|e| JournalError::io(&cdir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| JournalError::io(&cdir, e))?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if name.ends_with(TMP_SUFFIX) {
            std::fs::remove_file(&path).map_err(|e| JournalError::io(&path, e))?;
            continue;
        }
        let Some(consumer) = name.strip_suffix(SUFFIX) else {
            continue;
        };
        if validate(consumer).is_err() {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(|e| JournalError::io(&path, e))?;
        let next = text
            .strip_prefix("next=")
            .map(str::trim_end)
            .and_then(|n| n.parse::<u64>().ok())
            .filter(|n| *n >= 1)
            .ok_or_else(|| {
                JournalError::corrupt(
                    &path,
                    0,
                    format!("expected `next=N` with N >= 1, found {text:?}"),
                )
            })?;
        out.insert(consumer.to_string(), next);
    }
    Ok(out)
}

/// Durably replaces the cursor of `consumer` (write temp, fsync, rename, fsync directory).
pub(crate) fn store(dir: &Path, consumer: &str, next: u64) -> Result<(), JournalError> {
    let cdir = cursor_dir(dir);
    let tmp = cdir.join(format!("{consumer}{TMP_SUFFIX}"));
    let path = cdir.join(format!("{consumer}{SUFFIX}"));
    let mut file = std::fs::File::create(&tmp).map_err(|e| JournalError::io(&tmp, e))?;
    file.write_all(format!("next={next}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| JournalError::io(&tmp, e))?;
    drop(file);
    std::fs::rename(&tmp, &path).map_err(|e| JournalError::io(&path, e))?;
    sync_dir(&cdir)
}

/// Durably deletes the cursor of `consumer` (nothing to do when it has none).
pub(crate) fn remove(dir: &Path, consumer: &str) -> Result<(), JournalError> {
    let cdir = cursor_dir(dir);
    let path = cdir.join(format!("{consumer}{SUFFIX}"));
    match std::fs::remove_file(&path) {
        Ok(()) => sync_dir(&cdir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(JournalError::io(&path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_names() {
        assert!(validate("ad_events").is_ok());
        assert!(validate("a.b-c_1").is_ok());
        for bad in ["", ".hidden", "a/b", "..", "a b", &"x".repeat(129)] {
            assert!(validate(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn store_then_load_and_reject_garbage() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_all(dir.path()).unwrap().is_empty());
        store(dir.path(), "p", 42).unwrap();
        store(dir.path(), "p", 43).unwrap();
        std::fs::write(cursor_dir(dir.path()).join("q.cursor.tmp"), "next=9\n").unwrap();
        let all = load_all(dir.path()).unwrap();
        assert_eq!(all.get("p"), Some(&43));
        assert_eq!(all.len(), 1);
        assert!(!cursor_dir(dir.path()).join("q.cursor.tmp").exists());
        std::fs::write(cursor_dir(dir.path()).join("r.cursor"), "garbage").unwrap();
        match load_all(dir.path()) {
            Err(JournalError::Corrupt { path, .. }) => assert!(path.ends_with("r.cursor")),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }
}
