//! `backflow serve`: opens the catalog and lake, loads the pipelines, starts the schedules and
//! both listeners, and shuts down gracefully on SIGTERM / Ctrl-C.
//!
//! Shutdown: listeners stop accepting, no new batch starts, and in-flight batches get
//! `shutdown.grace_seconds` to commit. A batch still running after that is abandoned: its intent
//! stays open in the catalog and the next run replays it, so nothing is lost or duplicated.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::api::{self, AppState};
use crate::catalog::{Catalog, CatalogError, Role};
use crate::collect::appender::{Appender, KafkaJournal};
use crate::collect::endpoint::{self, CollectState};
use crate::collect::link::{LinkSigner, load_or_create_key};
use crate::collect::links::LinkCache;
use crate::collect::registry::MediaRegistry;
use crate::collect::service::ActivityService;
use crate::config::daemon::{DaemonConfig, JournalConfig};
use crate::config::model::{DatasetJob, Pipeline, SourceConfig};
use crate::enrich::{EnrichError, EnrichOptions, Enricher};
use crate::journal::{Journal, JournalError, JournalOptions};
use crate::pipeline::Runtime;
use crate::pipeline::quota::QuotaSettings;
use crate::schedule::Jobs;
use crate::storage::{StorageError, StoreRegistry};
use crate::telemetry::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("lake: {0}")]
    Lake(#[from] StorageError),
    #[error("cannot listen on {addr} ({listener}): {source}")]
    Listen {
        listener: &'static str,
        addr: String,
        source: std::io::Error,
    },
    #[error("{listener} listener failed: {source}")]
    Serve {
        listener: &'static str,
        source: std::io::Error,
    },
    #[error("media registry:\n{0}")]
    Registry(String),
    #[error("link signing key {path}: {source}")]
    Key {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Forward(#[from] crate::forward::ForwardError),
    #[error(transparent)]
    Enrich(#[from] EnrichError),
    #[error(transparent)]
    KafkaJournal(#[from] crate::collect::appender::KafkaJournalError),
}

/// Loads the media registry of `schemas_dir`.
pub fn load_registry(cfg: &DaemonConfig) -> Result<MediaRegistry, DaemonError> {
    MediaRegistry::load(&cfg.schemas_dir.join("media.yaml")).map_err(|errors| {
        DaemonError::Registry(
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
        )
    })
}

/// The link signer, its key kept at `{data_dir}/secrets/link.key` (created on first use).
pub fn link_signer(cfg: &DaemonConfig) -> Result<LinkSigner, DaemonError> {
    let path = cfg.data_dir.join("secrets").join("link.key");
    let key = load_or_create_key(&path).map_err(|source| DaemonError::Key {
        path: path.display().to_string(),
        source,
    })?;
    Ok(LinkSigner::new(1, key))
}

/// Opens what the collection endpoints need: registry, signer, journal, link table.
async fn open_collect(
    cfg: &DaemonConfig,
    runtime: &Runtime,
) -> Result<Option<(CollectState, Arc<MediaRegistry>)>, DaemonError> {
    if !cfg.schemas_dir.join("media.yaml").exists() {
        warn!(schemas_dir = %cfg.schemas_dir.display(), "no media.yaml: monitoring-link endpoints are off");
        return Ok(None);
    }
    let registry = Arc::new(load_registry(cfg)?);
    let signer = Arc::new(link_signer(cfg)?);
    let (journal, recovery) =
        Journal::open(&cfg.data_dir.join("journal"), JournalOptions::default()).await?;
    if recovery.truncated_bytes > 0 {
        warn!(bytes = recovery.truncated_bytes, at = ?recovery.truncated_at, "journal: torn tail truncated on recovery");
    }
    let links = LinkCache::default();
    let n = links.reload(&runtime.catalog, &registry)?;
    info!(links = n, media = registry.len(), next = %recovery.next_position, "monitoring-link endpoints ready");
    let appender = match &cfg.journal {
        JournalConfig::Local => Appender::Local(journal.clone()),
        JournalConfig::Kafka(kafka) => {
            // A record holds the request target (JSON-escaped: at most twice its bytes) and up
            // to 8 KiB of headers; the producer refuses records over `message_max_bytes`.
            let largest = cfg.public_max_url_bytes.saturating_mul(2) + 16 * 1024;
            if largest > kafka.message_max_bytes {
                warn!(
                    largest_record = largest,
                    message_max_bytes = kafka.message_max_bytes,
                    "public.max_url_bytes admits hit records over journal.kafka.message_max_bytes: such impressions get 414, such clicks redirect into rejected.ndjson"
                );
            }
            let k = KafkaJournal::open(kafka, Arc::clone(&runtime.metrics)).await?;
            info!(brokers = %kafka.brokers.join(","), topic = %kafka.topic, "hits are journaled to Kafka (acks=all)");
            Appender::Kafka(k)
        }
    };
    let state = CollectState {
        signer,
        links,
        journal,
        appender,
        metrics: Arc::clone(&runtime.metrics),
        max_url_bytes: cfg.public_max_url_bytes,
        fallback_dir: cfg.data_dir.join("fallback"),
        limiter: Arc::new(crate::collect::limit::RateLimiter::new(
            cfg.public_rate_limit_per_ip,
            cfg.public_rate_limit_global,
        )),
    };
    Ok(Some((state, registry)))
}

/// Opens what every command that runs pipelines needs.
pub fn open_runtime(cfg: &DaemonConfig) -> Result<Runtime, DaemonError> {
    let catalog = Arc::new(Catalog::open(&cfg.catalog_path)?);
    let stores = StoreRegistry::default();
    let lake = stores.open(&cfg.lake_url)?;
    Ok(Runtime {
        catalog,
        stores,
        lake,
        tz: cfg.time_zone,
        metrics: Arc::new(Metrics::new()),
        journal: std::sync::OnceLock::new(),
        registry: std::sync::OnceLock::new(),
        enricher: std::sync::OnceLock::new(),
        lock_dir: Some(cfg.data_dir.join("locks")),
        quota: QuotaSettings {
            staging_retention: chrono::Duration::days(i64::from(cfg.quota_staging_retention_days)),
        },
    })
}

/// Creates the first admin token when the catalog has none, and prints it once to stdout.
pub fn ensure_admin_token(catalog: &Catalog) -> Result<(), CatalogError> {
    if catalog.has_tokens()? {
        return Ok(());
    }
    let issued = catalog.create_token(Role::OrgAdmin, None, "initial admin")?;
    // Printed, never logged: logs are shipped and kept, this must not be.
    println!(
        "Initial admin token (shown once; store it now): {}",
        issued.secret
    );
    Ok(())
}

/// Runs the daemon until `shutdown` is cancelled (or a signal arrives).
pub async fn serve(
    cfg: &DaemonConfig,
    runtime: Runtime,
    pipelines: Vec<Pipeline>,
    datasets: Vec<DatasetJob>,
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
    let collect = open_collect(cfg, &runtime).await?;
    let mut pipelines = pipelines;
    if let (JournalConfig::Kafka(kafka), Some(_)) = (&cfg.journal, &collect) {
        // The hits are in the topic: `type: journal` pipelines (ad_events) read it instead.
        for p in &mut pipelines {
            if let SourceConfig::Journal(journal) = &p.source {
                info!(pipeline = %p.name, topic = %kafka.topic, "journal.kind kafka: this journal pipeline reads the topic (format hit_record)");
                p.source = SourceConfig::Kafka(journal_topic_source(kafka, &p.name, journal));
            }
        }
    }
    if let Some((state, registry)) = &collect {
        // `journal` pipelines (ad_events) read what the endpoints append, in this process.
        let _ = runtime.journal.set(state.journal.clone());
        runtime.metrics.journal.attach(state.journal.clone());
        let _ = runtime.registry.set(Arc::clone(registry));
        // Retention waits for every consumer, including those that have not committed yet.
        for p in pipelines
            .iter()
            .filter(|p| matches!(p.source, SourceConfig::Journal(_)))
        {
            state
                .journal
                .register_consumer(&p.name, crate::journal::Position(1))
                .await?;
        }
        let _ = runtime
            .enricher
            .set(Enricher::open(&EnrichOptions::from_config(cfg))?);
    }
    let runtime = Arc::new(runtime);
    ensure_admin_token(&runtime.catalog)?;
    let abandoned = runtime.catalog.fail_abandoned_runs()?;
    if abandoned > 0 {
        warn!(
            runs = abandoned,
            "runs left running by an earlier process were marked failed; their batches will be replayed"
        );
    }
    let tracker = TaskTracker::new();
    let kafka_journal = collect
        .as_ref()
        .and_then(|(state, _)| match &state.appender {
            Appender::Kafka(k) => Some(Arc::clone(k)),
            Appender::Local(_) => None,
        });
    if let Some(k) = &kafka_journal {
        tracker.spawn(Arc::clone(k).run(shutdown.clone()));
    }
    if collect.is_none() {
        // Without the endpoints there is no journal to read: such pipelines would only fail.
        pipelines.retain(|p| {
            let reads_journal = matches!(p.source, SourceConfig::Journal(_));
            if reads_journal {
                warn!(pipeline = %p.name, "not scheduled: it reads the journal and collection is off (no media.yaml)");
            }
            !reads_journal
        });
    }
    let names: Vec<String> = pipelines.iter().map(|p| p.name.clone()).collect();
    let jobs = Jobs::new(
        runtime,
        pipelines,
        datasets,
        crate::schedule::Limits {
            max_concurrent_runs: cfg.max_concurrent_runs.get(),
            max_runs_per_workspace: cfg.max_runs_per_workspace.get(),
        },
        shutdown.clone(),
        tracker.clone(),
    );
    let activities = collect.as_ref().map(|(collect_state, registry)| {
        Arc::new(ActivityService::new(
            Arc::clone(&jobs.runtime().catalog),
            Arc::clone(registry),
            Arc::clone(&collect_state.signer),
            cfg.public_base_url.clone(),
            Some(collect_state.links.clone()),
        ))
    });
    let state = AppState {
        reports: Arc::new(
            crate::report::Reports::from_runtime(jobs.runtime())
                .with_downloads_dir(cfg.data_dir.join("downloads")),
        ),
        jobs: Arc::clone(&jobs),
        activities,
        kafka_journal,
    };
    {
        // Click-detail downloads (`report::downloads`): archives under the data dir.
        let reports = Arc::clone(&state.reports);
        let dir = state.reports.downloads_dir.clone();
        let (ttl, stop) = (cfg.reports_download_ttl_hours, shutdown.clone());
        tracker.spawn(crate::report::downloads::run_worker(
            reports, dir, ttl, stop,
        ));
    }
    let collect_routes = collect
        .as_ref()
        .map(|(state, _)| endpoint::routes(state.clone()));
    if let Some((collect_state, registry)) = &collect {
        // Third-party monitoring: hits forwarded from a durable queue (`forward`).
        let enricher = match jobs.runtime().enricher.get() {
            Some(e) => Arc::clone(e),
            None => Enricher::open(&EnrichOptions::from_config(cfg))?,
        };
        crate::forward::start(
            &cfg.forward,
            collect_state.journal.clone(),
            match &cfg.journal {
                JournalConfig::Kafka(k) => Some(k),
                JournalConfig::Local => None,
            },
            Arc::clone(&jobs.runtime().catalog),
            (Arc::clone(registry), enricher),
            Arc::clone(&jobs.runtime().metrics),
            shutdown.clone(),
            &tracker,
        )
        .await?;
        // The admin API reloads the table after each change; the CLI's direct path writes the
        // catalog behind the daemon's back: this picks those up.
        let links = collect_state.links.clone();
        let registry = Arc::clone(registry);
        let catalog = Arc::clone(&jobs.runtime().catalog);
        let stop = shutdown.clone();
        tracker.spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
                    () = stop.cancelled() => return,
                }
                if let Err(e) = links.reload(&catalog, &registry) {
                    warn!(error = %e, "link table refresh failed; keeping the previous table");
                }
            }
        });
    }

    let bind = |listener: &'static str, addr: std::net::SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| DaemonError::Listen {
                listener,
                addr: addr.to_string(),
                source,
            })
    };
    let public = bind("public", cfg.public_listen).await?;
    let admin = bind("admin", cfg.admin_listen).await?;
    info!(
        public = %cfg.public_listen, admin = %cfg.admin_listen, lake = %cfg.lake_url,
        catalog = %cfg.catalog_path.display(), pipelines = ?names, "backflow serving"
    );
    jobs.start_schedules();

    let signals = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutdown requested");
        signals.cancel();
    });
    let public_server = {
        let stop = shutdown.clone();
        axum::serve(
            public,
            api::public_app(state.clone(), collect_routes)
                .into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(async move { stop.cancelled().await })
    };
    let admin_server = {
        let stop = shutdown.clone();
        axum::serve(admin, api::admin_app(state))
            .with_graceful_shutdown(async move { stop.cancelled().await })
    };
    let (public_result, admin_result) = tokio::join!(public_server, admin_server);
    shutdown.cancel();
    tracker.close();
    if tokio::time::timeout(cfg.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        warn!(
            grace_seconds = cfg.shutdown_grace.as_secs(),
            "in-flight batches did not finish in time and are abandoned; the next run replays them"
        );
    }
    if let Some((collect_state, _)) = collect {
        // Every answered hit is already durable; closing only stops the writer cleanly.
        if let Err(e) = collect_state.journal.close().await {
            warn!(error = %e, "journal close failed");
        }
    }
    public_result.map_err(|source| DaemonError::Serve {
        listener: "public",
        source,
    })?;
    admin_result.map_err(|source| DaemonError::Serve {
        listener: "admin",
        source,
    })?;
    info!("backflow stopped");
    Ok(())
}

