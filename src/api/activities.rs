//! Admin API for monitoring activities (监测活动) and Tencent feedback tasks.
//!
//! Collections live under a workspace (`/api/v1/workspaces/{ws}/activities`), single resources
//! under their global id (`/api/v1/activities/{id}`), so a link id or an activity id is enough
//! to act on it. Roles: `workspace_admin` and `org_admin` write, every role reads. A token
//! scoped to a workspace gets `403` on another workspace's collections and `404` on its
//! resources (ids of other workspaces are not revealed). `org_admin` and unscoped tokens see
//! every workspace.
//!
//! Request bodies are JSON, at most 64 KiB (256 KiB for a batch create), unknown keys refused. Every error is JSON
//! `{"error": "…", "field": "…"}` (`field` when the error is about one input field):
//! `400` malformed body, `422` invalid value, `409` name taken, `404` unknown id, `413` body
//! too large. Every change is audited as `token:{id}` and is visible to the public endpoints
//! before the answer (the link table is reloaded).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::error;

use super::{ApiError, AppState, authorize};
use crate::catalog::{Role, TokenInfo};
use crate::collect::service::{
    ActivityInput, ActivityService, BatchInput, CsvFlavor, EditInput, FeedbackInput, RenameInput,
    ServiceError, SwitchInput,
};

/// A batch of 500 names of 100 Chinese characters is ~150 KB of JSON: more than the 64 KiB
/// every other admin body may have.
const BATCH_BODY_LIMIT: usize = 256 * 1024;

/// The routes of this module (merged into the admin listener).
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/media", get(list_media))
        .route(
            "/api/v1/workspaces/{ws}/activities",
            get(list_activities).post(create_activity),
        )
        .route(
            "/api/v1/workspaces/{ws}/activities/batch",
            post(create_batch).layer(DefaultBodyLimit::max(BATCH_BODY_LIMIT)),
        )
        .route(
            "/api/v1/workspaces/{ws}/activities/links.csv",
            get(export_links),
        )
        .route(
            "/api/v1/activities/{id}",
            get(get_activity).patch(edit_activity),
        )
        .route("/api/v1/activities/{id}/switch", post(switch_activity))
        .route("/api/v1/activities/{id}/links", get(activity_links))
        .route(
            "/api/v1/workspaces/{ws}/feedback-tasks",
            get(list_feedback).post(create_feedback),
        )
        .route(
            "/api/v1/feedback-tasks/{id}",
            get(get_feedback).patch(rename_feedback),
        )
        .route("/api/v1/feedback-tasks/{id}/switch", post(switch_feedback))
}

/// An error answer of this module.
#[derive(Debug)]
pub(super) enum AdminError {
    Api(ApiError),
    Service(ServiceError),
    BadRequest {
        field: Option<String>,
        message: String,
    },
    OtherWorkspace(String),
    TooLarge,
    Unavailable,
}

impl From<ApiError> for AdminError {
    fn from(e: ApiError) -> Self {
        AdminError::Api(e)
    }
}

impl From<ServiceError> for AdminError {
    fn from(e: ServiceError) -> Self {
        AdminError::Service(e)
    }
}

fn error_body(status: StatusCode, message: String, field: Option<String>) -> Response {
    let body = match field {
        Some(field) => json!({ "error": message, "field": field }),
        None => json!({ "error": message }),
    };
    (status, Json(body)).into_response()
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        match self {
            AdminError::Api(e) => e.into_response(),
            AdminError::Service(e) => {
                let field = e.field().map(str::to_string);
                let status = match &e {
                    ServiceError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                    ServiceError::Conflict { .. } => StatusCode::CONFLICT,
                    ServiceError::NotFound(_) => StatusCode::NOT_FOUND,
                    ServiceError::Catalog(inner) => {
                        error!(error = %inner, "catalog error answering an admin request");
                        return error_body(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "internal error; see the daemon log".into(),
                            None,
                        );
                    }
                };
                error_body(status, e.to_string(), field)
            }
            AdminError::BadRequest { field, message } => {
                error_body(StatusCode::BAD_REQUEST, message, field)
            }
            AdminError::OtherWorkspace(ws) => error_body(
                StatusCode::FORBIDDEN,
                format!("this token is scoped to workspace `{ws}`"),
                None,
            ),
            AdminError::TooLarge => error_body(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "request body too large (at most {} KiB; {} KiB for a batch create)",
                    super::BODY_LIMIT / 1024,
                    BATCH_BODY_LIMIT / 1024
                ),
                None,
            ),
            AdminError::Unavailable => error_body(
                StatusCode::SERVICE_UNAVAILABLE,
                "monitoring links are off on this daemon (no schemas/media.yaml)".into(),
                None,
            ),
        }
    }
}

