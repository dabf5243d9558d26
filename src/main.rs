//! The `backflow` command line.

mod cli;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use chrono::NaiveDate;
use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use backflow::catalog::{Catalog, QuotaStatus, Role};
use backflow::collect::registry::MediaRegistry;
use backflow::config::daemon::{DaemonConfig, LogFormat};
use backflow::config::load::{LoadOptions, LoadReport, load_pipelines};
use backflow::config::model::{DatasetJob, Pipeline};
use backflow::pipeline::{RunOptions, testing};
use backflow::report::cli::ReportCommand;
use backflow::schedule::{Jobs, Limits};
use backflow::{daemon, datasets, telemetry};

const EXAMPLES: &str = "\
Examples:
  backflow serve                                  # daemon on the embedded defaults (./data)
  backflow validate                               # check every file in ./pipelines
  backflow validate pipelines/a.yaml other/       # check some files and directories
  backflow run behavior_events                    # run one pipeline now, until its source is drained
  backflow run behavior_events --from 2026-11-01 --to 2026-11-07
  backflow run behavior_dataset                   # refresh datasets/behavior now and publish it
  backflow backfill behavior_dataset --from 2026-11-01 --to 2026-11-07   # one instance per day
  backflow rerun 42                               # rerun failed run 42 for its period
  backflow test                                   # run the tests: blocks of every pipeline
  backflow token create --role analyst --label grafana
  backflow activity --api http://127.0.0.1:8081 --token $T create --workspace ws --name n \
      --group g --channel kuaishou --format 信息流 --landing https://example.com/ --json
  backflow activity links --workspace ws --csv --excel > links.csv
  backflow feedback create --workspace ws --name 广点通-1

Configuration: ./backflow.yaml if present (or --config FILE); every key can be overridden with
BACKFLOW__SECTION__KEY environment variables, e.g. BACKFLOW__LAKE__URL=s3://bucket/lake.
S3 credentials and endpoint come from the standard AWS_* variables, never from YAML.";

