//! The worker loop: take a task, run it, publish its result with a confirm, and
//! only then acknowledge the task (invariant 5). A worker that dies before the
//! acknowledgement leaves the task to be delivered again, to any worker.

use crate::delivery::RetryPolicy;
use crate::error::TaskError;
use crate::limits::{LeaseProvider, Limiters};
use crate::mapping::RunContext;
use crate::metrics::WorkerMetrics;
use crate::shard::{process_shard, ShardContext};
use ebb_shared::protocol::{
    self, ResultMessage, ShardProgress, TaskFailure, TaskKind, TaskMessage, TaskOutcome, PROTOCOL_VERSION,
};
use ebb_shared::queue::{
    Delivery, MessageQueue, OutgoingMessage, QueueError, QueueName, DELIVERY_LIMIT, RUN_ID_HEADER, TASK_ID_HEADER,
};
use ebb_shared::storage::Storage;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::Instrument;

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub worker_id: String,
    /// Tasks this worker runs at once.
    pub concurrency: usize,
    pub retry: RetryPolicy,
    /// Wait before a task that failed on a transient fault goes back to the
    /// queue: this, doubled on every later delivery, at most `task_backoff_max`.
    pub task_backoff: Duration,
    pub task_backoff_max: Duration,
}

impl WorkerSettings {
    pub fn new(worker_id: impl Into<String>) -> Self {
        WorkerSettings {
            worker_id: worker_id.into(),
            concurrency: 2,
            retry: RetryPolicy::default(),
            // 4, 8, 16 and 32 s between the five deliveries: with the object
            // store's own retries inside each, a fault must last well over a
            // minute to fail a run.
            task_backoff: Duration::from_secs(4),
            task_backoff_max: Duration::from_secs(60),
        }
    }

    /// How long to wait before returning a task on its `delivery`-th delivery.
    pub fn backoff(&self, delivery: u32) -> Duration {
        let doubled = self
            .task_backoff
            .saturating_mul(2u32.saturating_pow(delivery.saturating_sub(1)));
        doubled.min(self.task_backoff_max)
    }
}

/// What mapping sees of the run a task belongs to.
fn run_context(task: &TaskMessage) -> RunContext {
    RunContext {
        sync_id: task.sync.name.clone(),
        run_id: task.run_id.clone(),
        run_started_at: chrono::DateTime::from_timestamp_millis(task.run_started_at_ms)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    }
}

fn task_kind(task: &TaskMessage) -> &'static str {
    match task.kind {
        TaskKind::Extract => "extract",
        TaskKind::ExtractPart(_) => "extract_part",
        TaskKind::Shard(_) => "shard",
    }
}

/// What a worker does with a task that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailedTask {
    /// A transient fault with deliveries left: back to the queue after a wait,
    /// so another attempt (here or on another worker) resumes it.
    Retry,
    /// Permanent, or out of deliveries: the run is told, with the error.
    Report,
}

impl FailedTask {
    pub fn decide(retriable: bool, delivery_count: u32) -> FailedTask {
        if retriable && delivery_count < DELIVERY_LIMIT {
            FailedTask::Retry
        } else {
            FailedTask::Report
        }
    }
}

/// Each part a worker needs, with its error when it does not answer.
#[derive(Debug, Clone)]
pub struct WorkerReadiness {
    pub queue: Result<(), String>,
    pub leases: Result<(), String>,
}

impl WorkerReadiness {
    pub fn into_result(self) -> Result<(), String> {
        match (self.queue, self.leases) {
            (Ok(()), Ok(())) => Ok(()),
            (Err(queue), _) => Err(format!("queue: {queue}")),
            (_, Err(leases)) => Err(format!("leases: {leases}")),
        }
    }
}

pub struct Worker {
    settings: WorkerSettings,
    queue: Arc<dyn MessageQueue>,
    storage: Storage,
    leases: Arc<dyn LeaseProvider>,
    limiters: Limiters,
    metrics: Arc<WorkerMetrics>,
}

impl Worker {
    pub fn new(
        settings: WorkerSettings,
        queue: Arc<dyn MessageQueue>,
        storage: Storage,
        leases: Arc<dyn LeaseProvider>,
    ) -> Self {
        Worker {
            settings,
            queue,
            storage,
            leases,
            limiters: Limiters::default(),
            metrics: Arc::new(WorkerMetrics::default()),
        }
    }

    pub fn metrics(&self) -> Arc<WorkerMetrics> {
        self.metrics.clone()
    }

