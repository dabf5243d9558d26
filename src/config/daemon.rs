//! The daemon's own settings: `backflow.yaml`, overridden by `BACKFLOW__SECTION__KEY`
//! environment variables. Every key has a default, so the daemon runs with no file at all.
//!
//! Both layers are read as text first (the file keeps each value's position, the environment
//! its variable name), then every value is parsed once by the same code, so an error names
//! `file:line:column` and the key, or the variable.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Location;

use super::error::{ConfigError, is_blank, parse_yaml};
use super::load::parse_time_zone;
use super::raw::Located;
use crate::forward::ForwardConfig;
use crate::storage::StorageUrl;

/// Prefix of the environment variables that override `backflow.yaml`.
pub const ENV_PREFIX: &str = "BACKFLOW__";
/// The `file` of errors about environment variables.
pub const ENV_ORIGIN: &str = "<environment>";
/// Upper bound of `scheduler.max_concurrent_runs`.
pub const MAX_CONCURRENT_RUNS: usize = 10;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The daemon's validated settings.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonConfig {
    /// `data_dir`: root of local state (journal, catalog, lake by default); default `./data`.
    pub data_dir: PathBuf,
    /// `time_zone`: workspace time zone (partitions, schedules, local timestamps); default
    /// `Asia/Shanghai`.
    pub time_zone: chrono_tz::Tz,
    /// `pipelines_dir`: pipeline definitions; default `./pipelines`.
    pub pipelines_dir: PathBuf,
    /// `schemas_dir`: dataset schemas; default `./schemas`.
    pub schemas_dir: PathBuf,
    /// `lake.url`: where datasets are written; default `file://{data_dir}/lake`.
    pub lake_url: StorageUrl,
    /// `catalog.path`: the SQLite state store; default `{data_dir}/catalog.sqlite`.
    pub catalog_path: PathBuf,
    /// `public.listen`: monitoring links, reports; default `127.0.0.1:8080`.
    pub public_listen: SocketAddr,
    /// `public.base_url`: how media reach the public listener (scheme, host, optional port and
    /// path prefix), used in minted links; default `http://127.0.0.1:8080`.
    pub public_base_url: String,
    /// `public.max_url_bytes`: longest accepted request target (path + query) on the public
    /// listener; default 16384 (media callbacks reach 10 KB).
    pub public_max_url_bytes: usize,
    /// `public.rate_limit_per_ip`: hits per second one caller address may make (burst of one
    /// second); 0 = no limit (the default: media servers call from few addresses).
    pub public_rate_limit_per_ip: u32,
    /// `public.rate_limit_global`: hits per second over all callers; 0 = no limit (default).
    pub public_rate_limit_global: u32,
    /// `admin.listen`: admin API and metrics; default `127.0.0.1:8081`.
    pub admin_listen: SocketAddr,
    /// `log.format`: `text` or `json`; default `text`.
    pub log_format: LogFormat,
    /// `log.level`: a tracing `EnvFilter` directive such as `info,backflow=debug`; default `info`.
    pub log_level: String,
    /// `shutdown.grace_seconds`: how long running work may finish on shutdown; default 30.
    pub shutdown_grace: Duration,
    /// `scheduler.max_concurrent_runs`: pipeline runs at once, 1 to 10; default 3.
    pub max_concurrent_runs: NonZeroUsize,
    /// `scheduler.max_runs_per_workspace`: runs of one workspace's jobs at once, 1 to 10;
    /// default 3 (spec/datasets-admin.md §1.10.8). Further runs wait as `queued`.
    pub max_runs_per_workspace: NonZeroUsize,
    /// `quota.staging_retention_days`: how long records staged for lack of quota wait for a
    /// top-up before they are purged (audited and counted), 1 to 365; default 30 (R63).
    pub quota_staging_retention_days: u32,
    /// `reports.download_ttl_hours`: how long a finished click-detail download stays
    /// downloadable before its archive is deleted (1 to 720 hours; default 72).
    pub reports_download_ttl_hours: u32,
    /// `forward.*`: third-party monitoring forwarding (see [`ForwardConfig`]).
    pub forward: ForwardConfig,
    /// `enrich.geo_db`: a MaxMind DB City file (GeoLite2-City, DB-IP City Lite) for the geo_*
    /// columns of `ad_events`; default empty (none: those columns stay null).
    pub enrich_geo_db: Option<PathBuf>,
    /// `enrich.city_tiers`: a `city,tier` CSV replacing the bundled `schemas/city_tiers.csv`;
    /// default empty (the bundled table).
    pub enrich_city_tiers: Option<PathBuf>,
    /// `journal.*`: where the collection endpoints append accepted hits (see [`JournalConfig`]).
    pub journal: JournalConfig,
}

