//! The `ebb` command line.

use crate::api::views::{List, RunView, SyncView, TriggerBody};
use crate::client::Backend;
use crate::janitor::GcSettings;
use crate::output;
use crate::run::rows::{RowFilter, RowsFormat};
use crate::runtime;
use anyhow::Context;
use clap::{Args, CommandFactory, Parser, Subcommand};
use ebb_shared::config::{Config, ConfigError, ConfigErrors};
use ebb_shared::protocol::RowOutcome;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// `ebb --version`: the crate version and the commit it was built from.
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("EBB_COMMIT"), ")");

const AFTER_HELP: &str = "\
Start here:
  ebb quickstart                       a first sync on embedded defaults, twice
  ebb check --config ebb.yaml --connect   every mistake of a config, before a run
  ebb sync run SYNC --config ebb.yaml  one run of a sync from your config, in this process
  ebb standalone --config ebb.yaml     coordinator, workers, scheduler and API in one process

Every option that takes a value can also be set by the EBB_* variable named in its help.

Environment:
  EBB_LOG                      which logs to print (as --log): `debug`, or `ebb_worker=debug,info`
  EBB_LOG_FORMAT               text or json (as --log-format)
  OTEL_EXPORTER_OTLP_ENDPOINT  export OpenTelemetry traces over OTLP/HTTP to this collector
                               (OTEL_SERVICE_NAME and the other OTEL_* settings apply as usual)

Exit status:
  0  done (a run that ended in success or warning)
  1  the run ended failed, cancelled or interrupted; `ebb destination test` could not reach it
  2  usage error: an unknown command or option, a missing argument
  3  the config is invalid, or `ebb check` found problems
  4  any other error: a coordinator or service out of reach, a file that cannot be written";

/// Exit statuses, as `ebb --help` documents them.
pub mod exit {
    pub const RUN_NOT_SUCCESSFUL: u8 = 1;
    pub const CONFIG: u8 = 3;
    pub const OTHER: u8 = 4;
}

