//! RabbitMQ: durable quorum queues, publisher confirms, a dead-letter exchange
//! for tasks past the delivery limit, and reconnection with re-declared topology.
//!
//! lapin's own recovery is young, so this module supervises connections itself:
//! any error drops the connection and the next call (or the consumer loop) opens
//! a new one and declares the topology again. Deliveries received on a dead
//! channel cannot be acknowledged; the broker hands them out again.

use super::{Acknowledge, Delivery, MessageQueue, OutgoingMessage, QueueError, QueueName, DELIVERY_LIMIT};
use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

const DEAD_LETTER_EXCHANGE: &str = "ebb.dead";
/// How long `publish` keeps reconnecting before it gives up.
const PUBLISH_DEADLINE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct AmqpSettings {
    /// `amqp://user:password@host:5672/vhost`
    pub url: String,
    pub delivery_limit: u32,
    /// Prepended to every queue and exchange name, so that several Ebb
    /// installations (or test suites) can share one broker.
    pub prefix: String,
}

impl AmqpSettings {
    pub fn new(url: impl Into<String>) -> Self {
        AmqpSettings {
            url: url.into(),
            delivery_limit: DELIVERY_LIMIT,
            prefix: String::new(),
        }
    }

    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    fn queue(&self, queue: QueueName) -> String {
        format!("{}{}", self.prefix, queue.as_str())
    }

    fn dead_letter_exchange(&self) -> String {
        format!("{}{DEAD_LETTER_EXCHANGE}", self.prefix)
    }
}

pub struct AmqpQueue {
    settings: Arc<AmqpSettings>,
    publisher: Mutex<Option<(Connection, Channel)>>,
    /// The consumers' connections still open, for `close`.
    links: Arc<std::sync::Mutex<Vec<std::sync::Weak<Link>>>>,
    closing: Closing,
    /// Set by `close`: consumers' supervisors then stop instead of reconnecting
    /// (a connection opened after `close` would outlive the process's stop).
    closed: Arc<std::sync::atomic::AtomicBool>,
}

impl AmqpQueue {
    /// Connects once to fail fast on a wrong URL, and declares the topology.
    pub async fn connect(settings: AmqpSettings) -> Result<AmqpQueue, QueueError> {
        let settings = Arc::new(settings);
        let opened = open_channel(&settings, None).await?;
        Ok(AmqpQueue {
            settings,
            publisher: Mutex::new(Some(opened)),
            links: Arc::default(),
            closing: Arc::default(),
            closed: Arc::default(),
        })
    }

    /// Deletes this installation's queues (with any messages in them) and its
    /// dead-letter exchange: for tearing down a prefix nothing will use again,
    /// such as a test's.
    pub async fn delete_topology(&self) -> Result<(), QueueError> {
        let (connection, channel) = open_channel(&self.settings, None).await?;
        let failed = |what: String, e: lapin::Error| QueueError::Connect {
            queue: "amqp",
            url: crate::redact::redact_url(&self.settings.url),
            reason: format!("deleting {what}: {e}"),
        };
        for queue in ALL_QUEUES {
            let name = self.settings.queue(queue);
            channel
                .queue_delete(&name, QueueDeleteOptions::default())
                .await
                .map_err(|e| failed(name.clone(), e))?;
        }
        let exchange = self.settings.dead_letter_exchange();
        channel
            .exchange_delete(&exchange, ExchangeDeleteOptions::default())
            .await
            .map_err(|e| failed(exchange.clone(), e))?;
        let _ = connection.close(200, "topology deleted").await;
        Ok(())
    }

    async fn try_publish(&self, queue: QueueName, message: &OutgoingMessage) -> Result<(), QueueError> {
        let mut guard = self.publisher.lock().await;
        if guard
            .as_ref()
            .is_none_or(|(connection, channel)| !connection.status().connected() || !channel.status().connected())
        {
            if let Some((old, _)) = guard.take() {
                // Close what is left of it, or its IO loop logs errors at exit.
                let _ = old.close(200, "reconnecting").await;
            }
            *guard = Some(open_channel(&self.settings, None).await?);
        }
        let (_, channel) = guard.as_ref().expect("opened above");
        let mut headers = FieldTable::default();
        for (name, value) in &message.headers {
            headers.insert(
                ShortString::from(name.clone()),
                AMQPValue::LongString(LongString::from(value.clone())),
            );
        }
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(ShortString::from("application/msgpack"))
            .with_headers(headers);
        let result = async {
            let confirm = channel
                .basic_publish(
                    "",
                    &self.settings.queue(queue),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &message.payload,
                    properties,
                )
                .await?
                .await?;
            Ok::<_, lapin::Error>(confirm)
        }
        .await;
        match result {
            Ok(Confirmation::Ack(None)) => Ok(()),
            Ok(Confirmation::Ack(Some(_))) => Err(QueueError::NotConfirmed {
                queue: queue.as_str(),
                reason: "no queue took the message (returned as unroutable)".into(),
            }),
            Ok(Confirmation::Nack(_)) => Err(QueueError::NotConfirmed {
                queue: queue.as_str(),
                reason: "the broker refused the message (nack)".into(),
            }),
            Ok(Confirmation::NotRequested) => Err(QueueError::NotConfirmed {
                queue: queue.as_str(),
                reason: "publisher confirms are off on this channel".into(),
            }),
            Err(error) => {
                *guard = None;
                Err(QueueError::Broker(error.to_string()))
            }
        }
    }
}

