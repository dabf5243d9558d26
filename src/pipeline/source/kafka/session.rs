//! A run's group member: planning batches from the group's assignment, committing the
//! group's offsets after the catalog's.

use super::*;

/// Copies what decoding will read out of a message (`topic` is its topic's shared name).
pub(super) fn record_of(m: &impl Message, topic: &Arc<str>, cfg: &KafkaSource) -> KafkaRecord {
    KafkaRecord {
        topic: Arc::clone(topic),
        partition: m.partition(),
        offset: m.offset(),
        key: cfg.key_column.as_ref().and(m.key()).map(<[u8]>::to_vec),
        payload: m.payload().map(<[u8]>::to_vec),
        // Headers are copied only when the pipeline keeps them or, for the daemon-wired
        // journal pipeline, to see the fallback-replay mark (`quota::REPLAY_HEADER`).
        headers: match (cfg.headers_column.is_some() || cfg.journal)
            .then(|| m.headers())
            .flatten()
        {
            Some(h) => h
                .iter()
                .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                .collect(),
            None => Vec::new(),
        },
    }
}

/// Topic names shared by the records of a batch (a handful of topics, many messages).
#[derive(Default)]
pub(super) struct Topics(Vec<Arc<str>>);

impl Topics {
    pub(super) fn get(&mut self, name: &str) -> Arc<str> {
        if let Some(topic) = self.0.iter().find(|t| t.as_ref() == name) {
            return Arc::clone(topic);
        }
        let topic: Arc<str> = Arc::from(name);
        self.0.push(Arc::clone(&topic));
        topic
    }
}

pub(super) fn sort_records(records: &mut [KafkaRecord]) {
    // (topic, partition, offset) is unique within a batch: an unstable sort gives one order.
    records.sort_unstable_by(|a, b| {
        let topic = if Arc::ptr_eq(&a.topic, &b.topic) {
            std::cmp::Ordering::Equal
        } else {
            a.topic.cmp(&b.topic)
        };
        topic.then((a.partition, a.offset).cmp(&(b.partition, b.offset)))
    });
}

/// What a batch reads from one partition while planning.
pub(super) struct PartitionRead {
    topic: Arc<str>,
    partition: i32,
    /// Where the partition continues: the catalog's view, then after the last message taken.
    next: Option<i64>,
    range: Option<PartitionRange>,
    /// The messages taken, in offset order (each is above the one before).
    records: Vec<KafkaRecord>,
}

/// A run's group member: subscribed once, read batch after batch.
pub struct Session {
    /// `None` once handed to the closing thread ([`Session::close`], or dropping the session).
    consumer: Option<Arc<SourceConsumer>>,
    cfg: KafkaSource,
    pipeline: String,
    metrics: Arc<Metrics>,
    /// Where each partition continues (the catalog's view), loaded on the first plan.
    next: Option<Offsets>,
    /// The group's offsets are behind the catalog: commit `next` at the next chance.
    commit_pending: bool,
    /// The offsets of the last commit sent (checked against the group's at the end of a run).
    commit_sent: Option<TopicPartitionList>,
    /// A message or partition end has been seen: the group has assigned partitions.
    joined: bool,
    /// The last client error with no message or partition end after it (kept across batches:
    /// librdkafka reports a lost broker once).
    error_since_progress: Option<String>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("kafka::Session")
            .field("pipeline", &self.pipeline)
            .field("group_id", &self.cfg.group_id)
            .finish()
    }
}

