//! Kafka over TLS (`security_protocol: ssl` / `sasl_ssl`) against a real broker.
//!
//! tansu 0.6.0 has no TLS listener: its `--cert` and `--key` flags share one clap group (they
//! cannot be given together) and the broker builds a `TlsAcceptor` it never uses
//! (`tansu-broker-0.6.0/src/broker.rs`, `let _acceptor = …`), so a TLS client gets no answer.
//! These tests therefore put a TLS front of their own (rustls, in this process) before a tansu
//! that listens in plaintext on another port and advertises the front's: every connection a
//! client makes, bootstrap and partition leader alike, is a real TLS handshake between
//! librdkafka (OpenSSL) and rustls, with the certificates checked on both sides, and the Kafka
//! protocol passes through unchanged. The front can require client certificates (mutual TLS),
//! which tansu could not.
//!
//! The CA and the certificates are made here with rcgen (no openssl CLI needed): the server
//! certificate names `localhost` and the IP `127.0.0.1`, the address the clients use, so
//! librdkafka's hostname verification (left on) passes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rdkafka::ClientConfig;
use tokio_rustls::rustls;

use crate::support::*;

/// A test PKI in a temporary directory: `ca.pem` (trusted), `server.pem`/`server.key` (signed
/// by it, for `localhost` and `127.0.0.1`), `client.pem`/`client.key` (signed by it, for mutual
/// TLS), `elsewhere.pem`/`elsewhere.key` (signed by it, for another host only) and
/// `other-ca.pem` (a second, unrelated self-signed CA).
pub(crate) struct Pki {
    pub(crate) dir: tempfile::TempDir,
}

fn ca(name: &str) -> (rcgen::Certificate, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().expect("ca key");
    let cert = params.self_signed(&key).expect("self-signed ca");
    (cert, Issuer::new(params, key))
}

fn leaf(
    issuer: &Issuer<'static, KeyPair>,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names.clone()).expect("leaf params");
    params
        .distinguished_name
        .push(DnType::CommonName, &names[0]);
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().expect("leaf key");
    let cert = params.signed_by(&key, issuer).expect("signed leaf");
    (cert.pem(), key.serialize_pem())
}

/// The password of `client-encrypted.key`.
const CLIENT_KEY_PASSWORD: &str = "key-pass-0451";

/// `key_pem` as an encrypted PKCS#8 PEM (`-----BEGIN ENCRYPTED PRIVATE KEY-----`).
fn encrypted(key_pem: &str, password: &str) -> String {
    let key = openssl::pkey::PKey::private_key_from_pem(key_pem.as_bytes()).expect("client key");
    let pem = key
        .private_key_to_pem_pkcs8_passphrase(
            openssl::symm::Cipher::aes_256_cbc(),
            password.as_bytes(),
        )
        .expect("encrypt the client key");
    String::from_utf8(pem).expect("PEM is ASCII")
}

