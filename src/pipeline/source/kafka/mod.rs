//! Kafka topics as a pipeline source: a consumer group reads, the catalog decides.
//!
//! A batch's positions are the offset ranges `[from, to)` it took from each partition, plus
//! `next`: where every partition the pipeline has ever read continues after this batch. The
//! catalog is the truth, the group's committed offsets follow it:
//!
//! * planning reads from the group's position, skipping any message below the catalog's `next`
//!   (the group's commit lags when the process died between the catalog commit and the offset
//!   commit) — so nothing already in the lake is read into a new batch;
//! * an open batch is replayed by assigning its partitions at `from` without joining the group
//!   (no rebalance, no commit) and taking exactly the recorded ranges back, in the same order;
//! * the group's offsets are committed (`next`, for the partitions this member holds) only after
//!   the catalog commit.
//!
//! Kafka delivers at least once; the lake gets every message once. Records are ordered by
//! (topic, partition, offset) before decoding, so a replay encodes byte-identical files.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::{FutureExt, StreamExt};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

mod client;
mod decode;
mod replay;
mod session;

use client::*;
pub use decode::decode;
pub use replay::fetch;
pub use session::Session;
use session::*;

use super::super::PipelineError;
use super::super::frame::{Quarantine, QuarantinedRow, TextFrameBuilder};
use super::super::kafka_tls;
use super::super::quota::MeterPlan;
use super::json_object::ObjectDecoder;
use crate::collect::decode as hit_decode;
use crate::collect::registry::MediaRegistry;
use crate::config::model::{KafkaFormat, KafkaSource, KafkaTopics, StartFrom};
use crate::enrich::Enricher;
use crate::telemetry::{Metrics, SourceLabels};

/// One message as read.
#[derive(Debug, Clone)]
pub struct KafkaRecord {
    /// Shared by every record of the topic.
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    /// Kept only when the source has a `key_column`.
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    /// Kept only when the source has a `headers_column` (librdkafka parses headers on demand).
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// What one batch took from one partition: offsets `[from, to)`, `records` messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRange {
    pub topic: String,
    pub partition: i32,
    pub from: i64,
    pub to: i64,
    pub records: u64,
}

/// Where a partition continues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// A Kafka batch's positions, as recorded in its intent and manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaPositions {
    pub ranges: Vec<PartitionRange>,
    /// Every partition's next offset after this batch (cumulative over the pipeline's batches).
    pub next: Vec<PartitionOffset>,
    /// The quota decisions of a metered batch (the daemon-wired journal pipeline of
    /// `journal.kind: kafka`); staging positions are indexes into the batch's records in
    /// (topic, partition, offset) order, which a replay reads back identically.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<MeterPlan>,
}

type Offsets = BTreeMap<(String, i32), i64>;

impl KafkaPositions {
    /// `next` as a map.
    pub fn next_offsets(&self) -> Offsets {
        self.next
            .iter()
            .map(|p| ((p.topic.clone(), p.partition), p.offset))
            .collect()
    }
}

/// Fits a planned batch to the catalog just before its intent is recorded: with several
/// members on one catalog (processes of one group), another member may have committed some of
/// these offsets since this one planned (a partition moved between them while the group's
/// offsets lagged the catalog). Messages below the catalog's `next` are dropped, each range
/// starts at the catalog's `next` (when it is inside the range), and `next` becomes the
/// catalog's, advanced by this batch's ranges. `None` when nothing is left.
pub fn fit(
    positions: KafkaPositions,
    mut records: Vec<KafkaRecord>,
    catalog_next: &Offsets,
) -> (Option<KafkaPositions>, Vec<KafkaRecord>, u64) {
    let before = records.len();
    // The catalog's next offset for each range's partition; a record is kept at or above it.
    let floors: Vec<Option<i64>> = positions
        .ranges
        .iter()
        .map(|r| catalog_next.get(&(r.topic.clone(), r.partition)).copied())
        .collect();
    let mut kept = vec![0u64; positions.ranges.len()];
    let mut last = 0usize;
    records.retain(|r| {
        let same =
            |range: &PartitionRange| range.partition == r.partition && *range.topic == *r.topic;
        if !positions.ranges.get(last).is_some_and(same) {
            match positions.ranges.iter().position(same) {
                Some(index) => last = index,
                // In no range (never planned so): counted nowhere.
                None => {
                    return catalog_next
                        .get(&(r.topic.to_string(), r.partition))
                        .is_none_or(|next| r.offset >= *next);
                }
            }
        }
        let keep = floors[last].is_none_or(|next| r.offset >= next);
        if keep {
            kept[last] += 1;
        }
        keep
    });
    let dropped = (before - records.len()) as u64;
    let mut next = catalog_next.clone();
    let mut ranges = Vec::with_capacity(positions.ranges.len());
    for (mut range, kept) in positions.ranges.into_iter().zip(kept) {
        let key = (range.topic.clone(), range.partition);
        if kept == 0 {
            continue;
        }
        if let Some(at) = catalog_next.get(&key) {
            range.from = range.from.max(*at);
        }
        range.records = kept;
        next.insert(key, range.to);
        ranges.push(range);
    }
    if ranges.is_empty() {
        return (None, Vec::new(), dropped);
    }
    let next = next
        .into_iter()
        .map(|((topic, partition), offset)| PartitionOffset {
            topic,
            partition,
            offset,
        })
        .collect();
    (
        Some(KafkaPositions {
            ranges,
            next,
            quota: None,
        }),
        records,
        dropped,
    )
}

/// Logs a replayed or planned batch's reach.
pub fn describe(positions: &KafkaPositions) -> String {
    positions
        .ranges
        .iter()
        .map(|r| format!("{}/{}[{},{})", r.topic, r.partition, r.from, r.to))
        .collect::<Vec<_>>()
        .join(" ")
}
