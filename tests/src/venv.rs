//! Servers from PyPI that `bash .ci/services` installs in `.venv-tests/` at
//! the top of the repository (fakesnow, fake-gcs-server); each test starts
//! its own on a free loopback port and stops it when dropped.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Where the server program `name` is: the variable `override_var` if set,
/// else `.venv-tests/bin/NAME`. Fails the test, saying how to install it,
/// when it is missing.
pub fn program(name: &str, override_var: &str) -> PathBuf {
    let path = match std::env::var_os(override_var).filter(|p| !p.is_empty()) {
        Some(path) => PathBuf::from(path),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../.venv-tests/bin/{name}")),
    };
    assert!(
        path.is_file(),
        "{name} is not installed at {}: run `bash .ci/services` (it installs it from PyPI into .venv-tests/), \
         or set {override_var} to a {name} executable",
        path.display()
    );
    path
}

/// Starts `program` with `args` and waits (60 s at most) until it listens on
/// loopback `port`. The process is killed when the handle is dropped.
pub async fn start_listening(program: &std::path::Path, args: &[String], port: u16) -> tokio::process::Child {
    let process = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
    let deadline = Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "{} did not listen on port {port} within 60 s",
            program.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    process
}
