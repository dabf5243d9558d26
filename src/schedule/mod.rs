//! Cron scheduling and run dispatch inside `backflow serve` (and the CLI's backfill and rerun).
//!
//! [`Jobs`] is the one place runs start from — schedules, the admin API, backfill, rerun — so
//! its rules hold everywhere:
//! - **recorded first**: every run is a row in the run history from the moment it is asked
//!   for (`queued`), then `waiting` (for sources), `running`, and how it ended, with the
//!   reason shown to users;
//! - **one at a time per job, in order**: runs of one job never overlap and start in the order
//!   they were asked for (a ticket per run); a fire while the job is active is dropped
//!   (`overlap: skip`, counted) or queued (`overlap: queue`);
//! - **concurrency**: at most `max_runs_per_workspace` runs of one workspace's jobs and
//!   `max_concurrent_runs` in all run at once; the others stay `queued`;
//! - **retries**: a run that fails with a retryable error (storage, network, Kafka, a busy
//!   catalog or job lock) is retried as a new run (`trigger: retry`, `attempt` + 1, `rerun_of`
//!   the first attempt) after an exponential backoff, up to `retries.max`; configuration and
//!   validation errors are not retried;
//! - **periods and sources**: a dataset instance covers a [`Period`] and, with
//!   `refresh.wait_for_sources`, waits for the source watermarks ([`watermark`]) or ends
//!   `timed_out`; the previous published version stays current in every failure.
//!
//! Timers ([`timer`]) fire schedules in their zone and apply the misfire policy after downtime
//! or a clock jump. Pipelines and dataset jobs share one name space.

pub mod period;
pub mod timer;
pub mod watermark;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::catalog::{CatalogError, NewRun, RunRecord, RunStatus};
use crate::config::load::DEFAULT_WORKSPACE;
use crate::config::model::{DatasetJob, Misfire, Overlap, Pipeline, RetryPolicy, Schedule};
use crate::datasets::{self, RefreshOptions};
use crate::pipeline::{RunOptions, Runtime};
use crate::telemetry::{JobOutcomeLabels, PipelineLabels, RunLabels, WorkspaceLabels};
pub use period::Period;
use timer::Step;
use watermark::Waited;

/// Most runs one job may have queued behind its active run; further asks are refused.
pub const MAX_QUEUED_PER_JOB: usize = 1000;

/// What asking for a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Triggered {
    /// Recorded; it starts as soon as its job and a slot are free.
    Started,
    /// Not recorded: the job is active and the request does not queue (`overlap: skip`, or a
    /// manual run), or the job's queue is full.
    AlreadyRunning,
}

/// A request for a run.
#[derive(Debug, Clone)]
pub struct Request {
    pub trigger: String,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub period: Option<Period>,
    pub rerun_of: Option<i64>,
    /// Queue behind an active run of the job, or give up.
    pub overlap: Overlap,
}

impl Request {
    pub fn now(trigger: &str) -> Request {
        Request {
            trigger: trigger.to_string(),
            scheduled_for: None,
            period: None,
            rerun_of: None,
            overlap: Overlap::Skip,
        }
    }
}

/// A recorded run request.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Submitted {
    pub run_id: i64,
    pub period: Option<String>,
}

/// Why a backfill or rerun cannot be done.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("no pipeline or dataset job named `{0}`")]
    UnknownJob(String),
    #[error("no run {0}")]
    UnknownRun(i64),
    #[error("{0}")]
    Invalid(String),
    #[error("`{0}` already has {MAX_QUEUED_PER_JOB} runs queued; try again later")]
    QueueFull(String),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

/// What a backfill asked for.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BackfillPlan {
    pub job: String,
    /// One run per period not yet succeeded (or every period with `force`), in order.
    pub runs: Vec<Submitted>,
    /// Periods skipped because a run already succeeded for them.
    pub skipped: Vec<String>,
}

#[derive(Clone)]
enum Target {
    Pipeline(Arc<Pipeline>),
    Dataset(Arc<DatasetJob>),
}

impl Target {
    fn schedule(&self) -> Option<&Schedule> {
        match self {
            Target::Pipeline(p) => p.schedule.as_ref(),
            Target::Dataset(j) => j.schedule.as_ref(),
        }
    }

