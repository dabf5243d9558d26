//! The validated, typed pipeline model: what the runtime consumes.
//!
//! Produced from YAML by [`crate::config::load`] (stage one: plain serde types with
//! `deny_unknown_fields`; stage two: this model, with parsed cron schedules, storage URLs,
//! compiled expressions and resolved schemas). Nothing here can be invalid once built.

use std::num::{NonZeroU64, NonZeroUsize};
use std::path::PathBuf;

use polars::prelude::Expr;

use crate::storage::StorageUrl;

/// A pipeline definition, fully validated.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// Unique name (`[a-z][a-z0-9_]*`), also the key of its catalog state.
    pub name: String,
    /// The YAML file it came from.
    pub file: PathBuf,
    pub description: Option<String>,
    pub source: SourceConfig,
    pub transforms: Vec<TransformStep>,
    pub sink: SinkConfig,
    pub schedule: Option<Schedule>,
    pub tests: Vec<PipelineTest>,
}

/// Where rows come from. One variant per source kind.
#[derive(Debug, Clone)]
pub enum SourceConfig {
    ObjectStoreFiles(ObjectStoreFilesSource),
    Journal(JournalSource),
    Kafka(KafkaSource),
    Http(Box<HttpSource>),
}

/// Records of a paginated JSON API. Positions are where the next batch continues (window,
/// page or cursor, records to skip); the fetched records are kept with the open intent.
#[derive(Debug, Clone)]
pub struct HttpSource {
    pub url: url::Url,
    /// Fixed query parameters, in order.
    pub query: Vec<(String, String)>,
    /// Fixed headers, in order (names checked).
    pub headers: Vec<(String, String)>,
    pub auth: Option<HttpAuth>,
    pub paging: Paging,
    pub window: Option<TimeWindow>,
    /// JSON pointer to the records array.
    pub records: String,
    /// (JSON pointer, value it must equal).
    pub success: Option<(String, serde_json::Value)>,
    pub timeout: std::time::Duration,
    pub retries: Retries,
    pub max_requests_per_run: NonZeroU64,
    pub max_pages_per_batch: NonZeroU64,
    pub max_records_per_batch: NonZeroU64,
    pub max_response_bytes: NonZeroUsize,
}

/// Where a secret goes; `secret` is the environment variable's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpAuth {
    Bearer { secret: String },
    Header { name: String, secret: String },
    Query { name: String, secret: String },
}

impl HttpAuth {
    /// The environment variable holding the secret.
    pub fn secret(&self) -> &str {
        match self {
            HttpAuth::Bearer { secret }
            | HttpAuth::Header { secret, .. }
            | HttpAuth::Query { secret, .. } => secret,
        }
    }
}

/// Paging within one query (or one window).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Paging {
    /// One request answers the query.
    None,
    PageNumber {
        param: String,
        start: u64,
        size_param: Option<String>,
        size: Option<NonZeroU64>,
    },
    Cursor {
        param: String,
        /// JSON pointer to the next cursor.
        next: String,
        /// JSON pointer to a "more pages follow" boolean.
        has_more: Option<String>,
    },
}

/// Time-window paging: windows `[start, start + length)` in `time_zone`, from `from` on.
#[derive(Debug, Clone)]
pub struct TimeWindow {
    pub start_param: String,
    pub end_param: Option<String>,
    /// `strftime` format (checked).
    pub format: String,
    pub length: std::time::Duration,
    pub from: chrono::NaiveDateTime,
    pub until: Option<chrono::NaiveDateTime>,
    pub lag: std::time::Duration,
    pub end_inclusive: bool,
    /// `None`: the daemon's time zone.
    pub time_zone: Option<chrono_tz::Tz>,
}

/// Retries of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retries {
    pub max: u32,
    pub initial: std::time::Duration,
    pub max_backoff: std::time::Duration,
}

/// Messages of Kafka topics read by a consumer group. Positions are per-partition offset ranges
/// `[from, to)`; the catalog is the truth, the group's offsets are committed after the lake.
#[derive(Debug, Clone)]
pub struct KafkaSource {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    pub topics: KafkaTopics,
    pub group_id: String,
    pub format: KafkaFormat,
    /// Set only by the daemon, for the `type: journal` pipeline it wires to the Kafka journal
    /// (`journal.kind: kafka`): its batches are metered like journal batches (quota, staging,
    /// per-activity counters) and fallback replays are deduplicated. Never from YAML: a second
    /// pipeline over the topic must not bill the hits again.
    pub journal: bool,
    pub start_from: StartFrom,
    pub headers_column: Option<String>,
    pub key_column: Option<String>,
    pub max_records_per_batch: NonZeroUsize,
    pub max_bytes_per_batch: NonZeroUsize,
    pub idle: std::time::Duration,
    pub join_timeout: std::time::Duration,
    pub session_timeout: std::time::Duration,
    /// `plaintext`, `sasl_plaintext` (with `sasl`), `ssl` or `sasl_ssl` (with `sasl`).
    pub security_protocol: crate::config::daemon::KafkaSecurity,
    /// SASL login; `None`: none.
    pub sasl: Option<KafkaSasl>,
    /// TLS settings (used with `ssl` and `sasl_ssl`).
    pub tls: Box<KafkaTls>,
}

