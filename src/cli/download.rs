//! `backflow download …`: click-detail downloads (下载数据明细, R68–R70), through a running
//! daemon's admin API (`--api`, its background worker builds the archive) or, without `--api`,
//! straight on the catalog and lake of the data dir — then `create` builds the archive itself.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use backflow::config::daemon::DaemonConfig;
use backflow::daemon;
use backflow::report::Reports;
use backflow::report::downloads::DownloadInput;

use super::Remote;
use super::client::ApiClient;

#[derive(Debug, Args)]
pub struct DownloadArgs {
    #[command(flatten)]
    remote: Remote,
    #[command(subcommand)]
    command: DownloadCommand,
}

#[derive(Debug, Subcommand)]
enum DownloadCommand {
    /// Ask for the raw clicks of a range within the last month as a .tar.gz of log files.
    /// Through --api the daemon builds it in the background (add --wait or --output to wait);
    /// without --api this command builds it.
    Create {
        #[arg(long)]
        workspace: String,
        /// First day (YYYY-MM-DD, workspace time zone); today and the 29 days before.
        #[arg(long)]
        from: String,
        /// Last day, included.
        #[arg(long)]
        to: String,
        /// Task name (default: `clicks FROM..TO`).
        #[arg(long)]
        name: Option<String>,
        /// Wait until the archive is ready (or the task failed).
        #[arg(long)]
        wait: bool,
        /// Write the archive here once ready (implies --wait).
        #[arg(long)]
        output: Option<PathBuf>,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 1800)]
        timeout: u64,
        #[arg(long)]
        json: bool,
    },
    /// The download tasks of a workspace, newest first.
    List {
        #[arg(long)]
        workspace: String,
        #[arg(long)]
        json: bool,
    },
    /// One task's status; with --output, its archive written to a file.
    Get {
        id: i64,
        /// Write the archive here (the task must have succeeded and not expired).
        #[arg(long)]
        output: Option<PathBuf>,
        /// Wait until the task is finished first.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 1800)]
        timeout: u64,
        #[arg(long)]
        json: bool,
    },
}

enum Backend {
    Api(ApiClient),
    Direct {
        reports: Reports,
        rt: tokio::runtime::Runtime,
        ttl_hours: u32,
    },
}

impl Backend {
    fn task(&self, id: i64) -> anyhow::Result<Value> {
        match self {
            Backend::Api(api) => api.get(&["downloads", &id.to_string()], &[]),
            Backend::Direct { reports, .. } => Ok(serde_json::to_value(
                reports.catalog.download(id).map_err(anyhow::Error::from)?,
            )?),
        }
    }

