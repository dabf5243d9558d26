//! Stage one of `source: {type: http}`: paginated JSON APIs pulled over HTTP(S).
//!
//! Same rules as [`super::raw`]: every struct denies unknown keys, every field is documented
//! (the docs end up in `schemas/pipeline.schema.json`), checked values are [`Located`].
//! Durations are written as a number and a unit: `500ms`, `30s`, `5m`, `6h`, `1d`.

use schemars::JsonSchema;
use serde::Deserialize;

use super::raw::{Located, OrderedMap};

/// `type: http`: records of a paginated JSON API. Each batch's intent records where the next
/// batch continues (window, page or cursor) and the records it fetched are kept with the intent,
/// so a batch interrupted by a crash is replayed from what was fetched, never fetched twice into
/// the lake; the position advances only with the batch's commit.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "Http")]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    /// `http://` or `https://` URL of the endpoint (GET). Never put secrets here: use `auth`.
    pub url: Located<String>,
    /// Fixed query parameters, `{name: value, ...}`, sent with every request in this order.
    #[serde(default)]
    pub query: Option<OrderedMap<Located<String>>>,
    /// Fixed request headers, `{name: value, ...}` (not secrets: use `auth`).
    #[serde(default)]
    pub headers: Option<OrderedMap<Located<String>>>,
    /// How requests authenticate; the secret is read from the environment when a run starts.
    #[serde(default)]
    pub auth: Option<RawHttpAuth>,
    /// How the records of one query are split into pages (default: one request, no paging).
    #[serde(default)]
    pub paging: Option<RawPaging>,
    /// Time-window paging: the API is asked for one window (e.g. one day) at a time, from
    /// `from` on, each window once it is closed (its end plus `lag` is past); `paging` then
    /// pages within each window.
    #[serde(default)]
    pub window: Option<RawWindow>,
    /// JSON pointer (RFC 6901) to the array of records in a response, e.g. `/data/list`
    /// (`""`: the response is the array). A missing array is an error; `null` is no records.
    pub records: Located<String>,
    /// A check of every response body, for APIs that answer errors with status 200 (e.g.
    /// `{pointer: /code, equals: 0}`); a response that fails it stops the run.
    #[serde(default)]
    pub success: Option<RawSuccess>,
    /// Timeout of one request, connection to last byte (default `30s`).
    #[serde(default)]
    pub timeout: Option<Located<String>>,
    /// Retries of a request answered 429 or 5xx, or failed to connect or timed out.
    #[serde(default)]
    pub retries: Option<RawRetries>,
    /// At most this many requests per run, retries included (> 0, default 1000). When reached,
    /// the run stops cleanly with what it fetched so far committed; the next run continues.
    #[serde(default)]
    pub max_requests_per_run: Option<Located<u64>>,
    /// At most this many pages per batch (> 0, default 100).
    #[serde(default)]
    pub max_pages_per_batch: Option<Located<u64>>,
    /// A batch ends after the page that reaches this many records (> 0, default 100000).
    #[serde(default)]
    pub max_records_per_batch: Option<Located<u64>>,
    /// A response body larger than this many bytes stops the run (> 0, default 33554432 = 32 MiB).
    #[serde(default)]
    pub max_response_bytes: Option<Located<u64>>,
}

/// How requests authenticate. `secret` names an environment variable holding the secret (or,
/// when that is unset, `{secret}_FILE` holding the path of a file with it); it is never
/// written in YAML and never logged.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "HttpAuth")]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RawHttpAuth {
    /// `Authorization: Bearer <secret>`.
    Bearer(RawSecretRef),
    /// A header `<name>: <secret>`, e.g. `X-Api-Key` or Ocean Engine's `Access-Token`.
    Header(RawNamedSecret),
    /// A query parameter `<name>=<secret>`.
    Query(RawNamedSecret),
}

/// A secret by name.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "SecretRef")]
#[serde(deny_unknown_fields)]
pub struct RawSecretRef {
    /// Environment variable with the secret (`[A-Z_][A-Z0-9_]*`).
    pub secret: Located<String>,
}

/// A header or query parameter name and the secret it carries.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "NamedSecret")]
#[serde(deny_unknown_fields)]
pub struct RawNamedSecret {
    /// Header or query parameter name.
    pub name: Located<String>,
    /// Environment variable with the secret (`[A-Z_][A-Z0-9_]*`).
    pub secret: Located<String>,
}

