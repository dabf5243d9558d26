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
use crate::report::params::{self, Format};
use crate::report::{Report, ReportError};

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
    respond(report, format)
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
    match format {
        Format::Json => Ok(Json(report).into_response()),
        Format::Csv => {
            let body = report
                .to_csv()
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            let name = format!("tencent-{}-{}-{}", report.workspace, report.from, report.to);
            Ok(csv_response(&name, body))
        }
    }
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

fn respond(report: Report, format: Format) -> Result<Response, ReportApiError> {
    match format {
        Format::Json => Ok(Json(report).into_response()),
        Format::Csv => {
            let body = report
                .to_csv()
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            let name = format!(
                "ad-monitoring-{}-{}-{}",
                report.workspace, report.from, report.to
            );
            Ok(csv_response(&name, body))
        }
    }
}
