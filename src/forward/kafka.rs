//! The forwarder's reader in `journal.kind: kafka`: every partition of the journal topic,
//! turned into forward jobs.
//!
//! The catalog is the truth (`catalog::forward_kafka`): per partition, the first offset not yet
//! turned into jobs, moved in the transaction that inserts the jobs. The reader assigns itself
//! every partition at those offsets — no group membership, so no rebalance: a restarted daemon
//! goes on at once, where a group would hold a dead member's partitions until its session ran
//! out. Daemons sharing a catalog each read the whole topic and the transaction keeps the
//! jobs of a hit once (the second to commit a range finds it taken). The group
//! `forward.kafka_group` only receives the offsets, for lag monitoring. A crash anywhere
//! re-reads at most what was not committed: no hit is forwarded twice by the reader, none is
//! skipped. Replayed fallback records (`backflow-replay`) of a click already taken are dropped
//! too.
//!
//! On its first start the reader begins at the topic's end (hits from before are not
//! forwarded, as with the local journal); a partition added later starts at its beginning.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::jobs::{JobMaker, count_enqueued};
use super::{blocking, now_ms};
use crate::catalog::{Catalog, FORWARD_REPLAYS, ForwardKafkaRecord, REPLAYED_RETENTION_DAYS};
use crate::collect::appender::client_config;
use crate::collect::registry::MediaRegistry;
use crate::config::daemon::KafkaJournalConfig;
use crate::enrich::Enricher;
use crate::pipeline::kafka_tls;
use crate::pipeline::quota::REPLAY_HEADER;
use crate::telemetry::{Metrics, StatusLabels};

/// Messages per batch (one catalog transaction).
const BATCH_MESSAGES: usize = 1000;
/// How long a batch waits for more messages once it has one.
const LINGER: Duration = Duration::from_millis(100);
/// Metadata and offset lookups.
pub(super) const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Lookups at the daemon's start (which they delay).
pub(super) const FIRST_LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the topic's partitions are counted (a partition added is then read too).
const PARTITIONS_EVERY: Duration = Duration::from_secs(60);
/// Longest wait between two attempts after an error.
const MAX_RETRY: Duration = Duration::from_secs(10);
/// How often replayed event ids older than the retention are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// The consumer's context: counts and logs client errors.
pub(super) struct ForwardContext {
    topic: String,
    brokers: String,
    tls: crate::config::model::KafkaTls,
    metrics: Arc<Metrics>,
    last_error: Mutex<Option<String>>,
}

impl ClientContext for ForwardContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.metrics.forward.kafka_client_errors.inc();
        let mut last = self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Logged when it changes: a broker down repeats its error every few hundred ms.
        if last.as_deref() != Some(reason) {
            if kafka_tls::handshake_refused(error.rdkafka_error_code(), reason) {
                let message =
                    kafka_tls::refusal(&self.brokers, &self.tls, "journal.kafka.tls", reason);
                error!(topic = %self.topic, "forwarder: {message}; retrying");
            } else {
                warn!(topic = %self.topic, %error, reason, "forwarder: kafka client error; retrying");
            }
            *last = Some(reason.to_string());
        }
    }
}

impl ConsumerContext for ForwardContext {}

pub(super) type ForwardConsumer = StreamConsumer<ForwardContext>;

/// The Kafka journal reader.
pub(super) struct KafkaReader {
    cfg: KafkaJournalConfig,
    group: String,
    catalog: Arc<Catalog>,
    jobs: JobMaker,
    metrics: Arc<Metrics>,
    notify: Arc<Notify>,
    /// Partitions of the topic assigned.
    partitions: usize,
}

/// One message, copied out of the consumer.
struct Taken {
    partition: i32,
    offset: i64,
    payload: Vec<u8>,
    replay: bool,
}

