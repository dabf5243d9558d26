//! One request of the HTTP source, with retries: exponential backoff with jitter on 429, 5xx,
//! connection errors and timeouts; `Retry-After` (seconds or HTTP date) waited exactly; every
//! attempt counted against the run's request budget. Secrets are attached here and nowhere
//! else, and never appear in an error or a log line (URLs are shown with `***`).

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use tracing::{debug, warn};

use crate::config::model::{HttpAuth, HttpSource};
use crate::pipeline::PipelineError;
use crate::telemetry::Metrics;

/// A secret read from the environment; its `Debug` never shows it.
#[derive(Clone)]
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Reads the secret named `name`: the variable itself, else the file `{name}_FILE` names.
pub fn read_secret(name: &str) -> Result<Secret, PipelineError> {
    super::super::secret::lookup(name)
        .map(Secret)
        .map_err(|message| PipelineError::Http {
            message,
            retryable: false,
        })
}

/// A response body that was accepted (2xx).
#[derive(Debug)]
pub struct Body {
    pub bytes: Vec<u8>,
    pub content_type: String,
}

/// Why a request produced no body.
#[derive(Debug)]
pub enum FetchError {
    /// The run's request budget is spent (a clean stop).
    Budget,
    /// The run is being cancelled (shutdown): a clean stop.
    Cancelled,
    /// The request failed for good; `kind` is the metric label.
    Failed {
        kind: &'static str,
        error: PipelineError,
    },
}

/// The source's HTTP client: configuration, secret, metrics.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    cfg: HttpSource,
    secret: Option<Secret>,
    metrics: Arc<Metrics>,
    pipeline: String,
}

/// The first bytes of a body, as one line of text for an error message.
pub fn first_bytes(body: &[u8]) -> String {
    let head = &body[..body.len().min(200)];
    let text: String = String::from_utf8_lossy(head)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let ellipsis = if body.len() > 200 { "…" } else { "" };
    format!("`{}{ellipsis}`", text.trim())
}

/// `Retry-After`: delay seconds or an HTTP date (RFC 9110 §10.2.3), relative to `now`.
pub fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or_default(),
    )
}

/// Backoff before retry number `attempt` (0-based): `initial · 2^attempt`, capped, with equal
/// jitter (a uniform draw from the upper half), so clients that failed together spread out.
pub fn backoff(initial: Duration, max: Duration, attempt: u32) -> Duration {
    let base = initial
        .saturating_mul(2u32.saturating_pow(attempt.min(30)))
        .min(max);
    base.mul_f64(rand::rng().random_range(0.5..=1.0))
}