fn queue_arguments(queue: QueueName, settings: &AmqpSettings) -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    let limit = match queue {
        QueueName::Tasks => Some(settings.delivery_limit),
        other => super::delivery_limit(other),
    };
    if let (Some(limit), Some(dead)) = (limit, super::dead_letter_queue(queue)) {
        // RabbitMQ dead-letters a message once it has been *returned* more than
        // `x-delivery-limit` times, so it is handed out limit + 1 times; ours
        // counts hand-outs, like the in-process queue.
        arguments.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(limit.saturating_sub(1) as i32),
        );
        arguments.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(settings.dead_letter_exchange().into()),
        );
        arguments.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(settings.queue(dead).into()),
        );
    }
    arguments
}

/// Every queue, dead-letter queues first (so that what they receive exists).
const ALL_QUEUES: [QueueName; 4] = [
    QueueName::DeadTasks,
    QueueName::DeadResults,
    QueueName::Tasks,
    QueueName::Results,
];

/// What declaring the topology found.
enum Declared {
    AsSpecified,
    /// A queue exists with other arguments (declared by an earlier version):
    /// the broker closed the channel; the caller re-opens it and declares the
    /// rest passively.
    Differs(QueueName),
}

fn is_precondition_failed(error: &lapin::Error) -> bool {
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    matches!(error, lapin::Error::ProtocolError(e)
        if matches!(e.kind(), AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)))
}

