//! Where the collection endpoints append an accepted hit before answering: the embedded
//! journal (`journal.kind: local`, the default) or a Kafka topic (`journal.kind: kafka`).
//!
//! Kafka mode keeps the durability contract of DESIGN.md: an idempotent producer with
//! `acks=all`, and the endpoint answers only after the broker acknowledged the record (the
//! delivery report). The producer's queue is bounded (`max_in_flight`); a full queue, a broker
//! that does not acknowledge within `message_timeout_ms`, a missing topic or a refused login are
//! all "the journal cannot accept": an impression gets `503` + `Retry-After`, a click still
//! redirects and its record goes to a local fallback file (fsync'd, one record per line, the
//! journal's record format) that a background task replays to the topic once the broker is back.
//!
//! The message key is the hit's `event_id` (UUIDv7): it spreads hits evenly over the partitions
//! (a link token would pin a hot campaign's hits to one partition) and it is the identity a
//! reader deduplicates on. No reader needs per-link order.
//!
//! Replay is at least once: a crash after a record was acknowledged and before the fallback file
//! was shortened sends that record again on the next start (same `event_id`). Every replayed
//! record carries the header `backflow-replay: 1`; the daemon-wired `ad_events` consumer drops
//! such a record when its event id already landed (`catalog::replays`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::daemon::KafkaJournalConfig;
use crate::config::model::KafkaTls;
use crate::journal::Journal;
use crate::pipeline::kafka_tls;
use crate::pipeline::quota::REPLAY_HEADER;
use crate::telemetry::{Metrics, StatusLabels};

/// Why a hit could not be appended.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The journal cannot take it now (disk, broker down, queue full, timeout, topic missing,
    /// not authorized); asking again later may work.
    #[error("{0}")]
    Unavailable(String),
    /// The record is larger than the Kafka message limit: asking again will not help.
    #[error("record of {bytes} bytes is over the Kafka message limit of {limit} bytes")]
    TooLarge { bytes: usize, limit: usize },
}

/// The endpoints' journal.
#[derive(Clone)]
pub enum Appender {
    Local(Journal),
    Kafka(Arc<KafkaJournal>),
}

impl std::fmt::Debug for Appender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Appender::Local(_) => f.write_str("Appender::Local"),
            Appender::Kafka(k) => write!(f, "Appender::Kafka({})", k.cfg.topic),
        }
    }
}

impl Appender {
    /// Appends one record durably (fsync'd, or acknowledged by every in-sync replica).
    pub async fn append(&self, key: &str, record: Bytes) -> Result<(), AppendError> {
        match self {
            Appender::Local(journal) => journal
                .append(record)
                .await
                .map(|_| ())
                .map_err(|e| AppendError::Unavailable(e.to_string())),
            Appender::Kafka(kafka) => kafka.append(key, &record).await,
        }
    }
}

/// The producer's view of the broker, as `/readyz` and `backflow_collect_kafka_state` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ProducerState {
    /// Not probed yet.
    Connecting = 0,
    Ready = 1,
    /// No broker answers (or acknowledgements time out).
    BrokerDown = 2,
    /// The topic does not exist (the collector never creates it).
    TopicMissing = 3,
    /// Login refused or no permission to write the topic.
    Unauthorized = 4,
    /// The TLS handshake was refused (a CA that did not sign the brokers' certificates, a
    /// certificate naming another host, a client certificate the brokers do not accept).
    TlsFailed = 5,
}

impl ProducerState {
    const ALL: [ProducerState; 6] = [
        ProducerState::Connecting,
        ProducerState::Ready,
        ProducerState::BrokerDown,
        ProducerState::TopicMissing,
        ProducerState::Unauthorized,
        ProducerState::TlsFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProducerState::Connecting => "connecting",
            ProducerState::Ready => "ready",
            ProducerState::BrokerDown => "broker_down",
            ProducerState::TopicMissing => "topic_missing",
            ProducerState::Unauthorized => "unauthorized",
            ProducerState::TlsFailed => "tls_failed",
        }
    }

    fn from_u8(v: u8) -> ProducerState {
        Self::ALL
            .into_iter()
            .find(|s| *s as u8 == v)
            .unwrap_or(ProducerState::Connecting)
    }
}

