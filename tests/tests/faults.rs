//! Faults of the control plane: every run ends, and a transient fault is
//! retried rather than failing the run. Real PostgreSQL, through a loopback
//! proxy that injects the faults.

use ebb_coordinator::run::{RunStatus, TriggerOptions};
use ebb_coordinator::runtime::start_embedded;
use ebb_tests::embedded::run_to_end;
use ebb_tests::model::{create_people, sink_emails};
use ebb_tests::proxy::FaultProxy;
use ebb_tests::services::fresh_postgres_database;
use ebb_tests::sink::{Behavior, Sink};
use sqlx::PgPool;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A fresh database with `rows` people, its pool, and an empty HTTP sink.
async fn people_and_sink(label: &str, rows: i64) -> (ebb_tests::services::TestDatabase, PgPool, Sink) {
    let database = fresh_postgres_database(label).await;
    let pool = PgPool::connect(&database.url).await.unwrap();
    create_people(&pool, rows).await;
    (database, pool, Sink::start().await)
}

/// A fleet config: the `people` model (id, email) of `database_url`, synced
/// in mirror mode to the HTTP destination `api` at `sink_url`, with more
/// settings for the destination and the sync (`batch_size: 50`, `shards: 4`).
fn people_to_api(database_url: &str, sink_url: &str, destination: &str, sync: &str) -> String {
    let more = |settings: &str| {
        if settings.is_empty() {
            String::new()
        } else {
            format!(", {settings}")
        }
    };
    format!(
        "sources:\n  warehouse: {{ type: postgres, url: \"{database_url}\" }}\n\
         models:\n  people: {{ source: warehouse, query: \"SELECT id, email FROM people\", primary_key: id }}\n\
         destinations:\n  api: {{ type: http, url: \"{sink_url}\"{} }}\n\
         syncs:\n  people-api: {{ model: people, destination: api, mode: mirror{} }}\n",
        more(destination),
        more(sync)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_refuses_connections_for_a_while_is_retried_not_failed() {
    let database = fresh_postgres_database("faults").await;
    let pool = PgPool::connect(&database.url).await.unwrap();
    create_people(&pool, 500).await;
    let proxy = FaultProxy::start("127.0.0.1:5432").await;
    let through_proxy = database.url.replace("127.0.0.1:5432", &proxy.address.to_string());
    assert_ne!(
        through_proxy, database.url,
        "the test database URL names 127.0.0.1:5432"
    );
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "sources:\n  warehouse: {{ type: postgres, url: \"{through_proxy}\" }}\n\
         models:\n  people: {{ source: warehouse, query: \"SELECT id, email FROM people\", primary_key: id }}\n\
         destinations:\n  api: {{ type: http, url: \"{}\", batch_size: 100 }}\n\
         syncs:\n  people-api: {{ model: people, destination: api, mode: mirror }}\n",
        sink.url()
    );
    let config = Arc::new(ebb_worker::config::from_yaml_str(Path::new("faults.yaml"), &text, dir.path()).unwrap());
    let runtime = start_embedded(config, dir.path(), 2, 2).await.unwrap();

    // The first two attempts at the source find it refusing connections.
    proxy.refuse_next(2);
    let run = run_to_end(&runtime, "people-api", TriggerOptions::default()).await;
    assert_eq!(run.status, RunStatus::Success, "{run:?}");
    assert_eq!(run.succeeded.added, 500);
    assert!(proxy.connections_seen() >= 3, "the extraction was attempted again");
    assert_eq!(sink_emails(&sink).len(), 500);

    // A source that stays down: the retries are bounded and the run fails,
    // naming the fault and the attempts.
    proxy.refuse_next(u32::MAX);
    let run = tokio::time::timeout(
        Duration::from_secs(120),
        run_to_end(&runtime, "people-api", TriggerOptions::default()),
    )
    .await
    .expect("the run ends");
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    let error = run.error.unwrap_or_default();
    assert!(error.contains("unreachable") && error.contains("attempts"), "{error}");
    runtime.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_beyond_the_cap_fails_the_rows_instead_of_parking_the_run() {
    let (database, _pool, sink) = people_and_sink("cap", 300).await;
    // Every request is answered 429 with a Retry-After of an hour.
    sink.set_behavior(Behavior {
        throttle_times: u32::MAX,
        throttle_retry_after_secs: 3600,
        ..Behavior::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "sources:\n  warehouse: {{ type: postgres, url: \"{}\" }}\n\
         models:\n  people: {{ source: warehouse, query: \"SELECT id, email FROM people\", primary_key: id }}\n\
         destinations:\n  api: {{ type: http, url: \"{}\", batch_size: 100, max_retry_after: 2s }}\n\
         syncs:\n  people-api: {{ model: people, destination: api, mode: mirror }}\n",
        database.url,
        sink.url()
    );
    let config = Arc::new(ebb_worker::config::from_yaml_str(Path::new("cap.yaml"), &text, dir.path()).unwrap());
    let runtime = start_embedded(config, dir.path(), 2, 2).await.unwrap();
    let started = std::time::Instant::now();
    let run = run_to_end(&runtime, "people-api", TriggerOptions::default()).await;
    assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    assert_eq!(run.failed.added, 300, "{run:?}");
    let rows = runtime
        .coordinator
        .as_ref()
        .unwrap()
        .store()
        .run_rows(&run.id, Some("rejected"), None, 5)
        .await
        .unwrap();
    assert!(
        rows[0].reason.contains("Retry-After") && rows[0].reason.contains("max_retry_after of 2s"),
        "{rows:?}"
    );
    // The rows were not lost: the next run, with the destination back, sends them.
    sink.set_behavior(Behavior::default());
    let run = run_to_end(&runtime, "people-api", TriggerOptions::default()).await;
    assert_eq!(run.status, RunStatus::Success, "{run:?}");
    assert_eq!(run.succeeded.added, 300);
    assert_eq!(sink_emails(&sink).len(), 300);
    runtime.shutdown(Duration::from_secs(10)).await;
}

/// A task no worker can read (a newer kind, mid rolling upgrade) is not dropped:
/// the worker dead-letters it, and the coordinator fails its run by name, so
/// the run ends instead of waiting forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_no_worker_can_read_fails_its_run_by_name() {
    use ebb_coordinator::leases::LocalLeases;
    use ebb_coordinator::run::Coordinator;
    use ebb_coordinator::store::{NewRun, StateStore};
    use ebb_shared::queue::{MemoryQueue, MessageQueue, OutgoingMessage, QueueName, RUN_ID_HEADER, TASK_ID_HEADER};
    use ebb_shared::storage::Storage;
    use ebb_worker::{Worker, WorkerSettings};

    let dir = tempfile::tempdir().unwrap();
    let config = Arc::new(
        ebb_worker::config::from_yaml_str(
            Path::new("t.yaml"),
            "sources:\n  files: { type: csv, path: data }\nmodels:\n  m: { source: files, file: m.csv, primary_key: id }\n\
             destinations:\n  d: { type: jsonl, path: out.jsonl }\nsyncs:\n  s: { model: m, destination: d, mode: upsert }\n",
            dir.path(),
        )
        .unwrap(),
    );
    let store = StateStore::connect(&format!("sqlite://{}", dir.path().join("state.db").display()))
        .await
        .unwrap();
    store.ensure_sync("s", "id").await.unwrap();
    let run = store
        .create_run(&NewRun {
            id: "run-1".into(),
            sync: "s".into(),
            trigger: "manual".into(),
            schedule_tick: None,
            full_resync: false,
            reset_cdc: false,
        })
        .await
        .unwrap()
        .unwrap();
    store
        .transition(&run.id, RunStatus::Queued, RunStatus::Querying, None)
        .await
        .unwrap();
    let queue = Arc::new(MemoryQueue::new());
    let mut garbage = OutgoingMessage::new(b"\x92\xa7unknown\x01".to_vec());
    garbage.headers.insert(RUN_ID_HEADER.into(), run.id.clone());
    garbage
        .headers
        .insert(TASK_ID_HEADER.into(), format!("{}/extract", run.id));
    queue.publish(QueueName::Tasks, garbage).await.unwrap();

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let storage = Storage::from_url(&dir.path().join("objects").display().to_string()).unwrap();
    let worker = Arc::new(Worker::new(
        WorkerSettings::new("w"),
        queue.clone(),
        storage.clone(),
        Arc::new(LocalLeases::for_config(&config)),
    ));
    let worker_task = tokio::spawn(worker.run(stopped.clone()));
    let coordinator = Coordinator::new(store, queue.clone(), Some(storage), config);
    let dead_task = tokio::spawn(coordinator.clone().consume_dead_letters(QueueName::DeadTasks, stopped));

    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let run = loop {
        let run = coordinator.store().run("run-1").await.unwrap().unwrap();
        if run.status.is_terminal() {
            break run;
        }
        assert!(std::time::Instant::now() < deadline, "the run did not end: {run:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    let error = run.error.unwrap_or_default();
    assert!(
        error.contains("could not be read by a worker") && error.contains("Upgrade the workers first"),
        "{error}"
    );
    assert_eq!(queue.depth(QueueName::Tasks).await.unwrap(), 0);
    let _ = stop.send(true);
    let _ = worker_task.await;
    let _ = dead_task.await;
}

/// The coordinator dies at each point between a state change and what follows
/// it (a publish, a finish): a new coordinator on the same state and queues
/// finds the run, moves it on from the state DB, and the run ends in success
/// with the destination equal to the model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_crash_in_any_window_leaves_no_run_behind() {
    use ebb_tests::fleet::Fleet;
    use ebb_tests::model::model_emails;

    // A model read in parts has a window of its own: parts recorded, some
    // of their tasks not yet published.
    for (point, extract_tasks) in [
        ("after-querying", 1),
        ("during-extract-part-publishes", 3),
        ("during-shard-publishes", 1),
        ("before-finish", 1),
        ("inside-finish", 1),
    ] {
        let (database, pool, sink) = people_and_sink("crash", 2_000).await;
        let config = people_to_api(&database.url, &sink.url(), "batch_size: 100", "shards: 4").replace(
            "primary_key: id }",
            &format!("primary_key: id, extract_tasks: {extract_tasks} }}"),
        );
        let mut fleet = Fleet::start_with_env(&config, 2, &[("EBB_FAULT_CRASH_AT", point.to_string())]).await;
        // The trigger itself may die with the coordinator (after-querying).
        let _ = fleet
            .client()
            .post(format!("{}/api/v1/syncs/people-api/trigger", fleet.api))
            .json(&serde_json::json!({}))
            .send()
            .await;
        let status = fleet.coordinator_exited(Duration::from_secs(60)).await;
        assert!(
            !status.success(),
            "{point}: the coordinator should have stopped at the crash point"
        );
        let crashed = std::fs::read_to_string(&fleet.coordinator.log).unwrap();
        assert!(
            crashed.contains(&format!("EBB_FAULT_CRASH_AT={point}: stopping here")),
            "{point}:\n{crashed}"
        );
        fleet.restart_coordinator(&[]).await;
        let runs: serde_json::Value = fleet
            .client()
            .get(format!("{}/api/v1/syncs/people-api/runs?limit=5", fleet.api))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let runs = runs["data"].as_array().unwrap().clone();
        assert_eq!(runs.len(), 1, "{point}: {runs:?}");
        let run_id = runs[0]["id"].as_str().unwrap();
        let run = fleet.wait_run(run_id, Duration::from_secs(90)).await;
        assert_eq!(run["status"], "success", "{point}: {run}\n{}", fleet.logs());
        assert_eq!(run["successfulRows"]["addedCount"], 2_000, "{point}: {run}");
        assert_eq!(
            sink_emails(&sink),
            model_emails(&pool).await,
            "{point}: destination == model"
        );
        drop(fleet);
        pool.close().await;
    }
}

/// `/readyz` answers 200 only while the state database and the broker both
/// answer, and names the part that does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_reflects_the_state_database_and_the_broker() {
    use ebb_coordinator::api::{router, ApiState};
    use ebb_coordinator::leases::LocalLeases;
    use ebb_coordinator::run::Coordinator;
    use ebb_coordinator::store::StateStore;
    use ebb_shared::queue::{AmqpQueue, AmqpSettings};

    ebb_tests::services::require_rabbitmq().await;
    let broker = FaultProxy::start("127.0.0.1:5672").await;
    let prefix = format!("ready{}.", rand::random::<u32>());
    let url = format!("amqp://guest:guest@{}/%2f", broker.address);
    let queue = Arc::new(
        AmqpQueue::connect(AmqpSettings::new(url).with_prefix(prefix.clone()))
            .await
            .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::connect(&format!("sqlite://{}", dir.path().join("state.db").display()))
        .await
        .unwrap();
    let config = Arc::new(
        ebb_worker::config::from_yaml_str(
            Path::new("r.yaml"),
            "destinations:\n  d: { type: jsonl, path: out.jsonl }\n",
            dir.path(),
        )
        .unwrap(),
    );
    let coordinator = Coordinator::new(store.clone(), queue.clone(), None, config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = router(ApiState {
        coordinator,
        leases: LocalLeases::default(),
        tokens: Default::default(),
        serves_workers: true,
        on_loopback: true,
        metrics_here: true,
    });
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let readyz = || async move {
        let response = reqwest::get(format!("http://{address}/readyz")).await.unwrap();
        let status = response.status().as_u16();
        (status, response.json::<serde_json::Value>().await.unwrap())
    };

    let (status, body) = readyz().await;
    assert_eq!(status, 200, "{body}");
    // No election runs here: a standby, and ready all the same (every
    // replica serves the API).
    assert_eq!(
        body,
        serde_json::json!({"ready": true, "database": "ok", "queue": "ok", "role": "standby"})
    );

    // The broker goes away: not ready, and the queue is named.
    broker.refuse_next(u32::MAX);
    broker.cut();
    let (status, body) = readyz().await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["database"], "ok", "{body}");
    assert!(body["queue"]["error"].is_string(), "{body}");

    // The database goes away too.
    store.close().await;
    let (status, body) = readyz().await;
    assert_eq!(status, 503, "{body}");
    assert!(body["database"]["error"].is_string(), "{body}");

    server.abort();
    drop(broker);
    ebb_tests::services::delete_rabbitmq_queues(&ebb_tests::services::rabbitmq_url(), &prefix);
}

/// A worker of a fleet serves its own health, readiness and metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_serves_its_health_readiness_and_metrics() {
    use ebb_tests::fleet::Fleet;

    let (database, pool, sink) = people_and_sink("health", 300).await;
    let config = people_to_api(&database.url, &sink.url(), "batch_size: 100", "shards: 2");
    // The first two requests are throttled: the metrics must show it.
    sink.set_behavior(Behavior {
        throttle_times: 2,
        throttle_retry_after_secs: 1,
        ..Behavior::default()
    });
    let mut fleet = Fleet::start(&config, 0).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    fleet.add_worker_with_args(&["--listen", &address]);
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while http.get(format!("http://{address}/healthz")).send().await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the worker's health listener did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready = http.get(format!("http://{address}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);

    let run_id = fleet.trigger("people-api").await;
    let run = fleet.wait_run(&run_id, Duration::from_secs(60)).await;
    assert_eq!(run["status"], "success", "{run}");
    let metrics = http
        .get(format!("http://{address}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "ebb_worker_tasks_total{kind=\"extract\",outcome=\"done\"} 1",
        "ebb_worker_tasks_total{kind=\"shard\",outcome=\"done\"} 2",
        "ebb_worker_destination_requests_total{destination=\"api\",answer=\"rate_limited\"} 2",
        "ebb_worker_destination_retries_total{destination=\"api\",reason=\"rate_limited\"} 2",
    ] {
        assert!(metrics.contains(line), "{line} not in:\n{metrics}");
    }
    // 300 rows in batches of 100 over two shards: at least three answered.
    let answered: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ebb_worker_destination_requests_total{destination=\"api\",answer=\"answered\"} "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no answered requests in:\n{metrics}"));
    assert!(answered >= 3, "{answered}");
    let timed = format!(
        "ebb_worker_destination_request_seconds_count{{destination=\"api\"}} {}",
        answered + 2
    );
    assert!(metrics.contains(&timed), "{timed} not in:\n{metrics}");
    let paused_until: i64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ebb_worker_destination_paused_until_timestamp_seconds{destination=\"api\"} "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no pause in:\n{metrics}"));
    assert!(paused_until > 1_700_000_000, "{paused_until}");

    // Without the coordinator (its leases), the worker is not ready, and says why.
    fleet.coordinator.kill().await;
    let ready = http.get(format!("http://{address}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["queue"], "ok", "{body}");
    assert!(body["leases"]["error"].is_string(), "{body}");
    drop(fleet);
    pool.close().await;
}

/// Two coordinators on one state DB: the leader is killed mid-run, the
/// standby takes the lead, and the run finishes there with every row sent
/// and counted exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_takes_over_a_killed_leaders_run_and_finishes_it() {
    use ebb_tests::fleet::{counts, Fleet};
    use ebb_tests::model::model_emails;

    let (database, pool, sink) = people_and_sink("failover", 3_000).await;
    // Slow enough that the run is still delivering when the leader dies.
    sink.set_behavior(Behavior {
        latency: Duration::from_millis(60),
        ..Behavior::default()
    });
    let config = people_to_api(
        &database.url,
        &sink.url(),
        "batch_size: 50, max_concurrency: 2",
        "shards: 4",
    );
    let mut fleet = Fleet::start_replicated(&config, 2).await;
    let standby_api = fleet.standby_api.clone().unwrap();
    let run_id = fleet.trigger("people-api").await;
    until_delivered(&sink, 300, &fleet).await;
    fleet.coordinator.kill().await;

    fleet.wait_leading(&standby_api).await;
    fleet.api = standby_api;
    let run = fleet.wait_run(&run_id, Duration::from_secs(120)).await;
    assert_eq!(run["status"], "success", "{run}\n{}", fleet.logs());
    assert_eq!(counts(&run, "plannedRows"), [3_000, 0, 0], "{run}");
    assert_eq!(counts(&run, "successfulRows"), [3_000, 0, 0], "{run}");
    assert_eq!(sink_emails(&sink), model_emails(&pool).await, "destination == model");
    let standby_log = std::fs::read_to_string(&fleet.standby.as_ref().unwrap().log).unwrap();
    assert!(standby_log.contains("this coordinator leads"), "{standby_log}");

    // The next run, on the new leader alone, sends nothing: no row was lost
    // from the snapshots, none counted twice.
    let second = fleet.trigger("people-api").await;
    let second = fleet.wait_run(&second, Duration::from_secs(60)).await;
    assert_eq!(second["status"], "success", "{second}");
    assert_eq!(counts(&second, "plannedRows"), [0, 0, 0], "{second}");
    drop(fleet);
    pool.close().await;
}

/// A deposed leader commits nothing: once another coordinator took the lead,
/// its leader-only writes fail with `Deposed`, before touching anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leader_is_fenced_off_the_state() {
    use ebb_coordinator::store::{StateStore, StoreError};

    let database = fresh_postgres_database("fence").await;
    let first = StateStore::connect(&database.url).await.unwrap();
    let second = StateStore::connect(&database.url).await.unwrap();
    let lock = first
        .try_lock_leadership()
        .await
        .unwrap()
        .expect("the first takes the lock");
    assert!(
        second.try_lock_leadership().await.unwrap().is_none(),
        "one lock holder at a time"
    );
    let led = first.take_leadership("first", "http://first").await.unwrap();
    assert!(
        !first
            .begin_processing("no-such-run", 0, 0, &[], &[], &[])
            .await
            .unwrap(),
        "the leader writes (nothing to move for an unknown run)"
    );

    // The first loses its lock (its connection dies); the second takes over.
    drop(lock);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let _second_lock = loop {
        if let Some(lock) = second.try_lock_leadership().await.unwrap() {
            break lock;
        }
        assert!(std::time::Instant::now() < deadline, "the lock was never released");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let leads = second.take_leadership("second", "http://second").await.unwrap();
    assert!(leads.epoch > led.epoch);
    assert_eq!(second.leader().await.unwrap().unwrap().url, "http://second");
    match first.begin_processing("no-such-run", 0, 0, &[], &[], &[]).await {
        Err(StoreError::Deposed { ours, current }) => assert_eq!((ours, current), (led.epoch, leads.epoch)),
        other => panic!("the deposed leader wrote: {other:?}"),
    }
    first.close().await;
    second.close().await;
}

/// A result the coordinator cannot read (a newer worker's message kind) is
/// dead-lettered, and its run fails naming the task and the fix, instead of
/// the result being dropped and the run waiting for it until its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_the_coordinator_cannot_read_fails_its_run_by_name() {
    use ebb_shared::queue::{OutgoingMessage, QueueName};
    use ebb_tests::fleet::Fleet;

    let (database, pool, sink) = people_and_sink("dead_result", 2_000).await;
    sink.set_behavior(Behavior {
        latency: Duration::from_millis(100),
        ..Behavior::default()
    });
    let config = people_to_api(
        &database.url,
        &sink.url(),
        "batch_size: 20, max_concurrency: 1",
        "shards: 2",
    );
    let fleet = Fleet::start(&config, 1).await;
    let run_id = fleet.trigger("people-api").await;
    // While its shards deliver (a shard's failure matters only while pending).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while fleet.run(&run_id).await["status"] != "processing" {
        assert!(
            std::time::Instant::now() < deadline,
            "the run never delivered:\n{}",
            fleet.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut message = OutgoingMessage::new(b"\xc1 a message kind of a newer version".to_vec());
    message.headers.insert("ebb-run-id".into(), run_id.clone());
    message
        .headers
        .insert("ebb-task-id".into(), format!("{run_id}/shard-0"));
    let queue = fleet.queue().await;
    queue.publish(QueueName::Results, message).await.unwrap();
    let run = fleet.wait_run(&run_id, Duration::from_secs(60)).await;
    assert_eq!(run["status"], "failed", "{run}");
    let error = run["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("{run_id}/shard-0")) && error.contains("could not be read by the coordinator"),
        "{error}"
    );
    drop(fleet);
    pool.close().await;
}

/// A panic is logged as a structured error event (JSON like every other log
/// line, with its message and location), and what the panicking task left
/// half done is repaired by the reconciler: the run still ends in success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_is_logged_as_a_structured_event_and_its_run_is_repaired() {
    use ebb_tests::fleet::Fleet;

    let (database, pool, sink) = people_and_sink("panic", 200).await;
    let config = people_to_api(&database.url, &sink.url(), "", "");
    let env = [
        ("EBB_FAULT_PANIC_AT", "after-querying".to_string()),
        ("EBB_LOG_FORMAT", "json".to_string()),
    ];
    let fleet = Fleet::start_with_env(&config, 1, &env).await;
    // The trigger's handler panics after recording the run: no answer.
    let _ = fleet
        .client()
        .post(format!("{}/api/v1/syncs/people-api/trigger", fleet.api))
        .json(&serde_json::json!({}))
        .send()
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let panic_line = loop {
        let log = std::fs::read_to_string(&fleet.coordinator.log).unwrap();
        if let Some(line) = log.lines().find(|line| line.contains("panicked")) {
            break line.to_string();
        }
        assert!(std::time::Instant::now() < deadline, "no panic logged:\n{log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let event: serde_json::Value =
        serde_json::from_str(&panic_line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {panic_line}"));
    assert_eq!(event["level"], "ERROR", "{event}");
    assert!(
        event["fields"]["panic"]
            .as_str()
            .unwrap_or_default()
            .contains("EBB_FAULT_PANIC_AT=after-querying"),
        "{event}"
    );
    assert!(
        event["fields"]["location"]
            .as_str()
            .unwrap_or_default()
            .contains("coordinator.rs"),
        "{event}"
    );

    let runs: serde_json::Value = fleet
        .client()
        .get(format!("{}/api/v1/syncs/people-api/runs?limit=5", fleet.api))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run_id = runs["data"][0]["id"]
        .as_str()
        .expect("the run was recorded")
        .to_string();
    let run = fleet.wait_run(&run_id, Duration::from_secs(90)).await;
    assert_eq!(run["status"], "success", "{run}\n{}", fleet.logs());
    assert_eq!(sink_emails(&sink).len(), 200);
    drop(fleet);
    pool.close().await;
}

/// A deploy's SIGTERM: the worker stops taking tasks, finishes (or
/// checkpoints) the one it delivers, and exits cleanly, logging no error; the
/// run ends in success on the remaining worker with every row sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_worker_quietly_and_loses_nothing() {
    use ebb_tests::fleet::Fleet;
    use ebb_tests::model::model_emails;

    let (database, pool, sink) = people_and_sink("sigterm", 2_000).await;
    sink.set_behavior(Behavior {
        latency: Duration::from_millis(40),
        ..Behavior::default()
    });
    let config = people_to_api(
        &database.url,
        &sink.url(),
        "batch_size: 25, max_concurrency: 2",
        "shards: 4",
    );
    let mut fleet = Fleet::start(&config, 2).await;
    let run_id = fleet.trigger("people-api").await;
    until_delivered(&sink, 200, &fleet).await;
    stops_quietly(&mut fleet.workers[0]).await;

    let run = fleet.wait_run(&run_id, Duration::from_secs(120)).await;
    assert_eq!(run["status"], "success", "{run}\n{}", fleet.logs());
    assert_eq!(run["successfulRows"]["addedCount"], 2_000, "{run}");
    assert_eq!(sink_emails(&sink), model_emails(&pool).await, "destination == model");

    // The coordinator stops as quietly.
    stops_quietly(&mut fleet.coordinator).await;
    drop(fleet);
    pool.close().await;
}

/// A worker SIGKILLed while it extracts: the broker hands the unacknowledged
/// extract task to the other worker, which extracts again; the run ends in
/// success with exact counts, nothing was sent before the kill so nothing is
/// sent twice, and the next run finds exactly the mutations made since.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_during_extraction_hands_it_over_and_loses_nothing() {
    use ebb_tests::fleet::{counts, Fleet};
    use ebb_tests::model::{model_emails, mutate};

    let (database, pool, sink) = people_and_sink("extract_kill", 3_000).await;
    // Each row costs the source 2 ms, so an extraction lasts seconds.
    sqlx::query(
        "CREATE FUNCTION slowly(id BIGINT) RETURNS BIGINT LANGUAGE plpgsql VOLATILE AS \
         $$ BEGIN PERFORM pg_sleep(0.002); RETURN id; END $$",
    )
    .execute(&pool)
    .await
    .unwrap();
    let config = people_to_api(&database.url, &sink.url(), "batch_size: 50", "shards: 4").replace(
        "SELECT id, email FROM people",
        "SELECT slowly(id) AS id, email FROM people",
    );
    let mut fleet = Fleet::start(&config, 2).await;
    let run_id = fleet.trigger("people-api").await;

    // The victim: the worker whose extraction the source is serving.
    let extract_task = format!("{run_id}/extract");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let victim = loop {
        let extracting = fleet.workers.iter().position(|worker| {
            std::fs::read_to_string(&worker.log)
                .unwrap_or_default()
                .lines()
                .any(|line| line.contains("task started") && line.contains(&extract_task))
        });
        let reading: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE state = 'active' AND query LIKE '%slowly(id)%' AND pid <> pg_backend_pid()",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if let (Some(victim), true) = (extracting, reading > 0) {
            break victim;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no extraction under way within 60s:\n{}",
            fleet.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let run = fleet.run(&run_id).await;
    assert_eq!(run["status"], "querying", "the kill lands during extraction: {run}");
    fleet.workers[victim].kill().await;

    let run = fleet.wait_run(&run_id, Duration::from_secs(180)).await;
    assert_eq!(run["status"], "success", "{run}\n{}", fleet.logs());
    assert_eq!(counts(&run, "plannedRows"), [3_000, 0, 0], "{run}");
    assert_eq!(counts(&run, "successfulRows"), [3_000, 0, 0], "{run}");
    assert_eq!(sink_emails(&sink), model_emails(&pool).await, "destination == model");
    assert_eq!(
        sink.duplicate_upserts(),
        0,
        "nothing was in flight, nothing is sent twice"
    );
    let survivor = &fleet.workers[1 - victim];
    let took_over = std::fs::read_to_string(&survivor.log)
        .unwrap_or_default()
        .lines()
        .any(|line| line.contains("task started") && line.contains(&extract_task));
    assert!(took_over, "the surviving worker extracted again:\n{}", fleet.logs());

    // The killed attempt left nothing the next run could mistake for state.
    let mut next_id = 3_001;
    let expected = mutate(&pool, &mut next_id, 200).await;
    let run_id = fleet.trigger("people-api").await;
    let run = fleet.wait_run(&run_id, Duration::from_secs(180)).await;
    let want = [expected.added, expected.changed, expected.removed];
    assert_eq!(run["status"], "success", "{run}");
    assert_eq!(counts(&run, "plannedRows"), want, "{run}");
    assert_eq!(counts(&run, "successfulRows"), want, "{run}");
    assert_eq!(sink_emails(&sink), model_emails(&pool).await, "destination == model");
    drop(fleet);
    pool.close().await;
}

/// Cancel a run while its shards send and trigger the next at once: the
/// cancelled run's shards stop between batches and report late, while the
/// next run is under way. Their results are recorded as superseded and never
/// change the cancelled run; the next run is not wedged by them and ends in
/// success; the destination equals the model after it and after one more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_runs_late_shards_neither_change_it_nor_wedge_the_next_run() {
    use ebb_tests::fleet::{counts, Fleet};
    use ebb_tests::model::model_emails;

    let (database, pool, sink) = people_and_sink("cancel_retrigger", 4_000).await;
    sink.set_behavior(Behavior {
        latency: Duration::from_millis(300),
        ..Behavior::default()
    });
    let config = people_to_api(
        &database.url,
        &sink.url(),
        "batch_size: 50, max_concurrency: 2",
        "shards: 4",
    );
    let fleet = Fleet::start(&config, 2).await;
    let cancelled_id = fleet.trigger("people-api").await;
    let shard_prefix = format!("{cancelled_id}/shard-");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while fleet
        .workers
        .iter()
        .all(|w| w.delivering_tasks(&shard_prefix).is_empty())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no shard delivering within 60s:\n{}",
            fleet.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cancelled = fleet.cancel(&cancelled_id).await;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    // Where each worker's log stood when the next run was triggered.
    let logged_before: Vec<usize> = fleet
        .workers
        .iter()
        .map(|w| std::fs::read_to_string(&w.log).unwrap_or_default().len())
        .collect();
    let next_id = fleet.trigger("people-api").await;

    let next = fleet.wait_run(&next_id, Duration::from_secs(240)).await;
    assert_eq!(next["status"], "success", "{next}\n{}", fleet.logs());
    assert_eq!(sink_emails(&sink), model_emails(&pool).await, "destination == model");
    let late = fleet.workers.iter().zip(&logged_before).any(|(worker, before)| {
        std::fs::read_to_string(&worker.log).unwrap_or_default()[*before..]
            .lines()
            .any(|line| line.contains(&shard_prefix) && line.contains("task done"))
    });
    assert!(
        late,
        "a cancelled shard reported after the next run began:\n{}",
        fleet.logs()
    );

    // The cancelled run is as the cancel left it; its late results were kept
    // apart from it.
    let after = fleet.run(&cancelled_id).await;
    assert_eq!(after["status"], "cancelled", "{after}");
    assert_eq!(after["finishedAt"], cancelled["finishedAt"], "{after}");
    for field in ["plannedRows", "successfulRows", "failedRows"] {
        assert_eq!(counts(&after, field), counts(&cancelled, field), "{field}: {after}");
    }
    let state = PgPool::connect(fleet.state_url()).await.unwrap();
    let superseded: i64 =
        sqlx::query_scalar("SELECT count(*) FROM ebb_run_shards WHERE run_id = $1 AND status = 'superseded'")
            .bind(&cancelled_id)
            .fetch_one(&state)
            .await
            .unwrap();
    assert!(superseded > 0, "the late shards are recorded as superseded");
    state.close().await;

    // And the run after converges too.
    sink.set_behavior(Behavior::default());
    let last_id = fleet.trigger("people-api").await;
    let last = fleet.wait_run(&last_id, Duration::from_secs(240)).await;
    assert_eq!(last["status"], "success", "{last}");
    assert_eq!(counts(&last, "failedRows"), [0, 0, 0], "{last}");
    assert_eq!(sink_emails(&sink), model_emails(&pool).await, "destination == model");
    drop(fleet);
    pool.close().await;
}

/// Waits (at most a minute) until the sink holds `rows` records: the run
/// is delivering.
async fn until_delivered(sink: &Sink, rows: usize, fleet: &ebb_tests::fleet::Fleet) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while sink_emails(sink).len() < rows {
        assert!(
            std::time::Instant::now() < deadline,
            "no delivery within 60s:\n{}",
            fleet.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends SIGTERM and checks the process exits 0 within 40 s, logging no error.
async fn stops_quietly(process: &mut ebb_tests::process::EbbProcess) {
    let pid = process.child.id().expect("the process runs");
    let terminated = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(terminated.success());
    let status = tokio::time::timeout(Duration::from_secs(40), process.child.wait())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{} still runs 40s after SIGTERM:\n{}",
                process.name,
                process.log_tail(30)
            )
        })
        .unwrap();
    assert!(status.success(), "{} exits cleanly: {status}", process.name);
    let log = std::fs::read_to_string(&process.log).unwrap();
    let errors: Vec<&str> = log.lines().filter(|line| line.contains("ERROR")).collect();
    assert!(
        errors.is_empty(),
        "{}: a graceful stop logs no error:\n{}",
        process.name,
        errors.join("\n")
    );
}

/// Runs a 3,000-row mirror sync on a fleet whose services sit behind fault
/// proxies, applies `fault` once rows are flowing, holds it for `hold`, heals
/// it, and checks that the run still ends in success with the destination
/// equal to the model.
async fn converges_through(
    label: &str,
    hold: Duration,
    fault: fn(&ebb_tests::fleet::FleetFaults),
    heal: fn(&ebb_tests::fleet::FleetFaults),
) {
    use ebb_tests::fleet::{counts, Fleet};
    use ebb_tests::model::model_emails;

    let (database, pool, sink) = people_and_sink(label, 3_000).await;
    sink.set_behavior(Behavior {
        latency: Duration::from_millis(20),
        ..Behavior::default()
    });
    let config = people_to_api(
        &database.url,
        &sink.url(),
        "batch_size: 50, max_concurrency: 2",
        "shards: 4",
    );
    let fleet = Fleet::start_with_faults(&config, 2).await;
    let faults = fleet.faults.as_ref().expect("a fleet with fault proxies");
    let run_id = fleet.trigger("people-api").await;
    until_delivered(&sink, 300, &fleet).await;
    fault(faults);
    // The fault's duration, not a wait for a result.
    tokio::time::sleep(hold).await;
    heal(faults);
    let run = fleet.wait_run(&run_id, Duration::from_secs(240)).await;
    assert_eq!(run["status"], "success", "{label}: {run}\n{}", fleet.logs());
    assert_eq!(counts(&run, "successfulRows"), [3_000, 0, 0], "{label}: {run}");
    assert_eq!(
        sink_emails(&sink),
        model_emails(&pool).await,
        "{label}: destination == model"
    );
    eprintln!("{label}: {} rows sent twice", sink.duplicate_upserts());
    drop(fleet);
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_db_paused_for_30s_mid_run_loses_nothing() {
    converges_through(
        "state_paused",
        Duration::from_secs(30),
        |f| f.state.stall(),
        |f| f.state.resume(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_store_stalled_for_60s_mid_run_loses_nothing() {
    converges_through(
        "store_stalled",
        Duration::from_secs(60),
        |f| f.store.stall(),
        |f| f.store.resume(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_store_refusing_connections_for_60s_mid_run_loses_nothing() {
    converges_through(
        "store_refusing",
        Duration::from_secs(60),
        |f| {
            f.store.refuse_next(u32::MAX);
            f.store.cut();
        },
        |f| f.store.refuse_next(0),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_drops_every_connection_for_10s_mid_run_loses_nothing() {
    converges_through(
        "broker_down",
        Duration::from_secs(10),
        |f| {
            f.broker.refuse_next(u32::MAX);
            f.broker.cut();
        },
        |f| f.broker.refuse_next(0),
    )
    .await;
}

/// A broker stopped the way RabbitMQ stops (`rabbitmqctl stop`, a rolling
/// restart): every connection is told `320 CONNECTION_FORCED` and closed, and
/// the broker stays away 10 s. Workers and the coordinator reconnect and the
/// run ends as if nothing happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_stopped_gracefully_for_10s_mid_run_loses_nothing() {
    converges_through(
        "broker_stopped",
        Duration::from_secs(10),
        |f| {
            f.broker.refuse_next(u32::MAX);
            f.broker.shut_down_amqp();
        },
        |f| f.broker.refuse_next(0),
    )
    .await;
}
