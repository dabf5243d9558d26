//! Sends leased forward jobs: bounded concurrency, timeouts, no redirects followed, retries
//! with backoff until the give-up horizon.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderValue, USER_AGENT};
use reqwest::{StatusCode, redirect};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use super::backoff::{delay, past_horizon};
use super::{ForwardConfig, ForwardError, blocking, now_ms};
use crate::catalog::{Catalog, ForwardJob};
use crate::telemetry::{ForwardLabels, Metrics};

/// `User-Agent` when the hit carried none.
const OWN_USER_AGENT: &str = concat!("backflow/", env!("CARGO_PKG_VERSION"));
/// How often the sender looks for due jobs when nothing woke it.
const POLL: Duration = Duration::from_millis(500);
/// How often the queue gauges are refreshed.
const GAUGES_EVERY: Duration = Duration::from_secs(1);
/// A leased job is handed out again this long after its request's timeout, should the process
/// die before recording the outcome.
const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// 2xx or 3xx: done.
    Sent,
    /// Connection error, timeout, 408, 429, 5xx: try again later.
    Retry(String),
    /// Any other 4xx, or an URL that cannot be requested: it will never succeed.
    Refused(String),
}

fn classify(status: StatusCode) -> Outcome {
    if status.is_success() || status.is_redirection() {
        Outcome::Sent
    } else if status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
    {
        Outcome::Retry(format!("HTTP {}", status.as_u16()))
    } else {
        Outcome::Refused(format!("HTTP {}", status.as_u16()))
    }
}

struct Shared {
    cfg: ForwardConfig,
    catalog: Arc<Catalog>,
    metrics: Arc<Metrics>,
    client: reqwest::Client,
}

pub(super) struct Sender {
    shared: Arc<Shared>,
    notify: Arc<Notify>,
    tracker: TaskTracker,
}

impl Sender {
    pub(super) fn new(
        cfg: ForwardConfig,
        catalog: Arc<Catalog>,
        metrics: Arc<Metrics>,
        notify: Arc<Notify>,
        tracker: TaskTracker,
    ) -> Result<Sender, ForwardError> {
        let client = reqwest::Client::builder()
            .redirect(redirect::Policy::none())
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .pool_max_idle_per_host(cfg.concurrency.get())
            .build()?;
        Ok(Sender {
            shared: Arc::new(Shared {
                cfg,
                catalog,
                metrics,
                client,
            }),
            notify,
            tracker,
        })
    }

    pub(super) async fn run(self, stop: CancellationToken) {
        let permits = Arc::new(Semaphore::new(self.shared.cfg.concurrency.get()));
        let lease_ms =
            i64::try_from((self.shared.cfg.timeout + LEASE_MARGIN).as_millis()).unwrap_or(i64::MAX);
        let mut destinations = HashSet::new();
        let mut gauges_at: Option<Instant> = None;
        loop {
            if gauges_at.is_none_or(|at| at.elapsed() >= GAUGES_EVERY) {
                self.shared.refresh_gauges(&mut destinations).await;
                gauges_at = Some(Instant::now());
            }
            let first = tokio::select! {
                () = stop.cancelled() => return,
                permit = Arc::clone(&permits).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
            };
            let mut free = vec![first];
            while let Ok(permit) = Arc::clone(&permits).try_acquire_owned() {
                free.push(permit);
            }
            let catalog = Arc::clone(&self.shared.catalog);
            let limit = free.len();
            let leased =
                blocking(move || catalog.lease_forward_jobs(now_ms(), lease_ms, limit)).await;
            let jobs = match leased {
                Ok(jobs) => jobs,
                Err(e) => {
                    warn!(error = %e, "forwarder: cannot read the queue; retrying");
                    drop(free);
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                    continue;
                }
            };
            if jobs.is_empty() {
                drop(free);
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = self.notify.notified() => {}
                    () = tokio::time::sleep(POLL) => {}
                }
                continue;
            }
            for (job, permit) in jobs.into_iter().zip(free) {
                let shared = Arc::clone(&self.shared);
                self.tracker.spawn(async move {
                    shared.attempt(job).await;
                    drop(permit);
                });
            }
        }
    }
}