/// Metrics of the Kafka journal (registered with the daemon's other metrics).
#[derive(Debug, Default)]
pub struct KafkaJournalMetrics {
    /// Clicks written to the fallback file.
    pub fallback_records: Counter,
    /// Fallback records acknowledged by the broker on replay.
    pub fallback_replayed: Counter,
    /// Fallback records waiting for replay.
    pub fallback_pending: Gauge,
    /// Records refused or not acknowledged, by kind.
    pub errors: Family<StatusLabels, Counter>,
    /// 1 for the producer's current state, 0 for the others.
    pub state: Family<StatusLabels, Gauge>,
}

impl KafkaJournalMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "collect_fallback_records",
            "Clicks the journal could not take, written to the local fallback file (kafka journal)",
            self.fallback_records.clone(),
        );
        r.register(
            "collect_fallback_replayed",
            "Fallback records acknowledged by Kafka on replay",
            self.fallback_replayed.clone(),
        );
        r.register(
            "collect_fallback_pending",
            "Fallback records waiting to be replayed to Kafka",
            self.fallback_pending.clone(),
        );
        r.register(
            "collect_kafka_errors",
            "Hits the Kafka journal did not take, by status (connecting, broker_down, timeout, queue_full, \
             topic_missing, unauthorized, tls_failed, too_large, other)",
            self.errors.clone(),
        );
        r.register(
            "collect_kafka_state",
            "The Kafka journal producer's state (1 = current): connecting, ready, broker_down, \
             topic_missing, unauthorized, tls_failed",
            self.state.clone(),
        );
    }
}

/// The shared state cell (also written by the client context on global errors).
struct StateCell {
    state: AtomicU8,
    metrics: Arc<Metrics>,
    brokers: String,
    topic: String,
    tls: KafkaTls,
    /// The reason of the last refused TLS handshake, until the broker acknowledges: librdkafka
    /// follows it with "all brokers down", which must not hide it.
    tls_reason: std::sync::Mutex<Option<String>>,
}

impl StateCell {
    fn get(&self) -> ProducerState {
        ProducerState::from_u8(self.state.load(Ordering::Acquire))
    }

    fn tls_reason(&self) -> Option<String> {
        self.tls_reason
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// A refused TLS handshake: remembered, and the state moves to `tls_failed`.
    fn tls_refused(&self, reason: &str) {
        *self
            .tls_reason
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(reason.to_string());
        self.set(ProducerState::TlsFailed, reason);
    }

    fn set(&self, to: ProducerState, why: &str) {
        if to == ProducerState::Ready {
            *self
                .tls_reason
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        }
        let from = ProducerState::from_u8(self.state.swap(to as u8, Ordering::AcqRel));
        if from == to {
            return;
        }
        for s in ProducerState::ALL {
            self.metrics
                .kafka_journal
                .state
                .get_or_create(&StatusLabels { status: s.as_str() })
                .set(i64::from(s == to));
        }
        match to {
            ProducerState::Ready => {
                info!(brokers = %self.brokers, topic = %self.topic, from = from.as_str(), "kafka journal: broker acknowledges; hits are accepted");
            }
            ProducerState::TlsFailed => {
                let refusal =
                    kafka_tls::refusal(&self.brokers, &self.tls, "journal.kafka.tls", why);
                error!(brokers = %self.brokers, topic = %self.topic, state = to.as_str(), reason = %refusal,
                    "kafka journal cannot accept: impressions answer 503, clicks redirect and go to the fallback file");
            }
            _ => {
                error!(brokers = %self.brokers, topic = %self.topic, state = to.as_str(), reason = why,
                    "kafka journal cannot accept: impressions answer 503, clicks redirect and go to the fallback file");
            }
        }
    }
}

/// librdkafka's global errors (all brokers down, authentication) move the state at once.
struct Context {
    cell: Arc<StateCell>,
}

impl ClientContext for Context {
    fn error(&self, error: KafkaError, reason: &str) {
        if kafka_tls::handshake_refused(error.rdkafka_error_code(), reason) {
            self.cell.tls_refused(reason);
            return;
        }
        match error.rdkafka_error_code() {
            // After a refused handshake the brokers are "down" because of it.
            Some(RDKafkaErrorCode::AllBrokersDown) if self.cell.tls_reason().is_some() => {}
            Some(RDKafkaErrorCode::AllBrokersDown) => {
                self.cell.set(ProducerState::BrokerDown, reason);
            }
            Some(
                RDKafkaErrorCode::Authentication
                | RDKafkaErrorCode::SaslAuthenticationFailed
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed,
            ) => self.cell.set(ProducerState::Unauthorized, reason),
            Some(RDKafkaErrorCode::Fatal) => {
                // An idempotence guarantee broke: this producer refuses every hit from now on.
                error!(error = %error, reason, "kafka journal: fatal producer error; impressions answer 503 and clicks go to the fallback file until the collector is restarted");
            }
            _ => warn!(error = %error, reason, "kafka journal: librdkafka error"),
        }
    }
}

/// A failed produce, classified.
fn classify(e: &KafkaError) -> (&'static str, Option<ProducerState>) {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::QueueFull) => ("queue_full", None),
        Some(RDKafkaErrorCode::MessageTimedOut | RDKafkaErrorCode::RequestTimedOut) => {
            ("timeout", Some(ProducerState::BrokerDown))
        }
        Some(
            RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::Resolve,
        ) => ("broker_down", Some(ProducerState::BrokerDown)),
        Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => {
            ("topic_missing", Some(ProducerState::TopicMissing))
        }
        Some(
            RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::SaslAuthenticationFailed
            | RDKafkaErrorCode::Authentication,
        ) => ("unauthorized", Some(ProducerState::Unauthorized)),
        Some(RDKafkaErrorCode::SSL) => ("tls_failed", Some(ProducerState::TlsFailed)),
        Some(RDKafkaErrorCode::MessageSizeTooLarge) => ("too_large", None),
        _ => ("other", None),
    }
}

