//! The dependency rule of dataset instances: a refresh for period P starts only when its
//! sources are committed up to the end of P.
//!
//! **Watermark.** A pipeline's watermark is the start time of its latest run that read its
//! whole source (no `--from/--to`, no `--max-batches`) and succeeded: such a run ends only when
//! its source has nothing left, so every record that reached the source (a hit fsync'd in the
//! journal, a file dropped, a Kafka message produced) before that instant is committed to the
//! lake. The catalog keeps it per pipeline (`watermarks`). A lake dataset is covered up to the
//! smallest watermark of the pipelines that write it.
//!
//! The watermark is about *arrival*: an event of P that arrives after P's instance ran (a
//! media callback a day late) is picked up by rerunning or backfilling P with `--force`.
//! A source no pipeline of this daemon writes (an external loader) has no watermark and is
//! not waited for; the wait says so in the log.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::SecondsFormat;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::catalog::{Catalog, CatalogError};
use crate::config::model::{DatasetBuild, DatasetJob, WaitForSources};

use super::Period;

/// The lake datasets a dataset job reads.
pub fn sources(job: &DatasetJob) -> Vec<String> {
    match &job.build {
        DatasetBuild::Behavior(b) => {
            let mut out: Vec<String> = b.behavior_events.iter().cloned().collect();
            if let Some(m) = &b.ad_events {
                out.push(m.dataset.clone());
            }
            out
        }
        DatasetBuild::UserTags(b) => vec![b.source.clone()],
    }
}

/// How a wait ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waited {
    Satisfied,
    /// The reason shown to users.
    TimedOut(String),
    Cancelled,
}

/// What is still missing for `period`, for people; `None` when every source is covered.
/// `producers` maps a lake dataset to the pipelines that write it.
pub fn missing(
    catalog: &Catalog,
    producers: &BTreeMap<String, Vec<String>>,
    sources: &[String],
    period: &Period,
) -> Result<Option<String>, CatalogError> {
    let end = period
        .end
        .to_utc()
        .to_rfc3339_opts(SecondsFormat::Micros, true);
    let mut behind = Vec::new();
    for dataset in sources {
        for pipeline in producers.get(dataset).into_iter().flatten() {
            match catalog.watermark(pipeline)? {
                Some(up_to) if up_to >= end => {}
                Some(up_to) => behind.push(format!(
                    "{dataset} (pipeline {pipeline} committed up to {up_to})"
                )),
                None => behind.push(format!(
                    "{dataset} (pipeline {pipeline} has not drained its source yet)"
                )),
            }
        }
    }
    Ok((!behind.is_empty()).then(|| {
        format!(
            "sources not committed up to {}: {}",
            period.end.to_rfc3339(),
            behind.join("; ")
        )
    }))
}

/// Polls the watermarks until they cover `period`, the timeout passes, or cancellation.
pub async fn wait(
    catalog: &Catalog,
    producers: &BTreeMap<String, Vec<String>>,
    job: &DatasetJob,
    period: &Period,
    policy: WaitForSources,
    cancel: &CancellationToken,
) -> Result<Waited, CatalogError> {
    let sources = sources(job);
    for dataset in &sources {
        if !producers.contains_key(dataset) {
            warn!(job = %job.name, dataset = %dataset,
                "no pipeline of this daemon writes this source: it has no watermark and is not waited for");
        }
    }
    let started = Instant::now();
    loop {
        let Some(reason) = missing(catalog, producers, &sources, period)? else {
            return Ok(Waited::Satisfied);
        };
        let waited = started.elapsed();
        if waited >= policy.timeout {
            return Ok(Waited::TimedOut(format!(
                "{reason} (waited {}s, refresh.wait_for_sources.timeout)",
                waited.as_secs()
            )));
        }
        info!(job = %job.name, period = %period.label(), reason = %reason, "waiting for sources");
        let nap = policy
            .poll_interval
            .min(policy.timeout.saturating_sub(waited))
            .max(Duration::from_millis(50));
        tokio::select! {
            () = tokio::time::sleep(nap) => {}
            () = cancel.cancelled() => return Ok(Waited::Cancelled),
        }
    }
}
