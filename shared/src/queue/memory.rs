//! The in-process queue of `ebb standalone`: the same contract as RabbitMQ
//! (acknowledgements, redelivery of what was not acknowledged, a delivery limit
//! with a dead-letter queue), without a broker.

use super::{Acknowledge, Delivery, MessageQueue, OutgoingMessage, QueueError, QueueName};
use async_trait::async_trait;
use futures::stream::BoxStream;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

#[derive(Clone, Default)]
pub struct MemoryQueue {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    queues: Mutex<HashMap<QueueName, VecDeque<Stored>>>,
    notify: Notify,
}

#[derive(Clone)]
struct Stored {
    payload: Vec<u8>,
    headers: BTreeMap<String, String>,
    delivery_count: u32,
}

impl MemoryQueue {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Inner {
    fn push(&self, queue: QueueName, message: Stored) {
        self.queues.lock().unwrap().entry(queue).or_default().push_back(message);
        self.notify.notify_waiters();
    }

    /// Returns a delivery to its queue, or dead-letters it past the limit.
    fn give_back(&self, queue: QueueName, message: Stored) {
        let limit = super::delivery_limit(queue);
        if let Some(dead) =
            super::dead_letter_queue(queue).filter(|_| limit.is_some_and(|l| message.delivery_count >= l))
        {
            self.push(dead, message);
        } else {
            self.queues
                .lock()
                .unwrap()
                .entry(queue)
                .or_default()
                .push_front(message);
            self.notify.notify_waiters();
        }
    }

    fn pop(&self, queue: QueueName) -> Option<Stored> {
        self.queues
            .lock()
            .unwrap()
            .get_mut(&queue)
            .and_then(VecDeque::pop_front)
    }
}

struct MemoryAck {
    inner: Arc<Inner>,
    queue: QueueName,
    message: Option<Stored>,
}

#[async_trait]
impl Acknowledge for MemoryAck {
    async fn ack(mut self: Box<Self>) -> Result<(), QueueError> {
        self.message = None;
        Ok(())
    }

    async fn requeue(mut self: Box<Self>) -> Result<(), QueueError> {
        if let Some(message) = self.message.take() {
            self.inner.give_back(self.queue, message);
        }
        Ok(())
    }

    async fn reject(mut self: Box<Self>) -> Result<(), QueueError> {
        if let Some(message) = self.message.take() {
            if let Some(dead) = super::dead_letter_queue(self.queue) {
                self.inner.push(dead, message);
            }
        }
        Ok(())
    }
}

impl Drop for MemoryAck {
    /// A delivery dropped without an answer behaves like one on a dead channel:
    /// it goes back to the queue.
    fn drop(&mut self) {
        if let Some(message) = self.message.take() {
            self.inner.give_back(self.queue, message);
        }
    }
}

#[async_trait]
impl MessageQueue for MemoryQueue {
    async fn publish(&self, queue: QueueName, message: OutgoingMessage) -> Result<(), QueueError> {
        self.inner.push(
            queue,
            Stored {
                payload: message.payload,
                headers: message.headers,
                delivery_count: 0,
            },
        );
        Ok(())
    }

    async fn consume(&self, queue: QueueName, _prefetch: u16) -> Result<BoxStream<'static, Delivery>, QueueError> {
        let inner = self.inner.clone();
        let stream = futures::stream::unfold(inner, move |inner| async move {
            loop {
                let notified = inner.notify.notified();
                if let Some(mut message) = inner.pop(queue) {
                    drop(notified);
                    message.delivery_count += 1;
                    let delivery = Delivery::new(
                        message.payload.clone(),
                        message.headers.clone(),
                        message.delivery_count,
                        Box::new(MemoryAck {
                            inner: inner.clone(),
                            queue,
                            message: Some(message),
                        }),
                    );
                    return Some((delivery, inner));
                }
                notified.await;
            }
        });
        Ok(Box::pin(stream))
    }

    async fn depth(&self, queue: QueueName) -> Result<u64, QueueError> {
        Ok(self
            .inner
            .queues
            .lock()
            .unwrap()
            .get(&queue)
            .map_or(0, |q| q.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::DELIVERY_LIMIT;
    use futures::StreamExt;

    #[tokio::test]
    async fn unacknowledged_deliveries_come_back_and_then_dead_letter() {
        let queue = MemoryQueue::new();
        queue
            .publish(QueueName::Tasks, OutgoingMessage::new(b"t".to_vec()))
            .await
            .unwrap();
        let mut tasks = queue.consume(QueueName::Tasks, 1).await.unwrap();
        for attempt in 1..=DELIVERY_LIMIT {
            let delivery = tasks.next().await.unwrap();
            assert_eq!(delivery.delivery_count, attempt);
            drop(delivery); // a crash
        }
        assert_eq!(queue.depth(QueueName::Tasks).await.unwrap(), 0);
        let mut dead = queue.consume(QueueName::DeadTasks, 1).await.unwrap();
        let delivery = dead.next().await.unwrap();
        assert_eq!(delivery.payload, b"t");
        delivery.ack().await.unwrap();
        assert_eq!(queue.depth(QueueName::DeadTasks).await.unwrap(), 0);
    }
}
