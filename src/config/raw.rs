//! Stage one of the pipeline format (v1): plain serde types that mirror the YAML.
//!
//! Every struct denies unknown keys, and every field carries a doc comment: these comments are
//! the user reference and end up in the generated JSON Schema (`schemas/pipeline.schema.json`).
//! Values that need semantic checks are [`Located`], so stage two ([`crate::config::load`]) can
//! report the `line:column` of the value itself.
//!
//! Sources and sinks are internally tagged (`type: ...`). serde buffers internally tagged enums
//! and loses YAML positions there, so they have a small hand-written `Deserialize` that reads
//! `type` as the first key and hands the rest of the mapping, unbuffered, to the variant.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// A test row: column name to a YAML scalar or null.
pub type Row = serde_json::Map<String, serde_json::Value>;

/// A value together with the position it was written at in the YAML file.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct Located<T>(pub serde_saphyr::Spanned<T>);

impl<T> Located<T> {
    /// The value.
    pub fn value(&self) -> &T {
        &self.0.value
    }

    /// Where the value is used in the file (1-based; 0 when unknown).
    pub fn location(&self) -> serde_saphyr::Location {
        self.0.referenced
    }

    /// Takes the value out.
    pub fn into_value(self) -> T {
        self.0.value
    }
}

impl<T: JsonSchema> JsonSchema for Located<T> {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        generator.subschema_for::<T>()
    }
}

/// A YAML mapping whose entries keep the order they were written in, keys located.
#[derive(Debug, Clone)]
pub struct OrderedMap<V>(pub Vec<(Located<String>, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for OrderedMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<V>(PhantomData<V>);

        impl<'de, V: Deserialize<'de>> Visitor<'de> for MapVisitor<V> {
            type Value = OrderedMap<V>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key()? {
                    entries.push((key, map.next_value()?));
                }
                Ok(OrderedMap(entries))
            }
        }

        deserializer.deserialize_map(MapVisitor(PhantomData))
    }
}

impl<V: JsonSchema> JsonSchema for OrderedMap<V> {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        format!("OrderedMap_of_{}", V::schema_name()).into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let values = generator.subschema_for::<V>();
        json_schema!({ "type": "object", "additionalProperties": values })
    }
}

/// The names a column type can be written as; checked in stage two so that a wrong type is
/// reported together with every other error of the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct TypeName(pub String);

/// The column type names, in the order the JSON Schema and error messages list them.
pub const TYPE_NAMES: &[&str] = &["string", "int64", "float64", "boolean", "timestamp", "date"];

impl JsonSchema for TypeName {
    fn schema_name() -> Cow<'static, str> {
        "ColumnType".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A column type. `timestamp` is an instant stored as TIMESTAMP(MICROS, UTC), parsed from RFC 3339, `YYYY-MM-DD HH:MM:SS[.f]`, `YYYYMMDDHHMMSS`, a date (midnight) or epoch seconds (10 digits) / milliseconds (13 digits); values without an offset are in the workspace time zone.",
            "type": "string",
            "enum": TYPE_NAMES,
        })
    }
}

/// A pipeline definition (format v1): one YAML file per pipeline under `pipelines/`.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "Pipeline")]
#[serde(deny_unknown_fields)]
#[schemars(title = "backflow pipeline (format v1)")]
pub struct RawPipeline {
    /// `stream` (the default); dataset jobs say `kind: dataset`.
    #[serde(default)]
    pub kind: Option<super::raw_dataset::RawStreamKind>,
    /// Unique pipeline name, `[a-z][a-z0-9_]*`; also the key of its state (checkpoints, runs).
    pub name: Located<String>,
    /// Free text for people reading the pipeline list.
    #[serde(default)]
    pub description: Option<String>,
    /// Where rows come from.
    pub source: RawSource,
    /// Steps applied to every batch, in order. Each item is a one-key mapping naming the step.
    #[serde(default)]
    pub transforms: Vec<RawTransform>,
    /// Where rows go.
    pub sink: RawSink,
    /// When to run. Without a schedule the pipeline runs only on demand (`backflow run`).
    #[serde(default)]
    pub schedule: Option<RawSchedule>,
    /// Behaviour tests: input rows through the transforms, expected output rows
    /// (run by `backflow test`).
    #[serde(default)]
    pub tests: Vec<RawTest>,
}