/// Why the producer could not be created.
#[derive(Debug, thiserror::Error)]
pub enum KafkaJournalError {
    #[error("journal.kafka: creating the producer: {0}")]
    Producer(KafkaError),
    /// A TLS setting that cannot be used (a key password not set, a PEM librdkafka refuses).
    #[error("{0}")]
    Tls(String),
    #[error(
        "journal.kafka.sasl_password_env: environment variable `{0}` is not set (it holds the SASL password)"
    )]
    MissingSecret(String),
    #[error("journal.kafka.fallback_dir {path}: {source}")]
    Fallback {
        path: String,
        source: std::io::Error,
    },
}

/// A client of the journal topic (the collectors' producer, the forwarder's consumer): its
/// brokers and security settings from `journal.kafka`.
pub fn client_config(
    cfg: &KafkaJournalConfig,
    client_id: &str,
) -> Result<ClientConfig, KafkaJournalError> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", cfg.brokers.join(","))
        .set("client.id", client_id);
    kafka_tls::apply(
        &mut config,
        cfg.security_protocol,
        &cfg.tls,
        "journal.kafka.tls",
    )
    .map_err(KafkaJournalError::Tls)?;
    if cfg.security_protocol.sasl() {
        let env = cfg.sasl_password_env.clone().unwrap_or_default();
        let password =
            std::env::var(&env).map_err(|_| KafkaJournalError::MissingSecret(env.clone()))?;
        config
            .set("sasl.mechanism", cfg.sasl_mechanism.librdkafka_name())
            .set(
                "sasl.username",
                cfg.sasl_username.clone().unwrap_or_default(),
            )
            .set("sasl.password", password);
    }
    Ok(config)
}

/// The collector's Kafka producer, its state and its fallback file.
pub struct KafkaJournal {
    producer: FutureProducer<Context>,
    cfg: KafkaJournalConfig,
    cell: Arc<StateCell>,
    fallback: Fallback,
    metrics: Arc<Metrics>,
    /// Wakes the health task (a failed delivery, a new fallback record).
    wake: tokio::sync::Notify,
}

impl std::fmt::Debug for KafkaJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaJournal")
            .field("topic", &self.cfg.topic)
            .field("state", &self.state())
            .finish()
    }
}

