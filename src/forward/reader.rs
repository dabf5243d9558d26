//! The forwarder's journal consumer: hits → forward jobs, durably, before the cursor moves.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::format::{can_chain, format_of};
use super::macros::{HitValues, fill};
use super::{CONSUMER, ForwardError, blocking, now_ms};
use crate::catalog::{Catalog, CatalogError, NewForwardJob};
use crate::collect::hit::HitRecord;
use crate::collect::link::Endpoint;
use crate::collect::registry::{MediaRegistry, ThirdPartyMode};
use crate::enrich::Enricher;
use crate::journal::{Journal, JournalError, Position};
use crate::telemetry::{ForwardLabels, Metrics};

/// Records per read (and per catalog transaction).
const BATCH_RECORDS: usize = 1000;
/// Payload bytes per read.
const BATCH_BYTES: usize = 4 << 20;
/// Wait when the journal has nothing new.
const IDLE: Duration = Duration::from_millis(200);
/// The activities' third-party URLs are re-read at least this often.
const ACTIVITIES_TTL: Duration = Duration::from_secs(5);
/// Distinct destination hosts with their own metric label; the rest share `other`.
const MAX_DESTINATIONS: usize = 32;

/// The one place the forwarder decodes a hit onto canonical values (`collect::decode`).
fn hit_values(
    record: &[u8],
    registry: &MediaRegistry,
    enricher: &Enricher,
) -> Result<HitValues, String> {
    crate::collect::decode::decode(record, registry, enricher).map(HitValues::from_row)
}

/// The third-party URLs of one activity that the forwarder sends to.
#[derive(Debug, Default)]
struct ActivityUrls {
    impression: Vec<String>,
    /// Click URLs, without those that wrap our link in chained mode (they got the click first).
    click: Vec<String>,
}

/// The activities' forwarding URLs, re-read from the catalog when stale or when an unknown
/// activity shows up.
#[derive(Debug, Default)]
struct Activities {
    by_id: HashMap<i64, ActivityUrls>,
    loaded: Option<Instant>,
}

impl Activities {
    fn urls(
        &mut self,
        catalog: &Catalog,
        registry: &MediaRegistry,
        activity: i64,
        endpoint: Endpoint,
    ) -> Result<&[String], CatalogError> {
        let stale = self.loaded.is_none_or(|at| {
            at.elapsed() > ACTIVITIES_TTL
                || (!self.by_id.contains_key(&activity) && at.elapsed() > IDLE)
        });
        if stale {
            self.by_id = catalog
                .all_activities()?
                .into_iter()
                .map(|a| {
                    let chained = registry
                        .get(&a.channel)
                        .is_some_and(|m| m.third_party == ThirdPartyMode::Chained);
                    let click = a
                        .third_party_click
                        .into_iter()
                        .filter(|u| !(chained && can_chain(u)))
                        .collect();
                    let urls = ActivityUrls {
                        impression: a.third_party_impression,
                        click,
                    };
                    (a.id, urls)
                })
                .collect();
            self.loaded = Some(Instant::now());
        }
        Ok(match self.by_id.get(&activity) {
            Some(urls) if endpoint == Endpoint::Impression => &urls.impression,
            Some(urls) => &urls.click,
            None => &[],
        })
    }
}

/// Metric labels: the host of the configured URL, at most [`MAX_DESTINATIONS`] of them.
#[derive(Debug, Default)]
struct Destinations(HashSet<String>);

impl Destinations {
    fn label(&mut self, url: &str) -> String {
        let host = url::Url::parse(url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
            .unwrap_or_else(|| "invalid".to_string());
        if self.0.contains(&host) {
            host
        } else if self.0.len() < MAX_DESTINATIONS {
            self.0.insert(host.clone());
            host
        } else {
            "other".to_string()
        }
    }
}

pub(super) struct Reader {
    journal: Journal,
    catalog: Arc<Catalog>,
    registry: Arc<MediaRegistry>,
    enricher: Arc<Enricher>,
    metrics: Arc<Metrics>,
    notify: Arc<Notify>,
    activities: Activities,
    destinations: Destinations,
    /// The first position not turned into jobs yet.
    next: u64,
}

impl Reader {
    pub(super) fn new(
        journal: Journal,
        catalog: Arc<Catalog>,
        (registry, enricher): (Arc<MediaRegistry>, Arc<Enricher>),
        metrics: Arc<Metrics>,
        notify: Arc<Notify>,
        next: u64,
    ) -> Reader {
        Reader {
            journal,
            catalog,
            registry,
            enricher,
            metrics,
            notify,
            activities: Activities::default(),
            destinations: Destinations::default(),
            next,
        }
    }

