//! Stage two of `source: {type: kafka}` and `sink: {type: kafka}`.

use std::path::PathBuf;
use std::time::Duration;

use serde_saphyr::Location;

use super::Converter;
use super::http::check_env_name;
use crate::config::daemon::KafkaSecurity;
use crate::config::model::{
    KafkaFormat, KafkaSasl, KafkaSink, KafkaSinkFormat, KafkaSource, KafkaTls, KafkaTopics,
    SaslMechanism, StartFrom,
};
use crate::config::raw::{
    Located, OrderedMap, RawKafka, RawKafkaFormat, RawKafkaSasl, RawSaslMechanism, RawStartFrom,
};
use crate::config::raw_kafka_sink::{
    RawKafkaSink, RawKafkaSinkFormat, RawKafkaTls, RawScalar, RawSecurityProtocol,
};

/// Producer properties a sink's `client` map cannot set: the delivery guarantees, what the
/// sink's own fields set, and transactions.
const RESERVED_CLIENT_KEYS: &[(&str, &str)] = &[
    ("bootstrap.servers", "use `brokers`"),
    ("metadata.broker.list", "use `brokers`"),
    ("acks", "the sink always waits for all in-sync replicas"),
    (
        "request.required.acks",
        "the sink always waits for all in-sync replicas",
    ),
    (
        "enable.idempotence",
        "the sink's producer is always idempotent",
    ),
    ("transactional.id", "the sink does not use transactions"),
    ("message.timeout.ms", "use `message_timeout_ms`"),
    ("delivery.timeout.ms", "use `message_timeout_ms`"),
    ("queue.buffering.max.messages", "use `max_in_flight`"),
    ("message.max.bytes", "use `message_max_bytes`"),
    ("security.protocol", "use `security_protocol`"),
    ("sasl.username", "use `sasl_username`"),
    ("sasl.mechanism", "use `sasl_mechanism`"),
    ("sasl.mechanisms", "use `sasl_mechanism`"),
    ("allow.auto.create.topics", "the sink never creates topics"),
    ("ssl.ca.location", "use `tls.ca`"),
    ("ssl.ca.pem", "use `tls.ca`"),
    ("ssl.certificate.location", "use `tls.certificate`"),
    ("ssl.certificate.pem", "use `tls.certificate`"),
    ("ssl.key.location", "use `tls.key`"),
    ("ssl.key.password", "use `tls.key_password_env`"),
    (
        "ssl.endpoint.identification.algorithm",
        "the brokers' host names are always verified",
    ),
    (
        "enable.ssl.certificate.verification",
        "the brokers' certificates are always verified",
    ),
];

/// Whether a librdkafka property holds a secret (never in YAML).
fn is_secret_key(key: &str) -> bool {
    [
        "password",
        "secret",
        "sasl.jaas",
        "private.key",
        "ssl.key.pem",
    ]
    .iter()
    .any(|s| key.contains(s))
}

/// A topic name Kafka accepts.
fn check_topic(name: &str) -> Result<String, String> {
    let valid = !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(name.to_string())
    } else {
        Err(format!(
            "`{name}` is not a topic name (1-249 of `a-z A-Z 0-9 . _ -`)"
        ))
    }
}