/// Where the collection endpoints append accepted hits.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum JournalConfig {
    /// `journal.kind: local` (default): the embedded journal under `{data_dir}/journal`.
    #[default]
    Local,
    /// `journal.kind: kafka`: a Kafka topic, every hit acknowledged with `acks=all`.
    Kafka(KafkaJournalConfig),
}

/// `journal.kafka.*`: the collector's Kafka producer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaJournalConfig {
    /// `brokers`: bootstrap brokers, comma-separated `host:port` (required).
    pub brokers: Vec<String>,
    /// `topic`: where hits go; default `backflow.hits`. Must exist (the collector never
    /// creates it).
    pub topic: String,
    /// `message_timeout_ms`: how long a hit may wait for the broker's acknowledgement before
    /// the endpoint gives up on it (503 for an impression, fallback file for a click);
    /// default 5000, 100 to 300000.
    pub message_timeout: Duration,
    /// `max_in_flight`: hits waiting for acknowledgement at once (librdkafka's
    /// `queue.buffering.max.messages`); a full queue is answered like a broker down. Default
    /// 100000.
    pub max_in_flight: NonZeroUsize,
    /// `message_max_bytes`: largest record produced (librdkafka's `message.max.bytes`); default
    /// 1000000 (the broker's default limit).
    pub message_max_bytes: usize,
    /// `fallback_dir`: clicks the broker did not acknowledge, replayed when it is back; default
    /// `{data_dir}/fallback/kafka`.
    pub fallback_dir: PathBuf,
    /// `security_protocol`: `plaintext` (default), `sasl_plaintext`, `ssl` or `sasl_ssl`.
    pub security_protocol: KafkaSecurity,
    /// `tls.*` (`tls.ca`, `tls.certificate`, `tls.key`, `tls.key_password_env`): with `ssl` or
    /// `sasl_ssl` only.
    pub tls: Box<crate::config::model::KafkaTls>,
    /// `sasl_mechanism`: `plain` (default), `scram_sha_256` or `scram_sha_512`.
    pub sasl_mechanism: crate::config::model::SaslMechanism,
    /// `sasl_username`: SASL user (with `sasl_plaintext`).
    pub sasl_username: Option<String>,
    /// `sasl_password_env`: the environment variable holding the SASL password (its name, never
    /// the value, is configured).
    pub sasl_password_env: Option<String>,
}

/// How a Kafka client talks to the brokers (librdkafka's `security.protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KafkaSecurity {
    /// No login, no TLS.
    #[default]
    Plaintext,
    /// A SASL login without TLS.
    SaslPlaintext,
    /// TLS, no login.
    Ssl,
    /// A SASL login over TLS.
    SaslSsl,
}

impl KafkaSecurity {
    /// The spellings, as the configuration takes them.
    pub const NAMES: &str = "plaintext, sasl_plaintext, ssl, sasl_ssl";

    /// Parses a configured value.
    pub fn parse(value: &str) -> Result<KafkaSecurity, String> {
        match value {
            "plaintext" => Ok(KafkaSecurity::Plaintext),
            "sasl_plaintext" => Ok(KafkaSecurity::SaslPlaintext),
            "ssl" => Ok(KafkaSecurity::Ssl),
            "sasl_ssl" => Ok(KafkaSecurity::SaslSsl),
            other => Err(format!(
                "unknown security protocol `{other}`, expected one of {}",
                Self::NAMES
            )),
        }
    }

    /// librdkafka's `security.protocol` value (also the configured spelling).
    pub fn librdkafka_name(self) -> &'static str {
        match self {
            KafkaSecurity::Plaintext => "plaintext",
            KafkaSecurity::SaslPlaintext => "sasl_plaintext",
            KafkaSecurity::Ssl => "ssl",
            KafkaSecurity::SaslSsl => "sasl_ssl",
        }
    }

    /// Whether the client logs in with SASL.
    pub fn sasl(self) -> bool {
        matches!(self, KafkaSecurity::SaslPlaintext | KafkaSecurity::SaslSsl)
    }

    /// Whether the connections are TLS.
    pub fn tls(self) -> bool {
        matches!(self, KafkaSecurity::Ssl | KafkaSecurity::SaslSsl)
    }
}