type Answer = Result<Response, AdminError>;

fn service(state: &AppState) -> Result<&Arc<ActivityService>, AdminError> {
    state.activities.as_ref().ok_or(AdminError::Unavailable)
}

/// The workspaces a token may see: `None` = all (org admins and unscoped tokens).
pub(super) fn scope(info: &TokenInfo) -> Option<&str> {
    if info.role == Role::OrgAdmin {
        None
    } else {
        info.workspace.as_deref()
    }
}

pub(super) fn actor(info: &TokenInfo) -> String {
    format!("token:{}", info.id)
}

/// Authorizes `required` on the workspace `ws`.
fn authorize_in(
    state: &AppState,
    headers: &HeaderMap,
    required: Role,
    ws: &str,
) -> Result<TokenInfo, AdminError> {
    let info = authorize(state, headers, required)?;
    match scope(&info) {
        Some(own) if own != ws => Err(AdminError::OtherWorkspace(own.to_string())),
        _ => Ok(info),
    }
}

fn parse_id(raw: &str, what: &str) -> Result<i64, AdminError> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| AdminError::Service(ServiceError::NotFound(format!("{what} `{raw}`"))))
}

/// Parses a JSON body; errors name the offending key.
pub(super) fn body<T: DeserializeOwned>(
    raw: Result<Bytes, BytesRejection>,
) -> Result<T, AdminError> {
    let bytes = raw.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AdminError::TooLarge
        } else {
            AdminError::BadRequest {
                field: None,
                message: r.body_text(),
            }
        }
    })?;
    let de = &mut serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        // The path of an unknown key ends at the key; a missing key is named by the message
        // only (`missing field `x``), at the path of its object.
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next());
        let field = match (path.as_str(), missing) {
            (".", Some(key)) => Some(key.to_string()),
            (".", None) => None,
            (path, Some(key)) => Some(format!("{path}.{key}")),
            (path, None) => Some(path.to_string()),
        };
        AdminError::BadRequest {
            field,
            message: format!("invalid JSON body: {message}"),
        }
    })
}

fn created(value: impl serde::Serialize) -> Answer {
    Ok((StatusCode::CREATED, Json(value)).into_response())
}