/// A Kafka client's TLS settings (`security_protocol: ssl` or `sasl_ssl`). Hostname
/// verification is always on (librdkafka's `ssl.endpoint.identification.algorithm=https`): the
/// brokers' certificates must name the hosts the client connects to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KafkaTls {
    /// PEM file of the CA certificate(s) to trust (`ssl.ca.location`); `None`: the system
    /// trust store.
    pub ca: Option<std::path::PathBuf>,
    /// PEM file of the client certificate for mutual TLS (`ssl.certificate.location`); set
    /// together with `key`.
    pub certificate: Option<std::path::PathBuf>,
    /// PEM file of the client certificate's private key (`ssl.key.location`).
    pub key: Option<std::path::PathBuf>,
    /// The environment variable holding the private key's password, when it is encrypted
    /// (`ssl.key.password`); its name, never the password, is configured.
    pub key_password_env: Option<String>,
}

/// A Kafka client's SASL login; `secret` names the environment variable with the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSasl {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub secret: String,
}

/// SASL mechanism of a Kafka login.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SaslMechanism {
    #[default]
    Plain,
    ScramSha256,
    ScramSha512,
}

impl SaslMechanism {
    /// librdkafka's `sasl.mechanism` value.
    pub fn librdkafka_name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// Which topics a Kafka source subscribes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KafkaTopics {
    Names(Vec<String>),
    /// A regular expression, always starting with `^` (librdkafka's pattern marker).
    Pattern(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KafkaFormat {
    Json,
    HitRecord,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    Earliest,
    Latest,
}

/// Monitoring-link hits from the daemon's journal. Positions are `[from, to)` journal positions;
/// the next batch starts where the last committed one ended (the catalog is the truth, the
/// journal's consumer cursor only lets old segments go).
#[derive(Debug, Clone)]
pub struct JournalSource {
    pub max_records_per_batch: NonZeroUsize,
    pub max_bytes_per_batch: NonZeroUsize,
}

/// Files dropped under a prefix of an object store (or a local directory).
#[derive(Debug, Clone)]
pub struct ObjectStoreFilesSource {
    pub url: StorageUrl,
    pub format: FileFormat,
    pub compression: Compression,
    /// Only object names ending with one of these suffixes are picked up
    /// (default: `.ndjson .jsonl .json .csv` each also with `.gz`).
    pub suffixes: Vec<String>,
    pub csv: CsvOptions,
    pub max_files_per_batch: NonZeroUsize,
    pub max_bytes_per_batch: NonZeroU64,
    pub listing: Listing,
}

/// How an `object_store_files` source finds new files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// The whole prefix, every batch.
    Full,
    /// Keys after the greatest ingested key; the whole prefix when the last full listing is
    /// older than `full_every`.
    AfterWatermark { full_every: std::time::Duration },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// Decide by file name: `.csv[.gz]` is CSV, everything else NDJSON.
    Auto,
    Ndjson,
    Csv,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Decide by file name: `.gz` is gzip.
    Auto,
    None,
    Gzip,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvOptions {
    pub delimiter: u8,
    pub has_header: bool,
}

impl Default for CsvOptions {
    fn default() -> Self {
        Self {
            delimiter: b',',
            has_header: true,
        }
    }
}

/// Column types a `cast` step or a dataset schema can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    String,
    Int64,
    Float64,
    Boolean,
    /// Instant, stored as `TIMESTAMP(MICROS, UTC)`. Parsed from RFC 3339, `YYYY-MM-DD HH:MM:SS[.f]`,
    /// `YYYYMMDDHHMMSS`, a date (`YYYY-MM-DD`, `YYYYMMDD`, midnight), or epoch seconds (10 digits)
    /// / milliseconds (13 digits). Values without an offset are in the workspace time zone.
    Timestamp,
    /// Calendar date.
    Date,
}

/// One declarative transform step, applied in order.
#[derive(Debug, Clone)]
pub enum TransformStep {
    /// Rename columns: (from, to), in the order written.
    Rename(Vec<(String, String)>),
    /// Convert columns to types; a value that does not convert sends its row to quarantine.
    Cast(Vec<(String, ColumnType)>),
    /// Keep only rows for which the expression is true.
    Filter(CompiledExpr),
    /// Add or replace columns computed from expressions, in the order written.
    Derive(Vec<(String, CompiledExpr)>),
    /// Remove columns (missing ones are ignored).
    Drop(Vec<String>),
    /// Keep one row per key.
    Dedup { keys: Vec<String>, keep: Keep },
    /// Check rows against a dataset schema; failing rows go to quarantine with a reason.
    Validate(DatasetSchema),
}

/// An expression in SQL syntax, compiled to a Polars expression.
#[derive(Debug, Clone)]
pub struct CompiledExpr {
    pub source: String,
    pub expr: Expr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    First,
    Last,
}

/// Where rows go.
#[derive(Debug, Clone)]
pub enum SinkConfig {
    Parquet(ParquetSink),
    Kafka(KafkaSink),
}

impl SinkConfig {
    /// The lake dataset the sink writes, if it writes one.
    pub fn dataset(&self) -> Option<&str> {
        match self {
            SinkConfig::Parquet(p) => Some(&p.dataset),
            SinkConfig::Kafka(_) => None,
        }
    }
}

/// One message per row on a Kafka topic, keyed by a column; a batch commits once every
/// message is acknowledged (`acks=all`, idempotent producer). At least once downstream: each
/// message carries the dedup headers `backflow-batch: {pipeline}/{batch}` and
/// `backflow-row: {n}`, the same when a batch is sent again.
#[derive(Debug, Clone)]
pub struct KafkaSink {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    pub topic: String,
    pub key_column: String,
    pub format: KafkaSinkFormat,
    /// Fixed headers on every message, in order (names checked, `backflow-*` reserved).
    pub headers: Vec<(String, String)>,
    pub message_timeout: std::time::Duration,
    pub max_in_flight: NonZeroUsize,
    pub message_max_bytes: usize,
    pub security_protocol: crate::config::daemon::KafkaSecurity,
    /// `plain` (default), `scram_sha_256` or `scram_sha_512`.
    pub sasl_mechanism: SaslMechanism,
    pub sasl_username: Option<String>,
    /// The environment variable holding the SASL password.
    pub sasl_password_env: Option<String>,
    /// TLS settings (used with `ssl` and `sasl_ssl`).
    pub tls: Box<KafkaTls>,
    /// Further librdkafka properties, in order (checked by librdkafka at load time).
    pub client: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KafkaSinkFormat {
    Json,
}

/// Hive-partitioned Parquet under `{lake}/{dataset}/`, written exactly once.
#[derive(Debug, Clone)]
pub struct ParquetSink {
    /// Dataset name: the folder under the lake root (`[a-z][a-z0-9_]*`).
    pub dataset: String,
    /// Timestamp column the partition is taken from.
    pub partition_column: String,
    pub granularity: Granularity,
    pub row_group_rows: NonZeroUsize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    /// `dt=YYYY-MM-DD`
    Day,
    /// `dt=YYYY-MM-DD/hour=HH`
    Hour,
}

/// A parsed cron schedule in a named time zone, with its run policies.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// As written (five fields are accepted and mean seconds = 0).
    pub cron: String,
    pub parsed: cron::Schedule,
    pub time_zone: chrono_tz::Tz,
    pub overlap: Overlap,
    pub misfire: Misfire,
    pub retries: RetryPolicy,
    /// The workspace whose concurrency limit the job's runs count against.
    pub workspace: String,
}

/// What a fire does while the previous run is queued or running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    #[default]
    Skip,
    Queue,
}