impl Pki {
    pub(crate) fn new() -> Pki {
        let dir = tempfile::tempdir().expect("pki dir");
        let (ca_cert, issuer) = ca("backflow test CA");
        let (other_cert, _) = ca("some other CA");
        let (server_pem, server_key) = leaf(
            &issuer,
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_pem, client_key) =
            leaf(&issuer, &["backflow"], ExtendedKeyUsagePurpose::ClientAuth);
        let (elsewhere_pem, elsewhere_key) = leaf(
            &issuer,
            &["kafka.example.invalid"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write("ca.pem", &ca_cert.pem());
        write("other-ca.pem", &other_cert.pem());
        write("server.pem", &server_pem);
        write("server.key", &server_key);
        write("client.pem", &client_pem);
        write("client.key", &client_key);
        write(
            "client-encrypted.key",
            &encrypted(&client_key, CLIENT_KEY_PASSWORD),
        );
        write("elsewhere.pem", &elsewhere_pem);
        write("elsewhere.key", &elsewhere_key);
        Pki { dir }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `path(name)` as text, for YAML and librdkafka.
    pub(crate) fn file(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

/// A TLS front on `127.0.0.1:{port}` forwarding every connection, once its handshake is done,
/// to `upstream`; counts the handshakes that failed. Stopped on drop.
struct TlsFront {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    failed: Arc<AtomicUsize>,
}

/// A rustls server presenting `{name}.pem` (key `{name}.key`), requiring a client certificate
/// signed by the test CA when `client_certs`.
fn server_config(pki: &Pki, name: &str, client_certs: bool) -> rustls::ServerConfig {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(pki.path(&format!("{name}.pem")))
            .expect("server certificate file")
            .collect::<Result<_, _>>()
            .expect("server certificate");
    let key = PrivateKeyDer::from_pem_file(pki.path(&format!("{name}.key"))).expect("server key");
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("protocol versions");
    let builder = if client_certs {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(pki.path("ca.pem")).expect("ca.pem") {
            roots.add(cert.expect("ca certificate")).expect("root");
        }
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("client verifier");
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    builder.with_single_cert(certs, key).expect("server config")
}

impl TlsFront {
    fn start(
        listener: std::net::TcpListener,
        upstream: String,
        config: rustls::ServerConfig,
    ) -> TlsFront {
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let failed = Arc::new(AtomicUsize::new(0));
        let failures = Arc::clone(&failed);
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        listener.set_nonblocking(true).expect("nonblocking");
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("front runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    let (socket, _) = tokio::select! {
                        accepted = listener.accept() => match accepted {
                            Ok(a) => a,
                            Err(_) => continue,
                        },
                        _ = &mut stopped => break,
                    };
                    let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
                    let failures = Arc::clone(&failures);
                    tokio::spawn(async move {
                        let mut tls = match acceptor.accept(socket).await {
                            Ok(tls) => tls,
                            Err(_) => {
                                failures.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                        };
                        let Ok(mut plain) = tokio::net::TcpStream::connect(&upstream).await else {
                            return;
                        };
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    });
                }
            });
            rt.shutdown_background();
        });
        TlsFront {
            stop: Some(stop),
            thread: Some(thread),
            failed,
        }
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// How a [`TlsBroker`] is started.
#[derive(Default, Clone, Copy)]
pub(crate) struct BrokerOptions {
    /// tansu `--authentication`: SASL (SCRAM) login required; the SCRAM-SHA-256 user `alice`
    /// (password `wonderland`) exists.
    pub(crate) scram: bool,
    /// The front requires a client certificate signed by the test CA.
    pub(crate) client_certs: bool,
}

/// tansu behind a TLS front: clients use `brokers` (the front), tansu listens in plaintext on
/// another port and advertises the front's.
pub(crate) struct TlsBroker {
    pub(crate) brokers: String,
    pub(crate) pki: Pki,
    /// tansu's own (plaintext) address.
    upstream: String,
    front: TlsFront,
    tansu: Child,
    _storage: tempfile::TempDir,
}

fn spawn_tansu(bin: &str, dir: &Path, listen: &str, advertise: &str, auth: bool) -> Child {
    let mut cmd = Command::new(bin);
    cmd.arg("broker");
    if auth {
        cmd.arg("--authentication");
    }
    let mut child = cmd
        .args([
            "--listener-url",
            listen,
            "--advertised-listener-url",
            advertise,
        ])
        .args(["--storage-engine", "sqlite://tansu.db"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tansu");
    let addr = listen.trim_start_matches("tcp://");
    for _ in 0..200 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return child;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("tansu did not listen on {addr}");
}

impl TlsBroker {
    /// `None` without `BACKFLOW_TEST_TANSU` (the test is skipped).
    pub(crate) fn start(options: BrokerOptions) -> Option<TlsBroker> {
        let bin = require_env("BACKFLOW_TEST_TANSU")?;
        let pki = Pki::new();
        let storage = tempfile::tempdir().expect("tansu dir");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind front");
        let front_port = listener.local_addr().expect("front addr").port();
        let plain_port = crate::serve::free_port();
        let listen = format!("tcp://127.0.0.1:{plain_port}");
        let advertise = format!("tcp://127.0.0.1:{front_port}");
        let mut tansu = spawn_tansu(&bin, storage.path(), &listen, &advertise, false);
        if options.scram {
            // The user is created on a broker without authentication, then tansu restarts on
            // the same storage with it (as tests/it/kafka_auth.rs does).
            crate::kafka_auth::create_scram_user(&bin, &listen);
            let _ = tansu.kill();
            let _ = tansu.wait();
            tansu = spawn_tansu(&bin, storage.path(), &listen, &advertise, true);
        }
        let front = TlsFront::start(
            listener,
            format!("127.0.0.1:{plain_port}"),
            server_config(&pki, "server", options.client_certs),
        );
        Some(TlsBroker {
            brokers: format!("127.0.0.1:{front_port}"),
            upstream: format!("127.0.0.1:{plain_port}"),
            pki,
            front,
            tansu,
            _storage: storage,
        })
    }

    /// Handshakes the front refused so far.
    pub(crate) fn failed_handshakes(&self) -> usize {
        self.front.failed.load(Ordering::SeqCst)
    }

    /// A librdkafka client configuration of the test itself (TLS with the test CA, a client
    /// certificate, and the SCRAM login when the broker needs them).
    pub(crate) fn client(&self, options: BrokerOptions) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("ssl.ca.location", self.pki.file("ca.pem"));
        if options.client_certs {
            config
                .set("ssl.certificate.location", self.pki.file("client.pem"))
                .set("ssl.key.location", self.pki.file("client.key"));
        }
        if options.scram {
            config
                .set("security.protocol", "sasl_ssl")
                .set("sasl.mechanism", "SCRAM-SHA-256")
                .set("sasl.username", "alice")
                .set("sasl.password", "wonderland");
        } else {
            config.set("security.protocol", "ssl");
        }
        config
    }
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        let _ = self.tansu.kill();
        let _ = self.tansu.wait();
    }
}

impl TlsBroker {
    /// A second front before the same tansu presenting `elsewhere.pem` (signed by the test CA,
    /// for another host): its address as `brokers`.
    fn front_for_another_host(&self) -> (TlsFront, String) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind front");
        let port = listener.local_addr().expect("front addr").port();
        let upstream = self.upstream.clone();
        let front = TlsFront::start(
            listener,
            upstream,
            server_config(&self.pki, "elsewhere", false),
        );
        (front, format!("127.0.0.1:{port}"))
    }

    pub(crate) fn create_topic(&self, options: BrokerOptions, topic: &str, partitions: i32) {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let admin: AdminClient<rdkafka::client::DefaultClientContext> =
            self.client(options).create().expect("admin client");
        let results = crate::kafka::runtime()
            .block_on(admin.create_topics(
                &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
                &AdminOptions::new().request_timeout(Some(Duration::from_secs(30))),
            ))
            .expect("create_topics");
        for result in results {
            result.expect("topic created");
        }
    }

    pub(crate) fn produce(&self, options: BrokerOptions, topic: &str, payloads: &[String]) {
        use rdkafka::producer::{FutureProducer, FutureRecord};
        let producer: FutureProducer = self
            .client(options)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .create()
            .expect("producer");
        crate::kafka::runtime().block_on(async {
            for payload in payloads {
                producer
                    .send(
                        FutureRecord::<(), _>::to(topic).payload(payload),
                        Duration::from_secs(30),
                    )
                    .await
                    .map_err(|(e, _)| e)
                    .expect("delivered");
            }
        });
    }

    /// Every message of `topic` (partitions `0..partitions`) as (key, payload), read until
    /// `expect` arrived or a bounded number of empty polls.
    pub(crate) fn consume(
        &self,
        options: BrokerOptions,
        topic: &str,
        partitions: i32,
        expect: usize,
    ) -> Vec<(String, String)> {
        crate::kafka_journal::consume_raw_with(self.client(options), topic, partitions, expect)
            .into_iter()
            .map(|(key, payload)| {
                (
                    String::from_utf8_lossy(&key).into_owned(),
                    String::from_utf8_lossy(&payload).into_owned(),
                )
            })
            .collect()
    }
}

/// `n` JSON events `{n, event_time}`.
fn events(range: std::ops::Range<i64>) -> Vec<String> {
    range
        .map(|n| {
            serde_json::json!({"n": n, "event_time": format!("2026-03-01T{:02}:00:00Z", n % 24)})
                .to_string()
        })
        .collect()
}

/// A pipeline `name` reading `topic` with the source settings `security` (YAML lines at the
/// source's indentation) into Parquet, or into `sink` when given.
fn pipeline_yaml(
    name: &str,
    brokers: &str,
    topic: &str,
    security: &str,
    sink: Option<&str>,
) -> String {
    let group = crate::kafka::unique("tls");
    let sink = sink.map_or_else(
        || format!("sink:\n  type: parquet\n  dataset: {name}\n  partition_by: {{column: event_time, granularity: day}}\n"),
        str::to_string,
    );
    format!(
        "name: {name}\nsource:\n  type: kafka\n  brokers: [\"{brokers}\"]\n  topics: [{topic}]\n  group_id: {group}\n  idle_ms: 1500\n  session_timeout_ms: 6000\n  join_timeout_ms: 60000\n{security}transforms:\n  - cast: {{n: int64, event_time: timestamp}}\n{sink}"
    )
}

fn landed(p: &Project, dataset: &str) -> Vec<i64> {
    sorted_i64(&read_dataset(&p.lake().join(dataset)), "n")
}

/// Runs `yaml` in this process (lake in memory): the run's error and the metrics text.
fn run_in_process(yaml: &str) -> (backflow::pipeline::PipelineError, String) {
    let (err, runtime) =
        crate::http_source::run_failing("kafka_tls.yaml", yaml, "memory://kafka-tls-lake");
    (err, runtime.metrics.encode())
}

#[test]
fn a_kafka_source_reads_a_tls_topic_into_parquet_and_refuses_an_unknown_ca_or_another_host() {
    let opts = BrokerOptions::default();
    let Some(broker) = TlsBroker::start(opts) else {
        return;
    };
    let topic = crate::kafka::unique("tls-in");
    broker.create_topic(opts, &topic, 2);
    broker.produce(opts, &topic, &events(0..12));

    // `ssl` with the CA that signed the broker's certificate: every message lands.
    let p = Project::new();
    let ca = broker.pki.file("ca.pem");
    p.write(
        "pipelines/tls_events.yaml",
        &pipeline_yaml(
            "tls_events",
            &broker.brokers,
            &topic,
            &format!("  security_protocol: ssl\n  tls:\n    ca: {ca}\n"),
            None,
        ),
    );
    let out = p.run_bounded(&["run", "tls_events", "--json"], crate::kafka::RUN_LIMIT);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(landed(&p, "tls_events"), (0..12).collect::<Vec<_>>());

    // Another CA: the handshake is refused; the run stops at once, not retried, naming the
    // brokers and the CA file; counted; nothing lands.
    let other = broker.pki.file("other-ca.pem");
    let yaml = pipeline_yaml(
        "tls_events",
        &broker.brokers,
        &topic,
        &format!("  security_protocol: ssl\n  tls:\n    ca: {other}\n"),
        None,
    );
    let refused_before = broker.failed_handshakes();
    let (err, metrics) = run_in_process(&yaml);
    assert!(
        !err.retryable(),
        "a refused handshake is not retried: {err}"
    );
    let message = err.to_string();
    assert!(
        message.starts_with(&format!(
            "kafka: TLS handshake with {} refused (trusting the CA in {other} (`source.tls.ca`)): ",
            broker.brokers
        )) && message.contains("certificate verify failed")
            && message.ends_with("; not retried"),
        "{message}"
    );
    assert!(
        metrics.lines().any(|l| l
            == "backflow_kafka_source_failures_total{pipeline=\"tls_events\",kind=\"tls_failed\"} 1"),
        "{metrics}"
    );
    assert!(
        broker.failed_handshakes() > refused_before,
        "the broker's side saw the handshake fail"
    );

    // The right CA, but the certificate names another host: hostname verification (always
    // on) refuses it the same way.
    let (_front, elsewhere) = broker.front_for_another_host();
    let yaml = pipeline_yaml(
        "tls_events",
        &elsewhere,
        &topic,
        &format!("  security_protocol: ssl\n  tls:\n    ca: {ca}\n"),
        None,
    );
    let (err, _) = run_in_process(&yaml);
    assert!(!err.retryable(), "{err}");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("kafka: TLS handshake with {elsewhere} refused (trusting the CA in {ca} (`source.tls.ca`)): "))
            && message.contains("certificate verify failed"),
        "{message}"
    );
}

#[test]
fn a_pem_librdkafka_cannot_use_or_a_wrong_key_password_stops_the_run_naming_the_field() {
    let opts = BrokerOptions::default();
    let Some(broker) = TlsBroker::start(opts) else {
        return;
    };
    // A private key where the CA certificates should be: the file exists (the loader is
    // satisfied), librdkafka refuses it when the client starts.
    let key = broker.pki.file("client.key");
    let yaml = pipeline_yaml(
        "tls_events",
        &broker.brokers,
        "t",
        &format!("  security_protocol: ssl\n  tls:\n    ca: {key}\n"),
        None,
    );
    let (err, metrics) = run_in_process(&yaml);
    assert!(!err.retryable(), "{err}");
    assert!(
        err.to_string().starts_with(&format!(
            "kafka: source.tls.ca: librdkafka cannot use `{key}`: "
        )) && err.to_string().ends_with("(expected PEM CA certificates)"),
        "{err}"
    );
    assert!(
        metrics.lines().any(|l| l
            == "backflow_kafka_source_failures_total{pipeline=\"tls_events\",kind=\"tls_file\"} 1"),
        "{metrics}"
    );

    // The encrypted client key with a wrong password (`HOME`'s value): refused when the client
    // starts, named by the key's field, not mistaken for a handshake refusal.
    let (ca, cert, encrypted_key) = (
        broker.pki.file("ca.pem"),
        broker.pki.file("client.pem"),
        broker.pki.file("client-encrypted.key"),
    );
    let yaml = pipeline_yaml(
        "tls_events",
        &broker.brokers,
        "t",
        &format!(
            "  security_protocol: ssl\n  tls:\n    ca: {ca}\n    certificate: {cert}\n    key: {encrypted_key}\n    key_password_env: HOME\n"
        ),
        None,
    );
    let (err, metrics) = run_in_process(&yaml);
    assert!(!err.retryable(), "{err}");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!(
            "kafka: source.tls.key: librdkafka cannot use `{encrypted_key}`: "
        )) && message.ends_with("(and `key_password_env` if it is encrypted))"),
        "{message}"
    );
    assert!(
        metrics.lines().any(|l| l
            == "backflow_kafka_source_failures_total{pipeline=\"tls_events\",kind=\"tls_file\"} 1"),
        "{metrics}"
    );
}

