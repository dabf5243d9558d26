//! TLS for every Kafka client of backflow (the journal producer, the pipeline source and sink,
//! dataset change notices): the librdkafka properties of a `tls` block, librdkafka's refusal of
//! a TLS file turned into a message naming the field, and a refused handshake told apart from a
//! broker that is down.
//!
//! librdkafka retries a refused handshake forever and reports it as a transport error, like a
//! broker that is down; but a wrong CA or a certificate that names another host does not heal
//! by waiting, so the callers stop (a run fails, not retried; the journal producer goes to
//! `tls_failed`). The brokers' certificates are always verified, hostname included
//! (`ssl.endpoint.identification.algorithm=https`): there is no setting to turn that off.

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::config::daemon::KafkaSecurity;
use crate::config::model::KafkaTls;

/// Sets `security.protocol` and, with `ssl` / `sasl_ssl`, the TLS properties of `tls` (the key
/// password read from its environment variable now). `at` is the field path of the TLS
/// settings (`source.tls`, `journal.kafka.tls`) for the error.
pub fn apply(
    config: &mut ClientConfig,
    protocol: KafkaSecurity,
    tls: &KafkaTls,
    at: &str,
) -> Result<(), String> {
    config.set("security.protocol", protocol.librdkafka_name());
    if !protocol.tls() {
        return Ok(());
    }
    config.set("ssl.endpoint.identification.algorithm", "https");
    let files = [
        ("ssl.ca.location", &tls.ca),
        ("ssl.certificate.location", &tls.certificate),
        ("ssl.key.location", &tls.key),
    ];
    for (property, file) in files {
        if let Some(file) = file {
            config.set(property, file.to_string_lossy());
        }
    }
    if let Some(env) = &tls.key_password_env {
        let password = std::env::var(env)
            .ok()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| {
                format!(
                    "{at}.key_password_env: environment variable `{env}` is not set (it holds the password of the key in `{at}.key`)"
                )
            })?;
        config.set("ssl.key.password", password);
    }
    Ok(())
}

/// librdkafka's refusal of a TLS file when a client is created (`ssl.key.location failed:
/// error:…:PEM lib`), as a message naming the field and the file; `None` for any other error.
pub fn file_refused(e: &KafkaError, tls: &KafkaTls, at: &str) -> Option<String> {
    let KafkaError::ClientCreation(message) = e else {
        return None;
    };
    let fields = [
        ("ssl.ca.location", "ca", &tls.ca, "PEM CA certificates"),
        (
            "ssl.certificate.location",
            "certificate",
            &tls.certificate,
            "a PEM certificate",
        ),
        (
            "ssl.key.location",
            "key",
            &tls.key,
            "the PEM private key of `certificate` (and `key_password_env` if it is encrypted)",
        ),
    ];
    let (property, field, file, expected) = fields
        .into_iter()
        .find(|(property, ..)| message.starts_with(property))?;
    let detail = message
        .strip_prefix(property)
        .unwrap_or(message)
        .trim_start_matches(" failed")
        .trim_start_matches(':')
        .trim();
    let file = match file {
        Some(file) => format!("`{}`", file.display()),
        None => "the system trust store".to_string(),
    };
    Some(format!(
        "{at}.{field}: librdkafka cannot use {file}: {detail} (expected {expected})"
    ))
}

/// Whether a client error event is a refused TLS handshake (a CA that did not sign the
/// brokers' certificates, a certificate naming another host, a broker that requires a client
/// certificate, a broker without TLS): librdkafka reports these as `SSL` errors, and as
/// transport failures whose reason says so: our side's verification failed, or the broker
/// sent a TLS alert (`…tlsv13 alert certificate required: SSL alert number 116`).
pub fn handshake_refused(code: Option<RDKafkaErrorCode>, reason: &str) -> bool {
    code == Some(RDKafkaErrorCode::SSL)
        || reason.contains("SSL handshake failed")
        || reason.contains("certificate verify failed")
        || reason.contains("SSL alert number")
}

