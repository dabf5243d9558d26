//! The public monitoring-link endpoints: `GET|HEAD /i/{token}` (impressions), `/c/{token}`
//! (clicks) and `/fb/{token}` (Tencent feedback tasks: server-to-server clicks answered with
//! Tencent's `{"ret":0,…}` body; billable like clicks).
//!
//! A hit is verified (signed token, known link), stamped (UUIDv7, receive time), appended to the
//! journal and only then answered, in the way its media expects: a GIF or `204` for
//! impressions; a `302` to the activity's own landing URL for device clicks; `200` with the
//! media's body for server-to-server calls. When the journal cannot accept, an impression gets
//! `503` + `Retry-After`, while a click still redirects the user — the hit is written to a local
//! fallback file and counted. Every outcome is a bounded metric label.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use tracing::{error, warn};

use crate::catalog::ActivityStatus;
use crate::collect::appender::{AppendError, Appender};
use crate::collect::hit::{GIF_1X1, HitRecord, RECORD_VERSION};
use crate::collect::limit::{Limited, RateLimiter};
use crate::collect::link::{Endpoint, LinkSigner};
use crate::collect::links::{Answer, LinkCache, LinkTarget};
use crate::journal::Journal;
use crate::telemetry::{HitLabels, Metrics};

/// What the endpoints share.
#[derive(Clone)]
pub struct CollectState {
    pub signer: Arc<LinkSigner>,
    pub links: LinkCache,
    pub journal: Journal,
    /// Where hits are appended: `journal` itself, or the Kafka journal (`journal.kind`).
    pub appender: Appender,
    pub metrics: Arc<Metrics>,
    /// Longest accepted path + query.
    pub max_url_bytes: usize,
    /// Where clicks go when the journal cannot take them.
    pub fallback_dir: PathBuf,
    /// Per-address and global hit rates.
    pub limiter: Arc<RateLimiter>,
}

impl std::fmt::Debug for CollectState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CollectState")
            .field("links", &self.links.len())
            .finish()
    }
}

/// The collection routes (merged into the public listener).
pub fn routes(state: CollectState) -> Router {
    Router::new()
        .route("/i/{token}", get(impression))
        .route("/c/{token}", get(click))
        .route("/fb/{token}", get(feedback))
        .with_state(state)
}

async fn impression(
    State(state): State<CollectState>,
    Path(token): Path<String>,
    request: Request,
) -> Response {
    handle(&state, Endpoint::Impression, &token, request).await
}

async fn click(
    State(state): State<CollectState>,
    Path(token): Path<String>,
    request: Request,
) -> Response {
    handle(&state, Endpoint::Click, &token, request).await
}

/// Tencent's Feedback URL: Tencent's click servers call it with their fixed parameters appended.
async fn feedback(
    State(state): State<CollectState>,
    Path(token): Path<String>,
    request: Request,
) -> Response {
    handle(&state, Endpoint::Feedback, &token, request).await
}

fn endpoint_label(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::Impression => "impression",
        Endpoint::Click => "click",
        Endpoint::Feedback => "feedback",
    }
}

