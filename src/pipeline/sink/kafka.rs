//! The `kafka` sink: one message per row on a topic, keyed by a column, every delivery report
//! awaited before the batch commits.
//!
//! Kafka has no create-only put, so the sink cannot be exactly-once on its own: a batch that
//! fails (or whose process dies) after some messages were acknowledged is sent again whole when
//! its intent is replayed. Delivery downstream is therefore **at least once**, and every message
//! carries the same dedup headers on every attempt:
//!
//! * `backflow-batch: {pipeline}/{batch}` — the batch sequence number of the commit protocol;
//! * `backflow-row: {n}` — the row's index in the batch frame (0-based).
//!
//! A replay re-reads the same positions and re-encodes the same frame, so a row keeps its pair
//! and a consumer that remembers the pairs it has seen drops replays. Encoding is pure (the same
//! frame gives the same messages); sending is [`Publisher::send`].
//!
//! Rows the topic cannot take go to the quarantine dataset with the reason instead of failing
//! the pipeline forever on every retry: a null key, a message over `message_max_bytes`.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use polars::prelude::*;
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tracing::{debug, info, warn};

use crate::config::model::KafkaSink;
use crate::pipeline::PipelineError;
use crate::pipeline::frame::{Quarantine, QuarantinedRow, SOURCE_FILE, SOURCE_LINE, is_lineage};
use crate::pipeline::kafka_tls;
use crate::telemetry::{Metrics, PipelineLabels, SinkLabels};

/// Header naming the batch of a message: `{pipeline}/{batch}`.
pub const BATCH_HEADER: &str = "backflow-batch";
/// Header naming the row of a message within its batch: `{n}`, 0-based.
pub const ROW_HEADER: &str = "backflow-row";

/// librdkafka's largest per-message framing (record batch v2: length, attributes, timestamp and
/// offset deltas, key/value lengths, header count, as varints at their widest).
const RECORD_OVERHEAD: usize = 36;
/// A header's two length varints at their widest.
const HEADER_OVERHEAD: usize = 10;

/// One encoded message, not yet sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The row's index in the batch frame (the `backflow-row` header).
    pub row: u64,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
}

/// The value of the `backflow-batch` header.
pub fn batch_id(pipeline: &str, seq: i64) -> String {
    format!("{pipeline}/{seq}")
}

/// The largest size librdkafka may count for a message (what `message.max.bytes` bounds).
fn wire_size(cfg: &KafkaSink, batch: &str, row: u64, key: usize, payload: usize) -> usize {
    let fixed: usize = cfg
        .headers
        .iter()
        .map(|(n, v)| n.len() + v.len() + HEADER_OVERHEAD)
        .sum();
    let dedup = BATCH_HEADER.len()
        + batch.len()
        + ROW_HEADER.len()
        + row.to_string().len()
        + 2 * HEADER_OVERHEAD;
    RECORD_OVERHEAD + key + payload + fixed + dedup
}

