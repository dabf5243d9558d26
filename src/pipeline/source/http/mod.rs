//! The `http` source: records of a paginated JSON API (page numbers, cursors, time windows).
//!
//! **Positions.** A batch's intent records the pages it took records from and `next`: where the
//! following batch continues (window start, page number or cursor, and how many records of that
//! page are already in the lake). The catalog is the truth: planning continues from the last
//! committed batch's `next`, so the position advances only with a commit.
//!
//! **Replay from what was fetched.** An HTTP API is not a log: a cursor may expire, a report of
//! today changes by the hour, pages shift when rows are inserted. So the records a batch fetched
//! are stored with its intent (gzip'd JSON, in the same catalog transaction) and a replay after
//! a crash decodes exactly those — byte-identical files under the same names — never the API's
//! answer of later. The stored records are deleted by the commit. Batches are bounded
//! (`max_pages_per_batch`, `max_records_per_batch`) to keep that cost small.
//!
//! **Stops.** The request budget (`max_requests_per_run`) ends a run cleanly after the batch in
//! progress commits. A page that cannot be used (HTML, not JSON, no records array, a failed
//! `success` check, a non-retryable status, retries exhausted, a repeated cursor) is not taken:
//! the pages before it commit, then the run fails with the URL (secret shown as `***`), the page,
//! the content type and the body's first bytes; the next run asks for that page again.

mod client;
mod json;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::sync::Arc;

use chrono::{NaiveDateTime, TimeZone};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use tracing::{error, info, warn};

pub use client::{backoff, parse_retry_after, read_secret};

use super::super::PipelineError;
use super::super::frame::{Quarantine, QuarantinedRow, TextFrameBuilder};
use super::object_store_files::parse_object;
use crate::config::load::parse_local_time;
use crate::config::model::{HttpSource, Paging, TimeWindow};
use crate::telemetry::Metrics;
use client::{Client, FetchError};

const LOCAL_TIME: &str = "%Y-%m-%dT%H:%M:%S";

/// Where the next batch continues.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    /// Start of the window in progress (`YYYY-MM-DDTHH:MM:SS` in the window's zone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// Page number to ask for (page-number paging).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<u64>,
    /// Cursor to ask with (cursor paging; none: the first page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Records of that page that are already in the lake.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skip: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One page a batch took records from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRef {
    /// The page's varying query parameters, e.g. `start_date=2026-03-01&page=2`.
    pub request: String,
    pub records: u64,
}

/// An HTTP batch's positions, as recorded in its intent and manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpPositions {
    pub pages: Vec<PageRef>,
    pub records: u64,
    /// Where the next batch continues.
    pub next: Resume,
    /// SHA-256 of the stored input (the fetched records), checked on a replay.
    pub input_sha256: String,
}

/// The records of one page, as stored with the intent.
#[derive(Debug, Serialize, Deserialize)]
pub struct FetchedPage {
    pub request: String,
    pub records: Vec<Box<RawValue>>,
}

/// Encodes a batch's pages for the catalog (gzip'd JSON) and its digest.
pub fn encode_input(pages: &[FetchedPage]) -> Result<(Vec<u8>, String), PipelineError> {
    let json = serde_json::to_vec(pages).map_err(|e| PipelineError::Positions(e.to_string()))?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let io = |e: std::io::Error| PipelineError::Positions(format!("encoding the input: {e}"));
    gz.write_all(&json).map_err(io)?;
    let bytes = gz.finish().map_err(io)?;
    let digest = hex::encode(Sha256::digest(&bytes));
    Ok((bytes, digest))
}

/// Decodes the stored input of a batch, checking it against its positions.
pub fn decode_input(
    bytes: &[u8],
    positions: &HttpPositions,
) -> Result<Vec<FetchedPage>, PipelineError> {
    let digest = hex::encode(Sha256::digest(bytes));
    if digest != positions.input_sha256 {
        return Err(PipelineError::Positions(format!(
            "the stored input of the batch has digest {digest}, its intent says {}",
            positions.input_sha256
        )));
    }
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut json)
        .map_err(|e| PipelineError::Positions(format!("the stored input is unreadable: {e}")))?;
    serde_json::from_slice(&json).map_err(|e| PipelineError::Positions(e.to_string()))
}

/// A planned batch: its positions, its records, and their stored form.
#[derive(Debug)]
pub struct Planned {
    pub positions: HttpPositions,
    pub pages: Vec<FetchedPage>,
    /// [`encode_input`] of `pages`, stored with the intent.
    pub input: Vec<u8>,
}

/// Why a run stops after the batch in progress.
#[derive(Debug)]
pub enum Stop {
    /// `max_requests_per_run` reached: a clean stop.
    Budget,
    /// A page could not be used: the run fails.
    Failed(PipelineError),
}

