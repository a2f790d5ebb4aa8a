//! The coordinator drives runs: it creates them, publishes their tasks, accepts
//! the workers' results and commits them. It never touches row data: extraction
//! and diffing happen on workers, and what comes back is counts, object keys and
//! capped samples of keys (invariant 1).

use super::planner::{bucket_work, plan_shards, previous_for, rows_per_shard};
use super::state::{RunEvent, RunStatus};
use crate::metrics::Metrics;
use crate::store::{
    pointer_base, CommitOutcome, NewRun, OutboxTask, PartCommit, RunRecord, ShardPlanRow, StateStore, StoreError,
};
use ebb_shared::config::{Config, ExtractTasks, SyncSpec};
use ebb_shared::hashing::{HashRange, BUCKET_COUNT};
use ebb_shared::protocol::RowResult;
use ebb_shared::protocol::{
    self, ExtractPart, ExtractReport, PartitionPlan, ResultMessage, ShardReport, ShardTask, TaskKind, TaskMessage,
    TaskOutcome, PROTOCOL_VERSION,
};
use ebb_shared::queue::{
    MessageQueue, OutgoingMessage, QueueError, QueueName, DELIVERY_LIMIT, RESULT_DELIVERY_LIMIT, RUN_ID_HEADER,
    TASK_ID_HEADER,
};
use ebb_shared::storage::Storage;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tracing::Instrument;