/// Encodes every row of a batch frame as a message: a JSON object of the non-lineage columns in
/// frame order (nulls kept; timestamps RFC 3339 UTC, dates `YYYY-MM-DD`), keyed by the key
/// column's value. Rows with a null key, or whose message would exceed `message_max_bytes`, go
/// to `quarantine` (counted in `rejected`).
pub fn encode(
    df: &DataFrame,
    cfg: &KafkaSink,
    batch: &str,
    quarantine: &mut Quarantine,
    rejected: &mut Rejected,
) -> Result<Vec<Message>, PipelineError> {
    let polars = |source| PipelineError::Polars {
        stage: "kafka encode",
        source,
    };
    let key_column = df.column(&cfg.key_column).map_err(|_| {
        PipelineError::Sink(format!(
            "sink.key_column `{}` is not a column of the batch (columns: {})",
            cfg.key_column,
            df.get_column_names()
                .iter()
                .filter(|c| !is_lineage(c.as_str()))
                .map(|c| c.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    let columns: Vec<&Column> = df
        .columns()
        .iter()
        .filter(|c| !is_lineage(c.name().as_str()))
        .collect();
    let names: Vec<Vec<u8>> = columns
        .iter()
        .map(|c| serde_json::to_vec(c.name().as_str()).unwrap_or_default())
        .collect();
    let files = df
        .column(SOURCE_FILE)
        .ok()
        .and_then(|c| c.str().ok().cloned());
    let lines = df
        .column(SOURCE_LINE)
        .ok()
        .and_then(|c| c.i64().ok().cloned());
    let mut messages = Vec::with_capacity(df.height());
    for row in 0..df.height() {
        let mut payload = Vec::with_capacity(64 * columns.len());
        payload.push(b'{');
        for (i, (column, name)) in columns.iter().zip(&names).enumerate() {
            if i > 0 {
                payload.push(b',');
            }
            payload.extend_from_slice(name);
            payload.push(b':');
            let value = crate::pipeline::frame::any_to_json(column.get(row).map_err(polars)?);
            // Writing a JSON value into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut payload, &value);
        }
        payload.push(b'}');
        let key = match crate::pipeline::frame::any_to_json(key_column.get(row).map_err(polars)?) {
            serde_json::Value::Null => None,
            serde_json::Value::String(s) => Some(s.into_bytes()),
            other => Some(other.to_string().into_bytes()),
        };
        let reason = match &key {
            None => Some((
                "null_key",
                format!("sink.key_column `{}` is null", cfg.key_column),
            )),
            Some(key) => {
                let size = wire_size(cfg, batch, row as u64, key.len(), payload.len());
                (size > cfg.message_max_bytes).then(|| {
                    (
                        "too_large",
                        format!(
                            "message of {size} bytes (key, payload and headers) is over sink.message_max_bytes ({})",
                            cfg.message_max_bytes
                        ),
                    )
                })
            }
        };
        match (key, reason) {
            (Some(key), None) => messages.push(Message {
                row: row as u64,
                key,
                payload,
            }),
            (_, reason) => {
                let (kind, reason) = reason.unwrap_or(("null_key", String::new()));
                let source_file = files.as_ref().and_then(|f| f.get(row)).map(str::to_string);
                let source_line = lines.as_ref().and_then(|l| l.get(row));
                let reason = match (&source_file, source_line) {
                    (Some(file), Some(line)) => format!("{file}:{line}: {reason}"),
                    _ => reason,
                };
                rejected.count(kind);
                quarantine.push(QuarantinedRow {
                    reason,
                    source_file,
                    source_line,
                    raw: Some(String::from_utf8_lossy(&payload).into_owned()),
                });
            }
        }
    }
    Ok(messages)
}

/// Rows of a batch the sink sent to quarantine, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rejected {
    pub null_key: u64,
    pub too_large: u64,
}

impl Rejected {
    fn count(&mut self, kind: &str) {
        match kind {
            "too_large" => self.too_large += 1,
            _ => self.null_key += 1,
        }
    }
}

/// What a batch's sending did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sent {
    pub messages: u64,
    pub bytes: u64,
}

/// Why the producer failed, as a bounded metric label, and whether trying again later may work.
fn classify(e: &KafkaError) -> (&'static str, bool) {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::MessageTimedOut | RDKafkaErrorCode::RequestTimedOut) => {
            ("timeout", true)
        }
        Some(
            RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::Resolve
            | RDKafkaErrorCode::NotEnoughReplicas
            | RDKafkaErrorCode::NotEnoughReplicasAfterAppend
            | RDKafkaErrorCode::LeaderNotAvailable
            | RDKafkaErrorCode::NotLeaderForPartition,
        ) => ("broker_down", true),
        Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => {
            ("topic_missing", false)
        }
        Some(
            RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::SaslAuthenticationFailed
            | RDKafkaErrorCode::Authentication,
        ) => ("unauthorized", false),
        Some(RDKafkaErrorCode::MessageSizeTooLarge) => ("too_large", false),
        _ => ("other", true),
    }
}

/// The producer's client callbacks: librdkafka reports a broker that is down every few
/// milliseconds while it retries; each kind of error is logged once per run (with the pipeline),
/// the repeats at debug level. The batch's own outcome is logged by [`Publisher::send`].
struct SinkContext {
    pipeline: String,
    brokers: String,
    seen: std::sync::Mutex<std::collections::HashSet<String>>,
    /// The reason of the last refused TLS handshake (shared with the [`Publisher`]).
    tls_reason: TlsReason,
}

type TlsReason = Arc<std::sync::Mutex<Option<String>>>;

impl ClientContext for SinkContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical => {
                warn!(pipeline = %self.pipeline, facility = fac, "kafka sink: librdkafka: {log_message}")
            }
            _ => {
                debug!(pipeline = %self.pipeline, facility = fac, "kafka sink: librdkafka: {log_message}")
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if kafka_tls::handshake_refused(error.rdkafka_error_code(), reason)
            && let Ok(mut tls) = self.tls_reason.lock()
        {
            *tls = Some(reason.to_string());
        }
        let code = format!("{:?}", error.rdkafka_error_code());
        let first = self
            .seen
            .lock()
            .map(|mut seen| seen.insert(code))
            .unwrap_or(true);
        if first {
            warn!(pipeline = %self.pipeline, brokers = %self.brokers, error = %error, reason, "kafka sink: client error (repeats are logged at debug level)");
        } else {
            debug!(pipeline = %self.pipeline, brokers = %self.brokers, error = %error, reason, "kafka sink: client error");
        }
    }
}

