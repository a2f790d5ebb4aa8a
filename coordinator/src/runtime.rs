//! Assembling the processes: the same coordinator and workers, wired to
//! embedded parts (`ebb standalone`, `ebb sync run --config`) or to the fleet's
//! services (`ebb coordinator`, `ebb worker`). Nothing in the sync path knows
//! which (invariant 10).

use crate::janitor::{GcSettings, Janitor};
use crate::leader::Role;
use crate::leases::LocalLeases;
use crate::run::Coordinator;
use crate::store::StateStore;
use anyhow::Context;
use ebb_shared::config::Config;
use ebb_shared::queue::{AmqpQueue, AmqpSettings, FleetKey, MemoryQueue, MessageQueue, QueueName, SignedQueue};
use ebb_shared::storage::Storage;
use ebb_worker::limits::{HttpLeaseProvider, LeaseProvider};
use ebb_worker::{Worker, WorkerSettings};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often the coordinator re-derives its runs in flight from the state DB.
const RECONCILE_EVERY: Duration = Duration::from_secs(15);

/// Where a fleet's queues live.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    pub url: String,
    /// Prepended to queue names, so installations can share a broker.
    pub prefix: String,
    /// Run without `EBB_FLEET_KEY`: tasks and results unsigned, so whoever
    /// can publish to the broker can hand workers a task.
    pub allow_unsigned: bool,
}

impl QueueSettings {
    fn amqp(&self) -> AmqpSettings {
        AmqpSettings::new(self.url.clone()).with_prefix(self.prefix.clone())
    }

    /// The fleet's broker, every message signed with `EBB_FLEET_KEY` and
    /// checked against it (`SignedQueue`). Without the key, refused unless
    /// unsigned messages were allowed. Checked before connecting.
    async fn connect(&self) -> anyhow::Result<Arc<dyn MessageQueue>> {
        let key = FleetKey::from_env().map_err(anyhow::Error::msg)?;
        if key.is_none() && !self.allow_unsigned {
            anyhow::bail!(
                "EBB_FLEET_KEY is not set: without it, whoever can publish to the broker can hand workers a task \
                 (read a source, fill in a ${{VAR}}, write to a destination). Give the coordinator and every worker \
                 the same key (e.g. `openssl rand -hex 32`), or pass --allow-unsigned-tasks \
                 (EBB_ALLOW_UNSIGNED_TASKS=true) if nobody else can reach the broker"
            );
        }
        let broker: Arc<dyn MessageQueue> = Arc::new(AmqpQueue::connect(self.amqp()).await?);
        Ok(match key {
            Some(key) => Arc::new(SignedQueue::new(broker, key)),
            None => {
                tracing::warn!("EBB_FLEET_KEY is not set: tasks and results go unsigned (--allow-unsigned-tasks)");
                broker
            }
        })
    }
}

pub struct Runtime {
    pub coordinator: Option<Arc<Coordinator>>,
    pub leases: LocalLeases,
    /// This process's part in its fleet's leadership (a standby until elected).
    pub role: watch::Receiver<Role>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// The embedded data directory's lock, held while this runtime runs.
    _data_dir_lock: Option<std::fs::File>,
    /// The workers this process runs, for their health and metrics.
    pub workers: Vec<Arc<Worker>>,
    /// Closed last on shutdown, once every component has answered what it took.
    queues: Vec<Arc<dyn MessageQueue>>,
}

