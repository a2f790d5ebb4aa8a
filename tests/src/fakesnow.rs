//! `fakesnow` (PyPI): a server implementing the REST endpoints Snowflake's
//! drivers use, with DuckDB beneath (installed and started as `venv.rs` says).

use serde_json::{json, Value};

pub struct FakeSnow {
    pub url: String,
    _process: tokio::process::Child,
}

impl FakeSnow {
    pub async fn start() -> FakeSnow {
        let binary = crate::venv::program("fakesnow", "EBB_FAKESNOW");
        let port = crate::source_contract::closed_address().port();
        let args = ["-s", "--host", "127.0.0.1", "--port", &port.to_string()].map(String::from);
        let process = crate::venv::start_listening(&binary, &args, port).await;
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