#[test]
fn sasl_ssl_with_scram_and_a_client_certificate_reads_and_publishes_with_an_encrypted_key_and_no_certificate_is_refused()
 {
    let opts = BrokerOptions {
        scram: true,
        client_certs: true,
    };
    let Some(broker) = TlsBroker::start(opts) else {
        return;
    };
    let (input, output) = (
        crate::kafka::unique("mtls-in"),
        crate::kafka::unique("mtls-out"),
    );
    broker.create_topic(opts, &input, 1);
    broker.create_topic(opts, &output, 1);
    broker.produce(opts, &input, &events(0..6));
    let (ca, cert, key) = (
        broker.pki.file("ca.pem"),
        broker.pki.file("client.pem"),
        broker.pki.file("client.key"),
    );
    let tls = format!("  tls:\n    ca: {ca}\n    certificate: {cert}\n    key: {key}\n");
    // The Kafka source and the Kafka sink, both `sasl_ssl` with SCRAM and a client certificate;
    // the sink's key is the encrypted copy, its password in `key_password_env`.
    let encrypted_key = broker.pki.file("client-encrypted.key");
    let sink = format!(
        "sink:\n  type: kafka\n  brokers: [\"{}\"]\n  topic: {output}\n  key_column: n\n  security_protocol: sasl_ssl\n  sasl_mechanism: scram_sha_256\n  sasl_username: alice\n  sasl_password_env: KAFKA_TEST_PASSWORD\n  tls:\n    ca: {ca}\n    certificate: {cert}\n    key: {encrypted_key}\n    key_password_env: KAFKA_TEST_KEY_PASSWORD\n",
        broker.brokers
    );
    let source = format!(
        "  security_protocol: sasl_ssl\n  sasl: {{mechanism: scram_sha_256, username: alice, secret: KAFKA_TEST_PASSWORD}}\n{tls}"
    );
    let p = Project::new();
    p.write(
        "pipelines/mtls.yaml",
        &pipeline_yaml("mtls", &broker.brokers, &input, &source, Some(&sink)),
    );
    let mut cmd = p.command(&["run", "mtls", "--json"]);
    cmd.env("KAFKA_TEST_PASSWORD", "wonderland")
        .env("KAFKA_TEST_KEY_PASSWORD", CLIENT_KEY_PASSWORD)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = wait_bounded(
        cmd.spawn().expect("spawn backflow"),
        "backflow run mtls",
        crate::kafka::RUN_LIMIT,
    );
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let published = broker.consume(opts, &output, 1, 6);
    let mut keys: Vec<i64> = published
        .iter()
        .map(|(k, _)| k.parse().expect("key n"))
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, (0..6).collect::<Vec<_>>(), "{published:?}");

    // Without the client certificate the broker's side refuses the handshake: a TLS refusal,
    // not retried.
    let source = format!(
        "  security_protocol: sasl_ssl\n  sasl: {{mechanism: scram_sha_256, username: alice, secret: HOME}}\n  tls:\n    ca: {ca}\n"
    );
    let refused_before = broker.failed_handshakes();
    let (err, metrics) = run_in_process(&pipeline_yaml(
        "mtls",
        &broker.brokers,
        &input,
        &source,
        None,
    ));
    assert!(!err.retryable(), "{err}");
    assert!(
        err.to_string().starts_with(&format!(
            "kafka: TLS handshake with {} refused",
            broker.brokers
        )),
        "{err}"
    );
    assert!(
        metrics.lines().any(|l| l
            == "backflow_kafka_source_failures_total{pipeline=\"mtls\",kind=\"tls_failed\"} 1"),
        "{metrics}"
    );
    assert!(broker.failed_handshakes() > refused_before);
}