/// A source kind, chosen by `type`. `type` must be the first key of the mapping.
#[derive(Debug, JsonSchema)]
#[schemars(rename = "Source")]
#[serde(tag = "type", rename_all = "snake_case")]
#[allow(
    clippy::large_enum_variant,
    reason = "parsed once per pipeline file; size is irrelevant"
)]
pub enum RawSource {
    /// Files dropped under a prefix of an object store or a local directory.
    ObjectStoreFiles(RawObjectStoreFiles),
    /// Monitoring-link hits from the daemon's own journal (runs inside `backflow serve`).
    Journal(RawJournal),
    /// Messages from Kafka topics, read by a consumer group.
    Kafka(RawKafka),
    /// Records of a paginated JSON API, pulled over HTTP(S).
    Http(super::raw_http::RawHttp),
}

/// The `type` values of a source.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    ObjectStoreFiles,
    Journal,
    Kafka,
    Http,
}

impl<'de> Tagged<'de> for RawSource {
    type Kind = SourceKind;
    const KINDS: &'static str = "object_store_files, journal, kafka, http";

    fn from_kind<A: MapAccess<'de>>(kind: SourceKind, rest: A) -> Result<Self, A::Error> {
        let rest = de::value::MapAccessDeserializer::new(rest);
        match kind {
            SourceKind::ObjectStoreFiles => {
                RawObjectStoreFiles::deserialize(rest).map(Self::ObjectStoreFiles)
            }
            SourceKind::Journal => RawJournal::deserialize(rest).map(Self::Journal),
            SourceKind::Kafka => RawKafka::deserialize(rest).map(Self::Kafka),
            SourceKind::Http => super::raw_http::RawHttp::deserialize(rest).map(Self::Http),
        }
    }
}

impl<'de> Deserialize<'de> for RawSource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(TaggedVisitor(PhantomData))
    }
}

/// `type: object_store_files`: new files under a URL, read in batches of whole files.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "ObjectStoreFiles")]
#[serde(deny_unknown_fields)]
pub struct RawObjectStoreFiles {
    /// Storage URL of the folder to watch: `file://./relative/dir`, `file:///absolute/dir`,
    /// `memory://name/prefix` (tests) or `s3://bucket/prefix` (credentials from `AWS_*`
    /// environment variables).
    pub url: Located<String>,
    /// File format.
    #[serde(default)]
    pub format: RawFileFormat,
    /// Compression of the files.
    #[serde(default)]
    pub compression: RawCompression,
    /// Only objects whose names end with one of these suffixes are read. Default:
    /// `.ndjson`, `.jsonl`, `.json`, `.csv`, each also with `.gz`.
    #[serde(default)]
    pub suffixes: Option<Located<Vec<Located<String>>>>,
    /// CSV options (used for CSV files only).
    #[serde(default)]
    pub csv: Option<RawCsvOptions>,
    /// At most this many files per batch (> 0, default 100).
    #[serde(default)]
    pub max_files_per_batch: Option<Located<u64>>,
    /// At most about this many bytes per batch (> 0, default 268435456 = 256 MiB); a single
    /// larger file still makes a batch of its own.
    #[serde(default)]
    pub max_bytes_per_batch: Option<Located<u64>>,
    /// How new files are found (default: the whole prefix is listed for every batch).
    #[serde(default)]
    pub listing: Option<RawListing>,
}

/// How an `object_store_files` source lists its prefix.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "Listing")]
#[serde(deny_unknown_fields)]
pub struct RawListing {
    /// `full` (default) or `after_watermark`.
    #[serde(default)]
    pub mode: RawListingMode,
    /// In `after_watermark` mode: list the whole prefix again when the last full listing is
    /// older than this (default `1h`), to pick up files that arrived out of key order.
    #[serde(default)]
    pub full_every: Option<Located<String>>,
}

/// Listing modes.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema)]
#[schemars(rename = "ListingMode")]
#[serde(rename_all = "snake_case")]
pub enum RawListingMode {
    /// List every object under the prefix for every batch.
    #[default]
    Full,
    /// List only keys after the greatest key already ingested (S3 `start-after`). Assumes
    /// keys sort in arrival order (`dt=YYYY-MM-DD/hour=HH/…` prefixes, timestamped names);
    /// a file dropped under a smaller key waits for the next full listing (`full_every`).
    AfterWatermark,
}