#[derive(Parser)]
#[command(
    name = "ebb",
    version = VERSION,
    about = "Ebb: reverse ETL you run yourself. Sends the rows of a warehouse model that changed since the last run to CRMs, ad platforms, webhooks and databases.",
    long_about = None,
    after_help = AFTER_HELP
)]
struct Cli {
    #[command(flatten)]
    logs: LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct LogArgs {
    /// Which logs to print: a level (error, warn, info, debug, trace) or directives such as
    /// `ebb_worker=debug,info`. Default: info for services, warn for one-shot commands.
    #[arg(long = "log", global = true, env = "EBB_LOG", value_name = "FILTER")]
    log: Option<String>,
    /// How log lines look on standard error: text or json. Default: text for one-shot commands
    /// (so logs never mix JSON into what a command prints); for services JSON, or text on a terminal.
    #[arg(long, global = true, env = "EBB_LOG_FORMAT", value_parser = ["text", "json"], value_name = "FORMAT")]
    log_format: Option<String>,
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
        /// Address of the REST API, /healthz and /metrics. Off loopback, EBB_API_TOKEN must be set.
        #[arg(long, default_value = "127.0.0.1:8080", env = "EBB_LISTEN")]
        listen: String,
        #[command(flatten)]
        serving: ServeArgs,
        /// Workers to run inside this process.
        #[arg(long, default_value_t = 2, env = "EBB_WORKERS")]
        workers: usize,
        #[command(flatten)]
        gc: GcArgs,
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
        /// Address of the REST API, /healthz and /metrics. Off loopback, EBB_API_TOKEN (for /api) and
        /// EBB_INTERNAL_TOKEN (for workers, which are given the same) must be set.
        #[arg(long, default_value = "0.0.0.0:8080", env = "EBB_LISTEN")]
        listen: String,
        #[command(flatten)]
        serving: ServeArgs,
        /// The workers' object store (as they are given it), to serve every row's result
        /// (`ebb runs rows`); without it only samples of rejected and invalid rows are kept.
        #[arg(long, env = "EBB_STORE_URL")]
        store_url: Option<String>,
        /// Where this coordinator's API answers for workers, when it leads (default: from --listen and HOSTNAME).
        /// Run two or more coordinators on one state DB for high availability: one leads, the others stand by.
        #[arg(long, env = "EBB_ADVERTISE_URL", value_name = "URL")]
        advertise_url: Option<String>,
        #[command(flatten)]
        gc: GcArgs,
    },
    /// A stateless worker of a fleet: extracts, diffs and delivers. Start as many as you like, on any hosts.
    Worker {
        #[command(flatten)]
        queue: QueueArgs,
        /// Object store shared by the fleet: s3://bucket/prefix?endpoint=… (or a directory all workers share).
        #[arg(long, env = "EBB_STORE_URL")]
        store_url: String,
        /// The coordinator's API, for fleet-wide delivery leases: one URL (a Service), or every replica's, comma-separated.
        /// Calls carry EBB_INTERNAL_TOKEN (the coordinator's) from the environment.
        #[arg(long, env = "EBB_COORDINATOR_URL")]
        coordinator_url: String,
        /// This worker's name in logs and leases (default: host name and process id).
        #[arg(long, env = "EBB_WORKER_ID")]
        worker_id: Option<String>,
        /// Tasks this worker runs at once.
        #[arg(long, default_value_t = 2, env = "EBB_WORKER_CONCURRENCY")]
        concurrency: usize,
        /// Serve /healthz, /readyz (the queue answers) and /metrics on this address (e.g. 0.0.0.0:9090).
        #[arg(long, env = "EBB_WORKER_LISTEN")]
        listen: Option<String>,
    },
    /// Syncs: run one now, or list them.
    #[command(subcommand)]
    Sync(SyncCommand),
    /// Runs of a sync: list them, show one, or look at its rows.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Sources: reach one without reading a model.
    #[command(subcommand)]
    Source(SourceCommand),
    /// Models: look at the rows a model reads before syncing them, or import dbt models.
    #[command(subcommand, visible_alias = "models")]
    Model(ModelCommand),
    /// Destinations: reach one without changing anything, or list the fields its records may have.
    #[command(subcommand)]
    Destination(DestinationCommand),
    /// Check a config for mistakes without running anything; with --connect, against the real sources and destinations.
    ///
    /// Reports every problem at once, each with its file and line. Without --connect it checks the
    /// files, the environment variables they refer to and the local files of file sources. With
    /// --connect it also connects to every source and destination, prepares each model's query
    /// (reading no row), and checks the primary key and the mapped columns against the query and
    /// the mapped fields against the destination. Exit status 3 when anything is wrong.
    Check {
        #[command(flatten)]
        config: ConfigArgs,
        /// Also connect to every source and destination (alias: --deep).
        #[arg(long, visible_alias = "deep")]
        connect: bool,
        /// Print the result as JSON: {"ok": bool, "problems": [{"file", "line", "message"}]}.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script: `ebb completions bash > /etc/bash_completion.d/ebb`,
    /// `ebb completions zsh > "${fpath[1]}/_ebb"`, `ebb completions fish > ~/.config/fish/completions/ebb.fish`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum SourceCommand {
    /// Connect to a source and run `SELECT 1` (a file source: its directory exists). Exit status 1
    /// when it cannot be reached, with the source's own message.
    ///
    /// Runs where you run it, with this environment's variables (the ones the workers need).
    Test {
        /// The source's name in the config.
        name: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Subcommand)]
enum ModelCommand {
    /// The first rows of a model and its columns with their source types, as a sync would read
    /// them: check a query or a table model before a sync sends anything.
    ///
    /// Example: `ebb model preview customers --limit 20`. SQL models are asked for no more than
    /// --limit rows. Runs where you run it, with this environment's variables.
    Preview {
        /// The model's name in the config.
        name: String,
        /// At most this many rows (1 to 10,000).
        #[arg(long, default_value_t = 100, env = "EBB_PREVIEW_LIMIT",
              value_parser = clap::value_parser!(u64).range(1..=MAX_PREVIEW_ROWS))]
        limit: u64,
        /// Print {"columns": [{"name", "type"}], "rows": [{column: value}]}, as the API does.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Turn dbt models into Ebb models: reads dbt's target/manifest.json and writes a YAML file
    /// of models, each reading its dbt relation, keyed by the column dbt knows is unique.
    ///
    /// The key comes from the model's meta (`meta: {ebb: {primary_key: col}}`), else a
    /// primary_key constraint, else the one column with both `unique` and `not_null` tests.
    /// A model without one (or ephemeral) is refused by name with what to add; the others are
    /// still written, and the exit status is 3.
    ///
    /// Example: `ebb model import --dbt-manifest target/manifest.json --source warehouse --out models/dbt.yaml`
    Import {
        /// dbt's manifest, written by `dbt compile`, `dbt run` or `dbt build`.
        #[arg(long, value_name = "PATH", env = "EBB_DBT_MANIFEST")]
        dbt_manifest: PathBuf,
        /// The Ebb source the dbt project builds into (a name of your config's `sources`).
        #[arg(long, env = "EBB_DBT_SOURCE")]
        source: String,
        /// Only these dbt models (comma-separated names); default: every model.
        #[arg(long, value_delimiter = ',')]
        select: Vec<String>,
        /// Write the models to this file (replaced) instead of standard output.
        #[arg(long, value_name = "PATH")]
        out: Option<PathBuf>,
    },
}

/// The most rows a model preview shows (CLI and API).
pub const MAX_PREVIEW_ROWS: u64 = 10_000;