/// The daemon's environment for a Kafka journal on `broker` over TLS (CA `ca`), with the SCRAM
/// login when `scram`.
fn journal_env(
    public: u16,
    broker: &TlsBroker,
    topic: &str,
    ca: &str,
    scram: bool,
) -> Vec<(&'static str, String)> {
    let mut env = crate::kafka_journal::kafka_env(public, &broker.brokers, topic);
    env.push(("BACKFLOW__JOURNAL__KAFKA__TLS__CA", broker.pki.file(ca)));
    if scram {
        env.extend([
            (
                "BACKFLOW__JOURNAL__KAFKA__SECURITY_PROTOCOL",
                "sasl_ssl".to_string(),
            ),
            (
                "BACKFLOW__JOURNAL__KAFKA__SASL_MECHANISM",
                "scram_sha_256".to_string(),
            ),
            (
                "BACKFLOW__JOURNAL__KAFKA__SASL_USERNAME",
                "alice".to_string(),
            ),
            (
                "BACKFLOW__JOURNAL__KAFKA__SASL_PASSWORD_ENV",
                "KAFKA_JOURNAL_PASSWORD".to_string(),
            ),
            ("KAFKA_JOURNAL_PASSWORD", "wonderland".to_string()),
        ]);
    } else {
        env.push((
            "BACKFLOW__JOURNAL__KAFKA__SECURITY_PROTOCOL",
            "ssl".to_string(),
        ));
    }
    env
}