/// A run's reader of the API: its client, its request count, its stop.
#[derive(Debug)]
pub struct Session {
    cfg: HttpSource,
    pipeline: String,
    tz: Tz,
    client: Client,
    metrics: Arc<Metrics>,
    /// Requests made in this run (retries included).
    requests: u64,
    /// Cursors asked for in this run.
    seen_cursors: HashSet<String>,
    stop: Option<Stop>,
    drained: bool,
    /// Shutdown: planning stops between pages and during retry waits.
    cancel: tokio_util::sync::CancellationToken,
}

/// A window `[start, end)` being fetched.
struct Window {
    cfg: TimeWindow,
    start: NaiveDateTime,
    end: NaiveDateTime,
}

impl Window {
    fn params(&self, tz: Tz) -> Result<Vec<(String, String)>, PipelineError> {
        let format = |t: NaiveDateTime| -> Result<String, PipelineError> {
            let local = tz
                .from_local_datetime(&t)
                .earliest()
                .or_else(|| tz.from_local_datetime(&t).latest())
                .ok_or_else(|| PipelineError::Http {
                    message: format!("window time {t} does not exist in {tz}"),
                    retryable: false,
                })?;
            Ok(local.format(&self.cfg.format).to_string())
        };
        let mut params = vec![(self.cfg.start_param.clone(), format(self.start)?)];
        if let Some(end_param) = &self.cfg.end_param {
            let end = if self.cfg.end_inclusive {
                self.end - chrono::TimeDelta::seconds(1)
            } else {
                self.end
            };
            params.push((end_param.clone(), format(end)?));
        }
        Ok(params)
    }
}

