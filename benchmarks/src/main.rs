//! `ebb-bench`: how close Ebb runs to the floor.
//!
//! Builds a ~10-column model of each size in PostgreSQL, then, in the same run:
//! the floor (`COPY (query) TO STDOUT` into nothing); a first sync and an
//! unchanged run on a fleet (coordinator and two worker processes, RabbitMQ,
//! an S3 server) with each process's peak memory; first syncs of the same
//! table as a table model read by 1, 2 and 4 extract tasks on that fleet,
//! timing extraction apart; a first sync and
//! incremental syncs (0%, 1%, 10% of rows changed: updates, inserts and
//! deletes mixed) on embedded defaults; and the diff stage alone against the
//! same diff done inside PostgreSQL (a FULL OUTER JOIN of the previous and
//! current tables). Then, once: scaling with 1, 2 and 4 workers against a
//! sink with 20 ms latency, and rate-limit accuracy. Every sink accepts each
//! batch. It prints tables of absolute figures and ratios.
//!
//! ```sh
//! cargo run --release -p ebb-bench -- --rows 1000000,10000000 --plot docs/benchmarks.svg
//! ```
//!
//! Traffic stays on loopback: PostgreSQL and RabbitMQ on 127.0.0.1, the S3
//! server and the sinks in-process.

use anyhow::Context;
use clap::Parser;

mod fleet;
mod hubspot;
mod plot;
mod sink;
use ebb_coordinator::output::thousands;
use ebb_coordinator::run::TriggerOptions;
use ebb_coordinator::runtime::{start_embedded, Runtime};
use ebb_coordinator::store::RunRecord;
use ebb_shared::config::Config;
use ebb_shared::hashing::{key_hash, HashRange, BUCKET_COUNT};
use ebb_shared::snapshot::{read_entry_files, Entry, EntryWriter, FileKind};
use ebb_worker::behaviour::Behaviour;
use ebb_worker::diff::ShardDiff;
use ebb_worker::mapping::{RecordPlan, RunContext};
use futures::StreamExt;
use sink::Sink;
use sqlx::{Connection, Executor, PgConnection};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "Ebb's end-to-end benchmarks against the floor of reading the model (PostgreSQL on loopback).")]
struct Args {
    /// Model sizes to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000000")]
    rows: Vec<u64>,
    /// A PostgreSQL server to build the data set in (database `ebb_bench` is created).
    #[arg(
        long,
        env = "EBB_BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    postgres_url: String,
    /// Rows per batch sent to the sink.
    #[arg(long, default_value_t = 1000)]
    batch_size: usize,
    /// Rows of the model of the latency-bound scenarios (scaling with workers,
    /// rate-limit accuracy).
    #[arg(long, default_value_t = 60_000)]
    fleet_rows: u64,
    /// Skip the scenarios that start `ebb` processes (they need RabbitMQ).
    #[arg(long)]
    no_fleet: bool,
    /// Rows of the HubSpot scenario (a first sync at HubSpot's Starter limit with 4 workers); 0 skips it.
    #[arg(long, default_value_t = 100_000)]
    hubspot_rows: u64,
    /// Run the HubSpot scenario only.
    #[arg(long)]
    hubspot_only: bool,
    /// Also write a chart of time against rows (SVG) here.
    #[arg(long)]
    plot: Option<std::path::PathBuf>,
}

const COLUMNS: &str = "id, email, name, plan, score, active, days, updated_at, city, note";

struct Figures {
    rows: u64,
    floor: Duration,
    first: Duration,
    distributed: Option<fleet::Distributed>,
    /// First syncs of the table model read by 1, 2 and 4 extract tasks, distributed.
    partitioned: Vec<fleet::Partitioned>,
    incremental: Vec<(u32, Duration, RunRecord)>,
    ebb_diff: Duration,
    sql_diff: Duration,
    peak_rss_mib: u64,
}

