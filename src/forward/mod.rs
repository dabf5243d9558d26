//! Third-party monitoring forwarding (Miaozhen, AdMaster; `DESIGN.md` "Third-party
//! monitoring"): our link is called first, the hit is made durable, and *then* it is forwarded
//! server-side to each of the activity's third-party URLs of that endpoint, macros filled.
//!
//! ```text
//! journal ──reader──▶ forward_jobs (catalog, durable) ──sender──▶ GET third party
//!   cursor `forward`      + progress, one transaction        delete on 2xx/3xx, else retry
//! ```
//!
//! * **Reader** (`reader.rs`): a journal consumer with its own cursor (`forward`). For each
//!   hit whose activity has third-party URLs for the endpoint, it fills the URLs' macros
//!   (`macros.rs`) and enqueues one job per URL *in the same catalog transaction that records
//!   how far it read*; only then does it move its journal cursor (which lets retention go on).
//!   A crash anywhere re-reads at most the range whose jobs were not committed: no hit is
//!   forwarded twice by the reader, none is skipped.
//! * **Sender** (`sender.rs`): leases due jobs, sends `GET`s with bounded concurrency, a timeout,
//!   no redirects followed and the user's `User-Agent` (the MMA monitors read the UA from the
//!   header, `spec/media-protocols.md` §6.1). 2xx/3xx is success and deletes the job in that
//!   same step; connection errors, timeouts, 408, 429 and 5xx are retried with exponential
//!   backoff and jitter (`backoff.rs`) until the give-up horizon (counted from the hit); any
//!   other 4xx can never succeed and is given up at once.
//! * **At least once.** A job survives restarts and `kill -9`; a request whose answer was lost
//!   with the process is sent again when its lease runs out. Third parties deduplicate by
//!   their own means; in the normal path there are no duplicates.
//! * **Chained mode** (`format.rs`): for media whose ad orders must carry the third party's
//!   link (`third_party: chained` in `schemas/media.yaml`), the third party's click link wraps
//!   ours and is printed as `chained_click_url`; such clicks are not forwarded.

mod backoff;
mod format;
mod jobs;
mod kafka;
mod macros;
mod reader;
mod sender;

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use backoff::delay as backoff_delay;
pub use format::{Format, can_chain, chained_click_url, format_of};
pub use macros::{HitValues, fill};

use crate::catalog::{Catalog, CatalogError};
use crate::collect::registry::MediaRegistry;
use crate::config::daemon::KafkaJournalConfig;
use crate::journal::{Journal, JournalError};
use crate::telemetry::Metrics;

/// The forwarder's journal consumer name.
pub const CONSUMER: &str = "forward";