/// What happens to fire times missed during downtime or a clock jump.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Misfire {
    #[default]
    RunOnce,
    Skip,
}

/// Retries of runs that failed with a retryable error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0: none).
    pub max: u32,
    #[serde(with = "millis")]
    pub backoff_initial: std::time::Duration,
    #[serde(with = "millis")]
    pub backoff_max: std::time::Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max: 0,
            backoff_initial: std::time::Duration::from_secs(30),
            backoff_max: std::time::Duration::from_secs(600),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry `n` (1-based): the initial backoff doubled `n - 1` times, capped.
    pub fn backoff(&self, n: u32) -> std::time::Duration {
        let factor = 2u32.saturating_pow(n.saturating_sub(1));
        self.backoff_initial
            .saturating_mul(factor)
            .min(self.backoff_max)
    }
}

mod millis {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
}

/// The period unit of dataset refresh instances.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PeriodUnit {
    #[default]
    Day,
    Hour,
}

/// How period instances of a dataset job are refreshed.
#[derive(Debug, Clone, Default)]
pub struct RefreshPolicy {
    pub period: PeriodUnit,
    pub wait_for_sources: Option<WaitForSources>,
}

/// The wait for source watermarks before a period instance runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitForSources {
    pub timeout: std::time::Duration,
    pub poll_interval: std::time::Duration,
}