    fn workspace(&self) -> &str {
        self.schedule()
            .map_or(DEFAULT_WORKSPACE, |s| s.workspace.as_str())
    }

    fn retries(&self) -> RetryPolicy {
        self.schedule()
            .map_or(RetryPolicy::default(), |s| s.retries)
    }
}

/// The order of one job's runs: tickets handed out at request time, served one at a time.
struct Line {
    next: u64,
    serving: watch::Sender<u64>,
    /// Runs asked for and not finished (queued, waiting or running).
    active: usize,
}

/// Serves the next ticket of a job when a run is done, however it ends.
struct Turn {
    jobs: Arc<Jobs>,
    name: String,
    workspace: String,
    /// Still counted in the queued gauge.
    queued: bool,
}

impl Drop for Turn {
    fn drop(&mut self) {
        if self.queued {
            self.jobs.queued_gauge(&self.workspace).dec();
        }
        let mut lines = self.jobs.lines();
        if let Some(line) = lines.get_mut(&self.name) {
            line.active = line.active.saturating_sub(1);
            line.serving.send_modify(|s| *s += 1);
        }
    }
}

/// The pipelines and dataset jobs of a daemon and their runs.
pub struct Jobs {
    runtime: Arc<Runtime>,
    pipelines: BTreeMap<String, Arc<Pipeline>>,
    datasets: BTreeMap<String, Arc<DatasetJob>>,
    /// Lake dataset → the pipelines writing it (for watermarks).
    producers: BTreeMap<String, Vec<String>>,
    lines: Mutex<HashMap<String, Line>>,
    slots: Arc<Semaphore>,
    workspace_slots: Mutex<HashMap<String, Arc<Semaphore>>>,
    per_workspace: usize,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs")
            .field("pipelines", &self.pipelines.keys().collect::<Vec<_>>())
            .field("datasets", &self.datasets.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Concurrency limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Runs at once in all.
    pub max_concurrent_runs: usize,
    /// Runs of one workspace's jobs at once.
    pub max_runs_per_workspace: usize,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

impl Jobs {
    pub fn new(
        runtime: Arc<Runtime>,
        pipelines: Vec<Pipeline>,
        datasets: Vec<DatasetJob>,
        limits: Limits,
        cancel: CancellationToken,
        tracker: TaskTracker,
    ) -> Arc<Jobs> {
        let mut producers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for p in &pipelines {
            if let Some(dataset) = p.sink.dataset() {
                producers
                    .entry(dataset.to_string())
                    .or_default()
                    .push(p.name.clone());
            }
        }
        Arc::new(Jobs {
            runtime,
            pipelines: pipelines
                .into_iter()
                .map(|p| (p.name.clone(), Arc::new(p)))
                .collect(),
            datasets: datasets
                .into_iter()
                .map(|j| (j.name.clone(), Arc::new(j)))
                .collect(),
            producers,
            lines: Mutex::new(HashMap::new()),
            slots: Arc::new(Semaphore::new(limits.max_concurrent_runs.max(1))),
            workspace_slots: Mutex::new(HashMap::new()),
            per_workspace: limits.max_runs_per_workspace.max(1),
            cancel,
            tracker,
        })
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    pub fn pipelines(&self) -> impl Iterator<Item = &Arc<Pipeline>> {
        self.pipelines.values()
    }

    pub fn pipeline(&self, name: &str) -> Option<&Arc<Pipeline>> {
        self.pipelines.get(name)
    }

    /// The dataset jobs, by name.
    pub fn datasets(&self) -> impl Iterator<Item = &Arc<DatasetJob>> {
        self.datasets.values()
    }

    /// The next time a schedule fires after now, as RFC 3339 in its zone.
    pub fn next_fire(schedule: &Schedule) -> Option<String> {
        timer::next_fires(schedule, Utc::now(), 1)
            .first()
            .map(|t| t.with_timezone(&schedule.time_zone).to_rfc3339())
    }

    /// The next `n` fire times, RFC 3339 in the schedule's zone.
    pub fn next_fires(schedule: &Schedule, n: usize) -> Vec<String> {
        timer::next_fires(schedule, Utc::now(), n)
            .iter()
            .map(|t| t.with_timezone(&schedule.time_zone).to_rfc3339())
            .collect()
    }

    fn lines(&self) -> std::sync::MutexGuard<'_, HashMap<String, Line>> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The workspace of a pipeline or dataset job.
    pub fn workspace_of(&self, name: &str) -> Option<String> {
        self.target(name).map(|t| t.workspace().to_string())
    }

    /// Whether the job has a run queued, waiting or running.
    pub fn is_running(&self, name: &str) -> bool {
        self.active_runs(name) > 0
    }

    /// Runs of the job asked for and not finished.
    pub fn active_runs(&self, name: &str) -> usize {
        self.lines().get(name).map_or(0, |l| l.active)
    }

    fn queued_gauge(&self, workspace: &str) -> prometheus_client::metrics::gauge::Gauge {
        self.runtime
            .metrics
            .schedule
            .queued
            .get_or_create(&WorkspaceLabels::of(workspace))
            .clone()
    }

    fn workspace_slots(&self, workspace: &str) -> Arc<Semaphore> {
        let mut map = self
            .workspace_slots
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        Arc::clone(
            map.entry(workspace.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_workspace))),
        )
    }

    fn target(&self, name: &str) -> Option<Target> {
        if let Some(j) = self.datasets.get(name) {
            return Some(Target::Dataset(Arc::clone(j)));
        }
        self.pipelines
            .get(name)
            .map(|p| Target::Pipeline(Arc::clone(p)))
    }

    /// Starts a run of `name` now unless one is active (manual runs: API and CLI). `None` if
    /// unknown.
    pub fn trigger(self: &Arc<Self>, name: &str, trigger: &str) -> Option<Triggered> {
        match self.submit(name, Request::now(trigger)) {
            Err(RequestError::UnknownJob(_)) => None,
            Ok(Some(_)) => Some(Triggered::Started),
            Ok(None) | Err(RequestError::QueueFull(_)) => Some(Triggered::AlreadyRunning),
            Err(e) => {
                error!(pipeline = %name, error = %e, "could not record a run");
                Some(Triggered::AlreadyRunning)
            }
        }
    }

    /// Records a run of `name` and starts it in the background when its turn and a slot come.
    /// `Ok(None)`: the job is active and the request does not queue.
    pub fn submit(
        self: &Arc<Self>,
        name: &str,
        request: Request,
    ) -> Result<Option<Submitted>, RequestError> {
        let target = self
            .target(name)
            .ok_or_else(|| RequestError::UnknownJob(name.to_string()))?;
        let workspace = target.workspace().to_string();
        let (ticket, mut serving) = {
            let mut lines = self.lines();
            let line = lines.entry(name.to_string()).or_insert_with(|| Line {
                next: 0,
                serving: watch::Sender::new(0),
                active: 0,
            });
            if line.active > 0 && request.overlap == Overlap::Skip {
                self.runtime
                    .metrics
                    .schedule
                    .overlaps_skipped
                    .get_or_create(&PipelineLabels {
                        pipeline: name.to_string(),
                    })
                    .inc();
                info!(pipeline = %name, trigger = %request.trigger,
                    "run skipped: the previous run is still queued or running (overlap: skip)");
                return Ok(None);
            }
            if line.active > MAX_QUEUED_PER_JOB {
                return Err(RequestError::QueueFull(name.to_string()));
            }
            let ticket = line.next;
            line.next += 1;
            line.active += 1;
            (ticket, line.serving.subscribe())
        };
        self.queued_gauge(&workspace).inc();
        let turn = Turn {
            jobs: Arc::clone(self),
            name: name.to_string(),
            workspace: workspace.clone(),
            queued: true,
        };
        let new = NewRun {
            pipeline: name.to_string(),
            trigger: request.trigger.clone(),
            workspace,
            scheduled_for: request.scheduled_for.map(rfc3339),
            period: request.period.as_ref().map(Period::record),
            attempt: 1,
            rerun_of: request.rerun_of,
        };
        let run_id = self.runtime.catalog.queue_run(&new, RunStatus::Queued)?;
        let submitted = Submitted {
            run_id,
            period: request.period.as_ref().map(Period::label),
        };
        // A schedule's own runs are routine (every 10 s for `ad_events`): at debug, so the log
        // shows what someone asked for and what did work; every run is in the catalog anyway.
        if request.trigger == "schedule" {
            debug!(pipeline = %name, run = run_id, trigger = %request.trigger,
                period = ?submitted.period, "run queued");
        } else {
            info!(pipeline = %name, run = run_id, trigger = %request.trigger,
                period = ?submitted.period, "run queued");
        }
        let jobs = Arc::clone(self);
        self.tracker.spawn(async move {
            let waited = tokio::select! {
                r = serving.wait_for(|s| *s == ticket) => r.is_ok(),
                () = jobs.cancel.cancelled() => false,
            };
            drop(serving);
            if !waited {
                jobs.cancelled_before_start(run_id);
                return;
            }
            jobs.execute(target, new, run_id, request.period, turn)
                .await;
        });
        Ok(Some(submitted))
    }

    fn cancelled_before_start(&self, run_id: i64) {
        let reason = "the daemon shut down before this run started";
        if let Err(e) = self
            .runtime
            .catalog
            .finish_open_run(run_id, RunStatus::Cancelled, reason)
        {
            error!(run = run_id, error = %e, "could not record a cancelled run");
        }
    }

    fn count_run(&self, name: &str, status: RunStatus) {
        self.runtime
            .metrics
            .runs
            .get_or_create(&RunLabels {
                pipeline: name.to_string(),
                status: status.to_string(),
            })
            .inc();
    }

    /// Runs one request through its attempts; the job's turn is held throughout.
    async fn execute(
        self: Arc<Self>,
        target: Target,
        mut new: NewRun,
        mut run_id: i64,
        period: Option<Period>,
        mut turn: Turn,
    ) {
        let name = new.pipeline.clone();
        let catalog = Arc::clone(&self.runtime.catalog);
        // Sources first (a waiting run holds no slot), then a slot.
        if let (Target::Dataset(job), Some(period)) = (&target, &period)
            && let Some(policy) = job.refresh.wait_for_sources
        {
            let _ = catalog.set_run_status(run_id, RunStatus::Waiting);
            let outcome =
                watermark::wait(&catalog, &self.producers, job, period, policy, &self.cancel).await;
            let label = |outcome| JobOutcomeLabels {
                pipeline: name.clone(),
                outcome,
            };
            match outcome {
                Ok(Waited::Satisfied) => {
                    self.runtime
                        .metrics
                        .schedule
                        .watermark_waits
                        .get_or_create(&label("satisfied"))
                        .inc();
                    let _ = catalog.set_run_status(run_id, RunStatus::Queued);
                }
                Ok(Waited::TimedOut(reason)) => {
                    self.runtime
                        .metrics
                        .schedule
                        .watermark_waits
                        .get_or_create(&label("timed_out"))
                        .inc();
                    warn!(job = %name, run = run_id, reason = %reason,
                        "refresh timed out waiting for its sources; the previous version stays current");
                    let _ = catalog.finish_open_run(run_id, RunStatus::TimedOut, &reason);
                    self.count_run(&name, RunStatus::TimedOut);
                    return;
                }
                Ok(Waited::Cancelled) => {
                    self.cancelled_before_start(run_id);
                    return;
                }
                Err(e) => {
                    let reason = format!("checking source watermarks: {e}");
                    let _ = catalog.finish_open_run(run_id, RunStatus::Failed, &reason);
                    self.count_run(&name, RunStatus::Failed);
                    return;
                }
            }
        }
        let retries = target.retries();
        loop {
            let Some(permits) = self.acquire(&turn.workspace).await else {
                self.cancelled_before_start(run_id);
                return;
            };
            if turn.queued {
                turn.queued = false;
                self.queued_gauge(&turn.workspace).dec();
            }
            let failure = self.run_once(&target, run_id, period).await;
            drop(permits);
            let Some((reason, retryable)) = failure else {
                return;
            };
            // Whatever left the row open (the job lock refused it, …) ends it here.
            if let Ok(true) = catalog.finish_open_run(run_id, RunStatus::Failed, &reason) {
                self.count_run(&name, RunStatus::Failed);
            }
            let attempt = new.attempt.max(1);
            if !retryable || attempt > retries.max {
                if retryable && retries.max > 0 {
                    let _ = catalog
                        .append_run_note(run_id, &format!("gave up after {attempt} attempt(s)"));
                }
                return;
            }
            let backoff = retries.backoff(attempt);
            let _ = catalog.append_run_note(
                run_id,
                &format!(
                    "retryable: retry {attempt} of {} in {:.1}s",
                    retries.max,
                    backoff.as_secs_f64()
                ),
            );
            warn!(pipeline = %name, run = run_id, attempt, backoff_ms = backoff.as_millis() as u64,
                error = %reason, "run failed with a retryable error; retrying");
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = self.cancel.cancelled() => return,
            }
            new.rerun_of = Some(new.rerun_of.unwrap_or(run_id));
            new.attempt = attempt + 1;
            new.trigger = "retry".to_string();
            run_id = match catalog.queue_run(&new, RunStatus::Queued) {
                Ok(id) => id,
                Err(e) => {
                    error!(pipeline = %name, error = %e, "could not record a retry");
                    return;
                }
            };
            self.runtime
                .metrics
                .schedule
                .retries
                .get_or_create(&PipelineLabels {
                    pipeline: name.clone(),
                })
                .inc();
            turn.queued = true;
            self.queued_gauge(&turn.workspace).inc();
        }
    }

