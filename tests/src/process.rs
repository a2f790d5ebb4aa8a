//! Real `ebb` processes for the end-to-end tests.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use tokio::process::{Child, Command};

/// The `ebb` binary of this workspace, built on first use, in the profile this
/// crate is built in: the benchmarks (release) run a release fleet.
pub fn ebb_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let release = !cfg!(debug_assertions);
            let mut args = vec!["build", "--quiet", "-p", "ebb-coordinator", "--bin", "ebb"];
            if release {
                args.push("--release");
            }
            let status = std::process::Command::new(cargo)
                .args(&args)
                .current_dir(&root)
                .status()
                .expect("cargo runs");
            assert!(status.success(), "building the ebb binary failed");
            let target = std::env::var("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|_| root.join("target"));
            target.join(if release { "release" } else { "debug" }).join("ebb")
        })
        .clone()
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
        let mut command = Command::new(ebb_binary());
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
