//! A TCP proxy on loopback that injects network faults between Ebb and a real
//! service: refused connections, cutting every connection open, stalls
//! (connections stay open, nothing gets through, as with a paused server), and
//! for AMQP a broker's graceful shutdown (each client is told
//! `CONNECTION_FORCED`, as RabbitMQ does when it stops, and disconnected).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct FaultProxy {
    pub address: SocketAddr,
    refuse_next: Arc<AtomicU32>,
    accepted: Arc<AtomicU32>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    acceptor: JoinHandle<()>,
    stalled: watch::Sender<bool>,
    /// Raised by `shut_down_amqp`: connections opened before it close.
    shutdowns: watch::Sender<u64>,
}

impl FaultProxy {
    /// Forwards connections to `upstream` (`127.0.0.1:5432`).
    pub async fn start(upstream: &str) -> FaultProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let address = listener.local_addr().unwrap();
        let refuse_next = Arc::new(AtomicU32::new(0));
        let accepted = Arc::new(AtomicU32::new(0));
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (stalled, stall) = watch::channel(false);
        let (shutdowns, shutdown) = watch::channel(0u64);
        let (upstream, refuse, count, open) = (
            upstream.to_string(),
            refuse_next.clone(),
            accepted.clone(),
            connections.clone(),
        );
        let acceptor = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                // A refused connection: closed before a byte is exchanged.
                if refuse
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
                {
                    drop(client);
                    continue;
                }
                let upstream = upstream.clone();
                let stall = stall.clone();
                let mut shutdown = shutdown.clone();
                // Only a shutdown announced after the connection opened closes it.
                shutdown.borrow_and_update();
                open.lock().unwrap().push(tokio::spawn(async move {
                    if let Ok(server) = tokio::net::TcpStream::connect(&upstream).await {
                        let (client_read, client_write) = client.into_split();
                        let (server_read, server_write) = server.into_split();
                        tokio::join!(
                            pump(client_read, server_write, stall.clone(), None, shutdown.clone()),
                            pump(server_read, client_write, stall, Some(AmqpFrames::default()), shutdown)
                        );
                    }
                }));
            }
        });
        FaultProxy {
            address,
            refuse_next,
            accepted,
            connections,
            acceptor,
            stalled,
            shutdowns,
        }
    }

    /// What a RabbitMQ node does when it is stopped: every AMQP connection
    /// open now gets `connection.close` with `320 CONNECTION_FORCED` (after
    /// the frame the server is sending, never inside it) and is closed. Pair
    /// it with `refuse_next` for the time the broker stays down.
    pub fn shut_down_amqp(&self) {
        self.shutdowns.send_modify(|n| *n += 1);
    }

    /// Holds every byte in both directions until `resume`: connections stay
    /// open and new ones are accepted, but nothing gets through.
    pub fn stall(&self) {
        let _ = self.stalled.send(true);
    }

    pub fn resume(&self) {
        let _ = self.stalled.send(false);
    }

    /// The next `n` connections are closed at once.
    pub fn refuse_next(&self, n: u32) {
        self.refuse_next.store(n, Ordering::SeqCst);
    }

    /// Connections accepted so far, refused ones included.
    pub fn connections_seen(&self) -> u32 {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Closes every connection open now.
    pub fn cut(&self) {
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        self.cut();
    }
}

/// Copies one direction of a connection, holding what it read while stalled.
/// The server's direction of an AMQP connection tracks its frames (`frames`),
/// so that a shutdown lands between two of them; then the client is told
/// `CONNECTION_FORCED` and both directions stop.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut stalled: watch::Receiver<bool>,
    mut frames: Option<AmqpFrames>,
    mut shutdown: watch::Receiver<u64>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    let mut closing = false;
    loop {
        if closing && frames.as_ref().is_none_or(AmqpFrames::at_boundary) {
            if frames.is_some() {
                let _ = to.write_all(&connection_forced()).await;
            }
            break;
        }
        let n = tokio::select! {
            read = from.read(&mut buffer) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            changed = shutdown.changed(), if !closing => {
                closing = changed.is_ok();
                continue;
            }
        };
        while *stalled.borrow_and_update() {
            if stalled.changed().await.is_err() {
                return;
            }
        }
        let mut end = n;
        if let Some(frames) = &mut frames {
            let ends = frames.feed(&buffer[..n]);
            if closing {
                if let Some(&first) = ends.first() {
                    // The server stops after the frame under way.
                    end = first;
                    frames.reset();
                }
            }
        }
        if to.write_all(&buffer[..end]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// Where the frames of an AMQP 0-9-1 stream from the server end: each is
/// `type u8 | channel u16 | size u32 | payload | 0xCE`.
#[derive(Default)]
struct AmqpFrames {
    header: [u8; 7],
    header_read: usize,
    /// Bytes of the current frame's payload and end marker still to come.
    left: usize,
}

impl AmqpFrames {
    /// Takes in `chunk`; the offsets in it where a frame ends.
    fn feed(&mut self, chunk: &[u8]) -> Vec<usize> {
        let mut ends = Vec::new();
        let mut i = 0;
        while i < chunk.len() {
            if self.left > 0 {
                let take = self.left.min(chunk.len() - i);
                self.left -= take;
                i += take;
                if self.left == 0 {
                    ends.push(i);
                }
            } else {
                self.header[self.header_read] = chunk[i];
                self.header_read += 1;
                i += 1;
                if self.header_read == 7 {
                    self.header_read = 0;
                    self.left = u32::from_be_bytes(self.header[3..7].try_into().unwrap()) as usize + 1;
                }
            }
        }
        ends
    }

    fn at_boundary(&self) -> bool {
        self.header_read == 0 && self.left == 0
    }

    /// What followed a cut frame end was never sent: the next byte read is
    /// not looked at again.
    fn reset(&mut self) {
        *self = AmqpFrames::default();
    }
}

/// `connection.close` (class 10, method 50) with `320 CONNECTION_FORCED`, the
/// frame a RabbitMQ node sends every client when it shuts down.
fn connection_forced() -> Vec<u8> {
    let text = b"CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'";
    let mut payload = Vec::new();
    payload.extend_from_slice(&10u16.to_be_bytes());
    payload.extend_from_slice(&50u16.to_be_bytes());
    payload.extend_from_slice(&320u16.to_be_bytes());
    payload.push(text.len() as u8);
    payload.extend_from_slice(text);
    payload.extend_from_slice(&0u16.to_be_bytes());
    payload.extend_from_slice(&0u16.to_be_bytes());
    let mut frame = vec![1u8, 0, 0];
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    frame.push(0xCE);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amqp_frame_ends_are_found_across_reads() {
        let frame = |size: u32| {
            let mut bytes = vec![1u8, 0, 1];
            bytes.extend_from_slice(&size.to_be_bytes());
            bytes.extend(std::iter::repeat_n(7u8, size as usize));
            bytes.push(0xCE);
            bytes
        };
        let stream: Vec<u8> = [frame(3), frame(0), frame(10)].concat();
        let mut frames = AmqpFrames::default();
        // Split inside the second frame's header.
        assert_eq!(frames.feed(&stream[..13]), vec![11]);
        assert!(!frames.at_boundary());
        assert_eq!(frames.feed(&stream[13..]), vec![19 - 13, stream.len() - 13]);
        assert!(frames.at_boundary());
        assert_eq!(
            AmqpFrames::default().feed(&connection_forced()),
            vec![connection_forced().len()]
        );
    }
}
