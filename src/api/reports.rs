//! Report routes of the admin API: `/api/v1/workspaces/{ws}/reports/…`.
//!
//! Every route checks the token first (any role may read reports) and then its workspace scope:
//! a token scoped to another workspace gets 403 before anything is read or computed.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::{ApiError, AppState, authorize};
use crate::catalog::{Role, TokenInfo};
use crate::report::ReportError;
use crate::report::downloads::DownloadInput;
use crate::report::params::{self, Format};

/// The report routes (merged into the admin router).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/workspaces/{ws}/reports/ad-monitoring",
            get(ad_monitoring),
        )
        .route("/api/v1/workspaces/{ws}/reports/tencent", get(tencent))
        .route("/api/v1/workspaces/{ws}/reports/dashboard", get(dashboard))
        .route("/api/v1/workspaces/{ws}/reports/overview", get(overview))
        .route("/api/v1/workspaces/{ws}/reports/resources", get(resources))
        .route(
            "/api/v1/workspaces/{ws}/downloads",
            get(list_downloads).post(create_download),
        )
        .route("/api/v1/downloads/{id}", get(get_download))
        .route("/api/v1/downloads/{id}/file", get(download_file))
}

/// An error of a report route.
#[derive(Debug)]
pub enum ReportApiError {
    Api(ApiError),
    /// The token is scoped to another workspace.
    OtherWorkspace {
        scoped: String,
        asked: String,
    },
    Report(ReportError),
}

impl From<ApiError> for ReportApiError {
    fn from(e: ApiError) -> Self {
        ReportApiError::Api(e)
    }
}

impl From<ReportError> for ReportApiError {
    fn from(e: ReportError) -> Self {
        ReportApiError::Report(e)
    }
}

impl IntoResponse for ReportApiError {
    fn into_response(self) -> Response {
        let bad = |status: StatusCode, message: String| {
            (status, Json(json!({ "error": message }))).into_response()
        };
        match self {
            ReportApiError::Api(e) => e.into_response(),
            ReportApiError::OtherWorkspace { scoped, asked } => bad(
                StatusCode::FORBIDDEN,
                format!("this token is scoped to workspace `{scoped}` and may not read `{asked}`"),
            ),
            ReportApiError::Report(ReportError::Invalid(m)) => bad(StatusCode::BAD_REQUEST, m),
            ReportApiError::Report(ReportError::NotFound(m)) => bad(StatusCode::NOT_FOUND, m),
            ReportApiError::Report(e) => ApiError::Internal(e.to_string()).into_response(),
        }
    }
}

/// Checks the token may read reports of `workspace`.
pub(crate) fn authorize_workspace(
    state: &AppState,
    headers: &HeaderMap,
    workspace: &str,
    required: Role,
) -> Result<TokenInfo, ReportApiError> {
    let info = authorize(state, headers, required)?;
    match &info.workspace {
        Some(scoped) if scoped != workspace => Err(ReportApiError::OtherWorkspace {
            scoped: scoped.clone(),
            asked: workspace.to_string(),
        }),
        _ => Ok(info),
    }
}

/// A CSV download.
pub(crate) fn csv_response(name: &str, body: Vec<u8>) -> Response {
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}.csv\""),
            ),
        ],
        body,
    )
        .into_response()
}