impl Session {
    /// Creates the consumer and subscribes (the group is joined on the first read).
    pub fn connect(
        cfg: &KafkaSource,
        pipeline: &str,
        metrics: Arc<Metrics>,
    ) -> Result<Session, PipelineError> {
        let mut config =
            client_config(cfg).inspect_err(|_| failed(&metrics, pipeline, "missing_secret"))?;
        config.set("group.id", &cfg.group_id);
        let consumer = create(&config, cfg, pipeline, &metrics, "creating the consumer")?;
        match &cfg.topics {
            KafkaTopics::Names(names) => {
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                consumer.subscribe(&names)
            }
            KafkaTopics::Pattern(pattern) => consumer.subscribe(&[pattern.as_str()]),
        }
        .map_err(kafka_err("subscribing"))?;
        Ok(Session {
            consumer: Some(Arc::new(consumer)),
            cfg: cfg.clone(),
            pipeline: pipeline.to_string(),
            metrics,
            next: None,
            commit_pending: false,
            commit_sent: None,
            joined: false,
            error_since_progress: None,
        })
    }

    /// Sets the catalog's view of where each partition continues.
    pub fn set_offsets(&mut self, next: Offsets) {
        self.next = Some(next);
    }

    /// Reads the next batch: its positions and records, or `None` when every assigned
    /// partition is drained (or nothing arrived for `idle`).
    pub async fn plan(
        &mut self,
    ) -> Result<Option<(KafkaPositions, Vec<KafkaRecord>)>, PipelineError> {
        let mut next = self.next.clone().unwrap_or_default();
        // Per-message work stays off the maps: partitions read in this batch, the last one first.
        let mut reading: Vec<PartitionRead> = Vec::new();
        let mut last = 0usize;
        let mut taken = 0usize;
        let (mut bytes, mut skipped) = (0usize, 0u64);
        let mut at_end: HashSet<i32> = HashSet::new();
        let mut last_error: Option<String> = None;
        let started = Instant::now();
        // The last message or partition end. The deadlines count from progress, never from
        // the last client error: with the brokers gone librdkafka reports `AllBrokersDown`
        // every ~100 ms, and a wait restarted by each report would never end.
        let mut progress_at = started;
        // One stream for the whole batch (each `recv` would register and drop a waker slot).
        let consumer = Arc::clone(self.consumer()?);
        let mut stream = consumer.stream();
        while taken < self.cfg.max_records_per_batch.get()
            && bytes < self.cfg.max_bytes_per_batch.get()
        {
            // A message already queued is taken without arming a timer.
            let polled = match stream.next().now_or_never() {
                Some(item) => Ok(item),
                None => {
                    let deadline = if self.joined {
                        progress_at + self.cfg.idle
                    } else {
                        started + self.cfg.join_timeout
                    };
                    let wait = deadline.saturating_duration_since(Instant::now());
                    tokio::time::timeout(wait, stream.next()).await
                }
            };
            let message = match polled {
                Err(_) if self.joined => {
                    if let (0, Some(error)) = (taken, &self.error_since_progress) {
                        // Not drained: nothing arrives because the client cannot reach the
                        // brokers. Failing (retryable) keeps the run from reporting success.
                        self.failed("brokers_down");
                        return Err(PipelineError::Kafka(format!(
                            "no message and no partition end for {} ms from {}, and the client reports: {error}{} (brokers down?)",
                            self.cfg.idle.as_millis(),
                            self.cfg.brokers.join(","),
                            self.reason_suffix()
                        )));
                    }
                    break;
                }
                Err(_) => {
                    let assigned = self.assigned()?;
                    if assigned.is_empty() {
                        self.failed("no_assignment");
                        return Err(PipelineError::Kafka(format!(
                            "no partition assigned to group `{}` by {} within {} ms (brokers down, topic missing?); last client error: {}",
                            self.cfg.group_id,
                            self.cfg.brokers.join(","),
                            self.cfg.join_timeout.as_millis(),
                            last_error.as_deref().unwrap_or("none")
                        )));
                    }
                    if let (0, Some(error)) = (taken, &last_error) {
                        // Assigned but never a message nor a partition end: not drained.
                        self.failed("brokers_down");
                        return Err(PipelineError::Kafka(format!(
                            "no message and no partition end for {} ms from {} after joining the group, and the client reports: {error} (brokers down?)",
                            self.cfg.join_timeout.as_millis(),
                            self.cfg.brokers.join(",")
                        )));
                    }
                    warn!(pipeline = %self.pipeline, partitions = assigned.len(), "no message and no partition end within the join timeout");
                    break;
                }
                Ok(None) => {
                    return Err(PipelineError::Kafka(
                        "the consumer's message stream ended".to_string(),
                    ));
                }
                Ok(Some(Err(KafkaError::PartitionEOF(partition)))) => {
                    self.joined = true;
                    self.error_since_progress = None;
                    consumer.context().clear_tls_reason();
                    progress_at = Instant::now();
                    at_end.insert(partition);
                    let assigned = self.assigned()?;
                    if !assigned.is_empty() && assigned.iter().all(|(_, p)| at_end.contains(p)) {
                        break;
                    }
                    continue;
                }
                Ok(Some(Err(e))) if refused(&e) => {
                    self.failed("unauthorized");
                    return Err(refusal(&self.cfg, &e, &self.reason()));
                }
                Ok(Some(Err(e))) => {
                    if let Some(refusal) = tls_refusal(&self.cfg, &e, consumer.context()) {
                        self.failed("tls_failed");
                        return Err(refusal);
                    }
                    // librdkafka retries transient errors itself; these are reports, logged
                    // when they change (a dead broker is reported every ~100 ms).
                    let error = e.to_string();
                    self.metrics
                        .source
                        .kafka_client_errors
                        .get_or_create(&Metrics::labels(&self.pipeline))
                        .inc();
                    if self.error_since_progress.as_deref() != Some(error.as_str()) {
                        let reason = self.reason();
                        warn!(pipeline = %self.pipeline, error = %error, reason = %reason, "kafka client error");
                    }
                    last_error = Some(error.clone());
                    self.error_since_progress = Some(error);
                    continue;
                }
                Ok(Some(Ok(message))) => message,
            };
            self.joined = true;
            if self.error_since_progress.take().is_some() {
                consumer.context().clear_tls_reason();
            }
            progress_at = Instant::now();
            let partition = message.partition();
            if !at_end.is_empty() {
                at_end.remove(&partition);
            }
            let topic = message.topic();
            let same = |r: &PartitionRead| r.partition == partition && *r.topic == *topic;
            if !reading.get(last).is_some_and(same) {
                last = match reading.iter().position(same) {
                    Some(index) => index,
                    None => {
                        let topic: Arc<str> = Arc::from(topic);
                        let from = next.get(&(topic.to_string(), partition)).copied();
                        reading.push(PartitionRead {
                            topic,
                            partition,
                            next: from,
                            range: None,
                            records: Vec::new(),
                        });
                        reading.len() - 1
                    }
                };
            }
            let read = &mut reading[last];
            let offset = message.offset();
            if read.next.is_some_and(|from| offset < from) {
                // Already in the lake: the group's commit lags behind the catalog.
                skipped += 1;
                continue;
            }
            let range = read.range.get_or_insert_with(|| PartitionRange {
                topic: read.topic.to_string(),
                partition,
                from: read.next.unwrap_or(offset),
                to: offset + 1,
                records: 0,
            });
            range.records += 1;
            range.to = offset + 1;
            read.next = Some(offset + 1);
            bytes += message.payload_len();
            read.records
                .push(record_of(&message, &read.topic, &self.cfg));
            taken += 1;
        }
        drop(stream);
        // Records ordered by (topic, partition, offset): the partitions in order, each in the
        // order it was read.
        reading.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        let mut ranges = Vec::with_capacity(reading.len());
        let mut records = Vec::with_capacity(taken);
        for read in reading {
            if let Some(range) = read.range {
                next.insert((range.topic.clone(), range.partition), range.to);
                ranges.push(range);
            }
            records.extend(read.records);
        }
        if skipped > 0 {
            info!(pipeline = %self.pipeline, messages = skipped, "skipped messages already in the lake (group offsets were behind the catalog)");
            self.commit_pending = true;
        }
        if records.is_empty() {
            if self.commit_pending {
                self.commit();
            }
            return Ok(None);
        }
        let positions = KafkaPositions {
            ranges,
            next: next
                .into_iter()
                .map(|((topic, partition), offset)| PartitionOffset {
                    topic,
                    partition,
                    offset,
                })
                .collect(),
            quota: None,
        };
        Ok(Some((positions, records)))
    }

