//! Logs and metrics. Every metric name is defined here (`backflow_<what>_<unit>[_total]`), with
//! bounded labels only: pipeline names come from configuration, never from data.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PipelineLabels {
    pub pipeline: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    pub pipeline: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HitLabels {
    pub endpoint: &'static str,
    pub outcome: &'static str,
}

/// A workspace: bounded by the workspaces an operator creates, never taken from hit data
/// before the link table vouched for it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkspaceLabels {
    pub workspace: String,
}

impl WorkspaceLabels {
    pub fn of(workspace: &str) -> Self {
        WorkspaceLabels {
            workspace: workspace.to_string(),
        }
    }
}

/// A scheduler event about one job and what was done (`run_once`, `skipped`; `satisfied`,
/// `timed_out`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobOutcomeLabels {
    pub pipeline: String,
    pub outcome: &'static str,
}

/// The scheduler's metrics (`schedule`).
#[derive(Debug, Default)]
pub struct ScheduleMetrics {
    /// Runs recorded and not started yet (`queued` or `waiting`), per workspace.
    pub queued: Family<WorkspaceLabels, Gauge>,
    /// Retries started after a retryable failure.
    pub retries: Family<PipelineLabels, Counter>,
    /// Fire times missed (downtime, a clock jump, a stall), by what was done.
    pub misfires: Family<JobOutcomeLabels, Counter>,
    /// Fires dropped because the previous run was still active (`overlap: skip`).
    pub overlaps_skipped: Family<PipelineLabels, Counter>,
    /// Waits for source watermarks, by how they ended.
    pub watermark_waits: Family<JobOutcomeLabels, Counter>,
    /// Times the wall clock was seen moving backwards.
    pub clock_backwards: Counter,
}

/// Third-party forwarding: the host of the configured URL (bounded by the forwarder).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ForwardLabels {
    pub destination: String,
}

/// An outcome with a fixed set of values (`succeeded`, `failed` …).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: &'static str,
}

/// A pipeline source's event of a bounded kind (an HTTP status code, a listing kind, a
/// reason from a fixed list).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub pipeline: String,
    pub kind: String,
}

/// A pipeline sink's event with a status from a fixed list.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    pub pipeline: String,
    pub status: &'static str,
}

/// Metrics of pipeline sinks other than Parquet (whose are the `pipeline_*` ones).
#[derive(Debug, Default)]
pub struct SinkMetrics {
    /// Kafka sink messages by status: `delivered` (acknowledged), `failed` (not acknowledged:
    /// the batch fails), `too_large` and `null_key` (rows sent to quarantine instead).
    pub kafka_messages: Family<SinkLabels, Counter>,
    /// Kafka sink failures by kind: `broker_down`, `timeout`, `topic_missing`,
    /// `unauthorized`, `tls_failed`, `too_large`, `other`.
    pub kafka_errors: Family<SinkLabels, Counter>,
    /// Payload bytes the Kafka sink had acknowledged.
    pub kafka_bytes: Family<PipelineLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub listener: &'static str,
    pub route: String,
    pub status: u16,
}

fn batch_histogram() -> Histogram {
    Histogram::new([
        0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
    ])
}

/// The journal's counters, read from its live statistics on every scrape.
#[derive(Debug, Default)]
pub struct JournalCollector {
    journal: std::sync::OnceLock<crate::journal::Journal>,
}

impl JournalCollector {
    /// Starts exporting a journal's statistics (once; later calls are ignored).
    pub fn attach(&self, journal: crate::journal::Journal) {
        let _ = self.journal.set(journal);
    }
}

