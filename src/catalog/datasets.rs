//! Published dataset versions: one record per `_current` pointer a refresh wrote.
//!
//! The pointer objects in the lake are what readers resolve; these records are the history
//! people and the admin API read (which run published what, how many rows, what was deleted).

use super::{Catalog, CatalogError, now};

/// One published version.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DatasetVersion {
    pub dataset: String,
    /// Pointer sequence number: the highest live one is current.
    pub seq: i64,
    /// The `version=` folder name's value.
    pub version: String,
    pub job: String,
    pub run_id: Option<i64>,
    pub rows: i64,
    pub published_at: String,
    /// When retention deleted its files.
    pub deleted_at: Option<String>,
}

impl Catalog {
    /// Records a publish (idempotent: a pointer re-recorded after a crash keeps its first record).
    pub fn record_dataset_version(
        &self,
        dataset: &str,
        seq: i64,
        version: &str,
        job: &str,
        run_id: Option<i64>,
        rows: u64,
    ) -> Result<(), CatalogError> {
        self.conn().execute(
            "INSERT OR IGNORE INTO dataset_versions (dataset, seq, version, job, run_id, rows, published_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            (dataset, seq, version, job, run_id, rows as i64, now()),
        )?;
        Ok(())
    }

    /// Marks a version's files deleted by retention.
    pub fn mark_dataset_version_deleted(
        &self,
        dataset: &str,
        seq: i64,
    ) -> Result<(), CatalogError> {
        self.conn().execute(
            "UPDATE dataset_versions SET deleted_at = ?1 WHERE dataset = ?2 AND seq = ?3 AND deleted_at IS NULL",
            (now(), dataset, seq),
        )?;
        Ok(())
    }

    /// Versions of a dataset, newest first.
    pub fn dataset_versions(
        &self,
        dataset: &str,
        limit: usize,
    ) -> Result<Vec<DatasetVersion>, CatalogError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT dataset, seq, version, job, run_id, rows, published_at, deleted_at
             FROM dataset_versions WHERE dataset = ?1 ORDER BY seq DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map((dataset, limit as i64), |r| {
            Ok(DatasetVersion {
                dataset: r.get(0)?,
                seq: r.get(1)?,
                version: r.get(2)?,
                job: r.get(3)?,
                run_id: r.get(4)?,
                rows: r.get(5)?,
                published_at: r.get(6)?,
                deleted_at: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_recorded_once_and_marked_deleted() -> Result<(), CatalogError> {
        let c = Catalog::open_in_memory()?;
        c.record_dataset_version("behavior", 1, "v1", "job", Some(1), 10)?;
        c.record_dataset_version("behavior", 1, "v1-again", "job", Some(2), 11)?;
        c.record_dataset_version("behavior", 2, "v2", "job", Some(3), 12)?;
        c.mark_dataset_version_deleted("behavior", 1)?;
        let v = c.dataset_versions("behavior", 10)?;
        assert_eq!(v.len(), 2);
        assert_eq!(
            (v[0].seq, v[0].rows, v[0].deleted_at.is_none()),
            (2, 12, true)
        );
        assert_eq!(
            (v[1].version.as_str(), v[1].deleted_at.is_some()),
            ("v1", true)
        );
        Ok(())
    }
}