/// `type: journal`: the hits the collection endpoints appended, read in position order and
/// decoded into canonical fields with the media registry.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "Journal")]
#[serde(deny_unknown_fields)]
pub struct RawJournal {
    /// At most this many hits per batch (> 0, default 200000).
    #[serde(default)]
    pub max_records_per_batch: Option<Located<u64>>,
    /// At most about this many bytes of records per batch (> 0, default 134217728 = 128 MiB).
    #[serde(default)]
    pub max_bytes_per_batch: Option<Located<u64>>,
}

/// `type: kafka`: messages of Kafka topics, read by a consumer group. The batch's intent records
/// each partition's offset range; the group's offsets are committed only after the batch is in
/// the lake (a rerun replays an open batch over the same offsets: exactly-once output).
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "Kafka")]
#[serde(deny_unknown_fields)]
pub struct RawKafka {
    /// Bootstrap brokers, `host:port` each.
    pub brokers: Located<Vec<Located<String>>>,
    /// Topics to read. Exactly one of `topics` and `topic_pattern`.
    #[serde(default)]
    pub topics: Option<Located<Vec<Located<String>>>>,
    /// Regular expression of the topics to read (anchored at the start; topics created later
    /// are picked up). Exactly one of `topics` and `topic_pattern`.
    #[serde(default)]
    pub topic_pattern: Option<Located<String>>,
    /// Consumer group id; the group's committed offsets follow the lake.
    pub group_id: Located<String>,
    /// Payload format (default `json`).
    #[serde(default)]
    pub format: RawKafkaFormat,
    /// Where a partition without a committed offset starts (default `earliest`).
    #[serde(default)]
    pub start_from: RawStartFrom,
    /// When set, the message headers are kept in this column, as a JSON object of strings.
    #[serde(default)]
    pub headers_column: Option<Located<String>>,
    /// When set, the message key (UTF-8, lossy) is kept in this column.
    #[serde(default)]
    pub key_column: Option<Located<String>>,
    /// At most this many messages per batch (> 0, default 200000).
    #[serde(default)]
    pub max_records_per_batch: Option<Located<u64>>,
    /// At most about this many payload bytes per batch (> 0, default 134217728 = 128 MiB).
    #[serde(default)]
    pub max_bytes_per_batch: Option<Located<u64>>,
    /// A batch ends when no message arrived for this long, in milliseconds (> 0, default 2000);
    /// it ends at once when every assigned partition is at its end.
    #[serde(default)]
    pub idle_ms: Option<Located<u64>>,
    /// How long to wait for the group to assign partitions (and for a replayed batch's messages),
    /// in milliseconds (> 0, default 60000: longer than the session timeout after which the
    /// broker lets go of a crashed member); past it the run fails.
    #[serde(default)]
    pub join_timeout_ms: Option<Located<u64>>,
    /// After this many milliseconds without a heartbeat the broker drops a member and gives its
    /// partitions to the others (> 0, default 45000; the broker bounds it, 6000 at least on
    /// Kafka's defaults). Lower means a crashed member's partitions move sooner.
    #[serde(default)]
    pub session_timeout_ms: Option<Located<u64>>,
    /// `plaintext`, `sasl_plaintext` (needs `sasl`), `ssl` or `sasl_ssl` (needs `sasl`).
    /// Default: `sasl_plaintext` with `sasl`, else `plaintext`.
    #[serde(default)]
    pub security_protocol: Option<Located<super::raw_kafka_sink::RawSecurityProtocol>>,
    /// SASL login to the brokers. Absent: no login.
    #[serde(default)]
    pub sasl: Option<RawKafkaSasl>,
    /// TLS settings (with `ssl` and `sasl_ssl`; default: trust the system's CAs, no client
    /// certificate).
    #[serde(default)]
    pub tls: Option<Located<super::raw_kafka_sink::RawKafkaTls>>,
}

/// SASL login of a Kafka client. The password is read at run time from the environment
/// variable `secret` names (or the file `{secret}_FILE` names); it never goes in YAML.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "KafkaSasl")]
#[serde(deny_unknown_fields)]
pub struct RawKafkaSasl {
    /// `plain`, `scram_sha_256` or `scram_sha_512` (SCRAM: the password never crosses the
    /// wire; prefer it where the broker offers it).
    pub mechanism: Located<RawSaslMechanism>,
    /// User name.
    pub username: Located<String>,
    /// Environment variable with the password (`[A-Z_][A-Z0-9_]*`).
    pub secret: Located<String>,
}