fn label(params: &[(String, String)]) -> String {
    if params.is_empty() {
        return "first page".to_string();
    }
    params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// What planning did with one page.
enum Step {
    /// Continue at `Resume` (in the same query).
    Next(Resume),
    /// The query (window) ended; `Resume` is where a later run continues it (no window).
    End(Resume),
}

impl Session {
    /// Resolves the secret and builds the client; fails (before any request) without it.
    pub fn connect(
        cfg: &HttpSource,
        pipeline: &str,
        tz: Tz,
        metrics: Arc<Metrics>,
        cancel: tokio_util::sync::CancellationToken,
    ) -> Result<Session, PipelineError> {
        let client = Client::new(cfg, pipeline, Arc::clone(&metrics))?;
        Ok(Session {
            cfg: cfg.clone(),
            pipeline: pipeline.to_string(),
            tz: cfg.window.as_ref().and_then(|w| w.time_zone).unwrap_or(tz),
            client,
            metrics,
            requests: 0,
            seen_cursors: HashSet::new(),
            stop: None,
            drained: false,
            cancel,
        })
    }

    /// The stop recorded by the last plan, if any (the run ends after its batch).
    pub fn take_stop(&mut self) -> Option<Stop> {
        self.stop.take()
    }

    fn window_at(&self, resume: &Resume) -> Result<Option<Window>, PipelineError> {
        let Some(cfg) = &self.cfg.window else {
            return Ok(None);
        };
        let start = match &resume.window {
            None => cfg.from,
            Some(text) => parse_local_time(text).map_err(PipelineError::Positions)?,
        };
        let length = chrono::TimeDelta::from_std(cfg.length)
            .map_err(|e| PipelineError::Positions(e.to_string()))?;
        Ok(Some(Window {
            cfg: cfg.clone(),
            start,
            end: start + length,
        }))
    }

    /// Whether a window may be fetched now: closed (end + lag past) and before `until`.
    fn ready(&self, window: &Window) -> bool {
        if window.cfg.until.is_some_and(|until| window.start >= until) {
            return false;
        }
        let Some(end) = self.tz.from_local_datetime(&window.end).earliest() else {
            return false;
        };
        let lag = chrono::TimeDelta::from_std(window.cfg.lag).unwrap_or(chrono::TimeDelta::MAX);
        end.with_timezone(&chrono::Utc)
            .checked_add_signed(lag)
            .is_some_and(|ready| ready <= chrono::Utc::now())
    }

    fn fail(&mut self, kind: &'static str, error: PipelineError) {
        self.metrics
            .source
            .http_bad_responses
            .get_or_create(&Metrics::source_labels(&self.pipeline, kind))
            .inc();
        error!(pipeline = %self.pipeline, reason = kind, error = %error, "http source stopped: the page was not taken");
        self.stop = Some(Stop::Failed(error));
    }

    /// Fetches the next batch's pages from `resume` (the last committed batch's `next`), or
    /// `None` when there is nothing new. A stop is kept for [`Session::take_stop`].
    pub async fn plan(&mut self, resume: Resume) -> Result<Option<Planned>, PipelineError> {
        if self.drained || self.stop.is_some() {
            return Ok(None);
        }
        let mut at = resume.clone();
        let mut pages: Vec<FetchedPage> = Vec::new();
        let (mut requested_pages, mut records) = (0u64, 0u64);
        let labels = Metrics::labels(&self.pipeline);
        loop {
            if requested_pages >= self.cfg.max_pages_per_batch.get()
                || records >= self.cfg.max_records_per_batch.get()
                || self.cancel.is_cancelled()
            {
                break;
            }
            let window = self.window_at(&at)?;
            if let Some(w) = &window
                && !self.ready(w)
            {
                self.drained = true;
                break;
            }
            if self.requests >= self.cfg.max_requests_per_run.get() {
                self.budget_spent();
                break;
            }
            let mut params = match &window {
                Some(w) => w.params(self.tz)?,
                None => Vec::new(),
            };
            params.extend(self.paging_params(&at));
            let request = label(&params);
            let budget = self.cfg.max_requests_per_run.get();
            let body = match self
                .client
                .get(&params, &request, &mut self.requests, budget, &self.cancel)
                .await
            {
                Ok(body) => body,
                Err(FetchError::Budget) => {
                    self.budget_spent();
                    break;
                }
                Err(FetchError::Cancelled) => break,
                Err(FetchError::Failed { kind, error }) => {
                    self.fail(kind, error);
                    break;
                }
            };
            requested_pages += 1;
            let page = match json::parse_page(&body.bytes, &self.cfg) {
                Ok(page) => page,
                Err(bad) => {
                    let shown = self.client.shown_url(&params);
                    let error = PipelineError::Http {
                        message: format!(
                            "GET {shown}: {} (content-type {}); body starts {}",
                            bad.message,
                            body.content_type,
                            client::first_bytes(&body.bytes)
                        ),
                        retryable: false,
                    };
                    self.fail(bad.kind, error);
                    break;
                }
            };
            self.metrics.source.http_pages.get_or_create(&labels).inc();
            let total = page.records.len() as u64;
            if total < at.skip {
                warn!(pipeline = %self.pipeline, page = %request, records = total, already = at.skip, "the page holds fewer records than were already taken from it (the API's data changed)");
            }
            let step = match self.step(&at, &page, total) {
                Ok(step) => step,
                Err(repeated) => {
                    self.metrics
                        .source
                        .http_repeated_cursor
                        .get_or_create(&labels)
                        .inc();
                    let error = PipelineError::Http {
                        message: format!(
                            "GET {}: the API answered cursor `{repeated}` again, which this run already asked for; stopping instead of looping (the pages before are kept)",
                            self.client.shown_url(&params)
                        ),
                        retryable: false,
                    };
                    error!(pipeline = %self.pipeline, page = %request, cursor = %repeated, "http source stopped: repeated cursor");
                    self.stop = Some(Stop::Failed(error));
                    break;
                }
            };
            let taken: Vec<Box<RawValue>> =
                page.records.into_iter().skip(at.skip as usize).collect();
            records += taken.len() as u64;
            if !taken.is_empty() {
                pages.push(FetchedPage {
                    request,
                    records: taken,
                });
            }
            match step {
                Step::Next(next) => at = next,
                Step::End(next) => match &window {
                    Some(w) => {
                        at = Resume {
                            window: Some(w.end.format(LOCAL_TIME).to_string()),
                            ..Resume::default()
                        }
                    }
                    None => {
                        at = next;
                        self.drained = true;
                        break;
                    }
                },
            }
        }
        if pages.is_empty() && at == resume {
            if let Some(Stop::Failed(_)) = &self.stop
                && let Some(Stop::Failed(e)) = self.stop.take()
            {
                return Err(e);
            }
            return Ok(None);
        }
        let (input, input_sha256) = encode_input(&pages)?;
        let positions = HttpPositions {
            pages: pages
                .iter()
                .map(|p| PageRef {
                    request: p.request.clone(),
                    records: p.records.len() as u64,
                })
                .collect(),
            records,
            next: at,
            input_sha256,
        };
        let next = serde_json::to_string(&positions.next).unwrap_or_default();
        info!(pipeline = %self.pipeline, pages = positions.pages.len(), records, next = %next, requests = self.requests, "http batch planned");
        Ok(Some(Planned {
            positions,
            pages,
            input,
        }))
    }

    fn budget_spent(&mut self) {
        self.metrics
            .source
            .http_budget_exhausted
            .get_or_create(&Metrics::labels(&self.pipeline))
            .inc();
        info!(pipeline = %self.pipeline, requests = self.requests, "max_requests_per_run reached: the run stops after this batch; the next run continues");
        self.stop = Some(Stop::Budget);
    }

    fn paging_params(&mut self, at: &Resume) -> Vec<(String, String)> {
        match &self.cfg.paging {
            Paging::None => Vec::new(),
            Paging::PageNumber {
                param,
                start,
                size_param,
                size,
            } => {
                let mut params = vec![(param.clone(), at.page.unwrap_or(*start).to_string())];
                if let (Some(size_param), Some(size)) = (size_param, size) {
                    params.push((size_param.clone(), size.to_string()));
                }
                params
            }
            Paging::Cursor { param, .. } => match &at.cursor {
                Some(cursor) => {
                    self.seen_cursors.insert(cursor.clone());
                    vec![(param.clone(), cursor.clone())]
                }
                None => Vec::new(),
            },
        }
    }

    /// Where the query continues after a page of `total` records; `Err(cursor)` when the API
    /// claims more pages behind a cursor this run already asked for.
    fn step(&self, at: &Resume, page: &json::Page, total: u64) -> Result<Step, String> {
        let taken_through = total.max(at.skip);
        Ok(match &self.cfg.paging {
            Paging::None => Step::End(Resume {
                skip: taken_through,
                ..at.clone()
            }),
            Paging::PageNumber { start, size, .. } => {
                let number = at.page.unwrap_or(*start);
                let full = total > 0 && size.is_none_or(|size| total >= size.get());
                if full {
                    Step::Next(Resume {
                        page: Some(number + 1),
                        skip: 0,
                        ..at.clone()
                    })
                } else {
                    Step::End(Resume {
                        page: Some(number),
                        skip: taken_through,
                        ..at.clone()
                    })
                }
            }
            Paging::Cursor { .. } => {
                let next = page.next_cursor.clone();
                let more = page.has_more.unwrap_or(next.is_some());
                match next {
                    Some(next) if more => {
                        if at.cursor.as_ref() == Some(&next) || self.seen_cursors.contains(&next) {
                            return Err(next);
                        }
                        Step::Next(Resume {
                            cursor: Some(next),
                            skip: 0,
                            ..at.clone()
                        })
                    }
                    // The last page names where a later run resumes.
                    Some(next) if at.cursor.as_ref() != Some(&next) => Step::End(Resume {
                        cursor: Some(next),
                        skip: 0,
                        ..at.clone()
                    }),
                    _ => Step::End(Resume {
                        skip: taken_through,
                        ..at.clone()
                    }),
                }
            }
        })
    }
}

/// Decodes fetched pages into rows; a record that is not a JSON object goes to quarantine.
pub fn decode(pages: Vec<FetchedPage>, rows: &mut TextFrameBuilder, quarantine: &mut Quarantine) {
    for page in pages {
        let lineage = format!("http {}", page.request);
        for (index, record) in page.records.iter().enumerate() {
            let line = index as i64 + 1;
            match parse_object(record.get().as_bytes()) {
                Ok(fields) => rows.push(&lineage, line, fields),
                Err(reason) => quarantine.push(QuarantinedRow {
                    reason: format!("{lineage} record {line}: {reason}"),
                    source_file: Some(lineage.clone()),
                    source_line: Some(line),
                    raw: Some(record.get().to_string()),
                }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(records: &[&str]) -> FetchedPage {
        FetchedPage {
            request: "page=1".into(),
            records: records
                .iter()
                .map(|r| RawValue::from_string((*r).to_string()).unwrap_or_else(|e| panic!("{e}")))
                .collect(),
        }
    }

    #[test]
    fn the_stored_input_round_trips_and_is_checked() -> Result<(), PipelineError> {
        let pages = vec![page(&[r#"{"id":1,"cost":12.30}"#, "[1]"])];
        let (bytes, digest) = encode_input(&pages)?;
        let positions = HttpPositions {
            pages: vec![],
            records: 2,
            next: Resume::default(),
            input_sha256: digest,
        };
        let back = decode_input(&bytes, &positions)?;
        assert_eq!(back[0].records[0].get(), r#"{"id":1,"cost":12.30}"#);
        let tampered = HttpPositions {
            input_sha256: "00".into(),
            ..positions
        };
        assert!(decode_input(&bytes, &tampered).is_err());
        let mut rows = TextFrameBuilder::new();
        let mut quarantine = Quarantine::default();
        decode(back, &mut rows, &mut quarantine);
        assert_eq!(rows.rows(), 1);
        assert_eq!(
            quarantine.rows[0].reason,
            "http page=1 record 2: expected a JSON object, found an array"
        );
        Ok(())
    }

    #[test]
    fn resume_serializes_only_what_is_set() {
        let r = Resume {
            page: Some(3),
            ..Resume::default()
        };
        assert_eq!(
            serde_json::to_string(&r).ok().as_deref(),
            Some(r#"{"page":3}"#)
        );
    }
}
