//! A fleet of real processes: one `ebb coordinator` and N `ebb worker`s on the
//! local PostgreSQL (state), RabbitMQ (queues) and an S3 server on loopback.

use crate::process::EbbProcess;
use crate::proxy::FaultProxy;
use crate::s3::S3Server;
use crate::services::{delete_rabbitmq_queues, fresh_postgres_database, require_rabbitmq, TestDatabase};
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Fault proxies in front of a fleet's services.
pub struct FleetFaults {
    pub state: FaultProxy,
    pub store: FaultProxy,
    pub broker: FaultProxy,
}

pub struct Fleet {
    pub coordinator: EbbProcess,
    /// A second coordinator on the same state, standing by (see `start_replicated`).
    pub standby: Option<EbbProcess>,
    /// The standby's API.
    pub standby_api: Option<String>,
    pub workers: Vec<EbbProcess>,
    pub api: String,
    pub dir: tempfile::TempDir,
    pub s3: S3Server,
    /// The API's token (`EBB_API_TOKEN`): the fleet runs secured, as in
    /// production, and `client()` sends it.
    pub api_token: String,
    http: reqwest::Client,
    queue_url: String,
    /// The broker and store URLs the processes use: through the fault
    /// proxies when the fleet has them.
    process_queue_url: String,
    process_store_url: String,
    /// Proxies between the processes and the state DB, the object store and
    /// the broker (`start_with_faults`).
    pub faults: Option<FleetFaults>,
    queue_prefix: String,
    /// Given to every process of the fleet, on top of its own settings.
    extra_env: Vec<(String, String)>,
    /// What workers send the coordinator (`EBB_INTERNAL_TOKEN`).
    internal_token: String,
    /// What every task and result is signed with (`EBB_FLEET_KEY`).
    fleet_key: String,
    /// The coordinator's own settings, for restarting it.
    coordinator_env: Vec<(String, String)>,
    restarts: u32,
    /// The coordinator's state database, dropped with the fleet.
    state: TestDatabase,
}

