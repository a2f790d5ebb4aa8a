//! A TCP proxy on loopback that injects network faults between Ebb and a real
//! service: refused connections, cutting every connection open, and stalls
//! (connections stay open, nothing gets through, as with a paused server).

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
                open.lock().unwrap().push(tokio::spawn(async move {
                    if let Ok(server) = tokio::net::TcpStream::connect(&upstream).await {
                        let (client_read, client_write) = client.into_split();
                        let (server_read, server_write) = server.into_split();
                        tokio::join!(
                            pump(client_read, server_write, stall.clone()),
                            pump(server_read, client_write, stall)
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
        }
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
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut stalled: watch::Receiver<bool>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        while *stalled.borrow_and_update() {
            if stalled.changed().await.is_err() {
                return;
            }
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
