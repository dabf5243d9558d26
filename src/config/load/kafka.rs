//! Stage two of `source: {type: kafka}`.

use std::time::Duration;

use super::Converter;
use crate::config::model::{
    KafkaFormat, KafkaSasl, KafkaSource, KafkaTopics, SaslMechanism, StartFrom,
};
use crate::config::raw::{
    Located, RawKafka, RawKafkaFormat, RawKafkaSasl, RawSaslMechanism, RawStartFrom,
};

impl Converter<'_> {
    pub(super) fn kafka_source(&mut self, raw: RawKafka) -> Option<KafkaSource> {
        let brokers = self.brokers(raw.brokers);
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
        let sasl = match raw.sasl {
            None => Some(None),
            Some(sasl) => self.kafka_sasl(sasl).map(Some),
        };
        Some(KafkaSource {
            brokers: brokers?,
            topics: topics?,
            group_id: group_id?,
            format: match raw.format {
                RawKafkaFormat::Json => KafkaFormat::Json,
                RawKafkaFormat::HitRecord => KafkaFormat::HitRecord,
            },
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
        })
    }

    fn kafka_sasl(&mut self, raw: RawKafkaSasl) -> Option<KafkaSasl> {
        let username = self.non_empty(&raw.username, "source.sasl.username", "user name");
        let secret = self.errors.check(
            raw.secret.location(),
            "source.sasl.secret",
            super::http::check_env_name(raw.secret.value()),
        );
        let mechanism = match raw.mechanism.value() {
            RawSaslMechanism::Plain => Ok(SaslMechanism::Plain),
            RawSaslMechanism::ScramSha256 => Err("scram_sha_256"),
            RawSaslMechanism::ScramSha512 => Err("scram_sha_512"),
        }
        .map_err(|name| {
            format!(
                "`{name}` needs librdkafka built with OpenSSL (rdkafka's `ssl` feature), which this build lacks; expected plain"
            )
        });
        let mechanism =
            self.errors
                .check(raw.mechanism.location(), "source.sasl.mechanism", mechanism);
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

    fn brokers(&mut self, raw: Located<Vec<Located<String>>>) -> Option<Vec<String>> {
        if raw.value().is_empty() {
            self.errors.push(
                raw.location(),
                "source.brokers",
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
                    .check(broker.location(), &format!("source.brokers[{i}]"), checked)
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
                let name = topic.value();
                let valid = !name.is_empty()
                    && name.len() <= 249
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
                let checked = if valid {
                    Ok(name.clone())
                } else {
                    Err(format!(
                        "`{name}` is not a topic name (1-249 of `a-z A-Z 0-9 . _ -`); use `topic_pattern` for a regular expression"
                    ))
                };
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
