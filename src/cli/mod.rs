//! `backflow activity …` and `backflow feedback …`: monitoring activities and Tencent feedback
//! tasks, either through a running daemon's admin API (`--api URL` or `BACKFLOW_API`, with
//! `--token` or `BACKFLOW_TOKEN`) or, with `--data-dir` or without `--api`, straight in the
//! catalog of a stopped daemon. Both paths go through the same service
//! ([`backflow::collect::service`]) and print the same JSON.

mod client;
mod download;

pub use download::{DownloadArgs, download};

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use backflow::catalog::Catalog;
use backflow::collect::service::{
    ActivityInput, ActivityService, BatchInput, CsvFlavor, EditInput, FeedbackInput, RenameInput,
    Switch,
};
use backflow::config::daemon::DaemonConfig;
use backflow::daemon;

use client::ApiClient;

/// Where the commands go.
#[derive(Debug, Args)]
pub struct Remote {
    /// Admin API of a running daemon, e.g. http://127.0.0.1:8081 (default: the catalog under
    /// --data-dir, for a stopped daemon; --data-dir wins when both are given).
    #[arg(long, env = "BACKFLOW_API", global = true)]
    api: Option<String>,
    /// Bearer token for --api.
    #[arg(long, env = "BACKFLOW_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
}

#[derive(Debug, Args)]
pub struct ActivityArgs {
    #[command(flatten)]
    remote: Remote,
    #[command(subcommand)]
    command: ActivityCommand,
}

#[derive(Debug, Args)]
pub struct FeedbackArgs {
    #[command(flatten)]
    remote: Remote,
    #[command(subcommand)]
    command: FeedbackCommand,
}

/// The fields every new activity of a command shares.
#[derive(Debug, Args)]
struct Shared {
    #[arg(long)]
    workspace: String,
    /// Activity group; created if new.
    #[arg(long)]
    group: String,
    /// Media id from schemas/media.yaml, e.g. ocean_engine, tencent_ads, kuaishou.
    #[arg(long)]
    channel: String,
    /// Ad format (广告格式).
    #[arg(long)]
    format: String,
    /// Landing URL a click redirects to (http or https).
    #[arg(long)]
    landing: Option<String>,
    /// Third-party impression monitoring URL (up to 3).
    #[arg(long = "third-party-impression")]
    third_party_impression: Vec<String>,
    /// Third-party click monitoring URL (up to 3).
    #[arg(long = "third-party-click")]
    third_party_click: Vec<String>,
    /// One of the media's alternative link templates (see schemas/media.yaml), e.g.
    /// tencent_feedback, miaozhen, oppo_store; default: the media's own.
    #[arg(long)]
    template: Option<String>,
}

