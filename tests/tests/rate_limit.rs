//! Fleet-wide rate limits: three worker processes share one destination limited
//! to 20 requests per second. The destination never sees more than 22 requests
//! in any one-second window, and sees at least 16 per second on average while
//! there is work. A `429` with `Retry-After` seen by one worker pauses them all.

use ebb_tests::fleet::Fleet;
use ebb_tests::model::create_people;
use ebb_tests::services::fresh_postgres_database;
use ebb_tests::sink::{Behavior, Sink};
use sqlx::PgPool;
use std::time::{Duration, Instant};

/// The two fleets would share two cores and skew each other's timing.
static ONE_FLEET_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn config(database_url: &str, sink_url: &str) -> String {
    format!(
        r#"
sources:
  warehouse:
    type: postgres
    url: {database_url}
models:
  people:
    source: warehouse
    query: SELECT id, email FROM people
    primary_key: id
destinations:
  limited:
    type: http
    url: {sink_url}
    batch_size: 10
    rate_limit: 20
syncs:
  people-limited:
    model: people
    destination: limited
    mode: upsert
    max_rows_per_shard: 150
"#
    )
}

/// The most requests that arrived within any one second.
fn peak_per_second(times: &[Instant]) -> usize {
    let mut peak = 0;
    let mut first = 0;
    for last in 0..times.len() {
        while times[last] - times[first] >= Duration::from_secs(1) {
            first += 1;
        }
        peak = peak.max(last - first + 1);
    }
    peak
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_stay_within_a_fleet_wide_limit_and_use_most_of_it() {
    let _turn = ONE_FLEET_AT_A_TIME.lock().await;
    let source = fresh_postgres_database("rate").await;
    let pool = PgPool::connect(&source.url).await.unwrap();
    create_people(&pool, 2_400).await;
    let sink = Sink::start().await;
    let fleet = Fleet::start(&config(&source.url, &sink.url()), 3).await;

    let run_id = fleet.trigger("people-limited").await;
    let run = fleet.wait_run(&run_id, Duration::from_secs(120)).await;
    assert_eq!(run["status"], "success", "{run}");
    let mut times: Vec<Instant> = sink.requests().iter().map(|r| r.at).collect();
    times.sort();
    // Shards end on bucket boundaries, so some batches are short.
    assert!(
        times.len() >= 240,
        "2,400 rows in batches of at most 10: {}",
        times.len()
    );
    let peak = peak_per_second(&times);
    let span = (*times.last().unwrap() - times[0]).as_secs_f64();
    let mean = (times.len() - 1) as f64 / span;
    println!("rate limit 20/s: peak {peak} requests in one second, mean {mean:.1}/s over {span:.1}s");
    if peak > 22 {
        let offsets: Vec<u128> = times.iter().map(|t| (*t - times[0]).as_millis()).collect();
        println!("request times (ms): {offsets:?}");
    }
    assert!(peak <= 22, "{peak} requests within one second");
    assert!(mean >= 16.0, "mean {mean:.1} requests/s while work remained");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_pauses_every_worker() {
    let _turn = ONE_FLEET_AT_A_TIME.lock().await;
    let source = fresh_postgres_database("throttle").await;
    let pool = PgPool::connect(&source.url).await.unwrap();
    create_people(&pool, 1_200).await;
    let sink = Sink::start().await;
    let fleet = Fleet::start(&config(&source.url, &sink.url()), 3).await;

    let run_id = fleet.trigger("people-limited").await;
    while sink.requests().len() < 30 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sink.set_behavior(Behavior {
        throttle_times: 1,
        throttle_retry_after_secs: 2,
        ..Default::default()
    });
    let run = fleet.wait_run(&run_id, Duration::from_secs(120)).await;
    assert_eq!(run["status"], "success", "{run}");
    let requests = sink.requests();
    let throttled = requests
        .iter()
        .find(|r| r.status == 429)
        .expect("one request was throttled")
        .at;
    // Workers learn of the pause within one lease renewal (500 ms); from then
    // until Retry-After has passed, nobody sends.
    let quiet_from = throttled + Duration::from_millis(800);
    let quiet_until = throttled + Duration::from_millis(1900);
    let during: Vec<_> = requests
        .iter()
        .filter(|r| r.at > quiet_from && r.at < quiet_until)
        .collect();
    assert!(during.is_empty(), "{} requests arrived during the pause", during.len());
    assert_eq!(sink.records().len(), 1_200, "every row arrived after the pause");
}