impl KafkaJournal {
    /// Creates the producer (no connection yet: a broker down at start is not an error, the
    /// endpoints answer as for a broker lost later) and counts the fallback records left by an
    /// earlier process.
    pub async fn open(
        cfg: &KafkaJournalConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<KafkaJournal>, KafkaJournalError> {
        let mut config = client_config(cfg, "backflow-collector")?;
        config
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
            .set("message.max.bytes", cfg.message_max_bytes.to_string())
            // Reconnect quickly: an unacknowledged impression is answered 503 meanwhile.
            .set("reconnect.backoff.max.ms", "1000");
        let cell = Arc::new(StateCell {
            state: AtomicU8::new(ProducerState::Connecting as u8),
            metrics: Arc::clone(&metrics),
            brokers: cfg.brokers.join(","),
            topic: cfg.topic.clone(),
            tls: (*cfg.tls).clone(),
            tls_reason: std::sync::Mutex::new(None),
        });
        metrics
            .kafka_journal
            .state
            .get_or_create(&StatusLabels {
                status: ProducerState::Connecting.as_str(),
            })
            .set(1);
        let producer: FutureProducer<Context> = config
            .create_with_context(Context {
                cell: Arc::clone(&cell),
            })
            .map_err(
                |e| match kafka_tls::file_refused(&e, &cfg.tls, "journal.kafka.tls") {
                    Some(message) => KafkaJournalError::Tls(message),
                    None => KafkaJournalError::Producer(e),
                },
            )?;
        let fallback = Fallback::open(cfg.fallback_dir.clone()).await?;
        metrics
            .kafka_journal
            .fallback_pending
            .set(i64::try_from(fallback.pending).unwrap_or(i64::MAX));
        if fallback.pending > 0 {
            warn!(records = fallback.pending, dir = %cfg.fallback_dir.display(), "kafka journal: fallback records from an earlier run wait for the broker");
        }
        Ok(Arc::new(KafkaJournal {
            producer,
            cfg: cfg.clone(),
            cell,
            fallback,
            metrics,
            wake: tokio::sync::Notify::new(),
        }))
    }

    pub fn state(&self) -> ProducerState {
        self.cell.get()
    }

    pub fn topic(&self) -> &str {
        &self.cfg.topic
    }

    fn count_error(&self, kind: &'static str) {
        self.metrics
            .kafka_journal
            .errors
            .get_or_create(&StatusLabels { status: kind })
            .inc();
    }

    /// Produces one record and waits for the broker's acknowledgement.
    pub async fn append(&self, key: &str, record: &[u8]) -> Result<(), AppendError> {
        if record.len() > self.cfg.message_max_bytes {
            self.count_error("too_large");
            return Err(AppendError::TooLarge {
                bytes: record.len(),
                limit: self.cfg.message_max_bytes,
            });
        }
        let state = self.state();
        if state != ProducerState::Ready {
            // Fail fast: waiting `message_timeout` per hit would pile up requests for nothing.
            self.count_error(state.as_str());
            return Err(AppendError::Unavailable(format!(
                "kafka journal: {}",
                state.as_str()
            )));
        }
        self.produce(key, record, false).await
    }

    /// Produces one record; `replay` marks a record sent from the fallback file with the
    /// [`REPLAY_HEADER`] (the consumer drops such a record when its event id already landed).
    async fn produce(&self, key: &str, record: &[u8], replay: bool) -> Result<(), AppendError> {
        let mut message = FutureRecord::to(&self.cfg.topic).key(key).payload(record);
        if replay {
            message = message.headers(OwnedHeaders::new().insert(Header {
                key: REPLAY_HEADER,
                value: Some("1"),
            }));
        }
        let sent = self.producer.send_result(message);
        let outcome = match sent {
            Err((e, _)) => Err(e),
            Ok(delivery) => match delivery.await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err((e, _))) => Err(e),
                Err(_canceled) => Err(KafkaError::Canceled),
            },
        };
        let e = match outcome {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let (kind, state) = classify(&e);
        self.count_error(kind);
        if let Some(state) = state {
            self.cell.set(state, &e.to_string());
            self.wake.notify_one();
        }
        if kind == "too_large" {
            return Err(AppendError::TooLarge {
                bytes: record.len(),
                limit: self.cfg.message_max_bytes,
            });
        }
        Err(AppendError::Unavailable(format!(
            "kafka journal: {kind}: {e}"
        )))
    }

