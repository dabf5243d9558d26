//! Stage one of `sink: {type: kafka}`: rows published to a Kafka topic.
//!
//! Same rules as [`super::raw`]: every struct denies unknown keys, every field is documented
//! (the docs end up in `schemas/pipeline.schema.json`), checked values are [`Located`].

use schemars::JsonSchema;
use serde::Deserialize;

use super::raw::{Located, OrderedMap};

/// `type: kafka`: every row of a batch is published as one message, keyed by a column, with an
/// idempotent `acks=all` producer; the batch commits only after the broker acknowledged every
/// message. Delivery downstream is at least once: a batch that failed (or crashed) before its
/// commit is sent again, with the same `backflow-batch` / `backflow-row` headers, so consumers
/// can drop replays.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "KafkaSink")]
#[serde(deny_unknown_fields)]
pub struct RawKafkaSink {
    /// Bootstrap brokers, `host:port` each.
    pub brokers: Located<Vec<Located<String>>>,
    /// The topic messages go to. It must exist: the sink never creates topics.
    pub topic: Located<String>,
    /// The column whose value is the message key (text as is; numbers, booleans and timestamps
    /// in their JSON form). A row whose key is null goes to quarantine.
    pub key_column: Located<String>,
    /// Payload format (default `json`).
    #[serde(default)]
    pub format: RawKafkaSinkFormat,
    /// Fixed headers on every message, `{name: value, ...}`. Names starting with `backflow-`
    /// are reserved for the dedup headers.
    #[serde(default)]
    pub headers: Option<OrderedMap<Located<String>>>,
    /// How long a message may wait for the broker's acknowledgement, retries included, before
    /// it fails the batch, in milliseconds (> 0, default 30000; librdkafka's
    /// `message.timeout.ms`). Also bounds the broker check when a run starts.
    #[serde(default)]
    pub message_timeout_ms: Option<Located<u64>>,
    /// Messages waiting for acknowledgement at once (> 0, default 100000; librdkafka's
    /// `queue.buffering.max.messages`); the sink waits for acknowledgements before sending more.
    #[serde(default)]
    pub max_in_flight: Option<Located<u64>>,
    /// Largest message, key and headers included (1000 to 1000000000, default 1000000: the
    /// broker's default limit; librdkafka's `message.max.bytes`). A row whose message is larger
    /// goes to quarantine with the reason. Keep it at or below the topic's `max.message.bytes`.
    #[serde(default)]
    pub message_max_bytes: Option<Located<u64>>,
    /// `plaintext` (default), `sasl_plaintext`, `ssl` or `sasl_ssl`.
    #[serde(default)]
    pub security_protocol: Option<Located<RawSecurityProtocol>>,
    /// SASL mechanism (with `sasl_plaintext` and `sasl_ssl`; default `plain`).
    #[serde(default)]
    pub sasl_mechanism: Option<Located<super::raw::RawSaslMechanism>>,
    /// SASL user (with `sasl_plaintext` and `sasl_ssl`).
    #[serde(default)]
    pub sasl_username: Option<Located<String>>,
    /// The environment variable holding the SASL password (its name: the password itself never
    /// goes in the YAML), read when a run starts.
    #[serde(default)]
    pub sasl_password_env: Option<Located<String>>,
    /// TLS settings (with `ssl` and `sasl_ssl`; default: trust the system's CAs, no client
    /// certificate).
    #[serde(default)]
    pub tls: Option<Located<RawKafkaTls>>,
    /// Further librdkafka producer properties, `{property: value, ...}`, e.g.
    /// `{linger.ms: 20, compression.type: lz4, partitioner: murmur2_random}` (this build of
    /// librdkafka has no zstd). Checked by librdkafka when the pipeline is loaded. The delivery
    /// guarantees (`acks`, `enable.idempotence`, transactions), the fields above and secrets
    /// cannot be set here.
    #[serde(default)]
    pub client: Option<OrderedMap<Located<RawScalar>>>,
}

/// Payload format of the messages a Kafka sink publishes.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema)]
#[schemars(rename = "KafkaSinkFormat")]
#[serde(rename_all = "snake_case")]
pub enum RawKafkaSinkFormat {
    /// One JSON object per row, members in column order, nulls kept, timestamps as RFC 3339 in
    /// UTC (`2026-11-24T02:15:00Z`), dates `YYYY-MM-DD`.
    #[default]
    Json,
}

/// How a Kafka client talks to the brokers (librdkafka's `security.protocol`).
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[schemars(rename = "SecurityProtocol")]
#[serde(rename_all = "snake_case")]
pub enum RawSecurityProtocol {
    /// No login, no TLS.
    Plaintext,
    /// A SASL login, no TLS.
    SaslPlaintext,
    /// TLS (see `tls`), no login.
    Ssl,
    /// A SASL login over TLS (see `tls`).
    SaslSsl,
}