/// A run's producer for one Kafka sink.
pub struct Publisher {
    producer: FutureProducer<SinkContext>,
    cfg: KafkaSink,
    pipeline: String,
    metrics: Arc<Metrics>,
    tls_reason: TlsReason,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("kafka_sink::Publisher")
            .field("pipeline", &self.pipeline)
            .field("topic", &self.cfg.topic)
            .finish()
    }
}

impl Publisher {
    /// Creates the producer and checks that the brokers answer and the topic exists, before the
    /// run plans anything: a broker down at start fails the run (retryable) with nothing
    /// recorded; a missing topic fails it naming the topic.
    pub async fn connect(
        cfg: &KafkaSink,
        pipeline: &str,
        metrics: Arc<Metrics>,
    ) -> Result<Publisher, PipelineError> {
        let mut config = ClientConfig::new();
        for (key, value) in &cfg.client {
            config.set(key, value);
        }
        config
            .set("bootstrap.servers", cfg.brokers.join(","))
            .set("client.id", format!("backflow-sink-{pipeline}"))
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("allow.auto.create.topics", "false")
            .set(
                "message.timeout.ms",
                cfg.message_timeout.as_millis().to_string(),
            )
            .set(
                "queue.buffering.max.messages",
                cfg.max_in_flight.get().to_string(),
            )
            .set("message.max.bytes", cfg.message_max_bytes.to_string());
        kafka_tls::apply(&mut config, cfg.security_protocol, &cfg.tls, "tls")
            .map_err(PipelineError::Sink)?;
        if cfg.security_protocol.sasl() {
            let env = cfg.sasl_password_env.clone().unwrap_or_default();
            let password = std::env::var(&env).map_err(|_| {
                PipelineError::Sink(format!(
                    "sasl_password_env: environment variable `{env}` is not set (it holds the SASL password)"
                ))
            })?;
            config
                .set("sasl.mechanism", cfg.sasl_mechanism.librdkafka_name())
                .set(
                    "sasl.username",
                    cfg.sasl_username.clone().unwrap_or_default(),
                )
                .set("sasl.password", password);
        }
        let context = SinkContext {
            pipeline: pipeline.to_string(),
            brokers: cfg.brokers.join(","),
            seen: std::sync::Mutex::default(),
            tls_reason: TlsReason::default(),
        };
        let tls_reason = Arc::clone(&context.tls_reason);
        let producer: FutureProducer<SinkContext> =
            config.create_with_context(context).map_err(|e| {
                PipelineError::Sink(kafka_tls::file_refused(&e, &cfg.tls, "tls").unwrap_or_else(
                    || {
                        format!(
                            "kafka: creating the producer for brokers {}: {e}",
                            cfg.brokers.join(",")
                        )
                    },
                ))
            })?;
        let publisher = Publisher {
            producer,
            cfg: cfg.clone(),
            pipeline: pipeline.to_string(),
            metrics,
            tls_reason,
        };
        publisher.probe().await?;
        Ok(publisher)
    }

    fn brokers(&self) -> String {
        self.cfg.brokers.join(",")
    }

    fn count_error(&self, kind: &'static str) {
        self.metrics
            .sink
            .kafka_errors
            .get_or_create(&SinkLabels {
                pipeline: self.pipeline.clone(),
                status: kind,
            })
            .inc();
    }

    fn count_messages(&self, status: &'static str, n: u64) {
        if n > 0 {
            self.metrics
                .sink
                .kafka_messages
                .get_or_create(&SinkLabels {
                    pipeline: self.pipeline.clone(),
                    status,
                })
                .inc_by(n);
        }
    }