    /// Keeps a click the broker did not take: appended to the fallback file and fsync'd.
    pub async fn write_fallback(&self, record: Bytes) -> std::io::Result<()> {
        self.fallback.append(record).await?;
        self.metrics.kafka_journal.fallback_records.inc();
        self.metrics.kafka_journal.fallback_pending.inc();
        self.wake.notify_one();
        Ok(())
    }

    /// Keeps a record over the size limit in `rejected.ndjson` (never replayed).
    pub async fn write_rejected(&self, record: Bytes) -> std::io::Result<()> {
        self.fallback.append_rejected(record).await
    }

    /// Probes the broker and topic (metadata request) and sets the state.
    async fn probe(self: &Arc<Self>) {
        let this = Arc::clone(self);
        let timeout = self.cfg.message_timeout.min(Duration::from_secs(5));
        let probed = tokio::task::spawn_blocking(move || {
            let md = this
                .producer
                .client()
                .fetch_metadata(Some(&this.cfg.topic), timeout)?;
            let topic = md.topics().iter().find(|t| t.name() == this.cfg.topic);
            Ok::<_, KafkaError>(match topic {
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
        .await;
        let (state, why) = match probed {
            Ok(Ok(None)) => (ProducerState::Ready, String::new()),
            Ok(Ok(Some(code))) => {
                let e = KafkaError::MetadataFetch(code);
                let state = classify(&e).1.unwrap_or(ProducerState::BrokerDown);
                let why = match state {
                    ProducerState::TopicMissing => format!(
                        "topic `{}` does not exist; create it (the collector never creates topics)",
                        self.cfg.topic
                    ),
                    _ => e.to_string(),
                };
                (state, why)
            }
            Ok(Err(e)) => (
                classify(&e).1.unwrap_or(ProducerState::BrokerDown),
                e.to_string(),
            ),
            Err(e) => (ProducerState::BrokerDown, e.to_string()),
        };
        // A broker that "does not answer" after a refused handshake refused it again.
        if let (ProducerState::BrokerDown, Some(reason)) = (state, self.cell.tls_reason()) {
            self.cell.tls_refused(&reason);
            return;
        }
        self.cell.set(state, &why);
    }

    /// Replays the fallback file while the broker acknowledges; stops at the first failure.
    async fn replay(&self) {
        let files = match self.fallback.take_for_replay().await {
            Ok(files) => files,
            Err(e) => {
                error!(error = %e, dir = %self.cfg.fallback_dir.display(), "kafka journal: cannot read the fallback files");
                return;
            }
        };
        for file in files {
            let lines = match tokio::fs::read(&file).await {
                Ok(bytes) => bytes,
                Err(e) => {
                    error!(error = %e, file = %file.display(), "kafka journal: cannot read a fallback file");
                    return;
                }
            };
            let lines: Vec<&[u8]> = lines
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .collect();
            let mut done = 0;
            for line in &lines {
                let key = serde_json::from_slice::<EventKey>(line)
                    .map(|k| k.event_id)
                    .unwrap_or_default();
                if key.is_empty() {
                    // A torn last line of a crashed write: the click was never fsync'd.
                    warn!(file = %file.display(), bytes = line.len(), "kafka journal: unreadable fallback line skipped");
                } else if let Err(e) = self.produce(&key, line, true).await {
                    warn!(error = %e, file = %file.display(), replayed = done, left = lines.len() - done, "kafka journal: fallback replay stopped; retried when the broker is back");
                    if let Err(e) = Fallback::keep_from(&file, &lines[done..]).await {
                        error!(error = %e, file = %file.display(), "kafka journal: cannot shorten a fallback file; its records will be replayed again");
                    }
                    return;
                } else {
                    self.metrics.kafka_journal.fallback_replayed.inc();
                }
                self.metrics.kafka_journal.fallback_pending.dec();
                done += 1;
            }
            // Crash tests: every record of the file acknowledged, the file not removed yet.
            crate::pipeline::failpoint::failpoint("kafka_fallback_replayed");
            if let Err(e) = tokio::fs::remove_file(&file).await {
                error!(error = %e, file = %file.display(), "kafka journal: cannot remove a replayed fallback file; its records will be replayed again");
                return;
            }
            info!(records = done, file = %file.display(), "kafka journal: fallback file replayed");
        }
    }

    /// Probes the broker (every second while it is not ready or records wait for replay,
    /// every 5 s otherwise) and replays the fallback file when it is ready, until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            self.probe().await;
            let pending = self.metrics.kafka_journal.fallback_pending.get() > 0;
            if self.state() == ProducerState::Ready && pending {
                self.replay().await;
            }
            let pause = if self.state() == ProducerState::Ready
                && self.metrics.kafka_journal.fallback_pending.get() == 0
            {
                Duration::from_secs(5)
            } else {
                Duration::from_secs(1)
            };
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = self.wake.notified() => {
                    // A burst of failures wakes once; give the broker a moment.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                () = stop.cancelled() => break,
            }
        }
        let producer = self.producer.clone();
        let timeout = self.cfg.message_timeout;
        // Every answered hit is already acknowledged; flushing only ends in-flight sends.
        let _ = tokio::task::spawn_blocking(move || producer.flush(timeout)).await;
    }
}

#[derive(serde::Deserialize)]
struct EventKey {
    event_id: String,
}

/// `{dir}/pending.ndjson` (appended by the endpoints) and `{dir}/replaying-*.ndjson` (taken by
/// the replay; renamed under the lock, so no writer ever has them open).
struct Fallback {
    dir: PathBuf,
    lock: tokio::sync::Mutex<()>,
    /// Records found at open.
    pending: u64,
}

const PENDING: &str = "pending.ndjson";

impl Fallback {
    async fn open(dir: PathBuf) -> Result<Fallback, KafkaJournalError> {
        let err = |source| KafkaJournalError::Fallback {
            path: dir.display().to_string(),
            source,
        };
        let at = dir.clone();
        let pending = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
            std::fs::create_dir_all(&at)?;
            let mut n = 0u64;
            for path in replay_files(&at)?
                .into_iter()
                .chain(Some(at.join(PENDING)).filter(|p| p.exists()))
            {
                let bytes = std::fs::read(path)?;
                n += bytes
                    .split(|b| *b == b'\n')
                    .filter(|l| !l.is_empty())
                    .count() as u64;
            }
            Ok(n)
        })
        .await
        .map_err(|e| err(std::io::Error::other(e)))?
        .map_err(err)?;
        Ok(Fallback {
            dir,
            lock: tokio::sync::Mutex::new(()),
            pending,
        })
    }

