//! A TCP proxy on loopback that injects network faults between Ebb and a real
//! service: refused connections, and cutting every connection open.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use tokio::task::JoinHandle;

pub struct FaultProxy {
    pub address: SocketAddr,
    refuse_next: Arc<AtomicU32>,
    accepted: Arc<AtomicU32>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    acceptor: JoinHandle<()>,
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
        let (upstream, refuse, count, open) = (
            upstream.to_string(),
            refuse_next.clone(),
            accepted.clone(),
            connections.clone(),
        );
        let acceptor = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
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
                open.lock().unwrap().push(tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
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
        }
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