    /// Counts a batch's rows that went to quarantine instead of the topic.
    pub fn count_rejected(&self, rejected: Rejected) {
        self.count_messages("null_key", rejected.null_key);
        self.count_messages("too_large", rejected.too_large);
    }

    /// A metadata request for the topic (bounded by `message_timeout_ms`, at most 30 s).
    async fn probe(&self) -> Result<(), PipelineError> {
        let client = self.producer.clone();
        let topic = self.cfg.topic.clone();
        let timeout = self.cfg.message_timeout.min(Duration::from_secs(30));
        let probed = tokio::task::spawn_blocking(move || {
            let md = client.client().fetch_metadata(Some(&topic), timeout)?;
            Ok::<_, KafkaError>(match md.topics().iter().find(|t| t.name() == topic) {
                None => Some(RDKafkaErrorCode::UnknownTopicOrPartition),
                Some(t) => match t.error() {
                    Some(code) => Some(RDKafkaErrorCode::from(code)),
                    None if t.partitions().is_empty() => {
                        Some(RDKafkaErrorCode::UnknownTopicOrPartition)
                    }
                    None => None,
                },
            })
        })
        .await
        .map_err(|e| PipelineError::Task(e.to_string()))?;
        let e = match probed {
            Ok(None) => {
                info!(pipeline = %self.pipeline, brokers = %self.brokers(), topic = %self.cfg.topic, "kafka sink: brokers answer, topic found");
                return Ok(());
            }
            Ok(Some(code)) => KafkaError::MetadataFetch(code),
            Err(e) => e,
        };
        let (kind, retryable) = classify(&e);
        // A metadata request that gets no answer at all is a broker that is down, unless the
        // client reported a refused TLS handshake.
        let tls_reason = self.tls_reason.lock().ok().and_then(|r| r.clone());
        let kind = match (kind, &tls_reason) {
            ("other" | "timeout" | "broker_down", Some(_)) => "tls_failed",
            ("other" | "timeout", None) => "broker_down",
            _ => kind,
        };
        self.count_error(kind);
        warn!(pipeline = %self.pipeline, brokers = %self.brokers(), topic = %self.cfg.topic, kind, error = %e, "kafka sink: broker check failed; nothing was sent");
        Err(match kind {
            "tls_failed" => PipelineError::Sink(format!(
                "kafka: {} (topic `{}`); not retried",
                kafka_tls::refusal(
                    &self.brokers(),
                    &self.cfg.tls,
                    "tls",
                    tls_reason.as_deref().unwrap_or_default()
                ),
                self.cfg.topic
            )),
            "topic_missing" => PipelineError::Sink(format!(
                "kafka topic `{}` does not exist on brokers {}; create it (the sink never creates topics)",
                self.cfg.topic,
                self.brokers()
            )),
            "unauthorized" => PipelineError::Sink(format!(
                "kafka brokers {} refuse access to topic `{}`: {e}",
                self.brokers(),
                self.cfg.topic
            )),
            _ if retryable || kind == "broker_down" => PipelineError::Kafka(format!(
                "sink brokers {} unreachable (topic `{}`): {e}",
                self.brokers(),
                self.cfg.topic
            )),
            _ => PipelineError::Sink(format!(
                "kafka brokers {}, topic `{}`: {e}",
                self.brokers(),
                self.cfg.topic
            )),
        })
    }

    fn headers(&self, batch: &str, row: u64) -> OwnedHeaders {
        let row = row.to_string();
        let mut headers = OwnedHeaders::new_with_capacity(self.cfg.headers.len() + 2);
        for (name, value) in &self.cfg.headers {
            headers = headers.insert(Header {
                key: name,
                value: Some(value.as_bytes()),
            });
        }
        headers
            .insert(Header {
                key: BATCH_HEADER,
                value: Some(batch.as_bytes()),
            })
            .insert(Header {
                key: ROW_HEADER,
                value: Some(row.as_bytes()),
            })
    }