/// A client sending `Authorization: Bearer <token>` on every request.
pub fn authorized_client(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().expect("a token is header-safe"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("http client builds")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Fleet {
    pub async fn start(config_yaml: &str, workers: usize) -> Fleet {
        Fleet::start_with_env(config_yaml, workers, &[]).await
    }

    /// A fleet whose processes all get `extra_env` too.
    pub async fn start_with_env(config_yaml: &str, workers: usize, extra_env: &[(&str, String)]) -> Fleet {
        Fleet::start_inner(config_yaml, workers, extra_env, false, false).await
    }

    /// A fleet of two coordinators on one state DB: the first leads once it
    /// is up, the second stands by; workers know both.
    pub async fn start_replicated(config_yaml: &str, workers: usize) -> Fleet {
        Fleet::start_inner(config_yaml, workers, &[], true, false).await
    }

    /// A fleet whose state DB, object store and broker are reached through
    /// fault proxies (`fleet.faults`), to stall or cut them mid-run.
    pub async fn start_with_faults(config_yaml: &str, workers: usize) -> Fleet {
        Fleet::start_inner(config_yaml, workers, &[], false, true).await
    }

    async fn start_inner(
        config_yaml: &str,
        workers: usize,
        extra_env: &[(&str, String)],
        standby: bool,
        with_faults: bool,
    ) -> Fleet {
        let extra_env: Vec<(String, String)> = extra_env.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        let queue_url = require_rabbitmq().await;
        let state = fresh_postgres_database("state").await;
        let s3 = S3Server::start_blocking_thread("ebb").expect("S3 server starts");
        let dir = tempfile::tempdir().unwrap();
        let config_path: PathBuf = dir.path().join("ebb.yaml");
        std::fs::write(&config_path, config_yaml).unwrap();
        let port = free_port();
        let api = format!("http://127.0.0.1:{port}");
        let queue_prefix = format!("t{}.", rand::random::<u32>());
        let (mut state_url, mut process_queue_url, mut process_store_url) =
            (state.url.clone(), queue_url.clone(), s3.store_url("fleet"));
        let faults = if with_faults {
            let faults = FleetFaults {
                state: FaultProxy::start("127.0.0.1:5432").await,
                store: FaultProxy::start(s3.endpoint().trim_start_matches("http://")).await,
                broker: FaultProxy::start("127.0.0.1:5672").await,
            };
            state_url = state_url.replace("127.0.0.1:5432", &faults.state.address.to_string());
            process_queue_url = process_queue_url.replace("127.0.0.1:5672", &faults.broker.address.to_string());
            process_store_url =
                process_store_url.replace(s3.endpoint().as_str(), &format!("http://{}", faults.store.address));
            assert!(
                state_url != state.url && process_queue_url != queue_url,
                "the test services are on 127.0.0.1:5432 and :5672"
            );
            Some(faults)
        } else {
            None
        };
        // Two tokens, as a secured fleet has: the API's for the tests, the
        // internal one for the workers (who never get the API's).
        let api_token = format!("api-{:032x}", rand::random::<u128>());
        let internal_token = format!("internal-{:032x}", rand::random::<u128>());
        // And the key every task and result is signed with.
        let fleet_key = format!("{:032x}{:032x}", rand::random::<u128>(), rand::random::<u128>());
        // The coordinator reads the workers' row files to serve row-level results.
        let coordinator_env: Vec<(String, String)> = [
            ("EBB_STATE_URL", state_url),
            ("EBB_QUEUE_URL", process_queue_url.clone()),
            ("EBB_QUEUE_PREFIX", queue_prefix.clone()),
            ("EBB_STORE_URL", process_store_url.clone()),
            ("AWS_ACCESS_KEY_ID", s3.access_key().to_string()),
            ("AWS_SECRET_ACCESS_KEY", s3.secret_key().to_string()),
            ("EBB_CONFIG", config_path.to_str().unwrap().to_string()),
            ("EBB_LISTEN", format!("127.0.0.1:{port}")),
            ("EBB_API_TOKEN", api_token.clone()),
            ("EBB_INTERNAL_TOKEN", internal_token.clone()),
            ("EBB_FLEET_KEY", fleet_key.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let coordinator = spawn_coordinator("coordinator", &coordinator_env, &extra_env, dir.path());
        let mut fleet = Fleet {
            coordinator,
            standby: None,
            standby_api: None,
            workers: Vec::new(),
            api,
            dir,
            s3,
            http: authorized_client(&api_token),
            api_token,
            internal_token,
            fleet_key,
            queue_url,
            process_queue_url,
            process_store_url,
            faults,
            queue_prefix,
            extra_env,
            coordinator_env,
            restarts: 0,
            state,
        };
        fleet.wait_healthy().await;
        if standby {
            fleet.wait_leading(&fleet.api).await;
            let port = free_port();
            let mut env = fleet.extra_env.clone();
            env.push(("EBB_LISTEN".into(), format!("127.0.0.1:{port}")));
            let process = spawn_coordinator("standby", &fleet.coordinator_env, &env, fleet.dir.path());
            fleet.standby = Some(process);
            fleet.standby_api = Some(format!("http://127.0.0.1:{port}"));
        }
        for _ in 0..workers {
            fleet.add_worker();
        }
        fleet
    }

    /// Waits (at most `timeout`) for the coordinator to stop by itself, as a
    /// crash point stops it; answers its exit status.
    pub async fn coordinator_exited(&mut self, timeout: Duration) -> std::process::ExitStatus {
        match tokio::time::timeout(timeout, self.coordinator.child.wait()).await {
            Ok(status) => status.expect("the coordinator's status"),
            Err(_) => panic!(
                "the coordinator still runs after {timeout:?}:\n{}",
                self.coordinator.log_tail(30)
            ),
        }
    }

    /// Kills the coordinator (if it still runs) and starts a new one on the
    /// same state, queues and store, with `env` instead of the fleet's extra
    /// settings; waits until it is healthy.
    pub async fn restart_coordinator(&mut self, env: &[(&str, String)]) {
        self.coordinator.kill().await;
        self.restarts += 1;
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        let name = format!("coordinator-{}", self.restarts);
        self.coordinator = spawn_coordinator(&name, &self.coordinator_env, &env, self.dir.path());
        self.wait_healthy().await;
    }

    pub fn add_worker(&mut self) {
        self.add_worker_with_args(&[]);
    }

    /// A worker with more command-line options (`--listen ADDRESS`).
    pub fn add_worker_with_args(&mut self, extra_args: &[&str]) {
        let name = format!("worker-{}", self.workers.len());
        let mut env = vec![
            ("EBB_QUEUE_URL", self.process_queue_url.clone()),
            ("EBB_QUEUE_PREFIX", self.queue_prefix.clone()),
            ("EBB_STORE_URL", self.process_store_url.clone()),
            (
                "EBB_COORDINATOR_URL",
                match &self.standby_api {
                    Some(standby) => format!("{},{standby}", self.api),
                    None => self.api.clone(),
                },
            ),
            ("AWS_ACCESS_KEY_ID", self.s3.access_key().to_string()),
            ("AWS_SECRET_ACCESS_KEY", self.s3.secret_key().to_string()),
            ("EBB_INTERNAL_TOKEN", self.internal_token.clone()),
            ("EBB_FLEET_KEY", self.fleet_key.clone()),
        ];
        env.extend(self.extra_env.iter().map(|(k, v)| (k.as_str(), v.clone())));
        let worker = EbbProcess::spawn(
            &name,
            &[
                &["worker", "--worker-id", &name][..],
                // Two tasks at once unless the test says how many.
                if extra_args.contains(&"--concurrency") {
                    &[][..]
                } else {
                    &["--concurrency", "2"][..]
                },
                extra_args,
            ]
            .concat(),
            &env,
            self.dir.path(),
        );
        self.workers.push(worker);
    }

    /// What the fleet's workers send the coordinator.
    pub fn internal_token(&self) -> &str {
        &self.internal_token
    }

    /// An HTTP client that sends the fleet's API token.
    pub fn client(&self) -> &reqwest::Client {
        &self.http
    }

    /// The fleet's queues as a member of the fleet sees them, for a test to
    /// publish to directly: messages signed with the fleet's key.
    pub async fn queue(&self) -> std::sync::Arc<dyn ebb_shared::queue::MessageQueue> {
        let key = ebb_shared::queue::FleetKey::new(&self.fleet_key).expect("a long enough key");
        std::sync::Arc::new(ebb_shared::queue::SignedQueue::new(self.broker().await, key))
    }

    /// The fleet's broker as anyone who can reach it sees it: what is
    /// published here is signed by nobody.
    pub async fn broker(&self) -> std::sync::Arc<dyn ebb_shared::queue::MessageQueue> {
        let settings =
            ebb_shared::queue::AmqpSettings::new(self.queue_url.clone()).with_prefix(self.queue_prefix.clone());
        std::sync::Arc::new(
            ebb_shared::queue::AmqpQueue::connect(settings)
                .await
                .expect("the fleet's broker"),
        )
    }

    /// Waits (at most a minute) until the coordinator at `api` leads.
    pub async fn wait_leading(&self, api: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(response) = self.http.get(format!("{api}/metrics")).send().await {
                let text = response.text().await.unwrap_or_default();
                if text.lines().any(|line| line == "ebb_coordinator_leader 1") {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "the coordinator at {api} did not lead within a minute:\n{}",
            self.logs()
        );
    }

    async fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(response) = self.http.get(format!("{}/healthz", self.api)).send().await {
                if response.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("coordinator did not become healthy:\n{}", self.coordinator.log_tail(40));
    }

    pub async fn trigger(&self, sync: &str) -> String {
        let response = self
            .http
            .post(format!("{}/api/v1/syncs/{sync}/trigger", self.api))
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert!(status.is_success(), "trigger {sync}: {status} {body}");
        body["id"].as_str().unwrap().to_string()
    }

    /// Cancels a run through the API; answers the run as the cancel left it.
    pub async fn cancel(&self, run_id: &str) -> Value {
        let response = self
            .http
            .post(format!("{}/api/v1/runs/{run_id}/cancel", self.api))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert!(status.is_success(), "cancel {run_id}: {status} {body}");
        body
    }

    /// The coordinator's state database, for a test to read what it recorded.
    pub fn state_url(&self) -> &str {
        &self.state.url
    }

    /// A few of a run's failed rows with their reasons, for a failure message.
    pub async fn rejected_sample(&self, run_id: &str) -> Value {
        let answer = self
            .http
            .get(format!("{}/api/v1/runs/{run_id}/rows?outcome=failed&limit=5", self.api))
            .send()
            .await;
        match answer {
            Ok(answer) => answer.json().await.unwrap_or(Value::Null),
            Err(error) => Value::String(error.to_string()),
        }
    }

    pub async fn run(&self, run_id: &str) -> Value {
        self.http
            .get(format!("{}/api/v1/runs/{run_id}", self.api))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn wait_run(&self, run_id: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let run = self.run(run_id).await;
            let status = run["status"].as_str().unwrap_or_default().to_string();
            if !["queued", "querying", "processing", "reporting"].contains(&status.as_str()) {
                return run;
            }
            if Instant::now() > deadline {
                panic!("run {run_id} still {status} after {timeout:?}: {run}\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Triggers every sync at once and waits (at most ten minutes each) for
    /// their runs to succeed; the syncs in `may_warn` may also end in
    /// `warning` (an update sync whose rows have no record to update).
    pub async fn run_all(&self, syncs: &[&str], may_warn: &[&str]) {
        let mut runs = Vec::new();
        for sync in syncs {
            runs.push((*sync, self.trigger(sync).await));
        }
        for (sync, run_id) in runs {
            let run = self.wait_run(&run_id, Duration::from_secs(600)).await;
            let status = run["status"].as_str().unwrap_or_default();
            let fine = status == "success" || (status == "warning" && may_warn.contains(&sync));
            if !fine {
                let rejected = self.rejected_sample(&run_id).await;
                panic!("{sync}: {run}\nrejected rows: {rejected}\n{}", self.logs());
            }
        }
    }

    pub fn logs(&self) -> String {
        let mut out = format!("--- coordinator\n{}\n", self.coordinator.log_tail(30));
        if let Some(standby) = &self.standby {
            out.push_str(&format!("--- standby\n{}\n", standby.log_tail(30)));
        }
        for worker in &self.workers {
            out.push_str(&format!("--- {}\n{}\n", worker.name, worker.log_tail(30)));
        }
        out
    }

    /// Task events of every process: which worker ran, resumed or failed what.
    pub fn events(&self) -> String {
        let mut out = String::new();
        for process in std::iter::once(&self.coordinator)
            .chain(&self.standby)
            .chain(&self.workers)
        {
            let text = std::fs::read_to_string(&process.log).unwrap_or_default();
            for line in text.lines().filter(|l| {
                [
                    "task done",
                    "task failed",
                    "resuming",
                    "run finished",
                    "returning the task",
                    "ack failed",
                ]
                .iter()
                .any(|event| l.contains(event))
            }) {
                out.push_str(&format!("{}: {line}\n", process.name));
            }
        }
        out
    }

    /// Peak resident memory of a process, in KiB.
    pub fn peak_rss_kib(process: &EbbProcess) -> u64 {
        let pid = process.child.id().expect("process alive");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Fleet {
    /// `EBB_TEST_KEEP_LOGS=DIR` keeps the processes' logs for a look afterwards.
    fn drop(&mut self) {
        if let Ok(keep) = std::env::var("EBB_TEST_KEEP_LOGS") {
            let _ = std::fs::create_dir_all(&keep);
            for process in std::iter::once(&self.coordinator)
                .chain(&self.standby)
                .chain(&self.workers)
            {
                let _ = std::fs::copy(
                    &process.log,
                    std::path::Path::new(&keep).join(format!("{}.log", process.name)),
                );
            }
        }
        // Stop every process before deleting the queues, so none declares them again.
        for process in std::iter::once(&mut self.coordinator)
            .chain(self.standby.as_mut())
            .chain(self.workers.iter_mut())
        {
            let _ = process.child.start_kill();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for process in std::iter::once(&mut self.coordinator)
            .chain(self.standby.as_mut())
            .chain(self.workers.iter_mut())
        {
            while matches!(process.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        delete_rabbitmq_queues(&self.queue_url, &self.queue_prefix);
    }
}

fn spawn_coordinator(
    name: &str,
    settings: &[(String, String)],
    extra: &[(String, String)],
    dir: &std::path::Path,
) -> EbbProcess {
    let env: Vec<(&str, String)> = settings
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    EbbProcess::spawn(name, &["coordinator"], &env, dir)
}

/// Counts of a run object of the API: `[added, changed, removed]`.
pub fn counts(run: &Value, field: &str) -> [u64; 3] {
    let c = &run[field];
    [
        c["addedCount"].as_u64().unwrap_or(u64::MAX),
        c["changedCount"].as_u64().unwrap_or(u64::MAX),
        c["removedCount"].as_u64().unwrap_or(u64::MAX),
    ]
}
