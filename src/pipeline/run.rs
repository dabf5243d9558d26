//! The run loop: a run recorded in the catalog, its batches planned (or an open intent replayed)
//! and executed one after the other, and the run summary.

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::failpoint::failpoint;
use super::fetched::Fetched;
use super::sink;
use super::source::http as http_source;
use super::source::kafka as kafka_source;
use super::{PipelineError, RunOptions, RunSummary, Runtime};
use crate::catalog::{BatchIntent, RunStatus, RunTotals};
use crate::config::model::{Pipeline, SinkConfig, SourceConfig};
use crate::telemetry::{Metrics, RunLabels};

impl Runtime {
    /// Runs a pipeline until its source is drained (or `max_batches`, or cancellation between
    /// batches), replaying an open batch first. The run is recorded in the catalog.
    pub async fn run(
        &self,
        pipeline: &Pipeline,
        opts: &RunOptions,
        cancel: &CancellationToken,
    ) -> Result<RunSummary, PipelineError> {
        // A Kafka pipeline may run in several processes at once (members of one consumer group
        // on one catalog): its batches are serialized instead (`kafka_step`).
        let _lock = match pipeline.source {
            SourceConfig::Kafka(_) => None,
            _ => self.lock(&pipeline.name)?,
        };
        let started = chrono::Utc::now();
        let run_id = match opts.run_id {
            Some(id) => {
                self.catalog.begin_run(id)?;
                id
            }
            None => self.catalog.start_run(&pipeline.name, &opts.trigger)?,
        };
        self.metrics.runs_in_progress.inc();
        let mut summary = RunSummary {
            run_id,
            ..RunSummary::default()
        };
        let result = self.run_batches(pipeline, opts, cancel, &mut summary).await;
        self.metrics.runs_in_progress.dec();
        let status = match &result {
            Ok(()) if cancel.is_cancelled() => RunStatus::Cancelled,
            Ok(()) => RunStatus::Succeeded,
            Err(_) => RunStatus::Failed,
        };
        summary.status = status.to_string();
        let totals = RunTotals {
            batches: summary.batches,
            rows_in: summary.rows_in,
            rows_out: summary.rows_out,
            rows_quarantined: summary.rows_quarantined,
        };
        let error = result.as_ref().err().map(ToString::to_string);
        self.catalog
            .finish_run(run_id, status, totals, error.as_deref())?;
        // A run over the whole source that ended because nothing was left committed everything
        // that reached the source before it started: the source watermark (dataset jobs wait
        // for it, `schedule::watermark`).
        if status == RunStatus::Succeeded
            && opts.max_batches.is_none()
            && opts.window == (None, None)
        {
            let up_to = started.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            self.catalog.advance_watermark(&pipeline.name, &up_to)?;
        }
        self.metrics
            .runs
            .get_or_create(&RunLabels {
                pipeline: pipeline.name.clone(),
                status: status.to_string(),
            })
            .inc();
        result.map(|()| summary)
    }

    async fn run_batches(
        &self,
        pipeline: &Pipeline,
        opts: &RunOptions,
        cancel: &CancellationToken,
        summary: &mut RunSummary,
    ) -> Result<(), PipelineError> {
        let labels = Metrics::labels(&pipeline.name);
        // A Kafka sink keeps one producer for the whole run; a broker that is down (or a topic
        // that is missing) fails the run here, before anything is planned.
        let publisher = match &pipeline.sink {
            SinkConfig::Kafka(cfg) => Some(
                sink::kafka::Publisher::connect(cfg, &pipeline.name, Arc::clone(&self.metrics))
                    .await?,
            ),
            SinkConfig::Parquet(_) => None,
        };
        let publisher = publisher.as_ref();
        // A Kafka source keeps one group member for the whole run.
        let mut kafka = match &pipeline.source {
            SourceConfig::Kafka(cfg) => Some(kafka_source::Session::connect(
                cfg,
                &pipeline.name,
                Arc::clone(&self.metrics),
            )?),
            _ => None,
        };
        // An HTTP source keeps its client and request budget for the whole run.
        let mut http = match &pipeline.source {
            SourceConfig::Http(cfg) => Some(http_source::Session::connect(
                cfg,
                &pipeline.name,
                self.tz,
                Arc::clone(&self.metrics),
                cancel.clone(),
            )?),
            _ => None,
        };
        let result = async {
            loop {
                match http.as_mut().and_then(http_source::Session::take_stop) {
                    Some(http_source::Stop::Budget) => return Ok(()),
                    Some(http_source::Stop::Failed(e)) => return Err(e),
                    None => {}
                }
                if cancel.is_cancelled()
                    || opts
                        .max_batches
                        .is_some_and(|max| summary.batches as usize >= max)
                {
                    if let Some(session) = kafka.as_mut() {
                        session.finish().await;
                    }
                    return Ok(());
                }
                if let Some(session) = kafka.as_mut() {
                    if !self
                        .kafka_step(pipeline, session, publisher, summary)
                        .await?
                    {
                        // The last offset commit's answer (bounded wait).
                        session.finish().await;
                        return Ok(());
                    }
                    continue;
                }
                let (intent, prefetched) = match self.catalog.open_intent(&pipeline.name)? {
                    Some(intent) => {
                        warn!(pipeline = %pipeline.name, batch = intent.seq, "replaying a batch left open by an earlier run");
                        self.metrics.batches_replayed.get_or_create(&labels).inc();
                        summary.replayed_batches += 1;
                        (intent, None)
                    }
                    None => {
                        let Some((positions, mut prefetched)) =
                            self.plan(pipeline, opts, http.as_mut()).await?
                        else {
                            return Ok(());
                        };
                        let planned_at =
                            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
                        // A source that cannot be read twice keeps its input with the intent.
                        let input = match &mut prefetched {
                            Some(Fetched::Http { input, .. }) => input.take(),
                            _ => None,
                        };
                        let intent = self.catalog.create_intent_with_input(
                            &pipeline.name,
                            &positions,
                            &planned_at,
                            input.as_deref(),
                        )?;
                        (intent, prefetched)
                    }
                };
                failpoint("after_intent");
                self.execute_counted(pipeline, &intent, prefetched, None, publisher, summary)
                    .await?;
            }
        }
        .await;
        // Closing the consumer is bounded (a broker that died must not hang the run).
        if let Some(session) = kafka {
            session.close().await;
        }
        result
    }

    /// Executes a batch and counts it in the run summary and the metrics.
    pub(super) async fn execute_counted(
        &self,
        pipeline: &Pipeline,
        intent: &BatchIntent,
        prefetched: Option<Fetched>,
        kafka: Option<&mut kafka_source::Session>,
        publisher: Option<&sink::kafka::Publisher>,
        summary: &mut RunSummary,
    ) -> Result<(), PipelineError> {
        let labels = Metrics::labels(&pipeline.name);
        let started = Instant::now();
        match self
            .execute(pipeline, intent, prefetched, kafka, publisher)
            .await
        {
            Ok((stats, files_failed)) => {
                summary.batches += 1;
                summary.rows_in += stats.rows_in;
                summary.rows_out += stats.rows_out;
                summary.rows_quarantined += stats.rows_quarantined;
                summary.files_failed += files_failed;
                self.metrics.batches_committed.get_or_create(&labels).inc();
                self.metrics
                    .batch_duration
                    .get_or_create(&labels)
                    .observe(started.elapsed().as_secs_f64());
                Ok(())
            }
            Err(e) => {
                self.metrics.commit_failures.get_or_create(&labels).inc();
                Err(e)
            }
        }
    }
}
