//! The queue contract, run against both implementations: the in-process queue of
//! `ebb standalone` and RabbitMQ. Acknowledged messages are gone; returned ones
//! come back with a higher delivery count; past the delivery limit a task goes
//! to the dead-letter queue; RabbitMQ consumers and publishers survive the
//! broker closing their connections.

use ebb_shared::queue::{
    AmqpQueue, AmqpSettings, MemoryQueue, MessageQueue, OutgoingMessage, QueueName, DELIVERY_LIMIT,
};
use futures::StreamExt;
use std::time::Duration;

/// Closing every broker connection would disturb the other RabbitMQ test of this
/// binary; they take turns.
static BROKER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn rabbitmq(prefix: &str) -> AmqpQueue {
    let url = std::env::var("EBB_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let settings = AmqpSettings::new(url).with_prefix(format!("{prefix}-{}.", rand::random::<u32>()));
    AmqpQueue::connect(settings).await.unwrap_or_else(|e| {
        panic!("RabbitMQ is not reachable ({e}); start it with: rabbitmq-server -detached && rabbitmqctl await_startup")
    })
}

async fn next(
    stream: &mut futures::stream::BoxStream<'static, ebb_shared::queue::Delivery>,
) -> ebb_shared::queue::Delivery {
    tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("a delivery within 20s")
        .expect("the stream goes on")
}

async fn contract(queue: &dyn MessageQueue) {
    let mut message = OutgoingMessage::new(b"task-1".to_vec());
    message.headers.insert("traceparent".into(), "00-abc-def-01".into());
    queue.publish(QueueName::Tasks, message).await.unwrap();
    let mut tasks = queue.consume(QueueName::Tasks, 1).await.unwrap();

    let first = next(&mut tasks).await;
    assert_eq!(first.payload, b"task-1");
    assert_eq!(
        first.headers.get("traceparent").map(String::as_str),
        Some("00-abc-def-01")
    );
    assert_eq!(first.delivery_count, 1);
    first.requeue().await.unwrap();
    let again = next(&mut tasks).await;
    assert_eq!(again.payload, b"task-1");
    assert_eq!(again.delivery_count, 2, "a returned task is counted");
    again.ack().await.unwrap();

    // A task that every worker gives back ends in the dead-letter queue.
    queue
        .publish(QueueName::Tasks, OutgoingMessage::new(b"poison".to_vec()))
        .await
        .unwrap();
    for _ in 0..DELIVERY_LIMIT {
        let delivery = next(&mut tasks).await;
        assert_eq!(delivery.payload, b"poison");
        delivery.requeue().await.unwrap();
    }
    let mut dead = queue.consume(QueueName::DeadTasks, 1).await.unwrap();
    let buried = next(&mut dead).await;
    assert_eq!(buried.payload, b"poison");
    buried.ack().await.unwrap();

    queue
        .publish(QueueName::Results, OutgoingMessage::new(b"result".to_vec()))
        .await
        .unwrap();
    let mut results = queue.consume(QueueName::Results, 1).await.unwrap();
    next(&mut results).await.ack().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(queue.depth(QueueName::Tasks).await.unwrap(), 0);
    assert_eq!(queue.depth(QueueName::Results).await.unwrap(), 0);
}

#[tokio::test]
async fn memory_queue_keeps_the_contract() {
    contract(&MemoryQueue::new()).await;
}

#[tokio::test]
async fn rabbitmq_keeps_the_contract() {
    let _turn = BROKER.lock().await;
    contract(&rabbitmq("contract").await).await;
}

#[tokio::test]
async fn rabbitmq_consumers_and_publishers_survive_lost_connections() {
    let _turn = BROKER.lock().await;
    let queue = rabbitmq("reconnect").await;
    let mut tasks = queue.consume(QueueName::Tasks, 1).await.unwrap();
    queue
        .publish(QueueName::Tasks, OutgoingMessage::new(b"before".to_vec()))
        .await
        .unwrap();
    let before = next(&mut tasks).await;
    assert_eq!(before.payload, b"before");
    // The broker drops every connection: the unacknowledged delivery dies with its
    // channel and must come back on the new one.
    let closed = tokio::process::Command::new("rabbitmqctl")
        .args(["close_all_connections", "test: simulated network loss"])
        .output()
        .await
        .expect("rabbitmqctl runs");
    assert!(closed.status.success(), "{}", String::from_utf8_lossy(&closed.stderr));
    // Its ack may or may not reach the broker before the close; either way the
    // consumer must carry on.
    let _ = before.ack().await;
    queue
        .publish(QueueName::Tasks, OutgoingMessage::new(b"after".to_vec()))
        .await
        .unwrap();
    let mut seen = Vec::new();
    while !seen.contains(&b"after".to_vec()) {
        let delivery = next(&mut tasks).await;
        seen.push(delivery.payload.clone());
        delivery.ack().await.unwrap();
    }
    assert!(seen.contains(&b"after".to_vec()), "{seen:?}");
}
