//! Cron scheduling and run dispatch inside `backflow serve`.
//!
//! [`Jobs`] is the one place runs start from (schedules and the admin API alike), so its overlap
//! policy holds everywhere: a pipeline never runs twice at once — a trigger while it runs is
//! skipped and counted — and at most `max_concurrent_runs` pipelines run together; extra runs
//! wait for a slot.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::Utc;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::config::model::Pipeline;
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
    running: Mutex<HashSet<String>>,
    slots: Arc<Semaphore>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs")
            .field("pipelines", &self.pipelines.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Jobs {
    pub fn new(
        runtime: Arc<Runtime>,
        pipelines: Vec<Pipeline>,
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

    fn running_set(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_running(&self, name: &str) -> bool {
        self.running_set().contains(name)
    }

    /// Starts a run of `name` in the background unless one is in progress. `None` if unknown.
    pub fn trigger(self: &Arc<Self>, name: &str, trigger: &str) -> Option<Triggered> {
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

    /// Spawns one timer task per scheduled pipeline; each fires its cron in its zone until
    /// cancellation. A fire missed while the daemon was down is not made up (the next run picks
    /// up everything pending anyway).
    pub fn start_schedules(self: &Arc<Self>) {
        for pipeline in self.pipelines.values() {
            let Some(schedule) = pipeline.schedule.clone() else {
                continue;
            };
            let jobs = Arc::clone(self);
            let name = pipeline.name.clone();
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