#[derive(Debug, Clone, Default)]
pub struct TriggerOptions {
    pub full_resync: bool,
    pub reset_cdc: bool,
    /// Set by the scheduler: the interval tick this run is for.
    pub schedule_tick: Option<i64>,
    /// `manual`, `api` or `schedule`.
    pub trigger: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    #[error("{0}")]
    UnknownSync(String),
    #[error("sync {sync:?} already has run {run_id} in flight")]
    AlreadyRunning { sync: String, run_id: String },
    #[error("this schedule tick already has its run")]
    TickTaken,
    #[error("choose either a full resync or a CDC reset, not both")]
    Conflicting,
    #[error(
        "model {model:?} of sync {sync:?} changed its primary key from {from:?} to {to:?}: \
         the last snapshot no longer matches its rows; trigger a full resync (--full-resync) or a CDC reset (--reset-cdc)"
    )]
    PrimaryKeyChanged {
        sync: String,
        model: String,
        from: String,
        to: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct Coordinator {
    store: StateStore,
    queue: Arc<dyn MessageQueue>,
    /// Where the workers write row files, for row-level results; optional for
    /// a fleet coordinator.
    storage: Option<Storage>,
    config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    /// Rows answered so far per run and shard, from progress reports. Kept in
    /// memory only: it feeds progress bars, never decisions.
    progress: Mutex<HashMap<String, HashMap<u32, u64>>>,
}

impl Coordinator {
    pub fn new(
        store: StateStore,
        queue: Arc<dyn MessageQueue>,
        storage: Option<Storage>,
        config: Arc<Config>,
    ) -> Arc<Coordinator> {
        Arc::new(Coordinator {
            store,
            queue,
            storage,
            config,
            metrics: Arc::new(Metrics::default()),
            progress: Mutex::new(HashMap::new()),
        })
    }

    pub fn store(&self) -> &StateStore {
        &self.store
    }

    /// The fleet's object store, when this coordinator was given it.
    pub fn storage(&self) -> Option<&Storage> {
        self.storage.as_ref()
    }

    /// Whether this coordinator can do its work now: its state database and
    /// its queue both answer (within 5 s). Each failing part names its error.
    pub async fn readiness(&self) -> Readiness {
        let within = Duration::from_secs(5);
        let database = match tokio::time::timeout(within, self.store.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {within:?}")),
        };
        let queue = match tokio::time::timeout(within, self.queue.depth(QueueName::Tasks)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {within:?}")),
        };
        Readiness { database, queue }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The rows of a run that pass `filter`, streamed from the row files.
    pub async fn rows(
        &self,
        run_id: &str,
        filter: super::rows::RowFilter,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<RowResult, super::rows::RowsError>>, super::rows::RowsError> {
        super::rows::stream_rows(&self.store, self.storage.as_ref(), run_id, filter).await
    }

    /// The requests a run sent, as the live debugger kept them.
    pub async fn requests(
        &self,
        run_id: &str,
        filter: &super::requests::RequestFilter,
    ) -> Result<(Vec<ebb_worker::debugger::BatchLog>, bool), super::requests::RequestsError> {
        super::requests::run_requests(&self.store, self.storage.as_ref(), run_id, filter).await
    }

    /// Rows answered so far in a run's shards.
    pub fn rows_done(&self, run_id: &str) -> u64 {
        self.progress
            .lock()
            .unwrap()
            .get(run_id)
            .map_or(0, |shards| shards.values().sum())
    }

    /// Starts a run of `sync`: records it as queued and publishes its extract task.
    #[tracing::instrument(name = "trigger", skip_all, fields(sync = sync))]
    pub async fn trigger(&self, sync: &str, options: TriggerOptions) -> Result<RunRecord, TriggerError> {
        let spec = self
            .config
            .sync_spec(sync)
            .map_err(|e| TriggerError::UnknownSync(e.to_string()))?;
        if options.full_resync && options.reset_cdc {
            return Err(TriggerError::Conflicting);
        }
        self.store.ensure_sync(sync, &spec.model.primary_key).await?;
        if let Some(synced_key) = self.store.synced_primary_key(sync).await? {
            if synced_key != spec.model.primary_key && !options.full_resync && !options.reset_cdc {
                return Err(TriggerError::PrimaryKeyChanged {
                    sync: sync.to_string(),
                    model: spec.model_name.clone(),
                    from: synced_key,
                    to: spec.model.primary_key.clone(),
                });
            }
        }
        let new_run = NewRun {
            id: uuid::Uuid::now_v7().to_string(),
            sync: sync.to_string(),
            trigger: if options.trigger.is_empty() {
                "manual".into()
            } else {
                options.trigger.clone()
            },
            schedule_tick: options.schedule_tick,
            full_resync: options.full_resync,
            reset_cdc: options.reset_cdc,
        };
        let run = match self.store.create_run(&new_run).await? {
            Ok(run) => run,
            Err(Some(run_id)) => {
                return Err(TriggerError::AlreadyRunning {
                    sync: sync.to_string(),
                    run_id,
                })
            }
            Err(None) => return Err(TriggerError::TickTaken),
        };
        self.metrics.runs_started.inc();
        self.metrics.runs_active.inc();
        tracing::info!(run = %run.id, sync, trigger = %run.trigger, "run queued");
        let task = run_task(&run, spec, TaskKind::Extract);
        // The run is querying before its task is out: a worker can finish the
        // extraction before this function goes on, and its result must find
        // the run ready for it (a result for a run still queued is dropped).
        // The task is in the outbox in the same transaction, so a crash before
        // the publish below leaves it for the reconciler.
        let task = outboxed(&task);
        self.store.begin_querying(&run.id, &task).await?;
        crash_point("after-querying");
        if let Err(error) = self.publish(&task).await {
            self.fail_run(&run.id, &format!("could not queue the extract task: {error}"))
                .await?;
        }
        Ok(self.store.run(&run.id).await?.unwrap_or(run))
    }

    /// Publishes a task of the outbox, carrying the current trace context (so
    /// the worker's spans join the run's trace) and the ids of its run and task
    /// (so even a worker that cannot read it can name them), and marks it sent.
    async fn publish(&self, task: &OutboxTask) -> Result<(), QueueError> {
        let mut message = OutgoingMessage::traced(task.payload.clone());
        message.headers.insert(RUN_ID_HEADER.into(), task.run_id.clone());
        message.headers.insert(TASK_ID_HEADER.into(), task.task_id.clone());
        self.queue.publish(QueueName::Tasks, message).await?;
        if let Err(error) = self.store.mark_published(&task.task_id).await {
            // Only a second publish follows from this, which tasks tolerate.
            tracing::warn!(task = %task.task_id, %error, "could not mark a task as published");
        }
        Ok(())
    }

    /// Moves every run in flight on, from what the state DB says: publishes
    /// the tasks a crash left in the outbox (older than `unpublished_for`),
    /// finishes runs whose shards are all in, and ends runs past their deadline.
    /// Runs at start and periodically; every step is idempotent.
    pub async fn reconcile(&self, unpublished_for: Duration) -> Result<(), StoreError> {
        let before = crate::store::now_ms() - unpublished_for.as_millis() as i64;
        for task in self.store.unpublished_tasks(before).await? {
            tracing::warn!(run = %task.run_id, task = %task.task_id, "publishing a task a crash left unpublished");
            if let Err(error) = self.publish(&task).await {
                tracing::warn!(task = %task.task_id, %error, "could not publish; the next pass tries again");
            }
        }
        let now = crate::store::now_ms();
        for run in self.store.active_runs().await? {
            match repair(&run, now, run_deadline()) {
                Repair::Nothing => {}
                Repair::StartQuerying => {
                    if let Ok(spec) = self.config.sync_spec(&run.sync) {
                        let task = outboxed(&run_task(&run, spec, TaskKind::Extract));
                        if self.store.begin_querying(&run.id, &task).await? {
                            tracing::warn!(run = %run.id, "a queued run's extraction was never started; starting it");
                            if let Err(error) = self.publish(&task).await {
                                tracing::warn!(run = %run.id, %error, "could not publish; the next pass tries again");
                            }
                        }
                    }
                }
                Repair::PlanShards => {
                    tracing::warn!(run = %run.id, "planning the shards of a run whose extract parts are all in");
                    self.plan_from_parts(&run.id).await?;
                }
                Repair::Finish => {
                    tracing::warn!(run = %run.id, status = %run.status, "finishing a run whose shards are all in");
                    self.finish(&run).await?;
                }
                Repair::Interrupt(reason) => {
                    tracing::warn!(run = %run.id, %reason, "interrupting a run past its deadline");
                    self.end_run(&run.id, RunEvent::Interrupted, Some(&reason)).await?;
                }
            }
        }
        self.store.prune_outbox().await?;
        Ok(())
    }

    /// Cancels a run in flight. Tasks already handed out finish; their results
    /// are still committed, since they say what the destination received.
    pub async fn cancel(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        self.end_run(run_id, RunEvent::Cancelled, Some("cancelled by request"))
            .await?;
        self.store.run(run_id).await
    }

    /// Fails a run if it is still in flight; a no-op on a finished run.
    pub async fn fail_run(&self, run_id: &str, error: &str) -> Result<(), StoreError> {
        tracing::warn!(run = run_id, error, "run failed");
        self.end_run(run_id, RunEvent::Failed, Some(error)).await
    }

    async fn end_run(&self, run_id: &str, event: RunEvent, error: Option<&str>) -> Result<(), StoreError> {
        // The status may move under us (a result arriving); retry on the new one.
        for _ in 0..5 {
            let Some(run) = self.store.run(run_id).await? else {
                return Ok(());
            };
            let Ok(next) = run.status.next(event) else {
                return Ok(());
            };
            if self.store.transition(run_id, run.status, next, error).await? {
                self.run_ended(run_id, &run.sync, next);
                return Ok(());
            }
        }
        Ok(())
    }

    fn run_ended(&self, run_id: &str, sync: &str, status: RunStatus) {
        self.metrics.runs_active.dec();
        self.metrics
            .runs_finished
            .get_or_create(&vec![
                ("sync".to_string(), sync.to_string()),
                ("status".to_string(), status.as_str().to_string()),
            ])
            .inc();
        if matches!(status, RunStatus::Success | RunStatus::Warning) {
            self.metrics
                .sync_last_success
                .get_or_create(&vec![("sync".to_string(), sync.to_string())])
                .set(chrono::Utc::now().timestamp());
        }
        self.progress.lock().unwrap().remove(run_id);
        tracing::info!(run = run_id, sync, %status, "run finished");
    }

    /// Picks up where a previous process left its runs. With a durable queue
    /// the tasks survived it (and the outbox holds those it never published):
    /// the reconciler moves every run on. With the in-process queue they died
    /// with it, and its runs in flight are interrupted.
    pub async fn recover_runs(&self, queue_is_durable: bool) -> Result<(), StoreError> {
        if queue_is_durable {
            return self.reconcile(Duration::ZERO).await;
        }
        let message = "the coordinator stopped while this run was in flight";
        for run in self.store.active_runs().await? {
            if let Ok(next) = run.status.next(RunEvent::Interrupted) {
                self.store.transition(&run.id, run.status, next, Some(message)).await?;
                tracing::warn!(run = %run.id, "run interrupted by a coordinator restart");
            }
        }
        Ok(())
    }

    /// Accepts results until `shutdown`; a result is acknowledged only once it
    /// is committed, so a coordinator crash replays it (commits are idempotent).
    pub async fn consume_results(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) -> Result<(), QueueError> {
        let mut results = self.queue.consume(QueueName::Results, 32).await?;
        loop {
            let delivery = tokio::select! {
                delivery = results.next() => delivery,
                _ = shutdown.changed() => None,
            };
            let Some(delivery) = delivery else {
                return Ok(());
            };
            let message: ResultMessage = match protocol::decode(&delivery.payload) {
                Ok(message) => message,
                Err(error) => {
                    // To the dead-letter queue, where its run fails by name.
                    tracing::error!(%error, "a result this coordinator cannot read; dead-lettering it");
                    let _ = delivery.reject().await;
                    continue;
                }
            };
            // The result carries the trace context of the task that produced
            // it: what the coordinator does next joins the same trace.
            // Progress reports carry none and get no span.
            let span = if delivery.headers.contains_key("traceparent") {
                tracing::info_span!("result", run = %message.run_id, task_id = %message.task_id)
            } else {
                tracing::Span::none()
            };
            ebb_shared::telemetry::extract(&delivery.headers, &span);
            match self.accept(message).instrument(span).await {
                Ok(()) => {
                    let _ = delivery.ack().await;
                }
                Err(error) => {
                    tracing::error!(%error, "could not record a result; it will be delivered again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let _ = delivery.requeue().await;
                }
            }
        }
    }

    /// Fails the runs of tasks and results that went to a dead-letter queue
    /// (`DeadTasks` or `DeadResults`), naming what happened.
    pub async fn consume_dead_letters(
        self: Arc<Self>,
        queue: QueueName,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), QueueError> {
        let mut dead = self.queue.consume(queue, 4).await?;
        loop {
            let delivery = tokio::select! {
                delivery = dead.next() => delivery,
                _ = shutdown.changed() => None,
            };
            let Some(delivery) = delivery else {
                return Ok(());
            };
            let Some(DeadLetter { run_id, task_id, error }) = dead_letter(queue, &delivery.payload, &delivery.headers)
            else {
                tracing::error!(%queue, "a dead-lettered message names no run; dropping it");
                let _ = delivery.ack().await;
                continue;
            };
            match self.failure_still_matters(&run_id, &task_id).await {
                Ok(true) => {}
                Ok(false) => {
                    let _ = delivery.ack().await;
                    continue;
                }
                Err(e) => {
                    tracing::error!(%e, "could not look up the run of a dead letter");
                    let _ = delivery.requeue().await;
                    continue;
                }
            }
            if let Err(e) = self.fail_run(&run_id, &error).await {
                tracing::error!(%e, "could not fail the run of a dead letter");
                let _ = delivery.requeue().await;
                continue;
            }
            let _ = delivery.ack().await;
        }
    }

    async fn accept(&self, message: ResultMessage) -> Result<(), StoreError> {
        let kind = match &message.outcome {
            TaskOutcome::Extracted(_) => "extracted",
            TaskOutcome::Partitioned(_) => "partitioned",
            TaskOutcome::ShardDone(_) => "shard_done",
            TaskOutcome::Progress(_) => "progress",
            TaskOutcome::Failed(_) => "failed",
        };
        self.metrics
            .results_received
            .get_or_create(&vec![("kind".to_string(), kind.to_string())])
            .inc();
        match message.outcome {
            TaskOutcome::Progress(progress) => {
                self.progress
                    .lock()
                    .unwrap()
                    .entry(message.run_id)
                    .or_default()
                    .insert(progress.index, progress.done);
                Ok(())
            }
            TaskOutcome::Failed(failure) => {
                if !self.failure_still_matters(&message.run_id, &message.task_id).await? {
                    tracing::info!(
                        run = %message.run_id,
                        task = %message.task_id,
                        error = %failure.error,
                        "ignoring the failure of a task another attempt already did"
                    );
                    return Ok(());
                }
                let error = format!(
                    "{} (task {}, worker {})",
                    failure.error, message.task_id, message.worker_id
                );
                self.fail_run(&message.run_id, &error).await
            }
            TaskOutcome::Extracted(report) if report.part.is_some() => {
                self.on_part_extracted(&message.run_id, report).await
            }
            TaskOutcome::Extracted(report) => self.on_extracted(&message.run_id, report).await,
            TaskOutcome::Partitioned(plan) => self.on_partitioned(&message.run_id, plan).await,
            TaskOutcome::ShardDone(report) => self.on_shard_done(&message.run_id, report).await,
        }
    }

    /// Whether a failed task's work is still undone: a duplicate attempt can
    /// fail after another attempt's result was accepted.
    async fn failure_still_matters(&self, run_id: &str, task_id: &str) -> Result<bool, StoreError> {
        let Some(run) = self.store.run(run_id).await? else {
            return Ok(false);
        };
        let task = TaskRef::parse(task_id);
        let task_status = match task {
            TaskRef::Shard(index) => self.store.shard_status(run_id, index).await?,
            TaskRef::ExtractPart(index) => self.store.extract_part_status(run_id, index).await?,
            // Once its parts are planned, the extract task's own work is done.
            TaskRef::Extract if run.extract_parts > 0 => Some("done".to_string()),
            TaskRef::Extract | TaskRef::Unknown => None,
        };
        Ok(failure_matters(task, run.status, task_status.as_deref()))
    }

    /// A worker planned the parts the run's model is read in: record them and
    /// queue one task per part.
    async fn on_partitioned(&self, run_id: &str, plan: PartitionPlan) -> Result<(), StoreError> {
        let Some(run) = self.store.run(run_id).await? else {
            return Ok(());
        };
        if run.status != RunStatus::Querying || run.extract_parts > 0 {
            tracing::info!(run = run_id, status = %run.status, "ignoring a late or repeated extraction plan");
            return Ok(());
        }
        let spec = match self.config.sync_spec(&run.sync) {
            Ok(spec) => spec,
            Err(error) => return self.fail_run(run_id, &error.to_string()).await,
        };
        let count = plan.parts.len();
        if count == 0 || count > ExtractTasks::MAX as usize {
            let error = format!(
                "a worker planned {count} extract parts for model {:?}; 1 to {} are possible (a worker of another version?)",
                spec.model_name,
                ExtractTasks::MAX
            );
            return self.fail_run(run_id, &error).await;
        }
        let tasks: Vec<OutboxTask> = plan
            .parts
            .into_iter()
            .enumerate()
            .map(|(index, range)| {
                let part = ExtractPart {
                    index: index as u32,
                    count: count as u32,
                    range,
                };
                outboxed(&run_task(&run, spec.clone(), TaskKind::ExtractPart(part)))
            })
            .collect();
        if !self.store.begin_extract_parts(run_id, &tasks).await? {
            return Ok(());
        }
        tracing::info!(
            run = run_id,
            parts = count,
            "the model is read in parts; part tasks queued"
        );
        self.publish_all(run_id, &tasks, "extract part").await
    }

    /// One part of the model is in; once all are, the shards are planned from
    /// their reports together.
    async fn on_part_extracted(&self, run_id: &str, report: ExtractReport) -> Result<(), StoreError> {
        let index = report.part.unwrap_or_default();
        let rows = report.rows_queried;
        match self
            .store
            .commit_extract_part(run_id, index, &protocol::encode(&report))
            .await?
        {
            PartCommit::Ignored => {
                tracing::info!(run = run_id, part = index, "ignoring a late or repeated extract part");
                Ok(())
            }
            PartCommit::Accepted { remaining: 0 } => {
                tracing::info!(run = run_id, part = index, rows, "extract part in; it was the last");
                self.plan_from_parts(run_id).await
            }
            PartCommit::Accepted { remaining } => {
                tracing::info!(run = run_id, part = index, rows, remaining, "extract part in");
                Ok(())
            }
        }
    }

    /// Plans the shards of a run whose every extract part is in, from their
    /// reports merged in part order.
    async fn plan_from_parts(&self, run_id: &str) -> Result<(), StoreError> {
        let Some(reports) = self.store.extract_part_reports(run_id).await? else {
            return Ok(());
        };
        let reports: Result<Vec<ExtractReport>, _> = reports.iter().map(|bytes| protocol::decode(bytes)).collect();
        match reports {
            Ok(reports) => match self.store.run(run_id).await? {
                Some(run) => self.plan_shards(run, ExtractReport::merge(reports)).await,
                None => Ok(()),
            },
            Err(error) => {
                self.fail_run(run_id, &format!("a stored extract part cannot be read: {error}"))
                    .await
            }
        }
    }

    /// The model was read whole by one task.
    async fn on_extracted(&self, run_id: &str, report: ExtractReport) -> Result<(), StoreError> {
        let Some(run) = self.store.run(run_id).await? else {
            return Ok(());
        };
        if run.extract_parts > 0 {
            tracing::info!(run = run_id, "ignoring a whole extraction of a run read in parts");
            return Ok(());
        }
        self.plan_shards(run, report).await
    }

    /// Extraction is done: plan the shards from what it reported and queue them.
    async fn plan_shards(&self, run: RunRecord, report: ExtractReport) -> Result<(), StoreError> {
        let run_id = run.id.as_str();
        if run.status != RunStatus::Querying {
            tracing::info!(run = run_id, status = %run.status, "ignoring a late or repeated extraction result");
            return Ok(());
        }
        let spec = match self.config.sync_spec(&run.sync) {
            Ok(spec) => spec,
            Err(error) => return self.fail_run(run_id, &error.to_string()).await,
        };
        let pointers = self.store.pointers(&run.sync).await?;
        let previous_rows = self.store.snapshot_bucket_rows(&run.sync).await?;
        let tasks = shard_tasks(&spec, &run, &report, &pointers, &previous_rows);
        let rows: Vec<ShardPlanRow> = tasks
            .iter()
            .map(|(task, base)| ShardPlanRow {
                index: task.index,
                range: task.range,
                base: base.clone(),
            })
            .collect();
        let messages: Vec<OutboxTask> = tasks
            .into_iter()
            .map(|(shard, _)| outboxed(&run_task(&run, spec.clone(), TaskKind::Shard(shard))))
            .collect();
        if !self
            .store
            .begin_processing(
                run_id,
                report.rows_queried,
                report.null_keys,
                &report.null_key_rows,
                &rows,
                &messages,
            )
            .await?
        {
            return Ok(());
        }
        tracing::info!(
            run = run_id,
            rows = report.rows_queried,
            null_keys = report.null_keys,
            shards = messages.len(),
            "extraction done; shards queued"
        );
        self.publish_all(run_id, &messages, "shard").await
    }

    /// Publishes a run's tasks recorded in the outbox; a failure fails the run
    /// (`what` names the tasks in its error).
    async fn publish_all(&self, run_id: &str, tasks: &[OutboxTask], what: &str) -> Result<(), StoreError> {
        for (published, task) in tasks.iter().enumerate() {
            if published == 1 {
                crash_point(&format!("during-{what}-publishes").replace(' ', "-"));
            }
            if let Err(error) = self.publish(task).await {
                return self
                    .fail_run(run_id, &format!("could not queue {what} tasks: {error}"))
                    .await;
            }
        }
        Ok(())
    }

    async fn on_shard_done(&self, run_id: &str, report: ShardReport) -> Result<(), StoreError> {
        let Some(run) = self.store.run(run_id).await? else {
            return Ok(());
        };
        match self.store.commit_shard(run_id, &run.sync, &report).await? {
            outcome @ (CommitOutcome::Committed(_) | CommitOutcome::Stale(_)) => {
                for (outcome, counts) in [
                    ("planned", &report.planned),
                    ("succeeded", &report.succeeded),
                    ("failed", &report.failed),
                ] {
                    self.metrics.count_rows("added", outcome, counts.added);
                    self.metrics.count_rows("changed", outcome, counts.changed);
                    self.metrics.count_rows("removed", outcome, counts.removed);
                }
                let run = match outcome {
                    CommitOutcome::Stale(run) => {
                        tracing::warn!(
                            run = run_id,
                            shard = report.index,
                            "shard result is stale (another run moved its snapshot first): counted, but its rows will be seen again"
                        );
                        run
                    }
                    CommitOutcome::Committed(run) => run,
                    _ => unreachable!("matched above"),
                };
                if run.status == RunStatus::Processing && run.shards_done >= run.shards_total {
                    crash_point("before-finish");
                    self.finish(&run).await?;
                }
            }
            CommitOutcome::Duplicate => {
                tracing::info!(run = run_id, shard = report.index, "ignoring a repeated shard result");
            }
            CommitOutcome::Superseded => {
                tracing::info!(
                    run = run_id,
                    shard = report.index,
                    "late shard result of a finished run: its snapshot is kept, the run's counts stay as they were"
                );
            }
            CommitOutcome::UnknownShard => {
                tracing::warn!(
                    run = run_id,
                    shard = report.index,
                    "result for a shard this run never planned"
                );
            }
        }
        Ok(())
    }

    /// Ends a run whose shards are all in: processing → reporting → its
    /// outcome. A run found in reporting (a crash inside `finish`) goes on
    /// from there.
    async fn finish(&self, run: &RunRecord) -> Result<(), StoreError> {
        if run.status == RunStatus::Processing
            && !self
                .store
                .transition(&run.id, RunStatus::Processing, RunStatus::Reporting, None)
                .await?
        {
            return Ok(());
        }
        crash_point("inside-finish");
        let rejected = run.failed.total();
        let nothing_succeeded = run.planned.total() > 0 && run.succeeded.total() == 0 && rejected > 0;
        let event = RunEvent::Completed {
            rejected_or_invalid: rejected > 0 || run.invalid() > 0,
            nothing_succeeded,
        };
        let status = RunStatus::Reporting.next(event).expect("reporting completes");
        let error = match status {
            RunStatus::Failed => Some(
                run.error
                    .clone()
                    .unwrap_or_else(|| format!("the destination rejected all {rejected} planned rows")),
            ),
            RunStatus::Warning if rejected > 0 => Some(format!("{rejected} rows were rejected by the destination")),
            _ => None,
        };
        if self
            .store
            .transition(&run.id, RunStatus::Reporting, status, error.as_deref())
            .await?
        {
            if run.full_resync || run.reset_cdc {
                if let Ok(spec) = self.config.sync_spec(&run.sync) {
                    self.store
                        .set_synced_primary_key(&run.sync, &spec.model.primary_key)
                        .await?;
                }
            }
            self.run_ended(&run.id, &run.sync, status);
        }
        Ok(())
    }
}

/// A dead-lettered message's run, task and the error its run fails with.
#[derive(Debug, PartialEq, Eq)]
pub struct DeadLetter {
    pub run_id: String,
    pub task_id: String,
    pub error: String,
}

/// Reads a dead letter of `queue`: the ids from the message itself, or, when
/// no one can read it, from the headers every task and result carries.
pub fn dead_letter(
    queue: QueueName,
    payload: &[u8],
    headers: &std::collections::BTreeMap<String, String>,
) -> Option<DeadLetter> {
    let from_headers = || {
        headers
            .get(RUN_ID_HEADER)
            .zip(headers.get(TASK_ID_HEADER))
            .map(|(run, task)| (run.clone(), task.clone()))
    };
    let (run_id, task_id, error) = match queue {
        QueueName::Tasks | QueueName::Results => return None,
        QueueName::DeadTasks => match protocol::decode::<TaskMessage>(payload) {
            Ok(task) => {
                let error = format!(
                    "task {} was given up after {DELIVERY_LIMIT} deliveries: every worker that took it stopped \
                     before finishing (crash, out of memory or timeout); see the workers' logs",
                    task.task_id
                );
                (task.run_id, task.task_id, error)
            }
            Err(reason) => {
                let (run_id, task_id) = from_headers()?;
                let error = format!(
                    "task {task_id} could not be read by a worker ({reason}): workers older than the coordinator? \
                     Upgrade the workers first, then the coordinator"
                );
                (run_id, task_id, error)
            }
        },
        QueueName::DeadResults => match protocol::decode::<ResultMessage>(payload) {
            Ok(result) => {
                let error = format!(
                    "the result of task {} could not be recorded after {RESULT_DELIVERY_LIMIT} deliveries; \
                     see the coordinator's log for why",
                    result.task_id
                );
                (result.run_id, result.task_id, error)
            }
            Err(reason) => {
                let (run_id, task_id) = from_headers()?;
                let error = format!(
                    "the result of task {task_id} could not be read by the coordinator ({reason}): a worker newer \
                     than the coordinator? Upgrade the workers first, then the coordinator, and keep them together"
                );
                (run_id, task_id, error)
            }
        },
    };
    Some(DeadLetter { run_id, task_id, error })
}

/// A task of `run`, with the id `TaskRef::parse` reads back: `RUN/extract`,
/// `RUN/extract-N` for part N, `RUN/shard-N` for shard N.
fn run_task(run: &RunRecord, spec: SyncSpec, kind: TaskKind) -> TaskMessage {
    let task_id = match &kind {
        TaskKind::Extract => format!("{}/extract", run.id),
        TaskKind::ExtractPart(part) => format!("{}/extract-{}", run.id, part.index),
        TaskKind::Shard(shard) => format!("{}/shard-{}", run.id, shard.index),
    };
    TaskMessage {
        version: PROTOCOL_VERSION,
        task_id,
        run_id: run.id.clone(),
        sync: spec,
        kind,
        run_started_at_ms: run.created_at,
    }
}

fn outboxed(task: &TaskMessage) -> OutboxTask {
    OutboxTask {
        task_id: task.task_id.clone(),
        run_id: task.run_id.clone(),
        payload: protocol::encode(task),
    }
}

/// Fault-injection hook of the fault suite: `EBB_FAULT_CRASH_AT=NAME` stops the
/// process dead at the point called NAME, as a crash would.
/// `EBB_FAULT_PANIC_AT=NAME` panics there instead (the task dies, the process
/// goes on), to check how panics are logged and what the reconciler repairs.
fn crash_point(name: &str) {
    if std::env::var("EBB_FAULT_CRASH_AT").is_ok_and(|at| at == name) {
        eprintln!("EBB_FAULT_CRASH_AT={name}: stopping here");
        std::process::abort();
    }
    if std::env::var("EBB_FAULT_PANIC_AT").is_ok_and(|at| at == name) {
        panic!("EBB_FAULT_PANIC_AT={name}: panicking here");
    }
}

/// How long a run may stay in flight before it is interrupted
/// (`EBB_RUN_DEADLINE`, e.g. `6h`; one day by default).
pub fn run_deadline() -> Duration {
    std::env::var("EBB_RUN_DEADLINE")
        .ok()
        .and_then(|text| humantime::parse_duration(&text).ok())
        .unwrap_or(Duration::from_secs(24 * 3600))
}

/// What the reconciler does for a run in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repair {
    Nothing,
    /// Queued with no extraction started (a crash between creating the run
    /// and starting it).
    StartQuerying,
    /// Every extract part is in but the shards were never planned (a crash
    /// after accepting the last part).
    PlanShards,
    /// Every shard is in, or it was being reported: finish it.
    Finish,
    Interrupt(String),
}

/// The reconciler's decision for one run, from its record alone.
pub fn repair(run: &RunRecord, now_ms: i64, deadline: Duration) -> Repair {
    let age = Duration::from_millis((now_ms - run.created_at).max(0) as u64);
    if age > deadline {
        return Repair::Interrupt(format!(
            "the run was still {} after {}, past its deadline (EBB_RUN_DEADLINE)",
            run.status,
            humantime::format_duration(Duration::from_secs(deadline.as_secs()))
        ));
    }
    match run.status {
        RunStatus::Queued if age > Duration::from_secs(10) => Repair::StartQuerying,
        RunStatus::Querying if run.extract_parts > 0 && run.extract_parts_done >= run.extract_parts => {
            Repair::PlanShards
        }
        RunStatus::Processing if run.shards_done >= run.shards_total => Repair::Finish,
        RunStatus::Reporting => Repair::Finish,
        _ => Repair::Nothing,
    }
}

/// What `/readyz` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub database: Result<(), String>,
    pub queue: Result<(), String>,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.database.is_ok() && self.queue.is_ok()
    }
}

/// Which of a run's tasks a task id names (the coordinator makes the ids:
/// `RUN/extract`, `RUN/extract-N`, `RUN/shard-N`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskRef {
    Extract,
    ExtractPart(u32),
    Shard(u32),
    Unknown,
}

