//! Hits → forward jobs, for both readers (the local journal's and the Kafka topic's): the
//! activity's third-party URLs for the hit's endpoint, macros filled.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::format::{can_chain, format_of};
use super::macros::{HitValues, fill};
use super::now_ms;
use crate::catalog::{Catalog, CatalogError, NewForwardJob};
use crate::collect::hit::HitRecord;
use crate::collect::link::Endpoint;
use crate::collect::registry::{MediaRegistry, ThirdPartyMode};
use crate::enrich::Enricher;
use crate::telemetry::{ForwardLabels, Metrics};

/// The activities' third-party URLs are re-read at least this often.
const ACTIVITIES_TTL: Duration = Duration::from_secs(5);
/// An unknown activity re-reads them, at most this often.
const UNKNOWN_RELOAD: Duration = Duration::from_millis(200);
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
                || (!self.by_id.contains_key(&activity) && at.elapsed() > UNKNOWN_RELOAD)
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

/// Turns hit records into forward jobs.
pub(super) struct JobMaker {
    catalog: Arc<Catalog>,
    registry: Arc<MediaRegistry>,
    enricher: Arc<Enricher>,
    activities: Activities,
    destinations: Destinations,
}

impl JobMaker {
    pub(super) fn new(
        catalog: Arc<Catalog>,
        (registry, enricher): (Arc<MediaRegistry>, Arc<Enricher>),
    ) -> JobMaker {
        JobMaker {
            catalog,
            registry,
            enricher,
            activities: Activities::default(),
            destinations: Destinations::default(),
        }
    }

    /// The jobs of one hit: one per third-party URL of its activity and endpoint.
    pub(super) fn jobs_for(&mut self, record: &[u8]) -> Result<Vec<NewForwardJob>, String> {
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

/// Counts queued jobs by destination label.
pub(super) fn count_enqueued(metrics: &Metrics, destinations: Vec<String>) {
    for destination in destinations {
        metrics
            .forward
            .enqueued
            .get_or_create(&ForwardLabels { destination })
            .inc();
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