    /// A workspace slot, then a daemon slot; `None` on shutdown.
    async fn acquire(
        &self,
        workspace: &str,
    ) -> Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)> {
        let ws = self.workspace_slots(workspace);
        tokio::select! {
            permits = async {
                let a = ws.acquire_owned().await.ok()?;
                let b = Arc::clone(&self.slots).acquire_owned().await.ok()?;
                Some((a, b))
            } => permits,
            () = self.cancel.cancelled() => None,
        }
    }

    /// One attempt; `None` on success, else the reason and whether it is retryable.
    async fn run_once(
        &self,
        target: &Target,
        run_id: i64,
        period: Option<Period>,
    ) -> Option<(String, bool)> {
        match target {
            Target::Pipeline(pipeline) => {
                let opts = RunOptions {
                    trigger: String::new(),
                    run_id: Some(run_id),
                    ..RunOptions::default()
                };
                match self.runtime.run(pipeline, &opts, &self.cancel).await {
                    // A run that found nothing to do is logged at debug (its record and the
                    // run metrics still count it); one that committed batches at info.
                    Ok(s) if s.batches == 0 => {
                        debug!(
                            pipeline = %pipeline.name, run = s.run_id, status = %s.status, batches = s.batches,
                            "run finished: nothing new"
                        );
                        None
                    }
                    Ok(s) => {
                        info!(
                            pipeline = %pipeline.name, run = s.run_id, status = %s.status, batches = s.batches,
                            rows_out = s.rows_out, rows_quarantined = s.rows_quarantined, "run finished"
                        );
                        None
                    }
                    Err(e) => {
                        error!(pipeline = %pipeline.name, run = run_id, error = %e, retryable = e.retryable(), "run failed");
                        Some((e.to_string(), e.retryable()))
                    }
                }
            }
            Target::Dataset(job) => {
                // A refresh is not interrupted by shutdown: until its pointer is written
                // nothing is visible, and the tracker waits for it within the grace period.
                let opts = RefreshOptions {
                    trigger: String::new(),
                    run_id: Some(run_id),
                    period,
                    as_of: None,
                };
                match datasets::refresh(&self.runtime, job, &opts).await {
                    Ok(_) => None,
                    Err(e) => {
                        error!(job = %job.name, run = run_id, error = %e, retryable = e.retryable(), "refresh failed");
                        Some((e.to_string(), e.retryable()))
                    }
                }
            }
        }
    }

    /// One run per period of a dataset job from `from` to `to` (inclusive local dates), in
    /// order, skipping periods that already succeeded unless `force`.
    pub fn backfill(
        self: &Arc<Self>,
        name: &str,
        from: NaiveDate,
        to: NaiveDate,
        force: bool,
    ) -> Result<BackfillPlan, RequestError> {
        let job = match self.target(name) {
            Some(Target::Dataset(job)) => job,
            Some(Target::Pipeline(_)) => {
                return Err(RequestError::Invalid(format!(
                    "`{name}` is a pipeline: pipelines catch up by themselves (`backflow run {name}`); backfill is for dataset jobs"
                )));
            }
            None => return Err(RequestError::UnknownJob(name.to_string())),
        };
        if from > to {
            return Err(RequestError::Invalid(format!(
                "--from {from} is after --to {to}"
            )));
        }
        if (to - from).num_days() >= 3660 {
            return Err(RequestError::Invalid(format!(
                "{from} to {to} is more than 10 years of periods"
            )));
        }
        let periods = Period::between(job.refresh.period, from, to, self.runtime.tz)
            .ok_or_else(|| RequestError::Invalid(format!("{from} to {to}: dates out of range")))?;
        let done = self.runtime.catalog.succeeded_periods(name)?;
        let mut plan = BackfillPlan {
            job: name.to_string(),
            runs: Vec::new(),
            skipped: Vec::new(),
        };
        for period in periods {
            let label = period.label();
            if !force && done.contains(&label) {
                plan.skipped.push(label);
                continue;
            }
            let request = Request {
                trigger: "backfill".to_string(),
                scheduled_for: None,
                period: Some(period),
                rerun_of: None,
                overlap: Overlap::Queue,
            };
            if let Some(s) = self.submit(name, request)? {
                plan.runs.push(s);
            }
        }
        Ok(plan)
    }

    /// Runs a failed, timed-out or cancelled run's job again for the same period.
    pub fn rerun(self: &Arc<Self>, run_id: i64) -> Result<Submitted, RequestError> {
        let run = self
            .runtime
            .catalog
            .run(run_id)?
            .ok_or(RequestError::UnknownRun(run_id))?;
        if !["failed", "timed_out", "cancelled"].contains(&run.status.as_str()) {
            return Err(RequestError::Invalid(format!(
                "run {run_id} is {}: only failed, timed-out or cancelled runs are rerun{}",
                run.status,
                if run.status == "succeeded" {
                    " (use `backflow backfill --force` to rebuild a succeeded period)"
                } else {
                    ""
                }
            )));
        }
        let target = self
            .target(&run.pipeline)
            .ok_or_else(|| RequestError::UnknownJob(run.pipeline.clone()))?;
        let period = match (&target, &run.period_start) {
            (Target::Dataset(job), Some(start)) => Some(
                Period::from_record(job.refresh.period, start, self.runtime.tz).ok_or_else(
                    || RequestError::Invalid(format!("run {run_id} has an unreadable period")),
                )?,
            ),
            _ => None,
        };
        let request = Request {
            trigger: "rerun".to_string(),
            scheduled_for: None,
            period,
            rerun_of: Some(run_id),
            overlap: Overlap::Queue,
        };
        self.submit(&run.pipeline, request)?
            .ok_or_else(|| RequestError::QueueFull(run.pipeline.clone()))
    }

    /// Spawns one timer per scheduled pipeline or dataset job.
    pub fn start_schedules(self: &Arc<Self>) {
        let names: Vec<String> = self
            .pipelines
            .keys()
            .chain(self.datasets.keys())
            .cloned()
            .collect();
        for name in names {
            let Some(target) = self.target(&name) else {
                continue;
            };
            let Some(schedule) = target.schedule().cloned() else {
                continue;
            };
            let jobs = Arc::clone(self);
            self.tracker
                .spawn(async move { jobs.run_timer(name, target, schedule).await });
        }
    }

    /// The request for a fire at `at`.
    fn fire_request(
        target: &Target,
        schedule: &Schedule,
        at: DateTime<Utc>,
        trigger: &str,
        tz: chrono_tz::Tz,
    ) -> Request {
        let period = match target {
            Target::Dataset(job) => Period::before(job.refresh.period, at, tz),
            Target::Pipeline(_) => None,
        };
        Request {
            trigger: trigger.to_string(),
            scheduled_for: Some(at),
            period,
            rerun_of: None,
            overlap: schedule.overlap,
        }
    }

    fn fire(self: &Arc<Self>, name: &str, request: Request) {
        if let Err(e) = self.submit(name, request) {
            error!(pipeline = %name, error = %e, "scheduled run could not be recorded");
        }
    }

    fn misfire(
        self: &Arc<Self>,
        name: &str,
        target: &Target,
        schedule: &Schedule,
        at: DateTime<Utc>,
        missed: usize,
    ) {
        let outcome = match schedule.misfire {
            Misfire::RunOnce => "run_once",
            Misfire::Skip => "skipped",
        };
        self.runtime
            .metrics
            .schedule
            .misfires
            .get_or_create(&JobOutcomeLabels {
                pipeline: name.to_string(),
                outcome,
            })
            .inc_by(missed.max(1) as u64);
        warn!(pipeline = %name, missed_fire = %rfc3339(at), missed, policy = outcome,
            "fire time missed (daemon down, clock jump or stall)");
        if schedule.misfire == Misfire::RunOnce {
            let request = Self::fire_request(target, schedule, at, "misfire", self.runtime.tz);
            self.fire(name, request);
        }
    }

    async fn run_timer(self: Arc<Self>, name: String, target: Target, schedule: Schedule) {
        info!(pipeline = %name, cron = %schedule.cron, time_zone = %schedule.time_zone,
            overlap = ?schedule.overlap, misfire = ?schedule.misfire, "schedule active");
        let mut last = Utc::now();
        // A fire missed while the daemon was down: the latest fire time before now with no run
        // made at or after it (jobs that never ran have nothing to catch up).
        if let Some(fire) = timer::previous_fire(&schedule, last) {
            match self.runtime.catalog.last_run_made(&name) {
                Ok(Some(made)) if made < rfc3339(fire) => {
                    self.misfire(&name, &target, &schedule, fire, 1);
                }
                Ok(_) => {}
                Err(e) => {
                    error!(pipeline = %name, error = %e, "cannot read the run history for misfires")
                }
            }
        }
        let mut backwards_seen = false;
        loop {
            let now = Utc::now();
            if now + chrono::Duration::seconds(1) < last {
                if !backwards_seen {
                    backwards_seen = true;
                    self.runtime.metrics.schedule.clock_backwards.inc();
                    warn!(pipeline = %name, last_fire = %rfc3339(last), now = %rfc3339(now),
                        "the clock moved backwards: fire times already handled are not fired again");
                }
            } else {
                backwards_seen = false;
            }
            match timer::step(&schedule, last, now) {
                Step::Never => {
                    warn!(pipeline = %name, "schedule has no future fire time");
                    return;
                }
                Step::Wait(nap) => {
                    tokio::select! {
                        () = tokio::time::sleep(nap) => {}
                        () = self.cancel.cancelled() => return,
                    }
                }
                Step::Fire { at, late, skipped } => {
                    last = at;
                    if late {
                        self.misfire(&name, &target, &schedule, at, skipped + 1);
                    } else {
                        if skipped > 0 {
                            self.runtime
                                .metrics
                                .schedule
                                .misfires
                                .get_or_create(&JobOutcomeLabels {
                                    pipeline: name.clone(),
                                    outcome: "skipped",
                                })
                                .inc_by(skipped as u64);
                        }
                        let request =
                            Self::fire_request(&target, &schedule, at, "schedule", self.runtime.tz);
                        self.fire(&name, request);
                    }
                }
            }
        }
    }

    /// Waits until `name` has no run queued, waiting or running in this process (the CLI's
    /// backfill and rerun), calling `progress` on each new status of its runs from `since_id`
    /// on (retries included). Returns those runs, oldest first.
    pub async fn follow(
        &self,
        name: &str,
        since_id: i64,
        mut progress: impl FnMut(&RunRecord),
    ) -> Result<Vec<RunRecord>, CatalogError> {
        let mut seen: HashMap<i64, String> = HashMap::new();
        loop {
            let finished = !self.is_running(name) || self.cancel.is_cancelled();
            let mut records =
                self.runtime
                    .catalog
                    .find_runs(Some(name), None, MAX_QUEUED_PER_JOB * 4)?;
            records.retain(|r| r.id >= since_id);
            records.reverse();
            for r in &records {
                if seen.get(&r.id) != Some(&r.status) {
                    seen.insert(r.id, r.status.clone());
                    progress(r);
                }
            }
            if finished {
                return Ok(records);
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
}