/// A daemon whose Kafka journal is a fresh one-partition topic of `broker`, over TLS trusting
/// the test's `ca` file (with the SCRAM login when `opts.scram`), and one Huawei activity.
struct JournalDaemon {
    // Declared first: the daemon stops before its project folder goes.
    d: crate::serve::Daemon,
    p: Project,
    topic: String,
    activity: serde_json::Value,
}

fn journal_daemon(broker: &TlsBroker, opts: BrokerOptions, ca: &str) -> JournalDaemon {
    use crate::serve::{free_port, start_with};
    let topic = crate::kafka::unique("hits");
    broker.create_topic(opts, &topic, 1);
    let p = Project::new();
    let (public, admin) = (free_port(), free_port());
    let env = journal_env(public, broker, &topic, ca, opts.scram);
    let activity = crate::collect::create(&p, &env, "hw", "huawei", Some("https://example.com/l"));
    let d = start_with(&p, (public, admin), &env);
    JournalDaemon {
        d,
        p,
        topic,
        activity,
    }
}

#[test]
fn the_kafka_journal_produces_over_sasl_ssl_with_scram_and_ad_events_reads_it_back() {
    use crate::collect::hit;
    use crate::kafka_journal::{metric, metrics, wait_for_state};
    use crate::serve::http;
    let opts = BrokerOptions {
        scram: true,
        client_certs: false,
    };
    let Some(broker) = TlsBroker::start(opts) else {
        return;
    };
    // `p` bound first, so `d` (bound after) drops first.
    let JournalDaemon {
        p,
        d,
        topic,
        activity: a,
    } = journal_daemon(&broker, opts, "ca.pem");
    wait_for_state(&d, "ready");

    let sent = 4;
    for i in 0..sent {
        let url = if i % 2 == 0 {
            &a["impression_url"]
        } else {
            &a["click_url"]
        };
        let url = url.as_str().expect("url");
        let r = hit(reqwest::Method::GET, &format!("{url}&n={i}"));
        assert!(matches!(r.status, 200 | 204 | 302), "{}", r.status);
    }
    let m = metrics(&d);
    assert_eq!(
        metric(&m, r#"backflow_collect_kafka_state{status="ready"}"#),
        Some(1.0),
        "{m}"
    );
    // Every answered hit is in the topic (read over TLS with SCRAM), keyed by its event id.
    let messages = broker.consume(opts, &topic, 1, sent);
    let ids: std::collections::BTreeSet<String> = messages
        .iter()
        .map(|(key, payload)| {
            let record: backflow::collect::hit::HitRecord =
                serde_json::from_str(payload).expect("hit record");
            assert_eq!(*key, record.event_id);
            record.event_id
        })
        .collect();
    assert_eq!((messages.len(), ids.len()), (sent, sent));

    // The daemon-wired ad_events pipeline reads the topic with the journal's TLS and login.
    let run_url = format!("{}/api/v1/pipelines/ad_events/runs", d.admin);
    let mut landed = std::collections::BTreeSet::new();
    for _ in 0..60 {
        let _ = http::send(http::Method::POST, &run_url, Some(&d.token));
        std::thread::sleep(Duration::from_secs(1));
        if p.lake().join("ad_events/_commits").exists() {
            landed = sorted_values(&read_dataset(&p.lake().join("ad_events")), "event_id")
                .into_iter()
                .collect();
            if landed.len() >= sent {
                break;
            }
        }
    }
    assert_eq!(landed, ids, "the lake holds exactly the topic's hits");
}

#[test]
fn a_journal_producer_that_does_not_trust_the_brokers_ca_is_tls_failed() {
    use crate::collect::hit;
    use crate::kafka_journal::{metric, metrics, wait_for_state};
    let opts = BrokerOptions::default();
    let Some(broker) = TlsBroker::start(opts) else {
        return;
    };
    let JournalDaemon {
        p: _p,
        d,
        topic,
        activity: a,
    } = journal_daemon(&broker, opts, "other-ca.pem");
    // Not "broker_down": the state says what to fix.
    wait_for_state(&d, "tls_failed");
    let impression = hit(
        reqwest::Method::GET,
        a["impression_url"].as_str().expect("url"),
    );
    assert_eq!(impression.status, 503, "the journal cannot accept");
    let click = hit(reqwest::Method::GET, a["click_url"].as_str().expect("url"));
    assert_eq!(click.status, 302, "a click still redirects");
    let m = metrics(&d);
    assert_eq!(
        metric(&m, r#"backflow_collect_kafka_state{status="tls_failed"}"#),
        Some(1.0),
        "{m}"
    );
    assert!(
        metric(
            &m,
            r#"backflow_collect_kafka_errors_total{status="tls_failed"}"#
        )
        .is_some_and(|n| n >= 2.0),
        "{m}"
    );
    assert!(broker.failed_handshakes() > 0);
    assert!(
        broker.consume(opts, &topic, 1, 0).is_empty(),
        "nothing produced"
    );
}