#[derive(Debug, Parser)]
#[command(name = "backflow", version, about = "Ad media backflow daemon and pipelines", after_help = EXAMPLES)]
struct Cli {
    /// Daemon configuration file (default: ./backflow.yaml if it exists).
    #[arg(long, global = true, env = "BACKFLOW_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (overrides data_dir; the catalog and secrets follow it).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Log format (overrides log.format).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormatArg>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: schedules, public and admin listeners.
    Serve,
    /// Check pipeline files; reports every error of every file as file:line:column: path: message.
    Validate {
        /// Files or directories (default: the configured pipelines_dir).
        paths: Vec<PathBuf>,
    },
    /// Run one pipeline now until its source is drained (replaying an open batch first), or
    /// refresh a dataset job now (build, validate, publish a new version).
    Run {
        /// Pipeline or dataset job name (from pipelines_dir) or path to its YAML file.
        pipeline: String,
        /// Only source files modified on or after this date (YYYY-MM-DD, workspace zone).
        #[arg(long)]
        from: Option<NaiveDate>,
        /// Only source files modified on or before this date (YYYY-MM-DD, workspace zone).
        #[arg(long)]
        to: Option<NaiveDate>,
        /// Stop after this many batches.
        #[arg(long)]
        max_batches: Option<usize>,
        /// Dataset jobs: refresh as if run at this time (RFC 3339); a user tag dataset's
        /// windows end at the period containing it. Default: now.
        #[arg(long)]
        as_of: Option<chrono::DateTime<chrono::Utc>>,
        /// Print the run summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Backfill a dataset job: one recorded run per period (day or hour, `refresh.period`) from
    /// --from to --to, in order, with the job's retries and source wait; periods that already
    /// succeeded are skipped unless --force. Exits 1 if any run did not succeed.
    Backfill {
        /// Dataset job name (from pipelines_dir).
        job: String,
        /// First date (YYYY-MM-DD, the daemon's time zone).
        #[arg(long)]
        from: NaiveDate,
        /// Last date, inclusive.
        #[arg(long)]
        to: NaiveDate,
        /// Also rebuild periods that already succeeded.
        #[arg(long)]
        force: bool,
        /// Print the runs as JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Rerun a failed, timed-out or cancelled run (by id) for its period. Exits 1 if the rerun
    /// did not succeed.
    Rerun {
        run_id: i64,
        /// Print the runs as JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Run the `tests:` block of one pipeline, or of all.
    Test {
        /// Pipeline name or file (default: all in pipelines_dir).
        pipeline: Option<String>,
    },
    /// Manage admin API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Monitoring activities (监测活动) and their links, through a running daemon's admin API
    /// (--api / BACKFLOW_API) or the catalog of a stopped one.
    Activity(cli::ActivityArgs),
    /// Tencent Ads feedback tasks (腾讯广告 Feedback URL), same two paths as `activity`.
    Feedback(cli::FeedbackArgs),
    /// Purchased click records (quota) per workspace, usage and staged records.
    Quota {
        #[command(subcommand)]
        command: QuotaCommand,
    },
    /// Click-detail downloads (下载数据明细): create, list, get — through a running daemon's
    /// admin API (--api / BACKFLOW_API) or the catalog and lake of the data dir.
    Download(cli::DownloadArgs),
    /// Reports (报表分析), computed from the catalog and the committed lake.
    Report {
        #[command(subcommand)]
        command: ReportCommand,
    },
}

#[derive(Debug, Subcommand)]
enum QuotaCommand {
    /// Record a purchase of click records for a workspace (its first purchase starts metering).
    Add {
        #[arg(long)]
        workspace: String,
        /// Click records bought.
        #[arg(long)]
        clicks: u64,
        /// Order number or other note, kept in the ledger and the audit log.
        #[arg(long)]
        note: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Purchased, used, remaining and staged records of a workspace.
    Show {
        #[arg(long)]
        workspace: String,
        #[arg(long)]
        json: bool,
    },
    /// Billable clicks per day (default: the last 7 days including today).
    Usage {
        #[arg(long)]
        workspace: String,
        /// First day (YYYY-MM-DD, pipeline time zone).
        #[arg(long)]
        from: Option<NaiveDate>,
        /// Last day (YYYY-MM-DD, pipeline time zone).
        #[arg(long)]
        to: Option<NaiveDate>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token and print it once.
    Create {
        /// org_admin, workspace_admin, analyst or read_only.
        #[arg(long)]
        role: String,
        /// Limit the token to one workspace.
        #[arg(long)]
        workspace: Option<String>,
        /// What the token is for.
        #[arg(long, default_value = "cli")]
        label: String,
    },
    /// Revoke a token by id.
    Revoke { id: i64 },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn load_config(cli: &Cli) -> anyhow::Result<DaemonConfig> {
    let default = Path::new("backflow.yaml");
    let file = cli
        .config
        .as_deref()
        .or(default.exists().then_some(default));
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    if let Some(dir) = &cli.data_dir {
        env.push(("BACKFLOW__DATA_DIR".into(), dir.display().to_string()));
    }
    DaemonConfig::load(file, env).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("invalid configuration:\n{}", lines.join("\n"))
    })
}

fn load_options(cfg: &DaemonConfig) -> LoadOptions {
    LoadOptions {
        schemas_dir: Some(cfg.schemas_dir.clone()),
        default_time_zone: cfg.time_zone,
    }
}

fn print_errors(report: &LoadReport) {
    for error in &report.errors {
        eprintln!("{error}");
    }
}

/// Finds pipelines by name in pipelines_dir, or loads a path.
fn select_pipelines(cfg: &DaemonConfig, which: Option<&str>) -> anyhow::Result<Vec<Pipeline>> {
    select(cfg, which).map(|(pipelines, _)| pipelines)
}

/// Finds pipelines and dataset jobs by name in pipelines_dir, or loads a path.
fn select(
    cfg: &DaemonConfig,
    which: Option<&str>,
) -> anyhow::Result<(Vec<Pipeline>, Vec<DatasetJob>)> {
    let opts = load_options(cfg);
    let is_path = |a: &str| a.ends_with(".yaml") || a.ends_with(".yml");
    let report = match which {
        Some(arg) if is_path(arg) => load_pipelines(&[PathBuf::from(arg)], &opts),
        _ => load_pipelines(std::slice::from_ref(&cfg.pipelines_dir), &opts),
    };
    if !report.errors.is_empty() {
        print_errors(&report);
        bail!(
            "{} configuration error(s); run `backflow validate` for the full list",
            report.errors.len()
        );
    }
    let (mut pipelines, mut jobs) = (report.pipelines, report.jobs);
    if let Some(name) = which.filter(|a| !is_path(a)) {
        pipelines.retain(|p| p.name == name);
        jobs.retain(|j| j.name == name);
        if pipelines.is_empty() && jobs.is_empty() {
            bail!(
                "no pipeline or dataset job named `{name}` in {}",
                cfg.pipelines_dir.display()
            );
        }
    }
    Ok((pipelines, jobs))
}

fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    let cfg = load_config(&cli)?;
    let data_dir_given = cli.data_dir.is_some();
    let json_logs = match cli.log_format {
        Some(LogFormatArg::Json) => true,
        Some(LogFormatArg::Text) => false,
        None => cfg.log_format == LogFormat::Json,
    };
    telemetry::init_logging(json_logs, &cfg.log_level);
    match cli.command {
        Command::Validate { paths } => {
            let paths = if paths.is_empty() {
                vec![cfg.pipelines_dir.clone()]
            } else {
                paths
            };
            let mut report = load_pipelines(&paths, &load_options(&cfg));
            // The media registry is configuration too: check it with the pipelines.
            let registry_path = cfg.schemas_dir.join("media.yaml");
            let registry = if registry_path.exists() {
                report.files += 1;
                match MediaRegistry::load(&registry_path) {
                    Ok(registry) => Some(registry),
                    Err(errors) => {
                        report.errors.extend(errors);
                        None
                    }
                }
            } else {
                None
            };
            print_errors(&report);
            if report.errors.is_empty() {
                let names: Vec<&str> = report.pipelines.iter().map(|p| p.name.as_str()).collect();
                println!(
                    "ok: {} pipeline(s) in {} file(s): {}",
                    names.len(),
                    report.files,
                    names.join(", ")
                );
                if !report.jobs.is_empty() {
                    let jobs: Vec<String> = report
                        .jobs
                        .iter()
                        .map(|j| format!("{} (datasets/{})", j.name, j.output()))
                        .collect();
                    println!("ok: {} dataset job(s): {}", jobs.len(), jobs.join(", "));
                }
                if let Some(registry) = registry {
                    println!(
                        "ok: media registry {}: {} media ({} of the manual), {} placement rows",
                        registry_path.display(),
                        registry.len(),
                        registry.media().filter(|m| m.in_manual).count(),
                        registry.placement_count()
                    );
                }
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!(
                    "{} error(s) in {} file(s)",
                    report.errors.len(),
                    report.files
                );
                Ok(ExitCode::from(1))
            }
        }
        Command::Test { pipeline } => {
            let pipelines = select_pipelines(&cfg, pipeline.as_deref())?;
            let (mut passed, mut failed) = (0, 0);
            for p in &pipelines {
                for outcome in testing::run_tests(p, cfg.time_zone) {
                    if outcome.passed() {
                        passed += 1;
                        println!("PASS {}: {}", outcome.pipeline, outcome.name);
                    } else {
                        failed += 1;
                        println!("FAIL {}: {}", outcome.pipeline, outcome.name);
                        for f in &outcome.failures {
                            println!("    {f}");
                        }
                    }
                }
            }
            println!("{passed} passed, {failed} failed");
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Run {
            pipeline,
            from,
            to,
            max_batches,
            as_of,
            json,
        } => {
            let (pipelines, jobs) = select(&cfg, Some(&pipeline))?;
            let runtime = daemon::open_runtime(&cfg)?;
            let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            for job in &jobs {
                let opts = datasets::RefreshOptions {
                    as_of,
                    ..datasets::RefreshOptions::now("cli")
                };
                let summary = rt.block_on(datasets::refresh(&runtime, job, &opts))?;
                if json {
                    println!("{}", serde_json::to_string(&summary)?);
                } else {
                    println!(
                        "{}: run {} {}: published {} version {} (pointer {}), {} rows from {} source rows; {} old version(s) deleted",
                        job.name,
                        summary.run_id,
                        summary.status,
                        summary.dataset,
                        summary.version,
                        summary.seq,
                        summary.rows_out,
                        summary.rows_in,
                        summary.deleted_versions.len()
                    );
                }
            }
            let mut summaries = Vec::new();
            for p in &pipelines {
                let opts = RunOptions {
                    trigger: "cli".into(),
                    window: (from, to),
                    max_batches,
                    run_id: None,
                };
                let summary = rt.block_on(runtime.run(p, &opts, &CancellationToken::new()))?;
                if json {
                    println!("{}", serde_json::to_string(&summary)?);
                } else {
                    println!(
                        "{}: run {} {}: {} batch(es) ({} replayed), {} rows in, {} out, {} quarantined, {} unreadable file(s)",
                        p.name,
                        summary.run_id,
                        summary.status,
                        summary.batches,
                        summary.replayed_batches,
                        summary.rows_in,
                        summary.rows_out,
                        summary.rows_quarantined,
                        summary.files_failed
                    );
                }
                summaries.push(summary);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Backfill {
            job,
            from,
            to,
            force,
            json,
        } => scheduled_command(&cfg, json, |jobs| {
            let plan = jobs.backfill(&job, from, to, force)?;
            if !plan.skipped.is_empty() && !json {
                println!(
                    "{job}: {} period(s) already succeeded, skipped (use --force to rebuild): {}",
                    plan.skipped.len(),
                    plan.skipped.join(", ")
                );
            }
            if !json {
                println!("{job}: {} run(s) queued", plan.runs.len());
            }
            Ok((job.clone(), plan.runs.first().map(|r| r.run_id)))
        }),
        Command::Rerun { run_id, json } => scheduled_command(&cfg, json, |jobs| {
            let submitted = jobs.rerun(run_id)?;
            let name = jobs
                .runtime()
                .catalog
                .run(submitted.run_id)?
                .map(|r| r.pipeline)
                .unwrap_or_default();
            if !json {
                println!("{name}: run {run_id} rerun as run {}", submitted.run_id);
            }
            Ok((name, Some(submitted.run_id)))
        }),
        Command::Serve => {
            let report = load_pipelines(
                std::slice::from_ref(&cfg.pipelines_dir),
                &load_options(&cfg),
            );
            if !report.errors.is_empty() {
                print_errors(&report);
                bail!(
                    "{} configuration error(s) in {}",
                    report.errors.len(),
                    cfg.pipelines_dir.display()
                );
            }
            let runtime = daemon::open_runtime(&cfg)?;
            let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            let result = rt.block_on(daemon::serve(
                &cfg,
                runtime,
                report.pipelines,
                report.jobs,
                CancellationToken::new(),
            ));
            // Work abandoned after the grace period (a Polars step of a batch) must not hold
            // the exit: its batch stays open in the catalog and is replayed by the next run.
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
            result?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Activity(args) => cli::activity(&cfg, args, data_dir_given),
        Command::Feedback(args) => cli::feedback(&cfg, args, data_dir_given),
        Command::Quota { command } => quota_command(&cfg, command),
        Command::Report { command } => report_command(&cfg, command),
        Command::Download(args) => cli::download(&cfg, args, data_dir_given),
        Command::Token { command } => {
            let catalog = Catalog::open(&cfg.catalog_path)?;
            match command {
                TokenCommand::Create {
                    role,
                    workspace,
                    label,
                } => {
                    let role: Role = role.parse().map_err(anyhow::Error::msg)?;
                    let issued = catalog.create_token(role, workspace.as_deref(), &label)?;
                    println!("{}", issued.secret);
                    eprintln!(
                        "token {} ({role}) created; it is shown only this once",
                        issued.info.id
                    );
                }
                TokenCommand::Revoke { id } => {
                    if !catalog.revoke_token(id)? {
                        bail!("no live token with id {id}");
                    }
                    eprintln!("token {id} revoked");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Backfill and rerun in this process: the daemon's scheduler rules (order, concurrency,
/// retries, source wait) over the catalog, progress printed as runs change state.
fn scheduled_command(
    cfg: &DaemonConfig,
    json: bool,
    submit: impl FnOnce(&std::sync::Arc<Jobs>) -> anyhow::Result<(String, Option<i64>)>,
) -> anyhow::Result<ExitCode> {
    let (pipelines, jobs) = select(cfg, None)?;
    let runtime = std::sync::Arc::new(daemon::open_runtime(cfg)?);
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(async {
        let cancel = CancellationToken::new();
        let tracker = tokio_util::task::TaskTracker::new();
        let jobs = Jobs::new(
            runtime,
            pipelines,
            jobs,
            Limits {
                max_concurrent_runs: cfg.max_concurrent_runs.get(),
                max_runs_per_workspace: cfg.max_runs_per_workspace.get(),
            },
            cancel.clone(),
            tracker.clone(),
        );
        let (name, first) = submit(&jobs)?;
        let Some(first) = first else {
            return Ok(ExitCode::SUCCESS);
        };
        let stop = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("interrupted: runs not started are recorded as cancelled");
                stop.cancel();
            }
        });
        let runs = jobs
            .follow(&name, first, |r| {
                if json {
                    if let Ok(line) = serde_json::to_string(r) {
                        println!("{line}");
                    }
                    return;
                }
                let period = r.period.as_deref().unwrap_or("-");
                match r.status.as_str() {
                    "succeeded" => println!(
                        "{name} {period}: run {} succeeded: {} rows from {} source rows",
                        r.id, r.rows_out, r.rows_in
                    ),
                    "queued" | "waiting" | "running" => {
                        println!("{name} {period}: run {} {}", r.id, r.status)
                    }
                    other => println!(
                        "{name} {period}: run {} {other}: {}",
                        r.id,
                        r.error.as_deref().unwrap_or("")
                    ),
                }
            })
            .await?;
        tracker.close();
        tracker.wait().await;
        // A period is done when its latest attempt succeeded.
        let mut last: std::collections::BTreeMap<String, &str> = Default::default();
        for r in &runs {
            last.insert(r.period.clone().unwrap_or_default(), r.status.as_str());
        }
        let failed = last.values().filter(|s| **s != "succeeded").count();
        if !json {
            println!(
                "{name}: {} period(s) succeeded, {failed} not",
                last.len() - failed
            );
        }
        Ok(if failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    })
}

fn print_quota(q: &QuotaStatus) {
    println!("workspace {}", q.workspace);
    match q.remaining {
        Some(remaining) => {
            println!("  purchased  {}", q.purchased);
            println!("  used       {}", q.used);
            println!("  remaining  {remaining}");
        }
        None => {
            println!("  remaining  unlimited (no purchase yet: clicks are counted, not charged)")
        }
    }
    println!("  staged     {} ({} clicks)", q.staged, q.staged_clicks);
    if let Some(oldest) = &q.oldest_staged {
        println!("  oldest staged record received at {oldest}");
    }
    if q.remaining == Some(0) {
        println!(
            "  quota exhausted: new records are staged; after a top-up they land and paused activities need `backflow activity switch ID on`"
        );
    }
}

fn quota_command(cfg: &DaemonConfig, command: QuotaCommand) -> anyhow::Result<ExitCode> {
    let catalog = Catalog::open(&cfg.catalog_path)?;
    match command {
        QuotaCommand::Add {
            workspace,
            clicks,
            note,
            json,
        } => {
            let q = catalog.add_quota(&workspace, clicks, "cli", note.as_deref())?;
            if json {
                println!("{}", serde_json::to_string(&q)?);
            } else {
                println!("added {clicks} click records");
                print_quota(&q);
            }
        }
        QuotaCommand::Show { workspace, json } => {
            let q = catalog.quota(&workspace)?;
            if json {
                println!("{}", serde_json::to_string(&q)?);
            } else {
                print_quota(&q);
            }
        }
        QuotaCommand::Usage {
            workspace,
            from,
            to,
            json,
        } => {
            let today = chrono::Utc::now()
                .with_timezone(&cfg.time_zone)
                .date_naive();
            let to = to.unwrap_or(today);
            let from = from.unwrap_or(to - chrono::Days::new(6));
            if from > to {
                bail!("--from {from} is after --to {to}");
            }
            let days = catalog.usage_by_day(&workspace, from, to)?;
            if json {
                println!("{}", serde_json::to_string(&days)?);
            } else {
                println!("day\tclicks");
                for d in &days {
                    println!("{}\t{}", d.day, d.clicks);
                }
                println!("total\t{}", days.iter().map(|d| d.clicks).sum::<u64>());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn report_command(cfg: &DaemonConfig, command: ReportCommand) -> anyhow::Result<ExitCode> {
    let runtime = daemon::open_runtime(cfg)?;
    let reports = backflow::report::Reports::from_runtime(&runtime);
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let mut out = std::io::stdout().lock();
    rt.block_on(backflow::report::cli::run(&reports, command, &mut out))?;
    Ok(ExitCode::SUCCESS)
}