/// The message of a refused handshake: the brokers, what the client trusts, librdkafka's
/// reason and what to check. `at` is the field path of the TLS settings.
pub fn refusal(brokers: &str, tls: &KafkaTls, at: &str, reason: &str) -> String {
    let trusted = match &tls.ca {
        Some(ca) => format!("trusting the CA in {} (`{at}.ca`)", ca.display()),
        None => format!("trusting the system's CAs (`{at}.ca` is not set)"),
    };
    let client = match &tls.certificate {
        Some(cert) => format!(", client certificate {}", cert.display()),
        None => String::new(),
    };
    let reason = if reason.is_empty() {
        String::new()
    } else {
        format!(": {reason}")
    };
    format!(
        "TLS handshake with {brokers} refused ({trusted}{client}){reason}; check that this CA signed the brokers' certificates and that they name the hosts in `brokers`"
    )
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn tls() -> KafkaTls {
        KafkaTls {
            ca: Some(PathBuf::from("/etc/kafka/ca.pem")),
            certificate: Some(PathBuf::from("/etc/kafka/client.pem")),
            key: Some(PathBuf::from("/etc/kafka/client.key")),
            key_password_env: Some("BACKFLOW_TEST_KEY_PASSWORD_UNSET".to_string()),
        }
    }

    fn properties(config: &ClientConfig) -> Vec<(String, String)> {
        let mut all: Vec<(String, String)> = config
            .config_map()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        all.sort();
        all
    }

    #[test]
    fn tls_settings_become_the_librdkafka_properties_with_hostname_verification_on() {
        // A variable nothing sets (tests cannot set variables: `set_var` is unsafe).
        let mut config = ClientConfig::new();
        let missing = apply(&mut config, KafkaSecurity::SaslSsl, &tls(), "sink.tls");
        assert_eq!(
            missing,
            Err("sink.tls.key_password_env: environment variable `BACKFLOW_TEST_KEY_PASSWORD_UNSET` is not set (it holds the password of the key in `sink.tls.key`)".to_string())
        );
        // With the variable set (`HOME` stands in), the password is passed.
        let mut config = ClientConfig::new();
        let home = KafkaTls {
            key_password_env: Some("HOME".to_string()),
            ..tls()
        };
        apply(&mut config, KafkaSecurity::Ssl, &home, "sink.tls").unwrap();
        assert_eq!(
            config.get("ssl.key.password"),
            std::env::var("HOME").ok().as_deref()
        );

        let mut config = ClientConfig::new();
        let no_password = KafkaTls {
            key_password_env: None,
            ..tls()
        };
        apply(&mut config, KafkaSecurity::Ssl, &no_password, "sink.tls").unwrap();
        assert_eq!(
            properties(&config),
            [
                ("security.protocol", "ssl"),
                ("ssl.ca.location", "/etc/kafka/ca.pem"),
                ("ssl.certificate.location", "/etc/kafka/client.pem"),
                ("ssl.endpoint.identification.algorithm", "https"),
                ("ssl.key.location", "/etc/kafka/client.key"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );

        // Without TLS the files are not passed (the loader refuses them anyway).
        let mut config = ClientConfig::new();
        apply(
            &mut config,
            KafkaSecurity::SaslPlaintext,
            &tls(),
            "sink.tls",
        )
        .unwrap();
        assert_eq!(
            properties(&config),
            [(
                "security.protocol".to_string(),
                "sasl_plaintext".to_string()
            )]
        );
    }

    #[test]
    fn a_pem_librdkafka_refuses_is_named_by_its_field() {
        let e = KafkaError::ClientCreation(
            "ssl.key.location failed: error:0A080009:SSL routines::PEM lib".to_string(),
        );
        assert_eq!(
            file_refused(&e, &tls(), "journal.kafka.tls").as_deref(),
            Some(
                "journal.kafka.tls.key: librdkafka cannot use `/etc/kafka/client.key`: error:0A080009:SSL routines::PEM lib (expected the PEM private key of `certificate` (and `key_password_env` if it is encrypted))"
            )
        );
        let e = KafkaError::ClientCreation(
            "ssl.ca.location failed: error:05800088:x509 certificate routines::no certificate or crl found".to_string(),
        );
        assert_eq!(
            file_refused(&e, &tls(), "source.tls").as_deref(),
            Some(
                "source.tls.ca: librdkafka cannot use `/etc/kafka/ca.pem`: error:05800088:x509 certificate routines::no certificate or crl found (expected PEM CA certificates)"
            )
        );
        let other = KafkaError::ClientCreation("No provider for SASL mechanism".to_string());
        assert_eq!(file_refused(&other, &tls(), "source.tls"), None);
    }

    #[test]
    fn a_refused_handshake_is_told_apart_from_a_broker_that_is_down() {
        let verify = "ssl://127.0.0.1:9093/bootstrap: error:0A000086:SSL routines::certificate verify failed (after 2ms in state SSL_HANDSHAKE)";
        assert!(handshake_refused(Some(RDKafkaErrorCode::SSL), ""));
        assert!(handshake_refused(
            Some(RDKafkaErrorCode::BrokerTransportFailure),
            verify
        ));
        let alert = "ssl://127.0.0.1:9093/bootstrap: Receive failed: error:0A00045C:SSL routines::tlsv13 alert certificate required: SSL alert number 116 (after 0ms in state APIVERSION_QUERY)";
        assert!(handshake_refused(
            Some(RDKafkaErrorCode::BrokerTransportFailure),
            alert
        ));
        assert!(!handshake_refused(
            Some(RDKafkaErrorCode::BrokerTransportFailure),
            "127.0.0.1:9093/bootstrap: Connect to ipv4#127.0.0.1:9093 failed: Connection refused"
        ));
        assert!(!handshake_refused(
            Some(RDKafkaErrorCode::BrokerTransportFailure),
            "ssl://127.0.0.1:9093/bootstrap: Disconnected (after 5012ms in state UP)"
        ));
        assert!(!handshake_refused(
            Some(RDKafkaErrorCode::AllBrokersDown),
            "1/1 brokers are down"
        ));
        assert_eq!(
            refusal("k1:9093", &tls(), "sink.tls", "certificate verify failed"),
            "TLS handshake with k1:9093 refused (trusting the CA in /etc/kafka/ca.pem (`sink.tls.ca`), client certificate /etc/kafka/client.pem): certificate verify failed; check that this CA signed the brokers' certificates and that they name the hosts in `brokers`"
        );
    }
}