    /// Sends a batch's messages and waits for every delivery report, at most `max_in_flight`
    /// unacknowledged at once. Any failed delivery fails the batch (after the messages already
    /// handed to the client are reported): the caller must not commit it.
    pub async fn send(&self, batch: &str, messages: &[Message]) -> Result<Sent, PipelineError> {
        let max = self.cfg.max_in_flight.get();
        let mut pending = FuturesUnordered::new();
        let mut sent = Sent::default();
        let mut failed = 0u64;
        let mut first: Option<(u64, KafkaError)> = None;
        let mut rows = messages.iter();
        let mut next = rows.next();
        while let Some(message) = next.filter(|_| first.is_none()) {
            if pending.len() >= max {
                if let Some(done) = pending.next().await {
                    self.settle(done, &mut sent, &mut failed, &mut first);
                }
                continue;
            }
            let record = FutureRecord::to(&self.cfg.topic)
                .key(&message.key)
                .payload(&message.payload)
                .headers(self.headers(batch, message.row));
            match self.producer.send_result(record) {
                Ok(delivery) => {
                    let (row, bytes) = (message.row, message.payload.len() as u64);
                    pending.push(async move { (row, bytes, delivery.await) });
                    next = rows.next();
                }
                Err((e, _)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    // librdkafka's queue is full (other producers' messages share it): wait for
                    // an acknowledgement, or a moment when none of ours is pending.
                    match pending.next().await {
                        Some(done) => self.settle(done, &mut sent, &mut failed, &mut first),
                        None => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
                Err((e, _)) => {
                    failed += 1;
                    first.get_or_insert((message.row, e));
                }
            }
        }
        while let Some(done) = pending.next().await {
            self.settle(done, &mut sent, &mut failed, &mut first);
        }
        self.count_messages("delivered", sent.messages);
        self.metrics
            .sink
            .kafka_bytes
            .get_or_create(&PipelineLabels {
                pipeline: self.pipeline.clone(),
            })
            .inc_by(sent.bytes);
        let Some((row, e)) = first else {
            return Ok(sent);
        };
        let unsent = messages.len() as u64 - sent.messages - failed;
        self.count_messages("failed", failed + unsent);
        let (kind, retryable) = classify(&e);
        self.count_error(kind);
        warn!(
            pipeline = %self.pipeline,
            batch,
            brokers = %self.brokers(),
            topic = %self.cfg.topic,
            kind,
            first_failed_row = row,
            delivered = sent.messages,
            failed,
            unsent,
            error = %e,
            "kafka sink: batch not delivered; it is not committed and will be sent again"
        );
        let what = format!(
            "{} of {} messages of batch {batch} not acknowledged by brokers {} (topic `{}`; first: row {row}: {e})",
            failed + unsent,
            messages.len(),
            self.brokers(),
            self.cfg.topic
        );
        Err(match kind {
            "too_large" => PipelineError::Sink(format!(
                "kafka: {what}; the broker's limit is lower than sink.message_max_bytes ({}): lower it to the topic's max.message.bytes",
                self.cfg.message_max_bytes
            )),
            _ if retryable => PipelineError::Kafka(format!("sink: {what}")),
            _ => PipelineError::Sink(format!("kafka: {what}")),
        })
    }

    fn settle(
        &self,
        (row, bytes, delivery): (
            u64,
            u64,
            Result<
                rdkafka::producer::future_producer::OwnedDeliveryResult,
                futures::channel::oneshot::Canceled,
            >,
        ),
        sent: &mut Sent,
        failed: &mut u64,
        first: &mut Option<(u64, KafkaError)>,
    ) {
        let error = match delivery {
            Ok(Ok(_)) => {
                sent.messages += 1;
                sent.bytes += bytes;
                return;
            }
            Ok(Err((e, _))) => e,
            Err(_) => KafkaError::Canceled,
        };
        *failed += 1;
        if first.is_none() {
            *first = Some((row, error));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroUsize;

    use super::*;
    use crate::config::model::KafkaSinkFormat;

    fn sink(max_bytes: usize) -> KafkaSink {
        KafkaSink {
            brokers: vec!["127.0.0.1:9092".into()],
            topic: "out".into(),
            key_column: "k".into(),
            format: KafkaSinkFormat::Json,
            headers: vec![("origin".into(), "test".into())],
            message_timeout: Duration::from_secs(1),
            max_in_flight: NonZeroUsize::MIN,
            message_max_bytes: max_bytes,
            security_protocol: crate::config::daemon::KafkaSecurity::Plaintext,
            sasl_mechanism: crate::config::model::SaslMechanism::Plain,
            sasl_username: None,
            sasl_password_env: None,
            tls: Box::default(),
            client: Vec::new(),
        }
    }

    /// Rows `k` (text, one null), `n` (int64), `ts` (UTC timestamp), `note` (null), with lineage.
    fn frame() -> PolarsResult<DataFrame> {
        let ts = Series::new("ts".into(), [1_772_330_400_000_000i64, 0, 1]).cast(
            &DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC)),
        )?;
        DataFrame::new(
            3,
            vec![
                Series::new("k".into(), [Some("a"), None, Some("c")]).into(),
                Series::new("n".into(), [1i64, 2, 3]).into(),
                ts.into(),
                Series::new(
                    "note".into(),
                    [None::<&str>, None, Some("x".repeat(500).as_str())],
                )
                .into(),
                Series::new(SOURCE_FILE.into(), ["f", "f", "f"]).into(),
                Series::new(SOURCE_LINE.into(), [1i64, 2, 3]).into(),
            ],
        )
    }

    #[test]
    fn rows_become_typed_json_in_column_order_and_bad_rows_go_to_quarantine() -> PolarsResult<()> {
        let df = frame()?;
        let mut quarantine = Quarantine::default();
        let mut rejected = Rejected::default();
        let messages = encode(&df, &sink(400), "p/7", &mut quarantine, &mut rejected)
            .map_err(|e| PolarsError::ComputeError(e.to_string().into()))?;
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].row, 0);
        assert_eq!(messages[0].key, b"a");
        assert_eq!(
            String::from_utf8_lossy(&messages[0].payload),
            r#"{"k":"a","n":1,"ts":"2026-03-01T02:00:00Z","note":null}"#
        );
        assert_eq!(
            rejected,
            Rejected {
                null_key: 1,
                too_large: 1
            }
        );
        let reasons: Vec<&str> = quarantine.rows.iter().map(|r| r.reason.as_str()).collect();
        assert_eq!(reasons[0], "f:2: sink.key_column `k` is null");
        assert!(
            reasons[1].starts_with("f:3: message of ")
                && reasons[1].ends_with(
                    "bytes (key, payload and headers) is over sink.message_max_bytes (400)"
                ),
            "{reasons:?}"
        );
        // Pure: the same frame gives the same messages (what a replay relies on).
        let again = encode(
            &df,
            &sink(400),
            "p/7",
            &mut Quarantine::default(),
            &mut Rejected::default(),
        )
        .map_err(|e| PolarsError::ComputeError(e.to_string().into()))?;
        assert_eq!(again, messages);
        Ok(())
    }