fn taken(m: &BorrowedMessage<'_>) -> Taken {
    let replay = m
        .headers()
        .is_some_and(|h| h.iter().any(|h| h.key == REPLAY_HEADER));
    Taken {
        partition: m.partition(),
        offset: m.offset(),
        payload: m.payload().unwrap_or_default().to_vec(),
        replay,
    }
}

/// The event id of a hit record.
fn event_id_of(record: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct EventId {
        event_id: String,
    }
    serde_json::from_slice::<EventId>(record)
        .ok()
        .map(|e| e.event_id)
}

impl KafkaReader {
    pub(super) fn new(
        cfg: KafkaJournalConfig,
        group: String,
        catalog: Arc<Catalog>,
        decoding: (Arc<MediaRegistry>, Arc<Enricher>),
        metrics: Arc<Metrics>,
        notify: Arc<Notify>,
    ) -> KafkaReader {
        KafkaReader {
            jobs: JobMaker::new(Arc::clone(&catalog), decoding),
            cfg,
            group,
            catalog,
            metrics,
            notify,
            partitions: 0,
        }
    }

    /// Reads until `stop`, with `first` or a consumer of its own; a failure to connect is
    /// logged and retried with a growing pause.
    pub(super) async fn run(
        mut self,
        first: Option<Arc<ForwardConsumer>>,
        stop: CancellationToken,
    ) {
        let mut pause = Duration::from_millis(500);
        let mut first = first;
        let consumer = loop {
            if let Some(c) = first.take() {
                break c;
            }
            match self.connect(LOOKUP_TIMEOUT).await {
                Ok(c) => break c,
                Err(e) => {
                    warn!(brokers = %self.cfg.brokers.join(","), topic = %self.cfg.topic, error = %e, "forwarder: cannot start reading the journal topic; retrying");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(MAX_RETRY);
                }
            }
        };
        info!(topic = %self.cfg.topic, partitions = self.partitions, "forwarder: reading the kafka journal topic");
        self.read(&consumer, &stop).await;
        // Closing may wait for the brokers: never on the shutdown path.
        let spawned = std::thread::Builder::new()
            .name("forward-kafka-close".to_string())
            .spawn(move || drop(consumer));
        if let Err(e) = spawned {
            warn!(error = %e, "forwarder: no thread to close the kafka consumer on");
        }
    }