/// SASL mechanism of a Kafka login.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[schemars(rename = "SaslMechanism")]
pub enum RawSaslMechanism {
    /// SASL/PLAIN: the password goes to the broker as is (use it only on a trusted network).
    #[serde(rename = "plain")]
    Plain,
    /// SASL/SCRAM-SHA-256.
    #[serde(rename = "scram_sha_256")]
    ScramSha256,
    /// SASL/SCRAM-SHA-512.
    #[serde(rename = "scram_sha_512")]
    ScramSha512,
}

/// Payload format of Kafka messages.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema)]
#[schemars(rename = "KafkaFormat")]
#[serde(rename_all = "snake_case")]
pub enum RawKafkaFormat {
    /// One JSON object per message; members become columns as the `ndjson` file format does.
    #[default]
    Json,
    /// The collection endpoints' own hit record, decoded with the media registry like the
    /// journal (runs inside `backflow serve`).
    HitRecord,
}

/// Where a partition without a committed offset starts.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema)]
#[schemars(rename = "StartFrom")]
#[serde(rename_all = "snake_case")]
pub enum RawStartFrom {
    /// The oldest retained message.
    #[default]
    Earliest,
    /// Only messages produced after the group first joined.
    Latest,
}

/// File format of a source.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema)]
#[schemars(rename = "FileFormat")]
#[serde(rename_all = "snake_case")]
pub enum RawFileFormat {
    /// By file name: `.csv` / `.csv.gz` is CSV, everything else NDJSON.
    #[default]
    Auto,
    /// One JSON object per line.
    Ndjson,
    /// Comma-separated values (see `csv`).
    Csv,
}

/// Compression of source files.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema)]
#[schemars(rename = "Compression")]
#[serde(rename_all = "snake_case")]
pub enum RawCompression {
    /// By file name: `.gz` is gzip.
    #[default]
    Auto,
    /// Not compressed.
    None,
    /// gzip.
    Gzip,
}

/// How CSV files are read.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "CsvOptions")]
#[serde(deny_unknown_fields)]
pub struct RawCsvOptions {
    /// Field separator: one ASCII character (default `,`).
    #[serde(default)]
    pub delimiter: Option<Located<String>>,
    /// Whether the first line names the columns (default true).
    #[serde(default)]
    pub has_header: Option<bool>,
}

/// One transform step: a mapping with exactly one key, the step's name.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "Transform")]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RawTransform {
    /// Rename columns: `{from: to, ...}`, applied in the order written.
    Rename(OrderedMap<Located<String>>),
    /// Convert columns to types: `{column: type, ...}`. A value that does not convert sends its
    /// row to quarantine.
    Cast(OrderedMap<Located<TypeName>>),
    /// Keep only rows for which this SQL expression is true, e.g. `"amount > 0"`.
    Filter(Located<String>),
    /// Add or replace columns: `{column: SQL expression, ...}`, in the order written; later
    /// entries see earlier ones.
    Derive(OrderedMap<Located<String>>),
    /// Remove columns (missing ones are ignored).
    Drop(Located<Vec<Located<String>>>),
    /// Keep one row per key.
    Dedup(RawDedup),
    /// Check rows against a dataset schema; failing rows go to quarantine with a reason.
    Validate(RawValidate),
}

/// Options of a `dedup` step.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "Dedup")]
#[serde(deny_unknown_fields)]
pub struct RawDedup {
    /// The key columns (at least one).
    pub keys: Located<Vec<Located<String>>>,
    /// Which row of a key to keep, in input order (default `first`).
    #[serde(default)]
    pub keep: RawKeep,
}

/// Which row of a duplicate key to keep.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema)]
#[schemars(rename = "Keep")]
#[serde(rename_all = "snake_case")]
pub enum RawKeep {
    /// The first row seen.
    #[default]
    First,
    /// The last row seen.
    Last,
}

/// Options of a `validate` step.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "Validate")]
#[serde(deny_unknown_fields)]
pub struct RawValidate {
    /// Dataset schema name: the file `{schemas_dir}/{schema}.yaml`.
    pub schema: Located<String>,
}

/// A sink kind, chosen by `type`. `type` must be the first key of the mapping.
#[derive(Debug, JsonSchema)]
#[schemars(rename = "Sink")]
#[serde(tag = "type", rename_all = "snake_case")]
#[allow(
    clippy::large_enum_variant,
    reason = "parsed once per pipeline file; size is irrelevant"
)]
pub enum RawSink {
    /// Hive-partitioned Parquet in the lake, written exactly once.
    Parquet(RawParquetSink),
    /// One message per row on a Kafka topic, keyed, every delivery acknowledged before the
    /// batch commits (at least once downstream, with dedup headers).
    Kafka(super::raw_kafka_sink::RawKafkaSink),
}

