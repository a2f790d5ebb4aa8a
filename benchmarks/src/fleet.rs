//! Scenarios on a real fleet: `ebb coordinator` and `ebb worker` processes
//! (release builds) with the state in PostgreSQL, tasks on RabbitMQ and
//! snapshots on an S3 server, all on loopback.

use crate::sink::{mean_rate, peak_in_any_second, Sink};
use crate::{query_model, sync_config};
use ebb_tests::fleet::{counts, Fleet};
use std::time::{Duration, Instant};

const RUN_TIMEOUT: Duration = Duration::from_secs(3600);

pub struct Distributed {
    pub first: Duration,
    pub unchanged: Duration,
    pub coordinator_rss_mib: u64,
    pub worker_rss_mib: Vec<u64>,
}

/// A first sync and an unchanged re-run of the model with a coordinator and
/// two workers, and the peak memory of each process.
pub async fn distributed(postgres_url: &str, query: &str, rows: u64, batch_size: usize) -> anyhow::Result<Distributed> {
    let sink = Sink::start().await?;
    let config = sync_config(
        postgres_url,
        &query_model(query),
        &sink,
        &format!("batch_size: {batch_size}, max_concurrency: 8"),
        "",
    );
    let fleet = Fleet::start(&config, 2).await;
    let first = timed_run(&fleet, rows).await?;
    let unchanged = timed_run(&fleet, 0).await?;
    let mib = |p| Fleet::peak_rss_kib(p) / 1024;
    Ok(Distributed {
        first,
        unchanged,
        coordinator_rss_mib: mib(&fleet.coordinator),
        worker_rss_mib: fleet.workers.iter().map(mib).collect(),
    })
}

pub struct Partitioned {
    pub extract_tasks: u32,
    /// From the trigger until every extract task was in and the shards planned.
    pub extraction: Duration,
    pub first: Duration,
}

/// First syncs of a table model read by 1, 2 and 4 extract tasks, each on a
/// fresh coordinator and two workers: how long extraction took, and the run.
pub async fn partitioned(
    postgres_url: &str,
    table: &str,
    rows: u64,
    batch_size: usize,
) -> anyhow::Result<Vec<Partitioned>> {
    let sink = Sink::start().await?;
    let mut out = Vec::new();
    for extract_tasks in [1u32, 2, 4] {
        let config = sync_config(
            postgres_url,
            &format!("table: {table}, extract_tasks: {extract_tasks}"),
            &sink,
            &format!("batch_size: {batch_size}, max_concurrency: 8"),
            "",
        );
        let fleet = Fleet::start(&config, 2).await;
        let started = Instant::now();
        let run_id = fleet.trigger("bench").await;
        let deadline = started + RUN_TIMEOUT;
        let extraction = loop {
            let run = fleet.run(&run_id).await;
            if !["queued", "querying"].contains(&run["status"].as_str().unwrap_or_default()) {
                break started.elapsed();
            }
            anyhow::ensure!(Instant::now() < deadline, "run {run_id} still querying: {run}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let run = fleet.wait_run(&run_id, RUN_TIMEOUT).await;
        let first = started.elapsed();
        anyhow::ensure!(run["status"] == "success", "run failed: {run}");
        anyhow::ensure!(
            counts(&run, "successfulRows")[0] == rows,
            "expected {rows} rows added: {run}"
        );
        anyhow::ensure!(
            run["extractTasks"]["total"] == extract_tasks,
            "expected {extract_tasks} extract tasks: {run}"
        );
        eprintln!(
            "  {extract_tasks} extract task(s): extraction {:.2} s, first sync {:.2} s",
            extraction.as_secs_f64(),
            first.as_secs_f64()
        );
        out.push(Partitioned {
            extract_tasks,
            extraction,
            first,
        });
    }
    Ok(out)
}

pub struct Scaling {
    pub workers: usize,
    pub run: Duration,
    pub requests: usize,
    /// Requests per second the sink received, first to last.
    pub sink_rate: f64,
}

/// First syncs of the same model by fleets of 1, 2 and 4 workers against a
/// sink that takes 20 ms per request. Each worker keeps its default number of
/// requests in flight, so the fleet's throughput should grow with its size.
pub async fn scaling(postgres_url: &str, query: &str, rows: u64) -> anyhow::Result<Vec<Scaling>> {
    let sink = Sink::with_latency(Duration::from_millis(20)).await?;
    let mut out = Vec::new();
    for workers in [1, 2, 4] {
        let config = sync_config(postgres_url, &query_model(query), &sink, "batch_size: 20", "shards: 16");
        let fleet = Fleet::start(&config, workers).await;
        let run = timed_run(&fleet, rows).await?;
        let arrivals = sink.take_arrivals();
        eprintln!(
            "  {workers} worker(s): {:.2} s, {} requests",
            run.as_secs_f64(),
            arrivals.len()
        );
        out.push(Scaling {
            workers,
            run,
            requests: arrivals.len(),
            sink_rate: mean_rate(&arrivals),
        });
    }
    Ok(out)
}

pub struct RateLimit {
    pub limit: f64,
    pub workers: usize,
    pub requests: usize,
    pub peak_in_any_second: usize,
    pub mean_rate: f64,
}

/// A fleet-wide limit of 100 requests/s shared by 3 workers, against the
/// 20 ms sink: what the destination saw.
pub async fn rate_limit(postgres_url: &str, query: &str, rows: u64) -> anyhow::Result<RateLimit> {
    const LIMIT: f64 = 100.0;
    const WORKERS: usize = 3;
    let sink = Sink::with_latency(Duration::from_millis(20)).await?;
    let config = sync_config(
        postgres_url,
        &query_model(query),
        &sink,
        &format!("batch_size: 40, rate_limit: {LIMIT}"),
        "shards: 16",
    );
    let fleet = Fleet::start(&config, WORKERS).await;
    timed_run(&fleet, rows).await?;
    let arrivals = sink.take_arrivals();
    Ok(RateLimit {
        limit: LIMIT,
        workers: WORKERS,
        requests: arrivals.len(),
        peak_in_any_second: peak_in_any_second(&arrivals),
        mean_rate: mean_rate(&arrivals),
    })
}

/// Triggers the sync and waits for it; `added` is how many rows it must add.
async fn timed_run(fleet: &Fleet, added: u64) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let run_id = fleet.trigger("bench").await;
    let run = fleet.wait_run(&run_id, RUN_TIMEOUT).await;
    let elapsed = started.elapsed();
    anyhow::ensure!(run["status"] == "success", "run failed: {run}");
    anyhow::ensure!(
        counts(&run, "successfulRows")[0] == added,
        "expected {added} rows added: {run}"
    );
    Ok(elapsed)
}