async fn declare_topology(
    channel: &Channel,
    settings: &AmqpSettings,
    passive: &[QueueName],
) -> Result<Declared, lapin::Error> {
    channel
        .exchange_declare(
            &settings.dead_letter_exchange(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    for queue in ALL_QUEUES {
        let options = QueueDeclareOptions {
            durable: true,
            passive: passive.contains(&queue),
            ..Default::default()
        };
        match channel
            .queue_declare(&settings.queue(queue), options, queue_arguments(queue, settings))
            .await
        {
            Ok(_) => {}
            Err(error) if is_precondition_failed(&error) => return Ok(Declared::Differs(queue)),
            Err(error) => return Err(error),
        }
    }
    for dead in [QueueName::DeadTasks, QueueName::DeadResults] {
        channel
            .queue_bind(
                &settings.queue(dead),
                &settings.dead_letter_exchange(),
                &settings.queue(dead),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(Declared::AsSpecified)
}

async fn open_channel(settings: &AmqpSettings, prefetch: Option<u16>) -> Result<(Connection, Channel), QueueError> {
    let connect_error = |reason: String| QueueError::Connect {
        queue: "amqp",
        url: crate::redact::redact_url(&settings.url),
        reason,
    };
    let properties = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio);
    let connection = tokio::time::timeout(Duration::from_secs(10), Connection::connect(&settings.url, properties))
        .await
        .map_err(|_| connect_error("timed out after 10s".into()))?
        .map_err(|e| connect_error(e.to_string()))?;
    let mut passive = Vec::new();
    loop {
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        if let Some(prefetch) = prefetch {
            channel
                .basic_qos(prefetch, BasicQosOptions::default())
                .await
                .map_err(|e| connect_error(e.to_string()))?;
        }
        match declare_topology(&channel, settings, &passive)
            .await
            .map_err(|e| connect_error(format!("declaring queues: {e}")))?
        {
            Declared::AsSpecified => return Ok((connection, channel)),
            Declared::Differs(queue) if !passive.contains(&queue) => {
                // Queue arguments cannot change in place. Keep the queue as it
                // is (its messages matter more) and say how to upgrade it.
                tracing::warn!(
                    queue = %settings.queue(queue),
                    "this queue was declared by an earlier Ebb with other arguments (delivery limit, \
                     dead-letter path); using it as it is. To apply them: stop the fleet once it is idle, \
                     delete the queue, and start again"
                );
                passive.push(queue);
            }
            Declared::Differs(queue) => {
                return Err(connect_error(format!(
                    "queue {} exists with other arguments and cannot be used",
                    settings.queue(queue)
                )))
            }
        }
    }
}

/// A consumer's connection, kept open while its supervisor or any delivery it
/// handed out lives: a worker that stops consuming (SIGTERM) can still answer
/// the tasks it is finishing. Closed cleanly when the last one goes.
struct Link {
    connection: Option<Connection>,
    /// Held so that the channel stays open: lapin closes it with its last
    /// handle, so it is dropped only after its connection closed.
    channel: Option<Channel>,
    /// Closes started by drops, for `close` to wait for: a process must not
    /// exit in the middle of one (its IO loop would log errors).
    closing: Closing,
}

type Closing = Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>;

impl Drop for Link {
    fn drop(&mut self) {
        if let (Some(connection), Ok(runtime)) = (self.connection.take(), tokio::runtime::Handle::try_current()) {
            let channel = self.channel.take();
            let handle = runtime.spawn(async move {
                if connection.status().connected() {
                    let _ = connection.close(200, "consumer done").await;
                }
                drop(channel);
            });
            let mut closing = self.closing.lock().unwrap();
            closing.retain(|handle| !handle.is_finished());
            closing.push(handle);
        }
    }
}

impl Link {
    async fn close(&self) {
        if let Some(connection) = &self.connection {
            if connection.status().connected() {
                let _ = connection.close(200, "closing").await;
            }
        }
    }
}

/// How long an answer to a delivery may take before it counts as lost (the
/// broker then hands the message out again).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

struct AmqpAck {
    acker: lapin::acker::Acker,
    _link: Arc<Link>,
}

async fn answer(
    what: &str,
    sent: impl std::future::Future<Output = Result<(), lapin::Error>>,
) -> Result<(), QueueError> {
    match tokio::time::timeout(ANSWER_TIMEOUT, sent).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(QueueError::Broker(format!(
            "{what} failed (the message will be delivered again): {e}"
        ))),
        Err(_) => Err(QueueError::Broker(format!(
            "{what} got no answer within {ANSWER_TIMEOUT:?} (the message will be delivered again)"
        ))),
    }
}

#[async_trait]
impl Acknowledge for AmqpAck {
    async fn ack(self: Box<Self>) -> Result<(), QueueError> {
        answer("ack", self.acker.ack(BasicAckOptions::default())).await
    }

    async fn requeue(self: Box<Self>) -> Result<(), QueueError> {
        let options = BasicNackOptions {
            requeue: true,
            ..Default::default()
        };
        answer("requeue", self.acker.nack(options)).await
    }

    async fn reject(self: Box<Self>) -> Result<(), QueueError> {
        let options = BasicNackOptions {
            requeue: false,
            ..Default::default()
        };
        answer("reject", self.acker.nack(options)).await
    }
}

fn delivery_from(delivery: lapin::message::Delivery, link: &Arc<Link>) -> Delivery {
    let mut headers = BTreeMap::new();
    let mut previous_deliveries = None;
    if let Some(table) = delivery.properties.headers() {
        for (name, value) in table.inner() {
            match value {
                AMQPValue::LongString(text) => {
                    headers.insert(name.to_string(), String::from_utf8_lossy(text.as_bytes()).into_owned());
                }
                AMQPValue::LongLongInt(n) if name.as_str() == "x-delivery-count" => {
                    previous_deliveries = Some(*n as u32)
                }
                AMQPValue::LongInt(n) if name.as_str() == "x-delivery-count" => previous_deliveries = Some(*n as u32),
                AMQPValue::LongUInt(n) if name.as_str() == "x-delivery-count" => previous_deliveries = Some(*n),
                _ => {}
            }
        }
    }
    let delivery_count = match previous_deliveries {
        Some(previous) => previous + 1,
        None if delivery.redelivered => 2,
        None => 1,
    };
    Delivery::new(
        delivery.data,
        headers,
        delivery_count,
        Box::new(AmqpAck {
            acker: delivery.acker,
            _link: link.clone(),
        }),
    )
}

#[async_trait]
impl MessageQueue for AmqpQueue {
    async fn publish(&self, queue: QueueName, message: OutgoingMessage) -> Result<(), QueueError> {
        let deadline = tokio::time::Instant::now() + PUBLISH_DEADLINE;
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.try_publish(queue, &message).await {
                Ok(()) => return Ok(()),
                Err(error) if tokio::time::Instant::now() + backoff < deadline => {
                    tracing::warn!(%error, queue = queue.as_str(), "publish failed; reconnecting");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn consume(&self, queue: QueueName, prefetch: u16) -> Result<BoxStream<'static, Delivery>, QueueError> {
        let settings = self.settings.clone();
        let links = self.links.clone();
        let closing = self.closing.clone();
        let closed = self.closed.clone();
        let (sender, receiver) = tokio::sync::mpsc::channel::<Delivery>(1);
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        // Fail fast on the first connection; reconnect quietly afterwards.
        let first = open_channel(&settings, Some(prefetch)).await?;
        tokio::spawn(async move {
            let mut opened = Some(first);
            let mut backoff = Duration::from_millis(200);
            loop {
                let (connection, channel) = match opened.take() {
                    Some(pair) => pair,
                    None if closed.load(std::sync::atomic::Ordering::SeqCst) => return,
                    None => match open_channel(&settings, Some(prefetch)).await {
                        Ok(pair) => pair,
                        Err(error) => {
                            tracing::warn!(%error, queue = queue.as_str(), "reconnect failed; retrying");
                            tokio::select! {
                                _ = tokio::time::sleep(backoff) => {}
                                _ = &mut stopped => return,
                            }
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                            continue;
                        }
                    },
                };
                let link = Arc::new(Link {
                    connection: Some(connection),
                    channel: Some(channel.clone()),
                    closing: closing.clone(),
                });
                {
                    let mut links = links.lock().unwrap();
                    links.retain(|link| link.strong_count() > 0);
                    links.push(Arc::downgrade(&link));
                }
                let consumer = channel
                    .basic_consume(
                        &settings.queue(queue),
                        "",
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await;
                let mut consumer = match consumer {
                    Ok(consumer) => consumer,
                    Err(error) => {
                        tracing::warn!(%error, queue = queue.as_str(), "basic.consume failed; reconnecting");
                        tokio::time::sleep(backoff).await;
                        continue;
                    }
                };
                backoff = Duration::from_millis(200);
                loop {
                    let item = tokio::select! {
                        item = consumer.next() => item,
                        _ = &mut stopped => {
                            // The reader is gone (a worker draining): take no
                            // more, and leave the connection to the deliveries
                            // still being answered; it closes after the last.
                            let _ = channel
                                .basic_cancel(consumer.tag().as_str(), BasicCancelOptions::default())
                                .await;
                            return;
                        }
                    };
                    match item {
                        Some(Ok(delivery)) => {
                            let delivery = delivery_from(delivery, &link);
                            tokio::select! {
                                sent = sender.send(delivery) => if sent.is_err() { return },
                                _ = &mut stopped => {
                                    let _ = channel
                                        .basic_cancel(consumer.tag().as_str(), BasicCancelOptions::default())
                                        .await;
                                    return;
                                }
                            }
                        }
                        Some(Err(error)) => {
                            tracing::warn!(%error, queue = queue.as_str(), "consumer failed; reconnecting");
                            break;
                        }
                        None => break,
                    }
                }
                drop(channel);
                drop(link);
                tokio::time::sleep(backoff).await;
            }
        });
        let guard = StopOnDrop(Some(stop));
        let stream = futures::stream::unfold((receiver, guard), |(mut receiver, guard)| async move {
            receiver.recv().await.map(|delivery| (delivery, (receiver, guard)))
        });
        Ok(Box::pin(stream))
    }

    async fn depth(&self, queue: QueueName) -> Result<u64, QueueError> {
        let (connection, channel) = open_channel(&self.settings, None).await?;
        let declared = channel
            .queue_declare(
                &self.settings.queue(queue),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| QueueError::Broker(e.to_string()));
        let _ = connection.close(200, "depth").await;
        Ok(declared?.message_count() as u64)
    }

    async fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some((connection, _)) = self.publisher.lock().await.take() {
            if connection.status().connected() {
                let _ = connection.close(200, "closing").await;
            }
        }
        let links: Vec<Arc<Link>> = self
            .links
            .lock()
            .unwrap()
            .drain(..)
            .filter_map(|link| link.upgrade())
            .collect();
        for link in links {
            link.close().await;
        }
        let pending: Vec<_> = self.closing.lock().unwrap().drain(..).collect();
        for handle in pending {
            let _ = handle.await;
        }
    }
}

/// Tells a consumer's supervisor that its reader is gone.
struct StopOnDrop(Option<tokio::sync::oneshot::Sender<()>>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(stop) = self.0.take() {
            let _ = stop.send(());
        }
    }
}