/// A pipeline's own behaviour test: input rows through the transforms, expected output rows.
#[derive(Debug, Clone)]
pub struct PipelineTest {
    pub name: String,
    /// Rows as the source would yield them (JSON objects).
    pub input: Vec<serde_json::Map<String, serde_json::Value>>,
    /// Expected output rows, in order. Timestamps are written as RFC 3339 UTC strings.
    pub expect: Vec<serde_json::Map<String, serde_json::Value>>,
    /// Expected quarantined rows: each a substring of the quarantine reason, in order.
    pub expect_quarantine: Vec<String>,
}

/// A dataset schema (`schemas/{name}.yaml`).
#[derive(Debug, Clone)]
pub struct DatasetSchema {
    pub name: String,
    pub description: Option<String>,
    pub fields: Vec<FieldSpec>,
}

#[derive(Debug, Clone)]
pub struct FieldSpec {
    pub name: String,
    pub ty: ColumnType,
    pub required: bool,
    /// If set, a non-null value must be one of these.
    pub allowed: Option<Vec<String>>,
    pub description: Option<String>,
}

/// A dataset job (`kind: dataset`), fully validated.
#[derive(Debug, Clone)]
pub struct DatasetJob {
    /// Unique name (shared with pipeline names), the key of its run history.
    pub name: String,
    /// The YAML file it came from.
    pub file: PathBuf,
    pub description: Option<String>,
    pub build: DatasetBuild,
    pub publish: PublishPolicy,
    pub schedule: Option<Schedule>,
    pub refresh: RefreshPolicy,
}

impl DatasetJob {
    /// The output dataset: the folder `datasets/{output}/` under the lake root.
    pub fn output(&self) -> &str {
        match &self.build {
            DatasetBuild::Behavior(b) => &b.output,
            DatasetBuild::UserTags(b) => &b.output,
        }
    }
}

/// What a dataset job builds. One variant per dataset kind.
#[derive(Debug, Clone)]
pub enum DatasetBuild {
    Behavior(BehaviorBuild),
    UserTags(super::model_tags::UserTagsBuild),
}

/// The behavior dataset (行为数据集) and its dimension tables.
#[derive(Debug, Clone)]
pub struct BehaviorBuild {
    pub output: String,
    pub time_grain: TimeGrain,
    /// Lake dataset of behavior events, if used.
    pub behavior_events: Option<String>,
    pub ad_events: Option<AdEventsMapping>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeGrain {
    Day,
    Hour,
}

/// How monitoring-link hits become behaviors.
#[derive(Debug, Clone)]
pub struct AdEventsMapping {
    /// Lake dataset of hits.
    pub dataset: String,
    /// (endpoint, behavior type), in the order written; other endpoints are left out.
    pub behavior_types: Vec<(String, String)>,
    pub object: AdObject,
    pub include_flagged: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdObject {
    Activity,
    Creative,
}

/// Checks and retention of published versions.
#[derive(Debug, Clone)]
pub struct PublishPolicy {
    pub keep_versions: NonZeroUsize,
    pub allow_empty: bool,
    /// (column, largest share of nulls), the always-checked required columns first.
    pub max_null_ratio: Vec<(String, f64)>,
    /// Where each published version is announced (`publish.notify.kafka`), keyed by dataset.
    pub notify: Option<KafkaSink>,
}

/// Columns of the behavior dataset's main table, in order (spec/datasets-admin.md §1.7.4).
pub const BEHAVIOR_COLUMNS: &[&str] = &[
    "user_id",
    "user_id_2",
    "user_id_3",
    "id_type",
    "behavior_type",
    "behavior_time",
    "behavior_count",
    "behavior_amount",
    "channel",
    "object_attribute",
    "object_attribute_value",
    "object_attribute_value_id",
];

/// Columns of the behavior table that must never be null (the manual's required fields).
pub const BEHAVIOR_REQUIRED: &[&str] = &[
    "user_id",
    "id_type",
    "behavior_type",
    "behavior_time",
    "object_attribute",
];