    /// Whether this worker can take tasks now: its queue answers.
    pub async fn ready(&self) -> Result<(), String> {
        self.readiness().await.into_result()
    }

    /// Whether this worker can do its work: its queue answers, and so does
    /// the coordinator that grants its delivery leases (each within 5 s).
    pub async fn readiness(&self) -> WorkerReadiness {
        let within = Duration::from_secs(5);
        let queue = match tokio::time::timeout(within, self.queue.depth(QueueName::Tasks)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("the queue gave no answer within {within:?}")),
        };
        // Any run id does: the answer (for a run that does not exist) proves
        // the lease service is up and reaches its state DB.
        let leases = match tokio::time::timeout(within, self.leases.run_active("readiness-probe")).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(format!("the coordinator gave no answer within {within:?}")),
        };
        WorkerReadiness { queue, leases }
    }

    /// Runs tasks until `shutdown` turns true; tasks in flight then finish.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) -> Result<(), QueueError> {
        let prefetch = self.settings.concurrency.clamp(1, u16::MAX as usize) as u16;
        let deliveries = self.queue.consume(QueueName::Tasks, prefetch).await?;
        tracing::info!(worker = %self.settings.worker_id, concurrency = prefetch, "worker started");
        let stop = async move {
            while !*shutdown.borrow() {
                if shutdown.changed().await.is_err() {
                    futures::future::pending::<()>().await;
                }
            }
        };
        deliveries
            .take_until(Box::pin(stop))
            .for_each_concurrent(self.settings.concurrency, |delivery| {
                let worker = self.clone();
                async move { worker.handle(delivery).await }
            })
            .await;
        tracing::info!(worker = %self.settings.worker_id, "worker stopped");
        Ok(())
    }

    async fn handle(&self, delivery: Delivery) {
        let task: TaskMessage = match protocol::decode(&delivery.payload) {
            Ok(task) => task,
            Err(error) => {
                // This worker cannot run it (a newer kind of task?). To the
                // dead-letter queue, where the coordinator fails its run by name.
                tracing::error!(%error, "an undecodable task goes to the dead-letter queue");
                self.metrics.task("unknown", "rejected");
                if let Err(error) = delivery.reject().await {
                    tracing::warn!(%error, "could not reject the task; it will come back");
                }
                return;
            }
        };
        let attempt = uuid::Uuid::now_v7().simple().to_string();
        // The task's span continues the trace of the run that published it.
        let span = tracing::info_span!("task", id = %task.task_id, run = %task.run_id, attempt = %attempt);
        ebb_shared::telemetry::extract(&delivery.headers, &span);
        self.handle_task(delivery, task, attempt).instrument(span).await
    }

    async fn handle_task(&self, delivery: Delivery, task: TaskMessage, attempt: String) {
        let started = std::time::Instant::now();
        tracing::info!(task = %task.task_id, attempt = %attempt, delivery = delivery.delivery_count, "task started");
        let outcome = match self.execute(&task, &attempt).await {
            Ok(outcome) => outcome,
            Err(error) => match FailedTask::decide(error.is_retriable(), delivery.delivery_count) {
                FailedTask::Retry => {
                    let wait = self.settings.backoff(delivery.delivery_count);
                    tracing::warn!(
                        task = %task.task_id,
                        %error,
                        delivery = delivery.delivery_count,
                        retry_in_ms = wait.as_millis() as u64,
                        "task failed on a transient fault; it goes back to the queue"
                    );
                    self.metrics.task(task_kind(&task), "retried");
                    tokio::time::sleep(wait).await;
                    if let Err(error) = delivery.requeue().await {
                        tracing::warn!(task = %task.task_id, %error, "could not return the task; the broker will");
                    }
                    return;
                }
                FailedTask::Report => {
                    tracing::warn!(task = %task.task_id, %error, retriable = error.is_retriable(), "task failed");
                    let error = if error.is_retriable() {
                        format!("{error} (still failing after {} attempts)", delivery.delivery_count)
                    } else {
                        error.to_string()
                    };
                    TaskOutcome::Failed(TaskFailure {
                        error,
                        retriable: false,
                    })
                }
            },
        };
        let result = ResultMessage {
            version: PROTOCOL_VERSION,
            task_id: task.task_id.clone(),
            run_id: task.run_id.clone(),
            worker_id: self.settings.worker_id.clone(),
            attempt,
            outcome,
        };
        let outcome = if matches!(result.outcome, TaskOutcome::Failed(_)) {
            "failed"
        } else {
            "done"
        };
        self.metrics.task(task_kind(&task), outcome);
        let mut message = OutgoingMessage::traced(protocol::encode(&result));
        // So that a coordinator that cannot read the result can still name its run.
        message.headers.insert(RUN_ID_HEADER.into(), task.run_id.clone());
        message.headers.insert(TASK_ID_HEADER.into(), task.task_id.clone());
        match self.queue.publish(QueueName::Results, message).await {
            Ok(()) => {
                if let Err(error) = delivery.ack().await {
                    tracing::warn!(task = %task.task_id, %error, "ack failed; the task will run again");
                }
                tracing::info!(task = %task.task_id, elapsed_ms = started.elapsed().as_millis() as u64, "task done");
            }
            Err(error) => {
                tracing::error!(task = %task.task_id, %error, "result not confirmed; returning the task");
                let _ = delivery.requeue().await;
            }
        }
    }

    async fn execute(&self, task: &TaskMessage, attempt: &str) -> Result<TaskOutcome, TaskError> {
        match &task.kind {
            TaskKind::Extract => {
                if let Some(plan) = crate::partition::plan(&task.sync).await? {
                    return Ok(TaskOutcome::Partitioned(plan));
                }
                let report = crate::extract::extract(&self.storage, &task.sync, &run_context(task), attempt).await?;
                Ok(TaskOutcome::Extracted(report))
            }
            TaskKind::ExtractPart(part) => {
                // A cancelled (or failed) run's queued parts read nothing.
                if self.leases.run_active(&task.run_id).await == Ok(false) {
                    return Err(TaskError::RunEnded {
                        run: task.run_id.clone(),
                    });
                }
                let spec = crate::partition::part_spec(&task.sync, &part.range)?;
                let mut report = crate::extract::extract(&self.storage, &spec, &run_context(task), attempt).await?;
                report.part = Some(part.index);
                Ok(TaskOutcome::Extracted(report))
            }
            TaskKind::Shard(shard) => {
                let (progress, progress_updates) = watch::channel(0u64);
                let reporter = self.spawn_progress_reporter(task, shard.index, progress_updates);
                let ctx = ShardContext {
                    storage: &self.storage,
                    leases: &self.leases,
                    limiters: &self.limiters,
                    worker_id: &self.settings.worker_id,
                    retry: self.settings.retry.clone(),
                    metrics: &self.metrics,
                };
                let report = process_shard(&ctx, &task.sync, &task.run_id, attempt, shard, progress).await;
                reporter.abort();
                Ok(TaskOutcome::ShardDone(report?))
            }
        }
    }

    /// Publishes the shard's progress once a second while it delivers.
    fn spawn_progress_reporter(
        &self,
        task: &TaskMessage,
        index: u32,
        mut updates: watch::Receiver<u64>,
    ) -> tokio::task::JoinHandle<()> {
        let queue = self.queue.clone();
        let task_id = task.task_id.clone();
        let run_id = task.run_id.clone();
        let worker_id = self.settings.worker_id.clone();
        tokio::spawn(async move {
            let mut last_sent = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if updates.has_changed().is_err() {
                    return;
                }
                let done = *updates.borrow_and_update();
                if done == last_sent {
                    continue;
                }
                last_sent = done;
                let message = ResultMessage {
                    version: PROTOCOL_VERSION,
                    task_id: task_id.clone(),
                    run_id: run_id.clone(),
                    worker_id: worker_id.clone(),
                    attempt: String::new(),
                    outcome: TaskOutcome::Progress(ShardProgress {
                        index,
                        planned: 0,
                        done,
                    }),
                };
                let _ = queue
                    .publish(QueueName::Results, OutgoingMessage::new(protocol::encode(&message)))
                    .await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_failures_go_back_to_the_queue_until_the_deliveries_run_out() {
        assert_eq!(FailedTask::decide(true, 1), FailedTask::Retry);
        assert_eq!(FailedTask::decide(true, DELIVERY_LIMIT - 1), FailedTask::Retry);
        assert_eq!(FailedTask::decide(true, DELIVERY_LIMIT), FailedTask::Report);
        assert_eq!(FailedTask::decide(false, 1), FailedTask::Report);
    }

    #[test]
    fn the_wait_before_a_retry_doubles_up_to_its_cap() {
        let settings = WorkerSettings::new("w");
        let waits: Vec<u64> = (1..=7).map(|d| settings.backoff(d).as_secs()).collect();
        assert_eq!(waits, vec![4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(settings.backoff(u32::MAX), Duration::from_secs(60));
    }
}