    /// A consumer assigned every partition of the topic at the catalog's offsets (seeded for
    /// partitions read for the first time); lookups wait at most `timeout` each.
    pub(super) async fn connect(
        &mut self,
        timeout: Duration,
    ) -> Result<Arc<ForwardConsumer>, String> {
        let mut config = client_config(&self.cfg, "backflow-forward").map_err(|e| e.to_string())?;
        config
            // Only to commit offsets for lag monitoring: `assign`, unlike `subscribe`, never
            // joins the group.
            .set("group.id", &self.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("allow.auto.create.topics", "false");
        let context = ForwardContext {
            topic: self.cfg.topic.clone(),
            brokers: self.cfg.brokers.join(","),
            tls: (*self.cfg.tls).clone(),
            metrics: Arc::clone(&self.metrics),
            last_error: Mutex::new(None),
        };
        let consumer: ForwardConsumer = config
            .create_with_context(context)
            .map_err(|e| format!("creating the consumer: {e}"))?;
        let consumer = Arc::new(consumer);
        self.assign(&consumer, timeout).await?;
        Ok(consumer)
    }

    /// (Re)assigns every partition at the catalog's offsets.
    async fn assign(
        &mut self,
        consumer: &Arc<ForwardConsumer>,
        timeout: Duration,
    ) -> Result<(), String> {
        let (c, topic, catalog) = (
            Arc::clone(consumer),
            self.cfg.topic.clone(),
            Arc::clone(&self.catalog),
        );
        self.partitions =
            tokio::task::spawn_blocking(move || assign_all(&c, &topic, &catalog, timeout))
                .await
                .map_err(|e| e.to_string())??;
        Ok(())
    }

    /// The number of partitions of the topic now.
    async fn count_partitions(&self, consumer: &Arc<ForwardConsumer>) -> Result<usize, String> {
        let (c, topic) = (Arc::clone(consumer), self.cfg.topic.clone());
        tokio::task::spawn_blocking(move || {
            partitions_of(&c, &topic, LOOKUP_TIMEOUT).map(|p| p.len())
        })
        .await
        .map_err(|e| e.to_string())?
    }

    async fn read(&mut self, consumer: &Arc<ForwardConsumer>, stop: &CancellationToken) {
        let mut pruned: Option<Instant> = None;
        let mut checked = Instant::now();
        loop {
            if pruned.is_none_or(|at| at.elapsed() > PRUNE_EVERY) {
                self.prune().await;
                pruned = Some(Instant::now());
            }
            if checked.elapsed() > PARTITIONS_EVERY {
                checked = Instant::now();
                match self.count_partitions(consumer).await {
                    Ok(n) if n != self.partitions => {
                        info!(topic = %self.cfg.topic, from = self.partitions, to = n, "forwarder: the topic's partitions changed; assigning them all");
                        if let Err(e) = self.assign(consumer, LOOKUP_TIMEOUT).await {
                            warn!(error = %e, "forwarder: reassigning failed; trying again later");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => debug!(error = %e, "forwarder: cannot read the topic's partitions"),
                }
            }
            let first = tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(PARTITIONS_EVERY) => continue,
                m = consumer.recv() => m,
            };
            let mut batch = Vec::new();
            match first {
                Ok(m) => batch.push(taken(&m)),
                Err(e) => {
                    // Also reported through the context; recv errors are not fatal.
                    debug!(error = %e, "forwarder: kafka receive error");
                    continue;
                }
            }
            let deadline = tokio::time::Instant::now() + LINGER;
            while batch.len() < BATCH_MESSAGES {
                match tokio::time::timeout_at(deadline, consumer.recv()).await {
                    Ok(Ok(m)) => batch.push(taken(&m)),
                    Ok(Err(e)) => debug!(error = %e, "forwarder: kafka receive error"),
                    Err(_) => break,
                }
            }
            if !self.take(batch, consumer, stop).await {
                return;
            }
        }
    }

    /// Turns a batch into jobs and commits them with the offsets; retries the catalog until it
    /// succeeds. `false` when stopped meanwhile (the batch is read again on the next start).
    async fn take(
        &mut self,
        mut batch: Vec<Taken>,
        consumer: &ForwardConsumer,
        stop: &CancellationToken,
    ) -> bool {
        batch.sort_by_key(|t| (t.partition, t.offset));
        let records: Vec<ForwardKafkaRecord> = batch
            .iter()
            .map(|t| {
                let jobs = self.jobs.jobs_for(&t.payload).unwrap_or_else(|reason| {
                    warn!(partition = t.partition, offset = t.offset, reason = %reason, "forwarder: hit not forwarded");
                    Vec::new()
                });
                let replayed_event = if t.replay {
                    event_id_of(&t.payload)
                } else {
                    None
                };
                ForwardKafkaRecord {
                    partition: t.partition,
                    offset: t.offset,
                    jobs,
                    replayed_event,
                }
            })
            .collect();
        let records = Arc::new(records);
        let mut pause = Duration::from_millis(200);
        let outcome = loop {
            let (catalog, topic, all) = (
                Arc::clone(&self.catalog),
                self.cfg.topic.clone(),
                Arc::clone(&records),
            );
            match blocking(move || catalog.enqueue_forward_kafka(&topic, &all, now_ms())).await {
                Ok(o) => break o,
                Err(e) => {
                    warn!(error = %e, messages = records.len(), "forwarder: queuing jobs failed; retrying");
                    tokio::select! {
                        () = stop.cancelled() => return false,
                        () = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(MAX_RETRY);
                }
            }
        };
        for (reason, n) in [
            ("already_taken", outcome.already_taken),
            ("replay_duplicate", outcome.replay_duplicates),
        ] {
            if n > 0 {
                self.metrics
                    .forward
                    .kafka_dropped
                    .get_or_create(&StatusLabels { status: reason })
                    .inc_by(n);
            }
        }
        let n = outcome.enqueued.len();
        count_enqueued(&self.metrics, outcome.enqueued);
        if n > 0 {
            debug!(jobs = n, "forwarder: jobs queued");
            self.notify.notify_one();
        }
        // The group's offsets follow the catalog's (for lag monitoring only).
        let mut next: BTreeMap<i32, i64> = BTreeMap::new();
        for t in &batch {
            next.insert(t.partition, t.offset + 1);
        }
        let mut list = TopicPartitionList::new();
        for (partition, offset) in next {
            let _ = list.add_partition_offset(&self.cfg.topic, partition, Offset::Offset(offset));
        }
        if let Err(e) = consumer.commit(&list, CommitMode::Async) {
            debug!(error = %e, "forwarder: group offsets not committed (the catalog decides)");
        }
        true
    }

    async fn prune(&self) {
        let catalog = Arc::clone(&self.catalog);
        let before = (chrono::Utc::now() - chrono::Duration::days(REPLAYED_RETENTION_DAYS))
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        match blocking(move || catalog.prune_replayed(FORWARD_REPLAYS, &before)).await {
            Ok(n) if n > 0 => debug!(ids = n, "forwarder: old replayed event ids pruned"),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "forwarder: pruning replayed event ids failed"),
        }
    }
}

/// The partition ids of `topic`.
fn partitions_of(
    consumer: &ForwardConsumer,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<i32>, String> {
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| format!("reading the topic's metadata: {e}"))?;
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Err(format!("topic `{topic}` not in the metadata"));
    };
    if let Some(e) = t.error() {
        return Err(format!(
            "topic `{topic}`: {} (the collectors' journal topic must exist)",
            rdkafka::types::RDKafkaErrorCode::from(e)
        ));
    }
    Ok(t.partitions().iter().map(|p| p.id()).collect())
}

/// Assigns every partition of `topic` at the catalog's offsets, after giving those without one
/// their start: the partition's end when the forwarder reads the topic for the first time
/// (hits from before are not forwarded), else its beginning (a partition added since).
/// Returns the number of partitions.
fn assign_all(
    consumer: &ForwardConsumer,
    topic: &str,
    catalog: &Catalog,
    timeout: Duration,
) -> Result<usize, String> {
    let partitions = partitions_of(consumer, topic, timeout)?;
    let known = catalog
        .forward_kafka_offsets(topic)
        .map_err(|e| e.to_string())?;
    let first_read = known.is_empty();
    let mut starts = Vec::new();
    for &p in partitions.iter().filter(|p| !known.contains_key(p)) {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, timeout)
            .map_err(|e| format!("reading partition {p}'s offsets: {e}"))?;
        starts.push((p, if first_read { high } else { low }));
    }
    if !starts.is_empty() {
        catalog
            .seed_forward_kafka_offsets(topic, &starts)
            .map_err(|e| e.to_string())?;
        info!(
            topic,
            ?starts,
            first_read,
            "forwarder: partitions read for the first time start here"
        );
    }
    let offsets = catalog
        .forward_kafka_offsets(topic)
        .map_err(|e| e.to_string())?;
    let mut list = TopicPartitionList::new();
    for p in &partitions {
        let at = offsets
            .get(p)
            .map_or(Offset::Beginning, |&n| Offset::Offset(n));
        list.add_partition_offset(topic, *p, at)
            .map_err(|e| e.to_string())?;
    }
    consumer
        .assign(&list)
        .map_err(|e| format!("assigning the partitions: {e}"))?;
    Ok(partitions.len())
}