impl RawSecurityProtocol {
    pub fn parsed(self) -> crate::config::daemon::KafkaSecurity {
        use crate::config::daemon::KafkaSecurity;
        match self {
            RawSecurityProtocol::Plaintext => KafkaSecurity::Plaintext,
            RawSecurityProtocol::SaslPlaintext => KafkaSecurity::SaslPlaintext,
            RawSecurityProtocol::Ssl => KafkaSecurity::Ssl,
            RawSecurityProtocol::SaslSsl => KafkaSecurity::SaslSsl,
        }
    }
}

/// TLS settings of a Kafka client, with `security_protocol: ssl` or `sasl_ssl`. The brokers'
/// certificates are always verified, hostname included (each must name the host the client
/// connects to). Files are PEM, checked to exist when the configuration is loaded (relative
/// paths: from the working directory); librdkafka reads them when a client starts.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "KafkaTls")]
#[serde(deny_unknown_fields)]
pub struct RawKafkaTls {
    /// The CA certificate(s) to trust (librdkafka's `ssl.ca.location`). Default: the system
    /// trust store.
    #[serde(default)]
    pub ca: Option<Located<String>>,
    /// The client certificate, for brokers that require mutual TLS
    /// (`ssl.certificate.location`); with `key`.
    #[serde(default)]
    pub certificate: Option<Located<String>>,
    /// The client certificate's private key (`ssl.key.location`); with `certificate`.
    #[serde(default)]
    pub key: Option<Located<String>>,
    /// The environment variable holding the key's password, when the key is encrypted
    /// (`ssl.key.password`; its name: the password itself never goes in the YAML).
    #[serde(default)]
    pub key_password_env: Option<Located<String>>,
}

/// A YAML scalar taken as text (`5`, `true` and `"5"` alike).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[schemars(rename = "Scalar")]
#[serde(untagged)]
pub enum RawScalar {
    Text(String),
    Integer(i64),
    Float(f64),
    Boolean(bool),
}

impl RawScalar {
    /// The value as librdkafka takes it.
    pub fn to_text(&self) -> String {
        match self {
            RawScalar::Text(s) => s.clone(),
            RawScalar::Integer(n) => n.to_string(),
            RawScalar::Float(f) => f.to_string(),
            RawScalar::Boolean(b) => b.to_string(),
        }
    }
}

/// Where a dataset job announces each published version.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "Notify")]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    /// A Kafka topic: one message per published version, keyed by the dataset name, JSON
    /// `{dataset, version, seq, rows, published_at, path, job}`, with the `backflow-batch:
    /// {job}/{seq}` and `backflow-row: 0` headers.
    pub kafka: RawKafkaNotice,
}

/// `publish.notify.kafka`: the producer of a dataset job's change notices (the same producer
/// settings as a Kafka sink; the key is the dataset name).
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "KafkaNotice")]
#[serde(deny_unknown_fields)]
pub struct RawKafkaNotice {
    /// Bootstrap brokers, `host:port` each.
    pub brokers: Located<Vec<Located<String>>>,
    /// The topic notices go to. It must exist: it is never created.
    pub topic: Located<String>,
    /// Fixed headers on every notice, `{name: value, ...}` (`backflow-*` reserved).
    #[serde(default)]
    pub headers: Option<OrderedMap<Located<String>>>,
    /// How long a notice may wait for the broker's acknowledgement, in milliseconds (> 0,
    /// default 30000). Also bounds the broker check when a refresh starts.
    #[serde(default)]
    pub message_timeout_ms: Option<Located<u64>>,
    /// `plaintext` (default), `sasl_plaintext`, `ssl` or `sasl_ssl`.
    #[serde(default)]
    pub security_protocol: Option<Located<RawSecurityProtocol>>,
    /// SASL mechanism (default `plain`).
    #[serde(default)]
    pub sasl_mechanism: Option<Located<super::raw::RawSaslMechanism>>,
    /// SASL user (with `sasl_plaintext` and `sasl_ssl`).
    #[serde(default)]
    pub sasl_username: Option<Located<String>>,
    /// The environment variable holding the SASL password.
    #[serde(default)]
    pub sasl_password_env: Option<Located<String>>,
    /// TLS settings (with `ssl` and `sasl_ssl`), as for a Kafka sink.
    #[serde(default)]
    pub tls: Option<Located<RawKafkaTls>>,
    /// Further librdkafka producer properties (as for a Kafka sink).
    #[serde(default)]
    pub client: Option<OrderedMap<Located<RawScalar>>>,
}

impl RawKafkaNotice {
    /// The notice producer as a Kafka sink keyed by the notice's `dataset` member.
    pub fn into_sink(self) -> RawKafkaSink {
        let at = self.topic.location();
        RawKafkaSink {
            brokers: self.brokers,
            key_column: Located(serde_saphyr::Spanned::new("dataset".to_string(), at, at)),
            topic: self.topic,
            format: RawKafkaSinkFormat::Json,
            headers: self.headers,
            message_timeout_ms: self.message_timeout_ms,
            max_in_flight: None,
            message_max_bytes: None,
            security_protocol: self.security_protocol,
            sasl_mechanism: self.sasl_mechanism,
            sasl_username: self.sasl_username,
            sasl_password_env: self.sasl_password_env,
            tls: self.tls,
            client: self.client,
        }
    }
}