    /// Polls a task until it is `succeeded` or `failed`, telling stderr when its status changes.
    fn wait(&self, id: i64, timeout: Duration) -> anyhow::Result<Value> {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        loop {
            let task = self.task(id)?;
            let status = task["status"].as_str().unwrap_or_default().to_string();
            if status == "succeeded" || status == "failed" {
                return Ok(task);
            }
            if status != last {
                eprintln!("download {id}: {status}");
                last = status;
            }
            if Instant::now() >= deadline {
                bail!(
                    "download {id} is still {last} after {}s (it goes on in the background; \
                     `backflow download get {id} --wait` waits again)",
                    timeout.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Writes a succeeded task's archive to `path`.
    fn save(&self, task: &Value, path: &Path) -> anyhow::Result<u64> {
        let id = task["id"].as_i64().unwrap_or_default();
        match self {
            Backend::Api(api) => api.download_to(&["downloads", &id.to_string(), "file"], path),
            Backend::Direct { reports, .. } => {
                let stored = reports.catalog.download(id)?;
                if stored.status != "succeeded" {
                    bail!("download {id} is {}, not succeeded", stored.status);
                }
                let Some(file) = stored.file else {
                    bail!(
                        "download {id} expired at {}",
                        stored.expires_at.unwrap_or_default()
                    );
                };
                let from = reports.downloads_dir.join(file);
                std::fs::copy(&from, path)
                    .with_context(|| format!("copying {} to {}", from.display(), path.display()))
            }
        }
    }
}

fn backend(cfg: &DaemonConfig, remote: &Remote, data_dir_given: bool) -> anyhow::Result<Backend> {
    match super::api_client(remote, data_dir_given)? {
        Some(api) => Ok(Backend::Api(api)),
        None => {
            let runtime = daemon::open_runtime(cfg)?;
            Ok(Backend::Direct {
                reports: Reports::from_runtime(&runtime)
                    .with_downloads_dir(cfg.data_dir.join("downloads")),
                rt: tokio::runtime::Runtime::new().context("starting the async runtime")?,
                ttl_hours: cfg.reports_download_ttl_hours,
            })
        }
    }
}

fn print_task(t: &Value, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        println!("{}", serde_json::to_string(t)?);
        return Ok(());
    }
    let s = |k: &str| t[k].as_str().unwrap_or_default().to_string();
    let mut line = format!(
        "download {} [{}] {:?} {}..{}: {}",
        t["id"],
        s("workspace"),
        s("name"),
        s("from"),
        s("to"),
        s("status")
    );
    match s("status").as_str() {
        "succeeded" => {
            line.push_str(&format!(
                ", {} clicks, {} bytes, downloadable until {}",
                t["clicks"],
                t["bytes"],
                s("expires_at")
            ));
        }
        "failed" => line.push_str(&format!(": {}", s("reason"))),
        _ => {}
    }
    println!("{line}");
    Ok(())
}

/// Prints where the archive went (stderr, so `--json` output stays one document).
fn saved(path: &Path, bytes: u64) {
    eprintln!("wrote {} ({bytes} bytes)", path.display());
}

/// `backflow download …`.
pub fn download(
    cfg: &DaemonConfig,
    args: DownloadArgs,
    data_dir_given: bool,
) -> anyhow::Result<ExitCode> {
    let backend = backend(cfg, &args.remote, data_dir_given)?;
    match args.command {
        DownloadCommand::Create {
            workspace,
            from,
            to,
            name,
            wait,
            output,
            timeout,
            json,
        } => {
            let input = DownloadInput { from, to, name };
            let mut task = match &backend {
                Backend::Api(api) => api.post(
                    &["workspaces", &workspace, "downloads"],
                    &json!({ "from": input.from, "to": input.to, "name": input.name }),
                )?,
                Backend::Direct {
                    reports,
                    rt,
                    ttl_hours,
                } => {
                    let queued = reports.queue_download(&workspace, input, "cli")?;
                    eprintln!("download {}: queued; building the archive", queued.id);
                    // A daemon sharing this catalog may have claimed it first: then wait.
                    match reports.catalog.claim_download_id(queued.id)? {
                        Some(claimed) => serde_json::to_value(rt.block_on(
                            reports.process_download(&claimed, &reports.downloads_dir, *ttl_hours),
                        )?)?,
                        None => serde_json::to_value(queued)?,
                    }
                }
            };
            let id = task["id"].as_i64().context("the answer has no task id")?;
            if wait || output.is_some() || matches!(backend, Backend::Direct { .. }) {
                task = backend.wait(id, Duration::from_secs(timeout))?;
            }
            print_task(&task, json)?;
            if task["status"] == "failed" {
                return Ok(ExitCode::FAILURE);
            }
            if let Some(path) = output {
                saved(&path, backend.save(&task, &path)?);
            }
        }
        DownloadCommand::List { workspace, json } => {
            let all = match &backend {
                Backend::Api(api) => api.get(&["workspaces", &workspace, "downloads"], &[])?,
                Backend::Direct { reports, .. } => {
                    serde_json::to_value(reports.catalog.downloads(&workspace)?)?
                }
            };
            if json {
                println!("{}", serde_json::to_string(&all)?);
            } else {
                for t in all.as_array().into_iter().flatten() {
                    print_task(t, false)?;
                }
            }
        }
        DownloadCommand::Get {
            id,
            output,
            wait,
            timeout,
            json,
        } => {
            let task = if wait {
                backend.wait(id, Duration::from_secs(timeout))?
            } else {
                backend.task(id)?
            };
            print_task(&task, json)?;
            if let Some(path) = output {
                saved(&path, backend.save(&task, &path)?);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
