//! One batch through a Parquet sink, and what the Kafka-sink path ([`super::publish`]) shares
//! with it: the create-only puts and the row counts of a committed batch.

use serde::Serialize;
use tracing::info;

use super::failpoint::failpoint;
use super::fetched::Fetched;
use super::frame::Quarantine;
use super::sink;
use super::sink::parquet::{self as parquet_sink, EncodedFile, Put};
use super::source::kafka as kafka_source;
use super::{PipelineError, Runtime, quota};
use crate::catalog::{BatchIntent, BatchStats};
use crate::config::model::{Pipeline, SinkConfig};
use crate::telemetry::Metrics;

/// When a batch was planned, in microseconds: what its output uses instead of "now", so a
/// replay writes the same bytes.
pub(super) fn planned_at_micros(intent: &BatchIntent) -> Result<i64, PipelineError> {
    chrono::DateTime::parse_from_rfc3339(&intent.planned_at)
        .map(|t| t.timestamp_micros())
        .map_err(|e| PipelineError::Positions(format!("planned_at: {e}")))
}

#[derive(Serialize)]
struct Manifest<'a> {
    pipeline: &'a str,
    dataset: &'a str,
    batch: i64,
    planned_at: &'a str,
    source: &'a serde_json::Value,
    files: Vec<ManifestFile>,
    quarantine: Option<ManifestFile>,
    rows_in: u64,
    rows_out: u64,
    rows_quarantined: u64,
}

#[derive(Serialize)]
struct ManifestFile {
    path: String,
    rows: u64,
    bytes: u64,
}

struct Encoded {
    files: Vec<EncodedFile>,
    quarantine: Option<EncodedFile>,
    rows_in: u64,
    rows_quarantined: u64,
    files_failed: u64,
    /// What the landed rows count for (metered batches).
    tally: Option<quota::Tally>,
    /// What the landed rows add to the report rollups (`ad_events` only).
    rollups: crate::catalog::RollupDelta,
}

impl Runtime {
    /// Counts a committed batch's rows in the metrics.
    pub(super) fn count_rows(&self, labels: &crate::telemetry::PipelineLabels, stats: &BatchStats) {
        self.metrics
            .rows_in
            .get_or_create(labels)
            .inc_by(stats.rows_in);
        self.metrics
            .rows_out
            .get_or_create(labels)
            .inc_by(stats.rows_out);
        self.metrics
            .rows_quarantined
            .get_or_create(labels)
            .inc_by(stats.rows_quarantined);
    }

    /// Stores one encoded file of batch `seq` create-only and counts it: written, or already
    /// there from an earlier attempt (a replay), and its bytes.
    pub(super) async fn put_counted(
        &self,
        pipeline: &str,
        seq: i64,
        path: &str,
        bytes: Vec<u8>,
    ) -> Result<(), PipelineError> {
        let labels = Metrics::labels(pipeline);
        let size = bytes.len() as u64;
        match parquet_sink::put_create_only(&self.lake, path, bytes).await? {
            Put::Written => {
                self.metrics.files_written.get_or_create(&labels).inc();
            }
            Put::AlreadyPresent => {
                info!(pipeline = %pipeline, batch = seq, path = %path, "file already written by an earlier attempt");
                self.metrics
                    .files_already_present
                    .get_or_create(&labels)
                    .inc();
            }
        }
        self.metrics
            .bytes_written
            .get_or_create(&labels)
            .inc_by(size);
        Ok(())
    }