#[derive(Subcommand)]
enum DestinationCommand {
    /// Reach a destination without changing anything in it: its credentials, and the object, list
    /// or table its settings name. Exit status 1 when it cannot be reached.
    ///
    /// Runs where you run it, with this environment's variables (the ones the workers need).
    Test {
        /// The destination's name in the config.
        name: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// The fields a destination's records may have: name, type, whether it is unique (can match
    /// records: `record_matching.to`) and writable. Destinations that take any field say so.
    ///
    /// Example: `ebb destination fields hubspot companies` lists HubSpot's company properties.
    Fields {
        /// The destination's name in the config.
        name: String,
        /// The object to describe (HubSpot: contacts, companies, deals, 2-1234567); default: the configured one.
        object: Option<String>,
        /// Print JSON: {"data": [{"name", "type", "unique", "writable"}]}, or {"data": null} for any field.
        #[arg(long)]
        json: bool,
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
        /// Without --api-url, the run's process sweeps the data directory once
        /// it ended, as a standalone's janitor would.
        #[command(flatten)]
        gc: GcArgs,
    },
    /// List the syncs of a config, or of a running coordinator (--api-url).
    List {
        /// Print the list as JSON (the API's `{"data": [...]}`).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand)]
enum RunsCommand {
    /// The latest runs of a sync, newest first.
    List {
        /// The sync's name.
        sync: String,
        /// How many runs to show.
        #[arg(long, default_value_t = 20, env = "EBB_RUNS_LIMIT")]
        limit: i64,
        /// Print the runs as JSON (the API's `{"data": [...]}`).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// One run's status and counts.
    Show {
        /// The run's id (from `ebb runs list`).
        run: String,
        /// Print the run as JSON (the API's run object).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Cancel a run: it ends `cancelled`, and what it has not sent is not sent.
    Cancel {
        /// The run's id (from `ebb runs list`).
        run: String,
        /// Print the run as JSON (the API's run object).
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
    #[command(verbatim_doc_comment)]
    Rows {
        /// The run's id (from `ebb runs list`).
        run: String,
        /// Only the rows that failed (the destination or the mapping rejected them).
        #[arg(long, conflicts_with = "outcome")]
        failed: bool,
        /// Only rows with this outcome: succeeded, failed or invalid.
        #[arg(long, value_parser = ["succeeded", "failed", "invalid"], env = "EBB_ROWS_OUTCOME")]
        outcome: Option<String>,
        /// Only the row with this primary key.
        #[arg(long)]
        key: Option<String>,
        /// At most this many rows (table and --json: 100 unless said; jsonl and csv: all unless said).
        #[arg(long, env = "EBB_ROWS_LIMIT")]
        limit: Option<u64>,
        /// table (for reading), jsonl or csv (for export; every row, streamed).
        #[arg(long, default_value = "table", value_parser = ["table", "jsonl", "csv"], env = "EBB_ROWS_FORMAT")]
        format: String,
        /// Print the rows as one JSON object: {"data": [...], "total": N, "hasMore": bool}.
        #[arg(long, conflicts_with = "format")]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// The live debugger: the requests a run sent and the answers it got, per batch, with its rows.
    ///
    /// Examples:
    ///   ebb runs requests RUN --failed            the requests that failed, or failed a row
    ///   ebb runs requests RUN --key 42            the requests that carried row 42, and their answers
    ///   ebb runs requests RUN --json              everything, as the API gives it
    #[command(verbatim_doc_comment)]
    Requests {
        /// The run's id (from `ebb runs list`).
        run: String,
        /// Only the batches that carried the row with this primary key.
        #[arg(long)]
        key: Option<String>,
        /// Only the attempts that failed, or that failed a row.
        #[arg(long)]
        failed: bool,
        /// At most this many batch attempts.
        #[arg(long, default_value_t = 20, env = "EBB_REQUESTS_LIMIT")]
        limit: usize,
        /// Print them as the API's {"data": [...], "hasMore": bool}.
        #[arg(long)]
        json: bool,
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
    /// Run without EBB_FLEET_KEY (the key every task and result is signed with): only if nobody else can publish to the broker.
    #[arg(long, env = "EBB_ALLOW_UNSIGNED_TASKS")]
    allow_unsigned_tasks: bool,
}

impl QueueArgs {
    fn settings(&self) -> runtime::QueueSettings {
        runtime::QueueSettings {
            url: self.queue_url.clone(),
            prefix: self.queue_prefix.clone(),
            allow_unsigned: self.allow_unsigned_tasks,
        }
    }
}

/// What the janitor keeps, and for how long.
#[derive(Args, Clone)]
struct GcArgs {
    /// How long ended runs, their row results and row files are kept (each sync's latest run stays).
    #[arg(long, default_value = "30d", env = "EBB_RETENTION", value_parser = humantime::parse_duration, value_name = "DURATION")]
    retention: Duration,
    /// How long an unreferenced snapshot object stays before deletion; longer than EBB_RUN_DEADLINE.
    #[arg(long, default_value = "25h", env = "EBB_GC_GRACE", value_parser = humantime::parse_duration, value_name = "DURATION")]
    gc_grace: Duration,
    /// How long after a run ended its chunks, checkpoints and losing attempts' row files are deleted.
    #[arg(long, default_value = "10m", env = "EBB_GC_RUN_FILES_AFTER", value_parser = humantime::parse_duration, value_name = "DURATION")]
    gc_run_files_after: Duration,
    /// How often the janitor sweeps the object store.
    #[arg(long, default_value = "10m", env = "EBB_GC_EVERY", value_parser = humantime::parse_duration, value_name = "DURATION")]
    gc_every: Duration,
    /// How long the live debugger's request logs (with the rows they carried) are kept after their run; never past --retention.
    #[arg(long, default_value = "7d", env = "EBB_DEBUGGER_RETENTION", value_parser = humantime::parse_duration, value_name = "DURATION")]
    debugger_retention: Duration,
}

impl GcArgs {
    fn settings(&self) -> GcSettings {
        GcSettings {
            retention: self.retention,
            grace: self.gc_grace,
            run_files_after: self.gc_run_files_after,
            every: self.gc_every,
            requests_retention: self.debugger_retention,
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
    fn require_exists(&self) -> anyhow::Result<()> {
        if !self.config.exists() {
            return Err(ConfigError {
                file: Some(self.config.clone()),
                line: None,
                message: format!(
                    "not found: pass --config PATH (or set EBB_CONFIG); `{} quickstart` writes an example",
                    output::this_command()
                ),
            }
            .into());
        }
        Ok(())
    }

    fn load(&self) -> anyhow::Result<Arc<Config>> {
        self.require_exists()?;
        let config = ebb_worker::config::load(&self.config)?;
        ebb_worker::mapping::check_templates(&config).map_err(|reason| ConfigError {
            file: Some(self.config.clone()),
            line: None,
            message: reason,
        })?;
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
    /// Where a command that runs syncs acts: the coordinator, or a runtime of
    /// this process on the config's data directory (which it locks).
    async fn backend(&self) -> anyhow::Result<Backend> {
        if let Some(url) = &self.api_url {
            return Ok(Backend::remote(url, self.api_token.clone()));
        }
        let config = self.config.load()?;
        let runtime = runtime::start_embedded(config, &self.config.data_dir(), 2, 2).await?;
        Ok(Backend::Embedded(runtime))
    }

    /// Where a command that reads runs (or cancels one) acts: the coordinator,
    /// or the data directory's state, beside whatever process runs it.
    async fn state(&self) -> anyhow::Result<Backend> {
        if let Some(url) = &self.api_url {
            return Ok(Backend::remote(url, self.api_token.clone()));
        }
        let config = self.config.load()?;
        let data_dir = self.config.data_dir();
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
        Ok(Backend::Embedded(
            runtime::open_embedded_state(config, &data_dir).await?,
        ))
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
    // Telemetry reads its settings from the environment; flags win over it, and a
    // one-shot command logs text unless told otherwise, so that JSON log lines
    // never mix with what the command prints.
    if let Some(filter) = &cli.logs.log {
        std::env::set_var("EBB_LOG", filter);
    }
    match (&cli.logs.log_format, long_running) {
        (Some(format), _) => std::env::set_var("EBB_LOG_FORMAT", format),
        (None, false) => std::env::set_var("EBB_LOG_FORMAT", "text"),
        (None, true) => {}
    }
    // Dropped last, after the runtime: flushes the spans still buffered.
    let _telemetry = ebb_shared::telemetry::init(service, if long_running { "info" } else { "warn" });
    if long_running {
        ebb_shared::telemetry::log_panics();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime starts");
    let outcome = runtime.block_on(dispatch(cli.command));
    // The runtime is not shut down: the process ends here. Every component
    // has stopped and closed its connections by now, but the AMQP client runs
    // each connection's IO on a thread of its own that may still be finishing
    // a close; shutting the reactor under it makes that thread log errors
    // on every clean stop. Process exit ends those threads silently.
    std::mem::forget(runtime);
    match outcome {
        Ok(code) => code,
        Err(error) if output::is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            let config_error = error.chain().any(|cause| {
                cause.downcast_ref::<ConfigErrors>().is_some() || cause.downcast_ref::<ConfigError>().is_some()
            });
            ExitCode::from(if config_error { exit::CONFIG } else { exit::OTHER })
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

/// Who may call a coordinator's API, and where probes and scrapers go. The
/// tokens themselves are read from the environment only, never from the
/// command line (where `ps` shows them).
#[derive(clap::Args, Debug, Clone)]
struct ServeArgs {
    /// Serve the API off loopback without tokens: only where a network policy lets nobody else reach it.
    #[arg(long, env = "EBB_ALLOW_UNAUTHENTICATED")]
    allow_unauthenticated: bool,
    /// Serve /metrics (and /healthz, /readyz) on this address of their own (e.g. 0.0.0.0:9090) instead of the API's.
    #[arg(long, env = "EBB_METRICS_LISTEN", value_name = "ADDRESS")]
    metrics_listen: Option<String>,
}

/// Binds the API's address, refusing one off loopback unless the tokens that
/// guard it are set (or the refusal is waived). Done before anything starts.
async fn bind_api(listen: &str, serving: &ServeArgs, serves_workers: bool) -> anyhow::Result<Api> {
    let tokens = crate::api::auth::Tokens::from_env();
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (set --listen or EBB_LISTEN)"))?;
    let address = listener.local_addr()?;
    if let Some(refusal) = tokens.refusal(address, serves_workers) {
        if !serving.allow_unauthenticated {
            anyhow::bail!(refusal);
        }
        tracing::warn!(%address, "serving the API off loopback without tokens (--allow-unauthenticated)");
    }
    let probes = match &serving.metrics_listen {
        Some(address) => Some(
            tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen on {address} (set --metrics-listen or EBB_METRICS_LISTEN)"))?,
        ),
        None => None,
    };
    Ok(Api {
        listener,
        probes,
        tokens,
        serves_workers,
        on_loopback: address.ip().is_loopback(),
    })
}

/// A bound API listener and who may call it.
struct Api {
    listener: tokio::net::TcpListener,
    /// The probes' and scrapers' own listener, if they have one.
    probes: Option<tokio::net::TcpListener>,
    tokens: crate::api::auth::Tokens,
    serves_workers: bool,
    on_loopback: bool,
}

/// Runs a coordinator's scheduler and API until SIGTERM or Ctrl-C, then stops
/// gracefully: tasks in flight finish, unfinished ones go back to the queue.
async fn serve_until_signal(mut runtime: runtime::Runtime, api: Api) -> anyhow::Result<ExitCode> {
    runtime.start_scheduler();
    let state = crate::api::ApiState {
        coordinator: runtime.coordinator.clone().expect("a coordinator runs here"),
        leases: runtime.leases.clone(),
        tokens: api.tokens,
        serves_workers: api.serves_workers,
        on_loopback: api.on_loopback,
        metrics_here: api.probes.is_none(),
    };
    let probes = match api.probes {
        Some(listener) => {
            tracing::info!(address = %listener.local_addr()?, "health and metrics listening");
            let router = crate::api::probe_router(state.clone());
            Some(tokio::spawn(async move {
                if let Err(error) = axum::serve(listener, router).await {
                    tracing::error!(%error, "health and metrics listener stopped");
                }
            }))
        }
        None => None,
    };
    let server = serve(api.listener, state)?;
    let deposed = tokio::select! {
        _ = shutdown_signal() => None,
        reason = runtime.deposed() => Some(reason),
    };
    server.abort();
    if let Some(probes) = probes {
        probes.abort();
    }
    if let Some(reason) = deposed {
        // Nothing this process started as leader may go on: exit, and let the
        // restart rejoin as a standby.
        tracing::error!(%reason, "lost the leadership; exiting");
        runtime.shutdown(Duration::from_secs(5)).await;
        anyhow::bail!("lost the leadership: {reason}");
    }
    tracing::info!("shutting down");
    runtime.shutdown(Duration::from_secs(30)).await;
    Ok(ExitCode::SUCCESS)
}

/// The API's address as other hosts reach it: `--listen`, with an unspecified
/// host (0.0.0.0, [::]) replaced by this host's name.
fn default_advertise_url(listen: &str) -> String {
    let (host, port) = listen.rsplit_once(':').unwrap_or((listen, "8080"));
    let host = match host {
        "0.0.0.0" | "[::]" | "" => std::env::var("HOSTNAME").unwrap_or_else(|_| "127.0.0.1".into()),
        other => other.to_string(),
    };
    format!("http://{host}:{port}")
}

fn serve(
    listener: tokio::net::TcpListener,
    state: crate::api::ApiState,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
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
        Command::Check { config, connect, json } => check(&config, connect, json).await,
        Command::Destination(command) => destination(command).await,
        Command::Source(command) => source(command).await,
        Command::Model(command) => model(command).await,
        Command::Completions { shell } => {
            let mut text = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "ebb", &mut text);
            output::print(&String::from_utf8_lossy(&text));
            Ok(ExitCode::SUCCESS)
        }
        Command::Standalone {
            config,
            listen,
            serving,
            workers,
            gc,
        } => {
            let loaded = config.load()?;
            let api = bind_api(&listen, &serving, false).await?;
            let mut runtime = runtime::start_embedded(loaded, &config.data_dir(), workers.max(1), 2).await?;
            runtime.start_janitor(gc.settings())?;
            serve_until_signal(runtime, api).await
        }
        Command::Coordinator {
            config,
            state_url,
            queue,
            listen,
            serving,
            store_url,
            advertise_url,
            gc,
        } => {
            let loaded = config.load()?;
            let api = bind_api(&listen, &serving, true).await?;
            let advertise_url = advertise_url.unwrap_or_else(|| default_advertise_url(&listen));
            let mut runtime = runtime::start_coordinator(
                loaded,
                &state_url,
                &queue.settings(),
                store_url.as_deref(),
                &advertise_url,
            )
            .await?;
            runtime.start_janitor(gc.settings())?;
            serve_until_signal(runtime, api).await
        }
        Command::Worker {
            queue,
            store_url,
            coordinator_url,
            worker_id,
            concurrency,
            listen,
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
            let health = match (&listen, runtime.workers.first()) {
                (Some(address), Some(worker)) => {
                    let listener = tokio::net::TcpListener::bind(address)
                        .await
                        .with_context(|| format!("cannot listen on {address} (set --listen or EBB_WORKER_LISTEN)"))?;
                    tracing::info!(address = %listener.local_addr()?, "health and metrics listening");
                    let router = crate::api::worker_router(worker.clone());
                    Some(tokio::spawn(async move {
                        if let Err(error) = axum::serve(listener, router).await {
                            tracing::error!(%error, "health listener stopped");
                        }
                    }))
                }
                _ => None,
            };
            shutdown_signal().await;
            if let Some(health) = health {
                health.abort();
            }
            tracing::info!("shutting down; finishing tasks in flight");
            runtime.shutdown(Duration::from_secs(60)).await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sync(SyncCommand::List { json, target }) => {
            let syncs = match &target.api_url {
                Some(url) => Backend::remote(url, target.api_token.clone()).syncs().await?,
                None => {
                    let loaded = target.config.load()?;
                    loaded
                        .syncs
                        .iter()
                        .map(|(name, sync)| SyncView::new(name, sync))
                        .collect()
                }
            };
            if json {
                output::print_json(&List { data: syncs })?;
            } else {
                output::print(&output::syncs_table(&syncs));
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
            gc,
        }) => {
            let backend = target.backend().await?;
            let result = async {
                let run_id = backend.trigger(&sync, TriggerBody { full_resync, reset_cdc }).await?;
                output::follow(&backend, &run_id, !no_progress && !json).await
            }
            .await;
            if let Backend::Embedded(runtime) = &backend {
                // A failed sweep loses nothing: the next one collects it.
                if let Err(error) = runtime.sweep_once(gc.settings()).await {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "the janitor's sweep after the run stopped"
                    );
                }
            }
            backend.close().await;
            let run = result?;
            if json {
                output::print_json(&run)?;
            } else {
                output::print(&output::summary(&run));
            }
            Ok(run_exit_code(&run))
        }
        Command::Runs(RunsCommand::List {
            sync,
            limit,
            json,
            target,
        }) => {
            let backend = target.state().await?;
            let runs = backend.runs(&sync, limit).await;
            backend.close().await;
            let runs = runs?;
            if json {
                output::print_json(&List { data: runs })?;
            } else {
                output::print(&output::runs_table(&runs));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Runs(RunsCommand::Show { run, json, target }) => {
            let backend = target.state().await?;
            let view = backend.run(&run).await;
            backend.close().await;
            print_run(&view?, json)
        }
        Command::Runs(RunsCommand::Cancel { run, json, target }) => {
            let backend = target.state().await?;
            let view = backend.cancel(&run).await;
            backend.close().await;
            print_run(&view?, json)
        }
        Command::Runs(RunsCommand::Requests {
            run,
            key,
            failed,
            limit,
            json,
            target,
        }) => {
            let backend = target.state().await?;
            let filter = crate::run::requests::RequestFilter {
                key: key.clone(),
                failed,
                limit: limit.max(1),
            };
            let page = backend.requests(&run, filter).await;
            backend.close().await;
            let page = page?;
            if json {
                output::print_json(&page)?;
            } else {
                output::print(&output::requests(&page, key.as_deref()));
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
            json,
            target,
        }) => {
            let outcome = if failed {
                Some(RowOutcome::Failed)
            } else {
                outcome.as_deref().and_then(RowOutcome::parse)
            };
            let filter = RowFilter {
                outcome,
                key,
                limit: None,
            };
            let backend = target.state().await?;
            let result = match (json, format.as_str()) {
                (true, _) | (false, "table") => {
                    let shown = limit.unwrap_or(100);
                    backend.rows_page(&run, filter, shown).await.map(|page| {
                        if json {
                            output::print_json(&page)
                        } else {
                            output::print(&output::rows_table(&page));
                            Ok(())
                        }
                    })
                }
                (false, export) => {
                    let format = RowsFormat::parse(export).map_err(|e| anyhow::anyhow!(e))?;
                    let filter = RowFilter { limit, ..filter };
                    let mut stdout = std::io::BufWriter::new(std::io::stdout());
                    let written = backend.write_rows(&run, filter, format, &mut stdout).await;
                    written.and_then(|_| Ok(std::io::Write::flush(&mut stdout)?)).map(Ok)
                }
            };
            backend.close().await;
            result??;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_run(run: &RunView, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        output::print_json(run)?;
    } else {
        output::print(&output::summary(run));
    }
    Ok(ExitCode::SUCCESS)
}

fn run_exit_code(run: &RunView) -> ExitCode {
    match run.status.as_str() {
        "success" | "warning" => ExitCode::SUCCESS,
        _ => ExitCode::from(exit::RUN_NOT_SUCCESSFUL),
    }
}

/// `ebb source …`: connects from here, with this environment.
async fn source(command: SourceCommand) -> anyhow::Result<ExitCode> {
    let SourceCommand::Test { name, config } = &command;
    let loaded = config.load()?;
    let Some(source) = loaded.sources.get(name) else {
        anyhow::bail!(
            "no source named {name:?} in {} (defined: {})",
            config.config.display(),
            loaded.sources.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    };
    match ebb_worker::sources::test(name, source).await {
        Ok(()) => {
            output::print(&format!("source {name:?} ({}): reachable\n", source.kind()));
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            eprintln!("{error}");
            Ok(ExitCode::from(exit::RUN_NOT_SUCCESSFUL))
        }
    }
}

/// `ebb model preview`: reads the model's first rows from here.
async fn model(command: ModelCommand) -> anyhow::Result<ExitCode> {
    let (name, limit, json, config) = match &command {
        ModelCommand::Preview {
            name,
            limit,
            json,
            config,
        } => (name, limit, json, config),
        ModelCommand::Import {
            dbt_manifest,
            source,
            select,
            out,
        } => return import_dbt(dbt_manifest, source, select, out.as_deref()),
    };
    let loaded = config.load()?;
    let Some(model) = loaded.models.get(name) else {
        anyhow::bail!(
            "no model named {name:?} in {} (defined: {})",
            config.config.display(),
            loaded.models.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    };
    let source = &loaded.sources[&model.source];
    let preview = match ebb_worker::sources::preview(&model.source, source, name, model, *limit as usize).await {
        Ok(preview) => preview,
        Err(error) => {
            eprintln!("{error}");
            return Ok(ExitCode::from(exit::RUN_NOT_SUCCESSFUL));
        }
    };
    if *json {
        output::print_json(&preview.to_json())?;
    } else {
        output::print(&output::preview_table(&preview, &model.primary_key));
    }
    Ok(ExitCode::SUCCESS)
}

/// `ebb model import --dbt-manifest`: writes the importable models, names the others.
fn import_dbt(manifest: &Path, source: &str, select: &[String], out: Option<&Path>) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(manifest).with_context(|| {
        format!(
            "cannot read the dbt manifest {} (dbt writes it to target/manifest.json on compile, run or build)",
            manifest.display()
        )
    })?;
    let import = crate::dbt::import(&text, source, select)
        .map_err(|reason| anyhow::anyhow!("{}: {reason}", manifest.display()))?;
    let yaml = crate::dbt::to_yaml(&import, &manifest.display().to_string());
    match out {
        Some(path) => {
            std::fs::write(path, &yaml).with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!(
                "wrote {} model{} to {}",
                import.imported.len(),
                if import.imported.len() == 1 { "" } else { "s" },
                path.display()
            );
        }
        None => output::print(&yaml),
    }
    for refused in &import.refused {
        eprintln!("dbt model {:?} not imported: {}", refused.name, refused.reason);
    }
    Ok(if import.refused.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(exit::CONFIG)
    })
}

/// `ebb destination …`: runs the connector here, on the config's settings.
async fn destination(command: DestinationCommand) -> anyhow::Result<ExitCode> {
    let (DestinationCommand::Test { name, config } | DestinationCommand::Fields { name, config, .. }) = &command;
    let loaded = config.load()?;
    let Some(destination) = loaded.destinations.get(name) else {
        anyhow::bail!(
            "no destination named {name:?} in {} (defined: {})",
            config.config.display(),
            loaded.destinations.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    };
    let registry = &ebb_worker::destinations::REGISTRY;
    match &command {
        DestinationCommand::Test { .. } => match registry.test_connection(name, destination).await {
            Ok(()) => {
                output::print(&format!("destination {name:?} ({}): reachable\n", destination.kind));
                Ok(ExitCode::SUCCESS)
            }
            Err(reason) => {
                eprintln!("destination {name:?} ({}): {reason}", destination.kind);
                Ok(ExitCode::from(exit::RUN_NOT_SUCCESSFUL))
            }
        },
        DestinationCommand::Fields { object, json, .. } => {
            let fields = registry
                .fields(name, destination, object.as_deref())
                .await
                .map_err(|reason| anyhow::anyhow!("destination {name:?} ({}): {reason}", destination.kind))?;
            if *json {
                output::print_json(&serde_json::json!({ "data": fields }))?;
                return Ok(ExitCode::SUCCESS);
            }
            let Some(fields) = fields else {
                output::print(&format!(
                    "destination {name:?} ({}) takes any field: records are sent as mapped\n",
                    destination.kind
                ));
                return Ok(ExitCode::SUCCESS);
            };
            let width = fields.iter().map(|f| f.name.len()).max().unwrap_or(4).max(4);
            let mut text = format!("{:width$}  {:12}  unique  writable\n", "name", "type");
            for field in &fields {
                let yes = |flag: bool| if flag { "yes" } else { "no" };
                text.push_str(&format!(
                    "{:width$}  {:12}  {:6}  {}\n",
                    field.name,
                    field.kind,
                    yes(field.unique),
                    yes(field.writable)
                ));
            }
            output::print(&text);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `ebb check`: prints every problem with its file and line, or what was checked.
async fn check(args: &ConfigArgs, connect: bool, json: bool) -> anyhow::Result<ExitCode> {
    args.require_exists()?;
    let (config, problems) = match crate::check::check(&args.config, connect).await {
        Ok(checked) => {
            let mut problems = checked.problems;
            if let Err(reason) = ebb_worker::mapping::check_templates(&checked.config) {
                problems.push(ConfigError {
                    file: Some(args.config.clone()),
                    line: None,
                    message: reason,
                });
            }
            (Some(checked.config), problems)
        }
        Err(errors) => (None, errors.0),
    };
    if json {
        let problems: Vec<serde_json::Value> = problems
            .iter()
            .map(|p| serde_json::json!({"file": p.file, "line": p.line, "message": p.message}))
            .collect();
        output::print_json(
            &serde_json::json!({"ok": problems.is_empty(), "connected": connect, "problems": problems}),
        )?;
    } else if problems.is_empty() {
        let config = config.expect("a config without problems loaded");
        let plural = |n: usize, one: &str| format!("{n} {one}{}", if n == 1 { "" } else { "s" });
        output::print(&format!(
            "{}: {}, {}, {}, {} — OK{}\n",
            args.config.display(),
            plural(config.sources.len(), "source"),
            plural(config.models.len(), "model"),
            plural(config.destinations.len(), "destination"),
            plural(config.syncs.len(), "sync"),
            if connect {
                " (connected to every source and destination, every query prepared)"
            } else {
                " (add --connect to reach the sources and destinations too)"
            }
        ));
    } else {
        let mut text: String = problems.iter().map(|p| format!("{p}\n")).collect();
        text.push_str(&format!(
            "{} found in {}; nothing was run.\n",
            if problems.len() == 1 {
                "1 problem".to_string()
            } else {
                format!("{} problems", problems.len())
            },
            args.config.display()
        ));
        eprint!("{text}");
    }
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(exit::CONFIG)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Options that choose what one invocation looks at, not how Ebb runs: an
    /// environment variable for them would be a trap.
    const PER_INVOCATION: &[&str] = &["key", "select", "out"];

    fn every_command(command: &clap::Command, path: String, out: &mut Vec<(String, clap::Command)>) {
        out.push((path.clone(), command.clone()));
        for sub in command.get_subcommands() {
            every_command(sub, format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn every_argument_has_help_and_every_setting_an_ebb_variable() {
        let mut commands = Vec::new();
        let mut cli = Cli::command();
        cli.build();
        every_command(&cli, "ebb".into(), &mut commands);
        let mut settings_checked = 0;
        for (path, command) in commands {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if ["help", "version"].contains(&id) {
                    continue;
                }
                assert!(arg.get_help().is_some(), "`{path}`: argument {id} has no help text");
                let takes_value = arg.get_action().takes_values();
                if arg.is_positional() || !takes_value || PER_INVOCATION.contains(&id) {
                    continue;
                }
                let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
                assert!(
                    env.as_deref().is_some_and(|e| e.starts_with("EBB_")),
                    "`{path}`: option --{id} has no EBB_* variable"
                );
                settings_checked += 1;
            }
        }
        assert!(settings_checked > 20, "only {settings_checked} options checked");
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