impl Converter<'_> {
    pub(super) fn kafka_source(&mut self, raw: RawKafka) -> Option<KafkaSource> {
        let brokers = self.brokers(raw.brokers, "source.brokers");
        let topics = match (raw.topics, raw.topic_pattern) {
            (Some(names), None) => self.topic_names(names).map(KafkaTopics::Names),
            (None, Some(pattern)) => self.topic_pattern(&pattern).map(KafkaTopics::Pattern),
            (Some(_), Some(pattern)) => {
                self.errors.push(
                    pattern.location(),
                    "source.topic_pattern",
                    "give either `topics` or `topic_pattern`, not both",
                );
                None
            }
            (None, None) => {
                self.errors.push(
                    raw.group_id.location(),
                    "source",
                    "missing `topics` (a list of topic names) or `topic_pattern` (a regular expression)",
                );
                None
            }
        };
        let group_id = self.non_empty(&raw.group_id, "source.group_id", "group id");
        let headers_column = self.optional_column(raw.headers_column, "source.headers_column");
        let key_column = self.optional_column(raw.key_column, "source.key_column");
        let records = self
            .limit(
                raw.max_records_per_batch,
                "source.max_records_per_batch",
                200_000,
            )
            .and_then(|n| self.usize_limit(n, "source.max_records_per_batch"));
        let bytes = self
            .limit(
                raw.max_bytes_per_batch,
                "source.max_bytes_per_batch",
                128 * 1024 * 1024,
            )
            .and_then(|n| self.usize_limit(n, "source.max_bytes_per_batch"));
        let idle = self.limit(raw.idle_ms, "source.idle_ms", 2_000);
        let join = self.limit(raw.join_timeout_ms, "source.join_timeout_ms", 60_000);
        let session = self.limit(raw.session_timeout_ms, "source.session_timeout_ms", 45_000);
        let sasl_at = raw.sasl.as_ref().map(|s| s.mechanism.location());
        let sasl = match raw.sasl {
            None => Some(None),
            Some(sasl) => self.kafka_sasl(sasl).map(Some),
        };
        let default = if sasl_at.is_some() {
            KafkaSecurity::SaslPlaintext
        } else {
            KafkaSecurity::Plaintext
        };
        let security = self.kafka_security(raw.security_protocol, default, raw.tls, "source");
        if let Some((protocol, at, _)) = &security {
            match (protocol.sasl(), sasl_at) {
                (true, None) => self.errors.push(
                    *at,
                    "source.security_protocol",
                    format!(
                        "`{}` needs a `sasl` login (mechanism, username, secret)",
                        protocol.librdkafka_name()
                    ),
                ),
                (false, Some(sasl_at)) => self.errors.push(
                    sasl_at,
                    "source.sasl",
                    format!(
                        "a `sasl` login needs `security_protocol: sasl_plaintext` or `sasl_ssl`, not `{}`",
                        protocol.librdkafka_name()
                    ),
                ),
                _ => {}
            }
        }
        Some(KafkaSource {
            brokers: brokers?,
            topics: topics?,
            group_id: group_id?,
            format: match raw.format {
                RawKafkaFormat::Json => KafkaFormat::Json,
                RawKafkaFormat::HitRecord => KafkaFormat::HitRecord,
            },
            journal: false,
            start_from: match raw.start_from {
                RawStartFrom::Earliest => StartFrom::Earliest,
                RawStartFrom::Latest => StartFrom::Latest,
            },
            headers_column: headers_column?,
            key_column: key_column?,
            max_records_per_batch: records?,
            max_bytes_per_batch: bytes?,
            idle: Duration::from_millis(idle?.0.get()),
            join_timeout: Duration::from_millis(join?.0.get()),
            session_timeout: Duration::from_millis(session?.0.get()),
            sasl: sasl?,
            security_protocol: security.as_ref()?.0,
            tls: Box::new(security?.2),
        })
    }

    /// `{at}.security_protocol` (`default` when absent) and `{at}.tls`, with where the
    /// protocol was written (for the callers' SASL checks). The TLS files must exist; TLS
    /// settings need a TLS protocol.
    pub(super) fn kafka_security(
        &mut self,
        protocol: Option<Located<RawSecurityProtocol>>,
        default: KafkaSecurity,
        tls: Option<Located<RawKafkaTls>>,
        at: &str,
    ) -> Option<(KafkaSecurity, Location, KafkaTls)> {
        let (protocol, protocol_at) = match &protocol {
            Some(p) => (p.value().parsed(), p.location()),
            None => (default, Location::UNKNOWN),
        };
        let Some(raw) = tls else {
            return Some((protocol, protocol_at, KafkaTls::default()));
        };
        let tls_at = raw.location();
        if !protocol.tls() {
            self.errors.push(
                tls_at,
                &format!("{at}.tls"),
                format!(
                    "TLS settings need `security_protocol: ssl` or `sasl_ssl`, not `{}`",
                    protocol.librdkafka_name()
                ),
            );
            return None;
        }
        let raw = raw.into_value();
        let p = |field: &str| format!("{at}.tls.{field}");
        let ca = self.tls_file(raw.ca.as_ref(), &p("ca"));
        let certificate = self.tls_file(raw.certificate.as_ref(), &p("certificate"));
        let key = self.tls_file(raw.key.as_ref(), &p("key"));
        let key_password_env = match &raw.key_password_env {
            None => Some(None),
            Some(env) => self
                .errors
                .check(
                    env.location(),
                    &p("key_password_env"),
                    check_env_name(env.value()),
                )
                .map(Some),
        };
        let mut paired = true;
        match (&raw.certificate, &raw.key) {
            (Some(cert), None) => {
                self.errors.push(
                    cert.location(),
                    &p("certificate"),
                    "a client certificate needs its private key in `tls.key`",
                );
                paired = false;
            }
            (None, Some(key)) => {
                self.errors.push(
                    key.location(),
                    &p("key"),
                    "a private key needs its client certificate in `tls.certificate`",
                );
                paired = false;
            }
            _ => {}
        }
        if let (Some(env), None) = (&raw.key_password_env, &raw.key) {
            self.errors.push(
                env.location(),
                &p("key_password_env"),
                "a key password needs the encrypted key in `tls.key`",
            );
            paired = false;
        }
        let tls = KafkaTls {
            ca: ca?,
            certificate: certificate?,
            key: key?,
            key_password_env: key_password_env?,
        };
        paired.then_some((protocol, protocol_at, tls))
    }

    /// A TLS file: `Some(None)` when not set, `None` after an error.
    fn tls_file(&mut self, raw: Option<&Located<String>>, path: &str) -> Option<Option<PathBuf>> {
        let Some(raw) = raw else {
            return Some(None);
        };
        let file = PathBuf::from(raw.value());
        let checked = if raw.value().trim().is_empty() {
            Err("expected the path of a PEM file, found an empty string".to_string())
        } else if file.is_file() {
            Ok(file)
        } else if file.exists() {
            Err(format!("`{}` is not a file", raw.value()))
        } else {
            Err(format!(
                "`{}` does not exist (a relative path is from the working directory)",
                raw.value()
            ))
        };
        self.errors.check(raw.location(), path, checked).map(Some)
    }

    fn kafka_sasl(&mut self, raw: RawKafkaSasl) -> Option<KafkaSasl> {
        let username = self.non_empty(&raw.username, "source.sasl.username", "user name");
        let secret = self.errors.check(
            raw.secret.location(),
            "source.sasl.secret",
            super::http::check_env_name(raw.secret.value()),
        );
        let mechanism = Some(match raw.mechanism.value() {
            RawSaslMechanism::Plain => SaslMechanism::Plain,
            RawSaslMechanism::ScramSha256 => SaslMechanism::ScramSha256,
            RawSaslMechanism::ScramSha512 => SaslMechanism::ScramSha512,
        });
        Some(KafkaSasl {
            mechanism: mechanism?,
            username: username?,
            secret: secret?,
        })
    }

    /// `Some(None)` when not set, `None` after an error.
    fn optional_column(
        &mut self,
        raw: Option<Located<String>>,
        path: &str,
    ) -> Option<Option<String>> {
        match raw {
            None => Some(None),
            Some(column) => self.non_empty(&column, path, "column name").map(Some),
        }
    }

    fn brokers(&mut self, raw: Located<Vec<Located<String>>>, path: &str) -> Option<Vec<String>> {
        if raw.value().is_empty() {
            self.errors.push(
                raw.location(),
                path,
                "expected at least one broker (`host:port`)",
            );
            return None;
        }
        let brokers: Vec<Option<String>> = raw
            .into_value()
            .into_iter()
            .enumerate()
            .map(|(i, broker)| {
                let checked = match broker.value().rsplit_once(':') {
                    Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                        Ok(broker.value().clone())
                    }
                    _ => Err(format!("expected `host:port`, found `{}`", broker.value())),
                };
                self.errors
                    .check(broker.location(), &format!("{path}[{i}]"), checked)
            })
            .collect();
        brokers.into_iter().collect()
    }

    fn topic_names(&mut self, raw: Located<Vec<Located<String>>>) -> Option<Vec<String>> {
        if raw.value().is_empty() {
            self.errors.push(
                raw.location(),
                "source.topics",
                "expected at least one topic",
            );
            return None;
        }
        let names: Vec<Option<String>> = raw
            .into_value()
            .into_iter()
            .enumerate()
            .map(|(i, topic)| {
                let checked = check_topic(topic.value())
                    .map_err(|e| format!("{e}; use `topic_pattern` for a regular expression"));
                self.errors
                    .check(topic.location(), &format!("source.topics[{i}]"), checked)
            })
            .collect();
        names.into_iter().collect()
    }

    fn topic_pattern(&mut self, raw: &Located<String>) -> Option<String> {
        let pattern = raw.value();
        let anchored = if pattern.starts_with('^') {
            pattern.clone()
        } else {
            format!("^{pattern}")
        };
        let checked = regex::Regex::new(&anchored)
            .map(|_| anchored.clone())
            .map_err(|e| format!("invalid regular expression `{pattern}`: {e}"));
        self.errors
            .check(raw.location(), "source.topic_pattern", checked)
    }
}