/// Paging of a query: a mapping with one key, the kind.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "Paging")]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RawPaging {
    /// Numbered pages. The query ends at an empty page or one with fewer than `size` records.
    /// Without `window`, the next run asks for the last page again and keeps only records past
    /// the ones it already has (an append-only list).
    PageNumber(RawPageNumber),
    /// The response names the next page's cursor. The query ends when there is none (or
    /// `has_more` is false); a cursor given with the last page is where the next run resumes.
    /// A cursor seen before in the run stops the run (an API looping on one page).
    Cursor(RawCursor),
}

/// Options of `page_number` paging.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "PageNumber")]
#[serde(deny_unknown_fields)]
pub struct RawPageNumber {
    /// Query parameter of the page number.
    pub param: Located<String>,
    /// Number of the first page (default 1).
    #[serde(default)]
    pub start: Option<u64>,
    /// Query parameter of the page size, if the API takes one.
    #[serde(default)]
    pub size_param: Option<Located<String>>,
    /// Records per full page (> 0); a shorter page is the last. Without it only an empty page
    /// ends the query.
    #[serde(default)]
    pub size: Option<Located<u64>>,
}

/// Options of `cursor` paging.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "Cursor")]
#[serde(deny_unknown_fields)]
pub struct RawCursor {
    /// Query parameter the cursor is sent in (not sent for the first page).
    pub param: Located<String>,
    /// JSON pointer to the next cursor in a response (a string or number; missing, null or
    /// `""`: no next page).
    pub from: Located<String>,
    /// JSON pointer to a boolean saying whether more pages follow (optional).
    #[serde(default)]
    pub has_more: Option<Located<String>>,
}

/// Time-window paging.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "Window")]
#[serde(deny_unknown_fields)]
pub struct RawWindow {
    /// Query parameter of the window's start.
    pub start_param: Located<String>,
    /// Query parameter of the window's end (optional: APIs asked for one day at a time may
    /// take the start only).
    #[serde(default)]
    pub end_param: Option<Located<String>>,
    /// `strftime` format of both parameters (default `%Y-%m-%d`), in `time_zone`.
    #[serde(default)]
    pub format: Option<Located<String>>,
    /// Length of a window (default `1d`).
    #[serde(default)]
    pub length: Option<Located<String>>,
    /// Start of the first window: `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SS`, in `time_zone`.
    pub from: Located<String>,
    /// Optional end of the last window (exclusive), same syntax as `from`: a bounded backfill.
    #[serde(default)]
    pub until: Option<Located<String>>,
    /// A window is fetched once its end is this long past (default `0s`): reports of a day are
    /// final some hours after it ends.
    #[serde(default)]
    pub lag: Option<Located<String>>,
    /// Whether `end_param` is the window's exclusive end (the next window's start, the
    /// default) or its last instant (one second before, which a date format prints as the
    /// window's own day).
    #[serde(default)]
    pub end: RawWindowEnd,
    /// IANA time zone of the windows (default: the daemon's `time_zone`).
    #[serde(default)]
    pub time_zone: Option<Located<String>>,
}

/// How a window's end is sent.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema)]
#[schemars(rename = "WindowEnd")]
#[serde(rename_all = "snake_case")]
pub enum RawWindowEnd {
    /// The next window's start.
    #[default]
    Exclusive,
    /// The window's last second (`start_date=2026-03-01&end_date=2026-03-01` for a day).
    Inclusive,
}

/// A check that a response body reports success.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "Success")]
#[serde(deny_unknown_fields)]
pub struct RawSuccess {
    /// JSON pointer to the value to check.
    pub pointer: Located<String>,
    /// The value it must equal (a YAML scalar).
    pub equals: serde_json::Value,
}

/// Retries with exponential backoff and jitter. A `Retry-After` answer (seconds or HTTP date)
/// is waited exactly; one longer than `max_backoff` stops the run (the next run continues).
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "Retries")]
#[serde(deny_unknown_fields)]
pub struct RawRetries {
    /// Retries per request after the first attempt (default 5; 0: no retry).
    #[serde(default)]
    pub max: Option<u32>,
    /// Backoff before the first retry (default `500ms`); doubled each retry, with jitter.
    #[serde(default)]
    pub initial: Option<Located<String>>,
    /// Longest backoff (default `60s`).
    #[serde(default)]
    pub max_backoff: Option<Located<String>>,
}