impl Runtime {
    fn new() -> Runtime {
        Runtime {
            coordinator: None,
            leases: LocalLeases::default(),
            role: watch::channel(Role::Standby { leader: None }).1,
            shutdown: watch::channel(false).0,
            tasks: Vec::new(),
            _data_dir_lock: None,
            workers: Vec::new(),
            queues: Vec::new(),
        }
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    fn spawn<F>(&mut self, name: &'static str, future: F)
    where
        F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.tasks.push(tokio::spawn(async move {
            if let Err(error) = future.await {
                tracing::error!(component = name, error = %format!("{error:#}"), "component stopped");
            }
        }));
    }

    /// Starts the campaign for the lead and the components only the leader
    /// runs, each of which waits for the lead. `recover` names how runs left
    /// in flight by a previous process are picked up, once leading.
    fn start_coordinator(&mut self, coordinator: Arc<Coordinator>, advertise_url: &str) {
        let (role_sender, role) = watch::channel(Role::Standby { leader: None });
        self.role = role;
        let store = coordinator.store().clone();
        let leases = self.leases.clone();
        let signal = self.shutdown_signal();
        let url = advertise_url.to_string();
        let metrics = coordinator.metrics.clone();
        let mut watch_role = self.role.clone();
        self.spawn("election", async move {
            tokio::spawn(async move {
                while watch_role.changed().await.is_ok() {
                    let leading = watch_role.borrow().is_leader();
                    metrics.leader.set(i64::from(leading));
                }
            });
            crate::leader::campaign(store, crate::leader::holder_id(), url, leases, role_sender, signal).await;
            Ok(())
        });
        let results = coordinator.clone();
        let signal = self.shutdown_signal();
        self.spawn_leading("results", async move { Ok(results.consume_results(signal).await?) });
        for queue in [QueueName::DeadTasks, QueueName::DeadResults] {
            let dead = coordinator.clone();
            let signal = self.shutdown_signal();
            self.spawn_leading("dead-letters", async move {
                Ok(dead.consume_dead_letters(queue, signal).await?)
            });
        }
        let reconciler = coordinator.clone();
        let mut signal = self.shutdown_signal();
        self.spawn_leading("reconciler", async move {
            // The first pass right on taking the lead picks up what the
            // previous leader (or this process's previous life) left.
            let mut unpublished_for = Duration::ZERO;
            loop {
                if let Err(error) = reconciler.reconcile(unpublished_for).await {
                    tracing::warn!(%error, "reconciling runs failed; the next pass tries again");
                }
                unpublished_for = RECONCILE_EVERY;
                tokio::select! {
                    _ = tokio::time::sleep(RECONCILE_EVERY) => {}
                    _ = signal.changed() => return Ok(()),
                }
            }
        });
        self.coordinator = Some(coordinator);
    }

    /// Spawns a component that runs only while this process leads.
    fn spawn_leading<F>(&mut self, name: &'static str, future: F)
    where
        F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let mut role = self.role.clone();
        let mut shutdown = self.shutdown_signal();
        self.spawn(name, async move {
            tokio::select! {
                leading = crate::leader::until_leader(&mut role) => if !leading { return Ok(()) },
                _ = shutdown.changed() => return Ok(()),
            }
            future.await
        });
    }

    /// Resolves when this process lost the lead, with the reason.
    pub async fn deposed(&self) -> String {
        let mut role = self.role.clone();
        let reason = match role.wait_for(|role| matches!(role, Role::Deposed(_))).await {
            Ok(role) => match &*role {
                Role::Deposed(reason) => Some(reason.clone()),
                _ => None,
            },
            Err(_) => None,
        };
        match reason {
            Some(reason) => reason,
            // The election ended without a deposition: never resolves.
            None => std::future::pending().await,
        }
    }

    /// Sweeps the object store every `settings.every` (the first sweep a
    /// tenth of that after start). Needs a coordinator that has the store.
    pub fn start_janitor(&mut self, settings: GcSettings) -> anyhow::Result<()> {
        let coordinator = self.coordinator.clone().expect("a coordinator runs here");
        let Some(janitor) = self.janitor(settings)? else {
            tracing::warn!(
                "no object store given (--store-url): the janitor does not run and objects are never collected"
            );
            return Ok(());
        };
        let mut signal = self.shutdown_signal();
        self.spawn_leading("janitor", async move {
            let mut wait = janitor.settings().every / 10;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = signal.changed() => return Ok(()),
                }
                wait = janitor.settings().every;
                match janitor.sweep().await {
                    Ok(report) => {
                        coordinator.metrics.gc_objects_deleted.inc_by(report.objects_deleted);
                        coordinator.metrics.gc_runs_expired.inc_by(report.runs_expired);
                    }
                    Err(error) => {
                        coordinator.metrics.gc_sweeps_failed.inc();
                        tracing::warn!(%error, "the janitor's sweep stopped; the next one goes on");
                    }
                }
            }
        });
        Ok(())
    }

    /// One sweep, for a process that runs a sync and exits (`ebb sync run`):
    /// a data directory used only that way is collected too, run after run
    /// (what a sweep marks goes at a later one, once its grace is over).
    pub async fn sweep_once(&self, settings: GcSettings) -> anyhow::Result<Option<crate::janitor::SweepReport>> {
        match self.janitor(settings)? {
            Some(janitor) => Ok(Some(janitor.sweep().await?)),
            None => Ok(None),
        }
    }

    /// The janitor of this runtime's coordinator; none without an object store.
    fn janitor(&self, settings: GcSettings) -> anyhow::Result<Option<Janitor>> {
        let coordinator = self.coordinator.as_ref().expect("a coordinator runs here");
        let settings = settings
            .validated(crate::run::coordinator::run_deadline())
            .map_err(anyhow::Error::msg)?;
        Ok(coordinator
            .storage()
            .cloned()
            .map(|storage| Janitor::new(coordinator.store().clone(), storage, settings)))
    }

    pub fn start_scheduler(&mut self) {
        let coordinator = self.coordinator.clone().expect("a coordinator runs here");
        let signal = self.shutdown_signal();
        self.spawn_leading("scheduler", async move {
            crate::scheduler::run_scheduler(coordinator, signal).await;
            Ok(())
        });
    }

    fn start_workers(
        &mut self,
        worker_ids: Vec<String>,
        concurrency: usize,
        queue: Arc<dyn MessageQueue>,
        storage: Storage,
        leases: Arc<dyn LeaseProvider>,
    ) {
        for worker_id in worker_ids {
            let mut settings = WorkerSettings::new(worker_id);
            settings.concurrency = concurrency;
            let worker = Arc::new(Worker::new(settings, queue.clone(), storage.clone(), leases.clone()));
            self.workers.push(worker.clone());
            let signal = self.shutdown_signal();
            self.spawn("worker", async move { Ok(worker.run(signal).await?) });
        }
    }

    /// Asks every component to stop and waits for tasks in flight, up to `grace`.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.shutdown.send(true);
        let all = futures::future::join_all(self.tasks);
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!("components still busy after {grace:?}; their tasks will be delivered again");
        }
        for queue in &self.queues {
            let _ = tokio::time::timeout(Duration::from_secs(5), queue.close()).await;
        }
        if let Some(coordinator) = self.coordinator {
            coordinator.store().close().await;
        }
    }
}

