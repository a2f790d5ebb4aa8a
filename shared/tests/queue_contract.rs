//! The queue contract, run against both implementations: the in-process queue of
//! `ebb standalone` and RabbitMQ. Acknowledged messages are gone; returned ones
//! come back with a higher delivery count; past the delivery limit a task goes
//! to the dead-letter queue; RabbitMQ consumers and publishers survive the
//! broker closing their connections.

use ebb_shared::queue::{
    AmqpQueue, AmqpSettings, MemoryQueue, MessageQueue, OutgoingMessage, QueueName, DELIVERY_LIMIT,
    RESULT_DELIVERY_LIMIT,
};
use futures::StreamExt;
use std::time::Duration;

/// A RabbitMQ queue of this test's own: its own name prefix, and a connection
/// through a loopback proxy that the test can cut, so that a simulated network
/// loss touches no other client of the broker.
async fn rabbitmq(prefix: &str) -> (AmqpQueue, CuttableProxy) {
    let broker = std::env::var("EBB_TEST_AMQP_ADDR").unwrap_or_else(|_| "127.0.0.1:5672".into());
    let proxy = CuttableProxy::start(&broker).await;
    let url = format!("amqp://guest:guest@{}/%2f", proxy.address);
    let settings = AmqpSettings::new(url).with_prefix(format!("{prefix}-{}.", rand::random::<u32>()));
    let queue = AmqpQueue::connect(settings).await.unwrap_or_else(|e| {
        panic!(
            "RabbitMQ is not reachable at {broker} ({e}); start it with: rabbitmq-server -detached && rabbitmqctl await_startup \
             (or point EBB_TEST_AMQP_ADDR at a broker, guest/guest)"
        )
    });
    (queue, proxy)
}

/// Forwards loopback connections to the broker until `cut` closes them all.
struct CuttableProxy {
    address: std::net::SocketAddr,
    connections: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    acceptor: tokio::task::JoinHandle<()>,
}

impl CuttableProxy {
    async fn start(broker: &str) -> CuttableProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let connections: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> = Default::default();
        let (broker, open) = (broker.to_string(), connections.clone());
        let acceptor = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let broker = broker.clone();
                open.lock().unwrap().push(tokio::spawn(async move {
                    if let Ok(mut upstream) = tokio::net::TcpStream::connect(&broker).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                }));
            }
        });
        CuttableProxy {
            address,
            connections,
            acceptor,
        }
    }

    /// Closes every connection open now (new ones are forwarded again).
    fn cut(&self) {
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        self.cut();
    }
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

    // A task refused for good goes to the dead-letter queue at once, headers kept.
    let mut unreadable = OutgoingMessage::new(b"unreadable".to_vec());
    unreadable.headers.insert("ebb-run-id".into(), "run-7".into());
    queue.publish(QueueName::Tasks, unreadable).await.unwrap();
    let refused = next(&mut tasks).await;
    assert_eq!(
        (refused.payload.as_slice(), refused.delivery_count),
        (&b"unreadable"[..], 1)
    );
    refused.reject().await.unwrap();
    let buried = next(&mut dead).await;
    assert_eq!(buried.payload, b"unreadable");
    assert_eq!(buried.headers.get("ebb-run-id").map(String::as_str), Some("run-7"));
    buried.ack().await.unwrap();

    queue
        .publish(QueueName::Results, OutgoingMessage::new(b"result".to_vec()))
        .await
        .unwrap();
    let mut results = queue.consume(QueueName::Results, 1).await.unwrap();
    next(&mut results).await.ack().await.unwrap();

    // Results have their own limit and dead-letter queue: one the coordinator
    // cannot record goes there after RESULT_DELIVERY_LIMIT hand-outs, one it
    // cannot read at once.
    queue
        .publish(QueueName::Results, OutgoingMessage::new(b"unrecordable".to_vec()))
        .await
        .unwrap();
    for _ in 0..RESULT_DELIVERY_LIMIT {
        let delivery = next(&mut results).await;
        assert_eq!(delivery.payload, b"unrecordable");
        delivery.requeue().await.unwrap();
    }
    let mut dead_results = queue.consume(QueueName::DeadResults, 1).await.unwrap();
    let buried = next(&mut dead_results).await;
    assert_eq!(buried.payload, b"unrecordable");
    buried.ack().await.unwrap();
    let mut unreadable = OutgoingMessage::new(b"unreadable-result".to_vec());
    unreadable.headers.insert("ebb-task-id".into(), "run-8/shard-1".into());
    queue.publish(QueueName::Results, unreadable).await.unwrap();
    next(&mut results).await.reject().await.unwrap();
    let buried = next(&mut dead_results).await;
    assert_eq!(buried.payload, b"unreadable-result");
    assert_eq!(
        buried.headers.get("ebb-task-id").map(String::as_str),
        Some("run-8/shard-1")
    );
    buried.ack().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(queue.depth(QueueName::Tasks).await.unwrap(), 0);
    assert_eq!(queue.depth(QueueName::Results).await.unwrap(), 0);
    assert_eq!(queue.depth(QueueName::DeadResults).await.unwrap(), 0);
}

