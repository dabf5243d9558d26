//! A batch through a Kafka sink: the commit protocol with "all delivery reports awaited" in
//! place of the create-only puts.
//!
//! 1. **intent** (as for every sink: the source positions);
//! 2. **encode**: decode, transform, one message per row ([`kafka_sink::encode`]); rows the topic
//!    cannot take, and rows the transforms rejected, go to the quarantine dataset (a create-only
//!    Parquet put in the lake, as for Parquet sinks);
//! 3. **send**: every message produced with `acks=all` by an idempotent producer, and every
//!    delivery report awaited; one failure fails the batch;
//! 4. **commit**: the catalog marks the batch committed, then the source advances.
//!
//! A batch that fails or dies before its commit keeps its intent; the next run replays it over
//! the same positions and sends the same messages with the same dedup headers. Downstream is at
//! least once; see [`kafka_sink`].

use tracing::info;

use super::execute::planned_at_micros;
use super::failpoint::{self, failpoint};
use super::fetched::Fetched;
use super::frame::Quarantine;
use super::sink::kafka::{self as kafka_sink, Publisher, Rejected};
use super::sink::parquet::{self as parquet_sink, EncodedFile};
use super::source::kafka as kafka_source;
use super::{PipelineError, Runtime};
use crate::catalog::{BatchIntent, BatchStats, RollupDelta};
use crate::config::model::{Pipeline, SinkConfig};
use crate::telemetry::Metrics;

struct Encoded {
    messages: Vec<kafka_sink::Message>,
    quarantine: Option<EncodedFile>,
    rows_in: u64,
    rows_quarantined: u64,
    files_failed: u64,
    rejected: Rejected,
}

impl Runtime {
    /// Executes (or replays) one planned batch of a pipeline with a Kafka sink.
    pub(super) async fn execute_kafka(
        &self,
        pipeline: &Pipeline,
        intent: &BatchIntent,
        prefetched: Option<Fetched>,
        kafka: Option<&mut kafka_source::Session>,
        publisher: Option<&Publisher>,
    ) -> Result<(BatchStats, u64), PipelineError> {
        let (SinkConfig::Kafka(cfg), Some(publisher)) = (&pipeline.sink, publisher) else {
            return Err(PipelineError::Task(
                "kafka batch without a kafka sink producer".into(),
            ));
        };
        let labels = Metrics::labels(&pipeline.name);
        let fetched = match prefetched {
            Some(fetched) => fetched,
            None => self.fetch(pipeline, intent).await?,
        };
        let (fetched, metering) = self.meter(pipeline, &intent.positions, fetched)?;
        if metering.is_some() {
            // Refused when the pipeline is loaded; kept as a guard.
            return Err(PipelineError::Sink(
                "a metered journal batch must land in the lake, not on a Kafka topic".into(),
            ));
        }
        let (ingested, inputs) = match &fetched {
            Fetched::Files { files, .. } => {
                self.metrics
                    .files_read
                    .get_or_create(&labels)
                    .inc_by(files.len() as u64);
                (
                    files.iter().map(|f| f.path.clone()).collect::<Vec<_>>(),
                    files.len(),
                )
            }
            Fetched::Hits { records, .. } => (Vec::new(), records.len()),
            Fetched::Kafka { records, .. } => (Vec::new(), records.len()),
            Fetched::Http { pages, .. } => (Vec::new(), pages.len()),
        };
        let planned_at_micros = planned_at_micros(intent)?;
        let seq = intent.seq;
        let batch = kafka_sink::batch_id(&pipeline.name, seq);
        let (pipeline_owned, cfg_owned, batch_owned, tz) =
            (pipeline.clone(), cfg.clone(), batch.clone(), self.tz);
        let encoded = tokio::task::spawn_blocking(move || -> Result<Encoded, PipelineError> {
            let mut quarantine = Quarantine::default();
            let (df, rows_in, files_failed) =
                fetched.decode_transformed(&pipeline_owned.transforms, tz, &mut quarantine)?;
            let mut rejected = Rejected::default();
            let messages = kafka_sink::encode(
                &df,
                &cfg_owned,
                &batch_owned,
                &mut quarantine,
                &mut rejected,
            )?;
            let quarantine_file = parquet_sink::encode_quarantine(
                &quarantine,
                &pipeline_owned.name,
                seq,
                planned_at_micros,
                tz,
            )?;
            Ok(Encoded {
                messages,
                quarantine: quarantine_file,
                rows_in,
                rows_quarantined: quarantine.len() as u64,
                files_failed,
                rejected,
            })
        })
        .await
        .map_err(|e| PipelineError::Task(e.to_string()))??;
        self.metrics
            .files_failed
            .get_or_create(&labels)
            .inc_by(encoded.files_failed);
        publisher.count_rejected(encoded.rejected);

        // Quarantined rows first: a create-only put, found in place on a replay.
        if let Some(file) = encoded.quarantine {
            self.put_counted(&pipeline.name, seq, &file.path, file.bytes)
                .await?;
        }

        failpoint::injected_delay("kafka_sink_send").await;
        info!(pipeline = %pipeline.name, batch = %batch, topic = %cfg.topic, messages = encoded.messages.len(), "kafka sink: sending the batch");
        let sent = publisher.send(&batch, &encoded.messages).await?;
        failpoint("kafka_sink_delivered");

        let stats = BatchStats {
            rows_in: encoded.rows_in,
            rows_out: sent.messages,
            rows_quarantined: encoded.rows_quarantined,
            files: Vec::new(),
            bytes: sent.bytes,
        };
        self.catalog.commit_batch(
            &pipeline.name,
            seq,
            &ingested,
            &stats,
            &RollupDelta::default(),
        )?;
        self.count_rows(&labels, &stats);
        info!(
            pipeline = %pipeline.name,
            batch = seq,
            topic = %cfg.topic,
            inputs,
            rows_in = stats.rows_in,
            rows_out = stats.rows_out,
            rows_quarantined = stats.rows_quarantined,
            bytes = stats.bytes,
            "batch committed (every message acknowledged)"
        );
        failpoint("after_commit");
        self.after_commit(pipeline, &intent.positions, kafka).await;
        Ok((stats, encoded.files_failed))
    }
}