/// Everything in one process on embedded parts: SQLite state, an in-process
/// queue and a local object directory, all under `data_dir`.
pub async fn start_embedded(
    config: Arc<Config>,
    data_dir: &Path,
    workers: usize,
    concurrency: usize,
) -> anyhow::Result<Runtime> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    // One process runs a data directory's syncs: a second one would take the
    // first one's runs for orphans and interrupt them.
    let lock = lock_data_dir(data_dir)?;
    let state_url = format!("sqlite://{}", data_dir.join("state.db").display());
    let store = StateStore::connect(&state_url).await?;
    let queue: Arc<dyn MessageQueue> = Arc::new(MemoryQueue::new());
    let storage = Storage::from_url(&data_dir.join("objects").display().to_string())?;
    let leases = LocalLeases::for_config(&config).with_store(store.clone());
    let coordinator = Coordinator::new(store, queue.clone(), Some(storage.clone()), config);
    coordinator.recover_runs(false).await?;
    let mut runtime = Runtime::new();
    runtime.leases = leases;
    runtime._data_dir_lock = Some(lock);
    runtime.start_coordinator(coordinator, "");
    let leases: Arc<dyn LeaseProvider> = Arc::new(runtime.leases.clone());
    let ids = (0..workers).map(|i| format!("standalone-{i}")).collect();
    runtime.start_workers(ids, concurrency, queue, storage, leases);
    Ok(runtime)
}

