//! The consumer's client: settings (security, TLS), its context, and how refusals read.

use super::*;

pub(super) fn kafka_err(what: &str) -> impl Fn(KafkaError) -> PipelineError + '_ {
    move |e| PipelineError::Kafka(format!("{what}: {e}"))
}

/// The consumer's context: keeps the reason text of the client's last error (the error that
/// comes out of `recv` carries only a code).
pub(super) struct SourceContext {
    pipeline: String,
    last_reason: Mutex<Option<String>>,
    /// The reason of the last refused TLS handshake (kept: "brokers are down" follows it).
    tls_reason: Mutex<Option<String>>,
}

impl SourceContext {
    pub(super) fn new(pipeline: &str) -> SourceContext {
        SourceContext {
            pipeline: pipeline.to_string(),
            last_reason: Mutex::new(None),
            tls_reason: Mutex::new(None),
        }
    }

    pub(super) fn last_reason(&self) -> Option<String> {
        self.last_reason
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The brokers answered since: an earlier refused handshake is history.
    pub(super) fn clear_tls_reason(&self) {
        *self
            .tls_reason
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    fn tls_reason(&self) -> Option<String> {
        self.tls_reason
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl ClientContext for SourceContext {
    fn error(&self, error: KafkaError, reason: &str) {
        // Logged (once per change) where the error comes out of `recv`, with this reason.
        tracing::debug!(pipeline = %self.pipeline, %error, reason, "kafka client error event");
        if kafka_tls::handshake_refused(error.rdkafka_error_code(), reason) {
            *self
                .tls_reason
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(reason.to_string());
        }
        *self
            .last_reason
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(reason.to_string());
    }
}

impl ConsumerContext for SourceContext {}

pub(super) type SourceConsumer = StreamConsumer<SourceContext>;

/// The client's settings; with `sasl`, the password is read from its secret now.
pub(super) fn client_config(cfg: &KafkaSource) -> Result<ClientConfig, PipelineError> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", cfg.brokers.join(","))
        .set("client.id", "backflow")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set(
            "session.timeout.ms",
            cfg.session_timeout.as_millis().to_string(),
        )
        .set(
            "heartbeat.interval.ms",
            (cfg.session_timeout.as_millis() / 3)
                .clamp(1, 3000)
                .to_string(),
        )
        .set(
            "auto.offset.reset",
            match cfg.start_from {
                StartFrom::Earliest => "earliest",
                StartFrom::Latest => "latest",
            },
        );
    kafka_tls::apply(&mut config, cfg.security_protocol, &cfg.tls, tls_at(cfg))
        .map_err(PipelineError::KafkaDenied)?;
    if let Some(sasl) = &cfg.sasl {
        let password = super::super::secret::lookup(&sasl.secret)
            .map_err(|e| PipelineError::KafkaDenied(format!("source.sasl.secret: {e}")))?;
        config
            .set("sasl.mechanism", sasl.mechanism.librdkafka_name())
            .set("sasl.username", &sasl.username)
            .set("sasl.password", password);
    }
    Ok(config)
}

/// Where the TLS settings of `cfg` are configured (for errors).
pub(super) fn tls_at(cfg: &KafkaSource) -> &'static str {
    if cfg.journal {
        "journal.kafka.tls"
    } else {
        "source.tls"
    }
}

/// Creates the client, a TLS file librdkafka refuses named by its field (not retried).
pub(super) fn create(
    config: &ClientConfig,
    cfg: &KafkaSource,
    pipeline: &str,
    metrics: &Metrics,
    what: &str,
) -> Result<SourceConsumer, PipelineError> {
    config
        .create_with_context(SourceContext::new(pipeline))
        .map_err(
            |e| match kafka_tls::file_refused(&e, &cfg.tls, tls_at(cfg)) {
                Some(message) => {
                    failed(metrics, pipeline, "tls_file");
                    PipelineError::KafkaDenied(message)
                }
                None => PipelineError::Kafka(format!("{what}: {e}")),
            },
        )
}

/// A refused TLS handshake, when `e` is one: librdkafka reports `SSL`, or a transport failure
/// after a handshake error event. Not retried: a CA or a certificate must change.
pub(super) fn tls_refusal(
    cfg: &KafkaSource,
    e: &KafkaError,
    context: &SourceContext,
) -> Option<PipelineError> {
    use rdkafka::types::RDKafkaErrorCode as C;
    let code = e.rdkafka_error_code();
    let reason = context.tls_reason();
    let refused =
        code == Some(C::SSL) || (code == Some(C::BrokerTransportFailure) && reason.is_some());
    refused.then(|| {
        PipelineError::KafkaDenied(format!(
            "{}; not retried",
            kafka_tls::refusal(
                &cfg.brokers.join(","),
                &cfg.tls,
                tls_at(cfg),
                reason.as_deref().unwrap_or_default()
            )
        ))
    })
}

/// Whether `e` says the brokers refused this client: a failed SASL login, or no permission
/// (ACL) on the cluster, the group or a topic. librdkafka retries these forever; a run stops.
pub(super) fn refused(e: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::Authentication
                | C::SaslAuthenticationFailed
                | C::UnsupportedSASLMechanism
                | C::IllegalSASLState
                | C::TopicAuthorizationFailed
                | C::GroupAuthorizationFailed
                | C::ClusterAuthorizationFailed
        )
    )
}

/// The non-retryable error for a refusal: the brokers, what the client tried, librdkafka's
/// reason, and what to check. Never the password.
pub(super) fn refusal(cfg: &KafkaSource, error: &KafkaError, reason: &str) -> PipelineError {
    let reason = if reason.is_empty() {
        String::new()
    } else {
        format!(": {reason}")
    };
    let hint = match &cfg.sasl {
        Some(sasl) => format!(
            "SASL {} login as `{}` with the password in {}; check the credentials and the ACLs for group `{}` and the topics",
            sasl.mechanism.librdkafka_name(),
            sasl.username,
            sasl.secret,
            cfg.group_id
        ),
        None => "no SASL login configured: set `source.sasl` if the brokers require one, and check the ACLs".to_string(),
    };
    PipelineError::KafkaDenied(format!(
        "{} refused the client: {error}{reason} ({hint}); not retried",
        cfg.brokers.join(",")
    ))
}