#[tokio::test]
async fn memory_queue_keeps_the_contract() {
    contract(&MemoryQueue::new()).await;
}

#[tokio::test]
async fn rabbitmq_keeps_the_contract() {
    let (queue, _proxy) = rabbitmq("contract").await;
    contract(&queue).await;
    queue.delete_topology().await.unwrap();
}

#[tokio::test]
async fn rabbitmq_consumers_and_publishers_survive_lost_connections() {
    let (queue, proxy) = rabbitmq("reconnect").await;
    let mut tasks = queue.consume(QueueName::Tasks, 1).await.unwrap();
    queue
        .publish(QueueName::Tasks, OutgoingMessage::new(b"before".to_vec()))
        .await
        .unwrap();
    let before = next(&mut tasks).await;
    assert_eq!(before.payload, b"before");
    // The network drops every connection of this queue: the unacknowledged
    // delivery dies with its channel and must come back on the new one.
    proxy.cut();
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
    queue.delete_topology().await.unwrap();
}

/// A results queue declared by an earlier version (no delivery limit, no
/// dead-letter path) cannot be redeclared with new arguments: the queue is
/// used as it is, with its messages, instead of failing every start.
#[tokio::test]
async fn a_results_queue_of_an_earlier_version_is_kept_with_its_messages() {
    let broker = std::env::var("EBB_TEST_AMQP_ADDR").unwrap_or_else(|_| "127.0.0.1:5672".into());
    let prefix = format!("legacy-{}.", rand::random::<u32>());
    let url = format!("amqp://guest:guest@{broker}/%2f");
    {
        use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
        use lapin::types::{AMQPValue, FieldTable};
        let connection = lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
            .await
            .unwrap_or_else(|e| {
                panic!("RabbitMQ is not reachable at {broker} ({e}); start it with: rabbitmq-server -detached")
            });
        let channel = connection.create_channel().await.unwrap();
        let mut arguments = FieldTable::default();
        arguments.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        let name = format!("{prefix}ebb.results");
        channel
            .queue_declare(
                &name,
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                arguments,
            )
            .await
            .unwrap();
        channel
            .basic_publish(
                "",
                &name,
                BasicPublishOptions::default(),
                b"waiting",
                Default::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        connection.close(200, "done").await.unwrap();
    }
    let queue = AmqpQueue::connect(AmqpSettings::new(url).with_prefix(prefix))
        .await
        .expect("an earlier version's results queue does not stop the start");
    let mut results = queue.consume(QueueName::Results, 1).await.unwrap();
    let waiting = next(&mut results).await;
    assert_eq!(waiting.payload, b"waiting", "its message is still there");
    waiting.ack().await.unwrap();
    queue
        .publish(QueueName::Tasks, OutgoingMessage::new(b"task".to_vec()))
        .await
        .unwrap();
    let mut tasks = queue.consume(QueueName::Tasks, 1).await.unwrap();
    next(&mut tasks).await.ack().await.unwrap();
    queue.delete_topology().await.unwrap();
}