    #[test]
    fn keys_of_other_types_take_their_json_form_and_a_missing_key_column_fails_the_batch()
    -> PolarsResult<()> {
        let df = frame()?;
        let mut cfg = sink(1_000_000);
        cfg.key_column = "n".into();
        let messages = encode(
            &df,
            &cfg,
            "p/1",
            &mut Quarantine::default(),
            &mut Rejected::default(),
        )
        .map_err(|e| PolarsError::ComputeError(e.to_string().into()))?;
        let keys: Vec<&[u8]> = messages.iter().map(|m| m.key.as_slice()).collect();
        assert_eq!(keys, [b"1", b"2", b"3"]);
        cfg.key_column = "ts".into();
        let messages = encode(
            &df,
            &cfg,
            "p/1",
            &mut Quarantine::default(),
            &mut Rejected::default(),
        )
        .map_err(|e| PolarsError::ComputeError(e.to_string().into()))?;
        assert_eq!(messages[0].key, b"2026-03-01T02:00:00Z");
        cfg.key_column = "missing".into();
        let err = encode(
            &df,
            &cfg,
            "p/1",
            &mut Quarantine::default(),
            &mut Rejected::default(),
        )
        .err()
        .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(
                "sink: sink.key_column `missing` is not a column of the batch (columns: k, n, ts, note)"
            )
        );
        Ok(())
    }

    #[test]
    fn the_size_check_counts_key_payload_and_every_header() {
        let cfg = sink(1_000_000);
        let size = wire_size(&cfg, "p/7", 12, 3, 100);
        let headers = ("origin".len() + "test".len() + HEADER_OVERHEAD)
            + ("backflow-batch".len() + 3 + HEADER_OVERHEAD)
            + ("backflow-row".len() + 2 + HEADER_OVERHEAD);
        assert_eq!(size, RECORD_OVERHEAD + 3 + 100 + headers);
    }
}
