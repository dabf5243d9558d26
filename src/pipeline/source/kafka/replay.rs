//! Reading an open batch's ranges back exactly (a replay), outside the group.

use super::*;

/// Reads exactly the ranges of a planned batch again (a replay), outside the group.
pub async fn fetch(
    cfg: &KafkaSource,
    positions: &KafkaPositions,
    metrics: &Arc<Metrics>,
    pipeline: &str,
) -> Result<Vec<KafkaRecord>, PipelineError> {
    if positions.ranges.is_empty() {
        // A batch that only releases staged records.
        return Ok(Vec::new());
    }
    // librdkafka wants a group for `assign`; assigning (unlike subscribing) never joins it, and
    // nothing is committed from here.
    let mut config = client_config(cfg)?;
    config.set("group.id", &cfg.group_id);
    let consumer = create(
        &config,
        cfg,
        pipeline,
        metrics,
        "creating the replay consumer",
    )?;
    let mut list = TopicPartitionList::new();
    let mut wanted: BTreeMap<(String, i32), &PartitionRange> = BTreeMap::new();
    for range in &positions.ranges {
        list.add_partition_offset(&range.topic, range.partition, Offset::Offset(range.from))
            .map_err(kafka_err("assigning the batch's partitions"))?;
        wanted.insert((range.topic.clone(), range.partition), range);
    }
    consumer
        .assign(&list)
        .map_err(kafka_err("assigning the batch's partitions"))?;
    let mut pending: HashSet<(String, i32)> = wanted.keys().cloned().collect();
    let mut records = Vec::new();
    let mut topics = Topics::default();
    let deadline = Instant::now() + cfg.join_timeout;
    let mut last_error: Option<String> = None;
    while !pending.is_empty() {
        let wait = deadline.saturating_duration_since(Instant::now());
        let message = match tokio::time::timeout(wait, consumer.recv()).await {
            Err(_) => {
                failed(metrics, pipeline, "replay_incomplete");
                return Err(PipelineError::Kafka(format!(
                    "replaying a batch: {} partition(s) did not deliver their recorded offsets from {} within {} ms (deleted by retention, or brokers down); last client error: {}",
                    pending.len(),
                    cfg.brokers.join(","),
                    cfg.join_timeout.as_millis(),
                    last_error.as_deref().unwrap_or("none")
                )));
            }
            Ok(Err(KafkaError::PartitionEOF(_))) => continue,
            Ok(Err(e)) if refused(&e) => {
                failed(metrics, pipeline, "unauthorized");
                let reason = consumer.context().last_reason().unwrap_or_default();
                return Err(refusal(cfg, &e, &reason));
            }
            Ok(Err(e)) => {
                if let Some(refusal) = tls_refusal(cfg, &e, consumer.context()) {
                    failed(metrics, pipeline, "tls_failed");
                    return Err(refusal);
                }
                let error = e.to_string();
                metrics
                    .source
                    .kafka_client_errors
                    .get_or_create(&Metrics::labels(pipeline))
                    .inc();
                if last_error.as_deref() != Some(error.as_str()) {
                    warn!(pipeline, error = %error, "kafka client error during a replay");
                }
                last_error = Some(error);
                continue;
            }
            Ok(Ok(message)) => message,
        };
        let key = (message.topic().to_string(), message.partition());
        let Some(range) = wanted.get(&key) else {
            continue;
        };
        let offset = message.offset();
        if offset >= range.from && offset < range.to && pending.contains(&key) {
            records.push(record_of(&message, &topics.get(&key.0), cfg));
        }
        if offset >= range.to - 1 {
            pending.remove(&key);
        }
    }
    let got = records.len() as u64;
    let expected: u64 = positions.ranges.iter().map(|r| r.records).sum();
    if got != expected {
        return Err(PipelineError::Positions(format!(
            "kafka offset ranges of the batch hold {got} messages now, {expected} when planned"
        )));
    }
    sort_records(&mut records);
    Ok(records)
}