    /// The reason text of the client's last error event (`""` when none).
    fn reason(&self) -> String {
        self.consumer
            .as_ref()
            .and_then(|c| c.context().last_reason())
            .unwrap_or_default()
    }

    /// `: {reason}` of the client's last error event, or nothing.
    fn reason_suffix(&self) -> String {
        match self.reason() {
            r if r.is_empty() => String::new(),
            r => format!(": {r}"),
        }
    }

    /// Counts a failure that stops the run.
    fn failed(&self, kind: &str) {
        failed(&self.metrics, &self.pipeline, kind);
    }

    fn consumer(&self) -> Result<&Arc<SourceConsumer>, PipelineError> {
        self.consumer
            .as_ref()
            .ok_or_else(|| PipelineError::Kafka("the consumer is closed".to_string()))
    }

    /// Closes the consumer (leaving the group) on a thread of its own and waits for it at most
    /// `min(session_timeout, 10 s)`. rdkafka's consumer drop waits for librdkafka's close
    /// without a bound, and that close waits for outstanding offset commits, which with the
    /// coordinator gone did not end within minutes: a run must not hang on it. A close still
    /// running then is logged and left to finish in the background.
    pub async fn close(mut self) {
        let Some(consumer) = self.consumer.take() else {
            return;
        };
        let bound = self
            .cfg
            .session_timeout
            .min(std::time::Duration::from_secs(10));
        let done = close_in_background(consumer, &self.pipeline);
        if tokio::time::timeout(bound, done).await.is_err() {
            self.failed("close_timeout");
            warn!(pipeline = %self.pipeline, timeout_ms = bound.as_millis(), "the kafka consumer did not close in time (brokers down?); left closing in the background");
        }
    }

