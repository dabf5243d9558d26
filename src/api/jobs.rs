//! Pipelines, dataset jobs and their runs: schedules with their next fire times and policies,
//! the run history (queued, waiting, running, and how runs ended, with the reason), and the
//! operations — run now, backfill a date range, rerun a failed run (`schedule::Jobs`).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::NaiveDate;
use serde::Deserialize;
use serde_json::{Value, json};

use super::activities::{AdminError, actor, body, scope};
use super::{ApiError, AppState, authorize};
use crate::catalog::{CatalogError, Role, TokenInfo};
use crate::collect::service::ServiceError;
use crate::config::model::{DatasetJob, Schedule};
use crate::schedule::{Jobs, RequestError, Triggered};

/// Next fire times listed per schedule.
const NEXT_FIRES: usize = 3;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/pipelines", get(list_pipelines))
        .route("/api/v1/pipelines/{name}/runs", post(trigger_run))
        .route("/api/v1/jobs", get(list_jobs))
        .route("/api/v1/jobs/{name}/runs", post(trigger_run))
        .route("/api/v1/jobs/{name}/backfill", post(backfill))
        .route("/api/v1/runs", get(list_runs))
        .route("/api/v1/runs/{id}", get(get_run))
        .route("/api/v1/runs/{id}/rerun", post(rerun))
}

type Answer = Result<Response, AdminError>;

fn internal(e: CatalogError) -> AdminError {
    AdminError::Api(ApiError::Internal(e.to_string()))
}

fn request_error(e: RequestError) -> AdminError {
    match e {
        RequestError::UnknownJob(_) | RequestError::UnknownRun(_) => AdminError::Service(
            ServiceError::NotFound(e.to_string().replace(" not found", "")),
        ),
        RequestError::Invalid(message) => AdminError::Service(ServiceError::Invalid {
            field: None,
            message,
        }),
        RequestError::QueueFull(_) => AdminError::Service(ServiceError::Conflict {
            field: "name".into(),
            message: e.to_string(),
        }),
        RequestError::Catalog(e) => internal(e),
    }
}

/// A job's schedule with its policies and next fire times.
fn schedule_json(s: &Schedule) -> Value {
    json!({
        "cron": s.cron,
        "time_zone": s.time_zone.name(),
        "overlap": s.overlap,
        "misfire": s.misfire,
        "retries": s.retries,
        "workspace": s.workspace,
        "next_fire_times": Jobs::next_fires(s, NEXT_FIRES),
    })
}

fn refresh_json(j: &DatasetJob) -> Value {
    json!({
        "period": j.refresh.period,
        "wait_for_sources": j.refresh.wait_for_sources.map(|w| json!({
            "timeout_ms": w.timeout.as_millis() as u64,
            "poll_interval_ms": w.poll_interval.as_millis() as u64,
        })),
    })
}

/// A token scoped to a workspace acts only on that workspace's jobs.
fn check_workspace(state: &AppState, who: &TokenInfo, name: &str) -> Result<(), AdminError> {
    let Some(ws) = state.jobs.workspace_of(name) else {
        return Err(AdminError::Service(ServiceError::NotFound(format!(
            "pipeline or dataset job `{name}`"
        ))));
    };
    match scope(who) {
        Some(own) if own != ws => Err(AdminError::OtherWorkspace(own.to_string())),
        _ => Ok(()),
    }
}

async fn list_pipelines(State(state): State<AppState>, headers: HeaderMap) -> Answer {
    authorize(&state, &headers, Role::ReadOnly)?;
    let catalog = &state.jobs.runtime().catalog;
    let mut out = Vec::new();
    for p in state.jobs.pipelines() {
        let last_run = catalog
            .recent_runs(Some(&p.name), 1)
            .map_err(internal)?
            .into_iter()
            .next();
        let committed = catalog.committed_batches(&p.name).map_err(internal)?;
        out.push(json!({
            "name": p.name,
            "description": p.description,
            "file": p.file.display().to_string(),
            "workspace": state.jobs.workspace_of(&p.name),
            "schedule": p.schedule.as_ref().map(schedule_json),
            "next_run_at": p.schedule.as_ref().and_then(Jobs::next_fire),
            "running": state.jobs.is_running(&p.name),
            "active_runs": state.jobs.active_runs(&p.name),
            "watermark": catalog.watermark(&p.name).map_err(internal)?,
            "committed_batches": committed,
            "last_run": last_run,
        }));
    }
    Ok(Json(json!({ "pipelines": out })).into_response())
}

