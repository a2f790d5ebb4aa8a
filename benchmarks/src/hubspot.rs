//! A first sync to the loopback HubSpot at HubSpot's documented request limit
//! (Starter: 100 requests per rolling 10 s, enforced by the fake) with four
//! workers: how close the run comes to the minimum the limit allows (rows ÷
//! 100 inputs per request ÷ 10 requests per second), and how many 429s it
//! drew from a limit it was told about.

use ebb_tests::fleet::{counts, Fleet};
use ebb_worker::destinations::hubspot::fake::FakeHubSpot;
use std::time::{Duration, Instant};

const TOKEN: &str = "pat-na1-bench000-0000-4000-8000-000000000000";
const PER_TEN_SECONDS: u32 = 100;
const INPUTS_PER_REQUEST: u64 = 100;
pub const WORKERS: usize = 4;

pub struct HubSpotRun {
    pub rows: u64,
    pub requests: u64,
    pub rate_limited: u64,
    /// From trigger to success.
    pub run: Duration,
    /// From the first request HubSpot let through to the last.
    pub delivery: Duration,
    /// What the limit allows at best: every request at the limit's average.
    pub minimum: Duration,
}

pub async fn first_sync(postgres_url: &str, table: &str, rows: u64) -> anyhow::Result<HubSpotRun> {
    let fake = FakeHubSpot::start(TOKEN, Some(PER_TEN_SECONDS)).await;
    let config = format!(
        "sources:\n  warehouse: {{ type: postgres, url: \"{postgres_url}\" }}\n\
         models:\n  people: {{ source: warehouse, query: \"SELECT id, email, name FROM {table}\", primary_key: id }}\n\
         destinations:\n  hubspot: {{ type: hubspot, access_token: \"${{EBB_BENCH_HUBSPOT_TOKEN}}\", api_base_url: \"{}\", tier: starter }}\n\
         syncs:\n  bench:\n    model: people\n    destination: hubspot\n    mode: upsert\n    shards: 16\n    \
         record_matching: {{ from: id, to: ebb_id }}\n    mappings:\n      - {{ from: id, to: ebb_id }}\n      \
         - {{ from: email, to: email }}\n      - {{ from: name, to: firstname }}\n",
        fake.url
    );
    let fleet = Fleet::start_with_env(&config, WORKERS, &[("EBB_BENCH_HUBSPOT_TOKEN", TOKEN.to_string())]).await;
    let started = Instant::now();
    let run_id = fleet.trigger("bench").await;
    let run = fleet.wait_run(&run_id, Duration::from_secs(3600)).await;
    let elapsed = started.elapsed();
    anyhow::ensure!(run["status"] == "success", "run failed: {run}");
    anyhow::ensure!(
        counts(&run, "successfulRows")[0] == rows,
        "expected {rows} rows added: {run}"
    );
    anyhow::ensure!(
        fake.records("contacts").len() as u64 == rows,
        "HubSpot holds other than {rows} contacts"
    );
    let (requests, rate_limited) = fake.counts();
    let batches = rows.div_ceil(INPUTS_PER_REQUEST);
    Ok(HubSpotRun {
        rows,
        requests,
        rate_limited,
        run: elapsed,
        delivery: fake.admitted_span().unwrap_or_default(),
        // Rows ÷ inputs per request ÷ requests per second.
        minimum: Duration::from_secs_f64(batches as f64 * 10.0 / f64::from(PER_TEN_SECONDS)),
    })
}

pub fn print(run: &HubSpotRun) {
    let over = |d: Duration| 100.0 * (d.as_secs_f64() / run.minimum.as_secs_f64() - 1.0);
    println!();
    println!(
        "HubSpot: first sync of {} rows, {WORKERS} workers, Starter limit ({PER_TEN_SECONDS} requests per 10 s, enforced by the fake)",
        run.rows
    );
    println!();
    println!(
        "| minimum the limit allows | delivery (first to last request) | run (trigger to success) | requests | 429s |"
    );
    println!("|---:|---:|---:|---:|---:|");
    println!(
        "| {:.1} s | {:.1} s ({:+.1}%) | {:.1} s ({:+.1}%) | {} | {} |",
        run.minimum.as_secs_f64(),
        run.delivery.as_secs_f64(),
        over(run.delivery),
        run.run.as_secs_f64(),
        over(run.run),
        run.requests,
        run.rate_limited
    );
}
