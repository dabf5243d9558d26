//! HTTP: the public listener (health, monitoring links) and the admin listener (bearer token
//! with a role; metrics; pipelines, dataset jobs and runs in [`jobs`]; activities and feedback
//! tasks in [`activities`]; the OpenAPI document in [`openapi`]).
//!
//! Every request is counted by listener, matched route and status; bodies are limited to
//! 64 KiB and requests time out after 30 s. Errors are answered as JSON `{"error": …}` and never
//! carry internals.

mod activities;
mod jobs;
mod openapi;
pub mod reports;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tower_http::timeout::TimeoutLayer;
use tracing::error;

use crate::catalog::{Role, TokenInfo};
use crate::collect::service::ActivityService;
use crate::schedule::Jobs;
use crate::telemetry::HttpLabels;

const BODY_LIMIT: usize = 64 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Shared state of both listeners.
#[derive(Clone, Debug)]
pub struct AppState {
    pub jobs: Arc<Jobs>,
    /// Activities and feedback tasks (`None` when monitoring links are off: no media registry).
    pub activities: Option<Arc<ActivityService>>,
    /// Report queries over the lake and catalog (keeps read commit manifests).
    pub reports: Arc<crate::report::Reports>,
    /// The collection endpoints' Kafka journal (`journal.kind: kafka`), for `/readyz`.
    pub kafka_journal: Option<Arc<crate::collect::appender::KafkaJournal>>,
}

/// An error answer. Internal errors are logged once here and answered without detail.
#[derive(Debug)]
pub enum ApiError {
    Unauthorized,
    Forbidden(Role),
    NotFound(String),
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "a valid bearer token is required".to_string(),
            ),
            ApiError::Forbidden(role) => (
                StatusCode::FORBIDDEN,
                format!("this needs the role {role} or higher"),
            ),
            ApiError::NotFound(what) => (StatusCode::NOT_FOUND, what),
            ApiError::Internal(detail) => {
                error!(error = %detail, "internal error answering an admin request");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error; see the daemon log".to_string(),
                )
            }
        };
        let mut response = (status, Json(json!({ "error": message }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// The public listener's routes: health, plus the monitoring-link endpoints when collection is on.
pub fn public_app(state: AppState, collect: Option<Router>) -> Router {
    let mut router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state.clone());
    if let Some(collect) = collect {
        router = router.merge(collect);
    }
    router
        .layer(middleware::from_fn_with_state(
            (state, "public"),
            count_requests,
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
}

/// The admin listener's routes.
pub fn admin_app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/whoami", get(whoami))
        .route("/openapi.json", get(openapi_document))
        .merge(jobs::routes())
        .merge(activities::routes())
        .merge(reports::routes())
        .layer(middleware::from_fn_with_state(
            (state.clone(), "admin"),
            count_requests,
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

async fn count_requests(
    State((state, listener)): State<(AppState, &'static str)>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let response = next.run(request).await;
    let labels = HttpLabels {
        listener,
        route,
        status: response.status().as_u16(),
    };
    state
        .jobs
        .runtime()
        .metrics
        .http_requests
        .get_or_create(&labels)
        .inc();
    response
}

async fn openapi_document() -> Json<serde_json::Value> {
    Json(openapi::document())
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state.jobs.runtime().catalog.has_tokens() {
        // The Kafka journal's state is reported, not gated on: while the broker is away clicks
        // still redirect (fallback file), and a load balancer that dropped an unready collector
        // would strand them instead.
        Ok(_) => match &state.kafka_journal {
            Some(k) => (
                StatusCode::OK,
                format!(
                    "ready\njournal: kafka {} (topic {})\n",
                    k.state().as_str(),
                    k.topic()
                ),
            )
                .into_response(),
            None => (StatusCode::OK, "ready\n").into_response(),
        },
        Err(e) => {
            error!(error = %e, "readiness check: catalog unavailable");
            (StatusCode::SERVICE_UNAVAILABLE, "catalog unavailable\n").into_response()
        }
    }
}

/// Checks the bearer token and that its role allows `required`.
fn authorize(state: &AppState, headers: &HeaderMap, required: Role) -> Result<TokenInfo, ApiError> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let runtime = state.jobs.runtime();
    let info = match presented {
        Some(token) => runtime
            .catalog
            .verify_token(token)
            .map_err(|e| ApiError::Internal(e.to_string()))?,
        None => None,
    };
    let Some(info) = info else {
        runtime.metrics.auth_failures.inc();
        return Err(ApiError::Unauthorized);
    };
    if !info.role.allows(required) {
        return Err(ApiError::Forbidden(required));
    }
    Ok(info)
}

async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize(&state, &headers, Role::ReadOnly)?;
    let body = state.jobs.runtime().metrics.encode();
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response())
}

async fn whoami(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let info = authorize(&state, &headers, Role::ReadOnly)?;
    Ok(Json(json!({"id": info.id, "role": info.role.as_str(), "workspace": info.workspace, "label": info.label}))
        .into_response())
}