impl TaskRef {
    pub fn parse(task_id: &str) -> TaskRef {
        match task_id.rsplit_once('/').map(|(_, task)| task) {
            Some("extract") => TaskRef::Extract,
            Some(task) => {
                let numbered = |prefix: &str| task.strip_prefix(prefix).and_then(|n| n.parse().ok());
                if let Some(index) = numbered("shard-") {
                    TaskRef::Shard(index)
                } else if let Some(index) = numbered("extract-") {
                    TaskRef::ExtractPart(index)
                } else {
                    TaskRef::Unknown
                }
            }
            None => TaskRef::Unknown,
        }
    }
}

/// Whether a task's failure fails its run: only while the run is in flight and
/// the task's own work is not done yet (an extraction still awaited, an
/// extract part or a shard still pending). A late failure of a duplicate
/// attempt changes nothing. `task_status` is the task's own record: a shard's
/// or part's status, `done` for an extract task whose parts were planned.
pub fn failure_matters(task: TaskRef, run: RunStatus, task_status: Option<&str>) -> bool {
    if run.is_terminal() {
        return false;
    }
    match task {
        TaskRef::Extract => matches!(run, RunStatus::Queued | RunStatus::Querying) && task_status != Some("done"),
        TaskRef::ExtractPart(_) => run == RunStatus::Querying && task_status == Some("pending"),
        TaskRef::Shard(_) => task_status == Some("pending"),
        TaskRef::Unknown => true,
    }
}

