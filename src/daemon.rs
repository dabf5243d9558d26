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
use crate::config::daemon::DaemonConfig;
use crate::config::model::Pipeline;
use crate::pipeline::Runtime;
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
        lock_dir: Some(cfg.data_dir.join("locks")),
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
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
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
    let names: Vec<String> = pipelines.iter().map(|p| p.name.clone()).collect();
    let jobs = Jobs::new(
        runtime,
        pipelines,
        cfg.max_concurrent_runs.get(),
        shutdown.clone(),
        tracker.clone(),
    );
    let state = AppState {
        jobs: Arc::clone(&jobs),
    };

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
        axum::serve(public, api::public_app(state.clone()))
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