/// Dataset jobs: schedule and next fire times, refresh period, the published version, the
/// last run.
async fn list_jobs(State(state): State<AppState>, headers: HeaderMap) -> Answer {
    authorize(&state, &headers, Role::ReadOnly)?;
    let catalog = &state.jobs.runtime().catalog;
    let mut out = Vec::new();
    for j in state.jobs.datasets() {
        let last_run = catalog
            .recent_runs(Some(&j.name), 1)
            .map_err(internal)?
            .into_iter()
            .next();
        let versions = catalog.dataset_versions(j.output(), 50).map_err(internal)?;
        let current = versions.iter().find(|v| v.deleted_at.is_none()).cloned();
        let kept = versions.iter().filter(|v| v.deleted_at.is_none()).count();
        out.push(json!({
            "name": j.name,
            "kind": "dataset",
            "description": j.description,
            "file": j.file.display().to_string(),
            "dataset": j.output(),
            "workspace": state.jobs.workspace_of(&j.name),
            "schedule": j.schedule.as_ref().map(schedule_json),
            "next_run_at": j.schedule.as_ref().and_then(Jobs::next_fire),
            "refresh": refresh_json(j),
            "keep_versions": j.publish.keep_versions.get(),
            "running": state.jobs.is_running(&j.name),
            "active_runs": state.jobs.active_runs(&j.name),
            "current_version": current,
            "kept_versions": kept,
            "last_run": last_run,
        }));
    }
    Ok(Json(json!({ "jobs": out })).into_response())
}

async fn trigger_run(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Answer {
    let who = authorize(&state, &headers, Role::WorkspaceAdmin)?;
    check_workspace(&state, &who, &name)?;
    let outcome = state
        .jobs
        .trigger(&name, "api")
        .ok_or_else(|| ApiError::NotFound(format!("no pipeline or dataset job named `{name}`")))?;
    let catalog = &state.jobs.runtime().catalog;
    catalog
        .audit(&actor(&who), "pipeline.run", &name)
        .map_err(internal)?;
    let status = match outcome {
        Triggered::Started => StatusCode::ACCEPTED,
        Triggered::AlreadyRunning => StatusCode::CONFLICT,
    };
    Ok((
        status,
        Json(json!({ "pipeline": name, "outcome": outcome })),
    )
        .into_response())
}

/// `POST /api/v1/jobs/{name}/backfill`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackfillInput {
    /// First local date (`YYYY-MM-DD`, the daemon's time zone).
    #[schemars(with = "String")]
    pub from: NaiveDate,
    /// Last local date, inclusive.
    #[schemars(with = "String")]
    pub to: NaiveDate,
    /// Also rebuild periods that already succeeded.
    #[serde(default)]
    pub force: bool,
}

async fn backfill(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Answer {
    let who = authorize(&state, &headers, Role::WorkspaceAdmin)?;
    check_workspace(&state, &who, &name)?;
    let input: BackfillInput = body(raw)?;
    let plan = state
        .jobs
        .backfill(&name, input.from, input.to, input.force)
        .map_err(request_error)?;
    state
        .jobs
        .runtime()
        .catalog
        .audit(
            &actor(&who),
            "job.backfill",
            &format!(
                "{name} {}..{}{} ({} run(s), {} skipped)",
                input.from,
                input.to,
                if input.force { " force" } else { "" },
                plan.runs.len(),
                plan.skipped.len()
            ),
        )
        .map_err(internal)?;
    Ok((StatusCode::ACCEPTED, Json(plan)).into_response())
}

#[derive(Debug, Deserialize)]
struct RunsQuery {
    pipeline: Option<String>,
    status: Option<String>,
    limit: Option<usize>,
}

async fn list_runs(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<RunsQuery>,
) -> Answer {
    authorize(&state, &headers, Role::ReadOnly)?;
    const STATUSES: [&str; 7] = [
        "queued",
        "waiting",
        "running",
        "succeeded",
        "failed",
        "cancelled",
        "timed_out",
    ];
    if let Some(status) = q.status.as_deref().filter(|s| !STATUSES.contains(s)) {
        return Err(AdminError::BadRequest {
            field: Some("status".into()),
            message: format!(
                "unknown status `{status}`, expected one of {}",
                STATUSES.join(", ")
            ),
        });
    }
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    let runs = state
        .jobs
        .runtime()
        .catalog
        .find_runs(q.pipeline.as_deref(), q.status.as_deref(), limit)
        .map_err(internal)?;
    Ok(Json(json!({ "runs": runs })).into_response())
}

fn run_id(raw: &str) -> Result<i64, AdminError> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| AdminError::Service(ServiceError::NotFound(format!("run `{raw}`"))))
}

async fn get_run(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    authorize(&state, &headers, Role::ReadOnly)?;
    let id = run_id(&id)?;
    let run = state
        .jobs
        .runtime()
        .catalog
        .run(id)
        .map_err(internal)?
        .ok_or_else(|| AdminError::Service(ServiceError::NotFound(format!("run {id}"))))?;
    Ok(Json(run).into_response())
}

async fn rerun(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    let who = authorize(&state, &headers, Role::WorkspaceAdmin)?;
    let id = run_id(&id)?;
    let run = state
        .jobs
        .runtime()
        .catalog
        .run(id)
        .map_err(internal)?
        .ok_or_else(|| AdminError::Service(ServiceError::NotFound(format!("run {id}"))))?;
    check_workspace(&state, &who, &run.pipeline)?;
    let submitted = state.jobs.rerun(id).map_err(request_error)?;
    state
        .jobs
        .runtime()
        .catalog
        .audit(
            &actor(&who),
            "run.rerun",
            &format!("{} run {id} as run {}", run.pipeline, submitted.run_id),
        )
        .map_err(internal)?;
    Ok((StatusCode::ACCEPTED, Json(submitted)).into_response())
}
