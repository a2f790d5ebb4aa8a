//! A real S3 server on loopback for the tests: the `s3s` protocol layer over the
//! `s3s-fs` file-system backend, with SigV4 signature checking on, so the object
//! store is exercised over the S3 protocol exactly as against a cloud bucket.
//!
//! It listens on `127.0.0.1` only, on an ephemeral port, and keeps its objects
//! in a fresh temporary directory that is removed when the server is dropped.
//! Conditional creates (`If-None-Match: *`, which `object_store` sends for
//! `PutMode::Create`) are answered with `412 Precondition Failed` by `s3s-fs`
//! itself. That check is not atomic (exists-then-write), so two *concurrent*
//! creates of one key may both succeed; sequential ones behave like S3.

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnectionBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::{S3Service, S3ServiceBuilder};
use std::net::SocketAddr;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

pub struct S3Server {
    address: SocketAddr,
    bucket: String,
    access_key: String,
    secret_key: String,
    stop: Option<oneshot::Sender<()>>,
    /// Set when the server runs on a thread (and runtime) of its own.
    thread: Option<std::thread::JoinHandle<()>>,
    /// Dropped last: the objects outlive the server that serves them.
    _root: tempfile::TempDir,
}

/// What both ways of starting share: the bucket directory, the keys, the
/// service and the bound (not yet served) loopback listener.
struct Prepared {
    root: tempfile::TempDir,
    access_key: String,
    secret_key: String,
    service: S3Service,
    listener: std::net::TcpListener,
    address: SocketAddr,
}

fn prepare(bucket: &str) -> anyhow::Result<Prepared> {
    let root = tempfile::Builder::new().prefix("ebb-s3-").tempdir()?;
    // s3s-fs keeps one directory per bucket under its root.
    std::fs::create_dir(root.path().join(bucket))?;
    let access_key = format!("ebbtest{:08x}", rand::random::<u32>());
    let secret_key = format!("ebbsecret{:016x}", rand::random::<u64>());
    let filesystem = s3s_fs::FileSystem::new(root.path())
        .map_err(|e| anyhow::anyhow!("s3s-fs over {}: {e:?}", root.path().display()))?;
    let service = {
        let mut builder = S3ServiceBuilder::new(filesystem);
        builder.set_auth(SimpleAuth::from_single(access_key.clone(), secret_key.clone()));
        builder.build()
    };
    let listener = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))?;
    listener.set_nonblocking(true)?;
    let address = listener.local_addr()?;
    Ok(Prepared {
        root,
        access_key,
        secret_key,
        service,
        listener,
        address,
    })
}

/// Accepts connections until `stop` fires (or its sender is dropped). Every
/// connection runs in a `JoinSet` owned here, so none outlives the server.
async fn serve(listener: std::net::TcpListener, service: S3Service, mut stop: oneshot::Receiver<()>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("S3 test server: cannot register its listener: {e}");
            return;
        }
    };
    let http = ConnectionBuilder::new(TokioExecutor::new());
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => {
                let Ok((socket, _)) = accepted else { continue };
                let connection = http
                    .serve_connection(TokioIo::new(socket), service.clone())
                    .into_owned();
                connections.spawn(async move {
                    let _ = connection.await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

impl S3Server {
    /// Starts the server as a task on the current tokio runtime: it serves as
    /// long as that runtime runs and until the `S3Server` is dropped.
    pub async fn start(bucket: &str) -> anyhow::Result<S3Server> {
        let prepared = prepare(bucket)?;
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(serve(prepared.listener, prepared.service, stopped));
        Ok(S3Server {
            address: prepared.address,
            bucket: bucket.to_string(),
            access_key: prepared.access_key,
            secret_key: prepared.secret_key,
            stop: Some(stop),
            thread: None,
            _root: prepared.root,
        })
    }

    /// Starts the server on a thread with a tokio runtime of its own, so it
    /// outlives the runtime of any one `#[tokio::test]` and works from plain
    /// tests too; dropping the `S3Server` stops it and joins the thread.
    pub fn start_blocking_thread(bucket: &str) -> anyhow::Result<S3Server> {
        let prepared = prepare(bucket)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("s3-test-server")
            .enable_all()
            .build()?;
        let (stop, stopped) = oneshot::channel();
        let (listener, service) = (prepared.listener, prepared.service);
        let thread = std::thread::Builder::new()
            .name("s3-test-server".into())
            .spawn(move || runtime.block_on(serve(listener, service, stopped)))?;
        Ok(S3Server {
            address: prepared.address,
            bucket: bucket.to_string(),
            access_key: prepared.access_key,
            secret_key: prepared.secret_key,
            stop: Some(stop),
            thread: Some(thread),
            _root: prepared.root,
        })
    }

    /// e.g. `http://127.0.0.1:43123`
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The URL `ebb_shared::storage::Storage::from_url` understands, for the
    /// objects under `prefix` in the bucket.
    pub fn store_url(&self, prefix: &str) -> String {
        format!(
            "s3://{}/{prefix}?endpoint={}&region=us-east-1",
            self.bucket,
            self.endpoint()
        )
    }

    /// To export as `AWS_ACCESS_KEY_ID` to whatever talks to the server.
    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    /// To export as `AWS_SECRET_ACCESS_KEY` to whatever talks to the server.
    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
