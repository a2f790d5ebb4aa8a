//! The task and result queues.
//!
//! Workers take tasks from `Tasks` and publish reports to `Results`; tasks that
//! keep failing (a worker crashing on them again and again) are dead-lettered to
//! `DeadTasks`, where the coordinator fails their run with a named error;
//! results the coordinator cannot read or record go to `DeadResults`, likewise. Two
//! implementations behind one trait: RabbitMQ for a fleet, an in-process queue
//! for `ebb standalone`. Nothing in the sync path knows which one it talks to.
//! A fleet's messages are signed with its key (`signed.rs`).

mod amqp;
mod memory;
mod signed;

pub use amqp::{AmqpQueue, AmqpSettings};
pub use memory::MemoryQueue;
pub use signed::{FleetKey, SignedQueue, SIGNATURE_HEADER};

use async_trait::async_trait;
use futures::stream::BoxStream;
use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueueName {
    Tasks,
    Results,
    DeadTasks,
    DeadResults,
}

impl QueueName {
    pub fn as_str(&self) -> &'static str {
        match self {
            QueueName::Tasks => "ebb.tasks",
            QueueName::Results => "ebb.results",
            QueueName::DeadTasks => "ebb.tasks.dead",
            QueueName::DeadResults => "ebb.results.dead",
        }
    }
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How many times a task may be handed out before it is dead-lettered. A worker
/// that crashes mid-task returns it once; a task that crashes every worker it
/// meets must not circle forever.
pub const DELIVERY_LIMIT: u32 = 5;

/// How many times a result may be handed to the coordinator before it is
/// dead-lettered: each failed attempt to record it waits a second, so this
/// rides out a state DB restart, yet a result that can never be recorded
/// fails its run by name instead of circling (RabbitMQ 4 would otherwise drop
/// it silently after its default limit).
pub const RESULT_DELIVERY_LIMIT: u32 = 20;

/// The dead-letter queue of each queue that has one.
pub fn dead_letter_queue(queue: QueueName) -> Option<QueueName> {
    match queue {
        QueueName::Tasks => Some(QueueName::DeadTasks),
        QueueName::Results => Some(QueueName::DeadResults),
        QueueName::DeadTasks | QueueName::DeadResults => None,
    }
}

/// How many hand-outs a queue allows before dead-lettering.
pub fn delivery_limit(queue: QueueName) -> Option<u32> {
    match queue {
        QueueName::Tasks => Some(DELIVERY_LIMIT),
        QueueName::Results => Some(RESULT_DELIVERY_LIMIT),
        QueueName::DeadTasks | QueueName::DeadResults => None,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue {queue}: cannot connect to {url}: {reason}")]
    Connect {
        queue: &'static str,
        url: String,
        reason: String,
    },
    #[error("queue {queue}: the broker did not confirm the message: {reason}")]
    NotConfirmed { queue: &'static str, reason: String },
    #[error("queue: {0}")]
    Broker(String),
    #[error("queue closed")]
    Closed,
}

#[derive(Debug, Clone, Default)]
pub struct OutgoingMessage {
    pub payload: Vec<u8>,
    /// W3C `traceparent` and friends.
    pub headers: BTreeMap<String, String>,
}

impl OutgoingMessage {
    pub fn new(payload: Vec<u8>) -> Self {
        OutgoingMessage {
            payload,
            headers: BTreeMap::new(),
        }
    }

    /// A message carrying the current span's trace context, so that whoever
    /// takes it continues the same trace.
    pub fn traced(payload: Vec<u8>) -> Self {
        let mut message = OutgoingMessage::new(payload);
        crate::telemetry::inject(&mut message.headers);
        message
    }
}

#[async_trait]
pub trait MessageQueue: Send + Sync + 'static {
    /// Publishes a persistent message and returns once the broker has confirmed
    /// that a queue holds it.
    async fn publish(&self, queue: QueueName, message: OutgoingMessage) -> Result<(), QueueError>;

    /// An endless stream of deliveries; reconnects underneath after broker
    /// failures. At most `prefetch` deliveries are unacknowledged at once.
    async fn consume(&self, queue: QueueName, prefetch: u16) -> Result<BoxStream<'static, Delivery>, QueueError>;

    /// Messages waiting in a queue (not counting unacknowledged ones), for metrics
    /// and autoscaling.
    async fn depth(&self, queue: QueueName) -> Result<u64, QueueError>;

    /// Closes every connection cleanly (a process stopping, after its
    /// consumers have answered what they took). Publishing after it reconnects;
    /// consumers stop reconnecting.
    async fn close(&self) {}
}

#[async_trait]
pub trait Acknowledge: Send {
    async fn ack(self: Box<Self>) -> Result<(), QueueError>;
    /// Gives the message back to the queue, to be delivered again (and counted).
    async fn requeue(self: Box<Self>) -> Result<(), QueueError>;
    /// Refuses the message for good: a task goes to the dead-letter queue at
    /// once, where the coordinator fails its run; nothing else keeps it.
    async fn reject(self: Box<Self>) -> Result<(), QueueError>;
}

pub struct Delivery {
    pub payload: Vec<u8>,
    pub headers: BTreeMap<String, String>,
    /// 1 on first delivery; grows with every return to the queue.
    pub delivery_count: u32,
    acknowledge: Box<dyn Acknowledge>,
}

impl Delivery {
    pub fn new(
        payload: Vec<u8>,
        headers: BTreeMap<String, String>,
        delivery_count: u32,
        acknowledge: Box<dyn Acknowledge>,
    ) -> Self {
        Delivery {
            payload,
            headers,
            delivery_count,
            acknowledge,
        }
    }

    pub async fn ack(self) -> Result<(), QueueError> {
        self.acknowledge.ack().await
    }

    pub async fn requeue(self) -> Result<(), QueueError> {
        self.acknowledge.requeue().await
    }

    pub async fn reject(self) -> Result<(), QueueError> {
        self.acknowledge.reject().await
    }
}

/// Headers every task carries beside its payload, so that even a task nobody
/// can decode (a newer message kind during a rolling upgrade) names its run.
pub const RUN_ID_HEADER: &str = "ebb-run-id";
pub const TASK_ID_HEADER: &str = "ebb-task-id";

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("bytes", &self.payload.len())
            .field("delivery_count", &self.delivery_count)
            .finish()
    }
}