/// One shard task per planned range, with the fingerprint of the pointers it reads.
fn shard_tasks(
    spec: &SyncSpec,
    run: &RunRecord,
    report: &ExtractReport,
    pointers: &[ebb_shared::protocol::SnapshotPointer],
    previous_rows: &[u64],
) -> Vec<(ShardTask, String)> {
    let mut bucket_rows = vec![0u64; BUCKET_COUNT];
    let mut bucket_chunks: Vec<&[protocol::ChunkRef]> = vec![&[]; BUCKET_COUNT];
    for bucket in &report.buckets {
        let index = bucket.bucket as usize;
        if index < BUCKET_COUNT {
            bucket_rows[index] = bucket.rows;
            bucket_chunks[index] = &bucket.chunks;
        }
    }
    // A spec the worker cannot profile fails its shards by name; size them as
    // if the destination had no limits.
    let (rate_limit, batch_records) = match ebb_worker::destinations::profile(&spec.destination) {
        Ok(profile) => (profile.limits.rate_limit, profile.batch.records),
        Err(_) => (None, 1),
    };
    let max_rows = rows_per_shard(spec.max_rows_per_shard, rate_limit, batch_records);
    plan_shards(&bucket_work(&bucket_rows, previous_rows), spec.shards, max_rows)
        .into_iter()
        .enumerate()
        .map(|(index, range)| {
            let chunks = (HashRange::bucket_of(range.start)..=HashRange::bucket_of(range.last))
                .flat_map(|b| bucket_chunks[b].iter().cloned())
                .collect();
            let base = pointer_base(&range, pointers.iter().filter(|p| p.range.overlaps(&range)));
            let task = ShardTask {
                index: index as u32,
                range,
                chunks,
                previous: previous_for(&range, pointers),
                full_resync: run.full_resync,
                reset_cdc: run.reset_cdc,
            };
            (task, base)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_letter_names_its_run_task_and_cause() {
        let headers: std::collections::BTreeMap<String, String> = [
            (RUN_ID_HEADER.to_string(), "r1".to_string()),
            (TASK_ID_HEADER.to_string(), "r1/shard-3".to_string()),
        ]
        .into();
        let unreadable = dead_letter(QueueName::DeadResults, b"\xc1", &headers).unwrap();
        assert_eq!(
            (unreadable.run_id.as_str(), unreadable.task_id.as_str()),
            ("r1", "r1/shard-3")
        );
        assert!(
            unreadable.error.contains("could not be read by the coordinator"),
            "{}",
            unreadable.error
        );
        let task = dead_letter(QueueName::DeadTasks, b"\xc1", &headers).unwrap();
        assert!(task.error.contains("Upgrade the workers first"), "{}", task.error);
        assert_eq!(dead_letter(QueueName::DeadResults, b"\xc1", &Default::default()), None);
        assert_eq!(dead_letter(QueueName::Results, b"\xc1", &headers), None);
    }

    #[test]
    fn task_ids_name_their_task() {
        assert_eq!(TaskRef::parse("0190/extract"), TaskRef::Extract);
        assert_eq!(TaskRef::parse("0190/shard-12"), TaskRef::Shard(12));
        assert_eq!(TaskRef::parse("0190/shard-x"), TaskRef::Unknown);
        assert_eq!(TaskRef::parse("0190/extract-3"), TaskRef::ExtractPart(3));
        assert_eq!(TaskRef::parse("nothing"), TaskRef::Unknown);
    }

    #[test]
    fn only_the_failure_of_work_still_undone_fails_a_run() {
        use RunStatus as S;
        assert!(failure_matters(TaskRef::Extract, S::Querying, None));
        // The extraction was accepted (shards are out) before a duplicate failed.
        assert!(!failure_matters(TaskRef::Extract, S::Processing, None));
        assert!(failure_matters(TaskRef::Shard(1), S::Processing, Some("pending")));
        for done in ["committed", "stale", "superseded"] {
            assert!(!failure_matters(TaskRef::Shard(1), S::Processing, Some(done)), "{done}");
        }
        for terminal in [S::Success, S::Warning, S::Failed, S::Cancelled, S::Interrupted] {
            assert!(!failure_matters(TaskRef::Shard(1), terminal, Some("pending")));
            assert!(!failure_matters(TaskRef::Extract, terminal, None));
            assert!(!failure_matters(TaskRef::ExtractPart(0), terminal, Some("pending")));
        }
        // A model read in parts: the extract task's work ended with the plan,
        // each part's with its report.
        assert!(!failure_matters(TaskRef::Extract, S::Querying, Some("done")));
        assert!(failure_matters(TaskRef::ExtractPart(2), S::Querying, Some("pending")));
        assert!(!failure_matters(TaskRef::ExtractPart(2), S::Querying, Some("done")));
        assert!(!failure_matters(TaskRef::ExtractPart(2), S::Processing, Some("done")));
    }

    #[test]
    fn the_reconciler_plans_the_shards_of_a_run_whose_parts_are_all_in() {
        let day = Duration::from_secs(86_400);
        let (mut record, now) = run(RunStatus::Querying, 60, 0, 0);
        record.extract_parts = 4;
        record.extract_parts_done = 3;
        assert_eq!(repair(&record, now, day), Repair::Nothing);
        record.extract_parts_done = 4;
        assert_eq!(repair(&record, now, day), Repair::PlanShards);
    }

    fn run(status: RunStatus, age_s: i64, shards_done: u64, shards_total: u64) -> (RunRecord, i64) {
        let created_at = 1_000_000;
        let record = RunRecord {
            id: "r".into(),
            sync: "s".into(),
            status,
            trigger: "manual".into(),
            schedule_tick: None,
            full_resync: false,
            reset_cdc: false,
            created_at,
            started_at: None,
            finished_at: None,
            error: None,
            rows_queried: 0,
            invalid_null: 0,
            invalid_duplicate: 0,
            planned: Default::default(),
            succeeded: Default::default(),
            failed: Default::default(),
            shards_total,
            shards_done,
            extract_parts: 0,
            extract_parts_done: 0,
        };
        (record, created_at + age_s * 1000)
    }

    #[test]
    fn the_reconciler_moves_on_exactly_the_runs_a_crash_left_behind() {
        let day = Duration::from_secs(86_400);
        let decide = |status, age, done, total| {
            let (record, now) = run(status, age, done, total);
            repair(&record, now, day)
        };
        assert_eq!(
            decide(RunStatus::Queued, 1, 0, 0),
            Repair::Nothing,
            "a fresh run is being started"
        );
        assert_eq!(decide(RunStatus::Queued, 60, 0, 0), Repair::StartQuerying);
        assert_eq!(decide(RunStatus::Querying, 600, 0, 0), Repair::Nothing);
        assert_eq!(decide(RunStatus::Processing, 60, 2, 3), Repair::Nothing);
        assert_eq!(decide(RunStatus::Processing, 60, 3, 3), Repair::Finish);
        assert_eq!(decide(RunStatus::Reporting, 60, 3, 3), Repair::Finish);
        let Repair::Interrupt(reason) = decide(RunStatus::Processing, 86_401, 1, 3) else {
            panic!("a run past its deadline is interrupted");
        };
        assert!(
            reason.contains("past its deadline") && reason.contains("1day"),
            "{reason}"
        );
    }
}