    async fn append(&self, record: Bytes) -> std::io::Result<()> {
        let _guard = self.lock.lock().await;
        append_line(self.dir.join(PENDING), record).await
    }

    async fn append_rejected(&self, record: Bytes) -> std::io::Result<()> {
        let _guard = self.lock.lock().await;
        append_line(self.dir.join("rejected.ndjson"), record).await
    }

    /// Renames the pending file for replay; returns every file to replay, oldest first.
    async fn take_for_replay(&self) -> std::io::Result<Vec<PathBuf>> {
        let _guard = self.lock.lock().await;
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            let pending = dir.join(PENDING);
            if pending.exists() {
                let name = format!("replaying-{}.ndjson", uuid::Uuid::now_v7().simple());
                std::fs::rename(&pending, dir.join(name))?;
                sync_dir(&dir)?;
            }
            replay_files(&dir)
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// Rewrites `file` with only `lines` (the records not replayed yet), atomically.
    async fn keep_from(file: &Path, lines: &[&[u8]]) -> std::io::Result<()> {
        let mut body = Vec::new();
        for line in lines {
            body.extend_from_slice(line);
            body.push(b'\n');
        }
        let file = file.to_path_buf();
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let tmp = file.with_extension("tmp");
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &file)?;
            file.parent().map_or(Ok(()), sync_dir)
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

/// `replaying-*.ndjson` in name order (UUIDv7 names: oldest first).
fn replay_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("replaying-") && n.ends_with(".ndjson"))
        })
        .collect();
    files.sort();
    Ok(files)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Appends `record` and a newline to `path` and fsyncs it (and the directory on creation).
async fn append_line(path: PathBuf, record: Bytes) -> std::io::Result<()> {
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let created = !path.exists();
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let mut line = record.to_vec();
        line.push(b'\n');
        file.write_all(&line)?;
        file.sync_data()?;
        if created {
            path.parent().map_or(Ok(()), sync_dir)?;
        }
        Ok(())
    })
    .await
    .map_err(std::io::Error::other)?
}