impl Default for DaemonConfig {
    fn default() -> Self {
        let data_dir = PathBuf::from("./data");
        Self {
            time_zone: chrono_tz::Asia::Shanghai,
            pipelines_dir: PathBuf::from("./pipelines"),
            schemas_dir: PathBuf::from("./schemas"),
            lake_url: StorageUrl::File {
                root: data_dir.join("lake"),
            },
            catalog_path: data_dir.join("catalog.sqlite"),
            public_listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            public_base_url: "http://127.0.0.1:8080".to_string(),
            public_max_url_bytes: 16 * 1024,
            public_rate_limit_per_ip: 0,
            public_rate_limit_global: 0,
            admin_listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8081)),
            log_format: LogFormat::Text,
            log_level: "info".to_string(),
            shutdown_grace: Duration::from_secs(30),
            max_concurrent_runs: NonZeroUsize::MIN.saturating_add(2),
            max_runs_per_workspace: NonZeroUsize::MIN.saturating_add(2),
            quota_staging_retention_days: 30,
            reports_download_ttl_hours: 72,
            forward: ForwardConfig::default(),
            enrich_geo_db: None,
            enrich_city_tiers: None,
            journal: JournalConfig::Local,
            data_dir,
        }
    }
}

impl DaemonConfig {
    /// Reads `file` (if any) and applies the `BACKFLOW__*` variables of `env` over it; other
    /// variables are ignored. Relative paths stay relative (to the working directory).
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<DaemonConfig, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut settings = match file {
            Some(file) => read_file(file).map_err(|err| vec![err])?,
            None => HashMap::new(),
        };
        apply_env(&mut settings, env, &mut errors);
        let mut resolver = Resolver {
            file: file.unwrap_or(Path::new("backflow.yaml")),
            settings,
            errors,
        };
        let config = resolver.resolve();
        if resolver.errors.is_empty() {
            Ok(config)
        } else {
            Err(resolver.errors)
        }
    }
}

/// The keys of `backflow.yaml`, as `section.key`; the variable of `a.b` is `BACKFLOW__A__B`.
const KEYS: &[&str] = &[
    "data_dir",
    "time_zone",
    "pipelines_dir",
    "schemas_dir",
    "lake.url",
    "catalog.path",
    "public.listen",
    "public.base_url",
    "public.max_url_bytes",
    "public.rate_limit_per_ip",
    "public.rate_limit_global",
    "admin.listen",
    "log.format",
    "log.level",
    "shutdown.grace_seconds",
    "scheduler.max_concurrent_runs",
    "scheduler.max_runs_per_workspace",
    "quota.staging_retention_days",
    "reports.download_ttl_hours",
    "forward.enabled",
    "forward.concurrency",
    "forward.timeout_seconds",
    "forward.give_up_seconds",
    "forward.max_backoff_seconds",
    "forward.kafka_group",
    "enrich.geo_db",
    "enrich.city_tiers",
    "journal.kind",
    "journal.kafka.brokers",
    "journal.kafka.topic",
    "journal.kafka.message_timeout_ms",
    "journal.kafka.max_in_flight",
    "journal.kafka.message_max_bytes",
    "journal.kafka.fallback_dir",
    "journal.kafka.security_protocol",
    "journal.kafka.sasl_mechanism",
    "journal.kafka.sasl_username",
    "journal.kafka.sasl_password_env",
    "journal.kafka.tls.ca",
    "journal.kafka.tls.certificate",
    "journal.kafka.tls.key",
    "journal.kafka.tls.key_password_env",
];

/// `backflow.yaml` as written; every value is text with its position.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    /// Root of local state.
    data_dir: Option<Located<String>>,
    /// Workspace time zone.
    time_zone: Option<Located<String>>,
    /// Pipeline definitions.
    pipelines_dir: Option<Located<String>>,
    /// Dataset schemas.
    schemas_dir: Option<Located<String>>,
    /// `url`: the lake's storage URL.
    lake: Option<RawSection<RawUrl>>,
    /// `path`: the catalog database.
    catalog: Option<RawSection<RawPath>>,
    /// `listen`: public listener.
    public: Option<RawSection<RawPublic>>,
    /// `listen`: admin listener.
    admin: Option<RawSection<RawListen>>,
    /// `format`, `level`.
    log: Option<RawSection<RawLog>>,
    /// `grace_seconds`.
    shutdown: Option<RawSection<RawShutdown>>,
    /// `max_concurrent_runs`, `max_runs_per_workspace`.
    scheduler: Option<RawSection<RawScheduler>>,
    /// `staging_retention_days`.
    quota: Option<RawSection<RawQuota>>,
    /// `download_ttl_hours`.
    reports: Option<RawSection<RawReports>>,
    /// Third-party forwarding.
    forward: Option<RawSection<RawForward>>,
    /// `geo_db`, `city_tiers`.
    enrich: Option<RawSection<RawEnrich>>,
    /// `kind`, `kafka`.
    journal: Option<RawSection<RawJournal>>,
}