/// The Kafka source a `type: journal` pipeline reads in `journal.kind: kafka` mode: the
/// collector's topic, the collector's record format, its own consumer group.
fn journal_topic_source(
    kafka: &crate::config::daemon::KafkaJournalConfig,
    pipeline: &str,
    journal: &crate::config::model::JournalSource,
) -> crate::config::model::KafkaSource {
    use crate::config::model::{KafkaFormat, KafkaSource, KafkaTopics, StartFrom};
    KafkaSource {
        brokers: kafka.brokers.clone(),
        topics: KafkaTopics::Names(vec![kafka.topic.clone()]),
        group_id: format!("backflow-{pipeline}"),
        format: KafkaFormat::HitRecord,
        journal: true,
        start_from: StartFrom::Earliest,
        headers_column: None,
        key_column: None,
        max_records_per_batch: journal.max_records_per_batch,
        max_bytes_per_batch: journal.max_bytes_per_batch,
        idle: std::time::Duration::from_secs(2),
        join_timeout: std::time::Duration::from_secs(60),
        session_timeout: std::time::Duration::from_secs(45),
        security_protocol: kafka.security_protocol,
        sasl: kafka
            .security_protocol
            .sasl()
            .then(|| crate::config::model::KafkaSasl {
                mechanism: kafka.sasl_mechanism,
                username: kafka.sasl_username.clone().unwrap_or_default(),
                secret: kafka.sasl_password_env.clone().unwrap_or_default(),
            }),
        tls: kafka.tls.clone(),
    }
}

async fn wait_for_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