/// The `type` values of a sink.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    Parquet,
    Kafka,
}

impl<'de> Tagged<'de> for RawSink {
    type Kind = SinkKind;
    const KINDS: &'static str = "parquet, kafka";

    fn from_kind<A: MapAccess<'de>>(kind: SinkKind, rest: A) -> Result<Self, A::Error> {
        let rest = de::value::MapAccessDeserializer::new(rest);
        match kind {
            SinkKind::Parquet => RawParquetSink::deserialize(rest).map(Self::Parquet),
            SinkKind::Kafka => {
                super::raw_kafka_sink::RawKafkaSink::deserialize(rest).map(Self::Kafka)
            }
        }
    }
}

impl<'de> Deserialize<'de> for RawSink {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(TaggedVisitor(PhantomData))
    }
}

/// `type: parquet`: files under `{lake}/{dataset}/dt=YYYY-MM-DD[/hour=HH]/`.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "ParquetSink")]
#[serde(deny_unknown_fields)]
pub struct RawParquetSink {
    /// Dataset name, `[a-z][a-z0-9_]*`: the folder under the lake root. Two pipelines cannot
    /// write the same dataset.
    pub dataset: Located<String>,
    /// How rows are split into Hive partitions.
    pub partition_by: RawPartitionBy,
    /// Rows per Parquet row group (> 0, default 1000000).
    #[serde(default)]
    pub row_group_rows: Option<Located<u64>>,
}

/// Partitioning of a Parquet sink.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "PartitionBy")]
#[serde(deny_unknown_fields)]
pub struct RawPartitionBy {
    /// Timestamp column the partition is taken from (in the workspace time zone).
    pub column: Located<String>,
    /// `day` (`dt=`) or `hour` (`dt=/hour=`), default `hour`.
    #[serde(default)]
    pub granularity: RawGranularity,
}

/// Partition granularity.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema)]
#[schemars(rename = "Granularity")]
#[serde(rename_all = "snake_case")]
pub enum RawGranularity {
    /// `dt=YYYY-MM-DD`
    Day,
    /// `dt=YYYY-MM-DD/hour=HH`
    #[default]
    Hour,
}

/// When a pipeline runs.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "Schedule")]
#[serde(deny_unknown_fields)]
pub struct RawSchedule {
    /// Cron expression. Five fields (`minute hour day-of-month month day-of-week`, crontab
    /// meaning, day-of-week 0 or 7 = Sunday) run at second 0; six or seven fields
    /// (`second minute hour day-of-month month day-of-week [year]`) follow the `cron` crate,
    /// where day-of-week 1 = Sunday (names like `MON-FRI` are clearer).
    pub cron: Located<String>,
    /// IANA time zone the cron expression is read in, e.g. `Asia/Shanghai`
    /// (default: the daemon's `time_zone`).
    #[serde(default)]
    pub time_zone: Option<Located<String>>,
    /// What a fire does while the previous run of this job is still queued or running: `skip`
    /// (default; counted in `backflow_schedule_overlaps_skipped_total`) or `queue` (a `queued`
    /// run that starts when the previous one ends).
    #[serde(default)]
    pub overlap: RawOverlap,
    /// What happens to fire times missed while the daemon was down (or the clock jumped):
    /// `run_once` (default: one run for the latest missed fire time, at startup) or `skip`.
    #[serde(default)]
    pub misfire: RawMisfire,
    /// Retries of a run that failed with a retryable error (storage, network, Kafka, a busy
    /// catalog or job lock); configuration and validation errors are never retried.
    /// Default: no retries.
    #[serde(default)]
    pub retries: Option<RawRetries>,
    /// The workspace whose run concurrency (`scheduler.max_runs_per_workspace`) this job counts
    /// against (default `default`).
    #[serde(default)]
    pub workspace: Option<Located<String>>,
}

/// The overlap policy of a schedule.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema)]
#[schemars(rename = "Overlap")]
#[serde(rename_all = "snake_case")]
pub enum RawOverlap {
    /// Drop the fire (logged and counted).
    #[default]
    Skip,
    /// Record a `queued` run that starts after the previous one.
    Queue,
}

/// The misfire policy of a schedule.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema)]
#[schemars(rename = "Misfire")]
#[serde(rename_all = "snake_case")]
pub enum RawMisfire {
    /// Run once for the latest missed fire time.
    #[default]
    RunOnce,
    /// Skip missed fire times (logged and counted); wait for the next one.
    Skip,
}