async fn ad_monitoring(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(ws): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, ReportApiError> {
    authorize_workspace(&state, &headers, &ws, Role::ReadOnly)?;
    let reports = &state.reports;
    let (q, format) = params::ad_monitoring(&ws, &pairs, reports.today())?;
    let report = reports.ad_monitoring(&q).await?;
    let name = format!(
        "ad-monitoring-{}-{}-{}",
        report.workspace, report.from, report.to
    );
    respond(&report, format, &name, || report.to_csv())
}

async fn tencent(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(ws): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, ReportApiError> {
    authorize_workspace(&state, &headers, &ws, Role::ReadOnly)?;
    let reports = &state.reports;
    let (q, format) = params::tencent(&ws, &pairs, reports.today())?;
    let report = reports.tencent(&q).await?;
    let name = format!("tencent-{}-{}-{}", report.workspace, report.from, report.to);
    respond(&report, format, &name, || report.to_csv())
}

async fn dashboard(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(ws): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, ReportApiError> {
    authorize_workspace(&state, &headers, &ws, Role::ReadOnly)?;
    let q = params::dashboard(&ws, &pairs, state.reports.today())?;
    Ok(Json(state.reports.dashboard(&q).await?).into_response())
}

async fn overview(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(ws): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, ReportApiError> {
    authorize_workspace(&state, &headers, &ws, Role::ReadOnly)?;
    let range = params::overview(&pairs, state.reports.today())?;
    Ok(Json(state.reports.overview(&ws, range)?).into_response())
}

async fn resources(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(ws): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, ReportApiError> {
    authorize_workspace(&state, &headers, &ws, Role::ReadOnly)?;
    let range = params::resources(&pairs, state.reports.today())?;
    Ok(Json(state.reports.resources(&ws, range)?).into_response())
}

/// A report as JSON, or its detail table as a CSV download named `name`.
fn respond<R: serde::Serialize>(
    report: &R,
    format: Format,
    name: &str,
    csv: impl FnOnce() -> Result<Vec<u8>, csv::Error>,
) -> Result<Response, ReportApiError> {
    match format {
        Format::Json => Ok(Json(report).into_response()),
        Format::Csv => {
            let body = csv().map_err(|e| ApiError::Internal(e.to_string()))?;
            Ok(csv_response(name, body))
        }
    }
}

async fn create_download(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(ws): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ReportApiError> {
    let info = authorize_workspace(&state, &headers, &ws, Role::Analyst)?;
    let input: DownloadInput =
        serde_json::from_slice(&body).map_err(|e| ReportError::Invalid(format!("body: {e}")))?;
    let task = state
        .reports
        .queue_download(&ws, input, &format!("token:{}", info.id))?;
    Ok((StatusCode::ACCEPTED, Json(task)).into_response())
}

async fn list_downloads(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(ws): Path<String>,
) -> Result<Response, ReportApiError> {
    authorize_workspace(&state, &headers, &ws, Role::ReadOnly)?;
    let tasks = state
        .reports
        .catalog
        .downloads(&ws)
        .map_err(ReportError::from)?;
    Ok(Json(tasks).into_response())
}

fn task_for(
    state: &AppState,
    headers: &HeaderMap,
    id: i64,
) -> Result<crate::catalog::Download, ReportApiError> {
    let info = authorize(state, headers, Role::ReadOnly)?;
    let task = match state.reports.catalog.download(id) {
        Ok(t) => t,
        Err(crate::catalog::CatalogError::NotFound(m)) => {
            return Err(ReportError::NotFound(m).into());
        }
        Err(e) => return Err(ReportError::from(e).into()),
    };
    match &info.workspace {
        // Another workspace's task does not exist for this token.
        Some(scoped) if *scoped != task.workspace => {
            Err(ReportError::NotFound(format!("download {id}")).into())
        }
        _ => Ok(task),
    }
}

async fn get_download(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Response, ReportApiError> {
    Ok(Json(task_for(&state, &headers, id)?).into_response())
}

async fn download_file(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Response, ReportApiError> {
    let task = task_for(&state, &headers, id)?;
    let bad = |status: StatusCode, message: String| {
        (status, Json(json!({ "error": message }))).into_response()
    };
    if task.status != "succeeded" {
        return Ok(bad(
            StatusCode::CONFLICT,
            format!("download {id} is {}, not succeeded", task.status),
        ));
    }
    let Some(file) = task.file else {
        return Ok(bad(
            StatusCode::GONE,
            format!(
                "download {id} expired at {}",
                task.expires_at.unwrap_or_default()
            ),
        ));
    };
    // Streamed: an archive of a month of clicks need not fit in memory.
    let path = state.reports.downloads_dir.join(&file);
    let opened = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        // Expired between the check and the open.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(bad(StatusCode::GONE, format!("download {id} expired")));
        }
        Err(e) => return Err(ApiError::Internal(format!("reading download {id}: {e}")).into()),
    };
    let length = opened
        .metadata()
        .await
        .map_err(|e| ApiError::Internal(format!("reading download {id}: {e}")))?
        .len();
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(opened));
    Ok((
        [
            (header::CONTENT_TYPE, "application/gzip".to_string()),
            (header::CONTENT_LENGTH, length.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"clicks-{}-{id}.tar.gz\"",
                    task.workspace
                ),
            ),
        ],
        body,
    )
        .into_response())
}