    pub(super) async fn run(mut self, stop: CancellationToken) {
        loop {
            if stop.is_cancelled() {
                return;
            }
            let wait = match self.step().await {
                Ok(true) => continue,
                Ok(false) => IDLE,
                Err(e) => {
                    warn!(error = %e, position = self.next, "forwarder: reading the journal failed; retrying");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Turns the next records into jobs; `false` when the journal had nothing new.
    async fn step(&mut self) -> Result<bool, ForwardError> {
        let records = match self
            .journal
            .read(Position(self.next), BATCH_RECORDS, BATCH_BYTES)
            .await
        {
            Err(JournalError::Deleted { first, .. }) => {
                // Only possible when the cursor was removed (forwarding was off) meanwhile.
                warn!(
                    from = self.next,
                    to = first,
                    "forwarder: hits deleted before they were read are not forwarded"
                );
                self.next = first;
                return Ok(true);
            }
            other => other?,
        };
        let Some(to) = records.last().map(|(last, _)| last.0 + 1) else {
            return Ok(false);
        };
        let mut jobs = Vec::new();
        for (position, record) in &records {
            match self.jobs_for(record) {
                Ok(mut more) => jobs.append(&mut more),
                Err(reason) => {
                    warn!(position = position.0, reason = %reason, "forwarder: hit not forwarded")
                }
            }
        }
        let labels: Vec<String> = jobs.iter().map(|j| j.destination.clone()).collect();
        let n = jobs.len();
        if n > 0 {
            // A range without jobs needs no catalog write: on restart the start is the later
            // of the catalog's progress and the journal cursor (`start_position`).
            let catalog = Arc::clone(&self.catalog);
            blocking(move || catalog.enqueue_forward_jobs(&jobs, to, now_ms())).await?;
        }
        for destination in labels {
            self.metrics
                .forward
                .enqueued
                .get_or_create(&ForwardLabels { destination })
                .inc();
        }
        self.next = to;
        if n > 0 {
            debug!(jobs = n, next = to, "forwarder: jobs queued");
            self.notify.notify_one();
        }
        // The jobs are durable: the journal may now forget these hits (once every other
        // consumer has them too). A failure here only delays retention.
        match self.journal.commit_cursor(CONSUMER, Position(to)).await {
            Ok(()) => match self.journal.retain().await {
                Ok(freed) if freed > 0 => info!(bytes = freed, "journal segments released"),
                Ok(_) => {}
                Err(e) => warn!(error = %e, "journal retention failed"),
            },
            Err(e) => warn!(error = %e, "forwarder: journal cursor not advanced; retention waits"),
        }
        Ok(true)
    }

    /// The jobs of one hit: one per third-party URL of its activity and endpoint.
    fn jobs_for(&mut self, record: &[u8]) -> Result<Vec<NewForwardJob>, String> {
        let hit: HitRecord =
            serde_json::from_slice(record).map_err(|e| format!("not a hit record: {e}"))?;
        let urls = self
            .activities
            .urls(&self.catalog, &self.registry, hit.activity_id, hit.endpoint)
            .map_err(|e| e.to_string())?
            .to_vec();
        if urls.is_empty() {
            return Ok(Vec::new());
        }
        let values = hit_values(record, &self.registry, &self.enricher)?;
        let hit_at_ms = values.received_ms.unwrap_or_else(now_ms);
        let user_agent = values.get("user_agent").map(str::to_string);
        Ok(urls
            .iter()
            .map(|url| NewForwardJob {
                destination: self.destinations.label(url),
                url: fill(url, format_of(url), &values),
                user_agent: user_agent.clone(),
                event_id: hit.event_id.clone(),
                hit_at_ms,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_labels_are_hosts_and_bounded() {
        let mut d = Destinations::default();
        assert_eq!(
            d.label("https://E.cn.Miaozhen.com/r/k=1"),
            "e.cn.miaozhen.com"
        );
        assert_eq!(d.label("nonsense"), "invalid");
        for i in 0..100 {
            d.label(&format!("https://h{i}.example/x"));
        }
        assert_eq!(d.0.len(), MAX_DESTINATIONS);
        assert_eq!(d.label("https://h99.example/x"), "other");
        assert_eq!(d.label("https://e.cn.miaozhen.com/x"), "e.cn.miaozhen.com");
    }
}