/// A section (transparent; lets every section share the same handling).
#[derive(Debug, Deserialize)]
#[serde(transparent)]
struct RawSection<T>(T);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUrl {
    /// Storage URL.
    url: Option<Located<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPath {
    /// File path.
    path: Option<Located<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    /// `ip:port`.
    listen: Option<Located<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPublic {
    /// `ip:port`.
    listen: Option<Located<String>>,
    /// Base URL of minted links.
    base_url: Option<Located<String>>,
    /// Longest accepted request target.
    max_url_bytes: Option<Located<String>>,
    /// Hits per second per caller address (0 = no limit).
    rate_limit_per_ip: Option<Located<String>>,
    /// Hits per second in all (0 = no limit).
    rate_limit_global: Option<Located<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    /// `text` or `json`.
    format: Option<Located<String>>,
    /// `EnvFilter` directive.
    level: Option<Located<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShutdown {
    /// Seconds.
    grace_seconds: Option<Located<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScheduler {
    /// 1 to 10.
    max_concurrent_runs: Option<Located<String>>,
    /// 1 to 10.
    max_runs_per_workspace: Option<Located<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuota {
    /// 1 to 365.
    staging_retention_days: Option<Located<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReports {
    /// 1 to 720.
    download_ttl_hours: Option<Located<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawForward {
    /// `true` or `false`.
    enabled: Option<Located<String>>,
    /// Requests in flight.
    concurrency: Option<Located<String>>,
    /// Per request.
    timeout_seconds: Option<Located<String>>,
    /// Give-up horizon.
    give_up_seconds: Option<Located<String>>,
    /// Longest wait between attempts.
    max_backoff_seconds: Option<Located<String>>,
    /// Consumer group on the Kafka journal topic.
    kafka_group: Option<Located<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnrich {
    /// MaxMind DB City file, or empty for none.
    geo_db: Option<Located<String>>,
    /// City tier CSV, or empty for the bundled table.
    city_tiers: Option<Located<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJournal {
    /// `local` or `kafka`.
    kind: Option<Located<String>>,
    /// The producer's settings.
    kafka: Option<RawSection<RawKafkaJournal>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKafkaJournal {
    /// Comma-separated `host:port`.
    brokers: Option<Located<String>>,
    /// Topic name.
    topic: Option<Located<String>>,
    /// Milliseconds.
    message_timeout_ms: Option<Located<String>>,
    /// Messages.
    max_in_flight: Option<Located<String>>,
    /// Bytes.
    message_max_bytes: Option<Located<String>>,
    /// Directory.
    fallback_dir: Option<Located<String>>,
    /// `plaintext` or `sasl_plaintext`.
    security_protocol: Option<Located<String>>,
    /// `plain`, `scram_sha_256` or `scram_sha_512`.
    sasl_mechanism: Option<Located<String>>,
    /// SASL user.
    sasl_username: Option<Located<String>>,
    /// Name of the variable holding the SASL password.
    sasl_password_env: Option<Located<String>>,
    /// `ca`, `certificate`, `key`, `key_password_env`.
    tls: Option<RawSection<RawKafkaJournalTls>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKafkaJournalTls {
    /// PEM file of the CA(s) to trust.
    ca: Option<Located<String>>,
    /// PEM file of the client certificate.
    certificate: Option<Located<String>>,
    /// PEM file of its private key.
    key: Option<Located<String>>,
    /// Name of the variable holding the key's password.
    key_password_env: Option<Located<String>>,
}

/// Where a setting's text came from.
#[derive(Debug, Clone)]
enum Origin {
    File(Location),
    Env(String),
}

/// A setting's text and origin, before parsing.
#[derive(Debug, Clone)]
struct Setting {
    value: String,
    origin: Origin,
}

fn read_file(file: &Path) -> Result<HashMap<&'static str, Setting>, ConfigError> {
    let text = std::fs::read_to_string(file)
        .map_err(|err| ConfigError::file(file, format!("cannot read config file: {err}")))?;
    let raw: RawDaemon = if is_blank(&text) {
        RawDaemon::default()
    } else {
        parse_yaml(file, &text)?
    };
    Ok(file_settings(raw))
}

fn file_settings(raw: RawDaemon) -> HashMap<&'static str, Setting> {
    let leaves = [
        ("data_dir", raw.data_dir),
        ("time_zone", raw.time_zone),
        ("pipelines_dir", raw.pipelines_dir),
        ("schemas_dir", raw.schemas_dir),
        ("lake.url", raw.lake.and_then(|s| s.0.url)),
        ("catalog.path", raw.catalog.and_then(|s| s.0.path)),
        (
            "public.listen",
            raw.public.as_ref().and_then(|s| s.0.listen.clone()),
        ),
        (
            "public.base_url",
            raw.public.as_ref().and_then(|s| s.0.base_url.clone()),
        ),
        (
            "public.max_url_bytes",
            raw.public.as_ref().and_then(|s| s.0.max_url_bytes.clone()),
        ),
        (
            "public.rate_limit_per_ip",
            raw.public
                .as_ref()
                .and_then(|s| s.0.rate_limit_per_ip.clone()),
        ),
        (
            "public.rate_limit_global",
            raw.public.and_then(|s| s.0.rate_limit_global),
        ),
        ("admin.listen", raw.admin.and_then(|s| s.0.listen)),
        (
            "log.format",
            raw.log.as_ref().and_then(|s| s.0.format.clone()),
        ),
        ("log.level", raw.log.and_then(|s| s.0.level)),
        (
            "shutdown.grace_seconds",
            raw.shutdown.and_then(|s| s.0.grace_seconds),
        ),
        (
            "scheduler.max_concurrent_runs",
            raw.scheduler
                .as_ref()
                .and_then(|s| s.0.max_concurrent_runs.clone()),
        ),
        (
            "scheduler.max_runs_per_workspace",
            raw.scheduler.and_then(|s| s.0.max_runs_per_workspace),
        ),
        (
            "quota.staging_retention_days",
            raw.quota.and_then(|s| s.0.staging_retention_days),
        ),
        (
            "reports.download_ttl_hours",
            raw.reports.and_then(|s| s.0.download_ttl_hours),
        ),
        (
            "forward.enabled",
            raw.forward.as_ref().and_then(|s| s.0.enabled.clone()),
        ),
        (
            "forward.concurrency",
            raw.forward.as_ref().and_then(|s| s.0.concurrency.clone()),
        ),
        (
            "forward.timeout_seconds",
            raw.forward
                .as_ref()
                .and_then(|s| s.0.timeout_seconds.clone()),
        ),
        (
            "forward.give_up_seconds",
            raw.forward
                .as_ref()
                .and_then(|s| s.0.give_up_seconds.clone()),
        ),
        (
            "forward.max_backoff_seconds",
            raw.forward
                .as_ref()
                .and_then(|s| s.0.max_backoff_seconds.clone()),
        ),
        (
            "forward.kafka_group",
            raw.forward.and_then(|s| s.0.kafka_group),
        ),
        (
            "enrich.geo_db",
            raw.enrich.as_ref().and_then(|s| s.0.geo_db.clone()),
        ),
        ("enrich.city_tiers", raw.enrich.and_then(|s| s.0.city_tiers)),
    ];
    let journal = raw.journal.map(|s| s.0);
    let journal_kind = journal.as_ref().and_then(|j| j.kind.clone());
    let kafka = journal.and_then(|j| j.kafka).map(|s| s.0);
    let kafka_leaves = kafka.map(|k| {
        let tls = k.tls.map(|s| s.0);
        let (ca, certificate, key, key_password_env) = match tls {
            Some(t) => (t.ca, t.certificate, t.key, t.key_password_env),
            None => (None, None, None, None),
        };
        [
            ("journal.kafka.tls.ca", ca),
            ("journal.kafka.tls.certificate", certificate),
            ("journal.kafka.tls.key", key),
            ("journal.kafka.tls.key_password_env", key_password_env),
            ("journal.kafka.brokers", k.brokers),
            ("journal.kafka.topic", k.topic),
            ("journal.kafka.message_timeout_ms", k.message_timeout_ms),
            ("journal.kafka.max_in_flight", k.max_in_flight),
            ("journal.kafka.message_max_bytes", k.message_max_bytes),
            ("journal.kafka.fallback_dir", k.fallback_dir),
            ("journal.kafka.security_protocol", k.security_protocol),
            ("journal.kafka.sasl_mechanism", k.sasl_mechanism),
            ("journal.kafka.sasl_username", k.sasl_username),
            ("journal.kafka.sasl_password_env", k.sasl_password_env),
        ]
    });
    let leaves = leaves
        .into_iter()
        .chain([("journal.kind", journal_kind)])
        .chain(kafka_leaves.into_iter().flatten());
    leaves
        .into_iter()
        .filter_map(|(key, value)| {
            let value = value?;
            let origin = Origin::File(value.location());
            Some((
                key,
                Setting {
                    value: value.into_value(),
                    origin,
                },
            ))
        })
        .collect()
}

/// Applies `BACKFLOW__SECTION__KEY=value` variables (names case-insensitive).
fn apply_env(
    settings: &mut HashMap<&'static str, Setting>,
    env: impl IntoIterator<Item = (String, String)>,
    errors: &mut Vec<ConfigError>,
) {
    for (name, value) in env {
        let Some(rest) = name
            .get(ENV_PREFIX.len()..)
            .filter(|_| has_env_prefix(&name))
        else {
            continue;
        };
        let key = rest.to_ascii_lowercase().replace("__", ".");
        match KEYS.iter().find(|known| **known == key) {
            Some(known) => {
                settings.insert(
                    known,
                    Setting {
                        value,
                        origin: Origin::Env(name),
                    },
                );
            }
            None => {
                let message = format!(
                    "unknown key `{key}`, expected one of {}",
                    env_names().join(", ")
                );
                errors.push(ConfigError::new(ENV_ORIGIN, (0, 0), name, message));
            }
        }
    }
}

fn has_env_prefix(name: &str) -> bool {
    name.get(..ENV_PREFIX.len())
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case(ENV_PREFIX))
}

/// The variable names of all keys.
fn env_names() -> Vec<String> {
    KEYS.iter()
        .map(|key| {
            format!(
                "{ENV_PREFIX}{}",
                key.to_ascii_uppercase().replace('.', "__")
            )
        })
        .collect()
}

/// Parses every setting, collecting errors.
struct Resolver<'a> {
    file: &'a Path,
    settings: HashMap<&'static str, Setting>,
    errors: Vec<ConfigError>,
}

impl Resolver<'_> {
    fn resolve(&mut self) -> DaemonConfig {
        let d = DaemonConfig::default();
        let data_dir = self.get("data_dir", parse_path).unwrap_or(d.data_dir);
        DaemonConfig {
            time_zone: self
                .get("time_zone", parse_time_zone)
                .unwrap_or(d.time_zone),
            pipelines_dir: self
                .get("pipelines_dir", parse_path)
                .unwrap_or(d.pipelines_dir),
            schemas_dir: self.get("schemas_dir", parse_path).unwrap_or(d.schemas_dir),
            lake_url: self
                .get("lake.url", |v| {
                    v.parse::<StorageUrl>().map_err(|e| e.to_string())
                })
                .unwrap_or_else(|| StorageUrl::File {
                    root: data_dir.join("lake"),
                }),
            catalog_path: self
                .get("catalog.path", parse_path)
                .unwrap_or_else(|| data_dir.join("catalog.sqlite")),
            public_listen: self
                .get("public.listen", parse_listen)
                .unwrap_or(d.public_listen),
            public_base_url: self
                .get("public.base_url", parse_base_url)
                .unwrap_or(d.public_base_url),
            public_max_url_bytes: self
                .get("public.max_url_bytes", parse_max_url)
                .unwrap_or(d.public_max_url_bytes),
            public_rate_limit_per_ip: self
                .get("public.rate_limit_per_ip", parse_rate)
                .unwrap_or(d.public_rate_limit_per_ip),
            public_rate_limit_global: self
                .get("public.rate_limit_global", parse_rate)
                .unwrap_or(d.public_rate_limit_global),
            admin_listen: self
                .get("admin.listen", parse_listen)
                .unwrap_or(d.admin_listen),
            log_format: self
                .get("log.format", parse_log_format)
                .unwrap_or(d.log_format),
            log_level: self
                .get("log.level", parse_log_level)
                .unwrap_or(d.log_level),
            shutdown_grace: self
                .get("shutdown.grace_seconds", parse_seconds)
                .unwrap_or(d.shutdown_grace),
            max_concurrent_runs: self
                .get("scheduler.max_concurrent_runs", parse_runs)
                .unwrap_or(d.max_concurrent_runs),
            max_runs_per_workspace: self
                .get("scheduler.max_runs_per_workspace", parse_runs)
                .unwrap_or(d.max_runs_per_workspace),
            quota_staging_retention_days: self
                .get("quota.staging_retention_days", parse_retention_days)
                .unwrap_or(d.quota_staging_retention_days),
            reports_download_ttl_hours: self
                .get("reports.download_ttl_hours", parse_ttl_hours)
                .unwrap_or(d.reports_download_ttl_hours),
            forward: self.forward(d.forward),
            enrich_geo_db: self
                .get("enrich.geo_db", parse_optional_path)
                .unwrap_or(d.enrich_geo_db),
            enrich_city_tiers: self
                .get("enrich.city_tiers", parse_optional_path)
                .unwrap_or(d.enrich_city_tiers),
            journal: self.journal(&data_dir),
            data_dir,
        }
    }

    /// `journal.*`; the `journal.kafka.*` keys are read (and checked) only with `kind: kafka`.
    fn journal(&mut self, data_dir: &Path) -> JournalConfig {
        let kind_origin = self.settings.get("journal.kind").map(|s| s.origin.clone());
        let kafka = self
            .get("journal.kind", |v| match v {
                "local" => Ok(false),
                "kafka" => Ok(true),
                other => Err(format!(
                    "unknown journal kind `{other}`, expected one of local, kafka"
                )),
            })
            .unwrap_or(false);
        if !kafka {
            return JournalConfig::Local;
        }
        let brokers = self.get("journal.kafka.brokers", parse_brokers);
        let topic = self
            .get("journal.kafka.topic", parse_topic)
            .unwrap_or_else(|| "backflow.hits".to_string());
        let message_timeout = self
            .get("journal.kafka.message_timeout_ms", |v| {
                match v.parse::<u64>() {
                    Ok(n) if (100..=300_000).contains(&n) => Ok(Duration::from_millis(n)),
                    _ => Err(format!(
                        "expected milliseconds from 100 to 300000, found `{v}`"
                    )),
                }
            })
            .unwrap_or(Duration::from_secs(5));
        let max_in_flight = self
            .get("journal.kafka.max_in_flight", |v| {
                parse_count(v, 10_000_000)
            })
            .unwrap_or(NonZeroUsize::MIN.saturating_add(99_999));
        let message_max_bytes = self
            .get("journal.kafka.message_max_bytes", |v| {
                match v.parse::<usize>() {
                    Ok(n) if (1000..=1_000_000_000).contains(&n) => Ok(n),
                    _ => Err(format!(
                        "expected a byte count from 1000 to 1000000000, found `{v}`"
                    )),
                }
            })
            .unwrap_or(1_000_000);
        let fallback_dir = self
            .get("journal.kafka.fallback_dir", parse_path)
            .unwrap_or_else(|| data_dir.join("fallback").join("kafka"));
        let security_protocol = self
            .get("journal.kafka.security_protocol", KafkaSecurity::parse)
            .unwrap_or(KafkaSecurity::Plaintext);
        let tls = self.journal_tls(security_protocol);
        let sasl_mechanism = self
            .get("journal.kafka.sasl_mechanism", |v| {
                use crate::config::model::SaslMechanism;
                match v {
                    "plain" => Ok(SaslMechanism::Plain),
                    "scram_sha_256" => Ok(SaslMechanism::ScramSha256),
                    "scram_sha_512" => Ok(SaslMechanism::ScramSha512),
                    other => Err(format!(
                        "unknown SASL mechanism `{other}`, expected one of plain, scram_sha_256, scram_sha_512"
                    )),
                }
            })
            .unwrap_or_default();
        let sasl_username = self.get("journal.kafka.sasl_username", parse_optional_text);
        let sasl_password_env = self.get("journal.kafka.sasl_password_env", parse_env_name);
        let (sasl_username, sasl_password_env) =
            (sasl_username.flatten(), sasl_password_env.flatten());
        let origin = kind_origin.unwrap_or(Origin::Env(format!("{ENV_PREFIX}JOURNAL__KIND")));
        let Some(brokers) = brokers else {
            let message = "`kind: kafka` needs `journal.kafka.brokers` (comma-separated host:port)";
            self.errors
                .push(self.error("journal.kind", origin, message.to_string()));
            return JournalConfig::Local;
        };
        if security_protocol.sasl() && (sasl_username.is_none() || sasl_password_env.is_none()) {
            let message = format!(
                "`security_protocol: {}` needs `journal.kafka.sasl_username` and \
                 `journal.kafka.sasl_password_env`",
                security_protocol.librdkafka_name()
            );
            self.errors
                .push(self.error("journal.kind", origin, message));
        }
        JournalConfig::Kafka(KafkaJournalConfig {
            brokers,
            topic,
            message_timeout,
            max_in_flight,
            message_max_bytes,
            fallback_dir,
            security_protocol,
            tls: Box::new(tls),
            sasl_mechanism,
            sasl_username,
            sasl_password_env,
        })
    }

    /// `journal.kafka.tls.*`: files that exist, a certificate with its key, and only with a TLS
    /// `protocol`.
    fn journal_tls(&mut self, protocol: KafkaSecurity) -> crate::config::model::KafkaTls {
        const TLS: [&str; 4] = [
            "journal.kafka.tls.ca",
            "journal.kafka.tls.certificate",
            "journal.kafka.tls.key",
            "journal.kafka.tls.key_password_env",
        ];
        let origins = TLS.map(|key| {
            self.settings
                .get(key)
                .filter(|s| !s.value.trim().is_empty())
                .map(|s| s.origin.clone())
        });
        let tls = crate::config::model::KafkaTls {
            ca: self.get(TLS[0], parse_tls_file).flatten(),
            certificate: self.get(TLS[1], parse_tls_file).flatten(),
            key: self.get(TLS[2], parse_tls_file).flatten(),
            key_password_env: self.get(TLS[3], parse_env_name).flatten(),
        };
        let [_, certificate, key, password] = &origins;
        let mismatch = if !protocol.tls() {
            TLS.iter().zip(&origins).find_map(|(k, o)| {
                let message = format!(
                    "TLS settings need `journal.kafka.security_protocol: ssl` or `sasl_ssl`, not `{}`",
                    protocol.librdkafka_name()
                );
                o.clone().map(|o| (*k, o, message))
            })
        } else {
            match (certificate, key, password) {
                (Some(o), None, _) => Some((
                    TLS[1],
                    o.clone(),
                    "a client certificate needs its private key in `journal.kafka.tls.key`".into(),
                )),
                (None, Some(o), _) => Some((
                    TLS[2],
                    o.clone(),
                    "a private key needs its client certificate in `journal.kafka.tls.certificate`"
                        .into(),
                )),
                (_, None, Some(o)) => Some((
                    TLS[3],
                    o.clone(),
                    "a key password needs the encrypted key in `journal.kafka.tls.key`".into(),
                )),
                _ => None,
            }
        };
        if let Some((key, origin, message)) = mismatch {
            self.errors.push(self.error(key, origin, message));
        }
        tls
    }

    fn forward(&mut self, d: ForwardConfig) -> ForwardConfig {
        ForwardConfig {
            enabled: self.get("forward.enabled", parse_bool).unwrap_or(d.enabled),
            concurrency: self
                .get("forward.concurrency", |v| parse_count(v, 256))
                .unwrap_or(d.concurrency),
            timeout: self
                .get("forward.timeout_seconds", |v| {
                    parse_positive_seconds(v, 300)
                })
                .unwrap_or(d.timeout),
            give_up_after: self
                .get("forward.give_up_seconds", |v| {
                    parse_positive_seconds(v, 30 * 24 * 3600)
                })
                .unwrap_or(d.give_up_after),
            max_backoff: self
                .get("forward.max_backoff_seconds", |v| {
                    parse_positive_seconds(v, 24 * 3600)
                })
                .unwrap_or(d.max_backoff),
            kafka_group: self
                .get("forward.kafka_group", |v| {
                    if v.is_empty() || v.len() > 249 || v.chars().any(char::is_whitespace) {
                        Err(format!(
                            "expected a consumer group name (1 to 249 characters, no spaces), found `{v}`"
                        ))
                    } else {
                        Ok(v.to_string())
                    }
                })
                .unwrap_or(d.kafka_group),
        }
    }

    /// The parsed value of `key` if it was set and is valid; records an error if invalid.
    fn get<T>(&mut self, key: &str, parse: impl FnOnce(&str) -> Result<T, String>) -> Option<T> {
        let setting = self.settings.remove(key)?;
        parse(setting.value.trim())
            .map_err(|message| self.errors.push(self.error(key, setting.origin, message)))
            .ok()
    }

    fn error(&self, key: &str, origin: Origin, message: String) -> ConfigError {
        match origin {
            Origin::File(at) => ConfigError::at(self.file, at, key, message),
            Origin::Env(variable) => ConfigError::new(ENV_ORIGIN, (0, 0), variable, message),
        }
    }
}

#[path = "daemon_values.rs"]
mod values;
use values::*;

#[cfg(test)]
#[path = "daemon_tests.rs"]
mod tests;