fn main() -> std::process::ExitCode {
    // As the `ebb` binary does, so the standalone figures are what users get.
    ebb_shared::allocator::limit_malloc_arenas();
    // The fleet's coordinator and workers are this very executable started under
    // the name `ebb` (see `ebb_tests::process`): they are always of this build,
    // and nothing is built while the benchmark runs.
    let invoked_as = std::env::args_os().next().map(std::path::PathBuf::from);
    if invoked_as.as_deref().and_then(|p| p.file_name()) == Some(std::ffi::OsStr::new("ebb")) {
        return ebb_coordinator::cli::main();
    }
    match std::env::current_exe() {
        Ok(exe) => std::env::set_var("EBB_BINARY", exe),
        Err(error) => {
            eprintln!("error: cannot find this executable's path: {error}");
            return std::process::ExitCode::FAILURE;
        }
    }
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(run()));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    // Warnings only, unless EBB_LOG asks for more (`EBB_LOG=info` shows each task's time).
    let _telemetry = ebb_shared::telemetry::init("ebb-bench", "warn");
    let base = args
        .postgres_url
        .rsplit_once('/')
        .map(|(b, _)| b.to_string())
        .unwrap_or_default();
    let mut admin = PgConnection::connect(&args.postgres_url)
        .await
        .with_context(|| format!("PostgreSQL at {} (start it, or pass --postgres-url)", args.postgres_url))?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'ebb_bench')")
        .fetch_one(&mut admin)
        .await?;
    if !exists {
        admin.execute("CREATE DATABASE ebb_bench").await?;
    }
    let url = format!("{base}/ebb_bench");
    let hubspot = if args.hubspot_rows > 0 && (args.hubspot_only || !args.no_fleet) {
        let table = "bench_hubspot_model";
        let mut db = PgConnection::connect(&url).await?;
        build_dataset(&mut db, table, args.hubspot_rows).await?;
        eprintln!(
            "[{}] HubSpot: first sync at the Starter limit, {} workers",
            args.hubspot_rows,
            hubspot::WORKERS
        );
        let run = hubspot::first_sync(&url, table, args.hubspot_rows).await?;
        db.execute(format!("DROP TABLE {table}").as_str()).await?;
        Some(run)
    } else {
        None
    };
    if args.hubspot_only {
        if let Some(run) = &hubspot {
            hubspot::print(run);
        }
        return Ok(());
    }
    let mut all = Vec::new();
    for rows in &args.rows {
        all.push(run_size(&url, *rows, args.batch_size, !args.no_fleet).await?);
    }
    let latency_bound = if args.no_fleet {
        None
    } else {
        Some(latency_bound(&url, args.fleet_rows).await?)
    };
    print_table(&all);
    if let Some((scaling, rate_limit)) = &latency_bound {
        print_latency_bound(args.fleet_rows, scaling, rate_limit);
    }
    if let Some(run) = &hubspot {
        hubspot::print(run);
    }
    if let Some(path) = &args.plot {
        std::fs::write(path, plot(&all)).with_context(|| format!("writing the chart to {}", path.display()))?;
        eprintln!("chart written to {}", path.display());
    }
    Ok(())
}

/// Scaling with workers and rate-limit accuracy, on a model of their own.
async fn latency_bound(url: &str, rows: u64) -> anyhow::Result<(Vec<fleet::Scaling>, fleet::RateLimit)> {
    let table = "bench_fleet_model";
    let mut db = PgConnection::connect(url).await?;
    build_dataset(&mut db, table, rows).await?;
    let query = format!("SELECT {COLUMNS} FROM {table}");
    eprintln!("[{rows}] scaling: 1, 2 and 4 workers against a sink with 20 ms latency");
    let scaling = fleet::scaling(url, &query, rows).await?;
    eprintln!("[{rows}] rate limit: 3 workers sharing 100 requests/s");
    let rate_limit = fleet::rate_limit(url, &query, rows).await?;
    db.execute(format!("DROP TABLE {table}").as_str()).await?;
    Ok((scaling, rate_limit))
}