async fn list_media(State(state): State<AppState>, headers: HeaderMap) -> Answer {
    authorize(&state, &headers, Role::ReadOnly)?;
    let registry = service(&state)?.registry();
    let media: Vec<_> = registry
        .media()
        .map(|m| {
            json!({
                "id": m.id,
                "name": m.name,
                "name_en": m.name_en,
                "templates": m.protocols().map(|p| json!({
                    "id": p.id,
                    "description": p.description,
                    "feedback": p.feedback,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(json!({ "media": media })).into_response())
}

async fn list_activities(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(ws): Path<String>,
) -> Answer {
    authorize_in(&state, &headers, Role::ReadOnly, &ws)?;
    let list = service(&state)?.list(&ws)?;
    Ok(Json(json!({ "activities": list })).into_response())
}

async fn create_activity(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(ws): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Answer {
    let who = authorize_in(&state, &headers, Role::WorkspaceAdmin, &ws)?;
    let input: ActivityInput = body(raw)?;
    created(service(&state)?.create(&ws, input, &actor(&who))?)
}

async fn create_batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(ws): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Answer {
    let who = authorize_in(&state, &headers, Role::WorkspaceAdmin, &ws)?;
    let input: BatchInput = body(raw)?;
    let list = service(&state)?.create_batch(&ws, input, &actor(&who))?;
    created(json!({ "activities": list }))
}

async fn export_links(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(ws): Path<String>,
    RawQuery(query): RawQuery,
) -> Answer {
    authorize_in(&state, &headers, Role::ReadOnly, &ws)?;
    let mut ids = None;
    let mut flavor = CsvFlavor::Excel;
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "ids" => {
                let parsed: Result<Vec<i64>, _> = value
                    .split(',')
                    .filter(|s| !s.trim().is_empty())
                    .map(|s| s.trim().parse::<i64>())
                    .collect();
                ids = Some(parsed.map_err(|_| AdminError::BadRequest {
                    field: Some("ids".into()),
                    message: format!("ids: expected comma-separated activity ids, found `{value}`"),
                })?);
            }
            "format" => {
                flavor = match value.as_ref() {
                    "excel" => CsvFlavor::Excel,
                    "plain" => CsvFlavor::Plain,
                    other => {
                        return Err(AdminError::BadRequest {
                            field: Some("format".into()),
                            message: format!(
                                "format: expected `excel` or `plain`, found `{other}`"
                            ),
                        });
                    }
                }
            }
            other => {
                return Err(AdminError::BadRequest {
                    field: Some(other.to_string()),
                    message: format!("unknown query parameter `{other}`; expected ids, format"),
                });
            }
        }
    }
    let csv = service(&state)?.links_csv(&ws, ids.as_deref(), flavor)?;
    let mut response = ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], csv).into_response();
    // RFC 6266: an ASCII fallback name plus the UTF-8 one (workspace names may be Chinese).
    let encoded: String = url::form_urlencoded::byte_serialize(ws.as_bytes()).collect();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"links.csv\"; filename*=UTF-8''links-{}.csv",
        encoded.replace('+', "%20")
    )) {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

async fn get_activity(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    let who = authorize(&state, &headers, Role::ReadOnly)?;
    let id = parse_id(&id, "activity")?;
    Ok(Json(service(&state)?.get(id, scope(&who))?).into_response())
}

async fn activity_links(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    let who = authorize(&state, &headers, Role::ReadOnly)?;
    let id = parse_id(&id, "activity")?;
    let a = service(&state)?.get(id, scope(&who))?;
    Ok(Json(json!({
        "id": a.activity.id,
        "name": a.activity.name,
        "status": a.activity.status,
        "impression_url": a.impression_url,
        "click_url": a.click_url,
    }))
    .into_response())
}

async fn edit_activity(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Answer {
    let who = authorize(&state, &headers, Role::WorkspaceAdmin)?;
    let id = parse_id(&id, "activity")?;
    let input: EditInput = body(raw)?;
    let view = service(&state)?.edit(id, input, scope(&who), &actor(&who))?;
    Ok(Json(view).into_response())
}

async fn switch_activity(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Answer {
    let who = authorize(&state, &headers, Role::WorkspaceAdmin)?;
    let id = parse_id(&id, "activity")?;
    let input: SwitchInput = body(raw)?;
    let view = service(&state)?.switch(id, input.status, scope(&who), &actor(&who))?;
    Ok(Json(view).into_response())
}

async fn list_feedback(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(ws): Path<String>,
) -> Answer {
    authorize_in(&state, &headers, Role::ReadOnly, &ws)?;
    let list = service(&state)?.list_feedback(&ws)?;
    Ok(Json(json!({ "feedback_tasks": list })).into_response())
}

async fn create_feedback(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(ws): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Answer {
    let who = authorize_in(&state, &headers, Role::WorkspaceAdmin, &ws)?;
    let input: FeedbackInput = body(raw)?;
    created(service(&state)?.create_feedback(&ws, input, &actor(&who))?)
}

async fn get_feedback(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    let who = authorize(&state, &headers, Role::ReadOnly)?;
    let id = parse_id(&id, "feedback task")?;
    Ok(Json(service(&state)?.get_feedback(id, scope(&who))?).into_response())
}

async fn rename_feedback(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Answer {
    let who = authorize(&state, &headers, Role::WorkspaceAdmin)?;
    let id = parse_id(&id, "feedback task")?;
    let input: RenameInput = body(raw)?;
    let view = service(&state)?.rename_feedback(id, input, scope(&who), &actor(&who))?;
    Ok(Json(view).into_response())
}

async fn switch_feedback(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Answer {
    let who = authorize(&state, &headers, Role::WorkspaceAdmin)?;
    let id = parse_id(&id, "feedback task")?;
    let input: SwitchInput = body(raw)?;
    let view = service(&state)?.switch_feedback(id, input.status, scope(&who), &actor(&who))?;
    Ok(Json(view).into_response())
}