impl Converter<'_> {
    pub(super) fn kafka_sink(&mut self, raw: RawKafkaSink) -> Option<KafkaSink> {
        self.kafka_producer(raw, "sink")
    }

    /// A Kafka producer's settings at `at` (`sink`, `publish.notify.kafka`).
    pub(super) fn kafka_producer(&mut self, raw: RawKafkaSink, at: &str) -> Option<KafkaSink> {
        let p = |field: &str| format!("{at}.{field}");
        let brokers = self.brokers(raw.brokers, &p("brokers"));
        let topic = self.errors.check(
            raw.topic.location(),
            &p("topic"),
            check_topic(raw.topic.value()),
        );
        let key_column = self.non_empty(&raw.key_column, &p("key_column"), "column name");
        let headers = self.sink_headers(raw.headers, &p("headers"));
        let timeout = self.limit(raw.message_timeout_ms, &p("message_timeout_ms"), 30_000);
        let in_flight = self
            .limit(raw.max_in_flight, &p("max_in_flight"), 100_000)
            .and_then(|(n, at)| {
                let checked = if n.get() <= 10_000_000 {
                    Ok(n)
                } else {
                    Err(format!("expected at most 10000000, found {n}"))
                };
                self.errors
                    .check(at, &p("max_in_flight"), checked)
                    .map(|n| (n, at))
            })
            .and_then(|n| self.usize_limit(n, &p("max_in_flight")));
        let max_bytes = match raw.message_max_bytes {
            None => Some(1_000_000),
            Some(raw) => {
                let n = *raw.value();
                let checked = if (1000..=1_000_000_000).contains(&n) {
                    Ok(n as usize)
                } else {
                    Err(format!(
                        "expected a byte count from 1000 to 1000000000, found {n}"
                    ))
                };
                self.errors
                    .check(raw.location(), &p("message_max_bytes"), checked)
            }
        };
        let sasl_username = match &raw.sasl_username {
            None => Some(None),
            Some(user) => self
                .non_empty(user, &p("sasl_username"), "user name")
                .map(Some),
        };
        let sasl_password_env = match &raw.sasl_password_env {
            None => Some(None),
            Some(env) => self
                .errors
                .check(
                    env.location(),
                    &p("sasl_password_env"),
                    check_env_name(env.value()),
                )
                .map(Some),
        };
        let security =
            self.kafka_security(raw.security_protocol, KafkaSecurity::Plaintext, raw.tls, at);
        if let Some((protocol, protocol_at, _)) = &security
            && protocol.sasl()
            && (raw.sasl_username.is_none() || raw.sasl_password_env.is_none())
        {
            self.errors.push(
                *protocol_at,
                &p("security_protocol"),
                format!(
                    "`{}` needs `sasl_username` and `sasl_password_env`",
                    protocol.librdkafka_name()
                ),
            );
        }
        let sasl_mechanism = match raw.sasl_mechanism.map(|m| *m.value()) {
            None | Some(RawSaslMechanism::Plain) => SaslMechanism::Plain,
            Some(RawSaslMechanism::ScramSha256) => SaslMechanism::ScramSha256,
            Some(RawSaslMechanism::ScramSha512) => SaslMechanism::ScramSha512,
        };
        let client = self.client_properties(raw.client, &p("client"));
        Some(KafkaSink {
            brokers: brokers?,
            topic: topic?,
            key_column: key_column?,
            format: match raw.format {
                RawKafkaSinkFormat::Json => KafkaSinkFormat::Json,
            },
            headers: headers?,
            message_timeout: Duration::from_millis(timeout?.0.get()),
            max_in_flight: in_flight?,
            message_max_bytes: max_bytes?,
            security_protocol: security.as_ref()?.0,
            sasl_mechanism,
            sasl_username: sasl_username?,
            sasl_password_env: sasl_password_env?,
            tls: Box::new(security?.2),
            client: client?,
        })
    }

    /// `sink.headers`: names of visible ASCII without the reserved `backflow-` prefix.
    fn sink_headers(
        &mut self,
        raw: Option<OrderedMap<Located<String>>>,
        path: &str,
    ) -> Option<Vec<(String, String)>> {
        let Some(map) = raw else {
            return Some(Vec::new());
        };
        let pairs: Vec<Option<(String, String)>> = map
            .0
            .into_iter()
            .map(|(name, value)| {
                let key = name.value();
                let checked = if key.is_empty() {
                    Err("header name must not be empty".to_string())
                } else if key.to_ascii_lowercase().starts_with("backflow-") {
                    Err(format!(
                        "`{key}`: header names starting with `backflow-` are reserved for the dedup headers"
                    ))
                } else if !key.bytes().all(|b| b.is_ascii_graphic()) {
                    Err(format!(
                        "`{key}` is not a header name (visible ASCII, no spaces)"
                    ))
                } else {
                    Ok(key.clone())
                };
                let key = self.errors.check(name.location(), path, checked)?;
                Some((key, value.into_value()))
            })
            .collect();
        pairs.into_iter().collect()
    }

    /// `sink.client`: each property checked by librdkafka itself (no client is created).
    fn client_properties(
        &mut self,
        raw: Option<OrderedMap<Located<RawScalar>>>,
        prefix: &str,
    ) -> Option<Vec<(String, String)>> {
        let Some(map) = raw else {
            return Some(Vec::new());
        };
        let pairs: Vec<Option<(String, String)>> = map
            .0
            .into_iter()
            .map(|(name, value)| {
                let key = name.value().clone();
                let path = format!("{prefix}.{key}");
                if let Some((_, why)) = RESERVED_CLIENT_KEYS.iter().find(|(k, _)| *k == key) {
                    self.errors.push(
                        name.location(),
                        &path,
                        format!("`{key}` cannot be set here: {why}"),
                    );
                    return None;
                }
                if is_secret_key(&key) {
                    let instead = if key.starts_with("ssl") {
                        "the files of `tls`"
                    } else {
                        "`sasl_password_env`"
                    };
                    self.errors.push(
                        name.location(),
                        &path,
                        format!(
                            "`{key}` holds a secret, and secrets never go in the YAML; use {instead}"
                        ),
                    );
                    return None;
                }
                let text = value.value().to_text();
                let mut probe = rdkafka::ClientConfig::new();
                probe.set(&key, &text);
                let checked = probe
                    .create_native_config()
                    .map(|_| ())
                    .map_err(|e| format!("librdkafka refuses `{key}: {text}`: {e}"));
                self.errors.check(value.location(), &path, checked)?;
                Some((key, text))
            })
            .collect();
        pairs.into_iter().collect()
    }
}