impl Shared {
    async fn send(&self, job: &ForwardJob) -> Outcome {
        let agent = job
            .user_agent
            .as_deref()
            .and_then(|ua| HeaderValue::from_str(ua).ok())
            .unwrap_or(HeaderValue::from_static(OWN_USER_AGENT));
        match self
            .client
            .get(&job.url)
            .header(USER_AGENT, agent)
            .send()
            .await
        {
            Ok(response) => classify(response.status()),
            Err(e) if e.is_builder() => Outcome::Refused("invalid URL".to_string()),
            Err(e) if e.is_timeout() => Outcome::Retry("timeout".to_string()),
            Err(e) if e.is_connect() => Outcome::Retry("connection failed".to_string()),
            Err(_) => Outcome::Retry("request failed".to_string()),
        }
    }

    /// One attempt and its bookkeeping. A catalog failure leaves the job leased: it is tried
    /// again when the lease runs out.
    async fn attempt(&self, job: ForwardJob) {
        let labels = ForwardLabels {
            destination: job.destination.clone(),
        };
        let m = &self.metrics.forward;
        let outcome = self.send(&job).await;
        let id = job.id;
        let catalog = Arc::clone(&self.catalog);
        let recorded = match &outcome {
            Outcome::Sent => {
                m.sent.get_or_create(&labels).inc();
                blocking(move || catalog.finish_forward_job(id)).await
            }
            Outcome::Refused(reason) => {
                m.failed_attempts.get_or_create(&labels).inc();
                m.given_up.get_or_create(&labels).inc();
                warn!(destination = %job.destination, event_id = %job.event_id, reason = %reason,
                    "forward refused by the third party: given up");
                blocking(move || catalog.finish_forward_job(id)).await
            }
            Outcome::Retry(reason) => {
                m.failed_attempts.get_or_create(&labels).inc();
                let wait = delay(
                    job.attempts.saturating_add(1),
                    self.cfg.max_backoff,
                    rand::random::<f64>(),
                );
                let retry_at =
                    now_ms().saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX));
                if past_horizon(job.hit_at_ms, retry_at, self.cfg.give_up_after) {
                    m.given_up.get_or_create(&labels).inc();
                    warn!(destination = %job.destination, event_id = %job.event_id, reason = %reason,
                        attempts = job.attempts + 1, "forward past its give-up horizon: given up");
                    blocking(move || catalog.finish_forward_job(id)).await
                } else {
                    debug!(destination = %job.destination, reason = %reason,
                        attempts = job.attempts + 1, retry_in_ms = wait.as_millis() as u64,
                        "forward failed; will retry");
                    let reason = reason.clone();
                    blocking(move || catalog.retry_forward_job(id, retry_at, &reason)).await
                }
            }
        };
        if let Err(e) = recorded {
            warn!(error = %e, job = id, "forwarder: outcome not recorded; the job will be retried");
        }
    }

    async fn refresh_gauges(&self, destinations: &mut HashSet<String>) {
        let catalog = Arc::clone(&self.catalog);
        let stats = match blocking(move || catalog.forward_queue_stats()).await {
            Ok(stats) => stats,
            Err(e) => {
                debug!(error = %e, "forwarder: queue statistics unavailable");
                return;
            }
        };
        let f = &self.metrics.forward;
        let now = now_ms();
        let mut seen = HashSet::new();
        for s in stats {
            let labels = ForwardLabels {
                destination: s.destination.clone(),
            };
            f.queue_depth
                .get_or_create(&labels)
                .set(i64::try_from(s.depth).unwrap_or(i64::MAX));
            f.oldest_job_age
                .get_or_create(&labels)
                .set(now.saturating_sub(s.oldest_hit_at_ms).max(0) / 1000);
            seen.insert(s.destination);
        }
        for gone in destinations.difference(&seen) {
            let labels = ForwardLabels {
                destination: gone.clone(),
            };
            f.queue_depth.get_or_create(&labels).set(0);
            f.oldest_job_age.get_or_create(&labels).set(0);
        }
        destinations.extend(seen);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_sent_retried_or_refused() {
        assert_eq!(classify(StatusCode::OK), Outcome::Sent);
        assert_eq!(classify(StatusCode::NO_CONTENT), Outcome::Sent);
        assert_eq!(classify(StatusCode::FOUND), Outcome::Sent);
        for retry in [500, 502, 503, 429, 408] {
            let status = StatusCode::from_u16(retry).unwrap_or(StatusCode::OK);
            assert!(matches!(classify(status), Outcome::Retry(_)), "{retry}");
        }
        for refused in [400, 403, 404, 410] {
            let status = StatusCode::from_u16(refused).unwrap_or(StatusCode::OK);
            assert!(matches!(classify(status), Outcome::Refused(_)), "{refused}");
        }
    }
}
