//! The `ebb` command line.

use crate::api::views::TriggerBody;
use crate::client::Backend;
use crate::output;
use crate::run::rows::{RowFilter, RowsFormat};
use crate::runtime;
use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use ebb_shared::config::Config;
use ebb_shared::protocol::RowOutcome;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "ebb",
    version,
    about = "Ebb: reverse ETL you run yourself. Sends the rows of a warehouse model that changed since the last run to CRMs, ad platforms, webhooks and databases.",
    long_about = None,
    after_help = "Start here:\n  ebb quickstart                       a first sync on embedded defaults, twice\n  ebb sync run SYNC --config ebb.yaml  one run of a sync from your config, in this process\n  ebb standalone --config ebb.yaml     coordinator, workers, scheduler and API in one process\n\nEvery flag can also be set by the EBB_* environment variable named in its help."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a first sync on embedded defaults: a CSV model into a JSON-lines file, then a second run that sends only what changed.
    Quickstart {
        /// Where to write the example's files (replaced on every run).
        #[arg(long, default_value = "ebb-quickstart", env = "EBB_QUICKSTART_DIR")]
        dir: PathBuf,
    },
    /// Coordinator, workers, scheduler and API in one process, on SQLite, an in-process queue and a local directory.
    Standalone {
        #[command(flatten)]
        config: ConfigArgs,
        /// Address of the REST API, /healthz and /metrics.
        #[arg(long, default_value = "127.0.0.1:8080", env = "EBB_LISTEN")]
        listen: String,
        /// Workers to run inside this process.
        #[arg(long, default_value_t = 2, env = "EBB_WORKERS")]
        workers: usize,
    },
    /// The coordinator of a fleet: plans runs, commits results, serves the API. Needs PostgreSQL and RabbitMQ.
    Coordinator {
        #[command(flatten)]
        config: ConfigArgs,
        /// State store: postgres://… (or sqlite://PATH for a single host).
        #[arg(long, env = "EBB_STATE_URL")]
        state_url: String,
        #[command(flatten)]
        queue: QueueArgs,
        #[arg(long, default_value = "0.0.0.0:8080", env = "EBB_LISTEN")]
        listen: String,
        /// The workers' object store (as they are given it), to serve every row's result
        /// (`ebb runs rows`); without it only samples of rejected and invalid rows are kept.
        #[arg(long, env = "EBB_STORE_URL")]
        store_url: Option<String>,
    },
    /// A stateless worker of a fleet: extracts, diffs and delivers. Start as many as you like, on any hosts.
    Worker {
        #[command(flatten)]
        queue: QueueArgs,
        /// Object store shared by the fleet: s3://bucket/prefix?endpoint=… (or a directory all workers share).
        #[arg(long, env = "EBB_STORE_URL")]
        store_url: String,
        /// The coordinator's API, for fleet-wide delivery leases.
        #[arg(long, env = "EBB_COORDINATOR_URL")]
        coordinator_url: String,
        /// This worker's name in logs and leases (default: host name and process id).
        #[arg(long, env = "EBB_WORKER_ID")]
        worker_id: Option<String>,
        /// Tasks this worker runs at once.
        #[arg(long, default_value_t = 2, env = "EBB_WORKER_CONCURRENCY")]
        concurrency: usize,
    },
    /// Syncs: run one now, or list them.
    #[command(subcommand)]
    Sync(SyncCommand),
    /// Runs of a sync: list them, show one, or look at its rows.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Check a config file (or directory) without running anything.
    Check {
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Subcommand)]
enum SyncCommand {
    /// Trigger a run, follow it with a progress bar and print its summary. Exit code 0 on success or warning, 1 otherwise.
    Run {
        /// The sync's name in the config.
        sync: String,
        /// Send every row, ignoring what earlier runs sent.
        #[arg(long)]
        full_resync: bool,
        /// Mark every row as synced without sending anything.
        #[arg(long, conflicts_with = "full_resync")]
        reset_cdc: bool,
        /// Print the summary as JSON (the API's run object).
        #[arg(long)]
        json: bool,
        /// Do not draw the progress bar.
        #[arg(long)]
        no_progress: bool,
        #[command(flatten)]
        target: Target,
    },
    /// List the syncs of a config.
    List {
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Subcommand)]
enum RunsCommand {
    /// The latest runs of a sync.
    List {
        sync: String,
        #[arg(long, default_value_t = 20)]
        limit: i64,
        #[command(flatten)]
        target: Target,
    },
    /// One run's status and counts.
    Show {
        run: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Every row a run planned (and every invalid one) with its outcome: search by key, filter, export.
    ///
    /// Examples:
    ///   ebb runs rows RUN --failed                  the rows the destination rejected, and why
    ///   ebb runs rows RUN --key 42                  what became of row 42
    ///   ebb runs rows RUN --format csv > rows.csv   export every row
    Rows {
        run: String,
        /// Only the rows that failed (the destination or the mapping rejected them).
        #[arg(long, conflicts_with = "outcome")]
        failed: bool,
        /// Only rows with this outcome: succeeded, failed or invalid.
        #[arg(long, value_parser = ["succeeded", "failed", "invalid"])]
        outcome: Option<String>,
        /// Only the row with this primary key.
        #[arg(long)]
        key: Option<String>,
        /// At most this many rows (table: 100 unless said; jsonl and csv: all unless said).
        #[arg(long)]
        limit: Option<u64>,
        /// table (for reading), jsonl or csv (for export; every row, streamed).
        #[arg(long, default_value = "table", value_parser = ["table", "jsonl", "csv"])]
        format: String,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Args, Clone)]
struct QueueArgs {
    /// RabbitMQ: amqp://user:password@host:5672/vhost
    #[arg(long, env = "EBB_QUEUE_URL")]
    queue_url: String,
    /// Prefix of Ebb's queue names, for installations sharing one broker.
    #[arg(long, default_value = "", env = "EBB_QUEUE_PREFIX")]
    queue_prefix: String,
}

impl QueueArgs {
    fn settings(&self) -> runtime::QueueSettings {
        runtime::QueueSettings {
            url: self.queue_url.clone(),
            prefix: self.queue_prefix.clone(),
        }
    }
}

#[derive(Args, Clone)]
struct ConfigArgs {
    /// Config file or directory of YAML files.
    #[arg(long, short = 'c', default_value = "ebb.yaml", env = "EBB_CONFIG")]
    config: PathBuf,
    /// Where embedded runs keep their state and objects (default: .ebb beside the config).
    #[arg(long, env = "EBB_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

/// Where CLI commands act: a running coordinator's API, or an embedded runtime
/// on a config file.
#[derive(Args, Clone)]
struct Target {
    /// A coordinator's API (e.g. http://127.0.0.1:8080); without it, Ebb runs embedded on --config.
    #[arg(long, env = "EBB_API_URL")]
    api_url: Option<String>,
    /// Bearer token for the API.
    #[arg(long, env = "EBB_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    #[command(flatten)]
    config: ConfigArgs,
}

impl ConfigArgs {
    fn load(&self) -> anyhow::Result<Arc<Config>> {
        if !self.config.exists() {
            bail!(
                "config {} not found: pass --config PATH (or set EBB_CONFIG); `ebb quickstart` writes an example",
                self.config.display()
            );
        }
        let config = Config::load(&self.config)?;
        ebb_worker::mapping::check_templates(&config)
            .map_err(|reason| anyhow::anyhow!("{}: {reason}", self.config.display()))?;
        Ok(Arc::new(config))
    }