async fn run_size(url: &str, rows: u64, batch_size: usize, with_fleet: bool) -> anyhow::Result<Figures> {
    let table = format!("bench_model_{rows}");
    let mut db = PgConnection::connect(url).await?;
    build_dataset(&mut db, &table, rows).await?;
    let query = format!("SELECT {COLUMNS} FROM {table}");

    eprintln!("[{rows}] floor: COPY out");
    let floor = copy_out(&mut db, &query).await?;

    let distributed = if with_fleet {
        eprintln!("[{rows}] distributed: coordinator and 2 workers, first sync and an unchanged run");
        Some(fleet::distributed(url, &query, rows, batch_size).await?)
    } else {
        None
    };
    let partitioned = if with_fleet {
        eprintln!("[{rows}] distributed, a table model read by 1, 2 and 4 extract tasks");
        fleet::partitioned(url, &table, rows, batch_size).await?
    } else {
        Vec::new()
    };

    let sink = Sink::start().await?;
    let dir = tempfile::tempdir()?;
    let config = sync_config(
        url,
        &query_model(&query),
        &sink,
        &format!("batch_size: {batch_size}, max_concurrency: 8"),
        "",
    );
    let config = Arc::new(ebb_worker::config::from_yaml_str(
        Path::new("bench.yaml"),
        &config,
        dir.path(),
    )?);
    let runtime = start_embedded(config.clone(), dir.path(), 2, 2).await?;

    eprintln!("[{rows}] first sync");
    let (first, run) = timed_run(&runtime).await;
    anyhow::ensure!(run.succeeded.added == rows, "first sync: {run:?}");

    // A copy of the model as the first run saw it, for the SQL diff.
    db.execute("DROP TABLE IF EXISTS bench_prev").await?;
    db.execute(format!("CREATE TABLE bench_prev AS SELECT * FROM {table}").as_str())
        .await?;
    let mut incremental = Vec::new();
    for percent in [0u32, 1, 10] {
        mutate(&mut db, &table, rows, percent).await?;
        eprintln!("[{rows}] incremental sync, {percent}% changed");
        let (elapsed, run) = timed_run(&runtime).await;
        incremental.push((percent, elapsed, run));
    }
    runtime.shutdown(Duration::from_secs(30)).await;
    // Before the diff stage, which holds both tables' entries in this process.
    let peak_rss_mib = peak_rss_kib() / 1024;

    eprintln!("[{rows}] diff stage: Ebb's merge-diff and the SQL diff");
    let sql_diff = sql_diff(&mut db, &table).await?;
    let ebb_diff = ebb_diff(url, &table, &config).await?;
    // The mutated model and its copy are of no further use.
    db.execute(format!("DROP TABLE {table}").as_str()).await?;
    db.execute("DROP TABLE bench_prev").await?;
    Ok(Figures {
        rows,
        floor,
        first,
        distributed,
        partitioned,
        incremental,
        ebb_diff,
        sql_diff,
        peak_rss_mib,
    })
}

/// The model entries of a SQL model (a YAML flow-map entry).
pub(crate) fn query_model(query: &str) -> String {
    format!("query: \"{query}\"")
}

/// The benchmarks' one sync, `bench`: the model (`query_model`, or a table
/// model's entries) in mirror mode to `sink`, with extra destination and sync
/// settings (YAML flow-map entries).
pub(crate) fn sync_config(postgres_url: &str, model: &str, sink: &Sink, destination: &str, sync: &str) -> String {
    let sync = if sync.is_empty() {
        String::new()
    } else {
        format!(", {sync}")
    };
    format!(
        r#"
sources:
  warehouse: {{ type: postgres, url: "{postgres_url}" }}
models:
  model: {{ source: warehouse, {model}, primary_key: id }}
destinations:
  sink: {{ type: http, url: "{url}", {destination} }}
syncs:
  bench: {{ model: model, destination: sink, mode: mirror{sync} }}
"#,
        url = sink.url
    )
}