#[derive(Debug, Subcommand)]
enum ActivityCommand {
    /// Create an activity (enabled) with one impression and one click link.
    Create {
        #[command(flatten)]
        shared: Shared,
        #[arg(long)]
        name: String,
        /// Print the created activity as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create one activity per name, sharing every other field; all or nothing.
    BatchCreate {
        #[command(flatten)]
        shared: Shared,
        /// Activity name (repeat the flag for each activity).
        #[arg(long = "name")]
        names: Vec<String>,
        /// A file with one activity name per line (blank lines skipped).
        #[arg(long)]
        names_file: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// List the activities of a workspace with status, links and counters.
    List {
        #[arg(long)]
        workspace: String,
        #[arg(long)]
        json: bool,
    },
    /// Show one activity with its links (提取链接).
    Show {
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Export the links of a workspace's activities as CSV on stdout.
    Links {
        #[arg(long)]
        workspace: String,
        /// CSV (the only format; the flag keeps scripts explicit).
        #[arg(long)]
        csv: bool,
        /// Excel flavor: UTF-8 byte-order mark, formula-like cells prefixed with `'`.
        #[arg(long)]
        excel: bool,
        /// Only these activity ids (comma-separated).
        #[arg(long, value_delimiter = ',')]
        ids: Vec<i64>,
    },
    /// Edit an activity: name, ad format, landing URL, third-party URLs (channel, group and
    /// template are fixed).
    Edit {
        id: i64,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        format: Option<String>,
        #[arg(long, conflicts_with = "no_landing")]
        landing: Option<String>,
        /// Remove the landing URL (clicks then answer 204).
        #[arg(long)]
        no_landing: bool,
        /// Replace the third-party impression URLs (repeat for each).
        #[arg(long = "third-party-impression")]
        third_party_impression: Vec<String>,
        /// Remove every third-party impression URL.
        #[arg(long, conflicts_with = "third_party_impression")]
        no_third_party_impression: bool,
        /// Replace the third-party click URLs (repeat for each).
        #[arg(long = "third-party-click")]
        third_party_click: Vec<String>,
        /// Remove every third-party click URL.
        #[arg(long, conflicts_with = "third_party_click")]
        no_third_party_click: bool,
        #[arg(long)]
        json: bool,
    },
    /// Switch an activity on or off.
    Switch {
        id: i64,
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
}

#[derive(Debug, Subcommand)]
enum FeedbackCommand {
    /// Create a Tencent feedback task; it is not enabled until switched on.
    Create {
        #[arg(long)]
        workspace: String,
        #[arg(long)]
        name: String,
        /// Media with a feedback protocol (default tencent_ads).
        #[arg(long)]
        channel: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List the feedback tasks of a workspace with their Feedback URLs.
    List {
        #[arg(long)]
        workspace: String,
        #[arg(long)]
        json: bool,
    },
    /// Rename a feedback task.
    Rename {
        id: i64,
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Switch a feedback task on or off.
    Switch {
        id: i64,
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
}

/// Either side of the CLI: the admin API, or the catalog directly.
enum Backend {
    Api(ApiClient),
    Direct(ActivityService),
}

const ACTOR: &str = "cli";

fn backend(cfg: &DaemonConfig, remote: &Remote, data_dir_given: bool) -> anyhow::Result<Backend> {
    match api_client(remote, data_dir_given)? {
        Some(api) => Ok(Backend::Api(api)),
        None => {
            let catalog = Arc::new(Catalog::open(&cfg.catalog_path)?);
            let registry = Arc::new(daemon::load_registry(cfg)?);
            let signer = Arc::new(daemon::link_signer(cfg)?);
            Ok(Backend::Direct(ActivityService::new(
                catalog,
                registry,
                signer,
                cfg.public_base_url.clone(),
                None,
            )))
        }
    }
}

/// The admin API client when `--api` is given (and `--data-dir` is not).
fn api_client(remote: &Remote, data_dir_given: bool) -> anyhow::Result<Option<ApiClient>> {
    match &remote.api {
        Some(api) if !data_dir_given => {
            let token = remote
                .token
                .clone()
                .context("--api needs a token: --token or BACKFLOW_TOKEN")?;
            Ok(Some(ApiClient::new(api, token)?))
        }
        _ => Ok(None),
    }
}

fn switch_of(state: &str) -> Switch {
    if state == "on" {
        Switch::On
    } else {
        Switch::Off
    }
}

fn value(v: impl serde::Serialize) -> anyhow::Result<Value> {
    Ok(serde_json::to_value(v)?)
}

/// The array under `key` of an API answer.
fn unwrap_list(mut v: Value, key: &str) -> Value {
    v.get_mut(key)
        .map(Value::take)
        .unwrap_or(Value::Array(vec![]))
}

fn activity_input(shared: &Shared, name: String) -> ActivityInput {
    ActivityInput {
        name,
        group: shared.group.clone(),
        channel: shared.channel.clone(),
        ad_format: shared.format.clone(),
        landing_url: shared.landing.clone(),
        third_party_impression: shared.third_party_impression.clone(),
        third_party_click: shared.third_party_click.clone(),
        template: shared.template.clone(),
    }
}

fn input_json(input: &ActivityInput) -> Value {
    json!({
        "name": input.name,
        "group": input.group,
        "channel": input.channel,
        "ad_format": input.ad_format,
        "landing_url": input.landing_url,
        "third_party_impression": input.third_party_impression,
        "third_party_click": input.third_party_click,
        "template": input.template,
    })
}

fn print_activity(a: &Value, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        println!("{}", serde_json::to_string(a)?);
    } else {
        println!(
            "activity {} `{}` ({})",
            a["id"],
            a["name"].as_str().unwrap_or_default(),
            a["status"].as_str().unwrap_or_default()
        );
        println!(
            "  impression: {}",
            a["impression_url"].as_str().unwrap_or_default()
        );
        println!(
            "  click:      {}",
            a["click_url"].as_str().unwrap_or_default()
        );
        if let Some(chained) = a["chained_click_url"].as_str() {
            println!("  chained click (third party's link wrapping ours): {chained}");
        }
    }
    Ok(())
}

fn print_task(t: &Value, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        println!("{}", serde_json::to_string(t)?);
    } else {
        println!(
            "{}\t{}\t{}\t{}",
            t["id"],
            t["status"].as_str().unwrap_or_default(),
            t["name"].as_str().unwrap_or_default(),
            t["feedback_url"].as_str().unwrap_or_default()
        );
    }
    Ok(())
}

/// `backflow activity …`.
pub fn activity(
    cfg: &DaemonConfig,
    args: ActivityArgs,
    data_dir_given: bool,
) -> anyhow::Result<ExitCode> {
    let backend = backend(cfg, &args.remote, data_dir_given)?;
    match args.command {
        ActivityCommand::Create { shared, name, json } => {
            let input = activity_input(&shared, name);
            let created = match &backend {
                Backend::Api(api) => api.post(
                    &["workspaces", &shared.workspace, "activities"],
                    &input_json(&input),
                )?,
                Backend::Direct(s) => value(s.create(&shared.workspace, input, ACTOR)?)?,
            };
            print_activity(&created, json)?;
        }
        ActivityCommand::BatchCreate {
            shared,
            mut names,
            names_file,
            json,
        } => {
            if let Some(path) = names_file {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                names.extend(
                    text.lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(str::to_string),
                );
            }
            if names.is_empty() {
                bail!("no activity names: give --name (repeatable) or --names-file");
            }
            let one = activity_input(&shared, String::new());
            let created = match &backend {
                Backend::Api(api) => {
                    let mut body = input_json(&one);
                    if let Some(o) = body.as_object_mut() {
                        o.remove("name");
                        o.insert("names".into(), json!(names));
                    }
                    unwrap_list(
                        api.post(
                            &["workspaces", &shared.workspace, "activities", "batch"],
                            &body,
                        )?,
                        "activities",
                    )
                }
                Backend::Direct(s) => {
                    let input = BatchInput {
                        names,
                        group: one.group,
                        channel: one.channel,
                        ad_format: one.ad_format,
                        landing_url: one.landing_url,
                        third_party_impression: one.third_party_impression,
                        third_party_click: one.third_party_click,
                        template: one.template,
                    };
                    value(s.create_batch(&shared.workspace, input, ACTOR)?)?
                }
            };
            if json {
                println!("{}", serde_json::to_string(&created)?);
            } else {
                for a in created.as_array().into_iter().flatten() {
                    print_activity(a, false)?;
                }
            }
        }
        ActivityCommand::List { workspace, json } => {
            let all = match &backend {
                Backend::Api(api) => unwrap_list(
                    api.get(&["workspaces", &workspace, "activities"], &[])?,
                    "activities",
                ),
                Backend::Direct(s) => value(s.list(&workspace)?)?,
            };
            if json {
                println!("{}", serde_json::to_string(&all)?);
            } else {
                for a in all.as_array().into_iter().flatten() {
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{} impressions, {} clicks, {} dedup clicks",
                        a["id"],
                        a["status"].as_str().unwrap_or_default(),
                        a["channel"].as_str().unwrap_or_default(),
                        a["group"].as_str().unwrap_or_default(),
                        a["name"].as_str().unwrap_or_default(),
                        a["totals"]["impressions"],
                        a["totals"]["clicks"],
                        a["totals"]["dedup_clicks"],
                    );
                }
            }
        }
        ActivityCommand::Show { id, json } => {
            let a = match &backend {
                Backend::Api(api) => api.get(&["activities", &id.to_string()], &[])?,
                Backend::Direct(s) => value(s.get(id, None)?)?,
            };
            print_activity(&a, json)?;
        }
        ActivityCommand::Links {
            workspace,
            csv: _,
            excel,
            ids,
        } => {
            let ids = (!ids.is_empty()).then_some(ids);
            let flavor = if excel {
                CsvFlavor::Excel
            } else {
                CsvFlavor::Plain
            };
            let bytes = match &backend {
                Backend::Api(api) => {
                    let mut query =
                        vec![("format", if excel { "excel" } else { "plain" }.to_string())];
                    if let Some(ids) = &ids {
                        let list: Vec<String> = ids.iter().map(i64::to_string).collect();
                        query.push(("ids", list.join(",")));
                    }
                    api.get_bytes(
                        &["workspaces", &workspace, "activities", "links.csv"],
                        &query,
                    )?
                }
                Backend::Direct(s) => s.links_csv(&workspace, ids.as_deref(), flavor)?,
            };
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            out.write_all(&bytes)?;
            out.flush()?;
        }
        ActivityCommand::Edit {
            id,
            name,
            format,
            landing,
            no_landing,
            third_party_impression,
            no_third_party_impression,
            third_party_click,
            no_third_party_click,
            json,
        } => {
            let list = |urls: Vec<String>, clear: bool| (clear || !urls.is_empty()).then_some(urls);
            let input = EditInput {
                name,
                ad_format: format,
                landing_url: if no_landing {
                    Some(None)
                } else {
                    landing.map(Some)
                },
                third_party_impression: list(third_party_impression, no_third_party_impression),
                third_party_click: list(third_party_click, no_third_party_click),
                ..EditInput::default()
            };
            let edited = match &backend {
                Backend::Api(api) => {
                    let mut body = serde_json::Map::new();
                    if let Some(v) = &input.name {
                        body.insert("name".into(), json!(v));
                    }
                    if let Some(v) = &input.ad_format {
                        body.insert("ad_format".into(), json!(v));
                    }
                    if let Some(v) = &input.landing_url {
                        body.insert("landing_url".into(), json!(v));
                    }
                    if let Some(v) = &input.third_party_impression {
                        body.insert("third_party_impression".into(), json!(v));
                    }
                    if let Some(v) = &input.third_party_click {
                        body.insert("third_party_click".into(), json!(v));
                    }
                    api.patch(&["activities", &id.to_string()], &Value::Object(body))?
                }
                Backend::Direct(s) => value(s.edit(id, input, None, ACTOR)?)?,
            };
            print_activity(&edited, json)?;
        }
        ActivityCommand::Switch { id, state } => {
            let to = switch_of(&state);
            let a = match &backend {
                Backend::Api(api) => api.post(
                    &["activities", &id.to_string(), "switch"],
                    &json!({ "status": state }),
                )?,
                Backend::Direct(s) => value(s.switch(id, to, None, ACTOR)?)?,
            };
            println!(
                "activity {} is {}",
                a["id"],
                a["status"].as_str().unwrap_or_default()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `backflow feedback …`.
pub fn feedback(
    cfg: &DaemonConfig,
    args: FeedbackArgs,
    data_dir_given: bool,
) -> anyhow::Result<ExitCode> {
    let backend = backend(cfg, &args.remote, data_dir_given)?;
    match args.command {
        FeedbackCommand::Create {
            workspace,
            name,
            channel,
            json,
        } => {
            let t = match &backend {
                Backend::Api(api) => api.post(
                    &["workspaces", &workspace, "feedback-tasks"],
                    &json!({ "name": name, "channel": channel }),
                )?,
                Backend::Direct(s) => {
                    value(s.create_feedback(&workspace, FeedbackInput { name, channel }, ACTOR)?)?
                }
            };
            print_task(&t, json)?;
        }
        FeedbackCommand::List { workspace, json } => {
            let all = match &backend {
                Backend::Api(api) => unwrap_list(
                    api.get(&["workspaces", &workspace, "feedback-tasks"], &[])?,
                    "feedback_tasks",
                ),
                Backend::Direct(s) => value(s.list_feedback(&workspace)?)?,
            };
            if json {
                println!("{}", serde_json::to_string(&all)?);
            } else {
                for t in all.as_array().into_iter().flatten() {
                    print_task(t, false)?;
                }
            }
        }
        FeedbackCommand::Rename { id, name, json } => {
            let t = match &backend {
                Backend::Api(api) => api.patch(
                    &["feedback-tasks", &id.to_string()],
                    &json!({ "name": name }),
                )?,
                Backend::Direct(s) => {
                    value(s.rename_feedback(id, RenameInput { name }, None, ACTOR)?)?
                }
            };
            print_task(&t, json)?;
        }
        FeedbackCommand::Switch { id, state } => {
            let to = switch_of(&state);
            let t = match &backend {
                Backend::Api(api) => api.post(
                    &["feedback-tasks", &id.to_string(), "switch"],
                    &json!({ "status": state }),
                )?,
                Backend::Direct(s) => value(s.switch_feedback(id, to, None, ACTOR)?)?,
            };
            println!(
                "feedback task {} is {}",
                t["id"],
                t["status"].as_str().unwrap_or_default()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
