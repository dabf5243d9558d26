//! Lock files, so that two processes sharing a catalog never run the same pipeline (or commit
//! batches of the same Kafka pipeline) at once.

use super::{PipelineError, Runtime};

impl Runtime {
    pub(crate) fn lock(&self, name: &str) -> Result<Option<std::fs::File>, PipelineError> {
        let Some(dir) = &self.lock_dir else {
            return Ok(None);
        };
        let path = dir.join(format!("{name}.lock"));
        let lock_err = |source| PipelineError::Lock {
            path: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(lock_err)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(lock_err)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(std::fs::TryLockError::WouldBlock) => Err(PipelineError::Busy(
                name.to_string(),
                path.display().to_string(),
            )),
            Err(std::fs::TryLockError::Error(e)) => Err(lock_err(e)),
        }
    }

    /// Waits for the pipeline's batch lock (another process of the same group holds it while it
    /// commits a batch). `None` for in-memory catalogs.
    pub(super) async fn batch_lock(
        &self,
        name: &str,
    ) -> Result<Option<std::fs::File>, PipelineError> {
        let Some(dir) = &self.lock_dir else {
            return Ok(None);
        };
        let path = dir.join(format!("{name}.batch.lock"));
        let shown = path.display().to_string();
        let locked = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)?;
            file.lock()?;
            Ok(file)
        })
        .await
        .map_err(|e| PipelineError::Task(e.to_string()))?;
        locked.map(Some).map_err(|source| PipelineError::Lock {
            path: shown,
            source,
        })
    }
}