/// An embedded data directory's state and objects, to read runs and rows (and
/// cancel a run) beside a process that may be running it: no lock, no workers,
/// no consumer, nothing marked as orphaned.
pub async fn open_embedded_state(config: Arc<Config>, data_dir: &Path) -> anyhow::Result<Runtime> {
    let state_url = format!("sqlite://{}", data_dir.join("state.db").display());
    let store = StateStore::connect(&state_url).await?;
    let queue: Arc<dyn MessageQueue> = Arc::new(MemoryQueue::new());
    let storage = Storage::from_url(&data_dir.join("objects").display().to_string())?;
    let mut runtime = Runtime::new();
    runtime.coordinator = Some(Coordinator::new(store, queue, Some(storage), config));
    Ok(runtime)
}

/// Takes the data directory's lock, or says who holds it and what to do.
fn lock_data_dir(data_dir: &Path) -> anyhow::Result<std::fs::File> {
    let path = data_dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "the data directory {} is in use by another Ebb process (an `ebb standalone`, or another \
             `ebb sync run`); talk to a running standalone with --api-url http://ADDRESS (its --listen), \
             or wait for the other run to end",
            data_dir.display()
        ),
        Err(std::fs::TryLockError::Error(error)) => {
            Err(error).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// The coordinator of a fleet: PostgreSQL (or SQLite) state and RabbitMQ.
/// `store_url`, the fleet's object store, serves row-level results; without it
/// the API has only the state DB's samples of rejected and invalid rows.
///
/// Any number of coordinators may share one state DB: one leads (see
/// `leader`), the others serve the API and take over when it goes.
/// `advertise_url` is where this one's API answers, for workers that reach a
/// standby first.
pub async fn start_coordinator(
    config: Arc<Config>,
    state_url: &str,
    queue: &QueueSettings,
    store_url: Option<&str>,
    advertise_url: &str,
) -> anyhow::Result<Runtime> {
    let queue = queue.connect().await?;
    let store = StateStore::connect(state_url).await?;
    let storage = store_url.map(Storage::from_url).transpose()?;
    let leases = LocalLeases::for_config(&config).with_store(store.clone());
    leases.stand_by(None);
    let coordinator = Coordinator::new(store, queue.clone(), storage, config);
    let mut runtime = Runtime::new();
    runtime.queues.push(queue);
    runtime.leases = leases;
    runtime.start_coordinator(coordinator, advertise_url);
    Ok(runtime)
}

/// Workers of a fleet: RabbitMQ, the shared object store, and leases from the
/// coordinator's API.
pub async fn start_worker(
    worker_id: &str,
    queue: &QueueSettings,
    store_url: &str,
    coordinator_url: &str,
    concurrency: usize,
) -> anyhow::Result<Runtime> {
    let queue = queue.connect().await?;
    let storage = Storage::from_url(store_url)?;
    // The coordinator's internal token, from the environment only.
    let token = std::env::var("EBB_INTERNAL_TOKEN").ok().filter(|t| !t.is_empty());
    let leases = HttpLeaseProvider::new(coordinator_url, token.as_deref()).map_err(anyhow::Error::msg)?;
    let leases: Arc<dyn LeaseProvider> = Arc::new(leases);
    let mut runtime = Runtime::new();
    runtime.queues.push(queue.clone());
    runtime.start_workers(vec![worker_id.to_string()], concurrency, queue, storage, leases);
    Ok(runtime)
}
