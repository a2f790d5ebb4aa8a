//! Messages signed with the fleet's key.
//!
//! The broker is not a trust boundary. Whoever can publish to it could
//! otherwise hand a worker a task: read a source, expand a `${VAR}` into a
//! request, write to a destination. They could also hand the coordinator a
//! result that moves a snapshot.
//!
//! With `EBB_FLEET_KEY` set on the coordinator and on every worker, each
//! message carries an HMAC-SHA256 of its payload and of the run and task ids
//! its headers name. [`SignedQueue`] signs what it publishes. It drops,
//! unread, anything it consumes without a valid signature: the message is
//! logged (never its contents) and counted, and nothing else happens. Dead
//! letters are checked too, so a forged one cannot fail a real run.

use super::{Delivery, MessageQueue, OutgoingMessage, QueueError, QueueName, RUN_ID_HEADER, TASK_ID_HEADER};
use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The header that carries a message's signature (lowercase hex).
pub const SIGNATURE_HEADER: &str = "ebb-signature";

/// The fleet's shared secret. Its `Debug` never shows it.
#[derive(Clone)]
pub struct FleetKey(Arc<[u8]>);

impl FleetKey {
    /// The shortest key accepted: 32 bytes, as `openssl rand -hex 16` gives.
    pub const MIN_LEN: usize = 32;

    pub fn new(secret: &str) -> Result<FleetKey, String> {
        if secret.len() < FleetKey::MIN_LEN {
            return Err(format!(
                "EBB_FLEET_KEY is {} bytes long; use at least {} (e.g. `openssl rand -hex 32`)",
                secret.len(),
                FleetKey::MIN_LEN
            ));
        }
        Ok(FleetKey(secret.as_bytes().into()))
    }

    /// `EBB_FLEET_KEY`, if set (an empty value is no key).
    pub fn from_env() -> Result<Option<FleetKey>, String> {
        match std::env::var("EBB_FLEET_KEY") {
            Ok(secret) if !secret.is_empty() => FleetKey::new(&secret).map(Some),
            _ => Ok(None),
        }
    }

    /// The signature of a message: its payload and the ids its headers name,
    /// each length-prefixed so no two messages sign alike.
    fn signature(&self, payload: &[u8], headers: &BTreeMap<String, String>) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        for part in [
            payload,
            headers.get(RUN_ID_HEADER).map_or(&b""[..], |id| id.as_bytes()),
            headers.get(TASK_ID_HEADER).map_or(&b""[..], |id| id.as_bytes()),
        ] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }

    pub fn sign(&self, message: &mut OutgoingMessage) {
        let signature = self.signature(&message.payload, &message.headers);
        message.headers.insert(SIGNATURE_HEADER.into(), signature);
    }

    /// Whether a received message bears this key's signature (compared in
    /// constant time).
    pub fn verifies(&self, payload: &[u8], headers: &BTreeMap<String, String>) -> bool {
        let Some(presented) = headers.get(SIGNATURE_HEADER) else {
            return false;
        };
        let expected = self.signature(payload, headers);
        expected.as_bytes().ct_eq(presented.as_bytes()).into()
    }
}

impl std::fmt::Debug for FleetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FleetKey(…)")
    }
}

/// A queue whose messages are signed on the way out and checked on the way
/// in.
pub struct SignedQueue {
    inner: Arc<dyn MessageQueue>,
    key: FleetKey,
    dropped: Arc<AtomicU64>,
}

impl SignedQueue {
    pub fn new(inner: Arc<dyn MessageQueue>, key: FleetKey) -> SignedQueue {
        SignedQueue {
            inner,
            key,
            dropped: Arc::default(),
        }
    }

    /// Messages dropped so far for want of a valid signature.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl MessageQueue for SignedQueue {
    async fn publish(&self, queue: QueueName, mut message: OutgoingMessage) -> Result<(), QueueError> {
        self.key.sign(&mut message);
        self.inner.publish(queue, message).await
    }

    async fn consume(&self, queue: QueueName, prefetch: u16) -> Result<BoxStream<'static, Delivery>, QueueError> {
        let deliveries = self.inner.consume(queue, prefetch).await?;
        let (key, dropped) = (self.key.clone(), self.dropped.clone());
        Ok(deliveries
            .filter_map(move |delivery| {
                let (key, dropped) = (key.clone(), dropped.clone());
                async move {
                    if key.verifies(&delivery.payload, &delivery.headers) {
                        return Some(delivery);
                    }
                    dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        %queue,
                        bytes = delivery.payload.len(),
                        signed = delivery.headers.contains_key(SIGNATURE_HEADER),
                        "dropping a message without a valid fleet signature, unread: forged, or from a process \
                         without this EBB_FLEET_KEY"
                    );
                    if let Err(error) = delivery.ack().await {
                        tracing::warn!(%error, "could not drop the unsigned message; it will come back");
                    }
                    None
                }
            })
            .boxed())
    }

    async fn depth(&self, queue: QueueName) -> Result<u64, QueueError> {
        self.inner.depth(queue).await
    }

    async fn close(&self) {
        self.inner.close().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::MemoryQueue;

    fn key(secret: &str) -> FleetKey {
        FleetKey::new(secret).unwrap()
    }

    #[test]
    fn a_signature_binds_the_payload_and_the_ids() {
        let fleet = key(&"k".repeat(32));
        let mut message = OutgoingMessage::new(b"task".to_vec());
        message.headers.insert(RUN_ID_HEADER.into(), "run-1".into());
        message.headers.insert(TASK_ID_HEADER.into(), "run-1/shard-0".into());
        fleet.sign(&mut message);
        assert!(fleet.verifies(&message.payload, &message.headers));

        assert!(!fleet.verifies(b"tasK", &message.headers), "another payload");
        let mut other_run = message.headers.clone();
        other_run.insert(RUN_ID_HEADER.into(), "run-2".into());
        assert!(!fleet.verifies(&message.payload, &other_run), "another run");
        assert!(
            !key(&"x".repeat(32)).verifies(&message.payload, &message.headers),
            "another key"
        );
        let mut unsigned = message.headers.clone();
        unsigned.remove(SIGNATURE_HEADER);
        assert!(!fleet.verifies(&message.payload, &unsigned));
    }

    #[test]
    fn a_short_key_is_refused_and_a_key_never_shows() {
        let error = FleetKey::new("short").unwrap_err();
        assert!(error.contains("at least 32"), "{error}");
        assert_eq!(format!("{:?}", key(&"s".repeat(40))), "FleetKey(…)");
    }

    #[tokio::test]
    async fn unsigned_messages_are_dropped_and_signed_ones_pass() {
        let broker: Arc<dyn MessageQueue> = Arc::new(MemoryQueue::default());
        let signed = SignedQueue::new(broker.clone(), key(&"k".repeat(32)));
        // A forger publishes straight to the broker, then the fleet publishes.
        broker
            .publish(QueueName::Tasks, OutgoingMessage::new(b"forged".to_vec()))
            .await
            .unwrap();
        signed
            .publish(QueueName::Tasks, OutgoingMessage::new(b"genuine".to_vec()))
            .await
            .unwrap();
        let mut deliveries = signed.consume(QueueName::Tasks, 4).await.unwrap();
        let delivery = tokio::time::timeout(std::time::Duration::from_secs(5), deliveries.next())
            .await
            .expect("the genuine task comes through")
            .unwrap();
        assert_eq!(delivery.payload, b"genuine");
        assert_eq!(signed.dropped(), 1);
    }
}
