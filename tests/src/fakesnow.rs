//! `fakesnow` (PyPI): a server implementing the REST endpoints Snowflake's
//! drivers use, with DuckDB beneath. `bash .ci/services` installs it in
//! `.venv-tests/` at the top of the repository; each test starts its own on a
//! free loopback port and stops it when done.

use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

pub struct FakeSnow {
    pub url: String,
    _process: tokio::process::Child,
}

/// Where `fakesnow` is: `EBB_FAKESNOW`, or the repository's test virtualenv.
fn fakesnow_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("EBB_FAKESNOW").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv-tests/bin/fakesnow")
}

impl FakeSnow {
    pub async fn start() -> FakeSnow {
        let binary = fakesnow_binary();
        assert!(
            binary.is_file(),
            "fakesnow is not installed at {}: run `bash .ci/services` (it installs fakesnow[server] from PyPI \
             into .venv-tests/), or set EBB_FAKESNOW to a fakesnow executable",
            binary.display()
        );
        let port = crate::source_contract::closed_address().port();
        let process = tokio::process::Command::new(&binary)
            .args(["-s", "--host", "127.0.0.1", "--port", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let deadline = Instant::now() + Duration::from_secs(60);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "fakesnow did not listen on port {port} within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        FakeSnow {
            url: format!("http://127.0.0.1:{port}"),
            _process: process,
        }
    }

    /// Runs statements in `database.schema` (created as needed), as a
    /// Snowflake driver would, failing the test on any error; the rows each
    /// changed (0 for a statement that is not DML).
    pub async fn execute(&self, database: &str, schema: &str, statements: &[&str]) -> Vec<u64> {
        let mut changed = Vec::new();
        let http = reqwest::Client::new();
        let login: Value = http
            .post(format!("{}/session/v1/login-request", self.url))
            .query(&[("databaseName", database), ("schemaName", schema)])
            .json(&json!({"data": {"ACCOUNT_NAME": "EBB", "LOGIN_NAME": "setup", "PASSWORD": "setup", "SESSION_PARAMETERS": {}}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = login["data"]["token"].as_str().expect("a session token").to_string();
        for statement in statements {
            let answer: Value = http
                .post(format!("{}/queries/v1/query-request", self.url))
                .header("Authorization", format!("Snowflake Token=\"{token}\""))
                .json(&json!({"sqlText": statement, "asyncExec": false, "sequenceId": 1}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(answer["success"], true, "{statement}: {answer}");
            let count = answer["data"]["rowset"][0][0].as_str().and_then(|n| n.parse().ok());
            changed.push(count.unwrap_or(0));
        }
        changed
    }
}