/// Retries with exponential backoff.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "Retries")]
#[serde(deny_unknown_fields)]
pub struct RawRetries {
    /// Retries after the first attempt, 0 to 20.
    pub max: Located<u64>,
    /// Wait before the first retry: a duration such as `500ms`, `30s`, `10m`, `2h`
    /// (default `30s`); doubled for each further retry.
    #[serde(default)]
    pub backoff_initial: Option<Located<String>>,
    /// Longest wait between retries (default `10m`); not less than `backoff_initial`.
    #[serde(default)]
    pub backoff_max: Option<Located<String>>,
}

/// A behaviour test of a pipeline.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "Test")]
#[serde(deny_unknown_fields)]
pub struct RawTest {
    /// What the test shows (unique within the pipeline).
    pub name: Located<String>,
    /// Rows as the source would yield them: mappings of column to scalar or null.
    pub input: Vec<Located<Row>>,
    /// Expected output rows, in order: every column of the output, timestamps as RFC 3339 UTC
    /// strings (`2021-10-23T02:00:00Z`).
    #[serde(default)]
    pub expect: Vec<Located<Row>>,
    /// Expected quarantined rows, in order: each a substring of the row's quarantine reason.
    #[serde(default)]
    pub expect_quarantine: Vec<String>,
}

/// An internally tagged enum read without buffering: `type` first, then the variant's keys.
pub trait Tagged<'de>: Sized {
    /// The enum of `type` values.
    type Kind: Deserialize<'de>;
    /// The `type` values, for messages.
    const KINDS: &'static str;
    /// Reads the variant of `kind` from the rest of the mapping.
    fn from_kind<A: MapAccess<'de>>(kind: Self::Kind, rest: A) -> Result<Self, A::Error>;
}

/// The visitor behind every [`Tagged`] enum's `Deserialize`.
pub struct TaggedVisitor<T>(pub PhantomData<T>);

impl<'de, T: Tagged<'de>> Visitor<'de> for TaggedVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a mapping whose first key is `type` (one of {})",
            T::KINDS
        )
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        match map.next_key::<String>()? {
            Some(key) if key == "type" => {
                let kind = map.next_value()?;
                T::from_kind(kind, map)
            }
            Some(key) => Err(de::Error::custom(format_args!(
                "expected `type` as the first key (one of {}), found `{key}`; write `type:` first",
                T::KINDS
            ))),
            None => Err(de::Error::missing_field("type")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<T: for<'de> Deserialize<'de>>(text: &str) -> T {
        match serde_saphyr::from_str(text) {
            Ok(value) => value,
            Err(err) => panic!("{err}"),
        }
    }

    #[test]
    fn ordered_map_keeps_order_and_key_positions() {
        let map: OrderedMap<Located<String>> = parse("z: a\nb: c\n");
        let keys: Vec<_> = map.0.iter().map(|(k, _)| k.value().as_str()).collect();
        assert_eq!(keys, ["z", "b"]);
        assert_eq!(
            (map.0[1].0.location().line(), map.0[1].1.location().column()),
            (2, 4)
        );
    }

    #[test]
    fn tagged_source_keeps_positions() {
        let source: RawSource =
            parse("type: object_store_files\nurl: memory://x\nmax_files_per_batch: 0\n");
        let RawSource::ObjectStoreFiles(files) = source else {
            panic!("expected object_store_files");
        };
        assert_eq!(
            (files.url.location().line(), files.url.location().column()),
            (2, 6)
        );
        assert_eq!(
            files.max_files_per_batch.map(|m| m.location().line()),
            Some(3)
        );
    }

    #[test]
    fn tagged_source_wants_type_first() {
        let err =
            serde_saphyr::from_str::<RawSource>("url: memory://x\ntype: object_store_files\n");
        let message = err.map(|_| ()).map_err(|e| e.to_string());
        assert!(
            matches!(&message, Err(m) if m.contains("expected `type` as the first key")),
            "{message:?}"
        );
    }

    #[test]
    fn tagged_sink_unknown_type_lists_the_known_ones() {
        let err = serde_saphyr::from_str::<RawSink>("type: delta\ndataset: x\n");
        let message = err.map(|_| ()).map_err(|e| e.to_string());
        assert!(
            matches!(&message, Err(m) if m.contains("unknown variant `delta`")),
            "{message:?}"
        );
    }
}