impl prometheus_client::collector::Collector for JournalCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        let Some(journal) = self.journal.get() else {
            return Ok(());
        };
        let s = journal.stats();
        let counters: [(&str, &str, u64); 8] = [
            ("journal_appends", "Records appended and fsync'd", s.appends),
            (
                "journal_appended_bytes",
                "Payload bytes appended",
                s.append_bytes,
            ),
            (
                "journal_group_commits",
                "Group commits (one write + fsync each)",
                s.group_commits,
            ),
            (
                "journal_fsyncs",
                "fsync calls, group commits and segment starts",
                s.fsyncs,
            ),
            (
                "journal_torn_tails_truncated",
                "Torn or corrupt tails cut at recovery",
                s.torn_tails_truncated,
            ),
            (
                "journal_refused_full",
                "Appends refused because the pending queue was full",
                s.refused_full,
            ),
            (
                "journal_refused_too_large",
                "Appends refused for exceeding the record limit",
                s.refused_too_large,
            ),
            (
                "journal_failed_appends",
                "Appends that failed with an IO error",
                s.failed_appends,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        let gauges: [(&str, &str, i64); 3] = [
            (
                "journal_segments",
                "Segment files on disk",
                s.segments as i64,
            ),
            (
                "journal_segment_bytes",
                "Bytes in segment files on disk",
                s.segment_bytes as i64,
            ),
            (
                "journal_pending_bytes",
                "Bytes queued for the writer",
                s.pending_bytes as i64,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

/// All metrics of the process.
pub struct Metrics {
    registry: Registry,
    /// The journal's statistics, exported once the daemon opened it.
    pub journal: std::sync::Arc<JournalCollector>,
    pub rows_in: Family<PipelineLabels, Counter>,
    pub rows_out: Family<PipelineLabels, Counter>,
    pub rows_quarantined: Family<PipelineLabels, Counter>,
    /// Kafka-journal records sent again from a collector's fallback file whose event id had
    /// already landed: dropped (`journal.kind: kafka`).
    pub kafka_replay_duplicates: Family<PipelineLabels, Counter>,
    pub files_read: Family<PipelineLabels, Counter>,
    pub files_failed: Family<PipelineLabels, Counter>,
    pub files_written: Family<PipelineLabels, Counter>,
    pub bytes_written: Family<PipelineLabels, Counter>,
    pub files_already_present: Family<PipelineLabels, Counter>,
    pub batches_committed: Family<PipelineLabels, Counter>,
    pub batches_replayed: Family<PipelineLabels, Counter>,
    pub commit_failures: Family<PipelineLabels, Counter>,
    pub batch_duration: Family<PipelineLabels, Histogram, fn() -> Histogram>,
    pub runs: Family<RunLabels, Counter>,
    pub runs_in_progress: Gauge,
    pub http_requests: Family<HttpLabels, Counter>,
    pub auth_failures: Counter,
    pub hits: Family<HitLabels, Counter>,
    /// Click records a metered workspace may still land.
    pub quota_remaining: Family<WorkspaceLabels, Gauge>,
    /// Records held out of the lake waiting for quota.
    pub quota_staged: Family<WorkspaceLabels, Gauge>,
    pub quota_staged_total: Family<WorkspaceLabels, Counter>,
    pub quota_released: Family<WorkspaceLabels, Counter>,
    pub quota_purged: Family<WorkspaceLabels, Counter>,
    pub quota_billable_clicks: Family<WorkspaceLabels, Counter>,
    /// Third-party forwarding (`forward`), per destination host.
    pub forward: ForwardMetrics,
    /// Click-detail download tasks finished, by outcome (`succeeded`, `failed`, `expired`).
    pub downloads: Family<StatusLabels, Counter>,
    /// The scheduler: queue, retries, misfires, overlaps, watermark waits.
    pub schedule: ScheduleMetrics,
    /// Pipeline sources: HTTP pull and object-store listing.
    pub source: SourceMetrics,
    /// The collection endpoints' Kafka journal (`journal.kind: kafka`).
    pub kafka_journal: crate::collect::appender::KafkaJournalMetrics,
    /// Pipeline sinks other than Parquet (Kafka).
    pub sink: SinkMetrics,
}

/// Metrics of pipeline sources that talk to remote APIs.
#[derive(Debug, Default)]
pub struct SourceMetrics {
    /// HTTP source requests by outcome (`kind`: the status code, `connect_error`, `timeout`).
    pub http_requests: Family<SourceLabels, Counter>,
    pub http_retries: Family<PipelineLabels, Counter>,
    pub http_pages: Family<PipelineLabels, Counter>,
    pub http_budget_exhausted: Family<PipelineLabels, Counter>,
    pub http_repeated_cursor: Family<PipelineLabels, Counter>,
    /// Responses that stopped a run (`kind`: `status`, `not_json`, `no_records`, `not_success`,
    /// `too_large`, `gave_up`, `retry_after_too_long`).
    pub http_bad_responses: Family<SourceLabels, Counter>,
    /// Object-store listings (`kind`: `full`, `after_watermark`).
    pub listings: Family<SourceLabels, Counter>,
    pub objects_listed: Family<PipelineLabels, Counter>,
    /// Errors the Kafka client reported while a Kafka source read (transport, brokers down).
    pub kafka_client_errors: Family<PipelineLabels, Counter>,
    /// Kafka source offset commits that failed or went unanswered (the lake is unaffected).
    pub kafka_commit_failures: Family<PipelineLabels, Counter>,
    /// Kafka source failures (`kind`: `brokers_down`, `no_assignment`, `replay_incomplete`,
    /// `unauthorized`, `tls_failed` (a refused TLS handshake), `tls_file` (librdkafka refused a
    /// TLS file), `missing_secret` stop a run; `close_timeout`: the consumer did not close in
    /// time, the run went on).
    pub kafka_failures: Family<SourceLabels, Counter>,
}

/// Metrics of third-party forwarding, per destination host.
#[derive(Debug, Default)]
pub struct ForwardMetrics {
    pub enqueued: Family<ForwardLabels, Counter>,
    pub sent: Family<ForwardLabels, Counter>,
    pub failed_attempts: Family<ForwardLabels, Counter>,
    pub given_up: Family<ForwardLabels, Counter>,
    pub queue_depth: Family<ForwardLabels, Gauge>,
    pub oldest_job_age: Family<ForwardLabels, Gauge>,
    /// `journal.kind: kafka`: journal-topic messages the forwarder dropped, by reason
    /// (`already_taken`: read again below the catalog's offsets; `replay_duplicate`: a
    /// fallback replay of a hit already taken).
    pub kafka_dropped: Family<StatusLabels, Counter>,
    /// `journal.kind: kafka`: error events of the forwarder's consumer (broker down, topic
    /// missing, refused login …; the reader retries).
    pub kafka_client_errors: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("backflow");
        let m = Metrics {
            rows_in: Family::default(),
            rows_out: Family::default(),
            rows_quarantined: Family::default(),
            kafka_replay_duplicates: Family::default(),
            files_read: Family::default(),
            files_failed: Family::default(),
            files_written: Family::default(),
            bytes_written: Family::default(),
            files_already_present: Family::default(),
            batches_committed: Family::default(),
            batches_replayed: Family::default(),
            commit_failures: Family::default(),
            batch_duration: Family::new_with_constructor(batch_histogram),
            runs: Family::default(),
            runs_in_progress: Gauge::default(),
            http_requests: Family::default(),
            auth_failures: Counter::default(),
            hits: Family::default(),
            downloads: Family::default(),
            quota_remaining: Family::default(),
            quota_staged: Family::default(),
            quota_staged_total: Family::default(),
            quota_released: Family::default(),
            quota_purged: Family::default(),
            quota_billable_clicks: Family::default(),
            forward: ForwardMetrics::default(),
            schedule: ScheduleMetrics::default(),
            source: SourceMetrics::default(),
            kafka_journal: Default::default(),
            sink: SinkMetrics::default(),
            journal: std::sync::Arc::new(JournalCollector::default()),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "pipeline_rows_in",
            "Rows read from sources",
            m.rows_in.clone(),
        );
        r.register(
            "pipeline_rows_out",
            "Rows written to sinks",
            m.rows_out.clone(),
        );
        r.register(
            "pipeline_rows_quarantined",
            "Rows sent to quarantine",
            m.rows_quarantined.clone(),
        );
        r.register(
            "pipeline_kafka_replay_duplicates_dropped",
            "Kafka-journal records replayed from a fallback file whose event id had already landed",
            m.kafka_replay_duplicates.clone(),
        );
        r.register(
            "pipeline_files_read",
            "Source files read",
            m.files_read.clone(),
        );
        r.register(
            "pipeline_files_failed",
            "Source files that could not be read or decoded (quarantined whole)",
            m.files_failed.clone(),
        );
        r.register(
            "pipeline_files_written",
            "Parquet files written",
            m.files_written.clone(),
        );
        r.register_with_unit(
            "pipeline_written",
            "Parquet bytes written",
            prometheus_client::registry::Unit::Bytes,
            m.bytes_written.clone(),
        );
        r.register(
            "pipeline_files_already_present",
            "Output files found already written by an earlier attempt of the same batch",
            m.files_already_present.clone(),
        );
        r.register(
            "pipeline_batches_committed",
            "Batches committed",
            m.batches_committed.clone(),
        );
        r.register(
            "pipeline_batches_replayed",
            "Open batches replayed after a crash or shutdown",
            m.batches_replayed.clone(),
        );
        r.register(
            "pipeline_commit_failures",
            "Batches that failed before commit",
            m.commit_failures.clone(),
        );
        r.register_with_unit(
            "pipeline_batch_duration",
            "Time from planning a batch to its commit",
            prometheus_client::registry::Unit::Seconds,
            m.batch_duration.clone(),
        );
        r.register("pipeline_runs", "Pipeline runs by outcome", m.runs.clone());
        r.register(
            "pipeline_runs_in_progress",
            "Pipeline runs in progress",
            m.runs_in_progress.clone(),
        );
        r.register(
            "http_requests",
            "HTTP requests by listener, route and status",
            m.http_requests.clone(),
        );
        r.register(
            "auth_failures",
            "Admin requests rejected for a missing or bad token",
            m.auth_failures.clone(),
        );
        r.register(
            "schedule_runs_queued",
            "Runs recorded and not started yet (queued for a slot or waiting for sources), per workspace",
            m.schedule.queued.clone(),
        );
        r.register(
            "schedule_retries",
            "Retries started after a retryable failure",
            m.schedule.retries.clone(),
        );
        r.register(
            "schedule_misfires",
            "Fire times missed during downtime, a clock jump or a stall, by outcome (run_once, skipped)",
            m.schedule.misfires.clone(),
        );
        r.register(
            "schedule_overlaps_skipped",
            "Fires dropped because the previous run was still queued or running (overlap: skip)",
            m.schedule.overlaps_skipped.clone(),
        );
        r.register(
            "schedule_watermark_waits",
            "Waits for source watermarks by outcome (satisfied, timed_out)",
            m.schedule.watermark_waits.clone(),
        );
        r.register(
            "schedule_clock_backwards",
            "Times the scheduler saw the wall clock move backwards",
            m.schedule.clock_backwards.clone(),
        );
        r.register(
            "collect_hits",
            "Monitoring-link hits by endpoint and outcome (accepted, fallback, lost, journal_unavailable, \
             activity_off, rate_limited, rate_limited_ip, unknown_link, malformed, bad_signature, unknown_key, \
             wrong_endpoint, too_long, internal_error)",
            m.hits.clone(),
        );
        r.register(
            "quota_remaining_clicks",
            "Click records a metered workspace may still land (purchased - used)",
            m.quota_remaining.clone(),
        );
        r.register(
            "quota_staged_records",
            "Records held out of the lake while the workspace's quota is exhausted",
            m.quota_staged.clone(),
        );
        r.register(
            "quota_records_staged",
            "Records staged (held out of the lake) for lack of quota",
            m.quota_staged_total.clone(),
        );
        r.register(
            "quota_records_released",
            "Staged records released into the lake after a top-up",
            m.quota_released.clone(),
        );
        r.register(
            "quota_records_purged",
            "Staged records deleted after the staging retention without a top-up",
            m.quota_purged.clone(),
        );
        r.register(
            "quota_billable_clicks",
            "Billable click records landed (click and feedback endpoints)",
            m.quota_billable_clicks.clone(),
        );
        let f = &m.forward;
        r.register(
            "forward_enqueued",
            "Third-party forward jobs queued, by destination host",
            f.enqueued.clone(),
        );
        r.register(
            "forward_sent",
            "Third-party forwards answered 2xx/3xx (job done), by destination host",
            f.sent.clone(),
        );
        r.register(
            "forward_failed_attempts",
            "Third-party forward attempts that failed (connection, timeout, 4xx/5xx), by destination host",
            f.failed_attempts.clone(),
        );
        r.register(
            "forward_given_up",
            "Third-party forward jobs dropped: past the give-up horizon or refused with a 4xx",
            f.given_up.clone(),
        );
        r.register(
            "forward_queue_depth",
            "Third-party forward jobs queued, by destination host",
            f.queue_depth.clone(),
        );
        r.register_with_unit(
            "forward_oldest_job_age",
            "Age of the oldest queued hit, by destination host",
            prometheus_client::registry::Unit::Seconds,
            f.oldest_job_age.clone(),
        );
        r.register(
            "forward_kafka_dropped",
            "Journal-topic messages the forwarder dropped: read again (already_taken) or a replayed duplicate (replay_duplicate)",
            f.kafka_dropped.clone(),
        );
        r.register(
            "forward_kafka_client_errors",
            "Error events of the forwarder's Kafka consumer (it retries)",
            f.kafka_client_errors.clone(),
        );
        r.register(
            "downloads",
            "Click-detail download tasks finished, by outcome (succeeded, failed; expired archives deleted)",
            m.downloads.clone(),
        );
        let s = &m.source;
        r.register(
            "http_source_requests",
            "HTTP source requests by outcome (status code, connect_error, timeout)",
            s.http_requests.clone(),
        );
        r.register(
            "http_source_retries",
            "HTTP source requests retried (429, 5xx, connection errors, timeouts)",
            s.http_retries.clone(),
        );
        r.register(
            "http_source_pages",
            "HTTP source pages fetched and accepted",
            s.http_pages.clone(),
        );
        r.register(
            "http_source_budget_exhausted",
            "HTTP source runs stopped by max_requests_per_run",
            s.http_budget_exhausted.clone(),
        );
        r.register(
            "http_source_repeated_cursor",
            "HTTP source runs stopped because the API repeated a cursor",
            s.http_repeated_cursor.clone(),
        );
        r.register(
            "http_source_bad_responses",
            "HTTP source responses that stopped a run, by reason (status, not_json, no_records, \
             not_success, too_large, gave_up, retry_after_too_long)",
            s.http_bad_responses.clone(),
        );
        r.register(
            "source_listings",
            "Object-store source listings by kind (full, after_watermark)",
            s.listings.clone(),
        );
        r.register(
            "source_objects_listed",
            "Objects returned by object-store source listings",
            s.objects_listed.clone(),
        );
        r.register(
            "kafka_sink_messages",
            "Kafka sink messages by status (delivered, failed; too_large and null_key rows went to quarantine)",
            m.sink.kafka_messages.clone(),
        );
        r.register(
            "kafka_sink_errors",
            "Kafka sink failures by kind (broker_down, timeout, topic_missing, unauthorized, tls_failed, too_large, other)",
            m.sink.kafka_errors.clone(),
        );
        r.register_with_unit(
            "kafka_sink_delivered",
            "Payload bytes of Kafka sink messages the brokers acknowledged",
            prometheus_client::registry::Unit::Bytes,
            m.sink.kafka_bytes.clone(),
        );
        r.register(
            "kafka_source_client_errors",
            "Errors the Kafka client reported while a Kafka source read (transport failures, \
             all brokers down)",
            s.kafka_client_errors.clone(),
        );
        r.register(
            "kafka_source_commit_failures",
            "Kafka source offset commits that failed or went unanswered by the end of a run \
             (the lake is unaffected: the catalog decides what is read again)",
            s.kafka_commit_failures.clone(),
        );
        r.register(
            "kafka_source_failures",
            "Kafka source failures by reason (brokers_down, no_assignment, replay_incomplete, \
             unauthorized, tls_failed, tls_file, missing_secret stop a run; close_timeout: the \
             consumer did not close in time)",
            s.kafka_failures.clone(),
        );
        m.kafka_journal.register(r);
        r.register_collector(Box::new(std::sync::Arc::clone(&m.journal)));
        Metrics { registry, ..m }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Sets a workspace's quota gauges (remaining only once it is metered).
    pub fn set_quota(&self, quota: &crate::catalog::QuotaStatus) {
        let labels = WorkspaceLabels::of(&quota.workspace);
        if let Some(remaining) = quota.remaining {
            self.quota_remaining
                .get_or_create(&labels)
                .set(i64::try_from(remaining).unwrap_or(i64::MAX));
        }
        self.quota_staged
            .get_or_create(&labels)
            .set(i64::try_from(quota.staged).unwrap_or(i64::MAX));
    }

    /// Labels of a source event of a bounded kind.
    pub fn source_labels(pipeline: &str, kind: impl Into<String>) -> SourceLabels {
        SourceLabels {
            pipeline: pipeline.to_string(),
            kind: kind.into(),
        }
    }

    pub fn labels(pipeline: &str) -> PipelineLabels {
        PipelineLabels {
            pipeline: pipeline.to_string(),
        }
    }
}

/// Installs the global tracing subscriber (stderr), text or JSON lines. `RUST_LOG` overrides
/// `level`.
pub fn init_logging(json: bool, level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init()
    } else {
        builder.try_init()
    };
}
