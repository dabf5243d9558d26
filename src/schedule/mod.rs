//! Cron scheduling and run dispatch inside `backflow serve`.
//!
//! [`Jobs`] is the one place runs start from (schedules and the admin API alike), so its overlap
//! policy holds everywhere: a pipeline or dataset job never runs twice at once — a trigger while
//! it runs is skipped and counted — and at most `max_concurrent_runs` of them run together;
//! extra runs wait for a slot. Pipelines and dataset jobs share one name space.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::Utc;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::config::model::{DatasetJob, Pipeline, Schedule};
use crate::datasets;
use crate::pipeline::{RunOptions, Runtime};

/// What asking for a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Triggered {
    Started,
    AlreadyRunning,
}

/// The pipelines of a daemon and their runs.
pub struct Jobs {
    runtime: Arc<Runtime>,
    pipelines: BTreeMap<String, Arc<Pipeline>>,
    datasets: BTreeMap<String, Arc<DatasetJob>>,
    running: Mutex<HashSet<String>>,
    slots: Arc<Semaphore>,
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

impl Jobs {
    pub fn new(
        runtime: Arc<Runtime>,
        pipelines: Vec<Pipeline>,
        datasets: Vec<DatasetJob>,
        max_concurrent_runs: usize,
        cancel: CancellationToken,
        tracker: TaskTracker,
    ) -> Arc<Jobs> {
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
            running: Mutex::new(HashSet::new()),
            slots: Arc::new(Semaphore::new(max_concurrent_runs.max(1))),
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

    /// The next time a schedule fires after now, in its zone, as RFC 3339.
    pub fn next_fire(schedule: &Schedule) -> Option<String> {
        let now = Utc::now().with_timezone(&schedule.time_zone);
        schedule.parsed.after(&now).next().map(|t| t.to_rfc3339())
    }

    fn running_set(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_running(&self, name: &str) -> bool {
        self.running_set().contains(name)
    }

    /// Starts a run of `name` in the background unless one is in progress. `None` if unknown.
    pub fn trigger(self: &Arc<Self>, name: &str, trigger: &str) -> Option<Triggered> {
        if let Some(job) = self.datasets.get(name) {
            return Some(self.trigger_dataset(Arc::clone(job), trigger));
        }
        let pipeline = self.pipelines.get(name)?.clone();
        if !self.running_set().insert(name.to_string()) {
            info!(pipeline = %name, trigger, "run skipped: the previous run is still in progress");
            return Some(Triggered::AlreadyRunning);
        }
        let jobs = Arc::clone(self);
        let trigger = trigger.to_string();
        self.tracker.spawn(async move {
            let permit = tokio::select! {
                permit = jobs.slots.clone().acquire_owned() => permit.ok(),
                () = jobs.cancel.cancelled() => None,
            };
            if permit.is_some() {
                let opts = RunOptions { trigger: trigger.clone(), ..RunOptions::default() };
                match jobs.runtime.run(&pipeline, &opts, &jobs.cancel).await {
                    Ok(s) => info!(
                        pipeline = %pipeline.name, trigger, run = s.run_id, status = %s.status, batches = s.batches,
                        rows_out = s.rows_out, rows_quarantined = s.rows_quarantined, "run finished"
                    ),
                    Err(e) => error!(pipeline = %pipeline.name, trigger, error = %e, retryable = e.retryable(), "run failed"),
                }
            }
            jobs.running_set().remove(&pipeline.name);
        });
        Some(Triggered::Started)
    }

    fn trigger_dataset(self: &Arc<Self>, job: Arc<DatasetJob>, trigger: &str) -> Triggered {
        if !self.running_set().insert(job.name.clone()) {
            info!(job = %job.name, trigger, "refresh skipped: the previous refresh is still in progress");
            return Triggered::AlreadyRunning;
        }
        let jobs = Arc::clone(self);
        let trigger = trigger.to_string();
        self.tracker.spawn(async move {
            let permit = tokio::select! {
                permit = jobs.slots.clone().acquire_owned() => permit.ok(),
                () = jobs.cancel.cancelled() => None,
            };
            if permit.is_some() {
                // A refresh is not interrupted by shutdown: until its pointer is written nothing
                // is visible, and the tracker waits for it within the grace period.
                if let Err(e) = datasets::refresh(&jobs.runtime, &job, &trigger).await {
                    error!(job = %job.name, trigger, error = %e, retryable = e.retryable(), "refresh failed");
                }
            }
            jobs.running_set().remove(&job.name);
        });
        Triggered::Started
    }

    /// Spawns one timer task per scheduled pipeline or dataset job; each fires its cron in its
    /// zone until cancellation. A fire missed while the daemon was down is not made up (the next
    /// run picks up everything pending anyway).
    pub fn start_schedules(self: &Arc<Self>) {
        let pipelines = self
            .pipelines
            .values()
            .map(|p| (p.name.clone(), p.schedule.clone()));
        let datasets = self
            .datasets
            .values()
            .map(|j| (j.name.clone(), j.schedule.clone()));
        for (name, schedule) in pipelines.chain(datasets) {
            let Some(schedule) = schedule else {
                continue;
            };
            let jobs = Arc::clone(self);
            self.tracker.spawn(async move {
                info!(pipeline = %name, cron = %schedule.cron, time_zone = %schedule.time_zone, "schedule active");
                loop {
                    let now = Utc::now().with_timezone(&schedule.time_zone);
                    let Some(next) = schedule.parsed.after(&now).next() else {
                        warn!(pipeline = %name, "schedule has no future fire time");
                        return;
                    };
                    let wait = (next.with_timezone(&Utc) - Utc::now()).to_std().unwrap_or_default();
                    tokio::select! {
                        () = tokio::time::sleep(wait) => { jobs.trigger(&name, "schedule"); }
                        () = jobs.cancel.cancelled() => return,
                    }
                }
            });
        }
    }
}
