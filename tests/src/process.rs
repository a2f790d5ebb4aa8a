//! Real `ebb` processes for the end-to-end tests.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use tokio::process::{Child, Command};

/// The `ebb` binary the tests start. Nothing here builds it, so a test run never
/// rebuilds anything: cargo builds this crate's `ebb-e2e` binary (the `ebb`
/// command under another file name) before the crate's integration tests, with
/// the same features as the test build, next to their own executables. A program
/// that is not one of these tests (the benchmark) names its binary in `EBB_BINARY`.
pub fn ebb_binary() -> PathBuf {
    static FOUND: OnceLock<PathBuf> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            if let Some(path) = std::env::var_os("EBB_BINARY").filter(|p| !p.is_empty()) {
                return PathBuf::from(path);
            }
            let exe = std::env::current_exe().expect("the test executable has a path");
            // target/<profile>/deps/<test>-<hash> → target/<profile>/ebb-e2e
            let candidates: Vec<PathBuf> = exe
                .ancestors()
                .skip(1)
                .take(2)
                .map(|dir| dir.join(format!("ebb-e2e{}", std::env::consts::EXE_SUFFIX)))
                .collect();
            candidates.iter().find(|p| p.is_file()).cloned().unwrap_or_else(|| {
                panic!(
                    "the ebb-e2e binary is not built beside {} (looked at {candidates:?}); \
                     run the tests with `cargo test -p ebb-tests` or `cargo test --workspace`, \
                     which build it, or set EBB_BINARY to an `ebb` binary",
                    exe.display()
                )
            })
        })
        .clone()
}

/// A command that runs `ebb`, named `ebb` in its own usage and help texts.
pub fn ebb_command() -> std::process::Command {
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new(ebb_binary());
    command.arg0("ebb");
    command
}

/// `ebb_command` for async tests.
pub fn ebb_async_command() -> Command {
    let mut command = Command::new(ebb_binary());
    command.arg0("ebb");
    command
}

/// A child `ebb` process, killed when dropped; its log goes to a file.
pub struct EbbProcess {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl EbbProcess {
    pub fn spawn(name: &str, args: &[&str], envs: &[(&str, String)], log_dir: &Path) -> EbbProcess {
        let log = log_dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let mut command = ebb_async_command();
        command
            .args(args)
            .env("EBB_LOG_FORMAT", "text")
            .env("EBB_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .kill_on_drop(true);
        for (key, value) in envs {
            command.env(key, value);
        }
        let child = command.spawn().expect("ebb starts");
        EbbProcess {
            name: name.to_string(),
            child,
            log,
        }
    }

    /// `ebb standalone --config CONFIG` on a free loopback port, once its API
    /// answers `/healthz` (within a minute); returns it and the API's URL.
    pub async fn standalone(config: &Path, envs: &[(&str, String)], log_dir: &Path) -> (EbbProcess, String) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("a free port")
            .local_addr()
            .expect("its address")
            .port();
        let listen = format!("127.0.0.1:{port}");
        let config = config.to_str().expect("a UTF-8 path");
        let standalone = EbbProcess::spawn(
            "standalone",
            &["standalone", "--config", config, "--listen", &listen],
            envs,
            log_dir,
        );
        let api = format!("http://{listen}");
        let http = reqwest::Client::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while http.get(format!("{api}/healthz")).send().await.is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "standalone did not start within 60s: {}",
                standalone.log_tail(20)
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        (standalone, api)
    }

    /// SIGKILL: no chance to finish anything.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Shard tasks matching `task_prefix` that the log shows past their diff
    /// (sending rows) and not done.
    pub fn delivering_tasks(&self, task_prefix: &str) -> Vec<String> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let field = |line: &str, name: &str| -> Option<String> {
            line.split_whitespace()
                .find_map(|f| f.strip_prefix(name))
                .map(|v| v.trim_matches('"').to_string())
        };
        let mut open: std::collections::BTreeMap<String, bool> = Default::default();
        for line in text.lines() {
            if let Some(task) = field(line, "task=").filter(|t| t.starts_with(task_prefix)) {
                if line.contains("task started") {
                    open.insert(task, false);
                } else if line.contains("task done") {
                    open.remove(&task);
                }
            } else if line.contains("shard diffed") {
                if let Some(index) = field(line, "shard=") {
                    let suffix = format!("/shard-{index}");
                    for (task, diffed) in open.iter_mut() {
                        if task.ends_with(&suffix) {
                            *diffed = true;
                        }
                    }
                }
            }
        }
        open.into_iter()
            .filter(|(_, diffed)| *diffed)
            .map(|(task, _)| task)
            .collect()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}