    fn assigned(&self) -> Result<Vec<(String, i32)>, PipelineError> {
        let list = self
            .consumer()?
            .assignment()
            .map_err(kafka_err("reading the assignment"))?;
        Ok(list
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect())
    }

    /// After the catalog committed a batch: remember its `next` and commit it to the group.
    pub fn committed(&mut self, positions: &KafkaPositions) {
        self.next = Some(positions.next_offsets());
        self.commit_pending = true;
        self.commit();
    }

    /// Sends the commit of `next` for the partitions this member holds, without waiting for
    /// the answer: a synchronous `rd_kafka_commit` waits without a bound (with the coordinator
    /// lost mid-request it never returned). A commit that fails is superseded by the next one
    /// (each carries every partition's `next`), and [`Session::finish`] checks the last; the
    /// catalog, not the group, decides what is read again.
    fn commit(&mut self) {
        let Some(next) = &self.next else {
            return;
        };
        let assigned: HashSet<(String, i32)> = match self.assigned() {
            Ok(a) => a.into_iter().collect(),
            Err(e) => {
                warn!(pipeline = %self.pipeline, error = %e, "kafka offsets not committed");
                return;
            }
        };
        let mut list = TopicPartitionList::new();
        for ((topic, partition), offset) in next {
            if assigned.contains(&(topic.clone(), *partition))
                && let Err(e) =
                    list.add_partition_offset(topic, *partition, Offset::Offset(*offset))
            {
                warn!(pipeline = %self.pipeline, error = %e, "kafka offsets not committed");
                return;
            }
        }
        if list.count() == 0 {
            // Not in the group yet (a replay before the first read): commit after the next plan.
            return;
        }
        let Ok(consumer) = self.consumer() else {
            return;
        };
        match consumer.commit(&list, CommitMode::Async) {
            Ok(()) => {
                self.commit_pending = false;
                tracing::debug!(pipeline = %self.pipeline, partitions = list.count(), "kafka offset commit sent");
                self.commit_sent = Some(list);
            }
            Err(e) => {
                warn!(pipeline = %self.pipeline, error = %e, "kafka offsets not committed; retried after the next batch")
            }
        }
    }