async fn build_dataset(db: &mut PgConnection, table: &str, rows: u64) -> anyhow::Result<()> {
    eprintln!("[{rows}] building {table}");
    db.execute(format!("DROP TABLE IF EXISTS {table}").as_str()).await?;
    db.execute(
        format!(
            "CREATE TABLE {table} (id BIGINT PRIMARY KEY, email TEXT, name TEXT, plan TEXT, score NUMERIC(10,2), \
             active BOOLEAN, days INT, updated_at TIMESTAMPTZ, city TEXT, note TEXT)"
        )
        .as_str(),
    )
    .await?;
    db.execute(
        format!(
            "INSERT INTO {table} SELECT g, 'person' || g || '@example.com', 'Person ' || g, \
             (ARRAY['free','starter','pro','enterprise'])[1 + g % 4], (g % 100000) / 100.0, g % 2 = 0, \
             (g % 365)::int, timestamptz '2026-01-01' + g * interval '1 second', \
             (ARRAY['Oslo','Lima','Pune','Kyiv'])[1 + g % 4], CASE WHEN g % 10 = 0 THEN NULL ELSE 'note ' || g END \
             FROM generate_series(1, {rows}) g"
        )
        .as_str(),
    )
    .await?;
    db.execute(format!("VACUUM ANALYZE {table}").as_str()).await?;
    Ok(())
}

/// The floor: Postgres exporting the model's result, read and thrown away.
async fn copy_out(db: &mut PgConnection, query: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut stream = db.copy_out_raw(format!("COPY ({query}) TO STDOUT").as_str()).await?;
    let mut bytes = 0usize;
    while let Some(chunk) = stream.next().await {
        bytes += chunk?.len();
    }
    anyhow::ensure!(bytes > 0, "COPY returned nothing");
    Ok(started.elapsed())
}

/// Updates, inserts and deletes `percent`% of the rows (3:1:1).
async fn mutate(db: &mut PgConnection, table: &str, rows: u64, percent: u32) -> anyhow::Result<()> {
    if percent == 0 {
        return Ok(());
    }
    let changed = rows * percent as u64 / 100;
    let (updates, inserts, deletes) = (changed * 3 / 5, changed / 5, changed / 5);
    let step = (rows / updates.max(1)).max(1);
    let max_id: i64 = sqlx::query_scalar(&format!("SELECT max(id) FROM {table}"))
        .fetch_one(&mut *db)
        .await?;
    db.execute(
        format!(
            "UPDATE {table} SET email = 'changed' || {percent} || '-' || id || '@example.com' \
             WHERE id % {step} = 1 AND id <= {}",
            updates * step
        )
        .as_str(),
    )
    .await?;
    db.execute(
        format!(
            "DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE id % {step} = 2 ORDER BY id LIMIT {deletes})"
        )
        .as_str(),
    )
    .await?;
    db.execute(
        format!(
            "INSERT INTO {table} SELECT {max_id} + g, 'new' || g || '@example.com', 'New ' || g, 'free', 0, true, 0, \
             now(), 'Oslo', NULL FROM generate_series(1, {inserts}) g"
        )
        .as_str(),
    )
    .await?;
    Ok(())
}

