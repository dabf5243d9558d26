//! The forwarder's journal consumer: hits → forward jobs, durably, before the cursor moves.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::jobs::{JobMaker, count_enqueued};
use super::{CONSUMER, ForwardError, blocking, now_ms};
use crate::catalog::Catalog;
use crate::collect::registry::MediaRegistry;
use crate::enrich::Enricher;
use crate::journal::{Journal, JournalError, Position};
use crate::telemetry::Metrics;

/// Records per read (and per catalog transaction).
const BATCH_RECORDS: usize = 1000;
/// Payload bytes per read.
const BATCH_BYTES: usize = 4 << 20;
/// Wait when the journal has nothing new.
const IDLE: Duration = Duration::from_millis(200);

/// The local journal's reader (`journal.kind: local`).
pub(super) struct Reader {
    journal: Journal,
    catalog: Arc<Catalog>,
    jobs: JobMaker,
    metrics: Arc<Metrics>,
    notify: Arc<Notify>,
    /// The first position not turned into jobs yet.
    next: u64,
}

impl Reader {
    pub(super) fn new(
        journal: Journal,
        catalog: Arc<Catalog>,
        decoding: (Arc<MediaRegistry>, Arc<Enricher>),
        metrics: Arc<Metrics>,
        notify: Arc<Notify>,
        next: u64,
    ) -> Reader {
        Reader {
            journal,
            jobs: JobMaker::new(Arc::clone(&catalog), decoding),
            catalog,
            metrics,
            notify,
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
            match self.jobs.jobs_for(record) {
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
        count_enqueued(&self.metrics, labels);
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
}