    fn data_dir(&self) -> PathBuf {
        if let Some(dir) = &self.data_dir {
            return dir.clone();
        }
        let base = if self.config.is_dir() {
            self.config.clone()
        } else {
            self.config.parent().map(Path::to_path_buf).unwrap_or_default()
        };
        base.join(".ebb")
    }
}

impl Target {
    async fn backend(&self) -> anyhow::Result<Backend> {
        if let Some(url) = &self.api_url {
            return Ok(Backend::remote(url, self.api_token.clone()));
        }
        let config = self.config.load()?;
        let runtime = runtime::start_embedded(config, &self.config.data_dir(), 2, 2).await?;
        Ok(Backend::Embedded(runtime))
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let long_running = matches!(
        cli.command,
        Command::Standalone { .. } | Command::Coordinator { .. } | Command::Worker { .. }
    );
    let service = match cli.command {
        Command::Coordinator { .. } => "ebb-coordinator",
        Command::Worker { .. } => "ebb-worker",
        _ => "ebb",
    };
    // Dropped last, after the runtime: flushes the spans still buffered.
    let _telemetry = ebb_shared::telemetry::init(service, if long_running { "info" } else { "warn" });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime starts");
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler installs");
        tokio::select! {
            _ = ctrl_c => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Runs a coordinator's scheduler and API until SIGTERM or Ctrl-C, then stops
/// gracefully: tasks in flight finish, unfinished ones go back to the queue.
async fn serve_until_signal(mut runtime: runtime::Runtime, listen: &str) -> anyhow::Result<ExitCode> {
    runtime.start_scheduler();
    let state = crate::api::ApiState {
        coordinator: runtime.coordinator.clone().expect("a coordinator runs here"),
        leases: runtime.leases.clone(),
        token: std::env::var("EBB_API_TOKEN").ok().filter(|t| !t.is_empty()),
    };
    let server = serve(listen, state).await?;
    shutdown_signal().await;
    tracing::info!("shutting down");
    server.abort();
    runtime.shutdown(Duration::from_secs(30)).await;
    Ok(ExitCode::SUCCESS)
}

async fn serve(listen: &str, state: crate::api::ApiState) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (set --listen or EBB_LISTEN)"))?;
    tracing::info!(address = %listener.local_addr()?, "API listening");
    let router = crate::api::router(state);
    Ok(tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::error!(%error, "API server stopped");
        }
    }))
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Quickstart { dir } => crate::quickstart::run(&dir).await,
        Command::Check { config } => {
            let loaded = config.load()?;
            println!(
                "{}: {} sources, {} models, {} destinations, {} syncs — OK",
                config.config.display(),
                loaded.sources.len(),
                loaded.models.len(),
                loaded.destinations.len(),
                loaded.syncs.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Standalone {
            config,
            listen,
            workers,
        } => {
            let loaded = config.load()?;
            let runtime = runtime::start_embedded(loaded, &config.data_dir(), workers.max(1), 2).await?;
            serve_until_signal(runtime, &listen).await
        }
        Command::Coordinator {
            config,
            state_url,
            queue,
            listen,
            store_url,
        } => {
            let loaded = config.load()?;
            let runtime =
                runtime::start_coordinator(loaded, &state_url, &queue.settings(), store_url.as_deref()).await?;
            serve_until_signal(runtime, &listen).await
        }
        Command::Worker {
            queue,
            store_url,
            coordinator_url,
            worker_id,
            concurrency,
        } => {
            let worker_id = worker_id.unwrap_or_else(|| {
                let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
                format!("{host}-{}", std::process::id())
            });
            let runtime = runtime::start_worker(
                &worker_id,
                &queue.settings(),
                &store_url,
                &coordinator_url,
                concurrency.max(1),
            )
            .await?;
            shutdown_signal().await;
            tracing::info!("shutting down; finishing tasks in flight");
            runtime.shutdown(Duration::from_secs(60)).await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sync(SyncCommand::List { config }) => {
            let loaded = config.load()?;
            for (name, sync) in &loaded.syncs {
                let schedule = sync
                    .schedule
                    .as_ref()
                    .map(|s| format!("every {}", humantime::format_duration(s.every)))
                    .unwrap_or_else(|| "manual".into());
                println!(
                    "{name:<30} {} → {} ({}, {schedule})",
                    sync.model, sync.destination, sync.mode
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Sync(SyncCommand::Run {
            sync,
            full_resync,
            reset_cdc,
            json,
            no_progress,
            target,
        }) => {
            let backend = target.backend().await?;
            let result = async {
                let run_id = backend.trigger(&sync, TriggerBody { full_resync, reset_cdc }).await?;
                output::follow(&backend, &run_id, !no_progress && !json).await
            }
            .await;
            backend.close().await;
            let run = result?;
            if json {
                println!("{}", serde_json::to_string_pretty(&run)?);
            } else {
                print!("{}", output::summary(&run));
            }
            Ok(match run.status.as_str() {
                "success" | "warning" => ExitCode::SUCCESS,
                _ => ExitCode::from(1),
            })
        }
        Command::Runs(RunsCommand::List { sync, limit, target }) => {
            let backend = target.backend().await?;
            let runs = backend.runs(&sync, limit).await;
            backend.close().await;
            print!("{}", output::runs_table(&runs?));
            Ok(ExitCode::SUCCESS)
        }
        Command::Runs(RunsCommand::Show { run, json, target }) => {
            let backend = target.backend().await?;
            let view = backend.run(&run).await;
            backend.close().await;
            let view = view?;
            if json {
                println!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                print!("{}", output::summary(&view));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Runs(RunsCommand::Rows {
            run,
            failed,
            outcome,
            key,
            limit,
            format,
            target,
        }) => {
            let outcome = if failed {
                Some(RowOutcome::Failed)
            } else {
                outcome.as_deref().and_then(RowOutcome::parse)
            };
            let filter = RowFilter { outcome, key, limit };
            let backend = target.backend().await?;
            let result = match format.as_str() {
                "table" => backend
                    .rows(&run, filter)
                    .await
                    .map(|rows| print!("{}", output::rows_table(&rows))),
                export => {
                    let format = RowsFormat::parse(export).map_err(|e| anyhow::anyhow!(e))?;
                    let mut stdout = std::io::BufWriter::new(std::io::stdout());
                    let written = backend.write_rows(&run, filter, format, &mut stdout).await;
                    written.and_then(|_| Ok(std::io::Write::flush(&mut stdout)?))
                }
            };
            backend.close().await;
            result?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