async fn timed_run(runtime: &Runtime) -> (Duration, RunRecord) {
    let coordinator = runtime.coordinator.as_ref().expect("embedded");
    let started = Instant::now();
    let run = coordinator
        .trigger("bench", TriggerOptions::default())
        .await
        .expect("trigger");
    loop {
        let run = coordinator.store().run(&run.id).await.unwrap().unwrap();
        if run.status.is_terminal() {
            return (started.elapsed(), run);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The diff of the previous and current tables inside PostgreSQL.
async fn sql_diff(db: &mut PgConnection, table: &str) -> anyhow::Result<Duration> {
    let columns = |alias: &str| {
        COLUMNS
            .split(", ")
            .map(|c| format!("{alias}.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let query = format!(
        "SELECT count(*) FROM bench_prev p FULL OUTER JOIN {table} c ON p.id = c.id \
         WHERE p.id IS NULL OR c.id IS NULL OR ({}) IS DISTINCT FROM ({})",
        columns("p"),
        columns("c")
    );
    let started = Instant::now();
    let differing: i64 = sqlx::query_scalar(&query).fetch_one(&mut *db).await?;
    anyhow::ensure!(differing > 0, "the SQL diff found no change");
    Ok(started.elapsed())
}

/// Ebb's diff stage on the same rows, as a worker does it: both tables are
/// mapped, hashed and encoded beforehand into 50k-row shards (the previous
/// side sorted, as snapshots are; the current side in model order, as chunks
/// are). Timed: decoding both sides of each shard, the merge-diff, the plan
/// and the next snapshot's entries.
async fn ebb_diff(url: &str, table: &str, config: &Config) -> anyhow::Result<Duration> {
    let spec = config.sync_spec("bench")?;
    let behaviour = Behaviour::of(&spec);
    let previous = entries(url, "bench_prev", &spec).await?;
    let shards = (previous.len() / 50_000).clamp(1, BUCKET_COUNT);
    let encode = |all: Vec<Entry>, sorted: bool| {
        let mut parts: Vec<Vec<Entry>> = (0..shards).map(|_| Vec::new()).collect();
        for entry in all {
            parts[HashRange::bucket_of(entry.key_hash) * shards / BUCKET_COUNT].push(entry);
        }
        parts
            .into_iter()
            .map(|mut part| {
                if sorted {
                    part.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
                }
                let mut writer = EntryWriter::new();
                part.iter().for_each(|entry| writer.push_entry(entry));
                writer.finish(FileKind::Chunk, "bench", "diff", HashRange::FULL)
            })
            .collect::<Vec<_>>()
    };
    let previous = encode(previous, true);
    let current = encode(entries(url, table, &spec).await?, false);
    let mut elapsed = Duration::ZERO;
    for (current, previous) in current.iter().zip(&previous) {
        let started = Instant::now();
        let current: Vec<Entry> = read_entry_files(current).collect::<Result<_, _>>()?;
        let previous: Vec<Entry> = read_entry_files(previous).collect::<Result<_, _>>()?;
        let diff = ShardDiff::compute(current, previous);
        let plan = diff.plan(&behaviour, false);
        let ok = vec![true; plan.len()];
        let kept = diff.next_snapshot(&behaviour, &plan, &ok).len();
        elapsed += started.elapsed();
        std::hint::black_box(kept);
    }
    Ok(elapsed)
}

async fn entries(url: &str, table: &str, spec: &ebb_shared::config::SyncSpec) -> anyhow::Result<Vec<Entry>> {
    let mut model = spec.model.clone();
    model.query = Some(format!("SELECT {COLUMNS} FROM {table}"));
    let source =
        ebb_shared::config::SourceConfig::Postgres(ebb_shared::config::PostgresSourceConfig { url: url.into() });
    let mut rows = ebb_worker::sources::open("warehouse", &source, "model", &model).await?;
    let run = RunContext {
        sync_id: "bench".into(),
        run_id: "diff".into(),
        run_started_at: String::new(),
    };
    let plan = RecordPlan::new(spec, &rows.columns, &run)?;
    let mut out = Vec::new();
    while let Some(batch) = rows.next_batch().await {
        for row in batch? {
            let key = plan.key(&row).expect("ids are never null");
            let (fingerprint, record) = plan.record(&row).map_err(anyhow::Error::msg)?;
            out.push(Entry {
                key_hash: key_hash(&key),
                key,
                fingerprint,
                record,
                mapping_error: None,
            });
        }
    }
    Ok(out)
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn print_table(all: &[Figures]) {
    println!("| rows | scenario | time | rows/s | Ebb ÷ floor | Ebb ÷ SQL diff |");
    println!("|---:|---|---:|---:|---:|---:|");
    for f in all {
        let row = |name: &str, d: Duration| {
            println!(
                "| {} | {name} | {:.2} s | {} | {:.2}× | |",
                thousands(f.rows),
                d.as_secs_f64(),
                thousands((f.rows as f64 / d.as_secs_f64()) as u64),
                d.as_secs_f64() / f.floor.as_secs_f64()
            )
        };
        row("floor: `COPY (query) TO STDOUT`", f.floor);
        row("first sync, standalone", f.first);
        for (percent, elapsed, run) in &f.incremental {
            row(
                &format!(
                    "incremental, {percent}% changed, standalone ({} rows sent)",
                    thousands(run.succeeded.total())
                ),
                *elapsed,
            );
        }
        if let Some(d) = &f.distributed {
            row("first sync, distributed (coordinator + 2 workers)", d.first);
            row("incremental, 0% changed, distributed", d.unchanged);
        }
        for p in &f.partitioned {
            let tasks = match p.extract_tasks {
                1 => "1 extract task".to_string(),
                n => format!("{n} extract tasks"),
            };
            row(&format!("extraction, table model, {tasks}, distributed"), p.extraction);
            row(&format!("first sync, table model, {tasks}, distributed"), p.first);
        }
        println!(
            "| {} | diff stage: Ebb {:.2} s, SQL `FULL OUTER JOIN` {:.2} s | | | | {:.2}× |",
            thousands(f.rows),
            f.ebb_diff.as_secs_f64(),
            f.sql_diff.as_secs_f64(),
            f.ebb_diff.as_secs_f64() / f.sql_diff.as_secs_f64()
        );
        println!(
            "| {} | peak RSS, standalone process (2 workers, coordinator and sink in it) | {} MiB | | | |",
            thousands(f.rows),
            f.peak_rss_mib
        );
        if let Some(d) = &f.distributed {
            let workers: Vec<String> = d.worker_rss_mib.iter().map(|m| format!("{m} MiB")).collect();
            println!(
                "| {} | peak RSS, distributed: coordinator / workers | {} MiB / {} | | | |",
                thousands(f.rows),
                d.coordinator_rss_mib,
                workers.join(", ")
            );
        }
    }
}

fn print_latency_bound(rows: u64, scaling: &[fleet::Scaling], rate_limit: &fleet::RateLimit) {
    println!();
    println!(
        "Scaling: first sync of {} rows, batches of 20, 16 shards, a sink with 20 ms latency",
        thousands(rows)
    );
    println!();
    println!("| workers | run time | speed-up | requests | sink requests/s | speed-up |");
    println!("|---:|---:|---:|---:|---:|---:|");
    let base = &scaling[0];
    for s in scaling {
        println!(
            "| {} | {:.2} s | {:.2}× | {} | {:.0} | {:.2}× |",
            s.workers,
            s.run.as_secs_f64(),
            base.run.as_secs_f64() / s.run.as_secs_f64(),
            thousands(s.requests as u64),
            s.sink_rate,
            s.sink_rate / base.sink_rate
        );
    }
    println!();
    println!(
        "Rate limit: {} workers sharing {:.0} requests/s: {} requests, peak {} in any one second, mean {:.1}/s ({:.1}% of the limit)",
        rate_limit.workers,
        rate_limit.limit,
        thousands(rate_limit.requests as u64),
        rate_limit.peak_in_any_second,
        rate_limit.mean_rate,
        100.0 * rate_limit.mean_rate / rate_limit.limit
    );
}

/// Time against rows, one line per scenario.
fn plot(all: &[Figures]) -> String {
    let mut series: Vec<plot::Series> = Vec::new();
    let mut add = |name: &str, time: &dyn Fn(&Figures) -> Option<Duration>| {
        let points: Vec<(f64, f64)> = all
            .iter()
            .filter_map(|f| time(f).map(|d| (f.rows as f64, d.as_secs_f64())))
            .collect();
        if !points.is_empty() {
            series.push(plot::Series {
                name: name.to_string(),
                points,
            });
        }
    };
    add("floor (COPY out)", &|f| Some(f.floor));
    add("first sync, standalone", &|f| Some(f.first));
    add("first sync, distributed", &|f| f.distributed.as_ref().map(|d| d.first));
    for (i, percent) in [0, 1, 10].iter().enumerate() {
        add(&format!("incremental {percent}%, standalone"), &|f| {
            f.incremental.get(i).map(|x| x.1)
        });
    }
    add("incremental 0%, distributed", &|f| {
        f.distributed.as_ref().map(|d| d.unchanged)
    });
    add("diff stage, Ebb", &|f| Some(f.ebb_diff));
    add("diff stage, SQL FULL OUTER JOIN", &|f| Some(f.sql_diff));
    plot::svg("Time against rows (log-log): Ebb's runs and the floor", &series)
}