/// `forward:` in `backflow.yaml`.
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardConfig {
    /// `forward.enabled`: forward hits to the activities' third-party URLs; default true.
    /// Off, the forwarder's journal cursor is removed so it no longer holds retention; on again,
    /// it starts at the journal's end.
    pub enabled: bool,
    /// `forward.concurrency`: requests in flight at once, 1 to 256; default 16.
    pub concurrency: NonZeroUsize,
    /// `forward.timeout_seconds`: per request, connect included; default 5 (the MMA SDK uses 3).
    pub timeout: Duration,
    /// `forward.give_up_seconds`: a job still failing this long after its hit is dropped and
    /// counted as given up; default 86400 (24 h, the MMA SDK's cache expiry).
    pub give_up_after: Duration,
    /// `forward.max_backoff_seconds`: the longest wait between two attempts; default 600.
    pub max_backoff: Duration,
    /// `forward.kafka_group`: with `journal.kind: kafka`, the consumer group the forwarder
    /// reads the journal topic in (its own, beside the pipelines'); default `backflow-forward`.
    /// Daemons sharing a catalog share the group and split the partitions.
    pub kafka_group: String,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        ForwardConfig {
            enabled: true,
            concurrency: NonZeroUsize::MIN.saturating_add(15),
            timeout: Duration::from_secs(5),
            give_up_after: Duration::from_secs(24 * 3600),
            max_backoff: Duration::from_secs(600),
            kafka_group: "backflow-forward".to_string(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("forwarder: {0}")]
    Journal(#[from] JournalError),
    #[error("forwarder: {0}")]
    Catalog(#[from] CatalogError),
    #[error("forwarder: cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("forwarder: background task failed: {0}")]
    Task(String),
}

/// Where the reader starts: where it stopped (the catalog's progress, which may be ahead of the
/// journal cursor after a crash); on the first start, or after forwarding was off, the
/// journal's end (hits from before are not forwarded).
async fn start_position(journal: &Journal, catalog: &Catalog) -> Result<u64, ForwardError> {
    if journal.has_consumer(CONSUMER) {
        let cursor = journal.cursor(CONSUMER)?.0;
        let progress = catalog.forward_position()?.unwrap_or(cursor);
        return Ok(cursor.max(progress));
    }
    let start = journal
        .register_consumer(CONSUMER, journal.next_position())
        .await?;
    info!(position = %start, "forwarder: first start, forwarding hits from here on");
    Ok(start.0)
}

/// Starts the forwarder's reader and sender on `tracker`; both stop when `stop` is cancelled
/// (a request in flight finishes or times out). With forwarding off, only forgets the cursor.
/// With `kafka` (`journal.kind: kafka`) the reader reads the journal topic instead of the local
/// journal.
#[allow(clippy::too_many_arguments)]
pub async fn start(
    cfg: &ForwardConfig,
    journal: Journal,
    kafka: Option<&KafkaJournalConfig>,
    catalog: Arc<Catalog>,
    // How hits are decoded: the media registry and the enrichment tables.
    decoding: (Arc<MediaRegistry>, Arc<crate::enrich::Enricher>),
    metrics: Arc<Metrics>,
    stop: CancellationToken,
    tracker: &TaskTracker,
) -> Result<(), ForwardError> {
    if !cfg.enabled || kafka.is_some() {
        // The local journal gets no hits in kafka mode: its cursor would only hold retention.
        if journal.remove_consumer(CONSUMER).await? && !cfg.enabled {
            warn!("forwarding is off: its journal cursor was removed; queued jobs stay queued");
        }
        if !cfg.enabled {
            return Ok(());
        }
    }
    let notify = Arc::new(Notify::new());
    let sender = sender::Sender::new(
        cfg.clone(),
        Arc::clone(&catalog),
        Arc::clone(&metrics),
        Arc::clone(&notify),
        tracker.clone(),
    )?;
    if let Some(kafka) = kafka {
        let mut reader = kafka::KafkaReader::new(
            kafka.clone(),
            cfg.kafka_group.clone(),
            catalog,
            decoding,
            metrics,
            notify,
        );
        // Before the endpoints take hits: on the first start, the topic's end is where
        // forwarding begins. A broker down now is retried in the background.
        let first = match reader.connect(kafka::FIRST_LOOKUP_TIMEOUT).await {
            Ok(c) => Some(c),
            Err(e) => {
                warn!(error = %e, "forwarder: the kafka journal topic is not readable yet; retrying in the background");
                None
            }
        };
        info!(
            topic = %kafka.topic,
            group = %cfg.kafka_group,
            concurrency = cfg.concurrency.get(),
            "third-party forwarder started on the kafka journal topic"
        );
        tracker.spawn(reader.run(first, stop.clone()));
    } else {
        let next = start_position(&journal, &catalog).await?;
        let reader = reader::Reader::new(journal, catalog, decoding, metrics, notify, next);
        info!(
            position = next,
            concurrency = cfg.concurrency.get(),
            "third-party forwarder started"
        );
        tracker.spawn(reader.run(stop.clone()));
    }
    tracker.spawn(sender.run(stop));
    Ok(())
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Runs blocking catalog work off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CatalogError> + Send + 'static,
) -> Result<T, ForwardError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ForwardError::Task(e.to_string()))?
        .map_err(ForwardError::from)
}