fn count(state: &CollectState, endpoint: Endpoint, outcome: &'static str) {
    state
        .metrics
        .hits
        .get_or_create(&HitLabels {
            endpoint: endpoint_label(endpoint),
            outcome,
        })
        .inc();
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

async fn handle(
    state: &CollectState,
    endpoint: Endpoint,
    token: &str,
    request: Request,
) -> Response {
    let uri = request.uri();
    let request_query = uri.query().unwrap_or("");
    let target_len = uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    if target_len > state.max_url_bytes {
        count(state, endpoint, "too_long");
        return (StatusCode::URI_TOO_LONG, "request target too long\n").into_response();
    }
    let link_id = match state.signer.verify(token, endpoint) {
        Ok(id) => id,
        Err(rejected) => {
            count(state, endpoint, rejected.label());
            return not_found();
        }
    };
    let Some(target) = state.links.get(link_id).filter(|t| t.endpoint == endpoint) else {
        count(state, endpoint, "unknown_link");
        return not_found();
    };
    if state.limiter.is_active() {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        if let Err(limited) = state.limiter.check(peer) {
            count(
                state,
                endpoint,
                if limited == Limited::PerIp {
                    "rate_limited_ip"
                } else {
                    "rate_limited"
                },
            );
            // A user's device following a click is never stranded: it still lands, uncounted.
            if endpoint == Endpoint::Click && target.answer == Answer::Redirect {
                return answer(&target, request_query);
            }
            let mut response =
                (StatusCode::TOO_MANY_REQUESTS, "too many requests\n").into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return response;
        }
    }
    if target.status == ActivityStatus::Off {
        // A switched-off activity collects nothing, but its users still land where they should.
        // A feedback task that is off (未启用) still answers Tencent's `ret` 0 body, or Tencent
        // marks the URL failed in joint debugging; its hits are counted, not journaled.
        let outcome = if endpoint == Endpoint::Feedback {
            "task_off"
        } else {
            "activity_off"
        };
        count(state, endpoint, outcome);
        return answer(&target, request_query);
    }
    let record = record_of(&target, endpoint, link_id, &request);
    let bytes = match serde_json::to_vec(&record) {
        Ok(bytes) => Bytes::from(bytes),
        Err(e) => {
            error!(error = %e, "cannot encode a hit record");
            count(state, endpoint, "internal_error");
            return (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response();
        }
    };
    let label = endpoint_label(endpoint);
    match state.appender.append(&record.event_id, bytes.clone()).await {
        Ok(()) => {
            count(state, endpoint, "accepted");
            answer(&target, request_query)
        }
        Err(AppendError::TooLarge { bytes: size, limit }) => {
            // Only a Kafka journal has a record limit; `public.max_url_bytes` keeps records far
            // below the default one, so this is a misconfigured `message_max_bytes`.
            warn!(endpoint = label, link_id, event_id = %record.event_id, bytes = size, limit,
                "hit record over journal.kafka.message_max_bytes: refused");
            count(state, endpoint, "too_large");
            if endpoint == Endpoint::Click {
                if let Appender::Kafka(kafka) = &state.appender
                    && let Err(io) = kafka.write_rejected(bytes).await
                {
                    error!(error = %io, event_id = %record.event_id, "rejected-record file write failed: this click is lost");
                    count(state, endpoint, "lost");
                }
                return answer(&target, request_query);
            }
            (StatusCode::URI_TOO_LONG, "request target too long\n").into_response()
        }
        Err(e) if endpoint == Endpoint::Click => {
            warn!(error = %e, link_id, event_id = %record.event_id, "journal cannot accept: click kept in the fallback file and redirected");
            count(state, endpoint, "fallback");
            let written = match &state.appender {
                Appender::Kafka(kafka) => kafka.write_fallback(bytes).await,
                Appender::Local(_) => write_fallback(state.fallback_dir.clone(), bytes).await,
            };
            if let Err(io) = written {
                error!(error = %io, event_id = %record.event_id, "fallback file write failed: this click is lost");
                count(state, endpoint, "lost");
            }
            answer(&target, request_query)
        }
        Err(e) => {
            warn!(error = %e, endpoint = label, link_id, "journal cannot accept: 503");
            count(state, endpoint, "journal_unavailable");
            let mut response =
                (StatusCode::SERVICE_UNAVAILABLE, "temporarily unavailable\n").into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
    }
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers.get(name).map(|v| {
        String::from_utf8_lossy(v.as_bytes())
            .chars()
            .take(4096)
            .collect()
    })
}

fn record_of(
    target: &LinkTarget,
    endpoint: Endpoint,
    link_id: u64,
    request: &Request,
) -> HitRecord {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    HitRecord {
        v: RECORD_VERSION,
        event_id: uuid::Uuid::now_v7().to_string(),
        received_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        endpoint,
        link_id,
        activity_id: target.activity_id,
        workspace: target.workspace.clone(),
        channel: target.channel.clone(),
        template: target.template.clone(),
        activity_status: target.status.as_str().to_string(),
        method: request.method().as_str().to_string(),
        query: request.uri().query().unwrap_or("").to_string(),
        peer_ip: peer.unwrap_or_default(),
        user_agent: header_text(request.headers(), header::USER_AGENT),
        forwarded_for: header_text(
            request.headers(),
            header::HeaderName::from_static("x-forwarded-for"),
        ),
    }
}

fn no_store(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache, max-age=0"),
    );
    response
}

/// The answer of a link; a click only ever redirects to its own activity's landing URL (its
/// macros, if any, filled from the click's `query`: `collect::landing`).
fn answer(target: &LinkTarget, query: &str) -> Response {
    no_store(match &target.answer {
        Answer::Gif => (
            [(header::CONTENT_TYPE, "image/gif")],
            Bytes::from_static(&GIF_1X1),
        )
            .into_response(),
        Answer::NoContent => StatusCode::NO_CONTENT.into_response(),
        Answer::Redirect => match target
            .landing_for(query)
            .as_deref()
            .map(HeaderValue::from_str)
        {
            Some(Ok(location)) => {
                let mut r = Response::new(Body::empty());
                *r.status_mut() = StatusCode::FOUND;
                r.headers_mut().insert(header::LOCATION, location);
                r
            }
            _ => StatusCode::NO_CONTENT.into_response(),
        },
        Answer::Body {
            status,
            content_type,
            body,
        } => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
            (
                status,
                [(header::CONTENT_TYPE, content_type.clone())],
                body.clone(),
            )
                .into_response()
        }
    })
}

/// Appends a click record to `{fallback_dir}/clicks-YYYY-MM-DD.ndjson` and fsyncs it.
async fn write_fallback(dir: PathBuf, record: Bytes) -> std::io::Result<()> {
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!(
            "clicks-{}.ndjson",
            chrono::Utc::now().format("%Y-%m-%d")
        ));
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let mut line = record.to_vec();
        line.push(b'\n');
        file.write_all(&line)?;
        file.sync_data()
    })
    .await
    .map_err(std::io::Error::other)?
}