impl Client {
    pub fn new(
        cfg: &HttpSource,
        pipeline: &str,
        metrics: Arc<Metrics>,
    ) -> Result<Self, PipelineError> {
        let secret = cfg
            .auth
            .as_ref()
            .map(|a| read_secret(a.secret()))
            .transpose()?;
        let mut headers = HeaderMap::new();
        for (name, value) in &cfg.headers {
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) else {
                continue; // checked when the pipeline was loaded
            };
            headers.insert(name, value);
        }
        if let (Some(auth), Some(secret)) = (&cfg.auth, &secret) {
            let header = match auth {
                HttpAuth::Bearer { .. } => Some((AUTHORIZATION, format!("Bearer {}", secret.0))),
                HttpAuth::Header { name, .. } => HeaderName::from_bytes(name.as_bytes())
                    .ok()
                    .map(|n| (n, secret.0.clone())),
                HttpAuth::Query { .. } => None,
            };
            if let Some((name, value)) = header {
                let mut value = HeaderValue::from_str(&value).map_err(|_| PipelineError::Http {
                    message: format!(
                        "secret `{}` holds characters a header cannot carry",
                        auth.secret()
                    ),
                    retryable: false,
                })?;
                value.set_sensitive(true);
                headers.insert(name, value);
            }
        }
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .default_headers(headers)
            .user_agent(concat!("backflow/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| PipelineError::Http {
                message: format!("cannot build the HTTP client: {}", e.without_url()),
                retryable: false,
            })?;
        Ok(Client {
            http,
            cfg: cfg.clone(),
            secret,
            metrics,
            pipeline: pipeline.to_string(),
        })
    }

    /// The request URL with `query` (after the fixed parameters), and the same URL for
    /// messages, with the secret shown as `***`.
    fn urls(&self, query: &[(String, String)]) -> (url::Url, String) {
        let mut url = self.cfg.url.clone();
        let mut shown = self.cfg.url.clone();
        {
            let mut pairs = url.query_pairs_mut();
            let mut shown_pairs = shown.query_pairs_mut();
            for (k, v) in self.cfg.query.iter().chain(query) {
                pairs.append_pair(k, v);
                shown_pairs.append_pair(k, v);
            }
            if let (Some(HttpAuth::Query { name, .. }), Some(secret)) =
                (&self.cfg.auth, &self.secret)
            {
                pairs.append_pair(name, &secret.0);
                shown_pairs.append_pair(name, "***");
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
            shown.set_query(None);
        }
        (url, shown.to_string())
    }

    /// The URL of a request with `query`, for messages (secret shown as `***`).
    pub fn shown_url(&self, query: &[(String, String)]) -> String {
        self.urls(query).1
    }

    fn count(&self, kind: impl Into<String>) {
        self.metrics
            .source
            .http_requests
            .get_or_create(&Metrics::source_labels(&self.pipeline, kind))
            .inc();
    }

    /// GETs one page, retrying as configured. `requests` counts attempts against `budget`.
    pub async fn get(
        &self,
        query: &[(String, String)],
        page: &str,
        requests: &mut u64,
        budget: u64,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<Body, FetchError> {
        let (url, shown) = self.urls(query);
        let retries = self.cfg.retries;
        let mut attempt: u32 = 0;
        loop {
            if *requests >= budget {
                return Err(FetchError::Budget);
            }
            *requests += 1;
            debug!(pipeline = %self.pipeline, url = %shown, page, attempt, "http request");
            let outcome = self.http.get(url.clone()).send().await;
            let (problem, retry_after) = match outcome {
                Ok(response) => {
                    let status = response.status();
                    self.count(status.as_u16().to_string());
                    let retry_after = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
                    let content_type = response
                        .headers()
                        .get(CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("none")
                        .to_string();
                    if status.is_success() {
                        return self.body(response, &shown, content_type).await;
                    }
                    let body = self.read_limited(response).await.unwrap_or_default();
                    let problem = format!(
                        "HTTP {status} (content-type {content_type}); body starts {}",
                        first_bytes(&body)
                    );
                    if !(status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()) {
                        return Err(self.fail("status", &shown, problem, false));
                    }
                    (problem, retry_after)
                }
                Err(e) => {
                    let kind = if e.is_timeout() {
                        "timeout"
                    } else if e.is_connect() {
                        "connect_error"
                    } else {
                        "request_error"
                    };
                    self.count(kind);
                    (format!("{kind}: {}", e.without_url()), None)
                }
            };
            if attempt >= retries.max {
                let message = format!("gave up after {} attempt(s); last: {problem}", attempt + 1);
                return Err(self.fail("gave_up", &shown, message, true));
            }
            let wait = match retry_after {
                Some(wait) if wait > retries.max_backoff => {
                    let message = format!(
                        "the API asks to retry after {} s, longer than retries.max_backoff ({} s); the next run continues here. Last: {problem}",
                        wait.as_secs(),
                        retries.max_backoff.as_secs()
                    );
                    return Err(self.fail("retry_after_too_long", &shown, message, true));
                }
                Some(wait) => wait,
                None => backoff(retries.initial, retries.max_backoff, attempt),
            };
            self.metrics
                .source
                .http_retries
                .get_or_create(&Metrics::labels(&self.pipeline))
                .inc();
            warn!(
                pipeline = %self.pipeline, url = %shown, page, attempt = attempt + 1,
                wait_ms = wait.as_millis() as u64, retry_after = retry_after.is_some(),
                problem = %problem, "http request failed; retrying"
            );
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = cancel.cancelled() => return Err(FetchError::Cancelled),
            }
            attempt += 1;
        }
    }

    fn fail(
        &self,
        kind: &'static str,
        shown: &str,
        problem: String,
        retryable: bool,
    ) -> FetchError {
        FetchError::Failed {
            kind,
            error: PipelineError::Http {
                message: format!("GET {shown}: {problem}"),
                retryable,
            },
        }
    }

    async fn read_limited(&self, mut response: reqwest::Response) -> Result<Vec<u8>, String> {
        let limit = self.cfg.max_response_bytes.get();
        if response
            .content_length()
            .is_some_and(|n| n as usize > limit)
        {
            return Err(format!(
                "the body is {} bytes, more than max_response_bytes ({limit})",
                response.content_length().unwrap_or_default()
            ));
        }
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > limit {
                        return Err(format!(
                            "the body is more than max_response_bytes ({limit})"
                        ));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(body),
                Err(e) => return Err(format!("reading the body: {}", e.without_url())),
            }
        }
    }

    async fn body(
        &self,
        response: reqwest::Response,
        shown: &str,
        content_type: String,
    ) -> Result<Body, FetchError> {
        match self.read_limited(response).await {
            Ok(bytes) => Ok(Body {
                bytes,
                content_type,
            }),
            Err(problem) => Err(self.fail("too_large", shown, problem, false)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-03-01T08:49:30Z")
            .map(|t| t.with_timezone(&chrono::Utc))
            .unwrap_or_default();
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Sun, 01 Mar 2026 08:49:37 GMT", now),
            Some(Duration::from_secs(7))
        );
        // A date in the past means "now".
        assert_eq!(
            parse_retry_after("Sun, 01 Mar 2026 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let (initial, max) = (Duration::from_millis(100), Duration::from_secs(1));
        for attempt in 0..10 {
            let wait = backoff(initial, max, attempt);
            let base = (initial * 2u32.pow(attempt)).min(max);
            assert!(wait >= base / 2 && wait <= base, "{attempt}: {wait:?}");
        }
    }

    #[test]
    fn secrets_never_show_in_debug() {
        assert_eq!(format!("{:?}", Secret("hunter2".into())), "Secret(***)");
    }
}