    /// At the end of a successful run: sends an owed commit, then reads the group's offsets
    /// back until they hold the last commit sent, at most the session timeout (each read is
    /// bounded too). A commit still missing then is logged and counted; the next run skips
    /// what the lake already holds.
    pub async fn finish(&mut self) {
        if self.commit_pending {
            self.commit();
        }
        let Some(sent) = self.commit_sent.clone() else {
            return;
        };
        let deadline = Instant::now() + self.cfg.session_timeout;
        let mut last_error = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let Ok(consumer) = self.consumer().map(Arc::clone) else {
                return;
            };
            let query = sent.clone();
            let read = left.min(std::time::Duration::from_secs(5));
            let reader = Arc::clone(&consumer);
            let answer = tokio::task::spawn_blocking(move || {
                reader.committed_offsets(query, rdkafka::util::Timeout::After(read))
            })
            .await;
            match answer {
                Ok(Ok(group)) if holds(&group, &sent) => {
                    info!(pipeline = %self.pipeline, group = %self.cfg.group_id, partitions = sent.count(), "kafka offsets committed");
                    return;
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => last_error = Some(e.to_string()),
                Err(e) => last_error = Some(e.to_string()),
            }
            // Not there yet (or lost): send it again, look again shortly.
            if let Err(e) = consumer.commit(&sent, CommitMode::Async) {
                last_error = Some(e.to_string());
            }
            tokio::time::sleep(std::time::Duration::from_millis(200).min(left)).await;
        }
        self.metrics
            .source
            .kafka_commit_failures
            .get_or_create(&Metrics::labels(&self.pipeline))
            .inc();
        warn!(pipeline = %self.pipeline, group = %self.cfg.group_id, timeout_ms = self.cfg.session_timeout.as_millis(), last_error = last_error.as_deref().unwrap_or("none"), "kafka offsets not confirmed by the end of the run; the next run skips what the lake already holds");
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Never the (unbounded) close on the caller's thread: see `Session::close`.
        if let Some(consumer) = self.consumer.take() {
            drop(close_in_background(consumer, &self.pipeline));
        }
    }
}

/// Drops (closes) `consumer` on a new thread; the receiver learns when it is done. If the
/// thread cannot be started, the consumer is closed on this one.
pub(super) fn close_in_background(
    consumer: Arc<SourceConsumer>,
    pipeline: &str,
) -> tokio::sync::oneshot::Receiver<()> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let pipeline = pipeline.to_string();
    let spawned = std::thread::Builder::new()
        .name("kafka-close".to_string())
        .spawn(move || {
            let started = Instant::now();
            drop(consumer);
            let took = started.elapsed();
            if took > std::time::Duration::from_secs(10) {
                warn!(pipeline = %pipeline, took_ms = took.as_millis(), "closing the kafka consumer took long");
            }
            let _ = tx.send(());
        });
    if let Err(e) = spawned {
        warn!(error = %e, "no thread to close the kafka consumer on; closing it here");
    }
    rx
}

/// Whether the group's offsets `group` are at or past every offset of `sent`.
pub(super) fn holds(group: &TopicPartitionList, sent: &TopicPartitionList) -> bool {
    sent.elements().iter().all(|want| {
        group
            .find_partition(want.topic(), want.partition())
            .is_some_and(|got| match (got.offset(), want.offset()) {
                (Offset::Offset(got), Offset::Offset(want)) => got >= want,
                _ => false,
            })
    })
}

pub(super) fn failed(metrics: &Metrics, pipeline: &str, kind: &str) {
    metrics
        .source
        .kafka_failures
        .get_or_create(&SourceLabels {
            pipeline: pipeline.to_string(),
            kind: kind.to_string(),
        })
        .inc();
}