    /// Executes (or replays) one planned batch through to its commit.
    pub(super) async fn execute(
        &self,
        pipeline: &Pipeline,
        intent: &BatchIntent,
        prefetched: Option<Fetched>,
        kafka: Option<&mut kafka_source::Session>,
        publisher: Option<&sink::kafka::Publisher>,
    ) -> Result<(BatchStats, u64), PipelineError> {
        let SinkConfig::Parquet(sink_cfg) = &pipeline.sink else {
            return self
                .execute_kafka(pipeline, intent, prefetched, kafka, publisher)
                .await;
        };
        let labels = Metrics::labels(&pipeline.name);
        // A replay (or a source that planned without reading) reads its positions now.
        let fetched = match prefetched {
            Some(fetched) => fetched,
            None => self.fetch(pipeline, intent).await?,
        };
        let (fetched, metering) = self.meter(pipeline, &intent.positions, fetched)?;
        let (ingested, inputs) = match &fetched {
            Fetched::Files { files, .. } => (
                files.iter().map(|f| f.path.clone()).collect::<Vec<_>>(),
                files.len(),
            ),
            Fetched::Hits { records, .. } => (Vec::new(), records.len()),
            Fetched::Kafka { records, .. } => (Vec::new(), records.len()),
            Fetched::Http { pages, .. } => (Vec::new(), pages.len()),
        };
        if let Fetched::Files { files, .. } = &fetched {
            self.metrics
                .files_read
                .get_or_create(&labels)
                .inc_by(files.len() as u64);
        }

        let planned_at_micros = planned_at_micros(intent)?;
        let (pipeline_owned, tz, seq) = (pipeline.clone(), self.tz, intent.seq);
        let metered = metering.is_some();
        let encoded = tokio::task::spawn_blocking(move || -> Result<Encoded, PipelineError> {
            let mut quarantine = Quarantine::default();
            let (df, rows_in, files_failed) =
                fetched.decode_transformed(&pipeline_owned.transforms, tz, &mut quarantine)?;
            let SinkConfig::Parquet(sink_cfg) = &pipeline_owned.sink else {
                return Err(PipelineError::Task(
                    "parquet batch without a parquet sink".into(),
                ));
            };
            let tally = metered
                .then(|| quota::tally(&df, &sink_cfg.partition_column, tz))
                .transpose()
                .map_err(|source| PipelineError::Polars {
                    stage: "quota",
                    source,
                })?;
            let rollups = if sink_cfg.dataset == crate::report::lake::AD_EVENTS {
                crate::report::rollup::delta(&df, tz).map_err(|source| PipelineError::Polars {
                    stage: "rollups",
                    source,
                })?
            } else {
                crate::catalog::RollupDelta::default()
            };
            let files = parquet_sink::encode(df, sink_cfg, tz, seq, &mut quarantine)?;
            let quarantine_file = parquet_sink::encode_quarantine(
                &quarantine,
                &pipeline_owned.name,
                seq,
                planned_at_micros,
                tz,
            )?;
            Ok(Encoded {
                files,
                quarantine: quarantine_file,
                rows_in,
                rows_quarantined: quarantine.len() as u64,
                files_failed,
                tally,
                rollups,
            })
        })
        .await
        .map_err(|e| PipelineError::Task(e.to_string()))??;
        self.metrics
            .files_failed
            .get_or_create(&labels)
            .inc_by(encoded.files_failed);

        let mut manifest_files = Vec::with_capacity(encoded.files.len());
        let mut bytes_total = 0u64;
        let outputs = encoded
            .files
            .into_iter()
            .map(|f| (f, false))
            .chain(encoded.quarantine.map(|f| (f, true)));
        let mut quarantine_entry = None;
        for (index, (file, is_quarantine)) in outputs.enumerate() {
            let entry = ManifestFile {
                path: file.path.clone(),
                rows: file.rows,
                bytes: file.bytes.len() as u64,
            };
            bytes_total += entry.bytes;
            self.put_counted(&pipeline.name, seq, &file.path, file.bytes)
                .await?;
            if index == 0 {
                failpoint("after_first_put");
            }
            if is_quarantine {
                quarantine_entry = Some(entry);
            } else {
                manifest_files.push(entry);
            }
        }
        failpoint("before_manifest");
        let rows_out: u64 = manifest_files.iter().map(|f| f.rows).sum();
        let stats = BatchStats {
            rows_in: encoded.rows_in,
            rows_out,
            rows_quarantined: encoded.rows_quarantined,
            files: manifest_files.iter().map(|f| f.path.clone()).collect(),
            bytes: bytes_total,
        };
        let manifest = Manifest {
            pipeline: &pipeline.name,
            dataset: &sink_cfg.dataset,
            batch: seq,
            planned_at: &intent.planned_at,
            source: &intent.positions,
            files: manifest_files,
            quarantine: quarantine_entry,
            rows_in: stats.rows_in,
            rows_out,
            rows_quarantined: stats.rows_quarantined,
        };
        let manifest = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| PipelineError::Positions(e.to_string()))?;
        parquet_sink::put_create_only(
            &self.lake,
            &parquet_sink::manifest_path(&sink_cfg.dataset, seq),
            manifest,
        )
        .await?;
        failpoint("after_manifest");

        match metering {
            Some(metering) => {
                self.commit_metered(
                    pipeline,
                    seq,
                    &stats,
                    metering,
                    encoded.tally,
                    encoded.rollups,
                )?;
            }
            None => self.catalog.commit_batch(
                &pipeline.name,
                seq,
                &ingested,
                &stats,
                &encoded.rollups,
            )?,
        }
        self.count_rows(&labels, &stats);
        info!(
            pipeline = %pipeline.name,
            batch = seq,
            inputs,
            rows_in = stats.rows_in,
            rows_out = stats.rows_out,
            rows_quarantined = stats.rows_quarantined,
            files_out = stats.files.len(),
            bytes = stats.bytes,
            "batch committed"
        );
        failpoint("after_commit");
        self.after_commit(pipeline, &intent.positions, kafka).await;
        Ok((stats, encoded.files_failed))
    }
}
